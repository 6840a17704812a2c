using AlignSharp.Feedback;

namespace AlignSharp.Tests.Feedback;

/// <summary>Agreement figures against values worked out by hand (and one published reference value).</summary>
public class AgreementTests
{
    [Fact]
    public void KendallTauBMatchesHandComputedValues()
    {
        // Identical and reversed orders.
        Assert.Equal(1.0, Agreement.KendallTauB([0, 1, 2, 3], [0, 1, 2, 3])!.Value, 12);
        Assert.Equal(-1.0, Agreement.KendallTauB([0, 1, 2, 3], [3, 2, 1, 0])!.Value, 12);
        // One swap among 3: C = 2, D = 1, n0 = 3 -> 1/3.
        Assert.Equal(1.0 / 3, Agreement.KendallTauB([0, 1, 2], [1, 0, 2])!.Value, 12);
        // A tie in the second ranking only: C = 5, D = 0, n0 = 6, n1 = 0, n2 = 1 -> 5 / sqrt(6 * 5).
        Assert.Equal(5 / Math.Sqrt(30), Agreement.KendallTauB([0, 1, 2, 3], [0, 0, 1, 2])!.Value, 12);
        // Ties in both on different pairs: C = 1, D = 0, n0 = 3, n1 = n2 = 1 -> 1 / sqrt(2 * 2).
        Assert.Equal(0.5, Agreement.KendallTauB([0, 0, 1], [0, 1, 1])!.Value, 12);
        // The same tie in both: C = 2, n1 = n2 = 1 -> 2 / 2.
        Assert.Equal(1.0, Agreement.KendallTauB([0, 0, 1], [0, 0, 1])!.Value, 12);
    }

    [Fact]
    public void KendallTauBMatchesThePublishedScipyExample()
    {
        // scipy.stats.kendalltau([12, 2, 1, 12, 2], [1, 4, 7, 1, 0]) = -0.47140452079103173 (tau-b, its documentation).
        Assert.Equal(-0.47140452079103173, Agreement.KendallTauB([12, 2, 1, 12, 2], [1, 4, 7, 1, 0])!.Value, 12);
    }

    [Fact]
    public void KendallTauBIsUndefinedWhenOneRankingTiesEverything()
    {
        Assert.Null(Agreement.KendallTauB([0, 0, 0], [0, 1, 2]));
    }

    [Fact]
    public void PairwiseAgreementCountsSameVerdicts()
    {
        Assert.Equal(1.0, Agreement.PairwiseAgreement([0, 1, 2], [0, 1, 2]));
        Assert.Equal(0.0, Agreement.PairwiseAgreement([0, 1, 2], [2, 1, 0]));
        Assert.Equal(2.0 / 3, Agreement.PairwiseAgreement([0, 1, 2], [1, 0, 2])!.Value, 12);
        // Tie versus strict order disagrees; tie versus tie agrees.
        Assert.Equal(5.0 / 6, Agreement.PairwiseAgreement([0, 1, 2, 3], [0, 0, 1, 2])!.Value, 12);
        Assert.Equal(1.0 / 3, Agreement.PairwiseAgreement([0, 0, 1], [0, 1, 1])!.Value, 12);
        Assert.Equal(1.0, Agreement.PairwiseAgreement([0, 0, 1], [0, 0, 1]));
    }

    private static SubmittedRanking Ranked(long task, long annotator, string ranking, int k) =>
        new(task, "p", Enumerable.Range(0, k).Select(i => $"c{i}").ToList(), RankingOrder.Parse(ranking, k), [], annotator, $"a{annotator}", Enumerable.Range(0, k).ToList(), 1, "t");

    [Fact]
    public void ReportComparesEveryAnnotatorPairOnSharedTasks()
    {
        var report = Agreement.Compute([
            Ranked(1, 1, "[0, 1, 2]", 3), Ranked(1, 2, "[1, 0, 2]", 3),   // tau 1/3, agreement 2/3
            Ranked(2, 1, "[0, 1, 2]", 3), Ranked(2, 2, "[0, 1, 2]", 3),   // tau 1, agreement 1
            Ranked(2, 3, "[2, 1, 0]", 3),                                 // vs 1 and 2: tau -1, agreement 0
            Ranked(3, 3, "[0, 1, 2]", 3),                                 // nobody else ranked task 3
        ]);
        Assert.Equal(3, report.Pairs.Count);
        var ab = report.Pairs.Single(p => p.FirstId == 1 && p.SecondId == 2).Figures;
        Assert.Equal(2, ab.Tasks);
        Assert.Equal(6, ab.CompletionPairs);
        Assert.Equal(5.0 / 6, ab.PairwiseAgreement!.Value, 12);
        Assert.Equal((1.0 / 3 + 1) / 2, ab.KendallTauB!.Value, 12);
        var ac = report.Pairs.Single(p => p.FirstId == 1 && p.SecondId == 3).Figures;
        Assert.Equal(1, ac.Tasks);
        Assert.Equal(-1.0, ac.KendallTauB!.Value, 12);
        Assert.Equal(0.0, ac.PairwiseAgreement!.Value, 12);

        // Overall: 4 (task, pair) comparisons, 12 completion pairs, 5 agreeing.
        Assert.Equal(4, report.Overall.Tasks);
        Assert.Equal(12, report.Overall.CompletionPairs);
        Assert.Equal(5.0 / 12, report.Overall.PairwiseAgreement!.Value, 12);
        Assert.Equal((1.0 / 3 + 1 - 1 - 1) / 4, report.Overall.KendallTauB!.Value, 12);
    }

    [Fact]
    public void NoOverlapGivesNoFigures()
    {
        var report = Agreement.Compute([Ranked(1, 1, "[0, 1]", 2), Ranked(2, 2, "[1, 0]", 2)]);
        Assert.Empty(report.Pairs);
        Assert.Equal(0, report.Overall.Tasks);
        Assert.Null(report.Overall.PairwiseAgreement);
        Assert.Null(report.Overall.KendallTauB);
    }
}
