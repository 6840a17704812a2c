using System.Runtime.Intrinsics.X86;

namespace AlignSharp.Engine.Kernels;

/// <summary>A unit of parallel work over the half-open index range [start, end).</summary>
public interface IRangeWork
{
    void Run(int start, int end);
}

/// <summary>
/// Work that <see cref="ParallelFor.RunBalanced"/> hands out in chunks: [start, end) now, and the same thread goes on
/// with the items up to <c>streamEnd</c> (≥ end) unless another thread takes them first, so a kernel that streams
/// memory may prefetch that far.
/// </summary>
public interface IChunkWork
{
    void Run(int start, int end, int streamEnd);
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

    /// <summary>Whether the calling thread is running a share of a parallel region (where kernels run serially).</summary>
    internal static bool InsideRegion => _insideWorker;

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

    [ThreadStatic] private static long[]? t_ranges;

    /// <summary>
    /// Runs items [0, count) like <see cref="Run{T}"/>, but a thread that runs out of items takes some from the others,
    /// so no thread waits for a slower one (another tenant on its core, a slower path to memory) for more than a chunk.
    /// Share i starts on the i-th fixed range and takes chunks from its front: half of what is left, at least
    /// <paramref name="minChunk"/> items; once it is empty it takes chunks (a quarter of what is left) from the back of
    /// the share with most left. So which thread runs an item varies from call to call: only for work whose result does
    /// not depend on it (each item's output written by that item alone), never for a reduction combined in share order.
    /// </summary>
    public static void RunBalanced<T>(int count, int minPerThread, int minChunk, T work) where T : IChunkWork
    {
        if (count <= 0) return;
        int shares = SharesFor(count, minPerThread);
        if (shares == 1) { work.Run(0, count, count); return; }
        // The caller waits in RunShares until every share is done, so its ranges are free again on its next call.
        if (t_ranges == null || t_ranges.Length < shares * RangeStride) t_ranges = new long[shares * RangeStride];
        var ranges = t_ranges;
        for (int i = 0; i < shares; i++)
            ranges[i * RangeStride] = Range((int)((long)count * i / shares), (int)((long)count * (i + 1) / shares));
        RunShares(shares, new Balancer<T>(work, ranges, shares, Math.Max(1, minChunk)));
    }

    /// <summary>Longs between two shares' ranges: one 64-byte line each, so an owner's claims and a thief's do not
    /// contend with a third share's.</summary>
    private const int RangeStride = 8;

    private static long Range(int front, int back) => (uint)front | (long)back << 32;

    private sealed class Balancer<T>(T work, long[] ranges, int shares, int minChunk) : IShareWork where T : IChunkWork
    {
        public void RunShare(int share)
        {
            // Its own range, from the front; its run goes on to the range's back as it stands.
            while (TryTake(share, fromFront: true, out int start, out int end, out int back)) work.Run(start, end, back);
            // Then the others', from the back: each chunk taken from the share with most left.
            while (true)
            {
                int victim = -1, most = 0;
                for (int i = 0; i < shares; i++)
                {
                    long r = Volatile.Read(ref ranges[i * RangeStride]);
                    int left = (int)(r >>> 32) - (int)r;
                    if (left > most) (most, victim) = (left, i);
                }
                if (victim < 0) return;
                if (TryTake(victim, fromFront: false, out int start, out int end, out _)) work.Run(start, end, end);
            }
        }

        /// <summary>Takes a chunk of share <paramref name="owner"/>'s range (false: it is empty). back: the range's
        /// back after the take.</summary>
        private bool TryTake(int owner, bool fromFront, out int start, out int end, out int back)
        {
            ref long slot = ref ranges[owner * RangeStride];
            while (true)
            {
                long r = Volatile.Read(ref slot);
                int front = (int)r;
                back = (int)(r >>> 32);
                int left = back - front;
                if (left <= 0) { start = end = 0; return false; }
                // The owner takes half of what it has left, a thief a quarter (the owner works on at its front):
                // against a quarter for both, half as many chunks (calls and compare-and-swaps), the decoding step 1–3% faster.
                int take = Math.Min(left, Math.Max(minChunk, fromFront ? left / 2 : left / 4));
                (start, end) = fromFront ? (front, front + take) : (back - take, back);
                long next = fromFront ? Range(end, back) : Range(front, start);
                if (Interlocked.CompareExchange(ref slot, next, r) != r) continue;
                if (!fromFront) back = start;
                return true;
            }
        }
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

