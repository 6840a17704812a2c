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
    /// Vocabulary positions per tile of a row's reductions (<see cref="TileStats"/>): a row's log-probability and entropy
    /// are made from per-tile statistics, so a scorer that needs no gradient can form the logits a tile at a time and
    /// never hold a whole row of a 150k vocabulary, with the bits of the pass over whole rows.
    /// </summary>
    public const int VocabTile = 1024;

    /// <summary>Tiles of a row of <paramref name="v"/> logits.</summary>
    public static int VocabTiles(int v) => (v + VocabTile - 1) / VocabTile;

    /// <summary>
    /// One tile z of a row (its logits, already scaled): m = max z, s = Σ e, u = Σ d·e with d = z − m and e = exp(d)
    /// (<paramref name="d"/> and <paramref name="e"/>: scratch at least as long as z).
    /// </summary>
    public static void TileStats(ReadOnlySpan<float> z, Span<float> d, Span<float> e, out float m, out float s, out float u)
    {
        d = d[..z.Length]; e = e[..z.Length];
        m = Simd.Max(z);
        Simd.ZipScalarRight<SubOp>(z, m, d);   // d ≤ 0
        Simd.Map<ExpOp>(d, e);
        s = Simd.Sum(e);
        u = Simd.Dot(d, e);
    }

    /// <summary>
    /// A row's (lse, log p(target), H) from its tiles' statistics, added in tile order in double: with M = max m_t and
    /// f_t = exp(m_t − M), Z = Σ f_t·s_t, lse = M + log Z, log p = z_target − lse, and H = log Z − Σ f_t·(u_t + (m_t − M)·s_t) / Z
    /// (shifted logits, so large logits do not cancel).
    /// </summary>
    public static (float Lse, float LogProb, float Entropy) CombineTiles(ReadOnlySpan<float> m, ReadOnlySpan<float> s, ReadOnlySpan<float> u, float zTarget)
    {
        float top = Simd.Max(m);
        double z = 0, w = 0;
        for (int t = 0; t < m.Length; t++)
        {
            double shift = (double)m[t] - top, f = Math.Exp(shift);
            z += f * s[t];
            w += f * (u[t] + shift * s[t]);
        }
        double logZ = Math.Log(z);
        return ((float)(top + logZ), (float)(zTarget - top - logZ), (float)(logZ - w / z));
    }

    /// <summary>
    /// Log-probability of the target and entropy per row: both (2, N) = [log p(target), H]; s (3, N) = [targets, lse, ·]
    /// receives lse. Each row by its tiles (<see cref="TileStats"/>, <see cref="CombineTiles"/>). With scale ≠ 1 each row
    /// is first multiplied by it (the logits' temperature), as <c>Ops.MulScalar</c> would.
    /// </summary>
    public static void TokenLogProbsForward(int rows, int v, float[] x, int xo, float[] both, int bo, float[] s, int so, float scale = 1f)
        => ParallelFor.Run(rows, RowGrain(v), new TokenLogProbsForwardWork(rows, v, x, xo, both, bo, s, so, scale));

    private readonly struct TokenLogProbsForwardWork(int rows, int v, float[] xa, int xo, float[] ba, int bo, float[] s, int so, float scale) : IRangeWork
    {
        public void Run(int start, int end)
        {
            var targets = Targets(s, so, rows);
            int tiles = VocabTiles(v);
            var scaled = scale != 1f ? BufferPool.Rent(v) : null;
            var scratch = BufferPool.Rent(2 * VocabTile + 3 * tiles);
            var d = scratch.AsSpan(0, VocabTile); var e = scratch.AsSpan(VocabTile, VocabTile);
            var m = scratch.AsSpan(2 * VocabTile, tiles); var sums = scratch.AsSpan(2 * VocabTile + tiles, tiles);
            var u = scratch.AsSpan(2 * VocabTile + 2 * tiles, tiles);
            for (int r = start; r < end; r++)
            {
                ReadOnlySpan<float> xr = xa.AsSpan(xo + r * v, v);
                if (scaled != null)
                {
                    Simd.ZipScalarRight<MulOp>(xr, scale, scaled.AsSpan(0, v));
                    xr = scaled.AsSpan(0, v);
                }
                for (int t = 0; t < tiles; t++)
                {
                    int t0 = t * VocabTile;
                    TileStats(xr.Slice(t0, Math.Min(VocabTile, v - t0)), d, e, out m[t], out sums[t], out u[t]);
                }
                var (lse, logProb, entropy) = CombineTiles(m, sums, u, xr[targets[r]]);
                s[so + rows + r] = lse;
                ba[bo + r] = logProb;
                ba[bo + rows + r] = entropy;
            }
            BufferPool.Return(scratch);
            if (scaled != null) BufferPool.Return(scaled);
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
