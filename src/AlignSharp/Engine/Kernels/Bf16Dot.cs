using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace AlignSharp.Engine.Kernels;

/// <summary>
/// Decode shapes with a bf16 weight on CPUs with AVX512-BF16 (<c>vdpbf16ps</c>), which .NET 10 has no intrinsic for:
/// C[m,n] = (accumulate ? C : 0) + bf16(A)[m,k] · Bᵀ, B stored [n,k] in bf16 (a Linear weight [out, in]), m ≤ 8.
/// The kernel is C (native/bf16dot.c), compiled by scripts/build-bf16dot.sh into one self-contained function whose
/// machine code <see cref="Bf16DotCode"/> embeds; on first use it is copied into an anonymous mapping that is then made
/// read+execute (never writable and executable at once) and called through a function pointer, once to round A to
/// bf16 and once per chunk of B's rows a thread takes (<see cref="Gemm.RunStreaming"/>), so the managed→native
/// transition is paid a few times per thread and product.
/// <para>
/// Numerics (fixed by the instructions, MXCSR ignored): A is rounded to bf16 (nearest, ties to even; denormal inputs
/// read as zero); each pair of bf16 products is exact and added into float32 lanes (denormals flushed), the 16 lanes
/// summed at the end. B is read as stored. So the result is the float32-accumulated product of bf16(A) and B, not of A:
/// callers opt in (<see cref="Gemm.MultiplyBf16"/>'s <see cref="Bf16Inputs"/>): generation at decode shapes
/// (<see cref="Ops.RoundActivationsToBf16"/>), and a run with bf16 products (<see cref="Ops.Bf16Products"/>) at every shape,
/// through <see cref="RunBlocked"/>, the same file's packed kernel for many rows.
/// </para>
/// Used when all hold: Linux x86-64; the runtime reports AVX-512 F and BW (which also means the OS saves the ZMM
/// state: the runtime checks XCR0; .NET 10 turns it off with <c>DOTNET_EnableAVX512=0</c>, not with the older <c>DOTNET_EnableAVX512F=0</c>); CPUID leaf 7 subleaf 1 reports
/// AVX512_BF16 (EAX bit 5); <c>ALIGNSHARP_BF16_DOT</c> is not <c>0</c>; and the pages could be mapped. Otherwise
/// <see cref="GemmSkinnyBf16"/> (exact widening) runs.
/// </summary>
internal static unsafe class Bf16Dot
{
    /// <summary>Mirrors <c>Args</c> in native/bf16dot.c (field order and sizes must match).</summary>
    [StructLayout(LayoutKind.Sequential)]
    private struct Args
    {
        public float* A;
        public ushort* B;
        public float* C;
        public ushort* A16;
        public long Lda, Ldb, Ldc;
        public int M, K, J0, J1, Accumulate, Convert, StreamEnd, PrefetchL2;
        public uint* Pa, Pb, Pack;
        public int Rows, Cols, Kc, TransB;
    }

    private static readonly delegate* unmanaged<Args*, void> Entry = Load(out _unavailableReason);
    private static readonly string? _unavailableReason;

    /// <summary>Whether the native kernel runs on this machine and process.</summary>
    public static bool IsAvailable => Entry != null;

    /// <summary>Why <see cref="IsAvailable"/> is false (for test and benchmark output); null when it is available.</summary>
    public static string? UnavailableReason => _unavailableReason;

    /// <summary>
    /// Whether the kernel prefetches B's lines into L2 (<c>prefetcht1</c>) rather than L1 (<c>prefetcht0</c>). The same
    /// pattern streams fastest into L1 on AMD family 0x1A (Zen 5), where the kernel was tuned, but on family 0x19 (Zen 4)
    /// into L2: there the L1 prefetches held two cores to 20–22 GB/s of B against a plain read's 30–34, and L2 prefetches
    /// read 27–33 at m = 1 and 8 (a C harness over the 0.5B shape's products, builds alternating; docs/performance.md).
    /// So AMD family 0x19 takes L2 and every other CPU L1, the choices measured; <c>ALIGNSHARP_BF16_PREFETCH=l1|l2</c> overrides
    /// it. Where lines go changes no result.
    /// </summary>
    internal static bool PrefetchIntoL2 { get; set; } = Environment.GetEnvironmentVariable("ALIGNSHARP_BF16_PREFETCH") switch
    {
        "l1" => false,
        "l2" => true,
        _ => CpuId.IsAmd && CpuId.Family == 0x19,
    };

    public static bool Applies(bool transA, bool transB, int m) => IsAvailable && !transA && transB && m <= 8;

    [ThreadStatic] private static ushort[]? t_a16;
    [ThreadStatic] private static ushort[]? t_down16;