    // One job at a time (the Gate): its shares are claimed, in index order, by whoever comes first, the caller
    // included. A share's range is fixed by its index, so which thread runs it changes no result; what it buys is
    // that a caller never waits for a worker that has not started (descheduled on a loaded machine, or still waking
    // up): it takes that share itself and waits only for shares already running.
    //
    // _state packs the job's generation (bits 20..63), the next unclaimed share (bits 10..19) and the share count
    // (bits 0..9; at most 256 threads). A claim is a compare-and-swap of the whole word, so a worker holding a stale
    // generation can never claim a share of a newer job, and a job's fields (_job, _simdScope) are only rewritten
    // once all its shares are claimed.
    private const int ShareBits = 10;
    private const long ShareMask = (1L << ShareBits) - 1;
    private static long _state;
    private static IShareWork? _job;
    private static int _jobSimdScope;
    private static int _completed;
    private static Exception? _failure;

    private static long Generation(long state) => state >>> (2 * ShareBits);

    /// <summary>Runs shares 0..n-1 on the caller and the workers (each exactly once); rethrows the first failure.</summary>
    internal static void RunShares(int shares, IShareWork work)
    {
        lock (Gate)
        {
            EnsureWorkers(shares - 1);
            _failure = null;
            _job = work;
            _jobSimdScope = Simd.ThreadScope;   // the caller's forced lane width holds on every share
            Volatile.Write(ref _completed, 0);
            long generation = Generation(_state) + 1;
            long state = (generation << (2 * ShareBits)) | (long)shares;
            Volatile.Write(ref _state, state);
            for (int i = 0; i < shares - 1; i++) _workers[i].Wake();
            try
            {
                _insideWorker = true;
                RunClaimedShares(state);
            }
            finally
            {
                _insideWorker = false;
                // Only shares a worker has already started are left; they end within microseconds in a balanced split.
                var spin = new SpinWait();
                while (Volatile.Read(ref _completed) != shares) spin.SpinOnce(sleep1Threshold: -1);
                _job = null;
            }
            if (_failure != null) throw new AggregateException("A parallel kernel failed.", _failure);
        }
    }

    /// <summary>Claims and runs shares of the job whose state word was <paramref name="seen"/> until none is left.</summary>
    private static void RunClaimedShares(long seen)
    {
        var work = Volatile.Read(ref _job);
        int simdScope = _jobSimdScope;
        while (true)
        {
            long state = Volatile.Read(ref _state);
            long next = (state >> ShareBits) & ShareMask;
            if (Generation(state) != Generation(seen) || next >= (state & ShareMask)) return;
            if (Interlocked.CompareExchange(ref _state, state + (1L << ShareBits), state) != state) continue;
            // Claimed while the job was current, so work and simdScope (read after the job was published) are its own.
            int saved = Simd.ThreadScope;
            Simd.ThreadScope = simdScope;
            try { work!.RunShare((int)next); }
            catch (Exception e) { Interlocked.CompareExchange(ref _failure, e, null); }
            finally
            {
                Simd.ThreadScope = saved;
                Interlocked.Increment(ref _completed);
            }
        }
    }

    /// <summary>
    /// Memory a coming product will stream (see <see cref="PrefetchWhileIdle"/>): regions of whole 64-byte lines, each
    /// the front of one share's range, loaded in turns so that each share starts equally warm however short the wait.
    /// </summary>
    internal sealed class PrefetchPlan(nint[] starts, int[] lines)
    {
        public readonly nint[] Starts = starts;
        public readonly int[] Lines = lines;
        public readonly int MaxLines = lines.Length == 0 ? 0 : lines.Max();
    }

    private static PrefetchPlan? _idlePlan;
    private static long _idleRequests; // counts PrefetchWhileIdle calls: a plan given again is loaded again
    private static long _idleLinesRequested; // written by the first worker alone

    /// <summary>Lines the first worker has asked for while idle since the process started (tests watch it grow).</summary>
    internal static long IdleLinesRequested => Volatile.Read(ref _idleLinesRequested);

