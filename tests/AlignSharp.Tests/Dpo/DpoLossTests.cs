using AlignSharp.Engine;
using AlignSharp.Training.Dpo;

namespace AlignSharp.Tests.Dpo;

/// <summary>
/// Each loss against values and gradients worked out by hand (formulas in the comments; numbers evaluated in
/// double precision), plus the Plackett–Luce/DPO equivalence at K = 2.
/// </summary>
public sealed class DpoLossTests
{
    private static Tensor Leaf(params float[] values)
    {
        var t = Tensor.Parameter([values.Length], 0f);
        values.CopyTo(t.Span);
        return t;
    }

    private static Tensor Const(params float[] values) => Tensor.FromArray(values, values.Length);

    /// <summary>Backward from Σ losses; returns (loss values, dL/dchosen, dL/drejected).</summary>
    private static (float[] Loss, float[] DChosen, float[] DRejected) Run(Func<PairLogProbs, PairLoss> loss, PairLogProbs lp)
    {
        var r = loss(lp);
        Ops.Sum(r.Losses).Backward();
        return (r.Losses.ToArray(), lp.Chosen.Grad!.ToArray(), lp.Rejected.Grad!.ToArray());
    }

    [Fact]
    public void SigmoidIsMinusLogSigmoidOfBetaDelta()
    {
        // c = −3, r = −5, ref c = −4, ref r = −4.5, β = 0.5: Δ = (−3 + 4) − (−5 + 4.5) = 1.5, βΔ = 0.75.
        // loss = log(1 + e^−0.75) = 0.386871006; dL/dc = −β·σ(−0.75) = −0.160410650 = −dL/dr.
        var lp = new PairLogProbs(Leaf(-3f), Leaf(-5f), Const(-4f), Const(-4.5f));
        var (loss, dc, dr) = Run(p => DpoLosses.Sigmoid(p, 0.5f), lp);
        Assert.Equal(0.386871006, loss[0], 6);
        Assert.Equal(-0.160410650, dc[0], 6);
        Assert.Equal(0.160410650, dr[0], 6);
        var rewards = DpoLosses.Sigmoid(lp, 0.5f);
        Assert.Equal(0.5f, rewards.ChosenRewards[0], 6);     // β·(−3 + 4)
        Assert.Equal(-0.25f, rewards.RejectedRewards[0], 6); // β·(−5 + 4.5)
    }

    [Fact]
    public void LabelSmoothingMixesInTheFlippedLabel()
    {
        // ε = 0.2, z = 0.75: loss = 0.8·log(1 + e^−z) + 0.2·log(1 + e^z) = 0.536871006;
        // dL/dz = −0.8·σ(−z) + 0.2·σ(z) = −0.120821301, dL/dc = β·dL/dz = −0.060410650.
        var lp = new PairLogProbs(Leaf(-3f), Leaf(-5f), Const(-4f), Const(-4.5f));
        var (loss, dc, dr) = Run(p => DpoLosses.Sigmoid(p, 0.5f, 0.2f), lp);
        Assert.Equal(0.536871006, loss[0], 6);
        Assert.Equal(-0.060410650, dc[0], 6);
        Assert.Equal(0.060410650, dr[0], 6);
    }

    [Fact]
    public void IpoIsTheSquaredDistanceFromOneOverTwoBeta()
    {
        // Length-averaged: c = −1, r = −1.5, ref c = −1.2, ref r = −1.4, β = 0.5: Δ = 0.2 + 0.1 = 0.3, 1/(2β) = 1.
        // loss = (0.3 − 1)² = 0.49; dL/dc = 2·(Δ − 1) = −1.4 = −dL/dr.
        var lp = new PairLogProbs(Leaf(-1f), Leaf(-1.5f), Const(-1.2f), Const(-1.4f));
        var (loss, dc, dr) = Run(p => DpoLosses.Ipo(p, 0.5f), lp);
        Assert.Equal(0.49, loss[0], 5);
        Assert.Equal(-1.4, dc[0], 5);
        Assert.Equal(1.4, dr[0], 5);
    }

    [Fact]
    public void HingeIsZeroPastTheMargin()
    {
        // Pair 1: βΔ = 0.75 → loss 0.25, dL/dc = −β = −0.5. Pair 2: c = −1, r = −6, refs −4: Δ = 5, βΔ = 2.5 → 0, no gradient.
        var lp = new PairLogProbs(Leaf(-3f, -1f), Leaf(-5f, -6f), Const(-4f, -4f), Const(-4.5f, -4f));
        var (loss, dc, dr) = Run(p => DpoLosses.Hinge(p, 0.5f), lp);
        Assert.Equal(0.25, loss[0], 6);
        Assert.Equal(0.0, loss[1], 6);
        Assert.Equal(-0.5, dc[0], 6);
        Assert.Equal(0.5, dr[0], 6);
        Assert.Equal(0.0, dc[1], 6);
        Assert.Equal(0.0, dr[1], 6);
    }

