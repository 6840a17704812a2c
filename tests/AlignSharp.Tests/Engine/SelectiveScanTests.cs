using AlignSharp.Engine;
using AlignSharp.Engine.Kernels;

namespace AlignSharp.Tests.Engine;

/// <summary>
/// Mamba-2's selective scan (<see cref="Ops.SelectiveScan"/>): against its recurrence written out in double precision,
/// finite differences of every input (within one backward chunk and across chunks, with packed sequences, continuing a
/// state), a pass in two parts carrying the state equal to one pass, packed sequences equal to separate ones.
/// </summary>
public class SelectiveScanTests
{
    private static Tensor Rand(Random rng, float amplitude, params int[] shape) => FusedOpsTests.Rand(rng, amplitude, shape);

    /// <summary>x, dt, aLog, dtBias, B, C, D for B rows, T steps, H heads of P, G groups, state N.</summary>
    private static Tensor[] Inputs(Random rng, int b, int t, int h, int p, int g, int n)
        => [Rand(rng, 1, b, t, h * p), Rand(rng, 2, b, t, h), Rand(rng, 1, h), Rand(rng, 1, h), Rand(rng, 1, b, t, g * n), Rand(rng, 1, b, t, g * n), Rand(rng, 1, h)];

    private static Tensor Scan(Tensor[] x, int groups, float[]? state = null, int[]? starts = null)
        => Ops.SelectiveScan(x[0], x[1], x[2], x[3], x[4], x[5], x[6], groups, state, starts);

    /// <summary>The recurrence in double precision, the state starting from <paramref name="state"/> (or zero) and from
    /// zero again at each packed start; returns y and the last states.</summary>
    private static (double[] Y, double[] State) Reference(Tensor[] x, int groups, float[]? state, int[]? starts)
    {
        int b = x[0].Dim(0), t = x[0].Dim(1), h = x[1].Dim(2), p = x[0].Dim(2) / h, n = x[4].Dim(2) / groups;
        var y = new double[b * t * h * p];
        var last = new double[b * h * p * n];
        for (int bi = 0; bi < b; bi++)
            for (int hi = 0; hi < h; hi++)
            {
                int gi = hi / (h / groups);
                double a = -Math.Exp(x[2].Span[hi]);
                var s = new double[p * n];
                if (state != null) for (int i = 0; i < p * n; i++) s[i] = state[(bi * h + hi) * p * n + i];
                for (int ti = 0; ti < t; ti++)
                {
                    if (starts != null && ti > 0 && starts[bi * t + ti] == ti) Array.Clear(s);
                    double raw = x[1].Span[(bi * t + ti) * h + hi] + (double)x[3].Span[hi];
                    double delta = raw > 20 ? raw : Math.Log(1 + Math.Exp(raw));
                    double decay = Math.Exp(delta * a);
                    for (int pi = 0; pi < p; pi++)
                    {
                        double xv = x[0].Span[(bi * t + ti) * h * p + hi * p + pi], acc = 0;
                        for (int ni = 0; ni < n; ni++)
                        {
                            int k = (bi * t + ti) * groups * n + gi * n + ni;
                            s[pi * n + ni] = decay * s[pi * n + ni] + delta * xv * x[4].Span[k];
                            acc += s[pi * n + ni] * x[5].Span[k];
                        }
                        y[(bi * t + ti) * h * p + hi * p + pi] = acc + x[6].Span[hi] * xv;
                    }
                }
                Array.Copy(s, 0, last, (bi * h + hi) * p * n, p * n);
            }
        return (y, last);
    }

