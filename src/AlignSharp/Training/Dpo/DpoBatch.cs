using AlignSharp.Text;
using AlignSharp.Training.Data;

namespace AlignSharp.Training.Dpo;

/// <summary>
/// One unit of the objective: completions of one prompt as rows of a <see cref="DpoBatch"/>, in groups best → worst
/// (a pair is [[chosen], [rejected]]; a ranking's ties share a group), and its weight in the loss.
/// </summary>
public sealed record RankedUnit(IReadOnlyList<int[]> Groups, float Weight)
{
    /// <summary>(better, worse) row pairs: every row of a better group against every row of a worse one.</summary>
    public IEnumerable<(int Chosen, int Rejected)> OrderedPairs()
    {
        for (int a = 0; a < Groups.Count; a++)
            for (int b = a + 1; b < Groups.Count; b++)
                foreach (int i in Groups[a])
                    foreach (int j in Groups[b])
                        yield return (i, j);
    }
}

/// <summary>A ranking as tokens: the prompt once, each completion with its EOS, groups of completion indices best first.</summary>
public sealed record TokenizedRanking(int[] Prompt, int[][] Completions, IReadOnlyList<IReadOnlyList<int>> Ranking, RecordSource Source)
{
    public int Length => Prompt.Length + Completions.Max(c => c.Length);
}

/// <summary>
/// A micro-batch as the DPO losses see it: R rows of T tokens (prompt + answer, right-padded), labels aligned with
/// the ids (answer tokens; −100 on prompt and padding; the model's logits at t are scored against Labels[t + 1]),
/// and the units (pairs or rankings) over those rows. Pairs come from <see cref="PreferenceBatch"/>: rows
/// 0..B−1 chosen, B..2B−1 rejected, so one forward pass scores both.
/// </summary>
public sealed class DpoBatch
{
    private DpoBatch(int rows, int seqLen, int[] inputIds, bool[] attentionMask, int[] labels, IReadOnlyList<RankedUnit> units, long? tokens = null)
    {
        Rows = rows;
        SeqLen = seqLen;
        InputIds = inputIds;
        AttentionMask = attentionMask;
        Labels = labels;
        Units = units;
        Weight = units.Sum(u => (double)u.Weight);
        Tokens = tokens ?? attentionMask.Count(m => m);
    }

    public int Rows { get; }
    public int SeqLen { get; }

    /// <summary>[R, T] token ids.</summary>
    public int[] InputIds { get; }

    /// <summary>[R, T] true at real tokens.</summary>
    public bool[] AttentionMask { get; }

    /// <summary>[R, T] answer tokens at their positions, −100 elsewhere.</summary>
    public int[] Labels { get; }

    public IReadOnlyList<RankedUnit> Units { get; }

    /// <summary>Σ unit weights: what the batch's loss is normalised by.</summary>
    public double Weight { get; }

    /// <summary>Real (non-padding) tokens in the batch.</summary>
    public long Tokens { get; }

    /// <summary>Row indices of each pair's chosen and rejected answer (units must be pairs).</summary>
    public (int[] Chosen, int[] Rejected) PairRows()
    {
        var c = new int[Units.Count];
        var r = new int[Units.Count];
        for (int i = 0; i < Units.Count; i++)
        {
            var g = Units[i].Groups;
            if (g.Count != 2 || g[0].Length != 1 || g[1].Length != 1) throw new InvalidOperationException("a pairwise loss needs pair units.");
            c[i] = g[0][0];
            r[i] = g[1][0];
        }
        return (c, r);
    }

    /// <summary>
    /// Pairs, each distinct answer one row: the pairs of a ranking share completions, and scoring each once (policy
    /// and reference) is exact and saves most of the work. Unit i is pair i: [[its chosen row], [its rejected row]].
    /// </summary>
    public static DpoBatch FromPairs(PreferenceBatch batch)
    {
        int b = batch.PairCount;
        var (ids, mask, labels, rows, rowOf) = batch.DistinctRows();
        var units = new RankedUnit[b];
        for (int i = 0; i < b; i++) units[i] = new RankedUnit([[rowOf[i]], [rowOf[b + i]]], batch.Weights[i]);
        // A row shared by two answers is run once but counts twice in num_tokens: both were trained on, as TRL counts them.
        return new DpoBatch(rows, batch.SeqLen, ids, mask, labels, units, batch.AttentionMask.Count(m => m));
    }

    /// <summary>Rows scored on their own (no units; e.g. KTO's completions), right-padded; weight 0.</summary>
    public static DpoBatch FromRows(IReadOnlyList<SftSequence> rows, int padId)
    {
        var padded = SftBatch.Create(rows, padId);
        return new DpoBatch(padded.BatchSize, padded.SeqLen, padded.InputIds, padded.AttentionMask, padded.Labels, []);
    }

