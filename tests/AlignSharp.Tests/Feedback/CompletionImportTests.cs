using AlignSharp.Feedback;

namespace AlignSharp.Tests.Feedback;

public class CompletionImportTests
{
    [Fact]
    public void ReadsJsonlAndJsonArrays()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir.File("a.jsonl"), "{\"prompt\": \"p1\", \"completions\": [\"x\", \"y\"]}\n\n{\"prompt\": \"p2\", \"completions\": [\"1\", \"2\", \"3\"], \"extra\": 1}\n");
        var items = CompletionImport.ReadCompletions(dir.File("a.jsonl"));
        Assert.Equal(2, items.Count);
        Assert.Equal("p2", items[1].Prompt);
        Assert.Equal(["1", "2", "3"], items[1].Completions);

    }

    [Theory]
    [InlineData("{\"prompt\": \"p\"}", ":2: field \"completions\" is missing")]
    [InlineData("{\"prompt\": \"p\", \"completions\": \"x\"}", ":2: field \"completions\" must be a list")]
    [InlineData("{\"prompt\": \"p\", \"completions\": [\"x\", 3]}", ":2: field \"completions\"[1] must be a string")]
    [InlineData("{\"prompt\": \"p\", \"completions\": [\"x\", \" \"]}", ":2: field \"completions\"[1] is only whitespace")]
    [InlineData("{\"prompt\": \"p\", \"completions\": [\"x\"]}", "at least 2")]
    [InlineData("{\"prompt\": 5, \"completions\": [\"x\", \"y\"]}", ":2: field \"prompt\" must be a string")]
    [InlineData("{\"prompt\": \"p\", ", ":2: malformed JSON")]
    [InlineData("[1, 2]", ":2: expected a JSON object per line")]
    public void BadRecordsNameFileLineAndField(string secondLine, string message)
    {
        using var dir = new TempDir();
        string path = dir.File("in.jsonl");
        File.WriteAllText(path, "{\"prompt\": \"ok\", \"completions\": [\"a\", \"b\"]}\n" + secondLine + "\n");
        var e = Assert.ThrowsAny<UserInputException>(() => CompletionImport.ReadCompletions(path));
        Assert.Contains(path, e.Message);
        Assert.Contains(message, e.Message);
    }

    [Fact]
    public void KMustMatchWhenGiven()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir.File("a.jsonl"), "{\"prompt\": \"p1\", \"completions\": [\"x\", \"y\", \"z\"]}\n");
        Assert.Single(CompletionImport.ReadCompletions(dir.File("a.jsonl"), 3));
        Assert.Contains("--k is 4", Assert.Throws<UserInputException>(() => CompletionImport.ReadCompletions(dir.File("a.jsonl"), 4)).Message);
    }
}
