namespace AlignSharp.Feedback;

/// <summary>Agreement between two annotators (or, for the overall figure, all pairs of annotators) on the tasks both ranked.</summary>
/// <param name="Tasks">Overlapping tasks compared (one per task and annotator pair).</param>
/// <param name="CompletionPairs">Completion pairs compared across those tasks.</param>
/// <param name="PairwiseAgreement">Fraction of completion pairs on which both gave the same verdict (better, worse or tie); null with no pairs.</param>
/// <param name="KendallTauB">Mean Kendall's τ-b over the tasks where it is defined; null when none is.</param>
public sealed record AgreementFigures(int Tasks, int CompletionPairs, double? PairwiseAgreement, double? KendallTauB);

public sealed record AnnotatorPairAgreement(long FirstId, string FirstName, long SecondId, string SecondName, AgreementFigures Figures);

public sealed record AgreementReport(AgreementFigures Overall, IReadOnlyList<AnnotatorPairAgreement> Pairs);

/// <summary>
/// Inter-annotator agreement on overlapping tasks. Rankings are compared through ranks by completion id
/// (tied completions share a rank; lower is better).
/// </summary>
public static class Agreement
{
    /// <summary>
    /// Kendall's τ-b between two rankings of the same n items:
    /// τ_b = (C − D) / √((n₀ − n₁)(n₀ − n₂)), with C and D the concordant and discordant pairs, n₀ = n(n−1)/2,
    /// n₁ and n₂ the pairs tied in the first and the second ranking. A pair tied in either ranking counts as
    /// neither concordant nor discordant. Null when a ranking ties everything (the denominator is 0).
    /// </summary>
    public static double? KendallTauB(IReadOnlyList<int> ranksA, IReadOnlyList<int> ranksB)
    {
        var (concordant, discordant, tiedA, tiedB, _, total) = CountPairs(ranksA, ranksB);
        double denominator = Math.Sqrt((double)(total - tiedA) * (total - tiedB));
        return denominator == 0 ? null : (concordant - discordant) / denominator;
    }

    /// <summary>Fraction of item pairs on which both rankings agree: same order, or tied in both. Null for fewer than 2 items.</summary>
    public static double? PairwiseAgreement(IReadOnlyList<int> ranksA, IReadOnlyList<int> ranksB)
    {
        var (_, _, _, _, same, total) = CountPairs(ranksA, ranksB);
        return total == 0 ? null : (double)same / total;
    }

    private static (long Concordant, long Discordant, long TiedA, long TiedB, long Same, long Total) CountPairs(IReadOnlyList<int> a, IReadOnlyList<int> b)
    {
        if (a.Count != b.Count) throw new ArgumentException($"rankings of {a.Count} and {b.Count} items cannot be compared.");
        long concordant = 0, discordant = 0, tiedA = 0, tiedB = 0, same = 0, total = 0;
        for (int i = 0; i < a.Count; i++)
            for (int j = i + 1; j < a.Count; j++)
            {
                int sa = Math.Sign(a[i] - a[j]), sb = Math.Sign(b[i] - b[j]);
                total++;
                if (sa == 0) tiedA++;
                if (sb == 0) tiedB++;
                if (sa == sb) same++;
                if (sa * sb > 0) concordant++;
                else if (sa * sb < 0) discordant++;
            }
        return (concordant, discordant, tiedA, tiedB, same, total);
    }

    /// <summary>
    /// Compares every two annotators on every task both ranked (skips are not rankings and are left out).
    /// Pairwise agreement pools completion pairs over tasks; τ-b is the mean of the per-task values.
    /// The overall figures pool all annotator pairs the same way.
    /// </summary>
    public static AgreementReport Compute(IEnumerable<SubmittedRanking> rankings)
    {
        var byTask = rankings.GroupBy(r => r.TaskId);
        var perPair = new Dictionary<(long, long), Accumulator>();
        var names = new Dictionary<long, string>();
        var overall = new Accumulator();
        foreach (var task in byTask)
        {
            var list = task.OrderBy(r => r.AnnotatorId).ToList();
            foreach (var r in list) names[r.AnnotatorId] = r.AnnotatorName;
            for (int x = 0; x < list.Count; x++)
                for (int y = x + 1; y < list.Count; y++)
                {
                    var ra = list[x].Ranking.RanksById();
                    var rb = list[y].Ranking.RanksById();
                    var key = (list[x].AnnotatorId, list[y].AnnotatorId);
                    if (!perPair.TryGetValue(key, out var acc)) perPair[key] = acc = new Accumulator();
                    acc.Add(ra, rb);
                    overall.Add(ra, rb);
                }
        }
        var pairs = perPair
            .OrderBy(p => p.Key.Item1).ThenBy(p => p.Key.Item2)
            .Select(p => new AnnotatorPairAgreement(
                p.Key.Item1, names[p.Key.Item1],
                p.Key.Item2, names[p.Key.Item2],
                p.Value.Figures()))
            .ToList();
        return new AgreementReport(overall.Figures(), pairs);
    }

    private sealed class Accumulator
    {
        private int _tasks, _tauTasks;
        private long _pairs, _same;
        private double _tauSum;

        public void Add(int[] a, int[] b)
        {
            var (_, _, _, _, same, total) = CountPairs(a, b);
            _tasks++;
            _pairs += total;
            _same += same;
            if (KendallTauB(a, b) is double tau)
            {
                _tauSum += tau;
                _tauTasks++;
            }
        }

        public AgreementFigures Figures() => new(
            _tasks,
            (int)_pairs,
            _pairs == 0 ? null : (double)_same / _pairs,
            _tauTasks == 0 ? null : _tauSum / _tauTasks);
    }
}
