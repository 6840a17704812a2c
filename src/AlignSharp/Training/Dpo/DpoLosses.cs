using AlignSharp.Engine;

namespace AlignSharp.Training.Dpo;

/// <summary>
/// The answer log-probabilities of B preference pairs as a loss reads them: the policy's [B] (differentiable) and
/// the reference model's [B] (constants; null = reference-free, log π_ref = 0). Each is a sum over the answer's
/// tokens, or the per-token mean for the length-normalised losses (ipo, simpo, orpo).
/// </summary>
public sealed record PairLogProbs(Tensor Chosen, Tensor Rejected, Tensor? RefChosen = null, Tensor? RefRejected = null);

/// <summary>
/// A pairwise loss's result: per-pair losses [B] (differentiable, not yet weighted or averaged) and the implicit
/// reward of each answer [B] as TRL reports it (constants). <see cref="Extra"/>: further per-pair metrics.
/// </summary>
public sealed record PairLoss(Tensor Losses, float[] ChosenRewards, float[] RejectedRewards, IReadOnlyDictionary<string, float[]>? Extra = null);

/// <summary>A Plackett–Luce loss: one loss per ranking [U] and the implicit reward of every row [R].</summary>
public sealed record RankingLoss(Tensor Losses, float[] RowRewards);

/// <summary>
/// The DPO family as small pure functions. Notation: log π(y) the policy's log-probability of an answer given its
/// prompt, log π_ref(y) the reference's, c the chosen and r the rejected answer, and
/// Δ = (log π(c) − log π_ref(c)) − (log π(r) − log π_ref(r)), the difference of the implicit rewards over β.
/// </summary>
public static class DpoLosses
{
    /// <summary>
    /// DPO (Rafailov et al. 2023, eq. 7): −log σ(β·Δ). With label smoothing ε (conservative DPO, Mitchell 2023):
    /// −(1−ε)·log σ(β·Δ) − ε·log σ(−β·Δ). Rewards β·(log π − log π_ref).
    /// </summary>
    public static PairLoss Sigmoid(PairLogProbs lp, float beta, float labelSmoothing = 0f)
    {
        var z = Ops.MulScalar(Delta(lp), beta);
        return new PairLoss(SmoothedLogistic(z, labelSmoothing), Rewards(lp.Chosen, lp.RefChosen, beta), Rewards(lp.Rejected, lp.RefRejected, beta));
    }

    /// <summary>
    /// IPO (Azar et al. 2023, eq. 17): (Δ − 1/(2β))², with Δ built from length-averaged log-probabilities
    /// (pass per-token means), as TRL does. Rewards β·(log π − log π_ref) on the same means.
    /// </summary>
    public static PairLoss Ipo(PairLogProbs lp, float beta)
    {
        var losses = Ops.Square(Ops.AddScalar(Delta(lp), -1f / (2f * beta)));
        return new PairLoss(losses, Rewards(lp.Chosen, lp.RefChosen, beta), Rewards(lp.Rejected, lp.RefRejected, beta));
    }

    /// <summary>SLiC hinge (Zhao et al. 2023, eq. 2 with δ = 1/β): max(0, 1 − β·Δ). Rewards β·(log π − log π_ref).</summary>
    public static PairLoss Hinge(PairLogProbs lp, float beta)
    {
        var losses = Ops.Relu(Ops.AddScalar(Ops.MulScalar(Delta(lp), -beta), 1f));
        return new PairLoss(losses, Rewards(lp.Chosen, lp.RefChosen, beta), Rewards(lp.Rejected, lp.RefRejected, beta));
    }

    /// <summary>
    /// SimPO (Meng et al. 2024, eq. 6): −log σ(β·log π(c)/|c| − β·log π(r)/|r| − γ), reference-free (pass per-token
    /// means; the reference, if any, is ignored); label smoothing as in <see cref="Sigmoid"/>. Rewards β·log π/|y|.
    /// </summary>
    public static PairLoss Simpo(PairLogProbs lp, float beta, float gamma, float labelSmoothing = 0f)
    {
        var z = Ops.AddScalar(Ops.MulScalar(Ops.Sub(lp.Chosen, lp.Rejected), beta), -gamma);
        return new PairLoss(SmoothedLogistic(z, labelSmoothing), Rewards(lp.Chosen, null, beta), Rewards(lp.Rejected, null, beta));
    }

