using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace AlignSharp.Engine.Kernels;

/// <summary>
/// Decode shapes with a bf16 weight: C[m,n] = (accumulate ? C : 0) + A[m,k] · Bᵀ, B stored [n,k] in bf16
/// (a Linear layer's weight [out, in]), m ≤ 8, AVX-512 only. Bound by reading B once, so B is streamed in place
/// in bf16 (half the bytes of float32) and never widened to memory:
/// <code>
///   32 bf16 of a B row are loaded as 16 uint lanes; lane i holds b[2i] (low half) and b[2i+1] (high half):
///     even = lane &lt;&lt; 16            → float32 b[p+2i]
///     odd  = lane &amp; 0xFFFF0000    → float32 b[p+2i+1]
///   A is split once per call into its even and odd k positions, so one FMA pairs a[p+2i] with even and
///   one pairs a[p+2i+1] with odd, both into the same accumulator; k past the last multiple of 32 is scalar.
/// </code>
/// Tiles: m = 1 → 1 row × 8 B rows (no wasted FMAs at batch 1); m ≤ 4 → 4 rows × 4 B rows (16 accumulators);
/// 5..8 rows → 8 rows × 2 B rows, so B is still read once.
/// Each step also prefetches the same 64 bytes of the next tile's B rows (one tile ahead: the tiles of a thread
/// follow each other in memory, and rows of 1–10 KB are too short for the hardware prefetcher to ramp up on its
/// own; measured +20–50% of streamed bytes per core on the decode shapes).
/// Missing rows of a tile read row 0 again (their results are dropped). The summation order differs from the
/// blocked path (pairs of lanes, then a horizontal sum, or for the 4×4 and 8×2 tiles a fold of all 16 accumulators), as for the float32 <see cref="GemmSkinny"/> NT path.
/// </summary>
internal static unsafe class GemmSkinnyBf16
{
    public static bool Applies(bool transA, bool transB, int m) => Avx512F.IsSupported && !transA && transB && m <= 8;

    [ThreadStatic] private static float[]? t_split;

    public static void Run(int m, int n, int k, float* a, nint lda, ushort* b, nint ldb, float* c, nint ldc, bool accumulate)
    {
        int kv = k & ~31, half = kv / 2;
        // A's even and odd k positions, row r at split + r·kv (even half first); read by every worker.
        int need = Math.Max(1, m * kv + 16);
        if (t_split == null || t_split.Length < need) t_split = GC.AllocateUninitializedArray<float>(need, pinned: true);
        float* split = (float*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(t_split));
        for (int r = 0; r < m; r++)
        {
            float* ar = a + r * lda, ev = split + r * kv, od = ev + half;
            for (int i = 0; i < half; i++) { ev[i] = ar[2 * i]; od[i] = ar[2 * i + 1]; }
        }
        var work = new Tiles(m, n, k, a, lda, split, b, ldb, c, ldc, accumulate);
        int cols = m == 1 ? 8 : m <= 4 ? 4 : 2;
        int units = (n + cols - 1) / cols;
        Gemm.RunStreaming(units, (long)m * n * k, (long)n * k * sizeof(ushort), work);
    }

