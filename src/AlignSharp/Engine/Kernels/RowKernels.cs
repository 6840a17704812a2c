using System.Numerics.Tensors;

namespace AlignSharp.Engine.Kernels;

/// <summary>
/// Numerically stable per-row kernels shared by softmax, log-softmax and the fused losses. Shapes: R rows of N,
/// row-major, each array read from its offset. Rows are independent, so they split across threads as struct work items.
/// </summary>
public static class RowKernels
{
    /// <summary>Rows per thread share for a row-wise kernel over rows of length <paramref name="n"/>.</summary>
    internal static int RowGrain(int n, int work = 4096) => Math.Max(1, work / Math.Max(1, n));

    /// <summary>y = softmax(x) for one row.</summary>
    public static void Softmax(ReadOnlySpan<float> x, Span<float> y)
    {
        float max = Simd.Max(x);
        Simd.ZipScalarRight<SubOp>(x, max, y);
        Simd.Map<ExpOp>(y, y);
        float inv = 1f / Simd.Sum(y);
        TensorPrimitives.Multiply(y, inv, y);
    }

    /// <summary>y = log_softmax(x) for one row.</summary>
    public static void LogSoftmax(ReadOnlySpan<float> x, Span<float> y) => Simd.ZipScalarRight<SubOp>(x, LogSumExp(x, y), y);

    /// <summary>log Σ exp(x), using <paramref name="scratch"/> (length ≥ x) for the exponentials.</summary>
    public static float LogSumExp(ReadOnlySpan<float> x, Span<float> scratch)
    {
        float max = Simd.Max(x);
        if (float.IsNegativeInfinity(max)) return max;
        var s = scratch[..x.Length];
        Simd.ZipScalarRight<SubOp>(x, max, s);
        Simd.Map<ExpOp>(s, s);
        return max + MathF.Log(Simd.Sum(s));
    }

    /// <summary>y (R, N) = softmax or log-softmax of x (R, N), row by row.</summary>
    internal static void SoftmaxRows(bool log, int rows, int n, float[] x, int xo, float[] y, int yo)
        => ParallelFor.Run(rows, RowGrain(n), new SoftmaxWork(log, n, x, xo, y, yo));

    private readonly struct SoftmaxWork(bool log, int n, float[] x, int xo, float[] y, int yo) : IRangeWork
    {
        public void Run(int start, int end)
        {
            for (int r = start; r < end; r++)
                if (log) LogSoftmax(x.AsSpan(xo + r * n, n), y.AsSpan(yo + r * n, n));
                else Softmax(x.AsSpan(xo + r * n, n), y.AsSpan(yo + r * n, n));
        }
    }

    /// <summary>
    /// dx (R, N) += the gradient of softmax (log false: dx += y ⊙ (g − Σ g·y)) or log-softmax (log true:
    /// dx += g − exp(y)·Σ g) from its output y and the output gradient g, row by row.
    /// </summary>
    internal static void SoftmaxRowsBackward(bool log, int rows, int n, float[] g, int go, float[] y, int yo, float[] dx, int dxo)
        => ParallelFor.Run(rows, RowGrain(n), new SoftmaxBackwardWork(log, n, g, go, y, yo, dx, dxo));

    private readonly struct SoftmaxBackwardWork(bool log, int n, float[] g, int go, float[] y, int yo, float[] dx, int dxo) : IRangeWork
    {
        public void Run(int start, int end)
        {
            var scratch = BufferPool.Rent(n);
            var tmp = scratch.AsSpan(0, n);
            for (int r = start; r < end; r++)
            {
                var gr = g.AsSpan(go + r * n, n); var yr = y.AsSpan(yo + r * n, n); var dr = dx.AsSpan(dxo + r * n, n);
                if (log)
                {
                    float sum = Simd.Sum(gr);
                    Simd.Map<ExpOp>(yr, tmp);               // softmax, from the log-probabilities
                    Simd.ScaleAddInto(tmp, -sum, dr);
                    Simd.AddInto(gr, dr);
                }
                else
                {
                    float dot = Simd.Dot(gr, yr);
                    Simd.ZipScalarRight<SubOp>(gr, dot, tmp);
                    Simd.ZipAccumulate<MulOp>(tmp, yr, dr);
                }
            }
            BufferPool.Return(scratch);
        }
    }
}
