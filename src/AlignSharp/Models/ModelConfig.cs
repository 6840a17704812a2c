using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace AlignSharp.Models;

/// <summary>Decoder-only architecture families AlignSharp reads (Hugging Face <c>model_type</c>).</summary>
public enum ModelFamily
{
    /// <summary><c>gpt2</c>: LayerNorm with bias, learned positions, fused Conv1D qkv, GELU (tanh) MLP, tied head.</summary>
    Gpt2,

    /// <summary><c>llama</c>: RMSNorm, RoPE, SwiGLU MLP, optional GQA; biases per <c>attention_bias</c>/<c>mlp_bias</c>.</summary>
    Llama,

    /// <summary><c>qwen2</c>: as Llama, with q/k/v biases (no o bias).</summary>
    Qwen2,

    /// <summary><c>mistral</c>: as Llama, no biases, sliding-window attention (<see cref="ModelConfig.SlidingWindow"/>).</summary>
    Mistral,
}

/// <summary>What sits on top of the final norm.</summary>
public enum HeadKind
{
    /// <summary>Vocabulary logits: <c>lm_head.weight</c> [V, D], or the token embedding when tied.</summary>
    LanguageModel,

    /// <summary>One scalar per position (reward / value model): <c>score.weight</c> [1, D], no bias, as
    /// transformers' <c>*ForSequenceClassification</c> with <c>num_labels = 1</c>.</summary>
    Scalar,
}

/// <summary>MLP activation.</summary>
public enum HiddenActivation
{
    /// <summary><c>gelu_new</c> / <c>gelu_pytorch_tanh</c>: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))).</summary>
    GeluTanh,

    /// <summary><c>gelu</c>: 0.5·x·(1 + erf(x/√2)).</summary>
    Gelu,

    /// <summary><c>silu</c> / <c>swish</c>: x·sigmoid(x) (the gate of SwiGLU).</summary>
    Silu,
}

/// <summary>Normalisation layer type.</summary>
public enum NormKind
{
    /// <summary>(x − mean) / √(biased var + eps) · weight + bias.</summary>
    LayerNorm,

    /// <summary>weight · x / √(mean(x²) + eps), computed in float32.</summary>
    RmsNorm,
}

/// <summary><c>rope_scaling</c> of type <c>llama3</c> (the only non-default type supported).</summary>
public sealed record RopeScaling(string Type, double Factor, double LowFreqFactor, double HighFreqFactor, int OriginalMaxPositionEmbeddings);

/// <summary>
/// The architecture of a decoder-only model, read from and written to a Hugging Face <c>config.json</c>.
/// Defaults for absent optional fields are transformers' defaults for that <c>model_type</c>; the fields that
/// fix tensor sizes (vocab_size, hidden size, layers, heads, and intermediate_size for the Llama family) are
/// required. <see cref="Source"/> keeps the loaded JSON so that <see cref="ToJson"/> writes fields AlignSharp
/// does not model back unchanged.
/// <para>AlignSharp-specific field: <c>"alignsharp": {"head": "lm" | "scalar"}</c> chooses the head
/// (<see cref="HeadKind"/>). Without it the head is <c>scalar</c> when <c>architectures[0]</c> ends in
/// <c>ForSequenceClassification</c> (then exactly one label is required), else <c>lm</c>. transformers ignores
/// the field; <see cref="ToJson"/> always writes it.</para>
/// </summary>
public sealed record ModelConfig
{
    public required ModelFamily Family { get; init; }
    public required int VocabSize { get; init; }

    /// <summary>D: <c>n_embd</c> (gpt2) / <c>hidden_size</c>.</summary>
    public required int HiddenSize { get; init; }

    /// <summary><c>n_layer</c> / <c>num_hidden_layers</c>.</summary>
    public required int NumLayers { get; init; }

    /// <summary>H: <c>n_head</c> / <c>num_attention_heads</c>.</summary>
    public required int NumHeads { get; init; }

    /// <summary><c>num_key_value_heads</c> (default H; gpt2 always H). Query head i uses kv head i / (H / KV).</summary>
    public required int NumKvHeads { get; init; }

    /// <summary><c>head_dim</c> when given, else D / H. May differ from D / H (Mistral-style configs).</summary>
    public required int HeadDim { get; init; }

    /// <summary>MLP width: <c>n_inner</c> (default 4·D) / <c>intermediate_size</c>.</summary>
    public required int IntermediateSize { get; init; }

