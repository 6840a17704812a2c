using System.Numerics.Tensors;
using AlignSharp.Engine.Kernels;

namespace AlignSharp.Engine;

// Causal scaled-dot-product attention with grouped-query heads, a KV-cache offset and an optional sliding window.
// Legend: B batch, T queries, S keys, Hq query heads, Hkv key/value heads, G = Hq/Hkv, D head size, W window,
// S' = min(S, positionOffset + T) keys that any query can see (keys past it are never attended).
public static partial class Ops
{
    /// <summary>Up to this many queries per head, scores and outputs are formed row by row with dot products
    /// (KV-cached decoding); above it, with GEMMs.</summary>
    internal const int AttentionRowPathMaxT = 4;

    /// <summary>Queries per GEMM block. Each block multiplies only against the keys from its first query's
    /// window start to its last query's position, so causal self-attention does ~(1 + 64/T)/2 of the full
    /// QKᵀ and PV work, and with a window W at most (W + 63)·64 scores per block.</summary>
    internal const int AttentionQueryBlock = 64;

    /// <summary>
    /// Keys query <paramref name="query"/> (absolute position p = offset + query) may see before the key mask:
    /// [max(0, p − W + 1), min(S', p + 1)), or from 0 without a window. Lo ≤ Hi always (an empty range is Hi, Hi).
    /// </summary>
    private static (int Lo, int Hi) AttentionKeyRange(int sEff, int positionOffset, int? window, int query)
    {
        long p = (long)positionOffset + query;
        int hi = (int)Math.Min(sEff, p + 1);
        int lo = window is int w ? (int)Math.Clamp(p - w + 1, 0, hi) : 0;
        return (lo, hi);
    }

    /// <summary>Keys a block of queries [t0, t0 + rows) may see, the union of their ranges: [Lo of t0, Hi of the last).</summary>
    private static (int Lo, int Hi) AttentionBlockKeys(int sEff, int positionOffset, int? window, int t0, int rows)
        => (AttentionKeyRange(sEff, positionOffset, window, t0).Lo, AttentionKeyRange(sEff, positionOffset, window, t0 + rows - 1).Hi);

