using AlignSharp.Engine;

namespace AlignSharp.Models;

/// <summary>
/// Per-layer key/value memory for incremental decoding: K and V of every processed position, laid out
/// [B, Capacity, KV, Dh] per layer. <see cref="Length"/> positions are filled (the same for every row; rows
/// that started later are left-padded and masked). The arrays come from <see cref="BufferPool"/> (cleared) and go back
/// on <see cref="Dispose"/>: a generator calls it once per batch of rollouts, and fresh arrays cost page faults on
/// every decoding step that reaches a new page (about 2% of a batch-8 step on a 0.5B model). An LFM2 convolution layer
/// keeps no keys and values but its convolution's last inputs, [B, K − 1, D] (<see cref="ConvHistory"/>); a Mamba-2 layer
/// its convolution's last inputs [B, K − 1, conv channels] and its scan's state [B, H, P, N] (<see cref="SsmState"/>).
/// </summary>
public sealed class KvCache : IDisposable
{
    public int Batch { get; }
    public int Capacity { get; }
    public int Length { get; internal set; }
    private float[][]? _k, _v;
    private readonly float[]?[] _conv, _ssm;
    private readonly int[] _convRows, _convChannels;
    internal readonly int KvHeads, HeadDim;

    public KvCache(ModelConfig config, int batch, int capacity)
    {
        Batch = batch;
        Capacity = capacity;
        KvHeads = config.NumKvHeads;
        HeadDim = config.HeadDim;
        long n = (long)batch * capacity * KvHeads * HeadDim;
        int floats = n <= Array.MaxLength ? (int)n : throw new ArgumentException("KV cache too large.");
        _k = new float[config.NumLayers][];
        _v = new float[config.NumLayers][];
        _conv = new float[config.NumLayers][];
        _ssm = new float[config.NumLayers][];
        _convRows = new int[config.NumLayers];
        _convChannels = new int[config.NumLayers];
        for (int l = 0; l < config.NumLayers; l++)
        {
            bool attention = config.HasAttention(l);
            _k[l] = attention ? RentCleared(floats) : [];
            _v[l] = attention ? RentCleared(floats) : [];
            if (!config.IsConvLayer(l) && !config.IsMambaLayer(l)) continue;
            (_convRows[l], _convChannels[l]) = config.IsConvLayer(l) ? (config.ConvWidth - 1, config.HiddenSize) : (config.Mamba!.ConvWidth - 1, config.Mamba.ConvDim);
            // Pooled as K and V are: at batch 8 a Granite-4.0-H cache's states are ~180 MB, whose page faults made a fresh
            // cache cost more than a prompt pass.
            _conv[l] = RentCleared(batch * _convRows[l] * _convChannels[l]);
            if (config.Mamba is { } m && config.IsMambaLayer(l)) _ssm[l] = RentCleared(checked(batch * m.Heads * m.HeadDim * m.StateSize));
        }
    }

    /// <summary>
    /// Bytes one decoding step reads from a cache of <paramref name="batch"/> rows holding <paramref name="positions"/>
    /// positions (fractional: an average over a run's steps), and writes back where it updates in place: each attention
    /// layer's keys and values; each convolution layer's last inputs (LFM2, a Mamba-2 mixer), read once; each Mamba-2
    /// layer's scan state, read and written once.
    /// </summary>
    public static double StepBytes(ModelConfig c, int batch, double positions)
    {
        double bytes = 0;
        for (int l = 0; l < c.NumLayers; l++)
        {
            if (c.HasAttention(l)) bytes += 2.0 * c.KvDim * positions;
            if (c.IsConvLayer(l)) bytes += (c.ConvWidth - 1) * c.HiddenSize;
            if (c.IsMambaLayer(l) && c.Mamba is { } m) bytes += (m.ConvWidth - 1) * m.ConvDim + 2.0 * m.Heads * m.HeadDim * m.StateSize;
        }
        return bytes * batch * sizeof(float);
    }

    private static float[] RentCleared(int floats)
    {
        var a = BufferPool.Rent(floats);
        Array.Clear(a, 0, floats);
        return a;
    }

    internal float[][] K => _k ?? throw new ObjectDisposedException(nameof(KvCache));
    internal float[][] V => _v ?? throw new ObjectDisposedException(nameof(KvCache));

    /// <summary>Hands the arrays back to the pool; the cache must not be used afterwards.</summary>
    public void Dispose()
    {
        if (_k == null || _v == null) return;
        foreach (var a in _k) if (a.Length > 0) BufferPool.Return(a);
        foreach (var a in _v) if (a.Length > 0) BufferPool.Return(a);
        foreach (var layers in new[] { _conv, _ssm })
            for (int l = 0; l < layers.Length; l++)
                if (layers[l] is { } a)
                {
                    BufferPool.Return(a);
                    layers[l] = null;
                }
        _k = _v = null;
    }

    /// <summary>Writes T new positions for one layer and returns K and V over all filled positions [B, S, KV, Dh].</summary>
    internal (Tensor K, Tensor V) Append(int layer, Tensor k, Tensor v)
    {
        int t = k.Dim(1), row = KvHeads * HeadDim, s = Length + t;
        if (s > Capacity) throw new InvalidOperationException($"KV cache full: {s} positions > capacity {Capacity}.");
        var ks = k.Span; var vs = v.Span;
        for (int b = 0; b < Batch; b++)
        {
            ks.Slice(b * t * row, t * row).CopyTo(K[layer].AsSpan((b * Capacity + Length) * row, t * row));
            vs.Slice(b * t * row, t * row).CopyTo(V[layer].AsSpan((b * Capacity + Length) * row, t * row));
        }
        if (Batch == 1)
            return (Over(K[layer], 1, s), Over(V[layer], 1, s));
        // Rows of a batch are Capacity apart, so the filled part is no contiguous [B, S] block; rather than copy it
        // every step (as much memory traffic as the attention itself), hand attention the whole cache. Causality
        // already stops every query at slot Length + T − 1, so the empty slots are never read (see KeyMask).
        return (Over(K[layer], Batch, Capacity), Over(V[layer], Batch, Capacity));
    }

    /// <summary>[batch, positions, KV, Dh] over the start of a pooled array (which may be longer), never pooled itself.</summary>
    private Tensor Over(float[] array, int batch, int positions) => new([batch, positions, KvHeads, HeadDim], new Storage(array, pooled: false), 0);

    /// <summary>The key mask over what <see cref="Append"/> returns: [B, S] as given for B = 1, else widened to [B, Capacity].</summary>
    internal bool[]? KeyMask(bool[]? keyMask, int filled)
    {
        if (keyMask == null || Batch == 1) return keyMask;
        if (keyMask.Length != Batch * filled) throw new ArgumentException($"keyMask has {keyMask.Length} entries, B·S = {Batch * filled} expected.");
        var wide = new bool[Batch * Capacity];
        for (int b = 0; b < Batch; b++) keyMask.AsSpan(b * filled, filled).CopyTo(wide.AsSpan(b * Capacity, filled));
        return wide;
    }

    /// <summary>A convolution layer's (LFM2's, or a Mamba-2 mixer's) last K − 1 inputs per row, [B, K − 1, C], oldest first
    /// (zeros before a sequence starts).</summary>
    internal float[] ConvHistory(int layer) => _conv[layer] ?? throw (_k == null ? new ObjectDisposedException(nameof(KvCache)) : new InvalidOperationException($"layer {layer} is no convolution layer"));

    /// <summary>A Mamba-2 layer's scan state [B, H, P, N] (zeros before a sequence starts), which the scan reads and updates.</summary>
    internal float[] SsmState(int layer) => _ssm[layer] ?? throw (_k == null ? new ObjectDisposedException(nameof(KvCache)) : new InvalidOperationException($"layer {layer} is no Mamba-2 layer"));

