using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using AlignSharp.Engine;

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

    /// <summary><c>qwen3</c>: as Llama, with per-head q/k RMSNorm; q/k/v/o biases per <c>attention_bias</c>.</summary>
    Qwen3,

    /// <summary><c>gemma2</c>: (1 + w) RMSNorm, four norms per block, √D-scaled embeddings, GeGLU, soft caps,
    /// sliding window on alternate layers, tied head.</summary>
    Gemma2,

    /// <summary><c>gemma3_text</c> (<c>Gemma3ForCausalLM</c>): Gemma-2's block with q/k norms, a local/global layer
    /// pattern and a separate RoPE base for local layers.</summary>
    Gemma3,

    /// <summary><c>phi3</c> (Phi-3, Phi-3.5): as Llama with fused qkv_proj / gate_up_proj, no biases, LongRoPE scaling.</summary>
    Phi3,

    /// <summary><c>smollm3</c> (SmolLM3): as Llama, with no rotary embedding (NoPE) in the layers <c>no_rope_layers</c>
    /// marks 0 (every fourth by default).</summary>
    SmolLM3,

    /// <summary><c>olmo2</c> (OLMo-2): Llama's projections, q/k RMSNorm over the whole projection, norms on the attention
    /// and MLP outputs instead of their inputs.</summary>
    Olmo2,

    /// <summary><c>gemma</c> (Gemma 1): Llama's block and names with (1 + w) RMSNorm, √D-scaled embeddings, GeGLU and a
    /// tied head.</summary>
    Gemma,

    /// <summary><c>granite</c> (IBM Granite 3.x dense): Llama's block with four multipliers: on the token embeddings, as
    /// the attention scale, on each block output before its residual add, and dividing the logits.</summary>
    Granite,

    /// <summary><c>gpt_neox</c> (Pythia): LayerNorm with biases, q/k/v fused head by head, partial RoPE, attention and MLP
    /// in parallel (<see cref="ModelConfig.ParallelResidual"/>), GELU MLP with biases, untied head.</summary>
    GptNeoX,

    /// <summary><c>stablelm</c> (StableLM-2, StableLM-3B): Llama's block with LayerNorms (with biases), partial RoPE and
    /// q/k/v biases per <c>use_qkv_bias</c>.</summary>
    StableLm,

    /// <summary><c>phi</c> (Phi-1, 1.5, 2): LayerNorm, attention and MLP side by side on one norm, partial RoPE, biases
    /// everywhere, an LM head with a bias.</summary>
    Phi,

    /// <summary><c>opt</c> (Meta's OPT): GPT-2's block with separate q/k/v, learned positions offset by 2, a ReLU MLP,
    /// LayerNorm before or (opt-350m) after each residual add, and embeddings of their own width projected in and out.</summary>
    Opt,

    /// <summary><c>exaone4</c> (EXAONE 4.0): per-head q/k norms, norms on the attention and MLP outputs only, sliding
    /// layers per layer_types, and no RoPE on the full-attention layers of a windowed model.</summary>
    Exaone4,

    /// <summary><c>ernie4_5</c> (ERNIE 4.5 dense): Llama's block with biases per use_bias and RoPE on interleaved channel pairs.</summary>
    Ernie45,

    /// <summary><c>hunyuan_v1_dense</c> (Hunyuan 0.5B–7B dense): Llama's block with per-head q/k RMSNorm after RoPE and
    /// the NTK-alpha RoPE base.</summary>
    HunyuanDense,

    /// <summary><c>olmo</c> (OLMo 1): Llama's block with LayerNorms that have no weight or bias.</summary>
    Olmo,

    /// <summary><c>bloom</c> (BLOOM, BLOOMZ): GPT-NeoX's fused per-head q/k/v with ALiBi instead of positions, a LayerNorm on
    /// the embeddings, a GELU-tanh MLP, biases everywhere, tied head.</summary>
    Bloom,

    /// <summary><c>lfm2</c> (LiquidAI's LFM2): RMSNorm blocks that are gated short convolutions or attention with q/k
    /// norms, each with a SwiGLU MLP.</summary>
    Lfm2,

    /// <summary><c>glm</c> (GLM-Edge, GLM-4): Llama's block with q/k/v biases, a fused gate/up projection and RoPE on
    /// interleaved pairs of the first half of each head.</summary>
    Glm,

    /// <summary><c>starcoder2</c> (Starcoder2): Mistral's attention with LayerNorms, a GELU MLP and biases per use_bias.</summary>
    Starcoder2,

    /// <summary><c>gpt_bigcode</c> (StarCoderBase-1B, SantaCoder): GPT-2's block with multi-query attention and Linear weights.</summary>
    GptBigCode,

    /// <summary><c>gpt_neo</c> (GPT-Neo): GPT-2's block with separate q/k/v, unscaled scores and local (windowed) layers.</summary>
    GptNeo,

    /// <summary><c>helium</c> (Helium 1): Llama's block with RoPE on interleaved pairs and no o_proj bias.</summary>
    Helium,

    /// <summary><c>granitemoehybrid</c> (IBM Granite 4.0: granite-4.0-350m/1b/micro, their -h hybrids, h-tiny and h-small):
    /// Granite's multipliers, a fused gated MLP (with experts beside it where num_local_experts is not 0,
    /// <see cref="ModelConfig.Moe"/>), and per <c>layer_types</c> attention (RoPE or none, per position_embedding_type)
    /// or a Mamba-2 mixer (<see cref="ModelConfig.Mamba"/>).</summary>
    GraniteMoeHybrid,

    /// <summary><c>falcon_h1</c> (TII's Falcon-H1-0.5B/1.5B/3B): every layer attention and a Mamba-2 mixer side by side on
    /// the same normed input, a Llama MLP, µP multipliers throughout (<see cref="ModelConfig.Falcon"/>).</summary>
    FalconH1,

    /// <summary><c>granitemoe</c> (IBM Granite 3.0/3.1 MoE: granite-3.x-1b-a400m and 3b-a800m): Granite's block and
    /// multipliers with a sparse mixture of experts in the MLP's place (<see cref="ModelConfig.Moe"/>).</summary>
    GraniteMoe,
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

    /// <summary><c>relu</c>: max(x, 0) (OPT's MLP).</summary>
    Relu,
}

/// <summary>Normalisation layer type.</summary>
public enum NormKind
{
    /// <summary>(x − mean) / √(biased var + eps) · weight + bias.</summary>
    LayerNorm,

    /// <summary>weight · x / √(mean(x²) + eps), computed in float32.</summary>
    RmsNorm,
}

/// <summary><c>rope_scaling</c> (transformers 5: the scaling fields of <c>rope_parameters</c>): type <c>linear</c>
/// (every inverse frequency divided by factor; the other fields 0), <c>llama3</c>, <c>yarn</c> (factor, the
/// pre-training length, <see cref="BetaFast"/> / <see cref="BetaSlow"/>, <see cref="Truncate"/> and the attention
/// factor), or <c>longrope</c> / <c>su</c> (Phi-3: <see cref="ShortFactor"/> and <see cref="LongFactor"/> divide the
/// inverse frequencies; Factor = max_position_embeddings / original_max_position_embeddings); see
/// <see cref="ModelConfig.RopeFrequencies"/>.</summary>
public sealed record RopeScaling(string Type, double Factor, double LowFreqFactor, double HighFreqFactor, int OriginalMaxPositionEmbeddings)
{
    /// <summary>LongRoPE: per-pair divisors (head_dim / 2) used while every position is below OriginalMaxPositionEmbeddings.</summary>
    public IReadOnlyList<double>? ShortFactor { get; init; }

    /// <summary>LongRoPE: per-pair divisors used once a position reaches OriginalMaxPositionEmbeddings.</summary>
    public IReadOnlyList<double>? LongFactor { get; init; }

    /// <summary>LongRoPE / YaRN <c>attention_factor</c> when the config gives it; else derived (see <see cref="ModelConfig.RopeAttentionFactor"/>).</summary>
    public double? AttentionFactor { get; init; }

    /// <summary>YaRN: the rotations that bound the blend between interpolated and original frequencies (32 and 1).</summary>
    public double BetaFast { get; init; } = 32;

    public double BetaSlow { get; init; } = 1;

    /// <summary>YaRN: DeepSeek's <c>mscale</c> / <c>mscale_all_dim</c>; when both are set, the derived attention
    /// factor is their ratio of mscales.</summary>
    public double? Mscale { get; init; }

    public double? MscaleAllDim { get; init; }

    /// <summary>YaRN <c>truncate</c>: the blend's bounds rounded outward to whole dimensions (the default).</summary>
    public bool Truncate { get; init; } = true;

    /// <summary>Hunyuan's <c>dynamic</c> RoPE with <c>alpha</c> (NTK-alpha): the base becomes θ·α^(d/(d−2)), at every
    /// length.</summary>
    public double? Alpha { get; init; }

    public bool IsLongRope => Type is "longrope" or "su";

    public bool Equals(RopeScaling? other) =>
        other is not null && Type == other.Type && Factor.Equals(other.Factor) && LowFreqFactor.Equals(other.LowFreqFactor)
        && HighFreqFactor.Equals(other.HighFreqFactor) && OriginalMaxPositionEmbeddings == other.OriginalMaxPositionEmbeddings
        && (ShortFactor ?? []).SequenceEqual(other.ShortFactor ?? []) && (LongFactor ?? []).SequenceEqual(other.LongFactor ?? [])
        && AttentionFactor == other.AttentionFactor && BetaFast.Equals(other.BetaFast) && BetaSlow.Equals(other.BetaSlow)
        && Mscale == other.Mscale && MscaleAllDim == other.MscaleAllDim && Truncate == other.Truncate && Alpha == other.Alpha;

    public override int GetHashCode() => HashCode.Combine(Type, Factor, OriginalMaxPositionEmbeddings);
}

