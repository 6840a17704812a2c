using System.Numerics.Tensors;
using System.Runtime.InteropServices;

namespace AlignSharp.Engine.Kernels;

/// <summary>
/// Fused per-token losses over the vocabulary axis. Legend: N rows (tokens), V vocabulary; logits and their gradient
/// are (N, V). What an op saves for its backward is one planar buffer s of a few rows of N read from offset so:
/// row 0 holds the targets' int bits, the other rows floats as each kernel says. Rows split across threads as struct
/// work items; the [V]-long scratch rows come from <see cref="BufferPool"/>.
/// </summary>
internal static class TokenLossKernels
{
    private static int RowGrain(int v) => RowKernels.RowGrain(v, 16384);

    /// <summary>Row 0 of a saved buffer, read back as the ints it holds (never loaded as floats).</summary>
    private static ReadOnlySpan<int> Targets(float[] s, int so, int rows) => MemoryMarshal.Cast<float, int>(s.AsSpan(so, rows));

    /// <summary>
    /// Cross entropy per row from s = [targets, weights, lse, loss] (4, N): for each row with weight ≠ 0,
    /// lse = log Σ exp(x), loss = lse − x[target].
    /// </summary>
    public static void CrossEntropyForward(int rows, int v, float[] x, int xo, float[] s, int so)
        => ParallelFor.Run(rows, RowGrain(v), new CrossEntropyForwardWork(rows, v, x, xo, s, so));

    private readonly struct CrossEntropyForwardWork(int rows, int v, float[] xa, int xo, float[] s, int so) : IRangeWork
    {
        public void Run(int start, int end)
        {
            var targets = Targets(s, so, rows);
            var scratch = BufferPool.Rent(v);
            for (int r = start; r < end; r++)
            {
                if (s[so + rows + r] == 0f) continue;
                var xr = xa.AsSpan(xo + r * v, v);
                float lse = RowKernels.LogSumExp(xr, scratch);
                s[so + 2 * rows + r] = lse;
                s[so + 3 * rows + r] = lse - xr[targets[r]];
            }
            BufferPool.Return(scratch);
        }
    }

    /// <summary>(Σ w·loss, Σ w) over the rows of s = [targets, weights, lse, loss] with w ≠ 0, in row order and in
    /// double: the same sum whatever the thread count.</summary>
    public static (double Numerator, double Denominator) WeightedLossSum(int rows, float[] s, int so)
    {
        double num = 0, den = 0;
        for (int r = 0; r < rows; r++)
        {
            float w = s[so + rows + r];
            if (w == 0f) continue;
            num += (double)w * s[so + 3 * rows + r];
            den += w;
        }
        return (num, den);
    }

    /// <summary>dx += c·w·(softmax(x) − onehot(target)) per row with weight w ≠ 0, the softmax recomputed from the saved lse.</summary>
    public static void CrossEntropyBackward(int rows, int v, float c, float[] x, int xo, float[] s, int so, float[] dx, int dxo)
        => ParallelFor.Run(rows, RowGrain(v), new CrossEntropyBackwardWork(rows, v, c, x, xo, s, so, dx, dxo));

    private readonly struct CrossEntropyBackwardWork(int rows, int v, float scale, float[] xa, int xo, float[] s, int so, float[] da, int dO) : IRangeWork
    {
        public void Run(int start, int end)
        {
            var targets = Targets(s, so, rows);
            var p = BufferPool.Rent(v);
            for (int r = start; r < end; r++)
            {
                float w = s[so + rows + r];
                if (w == 0f) continue;
                float c = scale * w;
                var pr = p.AsSpan(0, v); var dr = da.AsSpan(dO + r * v, v);
                Simd.ZipScalarRight<SubOp>(xa.AsSpan(xo + r * v, v), s[so + 2 * rows + r], pr);
                Simd.Map<ExpOp>(pr, pr);                 // softmax row, recomputed
                Simd.ScaleAddInto(pr, c, dr);
                dr[targets[r]] -= c;
            }
            BufferPool.Return(p);
        }
    }

    /// <summary>
    /// Log-probability of the target and entropy per row: both (2, N) = [log p(target), H]; s (3, N) = [targets, lse, ·]
    /// receives lse. H = log Z − Σ e·d / Z on the shifted logits d = x − max, so large logits do not cancel. With
    /// scale ≠ 1 each row is first multiplied by it (the logits' temperature), as <c>Ops.MulScalar</c> would.
    /// </summary>
    public static void TokenLogProbsForward(int rows, int v, float[] x, int xo, float[] both, int bo, float[] s, int so, float scale = 1f)
        => ParallelFor.Run(rows, RowGrain(v), new TokenLogProbsForwardWork(rows, v, x, xo, both, bo, s, so, scale));

