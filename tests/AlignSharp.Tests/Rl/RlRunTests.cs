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

    private T Options<T>(T o, string run, int steps) where T : RlOptions => _kit.Options(o, run, steps, seed: 5, learningRate: 1e-2f, maxNewTokens: 6, batchSize: 8);

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

    /// <summary>--repetition-penalty (TRL's GRPO/RLOO repetition_penalty) reaches the sampler and shapes only the sampling:
    /// π_old stays the policy's own (the test above), so the two differ where the penalty moved the distribution.</summary>
    [Fact]
    public void ARepetitionPenaltyShapesOnlyTheSampling()
    {
        Assert.Equal(1.3f, RolloutOptions.From(new GrpoOptions { RepetitionPenalty = 1.3f }).Sampling.RepetitionPenalty);
        var options = new RolloutOptions { Sampling = new SamplingOptions { MaxNewTokens = 5, Temperature = 0.7f, RepetitionPenalty = 3f }, ForwardBatchSize = 3 };
        var batch = new RolloutCollector(Models(value: false), new RewardFunction(RlTestKit.CountOf('a')), options).Collect(Prompts(3), completionsPerPrompt: 2, seed: 11);
        Assert.Contains(Enumerable.Range(0, batch.Count), i => batch.LogProbs[i].Zip(batch.SamplingLogProbs[i]).Any(p => Math.Abs(p.First - p.Second) > 1e-3));
        Assert.Throws<UserInputException>(() => new GrpoOptions { Out = "x", Policy = "p", Prompts = "q", RewardUrl = "http://localhost:1/", RepetitionPenalty = 0 }.Validate());
    }

    /// <summary>--chat-template-kwargs reach the policy's prompts: a template's variable, given as a keyword argument, is in
    /// the rendered prompt that the samples record shows.</summary>
    [Fact]
    public void ChatTemplateKwargsRenderThePolicysPrompts()
    {
        string template = _kit.Path("banner.jinja");
        File.WriteAllText(template, "{{ banner | default('') }}{% for m in messages %}{{ m.content }}{% endfor %}{% if add_generation_prompt %}:{% endif %}");
        string prompts = _kit.Path("messages.jsonl");
        File.WriteAllLines(prompts, Enumerable.Range(0, 4).Select(i => $"{{\"prompt\": [{{\"role\": \"user\", \"content\": \"Q{i}\"}}]}}"));
        foreach (var (run, kwargs, start) in new[] { ("plain", (string?)null, "Q"), ("kwargs", "{\"banner\": \"KW \"}", "KW Q") })
        {
            var o = Options(new GrpoOptions { NumGenerations = 2 }, run, 1) with { Prompts = prompts, BatchSize = 4, ChatTemplate = template, ChatTemplateKwargs = kwargs };
            RlTrainer.Create(o, [(RlTestKit.CountOf('a'), 1.0)]).Run();
            var samples = File.ReadAllLines(Path.Combine(o.Out!, "metrics.jsonl")).Select(l => System.Text.Json.JsonDocument.Parse(l).RootElement)
                .First(e => e.GetProperty("split").GetString() == "samples").GetProperty("samples").EnumerateArray().ToList();
            Assert.NotEmpty(samples);
            foreach (var sample in samples) Assert.StartsWith(start, sample.GetProperty("prompt").GetString());
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

    public static TheoryData<string> Algorithms() => ["ppo", "grpo", "rloo"];

    /// <summary>The tiny policy with a long EOS embedding, so EOS is likely at some positions: completions of different lengths.</summary>
    private string EosPolicy()
    {
        string dir = _kit.Path("eos-policy");
        if (Directory.Exists(dir)) return dir;
        var model = ModelIO.Load(_kit.Policy());
        var embed = model.Parameter("embed.weight");
        int d = model.Config.HiddenSize;
        for (int j = 0; j < d; j++) embed.Span[ByteTokenizer.EosTokenId * d + j] *= 12f;
        ModelIO.Save(model, dir);
        Pretrained.CopyTokenizerFiles(_kit.Policy(), dir);
        return dir;
    }

    [Theory]
    [MemberData(nameof(Algorithms))]
    public void GradientAccumulationOneByEightEqualsEightByOne(string algorithm)
    {
        // The same 8 completions (same prompts and seeds; generation does not depend on the micro-batch size), one update:
        // one micro-batch of 8 versus 8 of 1. PPO's loss is a mean over all completion tokens of the minibatch (lengths
        // differ), GRPO/RLOO's a mean over completions, so both must normalise by the whole step, not per micro-batch.
        // ε = 1 makes Adam's first step ≈ lr·g (linear in the gradient): with the default ε it is ≈ lr·sign(g), which
        // turns float rounding in gradients that nearly cancel (group-centred advantages) into whole-step differences.
        RlOptions Make(string run, int batch, int accumulation)
        {
            RlOptions o = algorithm switch
            {
                "ppo" => new PpoOptions { NumPpoEpochs = 1 },
                "grpo" => new GrpoOptions { NumGenerations = 4, NumPpoEpochs = 1 },
                _ => new RlooOptions { RlooK = 4, NumPpoEpochs = 1 },
            };
            return Options(o, run, 1) with { Policy = EosPolicy(), BatchSize = batch, GradientAccumulationSteps = accumulation, GenerationBatchSize = 8, LearningRate = 0.1f, AdamEpsilon = 1f, MaxNewTokens = 8 };
        }
        var a = Make("a", 8, 1);
        var b = Make("b", 1, 8);
        RlTrainer.Create(a, [(RlTestKit.CountOf('a'), 1.0)]).Run();
        RlTrainer.Create(b, [(RlTestKit.CountOf('a'), 1.0)]).Run();
        var first = RlTestKit.TrainMetrics(a.Out!)[0];
        Assert.Equal(first.GetProperty("completion_length").GetDouble(), RlTestKit.TrainMetrics(b.Out!)[0].GetProperty("completion_length").GetDouble());
        int ended = (int)first.GetProperty("val/num_eos_tokens").GetDouble();
        Assert.True(ended is > 0 and < 8, $"{ended} of 8 completions ended early: the lengths should differ");
        var start = ModelIO.Load(EosPolicy());
        var x = ModelIO.Load(Path.Combine(a.Out!, "final"));
        var y = ModelIO.Load(Path.Combine(b.Out!, "final"));
        double maxDiff = 0, maxMove = 0;
        foreach (var (name, p) in x.NamedParameters)
        {
            var u = p.ToArray(); var v = y.Parameter(name).ToArray(); var s0 = start.Parameter(name).ToArray();
            for (int i = 0; i < u.Length; i++) { maxDiff = Math.Max(maxDiff, Math.Abs(u[i] - v[i])); maxMove = Math.Max(maxMove, Math.Abs(u[i] - s0[i])); }
        }
        Assert.True(maxMove > 1e-4, $"training moved the weights by at most {maxMove}");
        Assert.True(maxDiff < 1e-4 * maxMove, $"{algorithm}: 1×8 and 8×1 differ by up to {maxDiff} (weights moved up to {maxMove})");
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
        Assert.Contains("2 non-finite losses, gradients, updates or rewards in a row; stopped", e.Message);
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
