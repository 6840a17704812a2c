namespace AlignSharp.Engine.Kernels;

// PLACEHOLDER until the optimised kernel lands from feat/gemm: same API, naive loops.
public static class Gemm
{
    public static void Multiply(bool transA, bool transB, int m, int n, int k,
        ReadOnlySpan<float> a, int lda, ReadOnlySpan<float> b, int ldb, Span<float> c, int ldc, bool accumulate)
        => Reference(transA, transB, m, n, k, a, lda, b, ldb, c, ldc, accumulate);

    public static void MultiplyBatched(int batch, bool transA, bool transB, int m, int n, int k,
        ReadOnlySpan<float> a, int lda, long strideA, ReadOnlySpan<float> b, int ldb, long strideB,
        Span<float> c, int ldc, long strideC, bool accumulate)
    {
        for (int i = 0; i < batch; i++)
            Reference(transA, transB, m, n, k, a[(int)(i * strideA)..], lda, b[(int)(i * strideB)..], ldb, c[(int)(i * strideC)..], ldc, accumulate);
    }

    public static void Reference(bool transA, bool transB, int m, int n, int k,
        ReadOnlySpan<float> a, int lda, ReadOnlySpan<float> b, int ldb, Span<float> c, int ldc, bool accumulate)
    {
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
            {
                float s = 0;
                for (int p = 0; p < k; p++)
                    s += (transA ? a[p * lda + i] : a[i * lda + p]) * (transB ? b[j * ldb + p] : b[p * ldb + j]);
                c[i * ldc + j] = accumulate ? c[i * ldc + j] + s : s;
            }
    }
}
