using AlignSharp.Training.Evaluation;

namespace AlignSharp.Tests.Evaluation;

/// <summary>The evaluation statistics against values worked out by hand from their formulas.</summary>
public sealed class EvalStatisticsTests
{
    [Fact]
    public void WinRateCountsTiesHalfWithTheWilsonInterval()
    {
        // 3 wins, 1 tie, 1 loss: p = 3.5 / 5 = 0.7. z² = 3.8416, 1 + z²/n = 1.76832,
        // center = (0.7 + 0.38416) / 1.76832 = 0.613101, half = 1.96 / 1.76832 · √(0.21/5 + 3.8416/100) = 0.314316.
        var e = EvalStatistics.WinRate([1, 1, 0.5, 0, 1]);
        Assert.Equal(0.7, e.Value, 12);
        Assert.Equal(0.298786, e.Low, 5);
        Assert.Equal(0.927418, e.High, 5);

        // No win in 10: the lower end is 0, the upper (z²/n) / (1 + z²/n) = 0.38416 / 1.38416 = 0.277540.
        var none = EvalStatistics.WinRate(new double[10]);
        Assert.Equal(0, none.Value);
        Assert.Equal(0, none.Low, 12);
        Assert.Equal(0.277540, none.High, 5);

        // All ties: exactly one half.
        Assert.Equal(0.5, EvalStatistics.WinRate([0.5, 0.5, 0.5]).Value, 12);
        Assert.True(double.IsNaN(EvalStatistics.WinRate([]).Value));
        Assert.Throws<ArgumentException>(() => EvalStatistics.WinRate([1.5]));
    }

    [Fact]
    public void OutcomesCompareScoresWithATolerance()
    {
        Assert.Equal(1, EvalStatistics.Outcome(2, 1));
        Assert.Equal(0, EvalStatistics.Outcome(1, 2));
        Assert.Equal(0.5, EvalStatistics.Outcome(1, 1));
        Assert.Equal(0.5, EvalStatistics.Outcome(1, 1 + 1e-7, 1e-6));
        Assert.Equal(0, EvalStatistics.Outcome(1, 1 + 1e-5, 1e-6));
    }

    [Fact]
    public void MeanIntervalIsTheNormalApproximation()
    {
        // x = 1..4: mean 2.5, s² = (2.25 + 0.25 + 0.25 + 2.25) / 3 = 5/3, half-width 1.96 · √(5/3) / 2 = 1.2651746.
        var e = EvalStatistics.Mean([1, 2, 3, 4]);
        Assert.Equal(2.5, e.Value, 12);
        Assert.Equal(1.2651746, e.Value - e.Low, 6);
        Assert.Equal(1.2651746, e.High - e.Value, 6);
        Assert.Equal(0, EvalStatistics.MeanHalfWidth95([3]));
    }

    [Fact]
    public void Distinct2IsDistinctOverAllWordBigrams()
    {
        // "a b a b": (a b) (b a) (a b); "a b\nc": (a b) (b c); "" and "x" have none. 3 distinct of 5.
        Assert.Equal(0.6, EvalStatistics.Distinct2(["a b a b", "a b\nc", "", "x"]), 12);
        Assert.True(double.IsNaN(EvalStatistics.Distinct2(["one", ""])));   // no bigrams: undefined (eval.json's null)
        Assert.Equal(1, EvalStatistics.Distinct2(["the  cat sat"]));
    }
}
