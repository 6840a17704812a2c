namespace AlignSharp.Training.Data;

/// <summary>
/// Holds out part of a data set for evaluation (<c>--eval-split 0.05</c>). Eval size: 0 when the fraction is 0
/// or there are fewer than 2 items; otherwise ⌈fraction · n⌉ (as Hugging Face datasets' train_test_split), at
/// least 1 and at most n − 1. Which items: the first ones of a SplitMix64 shuffle seeded by
/// <paramref name="seed"/>, so the same seed gives the same split. Both parts keep the input order.
/// </summary>
public static class TrainEvalSplit
{
    public static int EvalCount(int count, double evalFraction)
    {
        if (!(evalFraction >= 0 && evalFraction < 1))
            throw new UserInputException($"the eval split must be a fraction in [0, 1) (e.g. 0.05), got {evalFraction}.");
        if (evalFraction == 0 || count < 2) return 0;
        int k = (int)Math.Ceiling(evalFraction * count - 1e-9); // the epsilon keeps 0.07 · 100 at 7, not 8
        return Math.Clamp(k, 1, count - 1);
    }

    public static (IReadOnlyList<T> Train, IReadOnlyList<T> Eval) Split<T>(IReadOnlyList<T> items, double evalFraction, int seed)
    {
        var eval = EvalIndices(items.Count, evalFraction, seed);
        var train = new List<T>(items.Count - eval.Count);
        var held = new List<T>(eval.Count);
        for (int i = 0; i < items.Count; i++) (eval.Contains(i) ? held : train).Add(items[i]);
        return (train, held);
    }

    /// <summary>
    /// Splits whole groups (e.g. the pairs of one ranking, which share a key) so none straddles train and eval;
    /// the fraction counts groups, not items.
    /// </summary>
    public static (IReadOnlyList<T> Train, IReadOnlyList<T> Eval) SplitByGroup<T, TKey>(IReadOnlyList<T> items, double evalFraction, int seed, Func<T, TKey> group)
        where TKey : notnull
    {
        var keys = new Dictionary<TKey, int>();
        var groupOf = new int[items.Count];
        for (int i = 0; i < items.Count; i++)
        {
            var key = group(items[i]);
            if (!keys.TryGetValue(key, out int g)) keys[key] = g = keys.Count;
            groupOf[i] = g;
        }
        var eval = EvalIndices(keys.Count, evalFraction, seed);
        var train = new List<T>();
        var held = new List<T>();
        for (int i = 0; i < items.Count; i++) (eval.Contains(groupOf[i]) ? held : train).Add(items[i]);
        return (train, held);
    }

    /// <summary>Preference pairs, keeping the pairs of one record (one ranking) on the same side.</summary>
    public static (IReadOnlyList<PreferencePair> Train, IReadOnlyList<PreferencePair> Eval) SplitPreferences(IReadOnlyList<PreferencePair> pairs, double evalFraction, int seed) =>
        SplitByGroup(pairs, evalFraction, seed, p => p.Source);

    private static HashSet<int> EvalIndices(int count, double evalFraction, int seed)
    {
        int k = EvalCount(count, evalFraction);
        var order = Enumerable.Range(0, count).ToArray();
        new SplitMix64(SplitMix64.Mix((ulong)(uint)seed, 0x5EED_5B17UL)).Shuffle(order.AsSpan());
        return [.. order.Take(k)];
    }
}
