using System.Text.Json;
using AlignSharp.Tests.Training;

namespace AlignSharp.Tests.Cli;

/// <summary>LoRA from the command line: sft --lora-r, merge, and --adapter on logprobs and generate.</summary>
public sealed class LoraCommandsTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("alignsharp-cli-lora-").FullName;
    public void Dispose() => Directory.Delete(_dir, recursive: true);
    private string P(string name) => Path.Combine(_dir, name);

    private static double?[] LogProbs(CliRunner.Result r)
    {
        Assert.True(r.ExitCode == 0, r.StdErr);
        return JsonDocument.Parse(r.StdOut.Trim()).RootElement.GetProperty("logprobs").EnumerateArray()
            .Select(e => e.ValueKind == JsonValueKind.Null ? (double?)null : e.GetDouble()).ToArray();
    }

    [Fact]
    public void MergeTakesALoraRunAsItsBaseAndARewardModelAdapter()
    {
        string model = TinyModels.Create(P("base"), "llama");
        TinyModels.WriteJsonl(P("sft.jsonl"), Enumerable.Range(0, 6).Select(i => (object)new { prompt = $"q{i}?", completion = $" a{i}!" }));
        TinyModels.WriteJsonl(P("prefs.jsonl"), Enumerable.Range(0, 6).Select(i => (object)new { prompt = $"q{i}?", chosen = $" yes{i}", rejected = $" no{i}" }));
        string[] common = ["--max-steps", "3", "--batch-size", "2", "--learning-rate", "0.01", "--save-steps", "0"];
        Assert.Equal(0, CliRunner.Run(["sft", "--model", model, "--data", P("sft.jsonl"), "--out", P("sft"), "--lora-r", "4", .. common]).ExitCode);
        Assert.Equal(0, CliRunner.Run(["dpo", "--policy", P("sft/final"), "--data", P("prefs.jsonl"), "--out", P("dpo"), "--lora-r", "2", .. common]).ExitCode);

        // The DPO adapter's base is the SFT run's final/ (base + its adapter): merged onto it directly, or in two merges.
        var direct = CliRunner.Run("merge", "--model", P("sft/final"), "--adapter", P("dpo/final"), "--out", P("direct"));
        Assert.True(direct.ExitCode == 0, direct.StdErr);
        Assert.Equal(0, CliRunner.Run("merge", "--model", model, "--adapter", P("sft/final"), "--out", P("sft-merged")).ExitCode);
        Assert.Equal(0, CliRunner.Run("merge", "--model", P("sft-merged"), "--adapter", P("dpo/final"), "--out", P("two")).ExitCode);
        TinyModels.WriteJsonl(P("in.jsonl"), [new { text = "q1? a1!" }]);
        var a = LogProbs(CliRunner.Run("logprobs", "--model", P("direct"), "--input", P("in.jsonl")));
        var b = LogProbs(CliRunner.Run("logprobs", "--model", P("two"), "--input", P("in.jsonl")));
        var run = LogProbs(CliRunner.Run("logprobs", "--model", P("dpo/final"), "--input", P("in.jsonl")));
        for (int t = 1; t < a.Length; t++)
        {
            Assert.True(Math.Abs(a[t]!.Value - b[t]!.Value) < 1e-4, $"token {t}: {a[t]} vs {b[t]}");
            Assert.True(Math.Abs(a[t]!.Value - run[t]!.Value) < 1e-4, $"token {t}: {a[t]} vs {run[t]}");
        }
        // The DPO adapter merged onto the bare base is another model, and merge says whose adapter it is.
        var bare = CliRunner.Run("merge", "--model", model, "--adapter", P("dpo/final"), "--out", P("bare"));
        Assert.Contains("names", bare.StdErr);
        Assert.NotEqual(a, LogProbs(CliRunner.Run("logprobs", "--model", P("bare"), "--input", P("in.jsonl"))));

        // A reward-model adapter (SEQ_CLS, with its score head) merges into the language model it was trained from.
        Assert.Equal(0, CliRunner.Run(["rm", "--model", model, "--data", P("prefs.jsonl"), "--out", P("rm"), "--lora-r", "2", .. common]).ExitCode);
        var rm = CliRunner.Run("merge", "--model", model, "--adapter", P("rm/final"), "--out", P("rm-merged"));
        Assert.True(rm.ExitCode == 0, rm.StdErr);
        TinyModels.WriteJsonl(P("score.jsonl"), [new { prompt = "q1?", completion = " yes1" }, new { prompt = "q2?", completion = " no2" }]);
        var viaAdapter = CliRunner.Run("score", "--reward-model", P("rm/final"), "--input", P("score.jsonl"));
        var merged = CliRunner.Run("score", "--reward-model", P("rm-merged"), "--input", P("score.jsonl"));
        Assert.True(merged.ExitCode == 0, merged.StdErr);
        double[] Scores(CliRunner.Result r) => r.StdOut.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => JsonDocument.Parse(l).RootElement.GetProperty("score").GetDouble()).ToArray();
        var x = Scores(viaAdapter); var y = Scores(merged);
        for (int i = 0; i < x.Length; i++) Assert.True(Math.Abs(x[i] - y[i]) < 1e-4, $"row {i}: {x[i]} vs {y[i]}");
    }

    [Fact]
    public void SftAdapterMergeAndAdapterFlagAgree()
    {
        string model = TinyModels.Create(P("base"), "llama");
        TinyModels.WriteJsonl(P("sft.jsonl"), Enumerable.Range(0, 6).Select(i => (object)new { prompt = $"q{i}?", completion = $" a{i}!" }));
        var sft = CliRunner.Run("sft", "--model", model, "--data", P("sft.jsonl"), "--out", P("run"), "--max-steps", "4", "--batch-size", "2",
            "--learning-rate", "0.01", "--save-steps", "0", "--lora-r", "4", "--lora-target-modules", "q_proj,v_proj,up_proj", "--use-rslora");
        Assert.True(sft.ExitCode == 0, sft.StdErr);
        var config = JsonDocument.Parse(File.ReadAllText(P("run/final/adapter_config.json"))).RootElement;
        Assert.True(config.GetProperty("use_rslora").GetBoolean());
        Assert.Equal(["q_proj", "v_proj", "up_proj"], config.GetProperty("target_modules").EnumerateArray().Select(e => e.GetString()));

        var merge = CliRunner.Run("merge", "--model", model, "--adapter", P("run/final"), "--out", P("merged"));
        Assert.True(merge.ExitCode == 0, merge.StdErr);
        Assert.True(File.Exists(P("merged/model.safetensors")) && File.Exists(P("merged/tokenizer.json")));

        TinyModels.WriteJsonl(P("in.jsonl"), [new { text = "q1? a1!" }]);
        var withAdapter = LogProbs(CliRunner.Run("logprobs", "--model", model, "--adapter", P("run/final"), "--input", P("in.jsonl")));
        var merged = LogProbs(CliRunner.Run("logprobs", "--model", P("merged"), "--input", P("in.jsonl")));
        var baseOnly = LogProbs(CliRunner.Run("logprobs", "--model", model, "--input", P("in.jsonl")));
        for (int t = 1; t < merged.Length; t++) Assert.True(Math.Abs(withAdapter[t]!.Value - merged[t]!.Value) < 1e-4, $"token {t}: {withAdapter[t]} vs {merged[t]}");
        Assert.NotEqual(baseOnly, withAdapter);

        TinyModels.WriteJsonl(P("prompts.jsonl"), [new { prompt = "q2?" }]);
        var gen = CliRunner.Run("generate", "--model", model, "--adapter", P("run/final"), "--input", P("prompts.jsonl"), "--max-new-tokens", "3", "--temperature", "0");
        Assert.True(gen.ExitCode == 0, gen.StdErr);
        Assert.True(JsonDocument.Parse(gen.StdOut.Trim()).RootElement.TryGetProperty("completion", out _));

        // Bad input: a non-empty --out, a missing adapter, an adapter for another model, a model directory given as --adapter.
        var again = CliRunner.Run("merge", "--model", model, "--adapter", P("run/final"), "--out", P("merged"));
        Assert.NotEqual(0, again.ExitCode);
        Assert.Contains("not empty", again.StdErr);
        Assert.DoesNotContain("   at ", again.StdErr);
        var missing = CliRunner.Run("logprobs", "--model", model, "--adapter", P("nope"), "--input", P("in.jsonl"));
        Assert.NotEqual(0, missing.ExitCode);
        Assert.Contains("nope", missing.StdErr);
        string gpt2 = TinyModels.Create(P("gpt2"), "gpt2");
        var wrong = CliRunner.Run("merge", "--model", gpt2, "--adapter", P("run/final"), "--out", P("m2"));
        Assert.NotEqual(0, wrong.ExitCode);
        Assert.Contains("adapter_model.safetensors", wrong.StdErr);
        Assert.DoesNotContain("   at ", wrong.StdErr);
        var notAdapter = CliRunner.Run("ppo", "--policy", model, "--prompts", P("sft.jsonl"), "--reward-url", "http://127.0.0.1:9", "--out", P("ppo"), "--adapter", model);
        Assert.NotEqual(0, notAdapter.ExitCode);
        Assert.Contains("adapter_config.json", notAdapter.StdErr);
        Assert.DoesNotContain("   at ", notAdapter.StdErr);
    }

    [Fact]
    public void ALoraRewardModelDirectoryServesScorePpoAndEvalAndAdapterFlagsAgree()
    {
        string model = TinyModels.Create(P("base"), "llama");
        TinyModels.WriteJsonl(P("prefs.jsonl"), Enumerable.Range(0, 8).Select(i => (object)new { prompt = $"q{i}?", chosen = $" a{i}#", rejected = $" a{i}" }));
        var rm = CliRunner.Run("rm", "--model", model, "--data", P("prefs.jsonl"), "--out", P("rm"), "--max-steps", "3", "--batch-size", "2",
            "--learning-rate", "0.01", "--save-steps", "0", "--lora-r", "4", "--lora-target-modules", "q_proj,v_proj");
        Assert.True(rm.ExitCode == 0, rm.StdErr);

        // score: the rm's final/ (base + adapter + saved score head) equals --adapter on the base language model.
        TinyModels.WriteJsonl(P("pairs.jsonl"), [new { prompt = "q1?", completion = " a1#" }, new { prompt = "q2?", completion = " a2" }]);
        var direct = CliRunner.Run("score", "--reward-model", P("rm/final"), "--input", P("pairs.jsonl"));
        var viaAdapter = CliRunner.Run("score", "--reward-model", model, "--adapter", P("rm/final"), "--input", P("pairs.jsonl"));
        Assert.True(direct.ExitCode == 0, direct.StdErr);
        Assert.True(viaAdapter.ExitCode == 0, viaAdapter.StdErr);
        Assert.Equal(direct.StdOut, viaAdapter.StdOut);

        // ppo with LoRA and the LoRA reward model; eval of its adapter against the base, judged by the LoRA reward model.
        TinyModels.WriteJsonl(P("prompts.jsonl"), Enumerable.Range(0, 4).Select(i => (object)new { prompt = $"q{i}?" }));
        var ppo = CliRunner.Run("ppo", "--policy", model, "--prompts", P("prompts.jsonl"), "--reward-model", P("rm/final"), "--out", P("ppo"),
            "--max-steps", "1", "--max-new-tokens", "4", "--batch-size", "2", "--lora-r", "2");
        Assert.True(ppo.ExitCode == 0, ppo.StdErr);
        Assert.True(File.Exists(P("ppo/final/adapter_config.json")) && File.Exists(P("ppo/value_model/adapter_config.json")));
        var eval = CliRunner.Run("eval", "--policy", model, "--adapter", P("ppo/final"), "--baseline", model, "--prompts", P("prompts.jsonl"),
            "--judge-model", P("rm/final"), "--max-new-tokens", "4", "--out", P("eval"));
        Assert.True(eval.ExitCode == 0, eval.StdErr);
        Assert.True(File.Exists(P("eval/eval.json")));
        // The adapter is recorded beside the model it was applied to (it read as the model compared with itself).
        var recorded = System.Text.Json.JsonDocument.Parse(File.ReadAllText(P("eval/eval.json"))).RootElement;
        Assert.Equal(P("ppo/final"), recorded.GetProperty("adapter").GetString());
        Assert.Equal(System.Text.Json.JsonValueKind.Null, recorded.GetProperty("baseline_adapter").ValueKind);
        Assert.Contains($"{model} + adapter {P("ppo/final")}", File.ReadAllText(P("eval/eval.html")));
        var lonely = CliRunner.Run("eval", "--policy", model, "--baseline-adapter", P("ppo/final"), "--prompts", P("prompts.jsonl"),
            "--judge-model", P("rm/final"), "--out", P("eval2"));
        Assert.NotEqual(0, lonely.ExitCode);
        Assert.Contains("--baseline-adapter", lonely.StdErr);

        // template: the adapter directory's tokenizer and template files (saved with it) are used; a model directory is no adapter.
        TinyModels.WriteJsonl(P("chats.jsonl"), [new { messages = new[] { new { role = "user", content = "hi" } } }]);
        var plain = CliRunner.Run("template", "--model", model, "--input", P("chats.jsonl"));
        var withAdapter = CliRunner.Run("template", "--model", model, "--adapter", P("ppo/final"), "--input", P("chats.jsonl"));
        Assert.True(withAdapter.ExitCode == 0, withAdapter.StdErr);
        Assert.Equal(plain.StdOut, withAdapter.StdOut);
        var notAdapter = CliRunner.Run("template", "--model", model, "--adapter", model, "--input", P("chats.jsonl"));
        Assert.NotEqual(0, notAdapter.ExitCode);
        Assert.Contains("adapter_config.json", notAdapter.StdErr);
    }
}
