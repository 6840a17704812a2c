using System.Text.Json;
using System.Text.Json.Nodes;

namespace AlignSharp.Feedback;

/// <summary>
/// An ordering of K completions best → worst, with ties. Groups[0] holds the best completion(s); a group of
/// several ids is a tie. Every id in 0..K−1 appears exactly once. In JSON (the API and the rankings format of
/// the reward-model trainer) a group of one is a plain number and a tie is a nested list: <c>[[0, 2], 1, 3]</c>.
/// </summary>
public sealed class RankingOrder
{
    private readonly int[][] _groups;

    private RankingOrder(int[][] groups) => _groups = groups;

    /// <summary>Tied groups best → worst; ids inside a group are sorted ascending.</summary>
    public IReadOnlyList<IReadOnlyList<int>> Groups => _groups;

    /// <summary>Number of completions ranked (K).</summary>
    public int Count => _groups.Sum(g => g.Length);

    /// <summary>
    /// Validates <paramref name="groups"/> as a ranking of the completion ids 0..<paramref name="count"/>−1:
    /// no empty group, no unknown id, no id twice, none missing. Throws <see cref="InvalidSubmissionException"/>.
    /// </summary>
    public static RankingOrder FromGroups(IReadOnlyList<IReadOnlyList<int>> groups, int count)
    {
        var seen = new bool[count];
        var result = new int[groups.Count][];
        for (int g = 0; g < groups.Count; g++)
        {
            if (groups[g].Count == 0) throw new InvalidSubmissionException($"ranking position {g + 1} is an empty tie group.");
            foreach (int id in groups[g])
            {
                if (id < 0 || id >= count)
                    throw new InvalidSubmissionException($"ranking names completion {id}, but this task's completion ids are 0..{count - 1}.");
                if (seen[id]) throw new InvalidSubmissionException($"ranking names completion {id} more than once.");
                seen[id] = true;
            }
            result[g] = groups[g].Order().ToArray();
        }
        var missing = Enumerable.Range(0, count).Where(i => !seen[i]).ToArray();
        if (missing.Length > 0)
            throw new InvalidSubmissionException($"ranking must order all {count} completions; missing {string.Join(", ", missing)}.");
        return new RankingOrder(result);
    }

    /// <summary>A ranking without ties, best first.</summary>
    public static RankingOrder FromOrder(IReadOnlyList<int> bestToWorst, int count) =>
        FromGroups(bestToWorst.Select(i => (IReadOnlyList<int>)[i]).ToArray(), count);

    /// <summary>
    /// Reads the JSON shape (numbers and nested lists of numbers) without checking ids against a task; pair it
    /// with <see cref="FromGroups"/>. Throws <see cref="InvalidSubmissionException"/> on any other shape.
    /// </summary>
    public static IReadOnlyList<IReadOnlyList<int>> ParseGroups(JsonElement ranking)
    {
        if (ranking.ValueKind != JsonValueKind.Array)
            throw new InvalidSubmissionException("\"ranking\" must be a list of completion ids best → worst, ties as nested lists, e.g. [[0, 2], 1, 3].");
        var groups = new List<IReadOnlyList<int>>();
        foreach (var item in ranking.EnumerateArray())
        {
            if (item.ValueKind == JsonValueKind.Array)
            {
                var group = new List<int>();
                foreach (var inner in item.EnumerateArray()) group.Add(ReadId(inner));
                groups.Add(group);
            }
            else groups.Add([ReadId(item)]);
        }
        return groups;
    }

    private static int ReadId(JsonElement e)
    {
        if (e.ValueKind == JsonValueKind.Number && e.TryGetInt32(out int id)) return id;
        throw new InvalidSubmissionException($"\"ranking\" holds {e.GetRawText()}, which is not a completion id (an integer); ties are nested lists of ids.");
    }

    /// <summary>Parses the canonical JSON this class writes (store contents); <paramref name="count"/> is K.</summary>
    public static RankingOrder Parse(string json, int count)
    {
        using var doc = JsonDocument.Parse(json);
        return FromGroups(ParseGroups(doc.RootElement), count);
    }

    /// <summary>Rank of each completion id: the index of its group (0 = best; tied ids share a rank).</summary>
    public int[] RanksById()
    {
        var ranks = new int[Count];
        for (int g = 0; g < _groups.Length; g++)
            foreach (int id in _groups[g]) ranks[id] = g;
        return ranks;
    }

    /// <summary>Every (better, worse) pair of ids with a strict preference: K·(K−1)/2 without ties, fewer with.</summary>
    public IEnumerable<(int Better, int Worse)> StrictPairs()
    {
        for (int g = 0; g < _groups.Length; g++)
            for (int h = g + 1; h < _groups.Length; h++)
                foreach (int better in _groups[g])
                    foreach (int worse in _groups[h])
                        yield return (better, worse);
    }

    public JsonArray ToJson()
    {
        var array = new JsonArray();
        foreach (var g in _groups)
        {
            if (g.Length == 1) array.Add(g[0]);
            else array.Add(new JsonArray(g.Select(id => (JsonNode?)id).ToArray()));
        }
        return array;
    }

    public override string ToString() => ToJson().ToJsonString();
}

/// <summary>A submission the store refuses (bad ranking, unknown task, already submitted): the API answers 400 with the message.</summary>
public sealed class InvalidSubmissionException(string message) : UserInputException(message);
