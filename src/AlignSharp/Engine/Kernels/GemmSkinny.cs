using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace AlignSharp.Engine.Kernels;

/// <summary>
/// Products with at most four rows of C (decoding: one token per sequence; up to eight while B fits in L2), AVX-512 only. They are bound by
/// reading B once, so B is streamed in place instead of packed, and no MR-tall tile is padded with zero rows.
/// <code>
///   NN (B [k,n]): 4×64 (then 4×16, then scalar) column strips; per k step one B row strip is loaded and each
///                 A value is broadcast. Same FMA chain per element as the blocked path: bitwise equal results.
///   NT (B [n,k], A not transposed): dot products of A rows with 4 B rows at a time, 16 lanes of k at once,
///                 then a horizontal sum and a scalar tail (a different summation order from the blocked path).
///                 With k ≤ 64 (a LoRA adapter's B [out, r]) 16 B rows are transposed into a k×16 panel instead and
///                 multiplied as NN: the blocked path's chain, bitwise equal results.
/// </code>
/// Rows are taken four at a time; in a group of fewer, missing rows read row 0 again (their results are dropped).
/// </summary>
internal static unsafe class GemmSkinny
{
    /// <summary>Up to 4 rows always; 5..8 rows (two passes over B) only while B fits in L2 (k·n ≤ 256 Ki floats).</summary>
    public static bool Applies(bool transA, bool transB, int m, int n, int k) =>
        Avx512F.IsSupported && !(transA && transB) && (m <= 4 || (m <= 8 && (long)k * n <= 256 * 1024));

    public static void Run(bool transA, bool transB, int m, int n, int k, float* a, nint lda, float* b, nint ldb,
        float* c, nint ldc, bool accumulate)
    {
        var work = new Strips(transA, transB, m, n, k, a, lda, b, ldb, c, ldc, accumulate);
        int units = transB && k > SmallK ? (n + 3) / 4 : (n + 15) / 16;
        Gemm.RunStreaming(units, (long)m * n * k, (long)n * k * sizeof(float), work);
    }

    /// <summary>The largest k of an NT product that goes through a transposed panel (k × 16 floats on the stack).</summary>
    internal const int SmallK = 64;

    /// <summary>Whether <see cref="Gemm.Multiply"/> of an NT product m×n×k runs <see cref="AddNTSmallK"/>'s strips (the AVX-512
    /// path, this class, a transposed panel), so that columns added by AddNTSmallK get its bits.</summary>
    internal static bool RunsNTSmallK(int m, int n, int k) => Gemm.ActivePath == GemmPath.Avx512 && k <= SmallK && Applies(false, true, m, n, k);

    /// <summary>
    /// Columns [j0, j1) of C += A·Bᵀ (A [m, k], B [n, k], k ≤ <see cref="SmallK"/>, m ≤ 8) on the calling thread: what
    /// <see cref="Run"/> gives those columns, bit for bit, without a parallel region (a decoding product adding a LoRA
    /// term to the columns a thread has just made: <see cref="Bf16Dot.LowRank"/>).
    /// </summary>
    internal static void AddNTSmallK(int m, int k, float* a, nint lda, float* b, nint ldb, float* c, nint ldc, int j0, int j1)
    {
        if (k > SmallK || m > 8) throw new ArgumentException($"AddNTSmallK: k {k} > {SmallK} or m {m} > 8.");
        new Strips(false, true, m, j1, k, a, lda, b, ldb, c, ldc, accumulate: true).RunNTSmallK(j0, j1);
    }

