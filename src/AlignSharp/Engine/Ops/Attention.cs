using AlignSharp.Engine.Kernels;

namespace AlignSharp.Engine;

// Causal scaled-dot-product attention with grouped-query heads, a KV-cache offset and an optional sliding window: the
// recording and the checks; the loops are in AttentionKernels. Legend: B batch, T queries, S keys, Hq query heads,
// Hkv key/value heads, G = Hq/Hkv, D head size, W window, S' = min(S, positionOffset + T) keys that any query can see.
public static partial class Ops
{
    /// <summary>
    /// softmax(scale·Q·Kᵀ + causal/key mask)·V per head.
    /// q [B, T, Hq, D], k and v [B, S, Hkv, D] with Hq % Hkv == 0 (query head h reads kv head h / G)
    /// → [B, T, Hq, D]. Query t sits at absolute position p = positionOffset + t and may attend key s iff
    /// s ≤ p, p − window &lt; s when a window is given (a query sees at most window keys, itself included), and
    /// (keyMask == null || keyMask[b·S + s]). The window counts keys by their index in k (a cache slot), not by token
    /// position, as Hugging Face's sliding-window mask does: a masked slot inside the window still uses it up. A
    /// query with no allowed key outputs zeros and receives a zero gradient. scale defaults to 1/√D. With
    /// <paramref name="segmentStarts"/> (packed sequences, no cache), query t of row b also sees no key before
    /// segmentStarts[b·T + t].
    /// softCap c (Gemma-2's attn_logit_softcapping): the scaled scores z become c·tanh(z / c) before the mask and
    /// the softmax. alibiSlopes [Hq] (BLOOM's ALiBi): query head h adds m_h·(s − p) to the scaled score of key s, a
    /// constant the gradient passes by (keys counted by slot, as the window is; not with a soft cap).
    /// Saves: the probabilities [B, Hq, T, S'] (only when a gradient is needed).
    /// Backward, per (b, kv head), over the G query heads that share it:
    /// dV += Pᵀ·dO, dP = dO·Vᵀ, dS = scale·P ⊙ (dP − rowsum(P ⊙ dP)), dQ += dS·K, dK += dSᵀ·Q; with a soft cap
    /// dS is further multiplied by 1 − tanh²(z / c), z recomputed from Q·Kᵀ (one more GEMM per block).
    /// </summary>
    public static Tensor CausalAttention(Tensor q, Tensor k, Tensor v, int positionOffset = 0, bool[]? keyMask = null, float? scale = null,
        int? window = null, float? softCap = null, int[]? segmentStarts = null, float[]? alibiSlopes = null)
    {
        if (q.Rank != 4 || k.Rank != 4 || v.Rank != 4)
            throw new ArgumentException($"CausalAttention needs q [B, T, Hq, D], k and v [B, S, Hkv, D]; got q {ShapeUtil.Format(q.Shape)}, k {ShapeUtil.Format(k.Shape)}, v {ShapeUtil.Format(v.Shape)}.");
        int bsz = q.Dim(0), t = q.Dim(1), hq = q.Dim(2), d = q.Dim(3);
        int s = k.Dim(1), hkv = k.Dim(2);
        if (k.Dim(0) != bsz || k.Dim(3) != d || !ShapeUtil.SameShape(k.Shape, v.Shape))
            throw new ArgumentException($"CausalAttention: k {ShapeUtil.Format(k.Shape)} and v {ShapeUtil.Format(v.Shape)} must both be [B={bsz}, S, Hkv, D={d}].");
        if (hkv == 0 || hq % hkv != 0)
            throw new ArgumentException($"CausalAttention: {hq} query heads are not a multiple of {hkv} key/value heads.");
        CheckAttentionOptions(bsz, s, positionOffset, keyMask, window, softCap, hq, alibiSlopes);
        CheckSegmentStarts(segmentStarts, bsz, t, positionOffset != 0 || s != t, nameof(CausalAttention));
        var geometry = new AttentionGeometry(bsz, t, s, hq, hkv, d, positionOffset, window, keyMask, scale ?? 1f / MathF.Sqrt(d), softCap ?? 0f,
            segmentStarts: segmentStarts, alibiSlopes: alibiSlopes);
        return Attend(geometry, [q, k, v], q, 0, k, 0, v, 0);
    }