    /// <summary>After a pass over T new inputs u [B, T, C] of convolution layer <paramref name="layer"/>: the history
    /// becomes the last K − 1 of (history, u).</summary>
    internal void PushConv(int layer, Tensor u)
    {
        var history = ConvHistory(layer);
        int t = u.Dim(1), rows = _convRows[layer], d = _convChannels[layer];
        if (rows == 0) return;
        var us = u.Span;
        for (int b = 0; b < Batch; b++)
        {
            var h = history.AsSpan(b * rows * d, rows * d);
            int keep = Math.Max(0, rows - t);   // old rows that stay, moved to the front
            if (keep > 0) h[((rows - keep) * d)..].CopyTo(h);
            int take = rows - keep;
            us.Slice((b * t + t - take) * d, take * d).CopyTo(h[(keep * d)..]);
        }
    }

    public void Reset()
    {
        Length = 0;
        foreach (var h in _conv) if (h != null) Array.Clear(h);
        foreach (var h in _ssm) if (h != null) Array.Clear(h);
    }
}

/// <summary>
/// One decoder-only transformer for the GPT-2 family (LayerNorm, learned positions, GELU MLP, tied head), the
/// Llama family (RMSNorm, RoPE, SwiGLU, grouped-query attention, optional q/k/v biases, Mistral's sliding
/// window, Qwen3's q/k norms) and Gemma-2/3 ((1 + w) RMSNorm before and after attention and MLP, √D-scaled
/// embeddings, GeGLU, soft caps, per-layer sliding windows and local RoPE), chosen by <see cref="ModelConfig"/>. Shapes: B batch, T new positions, S keys (cache included),
/// D hidden, H query heads, KV key/value heads, Dh head size, V vocabulary.
/// </summary>
public sealed class TransformerModel
{
    public ModelConfig Config { get; }
    private readonly List<(string Name, Tensor Parameter)> _parameters = [];
    private readonly Dictionary<string, Tensor> _byName = [];
    /// <summary>RoPE cos/sin tables per frequency set (global, Gemma-3's local, LongRoPE's long factors), built once per
    /// distinct positions and shared by every layer and call.</summary>
    private readonly RopeTableCache? _rope, _ropeLocal, _ropeLong;

    public TransformerModel(ModelConfig config) : this(config, null) { }

    /// <summary>
    /// A model whose matrices (<see cref="KeptInBf16(string, int)"/>) are frozen bf16 from the start, filled with zeros for
    /// a loader to overwrite: no float32 array is ever allocated for them. (Allocating float32 matrices and then replacing
    /// them left the GC a float32-sized heap to recycle, and recycled memory is cleared, so it became resident: loading a
    /// second frozen model grew the process by the first one's float32 size.)
    /// </summary>
    internal static TransformerModel WithBf16Matrices(ModelConfig config) => new(config, null, bf16Matrices: true);

    /// <summary>
    /// A model with <paramref name="trunk"/>'s body (the same tensors, not a copy) and its own fresh head of kind
    /// <paramref name="head"/>, initialised from <paramref name="seed"/> as a new head is on loading: PPO's value model
    /// on the policy's frozen trunk.
    /// </summary>
    public static TransformerModel SharingTrunk(TransformerModel trunk, HeadKind head, int seed)
    {
        var model = new TransformerModel(trunk.Config with { Head = head }, trunk, bf16Matrices: false);
        foreach (var (name, p) in model._parameters)
            if (!trunk._byName.TryGetValue(name, out var t) || !ReferenceEquals(t, p)) ModelIO.InitialiseNewHead(model, name, p, seed);
        return model;
    }

    private TransformerModel(ModelConfig config, TransformerModel? trunk, bool bf16Matrices = false)
    {
        _trunk = trunk;
        _bf16Matrices = bf16Matrices;
        config.Validate();
        Config = config;
        int d = config.HiddenSize;
        Add("embed.weight", config.VocabSize, config.EmbedDim);
        if (config.Table.EmbeddingNorm) AddNorm("embed_norm", config.EmbedDim);
        if (config.LearnedPositions) Add("pos_embed.weight", config.MaxPositions + config.Table.PositionOffset, d);
        if (config.EmbedDim != d)
        {
            // OPT's opt-350m: embeddings of their own width, projected to the blocks' and back for the head.
            Add("project_in.weight", d, config.EmbedDim);
            Add("project_out.weight", config.EmbedDim, d);
        }
        for (int l = 0; l < config.NumLayers; l++)
        {
            string p = $"layers.{l}.";
            if (config.InputNorms) AddNorm(p + "attn_norm", d);
            if (config.IsConvLayer(l))
            {
                // LFM2's gated short convolution in the attention's place.
                AddLinear(p + "conv.in", 3 * d, d, config.ConvBias);
                Add(p + "conv.kernel.weight", d, 1, config.ConvWidth);
                if (config.ConvBias) Add(p + "conv.kernel.bias", d);
                AddLinear(p + "conv.out", d, d, config.ConvBias);
            }
            if (config.HasAttention(l))
            {
                if (config.QkvLayout != Checkpoints.QkvLayout.Separate)
                    AddLinear(p + "attn.qkv", config.QueryDim + 2 * config.KvDim, d, config.AttentionQkvBias);   // GPT-2, GPT-NeoX, GPTBigCode: one projection, one GEMM
                else
                {
                    AddLinear(p + "attn.q", config.QueryDim, d, config.AttentionQkvBias);
                    AddLinear(p + "attn.k", config.KvDim, d, config.AttentionQkvBias);
                    AddLinear(p + "attn.v", config.KvDim, d, config.AttentionQkvBias);
                }
                AddLinear(p + "attn.o", d, config.QueryDim, config.AttentionOutputBias);
            }
            if (config.QkNorm && config.HasAttention(l))
            {
                AddNorm(p + "attn.q_norm", config.FullWidthQkNorm ? config.QueryDim : config.HeadDim);
                AddNorm(p + "attn.k_norm", config.FullWidthQkNorm ? config.KvDim : config.HeadDim);
            }
            if (config.IsMambaLayer(l))
            {
                // Granite 4.0's mixer in the attention's place; Falcon-H1's beside it.
                var m = config.Mamba!;
                AddLinear(p + "mamba.in", m.InProjRows, d, m.ProjBias);
                Add(p + "mamba.conv.weight", m.ConvDim, 1, m.ConvWidth);
                if (m.ConvBias) Add(p + "mamba.conv.bias", m.ConvDim);
                Add(p + "mamba.dt_bias", m.Heads);
                Add(p + "mamba.a_log", m.Heads);
                Add(p + "mamba.d", m.Heads);
                if (m.NormGroups > 0) Add(p + "mamba.norm.weight", m.Inner);
                AddLinear(p + "mamba.out", d, m.Inner, m.OutBias);
            }
            if (config.SandwichNorms) AddNorm(p + "attn_out_norm", d);
            if (config.InputNorms && !config.Table.ParallelSharedNorm) AddNorm(p + "mlp_norm", d);
            bool dense = !config.Table.ExpertMlp;   // Granite MoE: the experts are the whole MLP
            if (dense && !config.Table.GatedMlp)
            {
                AddLinear(p + "mlp.fc", config.IntermediateSize, d, config.MlpBias);
                AddLinear(p + "mlp.proj", d, config.IntermediateSize, config.MlpBias);
            }
            else if (dense)
            {
                AddLinear(p + "mlp.gate", config.IntermediateSize, d, config.MlpBias);
                AddLinear(p + "mlp.up", config.IntermediateSize, d, config.MlpBias);
                AddLinear(p + "mlp.down", d, config.IntermediateSize, config.MlpBias);
            }
            if (config.Moe is { } moe)
            {
                // Each kind of expert weight in one stack, as checkpoints keep it.
                Add(p + "moe.router.weight", moe.Experts, d);
                Add(p + "moe.input.weight", moe.Experts, 2 * moe.ExpertSize, d);
                Add(p + "moe.output.weight", moe.Experts, d, moe.ExpertSize);
            }
            if (config.SandwichNorms) AddNorm(p + "mlp_out_norm", d);
        }
        if (!config.PostNorm) AddNorm("final_norm", d);
        if (config.Head == HeadKind.Scalar) Add("score.weight", 1, config.EmbedDim);
        else if (!config.TieWordEmbeddings) Add("lm_head.weight", config.VocabSize, config.EmbedDim);
        if (config.HasLmHeadBias) Add("lm_head.bias", config.VocabSize);
        if (config.Table.HasRope) _rope = new RopeTableCache(config.RopeFrequencies(), config.RopeAttentionFactor);
        _alibiSlopes = config.AlibiSlopes;
        if (config is { Falcon: { } f, Mamba: { } mixer })
        {
            var mup = new float[mixer.ConvDim];
            int gn = mixer.Groups * mixer.StateSize;
            for (int i = 0; i < mup.Length; i++) mup[i] = (float)(i < mixer.Inner ? f.SsmX : i < mixer.Inner + gn ? f.SsmB : f.SsmC);
            if (mup.Any(x => x != 1)) _mupXbc = new Tensor([mixer.ConvDim], new Storage(mup, pooled: false), 0);
        }
        if (config.LocalRopeTheta != null) _ropeLocal = new RopeTableCache(config.RopeFrequencies(local: true), 1f); // unscaled, as transformers' local rotary
        if (config.RopeScaling is { IsLongRope: true }) _ropeLong = new RopeTableCache(config.RopeFrequencies(longContext: true), config.RopeAttentionFactor);
    }

