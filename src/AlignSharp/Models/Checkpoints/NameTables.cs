namespace AlignSharp.Models.Checkpoints;

/// <summary>One row of a family's name table: canonical name ↔ Hugging Face name (relative to the body prefix
/// such as <c>transformer.</c> or <c>model.</c>, unless <see cref="Unprefixed"/>), whether the checkpoint stores
/// the matrix transposed, and the canonical shape under a config (null: the tensor does not exist under it).
/// <c>{i}</c> in both names stands for the layer index. <see cref="Fused"/>: the parameter is a block of rows of a
/// checkpoint tensor that holds several (Phi-3's qkv_proj, gate_up_proj): its first row and the tensor's row count.</summary>
internal sealed record NameRule(string Canonical, string Checkpoint, bool Transposed, Func<ModelConfig, int[]?> Shape, bool Unprefixed = false,
    Func<ModelConfig, (int FirstRow, int TotalRows)>? Fused = null)
{
    /// <summary>Per-layer rules: whether layer i has the tensor at all (null: every layer; LFM2's convolution and
    /// attention layers hold different tensors).</summary>
    public Func<ModelConfig, int, bool>? InLayer { get; init; }
}

/// <summary>A family's checkpoint naming: body prefixes (first one is what save_pretrained writes), tensors
/// outside and inside layers, per-layer buffers that checkpoints may carry and loaders skip, and the untied LM head's
/// name (never prefixed; GPT-NeoX calls it embed_out).</summary>
internal sealed record NameTable(string[] Prefixes, NameRule[] Global, NameRule[] PerLayer, string[] IgnoredPerLayer, string LmHead = "lm_head.weight")
{
    /// <summary>The heads, never prefixed: the LM head under <see cref="LmHead"/>, the scalar head as score.weight.</summary>
    public NameRule[] Heads =>
    [
        new("lm_head.weight", LmHead, false,
            c => c.Head == HeadKind.LanguageModel && !c.TieWordEmbeddings ? [c.VocabSize, c.EmbedDim] : null, Unprefixed: true),
        new("lm_head.bias", "lm_head.bias", false, c => c.HasLmHeadBias ? [c.VocabSize] : null, Unprefixed: true),
        new("score.weight", "score.weight", false,
            c => c.Head == HeadKind.Scalar ? [1, c.EmbedDim] : null, Unprefixed: true),
    ];
}

/// <summary>Rules for the pieces several tables name alike: a LayerNorm's weight and bias, a plain MLP's two layers.</summary>
internal static class CommonRules
{
    /// <summary>A LayerNorm's weight and bias [D] (canonical <paramref name="canonical"/>, checkpoint <paramref name="checkpoint"/>,
    /// both without ".weight"), present where <paramref name="exists"/> says (always when null).</summary>
    public static NameRule[] LayerNorm(string canonical, string checkpoint, Func<ModelConfig, bool>? exists = null) =>
    [
        new(canonical + ".weight", checkpoint + ".weight", false, c => exists?.Invoke(c) ?? true ? [c.HiddenSize] : null),
        new(canonical + ".bias", checkpoint + ".bias", false, c => exists?.Invoke(c) ?? true ? [c.HiddenSize] : null),
    ];

    /// <summary>An fc → activation → proj MLP ([I, D] and [D, I], not transposed) under the checkpoint's two layer names
    /// (inside <paramref name="layer"/>, the checkpoint's name of layer {i}), with biases where the config has MLP biases.</summary>
    public static NameRule[] PlainMlp(string fc, string proj, string layer = "layers.{i}") =>
    [
        new("layers.{i}.mlp.fc.weight", $"{layer}.{fc}.weight", false, c => [c.IntermediateSize, c.HiddenSize]),
        new("layers.{i}.mlp.fc.bias", $"{layer}.{fc}.bias", false, c => c.MlpBias ? [c.IntermediateSize] : null),
        new("layers.{i}.mlp.proj.weight", $"{layer}.{proj}.weight", false, c => [c.HiddenSize, c.IntermediateSize]),
        new("layers.{i}.mlp.proj.bias", $"{layer}.{proj}.bias", false, c => c.MlpBias ? [c.HiddenSize] : null),
    ];

    /// <summary>GPT-NeoX's and BLOOM's block inside <paramref name="layer"/>: input_layernorm, the fused
    /// <c>{attention}.query_key_value</c> [3D, D] (kept fused, head by head) and <c>{attention}.dense</c> with the biases the
    /// config has, post_attention_layernorm, and mlp.dense_h_to_4h → dense_4h_to_h.</summary>
    public static NameRule[] HeadByHeadBlock(string layer, string attention) =>
    [
        .. LayerNorm("layers.{i}.attn_norm", $"{layer}.input_layernorm"),
        new("layers.{i}.attn.qkv.weight", $"{layer}.{attention}.query_key_value.weight", false, c => [3 * c.HiddenSize, c.HiddenSize]),
        new("layers.{i}.attn.qkv.bias", $"{layer}.{attention}.query_key_value.bias", false, c => c.AttentionQkvBias ? [3 * c.HiddenSize] : null),
        new("layers.{i}.attn.o.weight", $"{layer}.{attention}.dense.weight", false, c => [c.HiddenSize, c.HiddenSize]),
        new("layers.{i}.attn.o.bias", $"{layer}.{attention}.dense.bias", false, c => c.AttentionOutputBias ? [c.HiddenSize] : null),
        .. LayerNorm("layers.{i}.mlp_norm", $"{layer}.post_attention_layernorm"),
        .. PlainMlp("mlp.dense_h_to_4h", "mlp.dense_4h_to_h", layer),
    ];
}

