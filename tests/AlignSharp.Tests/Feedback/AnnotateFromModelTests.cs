using System.Text.Json;
using AlignSharp.Models;
using AlignSharp.Models.Checkpoints;
using AlignSharp.Tests.Training;
using AlignSharp.Text;

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

    [Fact]
    public void CreateFailsNamingThePromptWhenTheModelOnlyEmitsWhitespace()
    {
        // A byte-level GPT-2 rigged to emit only ' ' and '\n': the final norm outputs e₀ (weight 0, bias e₀), so the tied
        // head's logit for byte v is embed[v, 0]; those of ' ' and '\n' are 100, every other -100.
        string dir = Path.Combine(_dir, "ws-model");
        var config = ModelPresets.Gpt2(259, 32, 1, 4, 128) with { BosTokenId = ByteTokenizer.BosTokenId, EosTokenIds = [ByteTokenizer.EosTokenId], PadTokenId = ByteTokenizer.PadTokenId };
        ModelIO.Save(TinyModels.Rigged(config, v => v is ' ' or '\n' ? 100 : -100), dir);
        AtomicFile.WriteText(Path.Combine(dir, "tokenizer.json"), ByteTokenizerJson.TokenizerJson());
        AtomicFile.WriteText(Path.Combine(dir, "tokenizer_config.json"), ByteTokenizerJson.TokenizerConfigJson());

        TinyModels.WriteJsonl(Path.Combine(_dir, "prompts.jsonl"), [new { prompt = "Hello" }, new { prompt = "Why?" }]);
        var created = CliRunner.Run(["annotate", "create", "--model", dir, "--prompts", "prompts.jsonl", "--k", "2", "--project", "ws",
            "--max-new-tokens", "3", "--seed", "0"], workingDirectory: _dir);
        Assert.NotEqual(0, created.ExitCode);
        Assert.Contains("prompts.jsonl:1: the model produced only whitespace", created.StdErr);
        Assert.Contains("--max-new-tokens", created.StdErr);
        Assert.False(File.Exists(Path.Combine(_dir, "ws.annotations.db")));   // no project whose rankings could never train
    }
}
