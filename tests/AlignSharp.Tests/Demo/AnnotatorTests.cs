using AlignSharp.Demo;

namespace AlignSharp.Tests.Demo;

public class AnnotatorTests
{
    private static readonly WorldPrompt Cow = new(QuestionKind.Sound, "cow", 0);

    [Fact]
    public void RankingFrequenciesMatchPlackettLuceProbabilities()
    {
        // Three responses with gold 3, 2 and −1; temperature 1. Every one of the 3! rankings must appear with its
        // Plackett–Luce probability, within 4.5 standard errors of n draws.
        var annotator = new SimulatedAnnotator("t", 1.0);
        string[] responses = [" sure! the cow says moo. hope this helps.", " the cow says moo.", " the cow says woof."];
        var u = responses.Select(r => annotator.Utility(Cow, r)).ToArray();
        Assert.Equal([3.0, 2.0, -1.0], u);
        const int n = 40_000;
        var counts = new Dictionary<string, int>();
        var rng = new Random(7);
        for (int i = 0; i < n; i++)
        {
            var order = string.Join(",", annotator.Rank(Cow, responses, rng).Select(g => g.Single()));
            counts[order] = counts.GetValueOrDefault(order) + 1;
        }
        double total = 0;
        foreach (var perm in new[] { new[] { 0, 1, 2 }, [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0] })
        {
            double p = PlackettLuce.Probability(u, perm);
            total += p;
            double observed = counts.GetValueOrDefault(string.Join(",", perm)) / (double)n;
            double se = Math.Sqrt(p * (1 - p) / n);
            Assert.True(Math.Abs(observed - p) <= 4.5 * se + 1e-4, $"ranking {string.Join(",", perm)}: observed {observed:F4}, Plackett–Luce {p:F4}");
        }
        Assert.Equal(1, total, 9);
        // The first choice of P-L is a softmax: P(0 first) = e^3 / (e^3 + e^2 + e^−1).
        Assert.Equal(Math.Exp(3) / (Math.Exp(3) + Math.Exp(2) + Math.Exp(-1)), PlackettLuce.Probability(u, [0, 1, 2]) + PlackettLuce.Probability(u, [0, 2, 1]), 12);
    }

    [Fact]
    public void PairwisePreferenceFollowsTemperature()
    {
        var careful = new SimulatedAnnotator("careful", 0.5);
        var noisy = new SimulatedAnnotator("noisy", 2.0);
        string good = " the cow says moo.", bad = " the cow says woof.";
        foreach (var a in new[] { careful, noisy })
        {
            double expected = 1 / (1 + Math.Exp(-(2 - (-1)) / a.Temperature));
            Assert.Equal(expected, a.PreferenceProbability(a.Utility(Cow, good), a.Utility(Cow, bad)), 12);
            var rng = new Random(1);
            const int n = 20_000;
            int wins = 0;
            for (int i = 0; i < n; i++) if (a.Rank(Cow, [good, bad], rng)[0][0] == 0) wins++;
            Assert.InRange(wins / (double)n, expected - 4.5 * Math.Sqrt(expected * (1 - expected) / n), expected + 4.5 * Math.Sqrt(expected * (1 - expected) / n));
        }
    }

    [Fact]
    public void IdenticalResponsesAreTied()
    {
        var groups = new SimulatedAnnotator("a", 1).Rank(Cow, [" the cow says moo.", " the cow says woof.", " the cow says moo."], new Random(1));
        Assert.Contains(groups, g => g.OrderBy(i => i).SequenceEqual([0, 2]));
        Assert.Equal(3, groups.Sum(g => g.Count));
    }

    [Fact]
    public void BiasedAnnotatorsAddTheirTaste()
    {
        string r = " sure! the cow says moo. i think so. hope this helps.";
        double gold = GoldReward.Score(Cow, r).Total;
        Assert.Equal(gold + 0.4 * 4, new SimulatedAnnotator("v", 1, AnnotatorBias.Verbose).Utility(Cow, r), 9);
        Assert.Equal(gold + 1.5 * 2, new SimulatedAnnotator("f", 1, AnnotatorBias.Flattery).Utility(Cow, r), 9);
        Assert.Equal(-3, new SimulatedAnnotator("f", 1, AnnotatorBias.Flattery).Utility(Cow, " sure! moo"));
        Assert.Contains(SimulatedAnnotator.DefaultPool, a => a.Bias != AnnotatorBias.None);
    }
}
