using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace AlignSharp.Engine.Kernels;

/// <summary>Which micro-kernel family <see cref="Gemm"/> runs; <see cref="Auto"/> picks the widest the CPU has.</summary>
internal enum GemmPath
{
    Auto,
    Avx512,
    Avx2,
    Scalar,
}

/// <summary>What a product with a bf16 B (<see cref="Gemm.MultiplyBf16"/>) may do with its float32 A.</summary>
public enum Bf16Inputs
{
    /// <summary>A is used exactly (B widened): the product of A and B, accumulated in float32.</summary>
    Exact,
    /// <summary>Generation: at decode shapes (m ≤ 8, B [n,k]) A may be rounded to bf16 for the vdpbf16ps decode kernel where the
    /// CPU has it; elsewhere exact.</summary>
    AtDecodeShapes,
    /// <summary>A is rounded to bf16 in every product, whatever its shape: the float32-accumulated product of bf16(A) and B,
    /// by the blocked vdpbf16ps kernel where the CPU has it (<see cref="Bf16Dot.RunBlocked"/>) and in float32 otherwise.
    /// A row of C gets the same bits whatever other rows, columns or threads share the product, so tokens scored in
    /// chunks get the values of the whole forward.</summary>
    Always,
}

/// <summary>
/// Single-precision matrix multiply. Shape contract (all row-major, element strides, no materialised transposes):
/// <code>
///   C[m,n] = (accumulate ? C : 0) + opA[m,k] · opB[k,n]
///   opA = A [m,k] (row stride lda), or Aᵀ when transA (A stored [k,m], row stride lda)
///   opB = B [k,n] (row stride ldb), or Bᵀ when transB (B stored [n,k], row stride ldb)
/// </code>
/// The fast path is the classic five-loop blocking: for each NC-wide column block and KC-deep slice, B is
/// packed into NR-wide micro-panels (kept in L1 by the micro-kernel), then for each MC-tall row block A is
/// packed into MR-tall micro-panels (kept in L2), and an MR×NR register tile is accumulated with FMAs.
/// The packing routines absorb the transposition, so all four trans combinations run the same kernel.
/// <para>
/// Determinism: every C element is one FMA chain over k in increasing order, seeded with C (accumulate, or a
/// later KC slice) or zero; its value does not depend on which tile, thread or batch share computed it, so
/// results are bitwise identical for any thread count (for a fixed <see cref="GemmPath"/>).
/// </para>
/// </summary>
public static unsafe class Gemm
{
    /// <summary>Depth of one packed slice (k is cut into equal slices of at most KC): the KC×NR B micro-panel (48 KiB at NR=32) is
    /// re-read from L1/L2 for every MR-row tile; 384 measured a little faster than 256 or 512 at 1024³ and 2048³ on Zen 5.</summary>
    internal const int KC = 384;
    /// <summary>Target rows of one packed A block (MC×KC floats ≈ 288 KiB, inside a 1 MiB L2).</summary>
    internal const int MCTarget = 192;
    /// <summary>Columns of one packed B block (KC×NC floats = 6 MiB per thread, in the shared L3).</summary>
    internal const int NCTarget = 4096;
    /// <summary>
    /// Below this many multiply-adds a product runs on the calling thread. Measured on 2 Zen 5 cores: waking a
    /// ParallelFor worker costs ~10 µs, so 96³ (12 µs on one core) got slower with 2 threads and 128³ (27 µs) faster.
    /// </summary>
    internal const long ParallelMinMacs = 112L * 112 * 112;

    /// <summary>B this large (bytes) is split over the threads even when its FLOPs alone would not be.</summary>
    internal const long StreamSplitBytes = 128 << 10;

    /// <summary>
    /// Bytes of B in the smallest chunk a thread takes of a streaming product (see <see cref="RunStreaming"/>): each
    /// chunk costs a call and a contended compare-and-swap, and the threads end at most a chunk apart (64 KB: ≈ 2.5 µs
    /// at 25 GB/s).
    /// </summary>
    internal const int StreamingChunkBytes = 64 * 1024;

    /// <summary>
    /// Runs a streaming product (m ≤ 8, B read once) of <paramref name="units"/> equal units of work over
    /// <paramref name="bBytes"/> of B. On the calling thread alone when the product has few MACs and B few bytes; else
    /// split by bytes as well as by FLOPs (a decode GEMV of a few hundred KB, Qwen's k and v projections at 229 KB in
    /// bf16, is few MACs but streams from memory, which two cores do faster than one), with
    /// <see cref="ParallelFor.RunBalanced"/> in chunks of at least <see cref="StreamingChunkBytes"/>. Balanced so, a
    /// decoding step of the 0.5B checkpoint (bf16) took 4–12% less at batch 8 and 7–15% less at batch 1 than with fixed
    /// halves: one core is often slower for a while (another tenant, a slower path to memory), and with fixed halves the
    /// other waited for it at every product. Every unit's output must be its own (a column block of C).
    /// </summary>
    internal static void RunStreaming<T>(int units, long macs, long bBytes, T work) where T : IChunkWork
    {
        int minPerThread = macs < ParallelMinMacs && bBytes < StreamSplitBytes ? units : 1;
        long minChunk = (StreamingChunkBytes * (long)units + bBytes - 1) / Math.Max(1, bBytes);
        ParallelFor.RunBalanced(units, minPerThread, (int)Math.Clamp(minChunk, 1, Math.Max(1, units)), work);
    }