    /// <summary>
    /// ORPO (Hong et al. 2024, eqs. 6–7): −log π(c)/|c| − λ·log σ(log odds(c) − log odds(r)), with
    /// odds(y) = P(y)/(1 − P(y)) and P(y) = exp(log π(y)/|y|) (pass per-token means); reference-free. The first term
    /// is the chosen answer's SFT loss (mean NLL per token). Rewards λ·log π/|y| (TRL's ORPO, whose β is λ).
    /// Extra metrics as TRL: nll_loss, log_odds_ratio (log σ of the log odds ratio), log_odds_chosen.
    /// </summary>
    public static PairLoss Orpo(PairLogProbs lp, float lambda)
    {
        var logOdds = Ops.Sub(Ops.Sub(lp.Chosen, lp.Rejected), Ops.Sub(Log1MinusExp(lp.Chosen), Log1MinusExp(lp.Rejected)));
        var ratio = Ops.LogSigmoid(logOdds);
        var losses = Ops.Sub(Ops.Neg(lp.Chosen), Ops.MulScalar(ratio, lambda));
        var extra = new Dictionary<string, float[]>
        {
            ["nll_loss"] = lp.Chosen.ToArray().Select(x => -x).ToArray(),
            ["log_odds_ratio"] = ratio.ToArray(),
            ["log_odds_chosen"] = logOdds.ToArray(),
        };
        return new PairLoss(losses, Rewards(lp.Chosen, null, lambda), Rewards(lp.Rejected, null, lambda), extra);
    }

    /// <summary>
    /// Robust DPO (Chowdhury et al. 2024, eq. 10): [−(1−ε)·log σ(β·Δ) + ε·log σ(−β·Δ)] / (1 − 2ε), unbiased for labels
    /// flipped with probability ε (unlike the label-smoothed <see cref="Sigmoid"/>). Rewards β·(log π − log π_ref).
    /// </summary>
    public static PairLoss Robust(PairLogProbs lp, float beta, float labelSmoothing)
    {
        var z = Ops.MulScalar(Delta(lp), beta);
        var losses = Ops.MulScalar(Ops.Sub(Ops.MulScalar(Ops.LogSigmoid(Ops.Neg(z)), labelSmoothing), Ops.MulScalar(Ops.LogSigmoid(z), 1f - labelSmoothing)),
            1f / (1f - 2f * labelSmoothing));
        return Pair(losses, lp, beta);
    }

    /// <summary>
    /// EXO for pairs (Ji et al. 2024, eq. 16 at K = 2): KL(p_θ ‖ p_ε) between p_θ = (σ(β·Δ), σ(−β·Δ)) and the label
    /// distribution (1 − ε, ε): σ(β·Δ)·(log σ(β·Δ) − log(1 − ε)) + σ(−β·Δ)·(log σ(−β·Δ) − log ε), ε &gt; 0.
    /// </summary>
    public static PairLoss ExoPair(PairLogProbs lp, float beta, float labelSmoothing)
    {
        var z = Ops.MulScalar(Delta(lp), beta);
        var chosen = Ops.Mul(Ops.Sigmoid(z), Ops.AddScalar(Ops.LogSigmoid(z), -MathF.Log(1f - labelSmoothing)));
        var rejected = Ops.Mul(Ops.Sigmoid(Ops.Neg(z)), Ops.AddScalar(Ops.LogSigmoid(Ops.Neg(z)), -MathF.Log(labelSmoothing)));
        return Pair(Ops.Add(chosen, rejected), lp, beta);
    }

    /// <summary>NCA for pairs (Chen et al. 2024): with the implicit rewards u_c = β·(log π(c) − log π_ref(c)) and u_r,
    /// −log σ(u_c) − ½·log σ(−u_c) − ½·log σ(−u_r).</summary>
    public static PairLoss NcaPair(PairLogProbs lp, float beta)
    {
        var uc = Ops.MulScalar(LogRatio(lp.Chosen, lp.RefChosen), beta);
        var ur = Ops.MulScalar(LogRatio(lp.Rejected, lp.RefRejected), beta);
        var losses = Ops.Neg(Ops.Add(Ops.LogSigmoid(uc), Ops.MulScalar(Ops.Add(Ops.LogSigmoid(Ops.Neg(uc)), Ops.LogSigmoid(Ops.Neg(ur))), 0.5f)));
        return Pair(losses, lp, beta);
    }