    /// <summary><c>n_positions</c> (default 1024) / <c>max_position_embeddings</c>.</summary>
    public required int MaxPositions { get; init; }

    /// <summary><c>layer_norm_epsilon</c> (default 1e-5) / <c>rms_norm_eps</c> (default 1e-6).</summary>
    public required double NormEps { get; init; }

    /// <summary><c>rope_theta</c> (default 10000; unused by gpt2).</summary>
    public double RopeTheta { get; init; } = 10000;

    /// <summary><c>rope_scaling</c>; null for none / <c>default</c>.</summary>
    public RopeScaling? RopeScaling { get; init; }

    /// <summary><c>tie_word_embeddings</c> (default true for gpt2, false otherwise): the LM head reuses the token embedding.</summary>
    public required bool TieWordEmbeddings { get; init; }

    /// <summary>q/k/v projections have biases (gpt2, qwen2: always; llama: <c>attention_bias</c>; mistral: never).</summary>
    public required bool AttentionQkvBias { get; init; }

    /// <summary>Output projection has a bias (gpt2: always; llama: <c>attention_bias</c>; qwen2, mistral: never).</summary>
    public required bool AttentionOutputBias { get; init; }

    /// <summary>MLP projections have biases (gpt2: always; llama: <c>mlp_bias</c>; qwen2, mistral: never).</summary>
    public required bool MlpBias { get; init; }

    /// <summary><c>activation_function</c> (gpt2, default gelu_new) / <c>hidden_act</c> (default silu).</summary>
    public required HiddenActivation Activation { get; init; }

    public int? BosTokenId { get; init; }

    /// <summary><c>eos_token_id</c>: one id or a list (Llama 3 lists several); empty when null.</summary>
    public IReadOnlyList<int> EosTokenIds { get; init; } = [];

    public int? PadTokenId { get; init; }

    /// <summary>Mistral <c>sliding_window</c>: a position attends to at most this many positions (itself included),
    /// counted in sequence (cache) slots, not position ids, as transformers does. Null: full causal attention.</summary>
    public int? SlidingWindow { get; init; }

    public HeadKind Head { get; init; } = HeadKind.LanguageModel;

    /// <summary>The JSON this config was loaded from, or null; <see cref="ToJson"/> starts from a copy of it.</summary>
    public JsonObject? Source { get; init; }

    /// <summary>LayerNorm for gpt2, RMSNorm for the Llama family.</summary>
    public NormKind Norm => Family == ModelFamily.Gpt2 ? NormKind.LayerNorm : NormKind.RmsNorm;

    /// <summary>gpt2 adds learned position embeddings; the Llama family rotates q and k (RoPE).</summary>
    public bool LearnedPositions => Family == ModelFamily.Gpt2;

    /// <summary>H · head_dim: rows of the q projection.</summary>
    public int QueryDim => NumHeads * HeadDim;

    /// <summary>KV · head_dim: rows of each of the k and v projections.</summary>
    public int KvDim => NumKvHeads * HeadDim;

    /// <summary>Architecture equality: every field but <see cref="Source"/>, lists compared by content.</summary>
    public bool Equals(ModelConfig? other) =>
        other is not null
        && Family == other.Family && VocabSize == other.VocabSize && HiddenSize == other.HiddenSize
        && NumLayers == other.NumLayers && NumHeads == other.NumHeads && NumKvHeads == other.NumKvHeads
        && HeadDim == other.HeadDim && IntermediateSize == other.IntermediateSize && MaxPositions == other.MaxPositions
        && NormEps.Equals(other.NormEps) && RopeTheta.Equals(other.RopeTheta) && Equals(RopeScaling, other.RopeScaling)
        && TieWordEmbeddings == other.TieWordEmbeddings && AttentionQkvBias == other.AttentionQkvBias
        && AttentionOutputBias == other.AttentionOutputBias && MlpBias == other.MlpBias && Activation == other.Activation
        && BosTokenId == other.BosTokenId && EosTokenIds.SequenceEqual(other.EosTokenIds) && PadTokenId == other.PadTokenId
        && SlidingWindow == other.SlidingWindow && Head == other.Head;

    public override int GetHashCode() =>
        HashCode.Combine(Family, VocabSize, HiddenSize, NumLayers, NumHeads, NumKvHeads, HeadDim, IntermediateSize);

