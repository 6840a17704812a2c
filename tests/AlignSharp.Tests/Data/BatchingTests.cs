using AlignSharp.Training.Dpo;
using AlignSharp.Training.Data;

namespace AlignSharp.Tests.Data;

public class BatchingTests
{
    private const int X = SftSequence.IgnoreIndex;

    private static SftSequence Seq(int line, params int[] ids) =>
        new(ids, [X, .. ids[1..]], [0], [new RecordSource("d.jsonl", line)]);

    [Fact]
    public void SftBatchPadsRightWithMasksLabelsAndLastIndex()
    {
        var b = SftBatch.Create([Seq(1, 10, 11, 12), Seq(2, 20, 21, 22, 23, 24)], padId: 0);
        Assert.Equal((2, 5), (b.BatchSize, b.SeqLen));
        Assert.Equal([10, 11, 12, 0, 0, 20, 21, 22, 23, 24], b.InputIds);
        Assert.Equal([true, true, true, false, false, true, true, true, true, true], b.AttentionMask);
        Assert.Equal([X, 11, 12, X, X, X, 21, 22, 23, 24], b.Labels);
        Assert.Equal([2, 4], b.LastIndex);
        Assert.Equal(6, b.LossTokenCount);
        Assert.Equal(2, b.Sources[1][0].Line);

        var fixedLength = SftBatch.Create([Seq(1, 10, 11)], padId: 7, padToLength: 4);
        Assert.Equal([10, 11, 7, 7], fixedLength.InputIds);
        Assert.Equal([1], fixedLength.LastIndex);
    }

    [Fact]
    public void APairWhoseAnswersAreTheSameRowCountsItsTokensTwice()
    {
        // Scored once (the rows are shared), but both answers were trained on: num_tokens counts both, as TRL does.
        var src = new RecordSource("p.jsonl", 1);
        var batch = DpoBatch.FromPairs(PreferenceBatch.Create([new TokenizedPreference([1, 2], [3, 9], [3, 9], 0f, 1f, src)], padId: 0));
        Assert.Equal(1, batch.Rows);
        Assert.Equal(8, batch.Tokens);
    }

    [Fact]
    public void PreferenceBatchStacksChosenThenRejectedRows()
    {
        var src = new RecordSource("p.jsonl", 4);
        var pairs = new[]
        {
            new TokenizedPreference([1, 2], [3, 9], [4, 5, 9], 0.5f, 1.2f, src),
            new TokenizedPreference([6], [7, 8, 8, 9], [9], 0f, 0.8f, src with { Line = 5 }),
        };
        var b = PreferenceBatch.Create(pairs, padId: 0);
        Assert.Equal((2, 5), (b.PairCount, b.SeqLen));
        Assert.Equal(
            [1, 2, 3, 9, 0,  6, 7, 8, 8, 9,  1, 2, 4, 5, 9,  6, 9, 0, 0, 0], b.InputIds);
        Assert.Equal(
            [X, X, 3, 9, X,  X, 7, 8, 8, 9,  X, X, 4, 5, 9,  X, 9, X, X, X], b.Labels);
        Assert.Equal(b.InputIds.Select(id => id != 0), b.AttentionMask);
        Assert.Equal([3, 4, 4, 1], b.LastIndex);
        Assert.Equal([2, 1, 2, 1], b.PromptLengths);
        Assert.Equal([0.5f, 0f], b.Margins);
        Assert.Equal([1.2f, 0.8f], b.Weights);
        Assert.Equal([4, 5], b.Sources.Select(s => s.Line));
    }

    [Fact]
    public void PlanUnitsKeepsEachUnitInOneBatchAndCoversEveryExampleOnce()
    {
        // 60 units of 1–6 examples (a ranking of K = 4 has 6 pairs), numbered consecutively.
        var r = new Random(5);
        var units = new List<int[]>();
        int next = 0;
        for (int u = 0; u < 60; u++)
        {
            int size = r.Next(1, 7);
            units.Add(Enumerable.Range(next, size).ToArray());
            next += size;
        }
        var lengths = Lengths(next, 6);
        var options = new BatchingOptions { BatchSize = 8, Seed = 3 };
        var plan = LengthGroupedBatches.PlanUnits(units, lengths, options, epoch: 0);

        Assert.Equal(Enumerable.Range(0, next), plan.SelectMany(b => b).Order());
        var batchOf = plan.SelectMany((b, k) => b.Select(i => (i, k))).ToDictionary(x => x.i, x => x.k);
        foreach (var unit in units)
        {
            Assert.Single(unit.Select(i => batchOf[i]).Distinct());
            var batch = plan[batchOf[unit[0]]];
            int at = Array.IndexOf(batch, unit[0]);
            Assert.Equal(unit, batch[at..(at + unit.Length)]);
        }
        Assert.All(plan, b => Assert.InRange(b.Length, 1, 8));
        Assert.Equal(plan, LengthGroupedBatches.PlanUnits(units, lengths, options, epoch: 0));
        Assert.NotEqual(plan, LengthGroupedBatches.PlanUnits(units, lengths, options, epoch: 1));

        // A unit larger than the batch size is a batch of its own; without shuffling, units follow file order.
        var big = LengthGroupedBatches.PlanUnits([[0, 1, 2], [3], [4, 5]], [1, 1, 1, 1, 1, 1], new BatchingOptions { BatchSize = 2, Shuffle = false }, 0);
        Assert.Equal([[0, 1, 2], [3], [4, 5]], big);
        var packed = LengthGroupedBatches.PlanUnits([[0, 1], [2], [3, 4]], [1, 1, 1, 1, 1], new BatchingOptions { BatchSize = 3, Shuffle = false }, 0);
        Assert.Equal([[0, 1, 2], [3, 4]], packed);
    }

