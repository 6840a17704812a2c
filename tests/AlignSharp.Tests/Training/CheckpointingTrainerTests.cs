using AlignSharp.Training.RewardModeling;
using AlignSharp.Training.Sft;

namespace AlignSharp.Tests.Training;

/// <summary>--gradient-checkpointing in sft (LoRA with dropout, bf16 frozen base) and rm (full parameters): the trained
/// weights equal the ordinary run's bit for bit.</summary>
public sealed class CheckpointingTrainerTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("alignsharp-ckpt-").FullName;
    public void Dispose() => Directory.Delete(_dir, recursive: true);
    private string P(string name) => Path.Combine(_dir, name);

    private static void AssertSameFile(string a, string b) => Assert.Equal(File.ReadAllBytes(a), File.ReadAllBytes(b));

    [Fact]
    public void SftLoraWithCheckpointingAndABf16BaseEqualsTheOrdinaryRun()
    {
        var model = TinyModels.Create(P("base"));
        var words = new[] { "cat", "dog", "sun", "sea", "red", "owl", "fig", "ant" };
        var data = TinyModels.WriteJsonl(P("sft.jsonl"), Enumerable.Range(0, 8).Select(i => (object)new { prompt = $"{words[i]}?", completion = $" {words[(i + 3) % 8]}!" }));
        SftOptions Options(string run) => new()
        {
            Model = model, Data = data, Out = P(run), MaxSteps = 3, LearningRate = 1e-2f, BatchSize = 4, SaveSteps = 0, LoggingSteps = 1,
            LoraR = 4, LoraDropout = 0.2, FrozenDtype = "bf16",
        };
        SftTrainer.Train(Options("plain"), TextWriter.Null);
        SftTrainer.Train(Options("ckpt") with { GradientCheckpointing = true }, TextWriter.Null);
        AssertSameFile(P("plain/final/adapter_model.safetensors"), P("ckpt/final/adapter_model.safetensors"));
        Assert.Equal(File.ReadLines(P("plain/metrics.jsonl")).Select(StripTime), File.ReadLines(P("ckpt/metrics.jsonl")).Select(StripTime));
    }

    [Fact]
    public void RewardModelWithCheckpointingEqualsTheOrdinaryRun()
    {
        var model = TinyModels.Create(P("base"), seed: 2);
        var rng = new Random(3);
        string Word() => new(Enumerable.Range(0, 4).Select(_ => (char)('a' + rng.Next(20))).ToArray());
        object Pair() { var w = Word(); return new { prompt = "say:", chosen = $" {w}#{Word()}", rejected = $" {w}{Word()}" }; }
        var data = TinyModels.WriteJsonl(P("prefs.jsonl"), Enumerable.Range(0, 16).Select(_ => Pair()));
        RewardModelOptions Options(string run) => new() { Model = model, Data = data, Out = P(run), MaxSteps = 2, LearningRate = 2e-3f, BatchSize = 8, SaveSteps = 0, LoggingSteps = 1 };
        RewardModelTrainer.Train(Options("plain"), TextWriter.Null);
        RewardModelTrainer.Train(Options("ckpt") with { GradientCheckpointing = true }, TextWriter.Null);
        AssertSameFile(P("plain/final/model.safetensors"), P("ckpt/final/model.safetensors"));
    }

    /// <summary>A metrics line without its wall-clock fields.</summary>
    private static string StripTime(string line)
    {
        var o = System.Text.Json.Nodes.JsonNode.Parse(line)!.AsObject();
        o.Remove("time");
        o.Remove("tokens_per_s");
        return o.ToJsonString();
    }
}
