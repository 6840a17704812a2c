using AlignSharp.Engine;
using AlignSharp.Engine.Kernels;
using Xunit.Abstractions;
using Case = AlignSharp.Tests.Engine.GemmCase;

namespace AlignSharp.Tests.Engine;

/// <summary>
/// <see cref="Gemm.MultiplyBf16"/> at <see cref="Bf16Inputs.AtDecodeShapes"/> (the inference path): on a CPU with AVX512-BF16 the
/// native <c>vdpbf16ps</c> kernel (<see cref="Bf16Dot"/>), checked against an independent float64 triple loop over
/// A rounded to bf16 (nearest, ties to even, computed here in double arithmetic) and the exactly widened B; without it
/// (or with AVX-512 switched off, as in the CI kernel legs) the fallback, checked against the exact product. Each test
/// says in its output which of the two it checked.
/// </summary>
public class GemmBf16DotTests(ITestOutputHelper output)
{
    /// <summary>Whether this process runs the native kernel for a decode-shaped call; says so in the test output.</summary>
    private bool Native()
    {
        bool native = Gemm.ActivePath == GemmPath.Avx512 && Bf16Dot.IsAvailable;
        output.WriteLine(native
            ? "vdpbf16ps kernel available: checked against the bf16-rounded-activation reference."
            : $"vdpbf16ps kernel skipped ({Bf16Dot.UnavailableReason ?? $"GEMM path {Gemm.ActivePath}"}; CPU AVX512_BF16: {CpuId.HasAvx512Bf16}): " +
              "checked that the fallback computes the exact product.");
        return native;
    }

    /// <summary>
    /// <c>ALIGNSHARP_BF16_DOT=0</c> (read once per process) switches the native kernel off: a CLI process started with it
    /// multiplies a decode shape by the widening product; one started without it runs what this process runs.
    /// </summary>
    [Fact]
    public void TheEnvironmentSwitchTurnsTheNativeKernelOff()
    {
        string Kernel(string? value)
        {
            var r = CliRunner.Run(["bench", "gemm", "--m", "8", "--n", "48", "--k", "64", "--trans-b", "--b-dtype", "bf16", "--reps", "1", "--threads", "1"],
                environment: new Dictionary<string, string?> { ["ALIGNSHARP_BF16_DOT"] = value });
            Assert.True(r.ExitCode == 0, r.StdErr);
            using var json = System.Text.Json.JsonDocument.Parse(r.StdOut);
            return json.RootElement.GetProperty("bf16_kernel").GetString()!;
        }
        Assert.Equal("widened", Kernel("0"));
        Assert.Equal(Native() ? "vdpbf16ps" : "widened", Kernel(null));
    }

    private static ushort[] RandomBf16(Random rng, int count)
    {
        var x = new ushort[count];
        for (int i = 0; i < count; i++) x[i] = Bf16.FromFloat(rng.Next(40) == 0 ? -3.5e3f : (float)(rng.NextDouble() * 2 - 1));
        return x;
    }

    /// <summary>C (+)= A·Bᵀ through MultiplyBf16(Bf16Inputs.AtDecodeShapes), every element against float64 with A rounded
    /// (native) or exact (fallback); padding of C untouched.</summary>
    private static void Check(Random rng, Case t, bool native, float[]? aValues = null)
    {
        var a = aValues ?? Case.Random(rng, Case.Len(t.M, t.Lda, t.K));
        var b = RandomBf16(rng, Case.Len(t.N, t.Ldb, t.K));
        var c = Case.Random(rng, Case.Len(t.M, t.Ldc, t.N));
        var before = (float[])c.Clone();
        Gemm.MultiplyBf16(false, true, t.M, t.N, t.K, a, t.Lda, b, t.Ldb, c, t.Ldc, t.Accumulate, Bf16Inputs.AtDecodeShapes);
        for (int i = 0; i < t.M; i++)
        {
            for (int j = 0; j < t.N; j++)
            {
                double sum = 0, mag = 0;
                for (int p = 0; p < t.K; p++)
                {
                    float raw = a[i * t.Lda + p];
                    double av = native ? GemmCase.RoundToBf16(raw) : raw;
                    double bv = BitConverter.Int32BitsToSingle(b[j * t.Ldb + p] << 16);
                    sum += av * bv;
                    mag += Math.Abs(av * bv);
                }
                t.AssertElement(c, before, i, j, sum, mag, native ? "vdpbf16ps" : "fallback");
            }
            for (int j = t.N; j < t.Ldc && i < t.M - 1; j++)
                Assert.True(before[i * t.Ldc + j] == c[i * t.Ldc + j], $"{t}: wrote padding C[{i},{j}]");
        }
    }

