namespace AlignSharp.Models.Checkpoints;

/// <summary>Which projections carry biases and which config keys say so.</summary>
internal enum BiasRule
{
    /// <summary>Every projection, always (gpt2).</summary>
    All,

    /// <summary>None, and no key can add them (mistral).</summary>
    None,

    /// <summary>q, k and v always; o and the MLP never (qwen2).</summary>
    QkvOnly,

    /// <summary><c>attention_bias</c> (default false) covers q, k, v and o; the MLP never has them (qwen3, gemma2/3).</summary>
    AttentionBiasKey,

    /// <summary><c>attention_bias</c> covers q, k, v and o; <c>mlp_bias</c> the MLP (llama).</summary>
    AttentionAndMlpKeys,

    /// <summary><c>attention_bias</c> (default true) covers the fused qkv and the output projection; the MLP always has
    /// them (gpt_neox).</summary>
    AttentionBiasKeyMlpAlways,

    /// <summary><c>use_qkv_bias</c> (default false) covers q, k and v; o and the MLP never have them (stablelm).</summary>
    UseQkvBiasKey,

    /// <summary>One key covers every projection: <see cref="FamilyTable.AllBiasesKey"/> with its default (opt's enable_bias,
    /// true; ernie4_5's use_bias, false).</summary>
    AllByKey,

    /// <summary><c>attention_bias</c> (default true) covers q, k and v; o and the MLP never have them (glm).</summary>
    AttentionBiasKeyQkvOnly,

    /// <summary>The output projection and the MLP always, q, k and v never (gpt_neo).</summary>
    OutputAndMlpOnly,

    /// <summary><c>attention_bias</c> (default false) covers q, k and v, never o; <c>mlp_bias</c> (default false) the MLP (helium).</summary>
    QkvAndMlpKeys,
}

/// <summary>How q, k and v are kept: three projections, or one [3·D, D] projection (canonical <c>attn.qkv</c>).</summary>
internal enum QkvLayout
{
    /// <summary>Separate q, k and v projections (canonical <c>attn.q</c>, <c>attn.k</c>, <c>attn.v</c>).</summary>
    Separate,

    /// <summary>One projection whose rows are all of q, then all of k, then all of v (gpt2's c_attn).</summary>
    Concatenated,

    /// <summary>One projection whose rows go head by head, each head's q, k and v in turn (gpt_neox's query_key_value,
    /// read as [heads, 3, head_dim]).</summary>
    PerHead,
}

/// <summary>Where sliding-window attention applies and how the config says so.</summary>
internal enum WindowRule
{
    /// <summary>No sliding window; a stray <c>sliding_window</c> key is not read (transformers ignores it too).</summary>
    None,

    /// <summary><c>sliding_window</c> (null: none) in every layer (mistral).</summary>
    EveryLayer,

    /// <summary><c>sliding_window</c> on the layers <c>layer_types</c> marks <c>sliding_attention</c>; without
    /// layer_types, layer i slides unless (i + 1) is a multiple of the pattern (gemma2: 2, i.e. every even layer;
    /// gemma3: <c>sliding_window_pattern</c>, default 6).</summary>
    LayerTypes,

    /// <summary><c>sliding_window</c> only when <c>use_sliding_window</c> is true, on the layers <c>layer_types</c>
    /// marks sliding_attention; without layer_types on layers i ≥ <c>max_window_layers</c> (qwen2, qwen3).</summary>
    UseSlidingWindow,

    /// <summary>GPT-Neo: <c>attention_types</c> ([[["global", "local"], 12]]: each list of kinds repeated n times) marks
    /// the local layers, which see the last <c>window_size</c> (default 256) positions.</summary>
    AttentionTypes,
}

/// <summary>The config keys a family spells its shape fields with (gpt2 has its own names). A null key: the family's
/// config has no such field and the value is the table's (BLOOM: the MLP is always 4·hidden, GELU-tanh, no position
/// limit in its config).</summary>
internal sealed record ConfigKeys(string HiddenSize, string NumLayers, string NumHeads, string? NumKvHeads, string? HeadDim,
    string? IntermediateSize, string? MaxPositions, string? NormEps, string? Activation)
{
    public static readonly ConfigKeys Gpt2 = new("n_embd", "n_layer", "n_head", null, null, "n_inner", "n_positions", "layer_norm_epsilon", "activation_function");
    public static readonly ConfigKeys Standard = new("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim",
        "intermediate_size", "max_position_embeddings", "rms_norm_eps", "hidden_act");
}

/// <summary>A config key whose value changes the math in a way AlignSharp does not implement: a value for which
/// <see cref="Unsupported"/> is true is rejected with <see cref="Problem"/>.</summary>
internal sealed record RejectedValue(string Key, Func<System.Text.Json.Nodes.JsonNode, bool> Unsupported, string Problem);

/// <summary>
/// Everything that makes a family what it is, in one place: its <c>model_type</c> and architecture strings, tensor
/// names, config keys and the transformers defaults of absent keys, norms, activation, biases, attention variants
/// and head rules. <see cref="ModelConfig"/> parses, validates and writes config.json from this table, and
/// <see cref="CheckpointNames"/> binds tensors with <see cref="Names"/>. Defaults are those of transformers'
/// <c>configuration_*.py</c> for the family.
/// </summary>
internal sealed record FamilyTable(ModelFamily Family, string ModelType, string CausalLm, string SequenceClassification, NameTable Names)
{
    public ConfigKeys Keys { get; init; } = ConfigKeys.Standard;

    /// <summary>Learned absolute positions (gpt2) instead of RoPE.</summary>
    public bool LearnedPositions { get; init; }

    /// <summary>BLOOM: no position embeddings and no RoPE; each head's attention scores fall linearly with the distance to
    /// the key (ALiBi, slopes from the head count: <see cref="ModelConfig.AlibiSlopes"/>).</summary>
    public bool Alibi { get; init; }

    /// <summary>BLOOM: a LayerNorm on the token embeddings before the first block (word_embeddings_layernorm).</summary>
    public bool EmbeddingNorm { get; init; }

    /// <summary>GPTBigCode: <c>multi_query</c> (default true) gives one key/value head, whose k and v follow all of q in
    /// the fused projection (<see cref="QkvLayout.Concatenated"/>); false gives as many as query heads, fused head by head
    /// (<see cref="QkvLayout.PerHead"/>); see <see cref="ModelConfig.QkvLayout"/>.</summary>
    public bool MultiQueryKey { get; init; }