    public static string ModelTypeName(ModelFamily family) => family switch
    {
        ModelFamily.Gpt2 => "gpt2",
        ModelFamily.Llama => "llama",
        ModelFamily.Qwen2 => "qwen2",
        _ => "mistral",
    };

    // ------------------------------------------------------------------------------------------------
    // loading
    // ------------------------------------------------------------------------------------------------

    /// <summary>Reads <c>config.json</c> from a file path or a checkpoint directory.</summary>
    /// <exception cref="UserInputException">Missing file or field, a value of the wrong type, an unsupported
    /// model_type / activation / rope_scaling; the message names the file and the field.</exception>
    public static ModelConfig Load(string path)
    {
        string file = Directory.Exists(path) ? System.IO.Path.Combine(path, "config.json") : path;
        if (!File.Exists(file)) throw new UserInputException($"model config '{file}' does not exist");
        return Parse(File.ReadAllText(file), file);
    }

    /// <summary>Parses config.json text; <paramref name="source"/> names it in errors.</summary>
    public static ModelConfig Parse(string json, string source = "config.json")
    {
        JsonNode? root;
        try { root = JsonNode.Parse(json); }
        catch (JsonException e) { throw new UserInputException($"model config '{source}' is not valid JSON: {e.Message}", e); }
        if (root is not JsonObject obj) throw new UserInputException($"model config '{source}' is not a JSON object");
        var reader = new ConfigFields(obj, source);

        string modelType = reader.RequiredString("model_type");
        ModelFamily family = modelType switch
        {
            "gpt2" => ModelFamily.Gpt2,
            "llama" => ModelFamily.Llama,
            "qwen2" => ModelFamily.Qwen2,
            "mistral" => ModelFamily.Mistral,
            _ => throw new UserInputException($"model config '{source}': model_type '{modelType}' is not supported (supported: gpt2, llama, qwen2, mistral)"),
        };
        var config = family == ModelFamily.Gpt2 ? ParseGpt2(reader) : ParseLlamaFamily(reader, family);
        config = config with
        {
            BosTokenId = reader.OptionalInt("bos_token_id"),
            PadTokenId = reader.OptionalInt("pad_token_id"),
            EosTokenIds = reader.IntOrIntList("eos_token_id"),
            Head = ParseHead(reader),
            Source = obj,
        };
        config.Validate(source);
        return config;
    }

    private static ModelConfig ParseGpt2(ConfigFields f)
    {
        int d = f.RequiredInt("n_embd");
        int heads = f.RequiredInt("n_head");
        if (f.OptionalBool("scale_attn_by_inverse_layer_idx") == true)
            throw f.Error("scale_attn_by_inverse_layer_idx", "true is not supported");
        if (f.OptionalBool("scale_attn_weights") == false)
            throw f.Error("scale_attn_weights", "false is not supported");
        if (f.OptionalBool("add_cross_attention") == true)
            throw f.Error("add_cross_attention", "true is not supported (decoder-only models only)");
        string act = f.OptionalString("activation_function") ?? "gelu_new";
        return new ModelConfig
        {
            Family = ModelFamily.Gpt2,
            VocabSize = f.RequiredInt("vocab_size"),
            HiddenSize = d,
            NumLayers = f.RequiredInt("n_layer"),
            NumHeads = heads,
            NumKvHeads = heads,
            HeadDim = heads > 0 ? d / heads : 0,
            IntermediateSize = f.OptionalInt("n_inner") ?? 4 * d,
            MaxPositions = f.OptionalInt("n_positions") ?? 1024,
            NormEps = f.OptionalDouble("layer_norm_epsilon") ?? 1e-5,
            TieWordEmbeddings = f.OptionalBool("tie_word_embeddings") ?? true,
            AttentionQkvBias = true,
            AttentionOutputBias = true,
            MlpBias = true,
            Activation = act switch
            {
                "gelu_new" or "gelu_pytorch_tanh" => HiddenActivation.GeluTanh,
                "gelu" => HiddenActivation.Gelu,
                _ => throw f.Error("activation_function", $"'{act}' is not supported (supported: gelu_new, gelu_pytorch_tanh, gelu)"),
            },
        };
    }

