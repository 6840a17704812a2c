using AlignSharp.Engine;
using AlignSharp.Engine.Kernels;

namespace AlignSharp.Tests.Engine;

/// <summary>
/// The counter-based dropout mask (<see cref="DropoutKernels"/>): its hash against values computed independently in
/// Python (arbitrary-precision integers masked to 32 bits, from the published lowbias32 constants), every length class
/// and offset of the SIMD paths against a per-element reference written out here, thread-count independence, the
/// backward regenerating the forward's mask, and the statistics a dropout mask needs (drop rate, no lane or position
/// bias, independence of neighbours and of seeds). Each lane width is forced with <see cref="Simd.UseWidth"/>.
/// </summary>
public class DropoutKernelTests
{
    const ulong Seed = 0x0123456789ABCDEFul;

    // This test's own copy of the hash (two lowbias32 rounds over i·0x9E3779B9 + k0, the second keyed by k1).
    static uint RefHash(ulong seed, uint i)
    {
        static uint Mix(uint x)
        {
            x ^= x >> 16; x = unchecked(x * 0x7feb352du);
            x ^= x >> 15; x = unchecked(x * 0x846ca68bu);
            return x ^ (x >> 16);
        }
        return Mix(Mix(unchecked(i * 0x9E3779B9u + (uint)seed)) ^ (uint)(seed >> 32));
    }

    static float RefMask(ulong seed, float p, uint i) =>
        RefHash(seed, i) >> 8 >= (uint)Math.Round(p * 16777216.0) ? 1f / (1f - p) : 0f;

    [Theory]
    [InlineData(0u, 0x1c62a4a3u)]
    [InlineData(1u, 0x477cb3f3u)]
    [InlineData(2u, 0x7dc5f6b1u)]
    [InlineData(15u, 0x0bd2df70u)]
    [InlineData(16u, 0xd9e4316bu)]
    [InlineData(17u, 0x44322cafu)]
    [InlineData(1000u, 0xc0eff8a2u)]
    [InlineData(65535u, 0xc2b388d3u)]
    [InlineData(65536u, 0xd57a4827u)]
    [InlineData(123457u, 0x6170c2a0u)]
    public void HashMatchesAnIndependentPythonComputation(uint i, uint expected)
    {
        // python: M=2**32-1; mix(x): x^=x>>16; x=x*0x7feb352d&M; x^=x>>15; x=x*0x846ca68b&M; return x^(x>>16)
        //         h = mix(mix((i*0x9E3779B9 + (seed&M)) & M) ^ (seed>>32))
        Assert.Equal(expected, DropoutKernels.Hash(unchecked((uint)Seed), (uint)(Seed >> 32), i));
        Assert.Equal(expected, RefHash(Seed, i));
    }

    [Theory]
    [InlineData(512)]
    [InlineData(256)]
    [InlineData(128)]
    [InlineData(0)]
    public void EveryLengthAndOffsetMatchesThePerElementReference(int laneBits)
    {
        using var width = Simd.UseWidth(laneBits);
        var rng = new Random(3);
        foreach (float p in new[] { 0.05f, 0.5f })
            for (int n = 0; n <= 300; n++)
            {
                int offset = n % 7;
                var x = new float[n + offset + 3];
                for (int i = 0; i < x.Length; i++) x[i] = (float)(rng.NextDouble() * 4 - 2);
                var y = new float[n + 5];
                var acc = new float[n + 5];
                for (int i = 0; i < acc.Length; i++) acc[i] = i * 0.25f;
                var accBefore = (float[])acc.Clone();
                DropoutKernels.Apply(Seed, p, x, offset, y, 2, n, accumulate: false);
                DropoutKernels.Apply(Seed, p, x, offset, acc, 2, n, accumulate: true);
                for (int i = 0; i < y.Length; i++)
                {
                    if (i < 2 || i >= n + 2)
                    {
                        Assert.Equal(0f, y[i]);               // outside the range: untouched
                        Assert.Equal(accBefore[i], acc[i]);
                        continue;
                    }
                    float expected = x[offset + i - 2] * RefMask(Seed, p, (uint)(i - 2));
                    Assert.Equal(expected, y[i]);
                    Assert.Equal(accBefore[i] + expected, acc[i]);
                }
            }
    }

