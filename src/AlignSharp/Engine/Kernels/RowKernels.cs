using System.Numerics.Tensors;

namespace AlignSharp.Engine.Kernels;

/// <summary>Numerically stable per-row kernels shared by softmax, log-softmax and the fused losses.</summary>
public static class RowKernels
{
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
}
