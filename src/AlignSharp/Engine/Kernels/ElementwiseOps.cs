using System.Runtime.Intrinsics;

namespace AlignSharp.Engine.Kernels;

// Operator structs for the SIMD drivers in Simd. Each is the whole definition of one lane-wise function;
// derivative structs take (upstream gradient, saved value) and return the gradient contribution.

public readonly struct AddOp : IBinaryOp
{
    public static float Apply(float a, float b) => a + b;
    public static Vector256<float> Apply(Vector256<float> a, Vector256<float> b) => a + b;
    public static Vector128<float> Apply(Vector128<float> a, Vector128<float> b) => a + b;
    public static Vector512<float> Apply(Vector512<float> a, Vector512<float> b) => a + b;
}

public readonly struct SubOp : IBinaryOp
{
    public static float Apply(float a, float b) => a - b;
    public static Vector256<float> Apply(Vector256<float> a, Vector256<float> b) => a - b;
    public static Vector128<float> Apply(Vector128<float> a, Vector128<float> b) => a - b;
    public static Vector512<float> Apply(Vector512<float> a, Vector512<float> b) => a - b;
}

public readonly struct MulOp : IBinaryOp
{
    public static float Apply(float a, float b) => a * b;
    public static Vector256<float> Apply(Vector256<float> a, Vector256<float> b) => a * b;
    public static Vector128<float> Apply(Vector128<float> a, Vector128<float> b) => a * b;
    public static Vector512<float> Apply(Vector512<float> a, Vector512<float> b) => a * b;
}

public readonly struct DivOp : IBinaryOp
{
    public static float Apply(float a, float b) => a / b;
    public static Vector256<float> Apply(Vector256<float> a, Vector256<float> b) => a / b;
    public static Vector128<float> Apply(Vector128<float> a, Vector128<float> b) => a / b;
    public static Vector512<float> Apply(Vector512<float> a, Vector512<float> b) => a / b;
}

/// <summary>-a / b: the gradient of a quotient with respect to its divisor, given a = g·(a/b).</summary>
public readonly struct NegDivOp : IBinaryOp
{
    public static float Apply(float a, float b) => -a / b;
    public static Vector256<float> Apply(Vector256<float> a, Vector256<float> b) => -a / b;
    public static Vector128<float> Apply(Vector128<float> a, Vector128<float> b) => -a / b;
    public static Vector512<float> Apply(Vector512<float> a, Vector512<float> b) => -a / b;
}

public readonly struct MinOp : IBinaryOp
{
    public static float Apply(float a, float b) => MathF.Min(a, b);
    public static Vector256<float> Apply(Vector256<float> a, Vector256<float> b) => Vector256.Min(a, b);
    public static Vector128<float> Apply(Vector128<float> a, Vector128<float> b) => Vector128.Min(a, b);
    public static Vector512<float> Apply(Vector512<float> a, Vector512<float> b) => Vector512.Min(a, b);
}

public readonly struct MaxOp : IBinaryOp
{
    public static float Apply(float a, float b) => MathF.Max(a, b);
    public static Vector256<float> Apply(Vector256<float> a, Vector256<float> b) => Vector256.Max(a, b);
    public static Vector128<float> Apply(Vector128<float> a, Vector128<float> b) => Vector128.Max(a, b);
    public static Vector512<float> Apply(Vector512<float> a, Vector512<float> b) => Vector512.Max(a, b);
}

public readonly struct NegOp : IUnaryOp
{
    public static float Apply(float x) => -x;
    public static Vector256<float> Apply(Vector256<float> x) => -x;
    public static Vector128<float> Apply(Vector128<float> x) => -x;
    public static Vector512<float> Apply(Vector512<float> x) => -x;
}

public readonly struct ExpOp : IUnaryOp
{
    public static float Apply(float x) => MathF.Exp(x);
    public static Vector256<float> Apply(Vector256<float> x) => FastMath.Exp(x);
    public static Vector128<float> Apply(Vector128<float> x) => FastMath.Exp(x);
    public static Vector512<float> Apply(Vector512<float> x) => FastMath.Exp(x);
}