/// <summary>
/// GPT-2. Original hub files have no prefix (<c>h.0.attn.c_attn.weight</c>, <c>wte.weight</c>) and carry the
/// <c>attn.bias</c> (causal mask) and <c>attn.masked_bias</c> buffers; save_pretrained writes a
/// <c>transformer.</c> prefix and may add <c>lm_head.weight</c> although it is tied. Conv1D weights are stored
/// [in, out], so every matrix is transposed relative to the canonical [out, in]. The fused c_attn stays fused:
/// canonical <c>attn.qkv</c> rows are q (0..D), k (D..2D), v (2D..3D).
/// </summary>
internal static class Gpt2NameTable
{
    public static readonly NameTable Table = new(
        Prefixes: ["transformer.", ""],
        Global:
        [
            new("embed.weight", "wte.weight", false, c => [c.VocabSize, c.HiddenSize]),
            new("pos_embed.weight", "wpe.weight", false, c => [c.MaxPositions, c.HiddenSize]),
            new("final_norm.weight", "ln_f.weight", false, c => [c.HiddenSize]),
            new("final_norm.bias", "ln_f.bias", false, c => [c.HiddenSize]),
        ],
        PerLayer:
        [
            new("layers.{i}.attn_norm.weight", "h.{i}.ln_1.weight", false, c => [c.HiddenSize]),
            new("layers.{i}.attn_norm.bias", "h.{i}.ln_1.bias", false, c => [c.HiddenSize]),
            new("layers.{i}.attn.qkv.weight", "h.{i}.attn.c_attn.weight", true, c => [3 * c.HiddenSize, c.HiddenSize]),
            new("layers.{i}.attn.qkv.bias", "h.{i}.attn.c_attn.bias", false, c => [3 * c.HiddenSize]),
            new("layers.{i}.attn.o.weight", "h.{i}.attn.c_proj.weight", true, c => [c.HiddenSize, c.HiddenSize]),
            new("layers.{i}.attn.o.bias", "h.{i}.attn.c_proj.bias", false, c => [c.HiddenSize]),
            new("layers.{i}.mlp_norm.weight", "h.{i}.ln_2.weight", false, c => [c.HiddenSize]),
            new("layers.{i}.mlp_norm.bias", "h.{i}.ln_2.bias", false, c => [c.HiddenSize]),
            new("layers.{i}.mlp.fc.weight", "h.{i}.mlp.c_fc.weight", true, c => [c.IntermediateSize, c.HiddenSize]),
            new("layers.{i}.mlp.fc.bias", "h.{i}.mlp.c_fc.bias", false, c => [c.IntermediateSize]),
            new("layers.{i}.mlp.proj.weight", "h.{i}.mlp.c_proj.weight", true, c => [c.HiddenSize, c.IntermediateSize]),
            new("layers.{i}.mlp.proj.bias", "h.{i}.mlp.c_proj.bias", false, c => [c.HiddenSize]),
        ],
        IgnoredPerLayer: ["h.{i}.attn.bias", "h.{i}.attn.masked_bias"]);
}

/// <summary>
/// Llama, and Qwen2, Qwen3 and Mistral, whose tensor names are identical (which biases exist and Qwen3's q/k norms
/// come from the config). save_pretrained of <c>*ForCausalLM</c> writes the <c>model.</c> prefix; a bare
/// <c>LlamaModel</c> has none. Linear weights are stored [out, in] like the canonical layout. Old checkpoints
/// carry <c>self_attn.rotary_emb.inv_freq</c> buffers, which are skipped.
/// </summary>
internal static class LlamaNameTable
{
    /// <summary>Token embedding and final norm (Llama, Qwen, Mistral, Gemma, Phi-3).</summary>
    public static readonly NameRule[] GlobalRules =
    [
        new("embed.weight", "embed_tokens.weight", false, c => [c.VocabSize, c.HiddenSize]),
        new("final_norm.weight", "norm.weight", false, c => [c.HiddenSize]),
    ];

    /// <summary>q, k and v projections with the biases the config has (Phi and OPT name their output projection otherwise).</summary>
    public static readonly NameRule[] QkvRules =
    [
        new("layers.{i}.attn.q.weight", "layers.{i}.self_attn.q_proj.weight", false, c => [c.QueryDim, c.HiddenSize]),
        new("layers.{i}.attn.q.bias", "layers.{i}.self_attn.q_proj.bias", false, c => c.AttentionQkvBias ? [c.QueryDim] : null),
        new("layers.{i}.attn.k.weight", "layers.{i}.self_attn.k_proj.weight", false, c => [c.KvDim, c.HiddenSize]),
        new("layers.{i}.attn.k.bias", "layers.{i}.self_attn.k_proj.bias", false, c => c.AttentionQkvBias ? [c.KvDim] : null),
        new("layers.{i}.attn.v.weight", "layers.{i}.self_attn.v_proj.weight", false, c => [c.KvDim, c.HiddenSize]),
        new("layers.{i}.attn.v.bias", "layers.{i}.self_attn.v_proj.bias", false, c => c.AttentionQkvBias ? [c.KvDim] : null),
    ];

    /// <summary>The output projection <c>self_attn.{name}</c> ([D, Q], with the bias the config has).</summary>
    public static NameRule[] OutputRules(string name) =>
    [
        new("layers.{i}.attn.o.weight", $"layers.{{i}}.self_attn.{name}.weight", false, c => [c.HiddenSize, c.QueryDim]),
        new("layers.{i}.attn.o.bias", $"layers.{{i}}.self_attn.{name}.bias", false, c => c.AttentionOutputBias ? [c.HiddenSize] : null),
    ];

