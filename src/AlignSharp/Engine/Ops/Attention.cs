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
        var geometry = new AttentionGeometry(bsz, t, s, hq, hkv, d, positionOffset, window, keyMask, scale ?? 1f / MathF.Sqrt(d), softCap ?? 0f);
        int sEff = geometry.VisibleKeys;
        var o = Tensor.EmptyOwned([bsz, t, hq, d]);
        if (sEff == 0 || t == 0 || d == 0)
        {
            o.Span.Clear();
            return o;
        }

        bool record = Autograd.AnyNeeds([q, k, v]);
        var probs = record ? Tensor.EmptyOwned([bsz, hq, t, sEff]) : null;
        AttentionKernels.Forward(geometry, q.Array, q.Offset, k.Array, k.Offset, v.Array, v.Offset, o.Array, o.Offset, probs?.Array, probs?.Offset ?? 0);
        if (record)
            Autograd.Record(o, [q, k, v], g =>
            {
                if (q.RequiresGrad) q.GradForAccumulate();
                if (k.RequiresGrad) k.GradForAccumulate();
                if (v.RequiresGrad) v.GradForAccumulate();
                Tensor? dq = q.RequiresGrad ? q.GradTensor : null, dk = k.RequiresGrad ? k.GradTensor : null, dv = v.RequiresGrad ? v.GradTensor : null;
                AttentionKernels.Backward(geometry, g.Array, g.Offset, q.Array, q.Offset, k.Array, k.Offset, v.Array, v.Offset,
                    probs!.Array, probs.Offset, dq?.Array, dq?.Offset ?? 0, dk?.Array, dk?.Offset ?? 0, dv?.Array, dv?.Offset ?? 0);
            });
        return o;
    }
}