public readonly struct LogOp : IUnaryOp
{
    public static float Apply(float x) => MathF.Log(x);
    public static Vector256<float> Apply(Vector256<float> x) => Vector256.Log(x);
    public static Vector128<float> Apply(Vector128<float> x) => Vector128.Log(x);
    public static Vector512<float> Apply(Vector512<float> x) => Vector512.Log(x);
}

public readonly struct SquareOp : IUnaryOp
{
    public static float Apply(float x) => x * x;
    public static Vector256<float> Apply(Vector256<float> x) => x * x;
    public static Vector128<float> Apply(Vector128<float> x) => x * x;
    public static Vector512<float> Apply(Vector512<float> x) => x * x;
}

public readonly struct SqrtOp : IUnaryOp
{
    public static float Apply(float x) => MathF.Sqrt(x);
    public static Vector256<float> Apply(Vector256<float> x) => Vector256.Sqrt(x);
    public static Vector128<float> Apply(Vector128<float> x) => Vector128.Sqrt(x);
    public static Vector512<float> Apply(Vector512<float> x) => Vector512.Sqrt(x);
}

public readonly struct SigmoidOp : IUnaryOp
{
    public static float Apply(float x) => 1f / (1f + MathF.Exp(-x));
    public static Vector256<float> Apply(Vector256<float> x) => Vector256<float>.One / (Vector256<float>.One + FastMath.Exp(-x));
    public static Vector128<float> Apply(Vector128<float> x) => Vector128<float>.One / (Vector128<float>.One + FastMath.Exp(-x));
    public static Vector512<float> Apply(Vector512<float> x) => Vector512<float>.One / (Vector512<float>.One + FastMath.Exp(-x));
}

/// <summary>tanh(x) = 1 − 2/(e^{2x}+1): saturates cleanly to ±1 when e^{2x} over- or underflows.</summary>
public readonly struct TanhOp : IUnaryOp
{
    public static float Apply(float x) => MathF.Tanh(x);
    public static Vector256<float> Apply(Vector256<float> x)
        => Vector256<float>.One - Vector256.Create(2f) / (FastMath.Exp(x + x) + Vector256<float>.One);
    public static Vector128<float> Apply(Vector128<float> x)
        => Vector128<float>.One - Vector128.Create(2f) / (FastMath.Exp(x + x) + Vector128<float>.One);
    public static Vector512<float> Apply(Vector512<float> x)
        => Vector512<float>.One - Vector512.Create(2f) / (FastMath.Exp(x + x) + Vector512<float>.One);
}

/// <summary>log(1+e^x) = max(x,0) + log1p(e^{−|x|}), with log1p(u) = log(1+u)·u/((1+u)−1) to keep tiny u exact.</summary>
public readonly struct SoftplusOp : IUnaryOp
{
    public static float Apply(float x)
    {
        float u = MathF.Exp(-MathF.Abs(x));
        return MathF.Max(x, 0f) + Log1p(u);
    }

    private static float Log1p(float u)
    {
        float w = 1f + u;
        return w == 1f ? u : MathF.Log(w) * u / (w - 1f);
    }

    public static Vector256<float> Apply(Vector256<float> x)
    {
        var u = FastMath.Exp(-Vector256.Abs(x));
        var w = Vector256<float>.One + u;
        var l = Vector256.ConditionalSelect(Vector256.Equals(w, Vector256<float>.One), u, Vector256.Log(w) * u / (w - Vector256<float>.One));
        return Vector256.Max(x, Vector256<float>.Zero) + l;
    }

    public static Vector128<float> Apply(Vector128<float> x)
    {
        var u = FastMath.Exp(-Vector128.Abs(x));
        var w = Vector128<float>.One + u;
        var l = Vector128.ConditionalSelect(Vector128.Equals(w, Vector128<float>.One), u, Vector128.Log(w) * u / (w - Vector128<float>.One));
        return Vector128.Max(x, Vector128<float>.Zero) + l;
    }

    public static Vector512<float> Apply(Vector512<float> x)
    {
        var u = FastMath.Exp(-Vector512.Abs(x));
        var w = Vector512<float>.One + u;
        var l = Vector512.ConditionalSelect(Vector512.Equals(w, Vector512<float>.One), u, Vector512.Log(w) * u / (w - Vector512<float>.One));
        return Vector512.Max(x, Vector512<float>.Zero) + l;
    }
}

