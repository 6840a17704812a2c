using System.Text.Json;
using AlignSharp.Models;
using AlignSharp.Models.Lora;
using AlignSharp.Training.Dpo;

namespace AlignSharp.Tests.Dpo;

/// <summary>DPO with --lora-r: only the adapter trains, and the reference is the policy with its adapter switched off.</summary>
public sealed class DpoLoraTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("alignsharp-dpo-lora-").FullName;
    public void Dispose() => Directory.Delete(_dir, recursive: true);
    private string P(string name) => Path.Combine(_dir, name);

    private DpoOptions Options(string model, string data, string run) => new()
    {
        Policy = model, Data = data, Out = P(run), BatchSize = 4, LearningRate = 1e-2f, LoggingSteps = 1, SaveSteps = 0, MaxSteps = 4,
        LoraR = 4, LoraDropout = 0.1,
    };

    private static List<JsonElement> Train(string run) => File.ReadLines(Path.Combine(run, "metrics.jsonl"))
        .Select(l => JsonDocument.Parse(l).RootElement).Where(e => e.GetProperty("split").GetString() == "train").ToList();

    [Theory]
    [InlineData("sigmoid", 0.6931471805599453)] // −log σ(0)
    [InlineData("ipo", 25.0)]                   // (0 − 1/(2β))², β = 0.1
    [InlineData("hinge", 1.0)]                  // max(0, 1 − β·0)
    [InlineData("simpo", double.NaN)]
    [InlineData("orpo", double.NaN)]
    [InlineData("plackett_luce", double.NaN)]
    public void EveryLossTypeTrainsOnlyTheAdapterAndStartsWithThePolicyEqualToItsReference(string lossType, double firstLoss)
    {
        string model = DpoFixtures.TinyModel(P("m"), seed: 21);
        string data = lossType == "plackett_luce" ? DpoFixtures.Rankings(P("data.jsonl"), 12, seed: 22) : DpoFixtures.Pairs(P("data.jsonl"), 12, seed: 22);
        DpoTrainer.Train(Options(model, data, "run") with { LossType = lossType }, TextWriter.Null);
        var lines = Train(P("run"));
        Assert.Equal(4, lines.Count);
        if (!double.IsNaN(firstLoss)) Assert.Equal(firstLoss, lines[0].GetProperty("loss").GetDouble(), 5);
        if (lossType is "sigmoid" or "ipo" or "hinge")
            Assert.NotEqual(0, lines[^1].GetProperty("rewards/chosen").GetDouble() - lines[^1].GetProperty("rewards/rejected").GetDouble());

        Assert.False(File.Exists(P("run/final/model.safetensors")));
        var baseModel = ModelIO.Load(model);
        var adapter = LoraAdapter.Load(P("run/final"), baseModel);
        Assert.All(adapter.Modules, m => Assert.Contains(m.B.ToArray(), x => x != 0));
    }

    [Fact]
    public void TheAdaptersOffReferenceEqualsThePrecomputedBaseReferenceBitForBit()
    {
        string model = DpoFixtures.TinyModel(P("m"), seed: 23);
        string data = DpoFixtures.Pairs(P("data.jsonl"), 16, seed: 24);
        DpoTrainer.Train(Options(model, data, "pre") with { PrecomputeReference = true, MaxSteps = 6 }, TextWriter.Null);
        DpoTrainer.Train(Options(model, data, "fly") with { PrecomputeReference = false, MaxSteps = 6 }, TextWriter.Null);
        var a = Train(P("pre")); var b = Train(P("fly"));
        foreach (var key in new[] { "loss", "rewards/chosen", "rewards/rejected", "logps/chosen" })
            Assert.Equal(a.Select(e => e.GetProperty(key).GetDouble()), b.Select(e => e.GetProperty(key).GetDouble()));
        Assert.Equal(File.ReadAllBytes(P("pre/final/adapter_model.safetensors")), File.ReadAllBytes(P("fly/final/adapter_model.safetensors")));
        Assert.NotEqual(0, a[^1].GetProperty("rewards/chosen").GetDouble());
    }

    [Fact]
    public void EvalOnlyRejectsLoraOptions()
    {
        var e = Assert.Throws<AlignSharp.UserInputException>(() => new DpoOptions { Policy = "m", Data = P("x"), EvalOnly = true, LoraR = 4 }.Validate());
        Assert.Contains("--lora-r", e.Message);
    }
}

/// <summary>--adapter: continuing an adapter (DPO on top of an SFT adapter).</summary>
public sealed class ContinuedAdapterTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("alignsharp-adapter-").FullName;
    public void Dispose() => Directory.Delete(_dir, recursive: true);
    private string P(string name) => Path.Combine(_dir, name);

    private static List<double> Losses(string run) => File.ReadLines(Path.Combine(run, "metrics.jsonl"))
        .Select(l => JsonDocument.Parse(l).RootElement).Where(e => e.GetProperty("split").GetString() == "train").Select(e => e.GetProperty("loss").GetDouble()).ToList();

    [Fact]
    public void DpoOnAnSftAdapterUsesThePolicyAsItStartsAsReferenceAndSftContinuesTheAdapter()
    {
        string model = DpoFixtures.TinyModel(P("m"), seed: 31);
        string pairs = DpoFixtures.Pairs(P("pairs.jsonl"), 12, seed: 32);
        string sftData = AlignSharp.Tests.Training.TinyModels.WriteJsonl(P("sft.jsonl"), Enumerable.Range(0, 8).Select(i => (object)new { prompt = $"q{i}:", completion = $" a{i}" }));
        var sft = new AlignSharp.Training.Sft.SftOptions { Model = model, Data = sftData, Out = P("sft"), MaxSteps = 6, BatchSize = 4, LearningRate = 2e-2f, LoggingSteps = 1, SaveSteps = 0, LoraR = 4, LoraDropout = 0, LrScheduler = "constant" };
        AlignSharp.Training.Sft.SftTrainer.Train(sft, TextWriter.Null);

        // Continuing the adapter: the first step's loss is the trained adapter's, below the fresh run's first loss.
        AlignSharp.Training.Sft.SftTrainer.Train(sft with { Out = P("sft2"), LoraR = 0, Adapter = P("sft/final"), MaxSteps = 1 }, TextWriter.Null);
        Assert.True(Losses(P("sft2"))[0] < Losses(P("sft"))[0] - 0.1, $"{Losses(P("sft2"))[0]} vs {Losses(P("sft"))[0]}");
        Assert.Equal(File.ReadAllText(P("sft/final/adapter_config.json")), File.ReadAllText(P("sft2/final/adapter_config.json")));

        var dpo = new DpoOptions { Policy = model, Data = pairs, Out = P("pre"), BatchSize = 4, LearningRate = 1e-2f, LoggingSteps = 1, SaveSteps = 0, MaxSteps = 4, Adapter = P("sft/final") };
        DpoTrainer.Train(dpo, TextWriter.Null);
        DpoTrainer.Train(dpo with { Out = P("fly"), PrecomputeReference = false }, TextWriter.Null);
        Assert.Equal(Math.Log(2), Losses(P("pre"))[0], 5); // the reference is the SFT adapter's policy (dropout 0), not the base
        Assert.Equal(Losses(P("pre")), Losses(P("fly")));
        Assert.Equal(File.ReadAllBytes(P("pre/final/adapter_model.safetensors")), File.ReadAllBytes(P("fly/final/adapter_model.safetensors")));
        Assert.Contains("contradict", Assert.Throws<AlignSharp.UserInputException>(() => (dpo with { LoraR = 4 }).Validate()).Message);
    }
}
