namespace AlignSharp.Engine.Kernels;

/// <summary>A unit of parallel work over the half-open index range [start, end).</summary>
public interface IRangeWork
{
    void Run(int start, int end);
}

/// <summary>
/// Deterministic fork-join over persistent worker threads: thread i always takes the i-th fixed share of
/// the range, so any reduction whose shares are combined in index order gives the same result for
/// the same thread count. Work below <c>minPerThread</c> items per thread runs inline on the caller,
/// so small tensors never pay for a wake-up.
/// </summary>
public static class ParallelFor
{
    private static int _threads = Math.Max(1, Environment.ProcessorCount);
    private static Worker[] _workers = [];
    private static readonly object Gate = new();
    [ThreadStatic] private static bool _insideWorker;
    [ThreadStatic] private static int t_threads; // a UseThreads scope on this thread; 0 = none

    /// <summary>
    /// Threads used by kernels called from this thread: the innermost <see cref="UseThreads"/> scope on it, else the
    /// process-wide default (the number of cores). Use <see cref="UseThreads"/> to change it (1 for bitwise
    /// determinism of reductions); the setter changes the default for every thread of the process at once, which
    /// races with whatever else runs in it (tests in parallel, a second run).
    /// </summary>
    public static int Threads
    {
        get => t_threads > 0 ? t_threads : _threads;
        [Obsolete("Changes the thread count of every thread in the process; scope it with ParallelFor.UseThreads(n) instead.")]
        set => _threads = Math.Clamp(value, 1, 256);
    }

    /// <summary>
    /// Kernels called from the calling thread use <paramref name="threads"/> threads until the scope is disposed;
    /// other threads (tests running in parallel, other sessions' work) keep their own count. 0 (an option left at its
    /// default) keeps the calling thread's current count, so callers can scope an optional setting unconditionally.
    /// </summary>
    public static ThreadCountScope UseThreads(int threads)
    {
        var scope = new ThreadCountScope(t_threads);
        if (threads != 0) t_threads = Math.Clamp(threads, 1, 256);
        return scope;
    }

    /// <summary>Restores the calling thread's previous thread count when disposed (see <see cref="UseThreads"/>).</summary>
    public readonly struct ThreadCountScope : IDisposable
    {
        private readonly int _previous;
        internal ThreadCountScope(int previous) => _previous = previous;
        public void Dispose() => t_threads = _previous;
    }

    /// <summary>How many shares a range of <paramref name="count"/> items is split into.</summary>
    public static int SharesFor(long count, long minPerThread)
    {
        int threads = Threads;
        if (_insideWorker || threads == 1) return 1;
        long shares = Math.Min(threads, count / Math.Max(1, minPerThread));
        return (int)Math.Max(1, shares);
    }

    public static void Run<T>(int count, int minPerThread, T work) where T : IRangeWork
    {
        if (count <= 0) return;
        int shares = SharesFor(count, minPerThread);
        if (shares == 1) { work.Run(0, count); return; }
        RunShares(shares, new Splitter<T>(work, count, shares));
    }

    public static void For(int count, int minPerThread, Action<int, int> body)
        => Run(count, minPerThread, new ActionWork(body));

    private readonly struct ActionWork(Action<int, int> body) : IRangeWork
    {
        public void Run(int start, int end) => body(start, end);
    }

    private sealed class Splitter<T>(T work, int count, int shares) : IShareWork where T : IRangeWork
    {
        public void RunShare(int share)
        {
            int start = (int)((long)count * share / shares);
            int end = (int)((long)count * (share + 1) / shares);
            if (end > start) work.Run(start, end);
        }
    }

    /// <summary>Runs share 0 on the caller and shares 1..n-1 on workers; rethrows the first failure.</summary>
    internal static void RunShares(int shares, IShareWork work)
    {
        lock (Gate)
        {
            EnsureWorkers(shares - 1);
            _failure = null;
            Volatile.Write(ref _pending, shares - 1);
            int simdScope = Simd.ThreadScope;   // the caller's forced lane width holds on every share
            for (int i = 1; i < shares; i++) _workers[i - 1].Post(work, i, simdScope);
            try
            {
                _insideWorker = true;
                work.RunShare(0);
            }
            finally
            {
                _insideWorker = false;
                // The workers finish within microseconds of us in a balanced split: spin, yielding now and then.
                var spin = new SpinWait();
                while (Volatile.Read(ref _pending) != 0) spin.SpinOnce(sleep1Threshold: -1);
            }
            if (_failure != null) throw new AggregateException("A parallel kernel failed.", _failure);
        }
    }

    private static int _pending;
    private static Exception? _failure;

    private static void EnsureWorkers(int n)
    {
        if (_workers.Length >= n) return;
        var grown = new Worker[n];
        Array.Copy(_workers, grown, _workers.Length);
        for (int i = _workers.Length; i < n; i++) grown[i] = new Worker(i + 1);
        _workers = grown;
    }

    internal interface IShareWork
    {
        void RunShare(int share);
    }

    /// <summary>
    /// A persistent worker. After a share it spins briefly for the next one (ops come back to back in a training
    /// step), then sleeps on a semaphore; <see cref="Post"/> only signals the semaphore when the worker sleeps.
    /// </summary>
    private sealed class Worker
    {
        private static readonly long SpinTicks = System.Diagnostics.Stopwatch.Frequency / 5000; // 200 µs
        private readonly SemaphoreSlim _signal = new(0);
        private IShareWork? _work;
        private int _share;
        private int _simdScope;
        private int _sleeping;

        public Worker(int id)
        {
            var t = new Thread(Loop) { IsBackground = true, Name = $"alignsharp-worker-{id}" };
            t.Start();
        }

        public void Post(IShareWork work, int share, int simdScope)
        {
            _share = share;
            _simdScope = simdScope;
            Volatile.Write(ref _work, work);
            if (Interlocked.Exchange(ref _sleeping, 0) == 1) _signal.Release();
        }

        private IShareWork WaitForWork()
        {
            long until = System.Diagnostics.Stopwatch.GetTimestamp() + SpinTicks;
            while (true)
            {
                var w = Volatile.Read(ref _work);
                if (w != null) return w;
                if (System.Diagnostics.Stopwatch.GetTimestamp() < until) { Thread.SpinWait(20); continue; }
                // A full fence (not a plain release store): the read of _work below must not be reordered before
                // this write, or a Post in between would see us awake and never signal (lost wake-up).
                Interlocked.Exchange(ref _sleeping, 1);
                w = Volatile.Read(ref _work);
                if (w != null)
                {
                    // Work arrived while we were going to sleep: if Post already took our flag it also released
                    // the semaphore, which we must consume.
                    if (Interlocked.Exchange(ref _sleeping, 0) == 0) _signal.Wait();
                    return w;
                }
                _signal.Wait();
                until = System.Diagnostics.Stopwatch.GetTimestamp() + SpinTicks;
            }
        }

        private void Loop()
        {
            _insideWorker = true;
            while (true)
            {
                var work = WaitForWork();
                Simd.ThreadScope = _simdScope;
                try { work.RunShare(_share); }
                catch (Exception e) { Interlocked.CompareExchange(ref _failure, e, null); }
                finally
                {
                    Volatile.Write(ref _work, null);
                    Interlocked.Decrement(ref _pending);
                }
            }
        }
    }
}