public readonly struct ReluOp : IUnaryOp
{
    public static float Apply(float x) => x > 0 ? x : 0f;
    public static Vector256<float> Apply(Vector256<float> x) => Vector256.Max(x, Vector256<float>.Zero);
    public static Vector128<float> Apply(Vector128<float> x) => Vector128.Max(x, Vector128<float>.Zero);
    public static Vector512<float> Apply(Vector512<float> x) => Vector512.Max(x, Vector512<float>.Zero);
}

/// <summary>GPT-2's gelu_new: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))).</summary>
public readonly struct GeluOp : IUnaryOp
{
    internal const float C = 0.7978845608028654f, K = 0.044715f;
    public static float Apply(float x) => 0.5f * x * (1f + MathF.Tanh(C * (x + K * x * x * x)));
    public static Vector256<float> Apply(Vector256<float> x)
        => Vector256.Create(0.5f) * x * (Vector256<float>.One + TanhOp.Apply(Vector256.Create(C) * (x + Vector256.Create(K) * x * x * x)));
    public static Vector128<float> Apply(Vector128<float> x)
        => Vector128.Create(0.5f) * x * (Vector128<float>.One + TanhOp.Apply(Vector128.Create(C) * (x + Vector128.Create(K) * x * x * x)));
    public static Vector512<float> Apply(Vector512<float> x)
        => Vector512.Create(0.5f) * x * (Vector512<float>.One + TanhOp.Apply(Vector512.Create(C) * (x + Vector512.Create(K) * x * x * x)));
}

