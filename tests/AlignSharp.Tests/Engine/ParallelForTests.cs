using System.Runtime.Intrinsics.X86;
using AlignSharp.Engine.Kernels;
using Xunit.Abstractions;

namespace AlignSharp.Tests;

public class ParallelForTests
{
    [Fact]
    public void EveryIndexIsVisitedExactlyOnce()
    {
        var hits = new int[10_007];
        ParallelFor.For(hits.Length, 1, (s, e) => { for (int i = s; i < e; i++) Interlocked.Increment(ref hits[i]); });
        Assert.All(hits, h => Assert.Equal(1, h));
    }

    private readonly struct CountingChunks(int[] hits, int count, List<string> errors) : IChunkWork
    {
        public void Run(int start, int end, int streamEnd)
        {
            if (!(0 <= start && start < end && end <= streamEnd && streamEnd <= count))
                lock (errors) errors.Add($"chunk [{start}, {end}) streaming to {streamEnd} of {count}");
            for (int i = start; i < end; i++) Interlocked.Increment(ref hits[i]);
        }
    }

    /// <summary>RunBalanced hands out every item exactly once, in non-empty chunks whose stream end lies between the
    /// chunk's end and the count, whatever the thread count, chunk size and item count.</summary>
    [Fact]
    public void RunBalancedVisitsEveryItemExactlyOnce()
    {
        foreach (int threads in new[] { 1, 2, 3, 8 })
        foreach (int count in new[] { 1, 2, 7, 100, 10_007 })
        foreach (int minChunk in new[] { 1, 3, 50 })
        {
            using var scope = ParallelFor.UseThreads(threads);
            var hits = new int[count];
            var errors = new List<string>();
            ParallelFor.RunBalanced(count, 1, minChunk, new CountingChunks(hits, count, errors));
            Assert.True(errors.Count == 0, $"{threads} threads, {count} items, chunks of {minChunk}+: {string.Join("; ", errors)}");
            for (int i = 0; i < count; i++)
                Assert.True(hits[i] == 1, $"{threads} threads, {count} items, chunks of {minChunk}+: item {i} ran {hits[i]} times");
        }
    }
}

[Collection(SerialCollection.Name)]
public class ParallelForWakeUpTests(ITestOutputHelper output)
{
    /// <summary>
    /// Posts work at every distance from the moment a worker gives up spinning and goes to sleep: a lost wake-up
    /// (the worker sleeping while work waits for it) would hang here, so the loop runs under a deadline.
    /// </summary>
    [Fact]
    public async Task NoWakeUpIsLostAroundTheWorkersSpinToSleepTransition()
    {
        {
            var run = Task.Run(() =>
            {
                using var threads = ParallelFor.UseThreads(2);
                var rng = new Random(5);
                long total = 0;
                for (int i = 0; i < 3000; i++)
                {
                    var sum = new long[2];
                    ParallelFor.For(2, 1, (s, e) => { for (int j = s; j < e; j++) sum[j] += j + 1; });
                    total += sum[0] + sum[1];
                    // Idle for 0–400 µs: before, around and after the worker's 200 µs spin window.
                    var until = System.Diagnostics.Stopwatch.GetTimestamp() + rng.Next(0, 400) * System.Diagnostics.Stopwatch.Frequency / 1_000_000;
                    while (System.Diagnostics.Stopwatch.GetTimestamp() < until) Thread.SpinWait(10);
                }
                return total;
            });
            var finished = await Task.WhenAny(run, Task.Delay(TimeSpan.FromSeconds(60)));
            Assert.True(finished == run, "ParallelFor hung: a worker missed its wake-up");
            Assert.Equal(3000L * 3, await run);
        }
    }

    /// <summary>
    /// More shares than cores, with the workers asleep at every call (2 ms idle between calls, past their spin) and
    /// slow in their shares: the caller must take over shares no worker has started, and still every share runs
    /// exactly once per call, with the failure of one share rethrown and the next call unaffected.
    /// </summary>
    [Fact]
    public async Task TheCallerTakesSharesNoWorkerHasStartedAndEveryShareRunsOnce()
    {
        var run = Task.Run(() =>
        {
            using var threads = ParallelFor.UseThreads(8);
            var caller = Environment.CurrentManagedThreadId;
            int callerTookMore = 0;
            for (int call = 0; call < 100; call++)
            {
                var hits = new int[8];
                int byCaller = 0;
                ParallelFor.For(8, 1, (s, e) =>
                {
                    if (Environment.CurrentManagedThreadId == caller) Interlocked.Increment(ref byCaller);
                    else Thread.Sleep(1);
                    for (int i = s; i < e; i++) Interlocked.Increment(ref hits[i]);
                });
                Assert.All(hits, h => Assert.Equal(1, h));
                if (byCaller > 1) callerTookMore++;
                if (call % 10 == 0)
                {
                    var failure = Assert.Throws<AggregateException>(() => ParallelFor.For(8, 1, (s, e) =>
                    {
                        if (s == 5) throw new InvalidOperationException("share 5");
                    }));
                    Assert.Equal("share 5", failure.InnerException!.Message);
                }
                Thread.Sleep(2);
            }
            return callerTookMore;
        });
        var finished = await Task.WhenAny(run, Task.Delay(TimeSpan.FromSeconds(60)));
        Assert.True(finished == run, "ParallelFor hung");
        Assert.True(await run > 0, "the caller never ran a share beyond its first while workers were waking up");
    }