    /// <summary>LFM2: each layer is a gated short convolution or an attention block, per <c>layer_types</c> ("conv",
    /// "full_attention") or the older <c>full_attn_idxs</c>; conv_L_cache, conv_bias and the block_* MLP keys are read
    /// (see <see cref="ModelConfig.ConvLayers"/>).</summary>
    public bool ShortConvLayers { get; init; }

    /// <summary>Granite 4.0: each layer is attention or a Mamba-2 mixer per <c>layer_types</c> ("attention", "mamba"; absent:
    /// every layer a mixer), the mixer's shape from the mamba_* keys (see <see cref="ModelConfig.Mamba"/>); RoPE only where
    /// <c>position_embedding_type</c> is "rope", no position encoding otherwise; with <c>num_local_experts</c> other than 0,
    /// a sparse mixture of experts beside the shared MLP (see <see cref="ModelConfig.Moe"/>).</summary>
    public bool MambaLayers { get; init; }

    /// <summary>Falcon-H1: every layer runs attention and a Mamba-2 mixer side by side on its normed input and adds both,
    /// each with its multipliers (see <see cref="ModelConfig.Falcon"/>); the mixer's shape from its mamba_* keys.</summary>
    public bool ParallelMamba { get; init; }

    /// <summary>Granite 3.x MoE: the MLP is a sparse mixture of experts (block_sparse_moe), no dense MLP beside it; its
    /// shape from num_local_experts, num_experts_per_tok and intermediate_size (see <see cref="ModelConfig.Moe"/>).</summary>
    public bool ExpertMlp { get; init; }

    /// <summary>Other spellings of <see cref="Keys"/>' fields that configs in the wild use (BLOOM: n_embed for hidden_size,
    /// num_attention_heads for n_head): a config that has the alias and not the key is read, and written back, with it.</summary>
    public (string Key, string Alias)[] KeyAliases { get; init; } = [];

    /// <summary><see cref="Keys"/> as <paramref name="config"/> spells them (see <see cref="KeyAliases"/>).</summary>
    public ConfigKeys KeysSpelledIn(System.Text.Json.Nodes.JsonObject? config)
    {
        if (KeyAliases.Length == 0 || config == null) return Keys;
        string? Spell(string? key)
        {
            if (key == null || config.ContainsKey(key)) return key;
            foreach (var (k, alias) in KeyAliases)
                if (k == key && config.ContainsKey(alias)) return alias;
            return key;
        }
        return new ConfigKeys(Spell(Keys.HiddenSize)!, Spell(Keys.NumLayers)!, Spell(Keys.NumHeads)!, Spell(Keys.NumKvHeads), Spell(Keys.HeadDim),
            Spell(Keys.IntermediateSize), Spell(Keys.MaxPositions), Spell(Keys.NormEps), Spell(Keys.Activation));
    }

    public NormKind Norm { get; init; } = NormKind.RmsNorm;

    /// <summary>Whether the norms have a weight (and, for LayerNorm, a bias): OLMo (1)'s LayerNorms have neither.</summary>
    public bool NormParameters { get; init; } = true;

    /// <summary>Added to every norm weight: 1 for Gemma, whose RMSNorm scales by (1 + w).</summary>
    public float NormWeightOffset { get; init; }

    /// <summary>Per-head RMSNorm of q and k over head_dim, before RoPE (<c>q_norm</c>, <c>k_norm</c>).</summary>
    public bool QkNorm { get; init; }

    /// <summary>Norms on the attention and MLP outputs too, four per block (Gemma: post_attention_layernorm,
    /// pre/post_feedforward_layernorm).</summary>
    public bool SandwichNorms { get; init; }

    /// <summary>Norms on the inputs of attention and MLP (every family but OLMo-2, which keeps only the output norms).</summary>
    public bool InputNorms { get; init; } = true;

    /// <summary>q/k RMSNorm over the whole projection (heads · head_dim) instead of per head (OLMo-2).</summary>
    public bool FullWidthQkNorm { get; init; }

    /// <summary>Token embeddings multiplied by √hidden_size, rounded to float32 as transformers forms the normalizer.</summary>
    public bool ScaledEmbedding { get; init; }

    /// <summary>MLP shape: gpt2's fc → act → proj, else the gated down(act(gate(x)) · up(x)).</summary>
    public bool GatedMlp { get; init; } = true;

    public QkvLayout Qkv { get; init; } = QkvLayout.Separate;

    /// <summary>GPT-NeoX: <c>use_parallel_residual</c> (default true) runs attention and MLP side by side on the block's
    /// input, x + attn(ln₁(x)) + mlp(ln₂(x)); false runs them in turn as every other family does.</summary>
    public bool ParallelResidualKey { get; init; }

    /// <summary>Phi-1/1.5/2: attention and MLP always side by side on one norm of the block's input, x + attn(ln(x)) +
    /// mlp(ln(x)) (no MLP norm).</summary>
    public bool ParallelSharedNorm { get; init; }

    /// <summary>Phi-1/1.5/2: the untied LM head has a bias (lm_head.bias [V]).</summary>
    public bool LmHeadBias { get; init; }

    /// <summary>OPT: <c>word_embed_proj_dim</c> and <c>do_layer_norm_before</c> are read (see <see cref="ModelConfig.EmbedDim"/>,
    /// <see cref="ModelConfig.NormBeforeBlock"/>).</summary>
    public bool OptLayout { get; init; }

    /// <summary>Learned positions are looked up this many rows in (OPT's embed_positions has max_position_embeddings + 2
    /// rows and reads row p + 2).</summary>
    public int PositionOffset { get; init; }

    /// <summary>The top-level keys of the RoPE base and the partial rotary factor in transformers 4's format (gpt_neox:
    /// rotary_emb_base, rotary_pct); inside transformers 5's rope_parameters they are always rope_theta and
    /// partial_rotary_factor.</summary>
    public string RopeThetaKey { get; init; } = "rope_theta";
    public string PartialRotaryKey { get; init; } = "partial_rotary_factor";
    public double DefaultPartialRotary { get; init; } = 1;

    public BiasRule Biases { get; init; }

    /// <summary><see cref="BiasRule.AllByKey"/>: the key and its default.</summary>
    public (string Key, bool Default) AllBiasesKey { get; init; }

    /// <summary>ERNIE 4.5: RoPE pairs adjacent channels (2i, 2i + 1) instead of i and i + head_dim/2.</summary>
    public bool InterleavedRope { get; init; }

    /// <summary>Hunyuan: the per-head q/k norms follow RoPE instead of preceding it.</summary>
    public bool QkNormAfterRope { get; init; }

