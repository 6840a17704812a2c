using System.Text.Json.Nodes;
using AlignSharp.Models;
using AlignSharp.Models.Lora;
using AlignSharp.Text;
using AlignSharp.Tests.Training;
using AlignSharp.Training.Data;

namespace AlignSharp.Tests.Cli;

/// <summary>Inputs that used to end in a .NET exception instead of the reading transformers gives them or a clear error.</summary>
public sealed class MalformedInputTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("alignsharp-malformed-").FullName;
    public void Dispose() => Directory.Delete(_dir, recursive: true);
    private string P(string name) => Path.Combine(_dir, name);

    /// <summary>A key given twice keeps its last value, as Python's json.loads (and so transformers) reads it: in
    /// config.json, and in a message's extra fields that the chat template sees.</summary>
    [Fact]
    public void ARepeatedJsonKeyKeepsItsLastValueAsPythonReadsIt()
    {
        const string common = "\"model_type\":\"llama\",\"vocab_size\":10,\"num_hidden_layers\":1,\"num_attention_heads\":2,\"intermediate_size\":16";
        var twice = ModelConfig.Parse("{" + common + ",\"hidden_size\":8,\"hidden_size\":16}");
        Assert.Equal(16, twice.HiddenSize);
        Assert.Equal(ModelConfig.Parse("{" + common + ",\"hidden_size\":16}").ToJson(), twice.ToJson());

        File.WriteAllText(P("m.jsonl"), """{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok", "meta": {"k": 1, "k": 2}}]}""" + "\n");
        var example = Assert.Single(DatasetLoader.LoadSft([P("m.jsonl")]).Records);
        Assert.Equal("""{"meta":{"k":2}}""", example.Completion.Messages![^1].Fields);
    }

    [Fact]
    public void ATokenizerIdThatIsNotANumberIsAClearError()
    {
        var json = JsonNode.Parse(ByteTokenizerJson.TokenizerJson())!.AsObject();
        json["added_tokens"]![0]!["id"] = "7";
        Directory.CreateDirectory(P("tok"));
        File.WriteAllText(P("tok/tokenizer.json"), json.ToJsonString());
        var e = Assert.Throws<UserInputException>(() => Tokenizers.Load(P("tok")));
        Assert.Contains("added_tokens[0]", e.Message);
        Assert.Contains("\"id\" is not a non-negative integer", e.Message);
        var r = CliRunner.Run("tokenize", "--tokenizer", P("tok"), "--text", "hi");
        Assert.Equal(2, r.ExitCode);
        Assert.DoesNotContain("   at ", r.StdErr);
    }

    [Fact]
    public void ALoraRankTooLargeForMemoryIsAClearError()
    {
        var model = ModelIO.Load(TinyModels.Create(P("m"), "llama"));
        var e = Assert.Throws<UserInputException>(() => LoraAdapter.Create(model, new LoraConfig(2_000_000_000, 8, TargetModules: ["q_proj"]), seed: 1));
        Assert.Contains("--lora-r 2000000000 is too large", e.Message);
        Assert.Contains("q_proj", e.Message);
    }

    /// <summary>An output path through a symbolic link writes the link's target (the link stays); one under a file is a
    /// clear error naming the path.</summary>
    [Fact]
    public void AnOutputThroughASymlinkWritesItsTargetAndOneUnderAFileIsAClearError()
    {
        File.WriteAllText(P("in.jsonl"), "{\"text\": \"hi\"}\n");
        File.WriteAllText(P("target.jsonl"), "old\n");
        File.CreateSymbolicLink(P("link.jsonl"), P("target.jsonl"));
        var r = CliRunner.Run("tokenize", "--tokenizer", "byte", "--input", P("in.jsonl"), "--output", P("link.jsonl"));
        Assert.True(r.ExitCode == 0, r.StdErr);
        Assert.NotNull(new FileInfo(P("link.jsonl")).LinkTarget);
        Assert.Contains("\"ids\"", File.ReadAllText(P("target.jsonl")));

        File.WriteAllText(P("afile"), "");
        var under = CliRunner.Run("tokenize", "--tokenizer", "byte", "--input", P("in.jsonl"), "--output", P("afile/x.jsonl"));
        Assert.Equal(2, under.ExitCode);
        Assert.Contains("afile/x.jsonl: cannot create its folder", under.StdErr);
    }
}