/// <summary>
/// The architecture of a decoder-only model, read from and written to a Hugging Face <c>config.json</c>.
/// What each family reads, its defaults (transformers' defaults for that <c>model_type</c>) and what it rejects
/// come from its row in <see cref="Checkpoints.FamilyTables"/>; the fields that fix tensor sizes (vocab_size,
/// hidden size, layers, heads, and intermediate_size outside gpt2) are required. An unknown model_type, or a key
/// that would change the math in a way AlignSharp does not implement (an unknown rope_scaling type,
/// partial_rotary_factor ≠ 1, ...), is an error naming the file and the field. <see cref="Source"/> keeps the
/// loaded JSON so that <see cref="ToJson"/> writes fields AlignSharp does not model back unchanged.
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

    /// <summary><c>partial_rotary_factor</c> (Phi-3 family; 1 elsewhere): RoPE turns the first
    /// <see cref="RotaryDim"/> = ⌊head_dim · factor⌋ channels of each head, the rest pass through.</summary>
    public double PartialRotaryFactor { get; init; } = 1;

    /// <summary>The channels of each head RoPE turns: ⌊head_dim · partial_rotary_factor⌋ (transformers' int()).</summary>
    public int RotaryDim => (int)(HeadDim * PartialRotaryFactor);

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

    /// <summary><c>sliding_window</c> (mistral, gemma2, gemma3): a position attends to at most this many positions
    /// (itself included), counted in sequence (cache) slots, not position ids, as transformers does. Null: full
    /// causal attention everywhere.</summary>
    public int? SlidingWindow { get; init; }

    /// <summary>Which layers use <see cref="SlidingWindow"/> (Gemma's <c>layer_types</c>, true = sliding_attention);
    /// null: every layer (mistral).</summary>
    public IReadOnlyList<bool>? SlidingLayers { get; init; }

    /// <summary>SmolLM3's <c>no_rope_layers</c>: which layers rotate q and k (true; transformers' 1), the others use no
    /// position encoding at all (NoPE, 0). Null: every layer rotates.</summary>
    public IReadOnlyList<bool>? RopeLayers { get; init; }

    /// <summary>Whether layer <paramref name="layer"/> applies RoPE.</summary>
    public bool UsesRope(int layer) => RopeLayers == null || RopeLayers[layer];

    /// <summary>Gemma <c>query_pre_attn_scalar</c>: attention scores are scaled by its −½ power instead of head_dim's.</summary>
    public double? QueryPreAttnScalar { get; init; }

    /// <summary>Granite <c>embedding_multiplier</c>: token embeddings are multiplied by it. Null outside granite.</summary>
    public double? EmbeddingMultiplier { get; init; }

    /// <summary>Granite <c>attention_multiplier</c>: the attention score scale itself (in place of head_dim^−½).</summary>
    public double? AttentionMultiplier { get; init; }

    /// <summary>Granite <c>residual_multiplier</c>: each attention and MLP output is multiplied by it before its residual add.</summary>
    public double? ResidualMultiplier { get; init; }

    /// <summary>Granite <c>logits_scaling</c>: the vocabulary logits are divided by it (the LM head only).</summary>
    public double? LogitsScaling { get; init; }

    /// <summary>Gemma <c>attn_logit_softcapping</c> c: scaled scores z become c·tanh(z / c). Null: none.</summary>
    public double? AttnLogitSoftcap { get; init; }

    /// <summary>Gemma <c>final_logit_softcapping</c> c: vocabulary logits become c·tanh(logits / c). Null: none.</summary>
    public double? FinalLogitSoftcap { get; init; }

    /// <summary>Gemma-3 <c>rope_local_base_freq</c>: the RoPE base of the sliding layers, which use no rope_scaling.</summary>
    public double? LocalRopeTheta { get; init; }

    /// <summary>GPT-NeoX <c>use_parallel_residual</c>: true, each block adds attention and MLP, both read from its input
    /// (x + attn(ln₁(x)) + mlp(ln₂(x))); false, in turn. Null outside gpt_neox.</summary>
    public bool? ParallelResidual { get; init; }

    /// <summary>OPT <c>word_embed_proj_dim</c>: the width of the token embeddings and of the (tied) head's input, projected
    /// to and from hidden_size when it differs (opt-350m: 512 against 1024). Null outside opt.</summary>
    public int? WordEmbedProjDim { get; init; }

    /// <summary>OPT <c>do_layer_norm_before</c>: true, each norm precedes its attention or MLP and a final norm follows the
    /// blocks (as GPT-2); false (opt-350m), each norm follows its residual add and there is no final norm. Null outside opt.</summary>
    public bool? NormBeforeBlock { get; init; }

    /// <summary>The width of the token embeddings, of the final hidden states and of the head's input: hidden_size except
    /// OPT's word_embed_proj_dim.</summary>
    public int EmbedDim => WordEmbedProjDim ?? HiddenSize;

    /// <summary>Attention and MLP side by side on the block's input (GPT-NeoX's use_parallel_residual, Phi always).</summary>
    public bool ParallelBlock => ParallelResidual == true || Table.ParallelSharedNorm;

    /// <summary>OPT's opt-350m layout: norms after the residual adds, none at the end.</summary>
    public bool PostNorm => NormBeforeBlock == false;

    /// <summary>LFM2 <c>layer_types</c>: true where layer i is a gated short convolution ("conv"), false where it is
    /// attention ("full_attention"). Null outside lfm2.</summary>
    public IReadOnlyList<bool>? ConvLayers { get; init; }

    /// <summary>Whether layer <paramref name="layer"/> is a short convolution (LFM2).</summary>
    public bool IsConvLayer(int layer) => ConvLayers != null && ConvLayers[layer];

    /// <summary>LFM2 <c>conv_L_cache</c> (default 3): the steps each channel of a short convolution mixes, itself included.</summary>
    public int ConvWidth { get; init; }

    /// <summary>LFM2 <c>conv_bias</c> (default false): biases on a convolution layer's in_proj, kernel and out_proj.</summary>
    public bool ConvBias { get; init; }

    /// <summary>Granite 4.0 <c>layer_types</c>: true where layer i is a Mamba-2 mixer ("mamba"), false where it is attention
    /// ("attention"). Null outside granitemoehybrid.</summary>
    public IReadOnlyList<bool>? MambaLayers { get; init; }

    /// <summary>Whether layer <paramref name="layer"/> is a Mamba-2 mixer (Granite 4.0).</summary>
    public bool IsMambaLayer(int layer) => MambaLayers != null && MambaLayers[layer];

    /// <summary>Whether layer <paramref name="layer"/> has attention: not LFM2's convolution, and not a Mamba-2 mixer alone
    /// (Falcon-H1's layers have both).</summary>
    public bool HasAttention(int layer) => !IsConvLayer(layer) && (!IsMambaLayer(layer) || Table.ParallelMamba);

    /// <summary>Falcon-H1's multipliers; null elsewhere.</summary>
    public FalconMultipliers? Falcon { get; init; }

    /// <summary>The Mamba-2 mixers' shape (Granite 4.0's mamba_* keys); null outside granitemoehybrid.</summary>
    public MambaShape? Mamba { get; init; }

    /// <summary>The sparse mixture of experts in each layer's MLP place (granitemoe), or beside the shared MLP (granitemoehybrid
    /// with num_local_experts ≠ 0); null elsewhere.</summary>
    public MoeShape? Moe { get; init; }

    /// <summary>Granite 4.0 <c>position_embedding_type</c>: "rope" rotates q and k in every attention layer; anything else
    /// (null, "nope") uses no position encoding. Null outside granitemoehybrid.</summary>
    public string? PositionEmbeddingType { get; init; }

    public HeadKind Head { get; init; } = HeadKind.LanguageModel;

    /// <summary>The JSON this config was loaded from, or null; <see cref="ToJson"/> starts from a copy of it.</summary>
    public JsonObject? Source { get; init; }

    internal Checkpoints.FamilyTable Table => Checkpoints.FamilyTables.Of(Family);

    /// <summary>LayerNorm for gpt2, RMSNorm for the Llama and Gemma families.</summary>
    public NormKind Norm => Table.Norm;

    /// <summary>gpt2 adds learned position embeddings; the others rotate q and k (RoPE).</summary>
    public bool LearnedPositions => Table.LearnedPositions;

    /// <summary>Added to every norm weight (Gemma's (1 + w) RMSNorm: 1; else 0).</summary>
    public float NormWeightOffset => Table.NormWeightOffset;

    /// <summary>Per-head RMSNorm of q and k over head_dim before RoPE (Qwen3, Gemma-3).</summary>
    public bool QkNorm => Table.QkNorm;

    /// <summary>Norms on the attention and MLP outputs (Gemma, OLMo-2).</summary>
    public bool SandwichNorms => Table.SandwichNorms;

    /// <summary>Norms on the attention and MLP inputs (all but OLMo-2).</summary>
    public bool InputNorms => Table.InputNorms;

    /// <summary>q/k RMSNorm over the whole projection rather than per head (OLMo-2).</summary>
    public bool FullWidthQkNorm => Table.FullWidthQkNorm;

    /// <summary>Token embeddings scaled by √hidden_size (Gemma).</summary>
    public bool ScaledEmbedding => Table.ScaledEmbedding;

    /// <summary>The window of layer <paramref name="layer"/>, or null for full causal attention.</summary>
    public int? WindowOf(int layer) => SlidingWindow is int w && (SlidingLayers == null || SlidingLayers[layer]) ? w : null;

    /// <summary>Whether layer <paramref name="layer"/> is a sliding (local) one.</summary>
    public bool IsSlidingLayer(int layer) => WindowOf(layer) != null;

    /// <summary>The attention score scale: attention_multiplier (Granite), query_pre_attn_scalar^−½ (Gemma) or head_dim^−½.</summary>
    public float AttentionScale => Table.UnscaledAttention ? 1f : (float)(AttentionMultiplier ?? 1.0 / Math.Sqrt(QueryPreAttnScalar ?? HeadDim));

    /// <summary>Whether the LM head has a bias (Phi-1/1.5/2's untied head): lm_head.bias [V].</summary>
    public bool HasLmHeadBias => Table.LmHeadBias && Head == HeadKind.LanguageModel && !TieWordEmbeddings;

    /// <summary>
    /// BLOOM's ALiBi slopes, one per head, null elsewhere: with n the largest power of two ≤ H, head h &lt; n gets
    /// 2^(−8(h + 1)/n); the H − n heads past it take every other slope of 2n heads, 2^(−4(2j + 1)/n) for j = 0 … H − n − 1
    /// (the ALiBi paper's rule, as transformers' build_alibi_tensor forms it; float32 powers of a float32 base).
    /// </summary>
    public float[]? AlibiSlopes
    {
        get
        {
            if (!Table.Alibi) return null;
            int n = 1;
            while (n * 2 <= NumHeads) n *= 2;
            float Base(int count) => (float)Math.Pow(2, -Math.Pow(2, -(Math.Log2(count) - 3)));
            var slopes = new float[NumHeads];
            for (int h = 0; h < Math.Min(n, NumHeads); h++) slopes[h] = (float)Math.Pow(Base(n), h + 1);
            for (int j = 0; n + j < NumHeads; j++) slopes[n + j] = (float)Math.Pow(Base(2 * n), 2 * j + 1);
            return slopes;
        }
    }

    /// <summary>How the fused q/k/v projection is laid out: the family's, except GPTBigCode without multi_query, whose heads
    /// go one after the other (q, k, v each).</summary>
    internal Checkpoints.QkvLayout QkvLayout =>
        Table.MultiQueryKey && NumKvHeads == NumHeads && NumHeads > 1 ? Checkpoints.QkvLayout.PerHead : Table.Qkv;

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
        && PartialRotaryFactor.Equals(other.PartialRotaryFactor)
        && TieWordEmbeddings == other.TieWordEmbeddings && AttentionQkvBias == other.AttentionQkvBias
        && AttentionOutputBias == other.AttentionOutputBias && MlpBias == other.MlpBias && Activation == other.Activation
        && BosTokenId == other.BosTokenId && EosTokenIds.SequenceEqual(other.EosTokenIds) && PadTokenId == other.PadTokenId
        && SlidingWindow == other.SlidingWindow && Head == other.Head
        && (SlidingLayers ?? []).SequenceEqual(other.SlidingLayers ?? []) && (SlidingLayers == null) == (other.SlidingLayers == null)
        && QueryPreAttnScalar == other.QueryPreAttnScalar && AttnLogitSoftcap == other.AttnLogitSoftcap
        && FinalLogitSoftcap == other.FinalLogitSoftcap && LocalRopeTheta == other.LocalRopeTheta
        && (RopeLayers ?? []).SequenceEqual(other.RopeLayers ?? []) && (RopeLayers == null) == (other.RopeLayers == null)
        && EmbeddingMultiplier == other.EmbeddingMultiplier && AttentionMultiplier == other.AttentionMultiplier
        && ResidualMultiplier == other.ResidualMultiplier && LogitsScaling == other.LogitsScaling
        && ParallelResidual == other.ParallelResidual && WordEmbedProjDim == other.WordEmbedProjDim && NormBeforeBlock == other.NormBeforeBlock
        && (ConvLayers ?? []).SequenceEqual(other.ConvLayers ?? []) && (ConvLayers == null) == (other.ConvLayers == null)
        && ConvWidth == other.ConvWidth && ConvBias == other.ConvBias
        && (MambaLayers ?? []).SequenceEqual(other.MambaLayers ?? []) && (MambaLayers == null) == (other.MambaLayers == null)
        && Mamba == other.Mamba && PositionEmbeddingType == other.PositionEmbeddingType && Falcon == other.Falcon;

    public override int GetHashCode() =>
        HashCode.Combine(Family, VocabSize, HiddenSize, NumLayers, NumHeads, NumKvHeads, HeadDim, IntermediateSize);

    public static string ModelTypeName(ModelFamily family) => Checkpoints.FamilyTables.Of(family).ModelType;

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

    /// <summary>A number, or one of the Python literals <see cref="PythonJson.QuoteLiterals"/> quoted; null for anything else.</summary>
    internal static double? PythonLiteral(JsonNode? node) => node is JsonValue v
        ? v.TryGetValue(out double d) ? d
        : v.TryGetValue(out string? s) ? PythonJson.NonFinite(s)
        : null
        : null;

    /// <summary>Parses config.json text; <paramref name="source"/> names it in errors.</summary>
    public static ModelConfig Parse(string json, string source = "config.json")
    {
        JsonNode? root;
        try { root = PythonJson.Parse(PythonJson.QuoteLiterals(json)); }
        catch (JsonException e) { throw new UserInputException($"model config '{source}' is not valid JSON: {e.Message}", e); }
        if (root is not JsonObject obj) throw new UserInputException($"model config '{source}' is not a JSON object");
        var f = new ConfigFields(obj, source);

        string modelType = f.RequiredString("model_type");
        var table = Checkpoints.FamilyTables.ForModelType(modelType) ?? throw new UserInputException(
            $"model config '{source}': model_type '{modelType}' is not supported (supported: {string.Join(", ", Checkpoints.FamilyTables.All.Select(t => t.ModelType))})"
            + (modelType == "gemma3" ? "; for the text part of a Gemma-3 checkpoint use its text_config (model_type gemma3_text, Gemma3ForCausalLM)" : ""));
        foreach (var rejected in table.Rejected)
            if (f.Get(rejected.Key) is { } value && rejected.Unsupported(value))
                throw f.Error(rejected.Key, rejected.Problem);
        // Packed weights (AWQ, GPTQ, bitsandbytes, FP8) are named up front rather than met as tensors of the wrong shape.
        if (obj["quantization_config"] is JsonObject quantization)
            throw f.Error("quantization_config", $"a quantized checkpoint ({quantization["quant_method"]?.ToString() ?? "method not named"}) is not supported; " +
                "load the unquantized weights (--frozen-dtype bf16 halves the frozen weights' memory)");

        var k = table.KeysSpelledIn(obj);
        int d = f.RequiredInt(k.HiddenSize);
        int heads = f.RequiredInt(k.NumHeads);
        int layers = f.RequiredInt(k.NumLayers);
        int? headDim = k.HeadDim != null ? f.OptionalInt(k.HeadDim) ?? table.DefaultHeadDim : null;
        if (headDim is null && heads > 0 && d % heads != 0)
            throw f.Error(k.HiddenSize, $"{d} is not divisible by {k.NumHeads} {heads}" + (k.HeadDim != null ? " (give head_dim explicitly)" : ""));
        // Gemma 1: hidden_activation where the config has it (Google's fix of the released hidden_act), else hidden_act.
        string? actKey = table.PreferredActivationKey is { } preferred && f.OptionalString(preferred) != null ? preferred : k.Activation;
        string act = (actKey != null ? f.OptionalString(actKey) : null) ?? table.Activations[0].Name;
        var activation = table.Activations.FirstOrDefault(a => a.Name == act);
        if (activation.Name is null)
            throw f.Error(actKey!, $"'{act}' is not supported (supported: {string.Join(", ", table.Activations.Select(a => a.Name))})");
        var (qkvBias, oBias, mlpBias) = table.Biases switch
        {
            Checkpoints.BiasRule.All => (true, true, true),
            Checkpoints.BiasRule.QkvOnly => (true, false, false),
            Checkpoints.BiasRule.AttentionBiasKey => (f.OptionalBool("attention_bias") ?? false) is var ab ? (ab, ab, false) : default,
            Checkpoints.BiasRule.AttentionAndMlpKeys => (f.OptionalBool("attention_bias") ?? false) is var ab2 ? (ab2, ab2, f.OptionalBool("mlp_bias") ?? false) : default,
            Checkpoints.BiasRule.AttentionBiasKeyMlpAlways => (f.OptionalBool("attention_bias") ?? true) is var ab3 ? (ab3, ab3, true) : default,
            Checkpoints.BiasRule.UseQkvBiasKey => (f.OptionalBool("use_qkv_bias") ?? false, false, false),
            Checkpoints.BiasRule.AllByKey => (f.OptionalBool(table.AllBiasesKey.Key) ?? table.AllBiasesKey.Default) is var all ? (all, all, all) : default,
            Checkpoints.BiasRule.AttentionBiasKeyQkvOnly => (f.OptionalBool("attention_bias") ?? true, false, false),
            Checkpoints.BiasRule.OutputAndMlpOnly => (false, true, true),
            Checkpoints.BiasRule.QkvAndMlpKeys => (f.OptionalBool("attention_bias") ?? false, false, f.OptionalBool("mlp_bias") ?? false),
            _ => (false, false, false),
        };
        var (window, slidingLayers) = ParseWindow(f, table, layers);
        var rope = table.HasRope ? ParseRope(f, table) : (Theta: 10000.0, Scaling: (RopeScaling?)null, LocalTheta: (double?)null, PartialRotary: 1.0);
        var config = new ModelConfig
        {
            Family = table.Family,
            VocabSize = f.RequiredInt("vocab_size"),
            HiddenSize = d,
            NumLayers = layers,
            NumHeads = heads,
            NumKvHeads = table.MultiQueryKey ? ((f.OptionalBool("multi_query") ?? true) ? 1 : heads)
                : k.NumKvHeads != null ? f.OptionalInt(k.NumKvHeads) ?? heads : heads,
            HeadDim = headDim ?? (heads > 0 ? d / heads : 0),
            IntermediateSize = table.ShortConvLayers ? Lfm2MlpWidth(f)
                : table.DefaultIntermediateFactor is int factor
                ? (k.IntermediateSize != null ? f.OptionalInt(k.IntermediateSize) : null) ?? factor * d
                : f.RequiredInt(k.IntermediateSize!),
            MaxPositions = (k.MaxPositions != null ? f.OptionalInt(k.MaxPositions) : null) ?? table.DefaultMaxPositions,
            NormEps = (k.NormEps != null ? f.OptionalDouble(k.NormEps) : null) ?? table.DefaultNormEps,
            RopeTheta = rope.Theta,
            RopeScaling = rope.Scaling,
            PartialRotaryFactor = rope.PartialRotary,
            TieWordEmbeddings = f.OptionalBool("tie_word_embeddings") ?? table.DefaultTieWordEmbeddings,
            AttentionQkvBias = qkvBias,
            AttentionOutputBias = oBias,
            MlpBias = mlpBias,
            Activation = activation.Activation,
            SlidingWindow = window,
            SlidingLayers = slidingLayers,
            QueryPreAttnScalar = table.GemmaAttention ? f.OptionalDouble("query_pre_attn_scalar") ?? table.DefaultQueryPreAttnScalar : null,
            AttnLogitSoftcap = table.GemmaAttention ? f.OptionalDoubleOrNull("attn_logit_softcapping", table.DefaultAttnSoftcap) : null,
            FinalLogitSoftcap = table.GemmaAttention ? f.OptionalDoubleOrNull("final_logit_softcapping", table.DefaultFinalSoftcap) : null,
            LocalRopeTheta = rope.LocalTheta,
            RopeLayers = table.NoRopeLayers ? ParseRopeLayers(f, layers) : table.GlobalNoPe ? slidingLayers
                : table.MambaLayers && f.OptionalString("position_embedding_type") != "rope" ? new bool[Math.Max(0, layers)] : null,
            EmbeddingMultiplier = table.Multipliers ? f.OptionalDouble("embedding_multiplier") ?? 1.0 : null,
            AttentionMultiplier = table.Multipliers ? f.OptionalDouble("attention_multiplier") ?? 1.0 : null,
            ResidualMultiplier = table.Multipliers ? f.OptionalDouble("residual_multiplier") ?? 1.0 : null,
            LogitsScaling = table.Multipliers ? f.OptionalDouble("logits_scaling") ?? 1.0 : null,
            ParallelResidual = table.ParallelResidualKey ? f.OptionalBool("use_parallel_residual") ?? true : null,
            WordEmbedProjDim = table.OptLayout ? f.OptionalInt("word_embed_proj_dim") ?? d : null,
            NormBeforeBlock = table.OptLayout ? f.OptionalBool("do_layer_norm_before") ?? true : null,
            ConvLayers = table.ShortConvLayers ? Lfm2ConvLayers(f, layers) : null,
            ConvWidth = table.ShortConvLayers ? f.OptionalInt("conv_L_cache") ?? 3 : 0,
            ConvBias = table.ShortConvLayers && (f.OptionalBool("conv_bias") ?? false),
            MambaLayers = table.MambaLayers ? LayerKinds(f, layers, "mamba", "attention") ?? Enumerable.Repeat(true, Math.Max(0, layers)).ToArray()
                : table.ParallelMamba ? Enumerable.Repeat(true, Math.Max(0, layers)).ToArray() : null,
            Mamba = table.MambaLayers ? ParseMamba(f, d) : table.ParallelMamba ? ParseFalconMamba(f, d) : null,
            Moe = table.ExpertMlp || table.MambaLayers && (f.OptionalInt("num_local_experts") ?? 8) != 0 ? ParseMoe(f) : null,
            PositionEmbeddingType = table.MambaLayers ? f.OptionalString("position_embedding_type") ?? "nope" : null,
            Falcon = table.ParallelMamba ? ParseFalconMultipliers(f) : null,
            BosTokenId = f.OptionalInt("bos_token_id"),
            PadTokenId = f.OptionalInt("pad_token_id"),
            EosTokenIds = f.IntOrIntList("eos_token_id"),
            Head = ParseHead(f),
            Source = obj,
        };
        if (table.SlicedPretrainingTp) PretrainingTp(f, config);
        config.Validate(source);
        return config;
    }

    /// <summary>
    /// LFM2's MLP width as transformers' Lfm2MLP forms it: block_ff_dim (the original key) or intermediate_size (default
    /// 12288); with block_auto_adjust_ff_dim (default true) int(2·size/3), and when block_ffn_dim_multiplier (default 1) is
    /// not null, int(multiplier · that) rounded up to a multiple of block_multiple_of (default 256). LFM2-350M: 6656 → 4608.
    /// </summary>
    internal static int Lfm2MlpWidth(ConfigFields f)
    {
        int size = f.OptionalInt("block_ff_dim") ?? f.OptionalInt("intermediate_size") ?? 12288;
        if (!(f.OptionalBool("block_auto_adjust_ff_dim") ?? true)) return size;
        size = (int)(2.0 * size / 3);
        if (f.OptionalDoubleOrNull("block_ffn_dim_multiplier", 1.0) is not double multiplier) return size;
        int multiple = f.OptionalInt("block_multiple_of") ?? 256;
        if (multiple <= 0) throw f.Error("block_multiple_of", $"must be a positive integer, not {multiple}");
        size = (int)(multiplier * size);
        return multiple * ((size + multiple - 1) / multiple);
    }

    /// <summary>The mamba_* keys both families spell alike; a head size written "auto" (channels / heads) stays so.</summary>
    private void WriteMambaKeys(JsonObject o, MambaShape m)
    {
        o["mamba_n_heads"] = m.Heads;
        if (!(Source?["mamba_d_head"] is JsonValue auto && auto.TryGetValue(out string? spelled) && spelled == "auto")) o["mamba_d_head"] = m.HeadDim;
        o["mamba_d_state"] = m.StateSize;
        o["mamba_n_groups"] = m.Groups;
        o["mamba_d_conv"] = m.ConvWidth;
        o["mamba_expand"] = m.Expand;
        o["mamba_conv_bias"] = m.ConvBias;
        o["mamba_proj_bias"] = m.ProjBias;
        o["mamba_chunk_size"] = m.ChunkSize;
    }

    /// <summary>
    /// The experts' keys with transformers' defaults (GraniteMoeConfig, GraniteMoeHybridConfig): num_local_experts (8),
    /// num_experts_per_tok (2) of them per token, each intermediate_size (11008) wide; with output_router_logits (false)
    /// true, the routers' load-balancing loss joins training losses with weight router_aux_loss_coef (0.001).
    /// </summary>
    private static MoeShape ParseMoe(ConfigFields f)
    {
        double? aux = f.OptionalBool("output_router_logits") == true ? f.OptionalDouble("router_aux_loss_coef") ?? 0.001 : null;
        if (aux is double coef && !(coef >= 0 && double.IsFinite(coef)))
            throw f.Error("router_aux_loss_coef", $"must be a finite number ≥ 0, not {coef}");
        var moe = new MoeShape(f.OptionalInt("num_local_experts") ?? 8, f.OptionalInt("num_experts_per_tok") ?? 2, f.OptionalInt("intermediate_size") ?? 11008);
        if (moe.Experts <= 0) throw f.Error("num_local_experts", $"must be a positive integer, not {moe.Experts}");
        if (moe.ExpertSize <= 0) throw f.Error("intermediate_size", $"the experts' width must be a positive integer, not {moe.ExpertSize}");
        if (moe.TopK <= 0 || moe.TopK > moe.Experts) throw f.Error("num_experts_per_tok", $"{moe.TopK} must be between 1 and num_local_experts {moe.Experts}");
        return moe with { RouterAuxLossCoef = aux };
    }

    /// <summary>
    /// Granite 4.0's Mamba-2 mixer from its keys (transformers' defaults): <see cref="MambaKeys"/> over mamba_expand (2)
    /// · hidden channels, the gated norm over all of them after the gate, out_proj's bias as in_proj's.
    /// </summary>
    private static MambaShape ParseMamba(ConfigFields f, int hidden)
    {
        int expand = f.OptionalInt("mamba_expand") ?? 2;
        if (expand <= 0) throw f.Error("mamba_expand", $"must be a positive integer, not {expand}");
        var shape = MambaKeys(f, expand, expand * hidden, $"mamba_expand · hidden_size = {expand * hidden}");
        return shape with { NormGroups = 1, NormBeforeGate = false, OutBias = shape.ProjBias };
    }

    /// <summary>The mixer's keys both families spell alike, with transformers' defaults: mamba_n_heads (128) dividing the
    /// mixer's <paramref name="channels"/> (<paramref name="channelsAre"/> says what they are in errors), mamba_d_head
    /// ("auto": channels / heads), mamba_d_state (256), mamba_n_groups (1, dividing the heads), mamba_d_conv (4),
    /// mamba_conv_bias (true), mamba_proj_bias (false), mamba_chunk_size (256: how the reference splits its scan; kept
    /// to write back).</summary>
    private static MambaShape MambaKeys(ConfigFields f, int expand, int channels, string channelsAre)
    {
        int heads = f.OptionalInt("mamba_n_heads") ?? 128;
        if (heads <= 0 || channels % heads != 0) throw f.Error("mamba_n_heads", $"{heads} must be positive and divide {channelsAre}");
        int headDim = f.Get("mamba_d_head") is JsonValue v && v.TryGetValue(out string? auto) && auto == "auto" ? channels / heads
            : f.OptionalInt("mamba_d_head") ?? channels / heads;
        if (headDim * heads != channels) throw f.Error("mamba_d_head", $"{headDim} · mamba_n_heads {heads} must equal {channelsAre}");
        var shape = new MambaShape(heads, headDim, f.OptionalInt("mamba_d_state") ?? 256, f.OptionalInt("mamba_n_groups") ?? 1,
            f.OptionalInt("mamba_d_conv") ?? 4, expand, f.OptionalBool("mamba_conv_bias") ?? true, f.OptionalBool("mamba_proj_bias") ?? false,
            f.OptionalInt("mamba_chunk_size") ?? 256);
        if (shape.StateSize <= 0) throw f.Error("mamba_d_state", $"must be a positive integer, not {shape.StateSize}");
        if (shape.Groups <= 0 || heads % shape.Groups != 0) throw f.Error("mamba_n_groups", $"{shape.Groups} must be positive and divide mamba_n_heads {heads}");
        if (shape.ConvWidth <= 0) throw f.Error("mamba_d_conv", $"must be a positive integer, not {shape.ConvWidth}");
        if (shape.ChunkSize <= 0) throw f.Error("mamba_chunk_size", $"must be a positive integer, not {shape.ChunkSize}");
        return shape;
    }

    /// <summary>
    /// Falcon-H1's Mamba-2 mixer from its keys (transformers' FalconH1Config defaults): mamba_d_ssm channels (1024; null:
    /// mamba_expand · hidden), mamba_n_heads (128) of mamba_d_head ("auto": d_ssm / heads), mamba_d_state (256),
    /// mamba_n_groups (1), mamba_d_conv (4), mamba_conv_bias (true), mamba_proj_bias (false: in_proj), projectors_bias
    /// (false: out_proj), and the gated norm only with mamba_rms_norm (false; then per group, before the gate with
    /// mamba_norm_before_gate, true); without it y ⊙ SiLU(z).
    /// </summary>
    private static MambaShape ParseFalconMamba(ConfigFields f, int hidden)
    {
        int expand = f.OptionalInt("mamba_expand") ?? 2;
        int inner = f.OptionalIntOrNull("mamba_d_ssm", 1024) ?? expand * hidden;
        if (f.Get("time_step_limit") is { } limit && !IsDefaultTimeStepLimit(limit))
            throw f.Error("time_step_limit", $"{limit.ToJsonString()} is not supported (time steps clamped); only (0, inf), transformers' default");
        var shape = MambaKeys(f, expand, inner, $"the mixer's {inner} channels (mamba_d_ssm)");
        return shape with
        {
            NormGroups = f.OptionalBool("mamba_rms_norm") ?? false ? shape.Groups : 0,
            NormBeforeGate = f.OptionalBool("mamba_norm_before_gate") ?? true,
            OutBias = f.OptionalBool("projectors_bias") ?? false,
        };
    }

    /// <summary>Mamba-2's time_step_limit as transformers' default (0.0, inf) writes it: no clamp on softplus outputs.</summary>
    private static bool IsDefaultTimeStepLimit(JsonNode limit) =>
        limit is JsonArray { Count: 2 } pair && PythonLiteral(pair[0]) == 0 && PythonLiteral(pair[1]) is double high && double.IsPositiveInfinity(high);

    /// <summary>Falcon-H1's µP multipliers (each 1 by default): embedding_multiplier, lm_head_multiplier, mlp_multipliers
    /// [gate, down], key_multiplier, attention_in/out_multiplier, ssm_in/out_multiplier, ssm_multipliers [z, x, B, C, dt].</summary>
    private static FalconMultipliers ParseFalconMultipliers(ConfigFields f)
    {
        double[] List(string key, int n)
        {
            if (f.Get(key) is not { } node) return Enumerable.Repeat(1.0, n).ToArray();
            if (node is not JsonArray a || a.Count != n || a.Any(e => e is not JsonValue ev || !ev.TryGetValue(out double _)))
                throw f.Error(key, $"must be a list of {n} numbers, not {node.ToJsonString()}");
            return a.Select(e => e!.GetValue<double>()).ToArray();
        }
        var mlp = List("mlp_multipliers", 2);
        var ssm = List("ssm_multipliers", 5);
        double One(string key) => f.OptionalDouble(key) ?? 1.0;
        return new FalconMultipliers(One("embedding_multiplier"), One("lm_head_multiplier"), mlp[0], mlp[1], One("key_multiplier"),
            One("attention_in_multiplier"), One("attention_out_multiplier"), One("ssm_in_multiplier"), One("ssm_out_multiplier"),
            ssm[0], ssm[1], ssm[2], ssm[3], ssm[4]);
    }

    /// <summary>LFM2's layer kinds: <c>layer_types</c> ("conv" or "full_attention" per layer), else the older
    /// <c>full_attn_idxs</c> (the attention layers' indices), else attention everywhere (transformers' default).</summary>
    private static bool[] Lfm2ConvLayers(ConfigFields f, int layers)
    {
        if (LayerKinds(f, layers, "conv") is { } kinds) return kinds;
        var conv = new bool[Math.Max(0, layers)];
        if (f.Get("full_attn_idxs") is { } idxs)
        {
            if (idxs is not JsonArray indices) throw f.Error("full_attn_idxs", "must be a list of layer indices");
            Array.Fill(conv, true);
            for (int i = 0; i < indices.Count; i++)
            {
                if (indices[i] is not JsonValue v || !v.TryGetValue(out int index) || index < 0 || index >= layers)
                    throw f.Error($"full_attn_idxs[{i}]", $"{indices[i]?.ToJsonString() ?? "null"} is not a layer index in [0, {layers})");
                conv[index] = false;
            }
        }
        return conv;
    }

    /// <summary>SmolLM3's <c>no_rope_layers</c> (one 0 or 1 per layer, 1 = RoPE), else transformers' default from
    /// <c>no_rope_layer_interval</c> N (4): layer i rotates unless (i + 1) is a multiple of N.</summary>
    private static IReadOnlyList<bool> ParseRopeLayers(ConfigFields f, int layers)
    {
        if (f.Get("no_rope_layers") is JsonArray list)
        {
            if (list.Count != layers) throw f.Error("no_rope_layers", $"must hold one 0 or 1 per layer ({layers}), not {list.Count} entries");
            return list.Select((n, i) => n is JsonValue v && v.TryGetValue(out int x) && x is 0 or 1
                ? x == 1 : throw f.Error($"no_rope_layers[{i}]", $"{n?.ToJsonString() ?? "null"} is not 0 or 1")).ToArray();
        }
        if (f.Get("no_rope_layers") is { } other) throw f.Error("no_rope_layers", $"must be a list of 0 and 1, not {other.ToJsonString()}");
        int interval = f.OptionalInt("no_rope_layer_interval") ?? 4;
        if (interval <= 0) throw f.Error("no_rope_layer_interval", $"must be a positive integer, not {interval}");
        return Enumerable.Range(0, Math.Max(0, layers)).Select(i => (i + 1) % interval != 0).ToArray();
    }

    /// <summary>The window and the layers it applies to, by the family's <see cref="Checkpoints.WindowRule"/>.</summary>
    private static (int? Window, IReadOnlyList<bool>? Layers) ParseWindow(ConfigFields f, Checkpoints.FamilyTable table, int layers)
    {
        switch (table.Window)
        {
            case Checkpoints.WindowRule.EveryLayer:
                return (f.OptionalInt("sliding_window"), null);
            case Checkpoints.WindowRule.UseSlidingWindow:
            {
                // transformers: sliding_window only when use_sliding_window; then layer_types, else layers ≥ max_window_layers.
                if (f.OptionalBool("use_sliding_window") != true) return (null, null);
                int? window = f.OptionalIntOrNull("sliding_window", table.DefaultSlidingWindow);
                if (window is null) return (null, null);
                var sliding = LayerTypes(f, layers);
                if (sliding is null)
                {
                    int full = f.OptionalInt("max_window_layers") ?? table.DefaultMaxWindowLayers;
                    sliding = Enumerable.Range(0, Math.Max(0, layers)).Select(i => i >= full).ToArray();
                }
                return (window, sliding);
            }
            case Checkpoints.WindowRule.AttentionTypes:
            {
                var local = LocalLayers(f, layers);
                int window = f.OptionalInt("window_size") ?? table.DefaultSlidingWindow!.Value;
                if (window <= 0) throw f.Error("window_size", $"must be a positive integer, not {window}");
                return local.Contains(true) ? (window, local) : (null, null);
            }
            case Checkpoints.WindowRule.LayerTypes:
            {
                int? window = f.OptionalIntOrNull("sliding_window", table.DefaultSlidingWindow);
                if (window is null) return (null, null);
                var sliding = LayerTypes(f, layers);
                if (sliding != null) return (window, sliding);
                int pattern = table.SlidingPatternKey is { } key ? f.OptionalInt(key) ?? table.DefaultSlidingPattern : table.DefaultSlidingPattern;
                if (pattern <= 0) throw f.Error(table.SlidingPatternKey!, $"must be a positive integer, not {pattern}");
                return (window, Enumerable.Range(0, Math.Max(0, layers)).Select(i => (i + 1) % pattern != 0).ToArray());
            }
            default:
                return (null, null);
        }
    }

    /// <summary>GPT-Neo's <c>attention_types</c> as local-layer flags: [[kinds, n], ...], each list of "global" / "local"
    /// repeated n times, one kind per layer (transformers' default [[["global", "local"], 12]]).</summary>
    private static bool[] LocalLayers(ConfigFields f, int layers)
    {
        var kinds = new List<bool>();
        var node = f.Get("attention_types") ?? JsonNode.Parse("[[[\"global\",\"local\"],12]]");
        if (node is not JsonArray groups) throw f.Error("attention_types", "must be a list of [kinds, count] pairs");
        for (int g = 0; g < groups.Count; g++)
        {
            if (groups[g] is not JsonArray { Count: 2 } pair || pair[0] is not JsonArray list || pair[1] is not JsonValue n || !n.TryGetValue(out int count) || count < 0)
                throw f.Error($"attention_types[{g}]", "must be a pair [[\"global\" | \"local\", ...], count]");
            for (int r = 0; r < count; r++)
                foreach (var kind in list)
                    kinds.Add((kind is JsonValue v && v.TryGetValue(out string? s) ? s : null) switch
                    {
                        "local" => true,
                        "global" => false,
                        _ => throw f.Error($"attention_types[{g}]", $"{kind?.ToJsonString() ?? "null"} is not 'global' or 'local'"),
                    });
        }
        if (kinds.Count != layers) throw f.Error("attention_types", $"gives {kinds.Count} layers, not num_layers {layers}");
        return kinds.ToArray();
    }

    /// <summary><c>layer_types</c> as sliding flags, or null when absent.</summary>
    private static bool[]? LayerTypes(ConfigFields f, int layers) => LayerKinds(f, layers, "sliding_attention");

    /// <summary><c>layer_types</c> as flags, true where a layer is <paramref name="marked"/> and false where it is
    /// "full_attention" (anything else is an error naming the entry), or null when the key is absent.</summary>
    private static bool[]? LayerKinds(ConfigFields f, int layers, string marked, string other = "full_attention")
    {
        if (f.Get("layer_types") is not { } node) return null;
        if (node is not JsonArray list || list.Count != layers)
            throw f.Error("layer_types", $"must be a list of {layers} entries (one per layer), each '{marked}' or '{other}'");
        var flags = new bool[layers];
        for (int i = 0; i < layers; i++)
        {
            string? type = list[i] is JsonValue v && v.TryGetValue(out string? s) ? s : null;
            if (type == marked) flags[i] = true;
            else if (type != other)
                throw f.Error($"layer_types[{i}]", $"{list[i]?.ToJsonString() ?? "null"} is not '{marked}' or '{other}'");
        }
        return flags;
    }

    /// <summary>
    /// RoPE settings from either config format. Before transformers 5: <c>rope_theta</c>, <c>rope_scaling</c> and
    /// Gemma-3's <c>rope_local_base_freq</c> at the top level. transformers 5: <c>rope_parameters</c>, one object holding
    /// rope_type, rope_theta and the scaling fields, or one such object per layer type (<c>full_attention</c>,
    /// <c>sliding_attention</c>) where layers differ (Gemma-3's local layers). A top-level rope_theta fills a missing
    /// one, as transformers does; rope_parameters together with rope_scaling is refused rather than one silently
    /// winning.
    /// </summary>
    private static (double Theta, RopeScaling? Scaling, double? LocalTheta, double PartialRotary) ParseRope(ConfigFields f, Checkpoints.FamilyTable table)
    {
        var (theta, scaling, local) = ParseRopeSettings(f, table);
        // partial_rotary_factor: at the top level, or (transformers 5) inside rope_parameters; both must agree.
        double? top = PartialRotary(f, table, table.PartialRotaryKey);
        double? inside = f.Get("rope_parameters") is JsonObject parameters && !IsByLayerType(parameters)
            ? PartialRotary(new ConfigFields(parameters, f.Source, "rope_parameters."), table) : null;
        if (top != null && inside != null && top != inside)
            throw f.Error(table.PartialRotaryKey, $"{top} differs from rope_parameters.partial_rotary_factor {inside}; keep one");
        return (theta, scaling, local, top ?? inside ?? table.DefaultPartialRotary);
    }

    private static (double Theta, RopeScaling? Scaling, double? LocalTheta) ParseRopeSettings(ConfigFields f, Checkpoints.FamilyTable table)
    {
        double? topTheta = f.OptionalDouble(table.RopeThetaKey);
        double? LocalTheta() => table.LocalRope ? f.OptionalDouble("rope_local_base_freq") ?? table.DefaultLocalRopeTheta : null;
        var node = f.Get("rope_parameters");
        if (node is null)
        {
            var legacy = f.Get("rope_scaling") switch
            {
                null => null,
                JsonObject rs => ParseRopeScaling(new ConfigFields(rs, f.Source, "rope_scaling."), "rope_scaling", f, table, typeRequired: true),
                _ => throw f.Error("rope_scaling", "must be an object or null"),
            };
            return (topTheta ?? table.DefaultRopeTheta, legacy, LocalTheta());
        }
        if (node is not JsonObject parameters) throw f.Error("rope_parameters", "must be an object or null");
        if (f.Get("rope_scaling") is not null)
            throw f.Error("rope_scaling", "is given together with 'rope_parameters' (the transformers 5 format); keep one");

        if (!IsByLayerType(parameters))
        {
            var (theta, scaling) = ParseRopeParameters(parameters, "rope_parameters", f, topTheta, table, perLayerType: false);
            return (theta, scaling, LocalTheta());
        }
        var full = parameters["full_attention"] is JsonObject fullNode
            ? ParseRopeParameters(fullNode, "rope_parameters.full_attention", f, topTheta, table, perLayerType: true) : ((double, RopeScaling?)?)null;
        var sliding = parameters["sliding_attention"] is JsonObject slidingNode
            ? ParseRopeParameters(slidingNode, "rope_parameters.sliding_attention", f, topTheta, table, perLayerType: true) : ((double, RopeScaling?)?)null;
        foreach (var (key, value) in parameters)
            if (value is not JsonObject) throw f.Error($"rope_parameters.{key}", "must be an object");
        if (table.LocalRope)
        {
            // Gemma-3: the global layers' RoPE, and the local layers' base without scaling.
            if (full is not { } global) throw f.Error("rope_parameters.full_attention", "is missing");
            if (sliding is { Item2: not null }) throw f.Error("rope_parameters.sliding_attention", "must have rope_type 'default': the sliding layers' RoPE is not scaled");
            if (sliding is { } local && f.OptionalDouble("rope_local_base_freq") is { } stated && stated != local.Item1)
                throw f.Error("rope_local_base_freq", $"{stated} differs from rope_parameters.sliding_attention.rope_theta {local.Item1}; keep one");
            return (global.Item1, global.Item2, sliding?.Item1 ?? LocalTheta());
        }
        // Every other family rotates all its layers alike: the two entries must say the same.
        var one = full ?? sliding!.Value;
        if (full is { } a && sliding is { } b && (a.Item1 != b.Item1 || !Equals(a.Item2, b.Item2)))
            throw f.Error("rope_parameters.sliding_attention", $"differs from rope_parameters.full_attention: {table.ModelType} uses one RoPE for every layer (a RoPE per layer type is supported for gemma3_text)");
        return (one.Item1, one.Item2, LocalTheta());
    }

    private static bool IsByLayerType(JsonObject parameters) =>
        parameters.Count > 0 && parameters.All(kv => kv.Key is "full_attention" or "sliding_attention");

    /// <summary>One rope_parameters object (the whole of it, or one layer type's, which may not set a partial rotary factor:
    /// the flat object's is read with the top level's in <see cref="ParseRope"/>).</summary>
    private static (double Theta, RopeScaling? Scaling) ParseRopeParameters(JsonObject parameters, string field, ConfigFields f, double? topTheta,
        Checkpoints.FamilyTable table, bool perLayerType)
    {
        var inner = new ConfigFields(parameters, f.Source, field + ".");
        if (perLayerType) PartialRotary(inner, table, allowed: false);
        double? theta = inner.OptionalDouble("rope_theta");
        if (theta != null && topTheta != null && theta != topTheta)
            throw inner.Error("rope_theta", $"{theta} differs from the top-level {table.RopeThetaKey} {topTheta}; keep one");
        return (theta ?? topTheta ?? table.DefaultRopeTheta, ParseRopeScaling(inner, field, f, table, typeRequired: false));
    }

    /// <summary>The partial rotary factor where <paramref name="fields"/> has one (under <paramref name="key"/>: GPT-NeoX's
    /// top level says rotary_pct). Only the families with <see cref="Checkpoints.FamilyTable.PartialRotary"/> split heads
    /// into turned and passed channels; elsewhere (and per layer type) a factor other than 1 is refused.</summary>
    private static double? PartialRotary(ConfigFields fields, Checkpoints.FamilyTable table, string key = "partial_rotary_factor", bool allowed = true)
    {
        if (fields.OptionalDouble(key) is not { } factor) return null;
        if (factor != 1 && !(allowed && table.PartialRotary))
            throw fields.Error(key, $"other than 1 is not supported for {table.ModelType} (RoPE on part of each head: {PartialRotaryFamilies} only)");
        if (!(factor > 0 && factor <= 1)) throw fields.Error(key, $"must be in (0, 1], not {factor}");
        return factor;
    }

    /// <summary>Llama's <c>pretraining_tp</c> (Llama-2-13b: 2, 70b: 8). transformers ≤ 4.44 split the weights of q/k/v/o,
    /// gate/up/down and lm_head into that many slices (<c>weight.split(size // pretraining_tp)</c>) and concatenated or
    /// summed <c>F.linear(x, slice)</c> over them: one matmul in exact arithmetic, but without the projections' biases
    /// and dropping rows when a size is not divisible. transformers 4.45+ ignores the field. So it is read as 1 where both
    /// agree (no biases, every sliced size divisible) and refused elsewhere.</summary>
    private static void PretrainingTp(ConfigFields f, ModelConfig c)
    {
        if (f.OptionalInt("pretraining_tp") is not { } tp || tp == 1) return;
        if (tp < 1) throw f.Error("pretraining_tp", $"must be a positive integer, not {tp}");
        string Problem(string why) => $"{tp} with {why} is not supported: transformers up to 4.44 computed the sliced projections "
            + "without their biases, later versions ignore pretraining_tp; set pretraining_tp to 1 to load it as current transformers does";
        if (c.AttentionQkvBias || c.AttentionOutputBias) throw f.Error("pretraining_tp", Problem("attention_bias true"));
        if (c.MlpBias) throw f.Error("pretraining_tp", Problem("mlp_bias true"));
        var sizes = new (string Name, int Size)[]
        {
            ("the query width", c.QueryDim), ("the key/value width", c.KvDim), ("hidden_size", c.HiddenSize),
            ("intermediate_size", c.IntermediateSize), ("vocab_size", c.VocabSize),
        };
        foreach (var (name, size) in sizes)
            if (size % tp != 0)
                throw f.Error("pretraining_tp", $"{tp} does not divide {name} {size}: transformers up to 4.44 would drop the last rows of its "
                    + "sliced projections, later versions ignore pretraining_tp; set pretraining_tp to 1 to load it as current transformers does");
    }

    private static string PartialRotaryFamilies => string.Join(", ", Checkpoints.FamilyTables.All.Where(t => t.PartialRotary).Select(t => t.ModelType));

    /// <summary>The scaling part of a rope_scaling / rope_parameters object (<paramref name="inner"/>); null for
    /// rope_type default. <paramref name="f"/>: the top level (max_position_embeddings, original_max_position_embeddings).</summary>
    private static RopeScaling? ParseRopeScaling(ConfigFields inner, string field, ConfigFields f, Checkpoints.FamilyTable table, bool typeRequired)
    {
        string type = inner.OptionalString("rope_type") ?? inner.OptionalString("type")
            ?? (typeRequired ? throw f.Error(field, "has no 'rope_type'") : "default");
        if (table.LongRope)
        {
            // transformers' Phi3Config (4 and 5) renames "su" and "yarn" to "longrope" (early Phi-3 128k configs say
            // so: their factor is not read) and refuses every other type but default.
            if (type == "yarn") type = "longrope";
            else if (type is not ("default" or "longrope" or "su"))
                throw f.Error(field, $"type '{type}' is not supported for {table.ModelType} (transformers' Phi3Config accepts default and longrope, reading su and yarn as longrope)");
        }
        int maxPositions = (table.Keys.MaxPositions is { } maxKey ? f.OptionalInt(maxKey) : null) ?? table.DefaultMaxPositions;
        switch (type)
        {
            case "default":
                return null;
            case "dynamic" when table.NtkAlpha && inner.Get("alpha") != null:
            {
                // Hunyuan: a fixed NTK-alpha base (its factor, when given, is not used by that formula).
                double alpha = inner.RequiredDouble("alpha");
                if (!(alpha > 0)) throw inner.Error("alpha", $"must be positive, not {alpha}");
                return new RopeScaling(type, inner.OptionalDouble("factor") ?? 1, 0, 0, 0) { Alpha = alpha };
            }
            case "linear" or "dynamic":
                double factor = inner.RequiredDouble("factor");
                if (!(factor > 0)) throw inner.Error("factor", $"must be positive, not {factor}");
                return new RopeScaling(type, factor, 0, 0, 0);
            case "llama3":
                // transformers 4 reads only the parameters' pre-training length; transformers 5 gives a top-level
                // original_max_position_embeddings priority where the config object has that attribute. Where both are
                // given and differ, the versions can disagree, so that is refused rather than one picked.
                var scaling = new RopeScaling(type,
                    inner.RequiredDouble("factor"),
                    inner.RequiredDouble("low_freq_factor"),
                    inner.RequiredDouble("high_freq_factor"),
                    inner.RequiredInt("original_max_position_embeddings"));
                if (f.OptionalInt("original_max_position_embeddings") is { } topOriginal && topOriginal != scaling.OriginalMaxPositionEmbeddings)
                    throw f.Error("original_max_position_embeddings", $"{topOriginal} differs from {field}.original_max_position_embeddings {scaling.OriginalMaxPositionEmbeddings} "
                        + "(transformers 4's llama3 RoPE reads only the latter, transformers 5 can take the top-level one); make them equal or drop the top-level one");
                if (scaling.Factor <= 0 || scaling.OriginalMaxPositionEmbeddings <= 0 || scaling.HighFreqFactor <= scaling.LowFreqFactor || scaling.LowFreqFactor <= 0)
                    throw f.Error(field, "llama3 needs factor > 0, original_max_position_embeddings > 0 and 0 < low_freq_factor < high_freq_factor");
                return scaling;
            case "yarn":
            {
                // transformers 5: the pre-training length from the top level (Phi-3's and DeepSeek's place), else from
                // the parameters, else max_position_embeddings; factor, when null, their ratio.
                int original = f.OptionalInt("original_max_position_embeddings") ?? inner.OptionalInt("original_max_position_embeddings") ?? maxPositions;
                if (original <= 0) throw inner.Error("original_max_position_embeddings", $"must be positive, not {original}");
                double? givenFactor = inner.OptionalDoubleOrNull("factor", double.NaN);
                if (givenFactor is double.NaN) throw inner.Error("factor", "is missing (null takes max_position_embeddings / original_max_position_embeddings)");
                double yarnFactor = givenFactor ?? (double)maxPositions / original;
                if (!(yarnFactor > 0)) throw inner.Error("factor", $"must be positive, not {yarnFactor}");
                var yarn = new RopeScaling(type, yarnFactor, 0, 0, original)
                {
                    AttentionFactor = inner.OptionalDouble("attention_factor"),
                    BetaFast = inner.OptionalDouble("beta_fast") is { } fast and not 0 ? fast : 32,
                    BetaSlow = inner.OptionalDouble("beta_slow") is { } slow and not 0 ? slow : 1,
                    Mscale = inner.OptionalDouble("mscale"),
                    MscaleAllDim = inner.OptionalDouble("mscale_all_dim"),
                    Truncate = inner.OptionalBool("truncate") ?? true,
                };
                if (yarn.AttentionFactor is <= 0) throw inner.Error("attention_factor", $"must be positive, not {yarn.AttentionFactor}");
                if (!(yarn.BetaFast > 0 && yarn.BetaSlow > 0)) throw f.Error(field, $"yarn needs positive beta_fast and beta_slow, not {yarn.BetaFast} and {yarn.BetaSlow}");
                return yarn;
            }
            case "longrope" or "su" when table.LongRope:
            {
                // transformers: factor = max_position_embeddings / original_max_position_embeddings, the latter Phi3Config's
                // top-level attribute (default 4096) in 4 and 5 alike: transformers 4's longrope reads the attribute, and
                // transformers 5's standardize_rope_params copies it over the parameters' own value, which is never used.
                int original = f.OptionalInt("original_max_position_embeddings") ?? 4096;
                if (original <= 0) throw f.Error("original_max_position_embeddings", $"must be positive, not {original}");
                double? attentionFactor = inner.OptionalDouble("attention_factor");
                if (attentionFactor is <= 0) throw inner.Error("attention_factor", $"must be positive, not {attentionFactor}");
                return new RopeScaling(type, (double)maxPositions / original, 0, 0, original)
                {
                    ShortFactor = inner.RequiredDoubleList("short_factor"),
                    LongFactor = inner.RequiredDoubleList("long_factor"),
                    AttentionFactor = attentionFactor,
                };
            }
            default:
                throw f.Error(field, $"type '{type}' is not supported for {table.ModelType} (supported: default, linear, dynamic, llama3, yarn{(table.LongRope ? ", longrope, su" : "")})");
        }
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

    /// <summary>Checks the invariants the tensor shapes rely on, and that every field fits the family's table.</summary>
    /// <exception cref="UserInputException">Naming <paramref name="source"/> and the offending field.</exception>
    public void Validate(string source = "config")
    {
        var table = Table;
        var k = table.KeysSpelledIn(Source);
        string family = table.ModelType;
        UserInputException Error(string problem) => new($"model config '{source}': {problem}");
        void Positive(int value, string field)
        {
            if (value <= 0) throw Error($"field '{field}' must be a positive integer, not {value}");
        }
        Positive(VocabSize, "vocab_size");
        Positive(HiddenSize, k.HiddenSize);
        Positive(NumLayers, k.NumLayers);
        Positive(NumHeads, k.NumHeads);
        Positive(NumKvHeads, k.NumKvHeads ?? "num_key_value_heads");
        Positive(HeadDim, k.HeadDim ?? "head_dim");
        Positive(IntermediateSize, k.IntermediateSize ?? "intermediate_size");
        Positive(MaxPositions, k.MaxPositions ?? "max_position_embeddings");
        // Sizes no tensor here can hold (2^31 values at most) are refused before anything is allocated; so is a layer
        // count no model has, which would only make the loader list a hundred million missing tensors.
        const int MostLayers = 4096;
        if (NumLayers > MostLayers) throw Error($"field '{k.NumLayers}' is {NumLayers}; more than {MostLayers} layers is not a model this engine can hold");
        void Fits(long rows, long columns, string field, int value)
        {
            if (rows * columns > int.MaxValue)
                throw Error($"field '{field}' is {value}: a [{rows}, {columns}] weight has more than 2^31 values, more than a tensor here holds");
        }
        Fits(VocabSize, HiddenSize, "vocab_size", VocabSize);
        Fits((long)NumHeads * HeadDim, HiddenSize, k.HiddenSize, HiddenSize);
        Fits(IntermediateSize, HiddenSize, k.IntermediateSize ?? "intermediate_size", IntermediateSize);
        if (!(NormEps > 0)) throw Error($"the norm epsilon must be positive, not {NormEps}");
        if (!table.Activations.Any(a => a.Activation == Activation))
            throw Error($"field '{k.Activation ?? "hidden_act"}': {Activation} is not supported for {family} (supported: {string.Join(", ", table.Activations.Select(a => a.Name))})");
        bool biasesOk = table.Biases switch
        {
            Checkpoints.BiasRule.All => AttentionQkvBias && AttentionOutputBias && MlpBias,
            Checkpoints.BiasRule.None => !AttentionQkvBias && !AttentionOutputBias && !MlpBias,
            Checkpoints.BiasRule.QkvOnly => AttentionQkvBias && !AttentionOutputBias && !MlpBias,
            Checkpoints.BiasRule.AttentionBiasKey => AttentionQkvBias == AttentionOutputBias && !MlpBias,
            Checkpoints.BiasRule.AttentionBiasKeyMlpAlways => AttentionQkvBias == AttentionOutputBias && MlpBias,
            Checkpoints.BiasRule.UseQkvBiasKey => !AttentionOutputBias && !MlpBias,
            Checkpoints.BiasRule.AllByKey => AttentionQkvBias == AttentionOutputBias && AttentionQkvBias == MlpBias,
            Checkpoints.BiasRule.AttentionBiasKeyQkvOnly => !AttentionOutputBias && !MlpBias,
            Checkpoints.BiasRule.OutputAndMlpOnly => !AttentionQkvBias && AttentionOutputBias && MlpBias,
            Checkpoints.BiasRule.QkvAndMlpKeys => !AttentionOutputBias,
            _ => AttentionQkvBias == AttentionOutputBias,
        };
        if (!biasesOk)
            throw Error(table.Biases switch
            {
                Checkpoints.BiasRule.All => $"{family} always has attention and MLP biases",
                Checkpoints.BiasRule.None => $"{family} has no biases",
                Checkpoints.BiasRule.QkvOnly => $"{family} has q/k/v biases and no o_proj or MLP biases",
                Checkpoints.BiasRule.AttentionBiasKey => $"{family}'s attention_bias covers q, k, v and o together, and its MLP has no biases",
                Checkpoints.BiasRule.AttentionBiasKeyMlpAlways => $"{family}'s attention_bias covers the qkv and output projections together, and its MLP always has biases",
                Checkpoints.BiasRule.UseQkvBiasKey => $"{family} has biases on q, k and v only (use_qkv_bias)",
                Checkpoints.BiasRule.AllByKey => $"{family}'s {table.AllBiasesKey.Key} covers every projection together",
                Checkpoints.BiasRule.AttentionBiasKeyQkvOnly => $"{family}'s attention_bias covers q, k and v only; o_proj and the MLP have no biases",
                Checkpoints.BiasRule.OutputAndMlpOnly => $"{family} has biases on its output projection and MLP, none on q, k and v",
                Checkpoints.BiasRule.QkvAndMlpKeys => $"{family}'s o_proj has no bias (attention_bias covers q, k and v)",
                _ => $"{family}'s attention_bias covers q, k, v and o together",
            });
        // A window on a family whose config cannot say so would vanish on save.
        if (SlidingWindow != null && table.Window == Checkpoints.WindowRule.None)
            throw Error($"a sliding window is only supported for {string.Join(", ", Checkpoints.FamilyTables.All.Where(t => t.Window != Checkpoints.WindowRule.None).Select(t => t.ModelType))}, not {family}");
        if (SlidingWindow is <= 0) throw Error("field 'sliding_window' must be positive or null");
        if (SlidingLayers != null && (table.Window is not (Checkpoints.WindowRule.LayerTypes or Checkpoints.WindowRule.UseSlidingWindow or Checkpoints.WindowRule.AttentionTypes) || SlidingLayers.Count != NumLayers))
            throw Error($"field 'layer_types' needs one entry per layer ({NumLayers}) and is read for {string.Join(", ", Checkpoints.FamilyTables.All.Where(t => t.Window is Checkpoints.WindowRule.LayerTypes or Checkpoints.WindowRule.UseSlidingWindow).Select(t => t.ModelType))} only");
        if (table.Window == Checkpoints.WindowRule.AttentionTypes && SlidingWindow != null && SlidingLayers == null)
            throw Error($"{family}'s window applies to the local layers of attention_types; give them");
        if (!table.GemmaAttention && (QueryPreAttnScalar != null || AttnLogitSoftcap != null || FinalLogitSoftcap != null))
            throw Error($"query_pre_attn_scalar and soft-capping are Gemma fields, not {family}'s");
        if (QueryPreAttnScalar is <= 0) throw Error($"field 'query_pre_attn_scalar' must be positive, not {QueryPreAttnScalar}");
        if (AttnLogitSoftcap is <= 0) throw Error($"field 'attn_logit_softcapping' must be positive or null, not {AttnLogitSoftcap}");
        if (FinalLogitSoftcap is <= 0) throw Error($"field 'final_logit_softcapping' must be positive or null, not {FinalLogitSoftcap}");
        if (LocalRopeTheta != null && !table.LocalRope) throw Error($"rope_local_base_freq is a gemma3_text field, not {family}'s");
        if (RopeLayers != null && (!table.NoRopeLayers || RopeLayers.Count != NumLayers) && !table.GlobalNoPe && !table.MambaLayers)
            throw Error($"field 'no_rope_layers' needs one entry per layer ({NumLayers}) and is read for smollm3 only");
        // EXAONE 4: the rotating layers are the sliding ones whenever there is a window.
        if (table.GlobalNoPe && !(RopeLayers ?? []).SequenceEqual(SlidingWindow != null ? SlidingLayers ?? [] : []))
            throw Error($"{family} rotates exactly its sliding layers when it has a sliding window (and all layers otherwise)");
        if (table.LocalRope && !(LocalRopeTheta > 0)) throw Error($"field 'rope_local_base_freq' must be positive, not {LocalRopeTheta}");
        foreach (var (value, key) in new[] { (EmbeddingMultiplier, "embedding_multiplier"), (AttentionMultiplier, "attention_multiplier"), (ResidualMultiplier, "residual_multiplier"), (LogitsScaling, "logits_scaling") })
        {
            if (table.Multipliers != (value != null)) throw Error($"{key} is a granite field, not {family}'s");
            if (value is double v && !(v > 0 && double.IsFinite(v))) throw Error($"field '{key}' must be a positive number, not {v}");
        }
        if (table.ParallelResidualKey != (ParallelResidual != null)) throw Error($"use_parallel_residual is a gpt_neox field, not {family}'s");
        if (table.ShortConvLayers != (ConvLayers != null)) throw Error($"convolution layers (layer_types 'conv') are an lfm2 field, not {family}'s");
        if (ConvLayers != null && ConvLayers.Count != NumLayers) throw Error($"field 'layer_types' must hold one entry per layer ({NumLayers}), not {ConvLayers.Count}");
        if (table.ShortConvLayers && ConvWidth <= 0) throw Error($"field 'conv_L_cache' must be a positive integer, not {ConvWidth}");
        bool mixers = table.MambaLayers || table.ParallelMamba;
        if (mixers != (MambaLayers != null) || mixers != (Mamba != null) || table.MambaLayers != (PositionEmbeddingType != null) || table.ParallelMamba != (Falcon != null))
            throw Error($"Mamba-2 layers (layer_types 'mamba', mamba_* keys, position_embedding_type, Falcon-H1's multipliers) are granitemoehybrid and falcon_h1 fields, not {family}'s");
        if (table.ExpertMlp && Moe == null || Moe != null && !table.ExpertMlp && !table.MambaLayers)
            throw Error($"mixture-of-experts fields (num_local_experts, num_experts_per_tok) are granitemoe and granitemoehybrid fields, not {family}'s");
        if (Moe is { } moe && (moe.Experts <= 0 || moe.TopK <= 0 || moe.TopK > moe.Experts || moe.ExpertSize <= 0))
            throw Error($"the mixture-of-experts shape {moe} is inconsistent (1 ≤ num_experts_per_tok ≤ num_local_experts, a positive width)");
        if (MambaLayers != null && MambaLayers.Count != NumLayers) throw Error($"field 'layer_types' must hold one entry per layer ({NumLayers}), not {MambaLayers.Count}");
        if (table.ParallelMamba && MambaLayers!.Contains(false)) throw Error($"{family} has a mixer in every layer");
        if (Mamba is { } m && (m.Heads <= 0 || m.HeadDim <= 0 || m.StateSize <= 0 || m.Groups <= 0 || m.Heads % m.Groups != 0 || m.ConvWidth <= 0
                               || m.NormGroups < 0 || m.NormGroups > 0 && m.Inner % m.NormGroups != 0 || table.MambaLayers && m.Inner != m.Expand * HiddenSize))
            throw Error($"the Mamba-2 shape {m} is inconsistent (heads · head size = the mixer's channels, groups dividing heads and channels, all positive)");
        if (table.MambaLayers && !(RopeLayers ?? []).SequenceEqual(PositionEmbeddingType == "rope" ? [] : new bool[NumLayers]))
            throw Error($"{family} rotates every attention layer when position_embedding_type is 'rope' and none otherwise");
        if (table.OptLayout != (WordEmbedProjDim != null) || table.OptLayout != (NormBeforeBlock != null))
            throw Error($"word_embed_proj_dim and do_layer_norm_before are opt fields, not {family}'s");
        if (WordEmbedProjDim is <= 0) throw Error($"field 'word_embed_proj_dim' must be a positive integer, not {WordEmbedProjDim}");
        if (table.LmHeadBias && TieWordEmbeddings && Head == HeadKind.LanguageModel)
            throw Error($"tie_word_embeddings true is not supported for {family}: its LM head has a bias of its own");
        if (table.Qkv != Checkpoints.QkvLayout.Separate && (!(NumKvHeads == NumHeads || table.MultiQueryKey && NumKvHeads == 1) || HeadDim * NumHeads != HiddenSize))
            throw Error($"{family} keeps q, k and v in one projection: no grouped-query attention or separate head_dim"
                + (table.MultiQueryKey ? " (multi_query gives one key/value head)" : ""));
        if (!table.HasRope)
        {
            if (table.DefaultIntermediateFactor is int fixedFactor && k.IntermediateSize == null && IntermediateSize != fixedFactor * HiddenSize)
                throw Error($"{family}'s MLP is always {fixedFactor}·hidden_size = {fixedFactor * HiddenSize} wide, not {IntermediateSize}");
            if (HiddenSize % NumHeads != 0)
                throw Error($"{k.HiddenSize} {HiddenSize} is not divisible by {k.NumHeads} {NumHeads}");
            if (!(NumKvHeads == NumHeads || table.MultiQueryKey && NumKvHeads == 1) || HeadDim != HiddenSize / NumHeads)
                throw Error($"{family} has no grouped-query attention or separate head_dim");
            if (RopeScaling != null) throw Error($"{family} has no rotary embeddings to scale");
            return;
        }
        if (NumHeads % NumKvHeads != 0)
            throw Error($"num_attention_heads {NumHeads} is not a multiple of num_key_value_heads {NumKvHeads}");
        if (HeadDim % 2 != 0)
            throw Error($"head_dim {HeadDim} must be even for rotary embeddings");
        if (PartialRotaryFactor != 1 && !table.PartialRotary) throw Error($"partial_rotary_factor is a field of {PartialRotaryFamilies}, not {family}'s");
        if (RotaryDim <= 0 || RotaryDim % 2 != 0)
            throw Error($"partial_rotary_factor {PartialRotaryFactor} gives {RotaryDim} rotary channels of head_dim {HeadDim}; it must be a positive even number");
        if (!(RopeTheta > 0))
            throw Error($"field 'rope_theta' must be positive, not {RopeTheta}");
        if (RopeScaling is { IsLongRope: true } rs)
        {
            if (!table.LongRope) throw Error($"rope_scaling type '{rs.Type}' is only supported for phi3, not {family}");
            foreach (var (factors, key) in new[] { (rs.ShortFactor, "short_factor"), (rs.LongFactor, "long_factor") })
                if (factors is null || factors.Count != RotaryDim / 2 || factors.Any(x => !(x > 0)))
                    throw Error($"field 'rope_scaling.{key}' must hold {(RotaryDim == HeadDim ? "head_dim" : "the rotary dimension")} / 2 = {RotaryDim / 2} positive numbers, not {factors?.Count ?? 0}");
        }
    }

    // ------------------------------------------------------------------------------------------------
    // rotary frequencies
    // ------------------------------------------------------------------------------------------------

    /// <summary>
    /// RoPE inverse frequencies, HeadDim/2 of them: inv_freq[j] = 1 / rope_theta^(2j / head_dim)
    /// (<see cref="Ops.RopeInverseFrequencies"/>, float32 as transformers), then rope_scaling in float32 as
    /// transformers applies it: <c>linear</c> divides every entry by factor; <c>llama3</c> divides by factor where
    /// the wavelength 2π/inv_freq exceeds original_ctx/low_freq_factor, keeps entries below
    /// original_ctx/high_freq_factor, and blends in between with s = (original_ctx/wavelength − low)/(high − low),
    /// inv = (1 − s)·inv/factor + s·inv. <paramref name="local"/>: Gemma-3's sliding layers, which use
    /// rope_local_base_freq and no scaling. The rotation angle of position p in pair j (and j + HeadDim/2,
    /// rotate_half convention) is p·inv_freq[j].
    /// </summary>
    public float[] RopeFrequencies(bool local = false, bool longContext = false)
    {
        if (!Table.HasRope) throw new InvalidOperationException($"{ModelTypeName(Family)} has no rotary embeddings");
        if (local && LocalRopeTheta is not double localTheta) throw new InvalidOperationException($"{ModelTypeName(Family)} has no local RoPE base");
        if (RopeScaling is { IsLongRope: true } longRope)
        {
            // LongRoPE: 1 / (factor_j · θ^(2j/d)) with the short or the long factors.
            var factors = (longContext ? longRope.LongFactor : longRope.ShortFactor)!.Select(x => (float)x).ToArray();
            return Ops.RopeInverseFrequencies(RotaryDim, RopeTheta, factors);
        }
        // Hunyuan's NTK-alpha: 1 / (θ·α^(d/(d−2)))^(2j/d), the base formed in double as transformers forms it.
        if (!local && RopeScaling is { Type: "dynamic", Alpha: double alpha })
            return Ops.RopeInverseFrequencies(RotaryDim, RopeTheta * Math.Pow(alpha, (double)HeadDim / (HeadDim - 2)));
        var inv = Ops.RopeInverseFrequencies(RotaryDim, local ? LocalRopeTheta!.Value : RopeTheta);
        // Dynamic NTK equals the default up to max_position_embeddings, the only positions it runs at here (see
        // CheckPositions).
        if (local || RopeScaling is not { } rs || rs.Type == "dynamic") return inv;
        if (rs.Type == "yarn") return YarnFrequencies(inv, rs);
        // The scaling is evaluated in double on the float32 base frequencies and rounded once; that stays within an
        // ulp of transformers' float32 arithmetic (checked against its values in the fixtures).
        for (int j = 0; j < inv.Length; j++)
        {
            double f = inv[j];
            if (rs.Type == "linear") f /= rs.Factor;
            else
            {
                double lowFreqWavelength = rs.OriginalMaxPositionEmbeddings / rs.LowFreqFactor;
                double highFreqWavelength = rs.OriginalMaxPositionEmbeddings / rs.HighFreqFactor;
                double wavelength = 2 * Math.PI / f;
                if (wavelength > lowFreqWavelength) f /= rs.Factor;
                else if (wavelength >= highFreqWavelength)
                {
                    double smooth = (rs.OriginalMaxPositionEmbeddings / wavelength - rs.LowFreqFactor) / (rs.HighFreqFactor - rs.LowFreqFactor);
                    f = (1 - smooth) * f / rs.Factor + smooth * f;
                }
            }
            inv[j] = (float)f;
        }
        return inv;
    }

    /// <summary>
    /// YaRN (transformers 5's <c>_compute_yarn_parameters</c>): each pair j blends the original frequency and the one
    /// interpolated by factor, inv = inv/factor·(1 − e) + inv·e, where e = 1 − clamp((j − low) / (high − low), 0, 1) keeps
    /// the fast-rotating pairs as they were; low and high are the dimensions that complete beta_fast and beta_slow
    /// rotations over the pre-training length, d·ln(L / (2π·β)) / (2·ln θ), rounded outward unless truncate is false
    /// and clipped to [0, d − 1]. Evaluated in double on the float32 base frequencies, rounded once.
    /// </summary>
    private float[] YarnFrequencies(float[] inv, RopeScaling rs)
    {
        int dim = RotaryDim;
        double CorrectionDim(double rotations) =>
            dim * Math.Log(rs.OriginalMaxPositionEmbeddings / (rotations * 2 * Math.PI)) / (2 * Math.Log(RopeTheta));
        double low = CorrectionDim(rs.BetaFast), high = CorrectionDim(rs.BetaSlow);
        if (rs.Truncate) (low, high) = (Math.Floor(low), Math.Ceiling(high));
        low = Math.Max(low, 0);
        high = Math.Min(high, dim - 1);
        if (low == high) high += 0.001; // transformers' guard against a zero-width ramp
        for (int j = 0; j < inv.Length; j++)
        {
            double ramp = Math.Clamp((j - low) / (high - low), 0, 1);
            double extrapolation = 1 - ramp;
            double f = inv[j];
            inv[j] = (float)(f / rs.Factor * (1 - extrapolation) + f * extrapolation);
        }
        return inv;
    }

    /// <summary>The factor transformers multiplies cos and sin by. LongRoPE: attention_factor, or
    /// √(1 + ln(factor) / ln(original)) when the config gives none and factor &gt; 1. YaRN: attention_factor, or
    /// mscale(factor) = 0.1·ln(factor) + 1 (1 for factor ≤ 1), or with DeepSeek's mscale and mscale_all_dim both set
    /// mscale(factor, mscale) / mscale(factor, mscale_all_dim) where mscale(s, m) = 0.1·m·ln(s) + 1. 1 for every
    /// other RoPE, and for Gemma-3's local layers.</summary>
    public float RopeAttentionFactor => RopeScaling switch
    {
        { IsLongRope: true } rs => (float)(rs.AttentionFactor ?? (rs.Factor > 1 ? Math.Sqrt(1 + Math.Log(rs.Factor) / Math.Log(rs.OriginalMaxPositionEmbeddings)) : 1.0)),
        { Type: "yarn" } rs => (float)(rs.AttentionFactor ?? (rs.Mscale is { } m and not 0 && rs.MscaleAllDim is { } all and not 0
            ? YarnMscale(rs.Factor, m) / YarnMscale(rs.Factor, all)
            : YarnMscale(rs.Factor, 1))),
        _ => 1f,
    };

    private static double YarnMscale(double scale, double mscale) => scale <= 1 ? 1.0 : 0.1 * mscale * Math.Log(scale) + 1.0;

    /// <summary>
    /// Refuses positions a model cannot run at: learned positions end at n_positions, and dynamic NTK RoPE rescales its
    /// base past max_position_embeddings from the longest call a transformers model has seen so far (its rotary module
    /// keeps the grown frequencies), which no single forward pass can reproduce.
    /// </summary>
    public void CheckPositions(ReadOnlySpan<int> positions)
    {
        if (!LearnedPositions && RopeScaling is not { Type: "dynamic" }) return;
        foreach (var p in positions)
            if ((uint)p >= (uint)MaxPositions)
                throw new UserInputException(LearnedPositions
                    ? $"Position {p} is beyond the model's {MaxPositions} positions."
                    : $"Position {p} is beyond max_position_embeddings {MaxPositions}: past it, dynamic NTK RoPE rescales with the history of calls; keep sequences (--max-length, prompt + new tokens) within {MaxPositions} tokens.");
    }

    /// <summary>Whether a forward call whose largest position id is <paramref name="maxPosition"/> uses LongRoPE's long
    /// factors: transformers switches when max position + 1 exceeds original_max_position_embeddings, per call, so a
    /// KV-cached decode that crosses that length rotates its new keys with the long factors while the cache keeps
    /// the short ones (as transformers does).</summary>
    public bool UsesLongRopeFactors(int maxPosition) =>
        RopeScaling is { IsLongRope: true } rs && (long)maxPosition + 1 > rs.OriginalMaxPositionEmbeddings;

    // ------------------------------------------------------------------------------------------------
    // saving
    // ------------------------------------------------------------------------------------------------

    /// <summary>
    /// config.json text that transformers loads as this architecture: the loaded JSON (if any) with every field
    /// AlignSharp models overwritten under the family's keys, <c>architectures</c> set from family and head, and
    /// the <c>alignsharp</c> field.
    /// </summary>
    public string ToJson() => ToJsonObject().ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n";

    internal JsonObject ToJsonObject()
    {
        Validate();
        var table = Table;
        var k = table.KeysSpelledIn(Source);
        var o = Source?.DeepClone() as JsonObject ?? new JsonObject();
        // (0, inf) as read from Python's literals would be written back as strings, which transformers would take for
        // strings: the key goes, and transformers' default, the same (0, inf), takes its place.
        if (o["time_step_limit"] is { } limit && IsDefaultTimeStepLimit(limit)) o.Remove("time_step_limit");
        o["model_type"] = table.ModelType;
        o["architectures"] = new JsonArray(Head == HeadKind.LanguageModel ? table.CausalLm : table.SequenceClassification);
        o["vocab_size"] = VocabSize;
        o[k.HiddenSize] = HiddenSize;
        o[k.NumLayers] = NumLayers;
        o[k.NumHeads] = NumHeads;
        if (k.NumKvHeads != null) o[k.NumKvHeads] = NumKvHeads;
        if (k.HeadDim != null) o[k.HeadDim] = HeadDim;
        // n_inner null (GPT-2, GPTBigCode) means the default width: kept null (or absent) while the width is that default.
        bool defaultWidth = table.DefaultIntermediateFactor is int widthFactor && IntermediateSize == widthFactor * HiddenSize;
        if (k.IntermediateSize != null && !(defaultWidth && Source?[k.IntermediateSize] is null)) o[k.IntermediateSize] = IntermediateSize;
        if (k.MaxPositions != null) o[k.MaxPositions] = MaxPositions;
        if (k.NormEps != null) o[k.NormEps] = NormEps;
        if (k.Activation != null) o[k.Activation] = table.Activations.First(a => a.Activation == Activation).Name;
        if (table.PreferredActivationKey is { } preferredKey && o[preferredKey] != null) o[preferredKey] = o[k.Activation!]!.DeepClone();
        // A config read in transformers 5's format is written back in it (rope_parameters, per layer type when it was).
        bool ropeByLayerType = false;
        if (table.HasRope && Source?["rope_parameters"] is JsonObject sourceParameters)
        {
            o.Remove(table.RopeThetaKey);
            o.Remove("rope_scaling");
            if (IsByLayerType(sourceParameters))
            {
                ropeByLayerType = true;
                var byType = new JsonObject();
                foreach (var (key, _) in sourceParameters)
                    byType[key] = key == "sliding_attention" && table.LocalRope
                        ? RopeParametersJson(LocalRopeTheta!.Value, null)
                        : RopeParametersJson(RopeTheta, RopeScaling);
                if (table.LocalRope && !byType.ContainsKey("sliding_attention")) byType["sliding_attention"] = RopeParametersJson(LocalRopeTheta!.Value, null);
                o["rope_parameters"] = byType;
                o.Remove("rope_local_base_freq");
            }
            else
            {
                o["rope_parameters"] = RopeParametersJson(RopeTheta, RopeScaling);
                // The factor stays where the source kept it (StableLM's transformers 5 config keeps it at the top
                // level); inside rope_parameters otherwise, as transformers 5 writes Phi-3's and GPT-NeoX's.
                if (table.PartialRotary && Source?[table.PartialRotaryKey] != null && sourceParameters["partial_rotary_factor"] == null)
                    o[table.PartialRotaryKey] = PartialRotaryFactor;
                else if (table.PartialRotary)
                {
                    o["rope_parameters"]!["partial_rotary_factor"] = PartialRotaryFactor;
                    o.Remove(table.PartialRotaryKey);
                }
            }
        }
        else if (table.HasRope)
        {
            o[table.RopeThetaKey] = RopeTheta;
            o["rope_scaling"] = RopeScaling is { } rs ? RopeScalingJson(rs) : null;
            if (table.PartialRotary) o[table.PartialRotaryKey] = PartialRotaryFactor;
        }
        if (table.Biases is Checkpoints.BiasRule.AttentionBiasKey or Checkpoints.BiasRule.AttentionAndMlpKeys or Checkpoints.BiasRule.AttentionBiasKeyMlpAlways)
            o["attention_bias"] = AttentionQkvBias;
        if (table.Biases == Checkpoints.BiasRule.UseQkvBiasKey) o["use_qkv_bias"] = AttentionQkvBias;
        if (table.Biases is Checkpoints.BiasRule.AttentionBiasKeyQkvOnly or Checkpoints.BiasRule.QkvAndMlpKeys) o["attention_bias"] = AttentionQkvBias;
        if (table.Biases == Checkpoints.BiasRule.QkvAndMlpKeys) o["mlp_bias"] = MlpBias;
        if (table.Biases == Checkpoints.BiasRule.AllByKey) o[table.AllBiasesKey.Key] = AttentionQkvBias;
        if (table.OptLayout)
        {
            o["word_embed_proj_dim"] = EmbedDim;
            o["do_layer_norm_before"] = NormBeforeBlock;
        }
        if (ParallelResidual is bool parallel) o["use_parallel_residual"] = parallel;
        if (table.MultiQueryKey) o["multi_query"] = NumKvHeads == 1;
        if (table.ShortConvLayers)
        {
            o["layer_types"] = new JsonArray(Enumerable.Range(0, NumLayers).Select(l => (JsonNode?)(IsConvLayer(l) ? "conv" : "full_attention")).ToArray());
            if (o.ContainsKey("full_attn_idxs"))
                o["full_attn_idxs"] = new JsonArray(Enumerable.Range(0, NumLayers).Where(l => !IsConvLayer(l)).Select(l => (JsonNode?)l).ToArray());
            o["conv_L_cache"] = ConvWidth;
            o["conv_bias"] = ConvBias;
            // The MLP width stays in the source's keys while they still give it; otherwise it is written as it is.
            if (Source == null || Lfm2MlpWidth(new ConfigFields(Source, "config.json")) != IntermediateSize)
            {
                o.Remove("block_ff_dim");
                o["intermediate_size"] = IntermediateSize;
                o["block_auto_adjust_ff_dim"] = false;
            }
        }
        if (table.MambaLayers && Mamba is { } mamba)
        {
            o["layer_types"] = new JsonArray(Enumerable.Range(0, NumLayers).Select(l => (JsonNode?)(IsMambaLayer(l) ? "mamba" : "attention")).ToArray());
            // Anything but "rope" means no position encoding: a source's null or "nope" stays as written.
            bool sourceAgrees = Source?.ContainsKey("position_embedding_type") == true && ((Source["position_embedding_type"] as JsonValue)?.ToString() == "rope") == (PositionEmbeddingType == "rope");
            if (!sourceAgrees) o["position_embedding_type"] = PositionEmbeddingType;
            if (Moe == null) o["num_local_experts"] = 0;   // experts: written with their other keys below
            WriteMambaKeys(o, mamba);
        }
        if (Moe is { } experts)
        {
            o["num_local_experts"] = experts.Experts;
            o["num_experts_per_tok"] = experts.TopK;
            o["intermediate_size"] = experts.ExpertSize;
            o["output_router_logits"] = experts.RouterAuxLossCoef != null;
            if (experts.RouterAuxLossCoef is double coef) o["router_aux_loss_coef"] = coef;
        }
        if (table.ParallelMamba && Mamba is { } fm && Falcon is { } mult)
        {
            WriteMambaKeys(o, fm);
            o["mamba_d_ssm"] = fm.Inner;
            o["projectors_bias"] = fm.OutBias;
            o["mamba_rms_norm"] = fm.NormGroups > 0;
            o["mamba_norm_before_gate"] = fm.NormBeforeGate;
            o["mamba_chunk_size"] = fm.ChunkSize;
            o["embedding_multiplier"] = mult.Embedding;
            o["lm_head_multiplier"] = mult.LmHead;
            o["mlp_multipliers"] = new JsonArray(mult.MlpGate, mult.MlpDown);
            o["key_multiplier"] = mult.Key;
            o["attention_in_multiplier"] = mult.AttentionIn;
            o["attention_out_multiplier"] = mult.AttentionOut;
            o["ssm_in_multiplier"] = mult.SsmIn;
            o["ssm_out_multiplier"] = mult.SsmOut;
            o["ssm_multipliers"] = new JsonArray(mult.SsmZ, mult.SsmX, mult.SsmB, mult.SsmC, mult.SsmDt);
        }
        if (table.Biases is Checkpoints.BiasRule.AttentionAndMlpKeys) o["mlp_bias"] = MlpBias;
        if (table.Window is Checkpoints.WindowRule.EveryLayer or Checkpoints.WindowRule.LayerTypes) o["sliding_window"] = SlidingWindow;
        if (table.Window == Checkpoints.WindowRule.AttentionTypes)
        {
            // The source's attention_types while they give these layers; else one [[kind], 1] group per layer.
            var local = Enumerable.Range(0, NumLayers).Select(IsSlidingLayer).ToArray();
            bool sourceSays;
            try { sourceSays = Source != null && LocalLayers(new ConfigFields(Source, "config.json"), NumLayers).SequenceEqual(local); }
            catch (UserInputException) { sourceSays = false; }   // the source's list no longer fits the layers
            if (!sourceSays)
                o["attention_types"] = new JsonArray(local.Select(l => (JsonNode?)new JsonArray(new JsonArray(l ? "local" : "global"), 1)).ToArray());
            if (SlidingWindow != null) o["window_size"] = SlidingWindow;
        }
        if (table.Window == Checkpoints.WindowRule.UseSlidingWindow)
        {
            // Without a window the source's sliding_window / layer_types stay as they were: transformers ignores them.
            o["use_sliding_window"] = SlidingWindow != null;
            if (SlidingWindow != null)
            {
                bool[] sliding = Enumerable.Range(0, NumLayers).Select(IsSlidingLayer).ToArray();
                o["sliding_window"] = SlidingWindow;
                o["layer_types"] = new JsonArray(sliding.Select(t => (JsonNode?)(t ? "sliding_attention" : "full_attention")).ToArray());
                // Releases before layer_types read max_window_layers: keep it only while it says the same.
                int full = Array.IndexOf(sliding, true) is var first && first >= 0 ? first : NumLayers;
                if (sliding.Select((t, i) => t == (i >= full)).All(x => x)) o["max_window_layers"] = full;
                else o.Remove("max_window_layers");
            }
        }
        if (table.Window == Checkpoints.WindowRule.LayerTypes)
        {
            var types = Enumerable.Range(0, NumLayers).Select(l => IsSlidingLayer(l) ? "sliding_attention" : "full_attention").ToArray();
            o["layer_types"] = new JsonArray(types.Select(t => (JsonNode?)t).ToArray());
            // transformers releases before layer_types read the pattern alone: keep it only while it says the same.
            if (table.SlidingPatternKey is { } patternKey)
            {
                int first = Array.IndexOf(types, "full_attention");
                int pattern = first + 1;
                bool matches = SlidingWindow != null && first >= 0 && types.Select((t, i) => (t == "sliding_attention") == ((i + 1) % pattern != 0)).All(x => x);
                if (matches) o[patternKey] = pattern;
                else o.Remove(patternKey);
            }
        }
        if (table.GemmaAttention)
        {
            o["query_pre_attn_scalar"] = QueryPreAttnScalar;
            o["attn_logit_softcapping"] = AttnLogitSoftcap;
            o["final_logit_softcapping"] = FinalLogitSoftcap;
        }
        if (table.LocalRope && !ropeByLayerType) o["rope_local_base_freq"] = LocalRopeTheta;
        if (table.Multipliers)
        {
            o["embedding_multiplier"] = EmbeddingMultiplier;
            o["attention_multiplier"] = AttentionMultiplier;
            o["residual_multiplier"] = ResidualMultiplier;
            o["logits_scaling"] = LogitsScaling;
        }
        if (table.NoRopeLayers) o["no_rope_layers"] = new JsonArray(Enumerable.Range(0, NumLayers).Select(l => (JsonNode?)(UsesRope(l) ? 1 : 0)).ToArray());
        if (RopeScaling is { IsLongRope: true } longRope) o["original_max_position_embeddings"] = longRope.OriginalMaxPositionEmbeddings;
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

    /// <summary>transformers 5's RoPE object: rope_type, rope_theta and the scaling's fields.</summary>
    private static JsonObject RopeParametersJson(double theta, RopeScaling? scaling)
    {
        var json = scaling is null ? new JsonObject { ["rope_type"] = "default" } : RopeScalingJson(scaling);
        json["rope_theta"] = theta;
        return json;
    }

    private static JsonObject RopeScalingJson(RopeScaling rs)
    {
        switch (rs.Type)
        {
            case "dynamic" when rs.Alpha is double alpha:
                // Hunyuan's own spelling (its config validation takes type with factor or alpha).
                return rs.Factor == 1 ? new JsonObject { ["type"] = rs.Type, ["alpha"] = alpha }
                    : new JsonObject { ["type"] = rs.Type, ["alpha"] = alpha, ["factor"] = rs.Factor };
            case "linear" or "dynamic":
                return new JsonObject { ["rope_type"] = rs.Type, ["factor"] = rs.Factor };
            case "yarn":
                var yarn = new JsonObject
                {
                    ["rope_type"] = rs.Type,
                    ["factor"] = rs.Factor,
                    ["original_max_position_embeddings"] = rs.OriginalMaxPositionEmbeddings,
                    ["beta_fast"] = rs.BetaFast,
                    ["beta_slow"] = rs.BetaSlow,
                };
                if (rs.AttentionFactor is double a) yarn["attention_factor"] = a;
                if (rs.Mscale is double m) yarn["mscale"] = m;
                if (rs.MscaleAllDim is double all) yarn["mscale_all_dim"] = all;
                if (!rs.Truncate) yarn["truncate"] = false;
                return yarn;
            case "longrope" or "su":
                // Phi-3's own format (transformers before 4.45 accepts exactly type, short_factor and long_factor).
                return LongRopeJson(rs);
            default:
                return new JsonObject
                {
                    ["rope_type"] = rs.Type,
                    ["factor"] = rs.Factor,
                    ["low_freq_factor"] = rs.LowFreqFactor,
                    ["high_freq_factor"] = rs.HighFreqFactor,
                    ["original_max_position_embeddings"] = rs.OriginalMaxPositionEmbeddings,
                };
        }
    }

    private static JsonObject LongRopeJson(RopeScaling rs)
    {
        var json = new JsonObject
        {
            ["type"] = rs.Type,
            ["short_factor"] = new JsonArray(rs.ShortFactor!.Select(x => (JsonNode?)x).ToArray()),
            ["long_factor"] = new JsonArray(rs.LongFactor!.Select(x => (JsonNode?)x).ToArray()),
        };
        if (rs.AttentionFactor is double a) json["attention_factor"] = a;
        return json;
    }

    /// <summary>Writes <see cref="ToJson"/> atomically to a file, or to <c>config.json</c> in a directory.</summary>
    public void Save(string path)
    {
        string file = Directory.Exists(path) ? System.IO.Path.Combine(path, "config.json") : path;
        Checkpoints.AtomicFile.WriteText(file, ToJson());
    }

    /// <summary>Typed access to a config object's fields with errors naming file and field.</summary>
    internal sealed class ConfigFields(JsonObject obj, string source, string prefix = "")
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

        /// <summary>A number, or null when the key holds JSON null; <paramref name="fallback"/> when the key is absent.</summary>
        public double? OptionalDoubleOrNull(string key, double? fallback)
        {
            if (!obj.TryGetPropertyValue(key, out var node)) return fallback;
            return node is null ? null : OptionalDouble(key);
        }

        /// <summary>An integer, or null when the key holds JSON null; <paramref name="fallback"/> when the key is absent.</summary>
        public int? OptionalIntOrNull(string key, int? fallback)
        {
            if (!obj.TryGetPropertyValue(key, out var node)) return fallback;
            return node is null ? null : OptionalInt(key);
        }

        public IReadOnlyList<double> RequiredDoubleList(string key)
        {
            if (Get(key) is not JsonArray array) throw Error(key, Get(key) is null ? "is missing" : "must be a list of numbers");
            return array.Select(item => item is JsonValue v && v.GetValueKind() == JsonValueKind.Number
                ? v.GetValue<double>()
                : throw Error(key, "must be a list of numbers")).ToArray();
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

/// <summary>
/// The shape of Granite 4.0's Mamba-2 mixers: <see cref="Heads"/> heads of <see cref="HeadDim"/> channels (together
/// mamba_expand · hidden_size = <see cref="Inner"/>), a state of <see cref="StateSize"/> per channel, B and C shared by
/// <see cref="Groups"/> groups of heads, a depthwise convolution <see cref="ConvWidth"/> wide over x, B and C
/// (<see cref="ConvDim"/> channels), biases on the convolution and on in_proj/out_proj as the keys say.
/// <see cref="ChunkSize"/> only says how transformers splits its scan (the result does not depend on it).
/// </summary>
public sealed record MambaShape(int Heads, int HeadDim, int StateSize, int Groups, int ConvWidth, int Expand, bool ConvBias, bool ProjBias, int ChunkSize)
{
    /// <summary>Groups of channels the gated RMSNorm normalises separately (Granite: 1, over all channels; Falcon-H1:
    /// mamba_n_groups), or 0: no norm, the output is y ⊙ SiLU(z) (Falcon-H1 without mamba_rms_norm).</summary>
    public int NormGroups { get; init; } = 1;

    /// <summary>Whether the norm comes before the gate, RMSNorm(y) ⊙ SiLU(z) (Falcon-H1's mamba_norm_before_gate), or after
    /// it, RMSNorm(y ⊙ SiLU(z)) (Granite).</summary>
    public bool NormBeforeGate { get; init; }

    /// <summary>out_proj's bias (Granite: mamba_proj_bias, as in_proj's; Falcon-H1: projectors_bias).</summary>
    public bool OutBias { get; init; }

    public int Inner => Heads * HeadDim;
    public int ConvDim => Inner + 2 * Groups * StateSize;

    /// <summary>in_proj's rows: the gate z [I], then x, B and C [conv], then the time steps [H].</summary>
    public int InProjRows => Inner + ConvDim + Heads;
}

/// <summary>
/// A sparse mixture-of-experts MLP (granitemoe's block_sparse_moe): a router (a linear layer without bias) scores
/// <see cref="Experts"/> experts per token, the <see cref="TopK"/> best run on it, each a gated MLP <see cref="ExpertSize"/>
/// wide, and their outputs are added weighted by the softmax of the chosen scores.
/// </summary>
public sealed record MoeShape(int Experts, int TopK, int ExpertSize)
{
    /// <summary>The weight of the routers' load-balancing loss in training (router_aux_loss_coef) where the config asks for
    /// it (output_router_logits true); null otherwise (transformers' default: no such loss).</summary>
    public double? RouterAuxLossCoef { get; init; }
}

/// <summary>
/// Falcon-H1's µP multipliers: on the token embeddings, the logits, the MLP's gate input and output, the keys, the
/// attention's input and output, the mixer's input and output, and the mixer's in_proj outputs by part (z, x, B, C, dt).
/// </summary>
public sealed record FalconMultipliers(double Embedding, double LmHead, double MlpGate, double MlpDown, double Key, double AttentionIn,
    double AttentionOut, double SsmIn, double SsmOut, double SsmZ, double SsmX, double SsmB, double SsmC, double SsmDt);
