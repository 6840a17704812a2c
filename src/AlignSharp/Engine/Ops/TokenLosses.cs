using System.Numerics.Tensors;
using AlignSharp.Engine.Kernels;

namespace AlignSharp.Engine;

// Fused per-token losses over the vocabulary axis. Legend: N rows (tokens), V vocabulary.
// Neither op keeps an [N, V] intermediate: forward saves one or two floats per row (logsumexp, entropy)
// and backward recomputes softmax from the logits, which are alive anyway.
public static partial class Ops
{
    /// <summary>Rows per thread share for a row-wise kernel over rows of length <paramref name="v"/>.</summary>
    private static int RowGrain(int v) => Math.Max(1, 16384 / Math.Max(1, v));

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
        var t = targets.ToArray();
        var w = new float[rows];
        for (int r = 0; r < rows; r++)
        {
            if (t[r] == ignoreIndex) continue;
            if ((uint)t[r] >= (uint)v)
                throw new ArgumentOutOfRangeException(nameof(targets), $"CrossEntropy: target {t[r]} at row {r} is outside the vocabulary [0, {v}) and is not ignoreIndex ({ignoreIndex}).");
            float wr = weights.IsEmpty ? 1f : weights[r];
            if (!(wr >= 0f) || float.IsInfinity(wr))
                throw new ArgumentOutOfRangeException(nameof(weights), $"CrossEntropy: weight {wr} at row {r} must be finite and ≥ 0.");
            w[r] = wr;
        }

        // Forward: lse per row for counted rows only; per-row losses are reduced in row order (thread-count independent).
        var lse = new float[rows];
        var rowLoss = new float[rows];
        var xa = logits.Array; int xo = logits.Offset;
        ParallelFor.For(rows, RowGrain(v), (s, e) =>
        {
            var scratch = BufferPool.Rent(v);
            for (int r = s; r < e; r++)
            {
                if (w[r] == 0f) continue;
                var xr = xa.AsSpan(xo + r * v, v);
                lse[r] = RowKernels.LogSumExp(xr, scratch);
                rowLoss[r] = lse[r] - xr[t[r]];
            }
            BufferPool.Return(scratch);
        });
        double num = 0, den = 0;
        for (int r = 0; r < rows; r++)
        {
            if (w[r] == 0f) continue;
            num += (double)w[r] * rowLoss[r];
            den += w[r];
        }
        var y = Tensor.EmptyOwned([]);
        y.Span[0] = den > 0 ? (float)(num / den) : 0f;