    /// <summary>BCO with paired data (Jung et al. 2024, TRL's bco_pair): each answer's reward u = β·(log π − log π_ref)
    /// is classified against δ, the running mean of the batches' mean rewards (<see cref="RunningMean"/>):
    /// −log σ(u_c − δ) − log σ(−(u_r − δ)).</summary>
    public static PairLoss BcoPair(PairLogProbs lp, float beta, float delta)
    {
        var uc = Ops.MulScalar(LogRatio(lp.Chosen, lp.RefChosen), beta);
        var ur = Ops.MulScalar(LogRatio(lp.Rejected, lp.RefRejected), beta);
        var losses = Ops.Neg(Ops.Add(Ops.LogSigmoid(Ops.AddScalar(uc, -delta)), Ops.LogSigmoid(Ops.Neg(Ops.AddScalar(ur, -delta)))));
        return Pair(losses, lp, beta);
    }

    /// <summary>The mean reward β·(log π − log π_ref) over a batch's chosen and rejected answers (a number, no gradient):
    /// what BCO's running mean takes in.</summary>
    public static double MeanReward(PairLogProbs lp, float beta)
    {
        double sum = 0;
        int n = 0;
        foreach (var (answer, reference) in new[] { (lp.Chosen, lp.RefChosen), (lp.Rejected, lp.RefRejected) })
        {
            var a = answer.Span;
            var r = reference is null ? default : reference.Span;
            for (int i = 0; i < a.Length; i++) { sum += beta * ((double)a[i] - (r.IsEmpty ? 0 : r[i])); n++; }
        }
        return n == 0 ? 0 : sum / n;
    }

    /// <summary>TRL's RunningMoments mean: starts at 0 with a count of 1e-24; taking in the mean m of n values moves it to
    /// mean + (m − mean)·n / (count + n).</summary>
    public sealed class RunningMean
    {
        public double Mean { get; private set; }
        public double Count { get; private set; } = 1e-24;

        public void Add(double mean, double count)
        {
            double total = Count + count;
            Mean += (mean - Mean) * count / total;
            Count = total;
        }

        public void Set(double mean, double count) => (Mean, Count) = (mean, count);
    }

    /// <summary>SPPO with hard labels (Wu et al. 2024, as TRL's sppo_hard): the log-ratios a_c = log π(c) − log π_ref(c) and
    /// a_r pulled to ±1/(2β): (a_c − 1/(2β))² + (a_r + 1/(2β))².</summary>
    public static PairLoss SppoHard(PairLogProbs lp, float beta)
    {
        float half = 1f / (2f * beta);
        var losses = Ops.Add(Ops.Square(Ops.AddScalar(LogRatio(lp.Chosen, lp.RefChosen), -half)), Ops.Square(Ops.AddScalar(LogRatio(lp.Rejected, lp.RefRejected), half)));
        return Pair(losses, lp, beta);
    }

    /// <summary>APO-zero (D'Oosterlinck et al. 2024): raise the chosen answer's likelihood and lower the rejected one's,
    /// 1 − σ(β·a_c) + σ(β·a_r) with the log-ratios a_c, a_r (for a chosen answer better than the model's own).</summary>
    public static PairLoss ApoZero(PairLogProbs lp, float beta)
    {
        var losses = Ops.Add(Ops.AddScalar(Ops.Neg(Ops.Sigmoid(Ops.MulScalar(LogRatio(lp.Chosen, lp.RefChosen), beta))), 1f),
            Ops.Sigmoid(Ops.MulScalar(LogRatio(lp.Rejected, lp.RefRejected), beta)));
        return Pair(losses, lp, beta);
    }

    /// <summary>APO-down (D'Oosterlinck et al. 2024): lower both likelihoods, the rejected one's more,
    /// σ(β·a_c) + 1 − σ(β·Δ) (for a chosen answer worse than the model's own).</summary>
    public static PairLoss ApoDown(PairLogProbs lp, float beta)
    {
        var losses = Ops.Add(Ops.Sigmoid(Ops.MulScalar(LogRatio(lp.Chosen, lp.RefChosen), beta)),
            Ops.AddScalar(Ops.Neg(Ops.Sigmoid(Ops.MulScalar(Delta(lp), beta))), 1f));
        return Pair(losses, lp, beta);
    }