    /// <summary>
    /// <see cref="CausalAttention"/> on the fused projection's output, without slicing it apart: qkv [B, T, (Hq + 2·Hkv)·D]
    /// holds each token's q (Hq heads), then k and v (Hkv heads each), D = width / (Hq + 2·Hkv); keys are the same T tokens.
    /// → [B, T, Hq, D], equal to CausalAttention(q, k, v, ...) on the three reshaped column ranges. Backward writes
    /// dQ, dK and dV straight into qkv's gradient (no slice copies, no scatter).
    /// </summary>
    public static Tensor CausalAttentionPacked(Tensor qkv, int queryHeads, int kvHeads, int positionOffset = 0, bool[]? keyMask = null,
        float? scale = null, int? window = null, float? softCap = null, int[]? segmentStarts = null, float[]? alibiSlopes = null)
    {
        if (qkv.Rank != 3)
            throw new ArgumentException($"CausalAttentionPacked needs qkv [B, T, (Hq + 2·Hkv)·D]; got {ShapeUtil.Format(qkv.Shape)}.");
        if (queryHeads <= 0 || kvHeads <= 0 || queryHeads % kvHeads != 0)
            throw new ArgumentException($"CausalAttentionPacked: {queryHeads} query heads must be a positive multiple of {kvHeads} key/value heads.");
        int bsz = qkv.Dim(0), t = qkv.Dim(1), width = qkv.Dim(2), heads = queryHeads + 2 * kvHeads;
        if (width % heads != 0)
            throw new ArgumentException($"CausalAttentionPacked: width {width} is not (Hq + 2·Hkv)·D = {heads}·D.");
        int d = width / heads;
        CheckAttentionOptions(bsz, t, positionOffset, keyMask, window, softCap, queryHeads, alibiSlopes);
        CheckSegmentStarts(segmentStarts, bsz, t, positionOffset != 0, nameof(CausalAttentionPacked));
        var geometry = new AttentionGeometry(bsz, t, t, queryHeads, kvHeads, d, positionOffset, window, keyMask,
            scale ?? 1f / MathF.Sqrt(d), softCap ?? 0f, packedLd: width, segmentStarts: segmentStarts, alibiSlopes: alibiSlopes);
        return Attend(geometry, [qkv], qkv, 0, qkv, queryHeads * d, qkv, (queryHeads + kvHeads) * d);
    }

    /// <summary>
    /// Segments (several sequences packed into one row, no cache): segmentStarts[b·T + t] is the first key query t may
    /// see, its sequence's first token: 0 ≤ start ≤ t, nondecreasing along each row, so each sequence attends only to
    /// itself.
    /// </summary>
    /// <summary>Packed-sequence starts, as attention and the recurrent ops (convolution, scan) take them: B·T indices, each
    /// at most its own step and at least the previous step's start; only for passes over whole sequences (no cache, no
    /// history: a cached pass continues one sequence).</summary>
    private static void CheckSegmentStarts(int[]? starts, int batch, int time, bool continuesSequence, string op)
    {
        if (starts == null) return;
        if (continuesSequence) throw new ArgumentException($"{op}: packed sequences (segmentStarts) are for passes over whole sequences (no cache or history).");
        if (starts.Length != batch * time) throw new ArgumentException($"{op}: segmentStarts has {starts.Length} entries, B·T = {batch * time} expected.");
        for (int b = 0; b < batch; b++)
            for (int t = 0; t < time; t++)
            {
                int start = starts[b * time + t];
                if (start < 0 || start > t || (t > 0 && start < starts[b * time + t - 1]))
                    throw new ArgumentException($"{op}: segmentStarts[{b * time + t}] = {start} must be in [0, {t}] and not below the previous step's.");
            }
    }

