using System.Text.Json;
using AlignSharp.Models;
using AlignSharp.Tests.Models;

namespace AlignSharp.Tests.Cli;

/// <summary><c>bench train --model</c> on checkpoints shorter than its default length, and counts it must not bend.</summary>
public sealed class BenchTrainCliTests
{
    [Fact]
    public void ACheckpointWithFewerThan256PositionsTrainsOnAllOfThem()
    {
        // gemma3-local-global has 64 positions (max_position_embeddings); without --seq the step uses all 64.
        var r = CliRunner.Run("bench", "train", "--model", Fixtures.Dir("gemma3-local-global"), "--steps", "1", "--warmup", "0");
        Assert.True(r.ExitCode == 0, r.StdErr);
        var j = JsonDocument.Parse(r.StdOut).RootElement;
        Assert.Equal(64, j.GetProperty("seq").GetInt32());
        Assert.Equal(1, j.GetProperty("batch").GetInt32());
        Assert.True(j.GetProperty("tokens_per_s").GetDouble() > 0, r.StdOut);
        Assert.False(string.IsNullOrWhiteSpace(j.GetProperty("cpu").GetString()));

        // An explicit --seq past the model's positions stays an error.
        r = CliRunner.Run("bench", "train", "--model", Fixtures.Dir("gemma3-local-global"), "--seq", "65", "--steps", "1", "--warmup", "0");
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("--seq 65 exceeds the model's 64 positions", r.StdErr);
    }

    /// <summary><c>bench sample</c>'s bound counts a mixture of experts' stacks by the experts a decoding step runs: the
    /// share of experts some of its tokens choose, 1 − (1 − k/E)^tokens. Read back exactly through a bandwidth of 0.001
    /// GB/s, where the bound in ms is the step's bytes / 1000. granitemoe-top3-of-8 (float32): D 32, 2 layers, q/k/v/o
    /// with 2 kv heads of 8, a router of 8 experts, stacks of width 16, 3 per token, tied head over 90 tokens.</summary>
    [Theory]
    [InlineData(1)]
    [InlineData(8)]
    public void TheDecodingBoundCountsTheExpertsAStepRuns(int batch)
    {
        var r = CliRunner.Run("bench", "sample", "--model", Fixtures.Dir("granitemoe-top3-of-8"), "--batch", $"{batch}",
            "--prompt-len", "4", "--new-tokens", "3", "--repeats", "1", "--bandwidth-gbs", "0.001");
        Assert.True(r.ExitCode == 0, r.StdErr);
        double floorMs = JsonDocument.Parse(r.StdOut).RootElement.GetProperty("bandwidth_floor_ms_per_step").GetDouble();
        long attention = 32 * 32 + 2 * 16 * 32 + 32 * 32, router = 8 * 32, head = 90 * 32, norms = 2 * 32;
        double share = 1 - Math.Pow(1 - 3.0 / 8, batch);
        double weights = 4.0 * (2 * (attention + router + norms) + head + 32)
            + 2 * ((long)(8 * (2 * 16) * 32 * 4 * share) + (long)(8 * 32 * 16 * 4 * share));
        double cache = KvCache.StepBytes(ModelConfig.Load(Fixtures.Dir("granitemoe-top3-of-8")), batch, 4 + (3 - 1) / 2.0);
        Assert.Equal((weights + cache) / 1000, floorMs, 3);
    }

    /// <summary>Out of memory (here a 48 MB heap limit under a 1.3 M-parameter training step's needs) is a clear error
    /// naming the ways to need less, with a non-zero exit and no stack trace.</summary>
    [Fact]
    public void OutOfMemoryIsAClearErrorNotAStackTrace()
    {
        var r = CliRunner.Run(["bench", "train", "--config", "small", "--steps", "1", "--warmup", "0"],
            environment: new Dictionary<string, string?> { ["DOTNET_GCHeapHardLimit"] = "0x3000000" });
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("error: out of memory", r.StdErr);
        Assert.Contains("--lora-r", r.StdErr);
        Assert.DoesNotContain("   at ", r.StdErr);
    }

    [Theory]
    [InlineData("--steps", "0", "--steps must be >= 1")]
    [InlineData("--warmup", "-1", "--warmup must be >= 0")]
    public void CountsOutOfRangeAreErrorsNotClamped(string flag, string value, string message)
    {
        var r = CliRunner.Run("bench", "train", "--config", "tiny", flag, value);
        Assert.NotEqual(0, r.ExitCode);
        Assert.Contains(message, r.StdErr);
        Assert.DoesNotContain("   at ", r.StdErr);
        Assert.Empty(r.StdOut);
    }
}