    private readonly TransformerModel? _trunk;
    private readonly bool _bf16Matrices;
    /// <summary>BLOOM's ALiBi slopes per head (null elsewhere), formed once.</summary>
    private readonly float[]? _alibiSlopes;

    /// <summary>Falcon-H1's multipliers of the mixer's x, B and C channels [conv], formed once (null where all are 1).</summary>
    private readonly Tensor? _mupXbc;

    /// <summary>A linear layer's weight [out, in] and, where it has one, its bias [out].</summary>
    private void AddLinear(string prefix, int outFeatures, int inFeatures, bool bias)
    {
        Add(prefix + ".weight", outFeatures, inFeatures);
        if (bias) Add(prefix + ".bias", outFeatures);
    }

    /// <summary>A norm's weight [n] and, for LayerNorm, its bias; nothing where the family's norms have no parameters (OLMo 1).</summary>
    private void AddNorm(string prefix, int n)
    {
        if (!Config.Table.NormParameters) return;
        Add(prefix + ".weight", n);
        if (Config.Norm == NormKind.LayerNorm) Add(prefix + ".bias", n);
    }

    private void Add(string name, params int[] shape)
    {
        bool head = name is "score.weight" or "lm_head.weight" or "lm_head.bias";
        var t = !head && _trunk != null && _trunk._byName.TryGetValue(name, out var shared) ? shared
            : _bf16Matrices && KeptInBf16(name, shape.Length) ? Tensor.EmptyBf16(shape, zero: true)
            : Tensor.Parameter(shape, 0f, name);
        t.Name = name;
        _parameters.Add((name, t));
        _byName[name] = t;
    }

    /// <summary>Every parameter with its canonical name, in a fixed order (optimizer state follows it).</summary>
    public IReadOnlyList<(string Name, Tensor Parameter)> NamedParameters => _parameters;

    public IEnumerable<Tensor> Parameters => _parameters.Select(p => p.Parameter);

    public Tensor Parameter(string name) => _byName.TryGetValue(name, out var t) ? t : throw new KeyNotFoundException($"No parameter named '{name}'.");

    public bool HasParameter(string name) => _byName.ContainsKey(name);

    public long ParameterCount => _parameters.Sum(p => (long)p.Parameter.Length);

    /// <summary>Bytes the parameters occupy (4 per float32 value, 2 per bf16 value): what one decoding step reads.</summary>
    public long ParameterBytes => _parameters.Sum(p => (long)p.Parameter.Length * (p.Parameter.IsBf16 ? 2 : 4));

    /// <summary>
    /// Replaces parameter <paramref name="name"/> by a frozen bf16 copy (<paramref name="values"/> when given: a bf16
    /// tensor of the same shape). The model then runs with it (widened inside the kernels) but cannot train it.
    /// </summary>
    public void StoreAsBf16(string name, Tensor? values = null)
    {
        var old = Parameter(name);
        var bf16 = values ?? old.ToBf16();
        if (!bf16.IsBf16 || !bf16.Shape.SequenceEqual(old.Shape))
            throw new ArgumentException($"StoreAsBf16: '{name}' needs a bf16 tensor of shape {string.Join("x", old.Shape.ToArray())}.", nameof(values));
        bf16.Name = name;
        _parameters[_parameters.FindIndex(p => p.Name == name)] = (name, bf16);
        _byName[name] = bf16;
    }

    /// <summary>Stores every matrix (embeddings, projections, LM head) as frozen bf16; norms, biases and a scalar head stay float32.</summary>
    public void StoreMatricesAsBf16()
    {
        foreach (var (name, p) in _parameters.ToArray())
            if (KeptInBf16(name, p) && !p.IsBf16) StoreAsBf16(name);
    }

    /// <summary>
    /// Whether bf16 storage applies to a parameter: matrices (and a mixture of experts' stacks of them) only, and not a
    /// scalar score head, a single row that saves nothing and trains beside a frozen bf16 trunk (a LoRA reward model's
    /// head, PPO's value head).
    /// </summary>
    public static bool KeptInBf16(string name, Tensor p) => KeptInBf16(name, p.Rank);

    /// <summary><see cref="KeptInBf16(string, Tensor)"/> by the parameter's rank.</summary>
    public static bool KeptInBf16(string name, int rank) => rank == 2 && name != "score.weight" || rank == 3 && name.Contains(".moe.", StringComparison.Ordinal);

    /// <summary>
    /// A model with fresh weights: normal(0, 0.02) matrices and embeddings (GPT-2's residual projections
    /// scaled by 1/√(2·layers)), norms that scale by 1 (Gemma stores w − 1, so 0), biases 0. The same seed gives the same weights.
    /// </summary>
    public static TransformerModel CreateRandom(ModelConfig config, int seed, float std = 0.02f)
    {
        var model = new TransformerModel(config);
        var rng = new Random(seed);
        float residualStd = std / MathF.Sqrt(2f * config.NumLayers);
        foreach (var (name, p) in model._parameters)
        {
            var s = p.Span;
            if (name.Contains("norm")) { s.Fill(name.EndsWith(".bias") ? 0f : 1f - config.NormWeightOffset); continue; }
            if (name.EndsWith(".bias")) { s.Clear(); continue; }
            float sd = config.Family == ModelFamily.Gpt2 && (name.EndsWith("attn.o.weight") || name.EndsWith("mlp.proj.weight")) ? residualStd : std;
            for (int i = 0; i < s.Length; i++) s[i] = (float)(rng.NextGaussian() * sd);
        }
        return model;
    }