    /// <summary>Hunyuan: rope_scaling of type dynamic may carry <c>alpha</c> (see <see cref="RopeScaling.Alpha"/>).</summary>
    public bool NtkAlpha { get; init; }
    public WindowRule Window { get; init; }

    /// <summary>Accepted activation names (the first is the default when the key is absent).</summary>
    public (string Name, HiddenActivation Activation)[] Activations { get; init; } = [("silu", HiddenActivation.Silu), ("swish", HiddenActivation.Silu)];

    public int DefaultMaxPositions { get; init; }
    public double DefaultNormEps { get; init; } = 1e-6;
    public double DefaultRopeTheta { get; init; } = 10000;
    public bool DefaultTieWordEmbeddings { get; init; }

    /// <summary>head_dim when absent; null: hidden_size / num_attention_heads.</summary>
    public int? DefaultHeadDim { get; init; }

    /// <summary>gpt2: n_inner absent means 4·n_embd; elsewhere intermediate_size is required.</summary>
    public int? DefaultIntermediateFactor { get; init; }

    /// <summary>Gemma: <c>query_pre_attn_scalar</c>, <c>attn_logit_softcapping</c>, <c>final_logit_softcapping</c> are read.</summary>
    public bool GemmaAttention { get; init; }

    public double DefaultQueryPreAttnScalar { get; init; } = 256;
    public double? DefaultAttnSoftcap { get; init; }
    public double? DefaultFinalSoftcap { get; init; }
    public int? DefaultSlidingWindow { get; init; }

    /// <summary><see cref="WindowRule.LayerTypes"/> without layer_types: pattern P, and the key that may override it.</summary>
    public int DefaultSlidingPattern { get; init; } = 2;
    public string? SlidingPatternKey { get; init; }

    /// <summary><see cref="WindowRule.UseSlidingWindow"/> without layer_types and max_window_layers (qwen2, qwen3: 28).</summary>
    public int DefaultMaxWindowLayers { get; init; } = 28;

    /// <summary>Gemma-3: local (sliding) layers rotate with <c>rope_local_base_freq</c> and no scaling.</summary>
    public bool LocalRope { get; init; }
    public double DefaultLocalRopeTheta { get; init; } = 10000;

    /// <summary>Phi-3: rope_scaling of type <c>longrope</c> (or its old names <c>su</c> and <c>yarn</c>, as Phi3Config
    /// renames them; no other type but default) with short and long factors, relative to the top-level
    /// <c>original_max_position_embeddings</c> (default 4096).</summary>
    public bool LongRope { get; init; }

    /// <summary>SmolLM3: <c>no_rope_layers</c> (or <c>no_rope_layer_interval</c>) names layers without RoPE.</summary>
    public bool NoRopeLayers { get; init; }

    /// <summary>EXAONE 4: with a sliding window, only the sliding layers rotate; the full-attention ones use no position
    /// encoding (NoPE). Without a window every layer rotates.</summary>
    public bool GlobalNoPe { get; init; }

    /// <summary>Phi-3 (Phi-4-mini), GPT-NeoX: <c>partial_rotary_factor</c> below 1 rotates the first head_dim · factor
    /// channels of each head only (transformers splits q and k there for these families; elsewhere a factor other than 1
    /// is refused).</summary>
    public bool PartialRotary { get; init; }

    /// <summary>A key read for the activation before <see cref="ConfigKeys.Activation"/> when the config has it (Gemma 1's
    /// <c>hidden_activation</c>), and written back beside it.</summary>
    public string? PreferredActivationKey { get; init; }

    /// <summary>Granite: <c>embedding_multiplier</c>, <c>attention_multiplier</c>, <c>residual_multiplier</c> and
    /// <c>logits_scaling</c> are read (each 1 when absent).</summary>
    public bool Multipliers { get; init; }

    /// <summary>GPT-Neo: attention scores are q·k unscaled (no 1/√head_dim).</summary>
    public bool UnscaledAttention { get; init; }

    /// <summary>Llama, SmolLM3, Hunyuan: <c>pretraining_tp</c> other than 1 (transformers ≤ 4.44's sliced projections) is
    /// read as 1 without biases and refused with them (<c>ModelConfig.PretrainingTp</c>).</summary>
    public bool SlicedPretrainingTp { get; init; }

    /// <summary>Keys with values AlignSharp cannot honour.</summary>
    public RejectedValue[] Rejected { get; init; } = [];

    /// <summary>Rotary position embeddings (rope_theta, rope_scaling are read and written).</summary>
    public bool HasRope => !LearnedPositions && !Alibi;
}

/// <summary>The table of every family AlignSharp reads.</summary>
internal static class FamilyTables
{
    private static bool IsTrue(System.Text.Json.Nodes.JsonNode n) => n.GetValueKind() == System.Text.Json.JsonValueKind.True;
    private static bool IsFalse(System.Text.Json.Nodes.JsonNode n) => n.GetValueKind() == System.Text.Json.JsonValueKind.False;

    private static readonly RejectedValue BidirectionalAttention = new("use_bidirectional_attention", IsTrue, "true is not supported (decoder-only, causal models only)");
    private static readonly RejectedValue UnscaledAttention = new("scale_attn_weights", IsFalse, "false is not supported");
    private static readonly RejectedValue CrossAttention = new("add_cross_attention", IsTrue, "true is not supported (decoder-only models only)");

    public static readonly FamilyTable Gpt2 = new(ModelFamily.Gpt2, "gpt2", "GPT2LMHeadModel", "GPT2ForSequenceClassification", Gpt2NameTable.Table)
    {
        Keys = ConfigKeys.Gpt2,
        LearnedPositions = true,
        Norm = NormKind.LayerNorm,
        GatedMlp = false,
        Qkv = QkvLayout.Concatenated,
        Biases = BiasRule.All,
        Window = WindowRule.None,
        Activations = [("gelu_new", HiddenActivation.GeluTanh), ("gelu_pytorch_tanh", HiddenActivation.GeluTanh), ("gelu", HiddenActivation.Gelu)],
        DefaultMaxPositions = 1024,
        DefaultNormEps = 1e-5,
        DefaultTieWordEmbeddings = true,
        DefaultIntermediateFactor = 4,
        Rejected =
        [
            new("scale_attn_by_inverse_layer_idx", IsTrue, "true is not supported"),
            UnscaledAttention,
            CrossAttention,
            new("reorder_and_upcast_attn", IsTrue, "true is not supported"),
        ],
    };

