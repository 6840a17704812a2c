namespace AlignSharp.Training.Data;

/// <summary>
/// A padded SFT batch as plain row-major arrays: B rows of T tokens (B batch, T longest row). Padding is on the
/// right: id PadId, mask false, label −100. Labels follow <see cref="SftSequence"/> (aligned with the ids; the
/// trainer scores logits[t − 1] against Labels[t]).
/// </summary>
public sealed class SftBatch
{
    private SftBatch(int batchSize, int seqLen, int[] inputIds, bool[] attentionMask, int[] labels, int[] lastIndex, RecordSource[][] sources,
        int[]? segmentStarts, int[]? positions)
    {
        BatchSize = batchSize;
        SeqLen = seqLen;
        InputIds = inputIds;
        AttentionMask = attentionMask;
        Labels = labels;
        LastIndex = lastIndex;
        Sources = sources;
        SegmentStarts = segmentStarts;
        Positions = positions;
    }

    public int BatchSize { get; }
    public int SeqLen { get; }

    /// <summary>[B, T] token ids.</summary>
    public int[] InputIds { get; }

    /// <summary>[B, T] true at real tokens, false at padding.</summary>
    public bool[] AttentionMask { get; }

    /// <summary>[B, T] targets, −100 where there is no loss (prompt, padding, each example's first token).</summary>
    public int[] Labels { get; }

    /// <summary>[B] index of each row's last real token.</summary>
    public int[] LastIndex { get; }

    /// <summary>[B] the records in each row (one, or several when packed).</summary>
    public RecordSource[][] Sources { get; }

    /// <summary>[B, T] when a row holds several examples (packing), else null: the first token of each token's example, so
    /// that attention keeps the examples apart (padding sees only itself).</summary>
    public int[]? SegmentStarts { get; }

    /// <summary>[B, T] with <see cref="SegmentStarts"/>: positions counting from 0 in each example, as transformers' packing
    /// without padding passes position_ids; null otherwise (0, 1, 2, … along the row).</summary>
    public int[]? Positions { get; }

    /// <summary>Tokens that carry loss in the whole batch.</summary>
    public int LossTokenCount => Labels.Count(l => l != SftSequence.IgnoreIndex);

    /// <summary>
    /// Pads <paramref name="rows"/> to the longest (or to <paramref name="padToLength"/>, e.g. the packing length,
    /// when given; it must be ≥ every row).
    /// </summary>
    public static SftBatch Create(IReadOnlyList<SftSequence> rows, int padId, int? padToLength = null)
    {
        if (rows.Count == 0) throw new ArgumentException("a batch needs at least one row.", nameof(rows));
        int longest = rows.Max(r => r.Length);
        int t = padToLength ?? longest;
        if (t < longest) throw new ArgumentException($"cannot pad to {t}: a row has {longest} tokens.", nameof(padToLength));
        int b = rows.Count;
        var ids = new int[b * t];
        var mask = new bool[b * t];
        var labels = new int[b * t];
        var last = new int[b];
        Array.Fill(ids, padId);
        Array.Fill(labels, SftSequence.IgnoreIndex);
        for (int r = 0; r < b; r++)
        {
            var row = rows[r];
            row.Ids.CopyTo(ids, r * t);
            row.Labels.CopyTo(labels, r * t);
            mask.AsSpan(r * t, row.Length).Fill(true);
            last[r] = row.Length - 1;
        }
        int[]? segments = null, positions = null;
        if (rows.Any(r => r.ExampleStarts.Length > 1))
        {
            segments = new int[b * t];
            positions = new int[b * t];
            for (int r = 0; r < b; r++)
            {
                var starts = rows[r].ExampleStarts;
                for (int i = 0, e = 0; i < t; i++)
                {
                    while (e + 1 < starts.Length && starts[e + 1] <= i) e++;
                    int start = i < rows[r].Length && starts.Length > 0 ? starts[e] : i;
                    (segments[r * t + i], positions[r * t + i]) = (start, i - start);
                }
            }
        }
        return new SftBatch(b, t, ids, mask, labels, last, rows.Select(r => r.Sources).ToArray(), segments, positions);
    }

    /// <summary>One epoch of batches in the order of <see cref="LengthGroupedBatches.Plan"/>.</summary>
    public static IEnumerable<SftBatch> Epoch(IReadOnlyList<SftSequence> rows, BatchingOptions options, int epoch, int padId, int? padToLength = null)
    {
        foreach (var indices in LengthGroupedBatches.Plan(rows.Select(r => r.Length).ToArray(), options, epoch))
            yield return Create(indices.Select(i => rows[i]).ToArray(), padId, padToLength);
    }
}