    /// <summary>
    /// Final hidden states after the last norm (Granite's LM head: divided by logits_scaling, see below). ids: B·T token ids, row-major. positions: B·T absolute
    /// positions (default: cache length + t). keyMask: B·S flags over every key position (cache included),
    /// false for padding. With a cache, the new keys and values are appended to it. segmentStarts (no cache): B·T, the
    /// first token of each token's sequence when several are packed into a row, which then attend only to themselves
    /// (give positions counting from 0 in each). → [B, T, D]
    /// </summary>
    public Tensor Hidden(ReadOnlySpan<int> ids, int batch, int seq, int[]? positions = null, bool[]? keyMask = null, KvCache? cache = null,
        int[]? segmentStarts = null)
    {
        var c = Config;
        if (ids.Length != batch * seq) throw new ArgumentException($"{ids.Length} ids for batch {batch} × length {seq}.");
        foreach (var id in ids)
            if ((uint)id >= (uint)c.VocabSize) throw new ArgumentOutOfRangeException(nameof(ids), $"Token id {id} is outside the vocabulary [0, {c.VocabSize}).");
        int offset = cache?.Length ?? 0;
        positions ??= DefaultPositions(batch, seq, offset);
        c.CheckPositions(positions);

        var x = Ops.Embedding(Parameter("embed.weight"), ids, batch, seq);
        // NEFTune: training passes only (gradients recorded, no cache), on the token embeddings themselves.
        if (EmbeddingNoise is { } noise && cache == null && Autograd.IsEnabled) x = Ops.Add(x, noise.Draw(batch, seq, c.HiddenSize));
        // Gemma: transformers forms the normalizer √D as a tensor of the embedding dtype, float32 here.
        if (c.ScaledEmbedding) x = Ops.MulScalar(x, (float)Math.Sqrt(c.HiddenSize));
        if ((c.EmbeddingMultiplier ?? c.Falcon?.Embedding) is double multiplier && multiplier != 1) x = Ops.MulScalar(x, (float)multiplier);
        if (c.Table.EmbeddingNorm) x = Norm(x, "embed_norm");
        if (c.EmbedDim != c.HiddenSize) x = Linear(x, "project_in");
        if (c.LearnedPositions)
            x = Ops.Add(x, Ops.Embedding(Parameter("pos_embed.weight"), PositionRows(positions), batch, seq));

        var attentionMask = cache != null ? cache.KeyMask(keyMask, offset + seq) : keyMask;
        // LongRoPE picks its factors per call from the largest position, as transformers does.
        var globalRope = _ropeLong != null && positions.Length > 0 && c.UsesLongRopeFactors(positions.Max()) ? _ropeLong : _rope;
        if (segmentStarts != null && cache != null) throw new ArgumentException("Packed sequences (segmentStarts) are for passes without a KV cache.", nameof(segmentStarts));
        var pass = new BlockPass(batch, seq, positions, attentionMask, offset, cache, globalRope?.For(positions), _ropeLocal?.For(positions), segmentStarts);
        // A training pass of a config that asks for the routers' load-balancing loss keeps their logits (RouterAuxLoss).
        (_routerLogits, _routerMask, _routerSeq) = c.Moe?.RouterAuxLossCoef != null && cache == null && Autograd.IsEnabled ? ([], keyMask, seq) : ((List<Tensor>?)null, (bool[]?)null, 0);
        bool checkpoint = GradientCheckpointing && cache == null && Autograd.IsEnabled;
        bool parametersNeedGrad = checkpoint && (_parameters.Any(p => p.Parameter.RequiresGrad)
                                                 || Adapter is { Enabled: true } a && a.NamedParameters.Any(p => p.Parameter.RequiresGrad));
        for (int l = 0; l < c.NumLayers; l++)
        {
            // LoRA dropout draws each block's masks from a stream seeded from the trainer's, so a recomputed block
            // replays exactly the masks of its first run (and both paths draw the same ones).
            int? dropoutSeed = Adapter?.DropoutRng?.Next();
            if (checkpoint) x = CheckpointedBlock(x, l, pass, dropoutSeed, parametersNeedGrad);
            else if (!Autograd.IsEnabled)
            {
                // Without gradients nothing inside a block is needed afterwards (a KV cache copies the block's keys and
                // values into its own arrays): its memory goes back to the pool at once, so a reference or evaluation
                // pass, or a generator's prompt pass, holds one block's activations, not all of them.
                var scope = TensorScope.Begin();
                try { x = TensorScope.Keep(WithBlockDropout(Adapter, dropoutSeed, () => Block(x, l, pass))); }
                finally { scope.Dispose(); }
            }
            else x = WithBlockDropout(Adapter, dropoutSeed, () => Block(x, l, pass));
        }
        if (cache != null) cache.Length = offset + seq;
        var final = c.PostNorm ? x : Norm(x, "final_norm");
        if (c.EmbedDim != c.HiddenSize) final = Linear(final, "project_out");
        // Granite divides the vocabulary logits by logits_scaling: dividing the head's input instead keeps every head
        // path (whole logits, vocabulary tiles, the sampler) the same. A scalar head sees the hidden states as they are.
        if (c.LogitsScaling is double scaling && scaling != 1 && c.Head == HeadKind.LanguageModel) final = Ops.MulScalar(final, (float)(1 / scaling));
        // Falcon-H1 multiplies its logits by lm_head_multiplier: the same move, for the same reason.
        if (c.Falcon is { LmHead: not 1.0 } falcon && c.Head == HeadKind.LanguageModel) final = Ops.MulScalar(final, (float)falcon.LmHead);
        return final;
    }

    /// <summary>
    /// Recompute each block in the backward pass instead of keeping its activations: the forward keeps only the blocks'
    /// inputs [B, T, D] (ignored with a KV cache or without gradients). Gradients equal those of the ordinary path.
    /// </summary>
    public bool GradientCheckpointing { get; set; }

    /// <summary>NEFTune noise for the token embeddings of training passes (null: none); the trainer sets it per micro-batch.</summary>
    public EmbeddingNoise? EmbeddingNoise { get; set; }

    /// <summary>The rows of the learned position table for <paramref name="positions"/>: OPT's start two rows in.</summary>
    private int[] PositionRows(int[] positions)
    {
        int shift = Config.Table.PositionOffset;
        if (shift == 0) return positions;
        var rows = new int[positions.Length];
        for (int i = 0; i < rows.Length; i++) rows[i] = positions[i] + shift;
        return rows;
    }

    /// <summary>offset + t for every batch row, [B·T]: the last list is kept (never written after it is built), so
    /// repeated steps of one shape build none.</summary>
    private int[] DefaultPositions(int batch, int seq, int offset)
    {
        var last = _defaultPositions;
        if (last != null && last.Batch == batch && last.Seq == seq && last.Offset == offset) return last.Values;
        var positions = new int[batch * seq];
        for (int b = 0; b < batch; b++) for (int t = 0; t < seq; t++) positions[b * seq + t] = offset + t;
        _defaultPositions = new PositionList(batch, seq, offset, positions);
        return positions;
    }

    private PositionList? _defaultPositions;
    private sealed record PositionList(int Batch, int Seq, int Offset, int[] Values);

    /// <summary>What every block of one pass shares; <see cref="SegmentStarts"/>: sequences packed into a row (see
    /// <see cref="Ops.CausalAttention"/>), null otherwise.</summary>
    private sealed record BlockPass(int Batch, int Seq, int[] Positions, bool[]? AttentionMask, int Offset, KvCache? Cache, RopeTable? GlobalRope, RopeTable? LocalRope,
        int[]? SegmentStarts)
    {
        /// <summary>[B·T]: 0 for this pass's padding tokens, 1 for the others; empty when no token is padding. Formed once
        /// per pass, for LFM2's convolution layers.</summary>
        public float[] PaddingKeep => _paddingKeep ??= FindPadding() ?? [];
        private float[]? _paddingKeep;

        private float[]? FindPadding()
        {
            if (AttentionMask is not { } mask) return null;
            int keys = mask.Length / Batch;   // a cache widens the mask to its capacity
            var keep = new float[Batch * Seq];
            bool any = false;
            for (int b = 0; b < Batch; b++)
                for (int t = 0; t < Seq; t++)
                {
                    bool real = mask[b * keys + Offset + t];
                    keep[b * Seq + t] = real ? 1f : 0f;
                    any |= !real;
                }
            return any ? keep : null;
        }
    }

