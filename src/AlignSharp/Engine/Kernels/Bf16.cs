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

    /// <summary>destination[i] = source[i] rounded to the nearest bf16 value, as float32 (<see cref="Narrow(ReadOnlySpan{float}, Span{ushort})"/>
    /// then <see cref="Widen(ReadOnlySpan{ushort}, Span{float})"/>); the spans may be the same.</summary>
    public static void Round(ReadOnlySpan<float> source, Span<float> destination)
    {
        if (destination.Length < source.Length) throw new ArgumentException($"destination holds {destination.Length} values, source has {source.Length}.", nameof(destination));
        Span<ushort> bits = stackalloc ushort[512];
        for (int i = 0; i < source.Length; i += bits.Length)
        {
            int n = Math.Min(bits.Length, source.Length - i);
            Narrow(source.Slice(i, n), bits);
            Widen(bits[..n], destination.Slice(i, n));
        }
    }

    /// <summary>destination[i] = bf16 nearest to source[i].</summary>
    public static void Narrow(ReadOnlySpan<float> source, Span<ushort> destination)
    {
        if (destination.Length < source.Length) throw new ArgumentException($"destination holds {destination.Length} values, source has {source.Length}.", nameof(destination));
        fixed (float* s = source)
        fixed (ushort* d = destination)
            Narrow(s, d, source.Length);
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
    /// half (Vector512: 32 values per step as two 16-lane halves; Vector256: 16; Vector128: 8; then one at a time).
    /// Each width runs where the hardware has it and the calling thread's <see cref="Simd.UseWidth"/> allows it.
    /// </summary>
    internal static void Widen(ushort* s, float* d, int n)
    {
        int i = 0;
        if (Simd.UseAvx512)
        {
            for (; i + 32 <= n; i += 32) Widen32(s + i, d + i);
        }
        if (Simd.UseAvx2)
        {
            for (; i + 16 <= n; i += 16)
            {
                var (lo, hi) = Vector256.Widen(Vector256.Load(s + i));
                Vector256.ShiftLeft(lo, 16).AsSingle().Store(d + i);
                Vector256.ShiftLeft(hi, 16).AsSingle().Store(d + i + 8);
            }
        }
        if (Simd.UseVector128)
        {
            for (; i + 8 <= n; i += 8)
            {
                var (lo, hi) = Vector128.Widen(Vector128.Load(s + i));
                Vector128.ShiftLeft(lo, 16).AsSingle().Store(d + i);
                Vector128.ShiftLeft(hi, 16).AsSingle().Store(d + i + 4);
            }
        }
        for (; i < n; i++) ((uint*)d)[i] = (uint)s[i] << 16;
    }

    /// <summary>d[0..32) = float32 of s[0..32) in 512-bit registers (zero-extend, shift into the high half); callers check
    /// that Vector512 is accelerated.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void Widen32(ushort* s, float* d)
    {
        var (lo, hi) = Vector512.Widen(Vector512.Load(s));
        Vector512.ShiftLeft(lo, 16).AsSingle().Store(d);
        Vector512.ShiftLeft(hi, 16).AsSingle().Store(d + 16);
    }

    /// <summary>
    /// d[i] = bf16 nearest to s[i] for i &lt; n, as <see cref="FromFloat"/>: add 0x7FFF plus the lowest kept bit (round
    /// half to even), keep the top 16 bits, and put the quiet NaN 0x7FC0 wherever s[i] ≠ s[i]. Lanes of 32-bit words are
    /// narrowed pairwise into 16-bit lanes (Vector256: 16 values per step from two 8-lane halves; Vector128: 8), then one
    /// at a time. Narrowing after the shift is exact (every shifted word fits 16 bits).
    /// </summary>
    internal static void Narrow(float* s, ushort* d, int n)
    {
        int i = 0;
        if (Simd.UseAvx2)
        {
            for (; i + 16 <= n; i += 16)
                Vector256.Narrow(NarrowLanes(Vector256.Load(s + i)), NarrowLanes(Vector256.Load(s + i + 8))).Store(d + i);
        }
        if (Simd.UseVector128)
        {
            for (; i + 8 <= n; i += 8)
                Vector128.Narrow(NarrowLanes(Vector128.Load(s + i)), NarrowLanes(Vector128.Load(s + i + 4))).Store(d + i);
        }
        for (; i < n; i++) d[i] = FromFloat(s[i]);
    }

    /// <summary>One lane group of <see cref="Narrow(float*, ushort*, int)"/>: the rounded bf16 pattern in each 32-bit lane's low half.</summary>
    private static Vector256<uint> NarrowLanes(Vector256<float> x)
    {
        var bits = x.AsUInt32();
        var rounded = Vector256.ShiftRightLogical(bits + Vector256.Create(0x7FFFu) + (Vector256.ShiftRightLogical(bits, 16) & Vector256<uint>.One), 16);
        return Vector256.ConditionalSelect(Vector256.Equals(x, x).AsUInt32(), rounded, Vector256.Create(0x7FC0u));
    }

    private static Vector128<uint> NarrowLanes(Vector128<float> x)
    {
        var bits = x.AsUInt32();
        var rounded = Vector128.ShiftRightLogical(bits + Vector128.Create(0x7FFFu) + (Vector128.ShiftRightLogical(bits, 16) & Vector128<uint>.One), 16);
        return Vector128.ConditionalSelect(Vector128.Equals(x, x).AsUInt32(), rounded, Vector128.Create(0x7FC0u));
    }
}