    [Fact]
    public void TheMaskDoesNotDependOnTheThreadCount()
    {
        int n = 3 * 65536 + 77; // several shares of 2^16, with a tail
        var x = new float[n];
        for (int i = 0; i < n; i++) x[i] = 1f + i % 5;
        var one = new float[n];
        var two = new float[n];
        using (ParallelFor.UseThreads(1)) DropoutKernels.Apply(Seed, 0.3f, x, 0, one, 0, n, accumulate: false);
        using (ParallelFor.UseThreads(3)) DropoutKernels.Apply(Seed, 0.3f, x, 0, two, 0, n, accumulate: false);
        Assert.Equal(one, two);
        for (int i = 0; i < n; i += 997) Assert.Equal(x[i] * RefMask(Seed, 0.3f, (uint)i), one[i]);
    }

    [Fact]
    public void TheBackwardRegeneratesTheForwardMask()
    {
        var rng = new Random(8);
        var x = Tensor.Parameter([37, 129], 0f, "x");
        var s = x.Span;
        for (int i = 0; i < s.Length; i++) s[i] = 0.5f + (float)rng.NextDouble();
        var y = Ops.Dropout(x, 0.25f, new Random(11));
        Ops.Sum(y).Backward();
        var ys = y.Span;
        var g = x.Grad!.Span;
        int dropped = 0;
        for (int i = 0; i < s.Length; i++)
        {
            // d(Σ y)/dx = mask; y = x ⊙ mask.
            Assert.True(g[i] == 0f || g[i] == 1f / 0.75f, $"mask value {g[i]}");
            Assert.Equal(s[i] * g[i], ys[i]);
            if (g[i] == 0f) dropped++;
        }
        Assert.InRange(dropped, 1, s.Length - 1);
        // The same seeded stream gives the same mask; the next draw from a stream gives another.
        Assert.Equal(ys.ToArray(), Ops.Dropout(x, 0.25f, new Random(11)).ToArray());
        var r = new Random(11);
        Assert.NotEqual(Ops.Dropout(x, 0.25f, r).ToArray(), Ops.Dropout(x, 0.25f, r).ToArray());
    }

    [Theory]
    [InlineData(0.05f)]
    [InlineData(0.3f)]
    [InlineData(0.5f)]
    public void DropRateLanesNeighboursAndSeedsBehaveLikeIndependentDraws(float p)
    {
        const int n = 1 << 20;
        var ones = new float[n];
        Array.Fill(ones, 1f);
        var a = new float[n];
        var b = new float[n];
        DropoutKernels.Apply(Seed, p, ones, 0, a, 0, n, accumulate: false);
        DropoutKernels.Apply(Seed + 1, p, ones, 0, b, 0, n, accumulate: false); // a neighbouring seed

        // Drop rate within 5 binomial standard deviations.
        double sd = Math.Sqrt(n * p * (1 - p));
        int dropped = a.Count(v => v == 0f);
        Assert.InRange(dropped, n * p - 5 * sd, n * p + 5 * sd);
        Assert.All(a.Where(v => v != 0f).Take(1000), v => Assert.Equal(1f / (1f - p), v));

        // No bias by position within a 16-lane vector or a 64-element block: chi-square over 64 classes (63 degrees of
        // freedom; 120 is beyond the 99.999th percentile).
        var perClass = new int[64];
        for (int i = 0; i < n; i++) if (a[i] == 0f) perClass[i % 64]++;
        double expected = n / 64.0 * p, chi = 0;
        foreach (int c in perClass) chi += (c - expected) * (c - expected) / (expected * (1 - p));
        Assert.True(chi < 120, $"chi-square over positions mod 64: {chi:F1}");

        // Neighbours (i, i+1), (i, i+16) and the same element under the neighbouring seed are independent:
        // P(both dropped) = p² within 5 standard deviations.
        foreach (var (name, other, shift) in new[] { ("i+1", a, 1), ("i+16", a, 16), ("seed+1", b, 0) })
        {
            int both = 0, m = n - shift;
            for (int i = 0; i < m; i++) if (a[i] == 0f && other[i + shift] == 0f) both++;
            double q = p * p, sdBoth = Math.Sqrt(m * q * (1 - q));
            Assert.True(Math.Abs(both - m * q) < 5 * sdBoth, $"{name}: {both} both dropped, expected {m * q:F0} ± {sdBoth:F0}");
        }
    }
}