    public static readonly FamilyTable Llama = new(ModelFamily.Llama, "llama", "LlamaForCausalLM", "LlamaForSequenceClassification", LlamaNameTable.Table)
    {
        Biases = BiasRule.AttentionAndMlpKeys,
        DefaultMaxPositions = 2048,
        SlicedPretrainingTp = true,
    };

    public static readonly FamilyTable Qwen2 = new(ModelFamily.Qwen2, "qwen2", "Qwen2ForCausalLM", "Qwen2ForSequenceClassification", LlamaNameTable.Table)
    {
        Biases = BiasRule.QkvOnly,
        Window = WindowRule.UseSlidingWindow,
        DefaultSlidingWindow = 4096,
        DefaultMaxPositions = 32768,
    };

    public static readonly FamilyTable Mistral = new(ModelFamily.Mistral, "mistral", "MistralForCausalLM", "MistralForSequenceClassification", LlamaNameTable.Table)
    {
        Biases = BiasRule.None,
        Window = WindowRule.EveryLayer,
        DefaultMaxPositions = 4096 * 32,
    };

    /// <summary>Qwen3: Llama's block with per-head q/k RMSNorm, head_dim 128 by default, attention_bias for q/k/v/o.</summary>
    public static readonly FamilyTable Qwen3 = new(ModelFamily.Qwen3, "qwen3", "Qwen3ForCausalLM", "Qwen3ForSequenceClassification", LlamaNameTable.Table)
    {
        QkNorm = true,
        Biases = BiasRule.AttentionBiasKey,
        Window = WindowRule.UseSlidingWindow,
        DefaultSlidingWindow = 4096,
        DefaultMaxPositions = 32768,
        DefaultHeadDim = 128,
    };

    private static readonly (string, HiddenActivation)[] GemmaActivations =
        [("gelu_pytorch_tanh", HiddenActivation.GeluTanh), ("gelu_new", HiddenActivation.GeluTanh)];

    /// <summary>Gemma-2: (1 + w) RMSNorm, four norms per block, √D-scaled embeddings, GeGLU (tanh), soft-capped
    /// attention and final logits, query_pre_attn_scalar, sliding window on every even layer, tied head.</summary>
    public static readonly FamilyTable Gemma2 = new(ModelFamily.Gemma2, "gemma2", "Gemma2ForCausalLM", "Gemma2ForSequenceClassification", GemmaNameTable.Table)
    {
        Keys = ConfigKeys.Standard with { Activation = "hidden_activation" },
        NormWeightOffset = 1,
        SandwichNorms = true,
        ScaledEmbedding = true,
        Biases = BiasRule.AttentionBiasKey,
        Window = WindowRule.LayerTypes,
        Activations = GemmaActivations,
        DefaultMaxPositions = 8192,
        DefaultTieWordEmbeddings = true,
        DefaultHeadDim = 256,
        GemmaAttention = true,
        DefaultAttnSoftcap = 50.0,
        DefaultFinalSoftcap = 30.0,
        DefaultSlidingWindow = 4096,
        DefaultSlidingPattern = 2,
        Rejected = [BidirectionalAttention],
    };

    /// <summary>Gemma-3 text (<c>Gemma3ForCausalLM</c>, model_type gemma3_text): Gemma-2's block plus q/k norms, no soft
    /// caps by default, five local layers per global one, local layers with their own RoPE base.</summary>
    public static readonly FamilyTable Gemma3 = Gemma2 with
    {
        Family = ModelFamily.Gemma3,
        ModelType = "gemma3_text",
        CausalLm = "Gemma3ForCausalLM",
        SequenceClassification = "Gemma3ForSequenceClassification",
        QkNorm = true,
        DefaultMaxPositions = 131072,
        DefaultRopeTheta = 1_000_000,
        DefaultAttnSoftcap = null,
        DefaultFinalSoftcap = null,
        DefaultSlidingPattern = 6,
        SlidingPatternKey = "sliding_window_pattern",
        LocalRope = true,
    };

    /// <summary>Phi-3 / Phi-3.5 / Phi-4-mini: Llama's block with fused qkv_proj and gate_up_proj, no biases, Mistral's
    /// every-layer sliding_window, LongRoPE scaling, RoPE on part of each head (partial_rotary_factor).</summary>
    public static readonly FamilyTable Phi3 = new(ModelFamily.Phi3, "phi3", "Phi3ForCausalLM", "Phi3ForSequenceClassification", Phi3NameTable.Table)
    {
        Biases = BiasRule.None,
        Window = WindowRule.EveryLayer,
        DefaultMaxPositions = 4096,
        DefaultNormEps = 1e-5,
        LongRope = true,
        PartialRotary = true,
    };

    /// <summary>SmolLM3: Llama's block (attention_bias, mlp_bias) with NoPE layers, rope_theta 2e6 by default. Its
    /// sliding window (only with use_sliding_window, on NoPE layers) is not supported: the released models leave it off.</summary>
    public static readonly FamilyTable SmolLM3 = new(ModelFamily.SmolLM3, "smollm3", "SmolLM3ForCausalLM", "SmolLM3ForSequenceClassification", LlamaNameTable.Table)
    {
        Biases = BiasRule.AttentionAndMlpKeys,
        NoRopeLayers = true,
        DefaultMaxPositions = 32768,
        DefaultRopeTheta = 2_000_000,
        SlicedPretrainingTp = true,
        Rejected =
        [
            new("use_sliding_window", IsTrue, "true is not supported for smollm3 (the released models leave it false)"),
        ],
    };

    /// <summary>OLMo-2 (Olmo2ForCausalLM): Llama's projections with q/k RMSNorm over the whole projection and norms on the
    /// attention and MLP outputs instead of their inputs (h + norm(attn(h)), then h + norm(mlp(h))); transformers'
    /// Olmo2Config defaults.</summary>
    public static readonly FamilyTable Olmo2 = new(ModelFamily.Olmo2, "olmo2", "Olmo2ForCausalLM", "Olmo2ForSequenceClassification", Olmo2NameTable.Table)
    {
        QkNorm = true,
        FullWidthQkNorm = true,
        SandwichNorms = true,
        InputNorms = false,
        Biases = BiasRule.AttentionBiasKey,
        DefaultMaxPositions = 2048,
        DefaultNormEps = 1e-5,
    };

    /// <summary>Granite 3.x dense (GraniteForCausalLM): Llama's block and names with four multipliers (see
    /// <see cref="Multipliers"/>); transformers' GraniteConfig defaults.</summary>
    public static readonly FamilyTable Granite = new(ModelFamily.Granite, "granite", "GraniteForCausalLM", "GraniteForSequenceClassification", LlamaNameTable.Table)
    {
        Biases = BiasRule.AttentionAndMlpKeys,
        Multipliers = true,
        DefaultMaxPositions = 2048,
    };

