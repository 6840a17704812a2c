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
