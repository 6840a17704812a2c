namespace AlignSharp.Tests.Engine;

/// <summary>One GEMM test case: C[M, N] (+)= op(A)[M, K] · op(B)[K, N] with leading dimensions, and the helpers the
/// float32 and bf16 GEMM tests share to make and size them.</summary>
internal sealed record GemmCase(bool TransA, bool TransB, int M, int N, int K, int Lda, int Ldb, int Ldc, bool Accumulate)
{
    /// <summary>Uniform values in (-1, 1).</summary>
    public static float[] Random(Random rng, int count)
    {
        var x = new float[count];
        for (int i = 0; i < count; i++) x[i] = (float)(rng.NextDouble() * 2 - 1);
        return x;
    }

    /// <summary>The value of <paramref name="v"/> rounded to 8 significant bits, ties to even (bf16 for normal floats).</summary>
    public static double RoundToBf16(float v)
    {
        if (v == 0 || !float.IsFinite(v)) return v;
        int e = Math.ILogB((double)v);
        double scale = Math.ScaleB(1.0, 7 - e);   // |v|·scale in [128, 256): the integer part holds 8 significant bits
        return Math.Round(v * scale, MidpointRounding.ToEven) / scale;
    }

    /// <summary>A case with tight leading dimensions, or padded by 0–5 elements each.</summary>
    public static GemmCase Make(Random rng, bool ta, bool tb, int m, int n, int k, bool padded, bool accumulate)
    {
        int pad() => padded ? rng.Next(0, 6) : 0;
        return new GemmCase(ta, tb, m, n, k, (ta ? m : k) + pad(), (tb ? k : n) + pad(), n + pad(), accumulate);
    }

    /// <summary>Asserts C[i,j] against Σₚ a·b = <paramref name="sum"/> computed in float64 (Σ|a·b| = <paramref name="mag"/>),
    /// plus C's value before the call when accumulating; the tolerance is that of a float32 accumulation over K.</summary>
    public void AssertElement(float[] c, float[] before, int i, int j, double sum, double mag, string what)
    {
        int ci = i * Ldc + j;
        if (Accumulate) { sum += before[ci]; mag += Math.Abs(before[ci]); }
        double tol = (K + 2) * 6e-8 * mag + 1e-30;
        if (Math.Abs(c[ci] - sum) > tol)
            Xunit.Assert.Fail($"{what} {this}: C[{i},{j}] = {c[ci]:R}, expected {sum:R} (tolerance {tol:E2})");
    }

    /// <summary>Elements spanned by a rows × cols matrix with leading dimension ld.</summary>
    public static int Len(int rows, int ld, int cols) => rows == 0 || cols == 0 ? 0 : (rows - 1) * ld + cols;
}
