using AlignSharp.Distributed;
using AlignSharp.Engine;

namespace AlignSharp.Training.Runs;

/// <summary>
/// The data-parallel <see cref="IGradientReducer"/>: gradients are summed over the ranks by all-reduce over one flat
/// buffer, in buckets of <see cref="BucketFloats"/> so that a large model needs no second full-size copy. The losses are
/// already scaled by 1 / (global weight), so the sum is the global average. MPI's sum over a fixed number of ranks is
/// the same on every rank, so ranks that start identical stay bitwise identical.
/// </summary>
public sealed class DataParallelReducer(ICommunicator communicator) : IGradientReducer
{
    /// <summary>Floats per all-reduce: 16 MiB buckets keep the extra memory small and the messages large.</summary>
    public const int BucketFloats = 4 << 20;

    private float[] _bucket = [];
    private readonly double[] _one = new double[1];

    public ICommunicator Communicator { get; } = communicator;

    /// <summary>Bytes sent into all-reduce so far (gradients and scalars), for the metrics.</summary>
    public long BytesReduced { get; private set; }

    /// <summary>Seconds spent all-reducing gradients so far, timed after a barrier so that waiting for a slower rank is
    /// not counted: gradient bytes / these seconds is the all-reduce bandwidth reached (metrics dp/allreduce_*).</summary>
    public double GradientSeconds { get; private set; }

    /// <summary>The counters now, to measure a logging window from.</summary>
    public (long Bytes, double Seconds) Snapshot() => (BytesReduced, GradientSeconds);

    /// <summary>Adds dp/allreduce_bytes and dp/allreduce_s, per optimizer step over the <paramref name="steps"/> steps
    /// since <paramref name="since"/> (a <see cref="Snapshot"/>); nothing with one rank.</summary>
    public void AddMetrics(IDictionary<string, double> metrics, (long Bytes, double Seconds) since, int steps)
    {
        if (Communicator.Size == 1 || steps < 1) return;
        metrics["dp/allreduce_bytes"] = (double)(BytesReduced - since.Bytes) / steps;
        metrics["dp/allreduce_s"] = (GradientSeconds - since.Seconds) / steps;
    }

    public double Sum(double local)
    {
        _one[0] = local;
        Communicator.AllReduceSum(_one);
        BytesReduced += sizeof(double);
        return _one[0];
    }

    public void SumGradients(IReadOnlyList<Tensor> parameters)
    {
        if (Communicator.Size == 1) return;
        // A parameter no rank's micro-batches reached keeps no gradient, as in a single process (AdamW skips it).
        var reached = new double[parameters.Count];
        for (int i = 0; i < reached.Length; i++) reached[i] = parameters[i].Grad != null ? 1 : 0;
        Communicator.AllReduceMax(reached);
        long total = 0;
        foreach (var p in parameters) total += p.Length;
        if (_bucket.Length == 0) _bucket = new float[(int)Math.Min(BucketFloats, Math.Max(1, total))];
        Communicator.Barrier();
        long started = System.Diagnostics.Stopwatch.GetTimestamp();

        // Pack consecutive gradients into the bucket, reduce it when full, and scatter the sums back.
        var pending = new List<(Tensor Parameter, int From, int At, int Count)>();
        int used = 0;
        for (int i = 0; i < parameters.Count; i++)
        {
            if (reached[i] == 0) continue;
            var p = parameters[i];
            for (int from = 0; from < p.Length;)
            {
                int count = Math.Min(p.Length - from, _bucket.Length - used);
                var grad = p.Grad;
                if (grad == null) _bucket.AsSpan(used, count).Clear();
                else grad.Span.Slice(from, count).CopyTo(_bucket.AsSpan(used, count));
                pending.Add((p, from, used, count));
                used += count;
                from += count;
                if (used == _bucket.Length) Flush(pending, ref used);
            }
        }
        if (used > 0) Flush(pending, ref used);
        GradientSeconds += System.Diagnostics.Stopwatch.GetElapsedTime(started).TotalSeconds;
    }

    private void Flush(List<(Tensor Parameter, int From, int At, int Count)> pending, ref int used)
    {
        Communicator.AllReduceSum(_bucket.AsSpan(0, used));
        BytesReduced += (long)used * sizeof(float);
        foreach (var (p, from, at, count) in pending)
            _bucket.AsSpan(at, count).CopyTo(p.GradForAccumulate().Slice(from, count));
        pending.Clear();
        used = 0;
    }
}