    private static void CheckAttentionOptions(int bsz, int s, int positionOffset, bool[]? keyMask, int? window, float? softCap,
        int queryHeads, float[]? alibiSlopes)
    {
        if (alibiSlopes != null)
        {
            if (alibiSlopes.Length != queryHeads)
                throw new ArgumentException($"CausalAttention: {alibiSlopes.Length} ALiBi slopes for {queryHeads} query heads.");
            if (alibiSlopes.Any(m => !float.IsFinite(m))) throw new ArgumentException("CausalAttention: ALiBi slopes must be finite.");
            // The soft cap's backward recomputes the scores from Q·Kᵀ alone; no family has both.
            if (softCap != null) throw new ArgumentException("CausalAttention: ALiBi slopes and a soft cap together are not supported.");
        }
        if (positionOffset < 0) throw new ArgumentOutOfRangeException(nameof(positionOffset), $"positionOffset must be ≥ 0, got {positionOffset}.");
        if (window is <= 0) throw new ArgumentOutOfRangeException(nameof(window), $"window must be ≥ 1 (a query always fits itself), got {window}.");
        if (keyMask != null && keyMask.Length != bsz * s)
            throw new ArgumentException($"CausalAttention: keyMask has {keyMask.Length} entries, B·S = {bsz * s} expected (keyMask[b·S + s]).");
        if (softCap is { } capValue && !(capValue > 0 && float.IsFinite(capValue)))
            throw new ArgumentOutOfRangeException(nameof(softCap), $"softCap must be finite and > 0, got {capValue}.");
    }

    // The forward and its recording; q, k and v are read at the given offsets into their tensors (the same tensor
    // for the packed form) with the geometry's row strides, and their gradients written at the same offsets.
    private static Tensor Attend(in AttentionGeometry geometry, Tensor[] inputs, Tensor q, int qAt, Tensor k, int kAt, Tensor v, int vAt)
    {
        int bsz = geometry.Batch, t = geometry.Queries, hq = geometry.QueryHeads, d = geometry.HeadDim;
        int sEff = geometry.VisibleKeys;
        var o = Tensor.EmptyOwned([bsz, t, hq, d]);
        if (sEff == 0 || t == 0 || d == 0)
        {
            o.Span.Clear();
            return o;
        }

        bool record = Autograd.AnyNeeds(inputs);
        var probs = record ? Tensor.EmptyOwned([bsz, hq, t, sEff]) : null;
        AttentionKernels.Forward(geometry, q.Array, q.Offset + qAt, k.Array, k.Offset + kAt, v.Array, v.Offset + vAt, o.Array, o.Offset,
            probs?.Array, probs?.Offset ?? 0);
        if (record)
        {
            var g0 = geometry;
            Autograd.Record(o, inputs, g =>
            {
                if (q.RequiresGrad) q.GradForAccumulate();
                if (k.RequiresGrad) k.GradForAccumulate();
                if (v.RequiresGrad) v.GradForAccumulate();
                Tensor? dq = q.RequiresGrad ? q.GradTensor : null, dk = k.RequiresGrad ? k.GradTensor : null, dv = v.RequiresGrad ? v.GradTensor : null;
                AttentionKernels.Backward(g0, g.Array, g.Offset, q.Array, q.Offset + qAt, k.Array, k.Offset + kAt, v.Array, v.Offset + vAt,
                    probs!.Array, probs.Offset, dq?.Array, (dq?.Offset ?? 0) + qAt, dk?.Array, (dk?.Offset ?? 0) + kAt, dv?.Array, (dv?.Offset ?? 0) + vAt);
            });
        }
        return o;
    }
}