    [Fact]
    public void SimpoUsesNoReferenceAndSubtractsGamma()
    {
        // Per-token means c = −1.2, r = −2.0, β = 2, γ = 0.5: z = 2·0.8 − 0.5 = 1.1.
        // loss = log(1 + e^−1.1) = 0.287335325; dL/dc = −β·σ(−1.1) = −0.499479789 = −dL/dr. A reference is ignored.
        var lp = new PairLogProbs(Leaf(-1.2f), Leaf(-2.0f), Const(-7f), Const(3f));
        var (loss, dc, dr) = Run(p => DpoLosses.Simpo(p, 2f, 0.5f), lp);
        Assert.Equal(0.287335325, loss[0], 6);
        Assert.Equal(-0.499479789, dc[0], 6);
        Assert.Equal(0.499479789, dr[0], 6);
        var r = DpoLosses.Simpo(lp, 2f, 0.5f);
        Assert.Equal(-2.4f, r.ChosenRewards[0], 5);
        Assert.Equal(-4.0f, r.RejectedRewards[0], 5);
    }

    [Fact]
    public void OrpoIsNllPlusLambdaTimesTheOddsRatioTerm()
    {
        // Per-token means c = −0.5, r = −1.5, λ = 0.1. log odds(y) = y − log(1 − e^y):
        // c → 0.432752, r → −1.247435; their difference lo = 1.680269671.
        // loss = 0.5 + 0.1·log(1 + e^−lo) = 0.517085922;
        // dL/dc = −1 − λ·σ(−lo)/(1 − e^c) = −1.039916646, dL/dr = λ·σ(−lo)/(1 − e^r) = 0.020216998.
        var lp = new PairLogProbs(Leaf(-0.5f), Leaf(-1.5f));
        var (loss, dc, dr) = Run(p => DpoLosses.Orpo(p, 0.1f), lp);
        Assert.Equal(0.517085922, loss[0], 5);
        Assert.Equal(-1.039916646, dc[0], 5);
        Assert.Equal(0.020216998, dr[0], 5);
        var r = DpoLosses.Orpo(lp, 0.1f);
        Assert.Equal(1.680269671, r.Extra!["log_odds_chosen"][0], 4);
        Assert.Equal(0.5, r.Extra["nll_loss"][0], 6);
    }

