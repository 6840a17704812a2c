using AlignSharp.Engine;

namespace AlignSharp.Tests.Engine;

/// <summary>
/// <see cref="BufferPool.Park"/> / <see cref="BufferPool.Unpark"/>: parked arrays are lent to no one and survive
/// <see cref="BufferPool.EndPhase"/>, and come back to the pool (the same arrays) when unparked. The pool is process-wide,
/// so this runs in the serial collection, and uses a length no other test rents.
/// </summary>
[Collection(SerialCollection.Name)]
public class BufferPoolParkTests
{
    [Fact]
    public void ParkedArraysSurviveEndPhaseAndComeBackWhenUnparked()
    {
        const int length = 1_234_567;
        var a = BufferPool.Rent(length);
        var b = BufferPool.Rent(length);
        BufferPool.Return(a);
        BufferPool.Return(b);
        var parked = BufferPool.Park();
        Assert.Contains(a, parked.Arrays);
        Assert.Contains(b, parked.Arrays);
        Assert.True(parked.Floats >= 2L * length);

        BufferPool.EndPhase();
        var other = BufferPool.Rent(length);          // not one of the parked arrays
        Assert.NotSame(a, other);
        Assert.NotSame(b, other);
        BufferPool.Return(other);
        BufferPool.EndPhase();                        // drops `other`, not the parked ones

        BufferPool.Unpark(parked);
        Assert.Empty(parked.Arrays);
        var back = new[] { BufferPool.Rent(length), BufferPool.Rent(length) };
        Assert.Contains(a, back);
        Assert.Contains(b, back);
        foreach (var x in back) BufferPool.Return(x);
        BufferPool.Trim();
    }
}
