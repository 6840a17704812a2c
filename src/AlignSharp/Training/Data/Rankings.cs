namespace AlignSharp.Training.Data;

/// <summary>
/// One annotator's ranking of K completions of a prompt, best first, as the InstructGPT pipeline collects them.
/// <see cref="Ranking"/> lists groups of completion indices from best to worst; a group of more than one index is
/// a tie. Every index 0..K−1 appears exactly once.
/// </summary>
/// <remarks>
/// <para>Pairs: for every two groups a &lt; b (a ranked better) and every i in a, j in b, the ordered pair
/// (chosen i, rejected j). With group sizes t₁..t_m, that is P = (K² − Σ tₐ²)/2 pairs: K·(K−1)/2 without ties, fewer
/// with them (tied completions give no pair). Order: groups a, then b, then i, then j, each as listed.</para>
/// <para>Weights (<see cref="PreferenceWeights"/>): InstructGPT trains on all pairs of a prompt as one batch element,
/// so that prompts with many completions do not dominate. Each preference record (a ranking, or one plain pair,
/// which counts as a ranking with P = 1) is a group g with P_g pairs. Over all N pairs and G groups (with at
/// least one pair) loaded together, a pair of group g gets weight w = N / (G · P_g). So every group's weights sum
/// to the same N/G and the mean weight over the data set is exactly 1; a file of plain pairs gets weight 1
/// everywhere. A mean of w·loss over all pairs then equals the mean over groups of each group's mean pair loss.</para>
/// </remarks>
public sealed record RankingRecord(ChatContent Prompt, IReadOnlyList<ChatContent> Completions, IReadOnlyList<IReadOnlyList<int>> Ranking, RecordSource Source)
{
    /// <summary>The record's "annotator" field, when given.</summary>
    public string? Annotator { get; init; }

    /// <summary>The record's own chat-template arguments ("tools", "chat_template_kwargs"), or null.</summary>
    public IReadOnlyDictionary<string, object?>? TemplateKwargs { get; init; }

    /// <summary>The record's field holding each completion (default <c>completions[i]</c>; "chosen"/"rejected" for a pair read as a ranking).</summary>
    public IReadOnlyList<string>? CompletionFields { get; init; }

    /// <summary>The record's field holding the prompt ("prompt", or "chosen" when it was extracted from transcripts).</summary>
    public string PromptField { get; init; } = "prompt";

    /// <summary>The field of completion <paramref name="index"/>, for error messages.</summary>
    public string CompletionField(int index) => CompletionFields?[index] ?? $"completions[{index}]";

    /// <summary>Number of ordered pairs: (K² − Σ group size²) / 2.</summary>
    public int PairCount
    {
        get
        {
            int k = Completions.Count;
            int ties = Ranking.Sum(g => g.Count * g.Count);
            return (k * k - ties) / 2;
        }
    }

    /// <summary>(better, worse) completion indices, in the order documented on the type.</summary>
    public IEnumerable<(int Chosen, int Rejected)> OrderedPairs()
    {
        for (int a = 0; a < Ranking.Count; a++)
            for (int b = a + 1; b < Ranking.Count; b++)
                foreach (int i in Ranking[a])
                    foreach (int j in Ranking[b])
                        yield return (i, j);
    }

    /// <summary>This ranking's pairs, each with the given weight.</summary>
    public IEnumerable<PreferencePair> ToPairs(float weight) => OrderedPairs().Select(p =>
        new PreferencePair(Prompt, Completions[p.Chosen], Completions[p.Rejected], 0f, weight, Source)
        {
            Annotator = Annotator,
            TemplateKwargs = TemplateKwargs,
            ChosenField = $"completions[{p.Chosen}]",
            RejectedField = $"completions[{p.Rejected}]",
        });
}

/// <summary>The weighting rule of <see cref="RankingRecord"/>: w = N / (G · P_g).</summary>
public static class PreferenceWeights
{
    /// <summary>
    /// The weight of each pair of a group of <paramref name="groupPairs"/> pairs, in a data set of
    /// <paramref name="totalPairs"/> pairs in <paramref name="groups"/> groups.
    /// </summary>
    public static float Weight(int groupPairs, long totalPairs, int groups) => (float)((double)totalPairs / ((double)groups * groupPairs));
}
