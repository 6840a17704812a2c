using System.Text.Json;
using AlignSharp.Tests.Training;

namespace AlignSharp.Tests.Feedback;

/// <summary>`annotate create --model` samples K completions per prompt from a model directory.</summary>
public sealed class AnnotateFromModelTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("alignsharp-annotate-model-").FullName;
    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void CreateSamplesKCompletionsPerPromptAndExports()
    {
        string model = TinyModels.Create(Path.Combine(_dir, "model"));
        TinyModels.WriteJsonl(Path.Combine(_dir, "prompts.jsonl"), [new { prompt = "Hello" }, new { prompt = "Why?" }]);
        var created = CliRunner.Run(["annotate", "create", "--model", model, "--prompts", "prompts.jsonl", "--k", "3", "--project", "p",
            "--max-new-tokens", "5", "--seed", "2"], workingDirectory: _dir);
        Assert.True(created.ExitCode == 0, created.StdErr);
        Assert.True(File.Exists(Path.Combine(_dir, "p.annotations.db")));
        var export = CliRunner.Run(["annotate", "export", "--project", "p", "--format", "rankings", "--out", "r.jsonl"], workingDirectory: _dir);
        Assert.True(export.ExitCode == 0, export.StdErr);
        Assert.Empty(File.ReadAllLines(Path.Combine(_dir, "r.jsonl"))); // nothing ranked yet
    }
}
