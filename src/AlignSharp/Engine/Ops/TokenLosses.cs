using AlignSharp.Engine.Kernels;

namespace AlignSharp.Engine;

// Fused per-token losses over the vocabulary axis (the loops are in TokenLossKernels). Legend: N rows (tokens), V vocabulary.
// Neither op keeps an [N, V] intermediate: forward saves one or two floats per row (logsumexp, entropy)
// and backward recomputes softmax from the logits, which are alive anyway.
public static partial class Ops
{
    /// <summary>
    /// Mean cross entropy, fused with its log-softmax. logits [N, V] (or [..., V] read as rows), targets [N]
    /// → [] = Σ_i w_i·(lse_i − logits[i, t_i]) / Σ_i w_i over rows with t_i ≠ <paramref name="ignoreIndex"/>;
    /// w_i = 1 when <paramref name="weights"/> is empty. No counted row (or Σw = 0) gives 0 and a zero gradient.
    /// Saves: logsumexp per row. Backward: dlogits_i = g·w_i/Σw·(softmax_i − onehot(t_i)).
    /// </summary>
    public static Tensor CrossEntropy(Tensor logits, ReadOnlySpan<int> targets, int ignoreIndex = -100, ReadOnlySpan<float> weights = default)
    {
        if (logits.Rank == 0) throw new ArgumentException("CrossEntropy needs logits [..., V], got a scalar.");
        int v = logits.Dim(-1), rows = ShapeUtil.Rows(logits.Shape);
        if (targets.Length != rows)
            throw new ArgumentException($"CrossEntropy: {targets.Length} targets for {rows} rows of logits {ShapeUtil.Format(logits.Shape)} (one target per row).");
        if (!weights.IsEmpty && weights.Length != rows)
            throw new ArgumentException($"CrossEntropy: {weights.Length} weights for {rows} rows (pass one weight per row, or none).");
        // Targets, row weights (0 = not counted), logsumexp and per-row losses are saved in pooled buffers.
        var saved = Tensor.EmptyOwned([4, rows]);
        var t = IndicesIn(saved, 0, rows);
        var w = saved.Span.Slice(rows, rows);
        targets.CopyTo(t);
        for (int r = 0; r < rows; r++)
        {
            w[r] = 0f;
            if (t[r] == ignoreIndex) continue;
            if ((uint)t[r] >= (uint)v)
                throw new ArgumentOutOfRangeException(nameof(targets), $"CrossEntropy: target {t[r]} at row {r} is outside the vocabulary [0, {v}) and is not ignoreIndex ({ignoreIndex}).");
            float wr = weights.IsEmpty ? 1f : weights[r];
            if (!(wr >= 0f) || float.IsInfinity(wr))
                throw new ArgumentOutOfRangeException(nameof(weights), $"CrossEntropy: weight {wr} at row {r} must be finite and ≥ 0.");
            w[r] = wr;
        }

        // Forward: lse per row for counted rows only; per-row losses are reduced in row order (thread-count independent).
        var sa = saved.Array; int so = saved.Offset;
        TokenLossKernels.CrossEntropyForward(rows, v, logits.Array, logits.Offset, sa, so);
        var (num, den) = TokenLossKernels.WeightedLossSum(rows, sa, so);
        var y = Tensor.EmptyOwned([]);
        y.Span[0] = den > 0 ? (float)(num / den) : 0f;

        if (Autograd.Needs(logits))
            Autograd.Record(y, [logits], g =>
            {
                logits.GradForAccumulate();
                if (den == 0) return;   // nothing counted: the loss is the constant 0
                var dl = logits.GradTensor!;
                TokenLossKernels.CrossEntropyBackward(rows, v, (float)(g.Span[0] / den), logits.Array, logits.Offset, sa, so, dl.Array, dl.Offset);
            });
        return y;
    }