    [Fact]
    public void DecodeShapesMatchTheBf16RoundedReference()
    {
        bool native = Native();
        var rng = new Random(16);
        // Every row count (one tile shape each), column remainders of every tile width (8, 6, 4, 3) and of the 24-wide
        // thread shares, and k odd, below, at and around the 32-wide step (the masked tail).
        foreach (int m in new[] { 1, 2, 3, 4, 5, 6, 7, 8 })
        foreach (int n in new[] { 1, 2, 3, 5, 7, 8, 13, 25, 49 })
        foreach (int k in new[] { 1, 2, 15, 31, 32, 33, 63, 64, 97 })
            Check(rng, Case.Make(rng, false, true, m, n, k, padded: rng.Next(2) == 0, accumulate: rng.Next(2) == 0), native);
        // Decode-sized products (Qwen2.5-0.5B's widths), split between both threads.
        Check(rng, Case.Make(rng, false, true, 8, 301, 896, padded: true, accumulate: true), native);
        Check(rng, Case.Make(rng, false, true, 1, 700, 896, padded: false, accumulate: false), native);
        Check(rng, Case.Make(rng, false, true, 5, 97, 4864, padded: true, accumulate: false), native);
        // Unpadded rows with 3- and 4-column tiles (m = 4..8): the prefetch cursor walks blocks of 8 B rows, up to each share's end.
        Check(rng, Case.Make(rng, false, true, 8, 301, 896, padded: false, accumulate: false), native);
        Check(rng, Case.Make(rng, false, true, 7, 50, 320, padded: false, accumulate: true), native);
        Check(rng, Case.Make(rng, false, true, 4, 203, 896, padded: false, accumulate: false), native);
        Check(rng, Case.Make(rng, false, true, 6, 61, 224, padded: false, accumulate: true), native);
        // bf16(A) past the kernel's 24 KB: k in chunks whose sums add into C; the last chunk with a masked tail, the
        // first one overwriting or accumulating. m·kp·2 = 25 088 (two chunks), 78 336 (four), 24 192 (one).
        Check(rng, Case.Make(rng, false, true, 8, 31, 1537, padded: false, accumulate: false), native);
        Check(rng, Case.Make(rng, false, true, 8, 49, 4881, padded: true, accumulate: true), native);
        Check(rng, Case.Make(rng, false, true, 8, 13, 4881, padded: false, accumulate: false), native);
        Check(rng, Case.Make(rng, false, true, 7, 26, 1700, padded: false, accumulate: false), native);
        Check(rng, Case.Make(rng, false, true, 2, 17, 6200, padded: true, accumulate: true), native);
        // Three chunks of 1088 over kp = 3200: bf16(A), stored chunk by chunk, takes 3264 values a row.
        Check(rng, Case.Make(rng, false, true, 8, 40, 3190, padded: false, accumulate: true), native);
        // Few MACs but ≥ Gemm.StreamSplitBytes of B (a k/v projection, a partial last tile): split by its bytes.
        Check(rng, Case.Make(rng, false, true, 1, 130, 896, padded: false, accumulate: true), native);
    }

    /// <summary>The processor's identity the prefetch level is chosen by (<see cref="CpuId"/>, from CPUID) agrees with
    /// the kernel's own reading of it in /proc/cpuinfo (vendor_id, cpu family, model, in decimal there).</summary>
    [Fact]
    public void TheCpuIdentityAgreesWithTheKernels()
    {
        var fields = new Dictionary<string, string>();
        if (File.Exists("/proc/cpuinfo"))
            foreach (var line in File.ReadLines("/proc/cpuinfo"))
            {
                if (line.Trim().Length == 0) break; // the first processor only
                int colon = line.IndexOf(':');
                if (colon > 0) fields.TryAdd(line[..colon].Trim(), line[(colon + 1)..].Trim());
            }
        if (!System.Runtime.Intrinsics.X86.X86Base.IsSupported)
        {
            // Not x86, or the runtime's intrinsics switched off (DOTNET_EnableHWIntrinsic=0, a CI leg): no CPUID to read.
            output.WriteLine("CPUID unavailable in this process (X86Base not supported): checked that CpuId reports no vendor, family or model.");
            Assert.Equal(("", 0, 0), (CpuId.Vendor, CpuId.Family, CpuId.Model));
            return;
        }
        if (!fields.ContainsKey("cpu family"))
        {
            output.WriteLine("no x86 /proc/cpuinfo here: checked only that CpuId reads a vendor.");
            Assert.NotEqual("", CpuId.Vendor);
            return;
        }
        output.WriteLine($"{fields["vendor_id"]} family {fields["cpu family"]} model {fields["model"]}: prefetch into {(Bf16Dot.PrefetchIntoL2 ? "L2" : "L1")}");
        Assert.Equal(fields["vendor_id"], CpuId.Vendor);
        Assert.Equal(int.Parse(fields["cpu family"]), CpuId.Family);
        Assert.Equal(int.Parse(fields["model"]), CpuId.Model);
        if (Environment.GetEnvironmentVariable("ALIGNSHARP_BF16_PREFETCH") is not ("l1" or "l2"))
            Assert.Equal(CpuId.IsAmd && CpuId.Family == 0x19, Bf16Dot.PrefetchIntoL2);
    }