    /// <summary>Column blocks at most this wide read A in place instead of packing it (see <see cref="Blocked{TK}"/>).</summary>
    internal const int UnpackedAMaxCols = 64;

    [ThreadStatic] private static GemmPath t_forcePath;

    /// <summary>Test hook: forces one kernel family on the calling thread (<see cref="GemmPath.Auto"/> = best available).</summary>
    internal static GemmPath ForcePath
    {
        get => t_forcePath;
        set
        {
            if (!IsSupported(value)) throw new PlatformNotSupportedException($"GEMM path {value} is not supported on this CPU.");
            t_forcePath = value;
        }
    }

    internal static bool IsSupported(GemmPath path) => path switch
    {
        GemmPath.Auto or GemmPath.Scalar => true,
        GemmPath.Avx512 => Avx512Kernel.IsSupported,
        GemmPath.Avx2 => Avx2Kernel.IsSupported,
        _ => false,
    };

    /// <summary>The path a call on this thread takes now.</summary>
    internal static GemmPath ActivePath => t_forcePath != GemmPath.Auto ? t_forcePath
        : Avx512Kernel.IsSupported ? GemmPath.Avx512
        : Avx2Kernel.IsSupported ? GemmPath.Avx2
        : GemmPath.Scalar;

    public static void Multiply(bool transA, bool transB, int m, int n, int k,
        ReadOnlySpan<float> a, int lda, ReadOnlySpan<float> b, int ldb, Span<float> c, int ldc, bool accumulate)
    {
        Validate(1, transA, transB, m, n, k, a.Length, lda, 0, b.Length, ldb, 0, c.Length, ldc, 0);
        if (m == 0 || n == 0) return;
        if (k == 0)
        {
            if (!accumulate) ZeroC(m, n, c, ldc);
            return;
        }
        fixed (float* pa = a, pb = b, pc = c)
        {
            var path = ActivePath;
            if (path == GemmPath.Avx512 && GemmSkinny.Applies(transA, transB, m, n, k))
            {
                GemmSkinny.Run(transA, transB, m, n, k, pa, lda, pb, ldb, pc, ldc, accumulate);
                return;
            }
            var p = new Problem(transA, transB, m, n, k, pa, lda, pb, ldb, pc, ldc, accumulate);
            switch (path)
            {
                case GemmPath.Avx512: RunParallel<Avx512Kernel>(p); break;
                case GemmPath.Avx2: RunParallel<Avx2Kernel>(p); break;
                default: RunParallel<ScalarKernel>(p); break;
            }
        }
    }

    public static void MultiplyBatched(int batch, bool transA, bool transB, int m, int n, int k,
        ReadOnlySpan<float> a, int lda, long strideA, ReadOnlySpan<float> b, int ldb, long strideB,
        Span<float> c, int ldc, long strideC, bool accumulate)
    {
        Validate(batch, transA, transB, m, n, k, a.Length, lda, strideA, b.Length, ldb, strideB, c.Length, ldc, strideC);
        if (batch == 0 || m == 0 || n == 0) return;
        if (k == 0)
        {
            if (!accumulate)
                for (int i = 0; i < batch; i++) ZeroC(m, n, c[(int)(i * strideC)..], ldc);
            return;
        }
        fixed (float* pa = a, pb = b, pc = c)
        {
            var p = new Problem(transA, transB, m, n, k, pa, lda, pb, ldb, pc, ldc, accumulate);
            switch (ActivePath)
            {
                case GemmPath.Avx512: RunBatched<Avx512Kernel>(p, batch, strideA, strideB, strideC); break;
                case GemmPath.Avx2: RunBatched<Avx2Kernel>(p, batch, strideA, strideB, strideC); break;
                default: RunBatched<ScalarKernel>(p, batch, strideA, strideB, strideC); break;
            }
        }
    }

    /// <summary>Whether <see cref="MultiplyBf16"/> at <see cref="Bf16Inputs.AtDecodeShapes"/> runs the vdpbf16ps decode kernel (<see cref="Bf16Dot"/>) for this shape.</summary>
    internal static bool Bf16DotRuns(bool transA, bool transB, int m) => ActivePath == GemmPath.Avx512 && Bf16Dot.Applies(transA, transB, m);

    /// <summary>Whether <see cref="MultiplyBf16"/> at <see cref="Bf16Inputs.Always"/> runs the blocked vdpbf16ps kernel
    /// (<see cref="Bf16Dot.RunBlocked"/>) rather than rounding A and multiplying in float32.</summary>
    public static bool Bf16BlockedRuns(bool transA) => ActivePath == GemmPath.Avx512 && Bf16Dot.IsAvailable && !transA;

