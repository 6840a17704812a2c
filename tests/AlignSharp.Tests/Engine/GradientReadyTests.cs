using AlignSharp.Distributed;
using AlignSharp.Engine;
using AlignSharp.Models;
using AlignSharp.Models.Lora;
using AlignSharp.Tests.Models;
using AlignSharp.Training.Runs;

namespace AlignSharp.Tests.Engine;

/// <summary>
/// <see cref="Autograd.OnGradientReady"/> fires once per leaf per backward pass, after the last contribution to its
/// gradient (checked by comparing the gradient at the event with the gradient after the pass, bit for bit), in tied,
/// untied, gradient-checkpointed, chunked-LM-head and LoRA models; and <see cref="DataParallelReducer"/> assigns buckets
/// in reverse registration order and starts them during the last micro-batch's backward pass only.
/// </summary>
public sealed class GradientReadyTests
{
    private const int Batch = 2, Seq = 9;

    /// <summary>One backward pass of a next-token loss through the chunked LM-head scorer (several checkpointed chunks,
    /// each reading the head), with the hook recording every event: per leaf, how often it fired and its gradient then.</summary>
    private static Dictionary<Tensor, (int Count, float[] Grad)> Backward(TransformerModel model, bool checkpointing)
    {
        model.GradientCheckpointing = checkpointing;
        var events = new Dictionary<Tensor, (int Count, float[] Grad)>(ReferenceEqualityComparer.Instance);
        using var scope = TensorScope.Begin();
        int v = model.Config.VocabSize;
        var ids = Enumerable.Range(0, Batch * Seq).Select(i => (i * 7 + 3) % v).ToArray();
        var hidden = model.Hidden(ids, Batch, Seq);
        var rows = Ops.Reshape(hidden, Batch * Seq, -1);
        var targets = Enumerable.Range(0, Batch * Seq).Select(i => (i * 5 + 1) % v).ToArray();
        var (logProbs, _) = TokenScoring.LogProbs(model, rows, targets, chunkRows: 5);
        var loss = Ops.MulScalar(Ops.Sum(logProbs), -1f / targets.Length);
        using (Autograd.OnGradientReady(leaf =>
               {
                   var (count, _) = events.GetValueOrDefault(leaf);
                   events[leaf] = (count + 1, leaf.Grad?.ToArray() ?? []);
               }))
            loss.Backward();
        model.GradientCheckpointing = false;
        return events;
    }

    private static void AssertFiredOnceWithFinalGradients(IReadOnlyList<(string Name, Tensor P)> trainable, Dictionary<Tensor, (int Count, float[] Grad)> events)
    {
        foreach (var (name, p) in trainable)
        {
            Assert.True(p.Grad != null, $"{name}: no gradient");
            Assert.True(events.TryGetValue(p, out var e), $"{name}: never reported ready");
            Assert.True(e.Count == 1, $"{name}: reported ready {e.Count} times");
            Assert.True(e.Grad.AsSpan().SequenceEqual(p.Grad!.ToArray()), $"{name}: the gradient changed after it was reported ready");
        }
        Assert.Equal(trainable.Count, events.Keys.Count(k => trainable.Any(t => ReferenceEquals(t.P, k))));
    }

    [Theory]
    [InlineData("gpt2-hub", false)]          // tied embedding: read by the lookup and by every head chunk
    [InlineData("gpt2-hub", true)]
    [InlineData("qwen2-tied-bias", true)]
    [InlineData("llama-gqa", false)]         // untied head: read only inside the checkpointed chunks
    [InlineData("llama-gqa", true)]
    public void EveryParameterIsReportedOnceAfterItsLastContributionFullParameter(string fixture, bool checkpointing)
    {
        var model = ModelIO.Load(Fixtures.Dir(fixture));
        var trainable = model.NamedParameters.Select(p => (p.Name, p.Parameter)).ToList();
        foreach (var (_, p) in trainable) p.RequiresGrad = true;
        // GPT-2's positional embedding is one parameter: a single backward reaches it whatever the length.
        var events = Backward(model, checkpointing);
        AssertFiredOnceWithFinalGradients(trainable, events);
    }

