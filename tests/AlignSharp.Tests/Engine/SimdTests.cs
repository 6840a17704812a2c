using System.Runtime.Intrinsics;
using AlignSharp.Engine.Kernels;
using AlignSharp.Engine.Optim;

namespace AlignSharp.Tests.Engine;

/// <summary>
/// Every SIMD driver with every operator struct, at every length 0…300 (each mix of 16-, 8- and 4-lane blocks and
/// scalar tails) and under each forced lane width (512, 256, 128, scalar), against double-precision references
/// written from each function's definition; slices start one element in (unaligned) and the destination's slack
/// must stay untouched. Widths the CPU lacks fall back to the next narrower path; the CI legs with
/// DOTNET_EnableAVX512F=0 / EnableAVX2=0 / EnableHWIntrinsic=0 re-run this on the narrower instruction sets.
/// </summary>
public sealed class SimdTests
{
    private const int MaxLength = 300;
    private const float Canary = 12345f;

    public static TheoryData<int> Widths => new([512, 256, 128, 0]);

    private sealed record Case(Type Op, Action<int> Sweep);

    /// <summary>|error| allowed: abs + 2e-6·|expected|. abs is 1e-6 unless the float32 formula itself is worse
    /// conditioned than that (the activation gradients cancel in 1 − t² and 1 − σ, then multiply by g and x up to 6
    /// or 20), which the scalar lanes show as much as the vector ones.</summary>
    private const double DefaultAbs = 1e-6, GradientAbs = 2e-5;

    private static double Sigmoid(double x) => 1 / (1 + Math.Exp(-x));
    private static double Gelu(double x) => 0.5 * x * (1 + Math.Tanh(Math.Sqrt(2 / Math.PI) * (x + 0.044715 * x * x * x)));
    private static double GeluDerivative(double x)
    {
        double c = Math.Sqrt(2 / Math.PI), t = Math.Tanh(c * (x + 0.044715 * x * x * x));
        return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * c * (1 + 3 * 0.044715 * x * x);
    }

    // lo/hi: the range inputs are drawn from (the second operand's for binary ops: divisors, logs and roots need it
    // positive). Gradient ops take (upstream gradient, saved value).
    private static readonly Case[] Cases =
    [
        Unary<Simd.Identity>(x => x),
        Unary<NegOp>(x => -x),
        Unary<ExpOp>(Math.Exp),
        Unary<LogOp>(Math.Log, 0.01, 50),
        Unary<SquareOp>(x => x * x),
        Unary<SqrtOp>(Math.Sqrt, 0, 50),
        Unary<SigmoidOp>(Sigmoid, -20, 20),
        Unary<TanhOp>(Math.Tanh, -12, 12),
        Unary<SoftplusOp>(x => Math.Max(x, 0) + Math.Log(1 + Math.Exp(-Math.Abs(x))), -30, 30),
        Unary<ReluOp>(x => Math.Max(x, 0)),
        Unary<GeluOp>(Gelu),
        Unary<GeluErfOp>(x => x * NormalCdf.Phi(x)),
        Unary<SiluOp>(x => x * Sigmoid(x), -20, 20),
        Binary<AddOp>((a, b) => a + b),
        Binary<SubOp>((a, b) => a - b),
        Binary<MulOp>((a, b) => a * b),
        Binary<DivOp>((a, b) => a / b, 0.25, 8),
        Binary<NegDivOp>((a, b) => -a / b, 0.25, 8),
        Binary<MinOp>(Math.Min),
        Binary<MaxOp>(Math.Max),
        Binary<GeluGradOp>((g, x) => g * GeluDerivative(x), abs: GradientAbs),
        Binary<GeluErfGradOp>((g, x) => g * (NormalCdf.Phi(x) + x * Math.Exp(-0.5 * x * x) / Math.Sqrt(2 * Math.PI)), abs: GradientAbs),
        Binary<SiluGradOp>((g, x) => g * Sigmoid(x) * (1 + x * (1 - Sigmoid(x))), -20, 20, GradientAbs),
        Binary<MulGradOp>((g, y) => g * y),
        Binary<TanhGradOp>((g, y) => g * (1 - y * y), -1, 1),
        Binary<SigmoidGradOp>((g, y) => g * y * (1 - y), 0, 1),
        Binary<SoftplusGradOp>((g, x) => g * Sigmoid(x), -20, 20),
        Binary<LogSigmoidGradOp>((g, x) => g * Sigmoid(-x), -20, 20),
        Binary<ReluGradOp>((g, x) => x > 0 ? g : 0),
        Binary<LogGradOp>((g, x) => g / x, 0.25, 8),
        Binary<SqrtGradOp>((g, y) => 0.5 * g / y, 0.25, 8),
        Binary<SquareGradOp>((g, x) => 2 * g * x),
    ];