    /// <summary>
    /// DiscoPOP (Chris Lu et al. 2024), the log-ratio modulated loss: with z = β·Δ and m = σ(z/τ),
    /// (1 − m)·(−log σ(z)) + m·e^(−z): the logistic loss where the policy still prefers the rejected answer, the
    /// exponential loss where it already prefers the chosen one. τ: TRL's discopop_tau (0.05).
    /// </summary>
    public static PairLoss DiscoPop(PairLogProbs lp, float beta, float tau)
    {
        var z = Ops.MulScalar(Delta(lp), beta);
        var m = Ops.Sigmoid(Ops.MulScalar(z, 1f / tau));
        var logistic = Ops.Neg(Ops.LogSigmoid(z));
        var losses = Ops.Add(Ops.Mul(Ops.AddScalar(Ops.Neg(m), 1f), logistic), Ops.Mul(m, Ops.Exp(Ops.Neg(z))));
        return Pair(losses, lp, beta);
    }

    /// <summary>
    /// AOT (Melnyk et al. 2024, TRL's aot): the batch's policy margins log π(c) − log π(r) sorted, less the reference's
    /// margins sorted, d_k = sort(policy)_k − sort(reference)_k, and the label-smoothed logistic loss of β·d_k (ε as
    /// <see cref="Sigmoid"/>). The k-th loss belongs to the k-th smallest margin, not to pair k; ties keep pair order.
    /// </summary>
    public static PairLoss Aot(PairLogProbs lp, float beta, float labelSmoothing)
    {
        var d = Sorted(Ops.Sub(lp.Chosen, lp.Rejected));
        if (lp.RefChosen is { } rc && lp.RefRejected is { } rr) d = Ops.Sub(d, Sorted(Ops.Sub(rc, rr)));
        return Pair(SmoothedLogistic(Ops.MulScalar(d, beta), labelSmoothing), lp, beta);
    }

    /// <summary>AOT on the answers apart (TRL's aot_pair): d_k = sort(log π(c) − log π_ref(c))_k − sort(log π(r) −
    /// log π_ref(r))_k, then as <see cref="Aot"/>.</summary>
    public static PairLoss AotPair(PairLogProbs lp, float beta, float labelSmoothing)
    {
        var d = Ops.Sub(Sorted(LogRatio(lp.Chosen, lp.RefChosen)), Sorted(LogRatio(lp.Rejected, lp.RefRejected)));
        return Pair(SmoothedLogistic(Ops.MulScalar(d, beta), labelSmoothing), lp, beta);
    }

    /// <summary>x [B] in ascending order (equal values keep their order), the gradient flowing back to each value's place.</summary>
    private static Tensor Sorted(Tensor x)
    {
        var values = x.ToArray();
        return Ops.IndexSelect(x, Enumerable.Range(0, values.Length).OrderBy(i => values[i]).ThenBy(i => i).ToArray());
    }

    /// <summary>The chosen answers' negative log-likelihood per token, −Σ_c log π(y_c) / Σ_c |y_c| over the rows
    /// <paramref name="chosen"/> (the term RPO adds). sums [R] (differentiable), tokens [R] → [].</summary>
    public static Tensor ChosenNll(Tensor sums, int[] tokens, int[] chosen)
    {
        int count = chosen.Sum(i => tokens[i]);
        return Ops.MulScalar(Ops.Sum(Ops.IndexSelect(sums, chosen)), -1f / Math.Max(1, count));
    }

    /// <summary>A pairwise loss with the rewards every reference-based loss reports: β·(log π − log π_ref).</summary>
    private static PairLoss Pair(Tensor losses, PairLogProbs lp, float beta)
        => new(losses, Rewards(lp.Chosen, lp.RefChosen, beta), Rewards(lp.Rejected, lp.RefRejected, beta));

    /// <summary>log π − log π_ref (log π alone without a reference).</summary>
    private static Tensor LogRatio(Tensor policy, Tensor? reference) => reference is null ? policy : Ops.Sub(policy, reference);