    /// <summary>
    /// softmax(scale·Q·Kᵀ + causal/key mask)·V per head.
    /// q [B, T, Hq, D], k and v [B, S, Hkv, D] with Hq % Hkv == 0 (query head h reads kv head h / G)
    /// → [B, T, Hq, D]. Query t sits at absolute position p = positionOffset + t and may attend key s iff
    /// s ≤ p, p − window &lt; s when a window is given (a query sees at most window keys, itself included), and
    /// (keyMask == null || keyMask[b·S + s]). The window counts keys by their index in k (a cache slot), not by token
    /// position, as Hugging Face's sliding-window mask does: a masked slot inside the window still uses it up. A
    /// query with no allowed key outputs zeros and receives a zero gradient. scale defaults to 1/√D.
    /// softCap c (Gemma-2's attn_logit_softcapping): the scaled scores z become c·tanh(z / c) before the mask and
    /// the softmax.
    /// Saves: the probabilities [B, Hq, T, S'] (only when a gradient is needed).
    /// Backward, per (b, kv head), over the G query heads that share it:
    /// dV += Pᵀ·dO, dP = dO·Vᵀ, dS = scale·P ⊙ (dP − rowsum(P ⊙ dP)), dQ += dS·K, dK += dSᵀ·Q; with a soft cap
    /// dS is further multiplied by 1 − tanh²(z / c), z recomputed from Q·Kᵀ (one more GEMM per block).
    /// </summary>
    public static Tensor CausalAttention(Tensor q, Tensor k, Tensor v, int positionOffset = 0, bool[]? keyMask = null, float? scale = null,
        int? window = null, float? softCap = null)
    {
        if (q.Rank != 4 || k.Rank != 4 || v.Rank != 4)
            throw new ArgumentException($"CausalAttention needs q [B, T, Hq, D], k and v [B, S, Hkv, D]; got q {ShapeUtil.Format(q.Shape)}, k {ShapeUtil.Format(k.Shape)}, v {ShapeUtil.Format(v.Shape)}.");
        int bsz = q.Dim(0), t = q.Dim(1), hq = q.Dim(2), d = q.Dim(3);
        int s = k.Dim(1), hkv = k.Dim(2);
        if (k.Dim(0) != bsz || k.Dim(3) != d || !ShapeUtil.SameShape(k.Shape, v.Shape))
            throw new ArgumentException($"CausalAttention: k {ShapeUtil.Format(k.Shape)} and v {ShapeUtil.Format(v.Shape)} must both be [B={bsz}, S, Hkv, D={d}].");
        if (hkv == 0 || hq % hkv != 0)
            throw new ArgumentException($"CausalAttention: {hq} query heads are not a multiple of {hkv} key/value heads.");
        if (positionOffset < 0) throw new ArgumentOutOfRangeException(nameof(positionOffset), $"positionOffset must be ≥ 0, got {positionOffset}.");
        if (window is <= 0) throw new ArgumentOutOfRangeException(nameof(window), $"window must be ≥ 1 (a query always fits itself), got {window}.");
        if (keyMask != null && keyMask.Length != bsz * s)
            throw new ArgumentException($"CausalAttention: keyMask has {keyMask.Length} entries, B·S = {bsz * s} expected (keyMask[b·S + s]).");
        if (softCap is { } capValue && !(capValue > 0 && float.IsFinite(capValue)))
            throw new ArgumentOutOfRangeException(nameof(softCap), $"softCap must be finite and > 0, got {capValue}.");
        float sc = scale ?? 1f / MathF.Sqrt(d);
        float cap = softCap ?? 0f;

        int group = hq / hkv;
        int sEff = (int)Math.Min(s, (long)positionOffset + t);
        int qLd = hq * d, kvLd = hkv * d, pSize = t * sEff;
        var o = Tensor.EmptyOwned([bsz, t, hq, d]);
        if (sEff == 0 || t == 0 || d == 0)
        {
            o.Span.Clear();
            return o;
        }

        bool record = Autograd.AnyNeeds([q, k, v]);
        var probs = record ? Tensor.EmptyOwned([bsz, hq, t, sEff]) : null;
        var qa = q.Array; int qo = q.Offset;
        var ka = k.Array; int ko = k.Offset;
        var va = v.Array; int vo = v.Offset;
        var oa = o.Array; int oo = o.Offset;
        var pa = probs?.Array; int po = probs?.Offset ?? 0;
        long workPerHead = (long)t * (window is int w ? Math.Min(sEff, (long)w + AttentionQueryBlock) : sEff) * d;

        ParallelFor.For(bsz * hq, (int)Math.Max(1, (1 << 16) / Math.Max(1, workPerHead)), (start, end) =>
        {
            float[]? scratch = pa == null ? BufferPool.Rent(pSize) : null;
            for (int bh = start; bh < end; bh++)
            {
                int b = bh / hq, h = bh % hq, kvh = h / group;
                var p = pa != null ? pa.AsSpan(po + bh * pSize, pSize) : scratch.AsSpan(0, pSize);
                int qOff = qo + b * t * qLd + h * d;
                int kOff = ko + b * s * kvLd + kvh * d;
                int vOff = vo + b * s * kvLd + kvh * d;
                int oOff = oo + b * t * qLd + h * d;
                if (t <= AttentionRowPathMaxT)
                    AttentionHeadRows(qa, qOff, ka, kOff, va, vOff, oa, oOff, p, t, sEff, d, qLd, kvLd, positionOffset, window, keyMask, b * s, sc, cap);
                else
                    for (int t0 = 0; t0 < t; t0 += AttentionQueryBlock)
                    {
                        // Query block [t0, t1) sees keys [lo, hi): the GEMMs skip the causal upper triangle and,
                        // with a window, the keys every query of the block has left behind. Scores outside a row's
                        // own range (stale columns included) are cleared by its softmax.
                        int rowsIn = Math.Min(AttentionQueryBlock, t - t0);
                        var (lo, hi) = AttentionBlockKeys(sEff, positionOffset, window, t0, rowsIn);
                        var pb = p.Slice(t0 * sEff, rowsIn * sEff);
                        Gemm.Multiply(false, true, rowsIn, hi - lo, d, qa.AsSpan(qOff + t0 * qLd), qLd, ka.AsSpan(kOff + lo * kvLd), kvLd, pb[lo..], sEff, false);
                        for (int tq = t0; tq < t0 + rowsIn; tq++)
                        {
                            var (rLo, rHi) = AttentionKeyRange(sEff, positionOffset, window, tq);
                            AttentionSoftmaxRow(p.Slice(tq * sEff, sEff), rLo, rHi, sc, cap, keyMask, b * s);
                        }
                        // No key at all (hi == lo): a zero-depth GEMM writes zeros, the empty-row output.
                        Gemm.Multiply(false, false, rowsIn, d, hi - lo, pb[lo..], sEff, va.AsSpan(vOff + lo * kvLd), kvLd, oa.AsSpan(oOff + t0 * qLd), qLd, false);
                    }
            }
            if (scratch != null) BufferPool.Return(scratch);
        });

        if (record)
            Autograd.Record(o, [q, k, v], g =>
            {
                var ga = g.Array; int go = g.Offset;
                Tensor? dq = null, dk = null, dv = null;
                if (q.RequiresGrad) { q.GradForAccumulate(); dq = q.GradTensor; }
                if (k.RequiresGrad) { k.GradForAccumulate(); dk = k.GradTensor; }
                if (v.RequiresGrad) { v.GradForAccumulate(); dv = v.GradTensor; }
                bool needScores = dq != null || dk != null;
                // Heads sharing a kv head accumulate into the same dK/dV rows, so a share owns whole (b, kv head) pairs.
                ParallelFor.For(bsz * hkv, (int)Math.Max(1, (1 << 16) / Math.Max(1, workPerHead * group)), (start, end) =>
                {
                    var dpBuf = needScores ? BufferPool.Rent(pSize) : null;
                    var zBuf = needScores && cap > 0 ? BufferPool.Rent(pSize) : null;
                    for (int bk = start; bk < end; bk++)
                    {
                        int b = bk / hkv, kvh = bk % hkv;
                        int kvOff = b * s * kvLd + kvh * d;
                        for (int j = 0; j < group; j++)
                        {
                            int h = kvh * group + j;
                            int qOff = b * t * qLd + h * d;
                            for (int t0 = 0; t0 < t; t0 += AttentionQueryBlock)
                            {
                                // Query block [t0, t1) against the keys [lo, hi) it can see; P is zero outside them.
                                int rowsIn = Math.Min(AttentionQueryBlock, t - t0);
                                var (lo, hi) = AttentionBlockKeys(sEff, positionOffset, window, t0, rowsIn);
                                int kv = hi - lo;
                                if (kv == 0) continue;
                                var p = pa!.AsSpan(po + (b * hq + h) * pSize + t0 * sEff + lo, (rowsIn - 1) * sEff + kv);
                                int qbOff = qOff + t0 * qLd, kvbOff = kvOff + lo * kvLd;
                                var gO = ga.AsSpan(go + qbOff);
                                if (dv != null)
                                    Gemm.Multiply(true, false, kv, d, rowsIn, p, sEff, gO, qLd, dv.Array.AsSpan(dv.Offset + kvbOff), kvLd, true);
                                if (!needScores) continue;
                                var dp = dpBuf.AsSpan(0, (rowsIn - 1) * sEff + kv);
                                Gemm.Multiply(false, true, rowsIn, kv, d, gO, qLd, va.AsSpan(vo + kvbOff), kvLd, dp, sEff, false);
                                var z = zBuf.AsSpan(0, zBuf == null ? 0 : (rowsIn - 1) * sEff + kv);
                                if (zBuf != null)
                                    Gemm.Multiply(false, true, rowsIn, kv, d, qa.AsSpan(qo + qbOff), qLd, ka.AsSpan(ko + kvbOff), kvLd, z, sEff, false);
                                for (int r = 0; r < rowsIn; r++)
                                {
                                    var pr = p.Slice(r * sEff, kv); var dr = dp.Slice(r * sEff, kv);
                                    float dot = Simd.Dot(pr, dr);
                                    // dS = scale · P ⊙ (dP − Σ P·dP); zero wherever P is (masked keys, empty rows).
                                    TensorPrimitives.Add(dr, -dot, dr);
                                    TensorPrimitives.Multiply(dr, pr, dr);
                                    TensorPrimitives.Multiply(dr, sc, dr);
                                    if (zBuf != null) SoftCapBackwardRow(z.Slice(r * sEff, kv), dr, sc, cap);
                                }
                                if (dq != null)
                                    Gemm.Multiply(false, false, rowsIn, d, kv, dp, sEff, ka.AsSpan(ko + kvbOff), kvLd, dq.Array.AsSpan(dq.Offset + qbOff), qLd, true);
                                if (dk != null)
                                    Gemm.Multiply(true, false, kv, d, rowsIn, dp, sEff, qa.AsSpan(qo + qbOff), qLd, dk.Array.AsSpan(dk.Offset + kvbOff), kvLd, true);
                            }
                        }
                    }
                    if (dpBuf != null) BufferPool.Return(dpBuf);
                    if (zBuf != null) BufferPool.Return(zBuf);
                });
            });
        return o;
    }