    /// <summary>
    /// <see cref="Multiply"/> with B stored as bf16 (frozen weights): the same contract, B's values widened to
    /// float32 exactly as they are packed (or, for decode shapes, as they are streamed), float32 accumulation.
    /// The blocked path gives bitwise the result of <see cref="Multiply"/> on the widened B.
    /// <paramref name="inputs"/> says whether the caller accepts A rounded to bf16 (<see cref="Bf16Inputs"/>).
    /// </summary>
    public static void MultiplyBf16(bool transA, bool transB, int m, int n, int k,
        ReadOnlySpan<float> a, int lda, ReadOnlySpan<ushort> b, int ldb, Span<float> c, int ldc, bool accumulate,
        Bf16Inputs inputs = Bf16Inputs.Exact)
    {
        Validate(1, transA, transB, m, n, k, a.Length, lda, 0, b.Length, ldb, 0, c.Length, ldc, 0);
        if (m == 0 || n == 0) return;
        if (k == 0)
        {
            if (!accumulate) ZeroC(m, n, c, ldc);
            return;
        }
        if (inputs == Bf16Inputs.Always && !Bf16BlockedRuns(transA))
        {
            // The numbers the kernel would multiply (bf16(A) and B), in float32 on this CPU: by the blocked path alone, whose
            // elements do not depend on the rows around them (the skinny path for few rows sums in another order).
            int stored = transA ? k : m, width = transA ? m : k;
            var rounded = BufferPool.Rent(stored * width);
            try
            {
                for (int r = 0; r < stored; r++) Bf16.Round(a.Slice(r * lda, width), rounded.AsSpan(r * width, width));
                MultiplyBf16Blocked(transA, transB, m, n, k, rounded, width, b, ldb, c, ldc, accumulate);
            }
            finally { BufferPool.Return(rounded); }
            return;
        }
        fixed (float* pa = a, pc = c)
        fixed (ushort* pb = b)
        {
            if (inputs == Bf16Inputs.Always)
            {
                Bf16Dot.RunBlocked(transB, m, n, k, pa, lda, pb, ldb, pc, ldc, accumulate);
                return;
            }
            if (inputs == Bf16Inputs.AtDecodeShapes && Bf16DotRuns(transA, transB, m))
            {
                Bf16Dot.Run(m, n, k, pa, lda, pb, ldb, pc, ldc, accumulate);
                return;
            }
            if (ActivePath == GemmPath.Avx512 && GemmSkinnyBf16.Applies(transA, transB, m))
            {
                GemmSkinnyBf16.Run(m, n, k, pa, lda, pb, ldb, pc, ldc, accumulate);
                return;
            }
        }
        MultiplyBf16Blocked(transA, transB, m, n, k, a, lda, b, ldb, c, ldc, accumulate);
    }

    /// <summary>The five-loop path of <see cref="MultiplyBf16"/>, B widened as it is packed.</summary>
    private static void MultiplyBf16Blocked(bool transA, bool transB, int m, int n, int k,
        ReadOnlySpan<float> a, int lda, ReadOnlySpan<ushort> b, int ldb, Span<float> c, int ldc, bool accumulate)
    {
        fixed (float* pa = a, pc = c)
        fixed (ushort* pb = b)
        {
            var p = new Problem(transA, transB, m, n, k, pa, lda, null, ldb, pc, ldc, accumulate, pb);
            switch (ActivePath)
            {
                case GemmPath.Avx512: RunParallel<Avx512Kernel>(p); break;
                case GemmPath.Avx2: RunParallel<Avx2Kernel>(p); break;
                default: RunParallel<ScalarKernel>(p); break;
            }
        }
    }

    public static void Reference(bool transA, bool transB, int m, int n, int k,
        ReadOnlySpan<float> a, int lda, ReadOnlySpan<float> b, int ldb, Span<float> c, int ldc, bool accumulate)
    {
        Validate(1, transA, transB, m, n, k, a.Length, lda, 0, b.Length, ldb, 0, c.Length, ldc, 0);
        for (int i = 0; i < m; i++)
        {
            for (int j = 0; j < n; j++)
            {
                float sum = 0f;
                for (int p = 0; p < k; p++)
                {
                    float av = transA ? a[p * lda + i] : a[i * lda + p];
                    float bv = transB ? b[j * ldb + p] : b[p * ldb + j];
                    sum += av * bv;
                }
                c[i * ldc + j] = accumulate ? c[i * ldc + j] + sum : sum;
            }
        }
    }

    // ---------------------------------------------------------------- validation

    private static void Validate(int batch, bool transA, bool transB, int m, int n, int k,
        int lengthA, int lda, long strideA, int lengthB, int ldb, long strideB, int lengthC, int ldc, long strideC)
    {
        if (batch < 0) throw new ArgumentOutOfRangeException(nameof(batch), batch, "batch must be >= 0.");
        if (m < 0) throw new ArgumentOutOfRangeException(nameof(m), m, "m must be >= 0.");
        if (n < 0) throw new ArgumentOutOfRangeException(nameof(n), n, "n must be >= 0.");
        if (k < 0) throw new ArgumentOutOfRangeException(nameof(k), k, "k must be >= 0.");
        CheckOperand("a", "lda", "strideA", lengthA, transA ? k : m, transA ? m : k, lda, strideA, batch, transA ? "[k,m] (transA)" : "[m,k]");
        CheckOperand("b", "ldb", "strideB", lengthB, transB ? n : k, transB ? k : n, ldb, strideB, batch, transB ? "[n,k] (transB)" : "[k,n]");
        CheckOperand("c", "ldc", "strideC", lengthC, m, n, ldc, strideC, batch, "[m,n]");
        if (batch > 1 && m > 0 && n > 0)
        {
            // Batch entries of C must be disjoint (they are written in parallel): either stacked blocks of rows,
            // or side by side within each row (e.g. attention heads interleaved in [T, heads*headDim]).
            bool stacked = strideC >= (long)(m - 1) * ldc + n;
            bool sideBySide = strideC >= n && (batch - 1) * strideC + n <= ldc;
            if (!stacked && !sideBySide)
                throw new ArgumentException(
                    $"strideC={strideC} makes the {m}x{n} C blocks of different batch entries overlap (ldc={ldc}); " +
                    "use strideC >= (m-1)*ldc+n, or place the blocks side by side within ldc.", nameof(strideC));
        }
    }

