using AlignSharp.Engine.Kernels;
using Xunit.Abstractions;
using Case = AlignSharp.Tests.Engine.GemmCase;
using static AlignSharp.Tests.Engine.GemmCase;

namespace AlignSharp.Tests.Engine;

/// <summary>
/// Gemm against an independent float64 triple loop, on every kernel path the CPU has (AVX-512, AVX2, scalar),
/// all four trans combinations, every size class around the tile and SIMD widths, padded strides, accumulate,
/// batched broadcast, and k = 0.
/// </summary>
public class GemmTests(ITestOutputHelper output)
{
    public static TheoryData<string> Paths => new() { "Avx512", "Avx2", "Scalar" };

    // ------------------------------------------------------------------ helpers

    /// <summary>Runs <paramref name="gemm"/> on random data for one case and checks every element of C (padding included).</summary>
    private static void Check(Random rng, Case t, Action<Case, float[], float[], float[]> gemm, string what)
    {
        var a = Random(rng, Len(t.TransA ? t.K : t.M, t.Lda, t.TransA ? t.M : t.K));
        var b = Random(rng, Len(t.TransB ? t.N : t.K, t.Ldb, t.TransB ? t.K : t.N));
        var c = Random(rng, Len(t.M, t.Ldc, t.N));
        var before = (float[])c.Clone();
        gemm(t, a, b, c);
        AssertClose(t, a, b, before, c, what);
    }

    private static void AssertClose(Case t, float[] a, float[] b, float[] before, float[] c, string what, long offA = 0, long offB = 0, long offC = 0, bool checkPadding = true)
    {
        for (int i = 0; i < t.M; i++)
        {
            for (int j = 0; j < t.N; j++)
            {
                double sum = 0, mag = 0;
                for (int p = 0; p < t.K; p++)
                {
                    double av = t.TransA ? a[offA + p * t.Lda + i] : a[offA + i * t.Lda + p];
                    double bv = t.TransB ? b[offB + j * t.Ldb + p] : b[offB + p * t.Ldb + j];
                    sum += av * bv;
                    mag += Math.Abs(av * bv);
                }
                long ci = offC + i * t.Ldc + j;
                if (t.Accumulate) { sum += before[ci]; mag += Math.Abs(before[ci]); }
                // Rounding-error bound of a k-term float32 dot product: about (k + 1)·u·Σ|a·b|, u = 2^-24.
                double tol = (t.K + 2) * 6e-8 * mag + 1e-30;
                if (Math.Abs(c[ci] - sum) > tol)
                    Assert.Fail($"{what} {t}: C[{i},{j}] = {c[ci]:R}, expected {sum:R} (tolerance {tol:E2})");
            }
            // Padding between rows of C is never written.
            for (int j = t.N; checkPadding && j < t.Ldc && i < t.M - 1; j++)
                Assert.True(before[offC + i * t.Ldc + j] == c[offC + i * t.Ldc + j], $"{what} {t}: wrote padding C[{i},{j}]");
        }
    }

    private static void Multiply(Case t, float[] a, float[] b, float[] c) =>
        Gemm.Multiply(t.TransA, t.TransB, t.M, t.N, t.K, a, t.Lda, b, t.Ldb, c, t.Ldc, t.Accumulate);

    /// <summary>Forces <paramref name="path"/> for the duration of <paramref name="body"/>; false (and a note) when the CPU lacks it.</summary>
    private bool OnPath(string path, Action body)
    {
        var p = Enum.Parse<GemmPath>(path);
        if (!Gemm.IsSupported(p))
        {
            output.WriteLine($"GEMM path {path} is not available on this CPU: skipped.");
            return false;
        }
        Gemm.ForcePath = p;
        try { body(); }
        finally { Gemm.ForcePath = GemmPath.Auto; }
        output.WriteLine($"GEMM path {path}: checked.");
        return true;
    }

    // ------------------------------------------------------------------ tests

