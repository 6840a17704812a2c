using AlignSharp.Models;
using AlignSharp.Text;
using AlignSharp.Training.Data;
using AlignSharp.Training.Rewards;
using AlignSharp.Training.Rl;

namespace AlignSharp.Tests.Rl;

/// <summary>Rollouts, the KL coefficient's effect, resume, and non-finite rewards on the tiny model.</summary>
public sealed class RlRunTests : IDisposable
{
    private readonly RlTestKit _kit = new();
    public void Dispose() => _kit.Dispose();

    private T Options<T>(T o, string run, int steps) where T : RlOptions => o with
    {
        Policy = _kit.Policy(),
        Prompts = _kit.Prompts(),
        Out = _kit.Path(run),
        MaxSteps = steps,
        Seed = 5,
        LearningRate = 1e-2f,
        LrScheduler = "constant",
        MaxNewTokens = 6,
        Temperature = 1f,
        BatchSize = 8,
        GradientAccumulationSteps = 2,
        SaveSteps = 0,
        Threads = 2,
    };

    private RlModels Models(bool value)
    {
        var pre = Pretrained.Load(_kit.Policy());
        return new RlModels(pre.Model, ModelIO.Load(_kit.Policy()), value ? ModelIO.Load(_kit.Policy(), HeadKind.Scalar) : null, pre.Tokenizer!, ChatTemplate.Plain);
    }

    private static PromptExample[] Prompts(int n) => Enumerable.Range(0, n).Select(i => new PromptExample(ChatContent.FromText($"P{i}"), new RecordSource("mem", i + 1))).ToArray();

    [Fact]
    public void RolloutRecomputesTheSamplingLogProbsAndStartsAtZeroKl()
    {
        foreach (var estimator in new[] { KlEstimator.K1, KlEstimator.K2, KlEstimator.K3, KlEstimator.Full })
        {
            var options = new RolloutOptions
            {
                Sampling = new SamplingOptions { MaxNewTokens = 5, Temperature = 0.7f },
                Estimator = estimator, MissingEosPenalty = 3f, ForwardBatchSize = 3,
            };
            var collector = new RolloutCollector(Models(value: true), new RewardFunction(RlTestKit.CountOf('a')), options);
            var batch = collector.Collect(Prompts(3), completionsPerPrompt: 2, seed: 11);
            Assert.Equal(6, batch.Count);
            Assert.Equal(batch.PromptIds[0], batch.PromptIds[1]);   // a prompt's completions are consecutive
            for (int i = 0; i < batch.Count; i++)
            {
                int n = batch.CompletionIds[i].Length;
                Assert.True(n is >= 1 and <= 5);
                Assert.Equal(n, batch.LogProbs[i].Length);
                Assert.Equal(n, batch.Values![i].Length);
                for (int t = 0; t < n; t++)
                {
                    // The forward pass at the training temperature gives the generator's sampling log-probabilities.
                    Assert.True(Math.Abs(batch.LogProbs[i][t] - batch.SamplingLogProbs[i][t]) < 1e-4, $"{batch.LogProbs[i][t]} vs {batch.SamplingLogProbs[i][t]}");
                    Assert.True(Math.Abs(batch.Kl[i][t]) < 1e-5);     // policy = reference at the start
                }
                float expected = batch.Completions[i].Count(c => c == 'a') - (batch.EndsWithEos[i] ? 0 : 3f);
                Assert.Equal(expected, batch.Scores[i]);
            }
        }
    }

    [Fact]
    public void RewardModelScoresAreNormalisedWithTheStoredStatistics()
    {
        var rm = RewardModel.Load(_kit.RewardModelDir(mean: 1, std: 2));
        var inputs = new RewardInputs([ChatContent.FromText("Q:"), ChatContent.FromText("R:")], ["Q:", "R:"], ["abc", "x"]);
        var raw = rm.ScoreSequences([rm.Encode(inputs.Prompts[0], "abc"), rm.Encode(inputs.Prompts[1], "x")]);
        var scores = new RewardModelSource(rm).Score(inputs);
        Assert.Equal((raw[0] - 1) / 2, scores[0], 5);
        Assert.Equal((raw[1] - 1) / 2, scores[1], 5);
        Assert.Equal(raw, new RewardModelSource(rm, normalize: false).Score(inputs));
    }

