using System.Text.Json.Nodes;
using AlignSharp.Engine;
using AlignSharp.Models;
using AlignSharp.Models.Checkpoints;
using AlignSharp.Models.Lora;
using AlignSharp.Training.Rl;

namespace AlignSharp.Tests.Rl;

/// <summary>
/// PPO, GRPO and RLOO with LoRA: the reference is the policy with its adapter off (or the starting adapter), PPO's value
/// model a second adapter and head on the policy's own trunk; checkpoints and outputs hold adapters only.
/// </summary>
public sealed class RlLoraTests : IDisposable
{
    private readonly RlTestKit _kit = new();
    public void Dispose() => _kit.Dispose();

    /// <summary>The run's options with a new rank-4 adapter, or (<paramref name="newAdapter"/> false) with no LoRA settings, for a
    /// run that continues a saved adapter (whose adapter_config.json sets them).</summary>
    private T Options<T>(T o, string run, int steps, bool newAdapter = true) where T : RlOptions
    {
        var options = _kit.Options(o, run, steps, seed: 5, learningRate: 2e-2f, maxNewTokens: 6, batchSize: 4);
        return newAdapter ? options with { LoraR = 4, LoraTargetModules = "c_attn,c_fc", LoraDropout = 0.1 } : options;
    }

    private PpoOptions Ppo(string run, int steps = 4, bool newAdapter = true)
        => Options(new PpoOptions { KlCoef = 0.1f, NumMiniBatches = 1, NumPpoEpochs = 2 }, run, steps, newAdapter);

    [Fact]
    public void PpoWithLoraStartsAtItsReferenceKeepsAdaptersOnlyAndResumesBitForBit()
    {
        var a = Ppo("full") with { SaveSteps = 2 };
        RlTrainer.Create(a, [(RlTestKit.CountOf('a'), 1.0)]).Run();
        // Step 0: the fresh adapter (B = 0) leaves the policy equal to its reference, the base, exactly.
        var metrics = RlTestKit.TrainMetrics(a.Out!);
        Assert.Equal(0.0, metrics[0].GetProperty("objective/kl").GetDouble());
        Assert.NotEqual(0.0, metrics[^1].GetProperty("objective/kl").GetDouble());

        // Checkpoints: the policy adapter, and the value adapter with its score head; no model weights.
        string checkpoint = Path.Combine(a.Out!, "checkpoints", "step-000002");
        Assert.True(File.Exists(Path.Combine(checkpoint, "policy", "adapter_model.safetensors")));
        Assert.False(File.Exists(Path.Combine(checkpoint, "policy", "model.safetensors")));
        using (var value = SafetensorsFile.Open(Path.Combine(checkpoint, "value", "adapter_model.safetensors")))
            Assert.Contains("base_model.model.score.weight", value.Names);

        var b = Ppo("resumed") with { SaveSteps = 2, Resume = checkpoint };
        RlTrainer.Create(b, [(RlTestKit.CountOf('a'), 1.0)]).Run();
        foreach (var file in new[] { "final/adapter_model.safetensors", "value_model/adapter_model.safetensors" })
            Assert.Equal(File.ReadAllBytes(Path.Combine(a.Out!, file)), File.ReadAllBytes(Path.Combine(b.Out!, file)));

        // final/: a causal-LM adapter with the tokenizer; value_model/: a SEQ_CLS adapter on the policy that loads as a scalar model.
        Assert.Equal("CAUSAL_LM", Config(Path.Combine(a.Out!, "final"))["task_type"]!.GetValue<string>());
        Assert.True(File.Exists(Path.Combine(a.Out!, "final", "tokenizer.json")));
        var valueConfig = Config(Path.Combine(a.Out!, "value_model"));
        Assert.Equal("SEQ_CLS", valueConfig["task_type"]!.GetValue<string>());
        Assert.Equal(a.Policy, valueConfig["base_model_name_or_path"]!.GetValue<string>());
        var valueModel = ModelIO.Load(Path.Combine(a.Out!, "value_model"));
        Assert.Equal(HeadKind.Scalar, valueModel.Config.Head);

        // The trained policy differs from the base only through its adapter.
        var trained = ModelIO.Load(Path.Combine(a.Out!, "final"));
        var basePolicy = ModelIO.Load(a.Policy!);
        Assert.NotEqual(Logits(basePolicy), Logits(trained));
        trained.Adapter!.Enabled = false;
        Assert.Equal(Logits(basePolicy), Logits(trained));
    }