    public static TheoryData<string, int> OpsAndWidths()
    {
        var data = new TheoryData<string, int>();
        foreach (var c in Cases)
            foreach (int w in new[] { 512, 256, 128, 0 })
                data.Add(c.Op.Name, w);
        return data;
    }

    [Theory]
    [MemberData(nameof(OpsAndWidths))]
    public void OperatorMatchesItsDefinitionAtEveryLength(string op, int width)
    {
        using var scope = Simd.UseWidth(width);
        Cases.Single(c => c.Op.Name == op).Sweep(width);
    }

    /// <summary>No operator struct escapes the sweep: a new one must be added to <see cref="Cases"/>.</summary>
    [Fact]
    public void EveryOperatorStructIsSwept()
    {
        var all = typeof(Simd).Assembly.GetTypes()
            .Where(t => t.IsValueType && (typeof(IUnaryOp).IsAssignableFrom(t) || typeof(IBinaryOp).IsAssignableFrom(t)))
            .Select(t => t.FullName).Order().ToArray();
        Assert.Equal(all, Cases.Select(c => c.Op.FullName).Order().ToArray());
    }

    [Fact]
    public void UseWidthIsScopedToTheCallingThreadAndNests()
    {
        Assert.Equal(512, Simd.MaxBits);
        using (Simd.UseWidth(128))
        {
            Assert.False(Simd.UseAvx512);
            Assert.False(Simd.UseAvx2);
            Assert.Equal(Vector128.IsHardwareAccelerated, Simd.UseVector128);
            Assert.Equal(512, OnAnotherThread(() => Simd.MaxBits));
            using (Simd.UseWidth(0)) Assert.False(Simd.UseVector128);
            Assert.Equal(128, Simd.MaxBits);
        }
        Assert.Equal(512, Simd.MaxBits);
        Assert.Equal(Vector512.IsHardwareAccelerated, Simd.UseAvx512);
        Assert.Throws<ArgumentOutOfRangeException>(() => Simd.UseWidth(64));
    }

    /// <summary>A fresh thread (not Task.Run: waiting on a task can run it inline on the waiting thread).</summary>
    internal static T OnAnotherThread<T>(Func<T> f)
    {
        T result = default!;
        var thread = new Thread(() => result = f());
        thread.Start();
        thread.Join();
        return result;
    }

    /// <summary>ParallelFor's workers run their shares under the caller's lane width.</summary>
    [Fact]
    public void ParallelSharesInheritTheCallersWidth()
    {
        using var threads = ParallelFor.UseThreads(4);
        using var width = Simd.UseWidth(0);
        var seen = new int[4];
        ParallelFor.For(4, 1, (s, e) => { for (int i = s; i < e; i++) seen[i] = Simd.MaxBits + 1; });
        Assert.All(seen, b => Assert.Equal(1, b));
    }