    /// <summary>q, k, v, o projections with the biases the config has.</summary>
    public static readonly NameRule[] AttentionRules = [.. QkvRules, .. OutputRules("o_proj")];

    /// <summary>The gated MLP's gate, up and down projections with the biases the config has.</summary>
    public static readonly NameRule[] MlpRules =
    [
        new("layers.{i}.mlp.gate.weight", "layers.{i}.mlp.gate_proj.weight", false, c => [c.IntermediateSize, c.HiddenSize]),
        new("layers.{i}.mlp.gate.bias", "layers.{i}.mlp.gate_proj.bias", false, c => c.MlpBias ? [c.IntermediateSize] : null),
        new("layers.{i}.mlp.up.weight", "layers.{i}.mlp.up_proj.weight", false, c => [c.IntermediateSize, c.HiddenSize]),
        new("layers.{i}.mlp.up.bias", "layers.{i}.mlp.up_proj.bias", false, c => c.MlpBias ? [c.IntermediateSize] : null),
        new("layers.{i}.mlp.down.weight", "layers.{i}.mlp.down_proj.weight", false, c => [c.HiddenSize, c.IntermediateSize]),
        new("layers.{i}.mlp.down.bias", "layers.{i}.mlp.down_proj.bias", false, c => c.MlpBias ? [c.HiddenSize] : null),
    ];

    /// <summary>Per-head q/k RMSNorm weights [head_dim] (Qwen3, Gemma-3).</summary>
    public static readonly NameRule[] QkNormRules =
    [
        new("layers.{i}.attn.q_norm.weight", "layers.{i}.self_attn.q_norm.weight", false, c => c.QkNorm ? [c.HeadDim] : null),
        new("layers.{i}.attn.k_norm.weight", "layers.{i}.self_attn.k_norm.weight", false, c => c.QkNorm ? [c.HeadDim] : null),
    ];

    public static readonly NameTable Table = WithBlock(QkNormRules, MlpRules);

    /// <summary>Llama's table with the family's q/k norm rules and MLP rules in their places (Hunyuan's differently named
    /// norms, GLM's fused gate/up).</summary>
    public static NameTable WithBlock(NameRule[] qkNorms, NameRule[] mlp) => new(
        Prefixes: ["model.", ""],
        Global: GlobalRules,
        PerLayer:
        [
            new("layers.{i}.attn_norm.weight", "layers.{i}.input_layernorm.weight", false, c => [c.HiddenSize]),
            .. AttentionRules,
            .. qkNorms,
            new("layers.{i}.mlp_norm.weight", "layers.{i}.post_attention_layernorm.weight", false, c => [c.HiddenSize]),
            .. mlp,
        ],
        IgnoredPerLayer: ["layers.{i}.self_attn.rotary_emb.inv_freq"]);
}

/// <summary>
/// Gemma-2 and Gemma-3 text: Llama's projection names, but four norms per block, and Gemma's
/// <c>post_attention_layernorm</c> normalises the attention output (canonical <c>attn_out_norm</c>) while
/// <c>pre_feedforward_layernorm</c> is the MLP's input norm (canonical <c>mlp_norm</c>, Llama's
/// post_attention_layernorm). Norm weights are stored as w with the model scaling by (1 + w). The head is tied.
/// </summary>
internal static class GemmaNameTable
{
    public static readonly NameTable Table = new(
        Prefixes: ["model.", ""],
        Global: LlamaNameTable.GlobalRules,
        PerLayer:
        [
            new("layers.{i}.attn_norm.weight", "layers.{i}.input_layernorm.weight", false, c => [c.HiddenSize]),
            .. LlamaNameTable.AttentionRules,
            .. LlamaNameTable.QkNormRules,
            new("layers.{i}.attn_out_norm.weight", "layers.{i}.post_attention_layernorm.weight", false, c => [c.HiddenSize]),
            new("layers.{i}.mlp_norm.weight", "layers.{i}.pre_feedforward_layernorm.weight", false, c => [c.HiddenSize]),
            .. LlamaNameTable.MlpRules,
            new("layers.{i}.mlp_out_norm.weight", "layers.{i}.post_feedforward_layernorm.weight", false, c => [c.HiddenSize]),
        ],
        IgnoredPerLayer: ["layers.{i}.self_attn.rotary_emb.inv_freq"]);
}

/// <summary>
/// OLMo-2: Llama's projection names, no norm before attention or MLP, a norm on each of their outputs
/// (<c>post_attention_layernorm</c> → canonical <c>attn_out_norm</c>, <c>post_feedforward_layernorm</c> →
/// <c>mlp_out_norm</c>), and q/k RMSNorms over the whole projection ([heads · head_dim], [kv heads · head_dim]).
/// </summary>
internal static class Olmo2NameTable
{
    public static readonly NameTable Table = WithOutputNorms(
    [
        new("layers.{i}.attn.q_norm.weight", "layers.{i}.self_attn.q_norm.weight", false, c => [c.QueryDim]),
        new("layers.{i}.attn.k_norm.weight", "layers.{i}.self_attn.k_norm.weight", false, c => [c.KvDim]),
    ]);

    /// <summary>Llama's projections with the given q/k norms and a norm on each of attention's and the MLP's outputs
    /// (<c>post_attention_layernorm</c>, <c>post_feedforward_layernorm</c>), none on their inputs: OLMo-2, EXAONE 4.</summary>
    public static NameTable WithOutputNorms(NameRule[] qkNorms) => new(
        Prefixes: ["model.", ""],
        Global: LlamaNameTable.GlobalRules,
        PerLayer:
        [
            .. LlamaNameTable.AttentionRules,
            .. qkNorms,
            new("layers.{i}.attn_out_norm.weight", "layers.{i}.post_attention_layernorm.weight", false, c => [c.HiddenSize]),
            .. LlamaNameTable.MlpRules,
            new("layers.{i}.mlp_out_norm.weight", "layers.{i}.post_feedforward_layernorm.weight", false, c => [c.HiddenSize]),
        ],
        IgnoredPerLayer: ["layers.{i}.self_attn.rotary_emb.inv_freq"]);
}