    [Theory]
    [InlineData(2, 7, 4, 3, 2, 5)]     // N below a vector: scalar loops only
    [InlineData(1, 9, 2, 4, 1, 37)]    // vectors and a tail
    [InlineData(3, 1, 6, 2, 3, 16)]
    [InlineData(2, 70, 2, 2, 1, 8)]    // longer than one backward chunk
    public void MatchesTheRecurrence(int b, int t, int h, int p, int g, int n)
    {
        var rng = new Random(7 + t + n);
        var x = Inputs(rng, b, t, h, p, g, n);
        var state = Enumerable.Range(0, b * h * p * n).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        int[] starts = Enumerable.Range(0, b * t).Select(i => i % t < t / 3 ? 0 : i % t < 2 * t / 3 ? t / 3 : 2 * t / 3).ToArray();
        using var _ = Autograd.NoGrad();
        foreach (var (initial, packed) in new[] { (false, false), (true, false), (false, true) })
        {
            var s = initial ? (float[])state.Clone() : null;
            var y = Scan(x, g, s, packed ? starts : null).ToArray();
            var (expected, last) = Reference(x, g, initial ? state : null, packed ? starts : null);
            for (int i = 0; i < y.Length; i++)
                Assert.True(Math.Abs(y[i] - expected[i]) <= 1e-4 * (1 + Math.Abs(expected[i])), $"y[{i}] (state {initial}, packed {packed}): {y[i]} vs {expected[i]:G9}");
            if (s != null)
                for (int i = 0; i < last.Length; i++)
                    Assert.True(Math.Abs(s[i] - last[i]) <= 1e-4 * (1 + Math.Abs(last[i])), $"state[{i}]: {s[i]} vs {last[i]:G9}");
        }
    }

    [Fact]
    public void TwoPartsCarryingTheStateEqualOnePass()
    {
        var rng = new Random(3);
        int b = 2, t = 11, h = 4, p = 3, g = 2, n = 19, first = 4;
        var x = Inputs(rng, b, t, h, p, g, n);
        using var _ = Autograd.NoGrad();
        var whole = Scan(x, g).ToArray();
        Tensor Part(Tensor v, int from, int steps)
        {
            int w = v.Dim(2);
            var data = new float[b * steps * w];
            for (int bi = 0; bi < b; bi++) v.Span.Slice((bi * t + from) * w, steps * w).CopyTo(data.AsSpan(bi * steps * w));
            return Tensor.FromArray(data, b, steps, w);
        }
        Tensor[] Parts(int from, int steps) => [Part(x[0], from, steps), Part(x[1], from, steps), x[2], x[3], Part(x[4], from, steps), Part(x[5], from, steps), x[6]];
        var state = new float[b * h * p * n];
        var y1 = Scan(Parts(0, first), g, state).ToArray();
        var y2 = Scan(Parts(first, t - first), g, state).ToArray();
        int w = h * p;
        for (int bi = 0; bi < b; bi++)
            for (int ti = 0; ti < t; ti++)
                for (int c = 0; c < w; c++)
                {
                    float got = ti < first ? y1[(bi * first + ti) * w + c] : y2[(bi * (t - first) + ti - first) * w + c];
                    Assert.Equal(whole[(bi * t + ti) * w + c], got);
                }
    }

    [Fact]
    public void PackedSequencesEqualSeparateOnes()
    {
        var rng = new Random(4);
        int t = 9, h = 2, p = 2, g = 1, n = 17, cut = 5;
        var x = Inputs(rng, 1, t, h, p, g, n);
        var starts = Enumerable.Range(0, t).Select(i => i < cut ? 0 : cut).ToArray();
        using var _ = Autograd.NoGrad();
        var packed = Scan(x, g, starts: starts).ToArray();
        Tensor Part(Tensor v, int from, int steps) => Tensor.FromArray(v.Span.Slice(from * v.Dim(2), steps * v.Dim(2)).ToArray(), 1, steps, v.Dim(2));
        foreach (var (from, steps) in new[] { (0, cut), (cut, t - cut) })
        {
            var y = Scan([Part(x[0], from, steps), Part(x[1], from, steps), x[2], x[3], Part(x[4], from, steps), Part(x[5], from, steps), x[6]], g).ToArray();
            for (int i = 0; i < y.Length; i++) Assert.Equal(y[i], packed[from * h * p + i]);
        }
    }

