using AlignSharp.Engine;
using AlignSharp.Engine.Kernels;
using Xunit.Abstractions;
using Case = AlignSharp.Tests.Engine.GemmCase;

namespace AlignSharp.Tests.Engine;

/// <summary>
/// <see cref="Gemm.MultiplyBf16"/> at <see cref="Bf16Inputs.Always"/> (a run of bf16 products, <c>--matmul-precision
/// medium</c>): every product is of bf16(A) and the bf16 B, accumulated in float32, whatever its shape. On a CPU with
/// AVX512-BF16 the blocked vdpbf16ps kernel (<see cref="Bf16Dot.RunBlocked"/>) computes it, elsewhere (the CI legs without
/// AVX-512) the float32 product of A rounded here; both are checked against the same independent float64 loop over A
/// rounded to bf16 in double arithmetic (<see cref="GemmCase.RoundToBf16"/>). Each test says which ran.
/// </summary>
public class GemmBf16BlockedTests(ITestOutputHelper output)
{
    private string Kernel()
    {
        bool native = Gemm.Bf16BlockedRuns(transA: false);
        string what = native ? "blocked vdpbf16ps kernel" : "A rounded, float32 product";
        output.WriteLine(native ? $"{what} ran."
            : $"{what} ran (no blocked kernel: {Bf16Dot.UnavailableReason ?? $"GEMM path {Gemm.ActivePath}"}); checked against the same reference.");
        return what;
    }

    private static ushort[] RandomBf16(Random rng, int count)
    {
        var x = new ushort[count];
        for (int i = 0; i < count; i++) x[i] = Bf16.FromFloat(rng.Next(50) == 0 ? -2.5e3f : (float)(rng.NextDouble() * 2 - 1));
        return x;
    }

    private static double B(ushort[] b, Case t, int p, int j) =>
        BitConverter.Int32BitsToSingle((t.TransB ? b[j * t.Ldb + p] : b[p * t.Ldb + j]) << 16);

    /// <summary>C (+)= bf16(A)·opB through MultiplyBf16(Always); every element against float64; C's padding untouched.</summary>
    private static void Check(Random rng, Case t, string what)
    {
        var a = Case.Random(rng, Case.Len(t.M, t.Lda, t.K));
        var b = RandomBf16(rng, t.TransB ? Case.Len(t.N, t.Ldb, t.K) : Case.Len(t.K, t.Ldb, t.N));
        var c = Case.Random(rng, Case.Len(t.M, t.Ldc, t.N));
        var before = (float[])c.Clone();
        Gemm.MultiplyBf16(false, t.TransB, t.M, t.N, t.K, a, t.Lda, b, t.Ldb, c, t.Ldc, t.Accumulate, Bf16Inputs.Always);
        for (int i = 0; i < t.M; i++)
        {
            for (int j = 0; j < t.N; j++)
            {
                double sum = 0, mag = 0;
                for (int p = 0; p < t.K; p++)
                {
                    double v = Case.RoundToBf16(a[i * t.Lda + p]) * B(b, t, p, j);
                    sum += v;
                    mag += Math.Abs(v);
                }
                t.AssertElement(c, before, i, j, sum, mag, what);
            }
            for (int j = t.N; j < t.Ldc && i < t.M - 1; j++)
                Assert.True(before[i * t.Ldc + j] == c[i * t.Ldc + j], $"{t}: wrote padding C[{i},{j}]");
        }
    }

    [Fact]
    public void EveryShapeMatchesTheBf16RoundedReference()
    {
        string what = Kernel();
        var rng = new Random(41);
        // Both layouts of B; rows around the 12-row tile, columns around the 32-column panel and its 16-lane halves, k odd
        // and even around the 16-pair transposed blocks of the packing, with and without padded strides.
        foreach (bool transB in new[] { true, false })
        foreach (int m in new[] { 1, 5, 12, 13, 25 })
        foreach (int n in new[] { 1, 16, 17, 32, 33, 70 })
        foreach (int k in new[] { 1, 2, 31, 32, 33, 64, 97 })
            Check(rng, Case.Make(rng, false, transB, m, n, k, padded: rng.Next(2) == 0, accumulate: rng.Next(2) == 0), what);
        // Several k slices (768 positions at most, even), several row blocks (240) and column blocks (4,096), both threads.
        Check(rng, Case.Make(rng, false, true, 50, 97, 1601, padded: true, accumulate: true), what);
        Check(rng, Case.Make(rng, false, false, 37, 65, 1601, padded: false, accumulate: false), what);
        Check(rng, Case.Make(rng, false, true, 500, 40, 60, padded: true, accumulate: false), what);
        Check(rng, Case.Make(rng, false, false, 20, 4200, 30, padded: true, accumulate: true), what);
        Check(rng, Case.Make(rng, false, true, 96, 224, 896, padded: false, accumulate: false), what);
    }