    [Fact]
    public void EpochByRecordBatchesARankingsPairsTogetherAndScoresEachCompletionOnce()
    {
        // Two rankings of 3 completions (3 pairs each) and one plain pair, as the loader expands them.
        var a = new RecordSource("r.jsonl", 1);
        var b = new RecordSource("r.jsonl", 2);
        var c = new RecordSource("r.jsonl", 3);
        int[] p1 = [1, 2], x = [3, 9], y = [4, 9], z = [5, 5, 9];
        int[] p2 = [6], u = [7, 9], v = [8, 8, 9], w = [9];
        TokenizedPreference Pair(int[] prompt, int[] chosen, int[] rejected, RecordSource s) => new(prompt, chosen, rejected, 0f, 1f, s);
        var pairs = new[]
        {
            Pair(p1, x, y, a), Pair(p1, x, z, a), Pair(p2, u, v, b), Pair(p1, y, z, a),
            Pair(p2, u, w, b), Pair(p2, v, w, b), Pair([6], [7, 7, 9], [9], c),
        };
        var batches = PreferenceBatch.EpochByRecord(pairs, new BatchingOptions { BatchSize = 3, Seed = 1 }, 0, padId: 0).ToList();
        Assert.Equal(3, batches.Count);
        Assert.Contains(batches, bt => bt.Sources.All(s => s == a) && bt.PairCount == 3);
        Assert.Contains(batches, bt => bt.Sources.All(s => s == b) && bt.PairCount == 3);

        var ranking = batches.Single(bt => bt.Sources[0] == a);
        var (ids, mask, labels, count, rowOf) = ranking.DistinctRows();
        Assert.Equal(3, count); // x, y, z: six rows, three completions
        int t = ranking.SeqLen;
        for (int row = 0; row < 6; row++)
        {
            Assert.Equal(ranking.InputIds.AsSpan(row * t, t).ToArray(), ids.AsSpan(rowOf[row] * t, t).ToArray());
            Assert.Equal(ranking.AttentionMask.AsSpan(row * t, t).ToArray(), mask.AsSpan(rowOf[row] * t, t).ToArray());
            Assert.Equal(ranking.Labels.AsSpan(row * t, t).ToArray(), labels.AsSpan(rowOf[row] * t, t).ToArray());
        }
        Assert.Equal(rowOf[0], rowOf[1]); // x chosen twice
        Assert.Equal(rowOf[2], rowOf[3 + 0]); // y: chosen in (y, z), rejected in (x, y)

        // Plain pairs are batched as before.
        var plain = pairs.Select((p, i) => p with { Source = new RecordSource("p.jsonl", i + 1) }).ToArray();
        var options = new BatchingOptions { BatchSize = 3, Seed = 1 };
        Assert.Equal(PreferenceBatch.Epoch(plain, options, 0, 0).Select(bt => bt.Sources), PreferenceBatch.EpochByRecord(plain, options, 0, 0).Select(bt => bt.Sources));
    }

    private static int[] Lengths(int n, int seed)
    {
        var r = new Random(seed);
        return Enumerable.Range(0, n).Select(_ => r.Next(1, 500)).ToArray();
    }

