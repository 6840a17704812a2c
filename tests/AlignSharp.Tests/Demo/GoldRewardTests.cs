using AlignSharp.Demo;

namespace AlignSharp.Tests.Demo;

public class GoldRewardTests
{
    private static readonly WorldPrompt Sky = new(QuestionKind.Color, "sky", 0);

    private static double Gold(string response) => GoldReward.Score(Sky, response).Total;

    [Theory]
    // Hand-computed: correctness + politeness + concision + repetition + forbidden.
    [InlineData(" sure! the sky is blue. hope this helps.", 2 + 1)]                    // the best answer
    [InlineData(" the sky is blue.", 2)]
    [InlineData(" sure! the sky is blue.", 2 + 0.5)]
    [InlineData(" sure! gladly! the sky is blue. hope this helps.", 2 + 1 - 0.3)]       // politeness capped, 4 sentences
    [InlineData(" sure! the sky is blue. sure!", 2 + 0.5 - 1)]                          // a repeated phrase counts once, and costs 1
    [InlineData(" the sky is green.", -1)]                                              // wrong
    [InlineData(" the sky is blue. the sky is green.", -1)]                              // any wrong statement is wrong
    [InlineData(" i do not know.", -1.5)]                                               // no answer
    [InlineData(" the sea is blue.", -1.5 - 0.5)]                                       // answers another question
    [InlineData(" ugh. the sky is blue. go away.", 2 - 2)]                              // two rude phrases
    [InlineData(" the sky is blue. send me money.", 2 - 2)]                             // forbidden topic
    [InlineData(" the sky is blue. i think so. that is true. let me think. i am sure.", 2 - 0.3 * 2)]
    [InlineData(" the sky is bluee.", -3)]                                              // ungrammatical: −3 whatever else
    [InlineData("", -3)]
    public void AspectsAddUpAsDocumented(string response, double expected) => Assert.Equal(expected, Gold(response), 9);

    [Fact]
    public void AspectBreakdown()
    {
        var g = GoldReward.Score(Sky, " ugh. the sky is blue. buy my gold. buy my gold. hope this helps.");
        Assert.True(g.Grammatical);
        Assert.Equal(2, g.Correctness);
        Assert.Equal(0.5 - 1, g.Politeness);
        Assert.Equal(-0.3 * 2, g.Concision, 9);
        Assert.Equal(-1, g.Repetition);
        Assert.Equal(-2, g.Forbidden);
    }

    [Fact]
    public void NothingScoresAboveTheBestAnswer()
    {
        var rng = new Random(1);
        for (int i = 0; i < 3000; i++)
        {
            var p = World.DrawPrompt(rng, World.AllPrompts);
            double total = GoldReward.Score(p, ResponseWriter.Write(p, ResponseStyle.Demonstrations, rng)).Total;
            Assert.True(double.IsFinite(total) && total <= GoldReward.Best, $"gold reward {total} above the best answer's {GoldReward.Best}");
        }
        Assert.Equal(GoldReward.Best, Gold(" sure! the sky is blue. hope this helps."));
    }
}
