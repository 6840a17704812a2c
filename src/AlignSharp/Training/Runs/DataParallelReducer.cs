using System.Diagnostics;
using AlignSharp.Distributed;
using AlignSharp.Engine;

namespace AlignSharp.Training.Runs;

/// <summary>
/// The data-parallel <see cref="IGradientReducer"/>: gradients are summed over the ranks by all-reduce, in buckets of
/// about <see cref="BucketMb"/> MiB. Each parameter's gradient lives in its bucket's flat buffer (<see cref="Tensor.PlaceGrad"/>),
/// so a bucket is reduced in place, with no copy. Parameters are assigned to buckets in reverse registration order, so
/// that the last layers, whose gradients the backward pass finishes first, go first.
/// <para>Overlapped (bucket size &gt; 0): during the backward pass of a step's last micro-batch, a bucket whose every
/// gradient is final (<see cref="Autograd.OnGradientReady"/>) starts a non-blocking all-reduce while the backward goes
/// on; buckets start strictly in bucket order, so every rank issues the same reductions in the same order whatever the
/// timing. Open MPI progresses them inside MPI calls, so each gradient-ready event also tests the outstanding ones.
/// <see cref="SumGradients"/> (before clipping) starts what is left and waits for all. With bucket size 0: one
/// blocking all-reduce after the backward pass (in chunks of at most 2^28 floats, MPI's 32-bit counts).</para>
/// <para>The losses are already scaled by 1 / (global weight), so the sum is the global average. Every rank sums each
/// bucket in the same way, so ranks that start identical stay bitwise identical.</para>
/// </summary>
public sealed class DataParallelReducer : IGradientReducer
{
    /// <summary>The default bucket size: PyTorch DDP's 25 MB.</summary>
    public const double DefaultBucketMb = 25;

    /// <summary>Floats in one MPI call at most (MPI counts are 32-bit); also the bucket size of the blocking mode.</summary>
    public const int MaxBucketFloats = 1 << 28;

    private readonly double[] _one = new double[1];
    private Tensor[] _parameters = [];
    private Bucket[] _buckets = [];
    private readonly Dictionary<Tensor, int> _index = new(ReferenceEqualityComparer.Instance);
    private int[] _bucketOf = [];
    /// <summary>Buckets before this one have started their all-reduce; those from _firstOutstanding on may still run.</summary>
    private int _nextToStart, _firstOutstanding;
    /// <summary>True during the step's last backward pass, whose gradient-ready events start buckets.</summary>
    private bool _armed;

    public DataParallelReducer(ICommunicator communicator, double bucketMb = DefaultBucketMb)
    {
        if (!(bucketMb >= 0 && bucketMb <= MaxBucketFloats * 4.0 / (1 << 20)))
            throw new ArgumentOutOfRangeException(nameof(bucketMb), $"The all-reduce bucket size must be in [0, {MaxBucketFloats * 4 >> 20}] MiB.");
        Communicator = communicator;
        BucketMb = bucketMb;
    }

    public ICommunicator Communicator { get; }

    /// <summary>Bucket size in MiB; 0 = one blocking all-reduce after the backward pass.</summary>
    public double BucketMb { get; }

    /// <summary>Whether buckets are reduced during the backward pass.</summary>
    public bool Overlaps => BucketMb > 0;

    /// <summary>Bytes sent into all-reduce so far (gradients and scalars), for the metrics.</summary>
    public long BytesReduced { get; private set; }

    /// <summary>Seconds spent all-reducing gradients so far (metrics dp/allreduce_*). Blocking: the whole all-reduce, timed
    /// after a barrier so that waiting for a slower rank is not counted; gradient bytes / these seconds is the bandwidth
    /// reached. Overlapped: only the exposed part, from the end of the backward pass until every bucket has arrived
    /// (waiting for a slower rank included).</summary>
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

    /// <summary>
    /// Parameter indices per bucket: walking the parameters from the last registered to the first, each joins the
    /// current bucket while it stays within <paramref name="capFloats"/>, else starts the next one; a parameter larger
    /// than the cap has a bucket of its own. Never splits a parameter (its gradient stays contiguous).
    /// </summary>
    public static List<int[]> AssignBuckets(IReadOnlyList<int> lengths, long capFloats)
    {
        if (capFloats < 1) throw new ArgumentOutOfRangeException(nameof(capFloats), "A bucket holds at least one float.");
        var buckets = new List<int[]>();
        var current = new List<int>();
        long used = 0;
        for (int i = lengths.Count - 1; i >= 0; i--)
        {
            if (current.Count > 0 && used + lengths[i] > capFloats)
            {
                buckets.Add([.. current]);
                current.Clear();
                used = 0;
            }
            current.Add(i);
            used += lengths[i];
        }
        if (current.Count > 0) buckets.Add([.. current]);
        return buckets;
    }

    /// <summary>The bucket capacity in floats: the bucket size, or the largest MPI call for the blocking mode.</summary>
    private long CapFloats => Overlaps ? Math.Max(1, (long)(BucketMb * (1 << 20) / sizeof(float))) : MaxBucketFloats;