    /// <summary>
    /// Plackett–Luce DPO (Rafailov et al. 2023, appendix A.3, eq. 18): with s = β·(log π − log π_ref) per completion
    /// and a ranking τ best → worst, −Σ_k log [exp(s_τ(k)) / Σ_{j ≥ k} exp(s_τ(j))]. Ties (groups of the ranking):
    /// each completion of a group competes with itself and every completion of the worse groups, never with the
    /// completions it is tied with (the pairwise split gives tied completions no pair either); the last group makes
    /// no choice and adds nothing. Without ties this is exactly eq. 18; with K = 2 it is <see cref="Sigmoid"/>.
    /// </summary>
    /// <param name="logProbs">[R] policy log-probabilities of every row (completion) in the batch.</param>
    /// <param name="refLogProbs">[R] reference log-probabilities (constants), or null for reference-free.</param>
    /// <param name="rankings">Each ranking as groups of row indices, best group first.</param>
    public static RankingLoss PlackettLuce(Tensor logProbs, Tensor? refLogProbs, IReadOnlyList<IReadOnlyList<int[]>> rankings, float beta)
    {
        int rows = logProbs.Length;
        var s = Ops.MulScalar(refLogProbs is null ? logProbs : Ops.Sub(logProbs, refLogProbs), beta);
        var rowRewards = s.ToArray();

        // One term per (ranking, completion outside the last group): the completion's index and its candidate set.
        var chosen = new List<int>();
        var owner = new List<int>();
        var candidates = new List<bool[]>();
        for (int u = 0; u < rankings.Count; u++)
        {
            var groups = rankings[u];
            for (int a = 0; a < groups.Count - 1; a++)
                foreach (int i in groups[a])
                {
                    var allowed = new bool[rows];
                    allowed[i] = true;
                    for (int b = a + 1; b < groups.Count; b++) foreach (int j in groups[b]) allowed[j] = true;
                    chosen.Add(i); owner.Add(u); candidates.Add(allowed);
                }
        }
        if (chosen.Count == 0) return new RankingLoss(Tensor.Zeros(rankings.Count), rowRewards);

        // log softmax of s over each term's candidates (others pushed to −1e9, i.e. probability 0), read at its completion.
        int terms = chosen.Count;
        var mask = new float[terms * rows];
        for (int t = 0; t < terms; t++)
            for (int r = 0; r < rows; r++) mask[t * rows + r] = candidates[t][r] ? 0f : -1e9f;
        var logChoice = Ops.Gather(Ops.LogSoftmax(Ops.Add(Ops.Reshape(s, 1, rows), Tensor.FromArray(mask, terms, rows))), chosen.ToArray(), 1);

        // Each ranking's loss: minus the sum of its terms (an indicator matrix [U, terms] sums them).
        var indicator = new float[rankings.Count * terms];
        for (int t = 0; t < terms; t++) indicator[owner[t] * terms + t] = -1f;
        var losses = Ops.MatMul(Tensor.FromArray(indicator, rankings.Count, terms), Ops.Reshape(logChoice, terms, 1));
        return new RankingLoss(Ops.Reshape(losses, rankings.Count), rowRewards);
    }

    /// <summary>Δ = (log π(c) − log π(r)) − (log π_ref(c) − log π_ref(r)); the reference terms are 0 when absent.</summary>
    private static Tensor Delta(PairLogProbs lp)
    {
        var policy = Ops.Sub(lp.Chosen, lp.Rejected);
        if (lp.RefChosen is null || lp.RefRejected is null) return policy;
        return Ops.Sub(policy, Ops.Sub(lp.RefChosen, lp.RefRejected));
    }

    /// <summary>−(1−ε)·log σ(z) − ε·log σ(−z).</summary>
    private static Tensor SmoothedLogistic(Tensor z, float labelSmoothing)
    {
        var loss = Ops.Neg(Ops.LogSigmoid(z));
        if (labelSmoothing == 0f) return loss;
        return Ops.Add(Ops.MulScalar(loss, 1f - labelSmoothing), Ops.MulScalar(Ops.Neg(Ops.LogSigmoid(Ops.Neg(z))), labelSmoothing));
    }

    /// <summary>log(1 − eˣ) for x &lt; 0; x is kept ≤ −1e-6 so that a probability of 1 gives a large finite value.</summary>
    private static Tensor Log1MinusExp(Tensor x)
        => Ops.Log(Ops.AddScalar(Ops.Neg(Ops.Exp(Ops.Clamp(x, float.MinValue, -1e-6f))), 1f));

    /// <summary>scale·(log π − log π_ref), as constants.</summary>
    private static float[] Rewards(Tensor logProbs, Tensor? refLogProbs, float scale)
    {
        var p = logProbs.Span;
        var r = new float[p.Length];
        for (int i = 0; i < r.Length; i++) r[i] = scale * (p[i] - (refLogProbs is null ? 0f : refLogProbs.Span[i]));
        return r;
    }
}
