using AlignSharp.Training.Rl;

namespace AlignSharp.Tests.Rl;

/// <summary>--gradient-checkpointing and --frozen-dtype in PPO: policy and value model trained with checkpointing equal the
/// ordinary run's bit for bit; a bf16 reference and reward model train end to end.</summary>
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
}