    private Tensor CheckpointedBlock(Tensor x, int l, BlockPass pass, int? dropoutSeed, bool parametersNeedGrad)
    {
        // The backward pass may run after the trainer switched or swapped the adapter (a reference pass): the
        // recomputation uses the adapter state of this forward.
        var adapter = Adapter;
        bool enabled = adapter?.Enabled ?? false;
        // The routers' logits leave the segment as outputs of their own, so that their loss's gradient reaches the
        // recomputed routers.
        var routerLogits = _routerLogits;
        var outputs = Autograd.Checkpoint([x], inputs =>
        {
            var (before, beforeEnabled, outerLogits) = (Adapter, adapter?.Enabled ?? false, _routerLogits);
            Adapter = adapter;
            if (adapter != null) adapter.Enabled = enabled;
            _routerLogits = routerLogits == null ? null : [];
            try { return [WithBlockDropout(adapter, dropoutSeed, () => Block(inputs[0], l, pass)), .. _routerLogits ?? []]; }
            finally
            {
                if (adapter != null) adapter.Enabled = beforeEnabled;
                Adapter = before;
                _routerLogits = outerLogits;
            }
        }, parametersNeedGrad);
        routerLogits?.AddRange(outputs[1..]);
        return outputs[0];
    }

    private static Tensor WithBlockDropout(Lora.LoraAdapter? adapter, int? seed, Func<Tensor> block)
    {
        if (adapter == null) return block();
        var stream = adapter.DropoutRng;
        adapter.DropoutRng = seed is int s ? new Random(s) : null;
        try { return block(); }
        finally { adapter.DropoutRng = stream; }
    }

    /// <summary>Decoder block <paramref name="l"/>: x [B, T, D] → [B, T, D] (attention and MLP, each with its residual).</summary>
    private Tensor Block(Tensor x, int l, BlockPass pass)
    {
        var c = Config;
        int batch = pass.Batch, seq = pass.Seq;
        string p = $"layers.{l}.";
        var h = c.InputNorms && !c.PostNorm ? Norm(x, p + "attn_norm") : x;
        if (c.IsConvLayer(l)) return BlockTail(x, h, ShortConv(h, l, pass), p, batch, seq, p + "conv.out");
        if (c.Falcon != null) return FalconBlock(x, h, l, pass);
        if (c.IsMambaLayer(l)) return BlockTail(x, h, Mamba(h, l, pass), p, batch, seq, p + "mamba.out");
        if (c.QkvLayout == Checkpoints.QkvLayout.Concatenated && !c.QkNorm && pass.GlobalRope == null && pass.Cache == null)
        {
            // Attention reads q, k and v in place from the fused projection (no slice copies there and back).
            var qkv = Ops.Reshape(Linear(h, p + "attn.qkv"), batch, seq, c.QueryDim + 2 * c.KvDim);
            var packed = Ops.CausalAttentionPacked(qkv, c.NumHeads, c.NumKvHeads, pass.Offset, pass.AttentionMask, c.AttentionScale, c.WindowOf(l),
                (float?)c.AttnLogitSoftcap, pass.SegmentStarts, _alibiSlopes);
            return BlockTail(x, h, packed, p, batch, seq);
        }
        return BlockTail(x, h, Attention(h, l, pass), p, batch, seq);
    }

    /// <summary>
    /// Falcon-H1's block: attention on h · attention_in_multiplier (its keys times key_multiplier) and the Mamba-2 mixer
    /// (which scales its own input and in_proj's parts) side by side, their outputs times attention_out_multiplier and
    /// ssm_out_multiplier added to the residual; then the MLP, down(up(m) ⊙ SiLU(gate(m) · gate multiplier)) · down
    /// multiplier, on its own norm.
    /// </summary>
    private Tensor FalconBlock(Tensor x, Tensor h, int l, BlockPass pass)
    {
        var c = Config;
        var f = c.Falcon!;
        string p = $"layers.{l}.";
        var mixer = Scaled(Linear(Mamba(h, l, pass), p + "mamba.out"), f.SsmOut);
        var attention = Scaled(Linear(Ops.Reshape(Attention(Scaled(h, f.AttentionIn), l, pass), pass.Batch, pass.Seq, c.QueryDim), p + "attn.o"), f.AttentionOut);
        x = Ops.Add(x, Ops.Add(mixer, attention));
        var m = Norm(x, p + "mlp_norm");
        var hidden = Ops.Mul(Linear(m, p + "mlp.up"), Ops.Silu(Scaled(Linear(m, p + "mlp.gate"), f.MlpGate)));
        return Ops.Add(x, Scaled(Linear(hidden, p + "mlp.down"), f.MlpDown));
    }

    /// <summary>x · multiplier, x itself for 1.</summary>
    private static Tensor Scaled(Tensor x, double multiplier) => multiplier == 1 ? x : Ops.MulScalar(x, (float)multiplier);

    /// <summary>Self-attention of layer <paramref name="l"/> on its normed input h [B, T, D]: q, k, v by the family's
    /// layout, their norms and rotation, the cache → [B, T, Hq, Dh] (before the output projection).</summary>
    private Tensor Attention(Tensor h, int l, BlockPass pass)
    {
        var c = Config;
        int batch = pass.Batch, seq = pass.Seq;
        string p = $"layers.{l}.";
        int? window = c.WindowOf(l);
        Tensor q, k, v;
        var qkvLayout = c.QkvLayout;
        if (qkvLayout == Checkpoints.QkvLayout.Concatenated)
        {
            var qkv = Linear(h, p + "attn.qkv");
            q = Ops.Slice(qkv, -1, 0, c.QueryDim);
            k = Ops.Slice(qkv, -1, c.QueryDim, c.KvDim);
            v = Ops.Slice(qkv, -1, c.QueryDim + c.KvDim, c.KvDim);
        }
        else if (qkvLayout == Checkpoints.QkvLayout.PerHead)
        {
            // GPT-NeoX: each head's rows are its q, k and v in turn, so the heads split first.
            var qkv = Ops.Reshape(Linear(h, p + "attn.qkv"), batch, seq, c.NumHeads, 3 * c.HeadDim);
            q = Ops.Slice(qkv, -1, 0, c.HeadDim);
            k = Ops.Slice(qkv, -1, c.HeadDim, c.HeadDim);
            v = Ops.Slice(qkv, -1, 2 * c.HeadDim, c.HeadDim);
        }
        else
        {
            var qkv = SharedLinear(h, p + "attn.q", p + "attn.k", p + "attn.v");
            (q, k, v) = (qkv[0], qkv[1], qkv[2]);
        }
        if (c.Falcon != null) k = Scaled(k, c.Falcon.Key);
        if (c.FullWidthQkNorm)
        {
            // OLMo-2: over the whole projection, before it is split into heads and rotated.
            q = Norm(q, p + "attn.q_norm");
            k = Norm(k, p + "attn.k_norm");
        }
        q = Ops.Reshape(q, batch, seq, c.NumHeads, c.HeadDim);
        k = Ops.Reshape(k, batch, seq, c.NumKvHeads, c.HeadDim);
        v = Ops.Reshape(v, batch, seq, c.NumKvHeads, c.HeadDim);
        bool normAfterRope = c.Table.QkNormAfterRope;
        if (c.QkNorm && !c.FullWidthQkNorm && !normAfterRope)
        {
            // Per head, over head_dim, before RoPE (Qwen3, Gemma-3).
            q = Norm(q, p + "attn.q_norm");
            k = Norm(k, p + "attn.k_norm");
        }
        if (pass.GlobalRope != null && c.UsesRope(l))
        {
            var table = window != null && pass.LocalRope != null ? pass.LocalRope : pass.GlobalRope;
            q = Ops.Rope(q, table, c.RotaryDim, c.Table.InterleavedRope);
            k = Ops.Rope(k, table, c.RotaryDim, c.Table.InterleavedRope);
        }
        if (c.QkNorm && normAfterRope)
        {
            // Hunyuan: per head, after RoPE.
            q = Norm(q, p + "attn.q_norm");
            k = Norm(k, p + "attn.k_norm");
        }
        // The cache keeps every key; the window is only a mask over cache slots, so a cached step sees
        // exactly the keys the full recompute would.
        if (pass.Cache != null) (k, v) = pass.Cache.Append(l, k, v);
        return Ops.CausalAttention(q, k, v, pass.Offset, pass.AttentionMask, c.AttentionScale, window, (float?)c.AttnLogitSoftcap, pass.SegmentStarts,
            _alibiSlopes);
    }

