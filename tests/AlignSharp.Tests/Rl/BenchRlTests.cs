using System.Text.Json;
using AlignSharp.Engine;
using AlignSharp.Models;
using AlignSharp.Training.Rl;

namespace AlignSharp.Tests.Rl;

/// <summary>`alignsharp bench rl` on the tiny policy (GPT-2 shape: vocab 259, d 32, 2 layers, 4 heads, MLP 128, tied head):
/// its JSON, its model-FLOPs count by hand, its errors; and the token-id reward source it scores with.</summary>
public sealed class BenchRlTests : IDisposable
{
    private readonly RlTestKit _kit = new();
    public void Dispose() => _kit.Dispose();

    private static JsonElement Json(CliRunner.Result r)
    {
        Assert.True(r.ExitCode == 0, r.StdErr);
        return JsonDocument.Parse(r.StdOut).RootElement;
    }

    // Rows: 2 × (4 prompt + 3 completion tokens), T = 7. Per token the blocks' matrices are 2 × (32·96 + 32·32 + 32·128 +
    // 128·32) = 24,576 multiply-adds; the tied LM head 259·32 = 8,288; attention 4·layers·q_dim·T = 4·2·32·7 FLOPs.
    // One trunk pass per row: 2·24,576·7 + 4·2·32·49 = 344,064 + 12,544 = 356,608.
    [Fact]
    public void PrintsTheTimeSplitAndHandCountedModelFlops()
    {
        var r = CliRunner.Run("bench", "rl", "--model", _kit.Policy(), "--batch", "2", "--prompt-len", "4", "--max-new-tokens", "3",
            "--steps", "1", "--warmup", "0", "--threads", "1");
        var j = Json(r);
        foreach (var key in new[] { "generation_s", "policy_s", "reference_s", "value_s", "reward_s", "scoring_s", "update_s", "total_s" })
            Assert.True(j.GetProperty(key).GetDouble() >= 0, key);
        Assert.True(j.GetProperty("total_s").GetDouble() >= j.GetProperty("update_s").GetDouble());
        Assert.Equal(14, j.GetProperty("tokens").GetInt32());
        Assert.Equal(6, j.GetProperty("completion_tokens").GetInt32());
        Assert.Equal("full-parameter", j.GetProperty("training").GetString());
        // Scoring: π_old and reference (trunk + head at the 6 completion positions: 2·8,288·6 = 99,456 each), the value
        // model's trunk, and the reward model's trunk plus its [1, 32] score matrix: 2·(24,576 + 32)·7 + 12,544 per row.
        Assert.Equal(3 * 2 * 356_608 + 2 * 99_456 + 2 * 357_056, j.GetProperty("scoring_flops").GetDouble());
        // Update, full-parameter: 6 FLOPs per weight per token (forward, input and weight gradients) for policy and value
        // trunks (6·24,576·14 = 2,064,384 each), attention 3 × forward (3·2·12,544 = 75,264 each), and the head at the
        // completion positions (6·8,288·6 = 298,368).
        Assert.Equal(2 * (2_064_384 + 75_264) + 298_368, j.GetProperty("update_flops").GetDouble());
        Assert.True(j.GetProperty("gemm_peak_gflops").GetDouble() > 0);
        Assert.True(j.GetProperty("mfu_scoring").GetDouble() >= 0 && j.GetProperty("mfu_update").GetDouble() >= 0);
        Assert.False(string.IsNullOrWhiteSpace(j.GetProperty("cpu").GetString()));
        Assert.Contains(j.GetProperty("bf16_prefetch").GetString(), new[] { "l1", "l2", "none" });
    }

    [Fact]
    public void LoraCountsNoWeightGradientsOfTheFrozenBase()
    {
        var r = CliRunner.Run("bench", "rl", "--model", _kit.Policy(), "--reward-model", _kit.RewardModelDir(), "--lora-r", "4",
            "--batch", "2", "--prompt-len", "4", "--max-new-tokens", "3", "--steps", "1", "--warmup", "0", "--threads", "1", "--num-ppo-epochs", "2");
        var j = Json(r);
        Assert.Equal("lora r4", j.GetProperty("training").GetString());
        // 4 FLOPs per frozen weight per token: 4·24,576·14 = 1,376,256 per trunk, 4·8,288·6 = 198,912 for the head; two epochs.
        Assert.Equal(2 * (2 * (1_376_256 + 75_264) + 198_912), j.GetProperty("update_flops").GetDouble());
    }

    [Fact]
    public void BadInputIsAClearError()
    {
        var missing = CliRunner.Run("bench", "rl", "--model", _kit.Path("nowhere"));
        Assert.NotEqual(0, missing.ExitCode);
        Assert.Contains("--model", missing.StdErr);
        Assert.DoesNotContain("   at ", missing.StdErr);

        var lmAsReward = CliRunner.Run("bench", "rl", "--model", _kit.Policy(), "--reward-model", _kit.Policy(), "--prompt-len", "4", "--max-new-tokens", "3", "--steps", "1", "--warmup", "0");
        Assert.NotEqual(0, lmAsReward.ExitCode);
        Assert.Contains("scalar head", lmAsReward.StdErr);
        Assert.Contains("ForSequenceClassification", lmAsReward.StdErr); // how a Hugging Face reward model is recognised

        var ignored = CliRunner.Run("bench", "rl", "--model", _kit.Policy(), "--lora-alpha", "8", "--steps", "1", "--warmup", "0");
        Assert.NotEqual(0, ignored.ExitCode);
        Assert.Contains("--lora-alpha needs --lora-r", ignored.StdErr);
        Assert.Empty(ignored.StdOut);

        var zero = CliRunner.Run("bench", "rl", "--model", _kit.Policy(), "--batch", "0");
        Assert.NotEqual(0, zero.ExitCode);
        Assert.Contains("--batch", zero.StdErr);
    }

    [Fact]
    public void TokenRewardSourceScoresPromptThenCompletionIdsAtTheLastToken()
    {
        var model = ModelIO.Load(_kit.RewardModelDir());
        int[] prompt = [5, 6, 7], completion = [8, 9];
        var source = new TokenRewardModelSource(model);
        var scores = source.Score(new RewardInputs([AlignSharp.Training.Data.ChatContent.FromText("x")], ["x"], ["y"]) { PromptIds = [prompt], CompletionIds = [completion] });
        using var noGrad = Autograd.NoGrad();
        float expected = model.Forward([5, 6, 7, 8, 9], 1, 5).Span[4]; // the scalar head's value at the last position
        Assert.Equal(expected, scores[0], 5);
        Assert.Throws<InvalidOperationException>(() => source.Score(new RewardInputs([AlignSharp.Training.Data.ChatContent.FromText("x")], ["x"], ["y"])));
    }
}
