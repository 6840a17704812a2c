namespace AlignSharp.Engine.Kernels;

/// <summary>
/// Elementwise and per-row kernels whose operation carries a runtime parameter (bounds, a cap, a mask, a fill value), so
/// they are loops here rather than operator structs for <see cref="Simd"/>. Shapes: every span of one call has the same
/// length unless a summary says rows: R rows of N. Gradients accumulate (+=).
/// </summary>
internal static class PointwiseKernels
{
    /// <summary>dx += g·(1 − (y / cap)²): the backward of y = cap·tanh(x / cap) from its output.</summary>
    public static void SoftCapBackward(ReadOnlySpan<float> g, ReadOnlySpan<float> y, float cap, Span<float> dx)
    {
        for (int i = 0; i < g.Length; i++)
        {
            float th = y[i] / cap;
            dx[i] += g[i] * (1f - th * th);
        }
    }

    /// <summary>y = min(max(x, lo), hi).</summary>
    public static void Clamp(ReadOnlySpan<float> x, float lo, float hi, Span<float> y)
    {
        for (int i = 0; i < x.Length; i++) y[i] = MathF.Min(MathF.Max(x[i], lo), hi);
    }

    /// <summary>dx += g where lo ≤ x ≤ hi (the gradient passes at the bounds, as in PyTorch).</summary>
    public static void ClampBackward(ReadOnlySpan<float> g, ReadOnlySpan<float> x, float lo, float hi, Span<float> dx)
    {
        for (int i = 0; i < g.Length; i++) if (x[i] >= lo && x[i] <= hi) dx[i] += g[i];
    }

    /// <summary>y = mask ≠ 0 ? a : b.</summary>
    public static void Select(ReadOnlySpan<float> mask, ReadOnlySpan<float> a, ReadOnlySpan<float> b, Span<float> y)
    {
        for (int i = 0; i < y.Length; i++) y[i] = mask[i] != 0 ? a[i] : b[i];
    }

    /// <summary>dx += g where (mask ≠ 0) == <paramref name="whereSet"/>: the gradient of one side of a select.</summary>
    public static void AccumulateWhere(ReadOnlySpan<float> g, ReadOnlySpan<float> mask, bool whereSet, Span<float> dx)
    {
        for (int i = 0; i < g.Length; i++) if (mask[i] != 0 == whereSet) dx[i] += g[i];
    }

    /// <summary>y = mask ≠ 0 ? value : x.</summary>
    public static void MaskedFill(ReadOnlySpan<float> x, ReadOnlySpan<float> mask, float value, Span<float> y)
    {
        for (int i = 0; i < y.Length; i++) y[i] = mask[i] != 0 ? value : x[i];
    }

    /// <summary>y[r] = Σ x[r, ·] over R rows of N.</summary>
    public static void SumRows(int rows, int n, ReadOnlySpan<float> x, Span<float> y)
    {
        for (int r = 0; r < rows; r++) y[r] = Simd.Sum(x.Slice(r * n, n));
    }

    /// <summary>y[r] = max x[r, ·] over R rows of N.</summary>
    public static void MaxRows(int rows, int n, ReadOnlySpan<float> x, Span<float> y)
    {
        for (int r = 0; r < rows; r++) y[r] = Simd.Max(x.Slice(r * n, n));
    }

    /// <summary>index[r] = the first position of the maximum of x[r, ·] over R rows of N.</summary>
    public static void ArgMaxRows(int rows, int n, ReadOnlySpan<float> x, Span<int> index)
    {
        for (int r = 0; r < rows; r++)
        {
            var row = x.Slice(r * n, n);
            int best = 0;
            for (int i = 1; i < n; i++) if (row[i] > row[best]) best = i;
            index[r] = best;
        }
    }

    /// <summary>dx[r, ·] += g[r] over R rows of N: the backward of a row sum (a whole-tensor sum is one row).</summary>
    public static void BroadcastRowsInto(int rows, int n, ReadOnlySpan<float> g, Span<float> dx)
    {
        for (int r = 0; r < rows; r++)
        {
            var row = dx.Slice(r * n, n);
            Simd.ZipScalarRight<AddOp>(row, g[r], row);
        }
    }

    /// <summary>y[r, ·] = v over R rows of N (a bias written into every row before the product accumulates onto it).</summary>
    public static void FillRows(int rows, int n, ReadOnlySpan<float> v, Span<float> y)
    {
        for (int r = 0; r < rows; r++) v.CopyTo(y.Slice(r * n, n));
    }

    /// <summary>acc += Σ_r x[r, ·] over R rows of N, in row order (a bias gradient).</summary>
    public static void SumRowsInto(int rows, int n, ReadOnlySpan<float> x, Span<float> acc)
    {
        for (int r = 0; r < rows; r++) Simd.AddInto(x.Slice(r * n, n), acc);
    }
}