/// <summary>
/// Phi-3 / Phi-3.5: Llama's block with q, k and v fused into <c>self_attn.qkv_proj</c> (rows q, then k, then v) and
/// gate and up fused into <c>mlp.gate_up_proj</c> (rows gate, then up). Loading splits them into the canonical
/// q/k/v and gate/up parameters; saving fuses them again. No biases.
/// </summary>
internal static class Phi3NameTable
{
    private static (int, int) QkvRows(ModelConfig c, int first) => (first, c.QueryDim + 2 * c.KvDim);

    /// <summary>The gated MLP with gate and up fused in <c>mlp.gate_up_proj</c> [2I, D] (rows gate, then up) and
    /// <c>mlp.down_proj</c>, no biases (Phi-3, GLM).</summary>
    public static readonly NameRule[] FusedMlpRules =
    [
        new("layers.{i}.mlp.gate.weight", "layers.{i}.mlp.gate_up_proj.weight", false, c => [c.IntermediateSize, c.HiddenSize], Fused: c => (0, 2 * c.IntermediateSize)),
        new("layers.{i}.mlp.up.weight", "layers.{i}.mlp.gate_up_proj.weight", false, c => [c.IntermediateSize, c.HiddenSize], Fused: c => (c.IntermediateSize, 2 * c.IntermediateSize)),
        new("layers.{i}.mlp.down.weight", "layers.{i}.mlp.down_proj.weight", false, c => [c.HiddenSize, c.IntermediateSize]),
    ];

    public static readonly NameTable Table = new(
        Prefixes: ["model.", ""],
        Global: LlamaNameTable.GlobalRules,
        PerLayer:
        [
            new("layers.{i}.attn_norm.weight", "layers.{i}.input_layernorm.weight", false, c => [c.HiddenSize]),
            new("layers.{i}.attn.q.weight", "layers.{i}.self_attn.qkv_proj.weight", false, c => [c.QueryDim, c.HiddenSize], Fused: c => QkvRows(c, 0)),
            new("layers.{i}.attn.k.weight", "layers.{i}.self_attn.qkv_proj.weight", false, c => [c.KvDim, c.HiddenSize], Fused: c => QkvRows(c, c.QueryDim)),
            new("layers.{i}.attn.v.weight", "layers.{i}.self_attn.qkv_proj.weight", false, c => [c.KvDim, c.HiddenSize], Fused: c => QkvRows(c, c.QueryDim + c.KvDim)),
            new("layers.{i}.attn.o.weight", "layers.{i}.self_attn.o_proj.weight", false, c => [c.HiddenSize, c.QueryDim]),
            new("layers.{i}.mlp_norm.weight", "layers.{i}.post_attention_layernorm.weight", false, c => [c.HiddenSize]),
            .. FusedMlpRules,
        ],
        IgnoredPerLayer: ["layers.{i}.self_attn.rotary_emb.inv_freq"]);
}

/// <summary>
/// GPT-NeoX (Pythia): <c>gpt_neox.</c> prefix, <c>embed_in</c>, LayerNorms with biases (<c>input_layernorm</c>,
/// <c>post_attention_layernorm</c>, <c>final_layer_norm</c>), the fused <c>attention.query_key_value</c> kept fused
/// (canonical <c>attn.qkv</c>, rows head by head: q, k, v of head 0, then of head 1, ...), <c>attention.dense</c>,
/// <c>mlp.dense_h_to_4h</c> / <c>mlp.dense_4h_to_h</c>, and the untied head <c>embed_out</c>. Older checkpoints carry
/// the attention's mask and rotary buffers, which are skipped.
/// </summary>
internal static class GptNeoXNameTable
{
    public static readonly NameTable Table = new(
        Prefixes: ["gpt_neox.", ""],
        Global:
        [
            new("embed.weight", "embed_in.weight", false, c => [c.VocabSize, c.HiddenSize]),
            .. CommonRules.LayerNorm("final_norm", "final_layer_norm"),
        ],
        PerLayer: CommonRules.HeadByHeadBlock("layers.{i}", "attention"),
        IgnoredPerLayer: ["layers.{i}.attention.bias", "layers.{i}.attention.masked_bias", "layers.{i}.attention.rotary_emb.inv_freq"],
        LmHead: "embed_out.weight");
}

/// <summary>
/// StableLM: Llama's names with LayerNorm biases (<c>input_layernorm.bias</c>, <c>post_attention_layernorm.bias</c>,
/// <c>model.norm.bias</c>); which of q, k and v have biases comes from use_qkv_bias.
/// </summary>
internal static class StableLmNameTable
{
    public static readonly NameTable Table = WithMlp(LlamaNameTable.MlpRules);

    /// <summary>StableLM's names with the family's MLP rules (Starcoder2's c_fc / c_proj).</summary>
    public static NameTable WithMlp(NameRule[] mlp) => new(
        Prefixes: ["model.", ""],
        Global:
        [
            LlamaNameTable.GlobalRules[0],
            .. CommonRules.LayerNorm("final_norm", "norm"),
        ],
        PerLayer:
        [
            .. CommonRules.LayerNorm("layers.{i}.attn_norm", "layers.{i}.input_layernorm"),
            .. LlamaNameTable.AttentionRules,
            .. CommonRules.LayerNorm("layers.{i}.mlp_norm", "layers.{i}.post_attention_layernorm"),
            .. mlp,
        ],
        IgnoredPerLayer: ["layers.{i}.self_attn.rotary_emb.inv_freq"]);
}

