using System.Text.Json;
using AlignSharp.Engine;
using AlignSharp.Models;
using AlignSharp.Models.Lora;
using AlignSharp.Text;
using AlignSharp.Training.Data;
using AlignSharp.Training.Runs;
using AlignSharp.Training.Sft;

namespace AlignSharp.Tests.Training;

/// <summary>Training LoRA adapters with the trainers (--lora-r): frozen base, adapter-only checkpoints and outputs.</summary>
public sealed class LoraTrainingTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("alignsharp-lora-train-").FullName;
    public void Dispose() => Directory.Delete(_dir, recursive: true);
    private string P(string name) => Path.Combine(_dir, name);

    private string SftData()
    {
        var words = new[] { "cat", "dog", "sun", "sea", "red", "owl", "fig", "ant" };
        return TinyModels.WriteJsonl(P("sft.jsonl"), words.Select(w => (object)new { prompt = $"{w}?", completion = $" {new string(w.Reverse().ToArray())}!" }));
    }

    private static readonly int[] Probe = [256, 'c', 'a', 't', '?', ' ', 't', 'a', 'c', '!'];

    private static float[] Logits(TransformerModel model)
    {
        using var noGrad = Autograd.NoGrad();
        using var scope = TensorScope.Begin();
        return model.Forward(Probe, 1, Probe.Length).ToArray();
    }

    private SftOptions Opts(string model, string run, int steps) => new()
    {
        Model = model, Data = SftData(), Out = P(run), MaxSteps = steps, LearningRate = 1e-2f, BatchSize = 2, SaveSteps = 3, LoggingSteps = 1,
        LrScheduler = "cosine", WarmupSteps = 1, LoraR = 4, LoraTargetModules = "q_proj,v_proj,down_proj", LoraDropout = 0.1,
    };

    [Fact]
    public void AFreshAdapterGivesTheBaseModelExactlyEvenWithDropoutOn()
    {
        var pre = Pretrained.Load(TinyModels.Create(P("base"), "llama"));
        var baseLogits = Logits(pre.Model);
        var options = new SftOptions { Out = "x", LoraR = 4 };
        var trainable = new TrainableAdapter(pre.Model, LoraAdapter.Create(pre.Model, options.LoraConfigFor("base")!, 1), null, merge: false);
        trainable.Adapter.DropoutRng = new Random(3);
        Assert.Equal(baseLogits, Logits(pre.Model));
        Assert.Equal(8, trainable.Adapter.Config.Alpha); // default alpha = 2×r
        Assert.Equal(0.05, trainable.Adapter.Config.Dropout);
        Assert.Equal(7 * 2, trainable.Adapter.Modules.Count); // all-linear: q, k, v, o, gate, up, down in each of 2 blocks
    }

    [Fact]
    public void SftWithLoraTrainsOnlyTheAdapterAndItsFinalAdapterReproducesTheTrainedLogits()
    {
        string model = TinyModels.Create(P("base"), "llama");
        var pre = Pretrained.Load(model);
        var o = Opts(model, "run", 6) with { SaveSteps = 0 };
        o.Validate();
        var records = DatasetLoader.LoadSft(o.Data!, new DataLoadOptions { ExpectedKind = DatasetKind.Sft }).Records;
        var seqs = SftEncoder.Encode(records, pre.Tokenizer!, ChatTemplate.Resolve(null, model), new SftEncodingOptions()).Records;
        var task = new SftTask(pre.Model, pre.Tokenizer!, model, seqs, [], o.BatchSize, o.Seed, o.StartingAdapter(pre.Model, model));
        var initial = task.Trainable.Parameters.Select(p => p.Parameter.ToArray()).ToList();
        new TrainingLoop(o, task, "sft", TextWriter.Null).Run();

        // The base is untouched; every A and B moved (B from zero).
        var fresh = ModelIO.Load(model);
        foreach (var (name, p) in fresh.NamedParameters)
        {
            Assert.False(pre.Model.Parameter(name).RequiresGrad, name);
            Assert.Equal(p.ToArray(), pre.Model.Parameter(name).ToArray());
        }
        var trained = task.Trainable.Parameters;
        Assert.Equal(2 * 3 * 2, trained.Count);
        for (int i = 0; i < trained.Count; i++) Assert.NotEqual(initial[i], trained[i].Parameter.ToArray());

        // final/ is a PEFT adapter with the tokenizer; loaded onto the base it gives the trained model's logits.
        Assert.True(File.Exists(P("run/final/adapter_config.json")) && File.Exists(P("run/final/adapter_model.safetensors")));
        Assert.True(File.Exists(P("run/final/tokenizer.json")));
        Assert.False(File.Exists(P("run/final/model.safetensors")));
        var config = JsonDocument.Parse(File.ReadAllText(P("run/final/adapter_config.json"))).RootElement;
        Assert.Equal("LORA", config.GetProperty("peft_type").GetString());
        Assert.Equal(4, config.GetProperty("r").GetInt32());
        Assert.Equal(8, config.GetProperty("lora_alpha").GetDouble());
        pre.Model.Adapter!.DropoutRng = null;
        var trainedLogits = Logits(pre.Model);
        fresh.Adapter = LoraAdapter.Load(P("run/final"), fresh);
        Assert.Equal(trainedLogits, Logits(fresh));
        fresh.Adapter.Enabled = false;
        Assert.NotEqual(trainedLogits, Logits(fresh));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)] // DoRA: its magnitudes train, checkpoint and resume with A and B
    public void ResumingALoraRunIsBitForBitAndCheckpointsHoldOnlyTheAdapter(bool dora)
    {
        string model = TinyModels.Create(P("base"), "llama");
        SftTrainer.Train(Opts(model, "full", 6) with { UseDora = dora }, TextWriter.Null);
        SftTrainer.Train(Opts(model, "part", 6) with { UseDora = dora }, TextWriter.Null);
        var checkpoint = P("part/checkpoints/step-000003");
        Assert.True(File.Exists(Path.Combine(checkpoint, "adapter", "adapter_model.safetensors")));
        Assert.False(Directory.Exists(Path.Combine(checkpoint, "model")));
        Directory.Delete(P("part/final"), true);
        Directory.Delete(P("part/checkpoints/step-000006"), true);
        SftTrainer.Train(Opts(model, "part", 6) with { Resume = "", UseDora = dora }, TextWriter.Null);
        Assert.Equal(File.ReadAllBytes(P("full/final/adapter_model.safetensors")), File.ReadAllBytes(P("part/final/adapter_model.safetensors")));
        var trained = LoraAdapter.Load(P("full/final"), ModelIO.Load(model));
        Assert.Equal(dora, trained.Config.UseDora);
        if (dora)
        {
            // The magnitudes moved away from the base rows' norms they started at.
            var start = LoraAdapter.Create(ModelIO.Load(model), trained.Config, seed: 0);
            Assert.All(trained.Modules.Zip(start.Modules), p => Assert.NotEqual(p.Second.Magnitude!.ToArray(), p.First.Magnitude!.ToArray()));
        }
        var la = File.ReadAllLines(P("full/metrics.jsonl")).Select(l => JsonDocument.Parse(l).RootElement.GetProperty("loss").GetDouble());
        var lb = File.ReadAllLines(P("part/metrics.jsonl")).Select(l => JsonDocument.Parse(l).RootElement.GetProperty("loss").GetDouble());
        Assert.Equal(la, lb);

        // A LoRA checkpoint cannot resume a run with other LoRA settings.
        Directory.Delete(P("part/final"), true);
        var e = Assert.ThrowsAny<Exception>(() => SftTrainer.Train(Opts(model, "part", 6) with { Resume = "", LoraR = 8, UseDora = dora }, TextWriter.Null));
        Assert.Contains("lora", e.Message, StringComparison.OrdinalIgnoreCase);
    }

    [Fact]
    public void MergeWritesTheModelTheAdapterDefines()
    {
        string model = TinyModels.Create(P("base"), "gpt2");
        SftTrainer.Train(Opts(model, "adapter", 3) with { SaveSteps = 0, LoraTargetModules = "all-linear" }, TextWriter.Null);
        SftTrainer.Train(Opts(model, "merged", 3) with { SaveSteps = 0, LoraTargetModules = "all-linear", Merge = true }, TextWriter.Null);
        Assert.False(File.Exists(P("merged/final/adapter_config.json")));
        Assert.True(File.Exists(P("merged/final/tokenizer.json")));
        var withAdapter = ModelIO.Load(model);
        withAdapter.Adapter = LoraAdapter.Load(P("adapter/final"), withAdapter);
        var a = Logits(withAdapter);
        var b = Logits(ModelIO.Load(P("merged/final")));
        Assert.NotEqual(Logits(ModelIO.Load(model)), b);
        for (int i = 0; i < a.Length; i++) Assert.True(Math.Abs(a[i] - b[i]) < 1e-4, $"logit {i}: adapter {a[i]}, merged {b[i]}");
    }

    [Fact]
    public void LoraOptionsAreCheckedAndRejectedWhereNotSupported()
    {
        string data = SftData();
        Assert.Contains("--lora-r", Assert.Throws<UserInputException>(() => new AlignSharp.Training.RewardModeling.RewardModelOptions { Model = "m", Data = data, Out = "o", LoraR = 4, Adapter = "a" }.Validate()).Message);
        Assert.Contains("--merge", Assert.Throws<UserInputException>(() => new SftOptions { Model = "m", Data = data, Out = "o", Merge = true }.Validate()).Message);
        Assert.Contains("--lora-dropout", Assert.Throws<UserInputException>(() => new SftOptions { Model = "m", Data = data, Out = "o", LoraR = 4, LoraDropout = 1 }.Validate()).Message);
        // The adapter's settings without a new adapter would be ignored: errors that name them.
        var alone = Assert.Throws<UserInputException>(() => new SftOptions { Model = "m", Data = data, Out = "o", LoraAlpha = 8, UseRslora = true, UseDora = true }.Validate()).Message;
        Assert.Contains("--lora-alpha, --use-rslora, --use-dora need --lora-r", alone);
        Assert.Contains("--lora-dropout needs --lora-r", Assert.Throws<UserInputException>(() => new SftOptions { Model = "m", Data = data, Out = "o", LoraDropout = 0.1 }.Validate()).Message);
        Assert.Contains("--lora-target-modules needs --lora-r", Assert.Throws<UserInputException>(() => new AlignSharp.Training.Dpo.DpoOptions { Policy = "m", Data = data, Out = "o", LoraTargetModules = "q_proj" }.Validate()).Message);
        var continued = Assert.Throws<UserInputException>(() => new SftOptions { Model = "m", Data = data, Out = "o", Adapter = "a", LoraDropout = 0.1 }.Validate()).Message;
        Assert.Contains("--lora-dropout: --adapter continues a saved adapter, whose adapter_config.json sets this", continued);
        // With --lora-r they are the new adapter's settings; with neither, the defaults pass.
        new SftOptions { Model = "m", Data = data, Out = "o", LoraR = 4, LoraAlpha = 8, LoraDropout = 0.1, LoraTargetModules = "q_proj", UseRslora = true }.Validate();
        new SftOptions { Model = "m", Data = data, Out = "o" }.Validate();
        new SftOptions { Model = "m", Data = data, Out = "o", Adapter = "a" }.Validate();
        string model = TinyModels.Create(P("base"), "llama");
        var e = Assert.Throws<UserInputException>(() => SftTrainer.Train(Opts(model, "bad", 1) with { LoraTargetModules = "c_attn" }, TextWriter.Null));
        Assert.Contains("c_attn", e.Message);
    }
}
