using System.Text.Json;
using AlignSharp.Models;
using AlignSharp.Models.Checkpoints;
using AlignSharp.Tests.Models;
using AlignSharp.Text;
using AlignSharp.Training.Dpo;
using AlignSharp.Training.Sft;

namespace AlignSharp.Tests.Dpo;

/// <summary>
/// --gradient-checkpointing (a run equal to the ordinary one, bit for bit) and --frozen-dtype (frozen weights in bf16:
/// the default for a bf16 checkpoint, forced for a float32 one), and bf16 loading straight from a BF16 checkpoint.
/// </summary>
public sealed class MemoryOptionsTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("alignsharp-memory-").FullName;
    public void Dispose() => Directory.Delete(_dir, recursive: true);
    private string P(string name) => Path.Combine(_dir, name);

    private DpoOptions Options(string model, string data, string run) => new()
    {
        Policy = model, Data = data, Out = P(run), BatchSize = 4, LearningRate = 1e-2f, LoggingSteps = 1, SaveSteps = 0, MaxSteps = 3,
        LoraR = 4, LoraDropout = 0.1, PrecomputeReference = false,
    };

    private static List<JsonElement> Train(string run) => File.ReadLines(Path.Combine(run, "metrics.jsonl"))
        .Select(l => JsonDocument.Parse(l).RootElement).Where(e => e.GetProperty("split").GetString() == "train").ToList();

    private static double[] Metric(string run, string key) => Train(run).Select(e => e.GetProperty(key).GetDouble()).ToArray();

    [Fact]
    public void DpoWithGradientCheckpointingEqualsTheOrdinaryRunBitForBit()
    {
        string model = DpoFixtures.TinyModel(P("m"), seed: 31);
        string data = DpoFixtures.Pairs(P("data.jsonl"), 12, seed: 32);
        DpoTrainer.Train(Options(model, data, "plain"), TextWriter.Null);
        DpoTrainer.Train(Options(model, data, "ckpt") with { GradientCheckpointing = true }, TextWriter.Null);
        foreach (var key in new[] { "loss", "grad_norm", "logps/chosen", "logits/chosen" })
            Assert.Equal(Metric(P("plain"), key), Metric(P("ckpt"), key));
        Assert.Equal(File.ReadAllBytes(P("plain/final/adapter_model.safetensors")), File.ReadAllBytes(P("ckpt/final/adapter_model.safetensors")));
        Assert.NotEqual(0, Metric(P("plain"), "rewards/chosen")[^1]);
    }

    [Fact]
    public void FrozenBf16OnAFloat32CheckpointEqualsTheBf16CheckpointsDefault()
    {
        string model = DpoFixtures.TinyModel(P("m32"), seed: 33);
        // The same weights saved in bf16 (rounded to nearest, as --frozen-dtype bf16 rounds them).
        var pre = Pretrained.Load(model);
        ModelIO.Save(pre.Model, P("m16"), SafetensorsDtype.BF16);
        Pretrained.CopyTokenizerFiles(model, P("m16"));
        string data = DpoFixtures.Pairs(P("data.jsonl"), 12, seed: 34);

        DpoTrainer.Train(Options(model, data, "fp32"), TextWriter.Null);
        DpoTrainer.Train(Options(model, data, "forced") with { FrozenDtype = "bf16" }, TextWriter.Null);
        DpoTrainer.Train(Options(P("m16"), data, "default16"), TextWriter.Null);
        foreach (var key in new[] { "loss", "logps/chosen", "logps/rejected", "rewards/chosen" })
            Assert.Equal(Metric(P("forced"), key), Metric(P("default16"), key));
        // bf16 storage really was used: the log-probabilities of the rounded base differ from the float32 one's.
        Assert.NotEqual(Metric(P("fp32"), "logps/chosen"), Metric(P("forced"), "logps/chosen"));
        // Step 0: the adapter starts at zero, so the policy equals its reference whatever the storage.
        Assert.Equal(Math.Log(2), Metric(P("forced"), "loss")[0], 5);
    }

    [Fact]
    public void FrozenDtypeIsValidatedAndRefusedWhereNothingIsFrozen()
    {
        File.WriteAllText(P("d"), "");
        var bad = Assert.Throws<UserInputException>(() => new DpoOptions { Policy = "m", Data = P("d"), Out = P("x"), FrozenDtype = "fp16" }.Validate());
        Assert.Contains("--frozen-dtype must be bf16 or fp32", bad.Message);
        var sft = Assert.Throws<UserInputException>(() => new SftOptions { Model = "m", Data = P("d"), Out = P("x"), FrozenDtype = "bf16" }.Validate());
        Assert.Contains("--frozen-dtype", sft.Message);
        // Full-parameter DPO whose reference is the policy's own precomputed start keeps nothing frozen either.
        Assert.Throws<UserInputException>(() => new DpoOptions { Policy = "m", Data = P("d"), Out = P("x"), FrozenDtype = "bf16" }.Validate());
        new DpoOptions { Policy = "m", Data = P("d"), Out = P("x"), FrozenDtype = "bf16", PrecomputeReference = false }.Validate();
        new SftOptions { Model = "m", Data = P("d"), Out = P("x"), FrozenDtype = "fp32", LoraR = 8 }.Validate();
    }

    /// <summary>
    /// --matmul-precision medium on a float32 checkpoint: the frozen base is kept in bf16 (as --frozen-dtype bf16 keeps it)
    /// and its products round their inputs, in the reference's precomputation too, so at step 0 the policy (adapter at zero)
    /// still equals its reference exactly: loss ln 2, rewards 0. The numbers differ from highest's on the same bf16 base.
    /// </summary>
    [Fact]
    public void DpoWithBf16ProductsKeepsThePolicyEqualToItsReferenceAtTheStart()
    {
        string model = DpoFixtures.TinyModel(P("m"), seed: 35);
        string data = DpoFixtures.Pairs(P("data.jsonl"), 12, seed: 36);
        DpoTrainer.Train(Options(model, data, "highest") with { FrozenDtype = "bf16", PrecomputeReference = true }, TextWriter.Null);
        DpoTrainer.Train(Options(model, data, "medium") with { MatmulPrecision = "medium", PrecomputeReference = true }, TextWriter.Null);
        // ln 2 in float32, as the loss is computed: the margin is exactly 0.
        Assert.Equal((double)MathF.Log(2), Metric(P("medium"), "loss")[0]);
        Assert.Equal(0.0, Metric(P("medium"), "rewards/chosen")[0]);
        Assert.Equal(0.0, Metric(P("medium"), "rewards/rejected")[0]);
        Assert.NotEqual(Metric(P("highest"), "logps/chosen"), Metric(P("medium"), "logps/chosen"));
        Assert.All(Metric(P("medium"), "loss"), v => Assert.True(double.IsFinite(v)));
    }

    /// <summary>The reference cache (kept across --overwrite) is keyed by the products' precision too: a run at highest
    /// and then one at medium in the same directory recomputes, and the medium run's policy still equals its reference
    /// at step 0; a second medium run reads the cache.</summary>
    [Fact]
    public void TheReferenceCacheIsNotReusedAcrossMatmulPrecisions()
    {
        string model = DpoFixtures.TinyModel(P("m"), seed: 38);
        string data = DpoFixtures.Pairs(P("data.jsonl"), 12, seed: 39);
        var o = Options(model, data, "run") with { FrozenDtype = "bf16", PrecomputeReference = true };
        DpoTrainer.Train(o, TextWriter.Null);
        var medium = new StringWriter();
        DpoTrainer.Train(o with { MatmulPrecision = "medium", Overwrite = true }, medium);
        Assert.DoesNotContain("read from", medium.ToString());
        Assert.Equal((double)MathF.Log(2), Metric(P("run"), "loss")[0]);
        Assert.Equal(0.0, Metric(P("run"), "rewards/chosen")[0]);
        var again = new StringWriter();
        DpoTrainer.Train(o with { MatmulPrecision = "medium", Overwrite = true }, again);
        Assert.Contains("read from", again.ToString());
        Assert.Equal((double)MathF.Log(2), Metric(P("run"), "loss")[0]);
    }

    /// <summary>Resuming compares an option the run's configuration does not name (added since the run) with its default:
    /// a run from before --matmul-precision existed resumes at highest and refuses medium.</summary>
    [Fact]
    public void AResumeChecksAnOptionNewerThanTheRunAgainstItsDefault()
    {
        string model = DpoFixtures.TinyModel(P("m"), seed: 40);
        string data = DpoFixtures.Pairs(P("data.jsonl"), 12, seed: 41);
        var o = Options(model, data, "old") with { MaxSteps = 1, SaveSteps = 1 };
        DpoTrainer.Train(o, TextWriter.Null);
        foreach (var config in Directory.GetFiles(P("old"), "run_config.json", SearchOption.AllDirectories))
        {
            var node = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(config))!.AsObject();
            Assert.True(node.Remove("matmul_precision"));
            File.WriteAllText(config, node.ToJsonString());
        }
        var e = Assert.Throws<UserInputException>(() => DpoTrainer.Train(o with { MaxSteps = 2, Resume = "", MatmulPrecision = "medium" }, TextWriter.Null));
        Assert.Contains("--matmul-precision", e.Message);
        DpoTrainer.Train(o with { MaxSteps = 2, Resume = "" }, TextWriter.Null);
        Assert.Equal(2, Metric(P("old"), "loss").Length);
    }

    [Fact]
    public void MatmulPrecisionIsValidatedAndNeedsALoraRun()
    {
        File.WriteAllText(P("d"), "");
        var bad = Assert.Throws<UserInputException>(() => new DpoOptions { Policy = "m", Data = P("d"), Out = P("x"), LoraR = 4, MatmulPrecision = "high" }.Validate());
        Assert.Contains("--matmul-precision must be highest or medium", bad.Message);
        var sft = Assert.Throws<UserInputException>(() => new SftOptions { Model = "m", Data = P("d"), Out = P("x"), MatmulPrecision = "medium" }.Validate());
        Assert.Contains("--matmul-precision medium", sft.Message);
        Assert.Contains("trains every weight", sft.Message);
        var fp32 = Assert.Throws<UserInputException>(() => new SftOptions { Model = "m", Data = P("d"), Out = P("x"), LoraR = 4, MatmulPrecision = "medium", FrozenDtype = "fp32" }.Validate());
        Assert.Contains("--frozen-dtype fp32", fp32.Message);
        new SftOptions { Model = "m", Data = P("d"), Out = P("x"), LoraR = 4, MatmulPrecision = "medium" }.Validate();
        // A full-parameter policy (float32, exact products) beside a frozen copy of itself (the reference, rounded inputs)
        // would differ from it at step 0: refused, in every trainer.
        var full = Assert.Throws<UserInputException>(() => new DpoOptions { Policy = "m", Data = P("d"), Out = P("x"), MatmulPrecision = "medium", PrecomputeReference = false }.Validate());
        Assert.Contains("trains every weight", full.Message);
        Assert.Contains("trains every weight", Assert.Throws<UserInputException>(() => new AlignSharp.Training.Rl.PpoOptions { Policy = "m", Prompts = P("d"), Out = P("x"), MatmulPrecision = "medium" }.Validate()).Message);
        Assert.Contains("trains every weight", Assert.Throws<UserInputException>(() => new AlignSharp.Training.OnlineDpo.OnlineDpoOptions { Policy = "m", Prompts = P("d"), Out = P("x"), JudgeModel = _dir, MatmulPrecision = "medium" }.Validate()).Message);
        new AlignSharp.Training.Rl.PpoOptions { Policy = "m", Prompts = P("d"), Out = P("x"), LoraR = 4, MatmulPrecision = "medium" }.Validate();
        // --eval-only trains no adapter: medium refused, a bad value named.
        var eval = Assert.Throws<UserInputException>(() => new DpoOptions { Policy = "m", Data = P("d"), EvalOnly = true, MatmulPrecision = "medium" }.Validate());
        Assert.Contains("--matmul-precision medium", eval.Message);
        Assert.Contains("--matmul-precision must be", Assert.Throws<UserInputException>(() => new DpoOptions { Policy = "m", Data = P("d"), EvalOnly = true, MatmulPrecision = "fast" }.Validate()).Message);
        // online-dpo always keeps its reference through training, so --frozen-dtype applies to it without LoRA too.
        new AlignSharp.Training.OnlineDpo.OnlineDpoOptions { Policy = "m", Prompts = P("d"), Out = P("x"), JudgeModel = _dir, FrozenDtype = "bf16" }.Validate();
        // medium keeps frozen weights in bf16 whatever the checkpoint stores; highest follows the checkpoint.
        string f32 = DpoFixtures.TinyModel(P("m32"), seed: 37);
        Assert.True(new SftOptions { Model = f32, Data = P("d"), Out = P("x"), LoraR = 4, MatmulPrecision = "medium" }.FrozenInBf16(f32));
        Assert.False(new SftOptions { Model = f32, Data = P("d"), Out = P("x"), LoraR = 4 }.FrozenInBf16(f32));
    }

    [Theory]
    [InlineData("llama-bf16")]   // BF16 tensors copied bit for bit
    [InlineData("gpt2-hub")]     // float32, transposed Conv1D: read, then rounded
    [InlineData("phi3-longrope")] // fused projections: read, then rounded
    public void Bf16LoadingKeepsTheCheckpointsValuesRoundedOnce(string fixture)
    {
        var wide = ModelIO.Load(Fixtures.Dir(fixture));
        var narrow = ModelIO.Load(Fixtures.Dir(fixture), bf16Matrices: true);
        foreach (var (name, p) in wide.NamedParameters)
        {
            var q = narrow.Parameter(name);
            Assert.Equal(p.Rank == 2, q.IsBf16);
            Assert.Equal(p.Rank == 2 ? p.ToBf16().ToArray() : p.ToArray(), q.ToArray());
        }
        Assert.Equal(fixture == "llama-bf16", ModelIO.StoresBf16(Fixtures.Dir(fixture)));
    }

    [Fact]
    public void ABf16LoadedLanguageModelHeadMissingFromTheCheckpointStartsAsTheEmbedding()
    {
        // A scalar-head checkpoint (no lm_head) loaded as an untied language model: the new head copies the embedding's bits.
        ModelIO.Save(ModelIO.Load(Fixtures.Dir("llama-gqa"), HeadKind.Scalar), P("rm"), SafetensorsDtype.BF16);
        var model = ModelIO.Load(P("rm"), HeadKind.LanguageModel, bf16Matrices: true);
        Assert.False(model.Config.TieWordEmbeddings);
        var head = model.Parameter("lm_head.weight");
        Assert.True(head.IsBf16);
        Assert.Equal(model.Parameter("embed.weight").ToArray(), head.ToArray());
        Assert.Equal(ModelIO.Load(Fixtures.Dir("llama-gqa")).Parameter("embed.weight").ToBf16().ToArray(), head.ToArray());
    }
}