    [Fact]
    public void PlanIsDeterministicCoversEveryIndexOnceAndChangesBetweenEpochs()
    {
        var lengths = Lengths(103, 1);
        var o = new BatchingOptions { BatchSize = 4, Seed = 42, BucketBatches = 5 };
        var a = LengthGroupedBatches.Plan(lengths, o, epoch: 0);
        var again = LengthGroupedBatches.Plan(lengths, o, epoch: 0);
        Assert.Equal(a, again);
        Assert.Equal(Enumerable.Range(0, 103), a.SelectMany(x => x).Order());
        Assert.Equal(26, a.Count);
        Assert.Single(a, x => x.Length == 3);

        var next = LengthGroupedBatches.Plan(lengths, o, epoch: 1);
        Assert.NotEqual(a.Select(x => string.Join(",", x)), next.Select(x => string.Join(",", x)));
        Assert.Equal(Enumerable.Range(0, 103), next.SelectMany(x => x).Order());
        var otherSeed = LengthGroupedBatches.Plan(lengths, o with { Seed = 43 }, epoch: 0);
        Assert.NotEqual(a.Select(x => string.Join(",", x)), otherSeed.Select(x => string.Join(",", x)));
    }

    [Fact]
    public void LengthGroupingPadsLessThanRandomBatches()
    {
        var lengths = Lengths(400, 2);
        int Padding(IReadOnlyList<int[]> batches) => batches.Sum(b => b.Length * b.Max(i => lengths[i]) - b.Sum(i => lengths[i]));
        var grouped = LengthGroupedBatches.Plan(lengths, new BatchingOptions { BatchSize = 8, Seed = 3 }, 0);
        var random = LengthGroupedBatches.Plan(lengths, new BatchingOptions { BatchSize = 8, Seed = 3, GroupByLength = false }, 0);
        Assert.True(Padding(grouped) * 5 < Padding(random), $"{Padding(grouped)} vs {Padding(random)}");
        // With one bucket for everything, each batch is a run of the length-sorted order.
        var sorted = LengthGroupedBatches.Plan(lengths, new BatchingOptions { BatchSize = 8, Seed = 3, BucketBatches = 1000 }, 0);
        foreach (var batch in sorted)
        {
            int lo = batch.Min(i => lengths[i]), hi = batch.Max(i => lengths[i]);
            Assert.True(lengths.Count(l => l > lo && l < hi) <= batch.Length, "a batch spans lengths that other batches hold");
        }
    }

    [Fact]
    public void WithoutShuffleBatchesFollowFileOrderAndDropLastDropsTheShortBatch()
    {
        var plan = LengthGroupedBatches.Plan([5, 1, 9, 2, 7], new BatchingOptions { BatchSize = 2, Shuffle = false }, 3);
        Assert.Equal([[0, 1], [2, 3], [4]], plan);
        var dropped = LengthGroupedBatches.Plan([5, 1, 9, 2, 7], new BatchingOptions { BatchSize = 2, Shuffle = false, DropLast = true }, 0);
        Assert.Equal([[0, 1], [2, 3]], dropped);
        Assert.Throws<UserInputException>(() => LengthGroupedBatches.Plan([1], new BatchingOptions { BatchSize = 0 }, 0));
    }

    [Fact]
    public void EpochBuildsPaddedBatchesInPlanOrder()
    {
        var rows = Enumerable.Range(1, 10).Select(n => Seq(n, Enumerable.Range(100, n).ToArray())).ToArray();
        var o = new BatchingOptions { BatchSize = 3, Seed = 5 };
        var batches = SftBatch.Epoch(rows, o, epoch: 0, padId: 0).ToList();
        var plan = LengthGroupedBatches.Plan(rows.Select(r => r.Length).ToArray(), o, 0);
        Assert.Equal(plan.Count, batches.Count);
        for (int i = 0; i < plan.Count; i++)
        {
            Assert.Equal(plan[i].Select(j => j + 1), batches[i].Sources.Select(s => s[0].Line));
            Assert.Equal(plan[i].Max(j => rows[j].Length), batches[i].SeqLen);
        }
    }

