using System.Buffers.Binary;
using System.Numerics.Tensors;
using System.Runtime.InteropServices;
using AlignSharp.Engine.Kernels;

namespace AlignSharp.Models.Checkpoints;

/// <summary>
/// Conversions between float32 and the 16-bit storage formats (little-endian bytes, as safetensors stores them).
/// BF16 is the top half of a float32, so widening is exact; narrowing rounds to nearest, ties to even, like
/// PyTorch's <c>c10::BFloat16</c> (every NaN becomes the quiet NaN 0x7FC0). F16 goes through
/// <see cref="Half"/>, which is IEEE binary16 with round-to-nearest-even, subnormals, inf and NaN.
/// </summary>
public static class FloatFormats
{
    /// <summary>float32 value of a BF16 bit pattern (exact).</summary>
    public static float Bf16ToFloat(ushort bits) => Bf16.ToFloat(bits);

    /// <summary>BF16 bit pattern nearest to <paramref name="value"/> (ties to even; NaN → 0x7FC0).</summary>
    public static ushort FloatToBf16(float value) => Bf16.FromFloat(value);

    /// <summary>float32 value of an IEEE binary16 bit pattern (exact).</summary>
    public static float F16ToFloat(ushort bits) => (float)BitConverter.UInt16BitsToHalf(bits);

    /// <summary>binary16 bit pattern nearest to <paramref name="value"/> (ties to even).</summary>
    public static ushort FloatToF16(float value) => BitConverter.HalfToUInt16Bits((Half)value);

    /// <summary>source: 2·n little-endian BF16 bytes → destination: n floats.</summary>
    internal static void Bf16BytesToFloat(ReadOnlySpan<byte> source, Span<float> destination)
    {
        if (BitConverter.IsLittleEndian)
        {
            var halves = MemoryMarshal.Cast<byte, ushort>(source);
            var words = MemoryMarshal.Cast<float, uint>(destination);
            for (int i = 0; i < words.Length; i++) words[i] = (uint)halves[i] << 16;
            return;
        }
        for (int i = 0; i < destination.Length; i++)
            destination[i] = Bf16ToFloat(BinaryPrimitives.ReadUInt16LittleEndian(source[(2 * i)..]));
    }

    /// <summary>source: 2·n little-endian binary16 bytes → destination: n floats.</summary>
    internal static void F16BytesToFloat(ReadOnlySpan<byte> source, Span<float> destination)
    {
        if (BitConverter.IsLittleEndian)
        {
            TensorPrimitives.ConvertToSingle(MemoryMarshal.Cast<byte, Half>(source), destination);
            return;
        }
        for (int i = 0; i < destination.Length; i++)
            destination[i] = F16ToFloat(BinaryPrimitives.ReadUInt16LittleEndian(source[(2 * i)..]));
    }

    /// <summary>source: 4·n little-endian float32 bytes → destination: n floats.</summary>
    internal static void F32BytesToFloat(ReadOnlySpan<byte> source, Span<float> destination)
    {
        if (BitConverter.IsLittleEndian) { source.CopyTo(MemoryMarshal.AsBytes(destination)); return; }
        for (int i = 0; i < destination.Length; i++)
            destination[i] = BinaryPrimitives.ReadSingleLittleEndian(source[(4 * i)..]);
    }

    /// <summary>source: 8·n little-endian float64 bytes → destination: n floats (rounded).</summary>
    internal static void F64BytesToFloat(ReadOnlySpan<byte> source, Span<float> destination)
    {
        for (int i = 0; i < destination.Length; i++)
            destination[i] = (float)BinaryPrimitives.ReadDoubleLittleEndian(source[(8 * i)..]);
    }

    /// <summary>source: n floats → destination: n·ByteSize(dtype) little-endian bytes of <paramref name="dtype"/>.</summary>
    internal static void FloatToBytes(ReadOnlySpan<float> source, SafetensorsDtype dtype, Span<byte> destination)
    {
        switch (dtype)
        {
            case SafetensorsDtype.F32:
                if (BitConverter.IsLittleEndian) { MemoryMarshal.AsBytes(source).CopyTo(destination); return; }
                for (int i = 0; i < source.Length; i++) BinaryPrimitives.WriteSingleLittleEndian(destination[(4 * i)..], source[i]);
                return;
            case SafetensorsDtype.BF16:
                for (int i = 0; i < source.Length; i++) BinaryPrimitives.WriteUInt16LittleEndian(destination[(2 * i)..], FloatToBf16(source[i]));
                return;
            case SafetensorsDtype.F16:
                for (int i = 0; i < source.Length; i++) BinaryPrimitives.WriteUInt16LittleEndian(destination[(2 * i)..], FloatToF16(source[i]));
                return;
            default:
                throw new ArgumentException($"cannot write float data as {dtype.HeaderName()}; use F32, BF16 or F16", nameof(dtype));
        }
    }
}