    /// <summary>The kernel is built twice, prefetching B into L1 or into L2 (<see cref="Bf16Dot.PrefetchIntoL2"/>, chosen
    /// by the CPU); whichever this CPU does not take is checked here against the same reference, over every tile shape,
    /// the cursor's narrow tiles and chunked k, and the two must agree bit for bit.</summary>
    [Fact]
    public void BothPrefetchTargetsComputeTheSameBits()
    {
        bool native = Native();
        bool chosen = Bf16Dot.PrefetchIntoL2;
        output.WriteLine($"this CPU prefetches into {(chosen ? "L2" : "L1")}; checking both");
        var rng = new Random(18);
        try
        {
            foreach (int m in new[] { 1, 2, 3, 4, 5, 6, 7, 8 })
            foreach (var (n, k) in new[] { (49, 97), (301, 896), (61, 224), (13, 4881) })
            {
                var t = Case.Make(rng, false, true, m, n, k, padded: rng.Next(2) == 0, accumulate: rng.Next(2) == 0);
                var a = Case.Random(rng, Case.Len(t.M, t.Lda, t.K));
                var b = RandomBf16(rng, Case.Len(t.N, t.Ldb, t.K));
                var c0 = Case.Random(rng, Case.Len(t.M, t.Ldc, t.N));
                var results = new float[2][];
                foreach (bool l2 in new[] { !chosen, chosen })
                {
                    Bf16Dot.PrefetchIntoL2 = l2;
                    var c = (float[])c0.Clone();
                    Gemm.MultiplyBf16(false, true, t.M, t.N, t.K, a, t.Lda, b, t.Ldb, c, t.Ldc, t.Accumulate, Bf16Inputs.AtDecodeShapes);
                    results[l2 ? 1 : 0] = c;
                }
                for (int i = 0; i < c0.Length; i++)
                    Assert.True(BitConverter.SingleToInt32Bits(results[0][i]) == BitConverter.SingleToInt32Bits(results[1][i]),
                        $"{t}: C[{i}] = {results[0][i]} prefetching into L1, {results[1][i]} into L2");
                Bf16Dot.PrefetchIntoL2 = !chosen;
                Check(rng, t, native);
            }
        }
        finally { Bf16Dot.PrefetchIntoL2 = chosen; }
    }

    /// <summary>A row of C has the same bits whether it is multiplied alone or with up to seven others (k chunked or
    /// not): the fused head re-makes one row's tile and must get the logits it sampled from.</summary>
    [Fact]
    public void EachRowIsTheSameWhateverRowsComeWithIt()
    {
        bool native = Native();
        var rng = new Random(17);
        foreach (int k in new[] { 896, 1536, 1537, 2048, 4881 })
        {
            const int n = 53;
            var a = Case.Random(rng, 8 * k);
            var b = RandomBf16(rng, n * k);
            var together = new float[8 * n];
            Gemm.MultiplyBf16(false, true, 8, n, k, a, k, b, k, together, n, false, Bf16Inputs.AtDecodeShapes);
            foreach (int m in new[] { 1, 3, 5 })
                for (int first = 0; first + m <= 8; first += m)
                {
                    var some = new float[m * n];
                    Gemm.MultiplyBf16(false, true, m, n, k, a.AsSpan(first * k, m * k), k, b, k, some, n, false, Bf16Inputs.AtDecodeShapes);
                    for (int i = 0; i < m * n; i++)
                        Assert.True(BitConverter.SingleToInt32Bits(some[i]) == BitConverter.SingleToInt32Bits(together[first * n + i]),
                            $"k = {k}, rows {first}..{first + m - 1} of 8 ({(native ? "vdpbf16ps" : "fallback")}): C[{first + i / n},{i % n}] = {some[i]} alone, {together[first * n + i]} with all 8");
                }
        }
    }

