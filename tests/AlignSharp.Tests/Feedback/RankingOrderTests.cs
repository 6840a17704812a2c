using System.Text.Json;
using AlignSharp.Feedback;

namespace AlignSharp.Tests.Feedback;

public class RankingOrderTests
{
    private static RankingOrder Parse(string json, int k)
    {
        using var doc = JsonDocument.Parse(json);
        return RankingOrder.FromGroups(RankingOrder.ParseGroups(doc.RootElement), k);
    }

    [Fact]
    public void TiesAreNestedListsAndSingletonsPlainNumbers()
    {
        var r = Parse("[[2, 0], 1, 3]", 4);
        Assert.Equal("[[0,2],1,3]", r.ToString());
        Assert.Equal([0, 1, 0, 2], r.RanksById());
        Assert.Equal(4, r.Count);
        // A one-element group is written as a plain id.
        Assert.Equal("[1,0]", Parse("[[1], 0]", 2).ToString());
    }

    [Fact]
    public void StrictPairsSkipTies()
    {
        var pairs = Parse("[[0, 2], 1, 3]", 4).StrictPairs().ToList();
        // K(K-1)/2 = 6 pairs, minus the tie (0, 2).
        Assert.Equal([(0, 1), (2, 1), (0, 3), (2, 3), (1, 3)], pairs);
        Assert.Equal(6, RankingOrder.FromOrder([3, 1, 0, 2], 4).StrictPairs().Count());
        Assert.Empty(Parse("[[0, 1, 2]]", 3).StrictPairs());
    }

    [Theory]
    [InlineData("[0, 1, 2]", "missing 3")]
    [InlineData("[0, 1, 2, 2]", "more than once")]
    [InlineData("[[0, 1], 2, [1, 3]]", "more than once")]
    [InlineData("[0, 1, 2, 4]", "completion ids are 0..3")]
    [InlineData("[0, 1, 2, -1]", "completion ids are 0..3")]
    [InlineData("[0, 1, [], 2, 3]", "empty tie group")]
    [InlineData("[0, 1, \"2\", 3]", "not a completion id")]
    [InlineData("[0, 1, 2.5, 3]", "not a completion id")]
    [InlineData("[0, 1, [2, [3]]]", "not a completion id")]
    [InlineData("{\"0\": 1}", "must be a list")]
    public void RejectsAnythingButAPermutation(string json, string message)
    {
        var e = Assert.Throws<InvalidSubmissionException>(() => Parse(json, 4));
        Assert.Contains(message, e.Message);
    }
}
