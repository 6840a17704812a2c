namespace AlignSharp.Distributed;

/// <summary>
/// The collective operations data-parallel training uses. Every rank calls the same operations in the same order
/// (MPI's rule); the reductions are deterministic for a fixed number of ranks, so ranks that start identical stay
/// bitwise identical.
/// </summary>
public interface ICommunicator
{
    int Rank { get; }
    int Size { get; }
    bool IsRoot => Rank == 0;

    /// <summary>Sums <paramref name="values"/> element-wise over all ranks, in place on every rank.</summary>
    void AllReduceSum(Span<float> values);
    void AllReduceSum(Span<double> values);
    /// <summary>
    /// Starts summing <paramref name="values"/> element-wise over all ranks, in place, and returns at once; the values
    /// must not be read or written until the request completes. Like every collective, all ranks start the same
    /// reductions in the same order. Progress happens inside calls to the communicator (<see cref="IReduction.Test"/>).
    /// </summary>
    IReduction StartAllReduceSum(Memory<float> values);
    /// <summary>Element-wise maximum over all ranks, in place on every rank.</summary>
    void AllReduceMax(Span<double> values);
    /// <summary>Copies the root's <paramref name="data"/> to every rank (lengths must already agree).</summary>
    void Broadcast(Span<byte> data, int root = 0);
    /// <summary>Every rank's <paramref name="local"/> (all the same length), concatenated in rank order, on every rank.</summary>
    void AllGather(ReadOnlySpan<double> local, Span<double> all);
    void Barrier();
    /// <summary>Ends the whole job at once (every rank), with this exit code.</summary>
    void Abort(int exitCode);
}

/// <summary>A reduction started by <see cref="ICommunicator.StartAllReduceSum"/>.</summary>
public interface IReduction
{
    /// <summary>Lets the reduction progress; true once it has completed (then its values are the sums).</summary>
    bool Test();
    /// <summary>Blocks until the reduction has completed.</summary>
    void Wait();
}

/// <summary>A reduction that completed when it started (one process).</summary>
public sealed class CompletedReduction : IReduction
{
    public static readonly CompletedReduction Instance = new();
    public bool Test() => true;
    public void Wait() { }
}

/// <summary>One process: every collective is the identity.</summary>
public sealed class SingleProcess : ICommunicator
{
    public static readonly SingleProcess Instance = new();
    public int Rank => 0;
    public int Size => 1;
    public void AllReduceSum(Span<float> values) { }
    public void AllReduceSum(Span<double> values) { }
    public IReduction StartAllReduceSum(Memory<float> values) => CompletedReduction.Instance;
    public void AllReduceMax(Span<double> values) { }
    public void Broadcast(Span<byte> data, int root = 0) { }
    public void AllGather(ReadOnlySpan<double> local, Span<double> all) => local.CopyTo(all);
    public void Barrier() { }
    public void Abort(int exitCode) => Environment.Exit(exitCode);
}

/// <summary>Reductions of a few scalars at once (metrics, statistics): one all-reduce each call.</summary>
public static class CommunicatorExtensions
{
    /// <summary>Each value summed over all ranks (a new array; the input is left as it was).</summary>
    public static double[] Sum(this ICommunicator communicator, params double[] local)
    {
        var values = (double[])local.Clone();
        communicator.AllReduceSum(values);
        return values;
    }

    /// <summary>Each value's maximum over all ranks (a new array).</summary>
    public static double[] Max(this ICommunicator communicator, params double[] local)
    {
        var values = (double[])local.Clone();
        communicator.AllReduceMax(values);
        return values;
    }
}
