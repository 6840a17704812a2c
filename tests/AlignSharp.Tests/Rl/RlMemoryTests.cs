using AlignSharp.Training.Rl;

namespace AlignSharp.Tests.Rl;

/// <summary>--gradient-checkpointing, --frozen-dtype and --matmul-precision in PPO: policy and value model trained with
/// checkpointing equal the ordinary run's bit for bit; a bf16 reference and reward model train end to end; bf16 products
/// keep the old and the new log-probabilities of the first update equal.</summary>
public sealed class RlMemoryTests : IDisposable
{
    private readonly RlTestKit _kit = new();
    public void Dispose() => _kit.Dispose();

    private PpoOptions Ppo(string run) => new()
    {
        Policy = _kit.Policy(), Prompts = _kit.Prompts(), RewardModel = _kit.RewardModelDir(), Out = _kit.Path(run),
        MaxSteps = 2, Seed = 5, LearningRate = 1e-2f, MaxNewTokens = 6, BatchSize = 4, NumMiniBatches = 2, NumPpoEpochs = 2,
        SaveSteps = 0, Threads = 2,
    };

    [Fact]
    public void PpoWithGradientCheckpointingEqualsTheOrdinaryRunBitForBit()
    {
        RlTrainer.Create(Ppo("plain")).Run();
        RlTrainer.Create(Ppo("ckpt") with { GradientCheckpointing = true }).Run();
        foreach (var file in new[] { "final/model.safetensors", "value_model/model.safetensors" })
            Assert.Equal(File.ReadAllBytes(Path.Combine(_kit.Path("plain"), file)), File.ReadAllBytes(Path.Combine(_kit.Path("ckpt"), file)));
        Assert.Equal(RlTestKit.TrainMetrics(_kit.Path("plain")).Select(m => m.GetProperty("loss/policy_avg").GetDouble()),
                     RlTestKit.TrainMetrics(_kit.Path("ckpt")).Select(m => m.GetProperty("loss/policy_avg").GetDouble()));
    }

    [Fact]
    public void PpoWithABf16ReferenceAndRewardModelTrains()
    {
        RlTrainer.Create(Ppo("fp32")).Run();
        RlTrainer.Create(Ppo("bf16") with { FrozenDtype = "bf16" }).Run();
        var fp32 = RlTestKit.TrainMetrics(_kit.Path("fp32"));
        var bf16 = RlTestKit.TrainMetrics(_kit.Path("bf16"));
        Assert.Equal(2, bf16.Count);
        Assert.All(bf16, m => Assert.True(double.IsFinite(m.GetProperty("loss/policy_avg").GetDouble())));
        // The rounded reward model scores differently, so the runs differ.
        Assert.NotEqual(fp32.Select(m => m.GetProperty("objective/scores").GetDouble()), bf16.Select(m => m.GetProperty("objective/scores").GetDouble()));
    }

    /// <summary>
    /// --matmul-precision medium on a LoRA policy: the base, reference, value trunk and reward model take bf16 inputs in
    /// scoring and in the update alike, so the first (and only) minibatch's ratio π/π_old is exactly 1: no clipping, zero
    /// approximate KL. The run differs from highest's (its products round), and with gradient checkpointing it is the same
    /// bit for bit (the recomputed forward takes the same kernel).
    /// </summary>
    [Fact]
    public void PpoWithBf16ProductsScoresAsItUpdates()
    {
        // No LoRA dropout: the update's forward would otherwise drop adapter inputs that scoring keeps (from step 2 on).
        PpoOptions Lora(string run) => Ppo(run) with { LoraR = 4, LoraDropout = 0, NumMiniBatches = 1, NumPpoEpochs = 1, MaxSteps = 2 };
        RlTrainer.Create(Lora("highest")).Run();
        RlTrainer.Create(Lora("medium") with { MatmulPrecision = "medium" }).Run();
        RlTrainer.Create(Lora("medium-ckpt") with { MatmulPrecision = "medium", GradientCheckpointing = true }).Run();
        var medium = RlTestKit.TrainMetrics(_kit.Path("medium"));
        Assert.Equal(2, medium.Count);
        foreach (var m in medium)
        {
            Assert.Equal(1.0, m.GetProperty("val/ratio").GetDouble());
            Assert.Equal(0.0, m.GetProperty("policy/approxkl_avg").GetDouble());
            Assert.Equal(0.0, m.GetProperty("policy/clipfrac_avg").GetDouble());
        }
        Assert.NotEqual(RlTestKit.TrainMetrics(_kit.Path("highest")).Select(m => m.GetProperty("objective/scores").GetDouble()),
                        medium.Select(m => m.GetProperty("objective/scores").GetDouble()));
        Assert.Equal(File.ReadAllBytes(Path.Combine(_kit.Path("medium"), "final", "adapter_model.safetensors")),
                     File.ReadAllBytes(Path.Combine(_kit.Path("medium-ckpt"), "final", "adapter_model.safetensors")));
    }
}