    /// <summary>
    /// LFM2's gated short convolution on the normed input h [B, T, D]: in_proj to B, C and x (D columns each), then
    /// C ⊙ conv(B ⊙ x), each channel mixing its last K values of B ⊙ x (<see cref="Ops.CausalConv"/>). Padding tokens'
    /// B ⊙ x is zeroed (not only their h: with conv_bias in_proj's bias would make it bias ⊙ bias), so a left-padded row
    /// convolves as if it started at its first token: what transformers' apply_mask_to_padding_states is there for, though
    /// its LFM2 passes it the 4-D causal mask, which it leaves unapplied (there a left-padded row's first K − 1 tokens see
    /// the padding's values).
    /// With a cache the convolution continues from the cached last inputs, which it then updates.
    /// </summary>
    private Tensor ShortConv(Tensor h, int l, BlockPass pass)
    {
        var c = Config;
        int d = c.HiddenSize;
        string p = $"layers.{l}.";
        var keep = pass.PaddingKeep is { Length: > 0 } flags ? Tensor.FromArray(flags, pass.Batch, pass.Seq, 1) : null;
        var bcx = Linear(h, p + "conv.in");
        var u = Ops.Mul(Ops.Slice(bcx, -1, 0, d), Ops.Slice(bcx, -1, 2 * d, d));
        if (keep != null) u = Ops.Mul(u, keep);
        float[]? history = null;
        if (pass.Cache != null)
        {
            history = pass.Cache.ConvHistory(l);
            // A recorded pass reads the history again in its backward, after the cache has moved on.
            if (Autograd.IsEnabled) history = (float[])history.Clone();
        }
        var conv = Ops.CausalConv(u, Parameter(p + "conv.kernel.weight"), c.ConvBias ? Parameter(p + "conv.kernel.bias") : null, history, pass.SegmentStarts);
        pass.Cache?.PushConv(l, u);
        return Ops.Mul(Ops.Slice(bcx, -1, d, d), conv);
    }

    /// <summary>
    /// A Mamba-2 mixer (Granite 4.0, as transformers' BambaMixer) on the normed input h [B, T, D]: in_proj to the gate z [I],
    /// xBC [I + 2·G·N] and the time steps [H]; xBC through the depthwise convolution and SiLU, split into x, B and C; the
    /// selective scan (<see cref="Ops.SelectiveScan"/>); then RMSNorm(y ⊙ SiLU(z)) over all I channels → [B, T, I] (out_proj
    /// is the caller's). Padding tokens are zeroed before in_proj, before the convolution and after it, so a left-padded
    /// row gives its unpadded result (transformers zeroes h and the convolution's output; the same unless in_proj has a
    /// bias, mamba_proj_bias, which the released models do not). Packed sequences neither convolve nor scan across their
    /// starts. With a cache both continue from the cached inputs and state, which they then update.
    /// </summary>
    private Tensor Mamba(Tensor h, int l, BlockPass pass)
    {
        var m = Config.Mamba!;
        var falcon = Config.Falcon;
        string p = $"layers.{l}.mamba.";
        int inner = m.Inner, gn = m.Groups * m.StateSize;
        var keep = pass.PaddingKeep is { Length: > 0 } flags ? Tensor.FromArray(flags, pass.Batch, pass.Seq, 1) : null;
        if (keep != null) h = Ops.Mul(h, keep);
        if (falcon != null) h = Scaled(h, falcon.SsmIn);
        var projected = Linear(h, p + "in");
        var xbc = Ops.Slice(projected, -1, inner, m.ConvDim);
        // Falcon-H1's µP vector: in_proj's parts (z, x, B, C, dt) each times its multiplier.
        if (falcon != null && _mupXbc != null) xbc = Ops.Mul(xbc, _mupXbc);
        if (keep != null && m.ProjBias) xbc = Ops.Mul(xbc, keep);
        float[]? history = null, state = null;
        if (pass.Cache != null)
        {
            history = pass.Cache.ConvHistory(l);
            state = pass.Cache.SsmState(l);
            // A recorded pass reads the history again in its backward, after the cache has moved on (the scan keeps its own
            // copy of the state it started from).
            if (Autograd.IsEnabled) history = (float[])history.Clone();
        }
        var conv = Ops.Silu(Ops.CausalConv(xbc, Parameter(p + "conv.weight"), m.ConvBias ? Parameter(p + "conv.bias") : null, history, pass.SegmentStarts));
        pass.Cache?.PushConv(l, xbc);
        if (keep != null) conv = Ops.Mul(conv, keep);
        var dt = Ops.Slice(projected, -1, inner + m.ConvDim, m.Heads);
        var z = Ops.Slice(projected, -1, 0, inner);
        if (falcon != null)
        {
            dt = Scaled(dt, falcon.SsmDt);
            z = Scaled(z, falcon.SsmZ);
        }
        var y = Ops.SelectiveScan(Ops.Slice(conv, -1, 0, inner), dt, Parameter(p + "a_log"), Parameter(p + "dt_bias"), Ops.Slice(conv, -1, inner, gn),
            Ops.Slice(conv, -1, inner + gn, gn), Parameter(p + "d"), m.Groups, state, pass.SegmentStarts);
        if (m.NormGroups == 0) return Ops.Mul(y, Ops.Silu(z));   // Falcon-H1 without mamba_rms_norm
        if (m.NormBeforeGate) return Ops.Mul(GroupRmsNorm(y, p + "norm.weight", m.NormGroups), Ops.Silu(z));
        return GroupRmsNorm(Ops.Mul(y, Ops.Silu(z)), p + "norm.weight", m.NormGroups);
    }

    /// <summary>RMSNorm over each of <paramref name="groups"/> equal parts of the last axis separately, then the weight
    /// (over all channels).</summary>
    private Tensor GroupRmsNorm(Tensor v, string weight, int groups)
    {
        var w = Parameter(weight);
        if (groups == 1) return Ops.RmsNorm(v, w, (float)Config.NormEps);
        int width = v.Dim(-1) / groups;
        var shape = v.Shape.ToArray();
        var normed = Ops.RmsNorm(Ops.Reshape(v, [.. shape[..^1], groups, width]), Ones(width), (float)Config.NormEps);
        return Ops.Mul(Ops.Reshape(normed, shape), w);
    }


