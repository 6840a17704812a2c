using System.Text.Json;
using AlignSharp.Engine;
using AlignSharp.Engine.Kernels;
using AlignSharp.Engine.Optim;

namespace AlignSharp.Tests.Engine;

/// <summary>
/// Optimizers, clipping, schedules and state files. References are independent of the code under test: a float64
/// AdamW written here from the paper / PyTorch docs, PyTorch trajectories (tests/fixtures/optim, made by the script
/// beside them), and hand-computed norms and schedule values.
/// </summary>
public class OptimTests
{
    // ---- helpers -------------------------------------------------------------------------------------------

    private static Tensor Param(float[] values, params int[] shape)
    {
        var p = Tensor.Parameter(shape, 0f);
        values.CopyTo(p.Span);
        return p;
    }

    private static void SetGrad(Tensor p, ReadOnlySpan<float> g) => g.CopyTo(p.GradForAccumulate());

    private static float[] Randoms(Random rng, int n, double scale)
    {
        var a = new float[n];
        for (int i = 0; i < n; i++) a[i] = (float)(rng.NextGaussian() * scale);
        return a;
    }

    private static void AssertClose(ReadOnlySpan<double> expected, ReadOnlySpan<float> actual, double tol, string what)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
            if (!(Math.Abs(expected[i] - actual[i]) <= tol))
                Assert.Fail($"{what}[{i}]: expected {expected[i]:R}, got {actual[i]:R} (|diff| {Math.Abs(expected[i] - actual[i]):G3} > {tol:G3})");
    }

    private static void AssertBitwise(Tensor expected, Tensor actual, string what)
    {
        var e = expected.Span;
        var a = actual.Span;
        Assert.Equal(e.Length, a.Length);
        for (int i = 0; i < e.Length; i++)
            if (BitConverter.SingleToInt32Bits(e[i]) != BitConverter.SingleToInt32Bits(a[i]))
                Assert.Fail($"{what}[{i}]: {e[i]:R} != {a[i]:R}");
    }

    /// <summary>AdamW (Loshchilov &amp; Hutter Alg. 2 as PyTorch writes it) in float64, for one parameter.</summary>
    private sealed class AdamWReference(double[] p, double beta1, double beta2, double eps)
    {
        public readonly double[] P = p;
        private readonly double[] _m = new double[p.Length], _v = new double[p.Length];
        private int _t;

        public void Step(ReadOnlySpan<float> g, double lr, double weightDecay)
        {
            _t++;
            double bc1 = 1 - Math.Pow(beta1, _t), bc2 = 1 - Math.Pow(beta2, _t);
            for (int i = 0; i < P.Length; i++)
            {
                P[i] *= 1 - lr * weightDecay;
                _m[i] = beta1 * _m[i] + (1 - beta1) * g[i];
                _v[i] = beta2 * _v[i] + (1 - beta2) * g[i] * g[i];
                double mHat = _m[i] / bc1, vHat = _v[i] / bc2;
                P[i] -= lr * mHat / (Math.Sqrt(vHat) + eps);
            }
        }
    }

    // ---- AdamW against the float64 reference ---------------------------------------------------------------

    [Fact]
    public void AdamWMatchesFloat64ReferenceForEveryTailLength()
    {
        // Lengths 1..40 cover the 16-lane body, the 8-lane body and every scalar remainder. Even lengths decay
        // (the optimizer default), odd lengths sit in a zero-decay group with half the learning rate.
        var rng = new Random(7);
        const float beta1 = 0.9f, beta2 = 0.99f, eps = 1e-6f, wd = 0.1f;
        var decay = new List<Tensor>();
        var noDecay = new List<Tensor>();
        var refs = new Dictionary<Tensor, (AdamWReference R, double Wd, double Scale)>();
        for (int n = 1; n <= 40; n++)
        {
            var init = Randoms(rng, n, 1.0);
            var p = Param(init, n);
            bool even = n % 2 == 0;
            (even ? decay : noDecay).Add(p);
            refs[p] = (new AdamWReference(init.Select(x => (double)x).ToArray(), beta1, beta2, eps), even ? wd : 0, even ? 1 : 0.5);
        }
        var opt = new AdamW([new ParamGroup(decay), new ParamGroup(noDecay, WeightDecay: 0f, LrScale: 0.5f)],
            new AdamWOptions(Lr: 0.01f, Beta1: beta1, Beta2: beta2, Eps: eps, WeightDecay: wd));

        float[] lrs = [0.01f, 0.03f, 0.05f, 0.02f, 0.01f, 0.04f, 0.002f];
        foreach (var lr in lrs)
        {
            opt.Lr = lr;
            foreach (var (p, (r, pwd, scale)) in refs)
            {
                var g = Randoms(rng, p.Length, 0.7);
                SetGrad(p, g);
                r.Step(g, (double)lr * scale, pwd);
            }
            opt.Step();
        }
        Assert.Equal(lrs.Length, opt.StepCount);
        foreach (var (p, (r, _, _)) in refs) AssertClose(r.P, p.Span, 2e-6, $"len {p.Length}");
    }

    [Fact]
    public void AdamWFirstStepHasUnitBiasCorrectedMagnitude()
    {
        // With bias correction, step 1 moves every coordinate by lr·sign(g) (up to eps), whatever |g| is.
        var p = Param([1f, 1f, 1f], 3);
        SetGrad(p, [1e-3f, -5f, 200f]);
        var opt = new AdamW([p], new AdamWOptions(Lr: 0.1f, WeightDecay: 0f));
        opt.Step();
        AssertClose([0.9, 1.1, 0.9], p.Span, 1e-5, "p");
    }

    [Fact]
    public void SimdPathsAgreeBitwiseWithScalarPath()
    {
        // One 45-element parameter (16-lane, 8-lane and scalar code) against 45 one-element parameters (scalar
        // code only): the update performs the same IEEE operations at every width, so the results are identical.
        var rng = new Random(3);
        var init = Randoms(rng, 45, 1);
        var wide = Param(init, 45);
        var singles = init.Select(v => Param([v], 1)).ToArray();
        var optWide = new AdamW([wide], new AdamWOptions(Lr: 0.05f, WeightDecay: 0.1f));
        var optSingles = new AdamW(singles, new AdamWOptions(Lr: 0.05f, WeightDecay: 0.1f));
        var sgdWide = Param(init, 45);
        var sgdSingles = init.Select(v => Param([v], 1)).ToArray();
        var sgdOpts = new SgdOptions(Lr: 0.05f, Momentum: 0.9f, WeightDecay: 0.01f, Nesterov: true);
        var optSgdWide = new Sgd([sgdWide], sgdOpts);
        var optSgdSingles = new Sgd(sgdSingles, sgdOpts);
        for (int step = 0; step < 4; step++)
        {
            var g = Randoms(rng, 45, 1);
            SetGrad(wide, g);
            SetGrad(sgdWide, g);
            for (int i = 0; i < 45; i++) { SetGrad(singles[i], g.AsSpan(i, 1)); SetGrad(sgdSingles[i], g.AsSpan(i, 1)); }
            optWide.Step(); optSingles.Step(); optSgdWide.Step(); optSgdSingles.Step();
        }
        for (int i = 0; i < 45; i++)
        {
            AssertBitwise(Tensor.FromArray([wide.Span[i]], 1), singles[i], $"adamw {i}");
            AssertBitwise(Tensor.FromArray([sgdWide.Span[i]], 1), sgdSingles[i], $"sgd {i}");
        }
    }

    [Fact]
    public void LargeParameterSplitAcrossThreadsMatchesSmallPiecesBitwise()
    {
        const int n = 300_001, piece = 1000;
        var rng = new Random(11);
        var init = Randoms(rng, n, 1);
        var big = Param(init, n);
        var pieces = Enumerable.Range(0, (n + piece - 1) / piece)
            .Select(k => Param(init.AsSpan(k * piece, Math.Min(piece, n - k * piece)).ToArray(), Math.Min(piece, n - k * piece)))
            .ToArray();
        var optBig = new AdamW([big], new AdamWOptions(Lr: 0.01f));
        var optPieces = new AdamW(pieces, new AdamWOptions(Lr: 0.01f));
        for (int step = 0; step < 2; step++)
        {
            var g = Randoms(rng, n, 1);
            SetGrad(big, g);
            for (int k = 0; k < pieces.Length; k++) SetGrad(pieces[k], g.AsSpan(k * piece, pieces[k].Length));
            optBig.Step();
            optPieces.Step();
        }
        for (int k = 0; k < pieces.Length; k++)
            AssertBitwise(Tensor.FromArray(big.Span.Slice(k * piece, pieces[k].Length), pieces[k].Length), pieces[k], $"piece {k}");
    }

    [Fact]
    public void ManyParametersInOneParallelRegionMatchEachUpdatedAloneOnOneThreadBitwise()
    {
        // Lengths around the block (4096) and per-thread (32768) sizes, so shares cut parameters at every kind of
        // place; one parameter without a gradient in the middle, one empty.
        int[] lengths = [5, 70_003, 4096, 1, 33_000, 0, 100_000, 17, 65_536, 3];
        const int noGrad = 4;
        var rng = new Random(23);
        var inits = lengths.Select(n => Randoms(rng, n, 1)).ToArray();
        var together = inits.Select((v, k) => Param(v.ToArray(), lengths[k])).ToArray();
        var alone = inits.Select((v, k) => Param(v.ToArray(), lengths[k])).ToArray();
        var opt = new AdamW([new ParamGroup(together[..5]), new ParamGroup(together[5..], WeightDecay: 0, LrScale: 0.5f)], new AdamWOptions(Lr: 0.01f));
        var single = alone.Select((p, k) => new AdamW([new ParamGroup([p], WeightDecay: k < 5 ? null : 0, LrScale: k < 5 ? null : 0.5f)], new AdamWOptions(Lr: 0.01f))).ToArray();
        for (int step = 0; step < 3; step++)
        {
            for (int k = 0; k < lengths.Length; k++)
            {
                if (k == noGrad && step < 2) continue;
                var g = Randoms(rng, lengths[k], 1);
                SetGrad(together[k], g);
                SetGrad(alone[k], g);
            }
            using (ParallelFor.UseThreads(2)) opt.Step();
            using (ParallelFor.UseThreads(1))
                for (int k = 0; k < lengths.Length; k++)
                    if (alone[k].Grad != null) single[k].Step();
        }
        for (int k = 0; k < lengths.Length; k++) AssertBitwise(alone[k], together[k], $"parameter {k}");
    }

    [Fact]
    public void StepsAllocateNothingInSteadyState()
    {
        var rng = new Random(5);
        var ps = new[] { Param(Randoms(rng, 37, 1), 37), Param(Randoms(rng, 12, 1), 3, 4), Param(Randoms(rng, 1, 1), 1) };
        var qs = ps.Select(p => Param(p.ToArray(), p.Shape.ToArray())).ToArray();
        foreach (var p in ps.Concat(qs)) SetGrad(p, Randoms(rng, p.Length, 1));
        IOptimizer adam = new AdamW([new ParamGroup(ps[..2]), new ParamGroup(ps[2..], WeightDecay: 0)]);
        IOptimizer sgd = new Sgd(qs, new SgdOptions(Momentum: 0.9f, Nesterov: true, WeightDecay: 0.1f));
        for (int i = 0; i < 3; i++) { adam.Step(); sgd.Step(); }

        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < 20; i++)
        {
            adam.Lr = 1e-3f;
            adam.Step();
            sgd.Step();
        }
        adam.ZeroGrad();
        sgd.ZeroGrad();
        Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);
    }

    [Fact]
    public void ParametersWithoutGradientAreSkippedAndKeepTheirOwnStepCount()
    {
        var a = Param([1f, 2f], 2);
        var b = Param([3f, -1f, 0.5f], 3);
        var opt = new AdamW([a, b], new AdamWOptions(Lr: 0.1f, WeightDecay: 0.5f));
        SetGrad(a, [0.3f, -0.2f]);
        opt.Step();
        Assert.Equal(new[] { 3f, -1f, 0.5f }, b.ToArray()); // no gradient: not even weight decay touches it

        // b's first update, at the optimizer's second step, is bias-corrected as a first update.
        SetGrad(b, [0.1f, 0.2f, -0.3f]);
        opt.Step();
        var fresh = Param([3f, -1f, 0.5f], 3);
        SetGrad(fresh, [0.1f, 0.2f, -0.3f]);
        new AdamW([fresh], new AdamWOptions(Lr: 0.1f, WeightDecay: 0.5f)).Step();
        AssertBitwise(fresh, b, "b");
        Assert.Equal(2, opt.StepCount);
    }

    [Fact]
    public void ZeroGradKeepsBuffersAndClearsThem()
    {
        var p = Param([1f, 2f], 2);
        SetGrad(p, [5f, 6f]);
        var buffer = p.Grad;
        new Sgd([p]).ZeroGrad();
        Assert.Same(buffer, p.Grad);
        Assert.Equal(new[] { 0f, 0f }, p.Grad!.ToArray());
    }

    // ---- PyTorch reference trajectories --------------------------------------------------------------------

    public static TheoryData<string> TorchCases() => ["adamw", "adamw_betas", "sgd_nesterov", "sgd_momentum_dampening", "sgd_plain"];

    [Theory]
    [MemberData(nameof(TorchCases))]
    public void MatchesPyTorchTrajectory(string caseName)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(FixturePath("torch_optim.json")));
        var c = doc.RootElement.GetProperty("cases").EnumerateArray().Single(e => e.GetProperty("name").GetString() == caseName);
        var shapes = c.GetProperty("shapes").EnumerateArray().Select(s => s.EnumerateArray().Select(d => d.GetInt32()).ToArray()).ToArray();
        var init = Floats2(c.GetProperty("init"));
        var ps = shapes.Select((s, i) => Param(init[i], s)).ToArray();

        var groups = c.GetProperty("groups").EnumerateArray().Select(g => new ParamGroup(
            g.GetProperty("indices").EnumerateArray().Select(i => ps[i.GetInt32()]).ToArray(),
            WeightDecay: g.TryGetProperty("weight_decay", out var wd) ? wd.GetSingle() : null,
            LrScale: g.TryGetProperty("lr_scale", out var ls) ? ls.GetSingle() : null)).ToArray();
        var o = c.GetProperty("options");
        float Opt(string name, float fallback) => o.TryGetProperty(name, out var v) ? v.GetSingle() : fallback;
        IOptimizer opt = c.GetProperty("kind").GetString() == "adamw"
            ? new AdamW(groups, new AdamWOptions(
                Beta1: o.GetProperty("betas")[0].GetSingle(), Beta2: o.GetProperty("betas")[1].GetSingle(),
                Eps: Opt("eps", 1e-8f), WeightDecay: Opt("weight_decay", 0.01f)))
            : new Sgd(groups, new SgdOptions(
                Momentum: Opt("momentum", 0), Dampening: Opt("dampening", 0), WeightDecay: Opt("weight_decay", 0),
                Nesterov: o.TryGetProperty("nesterov", out var nv) && nv.GetBoolean()));

        var lrs = c.GetProperty("lrs").EnumerateArray().Select(l => l.GetSingle()).ToArray();
        var grads = c.GetProperty("grads").EnumerateArray().Select(Floats2).ToArray();
        var after = c.GetProperty("after").EnumerateArray().Select(Floats2).ToArray();
        for (int step = 0; step < lrs.Length; step++)
        {
            opt.Lr = lrs[step];
            for (int i = 0; i < ps.Length; i++) SetGrad(ps[i], grads[step][i]);
            opt.Step();
            for (int i = 0; i < ps.Length; i++)
                AssertClose(after[step][i].Select(v => (double)v).ToArray(), ps[i].Span, 1e-6, $"{caseName} step {step} param {i}");
        }
    }

    private static float[][] Floats2(JsonElement e) =>
        e.EnumerateArray().Select(row => row.EnumerateArray().Select(v => v.GetSingle()).ToArray()).ToArray();

    private static string FixturePath(string file)
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir != null; dir = dir.Parent)
        {
            var candidate = Path.Combine(dir.FullName, "tests", "fixtures", "optim", file);
            if (File.Exists(candidate)) return candidate;
        }
        throw new FileNotFoundException($"tests/fixtures/optim/{file} not found above {AppContext.BaseDirectory}.");
    }

    // ---- gradient clipping ---------------------------------------------------------------------------------

    [Fact]
    public void ClipGradNormHandComputed()
    {
        // ‖(3, 4, 12)‖ = 13; max 6.5 → scale 6.5 / (13 + 1e-6).
        var a = Param([0f, 0f], 2);
        var b = Param([0f], 1);
        var noGrad = Param([1f], 1);
        SetGrad(a, [3f, 4f]);
        SetGrad(b, [12f]);
        float norm = GradClip.ClipGradNorm([a, b, noGrad], 6.5f);
        Assert.Equal(13f, norm);
        double s = 6.5 / (13 + 1e-6);
        AssertClose([3 * s, 4 * s], a.Grad!.Span, 1e-6, "a");
        AssertClose([12 * s], b.Grad!.Span, 1e-6, "b");
        Assert.Null(noGrad.Grad);

        // Below the bound nothing changes; the norm is still reported.
        Assert.Equal(13 * s, GradClip.ClipGradNorm([a, b], 100f), 5);
        AssertClose([3 * s, 4 * s], a.Grad!.Span, 1e-6, "a unchanged");
    }

    [Fact]
    public void ClipGradNormOverLargeTensorUsesFloat64Blocks()
    {
        // 1,000,003 values of 0.1: the norm is 0.1·√1000003; float32 accumulation would drift visibly here.
        const int n = 1_000_003;
        var p = Param(new float[n], n);
        p.GradForAccumulate().Fill(0.1f);
        double expected = Math.Sqrt(n * (double)0.1f * 0.1f);
        float norm = GradClip.ClipGradNorm([p], 1f);
        Assert.Equal((float)expected, norm);
        Assert.Equal((float)(0.1f * (1 / (expected + 1e-6))), p.Grad!.Span[n - 1], 6);
    }

    [Theory]
    [InlineData(float.NaN)]
    [InlineData(float.PositiveInfinity)]
    public void ClipGradNormReturnsNonFiniteNormWithoutScaling(float bad)
    {
        var a = Param([0f, 0f, 0f], 3);
        var b = Param([0f], 1);
        SetGrad(a, [1f, bad, 2f]);
        SetGrad(b, [100f]);
        float norm = GradClip.ClipGradNorm([a, b], 1f);
        Assert.False(float.IsFinite(norm));
        if (float.IsNaN(bad)) Assert.True(float.IsNaN(norm)); else Assert.Equal(float.PositiveInfinity, norm);
        Assert.Equal(new[] { 1f, bad, 2f }, a.Grad!.ToArray());
        Assert.Equal(new[] { 100f }, b.Grad!.ToArray());
    }

    [Fact]
    public void ClipGradNormRejectsBadMaxNorm()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => GradClip.ClipGradNorm([], 0f));
        Assert.Throws<ArgumentOutOfRangeException>(() => GradClip.ClipGradNorm([], float.NaN));
    }

    // ---- schedules -----------------------------------------------------------------------------------------

    [Fact]
    public void LinearScheduleHandValues()
    {
        // warmup 10, total 110: 0 → 1 over steps 0..10, then 1 → 0 over steps 10..110 (HF linear-with-warmup).
        var s = new WarmupLinearSchedule(baseLr: 2f, warmupSteps: 10, totalSteps: 110);
        Assert.Equal(0f, s.LrAt(0));      // warmup start: the first optimizer step uses lr 0, as in HF
        Assert.Equal(1f, s.LrAt(5));      // warmup middle
        Assert.Equal(1.8f, s.LrAt(9), 6);
        Assert.Equal(2f, s.LrAt(10));     // warmup end
        Assert.Equal(1f, s.LrAt(60));     // decay midpoint
        Assert.Equal(0.02f, s.LrAt(109), 6);
        Assert.Equal(0f, s.LrAt(110));    // end
        Assert.Equal(0f, s.LrAt(500));    // past the end

        var floor = new WarmupLinearSchedule(2f, 10, 110, minLr: 0.2f);
        Assert.Equal(1.1f, floor.LrAt(60), 6);
        Assert.Equal(0.2f, floor.LrAt(110), 6);
        Assert.Equal(0.2f, floor.LrAt(1000), 6);
        Assert.Equal(0f, floor.LrAt(0)); // warmup still starts at 0

        Assert.Equal(2f, new WarmupLinearSchedule(2f, 0, 4).LrAt(0)); // no warmup: full rate at the first step
        Assert.Equal(1f, new WarmupLinearSchedule(2f, 0, 4).LrAt(2));
    }

    [Fact]
    public void CosineScheduleHandValues()
    {
        var s = new WarmupCosineSchedule(baseLr: 1f, warmupSteps: 4, totalSteps: 104);
        Assert.Equal(0f, s.LrAt(0));
        Assert.Equal(0.5f, s.LrAt(2));
        Assert.Equal(1f, s.LrAt(4));
        Assert.Equal((float)(0.5 * (1 + Math.Cos(Math.PI / 4))), s.LrAt(29), 6); // a quarter of the way: 0.853553
        Assert.Equal(0.5f, s.LrAt(54), 6);                                       // midpoint
        Assert.Equal(0f, s.LrAt(104), 6);                                        // end
        Assert.Equal(0f, s.LrAt(204), 6);                                        // stays at the floor, does not rise again

        var floor = new WarmupCosineSchedule(1f, 4, 104, minLr: 0.1f);
        Assert.Equal(0.55f, floor.LrAt(54), 6);
        Assert.Equal(0.1f, floor.LrAt(104), 6);
    }

    [Fact]
    public void ConstantScheduleAndFactory()
    {
        Assert.Equal(3e-4f, new ConstantSchedule(3e-4f).LrAt(0));
        Assert.Equal(3e-4f, new ConstantSchedule(3e-4f).LrAt(123456));
        var warm = new ConstantSchedule(1f, warmupSteps: 4);
        Assert.Equal(new[] { 0f, 0.25f, 0.5f, 0.75f, 1f, 1f }, Enumerable.Range(0, 6).Select(warm.LrAt).ToArray());

        Assert.IsType<ConstantSchedule>(LrSchedules.Create("constant", 1f, 0, 10));
        Assert.Equal(0.5f, LrSchedules.Create("constant_with_warmup", 1f, 4, 10).LrAt(2));
        Assert.Throws<ArgumentException>(() => LrSchedules.Create("constant", 1f, 4, 10));   // transformers' constant: no warmup
        Assert.IsType<WarmupLinearSchedule>(LrSchedules.Create("linear", 1f, 2, 10));
        Assert.IsType<WarmupCosineSchedule>(LrSchedules.Create("Cosine", 1f, 2, 10));
        Assert.Equal(new WarmupCosineSchedule(1f, 2, 10, 0.1f).LrAt(6), LrSchedules.Create("cosine", 1f, 2, 10, 0.1f).LrAt(6));

        var e = Assert.Throws<ArgumentException>(() => LrSchedules.Create("cosine_restarts", 1f, 0, 10));
        Assert.Contains("cosine_restarts", e.Message);
        Assert.Contains("constant, constant_with_warmup, linear, cosine", e.Message);
        Assert.Throws<ArgumentException>(() => LrSchedules.Create("constant", 1f, 0, 10, minLr: 0.1f));
    }

    [Fact]
    public void AWarmupLongerThanTheRunIsStillRisingAtItsEnd()
    {
        // HF's lambdas: step/warmup before the warmup ends, whatever the total.
        foreach (var s in new ILrSchedule[] { new WarmupLinearSchedule(2f, 10, 5), new WarmupCosineSchedule(2f, 10, 5) })
            for (int step = 0; step < 5; step++)
                Assert.Equal(2f * step / 10, s.LrAt(step), 6);
    }

    [Fact]
    public void ScheduleArgumentsAreValidated()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new WarmupLinearSchedule(1f, 0, 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => new WarmupCosineSchedule(1f, -1, 5));
        Assert.Throws<ArgumentOutOfRangeException>(() => new WarmupCosineSchedule(1f, 0, 5, minLr: 2f));
        Assert.Throws<ArgumentOutOfRangeException>(() => new ConstantSchedule(-1f));
        Assert.Throws<ArgumentOutOfRangeException>(() => new WarmupLinearSchedule(1f, 0, 5).LrAt(-1));
    }

    // ---- state save / restore ------------------------------------------------------------------------------

    private static Tensor[] MakeParams(int seed)
    {
        var rng = new Random(seed);
        return [Param(Randoms(rng, 5, 1), 5), Param(Randoms(rng, 21, 1), 3, 7), Param(Randoms(rng, 37, 1), 37)];
    }

    /// <summary>The gradient for parameter <paramref name="i"/> at optimizer step <paramref name="step"/>, the same in every run.</summary>
    private static float[] GradAt(int step, int i, int n) => Randoms(new Random(1000 * step + i), n, 0.5);

    private static void TrainSteps(IOptimizer opt, Tensor[] ps, ILrSchedule schedule, int steps)
    {
        for (int k = 0; k < steps; k++)
        {
            opt.Lr = schedule.LrAt(opt.StepCount);
            for (int i = 0; i < ps.Length; i++)
                if (!(i == 0 && opt.StepCount == 1)) SetGrad(ps[i], GradAt(opt.StepCount, i, ps[i].Length));
                else ps[i].ClearGrad(); // parameter 0 sits out one step, so the per-parameter step counts differ
            opt.Step();
        }
    }

    public static TheoryData<string> OptimizerKinds() => ["adamw", "sgd"];

    private static IOptimizer Build(string kind, Tensor[] ps) => kind == "adamw"
        ? new AdamW([new ParamGroup(ps[1..]), new ParamGroup(ps[..1], WeightDecay: 0f, LrScale: 0.5f)], new AdamWOptions(WeightDecay: 0.1f))
        : new Sgd([new ParamGroup(ps[1..]), new ParamGroup(ps[..1], WeightDecay: 0f, LrScale: 0.5f)], new SgdOptions(Momentum: 0.9f, Nesterov: true, WeightDecay: 0.01f));

    [Theory]
    [MemberData(nameof(OptimizerKinds))]
    public void SaveAndLoadResumesBitForBit(string kind)
    {
        var schedule = new WarmupCosineSchedule(0.05f, warmupSteps: 2, totalSteps: 6);

        var straight = MakeParams(42);
        var optStraight = Build(kind, straight);
        TrainSteps(optStraight, straight, schedule, 6);

        var first = MakeParams(42);
        var optFirst = Build(kind, first);
        TrainSteps(optFirst, first, schedule, 3);
        using var file = new MemoryStream();
        optFirst.SaveState(file);

        var resumed = first.Select(p => Param(p.ToArray(), p.Shape.ToArray())).ToArray();
        var optResumed = Build(kind, resumed);
        file.Position = 0;
        optResumed.LoadState(file);
        Assert.Equal(3, optResumed.StepCount);
        Assert.Equal(optFirst.Lr, optResumed.Lr);
        TrainSteps(optResumed, resumed, schedule, 3);
        // The original keeps going too: saving changed nothing.
        TrainSteps(optFirst, first, schedule, 3);

        for (int i = 0; i < straight.Length; i++)
        {
            AssertBitwise(straight[i], resumed[i], $"{kind} resumed param {i}");
            AssertBitwise(straight[i], first[i], $"{kind} continued param {i}");
        }
        Assert.Equal(6, optResumed.StepCount);

        // Saving the resumed optimizer gives the same bytes as saving the uninterrupted one.
        using var a = new MemoryStream();
        using var b = new MemoryStream();
        optStraight.SaveState(a);
        optResumed.SaveState(b);
        Assert.Equal(a.ToArray(), b.ToArray());
    }

    [Theory]
    [MemberData(nameof(OptimizerKinds))]
    public void TryStepRefusesAnUpdateThatWouldMakeAnythingNonFiniteAndChangesNothing(string kind)
    {
        var ps = MakeParams(7);
        var opt = Build(kind, ps);
        TrainSteps(opt, ps, new ConstantSchedule(0.01f), 2);
        using var before = new MemoryStream();
        opt.SaveState(before);
        var weights = ps.Select(p => p.ToArray()).ToArray();

        // A learning rate whose step overflows float32 (AdamW's lr / (1 − β1ᵗ), SGD's lr · g with g ~ 1e3).
        for (int i = 0; i < ps.Length; i++) SetGrad(ps[i], GradAt(5, i, ps[i].Length).Select(g => g * 1e3f).ToArray());
        opt.Lr = 3e38f;
        Assert.False(opt.TryStep());
        opt.Lr = 0.01f;
        using var after = new MemoryStream();
        opt.SaveState(after);
        Assert.Equal(before.ToArray(), after.ToArray());
        for (int i = 0; i < ps.Length; i++) Assert.Equal(weights[i], ps[i].ToArray());

        // A finite update is applied exactly as Step applies it.
        var twin = ps.Select(p => Param(p.ToArray(), p.Shape.ToArray())).ToArray();
        var optTwin = Build(kind, twin);
        before.Position = 0;
        optTwin.LoadState(before);
        opt.Lr = optTwin.Lr = 0.01f;
        for (int i = 0; i < ps.Length; i++) { SetGrad(ps[i], GradAt(6, i, ps[i].Length)); SetGrad(twin[i], GradAt(6, i, ps[i].Length)); }
        Assert.True(opt.TryStep());
        optTwin.Step();
        for (int i = 0; i < ps.Length; i++) AssertBitwise(twin[i], ps[i], $"{kind} param {i}");
    }

    [Fact]
    public void LoadStateRejectsMismatchesAndChangesNothing()
    {
        var ps = MakeParams(1);
        var opt = Build("adamw", ps);
        TrainSteps(opt, ps, new ConstantSchedule(0.01f), 2);
        var saved = new MemoryStream();
        opt.SaveState(saved);
        byte[] bytes = saved.ToArray();

        // Another shape at position 1.
        var rng = new Random(2);
        Tensor[] reshaped = [Param(Randoms(rng, 5, 1), 5), Param(Randoms(rng, 21, 1), 7, 3), Param(Randoms(rng, 37, 1), 37)];
        var target = Build("adamw", reshaped);
        var e = Assert.Throws<InvalidDataException>(() => target.LoadState(new MemoryStream(bytes)));
        Assert.Contains("Parameter 0", e.Message); // state order: group 0 (ps[1..]) first
        Assert.Contains("[7, 3]", e.Message);
        Assert.Contains("[3, 7]", e.Message);
        Assert.Equal(0, target.StepCount);

        // Another parameter count.
        e = Assert.Throws<InvalidDataException>(() => new AdamW(ps[..2]).LoadState(new MemoryStream(bytes)));
        Assert.Contains("3 parameters", e.Message);

        // Another optimizer kind; SGD with and without momentum.
        e = Assert.Throws<InvalidDataException>(() => Build("sgd", MakeParams(1)).LoadState(new MemoryStream(bytes)));
        Assert.Contains("saved by AdamW", e.Message);
        var sgdFile = new MemoryStream();
        new Sgd(ps, new SgdOptions(Momentum: 0.9f)).SaveState(sgdFile);
        e = Assert.Throws<InvalidDataException>(() => new Sgd(ps).LoadState(new MemoryStream(sgdFile.ToArray())));
        Assert.Contains("state buffers", e.Message);

        // Truncated and foreign files.
        var matching = Build("adamw", MakeParams(1));
        e = Assert.Throws<InvalidDataException>(() => matching.LoadState(new MemoryStream(bytes[..(bytes.Length - 10)])));
        Assert.Contains("ends early", e.Message);
        Assert.Equal(0, matching.StepCount);
        Assert.Equal(1e-3f, matching.Lr);
        e = Assert.Throws<InvalidDataException>(() => target.LoadState(new MemoryStream("PK\u0003\u0004 not a state"u8.ToArray())));
        Assert.Contains("Not an AlignSharp optimizer state", e.Message);
        Assert.Equal(0, target.StepCount);

        // A NaN in a state buffer (the last float before the 4-byte trailer): never saved so, a damaged file.
        byte[] nan = (byte[])bytes.Clone();
        BitConverter.GetBytes(float.NaN).CopyTo(nan, nan.Length - 8);
        e = Assert.Throws<InvalidDataException>(() => matching.LoadState(new MemoryStream(nan)));
        Assert.Contains("non-finite", e.Message);
        Assert.Equal(0, matching.StepCount);
    }

    // ---- options, groups -----------------------------------------------------------------------------------

    [Fact]
    public void OptionsAreValidatedAndDefaultsArePyTorchs()
    {
        var d = new AdamWOptions();
        Assert.Equal((1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f), (d.Lr, d.Beta1, d.Beta2, d.Eps, d.WeightDecay));
        var s = new SgdOptions();
        Assert.Equal((1e-3f, 0f, 0f, 0f, false), (s.Lr, s.Momentum, s.Dampening, s.WeightDecay, s.Nesterov));

        Assert.Throws<ArgumentOutOfRangeException>(() => new AdamWOptions(Beta1: 1f));
        Assert.Throws<ArgumentOutOfRangeException>(() => new AdamWOptions(Beta2: -0.1f));
        Assert.Throws<ArgumentOutOfRangeException>(() => new AdamWOptions(Lr: float.NaN));
        Assert.Throws<ArgumentOutOfRangeException>(() => d with { WeightDecay = -1f });
        Assert.Throws<ArgumentException>(() => new SgdOptions(Nesterov: true));
        Assert.Throws<ArgumentException>(() => new SgdOptions(Momentum: 0.9f, Dampening: 0.1f, Nesterov: true));
        var nesterovOff = new SgdOptions(Momentum: 0.9f) with { Nesterov = true, Momentum = 0f };
        Assert.Throws<ArgumentException>(() => new Sgd([Param([1f], 1)], nesterovOff));
        Assert.Throws<ArgumentOutOfRangeException>(() => new ParamGroup([], WeightDecay: -0.1f));

        var opt = new AdamW([Param([1f], 1)]);
        Assert.Throws<ArgumentOutOfRangeException>(() => opt.Lr = -1f);
    }

    [Fact]
    public void OptimizerRejectsNonLeafAndDuplicateParameters()
    {
        var p = Param([1f, 2f], 2);
        var e = Assert.Throws<ArgumentException>(() => new AdamW([new ParamGroup([p]), new ParamGroup([p])]));
        Assert.Contains("appears twice", e.Message);
        var derived = Ops.MulScalar(p, 2f);
        e = Assert.Throws<ArgumentException>(() => new Sgd([derived]));
        Assert.Contains("not a leaf", e.Message);
    }

    [Fact]
    public void DecayAndNoDecaySplitsByRankAndName()
    {
        var wte = Param(new float[12], 4, 3);
        var ln1 = Param(new float[3], 3);
        var attnW = Param(new float[27], 3, 9);
        var attnB = Param(new float[9], 9);
        var lnF2d = Param(new float[3], 1, 3);
        var normGain = Param(new float[3], 1, 3);
        var biasMatrix = Param(new float[6], 2, 3);
        var groups = ParamGroups.DecayAndNoDecay(
        [
            ("wte.weight", wte), ("h.0.ln_1.weight", ln1), ("h.0.attn.c_attn.weight", attnW), ("h.0.attn.c_attn.bias", attnB),
            ("ln_f.weight", lnF2d), ("h.0.mlp.LayerNorm.gain", normGain), ("h.0.attn.rel_bias", biasMatrix),
            ("lm_head.weight", wte), // tied to wte: kept once
        ], 0.1f);
        Assert.Equal(2, groups.Count);
        Assert.Equal(0.1f, groups[0].WeightDecay);
        Assert.Equal(new[] { wte, attnW }, groups[0].Parameters);
        Assert.Equal(0f, groups[1].WeightDecay);
        Assert.Equal(new[] { ln1, attnB, lnF2d, normGain, biasMatrix }, groups[1].Parameters);

        // Usable directly: the no-decay group is left alone by weight decay.
        var opt = new AdamW(groups, new AdamWOptions(Lr: 0.1f, WeightDecay: 0.5f));
        Assert.Equal(7, opt.Parameters.Count);
    }

    // ---- learning ------------------------------------------------------------------------------------------

    /// <summary>f(x) = Σ cᵢ·(xᵢ − tᵢ)², an ill-conditioned bowl (curvatures 0.5 … 8), through the real autograd path.</summary>
    private static float Quadratic(Tensor x, Tensor target, Tensor curvature) =>
        Ops.Sum(Ops.Mul(curvature, Ops.Square(Ops.Sub(x, target)))).Item();

    private static (Tensor X, Tensor Target, Tensor Curvature) Bowl()
    {
        var rng = new Random(9);
        var x = Param(Randoms(rng, 19, 2), 19);
        var target = Tensor.FromArray(Randoms(rng, 19, 1), 19);
        var curvature = Tensor.FromArray(Enumerable.Range(0, 19).Select(i => 0.5f + 7.5f * i / 18).ToArray(), 19);
        return (x, target, curvature);
    }

    private static float Minimise(IOptimizer opt, Tensor x, Tensor target, Tensor curvature, ILrSchedule schedule, int steps)
    {
        var start = x.ToArray();
        for (int step = 0; step < steps; step++)
        {
            opt.ZeroGrad();
            Ops.Sum(Ops.Mul(curvature, Ops.Square(Ops.Sub(x, target)))).Backward();
            GradClip.ClipGradNorm(opt.Parameters, 100f);
            opt.Lr = schedule.LrAt(opt.StepCount);
            opt.Step();
        }
        for (int i = 0; i < x.Length; i++) Assert.NotEqual(start[i], x.Span[i]); // every coordinate moved
        return Quadratic(x, target, curvature);
    }

    [Fact]
    public void AdamWMinimisesAQuadratic()
    {
        var (x, target, curvature) = Bowl();
        float initial = Quadratic(x, target, curvature);
        float final = Minimise(new AdamW([x], new AdamWOptions(WeightDecay: 0f)), x, target, curvature,
            new WarmupCosineSchedule(0.2f, warmupSteps: 10, totalSteps: 400), 400);
        Assert.True(initial > 10, $"initial {initial}");
        Assert.True(final < 1e-4f, $"AdamW reached {final} from {initial}");
    }

    [Fact]
    public void SgdMinimisesAQuadratic()
    {
        var (x, target, curvature) = Bowl();
        float initial = Quadratic(x, target, curvature);
        float final = Minimise(new Sgd([x], new SgdOptions(Momentum: 0.9f, Nesterov: true)), x, target, curvature,
            new ConstantSchedule(0.02f), 200);
        Assert.True(final < 1e-6f, $"SGD reached {final} from {initial}");
    }
}
