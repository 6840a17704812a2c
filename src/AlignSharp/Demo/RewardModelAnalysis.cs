namespace AlignSharp.Demo;

/// <summary>One bin of the reward model's calibration: pairs whose predicted P(first preferred) falls in [Low, High).</summary>
public sealed record CalibrationBin(double Low, double High, int Pairs, double MeanPredicted, double GoldAgreement, double AnnotatorPreference);

/// <summary>How well the reward model recovers the gold preferences on held-out responses.</summary>
public sealed record RewardModelReport(
    int Pairs,
    double GoldAgreement,
    double AnnotatorGoldAgreement,
    double AgreementCeiling,
    IReadOnlyList<CalibrationBin> Calibration);

/// <summary>
/// Held-out agreement of a reward model with the gold pairwise preferences, and what the annotators' noise allows.
/// Pairs are every two responses to the same prompt whose gold rewards differ.
/// <list type="bullet">
/// <item><b>GoldAgreement</b>: the share of pairs the reward model orders as the gold reward does (equal scores count ½).</item>
/// <item><b>AnnotatorGoldAgreement</b>: the chance that one annotator of the pool, drawn at random, orders a pair as the
///   gold reward does (their Plackett–Luce pair probability σ((u_i − u_j)/T), averaged).</item>
/// <item><b>AgreementCeiling</b>: the gold agreement of the ideal model of the annotators' labels, which prefers i when the
///   pool's mean P(i over j) exceeds ½. A reward model trained on these labels cannot beat it (with unlimited data it
///   reaches it): noise alone costs nothing here, but the biased annotators can tip a pair the wrong way.</item>
/// <item><b>Calibration</b>: pairs binned by the reward model's Bradley–Terry probability σ(r_i − r_j) that i is preferred
///   (pairs oriented so that it is ≥ ½), against how often the gold reward agrees and the pool's mean P(i over j).</item>
/// </list>
/// </summary>
public static class RewardModelAnalysis
{
    public static RewardModelReport Analyse(
        IReadOnlyList<(WorldPrompt Prompt, IReadOnlyList<string> Responses, IReadOnlyList<double> RawScores)> groups,
        IReadOnlyList<SimulatedAnnotator> pool, int bins = 5)
    {
        int pairs = 0;
        double agree = 0, annotator = 0, ceiling = 0;
        var binned = Enumerable.Range(0, bins).Select(_ => new List<(double P, double Gold, double Pool)>()).ToArray();
        foreach (var (prompt, responses, scores) in groups)
        {
            var gold = responses.Select(r => GoldReward.Score(prompt, r).Total).ToArray();
            var utilities = pool.Select(a => responses.Select(r => a.Utility(prompt, r)).ToArray()).ToArray();
            for (int i = 0; i < responses.Count; i++)
                for (int j = i + 1; j < responses.Count; j++)
                {
                    if (Math.Abs(gold[i] - gold[j]) < 1e-9) continue;
                    int better = gold[i] > gold[j] ? i : j, worse = better == i ? j : i;
                    pairs++;
                    double d = scores[better] - scores[worse];
                    agree += d > 0 ? 1 : d == 0 ? 0.5 : 0;
                    double poolP = pool.Select((a, k) => a.PreferenceProbability(utilities[k][better], utilities[k][worse])).Average();
                    annotator += poolP;
                    ceiling += poolP > 0.5 ? 1 : poolP == 0.5 ? 0.5 : 0;

                    // Calibration, oriented so that the model's probability is ≥ ½ (first = the model's pick).
                    double p = 1 / (1 + Math.Exp(-Math.Abs(d)));
                    bool goldAgrees = d >= 0;
                    double poolFirst = goldAgrees ? poolP : 1 - poolP;
                    int bin = Math.Min(bins - 1, (int)((p - 0.5) * 2 * bins));
                    binned[bin].Add((p, goldAgrees ? 1 : 0, poolFirst));
                }
        }
        var calibration = binned.Select((b, k) => new CalibrationBin(
            0.5 + 0.5 * k / bins, 0.5 + 0.5 * (k + 1) / bins, b.Count,
            b.Count > 0 ? b.Average(x => x.P) : double.NaN,
            b.Count > 0 ? b.Average(x => x.Gold) : double.NaN,
            b.Count > 0 ? b.Average(x => x.Pool) : double.NaN)).ToArray();
        return new RewardModelReport(pairs, pairs > 0 ? agree / pairs : double.NaN, pairs > 0 ? annotator / pairs : double.NaN,
            pairs > 0 ? ceiling / pairs : double.NaN, calibration);
    }
}
