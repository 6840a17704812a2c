using AlignSharp.Engine;
using AlignSharp.Engine.Kernels;

namespace AlignSharp.Tests.Engine;

/// <summary>
/// The backward pass's buffer economy: an intermediate's first gradient is written, not added into zeros
/// (<c>Tensor.GradForWrite</c>), and an identity gradient (reshape, residual add) hands its buffer on
/// (<c>Tensor.AddGradOf</c>). Every case is computed by hand here, over several rounds in one scope so that later rounds
/// get pooled buffers still holding the earlier rounds' values; and the pool gets back every buffer it lent.
/// Serial: <see cref="BufferPool.RentedFloats"/> counts the whole process.
/// </summary>
[Collection(SerialCollection.Name)]
public sealed class GradientHandOffTests
{
    private static float[] Values(int n, int seed)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, n).Select(_ => (float)Math.Round(rng.NextDouble() * 4 - 2, 2)).ToArray();
    }

    /// <summary>A parameter [rows, cols] holding <see cref="Values"/>.</summary>
    private static Tensor Parameter(int rows, int cols, int seed)
    {
        var t = Tensor.Parameter([rows, cols], 0f);
        Values(rows * cols, seed).CopyTo(t.Span);
        return t;
    }

    [Fact]
    public void ReshapesAndResidualAddsHandTheirGradientOnExactly()
    {
        using var threads = ParallelFor.UseThreads(1);
        var x = Parameter(2, 3, seed: 1);
        var c = Values(6, 2);
        long before = BufferPool.RentedFloats;
        using (TensorScope.Begin())
        {
            for (int round = 0; round < 3; round++)
            {
                x.ZeroGrad();
                var h = Ops.MulScalar(x, 3f);                  // a non-leaf: its gradient is a pooled buffer
                var r = Ops.Reshape(h, 3, 2);
                var s = Ops.Add(r, r);                          // both operands are r: the second adds into the first's
                var t = Ops.Sub(s, r);                          // = r, so d loss / d r = 2c − c = c
                Ops.Sum(Ops.Mul(t, Tensor.FromArray(c, 3, 2))).Backward();
                var g = x.Grad!.Span;
                for (int i = 0; i < 6; i++) Assert.Equal(3f * c[i], g[i]);   // exact: sums of two and a halving of nothing
            }
        }
        Assert.Equal(before, BufferPool.RentedFloats);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void AnIntermediateWithTwoConsumersGetsBothContributions(bool linearFirst)
    {
        using var threads = ParallelFor.UseThreads(1);
        const int rows = 4, inF = 3, outF = 2;
        var x = Parameter(rows, inF, seed: 3);
        var w = Parameter(outF, inF, seed: 4);
        var c1 = Values(rows * inF, 5);
        var c2 = Values(rows * outF, 6);
        var u = Values(rows * inF, 7);

        // d loss / d h = c1 + c2 · W + 2 h ⊙ u, with h = 2x, so d loss / d x = 2 (c1 + c2 · W) + 8 x ⊙ u.
        var expected = new double[rows * inF];
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < inF; j++)
            {
                double cw = 0;
                for (int o = 0; o < outF; o++) cw += (double)c2[i * outF + o] * w.Span[o * inF + j];
                expected[i * inF + j] = 2 * (c1[i * inF + j] + cw) + 8.0 * x.Span[i * inF + j] * u[i * inF + j];
            }

        long before = BufferPool.RentedFloats;
        using (TensorScope.Begin())
        {
            for (int round = 0; round < 3; round++)
            {
                x.ZeroGrad();
                w.ZeroGrad();
                var h = Ops.MulScalar(x, 2f);
                Tensor viaLinear, viaReshape;
                if (linearFirst) { viaLinear = Ops.Linear(h, w); viaReshape = Ops.Reshape(h, rows * inF); }
                else { viaReshape = Ops.Reshape(h, rows * inF); viaLinear = Ops.Linear(h, w); }
                var squared = Ops.Square(h);                    // a third consumer through an elementwise gradient
                var loss = Ops.Add(Ops.Add(Ops.Sum(Ops.Mul(viaReshape, Tensor.FromArray(c1, rows * inF))),
                        Ops.Sum(Ops.Mul(viaLinear, Tensor.FromArray(c2, rows, outF)))),
                    Ops.Sum(Ops.Mul(squared, Tensor.FromArray(u, rows, inF))));
                loss.Backward();
                var g = x.Grad!.Span;
                for (int k = 0; k < expected.Length; k++)
                    Assert.True(Math.Abs(g[k] - expected[k]) <= 1e-5 * (1 + Math.Abs(expected[k])),
                        $"round {round}, element {k}: {g[k]} against {expected[k]}");
            }
        }
        Assert.Equal(before, BufferPool.RentedFloats);
    }

    [Fact]
    public void AGradientWrittenFirstIsNotAddedToWhatThePoolHeld()
    {
        using var threads = ParallelFor.UseThreads(1);
        const int rows = 5, inF = 4, outF = 3;
        var x = Parameter(rows, inF, seed: 8);
        var w = Parameter(outF, inF, seed: 9);
        // Leave the pool's buffers of these sizes holding large values.
        using (TensorScope.Begin())
            for (int i = 0; i < 4; i++)
            {
                Tensor.Full([rows, inF], 1e6f);
                Tensor.Full([rows, outF], -1e6f);
            }
        using (TensorScope.Begin())
        {
            for (int round = 0; round < 2; round++)
            {
                x.ZeroGrad();
                var h = Ops.Tanh(x);                            // first gradient of h: Linear's dX, written
                Ops.Sum(Ops.Linear(h, w)).Backward();
                var g = x.Grad!.Span;
                for (int i = 0; i < rows; i++)
                    for (int j = 0; j < inF; j++)
                    {
                        double dh = 0;
                        for (int o = 0; o < outF; o++) dh += w.Span[o * inF + j];
                        double t = Math.Tanh(x.Span[i * inF + j]);
                        double want = dh * (1 - t * t);
                        Assert.True(Math.Abs(g[i * inF + j] - want) <= 1e-5, $"round {round} [{i},{j}]: {g[i * inF + j]} against {want}");
                    }
            }
        }
    }

    /// <summary>A norm of a tensor by itself (input and weight one non-leaf row): its written dx and its dw share one
    /// gradient buffer, so the order of the two matters. Finite differences, as every op's check.</summary>
    [Fact]
    public void ANormOfATensorByItselfKeepsBothGradients()
    {
        var rng = new Random(11);
        var loose = new GradCheck.Options(Step: 1e-2, AbsTol: 5e-3, RelTol: 3e-2);
        GradCheck.Check(x => { var h = Ops.MulScalar(x[0], 1.5f); return Ops.RmsNorm(h, h); }, [GradCheck.Random(rng, 9)], loose);
        GradCheck.Check(x => { var h = Ops.MulScalar(x[0], 1.5f); return Ops.LayerNorm(h, h, h); }, [GradCheck.Random(rng, 9)], loose);
    }
}