    private readonly struct SlowOffCaller(int caller, int[] hits, int[] byCaller) : IChunkWork
    {
        public void Run(int start, int end, int streamEnd)
        {
            if (Environment.CurrentManagedThreadId == caller) Interlocked.Add(ref byCaller[0], end - start);
            else Thread.Sleep(2);
            for (int i = start; i < end; i++) Interlocked.Increment(ref hits[i]);
        }
    }

    private readonly struct FailingChunk : IChunkWork
    {
        public void Run(int start, int end, int streamEnd)
        {
            if (start <= 50 && 50 < end) throw new InvalidOperationException("item 50");
        }
    }

    /// <summary>
    /// With a worker that is slow in every chunk (another tenant on its core), the caller, done with its half, takes
    /// chunks from the back of the worker's: it runs more than half of the items, and each still runs once. A failing
    /// chunk is rethrown, and the next call is unaffected.
    /// </summary>
    [Fact]
    public void RunBalancedLetsAFastThreadTakeASlowOnesItems()
    {
        using var threads = ParallelFor.UseThreads(2);
        int caller = Environment.CurrentManagedThreadId;
        for (int call = 0; call < 5; call++)
        {
            var hits = new int[400];
            var byCaller = new int[1];
            ParallelFor.RunBalanced(hits.Length, 1, 4, new SlowOffCaller(caller, hits, byCaller));
            Assert.All(hits, h => Assert.Equal(1, h));
            Assert.True(byCaller[0] > hits.Length / 2, $"call {call}: the caller ran {byCaller[0]} of {hits.Length} items while the worker slept in each of its chunks");
            var failure = Assert.Throws<AggregateException>(() => ParallelFor.RunBalanced(100, 1, 1, new FailingChunk()));
            Assert.Equal("item 50", failure.InnerException!.Message);
        }
    }

    [Fact]
    public void UseThreadsIsScopedToTheCallingThread()
    {
        int outside = ParallelFor.Threads;
        using (ParallelFor.UseThreads(1))
        {
            Assert.Equal(1, ParallelFor.Threads);
            Assert.Equal(1, ParallelFor.SharesFor(1000, 1));
            // Another thread keeps the process-wide count (a fresh thread: waiting on a Task.Run task can run it
            // inline on this thread, inside the scope).
            Assert.Equal(outside, Engine.SimdTests.OnAnotherThread(() => ParallelFor.Threads));
            using (ParallelFor.UseThreads(3)) Assert.Equal(3, ParallelFor.Threads);
            // 0 (an option left at its default) keeps the current count.
            using (ParallelFor.UseThreads(0)) Assert.Equal(1, ParallelFor.Threads);
            Assert.Equal(1, ParallelFor.Threads);
        }
        Assert.Equal(outside, ParallelFor.Threads);
    }

    /// <summary>
    /// A plan given with PrefetchWhileIdle is requested by the first worker between jobs, line by line; one naming memory
    /// that is not mapped (the first page, never mapped on Linux) faults nothing; jobs run as before meanwhile. Other tests
    /// may hand the worker their own plans at the same time, so the count checked is the worker's total.
    /// </summary>
    [Fact]
    public unsafe void TheFirstWorkerLoadsAnIdlePlanBetweenJobsWithoutFaulting()
    {
        using var threads = ParallelFor.UseThreads(2);
        var memory = GC.AllocateUninitializedArray<byte>(512 * 1024, pinned: true);
        fixed (byte* p = memory)
        {
            var mapped = new ParallelFor.PrefetchPlan([(nint)p, (nint)(p + 256 * 1024)], [4096, 4096]);
            var unmapped = new ParallelFor.PrefetchPlan([(nint)64], [4096]);
            foreach (var (plan, name) in new[] { (mapped, "mapped"), (unmapped, "unmapped") })
            {
                long before = ParallelFor.IdleLinesRequested;
                var deadline = DateTime.UtcNow.AddSeconds(10);
                // Each round: the plan, then a job that wakes the worker should it sleep; it then waits, loading.
                do
                {
                    ParallelFor.PrefetchWhileIdle(plan);
                    var hits = new int[64];
                    ParallelFor.For(hits.Length, 1, (s, e) => { for (int i = s; i < e; i++) hits[i]++; });
                    Assert.All(hits, h => Assert.Equal(1, h));
                    Thread.Sleep(1);
                } while (Sse.IsSupported && ParallelFor.IdleLinesRequested - before < plan.MaxLines * plan.Starts.Length && DateTime.UtcNow < deadline);
                long lines = ParallelFor.IdleLinesRequested - before;
                output.WriteLine($"{name} plan of {plan.MaxLines * plan.Starts.Length} lines: the worker requested {lines} lines");
                if (!Sse.IsSupported) Assert.Equal(0, lines); // no prefetch instruction (ARM64): the worker never loads
                else Assert.True(lines >= plan.MaxLines * plan.Starts.Length, $"{name}: only {lines} lines requested within 10 s");
            }
        }
    }
}