        if (Autograd.Needs(logits))
            Autograd.Record(y, [logits], g =>
            {
                logits.GradForAccumulate();
                if (den == 0) return;   // nothing counted: the loss is the constant 0
                float scale = (float)(g.Span[0] / den);
                var da = logits.GradTensor!.Array; int dO = logits.GradTensor.Offset;
                ParallelFor.For(rows, RowGrain(v), (s, e) =>
                {
                    var p = BufferPool.Rent(v);
                    for (int r = s; r < e; r++)
                    {
                        if (w[r] == 0f) continue;
                        float c = scale * w[r];
                        var pr = p.AsSpan(0, v); var dr = da.AsSpan(dO + r * v, v);
                        Simd.ZipScalarRight<SubOp>(xa.AsSpan(xo + r * v, v), lse[r], pr);
                        Simd.Map<ExpOp>(pr, pr);                 // softmax row, recomputed
                        Simd.ScaleAddInto(pr, c, dr);
                        dr[t[r]] -= c;
                    }
                    BufferPool.Return(p);
                });
            });
        return y;
    }

    /// <summary>
    /// Per-token log-probability of the target and entropy of the distribution, in one pass over the logits.
    /// logits [..., V], targets [N] (N = rows) → LogProbs [...] = log softmax(logits)[target],
    /// Entropy [...] = −Σ p log p. Both are differentiable, alone or together.
    /// Saves: logsumexp and entropy per row. Backward (one node, one softmax recompute for both outputs):
    /// dlogits_j = gL·(onehot_j − p_j) − gH·p_j·(log p_j + H).
    /// Logits must be finite (mask with a large negative number, not −∞, or the entropy is NaN).
    /// </summary>
    public static (Tensor LogProbs, Tensor Entropy) TokenLogProbs(Tensor logits, ReadOnlySpan<int> targets)
    {
        if (logits.Rank == 0) throw new ArgumentException("TokenLogProbs needs logits [..., V], got a scalar.");
        int v = logits.Dim(-1), rows = ShapeUtil.Rows(logits.Shape);
        if (targets.Length != rows)
            throw new ArgumentException($"TokenLogProbs: {targets.Length} targets for {rows} rows of logits {ShapeUtil.Format(logits.Shape)} (one target per row).");
        var t = targets.ToArray();
        for (int r = 0; r < rows; r++)
            if ((uint)t[r] >= (uint)v)
                throw new ArgumentOutOfRangeException(nameof(targets), $"TokenLogProbs: target {t[r]} at row {r} is outside the vocabulary [0, {v}).");

        // Both outputs live in one planar buffer [2, N]: row 0 log-probs, row 1 entropies. The outputs are
        // views of it, so the gradients of both meet in its gradient before its single backward runs.
        var both = Tensor.EmptyOwned([2, rows]);
        var lse = new float[rows];
        var xa = logits.Array; int xo = logits.Offset;
        var ba = both.Array; int bo = both.Offset;
        ParallelFor.For(rows, RowGrain(v), (s, e) =>
        {
            var d = BufferPool.Rent(v);
            var ex = BufferPool.Rent(v);
            for (int r = s; r < e; r++)
            {
                var xr = xa.AsSpan(xo + r * v, v); var dr = d.AsSpan(0, v); var er = ex.AsSpan(0, v);
                float max = Simd.Max(xr);
                Simd.ZipScalarRight<SubOp>(xr, max, dr);   // d = x − max ≤ 0
                Simd.Map<ExpOp>(dr, er);
                float z = Simd.Sum(er), logZ = MathF.Log(z);
                lse[r] = max + logZ;
                ba[bo + r] = dr[t[r]] - logZ;
                // H = log Z − Σ e·d / Z, on shifted logits so large logits do not cancel.
                ba[bo + rows + r] = logZ - Simd.Dot(dr, er) / z;
            }
            BufferPool.Return(ex);
            BufferPool.Return(d);
        });
        var outShape = logits.Shape[..^1].ToArray();
        var logProbs = both.ViewAs(outShape, 0);
        var entropy = both.ViewAs(outShape.ToArray(), rows);

        if (Autograd.Needs(logits))
        {
            var ent = new float[rows];
            entropy.Span.CopyTo(ent);
            Autograd.Record(both, [logits], g =>
            {
                var ga = g.Array; int go = g.Offset;
                logits.GradForAccumulate();
                var da = logits.GradTensor!.Array; int dO = logits.GradTensor.Offset;
                ParallelFor.For(rows, RowGrain(v), (s, e) =>
                {
                    var d = BufferPool.Rent(v);
                    var p = BufferPool.Rent(v);
                    for (int r = s; r < e; r++)
                    {
                        float gl = ga[go + r], gh = ga[go + rows + r];
                        if (gl == 0f && gh == 0f) continue;
                        var dr = d.AsSpan(0, v); var pr = p.AsSpan(0, v); var xr = xa.AsSpan(xo + r * v, v);
                        var gr = da.AsSpan(dO + r * v, v);
                        Simd.ZipScalarRight<SubOp>(xr, lse[r], dr);   // log p
                        Simd.Map<ExpOp>(dr, pr);                     // p
                        if (gh == 0f) Simd.ScaleAddInto(pr, -gl, gr);
                        else
                        {
                            // gr −= p ⊙ (gL + gH·(log p + H))
                            TensorPrimitives.Multiply(dr, gh, dr);
                            TensorPrimitives.Add(dr, gl + gh * ent[r], dr);
                            TensorPrimitives.Multiply(pr, dr, pr);
                            TensorPrimitives.Subtract(gr, pr, gr);
                        }
                        gr[t[r]] += gl;
                    }
                    BufferPool.Return(p);
                    BufferPool.Return(d);
                });
            });
            logProbs = Autograd.Record(logProbs, [both], g => Simd.AddInto(g.Span, both.GradForAccumulate()[..rows]));
            entropy = Autograd.Record(entropy, [both], g => Simd.AddInto(g.Span, both.GradForAccumulate().Slice(rows, rows)));
        }
        return (logProbs, entropy);
    }
}