    [Fact]
    public void TheLoraValueModelSharesThePolicysTrunkAndStartsAsTheFullValueModelWould()
    {
        var policy = ModelIO.Load(_kit.Policy());
        var value = TransformerModel.SharingTrunk(policy, HeadKind.Scalar, seed: 5);
        foreach (var (name, p) in policy.NamedParameters.Where(p => p.Name.StartsWith("layers.") || p.Name.StartsWith("embed")))
            Assert.Same(p, value.Parameter(name));
        Assert.False(policy.HasParameter("score.weight"));
        // The head is initialised as a value model loaded from the policy directory (same seed) starts, so the values match.
        var separate = ModelIO.Load(_kit.Policy(), HeadKind.Scalar, seed: 5);
        Assert.Equal(separate.Parameter("score.weight").ToArray(), value.Parameter("score.weight").ToArray());
        Assert.Equal(Logits(separate), Logits(value));
        // A second adapter on the value model leaves the policy's forward alone.
        var before = Logits(policy);
        value.Adapter = LoraAdapter.Create(value, new LoraConfig(4, 8, 0, ["c_attn"]), 3);
        foreach (var m in value.Adapter.Modules) m.B.Span.Fill(0.5f);
        Assert.NotEqual(Logits(separate), Logits(value));
        Assert.Equal(before, Logits(policy));
    }

    [Fact]
    public void ALoraValueModelOnTheRewardModelsTrunkRecordsThatTrunkAsItsBase()
    {
        var o = Ppo("reward-trunk", 1) with { RewardModel = _kit.RewardModelDir(), ValueModel = "reward" };
        RlTrainer.Create(o).Run();
        Assert.Equal(o.RewardModel, Config(Path.Combine(o.Out!, "value_model"))["base_model_name_or_path"]!.GetValue<string>());
        var value = ModelIO.Load(Path.Combine(o.Out!, "value_model"));
        Assert.Equal(HeadKind.Scalar, value.Config.Head);
        // Its trunk is the reward model's (frozen): with the adapter off, only the trained head differs from it.
        value.Adapter!.Enabled = false;
        var rm = ModelIO.Load(o.RewardModel!);
        foreach (var (name, p) in rm.NamedParameters.Where(p => p.Name != "score.weight"))
            Assert.Equal(p.ToArray(), value.Parameter(name).ToArray());
    }

    [Fact]
    public void MergeWritesTheMergedPolicyAndValueModel()
    {
        var a = Ppo("adapters", 1);
        var m = Ppo("merged", 1) with { Merge = true };
        RlTrainer.Create(a, [(RlTestKit.CountOf('a'), 1.0)]).Run();
        RlTrainer.Create(m, [(RlTestKit.CountOf('a'), 1.0)]).Run();
        foreach (var entry in new[] { "final", "value_model" })
        {
            Assert.False(File.Exists(Path.Combine(m.Out!, entry, LoraConfig.FileName)), entry);
            var x = Logits(ModelIO.Load(Path.Combine(a.Out!, entry)));
            var y = Logits(ModelIO.Load(Path.Combine(m.Out!, entry)));
            for (int i = 0; i < x.Length; i++) Assert.True(Math.Abs(x[i] - y[i]) < 1e-4, $"{entry} {i}: adapter {x[i]}, merged {y[i]}");
        }
        Assert.Equal(HeadKind.Scalar, ModelIO.Load(Path.Combine(m.Out!, "value_model")).Config.Head);
    }