    /// <summary>
    /// TRL's further pairwise losses, each against its closed form and its gradient worked out by hand, at the pair of
    /// <see cref="SigmoidIsMinusLogSigmoidOfBetaDelta"/>: log-ratios a_c = 1 and a_r = −0.5, Δ = 1.5, β = 0.5 (z = β·Δ =
    /// 0.75, u_c = β·a_c = 0.5, u_r = −0.25); σ′ = σ(x)·σ(−x), d log σ(x)/dx = σ(−x). Values evaluated in double precision.
    /// </summary>
    [Theory]
    // robust, ε = 0.2: [−0.8·log σ(z) + 0.2·log σ(−z)] / 0.6; dL/dz = [−0.8·σ(−z) − 0.2·σ(z)] / 0.6; dL/dc = β·dL/dz.
    [InlineData("robust", 0.13687100611490002, -0.3270773170789702, 0.3270773170789702)]
    // exo_pair, ε = 0.1: σ(z)·(log σ(z) − log 0.9) + σ(−z)·(log σ(−z) − log 0.1);
    // dL/dz = σ′(z)·[log σ(z) − log 0.9 + 1 − log σ(−z) + log 0.1 − 1].
    [InlineData("exo_pair", 0.1827899810292743, -0.1576714951253097, 0.1576714951253097)]
    // nca_pair: −log σ(u_c) − ½ log σ(−u_c) − ½ log σ(−u_r); dL/dc = β·(−σ(−u_c) + ½σ(u_c)), dL/dr = β·½σ(u_r).
    [InlineData("nca_pair", 1.2490851862095818, -0.033155501598609055, 0.10945587477855048)]
    // apo_zero: 1 − σ(u_c) + σ(u_r); dL/dc = −β·σ′(u_c), dL/dr = β·σ′(u_r).
    [InlineData("apo_zero", 0.8153641679123473, -0.11750185610079725, 0.12306704136879917)]
    // apo_down: σ(u_c) + 1 − σ(z); dL/dc = β·σ′(u_c) − β·σ′(z), dL/dr = β·σ′(z).
    [InlineData("apo_down", 0.9432806320264615, 0.008554359219890229, 0.10894749688090702)]
    // discopop, τ = 0.5: m = σ(z/τ); (1 − m)·(−log σ(z)) + m·e^(−z);
    // dL/dz = −m′·(−log σ(z)) − (1 − m)·σ(−z) + m′·e^(−z) − m·e^(−z), m′ = σ′(z/τ)/τ.
    [InlineData("discopop", 0.45676998286463494, -0.20960905794280016, 0.20960905794280016)]
    public void TrlPairwiseLossesByHand(string name, double loss, double dChosen, double dRejected)
    {
        var lp = new PairLogProbs(Leaf(-3f), Leaf(-5f), Const(-4f), Const(-4.5f));
        Func<PairLogProbs, PairLoss> f = name switch
        {
            "robust" => p => DpoLosses.Robust(p, 0.5f, 0.2f),
            "exo_pair" => p => DpoLosses.ExoPair(p, 0.5f, 0.1f),
            "nca_pair" => p => DpoLosses.NcaPair(p, 0.5f),
            "apo_zero" => p => DpoLosses.ApoZero(p, 0.5f),
            "apo_down" => p => DpoLosses.ApoDown(p, 0.5f),
            _ => p => DpoLosses.DiscoPop(p, 0.5f, 0.5f),
        };
        var (l, dc, dr) = Run(f, lp);
        Assert.Equal(loss, l[0], 5);
        Assert.Equal(dChosen, dc[0], 5);
        Assert.Equal(dRejected, dr[0], 5);
        var rewards = f(new PairLogProbs(Leaf(-3f), Leaf(-5f), Const(-4f), Const(-4.5f)));
        Assert.Equal(0.5f, rewards.ChosenRewards[0], 6);
        Assert.Equal(-0.25f, rewards.RejectedRewards[0], 6);
    }

    [Fact]
    public void ChosenNllIsATokenMeanOverTheChosenAnswers()
    {
        // Rows 0 and 2 chosen: −(−3 − 2) / (2 + 1) = 5/3; d/d sum = −1/3 for each chosen row, 0 for the other.
        var sums = Leaf(-3f, -5f, -2f);
        var nll = DpoLosses.ChosenNll(sums, [2, 4, 1], [0, 2]);
        Assert.Equal(5.0 / 3, nll.Item(), 6);
        nll.Backward();
        Assert.Equal([-1f / 3, 0f, -1f / 3], sums.Grad!.ToArray());
    }

    /// <summary>
    /// AOT sorts over the batch. Three pairs, β = 0.5: c = (−3, −1, −2), r = (−5, −2.3, −1), ref c = (−4, −1.5, −2.2),
    /// ref r = (−4.5, −2, −1.5). aot: policy margins (2, 1.3, −1) sorted (−1, 1.3, 2), reference margins (0.5, 0.5, −0.7)
    /// sorted (−0.7, 0.5, 0.5): d = (−0.3, 0.8, 1.5), loss_k = −log σ(β·d_k); the k-th gradient, −β·σ(−β·d_k), goes to the
    /// pair with the k-th margin (pairs 2, 1, 0). aot_pair: chosen log-ratios (1, 0.5, 0.2) sorted (0.2, 0.5, 1), rejected
    /// (−0.5, −0.3, 0.5) sorted (−0.5, −0.3, 0.5): d = (0.7, 0.8, 0.5); chosen gradients to pairs 2, 1, 0, rejected to 0, 1, 2.
    /// </summary>
    [Fact]
    public void AotComparesSortedMarginsOverTheBatch()
    {
        PairLogProbs Pairs() => new(Leaf(-3f, -1f, -2f), Leaf(-5f, -2.3f, -1f), Const(-4f, -1.5f, -2.2f), Const(-4.5f, -2f, -1.5f));
        var (l, dc, dr) = Run(p => DpoLosses.Aot(p, 0.5f, 0f), Pairs());
        Assert.Equal([0.770957047789532, 0.5130152523999526, 0.38687100611489994], l.Select(x => (double)x), new Tol(1e-5));
        Assert.Equal([-0.1604106504123035, -0.200656169943774, -0.2687149226718748], dc.Select(x => (double)x), new Tol(1e-5));
        Assert.Equal([0.1604106504123035, 0.200656169943774, 0.2687149226718748], dr.Select(x => (double)x), new Tol(1e-5));
        var (l2, dc2, dr2) = Run(p => DpoLosses.AotPair(p, 0.5f, 0f), Pairs());
        Assert.Equal([0.533382155418777, 0.5130152523999526, 0.5759394198788436], l2.Select(x => (double)x), new Tol(1e-5));
        Assert.Equal([-0.21891174955710097, -0.200656169943774, -0.206691210541335], dc2.Select(x => (double)x), new Tol(1e-5));
        Assert.Equal([0.206691210541335, 0.200656169943774, 0.21891174955710097], dr2.Select(x => (double)x), new Tol(1e-5));
    }

