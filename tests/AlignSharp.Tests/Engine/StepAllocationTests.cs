using AlignSharp.Engine;
using AlignSharp.Engine.Kernels;

namespace AlignSharp.Tests.Engine;

/// <summary>
/// What an op allocates on the GC heap in a warm <see cref="TensorScope"/>: its outputs, saved statistics and scratch
/// come from the pool, so only fixed bookkeeping (tensor and graph-node objects) remains, the same whatever the
/// number of rows. Measured with GC.GetAllocatedBytesForCurrentThread on one thread (kernels inline).
/// </summary>
public sealed class StepAllocationTests
{
    private static long WarmBytes(int rows, Func<Tensor, Tensor> op)
    {
        const int c = 48;
        var rng = new Random(rows);
        var x = Tensor.Parameter([rows, c], rng, 1f);
        long bytes = 0;
        for (int round = 0; round < 3; round++)   // the first rounds fill the pool's size classes
        {
            x.ZeroGrad();
            long before = GC.GetAllocatedBytesForCurrentThread();
            using (TensorScope.Begin())
            {
                var y = op(x);
                Ops.Sum(Ops.Square(y)).Backward();
            }
            bytes = GC.GetAllocatedBytesForCurrentThread() - before;
        }
        return bytes;
    }

    [Theory]
    [InlineData("LayerNorm")]
    [InlineData("LayerNormNoBias")]
    [InlineData("RmsNorm")]
    public void NormsAllocateNothingSizedByTheRows(string which)
    {
        using var threads = ParallelFor.UseThreads(1);
        var rng = new Random(3);
        var w = Tensor.Parameter([48], rng, 0.5f);
        var b = Tensor.Parameter([48], rng, 0.5f);
        Func<Tensor, Tensor> op = which switch
        {
            "LayerNorm" => x => Ops.LayerNorm(x, w, b),
            "LayerNormNoBias" => x => Ops.LayerNorm(x, w, null),
            _ => x => Ops.RmsNorm(x, w),
        };
        long few = WarmBytes(8, op), many = WarmBytes(1000, op);
        Assert.True(many == few, $"{which}: {few} bytes for 8 rows, {many} bytes for 1000: something is allocated per row");
    }
}