/// <summary>
/// A padded preference batch: B pairs as 2B rows of T tokens, rows 0..B−1 prompt + chosen and rows B..2B−1
/// prompt + rejected (same order), so one forward pass scores both. Right padding as in <see cref="SftBatch"/>.
/// </summary>
public sealed class PreferenceBatch
{
    private PreferenceBatch(int pairCount, int seqLen, int[] inputIds, bool[] attentionMask, int[] labels, int[] lastIndex, int[] promptLengths, float[] margins, float[] weights, RecordSource[] sources)
    {
        PairCount = pairCount;
        SeqLen = seqLen;
        InputIds = inputIds;
        AttentionMask = attentionMask;
        Labels = labels;
        LastIndex = lastIndex;
        PromptLengths = promptLengths;
        Margins = margins;
        Weights = weights;
        Sources = sources;
    }

    /// <summary>B, the number of pairs; the arrays have 2B rows.</summary>
    public int PairCount { get; }
    public int SeqLen { get; }

    /// <summary>[2B, T] token ids: chosen rows, then rejected rows.</summary>
    public int[] InputIds { get; }

    /// <summary>[2B, T] true at real tokens.</summary>
    public bool[] AttentionMask { get; }

    /// <summary>[2B, T] answer tokens as targets (for log-probabilities of the answer, as DPO needs); −100 on prompt and padding.</summary>
    public int[] Labels { get; }

    /// <summary>[2B] index of each row's last real token (where a reward model reads its score).</summary>
    public int[] LastIndex { get; }

    /// <summary>[2B] prompt tokens at the start of each row.</summary>
    public int[] PromptLengths { get; }

    /// <summary>[B] each pair's margin.</summary>
    public float[] Margins { get; }

    /// <summary>[B] each pair's weight.</summary>
    public float[] Weights { get; }

    /// <summary>[B] each pair's record.</summary>
    public RecordSource[] Sources { get; }

    public static PreferenceBatch Create(IReadOnlyList<TokenizedPreference> pairs, int padId)
    {
        if (pairs.Count == 0) throw new ArgumentException("a batch needs at least one pair.", nameof(pairs));
        int b = pairs.Count;
        int t = pairs.Max(p => p.Length);
        var ids = new int[2 * b * t];
        var mask = new bool[2 * b * t];
        var labels = new int[2 * b * t];
        var last = new int[2 * b];
        var promptLengths = new int[2 * b];
        Array.Fill(ids, padId);
        Array.Fill(labels, SftSequence.IgnoreIndex);
        for (int i = 0; i < b; i++)
        {
            Fill(i, pairs[i].Prompt, pairs[i].Chosen);
            Fill(b + i, pairs[i].Prompt, pairs[i].Rejected);
        }
        return new PreferenceBatch(b, t, ids, mask, labels, last, promptLengths,
            pairs.Select(p => p.Margin).ToArray(), pairs.Select(p => p.Weight).ToArray(), pairs.Select(p => p.Source).ToArray());

        void Fill(int row, int[] prompt, int[] answer)
        {
            int o = row * t;
            prompt.CopyTo(ids, o);
            answer.CopyTo(ids, o + prompt.Length);
            answer.CopyTo(labels, o + prompt.Length);
            int n = prompt.Length + answer.Length;
            mask.AsSpan(o, n).Fill(true);
            last[row] = n - 1;
            promptLengths[row] = prompt.Length;
        }
    }

    /// <summary>One epoch of batches (BatchSize pairs each) in the order of <see cref="LengthGroupedBatches.Plan"/>.</summary>
    public static IEnumerable<PreferenceBatch> Epoch(IReadOnlyList<TokenizedPreference> pairs, BatchingOptions options, int epoch, int padId)
    {
        foreach (var indices in LengthGroupedBatches.Plan(pairs.Select(p => p.Length).ToArray(), options, epoch))
            yield return Create(indices.Select(i => pairs[i]).ToArray(), padId);
    }

    /// <summary>
    /// One epoch of batches that keep the pairs of one record (a ranking's K·(K−1)/2 pairs) together, as
    /// <see cref="LengthGroupedBatches.PlanUnits"/> plans them; a file of plain pairs gets exactly <see cref="Epoch"/>'s batches.
    /// </summary>
    public static IEnumerable<PreferenceBatch> EpochByRecord(IReadOnlyList<TokenizedPreference> pairs, BatchingOptions options, int epoch, int padId)
    {
        var units = Enumerable.Range(0, pairs.Count).GroupBy(i => pairs[i].Source).Select(g => g.ToArray()).ToArray();
        return LengthGroupedBatches.PlanUnits(units, pairs.Select(p => p.Length).ToArray(), options, epoch)
            .Select(indices => Create(indices.Select(i => pairs[i]).ToArray(), padId));
    }

