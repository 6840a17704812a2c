using System.Text.Json;
using AlignSharp.Tests.Training;

namespace AlignSharp.Tests.Cli;

/// <summary>sft, rm and score as a user runs them: processes, files, config files, bad input.</summary>
public sealed class TrainCommandsTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("alignsharp-cli-train-").FullName;
    public void Dispose() => Directory.Delete(_dir, recursive: true);
    private string P(string name) => Path.Combine(_dir, name);

    [Fact]
    public void SftWithAConfigFileThenRmThenScore()
    {
        string model = TinyModels.Create(P("base"));
        TinyModels.WriteJsonl(P("sft.jsonl"), Enumerable.Range(0, 6).Select(i => (object)new { messages = new object[] { new { role = "user", content = $"hi {i}" }, new { role = "assistant", content = $"hello {i}" } } }));
        File.WriteAllText(P("run.yaml"), "max_steps: 4\nlearning-rate: 0.001\nbatch_size: 2\nchat_template: chatml\nlogging_steps: 2\nsave_steps: 2\n");
        var sft = CliRunner.Run("sft", "--model", model, "--data", P("sft.jsonl"), "--config", P("run.yaml"), "--max-steps", "3", "--out", P("sft"));
        Assert.True(sft.ExitCode == 0, sft.StdErr);
        var config = JsonDocument.Parse(File.ReadAllText(P("sft/run_config.json"))).RootElement;
        Assert.Equal(3, config.GetProperty("max_steps").GetInt32());          // the flag beats the file
        Assert.Equal("chatml", config.GetProperty("chat_template").GetString()); // the file beats the default
        Assert.Equal(0.001, config.GetProperty("learning_rate").GetDouble(), 6);
        Assert.True(File.Exists(P("sft/final/config.json")));
        // A run's resolved config is itself a valid --config file.
        var again = CliRunner.Run("sft", "--config", P("sft/run_config.json"), "--out", P("sft2"), "--max-steps", "1");
        Assert.True(again.ExitCode == 0, again.StdErr);
        Assert.True(Directory.Exists(P("sft/checkpoints/step-000002")));
        var summary = JsonDocument.Parse(File.ReadAllText(P("sft/summary.json"))).RootElement;
        Assert.Equal(3, summary.GetProperty("steps").GetInt32());

        TinyModels.WriteJsonl(P("rank.jsonl"), Enumerable.Range(0, 4).Select(i => (object)new { prompt = $"q{i}", completions = new[] { " good", " bad", " ok" }, ranking = new object[] { 0, new[] { 1, 2 } } }));
        var rm = CliRunner.Run("rm", "--model", P("sft/final"), "--data", P("rank.jsonl"), "--max-steps", "2", "--out", P("rm"), "--batch-size", "4");
        Assert.True(rm.ExitCode == 0, rm.StdErr);
        Assert.True(File.Exists(P("rm/final/reward_model.json")));

        TinyModels.WriteJsonl(P("score.jsonl"), [new { prompt = "q1", completion = " good" }, new { prompt = new[] { new { role = "user", content = "q" } }, completion = " bad" }]);
        var score = CliRunner.Run("score", "--reward-model", P("rm/final"), "--input", P("score.jsonl"));
        Assert.True(score.ExitCode == 0, score.StdErr);
        var lines = score.StdOut.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(2, lines.Length);
        Assert.All(lines, l => Assert.True(double.IsFinite(JsonDocument.Parse(l).RootElement.GetProperty("score").GetDouble())));
    }

    [Fact]
    public void BadDataNamesFileLineAndFieldWithoutAStackTrace()
    {
        string model = TinyModels.Create(P("base"));
        File.WriteAllText(P("bad.jsonl"), "{\"prompt\": \"a\", \"completion\": \"b\"}\n{\"prompt\": \"a\", \"completion\": 3}\n");
        var r = CliRunner.Run("sft", "--model", model, "--data", P("bad.jsonl"), "--out", P("run"), "--max-steps", "1");
        Assert.NotEqual(0, r.ExitCode);
        Assert.Contains("bad.jsonl:2", r.StdErr);
        Assert.Contains("completion", r.StdErr);
        Assert.DoesNotContain("   at ", r.StdErr);

        var skip = CliRunner.Run("sft", "--model", model, "--data", P("bad.jsonl"), "--out", P("run2"), "--max-steps", "1", "--skip-bad-records");
        Assert.True(skip.ExitCode == 0, skip.StdErr);
        Assert.Contains("skipped", skip.StdErr);

        File.WriteAllText(P("c.yaml"), "no_such_option: 1\n");
        var cfg = CliRunner.Run("sft", "--model", model, "--data", P("bad.jsonl"), "--out", P("run3"), "--config", P("c.yaml"));
        Assert.NotEqual(0, cfg.ExitCode);
        Assert.Contains("c.yaml:1: key \"no_such_option\"", cfg.StdErr);
    }
}