    /// <summary>Gemma 1 (GemmaForCausalLM): Llama's block and tensor names with Gemma's (1 + w) RMSNorm, √D-scaled
    /// embeddings, GeGLU, head_dim 256 and a tied head; no soft caps, no window, head_dim^−½ as the attention scale. Its
    /// activation: hidden_activation where present (the 1.1 releases: gelu_pytorch_tanh), else hidden_act as written (the
    /// first releases say gelu: the exact GELU, as transformers 5 runs them; transformers 4 ran the tanh one instead).</summary>
    public static readonly FamilyTable Gemma = new(ModelFamily.Gemma, "gemma", "GemmaForCausalLM", "GemmaForSequenceClassification", LlamaNameTable.Table)
    {
        PreferredActivationKey = "hidden_activation",
        NormWeightOffset = 1,
        ScaledEmbedding = true,
        Biases = BiasRule.AttentionBiasKey,
        Activations = [("gelu_pytorch_tanh", HiddenActivation.GeluTanh), ("gelu_new", HiddenActivation.GeluTanh), ("gelu", HiddenActivation.Gelu)],
        DefaultMaxPositions = 8192,
        DefaultTieWordEmbeddings = true,
        DefaultHeadDim = 256,
        Rejected = [BidirectionalAttention],
    };

    /// <summary>GPT-NeoX (GPTNeoXForCausalLM: Pythia, the models of TRL's PPO/RLOO TL;DR examples): LayerNorm with biases,
    /// q/k/v fused head by head, RoPE on the first rotary_pct (0.25) of each head, attention and MLP in parallel by
    /// default, an fc → GELU → proj MLP with biases, an untied head named embed_out; transformers' GPTNeoXConfig defaults.</summary>
    public static readonly FamilyTable GptNeoX = new(ModelFamily.GptNeoX, "gpt_neox", "GPTNeoXForCausalLM", "GPTNeoXForSequenceClassification", GptNeoXNameTable.Table)
    {
        Keys = ConfigKeys.Standard with { NumKvHeads = null, HeadDim = null, NormEps = "layer_norm_eps" },
        Norm = NormKind.LayerNorm,
        GatedMlp = false,
        Qkv = QkvLayout.PerHead,
        ParallelResidualKey = true,
        Biases = BiasRule.AttentionBiasKeyMlpAlways,
        Activations = [("gelu", HiddenActivation.Gelu), ("gelu_new", HiddenActivation.GeluTanh), ("gelu_pytorch_tanh", HiddenActivation.GeluTanh)],
        DefaultMaxPositions = 2048,
        DefaultNormEps = 1e-5,
        PartialRotary = true,
        RopeThetaKey = "rotary_emb_base",
        PartialRotaryKey = "rotary_pct",
        DefaultPartialRotary = 0.25,
    };

    /// <summary>StableLM (StableLmForCausalLM: StableLM-2 1.6B, StableLM-3B, Zephyr 1.6B/3B): Llama's projections and
    /// gated SiLU MLP with LayerNorms (with biases), RoPE on the first partial_rotary_factor (0.25) of each head, q/k/v
    /// biases per use_qkv_bias, untied head. The 12B's per-head q/k LayerNorm and parallel residual are refused.</summary>
    public static readonly FamilyTable StableLm = new(ModelFamily.StableLm, "stablelm", "StableLmForCausalLM", "StableLmForSequenceClassification", StableLmNameTable.Table)
    {
        Keys = ConfigKeys.Standard with { NormEps = "layer_norm_eps" },
        Norm = NormKind.LayerNorm,
        Biases = BiasRule.UseQkvBiasKey,
        DefaultMaxPositions = 4096,
        DefaultNormEps = 1e-5,
        PartialRotary = true,
        DefaultPartialRotary = 0.25,
        Rejected =
        [
            new("qk_layernorm", IsTrue, "true is not supported (per-head LayerNorm of q and k, as in stablelm-2-12b)"),
            new("use_parallel_residual", IsTrue, "true is not supported for stablelm (one norm shared by attention and MLP, as in stablelm-2-12b)"),
        ],
    };

    /// <summary>Phi-1, Phi-1.5, Phi-2 (PhiForCausalLM): q, k, v and dense projections and an fc1 → gelu_new → fc2 MLP, all
    /// with biases; attention and MLP side by side on one LayerNorm of the block's input; RoPE on the first
    /// partial_rotary_factor (0.5) of each head; an untied LM head with a bias. Per-head q/k LayerNorm (qk_layernorm) is
    /// refused; transformers' PhiConfig defaults.</summary>
    public static readonly FamilyTable Phi = new(ModelFamily.Phi, "phi", "PhiForCausalLM", "PhiForSequenceClassification", PhiNameTable.Table)
    {
        Keys = ConfigKeys.Standard with { NormEps = "layer_norm_eps", HeadDim = null },
        Norm = NormKind.LayerNorm,
        GatedMlp = false,
        ParallelSharedNorm = true,
        LmHeadBias = true,
        Biases = BiasRule.All,
        Activations = [("gelu_new", HiddenActivation.GeluTanh), ("gelu_pytorch_tanh", HiddenActivation.GeluTanh), ("gelu", HiddenActivation.Gelu)],
        DefaultMaxPositions = 2048,
        DefaultNormEps = 1e-5,
        PartialRotary = true,
        DefaultPartialRotary = 0.5,
        Rejected = [new("qk_layernorm", IsTrue, "true is not supported (per-head LayerNorm of q and k)")],
    };

    /// <summary>OPT (OPTForCausalLM, facebook/opt-125m … 2.7b): learned positions read two rows in, q/k/v/out_proj and fc1 →
    /// ReLU → fc2 with biases (enable_bias), LayerNorm (eps 1e-5, no config key) before each part and at the end, or —
    /// do_layer_norm_before false, opt-350m — after each residual add and not at the end; token embeddings of
    /// word_embed_proj_dim projected in and out (project_in / project_out) where it differs from hidden_size; tied head.</summary>
    public static readonly FamilyTable Opt = new(ModelFamily.Opt, "opt", "OPTForCausalLM", "OPTForSequenceClassification", OptNameTable.Table)
    {
        Keys = ConfigKeys.Standard with { NumKvHeads = null, HeadDim = null, IntermediateSize = "ffn_dim", NormEps = null, Activation = "activation_function" },
        LearnedPositions = true,
        PositionOffset = 2,
        OptLayout = true,
        Norm = NormKind.LayerNorm,
        GatedMlp = false,
        Biases = BiasRule.AllByKey,
        AllBiasesKey = ("enable_bias", true),
        Activations = [("relu", HiddenActivation.Relu), ("gelu", HiddenActivation.Gelu), ("gelu_new", HiddenActivation.GeluTanh)],
        DefaultMaxPositions = 2048,
        DefaultNormEps = 1e-5,
        DefaultTieWordEmbeddings = true,
        Rejected =
        [
            new("layer_norm_elementwise_affine", IsFalse, "false is not supported (LayerNorms without weights)"),
            new("_remove_final_layer_norm", IsTrue, "true is not supported"),
        ],
    };

