namespace AlignSharp.Engine.Kernels;

/// <summary>
/// Row kernels of LayerNorm and RMSNorm. Shapes (R rows of C channels, row-major, each array read from its offset):
/// x, y, dy, dx (R, C); w, b, dw, db (C); mean, rstd (R). Forward rows are independent, so they split across threads
/// freely; the weight and bias gradients are sums over rows, so each share sums its rows into its own slot and the
/// slots are added in share order (same result for a given thread count, whatever the timing). Work items are
/// structs and scratch comes from <see cref="BufferPool"/>: a call allocates nothing on the GC heap.
/// </summary>
internal static class NormKernels
{
    private static int RowGrain(int c) => Math.Max(1, 8192 / Math.Max(1, c));

    /// <summary>y = (x − mean)/√(var + eps)·w (+ b), biased variance; saves mean and rstd = 1/√(var + eps) per row.
    /// b: null for no bias.</summary>
    public static void LayerNormForward(int rows, int c, float eps, float[] x, int xo, float[] w, int wo, float[]? b, int bo,
        float[] y, int yo, float[] mean, int mo, float[] rstd, int ro)
        => ParallelFor.Run(rows, RowGrain(c), new LayerNormForwardWork(c, eps, x, xo, w, wo, b, bo, y, yo, mean, mo, rstd, ro));

    private readonly struct LayerNormForwardWork(int c, float eps, float[] x, int xo, float[] w, int wo, float[]? b, int bo,
        float[] y, int yo, float[] mean, int mo, float[] rstd, int ro) : IRangeWork
    {
        public void Run(int start, int end)
        {
            // y = ((x − mean)·rs)·w + b, element by element in that order, as vector passes over the row (which stays in
            // L1): the scalar loops they replace were 2% of a small model's training step.
            var wr = w.AsSpan(wo, c);
            for (int r = start; r < end; r++)
            {
                var xr = x.AsSpan(xo + r * c, c); var yr = y.AsSpan(yo + r * c, c);
                float mu = Simd.Sum(xr) / c;
                Simd.ZipScalarRight<SubOp>(xr, mu, yr);
                float rs = 1f / MathF.Sqrt(Simd.Dot(yr, yr) / c + eps);
                mean[mo + r] = mu; rstd[ro + r] = rs;
                Simd.ZipScalarRight<MulOp>(yr, rs, yr);
                Simd.Zip<MulOp>(yr, wr, yr);
                if (b != null) Simd.AddInto(b.AsSpan(bo, c), yr);
            }
        }
    }

    /// <summary>
    /// LayerNorm backward from the saved mean and rstd: with x̂ = (x − mean)·rstd and d̂ = dy·w,
    /// dx += rstd·(d̂ − mean(d̂) − x̂·mean(d̂·x̂)) (dx = ... when <paramref name="accumulateDx"/> is false),
    /// dw += Σ_rows dy·x̂, db += Σ_rows dy. A null dx / dw / db is not wanted.
    /// </summary>
    public static void LayerNormBackward(int rows, int c, float[] dy, int go, float[] x, int xo, float[] w, int wo,
        float[] mean, int mo, float[] rstd, int ro, float[]? dx, int dxo, bool accumulateDx, Span<float> dw, Span<float> db,
        bool needW, bool needB)
    {
        int shares = ParallelFor.SharesFor(rows, 16);
        var partW = needW ? BufferPool.Rent(shares * c) : null;
        var partB = needB ? BufferPool.Rent(shares * c) : null;
        if (partW != null) Array.Clear(partW, 0, shares * c);
        if (partB != null) Array.Clear(partB, 0, shares * c);
        ParallelFor.Run(shares, 1, new LayerNormBackwardWork(rows, c, shares, dy, go, x, xo, w, wo, mean, mo, rstd, ro, dx, dxo, accumulateDx,
            partW, partB));
        for (int share = 0; share < shares; share++)
        {
            if (partW != null) Simd.AddInto(partW.AsSpan(share * c, c), dw);
            if (partB != null) Simd.AddInto(partB.AsSpan(share * c, c), db);
        }
        if (partW != null) BufferPool.Return(partW);
        if (partB != null) BufferPool.Return(partB);
    }