    [Fact]
    public void ActivationsRoundToNearestTiesToEven()
    {
        bool native = Native();
        // A holds exact ties between two bf16 values (1 + 2⁻⁸ → 1; 1 + 3·2⁻⁸ → 1 + 2⁻⁶; -(1 + 2⁻⁸) → -1) and values just
        // above a tie (rounded up); B = 1 for one column, so C is the sum of the rounded values, exact in float32.
        float[] row = [1 + 1f / 256, 1 + 3f / 256, -(1 + 1f / 256), 1 + 1f / 256 + 1f / 65536, 2.5f];
        var t = new Case(false, true, 1, 1, row.Length, row.Length, row.Length, 1, false);
        var b = new ushort[row.Length];
        Array.Fill(b, Bf16.FromFloat(1f));
        var c = new float[1];
        Gemm.MultiplyBf16(false, true, 1, 1, row.Length, row, row.Length, b, row.Length, c, 1, false, Bf16Inputs.AtDecodeShapes);
        double expected = native ? 1 + (1 + 1.0 / 64) - 1 + (1 + 1.0 / 128) + 2.5 : row.Sum(v => (double)v);
        Assert.Equal(expected, c[0], 6);
        Check(new Random(3), t, native, row);
    }

    [Fact]
    public void OnlyGenerationRoundsTheActivationsOfABf16Linear()
    {
        bool native = Native();
        var rng = new Random(5);
        var w = Tensor.FromArray(Case.Random(rng, 40 * 70), 40, 70).ToBf16();
        var xs = Case.Random(rng, 3 * 70);
        var wide = new float[40 * 70];
        Bf16.Widen(w.Bf16Span, wide);
        double[] Expected(bool rounded)
        {
            var y = new double[3 * 40];
            for (int i = 0; i < 3; i++)
                for (int j = 0; j < 40; j++)
                    for (int p = 0; p < 70; p++) y[i * 40 + j] += (rounded ? GemmCase.RoundToBf16(xs[i * 70 + p]) : xs[i * 70 + p]) * (double)wide[j * 70 + p];
            return y;
        }
        void Near(double[] expected, Tensor y, string what)
        {
            for (int i = 0; i < expected.Length; i++)
                Assert.True(Math.Abs(y.Span[i] - expected[i]) <= 1e-5 * (1 + Math.Abs(expected[i])), $"{what}: y[{i}] = {y.Span[i]}, expected {expected[i]}");
        }

        // Recording (x requires grad): x is used exactly.
        var x = Tensor.FromArray(xs, 3, 70);
        x.RequiresGrad = true;
        Near(Expected(false), Ops.Linear(x, w), "training forward");
        // Scoring without gradients: exact, so it equals the training forward.
        using (Autograd.NoGrad())
            Near(Expected(false), Ops.Linear(Tensor.FromArray(xs, 3, 70), w), "scoring forward");
        // Generation (inside RoundActivationsToBf16): rounded where the native kernel runs, exact otherwise.
        using (Autograd.NoGrad())
        using (Ops.RoundActivationsToBf16())
            Near(Expected(native), Ops.Linear(Tensor.FromArray(xs, 3, 70), w), "generation forward");
        // A checkpointed segment's forward (recomputed by backward) is used exactly although it runs without recording.
        var x2 = Tensor.FromArray(xs, 3, 70);
        x2.RequiresGrad = true;
        var outs = Autograd.Checkpoint([x2], inputs => [Ops.Linear(inputs[0], w)], parametersNeedGrad: false);
        Near(Expected(false), outs[0], "checkpointed forward");
    }