    // The attention output projection, the residuals and the MLP of a block, given its input x, the attention's input h
    // (x normed) and output a [B, T, Hq, D] (or LFM2's convolution's [B, T, D], projected by conv.out). In generation, where
    // no norm comes between a projection and its residual, the residual goes into the projection's product (AddLinear,
    // GatedMlp's residual): the same values, without an add of its own.
    private Tensor BlockTail(Tensor x, Tensor h, Tensor a, string p, int batch, int seq, string? output = null)
    {
        var c = Config;
        string outName = output ?? p + "attn.o";
        var attnIn = output == null ? Ops.Reshape(a, batch, seq, c.QueryDim) : a;
        if (c.ParallelBlock)
        {
            // GPT-NeoX and Phi: the MLP reads the block's input (its own norm of it, or Phi's one norm h), not the
            // attention's sum; both are added to x as transformers adds them (mlp + attention = attention + mlp, bit for bit).
            var attention = Linear(attnIn, outName);
            var mlp = Mlp(c.Table.ParallelSharedNorm ? h : Norm(x, p + "mlp_norm"), p);
            return Ops.Add(Ops.Add(mlp, attention), x);
        }
        if (c.PostNorm)
        {
            // OPT's opt-350m: each norm follows its residual add.
            x = Norm(Ops.Add(x, Linear(attnIn, outName)), p + "attn_norm");
            return Norm(Ops.Add(x, Mlp(x, p)), p + "mlp_norm");
        }
        // Granite scales each output before its residual add, so its residuals stay outside the products.
        float residualScale = (float)(c.ResidualMultiplier ?? 1.0);
        bool intoProducts = Ops.RoundsActivations && !c.SandwichNorms && residualScale == 1 && c.Moe == null;
        if (intoProducts) x = AddLinear(x, attnIn, outName);
        else
        {
            var attnOut = Linear(attnIn, outName);
            if (c.SandwichNorms) attnOut = Norm(attnOut, p + "attn_out_norm");
            if (residualScale != 1) attnOut = Ops.MulScalar(attnOut, residualScale);
            x = Ops.Add(x, attnOut);
        }

        var m = c.InputNorms ? Norm(x, p + "mlp_norm") : x;
        if (intoProducts)
            return c.Table.GatedMlp ? GatedMlp(m, p, x) : AddLinear(x, Activate(Linear(m, p + "mlp.fc")), p + "mlp.proj");
        var mlpOut = Mlp(m, p);
        if (c.SandwichNorms) mlpOut = Norm(mlpOut, p + "mlp_out_norm");
        if (residualScale != 1) mlpOut = Ops.MulScalar(mlpOut, residualScale);
        return Ops.Add(x, mlpOut);
    }

    /// <summary>The block's MLP on its normed input m: gated, or fc → activation → proj (GPT-2, GPT-NeoX, Phi, OPT), or a
    /// mixture of experts (Granite 3.x MoE), or both added (Granite 4.0 with experts).</summary>
    private Tensor Mlp(Tensor m, string p) => Config.Moe == null ? DenseMlp(m, p)
        : Config.Table.ExpertMlp ? Experts(m, p) : Ops.Add(Experts(m, p), DenseMlp(m, p));   // Granite 4.0: experts + shared MLP

    private Tensor DenseMlp(Tensor m, string p) => Config.Table.GatedMlp ? GatedMlp(m, p) : Linear(Activate(Linear(m, p + "mlp.fc")), p + "mlp.proj");

    /// <summary>
    /// The sparse mixture of experts on m [B, T, D]: router logits m·Wᵣᵀ [N, E]; for each token the TopK largest, its
    /// gates the softmax over those; each expert runs its gated MLP (input_linear's gate rows, then up; output_linear) on
    /// the tokens that chose it, and each token sums its experts' outputs times their gates. Gradients reach the router
    /// through the gates (the choice itself has none) and each expert's weights through the tokens it ran.
    /// </summary>
    private Tensor Experts(Tensor m, string p)
    {
        var moe = Config.Moe!;
        int d = Config.HiddenSize, n = ShapeUtil.Rows(m.Shape), k = moe.TopK, width = moe.ExpertSize;
        var x = Ops.Reshape(m, n, d);
        var logits = Linear(x, p + "moe.router");   // a linear layer: LoRA may adapt it, as PEFT's all-linear does
        _routerLogits?.Add(logits);
        var chosen = ExpertRouting.TopK(logits.Span, n, moe.Experts, k);
        var gates = Ops.Softmax(Ops.Gather(logits, chosen, k));   // [N, k]
        var (order, starts, position) = ExpertRouting.ByExpert(chosen, moe.Experts);
        var input = Parameter(p + "moe.input.weight");
        var output = Parameter(p + "moe.output.weight");
        var (xs, gateRows, upRows, downs) = (new List<Tensor>(), new List<Ops.LinearLayer>(), new List<Ops.LinearLayer>(), new List<Ops.LinearLayer>());
        for (int e = 0; e < moe.Experts; e++)
        {
            int count = starts[e + 1] - starts[e];
            if (count == 0) continue;
            var tokens = new int[count];
            for (int i = 0; i < count; i++) tokens[i] = order[starts[e] + i] / k;
            xs.Add(Ops.IndexSelect(x, tokens));
            gateRows.Add(new(Ops.StackRows(input, e, 0, width)));
            upRows.Add(new(Ops.StackRows(input, e, width, width)));
            downs.Add(new(Ops.StackRows(output, e, 0, d)));
        }
        var outputs = Ops.GatedMlps([.. xs], [.. gateRows], [.. upRows], [.. downs], ActivationKind);
        // Back from expert order to (token, choice) order, then each token's gates times its k outputs.
        var byToken = Ops.IndexSelect(outputs.Length == 1 ? outputs[0] : Ops.Concat(outputs, 0), position);
        var mixed = Ops.MatMul(Ops.Reshape(gates, n, 1, k), Ops.Reshape(byToken, n, k, d));
        return Ops.Reshape(mixed, m.ShapeArray);
    }

    /// <summary>The routers' logits [B·T, E] of each mixture-of-experts layer of the last training pass, and that pass's key
    /// mask; null where the config asks for no load-balancing loss (or the pass was not a training one).</summary>
    private List<Tensor>? _routerLogits;
    private bool[]? _routerMask;
    private int _routerSeq;

    /// <summary>
    /// The routers' load-balancing loss of the last training pass (transformers' load_balancing_loss_func, which
    /// GraniteMoeForCausalLM adds with output_router_logits), null when the config does not ask for it or no training pass
    /// ran. Over every layer's tokens together, padding left out (the pass's key mask): with p_t the softmax of token t's
    /// router logits, M the tokens and c_e the (token, choice) slots that chose expert e, E · Σ_e (c_e / M) · (Σ_t p_t,e / M).
    /// The choices carry no gradient; the probabilities do. Trainers add it times <see cref="MoeShape.RouterAuxLossCoef"/>.
    /// <paramref name="firstRows"/>: only the pass's first rows count (KTO's completions, not the KL rows beside them).
    /// </summary>
    public Tensor? RouterAuxLoss(int? firstRows = null)
    {
        if (_routerLogits is not { Count: > 0 } layers) return null;
        var moe = Config.Moe!;
        int experts = moe.Experts, n = layers[0].Dim(0);
        var weights = new float[layers.Count * n];
        var counts = new float[experts];
        double tokens = 0;
        for (int l = 0; l < layers.Count; l++)
        {
            var chosen = ExpertRouting.TopK(layers[l].Span, n, experts, moe.TopK);
            for (int t = 0; t < n; t++)
            {
                if (_routerMask is { } mask && !mask[t] || t / _routerSeq >= firstRows) continue;
                weights[l * n + t] = 1;
                tokens++;
                for (int j = 0; j < moe.TopK; j++) counts[chosen[t * moe.TopK + j]]++;
            }
        }
        if (tokens == 0) return Ops.MulScalar(Ops.Sum(layers[0]), 0f);
        var probs = Ops.Softmax(layers.Count == 1 ? layers[0] : Ops.Concat(layers, 0));   // [L·N, E]
        var perToken = Ops.Reshape(Ops.MatMul(probs, Tensor.FromArray(counts, experts, 1)), weights.Length);
        return Ops.MulScalar(Ops.Sum(Ops.Mul(perToken, Tensor.FromArray(weights, weights.Length))), (float)(experts / (tokens * tokens)));
    }

    /// <summary>Vocabulary logits [B, T, V] (LM head) or one score per position [B, T] (scalar head).</summary>
    public Tensor Forward(ReadOnlySpan<int> ids, int batch, int seq, int[]? positions = null, bool[]? keyMask = null, KvCache? cache = null)
        => Head(Hidden(ids, batch, seq, positions, keyMask, cache));