/// <summary>Starcoder2: StableLM's names (LayerNorms with biases, q/k/v/o with the biases use_bias gives) with a
/// <c>mlp.c_fc</c> → <c>mlp.c_proj</c> MLP.</summary>
internal static class Starcoder2NameTable
{
    public static readonly NameTable Table = StableLmNameTable.WithMlp(CommonRules.PlainMlp("mlp.c_fc", "mlp.c_proj"));
}

/// <summary>
/// Phi-1/1.5/2: <c>model.</c> prefix, Llama's embedding and q/k/v names (with biases), <c>self_attn.dense</c> as the output
/// projection, one <c>input_layernorm</c> per block (attention and MLP read it), <c>mlp.fc1</c> / <c>mlp.fc2</c>,
/// <c>model.final_layernorm</c>, and <c>lm_head.weight</c> with <c>lm_head.bias</c>.
/// </summary>
internal static class PhiNameTable
{
    public static readonly NameTable Table = new(
        Prefixes: ["model.", ""],
        Global:
        [
            LlamaNameTable.GlobalRules[0],
            .. CommonRules.LayerNorm("final_norm", "final_layernorm"),
        ],
        PerLayer:
        [
            .. CommonRules.LayerNorm("layers.{i}.attn_norm", "layers.{i}.input_layernorm"),
            .. LlamaNameTable.QkvRules,
            .. LlamaNameTable.OutputRules("dense"),
            .. CommonRules.PlainMlp("mlp.fc1", "mlp.fc2"),
        ],
        IgnoredPerLayer: ["layers.{i}.self_attn.rotary_emb.inv_freq"]);
}

/// <summary>
/// OPT: <c>model.decoder.</c> prefix (a bare OPTModel: <c>decoder.</c>), <c>embed_tokens</c> [V, word_embed_proj_dim],
/// <c>embed_positions</c> [max_position_embeddings + 2, D], <c>project_in</c> / <c>project_out</c> (no biases) where the
/// embedding width differs, <c>self_attn_layer_norm</c> → <c>attn_norm</c>, q/k/v_proj and <c>out_proj</c> → <c>attn.o</c>,
/// the layer's <c>final_layer_norm</c> → <c>mlp_norm</c> (the MLP's), <c>fc1</c> / <c>fc2</c>, and the decoder's
/// <c>final_layer_norm</c> → <c>final_norm</c> where do_layer_norm_before.
/// </summary>
internal static class OptNameTable
{
    private static int[]? Matrix(int rows, int columns, bool exists) => exists ? [rows, columns] : null;

    public static readonly NameTable Table = new(
        Prefixes: ["model.decoder.", "decoder."],
        Global:
        [
            new("embed.weight", "embed_tokens.weight", false, c => [c.VocabSize, c.EmbedDim]),
            new("pos_embed.weight", "embed_positions.weight", false, c => [c.MaxPositions + c.Table.PositionOffset, c.HiddenSize]),
            new("project_in.weight", "project_in.weight", false, c => Matrix(c.HiddenSize, c.EmbedDim, c.EmbedDim != c.HiddenSize)),
            new("project_out.weight", "project_out.weight", false, c => Matrix(c.EmbedDim, c.HiddenSize, c.EmbedDim != c.HiddenSize)),
            .. CommonRules.LayerNorm("final_norm", "final_layer_norm", c => !c.PostNorm),
        ],
        PerLayer:
        [
            .. CommonRules.LayerNorm("layers.{i}.attn_norm", "layers.{i}.self_attn_layer_norm"),
            .. LlamaNameTable.QkvRules,
            .. LlamaNameTable.OutputRules("out_proj"),
            .. CommonRules.LayerNorm("layers.{i}.mlp_norm", "layers.{i}.final_layer_norm"),
            .. CommonRules.PlainMlp("fc1", "fc2"),
        ],
        IgnoredPerLayer: []);
}

/// <summary>
/// EXAONE 4: Llama's projection names, per-head q/k norms (<c>self_attn.q_norm</c> / <c>k_norm</c> [head_dim]), no norm
/// before attention or MLP, <c>post_attention_layernorm</c> → <c>attn_out_norm</c> and <c>post_feedforward_layernorm</c> →
/// <c>mlp_out_norm</c> on their outputs.
/// </summary>
internal static class Exaone4NameTable
{
    public static readonly NameTable Table = Olmo2NameTable.WithOutputNorms(LlamaNameTable.QkNormRules);
}

/// <summary>Hunyuan dense: Llama's names with its per-head q/k norms called <c>self_attn.query_layernorm</c> /
/// <c>key_layernorm</c>.</summary>
internal static class HunyuanNameTable
{
    public static readonly NameTable Table = LlamaNameTable.WithBlock(
    [
        new("layers.{i}.attn.q_norm.weight", "layers.{i}.self_attn.query_layernorm.weight", false, c => [c.HeadDim]),
        new("layers.{i}.attn.k_norm.weight", "layers.{i}.self_attn.key_layernorm.weight", false, c => [c.HeadDim]),
    ], LlamaNameTable.MlpRules);
}

/// <summary>OLMo 1: Llama's embedding and projection names; its norms have no tensors.</summary>
internal static class OlmoNameTable
{
    public static readonly NameTable Table = new(
        Prefixes: ["model.", ""],
        Global: [LlamaNameTable.GlobalRules[0]],
        PerLayer: [.. LlamaNameTable.AttentionRules, .. LlamaNameTable.MlpRules],
        IgnoredPerLayer: ["layers.{i}.self_attn.rotary_emb.inv_freq"]);
}