    /// <summary>A row of C has the same bits whether it is computed alone, with other rows, as part of a column range
    /// (the LM head's vocabulary tiles) or on one thread: so chunks of scored tokens get the values of the whole forward.</summary>
    [Fact]
    public void EachElementIsTheSameWhateverShareComputesIt()
    {
        string what = Kernel();
        var rng = new Random(43);
        foreach (bool transB in new[] { true, false })
        foreach (int k in new[] { 96, 1601 })
        {
            const int m = 61, n = 150;
            var a = Case.Random(rng, m * k);
            var b = RandomBf16(rng, n * k);
            int ldb = transB ? k : n;
            var whole = new float[m * n];
            Gemm.MultiplyBf16(false, transB, m, n, k, a, k, b, ldb, whole, n, false, Bf16Inputs.Always);
            void Same(float[] part, int rowFirst, int rows, int colFirst, int cols, string how)
            {
                for (int i = 0; i < rows; i++)
                    for (int j = 0; j < cols; j++)
                    {
                        float x = part[i * cols + j], y = whole[(rowFirst + i) * n + colFirst + j];
                        Assert.True(BitConverter.SingleToInt32Bits(x) == BitConverter.SingleToInt32Bits(y),
                            $"{what}, transB {transB}, k {k}: C[{rowFirst + i},{colFirst + j}] = {x:R} {how}, {y:R} in the whole product");
                    }
            }
            foreach (var (first, rows) in new[] { (0, 1), (7, 5), (20, 13), (40, 21) })
            {
                var part = new float[rows * n];
                Gemm.MultiplyBf16(false, transB, rows, n, k, a.AsSpan(first * k, rows * k), k, b, ldb, part, n, false, Bf16Inputs.Always);
                Same(part, first, rows, 0, n, $"with rows {first}..{first + rows - 1} only");
            }
            if (transB)
                foreach (var (first, cols) in new[] { (0, 7), (33, 64), (100, 50) })
                {
                    var part = new float[m * cols];
                    Gemm.MultiplyBf16(false, true, m, cols, k, a, k, b.AsSpan(first * k, cols * k), k, part, cols, false, Bf16Inputs.Always);
                    Same(part, 0, m, first, cols, $"with columns {first}..{first + cols - 1} only");
                }
            var one = new float[m * n];
            using (ParallelFor.UseThreads(1))
                Gemm.MultiplyBf16(false, transB, m, n, k, a, k, b, ldb, one, n, false, Bf16Inputs.Always);
            Same(one, 0, m, 0, n, "on one thread");
        }
    }

    [Fact]
    public void InputsRoundToNearestTiesToEvenAndSpecialValuesPass()
    {
        string what = Kernel();
        // Ties between two bf16 values (1 + 2⁻⁸ → 1; 1 + 3·2⁻⁸ → 1 + 2⁻⁶), a value just above a tie (rounded up), and
        // 14 rows of them so that the blocked kernel runs a full tile and a partial one; B = 1, so C sums the rounded values.
        float[] row = [1 + 1f / 256, 1 + 3f / 256, -(1 + 1f / 256), 1 + 1f / 256 + 1f / 65536, 2.5f];
        const int m = 14;
        var a = new float[m * row.Length];
        for (int i = 0; i < m; i++) row.CopyTo(a, i * row.Length);
        var b = new ushort[row.Length];
        Array.Fill(b, Bf16.FromFloat(1f));
        var c = new float[m];
        Gemm.MultiplyBf16(false, true, m, 1, row.Length, a, row.Length, b, row.Length, c, 1, false, Bf16Inputs.Always);
        double expected = 1 + (1 + 1.0 / 64) - 1 + (1 + 1.0 / 128) + 2.5;
        for (int i = 0; i < m; i++) Assert.True(c[i] == expected, $"{what}: row {i} = {c[i]:R}, expected {expected}");
        // Infinity and NaN in A reach C as IEEE arithmetic has them.
        a[3] = float.PositiveInfinity;
        a[row.Length + 1] = float.NaN;
        Gemm.MultiplyBf16(false, true, m, 1, row.Length, a, row.Length, b, row.Length, c, 1, false, Bf16Inputs.Always);
        Assert.True(float.IsPositiveInfinity(c[0]), $"{what}: +inf in row 0 gave {c[0]}");
        Assert.True(float.IsNaN(c[1]), $"{what}: NaN in row 1 gave {c[1]}");
        Assert.Equal(expected, c[2]);
    }

