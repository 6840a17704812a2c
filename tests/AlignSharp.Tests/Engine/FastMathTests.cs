using System.Runtime.Intrinsics;
using AlignSharp.Engine.Kernels;

namespace AlignSharp.Tests.Engine;

public class FastMathTests
{
    [Fact]
    public void ExpIsWithinAFewUlpOfDoublePrecisionOverTheWholeRange()
    {
        var rng = new Random(1);
        double worst = 0;
        for (int i = 0; i < 20000; i++)
        {
            var xs = new float[16];
            for (int l = 0; l < 16; l++) xs[l] = (float)(rng.NextDouble() * 175.3 - 87);
            var y512 = FastMath.Exp(Vector512.Create(xs));
            var y256 = FastMath.Exp(Vector256.Create(xs.AsSpan(0, 8)));
            var y128 = FastMath.Exp(Vector128.Create(xs.AsSpan(0, 4)));
            for (int l = 0; l < 16; l++)
            {
                double exact = Math.Exp(xs[l]);
                double rel = Math.Abs(y512[l] - exact) / exact;
                worst = Math.Max(worst, rel);
                if (l < 8) Assert.Equal(y512[l], y256[l]);
                if (l < 4) Assert.Equal(y512[l], y128[l]);
            }
        }
        Assert.True(worst < 3e-7, $"worst relative error {worst}");
    }

    [Fact]
    public void ExpHandlesTheEdges()
    {
        float[] xs = [float.NegativeInfinity, -1000f, -87.5f, 0f, 89f, float.PositiveInfinity, float.NaN, -0f, 1f, 88.3f, -20f, 20f, 1e-8f, -1e-8f, 0.5f, -0.5f];
        var y = FastMath.Exp(Vector512.Create(xs));
        Assert.Equal(0f, y[0]);
        Assert.Equal(0f, y[1]);
        Assert.Equal(0f, y[2]);
        Assert.Equal(1f, y[3]);
        Assert.Equal(float.PositiveInfinity, y[4]);
        Assert.Equal(float.PositiveInfinity, y[5]);
        Assert.True(float.IsNaN(y[6]));
        Assert.Equal(1f, y[7]);
        Assert.Equal(MathF.E, y[8], 6);
        Assert.True(float.IsFinite(y[9]));
    }
}
