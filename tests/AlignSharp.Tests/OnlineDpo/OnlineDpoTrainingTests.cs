using System.Diagnostics;
using AlignSharp.Models;
using AlignSharp.Tests.Rl;
using AlignSharp.Text;
using AlignSharp.Training.Data;
using AlignSharp.Training.Dpo;
using AlignSharp.Training.Evaluation;
using AlignSharp.Training.OnlineDpo;
using AlignSharp.Training.Rl;
using Xunit.Abstractions;

namespace AlignSharp.Tests.OnlineDpo;

/// <summary>
/// Online DPO on the RL sanity task (judge: occurrences of 'a' in the completion), with no preference data at all:
/// it must raise the judge's score; judging (ties, penalty, preferences) and the metrics by hand; resume bit for bit.
/// </summary>
public sealed class OnlineDpoTrainingTests(ITestOutputHelper output) : IDisposable
{
    private readonly RlTestKit _kit = new();
    public void Dispose() => _kit.Dispose();

    private static readonly TextWriter Quiet = TextWriter.Null;

    private OnlineDpoOptions Options(string run, int steps) => new()
    {
        Policy = _kit.Policy(),
        Prompts = _kit.Prompts(count: 16),
        Out = _kit.Path(run),
        MaxSteps = steps,
        Seed = 3,
        LearningRate = 1e-2f,
        LrScheduler = "constant",
        MaxNewTokens = 8,
        Temperature = 1f,
        BatchSize = 16,
        SaveSteps = 0,
        LoggingSteps = 1,
        Threads = 2,
    };

    private static IEvalJudge CountJudge() => new RewardJudge(RlTestKit.CountOf('a'), "count of 'a'");

    /// <summary>--judge-model is a frozen model: kept in bf16 when asked (as --frozen-dtype keeps the RL trainers' reward
    /// model), float32 otherwise; its scores move by no more than the rounding of its weights.</summary>
    [Fact]
    public void AJudgeModelIsKeptInTheFrozenStorage()
    {
        string dir = _kit.RewardModelDir();
        var inputs = new RewardInputs([ChatContent.FromText("ab")], ["ab"], ["aab"]);
        float[] Scores(bool bf16, out int bf16Tensors)
        {
            using var judge = Judges.FromFlags(dir, null, 4, bf16Matrices: bf16);
            var source = (RewardModelSource)((RewardJudge)judge).Source;
            bf16Tensors = source.Model.Model.NamedParameters.Count(p => p.Parameter.IsBf16);
            return source.Score(inputs);
        }
        var wide = Scores(false, out int wideBf16);
        var narrow = Scores(true, out int narrowBf16);
        Assert.Equal(0, wideBf16);
        Assert.True(narrowBf16 > 0);
        Assert.True(float.IsFinite(narrow[0]));
        Assert.NotEqual(wide[0], narrow[0]);
    }

    [Fact]
    public void RaisesTheJudgesScoreWithoutPreferenceData()
    {
        var clock = Stopwatch.StartNew();
        var o = Options("sanity", 40) with { Beta = 0.5f };
        using var judge = CountJudge();
        OnlineDpoTrainer.Train(o, judge, Quiet);
        var lines = RlTestKit.TrainMetrics(o.Out!);
        var scores = lines.Select(l => l.GetProperty("objective/scores").GetDouble()).ToArray();
        output.WriteLine($"{clock.ElapsedMilliseconds} ms; scores {string.Join(" ", scores.Select(s => s.ToString("F2")))}");
        double first = scores.Take(3).Average(), last = scores.TakeLast(3).Average();
        Assert.True(last > first + 1, $"online DPO: mean judge score {first:F3} → {last:F3}");
        foreach (var key in OnlineDpoTask.MetricNames.Concat(DpoMetrics.Names).Append("loss"))
            Assert.True(lines[^1].TryGetProperty(key, out _), $"metrics.jsonl lacks {key}");
        Assert.True(File.Exists(Path.Combine(o.Out!, "final", "model.safetensors")));
    }

    /// <summary>A judge that returns fixed rewards (first n for the first completions, then the second) or preferences.</summary>
    private sealed class FixedJudge(double[]? first, double[]? second, double[]? preferences) : IEvalJudge
    {
        public string Description => "fixed";
        public JudgeVerdict Judge(RewardInputs policy, IReadOnlyList<string>? baselineCompletions) => new(first, second, preferences);
        public void Dispose() { }
    }