    /// <summary>Finite differences of all seven inputs: one chunk; packed sequences; a continued state (which takes no
    /// gradient); longer than a backward chunk (the states recomputed from the kept ones).</summary>
    internal static void GradCheckCases()
    {
        var rng = new Random(36);
        GradCheck.Check(x => Scan(x, 2), Inputs(rng, 2, 5, 4, 3, 2, 5));
        GradCheck.Check(x => Scan(x, 1), Inputs(rng, 1, 4, 2, 2, 1, 19));
        GradCheck.Check(x => Scan(x, 1, starts: [0, 0, 2, 2, 2, 0, 1, 1, 1, 1]), Inputs(rng, 2, 5, 2, 2, 1, 3));
        var state = Enumerable.Range(0, 2 * 2 * 3).Select(i => MathF.Cos(i)).ToArray();
        GradCheck.Check(x => Scan(x, 1, (float[])state.Clone()), Inputs(rng, 1, 3, 2, 2, 1, 3));
        GradCheck.Check(x => Scan(x, 1), Inputs(rng, 1, 67, 1, 1, 1, 2));
        // More heads in a group than one backward part takes (8): two parts add into the group's dB and dC.
        GradCheck.Check(x => Scan(x, 1), Inputs(rng, 1, 3, 10, 1, 1, 3));
    }

    /// <summary>The backward's sums do not depend on the thread count (parts of a group's heads are fixed, their sums
    /// added in order): one thread and two give the same bits.</summary>
    [Fact]
    public void GradientsAreTheSameOnAnyThreadCount()
    {
        var rng = new Random(6);
        var x = Inputs(rng, 2, 9, 20, 2, 2, 17);
        float[][] Grads(int threads)
        {
            using var scope = ParallelFor.UseThreads(threads);
            foreach (var t in x) t.ClearGrad();
            var y = Scan(x, 2);
            var w = Tensor.FromArray(Enumerable.Range(0, y.Length).Select(i => MathF.Sin(i)).ToArray(), y.Shape.ToArray());
            Ops.Sum(Ops.Mul(y, w)).Backward();
            return x.Select(t => t.Grad!.ToArray()).ToArray();
        }
        var one = Grads(1);
        var two = Grads(2);
        for (int i = 0; i < one.Length; i++) Assert.Equal(one[i], two[i]);
    }

    [Fact]
    public void ChecksItsShapes()
    {
        var rng = new Random(5);
        var x = Inputs(rng, 1, 3, 2, 2, 1, 4);
        Assert.Contains("3 groups do not divide 2 heads", Assert.Throws<ArgumentException>(() => Ops.SelectiveScan(x[0], x[1], x[2], x[3], x[4], x[5], x[6], 3)).Message);
        Assert.Contains("aLog must be [H=2]", Assert.Throws<ArgumentException>(() => Ops.SelectiveScan(x[0], x[1], Tensor.Zeros(3), x[3], x[4], x[5], x[6], 1)).Message);
        Assert.Contains("B and C must both be", Assert.Throws<ArgumentException>(() => Ops.SelectiveScan(x[0], x[1], x[2], x[3], x[4], Tensor.Zeros(1, 3, 5), x[6], 1)).Message);
        Assert.Contains("state holds 3 floats", Assert.Throws<ArgumentException>(() => Ops.SelectiveScan(x[0], x[1], x[2], x[3], x[4], x[5], x[6], 1, new float[3])).Message);
        Assert.Contains("packed sequences (segmentStarts) are for passes over whole sequences", Assert.Throws<ArgumentException>(
            () => Ops.SelectiveScan(x[0], x[1], x[2], x[3], x[4], x[5], x[6], 1, new float[16], [0, 0, 0])).Message);
        Assert.Contains("segmentStarts[2] = 3 must be in [0, 2]", Assert.Throws<ArgumentException>(
            () => Ops.SelectiveScan(x[0], x[1], x[2], x[3], x[4], x[5], x[6], 1, segmentStarts: [0, 0, 3])).Message);
    }
}
