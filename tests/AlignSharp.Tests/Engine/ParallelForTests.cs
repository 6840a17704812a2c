using AlignSharp.Engine.Kernels;

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
}