    private readonly struct LayerNormBackwardWork(int rows, int c, int shares, float[] dy, int go, float[] x, int xo, float[] w, int wo,
        float[] mean, int mo, float[] rstd, int ro, float[]? dx, int dxo, bool accumulateDx, float[]? partW, float[]? partB) : IRangeWork
    {
        public void Run(int s0, int s1)
        {
            var xhatBuffer = BufferPool.Rent(c);
            var dxhatBuffer = BufferPool.Rent(c);
            var xhat = xhatBuffer.AsSpan(0, c);
            var dxhat = dxhatBuffer.AsSpan(0, c);
            var ws = w.AsSpan(wo, c);
            for (int share = s0; share < s1; share++)
            {
                int r0 = (int)((long)rows * share / shares), r1 = (int)((long)rows * (share + 1) / shares);
                var pw = partW != null ? partW.AsSpan(share * c, c) : default;
                var pb = partB != null ? partB.AsSpan(share * c, c) : default;
                for (int r = r0; r < r1; r++)
                {
                    var gr = dy.AsSpan(go + r * c, c); var xr = x.AsSpan(xo + r * c, c);
                    float mu = mean[mo + r], rs = rstd[ro + r];
                    Simd.ZipScalarRight<SubOp>(xr, mu, xhat);
                    Simd.ZipScalarRight<MulOp>(xhat, rs, xhat);
                    Simd.Zip<MulOp>(gr, ws, dxhat);
                    if (partW != null) Simd.ZipAccumulate<MulOp>(gr, xhat, pw);
                    if (partB != null) Simd.AddInto(gr, pb);
                    if (dx == null) continue;
                    float meanD = Simd.Sum(dxhat) / c, meanDX = Simd.Dot(dxhat, xhat) / c;
                    var dr = dx.AsSpan(dxo + r * c, c);
                    // (d̂ − mean(d̂)) − x̂·mean(d̂·x̂), then times rstd: vector passes in place over the row's scratch.
                    Simd.ZipScalarRight<MulOp>(xhat, meanDX, xhat);
                    Simd.ZipScalarRight<SubOp>(dxhat, meanD, dxhat);
                    Simd.Zip<SubOp>(dxhat, xhat, dxhat);
                    if (accumulateDx) Simd.ScaleAddInto(dxhat, rs, dr);
                    else Simd.ZipScalarRight<MulOp>(dxhat, rs, dr);
                }
            }
            BufferPool.Return(xhatBuffer);
            BufferPool.Return(dxhatBuffer);
        }
    }

    /// <summary>y = x·rstd·(offset + w) with rstd = 1/√(mean(x²) + eps), saved per row.</summary>
    public static void RmsNormForward(int rows, int c, float eps, float weightOffset, float[] x, int xo, float[] w, int wo,
        float[] y, int yo, float[] rstd, int ro)
        => ParallelFor.Run(rows, RowGrain(c), new RmsNormForwardWork(c, eps, weightOffset, x, xo, w, wo, y, yo, rstd, ro));

    private readonly struct RmsNormForwardWork(int c, float eps, float weightOffset, float[] x, int xo, float[] w, int wo,
        float[] y, int yo, float[] rstd, int ro) : IRangeWork
    {
        public void Run(int start, int end)
        {
            // y = (x·rs)·(offset + w), element by element in that order, as two vector passes per row.
            ReadOnlySpan<float> wr = w.AsSpan(wo, c);
            float[]? shifted = null;
            if (weightOffset != 0)
            {
                shifted = BufferPool.Rent(c);
                Simd.ZipScalarLeft<AddOp>(weightOffset, wr, shifted.AsSpan(0, c));
                wr = shifted.AsSpan(0, c);
            }
            for (int r = start; r < end; r++)
            {
                var xr = x.AsSpan(xo + r * c, c); var yr = y.AsSpan(yo + r * c, c);
                float rs = 1f / MathF.Sqrt(Simd.Dot(xr, xr) / c + eps);
                rstd[ro + r] = rs;
                Simd.ZipScalarRight<MulOp>(xr, rs, yr);
                Simd.Zip<MulOp>(yr, wr, yr);
            }
            if (shifted != null) BufferPool.Return(shifted);
        }
    }

    /// <summary>
    /// RMSNorm backward from the saved rstd: with x̂ = x·rstd and w' = offset + w,
    /// dx += rstd·(dy·w' − x̂·mean(dy·w'·x̂)) (dx = ... when <paramref name="accumulateDx"/> is false),
    /// dw += Σ_rows dy·x̂; an empty dx / dw is not wanted. Rows in order on the calling thread (dw is one running sum),
    /// each row as vector passes over scratch rows (w', dy·w', x̂, x̂·mean).
    /// </summary>
    public static void RmsNormBackward(int rows, int c, float weightOffset, ReadOnlySpan<float> dy, ReadOnlySpan<float> x,
        ReadOnlySpan<float> w, ReadOnlySpan<float> rstd, Span<float> dx, bool accumulateDx, Span<float> dw)
    {
        var scratch = BufferPool.Rent(4 * c);
        var shifted = scratch.AsSpan(0, c);
        var gw = scratch.AsSpan(c, c);
        var xhat = scratch.AsSpan(2 * c, c);
        var scaled = scratch.AsSpan(3 * c, c);
        Simd.ZipScalarLeft<AddOp>(weightOffset, w[..c], shifted);
        for (int r = 0; r < rows; r++)
        {
            var gr = dy.Slice(r * c, c); var xr = x.Slice(r * c, c);
            float rs = rstd[r];
            Simd.ZipScalarRight<MulOp>(xr, rs, xhat);
            if (!dx.IsEmpty)
            {
                Simd.Zip<MulOp>(gr, shifted, gw);
                float meanDX = Simd.Dot(gw, xhat) / c;
                Simd.ZipScalarRight<MulOp>(xhat, meanDX, scaled);
                Simd.Zip<SubOp>(gw, scaled, gw);
                var dr = dx.Slice(r * c, c);
                if (accumulateDx) Simd.ScaleAddInto(gw, rs, dr);
                else Simd.ZipScalarRight<MulOp>(gw, rs, dr);
            }
            // dw after dx: RmsNorm(v, v) on one row makes them one buffer, which a written dx would otherwise overwrite.
            if (!dw.IsEmpty) Simd.ZipAccumulate<MulOp>(gr, xhat, dw);
        }
        BufferPool.Return(scratch);
    }
}