    /// <summary>
    /// One (batch, head) for few queries: scores by dot products over each query's visible keys only (window
    /// included), then O = P·V by scaled adds. p [T, S'] receives the probabilities. Strides as in
    /// <see cref="CausalAttention"/>.
    /// </summary>
    private static void AttentionHeadRows(float[] qa, int qOff, float[] ka, int kOff, float[] va, int vOff, float[] oa, int oOff,
        Span<float> p, int t, int sEff, int d, int qLd, int kvLd, int positionOffset, int? window, bool[]? keyMask, int maskOffset, float scale, float cap)
    {
        for (int tq = 0; tq < t; tq++)
        {
            var (lo, hi) = AttentionKeyRange(sEff, positionOffset, window, tq);
            var qr = qa.AsSpan(qOff + tq * qLd, d);
            var pr = p.Slice(tq * sEff, sEff);
            for (int sk = lo; sk < hi; sk++)
                pr[sk] = keyMask != null && !keyMask[maskOffset + sk] ? 0f : Simd.Dot(qr, ka.AsSpan(kOff + sk * kvLd, d));
            AttentionSoftmaxRow(pr, lo, hi, scale, cap, keyMask, maskOffset);
            var or = oa.AsSpan(oOff + tq * qLd, d);
            or.Clear();
            for (int sk = lo; sk < hi; sk++)
                if (pr[sk] != 0f) Simd.ScaleAddInto(va.AsSpan(vOff + sk * kvLd, d), pr[sk], or);
        }
    }

