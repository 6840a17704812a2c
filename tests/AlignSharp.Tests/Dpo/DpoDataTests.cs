using AlignSharp.Text;
using AlignSharp.Training.Data;
using AlignSharp.Training.Dpo;

namespace AlignSharp.Tests.Dpo;

/// <summary>Rankings read whole for Plackett–Luce: pairs become rankings of two; errors name the record's own fields.</summary>
public sealed class DpoDataTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("alignsharp-dpo-data-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void PairsAndRankingsLoadAsRankingGroups()
    {
        string path = Path.Combine(_dir, "mixed.jsonl");
        File.WriteAllLines(path,
        [
            """{"prompt": "p:", "chosen": " a", "rejected": " b"}""",
            """{"prompt": "q:", "completions": [" x", " y", " z", " w"], "ranking": [[0, 2], 1, 3]}""",
            """{"chosen": "\n\nHuman: hi\n\nAssistant: yes", "rejected": "\n\nHuman: hi\n\nAssistant: no"}""",
        ]);
        var set = DatasetLoader.LoadRankingGroups([path]);
        Assert.Equal(3, set.Records.Count);
        var pair = set.Records[0];
        Assert.Equal([" a", " b"], pair.Completions.Select(c => c.Text));
        Assert.Equal([[0], [1]], pair.Ranking.Select(g => g.ToArray()));
        Assert.Equal("chosen", pair.CompletionField(0));
        Assert.Equal("rejected", pair.CompletionField(1));
        Assert.Equal("completions[3]", set.Records[1].CompletionField(3));
        Assert.Equal(3, set.Records[1].Ranking.Count);
        Assert.Equal("chosen", set.Records[2].PromptField);

        // Batches: one row per completion; the ranking's groups point at its rows, ties kept together.
        var tok = new ByteTokenizer();
        var encoded = DpoData.EncodeRankings(set.Records, tok, ChatTemplate.Plain, new DpoOptions(), _ => { });
        var batch = DpoData.RankingBatches(encoded, 8, 0, ByteTokenizer.PadTokenId).Single();
        Assert.Equal(2 + 4 + 2, batch.Rows);
        var four = batch.Units.Single(u => u.Groups.Sum(g => g.Length) == 4);
        Assert.Equal(2, four.Groups[0].Length);
        Assert.Equal(5, four.OrderedPairs().Count()); // (K² − Σt²)/2 = (16 − 6)/2
    }

    [Fact]
    public void AnOverlongCompletionOfARankingNamesItsField()
    {
        string path = Path.Combine(_dir, "long.jsonl");
        File.WriteAllLines(path, ["""{"prompt": "q:", "completions": [" x", " a much longer completion"], "ranking": [1, 0]}"""]);
        var set = DatasetLoader.LoadRankingGroups([path]);
        var e = Assert.Throws<BadRecordException>(() =>
            DpoData.EncodeRankings(set.Records, new ByteTokenizer(), ChatTemplate.Plain, new DpoOptions { MaxLength = 12 }, _ => { }));
        Assert.Equal("completions[1]", e.Field);
        Assert.Contains("long.jsonl:1", e.Message);

        var warnings = new List<string>();
        var kept = DpoData.EncodeRankings(set.Records, new ByteTokenizer(), ChatTemplate.Plain, new DpoOptions { MaxLength = 12, SkipBadRecords = true }, warnings.Add);
        Assert.Empty(kept);
        Assert.Contains("skipped 1 bad record", Assert.Single(warnings));
    }
}