    private static void CheckOperand(string name, string ldName, string strideName, int length, int rows, int cols,
        int ld, long stride, int batch, string layout)
    {
        if (ld < cols)
            throw new ArgumentOutOfRangeException(ldName, ld, $"{ldName} must be >= {cols}, the row length of {name} stored as {layout}.");
        if (stride < 0)
            throw new ArgumentOutOfRangeException(strideName, stride, $"{strideName} must be >= 0 (0 broadcasts {name} to every batch entry).");
        if (rows == 0 || cols == 0 || batch == 0) return;
        long need = (long)(batch - 1) * stride + (long)(rows - 1) * ld + cols;
        if (length < need)
            throw new ArgumentException(
                $"Span {name} has {length} elements but a {rows}x{cols} matrix stored as {layout} with {ldName}={ld}" +
                (batch > 1 ? $", batch={batch} and {strideName}={stride}" : "") + $" needs {need}.", name);
    }

    private static void ZeroC(int m, int n, Span<float> c, int ldc)
    {
        for (int i = 0; i < m; i++) c.Slice(i * ldc, n).Clear();
    }

    // ---------------------------------------------------------------- driver

    /// <summary>One product, as raw pointers (the spans are pinned by the caller for the whole call); B is either
    /// float32 (<c>B</c>) or bf16 (<c>B16</c>, then <c>B</c> is null).</summary>
    private readonly struct Problem(bool transA, bool transB, int m, int n, int k,
        float* a, nint lda, float* b, nint ldb, float* c, nint ldc, bool accumulate, ushort* b16 = null)
    {
        public readonly bool TransA = transA, TransB = transB, Accumulate = accumulate;
        public readonly int M = m, N = n, K = k;
        public readonly float* A = a, B = b, C = c;
        public readonly ushort* B16 = b16;
        public readonly nint Lda = lda, Ldb = ldb, Ldc = ldc;

        public Problem Offset(long offA, long offB, long offC) =>
            new(TransA, TransB, M, N, K, A + offA, Lda, B == null ? null : B + offB, Ldb, C + offC, Ldc, Accumulate,
                B16 == null ? null : B16 + offB);
    }

    /// <summary>
    /// Splits one product between threads by whole MR-row or NR-column tiles, whichever balances better;
    /// each share runs the complete blocked algorithm on its part with its own packing buffers.
    /// </summary>
    private static void RunParallel<TK>(in Problem p) where TK : struct, IGemmKernel
    {
        int tilesM = (p.M + TK.MR - 1) / TK.MR, tilesN = (p.N + TK.NR - 1) / TK.NR;
        if (Shares(tilesM, tilesN, (long)p.M * p.N * p.K, out bool splitM) == 1)
        {
            Blocked<TK>(p, 0, p.M, 0, p.N);
            return;
        }
        ParallelFor.Run(splitM ? tilesM : tilesN, 1, new TileShare<TK>(p, splitM));
    }

    /// <summary>How many threads share a product of <paramref name="tilesM"/> × <paramref name="tilesN"/> register tiles
    /// and <paramref name="macs"/> multiply-adds, and whether by rows of tiles (else by columns): whichever balances better.</summary>
    internal static int Shares(int tilesM, int tilesN, long macs, out bool splitM)
    {
        splitM = false;
        int threads = ParallelFor.SharesFor(Math.Max(tilesM, tilesN), 1);
        if (threads == 1 || macs < ParallelMinMacs) return 1;
        // On a tie the side with more tiles: a C of 2 row tiles (LoRA's dA = duᵀ·h, 16 rows) split by rows had each thread
        // pack all of B for one tile, one of them a mostly empty edge tile (16 × 4,864 × 320 at 44 GFLOP/s).
        double bm = Balance(tilesM, threads), bn = Balance(tilesN, threads);
        splitM = bm > bn || (bm == bn && tilesM >= tilesN);
        return threads;
    }

    /// <summary>Fraction of the slowest share's time spent on useful work when <paramref name="tiles"/> are split.</summary>
    private static double Balance(int tiles, int threads)
    {
        int shares = Math.Min(tiles, threads);
        return (double)tiles / (threads * ((tiles + shares - 1) / shares));
    }

    private readonly struct TileShare<TK>(Problem p, bool splitM) : IRangeWork where TK : struct, IGemmKernel
    {
        public void Run(int start, int end)
        {
            if (splitM) Blocked<TK>(p, start * TK.MR, Math.Min(p.M, end * TK.MR), 0, p.N);
            else Blocked<TK>(p, 0, p.M, start * TK.NR, Math.Min(p.N, end * TK.NR));
        }
    }

