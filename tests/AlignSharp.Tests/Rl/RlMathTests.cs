using AlignSharp.Engine;
using AlignSharp.Training.Rl;

namespace AlignSharp.Tests.Rl;

/// <summary>GAE, whitening, group advantages, the clipped losses, the KL estimators and the KL controller, against
/// values computed by hand from their definitions.</summary>
public sealed class RlMathTests
{
    private static void Near(double expected, double actual, double tol = 1e-5) =>
        Assert.True(Math.Abs(expected - actual) <= tol, $"expected {expected}, got {actual}");

    private static void Near(double[] expected, ReadOnlySpan<float> actual, double tol = 1e-5)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++) Near(expected[i], actual[i], tol);
    }

    [Fact]
    public void GaeMatchesAHandComputedExample()
    {
        // γ 0.9, λ 0.8, V = 0 after the last token.
        // t2: δ = 2 − 1.5 = 0.5, A = 0.5;  t1: δ = 0 + 0.9·1.5 − 1 = 0.35, A = 0.35 + 0.72·0.5 = 0.71;
        // t0: δ = 1 + 0.9·1 − 0.5 = 1.4, A = 1.4 + 0.72·0.71 = 1.9112. Returns = A + V.
        var (adv, ret) = Advantages.Gae([1f, 0f, 2f], [0.5f, 1f, 1.5f], 0.9f, 0.8f);
        Near([1.9112, 0.71, 0.5], adv);
        Near([2.4112, 1.71, 2.0], ret);
        // γ = λ = 1 with zero values: the advantage is the reward-to-go.
        var (a1, _) = Advantages.Gae([1f, 2f, 3f], [0f, 0f, 0f], 1f, 1f);
        Near([6, 5, 3], a1);
    }

    [Fact]
    public void WhiteningUsesEveryTokenOfEverySequence()
    {
        // [1, 2 | 3, 4]: mean 2.5, unbiased variance 5/3.
        var seqs = new[] { new[] { 1f, 2f }, new[] { 3f, 4f } };
        Advantages.Whiten(seqs);
        double s = Math.Sqrt(5.0 / 3 + 1e-8);
        Near([-1.5 / s, -0.5 / s], seqs[0]);
        Near([0.5 / s, 1.5 / s], seqs[1]);
        var unshifted = new[] { new[] { 1f, 2f, 3f, 4f } };
        Advantages.Whiten(unshifted, shiftMean: false);
        Near([-1.5 / s + 2.5, -0.5 / s + 2.5, 0.5 / s + 2.5, 1.5 / s + 2.5], unshifted[0]);
    }

    [Fact]
    public void GroupAndLeaveOneOutAdvantages()
    {
        // Group [1, 2, 3]: mean 2, unbiased std 1 → (r − 2)/(1 + 1e-4); group [5, 5, 5]: zeros.
        var g = Advantages.GroupRelative([1f, 2f, 3f, 5f, 5f, 5f], 3);
        Near([-1 / 1.0001, 0, 1 / 1.0001, 0, 0, 0], g);
        // GRPO's logged statistics: means 2 and 5, unbiased stds 1 and 0 (reward_std 0.5, frac_reward_zero_std 0.5).
        var (means, stds) = Advantages.GroupStats([1f, 2f, 3f, 5f, 5f, 5f], 3);
        Near([2, 5], means.Select(x => (float)x).ToArray());
        Near([1, 0], stds.Select(x => (float)x).ToArray());
        // RLOO k = 3: baseline of r_i is the mean of the other two.
        var l = Advantages.LeaveOneOut([1f, 2f, 6f], 3);
        Near([1 - 4, 2 - 3.5, 6 - 1.5], l);
    }

    /// <summary>TRL's scale_rewards: groups [1, 2, 3] and [5, 5, 7]; the batch's unbiased std is that of all six.</summary>
    [Fact]
    public void RewardScalingByGroupBatchOrNone()
    {
        float[] r = [1f, 2f, 3f, 5f, 5f, 7f];
        double m2 = 17.0 / 3, s2 = Math.Sqrt((2 * (5 - m2) * (5 - m2) + (7 - m2) * (7 - m2)) / 2);
        Near([-1 / 1.0001, 0, 1 / 1.0001, (5 - m2) / (s2 + 1e-4), (5 - m2) / (s2 + 1e-4), (7 - m2) / (s2 + 1e-4)],
            Advantages.GroupRelative(r, 3, RewardScaling.Group, null));
        double mean = r.Average(), std = Math.Sqrt(r.Sum(x => (x - mean) * (x - mean)) / 5);
        Near([-1 / (std + 1e-4), 0, 1 / (std + 1e-4), (5 - m2) / (std + 1e-4), (5 - m2) / (std + 1e-4), (7 - m2) / (std + 1e-4)],
            Advantages.GroupRelative(r, 3, RewardScaling.Batch, null));
        Near([-1, 0, 1, 5 - m2, 5 - m2, 7 - m2], Advantages.GroupRelative(r, 3, RewardScaling.None, null));
    }

    /// <summary>GRPO's loss types as token weights, by hand: a micro-batch of completions of 2, 4 and 3 tokens (the second
    /// truncated, no EOS), share ½, --max-new-tokens 4.</summary>
    [Theory]
    [InlineData("grpo", false)]
    [InlineData("grpo", true)]
    [InlineData("bnpo", false)]
    [InlineData("bnpo", true)]
    [InlineData("dr_grpo", false)]
    [InlineData("dr_grpo", true)]
    [InlineData("dapo", false)]
    [InlineData("dapo", true)]
    public void GrpoLossTypesWeighTokensAsTrlAggregates(string lossType, bool maskTruncated)
    {
        var grpo = new Grpo(new GrpoOptions { LossType = lossType, MaskTruncatedCompletions = maskTruncated, MaxNewTokens = 4, NumGenerations = 3 });
        int[] lengths = [2, 4, 3];
        var batch = new RolloutBatch
        {
            Prompts = [], PromptTexts = [], PromptIds = [], Completions = [], SamplingLogProbs = [],
            CompletionIds = lengths.Select(n => new int[n]).ToArray(),
            EndsWithEos = [true, false, true],
        };
        int[] rows = [0, 1, 2];
        float[] expected = (lossType, maskTruncated) switch
        {
            ("grpo", false) => [.. Fill(2, 0.5 / (2 * 3)), .. Fill(4, 0.5 / (4 * 3)), .. Fill(3, 0.5 / (3 * 3))],
            ("grpo", true) => [.. Fill(2, 0.5 / (2 * 3)), .. Fill(4, 0), .. Fill(3, 0.5 / (3 * 3))],
            ("bnpo", false) or ("dapo", false) => Fill(9, 0.5 / 9),
            ("bnpo", true) or ("dapo", true) => [.. Fill(2, 0.5 / 5), .. Fill(4, 0), .. Fill(3, 0.5 / 5)],
            ("dr_grpo", false) => Fill(9, 0.5 / (3 * 4)),
            _ => [.. Fill(2, 0.5 / (3 * 4)), .. Fill(4, 0), .. Fill(3, 0.5 / (3 * 4))],
        };
        Near(expected.Select(x => (double)x).ToArray(), grpo.TokenWeights(batch, rows, 0.5f));
        // What the optimizer step normalises by: completions, micro-batches, or counted tokens.
        double weight = lossType switch { "bnpo" => 1, "dapo" => maskTruncated ? 5 : 9, _ => 3 };
        Assert.Equal(weight, grpo.Weight(batch, rows));
        static float[] Fill(int n, double v) => Enumerable.Repeat((float)v, n).ToArray();
    }

    [Fact]
    public void ClippedSurrogateTakesThePessimisticBranch()
    {
        // ε = 0.2; log ρ = [0.1, 0.5, −0.5, 0.5]; A = [1, 2, −1, −1].
        // t0 in range: −A·ρ = −e^0.1.   t1: ρ > 1+ε with A > 0 → clipped −2·1.2 = −2.4 (no gradient).
        // t2: ρ < 1−ε with A < 0 → clipped 1·0.8 = 0.8 (no gradient).  t3: ρ > 1+ε with A < 0 → unclipped e^0.5.
        var logp = Tensor.Parameter([4], 0f);
        float[] newLp = [-1f, -2f, -3f, -4f], delta = [0.1f, 0.5f, -0.5f, 0.5f];
        newLp.CopyTo(logp.Span);
        var old = newLp.Select((x, i) => x - delta[i]).ToArray();
        var w = RlLosses.TokenMeanWeights([4]);
        var (loss, m) = RlLosses.ClippedSurrogate(logp, old, [1f, 2f, -1f, -1f], 0.2f, w);
        double e01 = Math.Exp(0.1), e05 = Math.Exp(0.5);
        Near((-e01 - 2.4 + 0.8 + e05) / 4, loss.Item());
        Near(0.5, m.ClipFraction);
        Near(0.5 * (0.01 + 0.25 * 3) / 4, m.ApproxKl);
        Near((e01 + e05 + Math.Exp(-0.5) + e05) / 4, m.RatioMean);
        loss.Backward();
        Near([-e01 / 4, 0, 0, e05 / 4], logp.Grad!.Span);
    }

    /// <summary>DAPO's clip-higher, GSPO's sequence ratio and INTELLECT-2's δ, by hand. Completions A (log ρ 0.1, 0.3; A = +1)
    /// and B (log ρ −0.5; A = −1), each completion's token mean: weights ¼, ¼ and ½.</summary>
    [Fact]
    public void SurrogateVariantsFollowTheirDefinitions()
    {
        float[] lp = [-1f, -2f, -3f], delta = [0.1f, 0.3f, -0.5f], adv = [1f, 1f, -1f];
        var old = lp.Select((x, i) => x - delta[i]).ToArray();
        var w = RlLosses.SequenceMeanWeights([2, 1]);
        Tensor Logp() { var t = Tensor.Parameter([3], 0f); lp.CopyTo(t.Span); return t; }
        double e01 = Math.Exp(0.1), e03 = Math.Exp(0.3), e02 = Math.Exp(0.2);

        // Token ratios e^0.1, e^0.3, e^−0.5. Symmetric ε = 0.2: e^0.3 > 1.2 with A > 0 → −1.2; B below 0.8 with A < 0 → 0.8.
        var sym = Logp();
        var (loss, m) = RlLosses.ClippedSurrogate(sym, old, adv, new SurrogateClip(0.2f, 0.2f), w);
        Near(0.25 * -e01 + 0.25 * -1.2 + 0.5 * 0.8, loss.Item());
        Near(0.75, m.ClipFraction);
        Near(0.5, m.LowClipFraction);    // B: below 0.8 with A < 0
        Near(0.25, m.HighClipFraction);  // A's second token: above 1.2 with A > 0
        // Clip-higher ε_high = 0.28: e^0.3 = 1.35 is still above 1.28 → −1.28.
        var (high, _) = RlLosses.ClippedSurrogate(Logp(), old, adv, new SurrogateClip(0.2f, 0.28f), w);
        Near(0.25 * -e01 + 0.25 * -1.28 + 0.5 * 0.8, high.Item());
        // ε_high = 0.4: nothing of A clipped any more.
        var upper = Logp();
        var (open, om) = RlLosses.ClippedSurrogate(upper, old, adv, new SurrogateClip(0.2f, 0.4f), w);
        Near(0, om.HighClipFraction);
        Near(0.25 * -e01 + 0.25 * -e03 + 0.5 * 0.8, open.Item());
        open.Backward();
        Near([-0.25 * e01, -0.25 * e03, 0], upper.Grad!.Span);

        // Sequence level: A's ratio is e^((0.1 + 0.3)/2) = e^0.2 on both tokens, inside [0.8, 1.28]; B's is its own.
        // d/d log π_t of −(¼ + ¼)·e^{mean} = −½·e^0.2·½ for each of A's two tokens; B is clipped (no gradient).
        var seq = Logp();
        var (gspo, gm) = RlLosses.ClippedSurrogate(seq, old, adv, new SurrogateClip(0.2f, 0.28f), w, [2, 1]);
        Near(0.5 * -e02 + 0.5 * 0.8, gspo.Item());
        Near(0.5, gm.ClipFraction);
        gspo.Backward();
        Near([-0.25 * e02, -0.25 * e02, 0], seq.Grad!.Span);

        // δ: with A < 0 and ρ = 3 the unclipped term 3 wins (gradient w·3); capped at δ = 2 it is 2, constant in log π.
        float[] big = [(float)Math.Log(3)];
        Tensor One() { var t = Tensor.Parameter([1], 0f); t.Span[0] = -1f; return t; }
        var plain = One();
        var (l3, _) = RlLosses.ClippedSurrogate(plain, [-1f - big[0]], [-1f], new SurrogateClip(0.2f, 0.2f), [1f]);
        Near(3, l3.Item());
        l3.Backward();
        Near([3], plain.Grad!.Span);
        var capped = One();
        var (l2, _) = RlLosses.ClippedSurrogate(capped, [-1f - big[0]], [-1f], new SurrogateClip(0.2f, 0.2f, Delta: 2f), [1f]);
        Near(2, l2.Item());
        l2.Backward();
        Near([0], capped.Grad!.Span);
    }

    [Fact]
    public void SequenceMeansSpreadEachMeanAndItsGradientOverTheSequence()
    {
        var x = Tensor.Parameter([5], 0f);
        new[] { 1f, 3f, 10f, 2f, 4f }.CopyTo(x.Span);
        var y = RlLosses.SequenceMeans(x, [2, 0, 1, 2]);
        Near([2, 2, 10, 3, 3], y.Span);
        Ops.Sum(Ops.Mul(y, Tensor.FromArray([1f, 2f, 5f, 1f, 1f], 5))).Backward();
        Near([1.5, 1.5, 5, 1, 1], x.Grad!.Span);
    }

    [Fact]
    public void ClippedValueLossTakesTheLargerError()
    {
        // ε_v = 0.2, V_old = 1. t0: V 1.5 → clip 1.2, R 2: max(0.25, 0.64) = 0.64 clipped (no gradient);
        // t1: V 1.5, R 0: max(2.25, 1.44) = 2.25 unclipped; t2: V 0.7 → clip 0.8, R 1: max(0.09, 0.04) = 0.09.
        var v = Tensor.Parameter([3], 0f);
        new[] { 1.5f, 1.5f, 0.7f }.CopyTo(v.Span);
        var (loss, clipFrac) = RlLosses.ClippedValue(v, [1f, 1f, 1f], [2f, 0f, 1f], 0.2f, RlLosses.TokenMeanWeights([3]));
        Near(0.5 * (0.64 + 2.25 + 0.09) / 3, loss.Item());
        Near(1.0 / 3, clipFrac);
        loss.Backward();
        Near([0, 0.5 * 2 * 1.5 / 3, 0.5 * 2 * -0.3 / 3], v.Grad!.Span);
    }

    [Fact]
    public void SequenceMeanWeightsAverageEachCompletionThenTheBatch()
    {
        var w = RlLosses.SequenceMeanWeights([1, 3], share: 0.5f);
        Near([0.25, 0.5 / 6, 0.5 / 6, 0.5 / 6], w);
        Near(0.5, w.Sum());
    }

    [Fact]
    public void SampledEstimatorsFollowTheirDefinitions()
    {
        float lp = -1f, rp = -1.5f;
        double d = lp - rp;
        Near(d, KlEstimators.Sampled(KlEstimator.K1, lp, rp));
        Near(0.5 * d * d, KlEstimators.Sampled(KlEstimator.K2, lp, rp));
        Near(Math.Exp(-d) - 1 + d, KlEstimators.Sampled(KlEstimator.K3, lp, rp));
        Assert.Equal(0f, KlEstimators.Sampled(KlEstimator.K3, -2f, -2f));
        Assert.True(KlEstimators.Sampled(KlEstimator.K3, -3f, -1f) > 0);   // k3 ≥ 0 even where k1 < 0
    }

    [Fact]
    public void FullKlIsTheExactKlAndTheExpectationOfK1AndK3()
    {
        float[] pl = [1f, 2f, 3f, -1f], ql = [3f, 2f, 1f, 0f];
        const float T = 0.7f;
        double[] p = Softmax(pl, T), q = Softmax(ql, T);
        double exact = 0, k1 = 0, k3 = 0;
        for (int v = 0; v < p.Length; v++)
        {
            exact += p[v] * Math.Log(p[v] / q[v]);
            k1 += p[v] * KlEstimators.Sampled(KlEstimator.K1, (float)Math.Log(p[v]), (float)Math.Log(q[v]));
            k3 += p[v] * KlEstimators.Sampled(KlEstimator.K3, (float)Math.Log(p[v]), (float)Math.Log(q[v]));
        }
        Near(exact, KlEstimators.Full(pl, ql, T));
        Near(exact, k1);   // E_π[k1] = KL
        Near(exact, k3);   // E_π[k3] = KL
        Near(0, KlEstimators.Full(pl, pl));
    }

    private static double[] Softmax(float[] x, float t)
    {
        var e = x.Select(v => Math.Exp(v / t)).ToArray();
        return e.Select(v => v / e.Sum()).ToArray();
    }

    [Fact]
    public void InLossEstimatorsHaveTheRightGradients()
    {
        // d/dlogp: k1 → 1, k2 → Δ, k3 → 1 − e^(−Δ), with Δ = logp − ref = 0.5.
        foreach (var (e, grad) in new[] { (KlEstimator.K1, 1.0), (KlEstimator.K2, 0.5), (KlEstimator.K3, 1 - Math.Exp(-0.5)) })
        {
            var lp = Tensor.Parameter([1], -1f);
            var (loss, mean) = RlLosses.KlPenalty(lp, [-1.5f], e, beta: 2f, [1f]);
            Near(2 * KlEstimators.Sampled(e, -1f, -1.5f), loss.Item());
            Near(KlEstimators.Sampled(e, -1f, -1.5f), mean);
            loss.Backward();
            Near(2 * grad, lp.Grad!.Span[0]);
        }
    }

    [Fact]
    public void AdaptiveControllerFollowsZiegler()
    {
        // β ← β·(1 + clip(KL/target − 1, ±0.2)·n/horizon)
        var c = new AdaptiveKlController(0.2, target: 6, horizon: 10000);
        c.Update(9, 256);                      // error clipped to +0.2
        Near(0.2 * (1 + 0.2 * 256 / 10000.0), c.Value, 1e-12);
        double before = c.Value;
        c.Update(6.6, 100);                    // error 0.1
        Near(before * (1 + 0.1 * 100 / 10000.0), c.Value, 1e-12);
        before = c.Value;
        c.Update(0, 1000);                     // error clipped to −0.2
        Near(before * (1 - 0.2 * 1000 / 10000.0), c.Value, 1e-12);
        var f = new FixedKlController(0.05);
        f.Update(100, 100);
        Assert.Equal(0.05, f.Value);
    }

    [Fact]
    public void PerTokenRewardsPutTheScoreOnTheLastToken()
    {
        var r = Ppo.PerTokenRewards([[0.1f, 0.2f, 0.3f], [0.5f]], [2f, -1f], beta: 0.5);
        Near([-0.05, -0.1, -0.15 + 2], r[0]);
        Near([-0.25 - 1], r[1]);
    }
}