    /// <summary>
    /// A bf16 model scored without gradients on ≤ 8 rows (a scorer's last chunk, a short prompt) gives exactly the logits
    /// of its recorded (training) forward, so PPO's ratio starts at 1 and the KL to an identical reference at 0; only
    /// generation's scope rounds the activations (and then differs where the native kernel runs).
    /// </summary>
    [Fact]
    public void ABf16ModelScoresWithoutGradientsAsItTrains()
    {
        bool native = Native();
        var model = AlignSharp.Models.TransformerModel.CreateRandom(AlignSharp.Models.ModelPresets.Llama(64, 32, 2, 4, 2, 64, 64), 3);
        model.StoreMatricesAsBf16();
        int[] ids = [5, 9, 17, 33, 2, 40];
        var training = model.Forward(ids, 1, ids.Length).ToArray(); // norms train: recorded
        float[] scoring, generating;
        using (Autograd.NoGrad())
        {
            scoring = model.Forward(ids, 1, ids.Length).ToArray();
            using (Ops.RoundActivationsToBf16()) generating = model.Forward(ids, 1, ids.Length).ToArray();
        }
        Assert.Equal(training, scoring); // bit for bit
        if (native) Assert.NotEqual(scoring, generating);
        else Assert.Equal(scoring, generating);
    }
}

/// <summary>
/// The successors that <see cref="Bf16Dot"/> products remember for the idle worker. The table is the process's, so these
/// run in the serial collection: another test's products could otherwise replace an entry, or clear the table when it is
/// full, between this test's lines.
/// </summary>
[Collection(SerialCollection.Name)]
public class GemmBf16DotSuccessorTests(ITestOutputHelper output)
{
    /// <summary>
    /// A product announced after another becomes its remembered successor, with a plan for the worker: the first
    /// IdlePrefetchBytes of B (at most what is left of that product) at the front of each share's range, as RunBalanced
    /// first splits the units of 24 columns. Here: q of 100 rows (5 units) then, shared, k of 100 and v of 380 rows (5 + 16
    /// units); two shares start at unit 0 (k's row 0) and unit 10 (v's row 120). Inside a parallel region nothing is
    /// learned (the region's shares run their products serially), nor inside <see cref="Bf16Dot.OffSequence"/>.
    /// </summary>
    [Fact]
    public unsafe void AProductRemembersItsSuccessorAndPlansTheFrontOfEachShare()
    {
        using var threads = ParallelFor.UseThreads(2);
        // Keys are addresses: an earlier test's arrays may have had these arrays' addresses, and their successors would
        // read here as learned (1 run in 12 failed so before).
        Bf16Dot.ForgetSuccessors();
        const int k = 64;
        var q = new ushort[100 * k]; var kw = new ushort[100 * k]; var v = new ushort[380 * k]; var big = new ushort[8192 * k];
        fixed (ushort* pq = q, pk = kw, pv = v, pbig = big)
        {
            Bf16Dot.Product P(ushort* b, int n) => new(b, k, n, null, 0, accumulate: false);
            Bf16Dot.Announce([P(pq, 100)], [0, 5]);
            Bf16Dot.Announce([P(pk, 100), P(pv, 380)], [0, 5, 21]);
            Bf16Dot.Announce([P(pbig, 8192)], [0, 342]);
            var (next, plan) = Bf16Dot.SuccessorOf((nint)pq);
            var (afterShared, bigPlan) = Bf16Dot.SuccessorOf((nint)pk);
            if (!Bf16Dot.IdlePrefetchOn)
            {
                output.WriteLine("ALIGNSHARP_IDLE_PREFETCH=0 in this process: checked that nothing is remembered.");
                Assert.Null(plan);
                Assert.Null(bigPlan);
                return;
            }
            Assert.Equal((nint)pk, next);
            Assert.Equal([(nint)pk, (nint)(pv + 120 * k)], plan!.Starts);
            Assert.Equal([100 * k * 2 / 64, 260 * k * 2 / 64], plan.Lines);
            // 8192 rows of 128 bytes: each share's front is capped at 256 KB; the second share starts at unit 171, row 4104.
            Assert.Equal((nint)pbig, afterShared);
            Assert.Equal([(nint)pbig, (nint)(pbig + 4104 * k)], bigPlan!.Starts);
            Assert.Equal([256 * 1024 / 64, 256 * 1024 / 64], bigPlan.Lines);

            // Inside a region: not learned (big's successor stays unknown).
            nint at = (nint)pq;
            ParallelFor.For(2, 1, (s, e) => { if (s == 0) Bf16Dot.Announce([new Bf16Dot.Product((ushort*)at, k, 100, null, 0, false)], [0, 5]); });
            Assert.Equal((nint)0, Bf16Dot.SuccessorOf((nint)pbig).Next);
            // Off the sequence (the sampler's one-off products): not learned either.
            using (Bf16Dot.OffSequence()) Bf16Dot.Announce([P(pq, 100)], [0, 5]);
            Assert.Equal((nint)0, Bf16Dot.SuccessorOf((nint)pbig).Next);
        }
    }
}