    [Fact]
    public void PackingIsBestFitDecreasingWithPerExampleLabelMasks()
    {
        // Lengths 6, 5, 4, 3, 2 into rows of 8: 6 → row 0 (room 2), 5 → row 1 (3), 4 → row 2 (4), 3 → row 1 (best fit,
        // room 0), 2 → row 0 (room 0). Rows: [6, 2], [5, 3], [4].
        var seqs = new[] { 6, 5, 4, 3, 2 }.Select((n, k) => Seq(k + 1, Enumerable.Range(10 * (k + 1), n).ToArray())).ToArray();
        var rows = SftPacking.Pack(seqs, 8);
        Assert.Equal(3, rows.Count);
        Assert.Equal([[1, 5], [2, 4], [3]], rows.Select(r => r.Sources.Select(s => s.Line).ToArray()));
        Assert.Equal([10, 11, 12, 13, 14, 15, 50, 51], rows[0].Ids);
        Assert.Equal([X, 11, 12, 13, 14, 15, X, 51], rows[0].Labels); // no loss across the example boundary
        Assert.Equal([0, 6], rows[0].ExampleStarts);
        Assert.Equal([0, 5], rows[1].ExampleStarts);

        var batch = SftBatch.Create(rows, padId: 0, padToLength: 8);
        Assert.Equal([7, 7, 3], batch.LastIndex);
        Assert.Equal(seqs.Sum(s => s.LossTokenCount), batch.LossTokenCount);
        // Attention segments and positions per example; padding (row 2 past its 4 tokens) sees only itself, at position 0.
        Assert.NotNull(batch.SegmentStarts);
        Assert.NotNull(batch.Positions);
        Assert.Equal([0, 0, 0, 0, 0, 0, 6, 6, /**/ 0, 0, 0, 0, 0, 5, 5, 5, /**/ 0, 0, 0, 0, 4, 5, 6, 7], batch.SegmentStarts);
        Assert.Equal([0, 1, 2, 3, 4, 5, 0, 1, /**/ 0, 1, 2, 3, 4, 0, 1, 2, /**/ 0, 1, 2, 3, 0, 0, 0, 0], batch.Positions);
        var unpacked = SftBatch.Create(seqs, padId: 0);
        Assert.Null(unpacked.SegmentStarts);
        Assert.Null(unpacked.Positions);

        var e = Assert.Throws<UserInputException>(() => SftPacking.Pack(seqs, 5));
        Assert.Contains("does not fit the packing length of 5", e.Message);
    }

    [Fact]
    public void PackingKeepsMasksOfEncodedExamples()
    {
        var tok = new CharTokenizer(addsBos: false);
        var examples = new[] { ("ab", "c"), ("d", "ef"), ("g", "h") }
            .Select((p, i) => new SftExample(ChatContent.FromText(p.Item1), ChatContent.FromText(p.Item2), new RecordSource("d", i + 1))).ToArray();
        var seqs = SftEncoder.Encode(examples, tok, ChatTemplate.ChatMl).Records;
        var rows = SftPacking.Pack(seqs, 16);
        var row = Assert.Single(rows);
        Assert.Equal("abc<eos>def<eos>gh<eos>", tok.Decode(row.Ids));
        Assert.Equal("c<eos>ef<eos>h<eos>", tok.Decode(row.Labels.Where(l => l != X).ToArray()));
    }
}

public class TrainEvalSplitTests
{
    [Theory]
    [InlineData(100, 0.05, 5)]
    [InlineData(100, 0.07, 7)]
    [InlineData(10, 0.05, 1)]
    [InlineData(2, 0.05, 1)]
    [InlineData(2, 0.9, 1)]
    [InlineData(1, 0.5, 0)]
    [InlineData(50, 0.0, 0)]
    [InlineData(101, 0.1, 11)]
    public void EvalCountRule(int n, double fraction, int expected) => Assert.Equal(expected, TrainEvalSplit.EvalCount(n, fraction));

    [Fact]
    public void SplitIsDeterministicDisjointAndComplete()
    {
        var items = Enumerable.Range(0, 200).ToArray();
        var (train, eval) = TrainEvalSplit.Split(items, 0.05, seed: 11);
        Assert.Equal(10, eval.Count);
        Assert.Equal(items, train.Concat(eval).Order());
        Assert.Equal(eval.Order(), eval); // input order kept
        Assert.Equal(eval, TrainEvalSplit.Split(items, 0.05, seed: 11).Eval);
        Assert.NotEqual(eval, TrainEvalSplit.Split(items, 0.05, seed: 12).Eval);
    }

    [Theory]
    [InlineData(1.0)]
    [InlineData(-0.1)]
    [InlineData(double.NaN)]
    public void BadFractionIsAUserError(double fraction)
    {
        var e = Assert.Throws<UserInputException>(() => TrainEvalSplit.Split(new[] { 1, 2 }, fraction, 0));
        Assert.Contains("eval split must be a fraction in [0, 1)", e.Message);
    }

    [Fact]
    public void PreferenceSplitKeepsTheRankingsPairsTogether()
    {
        var pairs = new List<PreferencePair>();
        for (int line = 1; line <= 20; line++)
            for (int k = 0; k < 3; k++)
                pairs.Add(new PreferencePair(ChatContent.FromText("p"), ChatContent.FromText("a"), ChatContent.FromText("b"), 0, 1, new RecordSource("r.jsonl", line)));
        var (train, eval) = TrainEvalSplit.SplitPreferences(pairs, 0.1, seed: 1);
        Assert.Equal(6, eval.Count); // 2 of 20 rankings, 3 pairs each
        Assert.Empty(train.Select(p => p.Source.Line).Intersect(eval.Select(p => p.Source.Line)));
    }
}