    private OnlineDpoTask Task(OnlineDpoOptions o, IEvalJudge judge, out OnlinePrompt[] prompts)
    {
        var pre = Pretrained.Load(o.Policy!);
        var tokenizer = pre.Tokenizer!;
        var batches = OnlineDpoTrainer.Batches(o, tokenizer, ChatTemplate.Get("plain"), Quiet);
        prompts = batches[0];
        // The reference is the policy itself: every implicit reward and KL is 0.
        return new OnlineDpoTask(o, pre.Model, tokenizer, ReferenceLogProbs.OnTheFly(pre.Model), judge, batches);
    }

    private static Completion C(string finish, params int[] ids) => new(ids, "", new float[ids.Length], finish);

    [Fact]
    public void JudgingPicksTheHigherRewardAfterThePenaltyTiesGoToTheFirstAndPreferencesAreTakenAsGiven()
    {
        const int eos = ByteTokenizer.EosTokenId;
        var o = Options("judge", 1) with { BatchSize = 4, MissingEosPenalty = 2f };
        // Pair 0: 1 vs 3 → second. Pair 1: 5 vs 5 → tie, first. Pair 2: 4 (no EOS: 4 − 2 = 2) vs 3 → second.
        // Pair 3: 0 vs 1 (no EOS: −1) → first.
        var rewardTask = Task(o, new FixedJudge([1, 5, 4, 0], [3, 5, 3, 1], null), out var prompts);
        var completions = new[]
        {
            C("eos", 97, eos), C("eos", 98, eos), C("length", 97, 97), C("eos", eos),     // first of each prompt
            C("eos", 99, eos), C("eos", 100, eos), C("eos", 97, eos), C("length", 98, 98), // second of each prompt
        };
        var pairs = rewardTask.Judge(prompts, completions);
        Assert.Same(completions[4], pairs[0].Chosen);
        Assert.Same(completions[1], pairs[1].Chosen);
        Assert.Same(completions[6], pairs[2].Chosen);
        Assert.Same(completions[3], pairs[3].Chosen);
        Assert.Equal([3.0, 5.0, 3.0, 0.0], pairs.Select(p => p.ChosenScore!.Value));
        Assert.Equal([1.0, 5.0, 2.0, -1.0], pairs.Select(p => p.RejectedScore!.Value));

        // The metrics of these pairs, by hand: scores are the penalised rewards; margins chosen − rejected;
        // 6 of the 8 completions end with EOS; with the policy as its own reference, KL and implicit rewards are 0.
        var r = rewardTask.Score(prompts, pairs);
        double Avg(string k) => r.MetricSums[k] / 4;
        Assert.Equal((3 + 1 + 5 + 5 + 3 + 2 + 0 - 1) / 8.0, Avg("objective/scores"), 6);
        Assert.Equal((2 + 0 + 1 + 1) / 4.0, Avg("objective/scores_margin"), 6);
        Assert.Equal(6 / 8.0, Avg("val/contain_eos_token"), 6);
        Assert.Equal(0.1, Avg("beta"), 6);
        Assert.Equal(0, Avg("objective/kl"), 5);
        Assert.Equal(0, Avg("objective/non_score_reward"), 5);
        Assert.Equal(Avg("objective/scores"), Avg("objective/rlhf_reward"), 5);
        Assert.Equal(0, Avg("rewards/margins"), 5);
        Assert.Equal(Math.Log(2), r.LossSum.Item() / 4, 5);   // −log σ(0) per pair
        // Entropy (TRL's: −Σ log π of the sampled tokens, averaged over completions) = −(logps/chosen + logps/rejected)/2.
        Assert.Equal(-(Avg("logps/chosen") + Avg("logps/rejected")) / 2, Avg("objective/entropy"), 4);
        Assert.True(Avg("objective/entropy") > 0);

        // Preferences: 0 → the first, 1 → the second, 0.5 → the first; no scores are logged.
        var prefTask = Task(o, new FixedJudge(null, null, [0, 1, 0.5, 0.8]), out _);
        var prefs = prefTask.Judge(prompts, completions);
        Assert.Equal(new[] { completions[0], completions[5], completions[2], completions[7] }, prefs.Select(p => p.Chosen));
        var rp = prefTask.Score(prompts, prefs);
        Assert.False(rp.MetricSums.ContainsKey("objective/scores"));
        Assert.False(rp.MetricSums.ContainsKey("objective/rlhf_reward"));
        Assert.True(rp.MetricSums.ContainsKey("objective/kl"));
    }