    /// <summary>Max is the fold of MathF.Max bit for bit where the processor's max differs from it: a NaN anywhere
    /// (first, last, in a vector or in the tail), zeros of both signs as the maximum, infinities.</summary>
    [Theory]
    [MemberData(nameof(Widths))]
    public void MaxIsTheFoldOfMathFMaxWithNaNsZerosAndInfinities(int width)
    {
        using var scope = Simd.UseWidth(width);
        var rng = new Random(width + 11);
        static float Fold(float[] a) { float m = float.NegativeInfinity; foreach (var v in a) m = MathF.Max(m, v); return m; }
        void Check(float[] a, string what)
        {
            float expected = Fold(a), got = Simd.Max(a);
            Assert.True(BitConverter.SingleToInt32Bits(expected) == BitConverter.SingleToInt32Bits(got) || (float.IsNaN(expected) && float.IsNaN(got)),
                $"{what}, n={a.Length}, width={width}: {got} (bits {BitConverter.SingleToInt32Bits(got):X8}) vs {expected} (bits {BitConverter.SingleToInt32Bits(expected):X8})");
        }
        for (int n = 1; n <= 80; n++)
        {
            var a = Inputs(rng, n, -3, 3);
            foreach (int at in new[] { 0, n / 2, n - 1 })
            {
                var b = (float[])a.Clone(); b[at] = float.NaN;
                Check(b, $"NaN at {at}");
            }
            var neg = Inputs(rng, n, -3, -1);
            Check(neg, "negative");
            // The largest value a zero: all −0; −0 and +0 mixed (+0 wins wherever it is).
            var zeros = (float[])neg.Clone(); zeros[rng.Next(n)] = -0f;
            Check(zeros, "-0 largest");
            foreach (int at in new[] { 0, n - 1, rng.Next(n) })
            {
                var mixed = (float[])neg.Clone();
                for (int i = 0; i < n; i += 3) mixed[i] = -0f;
                mixed[at] = 0f;
                Check(mixed, $"+0 at {at} among -0");
            }
            Check(Enumerable.Repeat(float.NegativeInfinity, n).ToArray(), "all -inf");
            var inf = (float[])a.Clone(); inf[rng.Next(n)] = float.PositiveInfinity;
            Check(inf, "+inf");
        }
        Assert.Equal(float.NegativeInfinity, Simd.Max(ReadOnlySpan<float>.Empty));
    }

    [Theory]
    [MemberData(nameof(Widths))]
    public void ReductionsMatchDoublePrecisionAtEveryLength(int width)
    {
        using var scope = Simd.UseWidth(width);
        var rng = new Random(width + 7);
        for (int n = 0; n <= MaxLength; n++)
        {
            var a = Inputs(rng, n, -3, 3);
            var b = Inputs(rng, n, -3, 3);
            double sum = 0, dot = 0, abs = 0, absDot = 0, max = double.NegativeInfinity;
            for (int i = 0; i < n; i++)
            {
                sum += a[i]; abs += Math.Abs(a[i]);
                dot += (double)a[i] * b[i]; absDot += Math.Abs((double)a[i] * b[i]);
                max = Math.Max(max, a[i]);
            }
            Assert.True(Math.Abs(Simd.Sum(a) - sum) <= 1e-6 * abs + 1e-30, $"Sum n={n} width={width}: {Simd.Sum(a)} vs {sum}");
            Assert.True(Math.Abs(Simd.Dot(a, b) - dot) <= 1e-6 * absDot + 1e-30, $"Dot n={n} width={width}: {Simd.Dot(a, b)} vs {dot}");
            Assert.Equal((float)max, Simd.Max(a));
            double squares = 0;
            for (int i = 0; i < n; i++) squares += (double)a[i] * a[i];
            Assert.True(Math.Abs(GradClip.SumOfSquares(a) - squares) <= 1e-12 * squares, $"SumOfSquares n={n} width={width}");
        }
    }

    /// <summary>SumExp: the total is bitwise the subtract, exp and sum drivers run in turn (the sampler's tile sums must
    /// not move), and within float32 rounding of Σ exp(x − shift) in double; each block's sum (blocks of 16, 48 and 64,
    /// the last one short) within rounding of its own double sum, and the block sums' slack untouched.</summary>
    [Theory]
    [MemberData(nameof(Widths))]
    public void SumExpIsTheSumOfTheExpsAndSumsEachBlockAtEveryLength(int width)
    {
        using var scope = Simd.UseWidth(width);
        var rng = new Random(width + 13);
        for (int n = 0; n <= MaxLength; n++)
        {
            var x = Inputs(rng, n, -12, 4);
            float shift = n == 0 ? 0 : x.ToArray().Max();
            var e = new float[n];
            Simd.ZipScalarRight<SubOp>(x, shift, e);
            Simd.Map<ExpOp>(e, e);
            float expected = Simd.Sum(e);
            Assert.Equal(expected, Simd.SumExp(x, shift));
            double reference = 0;
            for (int i = 0; i < n; i++) reference += Math.Exp((double)x[i] - shift);
            Assert.True(Math.Abs(expected - reference) <= 1e-5 * reference + 1e-30, $"n={n} width={width}: {expected} vs {reference}");
            foreach (int block in new[] { 16, 48, 64 })
            {
                int blocks = (n + block - 1) / block;
                var sums = Destination(rng, blocks);
                Assert.Equal(expected, Simd.SumExp(x, shift, sums, block));
                for (int k = 0; k < blocks; k++)
                {
                    double own = 0;
                    for (int i = k * block; i < Math.Min(n, (k + 1) * block); i++) own += Math.Exp((double)x[i] - shift);
                    Assert.True(Math.Abs(sums[k] - own) <= 1e-5 * own + 1e-30, $"n={n} width={width} block {k} of {block}: {sums[k]} vs {own}");
                }
                AssertSlackUntouched(sums, blocks, $"SumExp blocks width={width}");
            }
        }
        Assert.Throws<ArgumentException>(() => Simd.SumExp(new float[40], 0, new float[3], 20));   // not a multiple of 16
        Assert.Throws<ArgumentException>(() => Simd.SumExp(new float[40], 0, new float[2], 16));   // 3 blocks need 3 sums
    }