    /// <summary>Columns per unit of work: a multiple of every tile width (8, 6, 4, 3), so only the last tile of a C is partial.</summary>
    private const int UnitColumns = 24;

    public static void Run(int m, int n, int k, float* a, nint lda, ushort* b, nint ldb, float* c, nint ldc, bool accumulate,
        LowRank term = default, float* residual = null)
    {
        int units = (n + UnitColumns - 1) / UnitColumns;
        var product = new Product(b, ldb, n, c, ldc, accumulate, term, residual);
        Announce([product], [0, units]);
        Gemm.RunStreaming(units, (long)m * n * k, (long)n * k * sizeof(ushort), new Shares(RoundA(m, k, a, lda), product));
    }

    /// <summary>Register tile of the blocked kernel (GMR, GNR in native/bf16dot.c): 12 rows × 32 columns, 24 accumulators.</summary>
    private const int BlockMR = 12, BlockNR = 32;

    /// <summary>k positions of one packed slice (k is cut into equal, even slices of at most this many). The 32-column
    /// B panel of a slice is then 48 KB: on Zen 4 (2026-12-03, a C harness over 320 × 4,864 × 896 and 320 × 896 × 4,864)
    /// slices of 768–1,536 ran at 170–183 GFLOP/s on one core, 384 at 139–151, 2,048 down to 125.</summary>
    private const int BlockKC = 768;

    /// <summary>Rows of A packed at once (≤ 240 × 768 bf16 = 360 KB, in L2 beside B's panel) and columns of B (≤ 6 MB).</summary>
    private const int BlockMC = 240, BlockNC = 4096;

    [ThreadStatic] private static uint[]? t_packA, t_packB;

    /// <summary>
    /// C[m,n] = (accumulate ? C : 0) + bf16(A)[m,k] · opB[k,n] for any m, A [m,k] float32 (row stride lda), B bf16 stored
    /// [n,k] (<paramref name="transB"/>, a Linear's forward) or [k,n] (its input gradient): the five-loop blocking of
    /// <see cref="Gemm"/> with vdpbf16ps register tiles of <see cref="BlockMR"/> × <see cref="BlockNR"/> (native/bf16dot.c,
    /// pack_a, pack_b, gemm_block), about twice the float32 kernel's multiply-adds a cycle. Every element of C is one
    /// chain over each k slice's pairs (slices fixed by k alone), added to C slice by slice, so its value does not depend
    /// on m, on the columns around it or on the threads.
    /// </summary>
    public static void RunBlocked(bool transB, int m, int n, int k, float* a, nint lda, ushort* b, nint ldb, float* c, nint ldc, bool accumulate)
    {
        int tilesM = (m + BlockMR - 1) / BlockMR, tilesN = (n + BlockNR - 1) / BlockNR;
        bool parallel = Gemm.Shares(tilesM, tilesN, (long)m * n * k, out bool splitM) > 1;
        var job = new BlockedShare(transB, m, n, k, a, lda, b, ldb, c, ldc, accumulate, splitM);
        if (!parallel) job.Block(0, m, 0, n);
        else ParallelFor.Run(splitM ? tilesM : tilesN, 1, job);
    }

    private readonly struct BlockedShare(bool transB, int m, int n, int k, float* a, nint lda, ushort* b, nint ldb,
        float* c, nint ldc, bool accumulate, bool byRows) : IRangeWork
    {
        private readonly bool TransB = transB, Accumulate = accumulate, ByRows = byRows;
        private readonly int M = m, N = n, K = k;
        private readonly float* A = a, C = c;
        private readonly ushort* B = b;
        private readonly nint Lda = lda, Ldb = ldb, Ldc = ldc;

        public void Run(int start, int end)
        {
            if (ByRows) Block(start * BlockMR, Math.Min(M, end * BlockMR), 0, N);
            else Block(0, M, start * BlockNR, Math.Min(N, end * BlockNR));
        }

        /// <summary>Rows [i0, i1) and columns [j0, j1) of C, on this thread.</summary>
        public void Block(int i0, int i1, int j0, int j1)
        {
            int slices = (K + BlockKC - 1) / BlockKC;
            int kc0 = ((K + slices - 1) / slices + 1) & ~1;
            int rows = i1 - i0, mBlocks = (rows + BlockMC - 1) / BlockMC;
            int mc0 = ((rows + mBlocks - 1) / mBlocks + BlockMR - 1) / BlockMR * BlockMR;
            int nc0 = Math.Min((j1 - j0 + BlockNR - 1) / BlockNR * BlockNR, BlockNC);
            uint* packA = Aligned(ref t_packA, mc0 * (kc0 / 2)), packB = Aligned(ref t_packB, nc0 * (kc0 / 2));
            for (int jc = j0; jc < j1; jc += nc0)
            {
                int nc = Math.Min(nc0, j1 - jc);
                for (int pc = 0; pc < K; pc += kc0)
                {
                    int kc = Math.Min(kc0, K - pc);
                    var args = new Args
                    {
                        B = TransB ? B + jc * Ldb + pc : B + pc * Ldb + jc, Ldb = Ldb, TransB = TransB ? 1 : 0,
                        Pack = packB, Cols = nc, Kc = kc, Convert = 4,
                    };
                    Entry(&args);
                    for (int ic = i0; ic < i1; ic += mc0)
                    {
                        int mc = Math.Min(mc0, i1 - ic);
                        args = new Args { A = A + ic * Lda + pc, Lda = Lda, Pack = packA, Rows = mc, Kc = kc, Convert = 3 };
                        Entry(&args);
                        args = new Args
                        {
                            Pa = packA, Pb = packB, C = C + ic * Ldc + jc, Ldc = Ldc, Rows = mc, Cols = nc, Kc = kc,
                            Accumulate = Accumulate || pc > 0 ? 1 : 0, Convert = 5,
                        };
                        Entry(&args);
                    }
                }
            }
        }
    }