    /// <summary>
    /// Asks the first worker to load <paramref name="plan"/>'s lines into its cache while it has no job: a decoding step
    /// alternates products that stream weights on every core with serial work on the caller (norms, activations, the
    /// residual adds), and while the caller does that, memory would otherwise idle. The worker stops at its next job, so
    /// a plan costs a job nothing; a plan still unfinished when another is given is dropped. Prefetches never fault, so
    /// a plan may outlive the memory it names (it then loads nothing useful). Ignored inside a parallel region.
    /// </summary>
    internal static void PrefetchWhileIdle(PrefetchPlan plan)
    {
        if (_insideWorker) return;
        Volatile.Write(ref _idlePlan, plan);
        Interlocked.Increment(ref _idleRequests);
    }

    /// <summary>Lines each region of a plan gets per turn: a few hundred nanoseconds of requests between two looks
    /// at the job word.</summary>
    private const int PrefetchTurnLines = 8;

    /// <summary>One turn of the current plan from line <paramref name="line"/> on; false when there is nothing left to load.</summary>
    private static unsafe bool PrefetchTurn(ref long request, ref int line)
    {
        long latest = Volatile.Read(ref _idleRequests);
        if (latest != request) (request, line) = (latest, 0);
        // Read after the count: at worst a newer plan under an older count, which only loads that plan's lines early.
        var current = Volatile.Read(ref _idlePlan);
        if (current == null || line >= current.MaxLines || !Sse.IsSupported) return false;
        int requested = 0;
        for (int r = 0; r < current.Starts.Length; r++)
        {
            byte* at = (byte*)current.Starts[r];
            int end = Math.Min(current.Lines[r], line + PrefetchTurnLines);
            for (int i = line; i < end; i++, requested++) Sse.Prefetch0(at + (long)i * 64);
        }
        Volatile.Write(ref _idleLinesRequested, _idleLinesRequested + requested);
        line += PrefetchTurnLines;
        return true;
    }

    /// <summary>Whether the job in state word <paramref name="state"/> is newer than <paramref name="handled"/> and has unclaimed shares.</summary>
    private static bool HasShares(long state, long handled) =>
        Generation(state) != handled && ((state >> ShareBits) & ShareMask) < (state & ShareMask);

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
    /// A persistent worker. After a job it spins briefly for the next one (ops come back to back in a training
    /// step), then sleeps on a semaphore; <see cref="Wake"/> only signals the semaphore when the worker sleeps.
    /// The spin pauses the core without yielding it: a <c>sched_yield</c> per pause is a system call, costly in a VM.
    /// </summary>
    private sealed class Worker
    {
        private static readonly long SpinTicks = System.Diagnostics.Stopwatch.Frequency / 5000; // 200 µs
        private readonly SemaphoreSlim _signal = new(0);
        private readonly int _id;
        private int _sleeping;
        private long _planRequest; // the idle plan request this worker is loading, and its next line
        private int _planLine;

        public Worker(int id)
        {
            _id = id;
            var t = new Thread(Loop) { IsBackground = true, Name = $"alignsharp-worker-{id}" };
            t.Start();
        }

        public void Wake()
        {
            if (Interlocked.Exchange(ref _sleeping, 0) == 1) _signal.Release();
        }

        private long WaitForJob(long handled)
        {
            long until = System.Diagnostics.Stopwatch.GetTimestamp() + SpinTicks;
            while (true)
            {
                long state = Volatile.Read(ref _state);
                if (HasShares(state, handled)) return state;
                if (_id == 1 && PrefetchTurn(ref _planRequest, ref _planLine)) continue;
                if (System.Diagnostics.Stopwatch.GetTimestamp() < until) { Thread.SpinWait(20); continue; }
                // A full fence (not a plain release store): the read of _state below must not be reordered before
                // this write, or a Wake in between would see us awake and never signal (lost wake-up).
                Interlocked.Exchange(ref _sleeping, 1);
                state = Volatile.Read(ref _state);
                if (HasShares(state, handled))
                {
                    // A job arrived while we were going to sleep: if Wake already took our flag it also released
                    // the semaphore, which we must consume.
                    if (Interlocked.Exchange(ref _sleeping, 0) == 0) _signal.Wait();
                    return state;
                }
                _signal.Wait();
                until = System.Diagnostics.Stopwatch.GetTimestamp() + SpinTicks;
            }
        }

        private void Loop()
        {
            _insideWorker = true;
            long handled = 0;
            while (true)
            {
                long state = WaitForJob(handled);
                RunClaimedShares(state);
                handled = Generation(state);
            }
        }
    }
}