    [Fact]
    public void ALargerKlCoefficientEndsCloserToTheReference()
    {
        double FinalKl(float beta, string run)
        {
            var o = Options(new RlooOptions { RlooK = 4, KlCoef = beta, KlEstimator = "full" }, run, 14);
            RlTrainer.Create(o, [(RlTestKit.CountOf('a'), 1.0)]).Run();
            return RlTestKit.TrainMetrics(o.Out!).TakeLast(3).Average(l => l.GetProperty("objective/kl").GetDouble());
        }
        double small = FinalKl(0f, "beta0"), large = FinalKl(1f, "beta1");
        Assert.True(large < 0.5 * small, $"KL with β = 1: {large:F3}; with β = 0: {small:F3}");
    }

    [Fact]
    public void ResumeContinuesBitForBit()
    {
        PpoOptions Ppo(string run) => Options(new PpoOptions { TargetKl = 0.5f, KlCoef = 0.2f, KlHorizon = 100, NumMiniBatches = 2, NumPpoEpochs = 2 }, run, 4) with { SaveSteps = 2, BatchSize = 4 };
        var a = Ppo("full");
        var summaryA = RlTrainer.Create(a, [(RlTestKit.CountOf('a'), 1.0)]).Run();
        var b = Ppo("resumed") with { Resume = Path.Combine(a.Out!, "checkpoints", "step-000002") };
        var summaryB = RlTrainer.Create(b, [(RlTestKit.CountOf('a'), 1.0)]).Run();
        Assert.Equal(summaryA["kl_coef"], summaryB["kl_coef"]);
        Assert.NotEqual(0.2, (double)summaryA["kl_coef"]!);    // the adaptive controller moved β
        foreach (var file in new[] { "final/model.safetensors", "value_model/model.safetensors" })
            Assert.Equal(File.ReadAllBytes(Path.Combine(a.Out!, file)), File.ReadAllBytes(Path.Combine(b.Out!, file)));
        var last = RlTestKit.TrainMetrics(b.Out!);
        Assert.Equal([3, 4], last.Select(l => l.GetProperty("step").GetInt32()));

        // Training changed every tensor of the policy and of the value model.
        var start = ModelIO.Load(_kit.Policy());
        var end = ModelIO.Load(Path.Combine(a.Out!, "final"));
        foreach (var (name, p) in start.NamedParameters)
            Assert.False(p.Span.SequenceEqual(end.Parameter(name).Span), $"policy {name} did not change");
        var valueStart = ModelIO.Load(_kit.Policy(), HeadKind.Scalar, a.Seed);
        var valueEnd = ModelIO.Load(Path.Combine(a.Out!, "value_model"));
        foreach (var (name, p) in valueStart.NamedParameters)
            Assert.False(p.Span.SequenceEqual(valueEnd.Parameter(name).Span), $"value {name} did not change");
    }

    [Fact]
    public void NonFiniteRewardsAreSkippedThenStopTheRunWithTheLastGoodCheckpointIntact()
    {
        int calls = 0;
        var flaky = new FunctionRewardSource("flaky", (_, c) => ++calls is 2 or > 3 ? c.Select(_ => float.NaN).ToArray() : c.Select(_ => 1f).ToArray());
        var o = Options(new GrpoOptions { NumGenerations = 4 }, "nan", 10) with { SaveSteps = 1, SaveTotalLimit = 0, MaxBadStepsInARow = 2 };
        var trainer = RlTrainer.Create(o, [(flaky, 1.0)]);
        var e = Assert.Throws<UserInputException>(() => trainer.Run());
        Assert.Contains("2 non-finite losses, gradients or rewards in a row; stopped", e.Message);
        Assert.Contains("step-000003", e.Message);
        // Step 2 was skipped (counted), steps 1 and 3 trained and were checkpointed; steps 4 and 5 stopped the run.
        var lines = RlTestKit.TrainMetrics(o.Out!);
        Assert.Equal([1, 3], lines.Select(l => l.GetProperty("step").GetInt32()));
        Assert.Equal(1, lines[1].GetProperty("skipped_steps").GetInt32());
        var checkpoint = Path.Combine(o.Out!, "checkpoints", "step-000003", "policy");
        var model = ModelIO.Load(checkpoint);
        Assert.All(model.NamedParameters, p => Assert.True(p.Parameter.ToArray().All(float.IsFinite)));
    }
}