    /// <summary>A thread's buffer of at least <paramref name="count"/> values (grown as needed, to at least
    /// <paramref name="least"/>), pinned and 64-byte aligned.</summary>
    private static T* Aligned<T>(ref T[]? buffer, int count, int least = 0) where T : unmanaged
    {
        int slack = 64 / sizeof(T);
        if (buffer == null || buffer.Length < count + slack) buffer = GC.AllocateUninitializedArray<T>(Math.Max(count, least) + slack, pinned: true);
        nint start = (nint)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(buffer));
        return (T*)((start + 63) & ~(nint)63);
    }

    /// <summary>bf16(A), zero padded to a multiple of 32 and laid out k-chunk by k-chunk (native/bf16dot.c, convert), into
    /// this thread's buffer, which every share reads: the arguments each share starts from. The buffer is 64-byte aligned,
    /// so each row's 64-byte loads (m per 32 k positions, the kernel's most frequent) touch one cache line, not two:
    /// unaligned, the m = 8 products ran 14–20% slower.</summary>
    private static Args RoundA(int m, int k, float* a, nint lda)
    {
        var args = new Args { A = a, A16 = Aligned(ref t_a16, Room(m, k), least: 8 * 1024), Lda = lda, M = m, K = k, Convert = 1 };
        Entry(&args);
        args.Convert = 0;
        return args;
    }


    /// <summary>
    /// Asks for the first <paramref name="bytes"/> of <paramref name="b"/> (a weight about to be streamed) to be loaded
    /// into cache, one prefetch per 64-byte line, and returns at once. A product prefetches ahead of its own loads, but
    /// not past the rows it was given: a caller that runs other work between two products over adjacent rows (the
    /// fused LM head's tiles) lets the next one start warm by calling this first.
    /// </summary>
    public static void PrefetchStart(ReadOnlySpan<ushort> b, int bytes)
    {
        if (!Sse.IsSupported || b.IsEmpty) return;
        fixed (ushort* p = b)
        {
            byte* at = (byte*)p, end = at + Math.Min((long)bytes, (long)b.Length * sizeof(ushort));
            for (; at < end; at += 64) Sse.Prefetch0(at);
        }
    }

    /// <summary>One product of <see cref="RunShared"/>: C[m,n] (+)= bf16(A)·Bᵀ with B [n,k] bf16, plus
    /// <paramref name="term"/> when it has a rank, then plus <paramref name="residual"/> [m,n] (row stride ldc) when given:
    /// each share adds it to the columns it has just made (a residual connection, x + Linear(h)), where as an op of its own
    /// the add read both from memory the weights' stream had evicted. IEEE addition commutes, so C + R has the bits of the
    /// op's R + C.</summary>
    internal readonly struct Product(ushort* b, nint ldb, int n, float* c, nint ldc, bool accumulate, LowRank term = default, float* residual = null)
    {
        public readonly ushort* B = b;
        public readonly float* C = c;
        public readonly nint Ldb = ldb, Ldc = ldc;
        public readonly int N = n;
        public readonly bool Accumulate = accumulate;
        public readonly LowRank Term = term;
        public readonly float* Residual = residual;
    }

    /// <summary>
    /// A low-rank term of a product, C[i, j] += Σ_r U[i, r]·L[j, r] with U [m, R] and L [N, R] float32 (LoRA's u·Bᵀ),
    /// added by each share to the columns it has just made, while they are in its cache: as a product of its own after
    /// the bf16 one, it was another parallel region a layer and read C back from memory. Each chunk of columns goes
    /// through <see cref="GemmSkinny.AddNTSmallK"/>, the small-k path <see cref="Gemm.Multiply"/> takes for the whole term
    /// (<see cref="Fits"/>), so the same bits as adding the term after the product. (Through Gemm.Multiply itself, with its
    /// checks and its region per chunk, ≈ 1,600 calls a step at batch 4 cost ≈ 2 µs each.)
    /// </summary>
    internal readonly struct LowRank(float* u, float* l, int r)
    {
        public readonly float* U = u, L = l;
        public readonly int R = r;

        /// <summary>Whether a term of rank <paramref name="r"/> over <paramref name="n"/> columns and m rows takes
        /// <see cref="GemmSkinny"/>'s path as a whole product (so every share's columns do too).</summary>
        public static bool Fits(int m, int n, int r) => GemmSkinny.RunsNTSmallK(m, n, r);
    }

    /// <summary>Adds <paramref name="p"/>'s low-rank term to its columns [j0, j1) (nothing without one).</summary>
    private static void AddTerm(in Product p, int m, int j0, int j1)
    {
        int r = p.Term.R;
        if (r == 0 || j1 <= j0) return;
        GemmSkinny.AddNTSmallK(m, r, p.Term.U, r, p.Term.L, r, p.C, p.Ldc, j0, j1);
    }

    /// <summary>Finishes <paramref name="p"/>'s columns [j0, j1) once the kernel has made them: its term, then its residual.</summary>
    private static void Finish(in Product p, int m, int j0, int j1)
    {
        AddTerm(p, m, j0, j1);
        if (p.Residual == null || j1 <= j0) return;
        for (int r = 0; r < m; r++)
            Simd.AddInto(new ReadOnlySpan<float>(p.Residual + r * p.Ldc + j0, j1 - j0), new Span<float>(p.C + r * p.Ldc + j0, j1 - j0));
    }

    /// <summary>
    /// Several products of one A (a layer's q, k and v projections; its gate and up): A is rounded once and all their
    /// columns are shared out in one parallel region, so small products (k and v, a few hundred KB) no longer run alone on
    /// one core and the threads meet once instead of once per product. Each C equals <see cref="Run"/>'s.
    /// </summary>
    public static void RunShared(int m, int k, float* a, nint lda, ReadOnlySpan<Product> products)
    {
        var args = RoundA(m, k, a, lda);
        // Units of UnitColumns columns, numbered through the products in order; first[i] is product i's first unit.
        var first = new int[products.Length + 1];
        long columns = 0;
        for (int i = 0; i < products.Length; i++)
        {
            first[i + 1] = first[i] + (products[i].N + UnitColumns - 1) / UnitColumns;
            columns += products[i].N;
        }
        int units = first[^1];
        Announce(products, first);
        Gemm.RunStreaming(units, m * columns * k, columns * k * sizeof(ushort), new SharedShares(args, products.ToArray(), first));
    }

    /// <summary>
    /// A gated MLP's first half at decode shapes: G = act(bf16(A)·Gᵀ) ⊙ (bf16(A)·Uᵀ), written over the gate's product C
    /// (gate.C), with the up product's C as scratch. Each thread takes units of 24 columns of both products at once and,
    /// right after computing a chunk of columns of the two, applies the activation and the product to them while they are
    /// still in its cache: done as separate ops after the products, the activation and the product each read and wrote
    /// memory the products' streaming had long evicted (≈ 16 µs apiece a layer at batch 8, against 8 and 3 in cache).
    /// Lane by lane the same vector operations as <see cref="Simd.Map{TOp}"/> and <see cref="Simd.Zip{TOp}"/> over whole
    /// 512-bit vectors (partial vectors go through a padded buffer), so where those take 512-bit vectors for every
    /// element the same bits.
    /// </summary>
    public static void RunGated<TAct>(int m, int k, float* a, nint lda, Product gate, Product up) where TAct : IUnaryOp
        => Gated<TAct>(m, k, a, lda, gate, up, null);

    /// <summary>
    /// A gated MLP at decode shapes: <see cref="RunGated{TAct}"/>, then down.C (+)= bf16(G)·downᵀ (down [N_out, F] with
    /// F = gate.N). Each thread has the kernel round the columns of G it has just computed into the layout the kernel
    /// reads A in (native/bf16dot.c, convert_range), so the down projection does not round its A on the caller, half of
    /// it from the other core's cache (12 µs a layer at batch 8); gate.C is then scratch. The same bits as
    /// <see cref="Run"/> on the G that RunGated leaves.
    /// </summary>
    public static void RunGatedDown<TAct>(int m, int k, float* a, nint lda, Product gate, Product up, Product down) where TAct : IUnaryOp
        => RunDown(m, gate.N, RunGatedRounding<TAct>(m, k, a, lda, gate, up), down);

    /// <summary>The first half of <see cref="RunGatedDown{TAct}"/>: <see cref="RunGated{TAct}"/>, G also rounded into the
    /// down projection's A in this thread's buffer, which it returns for <see cref="RunDown"/> (gate.C then holds G in
    /// float32, from which a caller may make the down projection's LoRA input in between).</summary>
    public static ushort* RunGatedRounding<TAct>(int m, int k, float* a, nint lda, Product gate, Product up) where TAct : IUnaryOp
    {
        ushort* g16 = Aligned(ref t_down16, Room(m, gate.N), least: 8 * 1024);
        Gated<TAct>(m, k, a, lda, gate, up, g16);
        return g16;
    }

    /// <summary>The second half of <see cref="RunGatedDown{TAct}"/>: down.C (+)= G16·downᵀ over the f columns of G16,
    /// the buffer <see cref="RunGatedRounding{TAct}"/> returned on this thread.</summary>
    public static void RunDown(int m, int f, ushort* g16, Product down)
    {
        int units = (down.N + UnitColumns - 1) / UnitColumns;
        Announce([down], [0, units]);
        var args = new Args { A16 = g16, M = m, K = f };
        Gemm.RunStreaming(units, (long)m * down.N * f, (long)down.N * f * sizeof(ushort), new Shares(args, down));
    }

    /// <summary>One gated MLP of <see cref="RunGatedGroups{TAct}"/>: m rows of A (row stride lda), its gate and up products
    /// (their C the scratch <see cref="Gated{TAct}"/> uses) and its down product.</summary>
    internal readonly struct GatedGroup(int m, float* a, nint lda, Product gate, Product up, Product down)
    {
        public readonly int M = m;
        public readonly float* A = a;
        public readonly nint Lda = lda;
        public readonly Product Gate = gate, Up = up, Down = down;
    }

    [ThreadStatic] private static ushort[]? t_groupA16;
    [ThreadStatic] private static ushort[]? t_groupG16;

    /// <summary>
    /// Several gated MLPs of the same widths on different rows (a mixture of experts' chosen experts, each on its tokens):
    /// the gated halves of all of them in one parallel region, then all the down projections in another, each C equal to
    /// <see cref="RunGatedDown{TAct}"/>'s for its group. One by one they were two regions each, ≈ 16 a layer at batch 1
    /// (8 experts), each starting its weights' stream afresh. Off the decoding sequence (<see cref="Announce"/>): which
    /// experts run changes from step to step.
    /// </summary>
    public static void RunGatedGroups<TAct>(int k, ReadOnlySpan<GatedGroup> groups) where TAct : IUnaryOp
    {
        int count = groups.Length;
        if (count == 0) return;
        int f = groups[0].Gate.N;
        var gated = new Args[count];
        var down = new Args[count];
        var first = new int[count + 1];
        var firstDown = new int[count + 1];
        var all = groups.ToArray();
        ushort* a16 = Carve(ref t_groupA16, all, k), gRounded = Carve(ref t_groupG16, all, f);
        long macs = 0, downMacs = 0;
        for (int i = 0; i < count; i++)
        {
            var g = all[i];
            if (g.Gate.N != f || g.Up.N != f || g.Gate.Ldc != g.Up.Ldc || g.M > 8)
                throw new ArgumentException("RunGatedGroups: every group's gate and up products must have the same columns, and at most 8 rows.");
            gated[i] = new Args { A = g.A, A16 = a16, Lda = g.Lda, M = g.M, K = k, Convert = 1 };
            var convert = gated[i];
            Entry(&convert);
            gated[i].Convert = 0;
            down[i] = new Args { A16 = gRounded, M = g.M, K = f };
            a16 += Room(g.M, k);
            gRounded += Room(g.M, f);
            first[i + 1] = first[i] + (f + UnitColumns - 1) / UnitColumns;
            firstDown[i + 1] = firstDown[i] + (g.Down.N + UnitColumns - 1) / UnitColumns;
            macs += 2L * g.M * f * k;
            downMacs += (long)g.M * g.Down.N * f;
        }
        Gemm.RunStreaming(first[^1], macs, 2L * count * f * k * sizeof(ushort), new GroupedGatedShares<TAct>(gated, down, all, first));
        Gemm.RunStreaming(firstDown[^1], downMacs, (long)count * all[0].Down.N * f * sizeof(ushort), new GroupedDownShares(down, all, firstDown));
    }

    /// <summary>Values bf16(A) of m rows of k takes in the kernel's chunk-major layout: at most m·(kp + 32·chunks) ≤ 2·m·kp
    /// (each chunk pads to 32), a whole number of 64-byte lines, so buffers carved one after another stay aligned.</summary>
    private static int Room(int m, int k) => 2 * m * ((k + 31) & ~31);

    /// <summary>This thread's buffer (grown as needed, 64-byte aligned) with <see cref="Room"/> for every group's rows of k.</summary>
    private static ushort* Carve(ref ushort[]? buffer, GatedGroup[] groups, int k)
    {
        long total = 64 / sizeof(ushort);
        foreach (var g in groups) total += Room(g.M, k);
        if (buffer == null || buffer.Length < total) buffer = GC.AllocateUninitializedArray<ushort>((int)Math.Max(total, 8 * 1024), pinned: true);
        nint start = (nint)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(buffer));
        return (ushort*)((start + 63) & ~(nint)63);
    }

    /// <summary>A share of <see cref="RunGatedGroups{TAct}"/>'s gated halves: units numbered through the groups in order.</summary>
    private readonly struct GroupedGatedShares<TAct>(Args[] args, Args[] down, GatedGroup[] groups, int[] first) : IChunkWork where TAct : IUnaryOp
    {
        public void Run(int start, int end, int streamEnd)
        {
            for (int i = 0; i < groups.Length; i++)
                if (ColumnsOf(i, groups[i].Gate.N, first, start, end, streamEnd, out int j0, out int j1, out int se))
                    GatedColumns<TAct>(args[i], groups[i].Gate, groups[i].Up, down[i].A16, j0, j1, se);   // G rounded into the down projection's A
        }
    }

    /// <summary>A share of <see cref="RunGatedGroups{TAct}"/>'s down projections, each group's from its own rounded G.</summary>
    private readonly struct GroupedDownShares(Args[] args, GatedGroup[] groups, int[] first) : IChunkWork
    {
        public void Run(int start, int end, int streamEnd)
        {
            for (int i = 0; i < groups.Length; i++)
            {
                var d = groups[i].Down;
                if (!ColumnsOf(i, d.N, first, start, end, streamEnd, out int j0, out int j1, out int se)) continue;
                Call(args[i], d, j0, j1, se);
                Finish(d, groups[i].M, j0, j1);
            }
        }
    }

    private static void Gated<TAct>(int m, int k, float* a, nint lda, Product gate, Product up, ushort* g16) where TAct : IUnaryOp
    {
        if (gate.N != up.N || gate.Ldc != up.Ldc) throw new ArgumentException("RunGated: the gate and up products must have the same columns.");
        if (gate.Residual != null || up.Residual != null) throw new ArgumentException("RunGated: the gate and up products take no residual.");
        int units = (gate.N + UnitColumns - 1) / UnitColumns;
        // Each share starts on the same columns of both; the worker preloads the gate's (a plan names one product).
        Announce([gate], [0, units]);
        var args = RoundA(m, k, a, lda);
        Gemm.RunStreaming(units, 2L * m * gate.N * k, 2L * gate.N * k * sizeof(ushort), new GatedShares<TAct>(args, gate, up, g16));
    }

    /// <summary>A share of <see cref="Gated{TAct}"/>: its columns of both products, then G = act(gate)·up on them, written
    /// over gate.C and, with g16, also rounded into the down projection's A by the kernel (its positions of every row).</summary>
    private readonly struct GatedShares<TAct>(Args args, Product gate, Product up, ushort* g16) : IChunkWork where TAct : IUnaryOp
    {
        private readonly Args _args = args;

        public void Run(int start, int end, int streamEnd) =>
            GatedColumns<TAct>(_args, gate, up, g16, start * UnitColumns, Math.Min(gate.N, end * UnitColumns), Math.Min(gate.N, streamEnd * UnitColumns));
    }

    /// <summary>Columns [j0, j1) of a gated pair (the stream running on to column se): both products, then
    /// G = act(gate)·up over gate.C and, with g16, G rounded into the down projection's A.</summary>
    private static void GatedColumns<TAct>(Args args, in Product gate, in Product up, ushort* g16, int j0, int j1, int se) where TAct : IUnaryOp
    {
        Call(args, gate, j0, j1, se);
        AddTerm(gate, args.M, j0, j1);
        Call(args, up, j0, j1, se);
        AddTerm(up, args.M, j0, j1);
        float* pad = stackalloc float[2 * Vector512<float>.Count];
        for (int r = 0; r < args.M; r++)
        {
            float* g = gate.C + r * gate.Ldc, u = up.C + r * up.Ldc;
            int j = j0;
            for (; j + Vector512<float>.Count <= j1; j += Vector512<float>.Count)
                (TAct.Apply(Vector512.Load(g + j)) * Vector512.Load(u + j)).Store(g + j);
            if (j < j1)
            {
                int n = j1 - j;
                new Span<float>(pad, 2 * Vector512<float>.Count).Clear();
                new ReadOnlySpan<float>(g + j, n).CopyTo(new Span<float>(pad, n));
                new ReadOnlySpan<float>(u + j, n).CopyTo(new Span<float>(pad + Vector512<float>.Count, n));
                (TAct.Apply(Vector512.Load(pad)) * Vector512.Load(pad + Vector512<float>.Count)).Store(pad);
                new ReadOnlySpan<float>(pad, n).CopyTo(new Span<float>(g + j, n));
            }
        }
        if (g16 == null) return;
        var round = new Args { A = gate.C, Lda = gate.Ldc, A16 = g16, M = args.M, K = gate.N, J0 = j0, J1 = j1, Convert = 2 };
        Entry(&round);
    }

    /// <summary>Bytes of B at the front of each share that the worker may load while it waits for a product (see
    /// <see cref="Announce"/>).</summary>
    internal const int IdlePrefetchBytes = 256 * 1024;

    /// <summary>Most products whose successor is remembered; past it the table starts over (a process that loads model
    /// after model).</summary>
    private const int MaxRemembered = 4096;

    /// <summary>Whether products hand the worker their successor's front (<see cref="Announce"/>): on unless
    /// <c>ALIGNSHARP_IDLE_PREFETCH=0</c>; tests and benchmarks may switch it to compare.</summary>
    internal static bool IdlePrefetchOn { get; set; } = Environment.GetEnvironmentVariable("ALIGNSHARP_IDLE_PREFETCH") != "0";

    private sealed record Successor(nint Key, ParallelFor.PrefetchPlan Plan);

    /// <summary>For each product (keyed by its first B), the product the same thread ran next, last time.</summary>
    private static readonly Dictionary<nint, Successor> Successors = [];
    [ThreadStatic] private static nint t_previous;

    /// <summary>
    /// Before a product: remembers it as the successor of the product this thread ran before, and hands the worker the
    /// front of this product's own successor to load while it waits. Decoding runs the same products in the same order
    /// every step, so from the second step on the worker preloads each product's first lines during the serial work
    /// before it (the products' own prefetches only start when they do).
    /// </summary>
    internal static void Announce(ReadOnlySpan<Product> products, ReadOnlySpan<int> first)
    {
        if (!IdlePrefetchOn || ParallelFor.Threads < 2 || ParallelFor.InsideRegion || t_offSequence > 0) return;
        nint key = (nint)products[0].B;
        lock (Successors)
        {
            if (t_previous != 0 && (!Successors.TryGetValue(t_previous, out var known) || known.Key != key))
            {
                if (Successors.Count >= MaxRemembered) Successors.Clear();
                Successors[t_previous] = new Successor(key, PlanFor(products, first, ParallelFor.Threads));
            }
            t_previous = key;
            if (Successors.TryGetValue(key, out var next)) ParallelFor.PrefetchWhileIdle(next.Plan);
        }
    }

    [ThreadStatic] private static int t_offSequence;

    /// <summary>
    /// Until disposed, products on this thread are neither remembered nor announced (<see cref="Announce"/>): one-off
    /// products off the sequence a decoding step repeats (the sampler re-making a block of the head's rows, a different
    /// one each step) would otherwise replace a product's successor every step and fill the table with one-time keys.
    /// </summary>
    internal static OffSequenceScope OffSequence()
    {
        t_offSequence++;
        return default;
    }

    internal readonly struct OffSequenceScope : IDisposable
    {
        public void Dispose() => t_offSequence--;
    }

    /// <summary>Forgets every remembered successor, and this thread's previous product. Tests start from an empty table: it
    /// is keyed by addresses, which later arrays reuse, so an entry left by an earlier test can name this test's arrays.</summary>
    internal static void ForgetSuccessors()
    {
        lock (Successors) Successors.Clear();
        t_previous = 0;
    }

    /// <summary>The product that followed the one whose first B is <paramref name="key"/> on the same thread last time
    /// (its first B), and the plan handed to the worker before it; (0, null) when none is remembered.</summary>
    internal static (nint Next, ParallelFor.PrefetchPlan? Plan) SuccessorOf(nint key)
    {
        lock (Successors) return Successors.TryGetValue(key, out var s) ? (s.Key, s.Plan) : (0, null);
    }

    /// <summary>The first <see cref="IdlePrefetchBytes"/> of B (within its product) at the front of each share's range,
    /// as <see cref="ParallelFor.RunBalanced"/> first splits the units.</summary>
    private static ParallelFor.PrefetchPlan PlanFor(ReadOnlySpan<Product> products, ReadOnlySpan<int> first, int shares)
    {
        int units = first[^1];
        shares = Math.Max(1, Math.Min(shares, units));
        var starts = new nint[shares];
        var lines = new int[shares];
        for (int s = 0; s < shares; s++)
        {
            int unit = (int)((long)units * s / shares), i = 0;
            while (first[i + 1] <= unit) i++;
            var pr = products[i];
            long row = (long)(unit - first[i]) * UnitColumns;
            starts[s] = (nint)(pr.B + row * pr.Ldb);
            long left = (pr.N - row) * pr.Ldb * sizeof(ushort);
            lines[s] = (int)(Math.Min(left, IdlePrefetchBytes) / 64);
        }
        return new ParallelFor.PrefetchPlan(starts, lines);
    }

    /// <summary>
    /// Product i's columns in a share's units [start, end) when units are numbered through several products in order
    /// (product i's from first[i]): false if the share has none of them; else [j0, j1) of its n columns and the column
    /// se its prefetch may run on to, within this product only (the next product's B is another array).
    /// </summary>
    private static bool ColumnsOf(int i, int n, int[] first, int start, int end, int streamEnd, out int j0, out int j1, out int se)
    {
        int lo = Math.Max(start, first[i]), hi = Math.Min(end, first[i + 1]);
        j0 = (lo - first[i]) * UnitColumns;
        j1 = Math.Min(n, (hi - first[i]) * UnitColumns);
        se = Math.Min(n, (Math.Min(streamEnd, first[i + 1]) - first[i]) * UnitColumns);
        return lo < hi;
    }

    private readonly struct SharedShares(Args args, Product[] products, int[] first) : IChunkWork
    {
        private readonly Args _args = args;

        public void Run(int start, int end, int streamEnd)
        {
            for (int i = 0; i < products.Length; i++)
            {
                var pr = products[i];
                if (!ColumnsOf(i, pr.N, first, start, end, streamEnd, out int j0, out int j1, out int se)) continue;
                Call(_args, pr, j0, j1, se);
                Finish(pr, _args.M, j0, j1);
            }
        }
    }

    private readonly struct Shares(Args args, Product product) : IChunkWork
    {
        private readonly Args _args = args;

        public void Run(int start, int end, int streamEnd)
        {
            int n = product.N, j0 = start * UnitColumns, j1 = Math.Min(n, end * UnitColumns);
            Call(_args, product, j0, j1, Math.Min(n, streamEnd * UnitColumns));
            Finish(product, _args.M, j0, j1);
        }
    }

    /// <summary>One kernel call: columns [j0, j1) of <paramref name="product"/> from the rounded A in
    /// <paramref name="args"/>, its prefetch running on to column <paramref name="streamEnd"/>.</summary>
    private static void Call(Args args, in Product product, int j0, int j1, int streamEnd)
    {
        args.B = product.B; args.Ldb = product.Ldb; args.C = product.C; args.Ldc = product.Ldc;
        args.Accumulate = product.Accumulate ? 1 : 0;
        args.J0 = j0; args.J1 = j1; args.StreamEnd = streamEnd;
        args.PrefetchL2 = PrefetchIntoL2 ? 1 : 0;
        Entry(&args);
    }

    private static delegate* unmanaged<Args*, void> Load(out string? unavailable)
    {
        unavailable = Environment.GetEnvironmentVariable("ALIGNSHARP_BF16_DOT") == "0" ? "ALIGNSHARP_BF16_DOT=0"
            : !OperatingSystem.IsLinux() || RuntimeInformation.ProcessArchitecture != Architecture.X64 ? "not Linux x86-64"
            : !Avx512F.IsSupported || !Avx512BW.IsSupported ? "AVX-512 F/BW off (CPU, OS, or DOTNET_EnableAVX512=0)"
            : !CpuId.HasAvx512Bf16 ? "the CPU has no AVX512_BF16"
            : null;
        if (unavailable != null) return null;
        var code = Bf16DotCode.Bytes;
        nuint size = (nuint)((code.Length + 4095) & ~4095);
        void* page = mmap(null, size, ProtRead | ProtWrite, MapPrivate | MapAnonymous, -1, 0);
        if (page == MapFailed)
        {
            unavailable = $"mmap failed (errno {Marshal.GetLastPInvokeError()})";
            return null;
        }
        code.CopyTo(new Span<byte>(page, code.Length));
        if (mprotect(page, size, ProtRead | ProtExec) != 0)
        {
            unavailable = $"mprotect to read+execute failed (errno {Marshal.GetLastPInvokeError()})";
            _ = munmap(page, size);
            return null;
        }
        return (delegate* unmanaged<Args*, void>)page; // mapped for the life of the process
    }

    // Linux x86-64 values (asm-generic/mman-common.h, bits/mman-linux.h).
    private const int ProtRead = 1, ProtWrite = 2, ProtExec = 4, MapPrivate = 2, MapAnonymous = 0x20;
    private static readonly void* MapFailed = (void*)-1;

    [DllImport("libc", SetLastError = true)]
    private static extern void* mmap(void* address, nuint length, int protection, int flags, int fd, nint offset);

    [DllImport("libc", SetLastError = true)]
    private static extern int mprotect(void* address, nuint length, int protection);

    [DllImport("libc", SetLastError = true)]
    private static extern int munmap(void* address, nuint length);
}