    private static ModelConfig ParseLlamaFamily(ConfigFields f, ModelFamily family)
    {
        int d = f.RequiredInt("hidden_size");
        int heads = f.RequiredInt("num_attention_heads");
        int? headDim = f.OptionalInt("head_dim");
        string act = f.OptionalString("hidden_act") ?? "silu";
        bool attentionBias = family == ModelFamily.Llama && (f.OptionalBool("attention_bias") ?? false);
        if (headDim is null && heads > 0 && d % heads != 0)
            throw f.Error("hidden_size", $"{d} is not divisible by num_attention_heads {heads} (give head_dim explicitly)");
        if (family == ModelFamily.Qwen2 && f.OptionalBool("use_sliding_window") == true)
            throw f.Error("use_sliding_window", "true is not supported for qwen2");
        return new ModelConfig
        {
            Family = family,
            VocabSize = f.RequiredInt("vocab_size"),
            HiddenSize = d,
            NumLayers = f.RequiredInt("num_hidden_layers"),
            NumHeads = heads,
            NumKvHeads = f.OptionalInt("num_key_value_heads") ?? heads,
            HeadDim = headDim ?? (heads > 0 ? d / heads : 0),
            IntermediateSize = f.RequiredInt("intermediate_size"),
            MaxPositions = f.OptionalInt("max_position_embeddings") ?? family switch
            {
                ModelFamily.Llama => 2048,
                ModelFamily.Qwen2 => 32768,
                _ => 4096 * 32,
            },
            NormEps = f.OptionalDouble("rms_norm_eps") ?? 1e-6,
            RopeTheta = f.OptionalDouble("rope_theta") ?? 10000,
            RopeScaling = ParseRopeScaling(f),
            TieWordEmbeddings = f.OptionalBool("tie_word_embeddings") ?? false,
            AttentionQkvBias = family == ModelFamily.Qwen2 || attentionBias,
            AttentionOutputBias = attentionBias,
            MlpBias = family == ModelFamily.Llama && (f.OptionalBool("mlp_bias") ?? false),
            Activation = act switch
            {
                "silu" or "swish" => HiddenActivation.Silu,
                _ => throw f.Error("hidden_act", $"'{act}' is not supported (supported: silu)"),
            },
            SlidingWindow = family == ModelFamily.Mistral ? f.OptionalInt("sliding_window") : null,
        };
    }

    private static RopeScaling? ParseRopeScaling(ConfigFields f)
    {
        var node = f.Get("rope_scaling");
        if (node is null) return null;
        if (node is not JsonObject rs) throw f.Error("rope_scaling", "must be an object or null");
        var inner = new ConfigFields(rs, f.Source, "rope_scaling.");
        string type = inner.OptionalString("rope_type") ?? inner.OptionalString("type")
            ?? throw f.Error("rope_scaling", "has no 'rope_type'");
        if (type == "default") return null;
        if (type != "llama3")
            throw f.Error("rope_scaling", $"type '{type}' is not supported (supported: default, llama3)");
        var scaling = new RopeScaling(type,
            inner.RequiredDouble("factor"),
            inner.RequiredDouble("low_freq_factor"),
            inner.RequiredDouble("high_freq_factor"),
            inner.RequiredInt("original_max_position_embeddings"));
        if (scaling.Factor <= 0 || scaling.OriginalMaxPositionEmbeddings <= 0 || scaling.HighFreqFactor <= scaling.LowFreqFactor || scaling.LowFreqFactor <= 0)
            throw f.Error("rope_scaling", "llama3 needs factor > 0, original_max_position_embeddings > 0 and 0 < low_freq_factor < high_freq_factor");
        return scaling;
    }

    private static HeadKind ParseHead(ConfigFields f)
    {
        var node = f.Get("alignsharp");
        if (node is not null)
        {
            if (node is not JsonObject a) throw f.Error("alignsharp", "must be an object like {\"head\": \"lm\"}");
            foreach (var (key, _) in a)
                if (key != "head") throw f.Error($"alignsharp.{key}", "is not a known AlignSharp field (known: head)");
            var inner = new ConfigFields(a, f.Source, "alignsharp.");
            string? head = inner.OptionalString("head");
            if (head is not null)
            {
                return head switch
                {
                    "lm" => HeadKind.LanguageModel,
                    "scalar" => HeadKind.Scalar,
                    _ => throw f.Error("alignsharp.head", $"'{head}' is not one of lm, scalar"),
                };
            }
        }
        if (f.Get("architectures") is JsonArray { Count: > 0 } arch
            && arch[0] is JsonValue v && v.TryGetValue(out string? name)
            && name.EndsWith("ForSequenceClassification", StringComparison.Ordinal))
        {
            int labels = f.Get("id2label") is JsonObject id2label ? id2label.Count : f.OptionalInt("num_labels") ?? 2;
            if (labels != 1)
                throw f.Error("id2label", $"{name} with {labels} labels is not supported: a scalar head has exactly one");
            return HeadKind.Scalar;
        }
        return HeadKind.LanguageModel;
    }