    /// <summary>
    /// Many small products (attention: batch = B·heads) are split by batch entry, each run on one thread;
    /// a few large ones run one after another, each split by tiles.
    /// </summary>
    private static void RunBatched<TK>(in Problem p, int batch, long strideA, long strideB, long strideC)
        where TK : struct, IGemmKernel
    {
        if (batch == 1)
        {
            RunParallel<TK>(p);
            return;
        }
        long macs = (long)p.M * p.N * p.K;
        int threads = ParallelFor.SharesFor(batch, 1);
        if (batch >= 4 * threads || macs < 4 * ParallelMinMacs)
        {
            // Enough entries for a near-even split, or each entry too small to be worth splitting by tiles.
            long minPerThread = Math.Max(1, ParallelMinMacs / Math.Max(1, macs));
            ParallelFor.Run(batch, (int)Math.Min(int.MaxValue, minPerThread), new BatchShare<TK>(p, strideA, strideB, strideC));
            return;
        }
        for (int i = 0; i < batch; i++) RunParallel<TK>(p.Offset(i * strideA, i * strideB, i * strideC));
    }

    private readonly struct BatchShare<TK>(Problem p, long strideA, long strideB, long strideC) : IRangeWork
        where TK : struct, IGemmKernel
    {
        public void Run(int start, int end)
        {
            for (int i = start; i < end; i++)
                Blocked<TK>(p.Offset(i * strideA, i * strideB, i * strideC), 0, p.M, 0, p.N);
        }
    }

    /// <summary>The blocked algorithm on rows [i0,i1) and columns [j0,j1) of C, on the calling thread.</summary>
    private static void Blocked<TK>(in Problem p, int i0, int i1, int j0, int j1) where TK : struct, IGemmKernel
    {
        int mr = TK.MR, nr = TK.NR;
        // Equal KC slices (k=300 → 2×150, not 256+44) and MC blocks rounded to whole micro-panels.
        int kSlices = (p.K + KC - 1) / KC;
        int kc0 = (p.K + kSlices - 1) / kSlices;
        int rows = i1 - i0, cols = j1 - j0;
        int mBlocks = (rows + MCTarget - 1) / MCTarget;
        int mc0 = RoundUp((rows + mBlocks - 1) / mBlocks, mr);
        int nc0 = Math.Min(RoundUp(cols, nr), RoundUp(NCTarget, nr));
        var ws = Workspace.Get(mc0 * kc0, nc0 * kc0, mr * nr);
        float* packAPanel = ws.A, packB = ws.B, edge = ws.Edge;

        for (int jc = j0; jc < j1; jc += nc0)
        {
            int nc = Math.Min(nc0, j1 - jc);
            for (int pc = 0; pc < p.K; pc += kc0)
            {
                int kc = Math.Min(kc0, p.K - pc);
                bool load = p.Accumulate || pc > 0;
                PackB(p, pc, kc, jc, nc, nr, packB);
                for (int ic = i0; ic < i1; ic += mc0)
                {
                    int mc = Math.Min(mc0, i1 - ic);
                    // A packed once is reused by every NR column tile of the block; with only one or two
                    // tiles the copy costs as much as it saves, so full-height tiles read A in place.
                    bool packA = nc > UnpackedAMaxCols;
                    if (packA) PackA(p, ic, mc, pc, kc, mr, packAPanel);
                    for (int jr = 0; jr < nc; jr += nr)
                    {
                        float* bPanel = packB + (nint)jr * kc;
                        int nTile = Math.Min(nr, nc - jr);
                        for (int ir = 0; ir < mc; ir += mr)
                        {
                            float* cTile = p.C + (ic + ir) * p.Ldc + jc + jr;
                            int mTile = Math.Min(mr, mc - ir);
                            float* aPanel = packAPanel + (nint)ir * kc;
                            nint aStep = mr;
                            bool rowA = false;
                            if (!packA)
                            {
                                if (mTile < mr) { PackA(p, ic + ir, mTile, pc, kc, mr, packAPanel); aPanel = packAPanel; }
                                else if (p.TransA) { aPanel = p.A + pc * p.Lda + ic + ir; aStep = p.Lda; }
                                else { aPanel = p.A + (ic + ir) * p.Lda + pc; aStep = p.Lda; rowA = true; }
                            }
                            float* target = cTile;
                            nint ldt = p.Ldc;
                            if (mTile < mr || nTile < nr)
                            {
                                // Edge tile: run the same kernel on an MR×NR scratch tile, copy the valid part.
                                target = edge;
                                ldt = nr;
                                if (load) CopyTile(cTile, p.Ldc, edge, nr, mTile, nTile);
                            }
                            if (rowA) TK.RunRowA(kc, aPanel, aStep, bPanel, target, ldt, load);
                            else TK.Run(kc, aPanel, aStep, bPanel, target, ldt, load);
                            if (target == edge) CopyTile(edge, nr, cTile, p.Ldc, mTile, nTile);
                        }
                    }
                }
            }
        }
    }

    private static int RoundUp(int x, int multiple) => (x + multiple - 1) / multiple * multiple;

