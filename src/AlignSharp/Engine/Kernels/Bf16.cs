using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace AlignSharp.Engine.Kernels;

/// <summary>
/// bfloat16 storage: the top 16 bits of a float32 (sign, 8 exponent bits, 7 mantissa bits). Widening is a
/// 16-bit shift and exact; narrowing rounds to nearest, ties to even, like PyTorch's <c>c10::BFloat16</c>
/// (every NaN becomes the quiet NaN 0x7FC0). Frozen weights are stored this way and widened inside the kernels
/// (GEMM packing, embedding rows) so that all arithmetic stays float32.
/// </summary>
public static unsafe class Bf16
{
    /// <summary>float32 value of a bf16 bit pattern (exact).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float ToFloat(ushort bits) => BitConverter.UInt32BitsToSingle((uint)bits << 16);

    /// <summary>bf16 bit pattern nearest to <paramref name="value"/> (ties to even; NaN → 0x7FC0).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ushort FromFloat(float value)
    {
        uint bits = BitConverter.SingleToUInt32Bits(value);
        if (float.IsNaN(value)) return 0x7FC0;
        // Adding 0x7FFF rounds up exactly when the dropped half is > 0x8000; the low kept bit breaks the tie.
        uint roundingBias = 0x7FFFu + ((bits >> 16) & 1u);
        return (ushort)((bits + roundingBias) >> 16);
    }

    /// <summary>destination[i] = bf16 nearest to source[i].</summary>
    public static void Narrow(ReadOnlySpan<float> source, Span<ushort> destination)
    {
        if (destination.Length < source.Length) throw new ArgumentException($"destination holds {destination.Length} values, source has {source.Length}.", nameof(destination));
        for (int i = 0; i < source.Length; i++) destination[i] = FromFloat(source[i]);
    }

    /// <summary>destination[i] = float32 of source[i] (exact).</summary>
    public static void Widen(ReadOnlySpan<ushort> source, Span<float> destination)
    {
        if (destination.Length < source.Length) throw new ArgumentException($"destination holds {destination.Length} values, source has {source.Length}.", nameof(destination));
        fixed (ushort* s = source)
        fixed (float* d = destination)
            Widen(s, d, source.Length);
    }

    /// <summary>
    /// d[i] = float32 of s[i] for i &lt; n: zero-extend each 16-bit lane to 32 bits and shift it into the high
    /// half (Vector512: 32 values per step as two 16-lane halves; Vector256: 16; then one at a time).
    /// </summary>
    internal static void Widen(ushort* s, float* d, int n)
    {
        int i = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            for (; i + 32 <= n; i += 32)
            {
                var (lo, hi) = Vector512.Widen(Vector512.Load(s + i));
                Vector512.ShiftLeft(lo, 16).AsSingle().Store(d + i);
                Vector512.ShiftLeft(hi, 16).AsSingle().Store(d + i + 16);
            }
        }
        if (Vector256.IsHardwareAccelerated)
        {
            for (; i + 16 <= n; i += 16)
            {
                var (lo, hi) = Vector256.Widen(Vector256.Load(s + i));
                Vector256.ShiftLeft(lo, 16).AsSingle().Store(d + i);
                Vector256.ShiftLeft(hi, 16).AsSingle().Store(d + i + 8);
            }
        }
        for (; i < n; i++) ((uint*)d)[i] = (uint)s[i] << 16;
    }
}