    /// <summary>EXAONE 4.0 (Exaone4ForCausalLM, LG's 1.2B and 32B): Llama's projections with per-head q/k RMSNorm, no norm
    /// before attention or MLP and one on each of their outputs (OLMo-2's order), sliding-window layers per layer_types
    /// (without it: three sliding layers to one full by sliding_window_pattern 4), and, with a window, no RoPE on the
    /// full-attention layers; transformers' Exaone4Config defaults (sliding_window 4096).</summary>
    public static readonly FamilyTable Exaone4 = new(ModelFamily.Exaone4, "exaone4", "Exaone4ForCausalLM", "Exaone4ForSequenceClassification", Exaone4NameTable.Table)
    {
        QkNorm = true,
        SandwichNorms = true,
        InputNorms = false,
        Biases = BiasRule.None,
        Window = WindowRule.LayerTypes,
        DefaultSlidingWindow = 4096,
        DefaultSlidingPattern = 4,
        SlidingPatternKey = "sliding_window_pattern",
        GlobalNoPe = true,
        DefaultMaxPositions = 2048,
        DefaultNormEps = 1e-5,
    };

    /// <summary>ERNIE 4.5 dense (Ernie4_5ForCausalLM: ERNIE-4.5-0.3B): Llama's block and names, biases on every projection per
    /// use_bias (default false), RoPE on interleaved channel pairs (GLM's layout), head_dim 128, base 500000, tied head.
    /// transformers has no Ernie4_5ForSequenceClassification: a scalar-head model saved here names that class anyway
    /// (AlignSharp reads it back; transformers would need the class).</summary>
    public static readonly FamilyTable Ernie45 = new(ModelFamily.Ernie45, "ernie4_5", "Ernie4_5ForCausalLM", "Ernie4_5ForSequenceClassification", LlamaNameTable.Table)
    {
        Biases = BiasRule.AllByKey,
        AllBiasesKey = ("use_bias", false),
        InterleavedRope = true,
        DefaultHeadDim = 128,
        DefaultMaxPositions = 131072,
        DefaultNormEps = 1e-5,
        DefaultRopeTheta = 500000,
        DefaultTieWordEmbeddings = true,
    };

    /// <summary>Hunyuan dense (HunYuanDenseV1ForCausalLM: Hunyuan-0.5B/1.8B/4B/7B): Llama's block and names with per-head q/k
    /// RMSNorm (<c>query_layernorm</c> / <c>key_layernorm</c>) applied after RoPE, attention_bias for q/k/v/o, no MLP
    /// biases, and rope_scaling dynamic with alpha (NTK-alpha base).</summary>
    public static readonly FamilyTable HunyuanDense = new(ModelFamily.HunyuanDense, "hunyuan_v1_dense", "HunYuanDenseV1ForCausalLM", "HunYuanDenseV1ForSequenceClassification", HunyuanNameTable.Table)
    {
        QkNorm = true,
        QkNormAfterRope = true,
        NtkAlpha = true,
        Biases = BiasRule.AttentionBiasKey,
        DefaultMaxPositions = 2048,
        DefaultNormEps = 1e-5,
        SlicedPretrainingTp = true,
    };

    /// <summary>OLMo 1 (OlmoForCausalLM: OLMo-1B-hf, OLMo-1B-0724-hf, OLMo-7B-hf): Llama's block and names with LayerNorms
    /// that have no weight or bias (eps 1e-5, no config key), attention_bias for q/k/v/o; clip_qkv (q, k and v clamped) is
    /// refused; transformers' OlmoConfig defaults.</summary>
    public static readonly FamilyTable Olmo = new(ModelFamily.Olmo, "olmo", "OlmoForCausalLM", "OlmoForSequenceClassification", OlmoNameTable.Table)
    {
        Keys = ConfigKeys.Standard with { NormEps = null },
        Norm = NormKind.LayerNorm,
        NormParameters = false,
        Biases = BiasRule.AttentionBiasKey,
        DefaultMaxPositions = 2048,
        DefaultNormEps = 1e-5,
        Rejected = [new("clip_qkv", n => n.GetValueKind() == System.Text.Json.JsonValueKind.Number, "is not supported (q, k and v clamped to ±clip_qkv); the released 1B models leave it null")],
    };

    /// <summary>BLOOM (BloomForCausalLM: bloom-560m … 3b, bloomz, the models of PEFT's examples): LayerNorms with biases, one on
    /// the token embeddings too, q/k/v fused head by head (GPT-NeoX's layout), ALiBi instead of position embeddings, a
    /// 4·hidden GELU-tanh MLP, biases everywhere, tied head; hidden_size or n_embed, n_head or num_attention_heads.
    /// apply_residual_connection_post_layernorm and slow_but_exact are refused; transformers' BloomConfig defaults.</summary>
    public static readonly FamilyTable Bloom = new(ModelFamily.Bloom, "bloom", "BloomForCausalLM", "BloomForSequenceClassification", BloomNameTable.Table)
    {
        Keys = new ConfigKeys("hidden_size", "n_layer", "n_head", null, null, null, null, "layer_norm_epsilon", null),
        KeyAliases = [("hidden_size", "n_embed"), ("n_head", "num_attention_heads"), ("n_layer", "num_hidden_layers")],
        Alibi = true,
        EmbeddingNorm = true,
        Norm = NormKind.LayerNorm,
        GatedMlp = false,
        Qkv = QkvLayout.PerHead,
        Biases = BiasRule.All,
        Activations = [("bloom_gelu", HiddenActivation.GeluTanh)],
        DefaultIntermediateFactor = 4,
        DefaultMaxPositions = 2048,
        DefaultNormEps = 1e-5,
        DefaultTieWordEmbeddings = true,
        Rejected =
        [
            new("apply_residual_connection_post_layernorm", IsTrue, "true is not supported (the normed hidden states as the residual)"),
            new("slow_but_exact", IsTrue, "true is not supported (Megatron's sliced projections)"),
        ],
    };