    /// <summary>
    /// The distinct rows of this batch (a completion that appears in several pairs of a ranking is one row): their
    /// ids, mask and labels as [U, T], and for each of the 2B rows the index of its distinct row. Rows are equal when
    /// their real tokens and their prompt length are; scoring each distinct row once and gathering is exact (equal
    /// inputs, equal scores) and saves most of the work on rankings.
    /// </summary>
    public (int[] Ids, bool[] Mask, int[] Labels, int Count, int[] RowOf) DistinctRows()
    {
        int rows = 2 * PairCount, t = SeqLen;
        var rowOf = new int[rows];
        var firstRow = new List<int>();
        var seen = new Dictionary<int, List<int>>();
        for (int r = 0; r < rows; r++)
        {
            var tokens = InputIds.AsSpan(r * t, LastIndex[r] + 1);
            var hash = new HashCode();
            hash.AddBytes(System.Runtime.InteropServices.MemoryMarshal.AsBytes(tokens));
            int h = hash.ToHashCode();
            int found = -1;
            if (seen.TryGetValue(h, out var candidates))
                foreach (int u in candidates)
                    if (LastIndex[firstRow[u]] == LastIndex[r] && PromptLengths[firstRow[u]] == PromptLengths[r] && tokens.SequenceEqual(InputIds.AsSpan(firstRow[u] * t, LastIndex[r] + 1))) { found = u; break; }
            if (found < 0)
            {
                found = firstRow.Count;
                firstRow.Add(r);
                if (candidates == null) seen[h] = candidates = [];
                candidates.Add(found);
            }
            rowOf[r] = found;
        }
        int count = firstRow.Count;
        var ids = new int[count * t];
        var mask = new bool[count * t];
        var labels = new int[count * t];
        for (int u = 0; u < count; u++)
        {
            InputIds.AsSpan(firstRow[u] * t, t).CopyTo(ids.AsSpan(u * t, t));
            AttentionMask.AsSpan(firstRow[u] * t, t).CopyTo(mask.AsSpan(u * t, t));
            Labels.AsSpan(firstRow[u] * t, t).CopyTo(labels.AsSpan(u * t, t));
        }
        return (ids, mask, labels, count, rowOf);
    }
}

/// <summary>
/// Packs short SFT sequences into rows of at most a fixed length, so fewer tokens are padding. Best-fit
/// decreasing: sequences, longest first (ties by input order), each go into the open row with the least room
/// that still fits it, else a new row; no sequence is split. Each example keeps its own labels, and its first
/// token's label is −100, so no loss crosses from one example into the next. NOT done: position ids are not
/// reset per example and attention is not blocked between examples (a later example attends to earlier ones in
/// its row), the usual cheap packing; use it for short, independent examples.
/// </summary>
public static class SftPacking
{
    public static IReadOnlyList<SftSequence> Pack(IReadOnlyList<SftSequence> sequences, int rowLength)
    {
        if (rowLength < 1) throw new UserInputException($"the packing length must be ≥ 1, got {rowLength}.");
        var order = Enumerable.Range(0, sequences.Count).OrderByDescending(i => sequences[i].Length).ThenBy(i => i).ToArray();
        var rows = new List<List<SftSequence>>();
        var room = new List<int>();
        var open = new SortedSet<(int Room, int Row)>();
        foreach (int i in order)
        {
            var s = sequences[i];
            if (s.Length > rowLength)
                throw new UserInputException($"{s.Sources[0]}: a {s.Length}-token example does not fit the packing length of {rowLength}; make the packing length at least the max length.");
            if (s.Length == 0) continue;
            var fits = open.GetViewBetween((s.Length, int.MinValue), (int.MaxValue, int.MaxValue));
            var best = fits.Min; // default (room 0) when none fits; open rows always have room > 0
            int row;
            if (best.Room >= s.Length)
            {
                open.Remove(best);
                row = best.Row;
            }
            else
            {
                row = rows.Count;
                rows.Add([]);
                room.Add(rowLength);
            }
            rows[row].Add(s);
            room[row] -= s.Length;
            if (room[row] > 0) open.Add((room[row], row));
        }
        return rows.Select(Concatenate).ToArray();
    }

    private static SftSequence Concatenate(List<SftSequence> parts)
    {
        int n = parts.Sum(p => p.Length);
        var ids = new int[n];
        var labels = new int[n];
        var starts = new List<int>();
        var sources = new List<RecordSource>();
        int o = 0;
        foreach (var p in parts)
        {
            p.Ids.CopyTo(ids, o);
            p.Labels.CopyTo(labels, o);
            foreach (int s in p.ExampleStarts)
            {
                starts.Add(o + s);
                labels[o + s] = SftSequence.IgnoreIndex;
            }
            sources.AddRange(p.Sources);
            o += p.Length;
        }
        return new SftSequence(ids, labels, starts.ToArray(), sources.ToArray());
    }
}
