using AlignSharp.Engine;

namespace AlignSharp.Tests.Engine;

/// <summary>
/// The fused ops (cross entropy, token log-probs/entropy, causal attention, RoPE, dropout): a gradient check
/// for each (names registered in <see cref="FusedCases.Names"/>), forward values against float64 references
/// written out here, and the edge cases their callers rely on. Sizes are odd on purpose (V = 37, D = 6 or 10).
/// </summary>
public class FusedOpsTests
{
    // ---- helpers -----------------------------------------------------------------------------------------

    internal static Tensor Rand(Random rng, float amplitude, params int[] shape)
    {
        var t = GradCheck.Random(rng, shape);
        var s = t.Span;
        for (int i = 0; i < s.Length; i++) s[i] *= amplitude;
        return t;
    }

    private static void AssertClose(double expected, double actual, double tol, string what)
        => Assert.True(Math.Abs(expected - actual) <= tol, $"{what}: expected {expected:G9}, got {actual:G9} (tol {tol:G3})");

    private static void AssertAllClose(ReadOnlySpan<double> expected, ReadOnlySpan<float> actual, double tol, string what)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++) AssertClose(expected[i], actual[i], tol, $"{what}[{i}]");
    }

    /// <summary>log softmax of one row in float64.</summary>
    private static double[] LogSoftmax64(ReadOnlySpan<float> x)
    {
        double max = double.NegativeInfinity;
        foreach (var v in x) max = Math.Max(max, v);
        double sum = 0;
        foreach (var v in x) sum += Math.Exp(v - max);
        double lse = max + Math.Log(sum);
        var y = new double[x.Length];
        for (int i = 0; i < x.Length; i++) y[i] = x[i] - lse;
        return y;
    }

    // ---- gradient checks ---------------------------------------------------------------------------------

    public static IEnumerable<object[]> GradCases() => FusedCases.Names.Select(n => new object[] { n });

    [Theory]
    [MemberData(nameof(GradCases))]
    public void GradientMatchesFiniteDifferences(string op)
    {
        switch (op)
        {
            case "CrossEntropy": CrossEntropyGradCheck(); break;
            case "TokenLogProbs": TokenLogProbsGradCheck(); break;
            case "CausalAttention": CausalAttentionGradCheck(); break;
            case "CausalAttentionPacked": CausalAttentionPackedGradCheck(); break;
            case "Rope": RopeGradCheck(); break;
            case "Dropout": DropoutGradCheck(); break;
            case "CausalConv": CausalConvGradCheck(); break;
            case "SelectiveScan": SelectiveScanTests.GradCheckCases(); break;
            default: Assert.Fail($"no gradient check for fused op {op}"); break;
        }
    }

    private static void CrossEntropyGradCheck()
    {
        var rng = new Random(31);
        // Rows 1 and 4 ignored, row 3 weight 0: their gradient must be exactly zero (checked numerically here too).
        int[] targets = [5, -100, 36, 0, -100, 17];
        GradCheck.Check(x => Ops.CrossEntropy(x[0], targets), [Rand(rng, 3, 6, 37)]);
        float[] weights = [0.5f, 2f, 1f, 0f, 1f, 3f];
        GradCheck.Check(x => Ops.CrossEntropy(x[0], targets, weights: weights), [Rand(rng, 3, 2, 3, 37)]);
        int[] t2 = [3, 0, 3, 6];  // ignoreIndex = 3
        GradCheck.Check(x => Ops.CrossEntropy(x[0], t2, ignoreIndex: 3), [Rand(rng, 3, 4, 7)]);
    }

    private static void TokenLogProbsGradCheck()
    {
        var rng = new Random(32);
        int[] targets = [0, 36, 5, 17, 17, 2];
        GradCheck.Check(x => Ops.TokenLogProbs(x[0], targets).LogProbs, [Rand(rng, 3, 2, 3, 37)]);
        GradCheck.Check(x => Ops.TokenLogProbs(x[0], targets).Entropy, [Rand(rng, 3, 2, 3, 37)]);
        GradCheck.Check(x =>
        {
            var (lp, h) = Ops.TokenLogProbs(x[0], targets);
            return Ops.Add(lp, Ops.MulScalar(h, -0.7f));
        }, [Rand(rng, 3, 6, 37)]);
        // With a temperature folded in (scale = 1 / 0.7).
        GradCheck.Check(x =>
        {
            var (lp, h) = Ops.TokenLogProbs(x[0], targets, 1f / 0.7f);
            return Ops.Add(lp, Ops.MulScalar(h, -0.7f));
        }, [Rand(rng, 3, 6, 37)]);
    }

    private static void CausalAttentionGradCheck()
    {
        var rng = new Random(33);
        // GEMM path: T = 5 < S = 7, offset 2, GQA 4/2, D = 6; batch 1 masks keys 0..2 so its query 0 sees nothing.
        var mask = new bool[2 * 7];
        for (int i = 0; i < mask.Length; i++) mask[i] = !(i >= 7 && i <= 9) && i != 4;
        GradCheck.Check(x => Ops.CausalAttention(x[0], x[1], x[2], positionOffset: 2, keyMask: mask),
            [Rand(rng, 1, 2, 5, 4, 6), Rand(rng, 1, 2, 7, 2, 6), Rand(rng, 1, 2, 7, 2, 6)]);
        // Row (decode) path: T = 3, keys past offset + T unused, custom scale, Hkv = 1.
        GradCheck.Check(x => Ops.CausalAttention(x[0], x[1], x[2], positionOffset: 3, scale: 0.8f),
            [Rand(rng, 1, 1, 3, 3, 10), Rand(rng, 1, 1, 9, 1, 10), Rand(rng, 1, 1, 9, 1, 10)]);
        // Plain self-attention T = S = 6, MHA.
        GradCheck.Check(x => Ops.CausalAttention(x[0], x[1], x[2]),
            [Rand(rng, 1, 1, 6, 2, 6), Rand(rng, 1, 1, 6, 2, 6), Rand(rng, 1, 1, 6, 2, 6)]);
        // More queries than one GEMM block (64): the second block sees more keys than the first.
        GradCheck.Check(x => Ops.CausalAttention(x[0], x[1], x[2], positionOffset: 1),
            [Rand(rng, 1, 1, 67, 1, 3), Rand(rng, 1, 1, 70, 1, 3), Rand(rng, 1, 1, 70, 1, 3)]);
        // Gemma-2's attention-logit soft cap (small so scores reach the saturating part), with a window and a mask,
        // on the GEMM path and on the row path.
        GradCheck.Check(x => Ops.CausalAttention(x[0], x[1], x[2], positionOffset: 2, keyMask: mask, window: 3, softCap: 0.9f),
            [Rand(rng, 1, 2, 5, 4, 6), Rand(rng, 1, 2, 7, 2, 6), Rand(rng, 1, 2, 7, 2, 6)]);
        GradCheck.Check(x => Ops.CausalAttention(x[0], x[1], x[2], positionOffset: 3, scale: 0.8f, softCap: 1.1f),
            [Rand(rng, 1, 1, 3, 3, 10), Rand(rng, 1, 1, 9, 1, 10), Rand(rng, 1, 1, 9, 1, 10)]);
        // Packed sequences: row 0 holds three (starting at 0, 3, 5), row 1 two (0, 4), with a window of 3 and a key mask;
        // and the row path (T = 3: segments 0, 1).
        int[] segments = [0, 0, 0, 3, 3, 5, 5, 0, 0, 0, 0, 4, 4, 4];
        var selfMask = new bool[2 * 7];
        for (int i = 0; i < selfMask.Length; i++) selfMask[i] = i != 9;
        GradCheck.Check(x => Ops.CausalAttention(x[0], x[1], x[2], keyMask: selfMask, window: 3, segmentStarts: segments),
            [Rand(rng, 1, 2, 7, 4, 6), Rand(rng, 1, 2, 7, 2, 6), Rand(rng, 1, 2, 7, 2, 6)]);
        GradCheck.Check(x => Ops.CausalAttention(x[0], x[1], x[2], segmentStarts: [0, 1, 1]),
            [Rand(rng, 1, 1, 3, 2, 16), Rand(rng, 1, 1, 3, 2, 16), Rand(rng, 1, 1, 3, 2, 16)]);
        // ALiBi (a constant added to the scores) on the GEMM path with a mask and on the row path.
        GradCheck.Check(x => Ops.CausalAttention(x[0], x[1], x[2], positionOffset: 2, keyMask: mask, alibiSlopes: Slopes(4)),
            [Rand(rng, 1, 2, 5, 4, 6), Rand(rng, 1, 2, 7, 2, 6), Rand(rng, 1, 2, 7, 2, 6)]);
        GradCheck.Check(x => Ops.CausalAttention(x[0], x[1], x[2], positionOffset: 3, scale: 0.8f, alibiSlopes: Slopes(3)),
            [Rand(rng, 1, 1, 3, 3, 10), Rand(rng, 1, 1, 9, 1, 10), Rand(rng, 1, 1, 9, 1, 10)]);
    }

    private static void CausalConvGradCheck()
    {
        var rng = new Random(35);
        // Width 3 over 5 steps (the first two reach before the start: zeros), with a bias; then width 4 continuing a
        // history (the cached inputs of earlier steps, which take no gradient), fewer steps than the history holds.
        GradCheck.Check(x => Ops.CausalConv(x[0], x[1], x[2]), [Rand(rng, 1, 2, 5, 7), Rand(rng, 1, 7, 1, 3), Rand(rng, 1, 7)]);
        var history = Enumerable.Range(0, 2 * 3 * 6).Select(i => MathF.Sin(i)).ToArray();
        GradCheck.Check(x => Ops.CausalConv(x[0], x[1], history: history), [Rand(rng, 1, 2, 2, 6), Rand(rng, 1, 6, 1, 4)]);
        // Packed sequences: no step reads across its sequence's start (input, weight and bias gradients alike).
        GradCheck.Check(x => Ops.CausalConv(x[0], x[1], x[2], segmentStarts: [0, 0, 2, 2, 2, 0, 1, 1, 3, 3]), [Rand(rng, 1, 2, 5, 3), Rand(rng, 1, 3, 1, 3), Rand(rng, 1, 3)]);
    }

    /// <summary>Packed sequences convolve as if each were its own row.</summary>
    [Fact]
    public void CausalConvOfPackedSequencesEqualsSeparateOnes()
    {
        var rng = new Random(52);
        int t = 8, c = 5, k = 3, cut = 3;
        var u = Rand(rng, 1, 1, t, c);
        var w = Rand(rng, 1, c, 1, k);
        var bias = Rand(rng, 1, c);
        using var _ = Autograd.NoGrad();
        var packed = Ops.CausalConv(u, w, bias, segmentStarts: [.. Enumerable.Range(0, t).Select(i => i < cut ? 0 : cut)]).ToArray();
        foreach (var (from, steps) in new[] { (0, cut), (cut, t - cut) })
        {
            var y = Ops.CausalConv(Tensor.FromArray(u.Span.Slice(from * c, steps * c).ToArray(), 1, steps, c), w, bias).ToArray();
            for (int i = 0; i < y.Length; i++) Assert.Equal(y[i], packed[from * c + i]);
        }
    }

    /// <summary>The convolution against its formula in double precision: y[b, t, c] = bias[c] + Σ_j w[c, j]·u[b, t − K + 1 + j, c],
    /// inputs before the start from the history (oldest first) or zero; a chunked pass that carries the last K − 1
    /// inputs as history gives the whole pass's output.</summary>
    [Theory]
    [InlineData(2, 9, 5, 3, true)]
    [InlineData(3, 1, 33, 3, false)]
    [InlineData(1, 6, 4, 1, true)]
    [InlineData(2, 4, 8, 5, false)]
    public void CausalConvMatchesItsFormula(int b, int t, int c, int k, bool withBias)
    {
        var rng = new Random(51 + t * 3 + k);
        var u = Rand(rng, 1, b, t, c);
        var w = Rand(rng, 1, c, 1, k);
        var bias = withBias ? Rand(rng, 1, c) : null;
        var history = Enumerable.Range(0, b * (k - 1) * c).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        using var _ = Autograd.NoGrad();
        foreach (var h in new[] { null, history })
        {
            var y = Ops.CausalConv(u, w, bias, h).ToArray();
            for (int bi = 0; bi < b; bi++)
                for (int ti = 0; ti < t; ti++)
                    for (int ci = 0; ci < c; ci++)
                    {
                        double expected = bias?.Span[ci] ?? 0;
                        for (int j = 0; j < k; j++)
                        {
                            int s = ti - k + 1 + j;
                            double input = s >= 0 ? u.Span[(bi * t + s) * c + ci] : h == null ? 0 : h[(bi * (k - 1) + k - 1 + s) * c + ci];
                            expected += w.Span[ci * k + j] * input;
                        }
                        Assert.True(Math.Abs(y[(bi * t + ti) * c + ci] - expected) < 1e-5, $"b={bi} t={ti} c={ci}: {y[(bi * t + ti) * c + ci]} vs {expected}");
                    }
        }
        // Two chunks, the second continuing from the first's last K − 1 inputs, equal one pass.
        if (t < 2) return;
        int first = t / 2;
        var whole = Ops.CausalConv(u, w, bias).ToArray();
        var u1 = Tensor.FromArray(u.Span[..(b * t * c)].ToArray().Where((_, i) => i / c % t < first).ToArray(), b, first, c);
        var u2 = Tensor.FromArray(u.Span[..(b * t * c)].ToArray().Where((_, i) => i / c % t >= first).ToArray(), b, t - first, c);
        var carried = new float[b * (k - 1) * c];
        for (int bi = 0; bi < b; bi++)
            for (int r = 0; r < k - 1; r++)
            {
                int s = first - (k - 1) + r;
                if (s >= 0) u.Span.Slice((bi * t + s) * c, c).CopyTo(carried.AsSpan((bi * (k - 1) + r) * c, c));
            }
        var y1 = Ops.CausalConv(u1, w, bias).ToArray();
        var y2 = Ops.CausalConv(u2, w, bias, carried).ToArray();
        for (int bi = 0; bi < b; bi++)
            for (int ti = 0; ti < t; ti++)
                for (int ci = 0; ci < c; ci++)
                {
                    float got = ti < first ? y1[(bi * first + ti) * c + ci] : y2[(bi * (t - first) + ti - first) * c + ci];
                    Assert.Equal(whole[(bi * t + ti) * c + ci], got);
                }
    }

    [Fact]
    public void CausalConvChecksItsShapes()
    {
        var u = Tensor.Zeros(1, 3, 4);
        Assert.Contains("weight must be [C=4, 1, K ≥ 1]", Assert.Throws<ArgumentException>(() => Ops.CausalConv(u, Tensor.Zeros(4, 3))).Message);
        Assert.Contains("bias must be [C=4]", Assert.Throws<ArgumentException>(() => Ops.CausalConv(u, Tensor.Zeros(4, 1, 3), Tensor.Zeros(3))).Message);
        Assert.Contains("history holds 4 floats, B·(K − 1)·C = 8 expected", Assert.Throws<ArgumentException>(() => Ops.CausalConv(u, Tensor.Zeros(4, 1, 3), history: new float[4])).Message);
    }

    [Fact]
    public void AlibiSlopesAreCheckedAndNotTakenWithASoftCap()
    {
        var x = Tensor.Zeros(1, 3, 2, 4);
        Assert.Contains("3 ALiBi slopes for 2 query heads", Assert.Throws<ArgumentException>(() => Ops.CausalAttention(x, x, x, alibiSlopes: [1, 2, 3])).Message);
        Assert.Contains("finite", Assert.Throws<ArgumentException>(() => Ops.CausalAttention(x, x, x, alibiSlopes: [1, float.NaN])).Message);
        Assert.Contains("soft cap", Assert.Throws<ArgumentException>(() => Ops.CausalAttention(x, x, x, softCap: 2f, alibiSlopes: [1, 2])).Message);
    }

    /// <summary>
    /// Segments (sequences packed into one row) are exactly separate sequences: the output of each, and the gradients
    /// of its q, k and v, equal those of attention run on that sequence alone, on the GEMM path (T = 70 &gt; one block,
    /// a segment crossing the block boundary), the row path (T ≤ 4), head sizes 8 and 64 (the 512-bit row kernels), and
    /// the packed qkv form.
    /// </summary>
    [Theory]
    [InlineData(70, 8, false)]
    [InlineData(70, 64, true)]
    [InlineData(4, 64, false)]
    [InlineData(4, 8, true)]
    public void SegmentsAttendAsSeparateSequences(int t, int d, bool packedForm)
    {
        var rng = new Random(70 + t + d);
        const int hq = 4, hkv = 2;
        int[] starts = t == 70 ? [0, 30, 61, 66] : [0, 1, 3];   // each segment runs to the next start
        var segments = new int[t];
        for (int i = 0, s = 0; i < t; i++)
        {
            while (s + 1 < starts.Length && starts[s + 1] <= i) s++;
            segments[i] = starts[s];
        }
        var q = Rand(rng, 1, 1, t, hq, d); var k = Rand(rng, 1, 1, t, hkv, d); var v = Rand(rng, 1, 1, t, hkv, d);
        var weights = Rand(rng, 1, 1, t, hq, d);   // the loss Σ w ⊙ o, so that every output element has its own gradient
        Tensor Attend(Tensor q, Tensor k, Tensor v, int[]? seg)
        {
            if (!packedForm) return Ops.CausalAttention(q, k, v, segmentStarts: seg);
            int n = q.Dim(1);
            var qkv = Ops.Concat([Ops.Reshape(q, 1, n, hq * d), Ops.Reshape(k, 1, n, hkv * d), Ops.Reshape(v, 1, n, hkv * d)], -1);
            return Ops.CausalAttentionPacked(qkv, hq, hkv, segmentStarts: seg);
        }
        var whole = Attend(q, k, v, segments);
        Ops.Sum(Ops.Mul(whole, weights)).Backward();
        for (int s = 0; s < starts.Length; s++)
        {
            int a = starts[s], n = (s + 1 < starts.Length ? starts[s + 1] : t) - a;
            Tensor Part(Tensor x, int heads) { var p = Tensor.Parameter([1, n, heads, d], 0f); x.Span.Slice(a * heads * d, n * heads * d).CopyTo(p.Span); return p; }
            var (qs, ks, vs) = (Part(q, hq), Part(k, hkv), Part(v, hkv));
            var alone = Attend(qs, ks, vs, null);
            Ops.Sum(Ops.Mul(alone, Tensor.FromArray(weights.Span.Slice(a * hq * d, n * hq * d).ToArray(), 1, n, hq, d))).Backward();
            AssertSlice(alone.Span, whole.Span.Slice(a * hq * d, n * hq * d), $"segment {s} output");
            AssertSlice(qs.Grad!.Span, q.Grad!.Span.Slice(a * hq * d, n * hq * d), $"segment {s} dq");
            AssertSlice(ks.Grad!.Span, k.Grad!.Span.Slice(a * hkv * d, n * hkv * d), $"segment {s} dk");
            AssertSlice(vs.Grad!.Span, v.Grad!.Span.Slice(a * hkv * d, n * hkv * d), $"segment {s} dv");
        }

        static void AssertSlice(ReadOnlySpan<float> expected, ReadOnlySpan<float> actual, string what)
        {
            Assert.Equal(expected.Length, actual.Length);
            for (int i = 0; i < expected.Length; i++)
                Assert.True(Math.Abs(expected[i] - actual[i]) <= 1e-5 * (1 + Math.Abs(expected[i])), $"{what}[{i}]: {actual[i]} vs {expected[i]}");
        }
    }

    [Fact]
    public void SegmentStartsAreChecked()
    {
        var x = Tensor.Zeros(1, 3, 1, 4);
        Assert.Contains("must be in [0, 1]", Assert.Throws<ArgumentException>(() => Ops.CausalAttention(x, x, x, segmentStarts: [0, 2, 2])).Message);
        Assert.Contains("not below the previous", Assert.Throws<ArgumentException>(() => Ops.CausalAttention(x, x, x, segmentStarts: [0, 1, 0])).Message);
        Assert.Contains("no cache", Assert.Throws<ArgumentException>(() => Ops.CausalAttention(x, x, x, positionOffset: 1, segmentStarts: [0, 0, 0])).Message);
    }

    private static void CausalAttentionPackedGradCheck()
    {
        var rng = new Random(36);
        // MHA, T = 6, D = 5 (width 2·5 + 2·2·5 = 30), offset 1 and a key mask with a fully masked query.
        var mask = new bool[2 * 6];
        for (int i = 0; i < mask.Length; i++) mask[i] = i != 0 && i != 8;
        GradCheck.Check(x => Ops.CausalAttentionPacked(x[0], 2, 2, positionOffset: 1, keyMask: mask), [Rand(rng, 1, 2, 6, 30)]);
        // GQA 4/2 with a window, a soft cap and a custom scale.
        GradCheck.Check(x => Ops.CausalAttentionPacked(x[0], 4, 2, scale: 0.7f, window: 3, softCap: 1.1f), [Rand(rng, 1, 1, 7, 8 * 3)]);
        // More queries than one GEMM block (64), Hq = Hkv = 1.
        GradCheck.Check(x => Ops.CausalAttentionPacked(x[0], 1, 1), [Rand(rng, 1, 1, 67, 9)]);
        GradCheck.Check(x => Ops.CausalAttentionPacked(x[0], 2, 2, keyMask: mask, alibiSlopes: Slopes(2)), [Rand(rng, 1, 2, 6, 30)]);
    }

    /// <summary>The packed form is the three column ranges of qkv fed to CausalAttention: same output, same gradient.</summary>
    [Theory]
    [InlineData(2, 9, 4, 4, 8, false)]
    [InlineData(1, 70, 6, 2, 5, true)]
    public void CausalAttentionPackedEqualsAttentionOnSlices(int b, int t, int hq, int hkv, int d, bool masked)
    {
        var rng = new Random(50 + t);
        int width = (hq + 2 * hkv) * d;
        var init = Rand(rng, 1.5f, b, t, width).ToArray();
        var mask = masked ? Enumerable.Range(0, b * t).Select(_ => rng.NextDouble() < 0.8).ToArray() : null;
        var dOut = Rand(rng, 1, b, t, hq, d);

        var packed = Tensor.FromArray(init.ToArray(), b, t, width);
        packed.RequiresGrad = true;
        var o1 = Ops.CausalAttentionPacked(packed, hq, hkv, positionOffset: 2, keyMask: mask, window: 5);
        Ops.Sum(Ops.Mul(o1, dOut)).Backward();

        var sliced = Tensor.FromArray(init.ToArray(), b, t, width);
        sliced.RequiresGrad = true;
        var q = Ops.Reshape(Ops.Slice(sliced, -1, 0, hq * d), b, t, hq, d);
        var k = Ops.Reshape(Ops.Slice(sliced, -1, hq * d, hkv * d), b, t, hkv, d);
        var v = Ops.Reshape(Ops.Slice(sliced, -1, (hq + hkv) * d, hkv * d), b, t, hkv, d);
        var o2 = Ops.CausalAttention(q, k, v, positionOffset: 2, keyMask: mask, window: 5);
        Ops.Sum(Ops.Mul(o2, dOut)).Backward();

        AssertAllClose(o2.ToArray().Select(f => (double)f).ToArray(), o1.Span, 1e-6, "output");
        AssertAllClose(sliced.Grad!.ToArray().Select(f => (double)f).ToArray(), packed.Grad!.Span, 1e-6, "gradient");
    }

    [Fact]
    public void CausalAttentionPackedRejectsAWidthThatIsNotAWholeNumberOfHeads()
    {
        var x = Tensor.FromArray(new float[2 * 3 * 13], 2, 3, 13);
        var e = Assert.Throws<ArgumentException>(() => Ops.CausalAttentionPacked(x, 2, 1));
        Assert.Contains("width 13", e.Message);
    }

    private static void RopeGradCheck()
    {
        var rng = new Random(34);
        var inv = Ops.RopeInverseFrequencies(10, 10000);
        int[] shared = [0, 3, 4, 9, 100];
        GradCheck.Check(x => Ops.Rope(x[0], shared, inv), [Rand(rng, 1, 2, 5, 3, 10)]);
        int[] perToken = [0, 0, 1, 2, 3, 7, 8, 9, 10, 11];
        GradCheck.Check(x => Ops.Rope(x[0], perToken, inv), [Rand(rng, 1, 2, 5, 3, 10)]);
        // LongRoPE: per-pair divisors and the attention factor on cos and sin.
        var longInv = Ops.RopeInverseFrequencies(10, 10000, [1f, 1.5f, 2f, 4f, 9f]);
        GradCheck.Check(x => Ops.Rope(x[0], shared, longInv, scale: 1.19f), [Rand(rng, 1, 2, 5, 3, 10)]);
        // Partial rotary (Phi-4-mini): 6 of 10 channels turned, 4 passed through.
        var partialInv = Ops.RopeInverseFrequencies(6, 10000, [1f, 2f, 3.5f]);
        GradCheck.Check(x => Ops.Rope(x[0], perToken, partialInv, scale: 1.1f, rotaryDim: 6), [Rand(rng, 1, 2, 5, 3, 10)]);
        // Interleaved pairs (ERNIE 4.5), whole and partial.
        GradCheck.Check(x => Ops.Rope(x[0], shared, inv, interleaved: true), [Rand(rng, 1, 2, 5, 3, 10)]);
        GradCheck.Check(x => Ops.Rope(x[0], perToken, partialInv, scale: 1.1f, rotaryDim: 6, interleaved: true), [Rand(rng, 1, 2, 5, 3, 10)]);
    }

    private static void DropoutGradCheck()
    {
        var rng = new Random(35);
        GradCheck.Check(x => Ops.Dropout(x[0], 0.3f, new Random(99)), [Rand(rng, 1, 3, 37)]);
    }

    // ---- cross entropy -----------------------------------------------------------------------------------

    [Fact]
    public void CrossEntropyMatchesHandComputedExample()
    {
        // Row 0: logits [1, 2, 3], target 2 → lse = 3 + ln(1 + e⁻¹ + e⁻²) = 3.4076059644; loss 0.4076059644.
        // Row 1: logits [1, 0, −1], target 1 → lse = 1.4076059644; loss 1.4076059644. Mean 0.9076059644.
        var logits = Tensor.FromArray([1f, 2f, 3f, 1f, 0f, -1f], 2, 3);
        logits.RequiresGrad = true;
        var loss = Ops.CrossEntropy(logits, [2, 1]);
        AssertClose(0.9076059644, loss.Item(), 1e-6, "loss");
        loss.Backward();
        // (softmax − onehot) / 2 with softmax([1,2,3]) = [0.0900306, 0.2447285, 0.6652410].
        double[] grad = [0.0450153, 0.1223642, -0.1673795, 0.3326205, -0.3776358, 0.0450153];
        AssertAllClose(grad, logits.Grad!.Span, 1e-6, "grad");
    }

    [Fact]
    public void CrossEntropyMatchesExplicitLogSoftmax()
    {
        var rng = new Random(41);
        int rows = 9, v = 37;
        var logits = Rand(rng, 4, 3, 3, v);
        int[] targets = [4, -1, 36, 0, 12, -1, 7, 7, 30];
        float[] weights = [1f, 5f, 0.25f, 2f, 0f, 1f, 3f, 1f, 0.5f];
        double num = 0, den = 0;
        for (int r = 0; r < rows; r++)
        {
            if (targets[r] == -1) continue;
            var ls = LogSoftmax64(logits.Span.Slice(r * v, v));
            num += weights[r] * -ls[targets[r]];
            den += weights[r];
        }
        AssertClose(num / den, Ops.CrossEntropy(logits, targets, ignoreIndex: -1, weights: weights).Item(), 1e-5, "weighted CE");

        double mean = 0; int count = 0;
        for (int r = 0; r < rows; r++)
        {
            if (targets[r] == -1) continue;
            mean += -LogSoftmax64(logits.Span.Slice(r * v, v))[targets[r]];
            count++;
        }
        AssertClose(mean / count, Ops.CrossEntropy(logits, targets, ignoreIndex: -1).Item(), 1e-5, "mean CE");
    }

    [Fact]
    public void CrossEntropyWithNothingCountedIsZeroWithZeroGradient()
    {
        var logits = Rand(new Random(42), 2, 3, 5);
        var loss = Ops.CrossEntropy(logits, [-100, -100, -100]);
        Assert.Equal(0f, loss.Item());
        loss.Backward();
        Assert.All(logits.Grad!.ToArray(), g => Assert.Equal(0f, g));

        logits.ClearGrad();
        var zeroWeights = Ops.CrossEntropy(logits, [1, 2, 3], weights: [0f, 0f, 0f]);
        Assert.Equal(0f, zeroWeights.Item());
        zeroWeights.Backward();
        Assert.All(logits.Grad!.ToArray(), g => Assert.Equal(0f, g));
    }

    [Fact]
    public void CrossEntropyRejectsBadTargetsAndWeights()
    {
        var logits = Rand(new Random(43), 1, 2, 5);
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => Ops.CrossEntropy(logits, [1, 5]));
        Assert.Contains("target 5 at row 1", e.Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => Ops.CrossEntropy(logits, [-2, 0]));
        Assert.Throws<ArgumentException>(() => Ops.CrossEntropy(logits, [1]));
        Assert.Throws<ArgumentException>(() => Ops.CrossEntropy(logits, [1, 2], weights: [1f]));
        Assert.Throws<ArgumentOutOfRangeException>(() => Ops.CrossEntropy(logits, [1, 2], weights: [1f, -1f]));
    }

    // ---- token log-probs and entropy ---------------------------------------------------------------------

    [Fact]
    public void TokenLogProbsMatchReference()
    {
        var rng = new Random(44);
        int v = 37;
        var logits = Rand(rng, 5, 2, 4, v);
        var ls = logits.Span;
        for (int i = 4 * v; i < 5 * v; i++) ls[i] += 1000f;   // one row far from 0: entropy must not cancel
        int[] targets = [0, 36, 3, 3, 10, 20, 30, 1];
        var (lp, h) = Ops.TokenLogProbs(logits, targets);
        Assert.Equal([2, 4], lp.Shape.ToArray());
        Assert.Equal([2, 4], h.Shape.ToArray());
        for (int r = 0; r < 8; r++)
        {
            var l = LogSoftmax64(logits.Span.Slice(r * v, v));
            double ent = 0;
            foreach (var x in l) ent -= Math.Exp(x) * x;
            AssertClose(l[targets[r]], lp.Span[r], 2e-5, $"logp row {r}");
            AssertClose(ent, h.Span[r], 2e-5, $"entropy row {r}");
        }
        Assert.Throws<ArgumentOutOfRangeException>(() => Ops.TokenLogProbs(logits, [0, 37, 0, 0, 0, 0, 0, 0]));
    }

    [Fact]
    public void TokenLogProbsWithAScaleMatchAHandComputedCase()
    {
        // Logits (0, ln 2, ln 4) / 2 at scale 2: p = (1, 2, 4) / 7.
        var logits = Tensor.FromArray([0f, (float)(Math.Log(2) / 2), (float)(Math.Log(4) / 2)], 1, 3);
        var (lp, h) = Ops.TokenLogProbs(logits, [2], 2f);
        double[] p = [1 / 7.0, 2 / 7.0, 4 / 7.0];
        AssertClose(Math.Log(4 / 7.0), lp.Span[0], 1e-6, "log p");
        AssertClose(-p.Sum(q => q * Math.Log(q)), h.Span[0], 1e-6, "entropy");
        foreach (float bad in new[] { 0f, -1f, float.NaN, float.PositiveInfinity })
            Assert.Throws<ArgumentOutOfRangeException>(() => Ops.TokenLogProbs(logits, [2], bad));
    }

    [Fact]
    public void TokenLogProbsWithAScaleAreTheScaledLogitsBitForBit()
    {
        // The temperature folded into the op gives exactly MulScalar then TokenLogProbs: values and the logits' gradient,
        // through log-probs alone (the entropy's gradient zero), the entropy alone, both, and rows whose gradient is zero.
        var rng = new Random(45);
        foreach (float scale in new[] { 1f / 0.7f, 2f, 0.5f, 1f / 0.9f })
        foreach (int v in new[] { 37, 160, 1001 })
        foreach (int mode in new[] { 0, 1, 2 })
        {
            int rows = 7;
            var targets = Enumerable.Range(0, rows).Select(_ => rng.Next(v)).ToArray();
            var weights = Enumerable.Range(0, rows).Select(r => r == 3 ? 0f : (float)(rng.NextDouble() - 0.3)).ToArray();
            var data = Rand(rng, 4, rows, v).Span.ToArray();
            (float[] Lp, float[] H, float[] Grad) Run(bool fused)
            {
                var x = Tensor.FromArray((float[])data.Clone(), rows, v);
                x.RequiresGrad = true;
                var (lp, h) = fused ? Ops.TokenLogProbs(x, targets, scale) : Ops.TokenLogProbs(Ops.MulScalar(x, scale), targets);
                var w = Tensor.FromArray(weights, rows);
                var loss = mode switch
                {
                    0 => Ops.Sum(Ops.Mul(lp, w)),
                    1 => Ops.Sum(Ops.Mul(h, w)),
                    _ => Ops.Sum(Ops.Add(Ops.Mul(lp, w), Ops.MulScalar(h, -0.3f))),
                };
                loss.Backward();
                return (lp.Span.ToArray(), h.Span.ToArray(), x.GradTensor!.Span.ToArray());
            }
            var (fl, fh, fg) = Run(true);
            var (ul, uh, ug) = Run(false);
            string what = $"scale {scale}, V {v}, mode {mode}";
            Assert.True(fl.Select(BitConverter.SingleToInt32Bits).SequenceEqual(ul.Select(BitConverter.SingleToInt32Bits)), $"log-probs differ ({what})");
            Assert.True(fh.Select(BitConverter.SingleToInt32Bits).SequenceEqual(uh.Select(BitConverter.SingleToInt32Bits)), $"entropies differ ({what})");
            Assert.True(fg.Select(BitConverter.SingleToInt32Bits).SequenceEqual(ug.Select(BitConverter.SingleToInt32Bits)), $"gradients differ ({what})");
        }
    }

    // ---- attention ---------------------------------------------------------------------------------------

    /// <summary>Explicit scores + mask + softmax per (b, t, h) in float64, kv head h / (Hq/Hkv); with a window,
    /// query position p = offset + t may see key s only when p − window &lt; s; with a soft cap c the scaled score z
    /// becomes c·tanh(z / c); with ALiBi slopes m, the scaled score of key s for query head h gains m_h·(s − p).</summary>
    private static double[] AttentionReference(Tensor q, Tensor k, Tensor v, int offset, bool[]? mask, double? scale, int? window = null, double? softCap = null,
        float[]? alibi = null)
    {
        int b = q.Dim(0), t = q.Dim(1), hq = q.Dim(2), d = q.Dim(3), s = k.Dim(1), hkv = k.Dim(2);
        double sc = scale ?? 1.0 / Math.Sqrt(d);
        var qs = q.Span; var ks = k.Span; var vs = v.Span;
        var o = new double[b * t * hq * d];
        var w = new double[s];
        for (int bi = 0; bi < b; bi++)
            for (int ti = 0; ti < t; ti++)
                for (int h = 0; h < hq; h++)
                {
                    int kh = h / (hq / hkv);
                    double max = double.NegativeInfinity;
                    for (int si = 0; si < s; si++)
                    {
                        bool allowed = si <= offset + ti && (window == null || offset + ti - window < si) && (mask == null || mask[bi * s + si]);
                        if (!allowed) { w[si] = double.NegativeInfinity; continue; }
                        double dot = 0;
                        for (int i = 0; i < d; i++) dot += (double)qs[((bi * t + ti) * hq + h) * d + i] * ks[((bi * s + si) * hkv + kh) * d + i];
                        w[si] = softCap is double c ? c * Math.Tanh(dot * sc / c) : dot * sc;
                        if (alibi != null) w[si] += alibi[h] * (double)(si - (offset + ti));
                        max = Math.Max(max, w[si]);
                    }
                    if (double.IsNegativeInfinity(max)) continue;   // no allowed key: zeros
                    double z = 0;
                    for (int si = 0; si < s; si++) { w[si] = double.IsNegativeInfinity(w[si]) ? 0 : Math.Exp(w[si] - max); z += w[si]; }
                    for (int si = 0; si < s; si++)
                        for (int i = 0; i < d; i++)
                            o[((bi * t + ti) * hq + h) * d + i] += w[si] / z * vs[((bi * s + si) * hkv + kh) * d + i];
                }
        return o;
    }

    public static IEnumerable<object[]> AttentionShapes() =>
    [
        // B, T, S, Hq, Hkv, D, offset, masked
        [2, 5, 7, 4, 2, 6, 2, true],     // T < S with an offset, GQA, a fully masked query row
        [1, 8, 8, 3, 3, 19, 0, false],   // self-attention, MHA, GEMM path
        [2, 2, 10, 4, 1, 8, 3, false],   // preallocated cache: keys past offset + T never seen (row path)
        [1, 4, 6, 2, 2, 5, 3, true],     // offset + T > S
        [2, 1, 33, 6, 2, 16, 32, true],  // single-token decode
        [2, 130, 140, 2, 1, 5, 4, true], // three GEMM query blocks
        // The 512-bit row path: keys in blocks of 16 plus a tail, head sizes of 64 + 16 and 128, several queries.
        [2, 1, 37, 4, 2, 80, 36, false],
        [1, 3, 50, 2, 1, 64, 47, false],
        [3, 1, 48, 14, 2, 128, 47, true],
        [2, 2, 19, 4, 2, 16, 17, true],
        // Decoding by kv head in blocks of 64 keys: two whole blocks and a last one of 16 + 6.
        [2, 1, 150, 6, 2, 64, 149, true],
    ];

    [Theory]
    [MemberData(nameof(AttentionShapes))]
    public void CausalAttentionMatchesReference(int b, int t, int s, int hq, int hkv, int d, int offset, bool masked)
    {
        var rng = new Random(45 + t * 7 + s);
        var q = Rand(rng, 2, b, t, hq, d); var k = Rand(rng, 2, b, s, hkv, d); var v = Rand(rng, 1, b, s, hkv, d);
        bool[]? mask = null;
        if (masked)
        {
            mask = new bool[b * s];
            for (int i = 0; i < mask.Length; i++) mask[i] = rng.NextDouble() < 0.7;
            for (int i = 0; i <= Math.Min(s - 1, offset); i++) mask[i] = false;   // batch 0, query 0: nothing visible
        }
        var expected = AttentionReference(q, k, v, offset, mask, null);
        using var _ = Autograd.NoGrad();
        AssertAllClose(expected, Ops.CausalAttention(q, k, v, offset, mask).Span, 2e-5, "attention");
        if (masked)
            for (int i = 0; i < hq * d; i++) Assert.Equal(0f, Ops.CausalAttention(q, k, v, offset, mask).Span[i]);
        AssertAllClose(AttentionReference(q, k, v, offset, mask, 0.3), Ops.CausalAttention(q, k, v, offset, mask, 0.3f).Span, 2e-5, "attention, scale 0.3");
        var slopes = Slopes(hq);
        AssertAllClose(AttentionReference(q, k, v, offset, mask, 0.3, alibi: slopes), Ops.CausalAttention(q, k, v, offset, mask, 0.3f, alibiSlopes: slopes).Span,
            2e-5, "attention with ALiBi");
    }

    /// <summary>ALiBi slopes that differ per head and tilt the scores by a few units over the test's key ranges.</summary>
    private static float[] Slopes(int heads) => Enumerable.Range(0, heads).Select(h => 0.4f / (1 + h) * (h % 2 == 0 ? 1f : 0.3f)).ToArray();

    /// <summary>A decoding step without gradients (by kv head, in key blocks) gives the same bits as with them (head by
    /// head, probabilities kept), windowed or not.</summary>
    [Theory]
    [InlineData(2, 150, 6, 2, 64, null)]
    [InlineData(2, 150, 6, 2, 64, 40)]
    [InlineData(3, 70, 14, 2, 128, null)]
    [InlineData(1, 37, 4, 2, 80, 20)]
    [InlineData(3, 81, 16, 2, 64, null)]   // eight query heads a kv head: two whole groups of four in P·V
    [InlineData(3, 45, 3, 3, 64, null)]    // one query head a kv head: three heads of zeros pad each group
    [InlineData(3, 50, 10, 2, 128, 30)]
    public void ADecodeStepGivesTheSameBitsWithAndWithoutGradients(int b, int s, int hq, int hkv, int d, int? window)
    {
        var rng = new Random(93 + s);
        var q = Rand(rng, 2, b, 1, hq, d); var k = Rand(rng, 2, b, s, hkv, d); var v = Rand(rng, 1, b, s, hkv, d);
        var mask = new bool[b * s];
        for (int i = 0; i < mask.Length; i++) mask[i] = rng.NextDouble() < 0.8;
        // Row 0 allows every key (the path that skips the mask); with three rows, row 2 allows none.
        Array.Fill(mask, true, 0, s);
        if (b == 3) Array.Fill(mask, false, 2 * s, s);
        foreach (var slopes in new[] { null, Slopes(hq) })
        {
            float[] without;
            q.RequiresGrad = false;
            using (Autograd.NoGrad()) without = Ops.CausalAttention(q, k, v, s - 1, mask, window: window, alibiSlopes: slopes).ToArray();
            q.RequiresGrad = true;
            Assert.Equal(Ops.CausalAttention(q, k, v, s - 1, mask, window: window, alibiSlopes: slopes).ToArray(), without);
            AssertAllClose(AttentionReference(q, k, v, s - 1, mask, null, window, alibi: slopes), without, 2e-5, "decode step against the reference");
            if (b == 3) Assert.All(without.AsSpan(2 * hq * d, hq * d).ToArray(), x => Assert.Equal(0f, x));
        }
    }

    /// <summary>Keys the mask forbids take no part, even when their K and V hold NaN or ∞ (a padded row's garbage):
    /// decoding, with 16-key blocks and a tail, plain and soft-capped.</summary>
    [Fact]
    public void MaskedKeysNeverReachTheOutputOfADecodeStep()
    {
        var rng = new Random(48);
        int b = 2, s = 40, hq = 4, hkv = 2, d = 64;
        var q = Rand(rng, 2, b, 1, hq, d); var k = Rand(rng, 2, b, s, hkv, d); var v = Rand(rng, 1, b, s, hkv, d);
        var mask = new bool[b * s];
        for (int i = 0; i < mask.Length; i++) mask[i] = i % 7 != 2;
        var expected = AttentionReference(q, k, v, s - 1, mask, null);
        var expectedCapped = AttentionReference(q, k, v, s - 1, mask, null, softCap: 1.5);
        for (int i = 0; i < mask.Length; i++)
            if (!mask[i])
                for (int j = 0; j < hkv * d; j++)
                {
                    k.Span[i * hkv * d + j] = j % 2 == 0 ? float.NaN : float.PositiveInfinity;
                    v.Span[i * hkv * d + j] = j % 3 == 0 ? float.NegativeInfinity : float.NaN;
                }
        using var _ = Autograd.NoGrad();
        AssertAllClose(expected, Ops.CausalAttention(q, k, v, s - 1, mask).Span, 2e-5, "decode with garbage in masked keys");
        AssertAllClose(expectedCapped, Ops.CausalAttention(q, k, v, s - 1, mask, softCap: 1.5f).Span, 2e-5, "soft-capped decode with garbage in masked keys");
    }

    [Fact]
    public void FullyMaskedQueryGetsZeroGradientAndNoNaN()
    {
        var rng = new Random(46);
        var q = Rand(rng, 1, 1, 4, 2, 6); var k = Rand(rng, 1, 1, 4, 2, 6); var v = Rand(rng, 1, 1, 4, 2, 6);
        bool[] mask = [false, true, true, true];   // query 0 (sees only key 0) has no allowed key
        var o = Ops.CausalAttention(q, k, v, keyMask: mask);
        Assert.All(o.ToArray(), x => Assert.True(float.IsFinite(x)));
        Ops.Sum(Ops.Mul(o, Rand(rng, 1, 1, 4, 2, 6))).Backward();
        for (int i = 0; i < 2 * 6; i++) Assert.Equal(0f, q.Grad!.Span[i]);
        Assert.All(k.Grad!.Span.Slice(0, 12).ToArray(), g => Assert.Equal(0f, g));   // key 0 is masked for everyone
        Assert.All(v.Grad!.Span.Slice(0, 12).ToArray(), g => Assert.Equal(0f, g));
        Assert.All(q.Grad!.ToArray(), g => Assert.True(float.IsFinite(g)));
    }

    [Fact]
    public void KvCachedDecodeEqualsLastRowOfFullAttention()
    {
        var rng = new Random(47);
        int b = 2, s = 12, hq = 4, hkv = 2, d = 10;
        var q = Rand(rng, 2, b, s, hq, d); var k = Rand(rng, 2, b, s, hkv, d); var v = Rand(rng, 1, b, s, hkv, d);
        var mask = new bool[b * s];
        for (int i = 0; i < mask.Length; i++) mask[i] = i % 5 != 3;
        using var _ = Autograd.NoGrad();
        var full = Ops.CausalAttention(q, k, v, keyMask: mask);
        int row = hq * d;
        var last = Tensor.Zeros(b, 1, hq, d);
        for (int bi = 0; bi < b; bi++) q.Span.Slice((bi * s + s - 1) * row, row).CopyTo(last.Span.Slice(bi * row, row));
        var decoded = Ops.CausalAttention(last, k, v, positionOffset: s - 1, keyMask: mask);
        for (int bi = 0; bi < b; bi++)
            for (int i = 0; i < row; i++)
                AssertClose(full.Span[(bi * s + s - 1) * row + i], decoded.Span[bi * row + i], 1e-5, $"batch {bi} element {i}");
    }

    [Fact]
    public void CausalAttentionRejectsBadShapes()
    {
        var rng = new Random(48);
        var q = Rand(rng, 1, 1, 3, 3, 4); var k = Rand(rng, 1, 1, 3, 2, 4);
        Assert.Throws<ArgumentException>(() => Ops.CausalAttention(q, k, k));                         // 3 % 2 != 0
        var q4 = Rand(rng, 1, 1, 3, 4, 4);
        Assert.Throws<ArgumentException>(() => Ops.CausalAttention(q4, k, k, keyMask: new bool[2]));   // mask length
        Assert.Throws<ArgumentOutOfRangeException>(() => Ops.CausalAttention(q4, k, k, positionOffset: -1));
        Assert.Throws<ArgumentOutOfRangeException>(() => Ops.CausalAttention(q4, k, k, window: 0));
    }

    // ---- sliding-window attention ------------------------------------------------------------------------

    public static IEnumerable<object[]> WindowedAttentionShapes() =>
    [
        // B, T, S, Hq, Hkv, D, offset, window, masked
        [2, 9, 9, 4, 2, 6, 0, 3, true],        // self-attention T > W, GQA, masks (a query can lose its whole window)
        [1, 7, 12, 3, 3, 5, 5, 4, false],      // offset 5: windows start inside the cache
        [2, 3, 10, 4, 1, 8, 6, 2, true],       // row path, offset + W still inside S
        [2, 1, 33, 6, 2, 16, 32, 5, true],     // single-token decode sees the last 5 slots only
        [3, 1, 40, 14, 2, 64, 39, 64, true],   // decode at Qwen2.5-0.5B's head shape (GQA 7, D 64), window past S: none
        [2, 3, 20, 4, 2, 32, 17, 5, true],     // row path, T = 3, D = 32 (two vectors)
        [1, 2, 9, 2, 1, 128, 7, 100, false],   // D = 128
        [1, 6, 4, 2, 1, 6, 3, 2, false],       // offset + T > S: queries past S + W − 1 see no key at all
        [1, 70, 6, 1, 1, 4, 0, 3, false],      // ... and a whole GEMM block with no key
        [1, 8, 8, 2, 2, 7, 0, 1, false],       // W = 1: each query attends only itself
        [2, 130, 140, 2, 1, 5, 4, 20, true],   // three GEMM blocks, windows straddling block edges
        [1, 200, 200, 2, 2, 4, 0, 70, false],  // W > block: a block's keys start mid-sequence
    ];

    [Theory]
    [MemberData(nameof(WindowedAttentionShapes))]
    public void WindowedAttentionMatchesReference(int b, int t, int s, int hq, int hkv, int d, int offset, int window, bool masked)
    {
        var rng = new Random(61 + t * 7 + s + window);
        var q = Rand(rng, 2, b, t, hq, d); var k = Rand(rng, 2, b, s, hkv, d); var v = Rand(rng, 1, b, s, hkv, d);
        bool[]? mask = null;
        if (masked)
        {
            mask = new bool[b * s];
            for (int i = 0; i < mask.Length; i++) mask[i] = rng.NextDouble() < 0.7;
        }
        var expected = AttentionReference(q, k, v, offset, mask, null, window);
        using var _ = Autograd.NoGrad();
        var actual = Ops.CausalAttention(q, k, v, offset, mask, window: window).Span;
        AssertAllClose(expected, actual, 2e-5, "windowed attention");
        // The window must change something whenever a query could otherwise see past it.
        if (offset + t > window)
            Assert.NotEqual(AttentionReference(q, k, v, offset, mask, null), expected);
        AssertAllClose(AttentionReference(q, k, v, offset, mask, 0.3, window), Ops.CausalAttention(q, k, v, offset, mask, 0.3f, window).Span, 2e-5, "windowed, scale 0.3");
        AssertAllClose(AttentionReference(q, k, v, offset, mask, 0.3, window, softCap: 0.7), Ops.CausalAttention(q, k, v, offset, mask, 0.3f, window, softCap: 0.7f).Span, 2e-5, "windowed, scale 0.3, soft cap 0.7");
    }

    [Fact]
    public void WindowCoveringEveryKeyEqualsNoWindow()
    {
        var rng = new Random(62);
        var q = Rand(rng, 2, 2, 70, 4, 6); var k = Rand(rng, 2, 2, 73, 2, 6); var v = Rand(rng, 1, 2, 73, 2, 6);
        var mask = new bool[2 * 73];
        for (int i = 0; i < mask.Length; i++) mask[i] = i % 7 != 2;
        using var _ = Autograd.NoGrad();
        Assert.Equal(Ops.CausalAttention(q, k, v, 3, mask).ToArray(), Ops.CausalAttention(q, k, v, 3, mask, window: 73).ToArray());
    }

    [Theory]
    [InlineData("gemm path, T > W, offset, key mask, GQA")]
    [InlineData("row path, offset, key mask")]
    [InlineData("empty windows past S")]
    [InlineData("two blocks, W < block")]
    [InlineData("two blocks, W > block")]
    public void WindowedAttentionGradientMatchesFiniteDifferences(string name)
    {
        var rng = new Random(63);
        switch (name)
        {
            case "gemm path, T > W, offset, key mask, GQA":
            {
                // Batch 1 masks keys 2..4, so its query at position 4 (window [2, 4]) has no key at all.
                var mask = new bool[2 * 11];
                for (int i = 0; i < mask.Length; i++) mask[i] = !(i >= 13 && i <= 15) && i != 6;
                GradCheck.Check(x => Ops.CausalAttention(x[0], x[1], x[2], positionOffset: 2, keyMask: mask, window: 3),
                    [Rand(rng, 1, 2, 9, 4, 6), Rand(rng, 1, 2, 11, 2, 6), Rand(rng, 1, 2, 11, 2, 6)]);
                break;
            }
            case "row path, offset, key mask":
            {
                var mask = new bool[9];
                for (int i = 0; i < mask.Length; i++) mask[i] = i != 5;
                GradCheck.Check(x => Ops.CausalAttention(x[0], x[1], x[2], positionOffset: 5, keyMask: mask, scale: 0.8f, window: 4),
                    [Rand(rng, 1, 1, 3, 2, 10), Rand(rng, 1, 1, 9, 1, 10), Rand(rng, 1, 1, 9, 1, 10)]);
                break;
            }
            case "empty windows past S":
                GradCheck.Check(x => Ops.CausalAttention(x[0], x[1], x[2], positionOffset: 3, window: 2),
                    [Rand(rng, 1, 1, 6, 2, 6), Rand(rng, 1, 1, 4, 1, 6), Rand(rng, 1, 1, 4, 1, 6)]);
                // The second query block lies wholly past the keys.
                GradCheck.Check(x => Ops.CausalAttention(x[0], x[1], x[2], window: 3),
                    [Rand(rng, 1, 1, 70, 1, 3), Rand(rng, 1, 1, 6, 1, 3), Rand(rng, 1, 1, 6, 1, 3)]);
                break;
            case "two blocks, W < block":
                GradCheck.Check(x => Ops.CausalAttention(x[0], x[1], x[2], positionOffset: 1, window: 5),
                    [Rand(rng, 1, 1, 67, 1, 3), Rand(rng, 1, 1, 70, 1, 3), Rand(rng, 1, 1, 70, 1, 3)]);
                break;
            case "two blocks, W > block":
            {
                var mask = new bool[80];
                for (int i = 0; i < mask.Length; i++) mask[i] = i % 9 != 4;
                GradCheck.Check(x => Ops.CausalAttention(x[0], x[1], x[2], positionOffset: 4, keyMask: mask, window: 70),
                    [Rand(rng, 1, 1, 76, 2, 3), Rand(rng, 1, 1, 80, 1, 3), Rand(rng, 1, 1, 80, 1, 3)]);
                break;
            }
            default: Assert.Fail($"unknown case {name}"); break;
        }
    }

    [Fact]
    public void WindowedQueryWithNoKeyGetsZeroOutputAndGradient()
    {
        var rng = new Random(64);
        // Query 3 (window {2, 3}) finds both keys masked; query 4 still sees key 4.
        var q = Rand(rng, 1, 1, 5, 2, 6); var k = Rand(rng, 1, 1, 5, 1, 6); var v = Rand(rng, 1, 1, 5, 1, 6);
        bool[] mask = [true, true, false, false, true];
        var o = Ops.CausalAttention(q, k, v, keyMask: mask, window: 2);
        Assert.All(o.Span.Slice(3 * 12, 12).ToArray(), x => Assert.Equal(0f, x));
        Assert.Contains(o.Span.Slice(4 * 12, 12).ToArray(), x => x != 0f);
        Ops.Sum(Ops.Mul(o, Rand(rng, 1, 1, 5, 2, 6))).Backward();
        Assert.All(q.Grad!.Span.Slice(3 * 12, 12).ToArray(), g => Assert.Equal(0f, g));
        Assert.All(k.Grad!.ToArray(), g => Assert.True(float.IsFinite(g)));
        // Key 0 only falls in the windows of queries 0 and 1, which do see it.
        Assert.Contains(k.Grad!.Span.Slice(0, 6).ToArray(), g => g != 0f);
    }

    [Fact]
    public void WindowedKvCachedDecodeEqualsFullAttention()
    {
        var rng = new Random(65);
        int b = 2, s = 12, hq = 4, hkv = 2, d = 10, window = 4;
        var q = Rand(rng, 2, b, s, hq, d); var k = Rand(rng, 2, b, s, hkv, d); var v = Rand(rng, 1, b, s, hkv, d);
        var mask = new bool[b * s];
        for (int i = 0; i < mask.Length; i++) mask[i] = i % 5 != 3;
        using var _ = Autograd.NoGrad();
        var full = Ops.CausalAttention(q, k, v, keyMask: mask, window: window);
        int row = hq * d;
        // Every decode step reads a cache that holds all 12 keys, as the model's KV cache does.
        for (int pos = 0; pos < s; pos++)
        {
            var one = Tensor.Zeros(b, 1, hq, d);
            for (int bi = 0; bi < b; bi++) q.Span.Slice((bi * s + pos) * row, row).CopyTo(one.Span.Slice(bi * row, row));
            var decoded = Ops.CausalAttention(one, k, v, positionOffset: pos, keyMask: mask, window: window);
            for (int bi = 0; bi < b; bi++)
                for (int i = 0; i < row; i++)
                    AssertClose(full.Span[(bi * s + pos) * row + i], decoded.Span[bi * row + i], 1e-5, $"position {pos} batch {bi} element {i}");
        }
    }

    // ---- rope --------------------------------------------------------------------------------------------

    [Fact]
    public void RopeInverseFrequenciesMatchFormula()
    {
        var inv = Ops.RopeInverseFrequencies(64, 10000);
        Assert.Equal(32, inv.Length);
        for (int i = 0; i < 32; i++) AssertClose(1.0 / Math.Pow(10000, 2.0 * i / 64), inv[i], 2e-7 * Math.Max(1e-3, inv[i]) + 1e-12, $"inv_freq[{i}]");
        Assert.Equal(1f, inv[0]);
        Assert.Throws<ArgumentOutOfRangeException>(() => Ops.RopeInverseFrequencies(7, 10000));
    }

    [Fact]
    public void RopeMatchesRotateHalfFormula()
    {
        var rng = new Random(49);
        int b = 2, t = 3, h = 2, d = 10, half = d / 2;
        var x = Rand(rng, 1, b, t, h, d);
        var inv = Ops.RopeInverseFrequencies(d, 500000);
        int[] perToken = [0, 1, 2, 5, 6, 2047];
        int[] shared = [4, 17, 1000];
        foreach (var positions in new[] { perToken, shared })
        {
            var y = Ops.Rope(x, positions, inv).Span;
            var xs = x.Span;
            for (int bi = 0; bi < b; bi++)
                for (int ti = 0; ti < t; ti++)
                    for (int hi = 0; hi < h; hi++)
                        for (int i = 0; i < half; i++)
                        {
                            int pos = positions.Length == t ? positions[ti] : positions[bi * t + ti];
                            // Hugging Face forms the angle as a float32 product, then takes cos/sin of it.
                            double angle = (float)((float)pos * inv[i]);
                            int at = ((bi * t + ti) * h + hi) * d;
                            double x1 = xs[at + i], x2 = xs[at + i + half];
                            AssertClose(x1 * Math.Cos(angle) - x2 * Math.Sin(angle), y[at + i], 1e-6, "first half");
                            AssertClose(x2 * Math.Cos(angle) + x1 * Math.Sin(angle), y[at + i + half], 1e-6, "second half");
                        }
        }
        Assert.Throws<ArgumentException>(() => Ops.Rope(x, [1, 2], inv));
        Assert.Throws<ArgumentException>(() => Ops.Rope(x, shared, new float[4]));
        Assert.Throws<ArgumentException>(() => Ops.Rope(x, shared, new float[4], rotaryDim: 6));
        Assert.Throws<ArgumentException>(() => Ops.Rope(x, shared, new float[6], rotaryDim: 12));
    }

    /// <summary>Interleaved pairs (transformers' GLM / ERNIE 4.5 rotate_half over x[0::2] and x[1::2], cos and sin repeated
    /// pairwise): channels 2i and 2i + 1 turn by pos·invFreq[i]; with a rotary dimension R the channels past R pass.</summary>
    [Fact]
    public void InterleavedRopeTurnsAdjacentChannelPairs()
    {
        var rng = new Random(52);
        int b = 2, t = 3, h = 2, d = 10;
        var x = Rand(rng, 1, b, t, h, d);
        int[] positions = [3, 40, 900];
        foreach (int r in new[] { 10, 6 })
        {
            var inv = Ops.RopeInverseFrequencies(r, 500000);
            var y = Ops.Rope(x, positions, inv, rotaryDim: r, interleaved: true).Span;
            var xs = x.Span;
            for (int bi = 0; bi < b; bi++)
                for (int ti = 0; ti < t; ti++)
                    for (int hi = 0; hi < h; hi++)
                    {
                        int at = ((bi * t + ti) * h + hi) * d;
                        for (int i = 0; i < r / 2; i++)
                        {
                            double angle = (float)((float)positions[ti] * inv[i]);
                            double even = xs[at + 2 * i], odd = xs[at + 2 * i + 1];
                            AssertClose(even * Math.Cos(angle) - odd * Math.Sin(angle), y[at + 2 * i], 1e-6, "even channel");
                            AssertClose(odd * Math.Cos(angle) + even * Math.Sin(angle), y[at + 2 * i + 1], 1e-6, "odd channel");
                        }
                        for (int j = r; j < d; j++) Assert.Equal(xs[at + j], y[at + j]);
                    }
        }
    }

    /// <summary>Partial rotary (transformers' Phi-3 split): rotate_half over the first R channels of each head, the
    /// others unchanged.</summary>
    [Fact]
    public void PartialRopeTurnsTheFirstChannelsAndPassesTheRest()
    {
        var rng = new Random(51);
        int b = 2, t = 3, h = 2, d = 10, r = 6, half = r / 2;
        var x = Rand(rng, 1, b, t, h, d);
        var inv = Ops.RopeInverseFrequencies(r, 10000);
        int[] positions = [3, 40, 900];
        var y = Ops.Rope(x, positions, inv, rotaryDim: r).Span;
        var xs = x.Span;
        for (int bi = 0; bi < b; bi++)
            for (int ti = 0; ti < t; ti++)
                for (int hi = 0; hi < h; hi++)
                {
                    int at = ((bi * t + ti) * h + hi) * d;
                    for (int i = 0; i < half; i++)
                    {
                        double angle = (float)((float)positions[ti] * inv[i]);
                        double x1 = xs[at + i], x2 = xs[at + i + half];
                        AssertClose(x1 * Math.Cos(angle) - x2 * Math.Sin(angle), y[at + i], 1e-6, "first half");
                        AssertClose(x2 * Math.Cos(angle) + x1 * Math.Sin(angle), y[at + i + half], 1e-6, "second half");
                    }
                    for (int j = r; j < d; j++) Assert.Equal(xs[at + j], y[at + j]);
                }
    }

    /// <summary>
    /// A model's cached tables give the same values as tables built per call (the rotate-half formula is checked above),
    /// the cache hands back one table for equal positions (so every layer shares it) and a new one for other positions,
    /// and a table of the wrong size is refused.
    /// </summary>
    [Fact]
    public void RopeTableCacheSharesOneTablePerPositionList()
    {
        var rng = new Random(50);
        int b = 2, t = 3, h = 2, d = 10;
        var x = Rand(rng, 1, b, t, h, d);
        var inv = Ops.RopeInverseFrequencies(d, 10000);
        var cache = new RopeTableCache(inv, 1.25f);
        int[] shared = [4, 17, 1000];
        var table = cache.For(shared);
        Assert.Same(table, cache.For(shared.ToArray()));
        Assert.NotSame(table, cache.For([0, 1, 2]));
        Assert.Same(table, cache.For(shared));
        Assert.Equal(Ops.Rope(x, shared, inv, 1.25f).ToArray(), Ops.Rope(x, table).ToArray());
        var perToken = cache.For([0, 1, 2, 5, 6, 7]);
        Assert.Equal(Ops.Rope(x, [0, 1, 2, 5, 6, 7], inv, 1.25f).ToArray(), Ops.Rope(x, perToken).ToArray());
        Assert.Throws<ArgumentException>(() => Ops.Rope(x, cache.For([1, 2])));
        Assert.Throws<ArgumentException>(() => Ops.Rope(x, RopeTable.Build(shared, new float[4])));
    }

    // ---- dropout -----------------------------------------------------------------------------------------

    [Fact]
    public void DropoutKeepsExpectedFractionScaledAndIsDeterministic()
    {
        var x = Tensor.Full([400, 500], 2f);
        var y = Ops.Dropout(x, 0.3f, new Random(5));
        int kept = 0;
        foreach (var v in y.Span)
        {
            if (v != 0f) { kept++; AssertClose(2.0 / 0.7, v, 1e-6, "kept value"); }
        }
        AssertClose(0.7, kept / (double)x.Length, 0.005, "kept fraction");
        Assert.Equal(y.ToArray(), Ops.Dropout(x, 0.3f, new Random(5)).ToArray());
        Assert.Same(x, Ops.Dropout(x, 0f, new Random(5)));
        Assert.Throws<ArgumentOutOfRangeException>(() => Ops.Dropout(x, 1f, new Random(5)));
        Assert.Throws<ArgumentOutOfRangeException>(() => Ops.Dropout(x, -0.1f, new Random(5)));
        Assert.Throws<ArgumentOutOfRangeException>(() => Ops.Dropout(x, float.NaN, new Random(5)));
    }
}
