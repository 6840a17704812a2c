using System.Diagnostics;
using AlignSharp.Training.Rl;
using Xunit.Abstractions;

namespace AlignSharp.Tests.Rl;

/// <summary>The sanity task: reward = occurrences of 'a' in the completion; each algorithm must raise it clearly.</summary>
public sealed class RlTrainingTests(ITestOutputHelper output) : IDisposable
{
    private readonly RlTestKit _kit = new();
    public void Dispose() => _kit.Dispose();

    private T Options<T>(T o, string run, int steps) where T : RlOptions => _kit.Options(o, run, steps, seed: 3, learningRate: 1e-2f, maxNewTokens: 8, batchSize: 16);

    private (double First, double Last, List<System.Text.Json.JsonElement> Lines) Train(RlOptions o)
    {
        var clock = Stopwatch.StartNew();
        RlTrainer.Create(o, [(RlTestKit.CountOf('a'), 1.0)]).Run();
        var lines = RlTestKit.TrainMetrics(o.Out!);
        var scores = lines.Select(l => l.GetProperty("objective/scores").GetDouble()).ToArray();
        output.WriteLine($"{o.GetType().Name}: {clock.ElapsedMilliseconds} ms; scores {string.Join(" ", scores.Select(s => s.ToString("F2")))}");
        return (scores.Take(3).Average(), scores.TakeLast(3).Average(), lines);
    }

    [Fact]
    public void PpoRaisesTheReward()
    {
        var (first, last, _) = Train(Options(new PpoOptions { KlCoef = 0.01f }, "ppo", 20));
        Assert.True(last > first + 1, $"PPO: mean reward {first:F3} → {last:F3}");
    }

    [Fact]
    public void GrpoRaisesTheReward()
    {
        var (first, last, _) = Train(Options(new GrpoOptions { NumGenerations = 8 }, "grpo", 20));
        Assert.True(last > first + 1, $"GRPO: mean reward {first:F3} → {last:F3}");
    }

    [Fact]
    public void RlooRaisesTheReward()
    {
        var (first, last, _) = Train(Options(new RlooOptions { RlooK = 4, KlCoef = 0.01f }, "rloo", 20));
        Assert.True(last > first + 1, $"RLOO: mean reward {first:F3} → {last:F3}");
    }
}