    /// <summary>Checks the invariants the tensor shapes rely on.</summary>
    /// <exception cref="UserInputException">Naming <paramref name="source"/> and the offending field.</exception>
    public void Validate(string source = "config")
    {
        bool gpt2 = Family == ModelFamily.Gpt2;
        void Positive(int value, string field)
        {
            if (value <= 0) throw new UserInputException($"model config '{source}': field '{field}' must be a positive integer, not {value}");
        }
        Positive(VocabSize, "vocab_size");
        Positive(HiddenSize, gpt2 ? "n_embd" : "hidden_size");
        Positive(NumLayers, gpt2 ? "n_layer" : "num_hidden_layers");
        Positive(NumHeads, gpt2 ? "n_head" : "num_attention_heads");
        Positive(NumKvHeads, "num_key_value_heads");
        Positive(HeadDim, "head_dim");
        Positive(IntermediateSize, gpt2 ? "n_inner" : "intermediate_size");
        Positive(MaxPositions, gpt2 ? "n_positions" : "max_position_embeddings");
        if (!(NormEps > 0)) throw new UserInputException($"model config '{source}': the norm epsilon must be positive, not {NormEps}");
        // Only mistral writes sliding_window back (ToJson), so a window on another family would be lost on save.
        if (SlidingWindow != null && Family != ModelFamily.Mistral)
            throw new UserInputException($"model config '{source}': a sliding window is only supported for mistral, not {ModelTypeName(Family)}");
        if (gpt2)
        {
            if (HiddenSize % NumHeads != 0)
                throw new UserInputException($"model config '{source}': n_embd {HiddenSize} is not divisible by n_head {NumHeads}");
            if (NumKvHeads != NumHeads || HeadDim != HiddenSize / NumHeads)
                throw new UserInputException($"model config '{source}': gpt2 has no grouped-query attention or separate head_dim");
            if (!AttentionQkvBias || !AttentionOutputBias || !MlpBias)
                throw new UserInputException($"model config '{source}': gpt2 always has attention and MLP biases");
            if (Activation == HiddenActivation.Silu)
                throw new UserInputException($"model config '{source}': field 'activation_function': silu is not supported for gpt2");
            return;
        }
        if (NumHeads % NumKvHeads != 0)
            throw new UserInputException($"model config '{source}': num_attention_heads {NumHeads} is not a multiple of num_key_value_heads {NumKvHeads}");
        if (HeadDim % 2 != 0)
            throw new UserInputException($"model config '{source}': head_dim {HeadDim} must be even for rotary embeddings");
        if (!(RopeTheta > 0))
            throw new UserInputException($"model config '{source}': field 'rope_theta' must be positive, not {RopeTheta}");
        if (Activation != HiddenActivation.Silu)
            throw new UserInputException($"model config '{source}': field 'hidden_act': only silu is supported for {ModelTypeName(Family)}");
        if (Family == ModelFamily.Qwen2 && (!AttentionQkvBias || AttentionOutputBias || MlpBias))
            throw new UserInputException($"model config '{source}': qwen2 has q/k/v biases and no o_proj or MLP biases");
        if (Family == ModelFamily.Mistral && (AttentionQkvBias || AttentionOutputBias || MlpBias))
            throw new UserInputException($"model config '{source}': mistral has no biases");
        if (Family == ModelFamily.Llama && AttentionQkvBias != AttentionOutputBias)
            throw new UserInputException($"model config '{source}': llama's attention_bias covers q, k, v and o together");
        if (SlidingWindow is <= 0)
            throw new UserInputException($"model config '{source}': field 'sliding_window' must be positive or null");
    }

    // ------------------------------------------------------------------------------------------------
    // rotary frequencies
    // ------------------------------------------------------------------------------------------------