    [Theory]
    [MemberData(nameof(Paths))]
    public void OddSizesAllTransposesMatchFloat64(string path)
    {
        OnPath(path, () =>
        {
            var rng = new Random(42);
            int[] sizes = [1, 2, 3, 4, 5, 7, 8, 11, 12, 13, 15, 16, 17, 23, 24, 31, 32, 33, 47, 48, 49, 63, 64, 65, 70];
            for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++)
            {
                // Every size in each dimension at least once, the others random.
                foreach (int s in sizes)
                {
                    int o1 = sizes[rng.Next(sizes.Length)], o2 = sizes[rng.Next(sizes.Length)];
                    foreach (var (m, n, k) in new[] { (s, o1, o2), (o1, s, o2), (o1, o2, s) })
                        Check(rng, GemmCase.Make(rng, ta == 1, tb == 1, m, n, k, padded: rng.Next(2) == 0, accumulate: rng.Next(2) == 0), Multiply, path);
                }
            }
        });
    }

    [Theory]
    [MemberData(nameof(Paths))]
    public void LargeAndBlockCrossingSizesMatchFloat64(string path)
    {
        OnPath(path, () =>
        {
            var rng = new Random(7);
            for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++)
            {
                // 257×513×300 crosses the MC, KC and tile edges at once; 13×4100×7 crosses the NC column block.
                Check(rng, GemmCase.Make(rng, ta == 1, tb == 1, 257, 513, 300, padded: true, accumulate: ta == tb), Multiply, path);
                Check(rng, GemmCase.Make(rng, ta == 1, tb == 1, 13, 4100, 7, padded: true, accumulate: ta != tb), Multiply, path);
            }
        });
    }

    [Theory]
    [MemberData(nameof(Paths))]
    public void SkinnyDecodeShapesMatchFloat64(string path)
    {
        // m <= 8 with a small B takes the streaming (unpacked) path on AVX-512: every strip width and k-tail class.
        OnPath(path, () =>
        {
            var rng = new Random(13);
            for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++)
            foreach (int m in new[] { 1, 2, 3, 4, 5, 8, 9 })
                foreach (int n in new[] { 1, 3, 15, 16, 17, 63, 64, 65, 81, 130, 3001 })
                foreach (int k in new[] { 1, 8, 15, 16, 17, 33, 64, 65, 100 })
                    Check(rng, GemmCase.Make(rng, ta == 1, tb == 1, m, n, k, padded: rng.Next(2) == 0, accumulate: rng.Next(2) == 0), Multiply, path);
            // Few MACs but ≥ Gemm.StreamSplitBytes of B (a k/v projection in float32): split by its bytes.
            Check(rng, GemmCase.Make(rng, false, true, 1, 130, 896, padded: false, accumulate: true), Multiply, path);
            Check(rng, GemmCase.Make(rng, false, false, 2, 130, 300, padded: true, accumulate: false), Multiply, path);
        });
    }

    [Fact]
    public void SkinnyProductsWithSmallKAndBTransposedEqualTheBlockedPathBitForBit()
    {
        // A LoRA term, u [m, r] · B [out, r]ᵀ: with k ≤ 64 the streaming path transposes 16 rows of B at a time and runs
        // the blocked path's FMA chain, so the rows of a decode-sized C are those of the same rows inside a tall C.
        if (!OnPath("Avx512", () =>
        {
            var rng = new Random(29);
            const int tall = 40; // past the streaming path's 8 rows
            foreach (int k in new[] { 1, 7, 8, 13, 16, 33, 64 })
            foreach (int n in new[] { 16, 17, 100, 896, 4864 })
            foreach (int m in new[] { 1, 3, 4, 5, 8 })
            foreach (bool accumulate in new[] { false, true })
            {
                int ldb = k + (rng.Next(2) == 0 ? 0 : 3);
                var a = GemmCase.Random(rng, tall * k);
                var b = GemmCase.Random(rng, GemmCase.Len(n, ldb, k));
                var start = GemmCase.Random(rng, tall * n);
                var small = start[..(m * n)];
                var big = (float[])start.Clone();
                Gemm.Multiply(false, true, m, n, k, a, k, b, ldb, small, n, accumulate);
                Gemm.Multiply(false, true, tall, n, k, a, k, b, ldb, big, n, accumulate);
                for (int i = 0; i < m * n; i++)
                    if (BitConverter.SingleToInt32Bits(small[i]) != BitConverter.SingleToInt32Bits(big[i]))
                        Assert.Fail($"m {m} n {n} k {k} accumulate {accumulate}: C[{i / n},{i % n}] = {small[i]:R} streamed, {big[i]:R} blocked");
            }
        })) output.WriteLine("Needs AVX-512 (the streaming path's CPU): nothing compared.");
    }

    [Theory]
    [MemberData(nameof(Paths))]
    public void BatchedWithBroadcastMatchesFloat64(string path)
    {
        OnPath(path, () =>
        {
            var rng = new Random(3);
            // batch ≥ 4·threads splits by entry; batch = 2 with larger entries splits each entry by tiles.
            foreach (var (batch, m, n, k) in new[] { (12, 37, 29, 19), (9, 64, 64, 32), (2, 170, 150, 160), (1, 20, 30, 40) })
            for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++)
            for (int broadcast = 0; broadcast < 3; broadcast++) // 0: none, 1: A shared, 2: B shared
            {
                var t = GemmCase.Make(rng, ta == 1, tb == 1, m, n, k, padded: true, accumulate: broadcast == 1);
                long sizeA = Len(ta == 1 ? k : m, t.Lda, ta == 1 ? m : k) + 3, sizeB = Len(tb == 1 ? n : k, t.Ldb, tb == 1 ? k : n) + 1;
                long sizeC = Len(m, t.Ldc, n) + 2;
                long strideA = broadcast == 1 ? 0 : sizeA, strideB = broadcast == 2 ? 0 : sizeB;
                var a = Random(rng, (int)(strideA * (batch - 1) + sizeA));
                var b = Random(rng, (int)(strideB * (batch - 1) + sizeB));
                var c = Random(rng, (int)(sizeC * batch));
                var before = (float[])c.Clone();
                Gemm.MultiplyBatched(batch, t.TransA, t.TransB, m, n, k, a, t.Lda, strideA, b, t.Ldb, strideB, c, t.Ldc, sizeC, t.Accumulate);
                for (int i = 0; i < batch; i++)
                    AssertClose(t, a, b, before, c, $"{path} batch {i}/{batch}", i * strideA, i * strideB, i * sizeC);
            }
        });
    }

    [Fact]
    public void BatchedSideBySideOutputMatchesFloat64()
    {
        // Heads written next to each other in one [T, heads·hd] matrix: strideC = hd, ldc = heads·hd.
        var rng = new Random(5);
        int heads = 6, t = 33, hd = 20;
        var probs = Random(rng, heads * t * t);
        var v = Random(rng, t * heads * hd); // [T, heads·hd], head h at column offset h·hd
        var y = new float[t * heads * hd];
        Gemm.MultiplyBatched(heads, false, false, t, hd, t, probs, t, t * t, v, heads * hd, hd, y, heads * hd, hd, accumulate: false);
        var zero = new float[y.Length];
        for (int h = 0; h < heads; h++)
            AssertClose(new Case(false, false, t, hd, t, t, heads * hd, heads * hd, false), probs, v, zero, y, $"head {h}", h * t * t, h * hd, h * hd, checkPadding: false);
    }

    [Fact]
    public void ReferenceMatchesFloat64()
    {
        var rng = new Random(11);
        for (int i = 0; i < 40; i++)
        {
            var t = GemmCase.Make(rng, rng.Next(2) == 0, rng.Next(2) == 0, rng.Next(1, 40), rng.Next(1, 40), rng.Next(1, 40), padded: true, accumulate: rng.Next(2) == 0);
            Check(rng, t, (x, a, b, c) => Gemm.Reference(x.TransA, x.TransB, x.M, x.N, x.K, a, x.Lda, b, x.Ldb, c, x.Ldc, x.Accumulate), "Reference");
        }
    }

    [Fact]
    public void ZeroKZeroesOrKeepsC()
    {
        var c = new float[] { 1, 2, 3, 4, 5, 6 };
        Gemm.Multiply(false, false, 2, 2, 0, [], 0, [], 2, c, 3, accumulate: true);
        Assert.Equal(new float[] { 1, 2, 3, 4, 5, 6 }, c);
        Gemm.Multiply(false, false, 2, 2, 0, [], 0, [], 2, c, 3, accumulate: false);
        Assert.Equal(new float[] { 0, 0, 3, 0, 0, 6 }, c);
        var cb = new float[] { 1, 2, 3, 4 };
        Gemm.MultiplyBatched(2, true, true, 1, 2, 0, [], 1, 0, [], 0, 0, cb, 2, 2, accumulate: false);
        Assert.Equal(new float[4], cb);
        var cr = new float[] { 7, 8 };
        Gemm.Reference(false, false, 1, 2, 0, [], 0, [], 2, cr, 2, accumulate: false);
        Assert.Equal(new float[2], cr);
    }

    [Fact]
    public void EmptyMOrNIsANoOp()
    {
        Gemm.Multiply(false, false, 0, 5, 3, [], 3, new float[15], 5, [], 5, accumulate: false);
        Gemm.Multiply(false, true, 4, 0, 3, new float[12], 3, [], 3, [], 0, accumulate: false);
        Gemm.MultiplyBatched(0, false, false, 4, 4, 4, [], 4, 16, [], 4, 16, [], 4, 16, accumulate: false);
    }

    [Fact]
    public void BadArgumentsThrowClearErrors()
    {
        var a = new float[6];
        var b = new float[6];
        var c = new float[4];
        var e = Assert.Throws<ArgumentException>(() => Gemm.Multiply(false, false, 2, 2, 3, a.AsSpan(0, 5), 3, b, 2, c, 2, false));
        Assert.Contains("a", e.ParamName);
        Assert.Throws<ArgumentOutOfRangeException>(() => Gemm.Multiply(false, false, 2, 2, 3, a, 2, b, 2, c, 2, false));
        Assert.Throws<ArgumentException>(() => Gemm.Multiply(false, true, 2, 2, 3, a, 3, b.AsSpan(0, 5), 3, c, 2, false));
        Assert.Throws<ArgumentException>(() => Gemm.Multiply(false, false, 2, 2, 3, a, 3, b, 2, c.AsSpan(0, 3), 2, false));
        Assert.Throws<ArgumentOutOfRangeException>(() => Gemm.Multiply(false, false, -1, 2, 3, a, 3, b, 2, c, 2, false));
        Assert.Throws<ArgumentOutOfRangeException>(() => Gemm.Reference(false, false, 2, 2, 3, a, 3, b, 1, c, 2, false));
        // Overlapping C blocks in a batch, and a negative stride.
        Assert.Throws<ArgumentException>(() => Gemm.MultiplyBatched(2, false, false, 2, 2, 3, a, 3, 0, b, 2, 0, new float[8], 2, 2, false));
        Assert.Throws<ArgumentOutOfRangeException>(() => Gemm.MultiplyBatched(2, false, false, 2, 2, 3, a, 3, -1, b, 2, 0, new float[8], 2, 4, false));
        Assert.Throws<ArgumentException>(() => Gemm.MultiplyBatched(3, false, false, 2, 2, 3, new float[12], 3, 6, b, 2, 0, new float[12], 2, 4, false));
    }

    [Fact]
    public void SteadyStateCallsDoNotAllocate()
    {
        // Below the parallel threshold everything runs on this thread: packing buffers are reused, nothing is allocated.
        var rng = new Random(17);
        var a = Random(rng, 80 * 90);
        var b = Random(rng, 90 * 70);
        var c = new float[80 * 70];
        for (int tb = 0; tb < 2; tb++) Gemm.Multiply(true, tb == 1, 80, 70, 90, a, 80, b, tb == 1 ? 90 : 70, c, 70, false);
        Gemm.Multiply(false, false, 3, 70, 90, a, 90, b, 70, c, 70, false);
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < 5; i++)
        {
            for (int tb = 0; tb < 2; tb++) Gemm.Multiply(true, tb == 1, 80, 70, 90, a, 80, b, tb == 1 ? 90 : 70, c, 70, true);
            Gemm.Multiply(false, false, 3, 70, 90, a, 90, b, 70, c, 70, true);
        }
        Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);
    }

    [Fact]
    public void ResultsAreBitwiseReproducibleAndIndependentOfThreadCount()
    {
        var rng = new Random(9);
        int m = 300, n = 260, k = 280;
        var a = Random(rng, m * k);
        var b = Random(rng, n * k);
        var c1 = new float[m * n];
        var c2 = new float[m * n];
        var c3 = new float[m * n];
        Gemm.Multiply(false, true, m, n, k, a, k, b, k, c1, n, false);
        Gemm.Multiply(false, true, m, n, k, a, k, b, k, c2, n, false);
        int threads = ParallelFor.Threads;
        using (ParallelFor.UseThreads(1)) Gemm.Multiply(false, true, m, n, k, a, k, b, k, c3, n, false);
        Assert.True(c1.AsSpan().SequenceEqual(c2), "two identical calls differ");
        Assert.True(c1.AsSpan().SequenceEqual(c3), $"1 thread and {threads} threads differ");
        // Batched entries equal the same product computed alone.
        var cb = new float[2 * m * n];
        Gemm.MultiplyBatched(2, false, true, m, n, k, a, k, 0, b, k, 0, cb, n, m * n, false);
        Assert.True(c1.AsSpan().SequenceEqual(cb.AsSpan(0, m * n)) && c1.AsSpan().SequenceEqual(cb.AsSpan(m * n)), "batched differs from single");
    }

    /// <summary>Shapes split by columns (more column tiles than row tiles at an equal balance: LoRA's dA = duᵀ·h, a
    /// 256-row forward) and by rows give each element the bits one thread gives it.</summary>
    [Theory]
    [InlineData(16, 4000, 320, true, false)]
    [InlineData(24, 700, 90, false, false)]
    [InlineData(256, 1000, 96, false, true)]
    [InlineData(1000, 48, 70, false, true)]
    public void EitherSplitGivesTheBitsOfOneThread(int m, int n, int k, bool transA, bool transB)
    {
        var rng = new Random(m + n);
        var a = Random(rng, m * k);
        var b = Random(rng, n * k);
        var c = new float[m * n];
        var c1 = new float[m * n];
        Gemm.Multiply(transA, transB, m, n, k, a, transA ? m : k, b, transB ? k : n, c, n, false);
        using (ParallelFor.UseThreads(1)) Gemm.Multiply(transA, transB, m, n, k, a, transA ? m : k, b, transB ? k : n, c1, n, false);
        Assert.True(c.AsSpan().SequenceEqual(c1), $"{m}×{n}×{k}: {ParallelFor.Threads} threads and 1 thread differ");
    }
}