    /// <summary>LFM2 (Lfm2ForCausalLM: LiquidAI's LFM2-350M/700M/1.2B/2.6B): RMSNorm blocks that are either a gated short
    /// convolution (in_proj to B, C, x; C ⊙ conv(B ⊙ x) over the last conv_L_cache steps of each channel; out_proj) or
    /// grouped-query attention with per-head q/k RMSNorm before RoPE (out_proj), each followed by a SwiGLU MLP (w1, w3,
    /// w2) whose width transformers adjusts from intermediate_size (block_auto_adjust_ff_dim); the final norm is called
    /// embedding_norm; tied head; transformers' Lfm2Config defaults. transformers has no Lfm2ForSequenceClassification: a
    /// scalar-head model saved here names it anyway (AlignSharp reads it back).</summary>
    public static readonly FamilyTable Lfm2 = new(ModelFamily.Lfm2, "lfm2", "Lfm2ForCausalLM", "Lfm2ForSequenceClassification", Lfm2NameTable.Table)
    {
        Keys = ConfigKeys.Standard with { IntermediateSize = null, NormEps = "norm_eps", Activation = null },
        ShortConvLayers = true,
        QkNorm = true,
        Biases = BiasRule.None,
        DefaultMaxPositions = 128000,
        DefaultNormEps = 1e-5,
        DefaultRopeTheta = 1_000_000,
        DefaultTieWordEmbeddings = true,
    };

    /// <summary>GLM (GlmForCausalLM: GLM-Edge-1.5B/4B-chat, GLM-4-9B): Llama's block with q/k/v biases per attention_bias
    /// (default true; never on o_proj), gate and up fused in gate_up_proj (Phi-3's layout), and RoPE on interleaved channel
    /// pairs (ERNIE 4.5's layout) over the first partial_rotary_factor (0.5) of each head; transformers' GlmConfig defaults.</summary>
    public static readonly FamilyTable Glm = new(ModelFamily.Glm, "glm", "GlmForCausalLM", "GlmForSequenceClassification", GlmNameTable.Table)
    {
        Biases = BiasRule.AttentionBiasKeyQkvOnly,
        InterleavedRope = true,
        PartialRotary = true,
        DefaultPartialRotary = 0.5,
        DefaultHeadDim = 128,
        DefaultMaxPositions = 131072,
        DefaultNormEps = 1.5625e-7,
    };

    /// <summary>Starcoder2 (Starcoder2ForCausalLM: starcoder2-3b/7b/15b and their instruct fine-tunes): Mistral's attention
    /// (grouped queries, sliding_window on every layer) with LayerNorms, a c_fc → GELU-tanh → c_proj MLP, biases on every
    /// projection per use_bias (default true), tied head; transformers' Starcoder2Config defaults.</summary>
    public static readonly FamilyTable Starcoder2 = new(ModelFamily.Starcoder2, "starcoder2", "Starcoder2ForCausalLM", "Starcoder2ForSequenceClassification", Starcoder2NameTable.Table)
    {
        Keys = ConfigKeys.Standard with { NormEps = "norm_epsilon" },
        Norm = NormKind.LayerNorm,
        GatedMlp = false,
        Biases = BiasRule.AllByKey,
        AllBiasesKey = ("use_bias", true),
        Window = WindowRule.EveryLayer,
        Activations = [("gelu_pytorch_tanh", HiddenActivation.GeluTanh), ("gelu_new", HiddenActivation.GeluTanh), ("gelu", HiddenActivation.Gelu)],
        DefaultMaxPositions = 4096,
        DefaultNormEps = 1e-5,
        DefaultTieWordEmbeddings = true,
    };

    /// <summary>GPTBigCode (GPTBigCodeForCausalLM: starcoderbase-1b, tiny_starcoder, santacoder, WizardCoder-1B): GPT-2's block
    /// and names with nn.Linear weights ([out, in], not Conv1D's), multi-query attention (multi_query, default true: one
    /// key/value head), GELU-tanh by default; GPT-2's keys or their transformers names (hidden_size, …); tied head.</summary>
    public static readonly FamilyTable GptBigCode = new(ModelFamily.GptBigCode, "gpt_bigcode", "GPTBigCodeForCausalLM", "GPTBigCodeForSequenceClassification", GptBigCodeNameTable.Table)
    {
        Keys = ConfigKeys.Gpt2,
        KeyAliases = [("n_embd", "hidden_size"), ("n_layer", "num_hidden_layers"), ("n_head", "num_attention_heads"), ("n_positions", "max_position_embeddings")],
        MultiQueryKey = true,
        LearnedPositions = true,
        Norm = NormKind.LayerNorm,
        GatedMlp = false,
        Qkv = QkvLayout.Concatenated,
        Biases = BiasRule.All,
        Activations = [("gelu_pytorch_tanh", HiddenActivation.GeluTanh), ("gelu_new", HiddenActivation.GeluTanh), ("gelu", HiddenActivation.Gelu), ("relu", HiddenActivation.Relu)],
        DefaultMaxPositions = 1024,
        DefaultNormEps = 1e-5,
        DefaultTieWordEmbeddings = true,
        DefaultIntermediateFactor = 4,
        Rejected = [UnscaledAttention, CrossAttention],
    };

    /// <summary>GPT-Neo (GPTNeoForCausalLM: gpt-neo-125m, 1.3B, 2.7B): GPT-2's block with separate q/k/v projections without
    /// biases (out_proj with one), nn.Linear weights, learned positions, unscaled attention scores, and local layers per
    /// attention_types that see the last window_size (256) positions; transformers' GPTNeoConfig defaults, tied head.</summary>
    public static readonly FamilyTable GptNeo = new(ModelFamily.GptNeo, "gpt_neo", "GPTNeoForCausalLM", "GPTNeoForSequenceClassification", GptNeoNameTable.Table)
    {
        Keys = new ConfigKeys("hidden_size", "num_layers", "num_heads", null, null, "intermediate_size", "max_position_embeddings", "layer_norm_epsilon", "activation_function"),
        KeyAliases = [("num_layers", "num_hidden_layers"), ("num_heads", "num_attention_heads")],
        LearnedPositions = true,
        UnscaledAttention = true,
        Norm = NormKind.LayerNorm,
        GatedMlp = false,
        Biases = BiasRule.OutputAndMlpOnly,
        Window = WindowRule.AttentionTypes,
        DefaultSlidingWindow = 256,
        Activations = [("gelu_new", HiddenActivation.GeluTanh), ("gelu_pytorch_tanh", HiddenActivation.GeluTanh), ("gelu", HiddenActivation.Gelu), ("relu", HiddenActivation.Relu)],
        DefaultMaxPositions = 2048,
        DefaultNormEps = 1e-5,
        DefaultTieWordEmbeddings = true,
        DefaultIntermediateFactor = 4,
    };