    private sealed class Tol(double tolerance) : IEqualityComparer<double>
    {
        public bool Equals(double a, double b) => Math.Abs(a - b) <= tolerance;
        public int GetHashCode(double x) => 0;
    }

    [Fact]
    public void SppoHardPullsTheLogRatiosToPlusAndMinusOneOverTwoBeta()
    {
        // β = 0.4, 1/(2β) = 1.25: (1 − 1.25)² + (−0.5 + 1.25)² = 0.625; dL/dc = 2·(−0.25) = −0.5, dL/dr = 2·0.75 = 1.5.
        var (l, dc, dr) = Run(p => DpoLosses.SppoHard(p, 0.4f), new PairLogProbs(Leaf(-3f), Leaf(-5f), Const(-4f), Const(-4.5f)));
        Assert.Equal(0.625, l[0], 5);
        Assert.Equal(-0.5, dc[0], 5);
        Assert.Equal(1.5, dr[0], 5);
    }

    [Fact]
    public void BcoPairClassifiesEachRewardAgainstTheRunningMean()
    {
        // β = 0.4: u_c = 0.4·(−3 + 4) = 0.4, u_r = 0.4·(−5 + 4.5) = −0.2; the batch's mean reward (0.4 − 0.2)/2 = 0.1 = δ.
        // loss = −log σ(0.4 − 0.1) − log σ(−(−0.2 − 0.1)) = 2·log(1 + e^−0.3) = 1.108710488;
        // dL/dc = −β·σ(−0.3) = −0.170222993, dL/dr = β·σ(−0.3) = 0.170222993.
        var lp = new PairLogProbs(Leaf(-3f), Leaf(-5f), Const(-4f), Const(-4.5f));
        double delta = DpoLosses.MeanReward(lp, 0.4f);
        Assert.Equal(0.1, delta, 6);
        var (l, dc, dr) = Run(p => DpoLosses.BcoPair(p, 0.4f, (float)delta), lp);
        Assert.Equal(1.108710488, l[0], 5);
        Assert.Equal(-0.170222993, dc[0], 5);
        Assert.Equal(0.170222993, dr[0], 5);
        // TRL's RunningMoments mean: from 0 with count 1e-24, each batch mean weighted by its count.
        var running = new DpoLosses.RunningMean();
        running.Add(0.1, 1);
        Assert.Equal(0.1, running.Mean, 12);
        running.Add(0.5, 1);
        Assert.Equal(0.3, running.Mean, 12);
        running.Add(-0.3, 2);
        Assert.Equal(0.0, running.Mean, 12);
        Assert.Equal(4.0, running.Count, 12);
    }

    [Fact]
    public void RobustWithoutNoiseIsDpoAndDiscoPopAtALowTemperatureIsTheExponentialLoss()
    {
        var lp = new PairLogProbs(Leaf(-3f), Leaf(-5f), Const(-4f), Const(-4.5f));
        Assert.Equal(DpoLosses.Sigmoid(lp, 0.5f).Losses.ToArray()[0], DpoLosses.Robust(lp, 0.5f, 0f).Losses.ToArray()[0], 6);
        // z = 0.75, τ = 0.05: m = σ(15) ≈ 1 − 3e-7, so the loss is e^−0.75 within 1e-6.
        Assert.Equal(Math.Exp(-0.75), DpoLosses.DiscoPop(lp, 0.5f, 0.05f).Losses.ToArray()[0], 5);
    }

