using AlignSharp.Engine.Kernels;
using AlignSharp.Text;

namespace AlignSharp.Tests.Text;

/// <summary>
/// The vectorised sampler against a plain double-precision reference written from the definitions
/// (<see cref="SamplingReference"/>): the same draw must pick the same token, with the same log-probability.
/// </summary>
public class TokenSamplerTests
{
    private static (int Token, double LogProb) Reference(float[] logits, SamplingOptions o, double u)
        => SamplingReference.Draw(logits.Select(x => (double)x).ToArray(), o, u);

    private static float[] Logits(int v, float spread, int seed)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, v).Select(_ => (float)(rng.NextDouble() * 2 - 1) * spread).ToArray();
    }

    [Theory]
    [InlineData(5000, 1f, 0, 1f, 4f)]          // plain sampling, several blocks and a partial last one
    [InlineData(1, 1f, 0, 1f, 1f)]             // one token
    [InlineData(1500, 0.7f, 0, 1f, 12f)]       // peaked after temperature
    [InlineData(3000, 1f, 50, 1f, 4f)]         // top-k alone
    [InlineData(3000, 1f, 0, 0.9f, 0.5f)]      // flat: the nucleus holds most tokens (candidates grow past 256)
    [InlineData(3000, 1.3f, 0, 0.5f, 8f)]      // peaked nucleus
    [InlineData(3000, 1f, 40, 0.95f, 0.5f)]    // top-k bounds a top-p that is not reached
    [InlineData(3000, 1f, 3000, 0.3f, 3f)]     // top-k = V
    public void PicksWhatTheReferencePicksForTheSameDraw(int v, float temperature, int topK, float topP, float spread)
    {
        var logits = Logits(v, spread, seed: v + topK);
        var o = new SamplingOptions { Temperature = temperature, TopK = topK, TopP = topP };
        var scratch = new float[v]; var keys = new ulong[v];
        var rng = new Random(11); var draws = new Random(11);
        for (int s = 0; s < 300; s++)
        {
            var (token, logProb) = TokenSampler.Sample(logits, o, rng, scratch, keys);
            var (refToken, refLogProb) = Reference(logits, o, draws.NextDouble());
            Assert.Equal(refToken, token);
            Assert.True(Math.Abs(refLogProb - logProb) < 1e-4, $"draw {s}: log p {logProb} vs reference {refLogProb}");
        }
    }

    [Fact]
    public void GreedyTakesTheFirstLargestLogitAndItsLogSoftmax()
    {
        float[] logits = [0.5f, 2f, -1f, 2f, 1f];
        var (token, logProb) = TokenSampler.Sample(logits, new SamplingOptions { Temperature = 0 }, new Random(1), new float[5], []);
        Assert.Equal(1, token);
        double z = logits.Sum(x => Math.Exp(x));
        Assert.Equal(2 - Math.Log(z), logProb, 5);
    }

    /// <summary>
    /// SelectMass (top-p's nucleus and the draw inside it, by selection) against a full sort walked in order: the same
    /// count, and the same set of best keys first; flat and peaked values with ties, lengths across its 32-key sort,
    /// targets at, between and past the running sums, reaching (≥) and exceeding (&gt;).
    /// </summary>
    [Fact]
    public void SelectingByMassFindsTheSortedWalksBoundary()
    {
        var rng = new Random(17);
        foreach (int n in new[] { 1, 2, 31, 33, 100, 1000, 5000 })
            for (int trial = 0; trial < 20; trial++)
            {
                // A few distinct levels (ties broken by id in the key) or a spread of values.
                var e = Enumerable.Range(0, n).Select(_ => trial % 2 == 0 ? (float)rng.Next(4) / 4 + 0.25f : (float)Math.Exp(-5 * rng.NextDouble())).ToArray();
                ulong[] Keys() => Enumerable.Range(0, n).Select(i => (ulong)~BitConverter.SingleToUInt32Bits(e[i]) << 32 | (uint)i).ToArray();
                var sorted = Keys().Order().ToArray();
                var prefix = new double[n + 1];
                for (int i = 0; i < n; i++) prefix[i + 1] = prefix[i] + e[(int)(uint)sorted[i]];
                // Exactly a running sum (ties at the boundary), just below and above one, and past the total.
                int at = rng.Next(1, n + 1);
                foreach (double target in new[] { prefix[at], prefix[at] - 1e-9, prefix[at] + 1e-9, rng.NextDouble() * prefix[n], prefix[n] * 2 })
                    foreach (bool strict in new[] { false, true })
                    {
                        int expected = n;
                        for (int i = 1; i <= n; i++)
                            if (strict ? prefix[i] > target : prefix[i] >= target) { expected = i; break; }
                        var keys = Keys();
                        int r = TokenSampler.SelectMass(keys, e, target, strict);
                        // Sums in another order can differ from the walk's by rounding only where the target sits on one.
                        if (r != expected && Math.Abs(prefix[Math.Min(r, expected)] - target) < 1e-9 * prefix[n] + 1e-12) continue;
                        Assert.True(r == expected, $"n {n} trial {trial} target {target} strict {strict}: {r} keys, the sorted walk {expected}");
                        Assert.Equal(sorted[..r], keys[..r].Order().ToArray());
                    }
            }
    }

    [Fact]
    public void EqualProbabilitiesAreRankedByTokenIdForTopK()
    {
        // Tokens 1, 2, 4 tie; top-2 keeps 1 and 2, so 4 is never drawn.
        float[] logits = [0f, 1f, 1f, -3f, 1f];
        var o = new SamplingOptions { TopK = 2 };
        var rng = new Random(5);
        var seen = new HashSet<int>();
        for (int i = 0; i < 200; i++) seen.Add(TokenSampler.Sample(logits, o, rng, new float[5], new ulong[5]).Token);
        Assert.Equal(new HashSet<int> { 1, 2 }, seen);
    }

    [Fact]
    public void SelectPutsTheSmallestKeysFirst()
    {
        var rng = new Random(2);
        foreach (int n in new[] { 1, 2, 3, 7, 64, 257 })
            for (int count = 0; count <= n; count++)
            {
                var keys = Enumerable.Range(0, n).Select(_ => (ulong)rng.NextInt64()).Distinct().ToArray();
                var sorted = keys.Order().ToArray();
                TokenSampler.Select(keys, count);
                Assert.Equal(sorted.Take(count).ToHashSet(), keys.Take(count).ToHashSet());
            }
    }

    [Fact]
    public void EverySimdWidthAgreesWithTheReference()
    {
        var logits = Logits(777, 3f, seed: 4);
        var o = new SamplingOptions { Temperature = 0.8f };
        foreach (int bits in new[] { 512, 256, 128, 0 })
        {
            using var width = Simd.UseWidth(bits);
            var rng = new Random(3); var draws = new Random(3);
            for (int s = 0; s < 100; s++)
                Assert.Equal(Reference(logits, o, draws.NextDouble()).Token, TokenSampler.Sample(logits, o, rng, new float[777], []).Token);
        }
    }
}
