using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace AlignSharp.Engine.Kernels;

/// <summary>
/// Vector e^x without a call: the runtime's Vector512.Exp is a generic helper that does not inline into our
/// loops, and softmax, GELU, sigmoid and the losses spend most of their time in exp.
/// Method: x = n·ln2 + r with |r| ≤ ln2/2 (ln2 split into a high part exact in float and a low correction),
/// e^r by a degree-6 minimax polynomial (Cephes expf coefficients), then scale by 2^n through the exponent
/// bits. Max relative error ≈ 2 ulp on [−87.3, 88.37]; below that 0, above it +∞, NaN stays NaN.
/// </summary>
public static class FastMath
{
    private const float Log2E = 1.44269504088896341f;
    private const float Ln2Hi = 0.693359375f;
    private const float Ln2Lo = -2.12194440e-4f;
    // Above Hi, n would reach 128 (no exponent field for 2^n): those inputs, within 0.35 of float overflow, give +∞.
    private const float Lo = -87.33654f, Hi = 88.37626f;
    private const float P0 = 1.9875691500E-4f, P1 = 1.3981999507E-3f, P2 = 8.3334519073E-3f,
                        P3 = 4.1665795894E-2f, P4 = 1.6666665459E-1f, P5 = 5.0000001201E-1f;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Exp(Vector512<float> x)
    {
        var xc = Vector512.Min(Vector512.Max(x, Vector512.Create(Lo)), Vector512.Create(Hi));
        var n = Vector512.Round(xc * Vector512.Create(Log2E));
        var r = Vector512.FusedMultiplyAdd(n, Vector512.Create(-Ln2Hi), xc);
        r = Vector512.FusedMultiplyAdd(n, Vector512.Create(-Ln2Lo), r);
        var p = Vector512.FusedMultiplyAdd(Vector512.Create(P0), r, Vector512.Create(P1));
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(P2));
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(P3));
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(P4));
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(P5));
        var y = Vector512.FusedMultiplyAdd(p, r * r, r + Vector512<float>.One);
        var scale = (Vector512.ConvertToInt32(n) + Vector512.Create(127)) << 23;
        var result = y * scale.AsSingle();
        result = Vector512.ConditionalSelect(Vector512.LessThan(x, Vector512.Create(Lo)), Vector512<float>.Zero, result);
        result = Vector512.ConditionalSelect(Vector512.GreaterThan(x, Vector512.Create(Hi)), Vector512.Create(float.PositiveInfinity), result);
        return Vector512.ConditionalSelect(Vector512.Equals(x, x), result, x);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Exp(Vector256<float> x)
    {
        var xc = Vector256.Min(Vector256.Max(x, Vector256.Create(Lo)), Vector256.Create(Hi));
        var n = Vector256.Round(xc * Vector256.Create(Log2E));
        var r = Vector256.FusedMultiplyAdd(n, Vector256.Create(-Ln2Hi), xc);
        r = Vector256.FusedMultiplyAdd(n, Vector256.Create(-Ln2Lo), r);
        var p = Vector256.FusedMultiplyAdd(Vector256.Create(P0), r, Vector256.Create(P1));
        p = Vector256.FusedMultiplyAdd(p, r, Vector256.Create(P2));
        p = Vector256.FusedMultiplyAdd(p, r, Vector256.Create(P3));
        p = Vector256.FusedMultiplyAdd(p, r, Vector256.Create(P4));
        p = Vector256.FusedMultiplyAdd(p, r, Vector256.Create(P5));
        var y = Vector256.FusedMultiplyAdd(p, r * r, r + Vector256<float>.One);
        var scale = (Vector256.ConvertToInt32(n) + Vector256.Create(127)) << 23;
        var result = y * scale.AsSingle();
        result = Vector256.ConditionalSelect(Vector256.LessThan(x, Vector256.Create(Lo)), Vector256<float>.Zero, result);
        result = Vector256.ConditionalSelect(Vector256.GreaterThan(x, Vector256.Create(Hi)), Vector256.Create(float.PositiveInfinity), result);
        return Vector256.ConditionalSelect(Vector256.Equals(x, x), result, x);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> Exp(Vector128<float> x)
    {
        var xc = Vector128.Min(Vector128.Max(x, Vector128.Create(Lo)), Vector128.Create(Hi));
        var n = Vector128.Round(xc * Vector128.Create(Log2E));
        var r = Vector128.FusedMultiplyAdd(n, Vector128.Create(-Ln2Hi), xc);
        r = Vector128.FusedMultiplyAdd(n, Vector128.Create(-Ln2Lo), r);
        var p = Vector128.FusedMultiplyAdd(Vector128.Create(P0), r, Vector128.Create(P1));
        p = Vector128.FusedMultiplyAdd(p, r, Vector128.Create(P2));
        p = Vector128.FusedMultiplyAdd(p, r, Vector128.Create(P3));
        p = Vector128.FusedMultiplyAdd(p, r, Vector128.Create(P4));
        p = Vector128.FusedMultiplyAdd(p, r, Vector128.Create(P5));
        var y = Vector128.FusedMultiplyAdd(p, r * r, r + Vector128<float>.One);
        var scale = (Vector128.ConvertToInt32(n) + Vector128.Create(127)) << 23;
        var result = y * scale.AsSingle();
        result = Vector128.ConditionalSelect(Vector128.LessThan(x, Vector128.Create(Lo)), Vector128<float>.Zero, result);
        result = Vector128.ConditionalSelect(Vector128.GreaterThan(x, Vector128.Create(Hi)), Vector128.Create(float.PositiveInfinity), result);
        return Vector128.ConditionalSelect(Vector128.Equals(x, x), result, x);
    }
}