    /// <summary>The head on top of final hidden states [..., D].</summary>
    public Tensor Head(Tensor hidden)
    {
        if (Config.Head == HeadKind.Scalar)
            return Ops.Reshape(Ops.Linear(hidden, Parameter("score.weight")), hidden.Shape[..^1].ToArray());
        var logits = Ops.Linear(hidden, HeadWeight, HeadBias);
        return Config.FinalLogitSoftcap is double cap ? Ops.SoftCap(logits, (float)cap) : logits;
    }

    /// <summary>The LM head's bias [V] (Phi-1/1.5/2), or null: the tiled scorers and the fused sampler serve heads without one.</summary>
    public Tensor? HeadBias => Config.HasLmHeadBias ? Parameter("lm_head.bias") : null;

    /// <summary>The head's matrix: score.weight [1, D], or the vocabulary projection [V, D] (the embedding when tied).</summary>
    public Tensor HeadWeight => Parameter(Config.Head == HeadKind.Scalar ? "score.weight" : Config.TieWordEmbeddings ? "embed.weight" : "lm_head.weight");

    private Tensor Activate(Tensor x) => Config.Activation == HiddenActivation.Relu ? Ops.Relu(x) : Ops.Activate(x, ActivationKind);

    private Ops.GateActivation ActivationKind => Config.Activation switch
    {
        HiddenActivation.Silu => Ops.GateActivation.Silu,
        HiddenActivation.GeluTanh => Ops.GateActivation.GeluTanh,
        HiddenActivation.Gelu => Ops.GateActivation.GeluErf,
        _ => throw new InvalidOperationException($"{Config.Activation} is not a gate activation (no gated family takes it)"),
    };

    /// <summary>The LoRA adapter the linear layers of the blocks add in (null: none).</summary>
    public Lora.LoraAdapter? Adapter { get; set; }

    private Tensor Linear(Tensor x, string prefix)
    {
        if (Dora(prefix))
        {
            var (dw, dbias) = Layer(prefix);
            return Adapter!.DoraLinear(prefix, x, dw, dbias)!;
        }
        if (Ops.RoundsActivations && Adapted(prefix)) return Ops.Linear(x, WithLowRank(prefix, x));
        var (w, bias) = Layer(prefix);
        return Adapter?.LowRank(prefix, x) is { } lr ? Ops.LinearLowRank(x, w, bias, lr.U, lr.B) : Ops.Linear(x, w, bias);
    }

    /// <summary>residual + Linear(x, prefix), the add inside the product where it fuses (<see cref="Ops.AddLinear"/>);
    /// generation only (the adapter's terms as <see cref="Linear"/> hands them over there).</summary>
    private Tensor AddLinear(Tensor residual, Tensor x, string prefix)
    {
        if (Dora(prefix)) return Ops.Add(residual, Linear(x, prefix));
        var (w, bias) = Layer(prefix);
        return Ops.AddLinear(residual, x, Adapted(prefix) ? WithLowRank(prefix, x) : new Ops.LinearLayer(w, bias));
    }

    /// <summary>The gated MLP on m; with <paramref name="residual"/> (generation only), residual + that.</summary>
    private Tensor GatedMlp(Tensor m, string p, Tensor? residual = null)
    {
        string gate = p + "mlp.gate", up = p + "mlp.up", down = p + "mlp.down";
        if (!Adapted(gate, up, down)) return Ops.GatedMlp(m, Layer(gate), Layer(up), Layer(down), ActivationKind, residual);
        if (Dora(gate, up, down))
        {
            // DoRA layers one by one (their row scales keep them out of the fused products).
            var mlp = Linear(Ops.Mul(Activate(Linear(m, gate)), Linear(m, up)), down);
            return residual == null ? mlp : Ops.Add(residual, mlp);
        }
        // Generation: the terms inside the fused products, the down projection's u made from the hidden activations.
        if (Ops.RoundsActivations && (!Adapted(down) || Adapter!.Factors(down) != null))
            return Ops.GatedMlp(m, WithLowRank(gate, m), WithLowRank(up, m), WithLowRank(down, null), ActivationKind, residual);
        Tensor hidden;
        if (Adapted(gate, up) && !Ops.RoundsActivations)
        {
            var gateUp = SharedLinear(m, gate, up);
            hidden = Ops.Mul(Activate(gateUp[0]), gateUp[1]);
        }
        else hidden = Ops.GatedLinear(m, WithLowRank(gate, m), WithLowRank(up, m), ActivationKind);
        return residual == null ? Linear(hidden, down) : AddLinear(residual, hidden, down);
    }

    /// <summary>Linear layers that read the same x (q, k, v; gate, up), made together by <see cref="Ops.LinearShared"/>.
    /// Where LoRA adapts one of them they run one by one (drawing their dropout masks in this order), except in
    /// generation, where the low-rank terms go into the shared products.</summary>
    private Tensor[] SharedLinear(Tensor x, params string[] prefixes)
    {
        if (!Adapted(prefixes)) return Ops.LinearShared(x, [.. prefixes.Select(Layer)]);
        if (!Ops.RoundsActivations || Dora(prefixes)) return [.. prefixes.Select(prefix => Linear(x, prefix))];
        return Ops.LinearShared(x, [.. prefixes.Select(prefix => WithLowRank(prefix, x))]);
    }

    /// <summary>
    /// A linear layer's tensors with the adapter's low-rank term, where it adapts the layer: its factors, so that the op
    /// makes u from its own input (decoding makes it on the calling thread), or, where dropout applies, u on
    /// <paramref name="x"/> as <see cref="Lora.LoraAdapter.LowRank"/> makes it.
    /// </summary>
    private Ops.LinearLayer WithLowRank(string prefix, Tensor? x)
    {
        var (w, bias) = Layer(prefix);
        if (Adapter?.Factors(prefix) is { } f) return new Ops.LinearLayer(w, bias, B: f.B, A: f.A, Scale: f.Scale);
        return x != null && Adapter?.LowRank(prefix, x) is { } lr ? new Ops.LinearLayer(w, bias, lr.U, lr.B) : new Ops.LinearLayer(w, bias);
    }

    /// <summary>A linear layer's weight and bias (null when it has none).</summary>
    private (Tensor W, Tensor? Bias) Layer(string prefix) => (Parameter(prefix + ".weight"), _byName.GetValueOrDefault(prefix + ".bias"));

    /// <summary>Whether an enabled LoRA adapter adapts any of these layers (they then run one by one, with it).</summary>
    private bool Adapted(params string[] prefixes) => Adapter is { Enabled: true } adapter && prefixes.Any(adapter.Adapts);

    /// <summary>Whether an enabled adapter has a DoRA module on any of these layers.</summary>
    private bool Dora(params string[] prefixes) => Adapter is { Enabled: true } adapter && prefixes.Any(adapter.IsDora);

    private Tensor Norm(Tensor x, string prefix)
        => !Config.Table.NormParameters ? Ops.LayerNorm(x, Ones(Config.HiddenSize), null, (float)Config.NormEps)
            : Config.Norm == NormKind.LayerNorm
            ? Ops.LayerNorm(x, Parameter(prefix + ".weight"), Parameter(prefix + ".bias"), (float)Config.NormEps)
            : Ops.RmsNorm(x, Parameter(prefix + ".weight"), (float)Config.NormEps, Config.NormWeightOffset);

    /// <summary>Ones [n], not a parameter: the scale of a norm without weights (OLMo 1's LayerNorm, each group of
    /// Falcon-H1's gated norm, whose weight follows over all channels). Its own array, never pooled (a pass's TensorScope
    /// would hand a pooled one back), kept for the next call of the same width (a model needs one).</summary>
    private Tensor Ones(int n) => _ones is { } ones && ones.Length == n ? ones
        : _ones = new Tensor([n], new Storage(Enumerable.Repeat(1f, n).ToArray(), pooled: false), 0);
    private Tensor? _ones;
}
