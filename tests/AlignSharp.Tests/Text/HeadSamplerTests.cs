using AlignSharp.Engine;
using AlignSharp.Engine.Kernels;
using AlignSharp.Models;
using AlignSharp.Tests.Engine;
using AlignSharp.Text;

namespace AlignSharp.Tests.Text;

/// <summary>
/// The fused LM head + sampler (tiles of the vocabulary, no [B, V] logits) against (a) a double-precision reference
/// written from the definitions (logits = h·Wᵀ summed in double from the stored weights, cap·tanh(l/cap) where the model
/// caps, softmax(l/T), the inverse CDF in token order at the same uniform draw; greedy: the first largest logit and its
/// log-softmax; top-k / top-p: a full sort by probability then id, the K best, then the shortest prefix reaching P, keep
/// ≥ 1, the inverse CDF in that order over the kept mass) and (b) the unfused path (model.Head, then TokenSampler) on the
/// same seeded streams.
/// </summary>
public class HeadSamplerTests
{
    private const int D = 64;

    /// <summary>A one-layer model whose head spreads logits over a few units (std 0.3 weights against unit-normal h).</summary>
    private static TransformerModel Model(int vocab, bool bf16, double? softcap = null)
    {
        var config = ModelPresets.Llama(vocab, D, layers: 1, heads: 4, kvHeads: 2, intermediateSize: 128);
        if (softcap != null) config = config with { Family = ModelFamily.Gemma2, Activation = HiddenActivation.GeluTanh, FinalLogitSoftcap = softcap };
        var model = TransformerModel.CreateRandom(config, seed: vocab, std: 0.3f);
        if (bf16) model.StoreMatricesAsBf16();
        return model;
    }

