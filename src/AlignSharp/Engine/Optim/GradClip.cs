using System.Buffers;
using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using AlignSharp.Engine.Kernels;

namespace AlignSharp.Engine.Optim;

public static class GradClip
{
    /// <summary>Elements per block of the norm reduction; blocks are fixed, so the sum does not depend on thread count.</summary>
    private const int Block = 1 << 16;

    /// <summary>
    /// Clips gradients by their global L2 norm, as PyTorch's <c>clip_grad_norm_</c>: the norm is taken over all
    /// gradients together (parameters whose <see cref="Tensor.Grad"/> is null are left out), and when it exceeds
    /// <paramref name="maxNorm"/> every gradient is multiplied by <c>maxNorm / (norm + 1e-6)</c>.
    /// Returns the norm before clipping. Squares are summed in float64, in fixed blocks combined in order, so the
    /// result is the same for any thread count. A non-finite norm (a NaN or ∞ gradient, or overflow) is returned as
    /// is and nothing is scaled, so the caller can detect it and skip the step.
    /// </summary>
    public static float ClipGradNorm(IEnumerable<Tensor> parameters, float maxNorm)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        OptionChecks.Positive(maxNorm, nameof(maxNorm));
        var ps = parameters as IReadOnlyList<Tensor> ?? parameters.ToArray();
        double norm = GlobalNorm(ps);
        if (!double.IsFinite(norm)) return (float)norm;

        double coefficient = maxNorm / (norm + 1e-6);
        if (coefficient < 1)
        {
            float c = (float)coefficient;
            for (int i = 0; i < ps.Count; i++)
                if (ps[i].Grad is { } g) ParallelFor.Run(g.Length, Block, new ScaleWork(g.Array, g.Offset, c));
        }
        return (float)norm;
    }

    /// <summary>
    /// The global L2 norm of the gradients (parameters without one left out), without clipping: what
    /// <see cref="ClipGradNorm"/> returns, for "no clipping". Float64, fixed blocks, so independent of the thread count.
    /// </summary>
    public static double GlobalNorm(IReadOnlyList<Tensor> parameters)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        double sumSquares = 0;
        for (int i = 0; i < parameters.Count; i++)
            if (parameters[i].Grad is { } g) sumSquares += SumOfSquares(g);
        return Math.Sqrt(sumSquares);
    }

    /// <summary>Σ x² in float64 over a tensor: fixed blocks of <see cref="Block"/> elements, summed in parallel, combined in index order.</summary>
    internal static double SumOfSquares(Tensor t)
    {
        int n = t.Length;
        int blocks = (n + Block - 1) / Block;
        if (blocks <= 1) return SumOfSquares(t.Span);
        var partials = ArrayPool<double>.Shared.Rent(blocks);
        try
        {
            ParallelFor.Run(blocks, 1, new SumSquaresWork(t.Array, t.Offset, n, partials));
            double total = 0;
            for (int b = 0; b < blocks; b++) total += partials[b];
            return total;
        }
        finally
        {
            ArrayPool<double>.Shared.Return(partials);
        }
    }

    /// <summary>
    /// Σ x² in float64. Lanes: 16 (or 8, or 4) floats are widened into two double vectors, each with its own
    /// accumulator; the accumulators are added and reduced at the end, then the scalar remainder is added.
    /// </summary>
    internal static double SumOfSquares(ReadOnlySpan<float> x)
    {
        ref float xr = ref MemoryMarshal.GetReference(x);
        int n = x.Length, i = 0;
        double total = 0;
        if (Simd.UseAvx512 && n >= 16)
        {
            var lo = Vector512<double>.Zero;
            var hi = Vector512<double>.Zero;
            for (; i <= n - 16; i += 16)
            {
                var (a, b) = Vector512.Widen(Vector512.LoadUnsafe(ref xr, (nuint)i));
                lo = Vector512.FusedMultiplyAdd(a, a, lo);
                hi = Vector512.FusedMultiplyAdd(b, b, hi);
            }
            total = Vector512.Sum(lo + hi);
        }
        else if (Simd.UseAvx2 && n >= 8)
        {
            var lo = Vector256<double>.Zero;
            var hi = Vector256<double>.Zero;
            for (; i <= n - 8; i += 8)
            {
                var (a, b) = Vector256.Widen(Vector256.LoadUnsafe(ref xr, (nuint)i));
                lo = Vector256.FusedMultiplyAdd(a, a, lo);
                hi = Vector256.FusedMultiplyAdd(b, b, hi);
            }
            total = Vector256.Sum(lo + hi);
        }
        else if (Simd.UseVector128 && n >= 4)
        {
            var lo = Vector128<double>.Zero;
            var hi = Vector128<double>.Zero;
            for (; i <= n - 4; i += 4)
            {
                var (a, b) = Vector128.Widen(Vector128.LoadUnsafe(ref xr, (nuint)i));
                lo = Vector128.FusedMultiplyAdd(a, a, lo);
                hi = Vector128.FusedMultiplyAdd(b, b, hi);
            }
            total = Vector128.Sum(lo + hi);
        }
        for (; i < n; i++)
        {
            double v = Unsafe.Add(ref xr, i);
            total += v * v;
        }
        return total;
    }

    private readonly struct SumSquaresWork(float[] data, int offset, int length, double[] partials) : IRangeWork
    {
        public void Run(int start, int end)
        {
            for (int b = start; b < end; b++)
            {
                int from = b * Block;
                partials[b] = SumOfSquares(data.AsSpan(offset + from, Math.Min(Block, length - from)));
            }
        }
    }

    private readonly struct ScaleWork(float[] data, int offset, float factor) : IRangeWork
    {
        public void Run(int start, int end)
        {
            var s = data.AsSpan(offset + start, end - start);
            TensorPrimitives.Multiply(s, factor, s);
        }
    }
}