/// <summary>
/// The exact GELU, x·Φ(x) with Φ the standard normal CDF (PyTorch's gelu, transformers' "gelu"). Φ comes from erfc by
/// the Chebyshev-fitted form t·exp(−z² + P(t)), t = 1/(1 + z/2) (Press et al., "erfcc"), whose relative error is below
/// 1.2e-7 for every z ≥ 0: with z = |x|/√2, Φ(x) = ½·erfc(z) for x &lt; 0 (the tail keeps its relative accuracy) and
/// 1 − ½·erfc(z) for x ≥ 0.
/// </summary>
public readonly struct GeluErfOp : IUnaryOp
{
    internal const float InvSqrt2 = 0.70710678118654752f, InvSqrt2Pi = 0.39894228040143268f;

    // P(t)'s coefficients from the highest power down, for Horner's rule.
    private static readonly float[] P = [0.17087277f, -0.82215223f, 1.48851587f, -1.13520398f, 0.27886807f, -0.18628806f,
        0.09678418f, 0.37409196f, 1.00002368f, -1.26551223f];

    // ½·erfc(z) for z ≥ 0, as t·exp(−z² + P(t)) / 2.
    private static float HalfErfc(float z)
    {
        float t = 1f / (1f + 0.5f * z), p = P[0];
        for (int i = 1; i < P.Length; i++) p = p * t + P[i];
        return 0.5f * t * MathF.Exp(-z * z + p);
    }

    internal static float Phi(float x)
    {
        float e = HalfErfc(MathF.Abs(x) * InvSqrt2);
        return x < 0 ? e : 1f - e;
    }

    internal static Vector512<float> Phi(Vector512<float> x)
    {
        var z = Vector512.Abs(x) * Vector512.Create(InvSqrt2);
        var t = Vector512<float>.One / (Vector512<float>.One + Vector512.Create(0.5f) * z);
        var p = Vector512.Create(P[0]);
        for (int i = 1; i < P.Length; i++) p = p * t + Vector512.Create(P[i]);
        var e = Vector512.Create(0.5f) * t * FastMath.Exp(p - z * z);
        return Vector512.ConditionalSelect(Vector512.LessThan(x, Vector512<float>.Zero), e, Vector512<float>.One - e);
    }

    internal static Vector256<float> Phi(Vector256<float> x)
    {
        var z = Vector256.Abs(x) * Vector256.Create(InvSqrt2);
        var t = Vector256<float>.One / (Vector256<float>.One + Vector256.Create(0.5f) * z);
        var p = Vector256.Create(P[0]);
        for (int i = 1; i < P.Length; i++) p = p * t + Vector256.Create(P[i]);
        var e = Vector256.Create(0.5f) * t * FastMath.Exp(p - z * z);
        return Vector256.ConditionalSelect(Vector256.LessThan(x, Vector256<float>.Zero), e, Vector256<float>.One - e);
    }

    internal static Vector128<float> Phi(Vector128<float> x)
    {
        var z = Vector128.Abs(x) * Vector128.Create(InvSqrt2);
        var t = Vector128<float>.One / (Vector128<float>.One + Vector128.Create(0.5f) * z);
        var p = Vector128.Create(P[0]);
        for (int i = 1; i < P.Length; i++) p = p * t + Vector128.Create(P[i]);
        var e = Vector128.Create(0.5f) * t * FastMath.Exp(p - z * z);
        return Vector128.ConditionalSelect(Vector128.LessThan(x, Vector128<float>.Zero), e, Vector128<float>.One - e);
    }

    public static float Apply(float x) => x * Phi(x);
    public static Vector256<float> Apply(Vector256<float> x) => x * Phi(x);
    public static Vector128<float> Apply(Vector128<float> x) => x * Phi(x);
    public static Vector512<float> Apply(Vector512<float> x) => x * Phi(x);
}

/// <summary>g · d gelu/dx = g·(Φ(x) + x·φ(x)), φ the standard normal density.</summary>
public readonly struct GeluErfGradOp : IBinaryOp
{
    public static float Apply(float g, float x) => g * (GeluErfOp.Phi(x) + x * GeluErfOp.InvSqrt2Pi * MathF.Exp(-0.5f * x * x));
    public static Vector256<float> Apply(Vector256<float> g, Vector256<float> x)
        => g * (GeluErfOp.Phi(x) + x * Vector256.Create(GeluErfOp.InvSqrt2Pi) * FastMath.Exp(Vector256.Create(-0.5f) * x * x));
    public static Vector128<float> Apply(Vector128<float> g, Vector128<float> x)
        => g * (GeluErfOp.Phi(x) + x * Vector128.Create(GeluErfOp.InvSqrt2Pi) * FastMath.Exp(Vector128.Create(-0.5f) * x * x));
    public static Vector512<float> Apply(Vector512<float> g, Vector512<float> x)
        => g * (GeluErfOp.Phi(x) + x * Vector512.Create(GeluErfOp.InvSqrt2Pi) * FastMath.Exp(Vector512.Create(-0.5f) * x * x));
}