    /// <summary>
    /// Raw scores → probabilities in place for one query row: entries [lo, hi) are scaled (and soft-capped when
    /// cap &gt; 0) and softmaxed over the keys keyMask allows; masked keys and every entry outside [lo, hi) become 0;
    /// a row with no allowed key becomes all zeros.
    /// </summary>
    private static void AttentionSoftmaxRow(Span<float> row, int lo, int hi, float scale, float cap, bool[]? keyMask, int maskOffset)
    {
        var live = row[lo..hi];
        row[..lo].Clear();
        row[hi..].Clear();
        TensorPrimitives.Multiply(live, scale, live);
        if (cap > 0)
            for (int i = 0; i < live.Length; i++) live[i] = cap * MathF.Tanh(live[i] / cap);
        if (keyMask != null)
            for (int sk = lo; sk < hi; sk++)
                if (!keyMask[maskOffset + sk]) live[sk - lo] = float.NegativeInfinity;
        float max = live.IsEmpty ? float.NegativeInfinity : Simd.Max(live);
        if (float.IsNegativeInfinity(max))
        {
            live.Clear();
            return;
        }
        Simd.ZipScalarRight<SubOp>(live, max, live);
        Simd.Map<ExpOp>(live, live);
        if (keyMask != null)
            for (int sk = lo; sk < hi; sk++)
                if (!keyMask[maskOffset + sk]) live[sk - lo] = 0f;
        TensorPrimitives.Multiply(live, 1f / Simd.Sum(live), live);
    }

    /// <summary>dS ⊙= 1 − tanh²(scale·z / cap) over one row: the soft cap's derivative at the raw scores z.</summary>
    private static void SoftCapBackwardRow(ReadOnlySpan<float> z, Span<float> ds, float scale, float cap)
    {
        for (int i = 0; i < ds.Length; i++)
        {
            float th = MathF.Tanh(z[i] * scale / cap);
            ds[i] *= 1f - th * th;
        }
    }
}