/// <summary>
/// BLOOM: <c>transformer.</c> prefix (the hub's bloom-560m … 3b files, saved from BloomModel, have none),
/// <c>word_embeddings</c> and its LayerNorm <c>word_embeddings_layernorm</c> (canonical <c>embed_norm</c>), blocks
/// <c>h.{i}</c> with <c>input_layernorm</c>, the fused <c>self_attention.query_key_value</c> kept fused (rows head by
/// head, as GPT-NeoX's), <c>self_attention.dense</c>, <c>post_attention_layernorm</c>, <c>mlp.dense_h_to_4h</c> /
/// <c>mlp.dense_4h_to_h</c>, and <c>ln_f</c>; the head is tied.
/// </summary>
internal static class BloomNameTable
{
    public static readonly NameTable Table = new(
        Prefixes: ["transformer.", ""],
        Global:
        [
            new("embed.weight", "word_embeddings.weight", false, c => [c.VocabSize, c.HiddenSize]),
            .. CommonRules.LayerNorm("embed_norm", "word_embeddings_layernorm"),
            .. CommonRules.LayerNorm("final_norm", "ln_f"),
        ],
        PerLayer: CommonRules.HeadByHeadBlock("h.{i}", "self_attention"),
        IgnoredPerLayer: []);
}

/// <summary>
/// LFM2: <c>model.</c> prefix, <c>embed_tokens</c>, per layer <c>operator_norm</c> → <c>attn_norm</c> and <c>ffn_norm</c> →
/// <c>mlp_norm</c>; an attention layer's <c>self_attn.q_proj</c> / <c>k_proj</c> / <c>v_proj</c> / <c>out_proj</c> (→ <c>attn.o</c>)
/// and per-head <c>q_layernorm</c> / <c>k_layernorm</c>; a convolution layer's <c>conv.in_proj</c> [3D, D] → <c>conv.in</c>,
/// <c>conv.conv</c> [D, 1, K] → <c>conv.kernel</c>, <c>conv.out_proj</c> → <c>conv.out</c> (biases with conv_bias);
/// <c>feed_forward.w1</c> / <c>w3</c> / <c>w2</c> → <c>mlp.gate</c> / <c>up</c> / <c>down</c>; the final norm <c>embedding_norm</c>.
/// </summary>
internal static class Lfm2NameTable
{
    private static NameRule Attention(NameRule rule) => rule with { InLayer = (c, i) => !c.IsConvLayer(i) };
    private static NameRule Conv(NameRule rule) => rule with { InLayer = (c, i) => c.IsConvLayer(i) };

    public static readonly NameTable Table = new(
        Prefixes: ["model.", ""],
        Global:
        [
            LlamaNameTable.GlobalRules[0],
            new("final_norm.weight", "embedding_norm.weight", false, c => [c.HiddenSize]),
        ],
        PerLayer:
        [
            new("layers.{i}.attn_norm.weight", "layers.{i}.operator_norm.weight", false, c => [c.HiddenSize]),
            .. LlamaNameTable.QkvRules.Select(Attention),
            .. LlamaNameTable.OutputRules("out_proj").Select(Attention),
            Attention(new("layers.{i}.attn.q_norm.weight", "layers.{i}.self_attn.q_layernorm.weight", false, c => [c.HeadDim])),
            Attention(new("layers.{i}.attn.k_norm.weight", "layers.{i}.self_attn.k_layernorm.weight", false, c => [c.HeadDim])),
            Conv(new("layers.{i}.conv.in.weight", "layers.{i}.conv.in_proj.weight", false, c => [3 * c.HiddenSize, c.HiddenSize])),
            Conv(new("layers.{i}.conv.in.bias", "layers.{i}.conv.in_proj.bias", false, c => c.ConvBias ? [3 * c.HiddenSize] : null)),
            Conv(new("layers.{i}.conv.kernel.weight", "layers.{i}.conv.conv.weight", false, c => [c.HiddenSize, 1, c.ConvWidth])),
            Conv(new("layers.{i}.conv.kernel.bias", "layers.{i}.conv.conv.bias", false, c => c.ConvBias ? [c.HiddenSize] : null)),
            Conv(new("layers.{i}.conv.out.weight", "layers.{i}.conv.out_proj.weight", false, c => [c.HiddenSize, c.HiddenSize])),
            Conv(new("layers.{i}.conv.out.bias", "layers.{i}.conv.out_proj.bias", false, c => c.ConvBias ? [c.HiddenSize] : null)),
            new("layers.{i}.mlp_norm.weight", "layers.{i}.ffn_norm.weight", false, c => [c.HiddenSize]),
            new("layers.{i}.mlp.gate.weight", "layers.{i}.feed_forward.w1.weight", false, c => [c.IntermediateSize, c.HiddenSize]),
            new("layers.{i}.mlp.up.weight", "layers.{i}.feed_forward.w3.weight", false, c => [c.IntermediateSize, c.HiddenSize]),
            new("layers.{i}.mlp.down.weight", "layers.{i}.feed_forward.w2.weight", false, c => [c.HiddenSize, c.IntermediateSize]),
        ],
        IgnoredPerLayer: []);
}