    private static void CopyTile(float* src, nint ldSrc, float* dst, nint ldDst, int rows, int cols)
    {
        for (int r = 0; r < rows; r++) CopyFloats(src + r * ldSrc, dst + r * ldDst, cols);
    }

    /// <summary>Copies a few dozen floats inline: a packed row or tile edge is too short for a call to memmove to pay.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void CopyFloats(float* src, float* dst, int n)
    {
        int i = 0;
        if (Vector256.IsHardwareAccelerated)
            for (; i + 8 <= n; i += 8) Vector256.Store(Vector256.Load(src + i), dst + i);
        if (Vector128.IsHardwareAccelerated)
            for (; i + 4 <= n; i += 4) Vector128.Store(Vector128.Load(src + i), dst + i);
        for (; i < n; i++) dst[i] = src[i];
    }

    /// <summary>
    /// Packs opA[ic..ic+mc, pc..pc+kc] as MR-tall micro-panels: panel q holds, for each p, the MR values
    /// opA[ic+q·MR+r, pc+p] at dst[q·MR·kc + p·MR + r]; rows past mc are zero (edge tiles compute garbage-free zeros).
    /// </summary>
    private static void PackA(in Problem p, int ic, int mc, int pc, int kc, int mr, float* dst)
    {
        for (int ir = 0; ir < mc; ir += mr)
        {
            int rows = Math.Min(mr, mc - ir);
            float* d = dst + (nint)ir * kc;
            if (!p.TransA)
            {
                // A[i, p] at A + i·lda + p: each source row is contiguous in p, written with stride MR
                // (8×8 blocks through registers where they fit, the rest one element at a time).
                int r0 = 0;
                if (Avx.IsSupported)
                {
                    int kc8 = kc & ~7;
                    for (; r0 + 8 <= rows; r0 += 8)
                    {
                        float* s = p.A + (ic + ir + r0) * p.Lda + pc;
                        for (int q = 0; q < kc8; q += 8) Transpose8x8(s + q, p.Lda, d + q * mr + r0, mr);
                        for (int r = r0; r < r0 + 8; r++)
                            for (int q = kc8; q < kc; q++) d[q * mr + r] = p.A[(ic + ir + r) * p.Lda + pc + q];
                    }
                    // The AVX-512 kernel's 12 rows leave 4 after the 8-row blocks: one at a time, they took most of
                    // the packing time of a small model's products.
                    for (; r0 + 4 <= rows; r0 += 4)
                    {
                        float* s = p.A + (ic + ir + r0) * p.Lda + pc;
                        for (int q = 0; q < kc8; q += 8) Transpose4x8(s + q, p.Lda, d + q * mr + r0, mr);
                        for (int r = r0; r < r0 + 4; r++)
                            for (int q = kc8; q < kc; q++) d[q * mr + r] = p.A[(ic + ir + r) * p.Lda + pc + q];
                    }
                }
                for (int r = r0; r < rows; r++)
                {
                    float* s = p.A + (ic + ir + r) * p.Lda + pc;
                    float* dr = d + r;
                    for (int q = 0; q < kc; q++) dr[q * mr] = s[q];
                }
            }
            else
            {
                // Aᵀ: A[p, i] at A + p·lda + i: the MR values of one p are contiguous.
                for (int q = 0; q < kc; q++) CopyFloats(p.A + (pc + q) * p.Lda + ic + ir, d + q * mr, rows);
            }
            if (rows < mr)
                for (int q = 0; q < kc; q++)
                    for (int r = rows; r < mr; r++) d[q * mr + r] = 0f;
        }
    }

    /// <summary>
    /// Packs opB[pc..pc+kc, jc..jc+nc] as NR-wide micro-panels: panel q holds, for each p, the NR values
    /// opB[pc+p, jc+q·NR+j] at dst[q·NR·kc + p·NR + j]; columns past nc are zero.
    /// </summary>
    private static void PackB(in Problem p, int pc, int kc, int jc, int nc, int nr, float* dst)
    {
        if (p.B16 != null)
        {
            PackBBf16(p, pc, kc, jc, nc, nr, dst);
            return;
        }
        for (int jr = 0; jr < nc; jr += nr)
        {
            int cols = Math.Min(nr, nc - jr);
            float* d = dst + (nint)jr * kc;
            if (!p.TransB)
            {
                // B[p, j] at B + p·ldb + j: one packed row is a contiguous copy.
                for (int q = 0; q < kc; q++)
                {
                    float* s = p.B + (pc + q) * p.Ldb + jc + jr;
                    float* dq = d + q * nr;
                    CopyFloats(s, dq, cols);
                    for (int j = cols; j < nr; j++) dq[j] = 0f;
                }
            }
            else
            {
                // Bᵀ: B[j, p] at B + j·ldb + p: each source row is contiguous in p, written with stride NR
                // (8×8 blocks through registers where they fit, the rest one element at a time).
                int j0 = 0;
                if (Avx.IsSupported)
                {
                    int kc8 = kc & ~7;
                    for (; j0 + 8 <= cols; j0 += 8)
                    {
                        float* s = p.B + (jc + jr + j0) * p.Ldb + pc;
                        for (int q = 0; q < kc8; q += 8) Transpose8x8(s + q, p.Ldb, d + q * nr + j0, nr);
                        for (int j = j0; j < j0 + 8; j++)
                            for (int q = kc8; q < kc; q++) d[q * nr + j] = p.B[(jc + jr + j) * p.Ldb + pc + q];
                    }
                }
                for (int j = j0; j < cols; j++)
                {
                    float* s = p.B + (jc + jr + j) * p.Ldb + pc;
                    float* dj = d + j;
                    for (int q = 0; q < kc; q++) dj[q * nr] = s[q];
                }
                if (cols < nr)
                    for (int q = 0; q < kc; q++)
                        for (int j = cols; j < nr; j++) d[q * nr + j] = 0f;
            }
        }
    }

