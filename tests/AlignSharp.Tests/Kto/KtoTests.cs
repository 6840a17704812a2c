using System.Text.Json;
using AlignSharp.Engine;
using AlignSharp.Models;
using AlignSharp.Text;
using AlignSharp.Tests.Dpo;
using AlignSharp.Training.Data;
using AlignSharp.Training.Dpo;
using AlignSharp.Training.Kto;

namespace AlignSharp.Tests.Kto;

/// <summary>KTO: the loss against hand-computed values, its batches, learning on a tiny model, the CLI and bad data.</summary>
public sealed class KtoTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("alignsharp-kto-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string P(string name) => Path.Combine(_dir, name);

    private static readonly TextWriter Quiet = TextWriter.Null;

    [Fact]
    public void LossAndGradientMatchAHandComputedCase()
    {
        // β = 0.5, w_D = 1, w_U = 1.5. Log-ratios r = log π − log π_ref: 0.5 (desirable), −0.5 and −1 (undesirable).
        // Mismatched pairs: log π − log π_ref = 0.5, 0.3, 0.1, so z = max(0, 0.3) = 0.3.
        // Losses: 1 − σ(0.5·(0.5 − 0.3)) = 1 − σ(0.1) = 0.4750208;
        //         1.5·(1 − σ(0.5·(0.3 + 0.5))) = 1.5·(1 − σ(0.4)) = 0.6019685;
        //         1.5·(1 − σ(0.5·(0.3 + 1))) = 1.5·(1 − σ(0.65)) = 0.5144843.
        // ∂/∂log π: −β·σ(0.1)(1 − σ(0.1)) = −0.1246880; 1.5·β·σ(0.4)(1 − σ(0.4)) = 0.1801956; 1.5·β·σ(0.65)(1 − σ(0.65)) = 0.1690108.
        var logps = Tensor.FromArray([-1f, -2f, -3f], 3);
        logps.RequiresGrad = true;
        var result = KtoLoss.Compute(logps, [-1.5f, -1.5f, -2f], [-2f, -2.2f, -4f], [-2.5f, -2.5f, -4.1f], [true, false, false], 0.5f, 1f, 1.5f);
        Assert.Equal(0.3f, result.Kl, 5);
        var losses = result.Losses.ToArray();
        Assert.Equal(0.4750208, losses[0], 5);
        Assert.Equal(0.6019685, losses[1], 5);
        Assert.Equal(0.5144843, losses[2], 5);
        Assert.Equal([0.25f, -0.25f, -0.5f], result.Rewards);
        Ops.Sum(result.Losses).Backward();
        var g = logps.Grad!.ToArray();
        Assert.Equal(-0.1246880, g[0], 5);
        Assert.Equal(0.1801956, g[1], 5);
        Assert.Equal(0.1690108, g[2], 5);
    }

    /// <summary>TRL's apo_zero_unpaired: the case above with no reference point (z = 0, the mismatched pairs unread):
    /// 1 − σ(β·r) for the desirable example, w_U·σ(β·r) for the undesirable ones.</summary>
    [Fact]
    public void ApoZeroUnpairedIsKtoWithoutTheReferencePoint()
    {
        // r = 0.5 (desirable), −0.5, −1 (undesirable), β = 0.5, w_U = 1.5: 1 − σ(0.25) = 0.4378235; 1.5·σ(−0.25) = 0.6567352;
        // 1.5·σ(−0.5) = 0.5663110. ∂/∂log π: −β·σ′(0.25) = −0.1230670; 1.5·β·σ′(−0.25) = 0.1846006; 1.5·β·σ′(−0.5) = 0.1762528.
        var logps = Tensor.FromArray([-1f, -2f, -3f], 3);
        logps.RequiresGrad = true;
        var result = KtoLoss.Compute(logps, [-1.5f, -1.5f, -2f], [float.NaN, 0f, 0f], [0f, 0f, 0f], [true, false, false], 0.5f, 1f, 1.5f, referencePoint: false);
        Assert.Equal(0f, result.Kl);
        var losses = result.Losses.ToArray();
        Assert.Equal(0.4378235, losses[0], 5);
        Assert.Equal(0.6567352, losses[1], 5);
        Assert.Equal(0.5663110, losses[2], 5);
        Ops.Sum(result.Losses).Backward();
        var g = logps.Grad!.ToArray();
        Assert.Equal(-0.1230670, g[0], 5);
        Assert.Equal(0.1846006, g[1], 5);
        Assert.Equal(0.1762528, g[2], 5);
    }

    [Fact]
    public void TheReferencePointIsClampedAtZero()
    {
        // The mismatched pairs are less likely under the policy than under the reference: mean −0.4, so z = 0.
        // Desirable r = 0.2: 1 − σ(0.1·0.2) = 1 − σ(0.02) = 0.4950002. Undesirable r = 0.2: 1 − σ(−0.02) = 0.5049998.
        var logps = Tensor.FromArray([-0.8f, -0.8f], 2);
        var result = KtoLoss.Compute(logps, [-1f, -1f], [-3f, -3f], [-2.6f, -2.6f], [true, false], 0.1f);
        Assert.Equal(0f, result.Kl);
        Assert.Equal(0.4950002, result.Losses.ToArray()[0], 5);
        Assert.Equal(0.5049998, result.Losses.ToArray()[1], 5);
    }

    [Fact]
    public void ABatchPairsEachCompletionWithTheNextPromptForTheReferencePoint()
    {
        var examples = new[]
        {
            new TokenizedUnpaired([1, 2], [10, 11, 99], true, new("f", 1)),
            new TokenizedUnpaired([3], [12, 99], false, new("f", 2)),
            new TokenizedUnpaired([4, 5, 6], [13, 99], true, new("f", 3)),
        };
        var batch = new KtoBatch(examples, maxLength: 5, padId: 0);
        var b = batch.Rows;
        Assert.Equal(6, b.Rows);
        int[] Row(int r) => b.InputIds.AsSpan(r * b.SeqLen, b.SeqLen).ToArray()[..b.AttentionMask.AsSpan(r * b.SeqLen, b.SeqLen).Count(true)];
        int[] Answer(int r) => b.Labels.AsSpan(r * b.SeqLen, b.SeqLen).ToArray().Where(l => l != SftSequence.IgnoreIndex).ToArray();
        Assert.Equal([1, 2, 10, 11, 99], Row(0));
        Assert.Equal([3, 10, 11, 99], Row(3));        // completion 0 after prompt 1
        Assert.Equal([4, 5, 6, 12, 99], Row(4));      // completion 1 after prompt 2
        Assert.Equal([1, 2, 13, 99], Row(5));         // completion 2 after prompt 0 (wrapping round)
        Assert.Equal([10, 11, 99], Answer(3));
        Assert.Equal([true, false, true], batch.Desirable);

        // A mismatched row longer than the max length keeps its prompt and cuts the completion.
        var cut = new KtoBatch([examples[0], examples[2] with { Prompt = [4, 5, 6, 7] }], maxLength: 5, padId: 0).Rows;
        Assert.Equal([4, 5, 6, 7, 10], cut.InputIds.AsSpan(2 * cut.SeqLen, 5).ToArray());
    }

    /// <summary>Unpaired feedback: half the records " #w" (desirable), half " w" (undesirable), in random order.</summary>
    private static string Feedback(string path, int count, int seed)
    {
        var rng = new Random(seed);
        var lines = Enumerable.Range(0, count).Select(_ =>
        {
            string w = new(Enumerable.Range(0, 3).Select(_ => (char)('a' + rng.Next(8))).ToArray());
            bool good = rng.Next(2) == 0;
            return JsonSerializer.Serialize(new { prompt = DpoFixtures.Prompt(rng), completion = good ? $" {DpoFixtures.Marker}{w}" : $" {w}", label = good });
        });
        File.WriteAllLines(path, lines);
        return path;
    }

    private KtoOptions Options(string model, string data, string? run) => new()
    {
        Policy = model,
        Data = data,
        Out = run,
        BatchSize = 8,
        LearningRate = 1e-2f,
        LoggingSteps = 1,
        SaveSteps = 0,
    };

    [Fact]
    public void KtoLearnsAMarkerPreferenceFromUnpairedFeedback()
    {
        string model = DpoFixtures.TinyModel(P("m"), seed: 4);
        string train = Feedback(P("train.jsonl"), 64, seed: 5);
        string eval = Feedback(P("eval.jsonl"), 32, seed: 6);
        var heldOutPrompts = File.ReadLines(eval).Select(l => JsonDocument.Parse(l).RootElement.GetProperty("prompt").GetString()!).ToList();
        double before = DpoTrainingTests.MarkerProbability(model, heldOutPrompts);

        var summary = KtoTrainer.Train(Options(model, train, P("run")) with { EvalData = eval, MaxSteps = 60 }, Quiet);
        double after = DpoTrainingTests.MarkerProbability(P("run/final"), heldOutPrompts);
        Assert.True(after > 10 * before && after > 0.3, $"p(marker) {before} → {after}");
        Assert.True((double)summary["eval_rewards/margins"]! > 0, $"held-out margin {summary["eval_rewards/margins"]}");
        Assert.True((double)summary["eval_loss"]! < 0.49, $"eval loss {summary["eval_loss"]}");

        // (β = 0.1 keeps β·r small after 60 steps, so the loss falls only a little below its starting 0.5.)
        // At initialisation (policy = reference) every reward and z are 0 and each loss is 1 − σ(0) = 0.5.
        var first = JsonDocument.Parse(File.ReadLines(P("run/metrics.jsonl")).First()).RootElement;
        Assert.Equal(0.5, first.GetProperty("loss").GetDouble(), 6);
        Assert.Equal(0.0, first.GetProperty("kl").GetDouble(), 6);
        foreach (var name in new[] { "rewards/chosen", "rewards/rejected" })   // a batch with no example of a split logs none
            if (first.TryGetProperty(name, out var v)) Assert.Equal(0.0, v.GetDouble(), 6);
        Assert.Equal(8.0, first.GetProperty("count/chosen").GetDouble() + first.GetProperty("count/rejected").GetDouble(), 6);
        var lastEval = File.ReadLines(P("run/metrics.jsonl")).Select(l => JsonDocument.Parse(l).RootElement).Last(l => l.GetProperty("split").GetString() == "eval");
        foreach (var name in new[] { "loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen", "logps/rejected", "logits/chosen", "logits/rejected", "count/chosen", "count/rejected", "kl" })
            Assert.True(lastEval.TryGetProperty(name, out _), name);
        Assert.False(lastEval.TryGetProperty("micro_batches", out _));
    }

    /// <summary>logits/chosen and logits/rejected as TRL's KTOTrainer logs them: the mean logit over the vocabulary and every
    /// completion position of the split's examples together (a token mean: a long answer counts for its length), checked
    /// against the model's own forward pass.</summary>
    [Fact]
    public void LogitsMetricsAreTokenMeansOverEachSplit()
    {
        string model = DpoFixtures.TinyModel(P("m"), seed: 4);
        var records = new[] { ("q1:", " a", true), ("q2:", " abcdefgh", true), ("q3:", " xy", false), ("q4:", " z", false) };
        File.WriteAllLines(P("k.jsonl"), records.Select(r => JsonSerializer.Serialize(new { prompt = r.Item1, completion = r.Item2, label = r.Item3 })));
        KtoTrainer.Train(Options(model, P("k.jsonl"), P("run")) with { MaxSteps = 1, BatchSize = 4, LearningRate = 0 }, Quiet);
        var first = JsonDocument.Parse(File.ReadLines(P("run/metrics.jsonl")).First()).RootElement;
        var m = ModelIO.Load(model);
        var tok = new ByteTokenizer();
        int v = m.Config.VocabSize;
        foreach (var (split, desirable) in new[] { ("chosen", true), ("rejected", false) })
        {
            double sum = 0;
            int tokens = 0;
            var perExample = new List<double>();
            foreach (var (prompt, completion, _) in records.Where(r => r.Item3 == desirable))
            {
                int[] p = tok.Encode(prompt), ids = [.. p, .. tok.Encode(completion, addSpecialTokens: false), tok.EosId!.Value];
                float[] logits;
                using (Autograd.NoGrad()) logits = m.Forward(ids, 1, ids.Length).ToArray();
                double own = 0;
                for (int j = p.Length; j < ids.Length; j++, tokens++) own += logits.AsSpan((j - 1) * v, v).ToArray().Average();
                sum += own;
                perExample.Add(own / (ids.Length - p.Length));
            }
            Assert.Equal(sum / tokens, first.GetProperty($"logits/{split}").GetDouble(), 6);
            // The data make the two definitions differ, so the check tells them apart.
            Assert.True(Math.Abs(perExample.Average() - sum / tokens) > 2e-5, $"{split}: {perExample.Average()} vs {sum / tokens}");
        }
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void KtoWithLoraStartsAtItsAdapterOffReferenceAndTrainsOnlyTheAdapter(bool precompute)
    {
        string model = DpoFixtures.TinyModel(P("m"), seed: 4);
        string train = Feedback(P("train.jsonl"), 32, seed: 5);
        var o = Options(model, train, P("run")) with { MaxSteps = 6, LoraR = 4, LoraDropout = 0.1, PrecomputeReference = precompute };
        KtoTrainer.Train(o, Quiet);
        // Step 0: a fresh adapter (B = 0) is the reference exactly, so every reward and z are 0 and each loss is 1 − σ(0).
        var lines = File.ReadLines(P("run/metrics.jsonl")).Select(l => JsonDocument.Parse(l).RootElement).ToList();
        Assert.Equal(0.5, lines[0].GetProperty("loss").GetDouble(), 12);
        Assert.Equal(0.0, lines[0].GetProperty("kl").GetDouble());
        Assert.NotEqual(0.5, lines[^1].GetProperty("loss").GetDouble(), 6);
        Assert.False(File.Exists(P("run/final/model.safetensors")));
        var adapter = AlignSharp.Models.Lora.LoraAdapter.Load(P("run/final"), AlignSharp.Models.ModelIO.Load(model));
        Assert.All(adapter.Modules, m => Assert.Contains(m.B.ToArray(), x => x != 0));
    }

    /// <summary>--loss-type apo_zero_unpaired trains with no reference point: kl stays 0 at every step while kto's moves.</summary>
    [Fact]
    public void ApoZeroUnpairedRunsWithoutAReferencePoint()
    {
        string model = DpoFixtures.TinyModel(P("m"), seed: 4);
        string train = Feedback(P("train.jsonl"), 32, seed: 5);
        double[] Kls(string run, string type)
        {
            KtoTrainer.Train(Options(model, train, P(run)) with { MaxSteps = 6, LossType = type }, Quiet);
            return File.ReadLines(P(run + "/metrics.jsonl")).Select(l => JsonDocument.Parse(l).RootElement)
                .Where(l => l.GetProperty("split").GetString() == "train").Select(l => l.GetProperty("kl").GetDouble()).ToArray();
        }
        Assert.All(Kls("apo", "apo_zero_unpaired"), kl => Assert.Equal(0.0, kl));
        Assert.Contains(Kls("kto", "kto"), kl => kl != 0);
        var bad = Assert.Throws<UserInputException>(() => (Options(model, train, P("x")) with { LossType = "bco" }).Validate());
        Assert.Contains("kto or apo_zero_unpaired", bad.Message);
    }

    [Fact]
    public void TheCliTrainsOnMessageListsAndReportsBadRecordsByFileLineAndField()
    {
        string model = DpoFixtures.TinyModel(P("m"), seed: 7);
        var rng = new Random(8);
        var lines = Enumerable.Range(0, 12).Select(i => JsonSerializer.Serialize(new
        {
            messages = new[] { new { role = "user", content = DpoFixtures.Prompt(rng) }, new { role = "assistant", content = i % 2 == 0 ? " #ab" : " ab" } },
            label = i % 2 == 0,
        }));
        File.WriteAllLines(P("msgs.jsonl"), lines);
        var r = CliRunner.Run("kto", "--policy", model, "--data", P("msgs.jsonl"), "--out", P("run"), "--max-steps", "2", "--batch-size", "4",
            "--logging-steps", "1", "--desirable-weight", "1.5", "--threads", "1");
        Assert.True(r.ExitCode == 0, r.StdErr);
        Assert.True(File.Exists(P("run/final/model.safetensors")));
        Assert.True(File.Exists(P("run/" + ReferenceLogProbs.CacheFileName)));
        var config = JsonDocument.Parse(File.ReadAllText(P("run/run_config.json"))).RootElement;
        Assert.Equal("kto", config.GetProperty("trainer").GetString());
        Assert.Equal(1.5, config.GetProperty("desirable_weight").GetDouble(), 5);
        Assert.Equal(2, File.ReadLines(P("run/metrics.jsonl")).Count(l => l.Contains("\"train\"")));

        File.WriteAllLines(P("bad.jsonl"), ["{\"prompt\": \"q\", \"completion\": \"a\", \"label\": true}", "{\"prompt\": \"q\", \"completion\": \"b\", \"label\": \"yes\"}"]);
        var bad = CliRunner.Run("kto", "--policy", model, "--data", P("bad.jsonl"), "--out", P("bad"));
        Assert.NotEqual(0, bad.ExitCode);
        Assert.Contains("bad.jsonl:2", bad.StdErr);
        Assert.Contains("\"label\"", bad.StdErr);
        Assert.DoesNotContain("   at ", bad.StdErr);

        File.WriteAllLines(P("ranking.jsonl"), ["{\"prompt\": \"q\", \"completions\": [\"a\", \"b\", \"c\"], \"ranking\": [0, 1, 2]}"]);
        var ranking = CliRunner.Run("kto", "--policy", model, "--data", P("ranking.jsonl"), "--out", P("p"));
        Assert.NotEqual(0, ranking.ExitCode);
        Assert.Contains("ranking.jsonl:1", ranking.StdErr);
        Assert.Contains("\"ranking\"", ranking.StdErr);

        var one = CliRunner.Run("kto", "--policy", model, "--data", P("msgs.jsonl"), "--out", P("one"), "--batch-size", "1");
        Assert.NotEqual(0, one.ExitCode);
        Assert.Contains("--batch-size", one.StdErr);
    }

    /// <summary>Preference pairs, as TRL's KTOTrainer unpairs them (maybe_unpair_preference_dataset): each pair is its
    /// chosen answer, desirable, and its rejected one, undesirable, with the pair's prompt (explicit, or the shared
    /// prefix of implicit-prompt transcripts) and its own chat-template arguments.</summary>
    [Fact]
    public void PreferencePairsAreReadAsTheirChosenAnswerDesirableAndTheirRejectedOneUndesirable()
    {
        File.WriteAllLines(P("pairs.jsonl"),
        [
            """{"prompt": "2+2=", "chosen": " 4", "rejected": " 5", "chat_template_kwargs": {"enable_thinking": false}}""",
            """{"chosen": "The sky is blue.", "rejected": "The sky is green."}""",
            """{"chosen": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}], "rejected": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "go away"}]}""",
        ]);
        var records = DatasetLoader.LoadUnpaired([P("pairs.jsonl")]).Records;
        Assert.Equal(6, records.Count);
        Assert.Equal([true, false, true, false, true, false], records.Select(r => r.Desirable));
        Assert.Equal([1, 1, 2, 2, 3, 3], records.Select(r => r.Source.Line));
        Assert.Equal(["chosen", "rejected", "chosen", "rejected", "chosen", "rejected"], records.Select(r => r.Example.CompletionField));
        Assert.Equal(("2+2=", " 4"), (records[0].Example.Prompt!.Text, records[0].Example.Completion.Text));
        Assert.Equal(("2+2=", " 5"), (records[1].Example.Prompt!.Text, records[1].Example.Completion.Text));
        Assert.All(records.Take(2), r => Assert.Equal(false, r.Example.TemplateKwargs!["enable_thinking"]));
        Assert.Equal(("The sky is", " blue."), (records[2].Example.Prompt!.Text, records[2].Example.Completion.Text));
        Assert.Equal(("The sky is", " green."), (records[3].Example.Prompt!.Text, records[3].Example.Completion.Text));
        Assert.Equal("hi", Assert.Single(records[5].Example.Prompt!.Messages!).Content);
        Assert.Equal("go away", Assert.Single(records[5].Example.Completion.Messages!).Content);

        // One file holds one kind: a labelled record after pairs (or a pair after labelled records) is a bad record.
        File.WriteAllLines(P("mixed.jsonl"), ["""{"prompt": "q", "chosen": "a", "rejected": "b"}""", """{"prompt": "q", "completion": "a", "label": true}"""]);
        var mixed = Assert.Throws<BadRecordException>(() => DatasetLoader.LoadUnpaired([P("mixed.jsonl")]));
        Assert.Contains("mixed.jsonl:2", mixed.Message);
        Assert.Contains("one kind of record", mixed.Message);
    }

    /// <summary>kto on a pair file trains exactly as on the unpaired file that spells the same judgements out.</summary>
    [Fact]
    public void KtoOnPairsEqualsKtoOnTheSameJudgementsUnpaired()
    {
        string model = DpoFixtures.TinyModel(P("m"), seed: 4);
        var rng = new Random(9);
        var pairs = Enumerable.Range(0, 12).Select(_ => (Prompt: DpoFixtures.Prompt(rng), W: new string(Enumerable.Range(0, 3).Select(_ => (char)('a' + rng.Next(8))).ToArray()))).ToList();
        File.WriteAllLines(P("pairs.jsonl"), pairs.Select(p => JsonSerializer.Serialize(new { prompt = p.Prompt, chosen = $" {DpoFixtures.Marker}{p.W}", rejected = $" {p.W}" })));
        File.WriteAllLines(P("unpaired.jsonl"), pairs.SelectMany(p => new[]
        {
            JsonSerializer.Serialize(new { prompt = p.Prompt, completion = $" {DpoFixtures.Marker}{p.W}", label = true }),
            JsonSerializer.Serialize(new { prompt = p.Prompt, completion = $" {p.W}", label = false }),
        }));
        List<string> Metrics(string data, string run)
        {
            KtoTrainer.Train(Options(model, data, P(run)) with { MaxSteps = 4, BatchSize = 4 }, Quiet);
            return File.ReadLines(P(run + "/metrics.jsonl")).Select(l =>
            {
                var o = System.Text.Json.Nodes.JsonNode.Parse(l)!.AsObject();
                foreach (var k in o.Select(kv => kv.Key).Where(k => k is "time" or "tokens_per_s").ToList()) o.Remove(k);
                return o.ToJsonString();
            }).ToList();
        }
        var fromPairs = Metrics(P("pairs.jsonl"), "pairs");
        Assert.Equal(4, fromPairs.Count);
        Assert.Equal(Metrics(P("unpaired.jsonl"), "unpaired"), fromPairs);
        Assert.Contains(fromPairs, l => l.Contains("\"count/chosen\""));
    }
}
