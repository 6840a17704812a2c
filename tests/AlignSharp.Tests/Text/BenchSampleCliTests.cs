using System.Text.Json;

namespace AlignSharp.Tests.Text;

/// <summary>`alignsharp bench sample`'s sampling filters: echoed in its JSON, bad values a clear error.</summary>
public class BenchSampleCliTests
{
    [Fact]
    public void EchoesTopKAndTopP()
    {
        var r = CliRunner.Run("bench", "sample", "--config", "tiny", "--batch", "2", "--new-tokens", "2", "--repeats", "1",
            "--bandwidth-gbs", "10", "--top-k", "5", "--top-p", "0.9");
        Assert.True(r.ExitCode == 0, r.StdErr);
        var j = JsonDocument.Parse(r.StdOut).RootElement;
        Assert.Equal(5, j.GetProperty("top_k").GetInt32());
        Assert.Equal(0.9, j.GetProperty("top_p").GetDouble(), 6);
        Assert.True(j.GetProperty("tokens_per_s").GetDouble() > 0);
        // A given bandwidth is used for every run, and one run's fraction is its floor over its own decode step.
        Assert.Equal(10, j.GetProperty("bandwidth_gbs").GetDouble());
        Assert.Equal(10, j.GetProperty("bandwidth_gbs_min").GetDouble());
        Assert.Equal(10, j.GetProperty("bandwidth_gbs_max").GetDouble());
        double floor = j.GetProperty("bandwidth_floor_ms_per_step").GetDouble();
        Assert.Equal(j.GetProperty("bytes_per_step_mb").GetDouble() / 10, floor, 2);
        double decodeMs = j.GetProperty("decode_ms_per_step").GetDouble();
        double decodeFraction = floor / decodeMs;
        // Within what rounding the printed values to three decimals can move it.
        double tolerance = decodeFraction * (0.0006 / decodeMs + 0.0006 / floor) + 0.0006;
        Assert.Equal(decodeFraction, j.GetProperty("decode_bandwidth_bound_fraction").GetDouble(), tolerance);
        // No probe, so no plain read to set the decoding against.
        Assert.False(j.TryGetProperty("plain_read_ms_per_step", out _));
        // The host's processor and the bf16 kernel's prefetch level, which the numbers depend on.
        Assert.False(string.IsNullOrWhiteSpace(j.GetProperty("cpu").GetString()));
        Assert.Contains(j.GetProperty("bf16_prefetch").GetString(), new[] { "l1", "l2", "none" });
    }

    /// <summary>Without --bandwidth-gbs the probe (a plain and a prefetching sum of 512 MB on all threads) is measured
    /// around each pair of runs: a finite rate, the median between the smallest and the largest, and the floor made from it;
    /// and a plain read of one step's bytes is timed after each pair.</summary>
    [Fact]
    public void MeasuresTheBandwidthAroundTheRuns()
    {
        var r = CliRunner.Run("bench", "sample", "--config", "tiny", "--batch", "2", "--new-tokens", "2", "--repeats", "3");
        Assert.True(r.ExitCode == 0, r.StdErr);
        var j = JsonDocument.Parse(r.StdOut).RootElement;
        double gbs = j.GetProperty("bandwidth_gbs").GetDouble(), min = j.GetProperty("bandwidth_gbs_min").GetDouble(), max = j.GetProperty("bandwidth_gbs_max").GetDouble();
        Assert.True(double.IsFinite(max) && min > 0 && min <= gbs && gbs <= max, $"bandwidth {gbs} GB/s, min {min}, max {max}");
        double bytesMb = j.GetProperty("bytes_per_step_mb").GetDouble(), floor = bytesMb / gbs;
        // Within what rounding the printed values (MB and GB/s to one decimal, the floor to three) can move it.
        Assert.Equal(floor, j.GetProperty("bandwidth_floor_ms_per_step").GetDouble(), floor * (0.05 / bytesMb + 0.05 / gbs) + 0.0006);
        // The plain read of one step's bytes, timed as the steps are: a positive time, its fraction of the bound and
        // the decoding's fraction of it finite and positive.
        Assert.True(j.GetProperty("plain_read_ms_per_step").GetDouble() > 0, r.StdOut);
        foreach (var key in new[] { "plain_read_bandwidth_bound_fraction", "decode_fraction_of_plain_read" })
        {
            double x = j.GetProperty(key).GetDouble();
            Assert.True(double.IsFinite(x) && x > 0, $"{key} = {x}");
        }
        Assert.Contains("a plain read of its bytes", r.StdErr);
    }

    [Theory]
    [InlineData("--top-k", "-1", "--top-k must be >= 0")]
    [InlineData("--top-p", "0", "--top-p must be in (0, 1]")]
    [InlineData("--top-p", "1.5", "--top-p must be in (0, 1]")]
    public void BadFiltersAreAClearError(string flag, string value, string message)
    {
        var r = CliRunner.Run("bench", "sample", "--config", "tiny", "--new-tokens", "2", "--repeats", "1", flag, value);
        Assert.NotEqual(0, r.ExitCode);
        Assert.Contains(message, r.StdErr);
        Assert.DoesNotContain("   at ", r.StdErr);
    }
}