    private readonly struct Tiles(int m, int n, int k, float* a, nint lda, float* split, ushort* b, nint ldb,
        float* c, nint ldc, bool accumulate) : IChunkWork
    {
        public void Run(int start, int end, int streamEnd)
        {
            if (m == 1)
                for (int j = start * 8; j < Math.Min(n, end * 8); j += 8) Tile1x8(j, Math.Min(8, n - j));
            else if (m <= 4)
                for (int j = start * 4; j < Math.Min(n, end * 4); j += 4) Tile4x4(j, Math.Min(4, n - j));
            else
                for (int j = start * 2; j < Math.Min(n, end * 2); j += 2) Tile8x2(j, Math.Min(2, n - j));
        }

        /// <summary>Even and odd float32 lanes of 32 bf16 values at <paramref name="p"/>.</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private static (Vector512<float> Even, Vector512<float> Odd) Load32(ushort* p)
        {
            var x = Vector512.Load((uint*)p);
            return (Avx512F.ShiftLeftLogical(x, 16).AsSingle(), (x & Vector512.Create(0xFFFF0000u)).AsSingle());
        }

        /// <summary>Σ over the scalar tail k ∈ [kv, k) of a[r,p]·b[j,p], added to <paramref name="sum"/>; then stored into C.</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private void Finish(int r, int j, float sum)
        {
            int kv = k & ~31;
            float* ar = a + r * lda;
            ushort* bj = b + j * ldb;
            for (int p = kv; p < k; p++) sum = MathF.FusedMultiplyAdd(ar[p], Bf16.ToFloat(bj[p]), sum);
            float* cr = c + r * ldc + j;
            *cr = accumulate ? *cr + sum : sum;
        }

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        private void Tile1x8(int j, int cols)
        {
            int kv = k & ~31, half = kv / 2;
            float* ev = split, od = split + half;
            // B rows past the last valid one read row j again (their results are dropped).
            ushort* b0 = b + j * ldb, b1 = b0 + (cols > 1 ? ldb : 0), b2 = b0 + (cols > 2 ? 2 * ldb : 0), b3 = b0 + (cols > 3 ? 3 * ldb : 0);
            ushort* b4 = b0 + (cols > 4 ? 4 * ldb : 0), b5 = b0 + (cols > 5 ? 5 * ldb : 0), b6 = b0 + (cols > 6 ? 6 * ldb : 0), b7 = b0 + (cols > 7 ? 7 * ldb : 0);
            Vector512<float> s0 = default, s1 = default, s2 = default, s3 = default, s4 = default, s5 = default, s6 = default, s7 = default;
            nint ahead = 8 * ldb;
            for (int p = 0, h = 0; p < kv; p += 32, h += 16)
            {
                Sse.Prefetch0(b0 + p + ahead); Sse.Prefetch0(b1 + p + ahead); Sse.Prefetch0(b2 + p + ahead); Sse.Prefetch0(b3 + p + ahead);
                Sse.Prefetch0(b4 + p + ahead); Sse.Prefetch0(b5 + p + ahead); Sse.Prefetch0(b6 + p + ahead); Sse.Prefetch0(b7 + p + ahead);
                var x = Vector512.Load(ev + h); var y = Vector512.Load(od + h);
                var (e, o) = Load32(b0 + p); s0 = Avx512F.FusedMultiplyAdd(y, o, Avx512F.FusedMultiplyAdd(x, e, s0));
                (e, o) = Load32(b1 + p); s1 = Avx512F.FusedMultiplyAdd(y, o, Avx512F.FusedMultiplyAdd(x, e, s1));
                (e, o) = Load32(b2 + p); s2 = Avx512F.FusedMultiplyAdd(y, o, Avx512F.FusedMultiplyAdd(x, e, s2));
                (e, o) = Load32(b3 + p); s3 = Avx512F.FusedMultiplyAdd(y, o, Avx512F.FusedMultiplyAdd(x, e, s3));
                (e, o) = Load32(b4 + p); s4 = Avx512F.FusedMultiplyAdd(y, o, Avx512F.FusedMultiplyAdd(x, e, s4));
                (e, o) = Load32(b5 + p); s5 = Avx512F.FusedMultiplyAdd(y, o, Avx512F.FusedMultiplyAdd(x, e, s5));
                (e, o) = Load32(b6 + p); s6 = Avx512F.FusedMultiplyAdd(y, o, Avx512F.FusedMultiplyAdd(x, e, s6));
                (e, o) = Load32(b7 + p); s7 = Avx512F.FusedMultiplyAdd(y, o, Avx512F.FusedMultiplyAdd(x, e, s7));
            }
            Finish(0, j, Vector512.Sum(s0));
            if (cols > 1) Finish(0, j + 1, Vector512.Sum(s1));
            if (cols > 2) Finish(0, j + 2, Vector512.Sum(s2));
            if (cols > 3) Finish(0, j + 3, Vector512.Sum(s3));
            if (cols > 4) Finish(0, j + 4, Vector512.Sum(s4));
            if (cols > 5) Finish(0, j + 5, Vector512.Sum(s5));
            if (cols > 6) Finish(0, j + 6, Vector512.Sum(s6));
            if (cols > 7) Finish(0, j + 7, Vector512.Sum(s7));
        }

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        private void Tile4x4(int j, int cols)
        {
            int kv = k & ~31, half = kv / 2;
            float* e0 = split, e1 = split + (m > 1 ? kv : 0), e2 = split + (m > 2 ? 2 * kv : 0), e3 = split + (m > 3 ? 3 * kv : 0);
            ushort* b0 = b + j * ldb, b1 = b0 + (cols > 1 ? ldb : 0), b2 = b0 + (cols > 2 ? 2 * ldb : 0), b3 = b0 + (cols > 3 ? 3 * ldb : 0);
            Vector512<float> s00 = default, s01 = default, s02 = default, s03 = default;
            Vector512<float> s10 = default, s11 = default, s12 = default, s13 = default;
            Vector512<float> s20 = default, s21 = default, s22 = default, s23 = default;
            Vector512<float> s30 = default, s31 = default, s32 = default, s33 = default;
            nint ahead = 4 * ldb;
            for (int p = 0, h = 0; p < kv; p += 32, h += 16)
            {
                Sse.Prefetch0(b0 + p + ahead); Sse.Prefetch0(b1 + p + ahead); Sse.Prefetch0(b2 + p + ahead); Sse.Prefetch0(b3 + p + ahead);
                var (v0e, v0o) = Load32(b0 + p); var (v1e, v1o) = Load32(b1 + p);
                var (v2e, v2o) = Load32(b2 + p); var (v3e, v3o) = Load32(b3 + p);
                var x = Vector512.Load(e0 + h); var y = Vector512.Load(e0 + half + h);
                s00 = Avx512F.FusedMultiplyAdd(y, v0o, Avx512F.FusedMultiplyAdd(x, v0e, s00)); s01 = Avx512F.FusedMultiplyAdd(y, v1o, Avx512F.FusedMultiplyAdd(x, v1e, s01));
                s02 = Avx512F.FusedMultiplyAdd(y, v2o, Avx512F.FusedMultiplyAdd(x, v2e, s02)); s03 = Avx512F.FusedMultiplyAdd(y, v3o, Avx512F.FusedMultiplyAdd(x, v3e, s03));
                x = Vector512.Load(e1 + h); y = Vector512.Load(e1 + half + h);
                s10 = Avx512F.FusedMultiplyAdd(y, v0o, Avx512F.FusedMultiplyAdd(x, v0e, s10)); s11 = Avx512F.FusedMultiplyAdd(y, v1o, Avx512F.FusedMultiplyAdd(x, v1e, s11));
                s12 = Avx512F.FusedMultiplyAdd(y, v2o, Avx512F.FusedMultiplyAdd(x, v2e, s12)); s13 = Avx512F.FusedMultiplyAdd(y, v3o, Avx512F.FusedMultiplyAdd(x, v3e, s13));
                x = Vector512.Load(e2 + h); y = Vector512.Load(e2 + half + h);
                s20 = Avx512F.FusedMultiplyAdd(y, v0o, Avx512F.FusedMultiplyAdd(x, v0e, s20)); s21 = Avx512F.FusedMultiplyAdd(y, v1o, Avx512F.FusedMultiplyAdd(x, v1e, s21));
                s22 = Avx512F.FusedMultiplyAdd(y, v2o, Avx512F.FusedMultiplyAdd(x, v2e, s22)); s23 = Avx512F.FusedMultiplyAdd(y, v3o, Avx512F.FusedMultiplyAdd(x, v3e, s23));
                x = Vector512.Load(e3 + h); y = Vector512.Load(e3 + half + h);
                s30 = Avx512F.FusedMultiplyAdd(y, v0o, Avx512F.FusedMultiplyAdd(x, v0e, s30)); s31 = Avx512F.FusedMultiplyAdd(y, v1o, Avx512F.FusedMultiplyAdd(x, v1e, s31));
                s32 = Avx512F.FusedMultiplyAdd(y, v2o, Avx512F.FusedMultiplyAdd(x, v2e, s32)); s33 = Avx512F.FusedMultiplyAdd(y, v3o, Avx512F.FusedMultiplyAdd(x, v3e, s33));
            }
            // Lane 4r + q of the folded sums: row r, B row j + q; only the valid (r < m, q < cols) ones are written.
            var sums = Fold(Fold(Fold(Fold(s00, s01, 8), Fold(s02, s03, 8), 4), Fold(Fold(s10, s11, 8), Fold(s12, s13, 8), 4), 2),
                            Fold(Fold(Fold(s20, s21, 8), Fold(s22, s23, 8), 4), Fold(Fold(s30, s31, 8), Fold(s32, s33, 8), 4), 2), 1);
            float* lanes = stackalloc float[16];
            sums.Store(lanes);
            for (int r = 0; r < m; r++)
                for (int q = 0; q < cols; q++) Finish(r, j + q, lanes[4 * r + q]);
        }

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        private void Tile8x2(int j, int cols)
        {
            int kv = k & ~31, half = kv / 2;
            // m is 5..8 here; rows past m read row 0.
            float* e0 = split, e1 = split + kv, e2 = split + 2 * kv, e3 = split + 3 * kv, e4 = split + 4 * kv;
            float* e5 = split + (m > 5 ? 5 * kv : 0), e6 = split + (m > 6 ? 6 * kv : 0), e7 = split + (m > 7 ? 7 * kv : 0);
            ushort* b0 = b + j * ldb, b1 = b0 + (cols > 1 ? ldb : 0);
            Vector512<float> s00 = default, s01 = default, s10 = default, s11 = default, s20 = default, s21 = default, s30 = default, s31 = default;
            Vector512<float> s40 = default, s41 = default, s50 = default, s51 = default, s60 = default, s61 = default, s70 = default, s71 = default;
            nint ahead = 2 * ldb;
            for (int p = 0, h = 0; p < kv; p += 32, h += 16)
            {
                Sse.Prefetch0(b0 + p + ahead); Sse.Prefetch0(b1 + p + ahead);
                var (v0e, v0o) = Load32(b0 + p); var (v1e, v1o) = Load32(b1 + p);
                var x = Vector512.Load(e0 + h); var y = Vector512.Load(e0 + half + h);
                s00 = Avx512F.FusedMultiplyAdd(y, v0o, Avx512F.FusedMultiplyAdd(x, v0e, s00)); s01 = Avx512F.FusedMultiplyAdd(y, v1o, Avx512F.FusedMultiplyAdd(x, v1e, s01));
                x = Vector512.Load(e1 + h); y = Vector512.Load(e1 + half + h);
                s10 = Avx512F.FusedMultiplyAdd(y, v0o, Avx512F.FusedMultiplyAdd(x, v0e, s10)); s11 = Avx512F.FusedMultiplyAdd(y, v1o, Avx512F.FusedMultiplyAdd(x, v1e, s11));
                x = Vector512.Load(e2 + h); y = Vector512.Load(e2 + half + h);
                s20 = Avx512F.FusedMultiplyAdd(y, v0o, Avx512F.FusedMultiplyAdd(x, v0e, s20)); s21 = Avx512F.FusedMultiplyAdd(y, v1o, Avx512F.FusedMultiplyAdd(x, v1e, s21));
                x = Vector512.Load(e3 + h); y = Vector512.Load(e3 + half + h);
                s30 = Avx512F.FusedMultiplyAdd(y, v0o, Avx512F.FusedMultiplyAdd(x, v0e, s30)); s31 = Avx512F.FusedMultiplyAdd(y, v1o, Avx512F.FusedMultiplyAdd(x, v1e, s31));
                x = Vector512.Load(e4 + h); y = Vector512.Load(e4 + half + h);
                s40 = Avx512F.FusedMultiplyAdd(y, v0o, Avx512F.FusedMultiplyAdd(x, v0e, s40)); s41 = Avx512F.FusedMultiplyAdd(y, v1o, Avx512F.FusedMultiplyAdd(x, v1e, s41));
                x = Vector512.Load(e5 + h); y = Vector512.Load(e5 + half + h);
                s50 = Avx512F.FusedMultiplyAdd(y, v0o, Avx512F.FusedMultiplyAdd(x, v0e, s50)); s51 = Avx512F.FusedMultiplyAdd(y, v1o, Avx512F.FusedMultiplyAdd(x, v1e, s51));
                x = Vector512.Load(e6 + h); y = Vector512.Load(e6 + half + h);
                s60 = Avx512F.FusedMultiplyAdd(y, v0o, Avx512F.FusedMultiplyAdd(x, v0e, s60)); s61 = Avx512F.FusedMultiplyAdd(y, v1o, Avx512F.FusedMultiplyAdd(x, v1e, s61));
                x = Vector512.Load(e7 + h); y = Vector512.Load(e7 + half + h);
                s70 = Avx512F.FusedMultiplyAdd(y, v0o, Avx512F.FusedMultiplyAdd(x, v0e, s70)); s71 = Avx512F.FusedMultiplyAdd(y, v1o, Avx512F.FusedMultiplyAdd(x, v1e, s71));
            }
            // Lane 2r + q of the folded sums: row r, B row j + q.
            var sums = Fold(Fold(Fold(Fold(s00, s01, 8), Fold(s10, s11, 8), 4), Fold(Fold(s20, s21, 8), Fold(s30, s31, 8), 4), 2),
                            Fold(Fold(Fold(s40, s41, 8), Fold(s50, s51, 8), 4), Fold(Fold(s60, s61, 8), Fold(s70, s71, 8), 4), 2), 1);
            float* lanes = stackalloc float[16];
            sums.Store(lanes);
            for (int r = 0; r < m; r++)
            {
                Finish(r, j, lanes[2 * r]);
                if (cols > 1) Finish(r, j + 1, lanes[2 * r + 1]);
            }
        }

        /// <summary>
        /// Folds two vectors of partial sums: [x | y] read as 32 lanes in blocks of 2g, each block one accumulator's
        /// partial sums; each block's first g lanes plus its last g. Four folds (g = 8, 4, 2, 1) take 16
        /// accumulators to one vector of their 16 sums, in order (45 vector ops instead of 16 horizontal sums).
        /// </summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private static Vector512<float> Fold(Vector512<float> x, Vector512<float> y, int g)
        {
            var (lo, hi) = g switch
            {
                8 => (Vector512.Create(0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23), Vector512.Create(8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31)),
                4 => (Vector512.Create(0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27), Vector512.Create(4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31)),
                2 => (Vector512.Create(0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28, 29), Vector512.Create(2, 3, 6, 7, 10, 11, 14, 15, 18, 19, 22, 23, 26, 27, 30, 31)),
                _ => (Vector512.Create(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30), Vector512.Create(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31)),
            };
            return Avx512F.PermuteVar16x32x2(x, lo, y) + Avx512F.PermuteVar16x32x2(x, hi, y);
        }
    }
}