    private static float[] Hidden(int rows, int seed)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, rows * D).Select(_ => (float)rng.NextGaussian()).ToArray();
    }

    /// <summary>Head row i as stored (bf16 widened exactly).</summary>
    private static double Weight(Tensor w, int i, int d) => w.IsBf16 ? Bf16.ToFloat(w.Bf16Span[i * D + d]) : w.Span[i * D + d];

    /// <summary>The reference logits of one row, in double (capped where the model caps).</summary>
    private static double[] ReferenceLogits(TransformerModel model, float[] hidden, int row, int sampleable)
    {
        var w = model.HeadWeight;
        // Sampling's head is an unrecorded product: with bf16 weights and vdpbf16ps, of bf16-rounded activations.
        bool rounded = w.IsBf16 && Gemm.ActivePath == GemmPath.Avx512 && Bf16Dot.IsAvailable;
        var l = new double[sampleable];
        for (int i = 0; i < sampleable; i++)
        {
            double s = 0;
            for (int d = 0; d < D; d++) s += (rounded ? GemmCase.RoundToBf16(hidden[row * D + d]) : hidden[row * D + d]) * Weight(w, i, d);
            l[i] = model.Config.FinalLogitSoftcap is double cap ? cap * Math.Tanh(s / cap) : s;
        }
        return l;
    }

    /// <summary>The reference draw for one row at uniform u: (token, log p under the distribution drawn from).</summary>
    private static (int Token, double LogProb) Reference(TransformerModel model, float[] hidden, int row, int sampleable, SamplingOptions o, double u)
        => SamplingReference.Draw(ReferenceLogits(model, hidden, row, sampleable), o, u);

    [Theory]
    [InlineData(5000, 5000, 1f, true, null)]      // several tiles and a partial last one, bf16 head
    [InlineData(5000, 4100, 0.7f, false, null)]   // float32 head; sampleable ends inside a tile (the rest never read)
    [InlineData(700, 700, 1.3f, true, null)]      // a single partial tile
    [InlineData(3000, 3000, 1f, true, 2.0)]       // Gemma's final soft cap, applied before the temperature
    [InlineData(5000, 5000, 0f, true, null)]      // greedy
    [InlineData(3000, 2500, 0f, false, 2.0)]      // greedy, capped, float32, sampleable < V
    public void PicksWhatTheDoublePrecisionReferencePicksForTheSameDraw(int vocab, int sampleable, float temperature, bool bf16, double? softcap)
        => AssertDrawsAsTheReference(Model(vocab, bf16, softcap), sampleable, new SamplingOptions { Temperature = temperature }, seed: 100, hiddenSeed: 0);

    /// <summary>
    /// 12 steps of 3 rows (row 1 inactive) against the reference at the same draws; returns how many rows fell back.
    /// </summary>
    private static int AssertDrawsAsTheReference(TransformerModel model, int sampleable, SamplingOptions o, int seed, int hiddenSeed)
    {
        const int rows = 3;
        var active = new[] { true, false, true };
        var rngs = Enumerable.Range(0, rows).Select(b => new Random(seed + b)).ToArray();
        var draws = Enumerable.Range(0, rows).Select(b => new Random(seed + b)).ToArray();
        int fellBack = 0;
        for (int step = 0; step < 12; step++)
        {
            var hidden = Hidden(rows, seed: hiddenSeed + step);
            var tokens = new[] { -1, -7, -1 };
            var logProbs = new[] { 0f, -7f, 0f };
            fellBack += HeadSampler.SampleRows(model, hidden, sampleable, o, rngs, active, tokens, logProbs);
            Assert.Equal((-7, -7f), (tokens[1], logProbs[1]));   // an inactive row is left alone
            foreach (int b in new[] { 0, 2 })
            {
                double u = o.Temperature == 0 ? 0 : draws[b].NextDouble();
                var (token, logProb) = Reference(model, hidden, b, sampleable, o, u);
                Assert.Equal(token, tokens[b]);
                Assert.True(Math.Abs(logProb - logProbs[b]) < 1e-4, $"step {step} row {b}: log p {logProbs[b]} vs reference {logProb}");
            }
        }
        // Inactive rows and greedy decoding draw nothing from their streams; sampling rows draw one number per step,
        // whichever way (fused or fallback) they went.
        Assert.Equal(draws[1].NextDouble(), rngs[1].NextDouble());
        Assert.Equal(draws[0].NextDouble(), rngs[0].NextDouble());
        return fellBack;
    }

    [Theory]
    // vocab, sampleable, T, top-k, top-p, bf16 head, soft cap, rows that fall back (-1: not checked)
    [InlineData(5000, 5000, 1f, 1, 1f, true, null, 0)]          // top-k 1: the arg-max, log p = 0
    [InlineData(5000, 4100, 1f, 5, 1f, true, null, 0)]          // top-k small; sampleable ends inside a tile
    [InlineData(5000, 5000, 2f, 256, 1f, false, null, 0)]       // K = C = a quarter of a tile
    [InlineData(5000, 5000, 2f, 1024, 1f, true, null, 0)]       // K = Tile: every tile keeps all its tokens
    [InlineData(5000, 5000, 2f, 2000, 1f, true, null, 0)]       // K > Tile
    [InlineData(5000, 5000, 0.7f, 0, 0.3f, true, null, 0)]      // small nucleus, inside the exact prefix
    [InlineData(5000, 5000, 4f, 0, 0.95f, true, null, 24)]      // flat, large nucleus: every row falls back
    [InlineData(5000, 5000, 1f, 50, 0.8f, true, null, 0)]       // top-k and top-p together (C = K: exact)
    [InlineData(5000, 5000, 4f, 400, 0.99f, false, null, -1)]   // top-p with K > C: top-k stops it, or the fallback
    [InlineData(3000, 2500, 1f, 20, 0.9f, true, 2.0, 0)]        // soft cap, sampleable < V, both filters
    [InlineData(3000, 3000, 3f, 0, 0.6f, false, 2.0, -1)]       // soft cap, top-p alone, float32 head
    [InlineData(700, 700, 1.3f, 0, 0.9f, false, null, -1)]      // one partial tile of more than C tokens
    [InlineData(200, 200, 1f, 0, 0.9f, true, null, 0)]          // one tile of fewer than C tokens: all exact
    public void FiltersAsTheDoublePrecisionReferenceForTheSameDraw(int vocab, int sampleable, float temperature, int topK, float topP,
        bool bf16, double? softcap, int fallbacks)
    {
        var o = new SamplingOptions { Temperature = temperature, TopK = topK, TopP = topP };
        int fellBack = AssertDrawsAsTheReference(Model(vocab, bf16, softcap), sampleable, o, seed: 200, hiddenSeed: 50);
        if (fallbacks >= 0) Assert.Equal(fallbacks, fellBack);
    }

    [Theory]
    [InlineData(1, true, 0, 1f, 0.9f, 40)]       // plain sampling
    [InlineData(4, true, 0, 1f, 0.9f, 40)]
    [InlineData(8, false, 0, 1f, 0.9f, 40)]
    [InlineData(1, true, 40, 0.9f, 0.9f, 10)]    // top-k and top-p
    [InlineData(4, true, 40, 0.9f, 0.9f, 10)]
    [InlineData(8, false, 40, 0.9f, 0.9f, 10)]
    [InlineData(4, true, 0, 0.95f, 3f, 10)]      // the fallback rows
    [InlineData(4, false, 3000, 1f, 1.5f, 10)]   // K > Tile
    [InlineData(8, true, 0, 0.5f, 1f, 10)]
    public void DrawsWhatTheUnfusedHeadAndSamplerDrawOnTheSameStreams(int rows, bool bf16, int topK, float topP, float temperature, int steps)
    {
        const int vocab = 6000, sampleable = 5900;
        var model = Model(vocab, bf16);
        var o = new SamplingOptions { Temperature = temperature, TopK = topK, TopP = topP };
        var active = Enumerable.Range(0, rows).Select(b => b != 1).ToArray();
        var fusedRngs = Enumerable.Range(0, rows).Select(b => new Random(b)).ToArray();
        var plainRngs = Enumerable.Range(0, rows).Select(b => new Random(b)).ToArray();
        using var noGrad = Autograd.NoGrad();
        using var rounding = Ops.RoundActivationsToBf16(); // the head's product as generation makes it
        for (int step = 0; step < steps; step++)
        {
            var hidden = Hidden(rows, seed: 1000 + step);
            var (fused, fusedLp) = (new int[rows], new float[rows]);
            var (plain, plainLp) = (new int[rows], new float[rows]);
            HeadSampler.SampleRows(model, hidden, sampleable, o, fusedRngs, active, fused, fusedLp);
            var logits = model.Head(Tensor.FromArray(hidden, rows, D)).ToArray();
            TokenSampler.SampleRows(logits, vocab, sampleable, o, plainRngs, active, plain, plainLp);
            Assert.Equal(plain, fused);
            for (int b = 0; b < rows; b++)
                Assert.True(Math.Abs(plainLp[b] - fusedLp[b]) < 1e-5, $"step {step} row {b}: {fusedLp[b]} vs unfused {plainLp[b]}");
        }
    }

    /// <summary>A float32 model whose head rows are 0 except w_i[0] = level[i], against h = e_0: logits exact on every path.</summary>
    private static (TransformerModel Model, float[] Hidden) ExactLogits(int vocab, Func<int, float> level)
    {
        var model = Model(vocab, bf16: false);
        var w = model.HeadWeight.Span;
        w.Clear();
        for (int i = 0; i < vocab; i++) w[i * D] = level(i);
        var hidden = new float[D];
        hidden[0] = 1;
        return (model, hidden);
    }

    [Fact]
    public void TiedLogitsRankByTokenIdAcrossTiles()
    {
        // Four tokens tie for the best logit in three tiles; every 7th other token is next best.
        int[] best = [5, 700, 1500, 2999];
        var (model, hidden) = ExactLogits(3000, i => best.Contains(i) ? 2f : i % 7 == 0 ? 1f : 0f);
        var rng = new Random(3);
        var seen = new HashSet<int>();
        for (int i = 0; i < 200; i++)
        {
            var (token, logProb) = (new int[1], new float[1]);
            HeadSampler.SampleRows(model, hidden, 3000, new SamplingOptions { TopK = 2 }, [rng], [true], token, logProb);
            seen.Add(token[0]);
            Assert.Equal(Math.Log(0.5), logProb[0], 6);
        }
        Assert.Equal(new HashSet<int> { 5, 700 }, seen);
    }

    /// <summary>
    /// 100 one-row draws on <see cref="ExactLogits"/> against the reference at the same draws (same token, same log p);
    /// returns the tokens and how many draws fell back.
    /// </summary>
    private static (int[] Tokens, int FellBack) AssertExactDrawsAsTheReference(int vocab, Func<int, float> level, SamplingOptions o, int seed)
    {
        var (model, hidden) = ExactLogits(vocab, level);
        var l = Enumerable.Range(0, vocab).Select(i => (double)level(i)).ToArray();
        var rng = new Random(seed);
        var draws = new Random(seed);
        var tokens = new int[100];
        int fellBack = 0;
        for (int i = 0; i < tokens.Length; i++)
        {
            var (token, logProb) = (new int[1], new float[1]);
            fellBack += HeadSampler.SampleRows(model, hidden, vocab, o, [rng], [true], token, logProb);
            var (refToken, refLogProb) = SamplingReference.Draw(l, o, draws.NextDouble());
            Assert.Equal(refToken, token[0]);
            Assert.Equal(refLogProb, logProb[0], 5);
            tokens[i] = token[0];
        }
        return (tokens, fellBack);
    }

    [Theory]
    [InlineData(10, 1f, 10)]         // top-k over a flat row: the first K ids
    [InlineData(0, 0.3001f, 901)]    // top-p over a flat row: the first ⌈0.3001·3000⌉ ids, past the 256 exact ones
    [InlineData(2000, 0.3001f, 601)] // both: top-p within the top 2000 renormalised, ⌈0.3001·2000⌉ ids; C = min(K, Tile) holds them
    public void AFlatRowKeepsTheFirstIds(int topK, float topP, int kept)
    {
        // All logits 0: the reference's log p is −log kept; every draw among the first `kept` ids.
        var (tokens, fellBack) = AssertExactDrawsAsTheReference(3000, _ => 0f, new SamplingOptions { TopK = topK, TopP = topP }, seed: 9);
        Assert.All(tokens, t => Assert.InRange(t, 0, kept - 1));
        Assert.True(tokens.Distinct().Count() >= Math.Min(kept, 50), "the draws should spread over the kept ids");
        Assert.Equal(topK == 0 && kept > HeadSampler.NucleusCandidates ? 100 : 0, fellBack);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(4)]
    public void ANucleusThatNeedsTokensATileCutFallsBack(int threads)
    {
        // Tile 0 holds 300 tokens at logit 3 (more than C = 256: its bound is the 256th), tile 2 holds 300 at logit 2, the
        // rest 0. P = 0.6 needs all 300 at 3 (mass 0.51) and about 140 at 2, so the nucleus reaches past tile 0's bound:
        // the candidates of tile 2 (kept by another thread's share) must not be taken for the rest of it.
        using var scope = ParallelFor.UseThreads(threads);
        var (tokens, fellBack) = AssertExactDrawsAsTheReference(4096, i => i < 300 ? 3f : i is >= 2048 and < 2348 ? 2f : 0f,
            new SamplingOptions { TopP = 0.6f }, seed: 4);
        Assert.Contains(tokens, t => t is >= 256 and < 300);   // tokens of the cut tile's rest are drawn
        Assert.Equal(100, fellBack);
    }

    [Theory]
    [InlineData(0, 0.95f, 3f)]   // the fallback rows
    [InlineData(40, 0.9f, 1f)]
    public void TheDrawDoesNotDependOnTheThreadCountOrTheSplit(int topK, float topP, float temperature)
    {
        var model = Model(9000, bf16: true);
        var o = new SamplingOptions { Temperature = temperature, TopK = topK, TopP = topP };
        const int rows = 5;
        (int[], float[]) Run(int threads)
        {
            using var scope = ParallelFor.UseThreads(threads);
            var rngs = Enumerable.Range(0, rows).Select(b => new Random(b)).ToArray();
            var (tokens, logProbs) = (new int[rows], new float[rows]);
            for (int step = 0; step < 4; step++)
                HeadSampler.SampleRows(model, Hidden(rows, 70 + step), 9000, o, rngs, Enumerable.Repeat(true, rows).ToArray(), tokens, logProbs);
            return (tokens, logProbs);
        }
        var (one, oneLp) = Run(1);
        // Tiles go to threads in chunks that depend on timing (a thread done early takes tiles from another's back);
        // more threads than cores make the splits vary most.
        foreach (int threads in new[] { 2, 3, 5, 8, 2, 8 })
        {
            var (many, manyLp) = Run(threads);
            Assert.Equal(one, many);
            Assert.Equal(oneLp, manyLp);
        }
    }

    [Fact]
    public void DrawFrequenciesFollowTheFilteredDistribution()
    {
        // Five tokens in five tiles at logits 2, 1, 0, −1, 0.5, the rest at −8: top-3 keeps 10, 1100, 4400; then top-p 0.75
        // of those three renormalised (0.63, 0.23, 0.14) keeps 10 and 1100 (cumulative 0.63, 0.86). Measured against the
        // whole softmax instead (Z includes the 4,995 tokens at −8: cumulative 0.50, 0.68, 0.79) it would keep all three.
        int[] ids = [10, 1100, 2200, 3300, 4400];
        float[] levels = [2f, 1f, 0f, -1f, 0.5f];
        var (model, hidden) = ExactLogits(5000, i => Array.IndexOf(ids, i) is var at and >= 0 ? levels[at] : -8f);
        foreach (var (o, kept) in new[] { (new SamplingOptions { TopK = 3 }, new[] { 0, 1, 4 }), (new SamplingOptions { TopK = 3, TopP = 0.75f }, new[] { 0, 1 }) })
        {
            var rng = new Random(8);
            var counts = new Dictionary<int, int>();
            const int n = 6000;
            for (int i = 0; i < n; i++)
            {
                var (token, logProb) = (new int[1], new float[1]);
                HeadSampler.SampleRows(model, hidden, 5000, o, [rng], [true], token, logProb);
                counts[token[0]] = counts.GetValueOrDefault(token[0]) + 1;
            }
            double z = kept.Sum(k => Math.Exp(levels[k]));
            Assert.True(counts.Keys.All(t => kept.Select(k => ids[k]).Contains(t)), string.Join(",", counts.Keys));
            foreach (int k in kept)
                Assert.InRange(counts.GetValueOrDefault(ids[k]) / (double)n, Math.Exp(levels[k]) / z - 0.02, Math.Exp(levels[k]) / z + 0.02);
        }
    }

    [Theory]
    [InlineData(0.02f, 0, 0.9f)]    // flat: every row falls back, the generator leaves the fused path after four steps
    [InlineData(0.3f, 20, 0.8f)]    // peaked: fused throughout
    public void GeneratorLogProbsAreTheFilteredDistributionsOfAFullForwardPass(float std, int topK, float topP)
    {
        const int vocab = 3000;
        var model = TransformerModel.CreateRandom(ModelPresets.Llama(vocab, D, layers: 1, heads: 4, kvHeads: 2, intermediateSize: 128), seed: 5, std: std);
        int[][] prompts = [[4, 8, 15], [16, 23]];
        var o = new SamplingOptions { MaxNewTokens = 8, TopK = topK, TopP = topP, Seed = 3, EosIds = [] };
        var completions = Generator.Generate(model, prompts, o);
        using var noGrad = Autograd.NoGrad();
        for (int b = 0; b < prompts.Length; b++)
        {
            var c = completions[b];
            Assert.Equal(8, c.Ids.Length);
            var all = prompts[b].Concat(c.Ids).ToArray();
            var logits = model.Forward(all, 1, all.Length).ToArray();
            for (int i = 0; i < c.Ids.Length; i++)
            {
                var row = logits.AsSpan((prompts[b].Length - 1 + i) * vocab, vocab).ToArray().Select(x => (double)x).ToArray();
                // The reference's log p of this token (its draw u is unknown: find the token in the filtered order).
                double max = row.Max();
                var p = row.Select(x => Math.Exp(x - max)).ToArray();
                var order = Enumerable.Range(0, vocab).OrderByDescending(j => p[j]).ThenBy(j => j).ToArray();
                int keep = topK > 0 ? topK : vocab;
                // Top-p within the top-K, renormalised (Hugging Face's warpers in turn).
                double norm = order.Take(keep).Sum(j => p[j]), cum = 0;
                int n = 0;
                while (n < keep) { cum += p[order[n]] / norm; n++; if (cum >= topP) break; }
                var kept = order.Take(n).ToArray();
                Assert.Contains(c.Ids[i], kept);
                Assert.Equal(Math.Log(p[c.Ids[i]] / kept.Sum(j => p[j])), c.LogProbs[i], 4);
            }
        }
    }

    [Fact]
    public void KeysOrderByValueDescendingThenIdAndGiveTheirValueBack()
    {
        float[] values = [float.PositiveInfinity, 3.5f, 1f, 1e-30f, 0f, -0f, -1e-30f, -2f, -1e30f, float.NegativeInfinity];
        for (int i = 0; i < values.Length; i++)
        {
            Assert.Equal(values[i] + 0f, HeadSampler.Value(HeadSampler.Key(values[i], 7)));
            Assert.True(HeadSampler.Key(values[i], 7) < HeadSampler.Key(values[i], 8));
            if (i + 1 < values.Length && values[i] != values[i + 1])
                Assert.True(HeadSampler.Key(values[i], 100) < HeadSampler.Key(values[i + 1], 0), $"{values[i]} before {values[i + 1]}");
        }
        Assert.Equal(HeadSampler.Key(0f, 3), HeadSampler.Key(-0f, 3));
    }

    [Fact]
    public void KeysAboveABoundAgreeOnEverySimdWidthAndLength()
    {
        var rng = new Random(6);
        for (int n = 0; n <= 40; n++)
        {
            // Values on a coarse grid, so that ties with the bound's value are common.
            var z = Enumerable.Range(0, n).Select(_ => rng.Next(-4, 5) * 0.5f).ToArray();
            var bounds = new List<ulong> { ulong.MaxValue, HeadSampler.Key(0.5f, 1000 + n / 2), HeadSampler.Key(-5f, 0), HeadSampler.Key(5f, 0) };
            foreach (var bound in bounds)
            {
                var expected = Enumerable.Range(0, n).Select(i => HeadSampler.Key(z[i], 1000 + i)).Where(k => k <= bound).ToArray();
                foreach (int bits in new[] { 512, 256, 128, 0 })
                {
                    using var width = Simd.UseWidth(bits);
                    var into = new ulong[n];
                    int m = HeadSampler.KeysAbove(z, 1000, bound, into);
                    Assert.Equal(expected, into[..m]);
                }
            }
        }
    }

    [Fact]
    public void ServesLanguageModelHeadsOnly()
    {
        var model = Model(300, bf16: false);
        Assert.True(HeadSampler.Applies(model));
        var scalar = new TransformerModel(model.Config with { Head = HeadKind.Scalar });
        Assert.False(HeadSampler.Applies(scalar));
        Assert.Throws<ArgumentException>(() => HeadSampler.SampleRows(scalar, Hidden(1, 0), 1, new SamplingOptions { TopK = 5 },
            [new Random(0)], [true], new int[1], new float[1]));
    }
}