/// <summary>
/// Granite 4.0 (granitemoehybrid): Llama's norms and attention names on attention layers, <c>mamba.*</c> on Mamba-2 layers
/// (in_proj [I + conv + H, D], conv1d [conv, 1, K] with its bias, dt_bias, A_log and D [H], the gated norm [I], out_proj),
/// and the shared MLP's fused <c>shared_mlp.input_linear</c> [2·I, D] (gate rows, then up) and <c>output_linear</c>;
/// Granite MoE's experts (<see cref="GraniteMoeNameTable.ExpertRules"/>) where the config has them.
/// </summary>
internal static class GraniteMoeHybridNameTable
{
    private static MambaShape M(ModelConfig c) => c.Mamba!;

    /// <summary>A Mamba-2 mixer's tensors under <c>layers.{i}.mamba</c> where the layer has one (Granite 4.0, Falcon-H1).
    /// Declared before <see cref="Table"/>, which reads it: static fields initialise in order.</summary>
    public static readonly NameRule[] MambaRules = new NameRule[]
    {
        new("layers.{i}.mamba.in.weight", "layers.{i}.mamba.in_proj.weight", false, c => [M(c).InProjRows, c.HiddenSize]),
        new("layers.{i}.mamba.in.bias", "layers.{i}.mamba.in_proj.bias", false, c => M(c).ProjBias ? [M(c).InProjRows] : null),
        new("layers.{i}.mamba.conv.weight", "layers.{i}.mamba.conv1d.weight", false, c => [M(c).ConvDim, 1, M(c).ConvWidth]),
        new("layers.{i}.mamba.conv.bias", "layers.{i}.mamba.conv1d.bias", false, c => M(c).ConvBias ? [M(c).ConvDim] : null),
        new("layers.{i}.mamba.dt_bias", "layers.{i}.mamba.dt_bias", false, c => [M(c).Heads]),
        new("layers.{i}.mamba.a_log", "layers.{i}.mamba.A_log", false, c => [M(c).Heads]),
        new("layers.{i}.mamba.d", "layers.{i}.mamba.D", false, c => [M(c).Heads]),
        new("layers.{i}.mamba.norm.weight", "layers.{i}.mamba.norm.weight", false, c => M(c).NormGroups > 0 ? [M(c).Inner] : null),
        new("layers.{i}.mamba.out.weight", "layers.{i}.mamba.out_proj.weight", false, c => [c.HiddenSize, M(c).Inner]),
        new("layers.{i}.mamba.out.bias", "layers.{i}.mamba.out_proj.bias", false, c => M(c).OutBias ? [c.HiddenSize] : null),
    }.Select(rule => rule with { InLayer = (c, i) => c.IsMambaLayer(i) }).ToArray();

    private static NameRule Attention(NameRule rule) => rule with { InLayer = (c, i) => c.HasAttention(i) };

    public static readonly NameTable Table = new(
        Prefixes: ["model.", ""],
        Global: LlamaNameTable.GlobalRules,
        PerLayer:
        [
            new("layers.{i}.attn_norm.weight", "layers.{i}.input_layernorm.weight", false, c => [c.HiddenSize]),
            .. LlamaNameTable.AttentionRules.Select(Attention),
            .. MambaRules,
            new("layers.{i}.mlp_norm.weight", "layers.{i}.post_attention_layernorm.weight", false, c => [c.HiddenSize]),
            new("layers.{i}.mlp.gate.weight", "layers.{i}.shared_mlp.input_linear.weight", false, c => [c.IntermediateSize, c.HiddenSize], Fused: c => (0, 2 * c.IntermediateSize)),
            new("layers.{i}.mlp.up.weight", "layers.{i}.shared_mlp.input_linear.weight", false, c => [c.IntermediateSize, c.HiddenSize], Fused: c => (c.IntermediateSize, 2 * c.IntermediateSize)),
            new("layers.{i}.mlp.down.weight", "layers.{i}.shared_mlp.output_linear.weight", false, c => [c.HiddenSize, c.IntermediateSize]),
            .. GraniteMoeNameTable.ExpertRules,
        ],
        IgnoredPerLayer: []);
}

/// <summary>
/// Granite 3.x MoE (granitemoe): Llama's norms and attention names, and per layer the sparse MoE's router
/// (<c>block_sparse_moe.router.layer</c> [E, D]) and expert stacks (<c>input_linear</c> [E, 2·I, D], gate rows then up;
/// <c>output_linear</c> [E, D, I]), kept as they are stored: one tensor per stack.
/// </summary>
internal static class GraniteMoeNameTable
{
    /// <summary>The router and the expert stacks where the config has experts.</summary>
    public static readonly NameRule[] ExpertRules =
    [
        new("layers.{i}.moe.router.weight", "layers.{i}.block_sparse_moe.router.layer.weight", false, c => c.Moe is { } m ? [m.Experts, c.HiddenSize] : null),
        new("layers.{i}.moe.input.weight", "layers.{i}.block_sparse_moe.input_linear.weight", false, c => c.Moe is { } m ? [m.Experts, 2 * m.ExpertSize, c.HiddenSize] : null),
        new("layers.{i}.moe.output.weight", "layers.{i}.block_sparse_moe.output_linear.weight", false, c => c.Moe is { } m ? [m.Experts, c.HiddenSize, m.ExpertSize] : null),
    ];

    public static readonly NameTable Table = new(
        Prefixes: ["model.", ""],
        Global: LlamaNameTable.GlobalRules,
        PerLayer:
        [
            new("layers.{i}.attn_norm.weight", "layers.{i}.input_layernorm.weight", false, c => [c.HiddenSize]),
            .. LlamaNameTable.AttentionRules,
            new("layers.{i}.mlp_norm.weight", "layers.{i}.post_attention_layernorm.weight", false, c => [c.HiddenSize]),
            .. ExpertRules,
        ],
        IgnoredPerLayer: []);
}