    /// <summary>
    /// RoPE inverse frequencies, HeadDim/2 of them: inv_freq[j] = 1 / rope_theta^(2j / head_dim), adjusted by
    /// llama3 scaling when configured (wavelength 2π/inv_freq above original_ctx/low_freq_factor: divided by
    /// factor; below original_ctx/high_freq_factor: unchanged; between: blended with
    /// s = (original_ctx/wavelength − low)/(high − low), inv = (1 − s)·inv/factor + s·inv). The rotation angle
    /// of position p in pair j (and j + HeadDim/2, rotate_half convention) is p·inv_freq[j]. Matches
    /// transformers' float32 values to within 1 ulp.
    /// </summary>
    public float[] RopeFrequencies()
    {
        if (Family == ModelFamily.Gpt2) throw new InvalidOperationException("gpt2 has no rotary embeddings");
        int half = HeadDim / 2;
        var result = new float[half];
        for (int j = 0; j < half; j++)
        {
            // transformers forms the exponent as float32 (arange(0, dim, 2).float() / dim).
            double exponent = (float)(2 * j) / (float)HeadDim;
            double inv = 1.0 / Math.Pow(RopeTheta, exponent);
            if (RopeScaling is { } rs)
            {
                double lowFreqWavelength = rs.OriginalMaxPositionEmbeddings / rs.LowFreqFactor;
                double highFreqWavelength = rs.OriginalMaxPositionEmbeddings / rs.HighFreqFactor;
                double wavelength = 2 * Math.PI / inv;
                if (wavelength > lowFreqWavelength) inv /= rs.Factor;
                else if (wavelength >= highFreqWavelength)
                {
                    double smooth = (rs.OriginalMaxPositionEmbeddings / wavelength - rs.LowFreqFactor) / (rs.HighFreqFactor - rs.LowFreqFactor);
                    inv = (1 - smooth) * inv / rs.Factor + smooth * inv;
                }
            }
            result[j] = (float)inv;
        }
        return result;
    }

    // ------------------------------------------------------------------------------------------------
    // saving
    // ------------------------------------------------------------------------------------------------

    /// <summary>
    /// config.json text that transformers loads as this architecture: the loaded JSON (if any) with every field
    /// AlignSharp models overwritten, <c>architectures</c> set from family and head, and the <c>alignsharp</c> field.
    /// </summary>
    public string ToJson() => ToJsonObject().ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n";

    internal JsonObject ToJsonObject()
    {
        Validate();
        var o = Source?.DeepClone() as JsonObject ?? new JsonObject();
        o["model_type"] = ModelTypeName(Family);
        string arch = (Family, Head) switch
        {
            (ModelFamily.Gpt2, HeadKind.LanguageModel) => "GPT2LMHeadModel",
            (ModelFamily.Gpt2, _) => "GPT2ForSequenceClassification",
            (ModelFamily.Llama, HeadKind.LanguageModel) => "LlamaForCausalLM",
            (ModelFamily.Llama, _) => "LlamaForSequenceClassification",
            (ModelFamily.Qwen2, HeadKind.LanguageModel) => "Qwen2ForCausalLM",
            (ModelFamily.Qwen2, _) => "Qwen2ForSequenceClassification",
            (_, HeadKind.LanguageModel) => "MistralForCausalLM",
            _ => "MistralForSequenceClassification",
        };
        o["architectures"] = new JsonArray(arch);
        o["vocab_size"] = VocabSize;
        if (Family == ModelFamily.Gpt2)
        {
            o["n_embd"] = HiddenSize;
            o["n_layer"] = NumLayers;
            o["n_head"] = NumHeads;
            o["n_inner"] = IntermediateSize;
            o["n_positions"] = MaxPositions;
            o["layer_norm_epsilon"] = NormEps;
            o["activation_function"] = Activation == HiddenActivation.Gelu ? "gelu" : "gelu_new";
        }
        else
        {
            o["hidden_size"] = HiddenSize;
            o["num_hidden_layers"] = NumLayers;
            o["num_attention_heads"] = NumHeads;
            o["num_key_value_heads"] = NumKvHeads;
            o["head_dim"] = HeadDim;
            o["intermediate_size"] = IntermediateSize;
            o["max_position_embeddings"] = MaxPositions;
            o["rms_norm_eps"] = NormEps;
            o["rope_theta"] = RopeTheta;
            o["hidden_act"] = "silu";
            o["rope_scaling"] = RopeScaling is { } rs
                ? new JsonObject
                {
                    ["rope_type"] = rs.Type,
                    ["factor"] = rs.Factor,
                    ["low_freq_factor"] = rs.LowFreqFactor,
                    ["high_freq_factor"] = rs.HighFreqFactor,
                    ["original_max_position_embeddings"] = rs.OriginalMaxPositionEmbeddings,
                }
                : null;
            if (Family == ModelFamily.Llama)
            {
                o["attention_bias"] = AttentionQkvBias;
                o["mlp_bias"] = MlpBias;
            }
            if (Family == ModelFamily.Mistral) o["sliding_window"] = SlidingWindow;
        }
        o["tie_word_embeddings"] = TieWordEmbeddings;
        o["bos_token_id"] = BosTokenId;
        o["pad_token_id"] = PadTokenId;
        o["eos_token_id"] = EosTokenIds.Count switch
        {
            0 => null,
            1 => (JsonNode?)EosTokenIds[0],
            _ => new JsonArray(EosTokenIds.Select(i => (JsonNode?)i).ToArray()),
        };
        if (Head == HeadKind.Scalar)
        {
            o["id2label"] = new JsonObject { ["0"] = "LABEL_0" };
            o["label2id"] = new JsonObject { ["LABEL_0"] = 0 };
        }
        o["alignsharp"] = new JsonObject { ["head"] = Head == HeadKind.Scalar ? "scalar" : "lm" };
        return o;
    }