    private readonly struct TokenLogProbsForwardWork(int rows, int v, float[] xa, int xo, float[] ba, int bo, float[] s, int so, float scale) : IRangeWork
    {
        public void Run(int start, int end)
        {
            var targets = Targets(s, so, rows);
            var d = BufferPool.Rent(v);
            var ex = BufferPool.Rent(v);
            for (int r = start; r < end; r++)
            {
                ReadOnlySpan<float> xr = xa.AsSpan(xo + r * v, v);
                var dr = d.AsSpan(0, v); var er = ex.AsSpan(0, v);
                if (scale != 1f)
                {
                    Simd.ZipScalarRight<MulOp>(xr, scale, dr);
                    xr = dr;
                }
                float max = Simd.Max(xr);
                Simd.ZipScalarRight<SubOp>(xr, max, dr);   // d = x − max ≤ 0
                Simd.Map<ExpOp>(dr, er);
                float z = Simd.Sum(er), logZ = MathF.Log(z);
                s[so + rows + r] = max + logZ;
                ba[bo + r] = dr[targets[r]] - logZ;
                ba[bo + rows + r] = logZ - Simd.Dot(dr, er) / z;
            }
            BufferPool.Return(ex);
            BufferPool.Return(d);
        }
    }

    /// <summary>
    /// dx_j += gL·(onehot_j − p_j) − gH·p_j·(log p_j + H) per row, g (2, N) = [gL, gH], s (3, N) = [targets, lse, H];
    /// rows whose gL and gH are both 0 are skipped.
    /// </summary>
    public static void TokenLogProbsBackward(int rows, int v, float[] x, int xo, float[] g, int go, float[] s, int so, float[] dx, int dxo, float scale = 1f)
        => ParallelFor.Run(rows, RowGrain(v), new TokenLogProbsBackwardWork(rows, v, x, xo, g, go, s, so, dx, dxo, scale));

    /// <summary>With scale ≠ 1 a row's gradient with respect to the scaled logits is formed in a zeroed row first and then
    /// added times the scale, as <c>Ops.MulScalar</c>'s backward adds it: the same bits as the two ops.</summary>
    private readonly struct TokenLogProbsBackwardWork(int rows, int v, float[] xa, int xo, float[] ga, int go, float[] s, int so, float[] da, int dO, float scale) : IRangeWork
    {
        public void Run(int start, int end)
        {
            var targets = Targets(s, so, rows);
            var d = BufferPool.Rent(v);
            var p = BufferPool.Rent(v);
            var scaled = scale != 1f ? BufferPool.Rent(v) : null;
            for (int r = start; r < end; r++)
            {
                float gl = ga[go + r], gh = ga[go + rows + r];
                if (gl == 0f && gh == 0f) continue;
                var dr = d.AsSpan(0, v); var pr = p.AsSpan(0, v);
                ReadOnlySpan<float> xr = xa.AsSpan(xo + r * v, v);
                var gr = da.AsSpan(dO + r * v, v);
                if (scaled != null)
                {
                    Simd.ZipScalarRight<MulOp>(xr, scale, dr);
                    xr = dr;
                    gr = scaled.AsSpan(0, v);
                    gr.Clear();
                }
                Simd.ZipScalarRight<SubOp>(xr, s[so + rows + r], dr);   // log p
                Simd.Map<ExpOp>(dr, pr);                                // p
                if (gh == 0f) Simd.ScaleAddInto(pr, -gl, gr);
                else
                {
                    // gr −= p ⊙ (gL + gH·(log p + H))
                    TensorPrimitives.Multiply(dr, gh, dr);
                    TensorPrimitives.Add(dr, gl + gh * s[so + 2 * rows + r], dr);
                    TensorPrimitives.Multiply(pr, dr, pr);
                    TensorPrimitives.Subtract(gr, pr, gr);
                }
                gr[targets[r]] += gl;
                if (scaled != null) Simd.ScaleAddInto(gr, scale, da.AsSpan(dO + r * v, v));
            }
            if (scaled != null) BufferPool.Return(scaled);
            BufferPool.Return(p);
            BufferPool.Return(d);
        }
    }
}