    [Theory]
    [InlineData("llama-gqa", false)]
    [InlineData("llama-gqa", true)]
    [InlineData("gpt2-hub", true)]
    public void EveryAdapterWeightIsReportedOnceAndFrozenWeightsNever(string fixture, bool checkpointing)
    {
        var model = ModelIO.Load(Fixtures.Dir(fixture));
        var adapter = LoraAdapter.Create(model, new LoraConfig(4, 8, Dropout: 0.2, TargetModules: [LoraConfig.AllLinear]), seed: 1);
        var rng = new Random(9);
        foreach (var m in adapter.Modules) { var s = m.B.Span; for (int i = 0; i < s.Length; i++) s[i] = (float)(rng.NextDouble() - 0.5) * 0.2f; }
        foreach (var (_, p) in model.NamedParameters) p.RequiresGrad = false;
        foreach (var (_, p) in adapter.NamedParameters) p.RequiresGrad = true;
        model.Adapter = adapter;
        adapter.DropoutRng = new Random(3);
        var trainable = adapter.NamedParameters.Select(p => (p.Name, p.Parameter)).ToList();
        var events = Backward(model, checkpointing);
        AssertFiredOnceWithFinalGradients(trainable, events);
        Assert.All(model.NamedParameters, p => Assert.False(events.ContainsKey(p.Parameter), $"{p.Name} is frozen but was reported"));
    }

    [Fact]
    public void ALeafUsedTwiceInOneOpAndAScalarLeafRootFireOnce()
    {
        var x = Tensor.Parameter([3], 0.5f, "x");
        var y = Tensor.Parameter([3], 2f, "y");
        var fired = new List<string?>();
        using (Autograd.OnGradientReady(t => fired.Add(t.Name)))
        {
            Ops.Sum(Ops.Add(Ops.Mul(x, x), y)).Backward();
            var s = Tensor.Parameter([], 1f, "s");
            s.Backward();
        }
        Assert.Equal(["s", "x", "y"], fired.Order());
        // Outside the scope nothing is reported.
        Ops.Sum(x).Backward();
        Assert.Equal(3, fired.Count);
    }

    [Fact]
    public void BucketsFollowReverseRegistrationOrderAndKeepEachParameterWhole()
    {
        // Lengths in registration order; cap 10 floats.
        var buckets = DataParallelReducer.AssignBuckets([4, 3, 12, 2, 5, 5, 1], 10);
        Assert.Equal(
            [[6, 5], [4, 3], [2], [1, 0]],
            buckets.Select(b => b.ToArray()).ToArray());
        Assert.Single(DataParallelReducer.AssignBuckets([4, 3, 12], DataParallelReducer.MaxBucketFloats));
        Assert.Empty(DataParallelReducer.AssignBuckets([], 10));
        Assert.Throws<ArgumentOutOfRangeException>(() => DataParallelReducer.AssignBuckets([1], 0));
    }

    /// <summary>Two ranks whose data are the same: a sum doubles each value. Records when reductions start.</summary>
    private sealed class MirrorCommunicator : ICommunicator
    {
        public readonly List<int> Started = [];
        public int Rank => 0;
        public int Size => 2;
        public void AllReduceSum(Span<float> values) { foreach (ref var v in values) v *= 2; }
        public void AllReduceSum(Span<double> values) { foreach (ref var v in values) v *= 2; }
        public void AllReduceMax(Span<double> values) { }
        public IReduction StartAllReduceSum(Memory<float> values)
        {
            Started.Add(values.Length);
            AllReduceSum(values.Span);
            return CompletedReduction.Instance;
        }
        public void Broadcast(Span<byte> data, int root = 0) { }
        public void AllGather(ReadOnlySpan<double> local, Span<double> all) { local.CopyTo(all); local.CopyTo(all[local.Length..]); }
        public void Barrier() { }
        public void Abort(int exitCode) => throw new InvalidOperationException("abort");
    }

