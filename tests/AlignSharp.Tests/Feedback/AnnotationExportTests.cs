using System.Text.Json.Nodes;
using AlignSharp.Feedback;

namespace AlignSharp.Tests.Feedback;

public class AnnotationExportTests
{
    private static SubmittedRanking Sample() => new(
        7, "Which is better?", ["a", "b <i>", "c", "d"], RankingOrder.Parse("[[0, 2], 1, 3]", 4),
        [new CompletionFlag(1, "unsafe"), new CompletionFlag(3, "broken")], 3, "alice", [2, 0, 3, 1], 2, "2026-01-01T00:00:00.000Z");

    private static List<JsonObject> Lines(string text) =>
        text.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => JsonNode.Parse(l)!.AsObject()).ToList();

    [Fact]
    public void RankingsLinesCarryTheTrainerFieldsAndTheAnnotator()
    {
        var writer = new StringWriter();
        Assert.Equal(1, AnnotationExport.Write("rankings", "proj", [Sample()], writer));
        var line = Assert.Single(Lines(writer.ToString()));
        Assert.Equal("Which is better?", (string)line["prompt"]!);
        Assert.Equal(["a", "b <i>", "c", "d"], line["completions"]!.AsArray().Select(n => (string)n!));
        Assert.Equal("[[0,2],1,3]", line["ranking"]!.ToJsonString());
        Assert.Equal("alice", (string)line["annotator"]!);
        Assert.Equal(3, (long)line["annotator_id"]!);
        Assert.Equal("proj", (string)line["project"]!);
        Assert.Equal(7, (long)line["task_id"]!);
        Assert.Equal("[{\"completion_id\":1,\"flag\":\"unsafe\"},{\"completion_id\":3,\"flag\":\"broken\"}]", line["flags"]!.ToJsonString());
        Assert.Equal("[2,0,3,1]", line["display_order"]!.ToJsonString());
        Assert.Equal(2, (int)line["revision"]!);
    }

    [Fact]
    public void PairsAreEveryStrictlyOrderedPairBestFirst()
    {
        var writer = new StringWriter();
        int n = AnnotationExport.Write("pairs", "proj", [Sample()], writer);
        var lines = Lines(writer.ToString());
        // 4 completions: 6 pairs, less the tie (0, 2).
        Assert.Equal(5, n);
        Assert.Equal(5, lines.Count);
        var pairs = lines.Select(l => ((string)l["chosen"]!, (string)l["rejected"]!)).ToList();
        Assert.Equal([("a", "b <i>"), ("c", "b <i>"), ("a", "d"), ("c", "d"), ("b <i>", "d")], pairs);
        Assert.All(lines, l =>
        {
            Assert.Equal("Which is better?", (string)l["prompt"]!);
            Assert.Equal("alice", (string)l["annotator"]!);
            Assert.Equal(3, (long)l["annotator_id"]!);
            Assert.Equal(7, (long)l["task_id"]!);
        });
        var last = lines[^1];
        Assert.Equal(1, (int)last["chosen_id"]!);
        Assert.Equal(3, (int)last["rejected_id"]!);
        Assert.Equal("[\"unsafe\"]", last["chosen_flags"]!.ToJsonString());
        Assert.Equal("[\"broken\"]", last["rejected_flags"]!.ToJsonString());
    }

    [Fact]
    public void UnknownFormatIsAUserError()
    {
        Assert.Throws<UserInputException>(() => AnnotationExport.Write("csv", "p", [Sample()], new StringWriter()));
    }
}