    /// <summary>Throws, naming <paramref name="who"/>, the row and the target, when a target is not in [0, v).</summary>
    internal static void CheckTargets(ReadOnlySpan<int> targets, int v, string who)
    {
        for (int r = 0; r < targets.Length; r++)
            if ((uint)targets[r] >= (uint)v)
                throw new ArgumentOutOfRangeException(nameof(targets), $"{who}: target {targets[r]} at row {r} is outside the vocabulary [0, {v}).");
    }

    /// <summary>
    /// Per-token log-probability of the target and entropy of the distribution, in one pass over the logits.
    /// logits [..., V], targets [N] (N = rows) → LogProbs [...] = log softmax(logits)[target],
    /// Entropy [...] = −Σ p log p. Both are differentiable, alone or together. Each row is reduced by vocabulary tiles
    /// (<see cref="TokenLossKernels.TileStats"/>, <see cref="TokenLossKernels.CombineTiles"/>), as a scorer without
    /// gradients reduces logits it makes a tile at a time: the same bits.
    /// Saves: logsumexp and entropy per row. Backward (one node, one softmax recompute for both outputs):
    /// dlogits_j = gL·(onehot_j − p_j) − gH·p_j·(log p_j + H).
    /// Logits must be finite (mask with a large negative number, not −∞, or the entropy is NaN).
    /// <paramref name="scale"/> (1 / temperature, &gt; 0) multiplies the logits first, row by row inside the pass: the bits
    /// of <c>TokenLogProbs(MulScalar(logits, scale), targets)</c>, values and gradient, without the scaled [N, V] copy.
    /// </summary>
    public static (Tensor LogProbs, Tensor Entropy) TokenLogProbs(Tensor logits, ReadOnlySpan<int> targets, float scale = 1f)
    {
        if (!(scale > 0) || !float.IsFinite(scale)) throw new ArgumentOutOfRangeException(nameof(scale), $"TokenLogProbs: the scale must be finite and > 0, got {scale}.");
        if (logits.Rank == 0) throw new ArgumentException("TokenLogProbs needs logits [..., V], got a scalar.");
        int v = logits.Dim(-1), rows = ShapeUtil.Rows(logits.Shape);
        if (targets.Length != rows)
            throw new ArgumentException($"TokenLogProbs: {targets.Length} targets for {rows} rows of logits {ShapeUtil.Format(logits.Shape)} (one target per row).");
        CheckTargets(targets, v, "TokenLogProbs");

        // Both outputs live in one planar buffer [2, N]: row 0 log-probs, row 1 entropies. The outputs are
        // views of it, so the gradients of both meet in its gradient before its single backward runs.
        // saved [3, N]: targets (their bits), logsumexp, entropy.
        var both = Tensor.EmptyOwned([2, rows]);
        var saved = Tensor.EmptyOwned([3, rows]);
        targets.CopyTo(IndicesIn(saved, 0, rows));
        var sa = saved.Array; int so = saved.Offset;
        var xa = logits.Array; int xo = logits.Offset;
        TokenLossKernels.TokenLogProbsForward(rows, v, xa, xo, both.Array, both.Offset, sa, so, scale);
        var outShape = logits.Shape[..^1].ToArray();
        var logProbs = both.ViewAs(outShape, 0);
        var entropy = both.ViewAs(outShape.ToArray(), rows);

        if (Autograd.Needs(logits))
        {
            both.Span.Slice(rows, rows).CopyTo(saved.Span.Slice(2 * rows, rows));
            Autograd.Record(both, [logits], g =>
            {
                logits.GradForAccumulate();
                var dl = logits.GradTensor!;
                TokenLossKernels.TokenLogProbsBackward(rows, v, xa, xo, g.Array, g.Offset, sa, so, dl.Array, dl.Offset, scale);
            });
            logProbs = Autograd.Record(logProbs, [both], g => Simd.AddInto(g.Span, both.GradForAccumulate()[..rows]));
            entropy = Autograd.Record(entropy, [both], g => Simd.AddInto(g.Span, both.GradForAccumulate().Slice(rows, rows)));
        }
        return (logProbs, entropy);
    }
}
