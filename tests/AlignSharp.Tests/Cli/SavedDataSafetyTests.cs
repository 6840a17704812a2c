using System.Text.Json;
using AlignSharp.Tests.Training;

namespace AlignSharp.Tests.Cli;

/// <summary>
/// Saved data is never destroyed or silently replaced by a command's own output: --overwrite and the inputs inside the
/// run it deletes, init over a model, outputs named like their inputs, an annotation project's database; and no
/// non-finite weights pass from an adapter into a model.
/// </summary>
public sealed class SavedDataSafetyTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("alignsharp-cli-safety-").FullName;
    public void Dispose() => Directory.Delete(_dir, recursive: true);
    private string P(string name) => Path.Combine(_dir, name);

    private static void Refused(CliRunner.Result r, params string[] expected)
    {
        Assert.NotEqual(0, r.ExitCode);
        foreach (var e in expected) Assert.Contains(e, r.StdErr);
        Assert.DoesNotContain("   at ", r.StdErr);
    }

    private static string Hash(string path) => Convert.ToHexString(System.Security.Cryptography.SHA256.HashData(File.ReadAllBytes(path)));

    [Fact]
    public void OverwriteRefusesToDeleteTheRunsOwnInputs()
    {
        string model = TinyModels.Create(P("base"), "llama");
        TinyModels.WriteJsonl(P("sft.jsonl"), Enumerable.Range(0, 4).Select(i => (object)new { prompt = $"q{i}", completion = $" a{i}" }));
        var first = CliRunner.Run("sft", "--model", model, "--data", P("sft.jsonl"), "--out", P("run"), "--max-steps", "2", "--save-steps", "0");
        Assert.True(first.ExitCode == 0, first.StdErr);
        string weights = Hash(P("run/final/model.safetensors"));

        // The starting model lies in the run that --overwrite would delete; so does a data file copied into it.
        Refused(CliRunner.Run("sft", "--model", P("run/final"), "--data", P("sft.jsonl"), "--out", P("run"), "--max-steps", "2", "--overwrite"),
            "--model", "run/final", "--overwrite would delete");
        File.Copy(P("sft.jsonl"), P("run/final/data.jsonl"));
        Refused(CliRunner.Run("sft", "--model", model, "--data", P("run/final/data.jsonl"), "--out", P("run"), "--max-steps", "2", "--overwrite"), "--data");
        Assert.Equal(weights, Hash(P("run/final/model.safetensors")));
        Assert.True(File.Exists(P("run/final/tokenizer.json")));

        // An --out that cannot be a directory is named as the flag it is.
        File.WriteAllText(P("afile"), "x");
        Refused(CliRunner.Run("sft", "--model", model, "--data", P("sft.jsonl"), "--out", P("afile/run"), "--max-steps", "1"), "--out", "cannot be created");

        // Inputs elsewhere: --overwrite replaces the run as before.
        var again = CliRunner.Run("sft", "--model", model, "--data", P("sft.jsonl"), "--out", P("run"), "--max-steps", "2", "--save-steps", "0", "--overwrite");
        Assert.True(again.ExitCode == 0, again.StdErr);
        Assert.False(File.Exists(P("run/final/data.jsonl")));
    }

    [Fact]
    public void InitNeverWritesOverAnExistingDirectoryOrFile()
    {
        string[] init = ["init", "--arch", "llama", "--vocab-size", "259", "--d-model", "32", "--layers", "1", "--heads", "2", "--kv-heads", "1", "--tokenizer", "byte", "--out"];
        var made = CliRunner.Run([.. init, P("m")]);
        Assert.True(made.ExitCode == 0, made.StdErr);
        string weights = Hash(P("m/model.safetensors"));
        Refused(CliRunner.Run([.. init, P("m"), "--seed", "2"]), "not empty");
        Assert.Equal(weights, Hash(P("m/model.safetensors")));
        File.WriteAllText(P("afile"), "x");
        Refused(CliRunner.Run([.. init, P("afile")]), "is a file");
        Assert.Equal("x", File.ReadAllText(P("afile")));
        Directory.CreateDirectory(P("empty"));
        Assert.Equal(0, CliRunner.Run([.. init, P("empty")]).ExitCode);
    }

    [Fact]
    public void OutputsNeverReplaceTheirInputs()
    {
        string model = TinyModels.Create(P("base"), "llama");
        TinyModels.WriteJsonl(P("prompts.jsonl"), [new { prompt = "Hi" }]);
        string prompts = File.ReadAllText(P("prompts.jsonl"));
        Refused(CliRunner.Run("generate", "--model", model, "--input", P("prompts.jsonl"), "--output", P("prompts.jsonl"), "--max-new-tokens", "2"),
            "--output", "is also --input");
        Refused(CliRunner.Run("generate", "--model", model, "--input", P("prompts.jsonl"), "--output", P("base/config.json"), "--max-new-tokens", "2"),
            "would replace a file in --model");
        TinyModels.WriteJsonl(P("text.jsonl"), [new { text = "Hi there" }]);
        Refused(CliRunner.Run("logprobs", "--model", model, "--input", P("text.jsonl"), "--output", P("text.jsonl")), "is also --input");
        Refused(CliRunner.Run("tokenize", "--tokenizer", model, "--input", P("text.jsonl"), "--output", P("text.jsonl")), "is also --input");
        Assert.Equal(prompts, File.ReadAllText(P("prompts.jsonl")));
        Assert.Contains("Hi there", File.ReadAllText(P("text.jsonl")));
        var ok = CliRunner.Run("generate", "--model", model, "--input", P("prompts.jsonl"), "--output", P("out.jsonl"), "--max-new-tokens", "2");
        Assert.True(ok.ExitCode == 0, ok.StdErr);

        // report: a page replaces a page, never a run's files.
        TinyModels.WriteJsonl(P("sft.jsonl"), Enumerable.Range(0, 4).Select(i => (object)new { prompt = $"q{i}", completion = $" a{i}" }));
        Assert.Equal(0, CliRunner.Run("sft", "--model", model, "--data", P("sft.jsonl"), "--out", P("run"), "--max-steps", "1", "--save-steps", "0").ExitCode);
        string metrics = File.ReadAllText(P("run/metrics.jsonl"));
        Refused(CliRunner.Run("report", P("run"), "--output", P("run/metrics.jsonl")), "is not an HTML page");
        Refused(CliRunner.Run("report", P("run"), "--output", P("base/config.json")), "is not an HTML page");   // any file, not only the run's
        Assert.Equal(metrics, File.ReadAllText(P("run/metrics.jsonl")));
        Assert.Equal(0, CliRunner.Run("report", P("run")).ExitCode);
        Assert.Equal(0, CliRunner.Run("report", P("run")).ExitCode);   // report.html replaced by a new page

        // A cut-off last line (a run killed mid-write) is passed over; damage before it is named, not skipped.
        File.AppendAllText(P("run/metrics.jsonl"), "{\"step\": 9, \"lo");
        Assert.Equal(0, CliRunner.Run("report", P("run")).ExitCode);
        File.WriteAllText(P("run/metrics.jsonl"), "garbage{\n" + metrics);
        Refused(CliRunner.Run("report", P("run")), "metrics.jsonl:1", "not a JSON line");
    }

    [Fact]
    public void AnnotateExportNeverWritesOverItsProjectsDatabase()
    {
        TinyModels.WriteJsonl(P("imp.jsonl"), [new { prompt = "a", completions = new[] { " x", " y" } }]);
        var created = CliRunner.Run(["annotate", "create", "--project", "p", "--import", P("imp.jsonl")], workingDirectory: _dir);
        Assert.True(created.ExitCode == 0, created.StdErr);
        long size = new FileInfo(P("p.annotations.db")).Length;
        Refused(CliRunner.Run(["annotate", "export", "--project", "p", "--format", "pairs", "--out", "p.annotations.db"], workingDirectory: _dir),
            "--out", "the project's database");
        Assert.Equal(size, new FileInfo(P("p.annotations.db")).Length);
        var export = CliRunner.Run(["annotate", "export", "--project", "p", "--out", "pairs.jsonl"], workingDirectory: _dir);
        Assert.True(export.ExitCode == 0, export.StdErr);

        // Invalid UTF-8 in an import is refused as the data layer refuses it, naming file and line.
        File.WriteAllBytes(P("bad.jsonl"), [.. "{\"prompt\":\"a\",\"completions\":[\" x\",\""u8, 0xFF, .. "\"]}\n"u8]);
        Refused(CliRunner.Run(["annotate", "create", "--project", "q", "--import", P("bad.jsonl")], workingDirectory: _dir), "bad.jsonl:1", "UTF-8");
    }

    [Fact]
    public void AnAdapterWithNonFiniteValuesOrAContradictoryConfigIsRefused()
    {
        string model = TinyModels.Create(P("base"), "llama");
        TinyModels.WriteJsonl(P("sft.jsonl"), Enumerable.Range(0, 4).Select(i => (object)new { prompt = $"q{i}", completion = $" a{i}" }));
        var sft = CliRunner.Run("sft", "--model", model, "--data", P("sft.jsonl"), "--out", P("lora"), "--max-steps", "2", "--save-steps", "0",
            "--lora-r", "2", "--learning-rate", "0.01");
        Assert.True(sft.ExitCode == 0, sft.StdErr);
        TinyModels.WriteJsonl(P("prompts.jsonl"), [new { prompt = "Hi" }]);

        // A NaN written into one lora_B.
        CopyDirectory(P("lora/final"), P("nan"));
        string tensor = PoisonFirst(P("nan/adapter_model.safetensors"), "q_proj.lora_B.weight");
        Refused(CliRunner.Run("merge", "--model", model, "--adapter", P("nan"), "--out", P("merged")), tensor, "NaN or infinite");
        Assert.False(Directory.Exists(P("merged")) && Directory.EnumerateFileSystemEntries(P("merged")).Any());
        Refused(CliRunner.Run("generate", "--model", model, "--adapter", P("nan"), "--input", P("prompts.jsonl"), "--max-new-tokens", "2"), "NaN or infinite");

        // A NaN in the model itself is named as the checkpoint names the tensor.
        CopyDirectory(model, P("nanbase"));
        string weight = PoisonFirst(P("nanbase/model.safetensors"), "layers.1.mlp.up_proj.weight");
        Refused(CliRunner.Run("generate", "--model", P("nanbase"), "--input", P("prompts.jsonl"), "--max-new-tokens", "2"), $"tensor '{weight}'", "NaN or infinite");

        // adapter_config.json that contradicts the tensors: another rank, target modules that name none of them.
        CopyDirectory(P("lora/final"), P("rank"));
        Rewrite(P("rank/adapter_config.json"), o => o["r"] = 4);
        Refused(CliRunner.Run("merge", "--model", model, "--adapter", P("rank"), "--out", P("m2")), "field \"r\"", "rank 2");
        CopyDirectory(P("lora/final"), P("targets"));
        Rewrite(P("targets/adapter_config.json"), o => o["target_modules"] = new System.Text.Json.Nodes.JsonArray("nope_proj"));
        Refused(CliRunner.Run("merge", "--model", model, "--adapter", P("targets"), "--out", P("m3")), "target_modules");
    }

    [Fact]
    public void DivergedRunsEndCleanlyWithASummary()
    {
        string model = TinyModels.Create(P("base"), "llama");
        TinyModels.WriteJsonl(P("prefs.jsonl"), Enumerable.Range(0, 4).Select(i => (object)new { prompt = $"q{i}", chosen = $" yes{i}", rejected = $" no{i}" }));
        // A reward model whose scores overflow: no final model, a summary that says why, no stack trace.
        var rm = CliRunner.Run("rm", "--model", model, "--data", P("prefs.jsonl"), "--out", P("rm"), "--max-steps", "1", "--learning-rate", "1e20", "--max-grad-norm", "0");
        Refused(rm, "rm:");
        using (var summary = JsonDocument.Parse(File.ReadAllText(P("rm/summary.json"))))
            Assert.Equal("stopped_non_finite", summary.RootElement.GetProperty("status").GetString());
        Assert.False(File.Exists(P("rm/final/reward_model.json")));

        // A GRPO run whose metrics are NaN still writes its summary (NaN as metrics.jsonl writes it).
        var good = CliRunner.Run("rm", "--model", model, "--data", P("prefs.jsonl"), "--out", P("rm-ok"), "--max-steps", "1");
        Assert.True(good.ExitCode == 0, good.StdErr);
        TinyModels.WriteJsonl(P("prompts.jsonl"), [new { prompt = "Hi" }, new { prompt = "Yo" }]);
        var grpo = CliRunner.Run("grpo", "--policy", model, "--prompts", P("prompts.jsonl"), "--reward-model", P("rm-ok/final"), "--out", P("grpo"),
            "--max-steps", "2", "--max-new-tokens", "2", "--learning-rate", "1e30", "--max-grad-norm", "0");
        Assert.DoesNotContain("   at ", grpo.StdErr);
        Assert.True(File.Exists(P("grpo/summary.json")), grpo.StdErr);
        using (var summary = JsonDocument.Parse(File.ReadAllText(P("grpo/summary.json"))))
            Assert.True(summary.RootElement.TryGetProperty("status", out _));
    }

    [Fact]
    public void ADamagedReferenceCacheIsComputedAgain()
    {
        string model = TinyModels.Create(P("base"), "llama");
        TinyModels.WriteJsonl(P("prefs.jsonl"), Enumerable.Range(0, 4).Select(i => (object)new { prompt = $"q{i}", chosen = $" yes{i}", rejected = $" no{i}" }));
        string[] dpo = ["dpo", "--policy", model, "--data", P("prefs.jsonl"), "--out", P("dpo"), "--max-steps", "2", "--save-steps", "0"];
        var first = CliRunner.Run(dpo);
        Assert.True(first.ExitCode == 0, first.StdErr);
        var bytes = File.ReadAllBytes(P("dpo/reference_logps.bin"));
        BitConverter.GetBytes(float.NaN).CopyTo(bytes, bytes.Length - 4);
        File.WriteAllBytes(P("dpo/reference_logps.bin"), bytes);
        var again = CliRunner.Run([.. dpo, "--overwrite"]);
        Assert.True(again.ExitCode == 0, again.StdErr);
        Assert.Contains("computing reference log-probabilities", again.StdErr);
        Assert.DoesNotContain("skipped", again.StdErr);
        var third = CliRunner.Run([.. dpo, "--overwrite"]);
        Assert.Contains("read from", third.StdErr);
    }

    [Fact]
    public void AnEvaluationHasADirectoryOfItsOwn()
    {
        string model = TinyModels.Create(P("base"), "llama");
        TinyModels.WriteJsonl(P("prompts.jsonl"), [new { prompt = "Hi" }]);
        AlignSharp.Training.Evaluation.EvalOptions Options(string outDir, bool overwrite = false)
            => new() { Policy = model, Prompts = P("prompts.jsonl"), JudgeUrl = "http://127.0.0.1:1/", Out = outDir, Overwrite = overwrite };
        Options(P("new")).Validate();
        Assert.Contains("holds a model", Assert.Throws<UserInputException>(() => Options(model).Validate()).Message);
        Directory.CreateDirectory(P("run"));
        File.WriteAllText(P("run/metrics.jsonl"), "");
        Assert.Contains("holds a training run", Assert.Throws<UserInputException>(() => Options(P("run")).Validate()).Message);
        Directory.CreateDirectory(P("ev"));
        File.WriteAllText(P("ev/eval.json"), "{}");
        Assert.Contains("--overwrite", Assert.Throws<UserInputException>(() => Options(P("ev")).Validate()).Message);
        Options(P("ev"), overwrite: true).Validate();
    }

    private static void Rewrite(string path, Action<System.Text.Json.Nodes.JsonObject> change)
    {
        var o = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        change(o);
        File.WriteAllText(path, o.ToJsonString());
    }

    /// <summary>Writes NaN over the first value of the tensor whose name ends with <paramref name="suffix"/>; returns its name.</summary>
    private static string PoisonFirst(string path, string suffix)
    {
        var bytes = File.ReadAllBytes(path);
        long headerLength = BitConverter.ToInt64(bytes, 0);
        var header = JsonDocument.Parse(bytes.AsMemory(8, (int)headerLength)).RootElement;
        var entry = header.EnumerateObject().First(p => p.Name.EndsWith(suffix, StringComparison.Ordinal));
        Assert.Equal("F32", entry.Value.GetProperty("dtype").GetString());
        long start = 8 + headerLength + entry.Value.GetProperty("data_offsets")[0].GetInt64();
        BitConverter.GetBytes(float.NaN).CopyTo(bytes, start);
        File.WriteAllBytes(path, bytes);
        return entry.Name;
    }

    private static void CopyDirectory(string from, string to)
    {
        Directory.CreateDirectory(to);
        foreach (var f in Directory.GetFiles(from)) File.Copy(f, Path.Combine(to, Path.GetFileName(f)));
    }
}