    /// <summary>Builds the buckets on first use and places every parameter's gradient in its bucket's buffer.</summary>
    private void Prepare(IReadOnlyList<Tensor> parameters)
    {
        if (_buckets.Length > 0 || parameters.Count == 0)
        {
            if (parameters.Count != _parameters.Length || parameters.Any(p => !_index.ContainsKey(p)))
                throw new InvalidOperationException("DataParallelReducer: the parameters changed between steps.");
            return;
        }
        _parameters = [.. parameters];
        for (int i = 0; i < _parameters.Length; i++) _index[_parameters[i]] = i;
        var groups = AssignBuckets([.. _parameters.Select(p => p.Length)], CapFloats);
        _buckets = new Bucket[groups.Count];
        _bucketOf = new int[_parameters.Length];
        for (int b = 0; b < groups.Count; b++)
        {
            var members = groups[b];
            long floats = members.Sum(i => (long)_parameters[i].Length);
            if (floats > int.MaxValue) throw new InvalidOperationException($"A parameter of {floats} floats is too large for one gradient buffer.");
            var buffer = GC.AllocateArray<float>((int)floats, pinned: true);   // reduced in place by MPI
            int at = 0;
            foreach (int i in members)
            {
                _bucketOf[i] = b;
                _parameters[i].PlaceGrad(buffer, at);
                at += _parameters[i].Length;
            }
            _buckets[b] = new Bucket(members, buffer);
        }
    }

    /// <summary>For the step's last backward pass: the gradient-ready hook, or null when reducing after the pass.</summary>
    public Action<Tensor>? BeginLastBackward(IReadOnlyList<Tensor> parameters)
    {
        if (Communicator.Size == 1 || !Overlaps) return null;
        Prepare(parameters);
        foreach (var bucket in _buckets) bucket.Waiting = bucket.Members.Length;
        _armed = true;
        return GradientReady;
    }

    private void GradientReady(Tensor leaf)
    {
        if (!_armed) return;
        if (_index.TryGetValue(leaf, out int i) && --_buckets[_bucketOf[i]].Waiting == 0)
            while (_nextToStart < _buckets.Length && _buckets[_nextToStart].Waiting == 0) Start(_buckets[_nextToStart++]);
        // Open MPI moves non-blocking collectives on only inside MPI calls: test the oldest outstanding ones.
        while (_firstOutstanding < _nextToStart && _buckets[_firstOutstanding].Request!.Test()) _firstOutstanding++;
    }

    /// <summary>Notes which gradients a backward reached on this rank; one it did not reach counts as zeros.</summary>
    private void Seal(Bucket bucket)
    {
        for (int k = 0; k < bucket.Members.Length; k++)
        {
            var p = _parameters[bucket.Members[k]];
            bucket.Reached[k] = p.Grad != null ? 1 : 0;
            p.GradForAccumulate();   // made zeroed in place when absent
        }
    }

    private void Start(Bucket bucket)
    {
        Seal(bucket);
        bucket.Request = Communicator.StartAllReduceSum(bucket.Buffer);
        BytesReduced += (long)bucket.Buffer.Length * sizeof(float);
    }

    public void SumGradients(IReadOnlyList<Tensor> parameters)
    {
        if (Communicator.Size == 1) return;
        Prepare(parameters);
        if (_parameters.Length == 0) return;
        long started;
        if (Overlaps)
        {
            // Every rank starts the buckets in bucket order, whether or not its backward started some (a non-blocking
            // collective never matches a blocking one, so this mode never mixes them).
            started = Stopwatch.GetTimestamp();
            while (_nextToStart < _buckets.Length) Start(_buckets[_nextToStart++]);
            foreach (var bucket in _buckets) bucket.Request!.Wait();
        }
        else
        {
            Communicator.Barrier();
            started = Stopwatch.GetTimestamp();
            foreach (var bucket in _buckets)
            {
                Seal(bucket);
                Communicator.AllReduceSum(bucket.Buffer);
                BytesReduced += (long)bucket.Buffer.Length * sizeof(float);
            }
        }
        GradientSeconds += Stopwatch.GetElapsedTime(started).TotalSeconds;
        _armed = false;
        _nextToStart = 0;
        _firstOutstanding = 0;

        // A parameter no rank's micro-batches reached keeps no gradient, as in a single process (AdamW skips it).
        var reached = new double[_parameters.Length];
        foreach (var bucket in _buckets)
        {
            for (int k = 0; k < bucket.Members.Length; k++) reached[bucket.Members[k]] = bucket.Reached[k];
            bucket.Request = null;
        }
        Communicator.AllReduceMax(reached);
        for (int i = 0; i < reached.Length; i++)
            if (reached[i] == 0) _parameters[i].ClearGrad();
    }

    private sealed class Bucket(int[] members, float[] buffer)
    {
        public readonly int[] Members = members;
        public readonly float[] Buffer = buffer;
        public readonly double[] Reached = new double[members.Length];
        public int Waiting;
        public IReduction? Request;
    }
}