    /// <summary>
    /// <see cref="PackB"/> for a bf16 B: the same packed float32 layout, each value widened exactly on the way in
    /// (so the micro-kernels and their results are those of the float32 path on the widened B).
    /// </summary>
    private static void PackBBf16(in Problem p, int pc, int kc, int jc, int nc, int nr, float* dst)
    {
        for (int jr = 0; jr < nc; jr += nr)
        {
            int cols = Math.Min(nr, nc - jr);
            float* d = dst + (nint)jr * kc;
            if (!p.TransB)
            {
                // B[p, j] at B16 + p·ldb + j: one packed row is a contiguous widening copy. A full 32-column row (the
                // AVX-512 kernel's NR) is widened inline: through Bf16.Widen, a call and its width checks per 32 values,
                // the widening took 6% of a LoRA update's time (the input gradients through frozen bf16 weights).
                if (cols == 32 && nr == 32 && Vector512.IsHardwareAccelerated)
                {
                    for (int q = 0; q < kc; q++) Bf16.Widen32(p.B16 + (pc + q) * p.Ldb + jc + jr, d + q * 32);
                    continue;
                }
                for (int q = 0; q < kc; q++)
                {
                    float* dq = d + q * nr;
                    Bf16.Widen(p.B16 + (pc + q) * p.Ldb + jc + jr, dq, cols);
                    for (int j = cols; j < nr; j++) dq[j] = 0f;
                }
            }
            else
            {
                // Bᵀ: B[j, p] at B16 + j·ldb + p: 8 rows × 8 k values are widened into registers
                // (zero-extend, shift into the high half) and transposed; the rest one element at a time.
                int j0 = 0;
                if (Avx2.IsSupported)
                {
                    int kc8 = kc & ~7;
                    for (; j0 + 8 <= cols; j0 += 8)
                    {
                        ushort* s = p.B16 + (jc + jr + j0) * p.Ldb + pc;
                        for (int q = 0; q < kc8; q += 8)
                        {
                            ushort* sq = s + q;
                            Transpose8x8(WidenBf16x8(sq), WidenBf16x8(sq + p.Ldb), WidenBf16x8(sq + 2 * p.Ldb), WidenBf16x8(sq + 3 * p.Ldb),
                                WidenBf16x8(sq + 4 * p.Ldb), WidenBf16x8(sq + 5 * p.Ldb), WidenBf16x8(sq + 6 * p.Ldb), WidenBf16x8(sq + 7 * p.Ldb),
                                d + q * nr + j0, nr);
                        }
                        for (int j = j0; j < j0 + 8; j++)
                            for (int q = kc8; q < kc; q++) d[q * nr + j] = Bf16.ToFloat(p.B16[(jc + jr + j) * p.Ldb + pc + q]);
                    }
                }
                for (int j = j0; j < cols; j++)
                {
                    ushort* s = p.B16 + (jc + jr + j) * p.Ldb + pc;
                    float* dj = d + j;
                    for (int q = 0; q < kc; q++) dj[q * nr] = Bf16.ToFloat(s[q]);
                }
                if (cols < nr)
                    for (int q = 0; q < kc; q++)
                        for (int j = cols; j < nr; j++) d[q * nr + j] = 0f;
            }
        }
    }

    /// <summary>Eight bf16 values as eight float32 lanes (vpmovzxwd, then a 16-bit left shift).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> WidenBf16x8(ushort* s) =>
        Avx2.ShiftLeftLogical(Avx2.ConvertToVector256Int32(s), 16).AsSingle();

    /// <summary>dst[c·ldDst + r] = src[r·ldSrc + c] for an 8×8 block: unpack pairs, shuffle quads, swap 128-bit halves.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void Transpose8x8(float* src, nint ldSrc, float* dst, nint ldDst) =>
        Transpose8x8(Vector256.Load(src), Vector256.Load(src + ldSrc), Vector256.Load(src + 2 * ldSrc), Vector256.Load(src + 3 * ldSrc),
            Vector256.Load(src + 4 * ldSrc), Vector256.Load(src + 5 * ldSrc), Vector256.Load(src + 6 * ldSrc), Vector256.Load(src + 7 * ldSrc),
            dst, ldDst);