/// <summary>
/// Falcon-H1: Llama's attention names and a Mamba-2 mixer (Granite 4.0's names) in every layer, <c>feed_forward.*</c> for
/// the MLP under <c>pre_ff_layernorm</c>, <c>final_layernorm</c> at the end.
/// </summary>
internal static class FalconH1NameTable
{
    public static readonly NameTable Table = new(
        Prefixes: ["model.", ""],
        Global:
        [
            LlamaNameTable.GlobalRules[0],
            new("final_norm.weight", "final_layernorm.weight", false, c => [c.HiddenSize]),
        ],
        PerLayer:
        [
            new("layers.{i}.attn_norm.weight", "layers.{i}.input_layernorm.weight", false, c => [c.HiddenSize]),
            .. LlamaNameTable.AttentionRules,
            .. GraniteMoeHybridNameTable.MambaRules,
            new("layers.{i}.mlp_norm.weight", "layers.{i}.pre_ff_layernorm.weight", false, c => [c.HiddenSize]),
            .. LlamaNameTable.MlpRules.Select(r => r with { Checkpoint = r.Checkpoint.Replace(".mlp.", ".feed_forward.") }),
        ],
        IgnoredPerLayer: ["layers.{i}.mamba.mup_vector"]);
}

/// <summary>GLM: Llama's names (q/k/v biases under attention_bias, none on o_proj) with Phi-3's fused
/// <c>mlp.gate_up_proj</c>.</summary>
internal static class GlmNameTable
{
    public static readonly NameTable Table = LlamaNameTable.WithBlock([], Phi3NameTable.FusedMlpRules);
}

/// <summary>
/// GPTBigCode: GPT-2's names (<c>transformer.</c> prefix; <c>wte</c>, <c>wpe</c>, <c>h.{i}.ln_1</c>, <c>attn.c_attn</c>,
/// <c>attn.c_proj</c>, <c>ln_2</c>, <c>mlp.c_fc</c>, <c>mlp.c_proj</c>, <c>ln_f</c>) with nn.Linear weights stored [out, in];
/// <c>c_attn</c> [D + 2·KV·hd, D] kept fused as canonical <c>attn.qkv</c>: all of q, then k, then v with multi_query, else
/// head by head.
/// </summary>
internal static class GptBigCodeNameTable
{
    public static readonly NameTable Table = WithAttention(
    [
        new("layers.{i}.attn.qkv.weight", "h.{i}.attn.c_attn.weight", false, c => [c.QueryDim + 2 * c.KvDim, c.HiddenSize]),
        new("layers.{i}.attn.qkv.bias", "h.{i}.attn.c_attn.bias", false, c => [c.QueryDim + 2 * c.KvDim]),
        new("layers.{i}.attn.o.weight", "h.{i}.attn.c_proj.weight", false, c => [c.HiddenSize, c.HiddenSize]),
        new("layers.{i}.attn.o.bias", "h.{i}.attn.c_proj.bias", false, c => [c.HiddenSize]),
    ], []);

    /// <summary>GPT-2's names with nn.Linear weights ([out, in]) around the family's attention rules (GPTBigCode, GPT-Neo):
    /// wte, wpe, h.{i}.ln_1, the attention, h.{i}.ln_2, mlp.c_fc / c_proj, ln_f.</summary>
    public static NameTable WithAttention(NameRule[] attention, string[] ignoredPerLayer) => new(
        Prefixes: ["transformer.", ""],
        Global:
        [
            new("embed.weight", "wte.weight", false, c => [c.VocabSize, c.HiddenSize]),
            new("pos_embed.weight", "wpe.weight", false, c => [c.MaxPositions, c.HiddenSize]),
            .. CommonRules.LayerNorm("final_norm", "ln_f"),
        ],
        PerLayer:
        [
            .. CommonRules.LayerNorm("layers.{i}.attn_norm", "h.{i}.ln_1"),
            .. attention,
            .. CommonRules.LayerNorm("layers.{i}.mlp_norm", "h.{i}.ln_2"),
            .. CommonRules.PlainMlp("mlp.c_fc", "mlp.c_proj", "h.{i}"),
        ],
        IgnoredPerLayer: ignoredPerLayer);
}

/// <summary>
/// GPT-Neo: <c>transformer.</c> prefix (or none), <c>wte</c>, <c>wpe</c>, <c>h.{i}.ln_1</c>, <c>attn.attention.q_proj</c> /
/// <c>k_proj</c> / <c>v_proj</c> (no biases) and <c>out_proj</c> (with one), <c>ln_2</c>, <c>mlp.c_fc</c> / <c>c_proj</c>,
/// <c>ln_f</c>; nn.Linear weights [out, in]. Older files carry the attention's mask buffers, which are skipped.
/// </summary>
internal static class GptNeoNameTable
{
    public static readonly NameTable Table = GptBigCodeNameTable.WithAttention(
    [
        new("layers.{i}.attn.q.weight", "h.{i}.attn.attention.q_proj.weight", false, c => [c.QueryDim, c.HiddenSize]),
        new("layers.{i}.attn.k.weight", "h.{i}.attn.attention.k_proj.weight", false, c => [c.KvDim, c.HiddenSize]),
        new("layers.{i}.attn.v.weight", "h.{i}.attn.attention.v_proj.weight", false, c => [c.KvDim, c.HiddenSize]),
        new("layers.{i}.attn.o.weight", "h.{i}.attn.attention.out_proj.weight", false, c => [c.HiddenSize, c.QueryDim]),
        new("layers.{i}.attn.o.bias", "h.{i}.attn.attention.out_proj.bias", false, c => [c.HiddenSize]),
    ], ["h.{i}.attn.attention.bias", "h.{i}.attn.attention.masked_bias"]);
}