    [Theory]
    [MemberData(nameof(Widths))]
    public void ScaleAddIntoMatchesAtEveryLength(int width)
    {
        using var scope = Simd.UseWidth(width);
        var rng = new Random(width + 11);
        for (int n = 0; n <= MaxLength; n++)
        {
            var x = Inputs(rng, n, -3, 3);
            var acc = Destination(rng, n);
            var before = acc.ToArray();
            Simd.ScaleAddInto(x, 0.75f, acc);
            for (int i = 0; i < n; i++)
                Assert.Equal(MathF.FusedMultiplyAdd(x[i], 0.75f, before[i]), acc[i]);   // one rounding at every width
            AssertSlackUntouched(acc, n, $"ScaleAddInto width={width}");
        }
    }

    /// <summary>The optimizers' update must be bitwise the same at every width (same IEEE operations per element):
    /// each forced width against the scalar lanes, for AdamW and SGD with momentum.</summary>
    [Theory]
    [InlineData(512)]
    [InlineData(256)]
    [InlineData(128)]
    public void ParameterUpdatesAreBitwiseTheSameAtEveryWidth(int width)
    {
        var adam = new AdamWUpdate(0.999f, 0.9f, 0.1f, 0.999f, 0.001f, 31.6f, 1e-8f, -0.01f);
        var sgd = new SgdUpdate(-0.1f, 0.01f, 0.9f, 1f, nesterov: true, firstStep: false);
        var rng = new Random(width);
        for (int n = 0; n <= MaxLength; n++)
        {
            var p = Inputs(rng, n, -1, 1); var g = Inputs(rng, n, -1, 1);
            var m = Inputs(rng, n, -0.1, 0.1); var v = Inputs(rng, n, 0, 0.01);
            (float[] P, float[] M, float[] V) Run<TOp>(TOp op, int w) where TOp : struct, IParamUpdate
            {
                using var scope = Simd.UseWidth(w);
                float[] pp = p.ToArray(), mm = m.ToArray(), vv = v.ToArray();
                ParamUpdate.Lanes(op, pp, g, mm, vv);
                return (pp, mm, vv);
            }
            var (ap, am, av) = Run(adam, width);
            var (sp, sm, sv) = Run(adam, 0);
            Assert.Equal(sp, ap); Assert.Equal(sm, am); Assert.Equal(sv, av);
            var (bp, bm, _) = Run(sgd, width);
            var (tp, tm, _) = Run(sgd, 0);
            Assert.Equal(tp, bp); Assert.Equal(tm, bm);
        }
    }

    // ---- sweeps -----------------------------------------------------------------------------------------------

    private static Case Unary<TOp>(Func<double, double> f, double lo = -6, double hi = 6, double abs = DefaultAbs) where TOp : IUnaryOp
        => new(typeof(TOp), width => SweepUnary<TOp>(width, f, lo, hi, abs));

    private static Case Binary<TOp>(Func<double, double, double> f, double lo = -6, double hi = 6, double abs = DefaultAbs) where TOp : IBinaryOp
        => new(typeof(TOp), width => SweepBinary<TOp>(width, f, lo, hi, abs));