/// <summary>g · d gelu_new/dx at x.</summary>
public readonly struct GeluGradOp : IBinaryOp
{
    public static float Apply(float g, float x)
    {
        float t = MathF.Tanh(GeluOp.C * (x + GeluOp.K * x * x * x));
        return g * (0.5f * (1f + t) + 0.5f * x * (1f - t * t) * GeluOp.C * (1f + 3f * GeluOp.K * x * x));
    }

    public static Vector256<float> Apply(Vector256<float> g, Vector256<float> x)
    {
        var one = Vector256<float>.One; var half = Vector256.Create(0.5f); var c = Vector256.Create(GeluOp.C); var k = Vector256.Create(GeluOp.K);
        var t = TanhOp.Apply(c * (x + k * x * x * x));
        return g * (half * (one + t) + half * x * (one - t * t) * c * (one + Vector256.Create(3f) * k * x * x));
    }

    public static Vector128<float> Apply(Vector128<float> g, Vector128<float> x)
    {
        var one = Vector128<float>.One; var half = Vector128.Create(0.5f); var c = Vector128.Create(GeluOp.C); var k = Vector128.Create(GeluOp.K);
        var t = TanhOp.Apply(c * (x + k * x * x * x));
        return g * (half * (one + t) + half * x * (one - t * t) * c * (one + Vector128.Create(3f) * k * x * x));
    }

    public static Vector512<float> Apply(Vector512<float> g, Vector512<float> x)
    {
        var one = Vector512<float>.One; var half = Vector512.Create(0.5f); var c = Vector512.Create(GeluOp.C); var k = Vector512.Create(GeluOp.K);
        var t = TanhOp.Apply(c * (x + k * x * x * x));
        return g * (half * (one + t) + half * x * (one - t * t) * c * (one + Vector512.Create(3f) * k * x * x));
    }
}

public readonly struct SiluOp : IUnaryOp
{
    public static float Apply(float x) => x * SigmoidOp.Apply(x);
    public static Vector256<float> Apply(Vector256<float> x) => x * SigmoidOp.Apply(x);
    public static Vector128<float> Apply(Vector128<float> x) => x * SigmoidOp.Apply(x);
    public static Vector512<float> Apply(Vector512<float> x) => x * SigmoidOp.Apply(x);
}

/// <summary>g · d silu/dx = g·σ(x)·(1 + x·(1 − σ(x))).</summary>
public readonly struct SiluGradOp : IBinaryOp
{
    public static float Apply(float g, float x)
    {
        float s = SigmoidOp.Apply(x);
        return g * s * (1f + x * (1f - s));
    }

    public static Vector256<float> Apply(Vector256<float> g, Vector256<float> x)
    {
        var s = SigmoidOp.Apply(x);
        return g * s * (Vector256<float>.One + x * (Vector256<float>.One - s));
    }

    public static Vector128<float> Apply(Vector128<float> g, Vector128<float> x)
    {
        var s = SigmoidOp.Apply(x);
        return g * s * (Vector128<float>.One + x * (Vector128<float>.One - s));
    }

    public static Vector512<float> Apply(Vector512<float> g, Vector512<float> x)
    {
        var s = SigmoidOp.Apply(x);
        return g * s * (Vector512<float>.One + x * (Vector512<float>.One - s));
    }
}

/// <summary>g·y (exp, given its output).</summary>
public readonly struct MulGradOp : IBinaryOp
{
    public static float Apply(float g, float y) => g * y;
    public static Vector256<float> Apply(Vector256<float> g, Vector256<float> y) => g * y;
    public static Vector128<float> Apply(Vector128<float> g, Vector128<float> y) => g * y;
    public static Vector512<float> Apply(Vector512<float> g, Vector512<float> y) => g * y;
}

/// <summary>g·(1 − y²) (tanh, given its output).</summary>
public readonly struct TanhGradOp : IBinaryOp
{
    public static float Apply(float g, float y) => g * (1f - y * y);
    public static Vector256<float> Apply(Vector256<float> g, Vector256<float> y) => g * (Vector256<float>.One - y * y);
    public static Vector128<float> Apply(Vector128<float> g, Vector128<float> y) => g * (Vector128<float>.One - y * y);
    public static Vector512<float> Apply(Vector512<float> g, Vector512<float> y) => g * (Vector512<float>.One - y * y);
}

/// <summary>g·y·(1 − y) (sigmoid, given its output).</summary>
public readonly struct SigmoidGradOp : IBinaryOp
{
    public static float Apply(float g, float y) => g * y * (1f - y);
    public static Vector256<float> Apply(Vector256<float> g, Vector256<float> y) => g * y * (Vector256<float>.One - y);
    public static Vector128<float> Apply(Vector128<float> g, Vector128<float> y) => g * y * (Vector128<float>.One - y);
    public static Vector512<float> Apply(Vector512<float> g, Vector512<float> y) => g * y * (Vector512<float>.One - y);
}

