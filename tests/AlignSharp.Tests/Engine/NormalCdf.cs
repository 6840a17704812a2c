namespace AlignSharp.Tests.Engine;

/// <summary>The standard normal CDF in double, as the reference of the exact GELU x·Φ(x).</summary>
internal static class NormalCdf
{
    /// <summary>Φ(x) from erf by its series 2/√π·e^(−u²)·Σ 2ⁿu^(2n+1)/(1·3·…·(2n+1)), u = |x|/√2: every term positive, no
    /// cancellation; the lower tail as 1 − Φ(|x|) is exact enough at the tolerances it is used with.</summary>
    public static double Phi(double x)
    {
        double u = Math.Abs(x) / Math.Sqrt(2), term = u, sum = u;
        for (int n = 1; n < 400; n++) { term *= 2 * u * u / (2 * n + 1); sum += term; }
        double erf = 2 / Math.Sqrt(Math.PI) * Math.Exp(-u * u) * sum;
        return x < 0 ? 0.5 * (1 - erf) : 0.5 * (1 + erf);
    }
}