    /// <summary>Writes <see cref="ToJson"/> atomically to a file, or to <c>config.json</c> in a directory.</summary>
    public void Save(string path)
    {
        string file = Directory.Exists(path) ? System.IO.Path.Combine(path, "config.json") : path;
        Checkpoints.AtomicFile.WriteText(file, ToJson());
    }

    /// <summary>Typed access to a config object's fields with errors naming file and field.</summary>
    private sealed class ConfigFields(JsonObject obj, string source, string prefix = "")
    {
        public string Source => source;

        public JsonNode? Get(string key) => obj.TryGetPropertyValue(key, out var node) ? node : null;

        public UserInputException Error(string field, string problem) =>
            new($"model config '{source}': field '{prefix}{field}' {problem}");

        public string RequiredString(string key) =>
            OptionalString(key) ?? throw Error(key, "is missing");

        public string? OptionalString(string key) => Get(key) switch
        {
            null => null,
            JsonValue v when v.TryGetValue(out string? s) => s,
            _ => throw Error(key, "must be a string"),
        };

        public int RequiredInt(string key) => OptionalInt(key) ?? throw Error(key, "is missing");

        public int? OptionalInt(string key)
        {
            var node = Get(key);
            if (node is null) return null;
            if (node is JsonValue v && v.GetValueKind() == JsonValueKind.Number)
            {
                double d = v.GetValue<double>();
                if (d == Math.Floor(d) && d >= int.MinValue && d <= int.MaxValue) return (int)d;
            }
            throw Error(key, $"must be an integer, not {node.ToJsonString()}");
        }

        public double RequiredDouble(string key) => OptionalDouble(key) ?? throw Error(key, "is missing");

        public double? OptionalDouble(string key)
        {
            var node = Get(key);
            if (node is null) return null;
            if (node is JsonValue v && v.GetValueKind() == JsonValueKind.Number) return v.GetValue<double>();
            throw Error(key, $"must be a number, not {node.ToJsonString()}");
        }

        public bool? OptionalBool(string key)
        {
            var node = Get(key);
            if (node is null) return null;
            if (node is JsonValue v && v.GetValueKind() is JsonValueKind.True or JsonValueKind.False) return v.GetValue<bool>();
            throw Error(key, $"must be true or false, not {node.ToJsonString()}");
        }

        public IReadOnlyList<int> IntOrIntList(string key)
        {
            var node = Get(key);
            if (node is null) return [];
            if (node is JsonArray array)
            {
                var ids = new List<int>();
                foreach (var item in array)
                {
                    if (item is JsonValue v && v.GetValueKind() == JsonValueKind.Number && v.GetValue<double>() is var d && d == Math.Floor(d))
                        ids.Add((int)d);
                    else
                        throw Error(key, "must be an integer or a list of integers");
                }
                return ids;
            }
            return [OptionalInt(key)!.Value];
        }
    }
}