    [Theory]
    [InlineData("grpo")]
    [InlineData("rloo")]
    public void CriticFreeAlgorithmsTrainAnAdapterAgainstTheAdapterOffReference(string algorithm)
    {
        RlOptions o = algorithm == "grpo"
            ? Options(new GrpoOptions { NumGenerations = 4, KlCoef = 0.1f }, algorithm, 3)
            : Options(new RlooOptions { RlooK = 4, KlCoef = 0.1f }, algorithm, 3);
        RlTrainer.Create(o, [(RlTestKit.CountOf('a'), 1.0)]).Run();
        var metrics = RlTestKit.TrainMetrics(o.Out!);
        Assert.Equal(0.0, metrics[0].GetProperty("objective/kl").GetDouble());
        Assert.True(File.Exists(Path.Combine(o.Out!, "final", "adapter_model.safetensors")));
        Assert.False(File.Exists(Path.Combine(o.Out!, "final", "model.safetensors")));
        Assert.NotEqual(Logits(ModelIO.Load(o.Policy!)), Logits(ModelIO.Load(Path.Combine(o.Out!, "final"))));
    }

    [Fact]
    public void PpoOnTopOfAnAdapterUsesThePolicyAsItStartsAsReference()
    {
        // An "sft" adapter that changes the model (B ≠ 0), saved in PEFT format beside the policy.
        var policy = ModelIO.Load(_kit.Policy());
        var sft = LoraAdapter.Create(policy, new LoraConfig(4, 8, 0, ["c_attn"], BaseModel: _kit.Policy()), 7);
        var rng = new Random(1);
        foreach (var m in sft.Modules) { var s = m.B.Span; for (int i = 0; i < s.Length; i++) s[i] = (float)(rng.NextDouble() - 0.5); }
        sft.Save(_kit.Path("sft-adapter"));

        var o = Ppo("on-sft", 2, newAdapter: false) with { Adapter = _kit.Path("sft-adapter") };
        RlTrainer.Create(o, [(RlTestKit.CountOf('a'), 1.0)]).Run();
        // The reference is base + the starting adapter, so the first rollout has KL 0 although the policy is not the base.
        Assert.Equal(0.0, RlTestKit.TrainMetrics(o.Out!)[0].GetProperty("objective/kl").GetDouble());
        var final = Config(Path.Combine(o.Out!, "final"));
        Assert.Equal(4, final["r"]!.GetValue<int>());

        // A trainer given an adapter directory as the policy starts from base + adapter (merged), here with a new adapter on top.
        var fromDir = Ppo("from-dir", 1) with { Policy = _kit.Path("sft-adapter") };
        RlTrainer.Create(fromDir, [(RlTestKit.CountOf('a'), 1.0)]).Run();
        Assert.Equal(0.0, RlTestKit.TrainMetrics(fromDir.Out!)[0].GetProperty("objective/kl").GetDouble());
        var chained = ModelIO.Load(Path.Combine(fromDir.Out!, "final"));  // final/ → sft-adapter → policy
        chained.Adapter!.Enabled = false;
        var withSft = ModelIO.Load(_kit.Path("sft-adapter"));
        var x = Logits(chained); var y = Logits(withSft);
        for (int i = 0; i < x.Length; i++) Assert.True(Math.Abs(x[i] - y[i]) < 1e-4, $"logit {i}: {x[i]} vs {y[i]}");
    }

    private static JsonObject Config(string dir) => JsonNode.Parse(File.ReadAllText(Path.Combine(dir, LoraConfig.FileName)))!.AsObject();

    private static readonly int[] Probe = [256, 'Q', '1', ':', ' ', 'a', 'a'];

    private static float[] Logits(TransformerModel model)
    {
        using var noGrad = Autograd.NoGrad();
        using var scope = TensorScope.Begin();
        return model.Forward(Probe, 1, Probe.Length).ToArray();
    }
}