    /// <summary>Stores the 4×8 block of rows src, src + ldSrc, ... transposed: dst[c·ldDst + r] = src[r·ldSrc + c], four
    /// values per column.</summary>
    private static void Transpose4x8(float* src, nint ldSrc, float* dst, nint ldDst)
    {
        Vector256<float> r0 = Vector256.Load(src), r1 = Vector256.Load(src + ldSrc),
            r2 = Vector256.Load(src + 2 * ldSrc), r3 = Vector256.Load(src + 3 * ldSrc);
        var t0 = Avx.UnpackLow(r0, r1); var t1 = Avx.UnpackHigh(r0, r1);
        var t2 = Avx.UnpackLow(r2, r3); var t3 = Avx.UnpackHigh(r2, r3);
        // u0 = [a00 a10 a20 a30 | a04 a14 a24 a34]: columns 0 and 4; u1 columns 1 and 5, u2 2 and 6, u3 3 and 7.
        var u0 = Avx.Shuffle(t0, t2, 0x44); var u1 = Avx.Shuffle(t0, t2, 0xEE);
        var u2 = Avx.Shuffle(t1, t3, 0x44); var u3 = Avx.Shuffle(t1, t3, 0xEE);
        u0.GetLower().Store(dst); u1.GetLower().Store(dst + ldDst);
        u2.GetLower().Store(dst + 2 * ldDst); u3.GetLower().Store(dst + 3 * ldDst);
        u0.GetUpper().Store(dst + 4 * ldDst); u1.GetUpper().Store(dst + 5 * ldDst);
        u2.GetUpper().Store(dst + 6 * ldDst); u3.GetUpper().Store(dst + 7 * ldDst);
    }

    /// <summary>Stores the 8×8 block whose rows are r0..r7 transposed: dst[c·ldDst + r] = r_r[c].</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Transpose8x8(Vector256<float> r0, Vector256<float> r1, Vector256<float> r2, Vector256<float> r3,
        Vector256<float> r4, Vector256<float> r5, Vector256<float> r6, Vector256<float> r7, float* dst, nint ldDst)
    {
        // t0 = [a00 a10 a01 a11 | a04 a14 a05 a15], t1 = [a02 a12 a03 a13 | a06 a16 a07 a17], ...
        var t0 = Avx.UnpackLow(r0, r1); var t1 = Avx.UnpackHigh(r0, r1);
        var t2 = Avx.UnpackLow(r2, r3); var t3 = Avx.UnpackHigh(r2, r3);
        var t4 = Avx.UnpackLow(r4, r5); var t5 = Avx.UnpackHigh(r4, r5);
        var t6 = Avx.UnpackLow(r6, r7); var t7 = Avx.UnpackHigh(r6, r7);
        // u0 = [a00 a10 a20 a30 | a04 a14 a24 a34]: column 0 (low half) and column 4 (high half) of rows 0..3.
        var u0 = Avx.Shuffle(t0, t2, 0x44); var u1 = Avx.Shuffle(t0, t2, 0xEE);
        var u2 = Avx.Shuffle(t1, t3, 0x44); var u3 = Avx.Shuffle(t1, t3, 0xEE);
        var u4 = Avx.Shuffle(t4, t6, 0x44); var u5 = Avx.Shuffle(t4, t6, 0xEE);
        var u6 = Avx.Shuffle(t5, t7, 0x44); var u7 = Avx.Shuffle(t5, t7, 0xEE);
        Avx.Permute2x128(u0, u4, 0x20).Store(dst);
        Avx.Permute2x128(u1, u5, 0x20).Store(dst + ldDst);
        Avx.Permute2x128(u2, u6, 0x20).Store(dst + 2 * ldDst);
        Avx.Permute2x128(u3, u7, 0x20).Store(dst + 3 * ldDst);
        Avx.Permute2x128(u0, u4, 0x31).Store(dst + 4 * ldDst);
        Avx.Permute2x128(u1, u5, 0x31).Store(dst + 5 * ldDst);
        Avx.Permute2x128(u2, u6, 0x31).Store(dst + 6 * ldDst);
        Avx.Permute2x128(u3, u7, 0x31).Store(dst + 7 * ldDst);
    }

    /// <summary>
    /// Per-thread packing buffers: one pinned array (never moved, never freed while the thread lives) carved
    /// into 64-byte-aligned A, B and edge-tile regions; grown only when a larger block is first needed.
    /// </summary>
    private sealed class Workspace
    {
        [ThreadStatic] private static Workspace? t_current;
        private float[] _storage = [];
        private long _capA, _capB, _capEdge;
        public float* A, B, Edge;

        public static Workspace Get(long floatsA, long floatsB, long floatsEdge)
        {
            var ws = t_current ??= new Workspace();
            if (floatsA > ws._capA || floatsB > ws._capB || floatsEdge > ws._capEdge)
                ws.Grow(Math.Max(floatsA, ws._capA), Math.Max(floatsB, ws._capB), Math.Max(floatsEdge, ws._capEdge));
            return ws;
        }

        private void Grow(long capA, long capB, long capEdge)
        {
            const int align = 16; // floats per 64 bytes
            capA = (capA + align - 1) / align * align;
            capB = (capB + align - 1) / align * align;
            capEdge = (capEdge + align - 1) / align * align;
            _storage = GC.AllocateUninitializedArray<float>(checked((int)(capA + capB + capEdge + align)), pinned: true);
            float* p0 = (float*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(_storage));
            float* aligned = (float*)(((nuint)p0 + 63) & ~(nuint)63);
            A = aligned;
            B = aligned + capA;
            Edge = aligned + capA + capB;
            (_capA, _capB, _capEdge) = (capA, capB, capEdge);
        }
    }
}