    private readonly struct Strips(bool transA, bool transB, int m, int n, int k, float* a, nint lda, float* b, nint ldb,
        float* c, nint ldc, bool accumulate) : IChunkWork
    {
        public void Run(int start, int end, int streamEnd)
        {
            if (transB && k <= SmallK)
            {
                RunNTSmallK(start * 16, Math.Min(n, end * 16));
                return;
            }
            for (int r0 = 0; r0 < m; r0 += 4)
            {
                if (transB) Group(r0).RunNT(start * 4, Math.Min(n, end * 4));
                else Group(r0).RunNN(start * 16, Math.Min(n, end * 16));
            }
        }

        /// <summary>Rows r0..r0+3 (fewer at the end): A and C are views at row r0.</summary>
        private Strips Group(int r0) => new(transA, transB, Math.Min(4, m - r0), n, k, a + (transA ? r0 : r0 * lda), lda, b, ldb,
            c + r0 * ldc, ldc, accumulate);

        /// <summary>
        /// Columns [j0, j1) of C = A·Bᵀ with k ≤ <see cref="SmallK"/>. There a B row is one vector or a few, and
        /// <see cref="RunNT"/>'s horizontal sum per element of C costs more than its products (a rank-16 LoRA term at
        /// 4 × 4,864: 34 µs against 5 for the same product NN). Sixteen B rows at a time are transposed into a k×16
        /// panel (8×8 blocks through registers) that every row group then multiplies as <see cref="RunNN"/> multiplies
        /// rows of B: per element the blocked path's FMA chain, so its bits.
        /// </summary>
        internal void RunNTSmallK(int j0, int j1)
        {
            float* panel = stackalloc float[SmallK * 16];
            int k8 = k & ~7, j = j0;
            for (; j + 16 <= j1; j += 16)
            {
                float* bj = b + j * ldb;
                for (int p = 0; p < k8; p += 8)
                {
                    Gemm.Transpose8x8(bj + p, ldb, panel + p * 16, 16);
                    Gemm.Transpose8x8(bj + 8 * ldb + p, ldb, panel + p * 16 + 8, 16);
                }
                for (int p = k8; p < k; p++)
                    for (int q = 0; q < 16; q++) panel[p * 16 + q] = bj[q * ldb + p];
                for (int r0 = 0; r0 < m; r0 += 4) Group(r0).PanelStrip(panel, j);
            }
            if (j == j1) return;
            // The last columns: the panel zero padded, C through a 4×16 tile, so that they too get the blocked path's bits.
            int cols = j1 - j;
            float* bt = b + j * ldb;
            for (int p = 0; p < k; p++)
                for (int q = 0; q < 16; q++) panel[p * 16 + q] = q < cols ? bt[q * ldb + p] : 0f;
            float* tile = stackalloc float[4 * 16];
            for (int r0 = 0; r0 < m; r0 += 4)
            {
                int rows = Math.Min(4, m - r0);
                float* c0 = c + r0 * ldc + j;
                for (int r = 0; r < rows; r++)
                    for (int q = 0; q < 16; q++) tile[r * 16 + q] = accumulate && q < cols ? c0[r * ldc + q] : 0f;
                new Strips(transA, transB, rows, n, k, a + r0 * lda, lda, b, ldb, tile, 16, accumulate).PanelStrip(panel, 0);
                for (int r = 0; r < rows; r++)
                    for (int q = 0; q < cols; q++) c0[r * ldc + q] = tile[r * 16 + q];
            }
        }

        /// <summary>This group's rows of A (not transposed) times a k×16 panel into C columns j..j+15.</summary>
        private void PanelStrip(float* panel, int j) =>
            Strip16(a, m > 1 ? a + lda : a, m > 2 ? a + 2 * lda : a, m > 3 ? a + 3 * lda : a, 1, panel, 16, j);

        private void RunNN(int j0, int j1)
        {
            // A(r, p) = a0..a3[p·step]: rows of A (step 1) or columns of a stored Aᵀ (step lda).
            nint step = transA ? lda : 1, rowStride = transA ? 1 : lda;
            float* a0 = a, a1 = a + (m > 1 ? rowStride : 0), a2 = a + (m > 2 ? 2 * rowStride : 0), a3 = a + (m > 3 ? 3 * rowStride : 0);
            int j = j0;
            for (; j + 64 <= j1; j += 64) Strip64(a0, a1, a2, a3, step, j);
            for (; j + 16 <= j1; j += 16) Strip16(a0, a1, a2, a3, step, b + j, ldb, j);
            for (; j < j1; j++)
            {
                for (int r = 0; r < m; r++)
                {
                    float* ar = r == 0 ? a0 : r == 1 ? a1 : r == 2 ? a2 : a3;
                    float sum = accumulate ? c[r * ldc + j] : 0f;
                    for (int p = 0; p < k; p++) sum = MathF.FusedMultiplyAdd(ar[p * step], b[p * ldb + j], sum);
                    c[r * ldc + j] = sum;
                }
            }
        }

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        private void Strip64(float* a0, float* a1, float* a2, float* a3, nint step, int j)
        {
            Vector512<float> c00 = default, c01 = default, c02 = default, c03 = default;
            Vector512<float> c10 = default, c11 = default, c12 = default, c13 = default;
            Vector512<float> c20 = default, c21 = default, c22 = default, c23 = default;
            Vector512<float> c30 = default, c31 = default, c32 = default, c33 = default;
            float* cj = c + j;
            if (accumulate)
            {
                c00 = Vector512.Load(cj); c01 = Vector512.Load(cj + 16); c02 = Vector512.Load(cj + 32); c03 = Vector512.Load(cj + 48);
                if (m > 1) { c10 = Vector512.Load(cj + ldc); c11 = Vector512.Load(cj + ldc + 16); c12 = Vector512.Load(cj + ldc + 32); c13 = Vector512.Load(cj + ldc + 48); }
                if (m > 2) { c20 = Vector512.Load(cj + 2 * ldc); c21 = Vector512.Load(cj + 2 * ldc + 16); c22 = Vector512.Load(cj + 2 * ldc + 32); c23 = Vector512.Load(cj + 2 * ldc + 48); }
                if (m > 3) { c30 = Vector512.Load(cj + 3 * ldc); c31 = Vector512.Load(cj + 3 * ldc + 16); c32 = Vector512.Load(cj + 3 * ldc + 32); c33 = Vector512.Load(cj + 3 * ldc + 48); }
            }
            float* bp = b + j;
            for (int p = 0; p < k; p++)
            {
                var b0 = Vector512.Load(bp); var b1 = Vector512.Load(bp + 16); var b2 = Vector512.Load(bp + 32); var b3 = Vector512.Load(bp + 48);
                var x = Vector512.Create(*a0);
                c00 = Avx512F.FusedMultiplyAdd(x, b0, c00); c01 = Avx512F.FusedMultiplyAdd(x, b1, c01); c02 = Avx512F.FusedMultiplyAdd(x, b2, c02); c03 = Avx512F.FusedMultiplyAdd(x, b3, c03);
                x = Vector512.Create(*a1);
                c10 = Avx512F.FusedMultiplyAdd(x, b0, c10); c11 = Avx512F.FusedMultiplyAdd(x, b1, c11); c12 = Avx512F.FusedMultiplyAdd(x, b2, c12); c13 = Avx512F.FusedMultiplyAdd(x, b3, c13);
                x = Vector512.Create(*a2);
                c20 = Avx512F.FusedMultiplyAdd(x, b0, c20); c21 = Avx512F.FusedMultiplyAdd(x, b1, c21); c22 = Avx512F.FusedMultiplyAdd(x, b2, c22); c23 = Avx512F.FusedMultiplyAdd(x, b3, c23);
                x = Vector512.Create(*a3);
                c30 = Avx512F.FusedMultiplyAdd(x, b0, c30); c31 = Avx512F.FusedMultiplyAdd(x, b1, c31); c32 = Avx512F.FusedMultiplyAdd(x, b2, c32); c33 = Avx512F.FusedMultiplyAdd(x, b3, c33);
                a0 += step; a1 += step; a2 += step; a3 += step;
                bp += ldb;
            }
            c00.Store(cj); c01.Store(cj + 16); c02.Store(cj + 32); c03.Store(cj + 48);
            if (m > 1) { c10.Store(cj + ldc); c11.Store(cj + ldc + 16); c12.Store(cj + ldc + 32); c13.Store(cj + ldc + 48); }
            if (m > 2) { c20.Store(cj + 2 * ldc); c21.Store(cj + 2 * ldc + 16); c22.Store(cj + 2 * ldc + 32); c23.Store(cj + 2 * ldc + 48); }
            if (m > 3) { c30.Store(cj + 3 * ldc); c31.Store(cj + 3 * ldc + 16); c32.Store(cj + 3 * ldc + 32); c33.Store(cj + 3 * ldc + 48); }
        }

        /// <summary>C columns j..j+15 of the group's rows from B's rows at <paramref name="bp"/> (16 floats each, <paramref name="ldbp"/> apart).</summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        private void Strip16(float* a0, float* a1, float* a2, float* a3, nint step, float* bp, nint ldbp, int j)
        {
            Vector512<float> c0 = default, c1 = default, c2 = default, c3 = default;
            float* cj = c + j;
            if (accumulate)
            {
                c0 = Vector512.Load(cj);
                if (m > 1) c1 = Vector512.Load(cj + ldc);
                if (m > 2) c2 = Vector512.Load(cj + 2 * ldc);
                if (m > 3) c3 = Vector512.Load(cj + 3 * ldc);
            }
            for (int p = 0; p < k; p++)
            {
                var bv = Vector512.Load(bp);
                c0 = Avx512F.FusedMultiplyAdd(Vector512.Create(*a0), bv, c0);
                c1 = Avx512F.FusedMultiplyAdd(Vector512.Create(*a1), bv, c1);
                c2 = Avx512F.FusedMultiplyAdd(Vector512.Create(*a2), bv, c2);
                c3 = Avx512F.FusedMultiplyAdd(Vector512.Create(*a3), bv, c3);
                a0 += step; a1 += step; a2 += step; a3 += step;
                bp += ldbp;
            }
            c0.Store(cj);
            if (m > 1) c1.Store(cj + ldc);
            if (m > 2) c2.Store(cj + 2 * ldc);
            if (m > 3) c3.Store(cj + 3 * ldc);
        }

        /// <summary>Columns [j0, j1) of C = A·Bᵀ, four B rows (C columns) at a time; B rows past j1 repeat the last one.</summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        private void RunNT(int j0, int j1)
        {
            float* a0 = a, a1 = a + (m > 1 ? lda : 0), a2 = a + (m > 2 ? 2 * lda : 0), a3 = a + (m > 3 ? 3 * lda : 0);
            int kv = k & ~15;
            float* sums = stackalloc float[16];
            for (int j = j0; j < j1; j += 4)
            {
                int cols = Math.Min(4, j1 - j);
                float* b0 = b + j * ldb, b1 = b0 + (cols > 1 ? ldb : 0), b2 = b0 + (cols > 2 ? 2 * ldb : 0), b3 = b0 + (cols > 3 ? 3 * ldb : 0);
                Vector512<float> s00 = default, s01 = default, s02 = default, s03 = default;
                Vector512<float> s10 = default, s11 = default, s12 = default, s13 = default;
                Vector512<float> s20 = default, s21 = default, s22 = default, s23 = default;
                Vector512<float> s30 = default, s31 = default, s32 = default, s33 = default;
                for (int p = 0; p < kv; p += 16)
                {
                    var v0 = Vector512.Load(b0 + p); var v1 = Vector512.Load(b1 + p); var v2 = Vector512.Load(b2 + p); var v3 = Vector512.Load(b3 + p);
                    var x = Vector512.Load(a0 + p);
                    s00 = Avx512F.FusedMultiplyAdd(x, v0, s00); s01 = Avx512F.FusedMultiplyAdd(x, v1, s01); s02 = Avx512F.FusedMultiplyAdd(x, v2, s02); s03 = Avx512F.FusedMultiplyAdd(x, v3, s03);
                    x = Vector512.Load(a1 + p);
                    s10 = Avx512F.FusedMultiplyAdd(x, v0, s10); s11 = Avx512F.FusedMultiplyAdd(x, v1, s11); s12 = Avx512F.FusedMultiplyAdd(x, v2, s12); s13 = Avx512F.FusedMultiplyAdd(x, v3, s13);
                    x = Vector512.Load(a2 + p);
                    s20 = Avx512F.FusedMultiplyAdd(x, v0, s20); s21 = Avx512F.FusedMultiplyAdd(x, v1, s21); s22 = Avx512F.FusedMultiplyAdd(x, v2, s22); s23 = Avx512F.FusedMultiplyAdd(x, v3, s23);
                    x = Vector512.Load(a3 + p);
                    s30 = Avx512F.FusedMultiplyAdd(x, v0, s30); s31 = Avx512F.FusedMultiplyAdd(x, v1, s31); s32 = Avx512F.FusedMultiplyAdd(x, v2, s32); s33 = Avx512F.FusedMultiplyAdd(x, v3, s33);
                }
                sums[0] = Vector512.Sum(s00); sums[1] = Vector512.Sum(s01); sums[2] = Vector512.Sum(s02); sums[3] = Vector512.Sum(s03);
                sums[4] = Vector512.Sum(s10); sums[5] = Vector512.Sum(s11); sums[6] = Vector512.Sum(s12); sums[7] = Vector512.Sum(s13);
                sums[8] = Vector512.Sum(s20); sums[9] = Vector512.Sum(s21); sums[10] = Vector512.Sum(s22); sums[11] = Vector512.Sum(s23);
                sums[12] = Vector512.Sum(s30); sums[13] = Vector512.Sum(s31); sums[14] = Vector512.Sum(s32); sums[15] = Vector512.Sum(s33);
                for (int r = 0; r < m; r++)
                {
                    float* ar = r == 0 ? a0 : r == 1 ? a1 : r == 2 ? a2 : a3;
                    for (int q = 0; q < cols; q++)
                    {
                        float* bq = q == 0 ? b0 : q == 1 ? b1 : q == 2 ? b2 : b3;
                        float sum = sums[r * 4 + q];
                        for (int p = kv; p < k; p++) sum = MathF.FusedMultiplyAdd(ar[p], bq[p], sum);
                        float* cr = c + r * ldc + j + q;
                        *cr = accumulate ? *cr + sum : sum;
                    }
                }
            }
        }
    }
}