    private static void SweepUnary<TOp>(int width, Func<double, double> f, double lo, double hi, double abs) where TOp : IUnaryOp
    {
        string name = typeof(TOp).Name;
        var rng = new Random(name.Length * 1000 + width);
        for (int n = 0; n <= MaxLength; n++)
        {
            var x = Inputs(rng, n, lo, hi);
            var y = Destination(rng, n);
            Simd.Map<TOp>(x, y);
            for (int i = 0; i < n; i++) AssertNear(f(x[i]), y[i], $"{name} Map n={n} i={i} x={x[i]} width={width}", abs);
            AssertSlackUntouched(y, n, $"{name} Map width={width}");

            var acc = Destination(rng, n);
            var before = acc.ToArray();
            Simd.ZipAccumulateUnary<TOp>(x, acc);
            for (int i = 0; i < n; i++) AssertNear(before[i] + f(x[i]), acc[i], $"{name} ZipAccumulateUnary n={n} i={i} width={width}", abs);
            AssertSlackUntouched(acc, n, $"{name} ZipAccumulateUnary width={width}");
        }
    }

    private static void SweepBinary<TOp>(int width, Func<double, double, double> f, double lo, double hi, double abs) where TOp : IBinaryOp
    {
        string name = typeof(TOp).Name;
        var rng = new Random(name.Length * 1000 + width);
        for (int n = 0; n <= MaxLength; n++)
        {
            var a = Inputs(rng, n, -6, 6);
            var b = Inputs(rng, n, lo, hi);
            float sa = a.Length > 0 ? a[0] : 1.5f, sb = b.Length > 0 ? b[0] : (float)((lo + hi) / 2);

            var y = Destination(rng, n);
            Simd.Zip<TOp>(a, b, y);
            for (int i = 0; i < n; i++) AssertNear(f(a[i], b[i]), y[i], $"{name} Zip n={n} i={i} a={a[i]} b={b[i]} width={width}", abs);
            AssertSlackUntouched(y, n, $"{name} Zip width={width}");

            y = Destination(rng, n);
            Simd.ZipScalarRight<TOp>(a, sb, y);
            for (int i = 0; i < n; i++) AssertNear(f(a[i], sb), y[i], $"{name} ZipScalarRight n={n} i={i} width={width}", abs);
            AssertSlackUntouched(y, n, $"{name} ZipScalarRight width={width}");

            // The scalar on the left takes the first operand's range, the span the second's.
            y = Destination(rng, n);
            Simd.ZipScalarLeft<TOp>(sa, b, y);
            for (int i = 0; i < n; i++) AssertNear(f(sa, b[i]), y[i], $"{name} ZipScalarLeft n={n} i={i} width={width}", abs);
            AssertSlackUntouched(y, n, $"{name} ZipScalarLeft width={width}");

            var acc = Destination(rng, n);
            var before = acc.ToArray();
            Simd.ZipAccumulate<TOp>(a, b, acc);
            for (int i = 0; i < n; i++) AssertNear(before[i] + f(a[i], b[i]), acc[i], $"{name} ZipAccumulate n={n} i={i} width={width}", abs);
            AssertSlackUntouched(acc, n, $"{name} ZipAccumulate width={width}");
        }
    }

    /// <summary>n values in [lo, hi), as a slice starting one element into its array (not vector-aligned).</summary>
    private static float[] Inputs(Random rng, int n, double lo, double hi)
    {
        var backing = new float[n + 1];
        for (int i = 0; i < backing.Length; i++) backing[i] = (float)(lo + (hi - lo) * rng.NextDouble());
        return backing[1..];
    }

    /// <summary>n random values followed by 5 canaries that no driver may write.</summary>
    private static Span<float> Destination(Random rng, int n)
    {
        var d = new float[n + 6];
        for (int i = 0; i < d.Length; i++) d[i] = i < n + 1 ? (float)rng.NextDouble() : Canary;
        return d.AsSpan(1, n);
    }

    private static void AssertSlackUntouched(Span<float> destination, int n, string what)
    {
        // Destination returned a slice of length n; look past it in the same array.
        ref float first = ref System.Runtime.InteropServices.MemoryMarshal.GetReference(destination);
        for (int k = 0; k < 5; k++)
            Assert.True(System.Runtime.CompilerServices.Unsafe.Add(ref first, n + k) == Canary, $"{what}: wrote past length {n} at +{k}");
    }

    /// <summary>float32 against a double reference: a few ulp relative, or <paramref name="abs"/> near zero (the
    /// vector tanh, 1 − 2/(e^{2x}+1), cancels there).</summary>
    private static void AssertNear(double expected, float actual, string what, double abs)
        => Assert.True(Math.Abs(actual - expected) <= abs + 2e-6 * Math.Abs(expected), $"{what}: {actual} vs {expected}");
}