    /// <summary>Rankings, each completion a row (ranking by ranking, completions in file order); each ranking has weight 1.</summary>
    public static DpoBatch FromRankings(IReadOnlyList<TokenizedRanking> rankings, int padId)
    {
        var rows = new List<SftSequence>();
        var units = new List<RankedUnit>();
        foreach (var k in rankings)
        {
            int first = rows.Count;
            foreach (var completion in k.Completions)
            {
                var ids = k.Prompt.Concat(completion).ToArray();
                var labels = Enumerable.Repeat(SftSequence.IgnoreIndex, k.Prompt.Length).Concat(completion).ToArray();
                rows.Add(new SftSequence(ids, labels, [0], [k.Source]));
            }
            units.Add(new RankedUnit(k.Ranking.Select(g => g.Select(i => first + i).ToArray()).ToArray(), 1f));
        }
        var padded = SftBatch.Create(rows, padId);
        return new DpoBatch(padded.BatchSize, padded.SeqLen, padded.InputIds, padded.AttentionMask, padded.Labels, units);
    }
}

/// <summary>Turns preference files into DPO micro-batches.</summary>
public static class DpoData
{
    /// <summary>Pairs for the pairwise losses: rankings split into weighted pairs (see <see cref="RankingRecord"/>).</summary>
    public static IReadOnlyList<TokenizedPreference> EncodePairs(IReadOnlyList<PreferencePair> pairs, ITokenizer tokenizer, ChatTemplate template, DpoOptions options, Action<string> warn)
    {
        var encoded = PreferenceEncoder.Encode(pairs, tokenizer, template, new PreferenceEncodingOptions { Truncation = options.Truncation, SkipBadRecords = options.SkipBadRecords });
        if (encoded.Warning is { } w) warn(w);
        return encoded.Records;
    }

    /// <summary>
    /// Rankings for Plackett–Luce, each tokenized as the pair encoder does (exact prompt/answer boundary, EOS,
    /// truncation); a ranking with any bad completion is a bad record. Rankings that tie everything are left out.
    /// </summary>
    public static IReadOnlyList<TokenizedRanking> EncodeRankings(IReadOnlyList<RankingRecord> rankings, ITokenizer tokenizer, ChatTemplate template, DpoOptions options, Action<string> warn)
    {
        var encoding = new PreferenceEncodingOptions { Truncation = options.Truncation };
        var result = new List<TokenizedRanking>();
        int skipped = 0;
        var examples = new List<string>();
        foreach (var r in rankings)
        {
            if (r.Ranking.Count < 2) continue;
            try
            {
                int[] prompt = [];
                var completions = new int[r.Completions.Count][];
                for (int i = 0; i < completions.Length; i++)
                {
                    // One completion as both answers of a pair: the pair encoder's tokens, limits and error messages.
                    var pair = new PreferencePair(r.Prompt, r.Completions[i], r.Completions[i], 0f, 1f, r.Source)
                    {
                        ChosenField = r.CompletionField(i),
                        RejectedField = r.CompletionField(i),
                        PromptField = r.PromptField,
                        TemplateKwargs = r.TemplateKwargs,
                    };
                    var t = PreferenceEncoder.Encode(pair, tokenizer, template, encoding);
                    prompt = t.Prompt;
                    completions[i] = t.Chosen;
                }
                result.Add(new TokenizedRanking(prompt, completions, r.Ranking, r.Source));
            }
            catch (BadRecordException e) when (options.SkipBadRecords)
            {
                skipped++;
                if (examples.Count < 5) examples.Add(e.Message);
            }
        }
        if (skipped > 0) warn($"skipped {skipped} bad record{(skipped == 1 ? "" : "s")}, e.g.:\n  " + string.Join("\n  ", examples));
        return result;
    }

    /// <summary>Micro-batches of BatchSize pairs (a ranking's pairs together), length-grouped once (seeded); the training loop shuffles their order per epoch.</summary>
    public static IReadOnlyList<DpoBatch> PairBatches(IReadOnlyList<TokenizedPreference> pairs, int batchSize, int seed, int padId)
        => pairs.Count == 0 ? [] : PreferenceBatch.EpochByRecord(pairs, new BatchingOptions { BatchSize = batchSize, Seed = seed }, 0, padId).Select(DpoBatch.FromPairs).ToList();

    /// <summary>Micro-batches of BatchSize rankings, length-grouped once (seeded).</summary>
    public static IReadOnlyList<DpoBatch> RankingBatches(IReadOnlyList<TokenizedRanking> rankings, int batchSize, int seed, int padId)
    {
        if (rankings.Count == 0) return [];
        var plan = LengthGroupedBatches.Plan(rankings.Select(r => r.Length).ToArray(), new BatchingOptions { BatchSize = batchSize, Seed = seed }, 0);
        return plan.Select(indices => DpoBatch.FromRankings(indices.Select(i => rankings[i]).ToArray(), padId)).ToList();
    }
}
