namespace AlignSharp.Training.Data;

/// <summary>How examples are grouped into batches each epoch.</summary>
public sealed record BatchingOptions
{
    /// <summary>Rows per batch (default 8; for preferences, pairs per batch).</summary>
    public int BatchSize { get; init; } = 8;

    /// <summary>Seed of the shuffles; the same seed and epoch give the same batches (default 0).</summary>
    public int Seed { get; init; }

    /// <summary>Shuffle every epoch (default true); false keeps file order and ignores GroupByLength.</summary>
    public bool Shuffle { get; init; } = true;

    /// <summary>Put examples of similar length in the same batch, to pad less (default true).</summary>
    public bool GroupByLength { get; init; } = true;

    /// <summary>Length grouping sorts within buckets of this many batches, so batches stay random across buckets (default 50).</summary>
    public int BucketBatches { get; init; } = 50;

    /// <summary>Drop a last batch smaller than BatchSize (default false).</summary>
    public bool DropLast { get; init; }

    public void Validate()
    {
        if (BatchSize < 1) throw new UserInputException($"the batch size must be ≥ 1, got {BatchSize}.");
        if (BucketBatches < 1) throw new UserInputException($"the length-grouping bucket must hold ≥ 1 batch, got {BucketBatches}.");
    }
}

/// <summary>
/// Length-aware batch order, deterministic in (seed, epoch): (1) shuffle all indices; (2) cut them into buckets of
/// BucketBatches × BatchSize and sort each bucket by length, longest first (ties keep shuffled order); (3) cut
/// each bucket into batches; (4) shuffle the order of the batches. Every index appears exactly once per epoch
/// (except a dropped short last batch). Without Shuffle: file order, consecutive batches.
/// </summary>
public static class LengthGroupedBatches
{
    public static IReadOnlyList<int[]> Plan(IReadOnlyList<int> lengths, BatchingOptions options, int epoch)
    {
        // Each example is a unit of its own: packing units of one fills every batch but the last of a bucket.
        var batches = Units(Enumerable.Range(0, lengths.Count).Select(i => new[] { i }).ToArray(), lengths, options, epoch);
        if (options.DropLast) batches.RemoveAll(b => b.Length < options.BatchSize);
        return batches;
    }

    /// <summary>
    /// As <see cref="Plan"/>, over units of examples that must share a batch (the pairs of one ranking, which
    /// InstructGPT trains on as one batch element, so that a reward model sees each completion once per epoch and
    /// scores it once per batch). Units are shuffled, length-grouped by their longest example within buckets of about
    /// BucketBatches × BatchSize examples, and packed in that order into batches of at most BatchSize examples (a
    /// larger unit is a batch of its own); then the batch order is shuffled. Every example appears exactly once per
    /// epoch, and a unit's examples are consecutive in its batch. DropLast is not supported here.
    /// </summary>
    public static IReadOnlyList<int[]> PlanUnits(IReadOnlyList<int[]> units, IReadOnlyList<int> lengths, BatchingOptions options, int epoch)
    {
        if (options.DropLast) throw new ArgumentException("DropLast is not supported for batches of units.", nameof(options));
        return Units(units, lengths, options, epoch);
    }

    private static List<int[]> Units(IReadOnlyList<int[]> units, IReadOnlyList<int> lengths, BatchingOptions options, int epoch)
    {
        options.Validate();
        var order = Enumerable.Range(0, units.Count).ToArray();
        var batches = new List<int[]>();
        if (!options.Shuffle)
        {
            Pack(order, units, options.BatchSize, batches);
            return batches;
        }
        var rng = new SplitMix64(SplitMix64.Mix((ulong)(uint)options.Seed, (ulong)(uint)epoch));
        rng.Shuffle(order.AsSpan());
        if (!options.GroupByLength)
        {
            Pack(order, units, options.BatchSize, batches);
            return batches;
        }
        var unitLength = units.Select(u => u.Length == 0 ? 0 : u.Max(i => lengths[i])).ToArray();
        double meanUnit = Math.Max(1.0, units.Average(u => (double)u.Length));
        int bucket = Math.Max(1, (int)(options.BatchSize * (long)options.BucketBatches / meanUnit));
        for (int start = 0; start < order.Length; start += bucket)
        {
            var sorted = order.AsSpan(start, Math.Min(bucket, order.Length - start)).ToArray()
                .Select((unit, position) => (unit, position))
                .OrderByDescending(x => unitLength[x.unit]).ThenBy(x => x.position).Select(x => x.unit).ToArray();
            Pack(sorted, units, options.BatchSize, batches);
        }
        var batchOrder = batches.ToArray();
        rng.Shuffle(batchOrder.AsSpan());
        return [.. batchOrder];
    }

    private static void Pack(int[] unitOrder, IReadOnlyList<int[]> units, int size, List<int[]> into)
    {
        var current = new List<int>();
        foreach (int u in unitOrder)
        {
            if (units[u].Length == 0) continue;
            if (current.Count > 0 && current.Count + units[u].Length > size)
            {
                into.Add([.. current]);
                current.Clear();
            }
            current.AddRange(units[u]);
        }
        if (current.Count > 0) into.Add([.. current]);
    }
}

/// <summary>
/// SplitMix64 (Steele, Lea, Flood 2014): a small generator whose sequence is fixed by this code, not by the
/// runtime's Random, so data order is reproducible across .NET versions.
/// </summary>
internal struct SplitMix64(ulong seed)
{
    private ulong _state = seed;

    public static ulong Mix(ulong a, ulong b)
    {
        var r = new SplitMix64(a * 0x9E3779B97F4A7C15UL ^ b);
        r.Next();
        return r.Next();
    }

    public ulong Next()
    {
        ulong z = _state += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    /// <summary>Uniform in [0, n), without modulo bias (Lemire's multiply-shift with rejection).</summary>
    public int NextInt(int n)
    {
        ulong range = (ulong)n;
        while (true)
        {
            ulong x = Next() >> 32;
            ulong m = x * range;
            if ((uint)m >= (uint)((0x1_0000_0000UL - range) % range)) return (int)(m >> 32);
        }
    }

    /// <summary>Fisher–Yates.</summary>
    public void Shuffle<T>(Span<T> items)
    {
        for (int i = items.Length - 1; i > 0; i--)
        {
            int j = NextInt(i + 1);
            (items[i], items[j]) = (items[j], items[i]);
        }
    }
}