    /// <summary>Two optimizer steps of 2 micro-batches each on a tiny model: (parameters after, buckets started during
    /// the first micro-batch's backward, during the last one's, in total).</summary>
    private static (float[][] Weights, List<(int First, int Last, int Total)> Starts) TrainTwoSteps(IGradientReducer? reducer, MirrorCommunicator? mirror)
    {
        var model = ModelIO.Load(Fixtures.Dir("llama-gqa"));
        var trainable = model.NamedParameters.Select(p => (p.Name, p.Parameter)).ToList();
        foreach (var (_, p) in trainable) p.RequiresGrad = true;
        var options = new AlignSharp.Training.Sft.SftOptions { Out = "unused", Model = "unused", Data = "unused", LearningRate = 1e-2f, LrScheduler = "constant" };
        var step = new OptimizerStep(trainable, options, totalUpdates: 2, reducer);
        var starts = new List<(int, int, int)>();
        int v = model.Config.VocabSize;
        for (int s = 0; s < 2; s++)
        {
            // With the mirror, the other rank's weight is the same: the global weight doubles, the sum restores it.
            step.Begin(2 * Batch * Seq);
            int first = 0, last = 0;
            for (int a = 0; a < 2; a++)
            {
                using var scope = TensorScope.Begin();
                var ids = Enumerable.Range(0, Batch * Seq).Select(i => (i * 7 + 3 * a + s) % v).ToArray();
                var targets = Enumerable.Range(0, Batch * Seq).Select(i => (i * 5 + a + 1) % v).ToArray();
                var logits = Ops.Reshape(model.Forward(ids, Batch, Seq), Batch * Seq, -1);
                int before = mirror?.Started.Count ?? 0;
                step.Accumulate(Ops.MulScalar(Ops.CrossEntropy(logits, targets), Batch * Seq * step.Scale), last: a == 1);
                if (a == 0) first = (mirror?.Started.Count ?? 0) - before;
                else last = (mirror?.Started.Count ?? 0) - before;
            }
            Assert.True(step.Finish().Applied);
            starts.Add((first, last, mirror?.Started.Count ?? 0));
            mirror?.Started.Clear();
        }
        return ([.. trainable.Select(t => t.Parameter.ToArray())], starts);
    }

    [Fact]
    public void OverlappedReductionStartsBucketsDuringTheLastMicroBatchOnlyAndEqualsOneProcess()
    {
        var single = TrainTwoSteps(null, null);
        // Buckets of 1 KiB: many, so some complete while the backward pass still runs.
        var mirror = new MirrorCommunicator();
        var overlapped = TrainTwoSteps(new DataParallelReducer(mirror, bucketMb: 1.0 / 1024), mirror);
        var blockingMirror = new MirrorCommunicator();
        var blocking = TrainTwoSteps(new DataParallelReducer(blockingMirror, bucketMb: 0), blockingMirror);
        foreach (var (first, last, total) in overlapped.Starts)
        {
            Assert.Equal(0, first);      // accumulation: the first micro-batch's gradients are not final
            Assert.True(total > 1, $"{total} buckets");
            Assert.Equal(total, last);   // every bucket started within the last backward pass, as it completed
        }
        Assert.All(blocking.Starts, s => Assert.Equal((0, 0, 0), s));   // blocking: no non-blocking reduction at all
        // Doubling and halving by powers of two is exact: the same weights as one process, bit for bit.
        for (int i = 0; i < single.Weights.Length; i++)
        {
            Assert.True(single.Weights[i].AsSpan().SequenceEqual(overlapped.Weights[i]), $"parameter {i}: overlapped differs from one process");
            Assert.True(single.Weights[i].AsSpan().SequenceEqual(blocking.Weights[i]), $"parameter {i}: blocking differs from one process");
        }
    }
}