    /// <summary>Helium (HeliumForCausalLM: kyutai's helium-1-2b): Llama's block and names with RoPE on interleaved channel
    /// pairs (GLM's layout over the whole head), q/k/v biases per attention_bias and MLP biases per mlp_bias (both default
    /// false; o_proj never has one); transformers' HeliumConfig defaults (rms_norm_eps 1e-8, base 100000, head_dim 128).</summary>
    public static readonly FamilyTable Helium = new(ModelFamily.Helium, "helium", "HeliumForCausalLM", "HeliumForSequenceClassification", LlamaNameTable.Table)
    {
        Biases = BiasRule.QkvAndMlpKeys,
        InterleavedRope = true,
        DefaultHeadDim = 128,
        DefaultMaxPositions = 4096,
        DefaultNormEps = 1e-8,
        DefaultRopeTheta = 100000,
    };

    /// <summary>Granite 4.0 (GraniteMoeHybridForCausalLM: granite-4.0-350m, 1b and micro, all attention; granite-4.0-h-350m,
    /// h-1b and h-micro, mostly Mamba-2; granite-4.0-h-tiny and h-small with experts): Granite's four multipliers, RMSNorm
    /// blocks whose first half is attention (q/k/v/o biases per attention_bias) or a Mamba-2 mixer per layer_types, whose
    /// second is the "shared" gated MLP (input_linear [2·I, D]: gate rows, then up; output_linear) of width
    /// shared_intermediate_size, plus, with num_local_experts (default 8) other than 0, Granite MoE's sparse mixture of
    /// experts (each intermediate_size wide) added to it; RoPE per position_embedding_type; transformers'
    /// GraniteMoeHybridConfig defaults.</summary>
    public static readonly FamilyTable GraniteMoeHybrid = new(ModelFamily.GraniteMoeHybrid, "granitemoehybrid", "GraniteMoeHybridForCausalLM", "GraniteMoeHybridForSequenceClassification", GraniteMoeHybridNameTable.Table)
    {
        Keys = ConfigKeys.Standard with { IntermediateSize = "shared_intermediate_size", HeadDim = null },
        MambaLayers = true,
        Multipliers = true,
        Biases = BiasRule.AttentionBiasKey,
        Activations = [("silu", HiddenActivation.Silu)],
        DefaultMaxPositions = 2048,
    };

    /// <summary>Granite 3.0/3.1 MoE (GraniteMoeForCausalLM: granite-3.x-1b-a400m and 3b-a800m, base and instruct): Granite's
    /// block, multipliers and attention (q/k/v/o biases per attention_bias, RoPE), with a sparse mixture of experts in the
    /// MLP's place: a router picks num_experts_per_tok of num_local_experts experts per token, each a gated MLP (input_linear
    /// [E, 2·I, D]: gate rows, then up; output_linear [E, D, I]) weighted by the softmax of the chosen router logits;
    /// transformers' GraniteMoeConfig defaults. transformers has no GraniteMoeForSequenceClassification: a scalar-head model
    /// saved here names it anyway (AlignSharp reads it back).</summary>
    public static readonly FamilyTable GraniteMoe = new(ModelFamily.GraniteMoe, "granitemoe", "GraniteMoeForCausalLM", "GraniteMoeForSequenceClassification", GraniteMoeNameTable.Table)
    {
        ExpertMlp = true,
        Multipliers = true,
        Biases = BiasRule.AttentionBiasKey,
        Activations = [("silu", HiddenActivation.Silu)],
        DefaultMaxPositions = 2048,
    };

    /// <summary>Falcon-H1 (FalconH1ForCausalLM: Falcon-H1-0.5B/1.5B/1.5B-Deep/3B and their instruct models): RMSNorm blocks
    /// whose normed input feeds attention (key_multiplier on k, RoPE) and a Mamba-2 mixer (mamba_d_ssm channels, µP
    /// multipliers on in_proj's parts, the gated norm only with mamba_rms_norm) side by side, then a Llama MLP with gate
    /// and output multipliers (feed_forward.*, pre_ff_layernorm), final_layernorm, logits times lm_head_multiplier;
    /// attention_bias and mlp_bias; transformers' FalconH1Config defaults. transformers has no
    /// FalconH1ForSequenceClassification: a scalar-head model saved here names it anyway (AlignSharp reads it back).</summary>
    public static readonly FamilyTable FalconH1 = new(ModelFamily.FalconH1, "falcon_h1", "FalconH1ForCausalLM", "FalconH1ForSequenceClassification", FalconH1NameTable.Table)
    {
        ParallelMamba = true,
        Biases = BiasRule.AttentionAndMlpKeys,
        Activations = [("silu", HiddenActivation.Silu)],
        DefaultMaxPositions = 8192,
        DefaultNormEps = 1e-5,
    };

    public static readonly FamilyTable[] All = [Gpt2, Llama, Qwen2, Mistral, Qwen3, Gemma2, Gemma3, Phi3, SmolLM3, Olmo2, Granite, Gemma, GptNeoX, StableLm, Phi, Opt, Exaone4, Ernie45, HunyuanDense, Olmo, Bloom, Lfm2, Glm, Starcoder2, GptBigCode, GptNeo, Helium, GraniteMoeHybrid, FalconH1, GraniteMoe];

    /// <summary><see cref="All"/> indexed by family: <see cref="Of"/> runs several times per block of every forward pass.</summary>
    private static readonly FamilyTable?[] ByFamily = BuildIndex();

    private static FamilyTable?[] BuildIndex()
    {
        var index = new FamilyTable?[All.Max(t => (int)t.Family) + 1];
        foreach (var t in All) index[(int)t.Family] = t;
        return index;
    }

    public static FamilyTable Of(ModelFamily family) =>
        (uint)family < (uint)ByFamily.Length && ByFamily[(int)family] is { } table ? table
        : throw new ArgumentOutOfRangeException(nameof(family), $"no family table for {family}");

    /// <summary>The family of a <c>model_type</c>, or null.</summary>
    public static FamilyTable? ForModelType(string modelType) => All.FirstOrDefault(t => t.ModelType == modelType);
}