    [Theory]
    [InlineData("sigmoid")]
    [InlineData("ipo")]
    [InlineData("hinge")]
    [InlineData("simpo")]
    [InlineData("orpo")]
    [InlineData("plackett_luce")]
    public void EveryLossTypeTrains(string lossType)
    {
        var o = Options("loss-" + lossType, 2) with { LossType = lossType, BatchSize = 4 };
        using (var judge = CountJudge()) OnlineDpoTrainer.Train(o, judge, Quiet);
        var lines = RlTestKit.TrainMetrics(o.Out!);
        Assert.Equal(2, lines.Count);
        Assert.All(lines, l => Assert.True(double.IsFinite(l.GetProperty("loss").GetDouble())));
        // The reference-free losses log no KL (there is no reference to measure it against).
        Assert.Equal(lossType is not ("simpo" or "orpo"), lines[0].TryGetProperty("objective/kl", out _));
    }

    /// <summary>TRL's OnlineDPOTrainer scores ipo on the answers' summed log-probabilities (its DPOTrainer on per-token
    /// means): the ipo loss of a pair is (Δ − 1/(2β))² with Δ the summed log-ratio margin, which the sigmoid run of the same
    /// samples logs as (rewards/chosen − rewards/rejected)/β.</summary>
    [Fact]
    public void IpoScoresSummedLogProbabilitiesAsTrlsOnlineTrainer()
    {
        string reference = AlignSharp.Tests.Training.TinyModels.Create(_kit.Path("ref"), seed: 7);
        var o = Options("sigmoid", 1) with { Prompts = _kit.Prompts("one.jsonl", count: 1), BatchSize = 1, LearningRate = 0, Reference = reference };
        using (var judge = CountJudge()) OnlineDpoTrainer.Train(o, judge, Quiet);
        using (var judge = CountJudge()) OnlineDpoTrainer.Train(o with { Out = _kit.Path("ipo"), LossType = "ipo" }, judge, Quiet);
        var sigmoid = RlTestKit.TrainMetrics(o.Out!)[0];
        var ipo = RlTestKit.TrainMetrics(_kit.Path("ipo"))[0];
        double beta = o.Beta, delta = (sigmoid.GetProperty("rewards/chosen").GetDouble() - sigmoid.GetProperty("rewards/rejected").GetDouble()) / beta;
        double expected = Math.Pow(delta - 1 / (2 * beta), 2);
        Assert.True(Math.Abs(expected - ipo.GetProperty("loss").GetDouble()) <= 1e-4 * expected, $"{expected} vs {ipo.GetProperty("loss").GetDouble()}");
    }

    [Fact]
    public void ResumeEqualsUninterruptedTraining()
    {
        var o = Options("a", 4) with { SaveSteps = 2, BatchSize = 4, GradientAccumulationSteps = 2 };
        using (var judge = CountJudge()) OnlineDpoTrainer.Train(o, judge, Quiet);
        var b = o with { Out = _kit.Path("b"), Resume = Path.Combine(o.Out!, "checkpoints", "step-000002") };
        using (var judge = CountJudge()) OnlineDpoTrainer.Train(b, judge, Quiet);
        Assert.Equal(File.ReadAllBytes(Path.Combine(o.Out!, "final", "model.safetensors")), File.ReadAllBytes(Path.Combine(b.Out!, "final", "model.safetensors")));
        var after = RlTestKit.TrainMetrics(b.Out!);
        Assert.Equal([3, 4], after.Select(l => l.GetProperty("step").GetInt32()));
        var full = RlTestKit.TrainMetrics(o.Out!);
        Assert.Equal(full[3].GetProperty("objective/scores").GetDouble(), after[1].GetProperty("objective/scores").GetDouble());
        Assert.Equal(full[3].GetProperty("loss").GetDouble(), after[1].GetProperty("loss").GetDouble());

        // Training changed every tensor of the policy.
        var start = ModelIO.Load(_kit.Policy());
        var end = ModelIO.Load(Path.Combine(o.Out!, "final"));
        foreach (var (name, p) in start.NamedParameters)
            Assert.False(p.Span.SequenceEqual(end.Parameter(name).Span), $"policy {name} did not change");
    }
}
