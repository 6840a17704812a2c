using System.Text.Json;
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

        // An explicit --seq past the model's positions stays an error.
        r = CliRunner.Run("bench", "train", "--model", Fixtures.Dir("gemma3-local-global"), "--seq", "65", "--steps", "1", "--warmup", "0");
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("--seq 65 exceeds the model's 64 positions", r.StdErr);
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
