using System.Text.Json;
using AlignSharp.Engine;
using AlignSharp.Models;
using AlignSharp.Text;
using AlignSharp.Training.Data;
using AlignSharp.Training.RewardModeling;
using AlignSharp.Training.Rewards;
using AlignSharp.Training.Runs;
using AlignSharp.Training.Sft;

namespace AlignSharp.Tests.Training;

public sealed class SupervisedTrainerTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("alignsharp-train-").FullName;
    public void Dispose() => Directory.Delete(_dir, recursive: true);
    private string P(string name) => Path.Combine(_dir, name);

    [Fact]
    public void BradleyTerryLossAndGradientMatchAHandComputedCase()
    {
        // pairs: (r_c, r_r, margin, weight) = (1.0, 0.5, 0, 1), (0.2, 0.9, 0.1, 2)
        var c = Tensor.FromArray([1.0f, 0.2f], 2); c.RequiresGrad = true;
        var r = Tensor.FromArray([0.5f, 0.9f], 2); r.RequiresGrad = true;
        var loss = RewardLosses.BradleyTerrySum(c, r, [0f, 0.1f], [1f, 2f], centerCoef: 0.5f);
        double d1 = 0.5, d2 = 0.2 - 0.9 - 0.1;
        double sp1 = Math.Log(1 + Math.Exp(-d1)), sp2 = Math.Log(1 + Math.Exp(-d2));
        // The centering term weighs each pair as the Bradley–Terry term does.
        double center = 0.5 * (1 * Math.Pow(1.5, 2) + 2 * Math.Pow(1.1, 2));
        Assert.Equal(sp1 + 2 * sp2 + center, loss.Item(), 5);
        loss.Backward();
        // d/dr_c = −w·σ(−d) + 2·coef·w·(r_c + r_r); d/dr_r = +w·σ(−d) + 2·coef·w·(r_c + r_r)
        double s1 = 1 / (1 + Math.Exp(d1)), s2 = 1 / (1 + Math.Exp(d2));
        Assert.Equal(-s1 + 1.5, c.Grad!.Span[0], 5);
        Assert.Equal(-2 * s2 + 2 * 1.1, c.Grad!.Span[1], 5);
        Assert.Equal(s1 + 1.5, r.Grad!.Span[0], 5);
        Assert.Equal(2 * s2 + 2 * 1.1, r.Grad!.Span[1], 5);
    }

    private string SftData(int n = 8)
    {
        var words = new[] { "cat", "dog", "sun", "sea", "red", "owl", "fig", "ant" };
        return TinyModels.WriteJsonl(P("sft.jsonl"), Enumerable.Range(0, n).Select(i => (object)new { prompt = $"{words[i % 8]}?", completion = $" {new string(words[i % 8].Reverse().ToArray())}!" }));
    }

    [Fact]
    public void SftDrivesTheLossDownOnAMemorisableSet()
    {
        var model = TinyModels.Create(P("base"));
        var o = new SftOptions { Model = model, Data = SftData(), Out = P("run"), MaxSteps = 100, LearningRate = 1e-2f, LrScheduler = "constant", BatchSize = 8, LoggingSteps = 10, SaveSteps = 0, EvalData = SftData() };
        o.Validate();
        var summary = SftTrainer.Train(o, TextWriter.Null);
        var lines = File.ReadAllLines(P("run/metrics.jsonl")).Select(l => JsonDocument.Parse(l).RootElement).ToList();
        var train = lines.Where(l => l.GetProperty("split").GetString() == "train").ToList();
        double first = train[0].GetProperty("loss").GetDouble(), last = train[^1].GetProperty("loss").GetDouble();
        Assert.True(first > 3.5, $"first logged loss {first}");
        Assert.True(last < 0.5, $"loss fell only from {first} to {last}");
        Assert.True((double)summary["eval_loss"]! < 0.5);
        Assert.True(File.Exists(P("run/final/model.safetensors")) && File.Exists(P("run/final/tokenizer.json")));
        Assert.True(File.Exists(P("run/run_config.json")) && File.Exists(P("run/summary.json")));
        foreach (var key in new[] { "step", "time", "loss", "learning_rate", "grad_norm", "tokens_per_s", "mean_token_accuracy" }) Assert.True(train[^1].TryGetProperty(key, out _), key);
        // TRL's mean_token_accuracy: share of completion tokens that are the argmax; near chance (1/259) at first, high once memorised.
        double accFirst = train[0].GetProperty("mean_token_accuracy").GetDouble(), accLast = train[^1].GetProperty("mean_token_accuracy").GetDouble();
        Assert.True(accFirst < 0.5 && accLast > 0.8 && accLast <= 1, $"token accuracy {accFirst} → {accLast}");
        double evalAcc = (double)summary["eval_mean_token_accuracy"]!;
        Assert.True(evalAcc > 0.8 && evalAcc <= 1, $"eval token accuracy {evalAcc}");
    }

    /// <summary>--packing keeps examples apart: one step over the whole set logs the same loss and token accuracy
    /// packed as unpacked (the same label tokens, each seeing only its own example), before any update.</summary>
    [Fact]
    public void PackedExamplesScoreAsUnpackedOnes()
    {
        var model = TinyModels.Create(P("base"));
        double[] FirstStep(string run, bool packing)
        {
            var o = new SftOptions { Model = model, Data = SftData(), Out = P(run), MaxSteps = 1, LearningRate = 1e-3f, BatchSize = 8,
                LoggingSteps = 1, SaveSteps = 0, Packing = packing, MaxLength = 32 };
            SftTrainer.Train(o, TextWriter.Null);
            var line = File.ReadAllLines(P(run + "/metrics.jsonl")).Select(l => JsonDocument.Parse(l).RootElement).First(l => l.GetProperty("split").GetString() == "train");
            return [line.GetProperty("loss").GetDouble(), line.GetProperty("mean_token_accuracy").GetDouble(), line.GetProperty("num_tokens").GetDouble()];
        }
        var plain = FirstStep("plain", false);
        var packed = FirstStep("packed", true);
        Assert.Equal(plain[0], packed[0], 4);
        Assert.Equal(plain[1], packed[1], 6);
    }

    [Fact]
    public void PromptTokensCarryNoLoss()
    {
        // The summed loss covers exactly the completion's targets ("d", "e", EOS), computed by hand from logits.
        var model = TinyModels.Create(P("base"));
        var pre = AlignSharp.Text.Pretrained.Load(model);
        var seqs = AlignSharp.Training.Data.SftEncoder.Encode(
            [new AlignSharp.Training.Data.SftExample(AlignSharp.Training.Data.ChatContent.FromText("abc"), AlignSharp.Training.Data.ChatContent.FromText("de"), new("x", 1))],
            pre.Tokenizer!, AlignSharp.Training.Data.ChatTemplate.Get("plain")).Records;
        var task = new SftTask(pre.Model, pre.Tokenizer!, model, seqs, [], 1, 0);
        Assert.Equal(3, task.Weight(0)); // "d", "e", EOS
        using var scope = TensorScope.Begin();
        var loss = task.Forward(0, new Random(0)).LossSum;
        using var noGrad = Autograd.NoGrad();
        var ids = new[] { 256, 'a', 'b', 'c', 'd', 'e', 257 };
        var logits = pre.Model.Forward(ids, 1, ids.Length).ToArray();
        double manual = 0;
        for (int t = 3; t < 6; t++)
        {
            var row = logits.AsSpan(t * 259, 259).ToArray();
            double max = row.Max(), lse = max + Math.Log(row.Sum(x => Math.Exp(x - max)));
            manual += lse - row[ids[t + 1]];
        }
        Assert.Equal(manual, loss.Item(), 3);
    }

    [Fact]
    public void ResumeEqualsUninterruptedTrainingBitForBit()
    {
        var model = TinyModels.Create(P("base"));
        var data = SftData();
        SftOptions Opts(string run, int steps) => new() { Model = model, Data = data, Out = P(run), MaxSteps = steps, LearningRate = 1e-3f, BatchSize = 2, SaveSteps = 3, LoggingSteps = 1, LrScheduler = "cosine", WarmupSteps = 2 };
        SftTrainer.Train(Opts("full", 6), TextWriter.Null);
        SftTrainer.Train(Opts("part", 6), TextWriter.Null);
        // Interrupt: delete the final model and the last checkpoint, then resume from step 3.
        Directory.Delete(P("part/final"), true);
        Directory.Delete(P("part/checkpoints/step-000006"), true);
        SftTrainer.Train(Opts("part", 6) with { Resume = "" }, TextWriter.Null);
        var a = ModelIO.Load(P("full/final")); var b = ModelIO.Load(P("part/final"));
        foreach (var (name, p) in a.NamedParameters) Assert.Equal(p.ToArray(), b.Parameter(name).ToArray());
        var la = File.ReadAllLines(P("full/metrics.jsonl")).Select(l => JsonDocument.Parse(l).RootElement.GetProperty("loss").GetDouble());
        var lb = File.ReadAllLines(P("part/metrics.jsonl")).Select(l => JsonDocument.Parse(l).RootElement.GetProperty("loss").GetDouble());
        Assert.Equal(la, lb);
    }

    [Fact]
    public void SftLogsNumTokensAsTrlTheCumulativeRealTokensTrainedOn()
    {
        // Byte tokenizer, plain template: BOS + prompt + completion + EOS, so the records have 4, 6, 8 and 10 tokens
        // (28 in all). Batches of 2 pad the shorter record; num_tokens counts no padding, so each epoch adds exactly 28.
        var model = TinyModels.Create(P("base"));
        string data = TinyModels.WriteJsonl(P("lengths.jsonl"), new object[]
        {
            new { prompt = "a", completion = "b" }, new { prompt = "ab", completion = "cd" },
            new { prompt = "abc", completion = "def" }, new { prompt = "abcd", completion = "efgh" },
        });
        var o = new SftOptions { Model = model, Data = data, Out = P("tokens"), MaxSteps = 4, BatchSize = 2, LoggingSteps = 1, SaveSteps = 3, LearningRate = 1e-3f };
        var summary = SftTrainer.Train(o, TextWriter.Null);
        var train = File.ReadAllLines(P("tokens/metrics.jsonl")).Select(l => JsonDocument.Parse(l).RootElement)
            .Where(l => l.GetProperty("split").GetString() == "train").Select(l => l.GetProperty("num_tokens").GetInt64()).ToArray();
        Assert.Equal(28, train[1]);
        Assert.Equal(56, train[3]);
        Assert.True(train[0] > 0 && train[0] < 28, $"step 1: {train[0]} tokens");
        Assert.Equal(56L, summary["num_tokens"]);
        // A resumed run counts on from the checkpoint (step 3's count is kept in its trainer_state.json).
        Directory.Delete(P("tokens/final"), true);
        Directory.Delete(P("tokens/checkpoints/step-000004"), true);
        SftTrainer.Train(o with { Resume = "" }, TextWriter.Null);
        var resumed = File.ReadAllLines(P("tokens/metrics.jsonl")).Select(l => JsonDocument.Parse(l).RootElement)
            .Where(l => l.GetProperty("split").GetString() == "train").ToArray();
        Assert.Equal(4, resumed[^1].GetProperty("step").GetInt32());
        Assert.Equal(56, resumed[^1].GetProperty("num_tokens").GetInt64());
    }

    [Fact]
    public void GradientAccumulationOneByEightEqualsEightByOne()
    {
        var model = TinyModels.Create(P("base"));
        var data = SftData();
        SftTrainer.Train(new SftOptions { Model = model, Data = data, Out = P("a"), MaxSteps = 1, LearningRate = 1e-3f, BatchSize = 8, SaveSteps = 0 }, TextWriter.Null);
        SftTrainer.Train(new SftOptions { Model = model, Data = data, Out = P("b"), MaxSteps = 1, LearningRate = 1e-3f, BatchSize = 1, GradientAccumulationSteps = 8, SaveSteps = 0 }, TextWriter.Null);
        var a = ModelIO.Load(P("a/final")); var b = ModelIO.Load(P("b/final"));
        foreach (var (name, p) in a.NamedParameters)
        {
            var x = p.ToArray(); var y = b.Parameter(name).ToArray();
            for (int i = 0; i < x.Length; i++) Assert.True(Math.Abs(x[i] - y[i]) < 2e-6, $"{name}[{i}]: {x[i]} vs {y[i]}");
        }
    }

    /// <summary>As transformers' Trainer: each epoch uses every micro-batch once, its last optimizer step taking what remains
    /// when the accumulation does not divide them (4 micro-batches at accumulation 3: steps of 3 and 1; at 6: one of 4).</summary>
    [Fact]
    public void AnEpochUsesEveryMicroBatchOnceWhateverTheAccumulation()
    {
        var model = TinyModels.Create(P("base"));
        var words = new[] { "a", "bb", "ccc", "dddd" };   // different lengths: num_tokens tells which examples were used
        var data = TinyModels.WriteJsonl(P("four.jsonl"), words.Select(w => (object)new { prompt = "q:", completion = " " + w }));
        (int Steps, double Epoch, long Tokens) Run(string name, int accumulation, double epochs)
        {
            SftTrainer.Train(new SftOptions { Model = model, Data = data, Out = P(name), Epochs = epochs, BatchSize = 1,
                GradientAccumulationSteps = accumulation, SaveSteps = 0, LoggingSteps = 1 }, TextWriter.Null);
            var last = File.ReadAllLines(P($"{name}/metrics.jsonl")).Select(l => JsonDocument.Parse(l).RootElement)
                .Last(l => l.GetProperty("split").GetString() == "train");
            return (last.GetProperty("step").GetInt32(), last.GetProperty("epoch").GetDouble(), last.GetProperty("num_tokens").GetInt64());
        }
        var one = Run("ga1", 1, 1);
        Assert.Equal(4, one.Steps);
        Assert.Equal((2, 1.0, one.Tokens), Run("ga3", 3, 1));
        Assert.Equal((1, 1.0, one.Tokens), Run("ga6", 6, 1));
        Assert.Equal((6, 3.0, 3 * one.Tokens), Run("ga3x3", 3, 3));
    }

    /// <summary>Rankings of different sizes, with ties, give their pairs different weights; the loss and metrics are weighted
    /// means (Σ over Σ weight, as dpo's), so an accuracy is a share: within [0, 1] in every logged window, and 1 where every
    /// pair is ordered right.</summary>
    [Fact]
    public void RewardModelMetricsOnWeightedRankingsAreShares()
    {
        var model = TinyModels.Create(P("base"), seed: 2);
        var rng = new Random(5);
        string Word() => new(Enumerable.Range(0, 3).Select(_ => (char)('a' + rng.Next(20))).ToArray());
        var data = TinyModels.WriteJsonl(P("rank.jsonl"), Enumerable.Range(0, 24).Select(i => i % 3 == 0
            ? (object)new { prompt = "q:", completions = new[] { " " + Word(), " " + Word(), " " + Word(), " " + Word() }, ranking = new object[] { 0, new[] { 1, 2 }, 3 } }
            : new { prompt = "q:", completions = new[] { " " + Word(), " " + Word() }, ranking = new object[] { 0, 1 } }));
        RewardModelTrainer.Train(new RewardModelOptions { Model = model, Data = data, Out = P("rm"), MaxSteps = 12, LearningRate = 3e-3f, BatchSize = 2,
            SaveSteps = 0, LoggingSteps = 1, EvalSplit = 0.25 }, TextWriter.Null);
        var lines = File.ReadAllLines(P("rm/metrics.jsonl")).Select(l => JsonDocument.Parse(l).RootElement).ToList();
        Assert.All(lines, l => Assert.InRange(l.GetProperty("accuracy").GetDouble(), 0, 1));
    }

    [Fact]
    public void RewardModelLearnsAMarkerPreferenceAndRecordsNormalisation()
    {
        var model = TinyModels.Create(P("base"), seed: 2);
        var rng = new Random(3);
        string Word() => new(Enumerable.Range(0, 4).Select(_ => (char)('a' + rng.Next(20))).ToArray());
        object Pair() { var w = Word(); return new { prompt = "say:", chosen = $" {w}#{Word()}", rejected = $" {w}{Word()}" }; }
        var train = TinyModels.WriteJsonl(P("prefs.jsonl"), Enumerable.Range(0, 96).Select(_ => Pair()));
        var eval = TinyModels.WriteJsonl(P("eval.jsonl"), Enumerable.Range(0, 40).Select(_ => Pair()));
        var o = new RewardModelOptions { Model = model, Data = train, EvalData = eval, Out = P("rm"), Epochs = 4, LearningRate = 2e-3f, BatchSize = 8, SaveSteps = 0, LoggingSteps = 12 };
        o.Validate();
        var summary = RewardModelTrainer.Train(o, TextWriter.Null);
        Assert.True((double)summary["eval_accuracy"]! > 0.95, $"held-out accuracy {summary["eval_accuracy"]}");
        var rm = RewardModel.Load(P("rm/final"));
        Assert.NotNull(rm.Info);
        Assert.True(rm.Info!.RewardStd > 0);
        var scores = rm.ScoreSequences([rm.Encode(AlignSharp.Training.Data.ChatContent.FromText("say:"), " abcd#efgh"), rm.Encode(AlignSharp.Training.Data.ChatContent.FromText("say:"), " abcdefgh")]);
        Assert.True(scores[0] > scores[1]);
    }
    [Fact]
    public void RewardModelScoresEachDistinctCompletionOnceWithTheFullBatchsLossAndGradients()
    {
        var pre = Pretrained.Load(TinyModels.Create(P("base"), seed: 4), HeadKind.Scalar, seed: 4);
        var rm = new RewardModel(pre.Model, pre.RequireTokenizer("test"), ChatTemplate.Get("plain"));
        // One ranking of four completions (six pairs, InstructGPT weights 1) and its batch of twelve rows.
        int[] prompt = [10, 11, 12];
        int[][] completions = [[20, 21, 2], [22, 2], [23, 24, 25, 2], [26, 27, 2]];
        var source = new RecordSource("r.jsonl", 1);
        var pairs = (from i in Enumerable.Range(0, 4) from j in Enumerable.Range(i + 1, 3 - i)
                     select new TokenizedPreference(prompt, completions[i], completions[j], 0.1f * i, 1f + 0.25f * j, source)).ToArray();
        var task = new RewardModelTask(rm, P("base"), pairs, [], batchSize: 6, seed: 0, centerCoef: 0.01f, maxLength: 64);
        Assert.Equal(1, task.MicroBatches);

        Dictionary<string, float[]> Gradients(Func<Tensor> loss, out float value)
        {
            foreach (var (_, p) in rm.Model.NamedParameters) p.ClearGrad();
            using var scope = TensorScope.Begin();
            var l = loss();
            value = l.Item();
            l.Backward();
            return rm.Model.NamedParameters.ToDictionary(x => x.Name, x => x.Parameter.Grad?.ToArray() ?? []);
        }

        var deduplicated = Gradients(() => task.Forward(0, new Random(0)).LossSum, out float lossDedup);
        var full = Gradients(() =>
        {
            var b = PreferenceBatch.Create(pairs, padId: 0);
            int rows = 2 * b.PairCount, t = b.SeqLen;
            var values = Ops.Reshape(rm.Model.Forward(b.InputIds, rows, t, keyMask: b.AttentionMask), rows * t, 1);
            var scores = Ops.Reshape(Ops.IndexSelect(values, b.LastIndex.Select((last, r) => r * t + last).ToArray()), rows);
            return RewardLosses.BradleyTerrySum(Ops.SliceRows(scores, 0, b.PairCount), Ops.SliceRows(scores, b.PairCount, b.PairCount), b.Margins, b.Weights, 0.01f);
        }, out float lossFull);

        Assert.Equal(lossFull, lossDedup, 4);
        foreach (var (name, g) in full)
            for (int i = 0; i < g.Length; i++)
                Assert.True(Math.Abs(g[i] - deduplicated[name][i]) <= 1e-5 + 1e-4 * Math.Abs(g[i]), $"{name}[{i}]: {g[i]} vs {deduplicated[name][i]}");
    }
}