/// <summary>g·σ(x) (softplus, given its input).</summary>
public readonly struct SoftplusGradOp : IBinaryOp
{
    public static float Apply(float g, float x) => g * SigmoidOp.Apply(x);
    public static Vector256<float> Apply(Vector256<float> g, Vector256<float> x) => g * SigmoidOp.Apply(x);
    public static Vector128<float> Apply(Vector128<float> g, Vector128<float> x) => g * SigmoidOp.Apply(x);
    public static Vector512<float> Apply(Vector512<float> g, Vector512<float> x) => g * SigmoidOp.Apply(x);
}

/// <summary>g·σ(−x) (log-sigmoid, given its input).</summary>
public readonly struct LogSigmoidGradOp : IBinaryOp
{
    public static float Apply(float g, float x) => g * SigmoidOp.Apply(-x);
    public static Vector256<float> Apply(Vector256<float> g, Vector256<float> x) => g * SigmoidOp.Apply(-x);
    public static Vector128<float> Apply(Vector128<float> g, Vector128<float> x) => g * SigmoidOp.Apply(-x);
    public static Vector512<float> Apply(Vector512<float> g, Vector512<float> x) => g * SigmoidOp.Apply(-x);
}

/// <summary>g·[x &gt; 0] (relu, given its input).</summary>
public readonly struct ReluGradOp : IBinaryOp
{
    public static float Apply(float g, float x) => x > 0 ? g : 0f;
    public static Vector256<float> Apply(Vector256<float> g, Vector256<float> x) => Vector256.ConditionalSelect(Vector256.GreaterThan(x, Vector256<float>.Zero), g, Vector256<float>.Zero);
    public static Vector128<float> Apply(Vector128<float> g, Vector128<float> x) => Vector128.ConditionalSelect(Vector128.GreaterThan(x, Vector128<float>.Zero), g, Vector128<float>.Zero);
    public static Vector512<float> Apply(Vector512<float> g, Vector512<float> x) => Vector512.ConditionalSelect(Vector512.GreaterThan(x, Vector512<float>.Zero), g, Vector512<float>.Zero);
}

/// <summary>g / x (log, given its input).</summary>
public readonly struct LogGradOp : IBinaryOp
{
    public static float Apply(float g, float x) => g / x;
    public static Vector256<float> Apply(Vector256<float> g, Vector256<float> x) => g / x;
    public static Vector128<float> Apply(Vector128<float> g, Vector128<float> x) => g / x;
    public static Vector512<float> Apply(Vector512<float> g, Vector512<float> x) => g / x;
}

/// <summary>g·0.5/y (sqrt, given its output).</summary>
public readonly struct SqrtGradOp : IBinaryOp
{
    public static float Apply(float g, float y) => 0.5f * g / y;
    public static Vector256<float> Apply(Vector256<float> g, Vector256<float> y) => Vector256.Create(0.5f) * g / y;
    public static Vector128<float> Apply(Vector128<float> g, Vector128<float> y) => Vector128.Create(0.5f) * g / y;
    public static Vector512<float> Apply(Vector512<float> g, Vector512<float> y) => Vector512.Create(0.5f) * g / y;
}

/// <summary>2·g·x (square, given its input).</summary>
public readonly struct SquareGradOp : IBinaryOp
{
    public static float Apply(float g, float x) => 2f * g * x;
    public static Vector256<float> Apply(Vector256<float> g, Vector256<float> x) => Vector256.Create(2f) * g * x;
    public static Vector128<float> Apply(Vector128<float> g, Vector128<float> x) => Vector128.Create(2f) * g * x;
    public static Vector512<float> Apply(Vector512<float> g, Vector512<float> x) => Vector512.Create(2f) * g * x;
}
