namespace AlignSharp.Tests.Text;

public class TokenizeCliTests
{
    static string SmallLlama => TokenizerFixtures.Small("llama-small");

    [Fact]
    public void TokenizesJsonlInOrderWithAndWithoutSpecialTokens()
    {
        var dir = Directory.CreateTempSubdirectory("tokcli");
        try
        {
            var cases = TokenizerFixtures.Reference("llama-small").Take(12).ToList();
            string input = Path.Combine(dir.FullName, "in.jsonl"), output = Path.Combine(dir.FullName, "out.jsonl");
            File.WriteAllLines(input, cases.Select(c => System.Text.Json.JsonSerializer.Serialize(new { text = c.Text })));

            var r = CliRunner.Run("tokenize", "--tokenizer", SmallLlama, "--input", input, "--output", output);
            Assert.True(r.ExitCode == 0, r.StdErr);
            Assert.Equal(cases.Select(c => $"{{\"ids\": [{string.Join(", ", c.Ids)}]}}"), File.ReadAllLines(output));

            r = CliRunner.Run("tokenize", "--tokenizer", SmallLlama, "--input", input, "--no-special-tokens");
            Assert.True(r.ExitCode == 0, r.StdErr);
            Assert.Equal(cases.Select(c => $"{{\"ids\": [{string.Join(", ", c.IdsNoSpecial)}]}}"), r.StdOut.TrimEnd('\n').Split('\n'));
        }
        finally
        {
            dir.Delete(recursive: true);
        }
    }

    [Fact]
    public void TokenizesOneTextAndByteTokenizer()
    {
        var r = CliRunner.Run("tokenize", "--tokenizer", "byte", "--text", "hi");
        Assert.Equal(0, r.ExitCode);
        Assert.Equal("{\"ids\": [256, 104, 105]}", r.StdOut.Trim());
    }

    [Theory]
    [InlineData("{\"text\": \"ok\"}\n{\"text\": ", ":2: malformed JSON")]
    [InlineData("{\"text\": \"ok\"}\n{\"txt\": \"x\"}", ":2: field \"text\": is missing")]
    [InlineData("{\"text\": 5}", ":1: field \"text\": must be a string")]
    [InlineData("{\"text\": \"a\\ud800b\"}", ":1: field \"text\": not valid text")]   // a lone surrogate escape (was a stack trace)
    public void BadInputNamesFileLineAndFieldWithoutStackTrace(string content, string expected)
    {
        var dir = Directory.CreateTempSubdirectory("tokcli");
        try
        {
            string input = Path.Combine(dir.FullName, "bad.jsonl"), output = Path.Combine(dir.FullName, "out.jsonl");
            File.WriteAllText(input, content);
            var r = CliRunner.Run("tokenize", "--tokenizer", "byte", "--input", input, "--output", output);
            Assert.NotEqual(0, r.ExitCode);
            Assert.Contains("bad.jsonl" + expected, r.StdErr);
            Assert.DoesNotContain("   at ", r.StdErr);
            Assert.False(File.Exists(output));
        }
        finally
        {
            dir.Delete(recursive: true);
        }
    }

    /// <summary>tokenize reads its input with the one reader the data commands use: blank lines pass, JSON arrays work.</summary>
    [Fact]
    public void BlankLinesAndJsonArraysAreReadAsEverywhereElse()
    {
        var dir = Directory.CreateTempSubdirectory("tokcli");
        try
        {
            string lines = Path.Combine(dir.FullName, "in.jsonl"), array = Path.Combine(dir.FullName, "in.json");
            File.WriteAllText(lines, "{\"text\": \"hi\"}\n\n{\"text\": \"a\"}\n");
            File.WriteAllText(array, "[{\"text\": \"hi\"},\n {\"text\": \"a\"}]");
            foreach (var input in new[] { lines, array })
            {
                var r = CliRunner.Run("tokenize", "--tokenizer", "byte", "--input", input);
                Assert.True(r.ExitCode == 0, r.StdErr);
                Assert.Equal(["{\"ids\": [256, 104, 105]}", "{\"ids\": [256, 97]}"], r.StdOut.Split('\n', StringSplitOptions.RemoveEmptyEntries));
            }
        }
        finally
        {
            dir.Delete(recursive: true);
        }
    }

    [Fact]
    public void UnsupportedTokenizerIsAUserError()
    {
        var r = CliRunner.Run("tokenize", "--tokenizer", "/nonexistent/tokenizer.json", "--text", "x");
        Assert.NotEqual(0, r.ExitCode);
        Assert.Contains("no such tokenizer", r.StdErr);
        Assert.DoesNotContain("   at ", r.StdErr);
    }

    [Fact]
    public void HelpWorks()
    {
        var r = CliRunner.Run("tokenize", "--help");
        Assert.Equal(0, r.ExitCode);
        Assert.Contains("--no-special-tokens", r.StdOut);
        Assert.Contains("--tokenizer", r.StdOut);
    }

    [Fact]
    public void BenchTokenizerPrintsJson()
    {
        var r = CliRunner.Run("bench", "tokenizer", "--tokenizer", TokenizerFixtures.Small("gpt2-small"), "--mb", "0.05");
        Assert.True(r.ExitCode == 0, r.StdErr);
        using var doc = System.Text.Json.JsonDocument.Parse(r.StdOut);
        Assert.True(doc.RootElement.GetProperty("mb_per_s").GetDouble() > 0);
    }
}