    /// <summary>
    /// Inside <see cref="Ops.Bf16Products"/> a Linear with a frozen bf16 weight rounds its input in the forward, recorded
    /// or not, and its backward rounds the output's gradient (dY·W): both against float64; outside it, exact. The
    /// scored (unrecorded) and the recorded forward agree bit for bit.
    /// </summary>
    [Fact]
    public void ALinearInsideTheScopeRoundsItsInputsForwardAndBackward()
    {
        string what = Kernel();
        var rng = new Random(47);
        const int rows = 19, inF = 70, outF = 45;
        var w = Tensor.FromArray(Case.Random(rng, outF * inF), outF, inF).ToBf16();
        var wide = new float[outF * inF];
        Bf16.Widen(w.Bf16Span, wide);
        var xs = Case.Random(rng, rows * inF);
        var gy = Case.Random(rng, rows * outF);

        void Near(double expected, float got, string where) =>
            Assert.True(Math.Abs(got - expected) <= 2e-5 * (1 + Math.Abs(expected)), $"{what}: {where} = {got:R}, expected {expected}");

        foreach (bool scoped in new[] { true, false })
        {
            Func<float, double> r = scoped ? v => Case.RoundToBf16(v) : v => v;
            using var scope = scoped ? Ops.Bf16Products() : default;
            var x = Tensor.FromArray(xs, rows, inF);
            x.RequiresGrad = true;
            var y = Ops.Linear(x, w);
            Tensor scored;
            using (Autograd.NoGrad()) scored = Ops.Linear(Tensor.FromArray(xs, rows, inF), w);
            Ops.Sum(Ops.Mul(y, Tensor.FromArray(gy, rows, outF))).Backward();
            for (int i = 0; i < rows; i++)
            {
                for (int j = 0; j < outF; j++)
                {
                    double e = 0;
                    for (int p = 0; p < inF; p++) e += r(xs[i * inF + p]) * wide[j * inF + p];
                    Near(e, y.Span[i * outF + j], $"{(scoped ? "scoped" : "exact")} y[{i},{j}]");
                    Assert.True(BitConverter.SingleToInt32Bits(y.Span[i * outF + j]) == BitConverter.SingleToInt32Bits(scored.Span[i * outF + j]),
                        $"{what}: y[{i},{j}] recorded {y.Span[i * outF + j]:R}, scored {scored.Span[i * outF + j]:R}");
                }
                for (int p = 0; p < inF; p++)
                {
                    double e = 0;
                    for (int j = 0; j < outF; j++) e += r(gy[i * outF + j]) * wide[j * inF + p];
                    Near(e, x.Grad!.Span[i * inF + p], $"{(scoped ? "scoped" : "exact")} dx[{i},{p}]");
                }
            }
        }
    }

    /// <summary>A bf16 model inside <see cref="Ops.Bf16Products"/>: the recorded forward, the forward without gradients and a
    /// gradient-checkpointed forward and backward give the same bits, and differ from the exact forward; generation inside it
    /// keeps its own rule (decode shapes only).</summary>
    [Fact]
    public void ABf16ModelWithBf16ProductsScoresAsItTrains()
    {
        string what = Kernel();
        var model = AlignSharp.Models.TransformerModel.CreateRandom(AlignSharp.Models.ModelPresets.Llama(64, 32, 2, 4, 2, 64, 64), 3);
        model.StoreMatricesAsBf16();
        int[] ids = [5, 9, 17, 33, 2, 40, 7, 11, 60, 1, 3, 8, 21];
        float[] exact;
        using (Autograd.NoGrad()) exact = model.Forward(ids, 1, ids.Length).ToArray();
        using var products = Ops.Bf16Products();
        var training = model.Forward(ids, 1, ids.Length).ToArray(); // norms train: recorded
        float[] scoring;
        using (Autograd.NoGrad()) scoring = model.Forward(ids, 1, ids.Length).ToArray();
        Assert.Equal(training, scoring); // bit for bit
        Assert.NotEqual(exact, scoring);
        // Checkpointed: the blocks' forward under the checkpoint, then recomputed in the backward pass, by the same kernel.
        var grads = new List<float[]>();
        foreach (bool checkpointed in new[] { false, true })
        {
            model.GradientCheckpointing = checkpointed;
            foreach (var p in model.Parameters) p.ZeroGrad();
            var logits = model.Forward(ids, 1, ids.Length);
            Assert.Equal(training, logits.ToArray());
            Ops.Sum(Ops.Mul(logits, logits)).Backward();
            grads.Add(model.Parameters.Where(p => p.Grad != null).SelectMany(p => p.Grad!.ToArray()).ToArray());
        }
        model.GradientCheckpointing = false;
        Assert.NotEmpty(grads[0]);
        Assert.Equal(grads[0], grads[1]);
        output.WriteLine($"{what}: the largest change from the exact forward {exact.Zip(scoring, (a, b) => Math.Abs(a - b)).Max():G3}");
    }
}