public sealed class FullKlPenaltyTests
{
    [Fact]
    public void TheFullKlInTheLossIsTheExactKlWithItsGradient()
    {
        // Two rows of V = 3. KL_t = Σ p (log p − log q); dKL/dlogit_j = p_j·(log p_j − log q_j − KL).
        float[] pl = [1f, 2f, 0.5f, -1f, 0f, 3f], ql = [0f, 1f, 2f, 1f, 1f, 1f];
        var logits = Tensor.Parameter([2, 3], 0f);
        pl.CopyTo(logits.Span);
        var refLogProbs = Ops.LogSoftmax(Tensor.FromArray(ql, 2, 3));
        var (loss, meanKl) = RlLosses.FullKlPenalty(logits, refLogProbs, beta: 2f, [0.25f, 0.75f]);
        double kl0 = KlEstimators.Full(pl.AsSpan(0, 3), ql.AsSpan(0, 3)), kl1 = KlEstimators.Full(pl.AsSpan(3, 3), ql.AsSpan(3, 3));
        Assert.Equal(2 * (0.25 * kl0 + 0.75 * kl1), loss.Item(), 5);
        Assert.Equal(0.25 * kl0 + 0.75 * kl1, meanKl, 5);
        loss.Backward();
        for (int r = 0; r < 2; r++)
        {
            double kl = r == 0 ? kl0 : kl1, w = r == 0 ? 0.25 : 0.75;
            var p = Softmax(pl.AsSpan(r * 3, 3)); var q = Softmax(ql.AsSpan(r * 3, 3));
            for (int j = 0; j < 3; j++)
                Assert.Equal(2 * w * p[j] * (Math.Log(p[j]) - Math.Log(q[j]) - kl), logits.Grad!.Span[r * 3 + j], 5);
        }
    }

    private static double[] Softmax(ReadOnlySpan<float> x)
    {
        var e = x.ToArray().Select(v => Math.Exp(v)).ToArray();
        return e.Select(v => v / e.Sum()).ToArray();
    }
}
