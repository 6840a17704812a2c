using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace AlignSharp.Engine.Kernels;

/// <summary>
/// Inverted dropout from a counter-based mask: element i of a call is dropped iff the top 24 bits of
/// <see cref="Hash"/>(seed, i) fall below p·2²⁴, and a kept element is scaled by 1/(1 − p). The mask is a pure function
/// of (seed, p, i), so it is never stored: the backward pass regenerates it, the SIMD widths and the thread count give
/// the same mask bit for bit, and a seed drawn from a seeded <see cref="Random"/> makes a run reproducible.
/// Shapes: x and y (or g and dx) have the same length N; i runs over 0..N−1 in memory order.
/// </summary>
internal static class DropoutKernels
{
    // Below this many elements per thread the wake-up costs more than the loop.
    private const int MinPerThread = 1 << 16;

    /// <summary>
    /// The mask's random bits for element <paramref name="i"/>: the counter i·φ + k0 (φ = 2³²/golden ratio, odd, so a
    /// bijection) through two rounds of the "lowbias32" integer finaliser (xorshift-multiply, constants 0x7feb352d and
    /// 0x846ca68b from C. Wellons' hash-prospector), the second keyed by k1. The scalar reference of every SIMD path.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static uint Hash(uint k0, uint k1, uint i) => Mix(Mix(i * Golden + k0) ^ k1);

    const uint Golden = 0x9E3779B9u, M1 = 0x7feb352du, M2 = 0x846ca68bu;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static uint Mix(uint x)
    {
        x ^= x >> 16; x *= M1;
        x ^= x >> 15; x *= M2;
        return x ^ (x >> 16);
    }

    /// <summary>The drop threshold on the hash's top 24 bits: P(drop) = threshold / 2²⁴ ≈ p.</summary>
    public static uint Threshold(float p) => (uint)Math.Round(p * (double)(1 << 24));

    /// <summary>True where element <paramref name="i"/> is kept (the scalar reference of the mask).</summary>
    public static bool Kept(ulong seed, uint threshold, uint i) => Hash((uint)seed, (uint)(seed >> 32), i) >> 8 >= threshold;

    /// <summary>
    /// y = x ⊙ m, or y += x ⊙ m with <paramref name="accumulate"/> (the backward: dx += g ⊙ m), where m[i] = 0 for a
    /// dropped element and 1/(1 − p) for a kept one; a product, as in PyTorch, so a NaN stays NaN even where dropped. x and y must not overlap unless they are the same span.
    /// </summary>
    public static void Apply(ulong seed, float p, float[] x, int xOffset, float[] y, int yOffset, int n, bool accumulate)
    {
        if (n <= 0) return;
        var work = new ApplyWork(seed, Threshold(p), 1f / (1f - p), x, xOffset, y, yOffset, accumulate);
        ParallelFor.Run(n, MinPerThread, work);
    }

    private readonly struct ApplyWork(ulong seed, uint threshold, float scale, float[] x, int xOffset, float[] y, int yOffset, bool accumulate)
        : IRangeWork
    {
        public void Run(int start, int end) =>
            ApplyRange(seed, threshold, scale, x.AsSpan(xOffset + start, end - start), y.AsSpan(yOffset + start, end - start), (uint)start, accumulate);
    }

    /// <summary>The elements first..first+len−1 of a call: x and y hold exactly those elements.</summary>
    internal static void ApplyRange(ulong seed, uint threshold, float scale, ReadOnlySpan<float> x, Span<float> y, uint first, bool accumulate)
    {
        uint k0 = (uint)seed, k1 = (uint)(seed >> 32);
        int i = 0, n = x.Length;
        ref float xr = ref System.Runtime.InteropServices.MemoryMarshal.GetReference(x);
        ref float yr = ref System.Runtime.InteropServices.MemoryMarshal.GetReference(y);
        // Like Simd's drivers: 16 lanes while they fit, then 8, then 4, then scalar; lane j of a vector holds element i + j.
        if (Simd.UseAvx512)
        {
            var thr = Vector512.Create(threshold);
            var s = Vector512.Create(scale);
            for (; i <= n - 16; i += 16)
            {
                var h = Mix512(Mix512((Vector512<uint>.Indices + Vector512.Create(first + (uint)i)) * Golden + Vector512.Create(k0)) ^ Vector512.Create(k1));
                var v = Vector512.LoadUnsafe(ref xr, (nuint)i) * (Vector512.GreaterThanOrEqual(h >>> 8, thr).AsSingle() & s);
                (accumulate ? v + Vector512.LoadUnsafe(ref yr, (nuint)i) : v).StoreUnsafe(ref yr, (nuint)i);
            }
        }
        if (Simd.UseAvx2)
        {
            var thr = Vector256.Create(threshold);
            var s = Vector256.Create(scale);
            for (; i <= n - 8; i += 8)
            {
                var h = Mix256(Mix256((Vector256<uint>.Indices + Vector256.Create(first + (uint)i)) * Golden + Vector256.Create(k0)) ^ Vector256.Create(k1));
                var v = Vector256.LoadUnsafe(ref xr, (nuint)i) * (Vector256.GreaterThanOrEqual(h >>> 8, thr).AsSingle() & s);
                (accumulate ? v + Vector256.LoadUnsafe(ref yr, (nuint)i) : v).StoreUnsafe(ref yr, (nuint)i);
            }
        }
        if (Simd.UseVector128)
        {
            var thr = Vector128.Create(threshold);
            var s = Vector128.Create(scale);
            for (; i <= n - 4; i += 4)
            {
                var h = Mix128(Mix128((Vector128<uint>.Indices + Vector128.Create(first + (uint)i)) * Golden + Vector128.Create(k0)) ^ Vector128.Create(k1));
                var v = Vector128.LoadUnsafe(ref xr, (nuint)i) * (Vector128.GreaterThanOrEqual(h >>> 8, thr).AsSingle() & s);
                (accumulate ? v + Vector128.LoadUnsafe(ref yr, (nuint)i) : v).StoreUnsafe(ref yr, (nuint)i);
            }
        }
        // Scalar remainder (and the whole range without SIMD): the same hash per element.
        for (; i < n; i++)
        {
            float v = x[i] * (Hash(k0, k1, first + (uint)i) >> 8 >= threshold ? scale : 0f);
            y[i] = accumulate ? y[i] + v : v;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector512<uint> Mix512(Vector512<uint> x)
    {
        x ^= Vector512.ShiftRightLogical(x, 16); x *= M1;
        x ^= Vector512.ShiftRightLogical(x, 15); x *= M2;
        return x ^ Vector512.ShiftRightLogical(x, 16);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector256<uint> Mix256(Vector256<uint> x)
    {
        x ^= Vector256.ShiftRightLogical(x, 16); x *= M1;
        x ^= Vector256.ShiftRightLogical(x, 15); x *= M2;
        return x ^ Vector256.ShiftRightLogical(x, 16);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector128<uint> Mix128(Vector128<uint> x)
    {
        x ^= Vector128.ShiftRightLogical(x, 16); x *= M1;
        x ^= Vector128.ShiftRightLogical(x, 15); x *= M2;
        return x ^ Vector128.ShiftRightLogical(x, 16);
    }
}