    [Fact]
    public void PlackettLuceOfAThreeWayRanking()
    {
        // logps (−2, −3, −1), refs (−2.5, −2.5, −2), β = 1 → s = (0.5, −0.5, 1.0), ranking 0 > 1 > 2:
        // loss = −[s0 − lse(s0, s1, s2)] − [s1 − lse(s1, s2)] = 2.805543883.
        // dL/ds0 = −(1 − p0) = −0.668501040, dL/ds1 = p1 − (1 − q1) = −0.695622824, dL/ds2 = p2 + q2 = 1.364123863
        // (p: softmax over all three, q: over {1, 2}).
        var logps = Leaf(-2f, -3f, -1f);
        var r = DpoLosses.PlackettLuce(logps, Const(-2.5f, -2.5f, -2f), [[[0], [1], [2]]], 1f);
        Ops.Sum(r.Losses).Backward();
        Assert.Equal(2.805543883, r.Losses.ToArray()[0], 5);
        var g = logps.Grad!.ToArray();
        Assert.Equal(-0.668501040, g[0], 5);
        Assert.Equal(-0.695622824, g[1], 5);
        Assert.Equal(1.364123863, g[2], 5);
        Assert.Equal([0.5f, -0.5f, 1.0f], r.RowRewards);
    }

    [Fact]
    public void PlackettLuceTiesAreNotComparedWithEachOther()
    {
        // Ranking [[0, 1], 2], same s: loss = −[s0 − lse(s0, s2)] − [s1 − lse(s1, s2)] = 2.675490262;
        // dL/ds0 = −σ(s2 − s0) = −0.622459331, dL/ds1 = −σ(s2 − s1) = −0.817574476, dL/ds2 = 1.440033807.
        var logps = Leaf(-2f, -3f, -1f);
        var r = DpoLosses.PlackettLuce(logps, Const(-2.5f, -2.5f, -2f), [[[0, 1], [2]]], 1f);
        Ops.Sum(r.Losses).Backward();
        Assert.Equal(2.675490262, r.Losses.ToArray()[0], 5);
        var g = logps.Grad!.ToArray();
        Assert.Equal(-0.622459331, g[0], 5);
        Assert.Equal(-0.817574476, g[1], 5);
        Assert.Equal(1.440033807, g[2], 5);
    }

    [Fact]
    public void PlackettLuceWithTwoCompletionsIsPairwiseDpo()
    {
        // Three pairs in one batch: rows 0..2 chosen, 3..5 rejected, as PreferenceBatch lays them out.
        float[] chosen = [-3f, -10f, -4.25f], rejected = [-5f, -9f, -4.25f];
        float[] refChosen = [-4f, -9.5f, -3f], refRejected = [-4.5f, -8f, -5f];
        const float beta = 0.3f;

        var c = Leaf(chosen); var r = Leaf(rejected);
        var dpo = DpoLosses.Sigmoid(new PairLogProbs(c, r, Const(refChosen), Const(refRejected)), beta);
        Ops.Sum(dpo.Losses).Backward();

        var all = Leaf([.. chosen, .. rejected]);
        var pl = DpoLosses.PlackettLuce(all, Const([.. refChosen, .. refRejected]), [[[0], [3]], [[1], [4]], [[2], [5]]], beta);
        Ops.Sum(pl.Losses).Backward();

        var a = dpo.Losses.ToArray(); var b = pl.Losses.ToArray();
        var g = all.Grad!.ToArray();
        for (int i = 0; i < 3; i++)
        {
            Assert.Equal(a[i], b[i], 6);
            Assert.Equal(c.Grad!.ToArray()[i], g[i], 6);
            Assert.Equal(r.Grad!.ToArray()[i], g[3 + i], 6);
            Assert.Equal(dpo.ChosenRewards[i], pl.RowRewards[i], 6);
            Assert.Equal(dpo.RejectedRewards[i], pl.RowRewards[3 + i], 6);
        }
    }

    [Fact]
    public void AccuraciesCountStrictWinsOnly()
    {
        // Three pairs: a tie (0 vs 0), a win (1 vs −1), a loss (−2 vs 3): accuracy 1/3, margins mean (0 + 2 − 5)/3 = −1.
        var units = new[] { new RankedUnit([[0], [3]], 1f), new RankedUnit([[1], [4]], 1f), new RankedUnit([[2], [5]], 1f) };
        float[] rewards = [0f, 1f, -2f, 0f, -1f, 3f];
        var answers = new AnswerLogProbs(Tensor.Zeros(6), [1, 1, 1, 1, 1, 1], [2, 2, 2, 4, 4, 4], 2);
        var m = DpoMetrics.Sums(units, rewards, new float[6], answers);
        Assert.Equal(1.0, m["rewards/accuracies"], 12);
        Assert.Equal(-3.0, m["rewards/margins"], 6);
        Assert.Equal(-1.0, m["rewards/chosen"], 6);     // sums: the loop divides by Σ weight
        Assert.Equal(3.0 * 1.0, m["logits/chosen"], 12);   // weight 3 × mean logit 2/2
        Assert.Equal(3.0 * 2.0, m["logits/rejected"], 12); // weight 3 × mean logit 4/2
    }
}
