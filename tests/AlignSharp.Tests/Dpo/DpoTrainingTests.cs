using System.Text.Json;
using AlignSharp.Engine;
using AlignSharp.Text;
using AlignSharp.Training.Data;
using AlignSharp.Training.Dpo;

namespace AlignSharp.Tests.Dpo;

/// <summary>The DPO trainer on tiny models: log-probabilities, initial values, learning, resume, reference modes.</summary>
public sealed class DpoTrainingTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("alignsharp-dpo-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string P(string name) => Path.Combine(_dir, name);

    private DpoOptions Options(string model, string data, string? run = null) => new()
    {
        Policy = model,
        Data = data,
        Out = run,
        BatchSize = 4,
        LearningRate = 1e-3f,
        LoggingSteps = 1,
        SaveSteps = 0,
    };

    /// <summary>--eval-only's options: no run, so none of a run's settings.</summary>
    private static DpoOptions EvalOptions(string model, string data) => new() { Policy = model, Data = data, BatchSize = 4, EvalOnly = true };

    private static readonly TextWriter Quiet = TextWriter.Null;

    [Fact]
    public void AnswerLogProbsSumTheAnswerTokensOnly()
    {
        string model = DpoFixtures.TinyModel(P("m"), seed: 1);
        var pre = Pretrained.Load(model);
        var tok = pre.Tokenizer!;
        var pairs = new[]
        {
            new PreferencePair(ChatContent.FromText("ab:"), ChatContent.FromText(" #cdefg"), ChatContent.FromText(" c"), 0f, 1f, new("x", 1)),
            new PreferencePair(ChatContent.FromText("hello there:"), ChatContent.FromText(" x"), ChatContent.FromText(" yz"), 0f, 1f, new("x", 2)),
        };
        var encoded = DpoData.EncodePairs(pairs, tok, ChatTemplate.Plain, new DpoOptions(), _ => { });
        var batch = DpoData.PairBatches(encoded, 8, 0, TokenSequences.PadId(tok)).Single();
        Assert.Equal(4, batch.Rows);
        var answers = AnswerScoring.Compute(pre.Model, batch);

        // Independently: each row alone (no padding), log-softmax in double at every answer position.
        int v = pre.Model.Config.VocabSize;
        for (int row = 0; row < batch.Rows; row++)
        {
            int length = RowLength(batch, row);
            var ids = batch.InputIds.AsSpan(row * batch.SeqLen, length).ToArray();
            int answerStart = Array.FindIndex(batch.Labels, row * batch.SeqLen, length, l => l != SftSequence.IgnoreIndex) - row * batch.SeqLen;
            // The row is some pair's prompt followed by its chosen or rejected answer (with EOS).
            Assert.Contains(encoded, e => e.Prompt.SequenceEqual(ids[..answerStart]) && (e.Chosen.SequenceEqual(ids[answerStart..]) || e.Rejected.SequenceEqual(ids[answerStart..])));
            double expected = 0;
            using (Autograd.NoGrad())
            {
                var logits = pre.Model.Forward(ids, 1, length).ToArray();
                for (int p = answerStart - 1; p < length - 1; p++)
                {
                    var x = logits.AsSpan(p * v, v);
                    double max = double.MinValue; foreach (var f in x) max = Math.Max(max, f);
                    double z = 0; foreach (var f in x) z += Math.Exp(f - max);
                    expected += x[ids[p + 1]] - max - Math.Log(z);
                }
            }
            Assert.Equal(length - answerStart, answers.Tokens[row]);
            Assert.Equal(expected, answers.Sums.ToArray()[row], 3);
        }
        Assert.Equal(257, encoded[0].Chosen[^1]); // EOS closes every answer and is scored

        // The sums alone, as the reference takes them (nothing looks at the raw logits, so the head goes by vocabulary
        // tiles without gradients): the bits of the pass above.
        using (Autograd.NoGrad())
        {
            var alone = AnswerScoring.Sums(pre.Model, batch);
            Assert.Equal(answers.Sums.ToArray(), alone.Sums.ToArray());
            Assert.All(alone.LogitSums, s => Assert.Equal(0, s));
        }
    }

    [Fact]
    public void ARankingsPairsShareRowsAndGiveTheLossAndGradientsOfSeparatePairs()
    {
        string model = DpoFixtures.TinyModel(P("m"), seed: 4);
        var pre = Pretrained.Load(model);
        var reference = Pretrained.Load(model).Model;
        var tok = pre.Tokenizer!;
        // One ranking of four completions as the loader expands it: six pairs from one record.
        string[] answers = [" abc", " de", " fghij", " k"];
        var pairs = (from i in Enumerable.Range(0, 4) from j in Enumerable.Range(i + 1, 3 - i)
                     select new PreferencePair(ChatContent.FromText("q:"), ChatContent.FromText(answers[i]), ChatContent.FromText(answers[j]), 0f, 1f + 0.1f * j, new("r", 1))).ToArray();
        var options = new DpoOptions { Beta = 0.3f, LabelSmoothing = 0.1f };
        var encoded = DpoData.EncodePairs(pairs, tok, ChatTemplate.Plain, options, _ => { });
        int pad = TokenSequences.PadId(tok);
        var together = DpoData.PairBatches(encoded, 8, 0, pad);
        Assert.Single(together);
        Assert.Equal(4, together[0].Rows); // four distinct answers, not twelve rows
        var apart = encoded.Select(e => DpoData.PairBatches([e with { Source = new("single", 1) }], 1, 0, pad).Single()).ToArray();
        Assert.All(apart, b => Assert.Equal(2, b.Rows));

        (double Loss, Dictionary<string, float[]> Grads) Run(IReadOnlyList<DpoBatch> batches)
        {
            var task = new DpoTask(options, pre.Model, ReferenceLogProbs.OnTheFly(reference), batches, []);
            foreach (var (_, p) in pre.Model.NamedParameters) p.ClearGrad();
            double loss = 0;
            for (int i = 0; i < batches.Count; i++)
            {
                using var scope = TensorScope.Begin();
                var l = task.Forward(i, new Random(0)).LossSum;
                loss += l.Item();
                l.Backward();
            }
            return (loss, pre.Model.NamedParameters.ToDictionary(x => x.Name, x => x.Parameter.Grad?.ToArray() ?? []));
        }
        var (lossTogether, gradTogether) = Run(together);
        var (lossApart, gradApart) = Run(apart);
        Assert.Equal(lossApart, lossTogether, 4);
        foreach (var (name, g) in gradApart)
            for (int i = 0; i < g.Length; i++)
                Assert.True(Math.Abs(g[i] - gradTogether[name][i]) <= 1e-5 + 1e-4 * Math.Abs(g[i]), $"{name}[{i}]: {g[i]} vs {gradTogether[name][i]}");
    }

    private static int RowLength(DpoBatch b, int row) => b.AttentionMask.AsSpan(row * b.SeqLen, b.SeqLen).Count(true);

    [Fact]
    public void AtInitialisationTheSigmoidLossIsLn2AndTiesAreNotAccurate()
    {
        string model = DpoFixtures.TinyModel(P("m"), seed: 2);
        string data = DpoFixtures.Pairs(P("pairs.jsonl"), 10, seed: 3);
        var m = DpoTrainer.EvaluateOnly(EvalOptions(model, data), Quiet);
        Assert.Equal(Math.Log(2), m["loss"], 6);
        Assert.Equal(0.0, m["rewards/accuracies"]);   // every reward is exactly 0: ties, none accurate
        Assert.Equal(0.0, m["rewards/chosen"]);
        Assert.Equal(0.0, m["rewards/margins"]);
        Assert.True(m["logps/chosen"] < m["logps/rejected"]); // the chosen answer has one token more
        foreach (var name in DpoMetrics.Names) Assert.True(m.ContainsKey(name), name);

        // The first training step sees the same (reference precomputed, policy with gradients on): ln 2, no accurate pair.
        DpoTrainer.Train(Options(model, data, P("run")) with { MaxSteps = 1 }, Quiet);
        var first = JsonDocument.Parse(File.ReadLines(P("run/metrics.jsonl")).First()).RootElement;
        Assert.Equal(Math.Log(2), first.GetProperty("loss").GetDouble(), 6);
        Assert.Equal(0.0, first.GetProperty("rewards/accuracies").GetDouble());
    }

    /// <summary>Mean probability of the marker as the first answer token after each prompt and a space.</summary>
    internal static double MarkerProbability(string modelDir, IEnumerable<string> prompts)
    {
        var pre = Pretrained.Load(modelDir);
        var tok = pre.Tokenizer!;
        int v = pre.Model.Config.VocabSize;
        double sum = 0; int n = 0;
        using var noGrad = Autograd.NoGrad();
        foreach (var prompt in prompts)
        {
            int[] ids = [.. tok.Encode(prompt), .. tok.Encode(" ", addSpecialTokens: false)];
            var logits = pre.Model.Forward(ids, 1, ids.Length).ToArray().AsSpan((ids.Length - 1) * v, v);
            double max = double.MinValue; foreach (var f in logits) max = Math.Max(max, f);
            double z = 0; foreach (var f in logits) z += Math.Exp(f - max);
            sum += Math.Exp(logits[DpoFixtures.Marker] - max) / z;
            n++;
        }
        return sum / n;
    }

    [Fact]
    public void DpoLearnsASyntheticPreferenceOnHeldOutPairs()
    {
        string model = DpoFixtures.TinyModel(P("m"), seed: 4);
        string train = DpoFixtures.Pairs(P("train.jsonl"), 64, seed: 5);
        string eval = DpoFixtures.Pairs(P("eval.jsonl"), 32, seed: 6);
        var heldOutPrompts = File.ReadLines(eval).Select(l => JsonDocument.Parse(l).RootElement.GetProperty("prompt").GetString()!).ToList();
        double before = MarkerProbability(model, heldOutPrompts);

        var summary = DpoTrainer.Train(Options(model, train, P("run")) with { EvalData = eval, MaxSteps = 60, BatchSize = 8, LearningRate = 1e-2f, Beta = 0.1f }, Quiet);
        double accuracy = (double)summary["eval_rewards/accuracies"]!;
        double after = MarkerProbability(P("run/final"), heldOutPrompts);
        Assert.True(accuracy > 0.9, $"held-out accuracy {accuracy}");
        Assert.True(after > 10 * before && after > 0.3, $"p(marker) {before} → {after}");
        Assert.True((double)summary["eval_loss"]! < Math.Log(2) - 0.1, $"eval loss {summary["eval_loss"]}");
    }

    [Fact]
    public void ResumeEqualsUninterruptedTraining()
    {
        string model = DpoFixtures.TinyModel(P("m"), seed: 7);
        string data = DpoFixtures.Pairs(P("pairs.jsonl"), 24, seed: 8);
        var o = Options(model, data, P("a")) with { MaxSteps = 6, SaveSteps = 3, GradientAccumulationSteps = 2, BatchSize = 3 };
        DpoTrainer.Train(o, Quiet);

        // An interrupted run: only the step-3 checkpoint exists. Resuming it must end bit for bit where A ended.
        var ckpt = Directory.GetDirectories(P("a/checkpoints"), "step-000003").Single();
        CopyDirectory(ckpt, P("b/checkpoints/step-000003"));
        DpoTrainer.Train(o with { Out = P("b"), Resume = "" }, Quiet);
        Assert.Equal(File.ReadAllBytes(P("a/final/model.safetensors")), File.ReadAllBytes(P("b/final/model.safetensors")));
        Assert.Equal(
            File.ReadLines(P("a/metrics.jsonl")).Skip(3).Select(StripTime),
            File.ReadLines(P("b/metrics.jsonl")).Select(StripTime).Where(l => l.Contains("\"train\"")));
    }

    private static string StripTime(string line)
    {
        var o = System.Text.Json.Nodes.JsonNode.Parse(line)!.AsObject();
        o.Remove("time"); o.Remove("tokens_per_s");
        return o.ToJsonString();
    }

    private static void CopyDirectory(string from, string to)
    {
        Directory.CreateDirectory(to);
        foreach (var f in Directory.GetFiles(from)) File.Copy(f, Path.Combine(to, Path.GetFileName(f)));
        foreach (var d in Directory.GetDirectories(from)) CopyDirectory(d, Path.Combine(to, Path.GetFileName(d)));
    }

    [Fact]
    public void PrecomputedReferenceEqualsOnTheFlyAndIsCached()
    {
        string model = DpoFixtures.TinyModel(P("m"), seed: 9);
        string data = DpoFixtures.Pairs(P("pairs.jsonl"), 12, seed: 10);
        var o = Options(model, data, P("pre")) with { MaxSteps = 4 };
        DpoTrainer.Train(o, Quiet);
        Assert.True(File.Exists(P("pre/" + ReferenceLogProbs.CacheFileName)));
        DpoTrainer.Train(o with { Out = P("fly"), PrecomputeReference = false }, Quiet);
        Assert.False(File.Exists(P("fly/" + ReferenceLogProbs.CacheFileName)));
        Assert.Equal(File.ReadAllBytes(P("pre/final/model.safetensors")), File.ReadAllBytes(P("fly/final/model.safetensors")));

        // A second run in the same directory (replacing the first) reads the cache instead of recomputing.
        var log = new StringWriter();
        DpoTrainer.Train(o with { Overwrite = true }, log);
        Assert.Contains("read from", log.ToString());
        Assert.Equal(File.ReadAllBytes(P("fly/final/model.safetensors")), File.ReadAllBytes(P("pre/final/model.safetensors")));

        // The same weights under another config.json (a norm epsilon fixed by hand) score differently: the cache is
        // not reused, and the run equals one in a fresh directory.
        var config = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(model, "config.json")))!.AsObject();
        string eps = config.ContainsKey("rms_norm_eps") ? "rms_norm_eps" : "layer_norm_epsilon";
        Assert.True(config.ContainsKey(eps));
        config[eps] = 0.5;
        File.WriteAllText(Path.Combine(model, "config.json"), config.ToJsonString());
        var changed = new StringWriter();
        DpoTrainer.Train(o with { Overwrite = true }, changed);
        Assert.DoesNotContain("read from", changed.ToString());
        DpoTrainer.Train(o with { Out = P("fresh") }, Quiet);
        Assert.Equal(File.ReadAllBytes(P("fresh/final/model.safetensors")), File.ReadAllBytes(P("pre/final/model.safetensors")));
        Assert.NotEqual(File.ReadAllBytes(P("fly/final/model.safetensors")), File.ReadAllBytes(P("pre/final/model.safetensors")));
    }

    [Fact]
    public void PlackettLuceOnPairsEqualsSigmoidAndTrainsOnRankings()
    {
        string policy = DpoFixtures.TinyModel(P("policy"), seed: 11);
        string reference = DpoFixtures.TinyModel(P("ref"), seed: 12);
        string pairs = DpoFixtures.Pairs(P("pairs.jsonl"), 10, seed: 13);
        var o = EvalOptions(policy, pairs) with { Reference = reference, Beta = 0.2f };
        var dpo = DpoTrainer.EvaluateOnly(o, Quiet);
        var pl = DpoTrainer.EvaluateOnly(o with { LossType = "plackett_luce" }, Quiet);
        Assert.NotEqual(Math.Log(2), dpo["loss"], 3);
        foreach (var name in new[] { "loss" }.Concat(DpoMetrics.Names))
            Assert.Equal(dpo[name], pl[name], 4);

        string rankings = DpoFixtures.Rankings(P("rankings.jsonl"), 16, seed: 14);
        var summary = DpoTrainer.Train(Options(policy, rankings, P("run")) with { LossType = "plackett_luce", EvalSplit = 0.25, MaxSteps = 12, LearningRate = 3e-3f, Beta = 0.5f }, Quiet);
        var lines = File.ReadLines(P("run/metrics.jsonl")).Select(l => JsonDocument.Parse(l).RootElement).Where(e => e.GetProperty("split").GetString() == "train").ToList();
        Assert.True(lines[^1].GetProperty("loss").GetDouble() < lines[0].GetProperty("loss").GetDouble());
        Assert.True(summary.ContainsKey("eval_rewards/accuracies"));
    }

    [Theory]
    [InlineData("ipo", false)]
    [InlineData("hinge", false)]
    [InlineData("simpo", false)]
    [InlineData("orpo", false)]
    [InlineData("sigmoid", true)]
    public void EveryLossEvaluatesToFiniteMetrics(string loss, bool referenceFree)
    {
        string model = DpoFixtures.TinyModel(P("m"), seed: 15);
        string data = DpoFixtures.Pairs(P("pairs.jsonl"), 6, seed: 16);
        var m = DpoTrainer.EvaluateOnly(EvalOptions(model, data) with { LossType = loss, ReferenceFree = referenceFree }, Quiet);
        foreach (var name in new[] { "loss" }.Concat(DpoMetrics.Names)) Assert.True(double.IsFinite(m[name]), $"{name} = {m[name]}");
        if (loss == "hinge") Assert.Equal(1.0, m["loss"], 6);      // Δ = 0 at initialisation
        if (loss == "ipo") Assert.Equal(1.0 / (2 * 0.1) * (1.0 / (2 * 0.1)), m["loss"], 3);
        if (loss == "orpo") Assert.True(m.ContainsKey("nll_loss"));
    }
}
