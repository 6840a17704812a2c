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
/// log-softmax) and (b) the unfused path (model.Head, then TokenSampler) on the same seeded streams.
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

    /// <summary>The reference draw for one row: (token, log p) from logits summed in double.</summary>
    private static (int Token, double LogProb) Reference(TransformerModel model, float[] hidden, int row, int sampleable, float temperature, double u)
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
        double t = temperature == 0 ? 1 : temperature;
        double max = l.Max() / t;
        double z = l.Sum(x => Math.Exp(x / t - max));
        if (temperature == 0)
        {
            int best = Array.IndexOf(l, l.Max());
            return (best, l[best] / t - max - Math.Log(z));
        }
        double target = u * z, acc = 0;
        for (int i = 0; i < sampleable; i++)
        {
            acc += Math.Exp(l[i] / t - max);
            if (target < acc) return (i, l[i] / t - max - Math.Log(z));
        }
        return (sampleable - 1, l[^1] / t - max - Math.Log(z));
    }

    [Theory]
    [InlineData(5000, 5000, 1f, true, null)]      // several tiles and a partial last one, bf16 head
    [InlineData(5000, 4100, 0.7f, false, null)]   // float32 head; sampleable ends inside a tile (the rest never read)
    [InlineData(700, 700, 1.3f, true, null)]      // a single partial tile
    [InlineData(3000, 3000, 1f, true, 2.0)]       // Gemma's final soft cap, applied before the temperature
    [InlineData(5000, 5000, 0f, true, null)]      // greedy
    [InlineData(3000, 2500, 0f, false, 2.0)]      // greedy, capped, float32, sampleable < V
    public void PicksWhatTheDoublePrecisionReferencePicksForTheSameDraw(int vocab, int sampleable, float temperature, bool bf16, double? softcap)
    {
        var model = Model(vocab, bf16, softcap);
        var o = new SamplingOptions { Temperature = temperature };
        const int rows = 3;
        var active = new[] { true, false, true };
        var rngs = Enumerable.Range(0, rows).Select(b => new Random(100 + b)).ToArray();
        var draws = Enumerable.Range(0, rows).Select(b => new Random(100 + b)).ToArray();
        for (int step = 0; step < 12; step++)
        {
            var hidden = Hidden(rows, seed: step);
            var tokens = new[] { -1, -7, -1 };
            var logProbs = new[] { 0f, -7f, 0f };
            HeadSampler.SampleRows(model, hidden, sampleable, o, rngs, active, tokens, logProbs);
            Assert.Equal((-7, -7f), (tokens[1], logProbs[1]));   // an inactive row is left alone
            foreach (int b in new[] { 0, 2 })
            {
                double u = temperature == 0 ? 0 : draws[b].NextDouble();
                var (token, logProb) = Reference(model, hidden, b, sampleable, temperature, u);
                Assert.Equal(token, tokens[b]);
                Assert.True(Math.Abs(logProb - logProbs[b]) < 1e-4, $"step {step} row {b}: log p {logProbs[b]} vs reference {logProb}");
            }
        }
        // Inactive rows and greedy decoding draw nothing from their streams; sampling rows draw one number per step.
        Assert.Equal(draws[1].NextDouble(), rngs[1].NextDouble());
        Assert.Equal(draws[0].NextDouble(), rngs[0].NextDouble());
    }

    [Theory]
    [InlineData(1, true)]
    [InlineData(4, true)]
    [InlineData(8, false)]
    public void DrawsWhatTheUnfusedHeadAndSamplerDrawOnTheSameStreams(int rows, bool bf16)
    {
        const int vocab = 6000, sampleable = 5900;
        var model = Model(vocab, bf16);
        var o = new SamplingOptions { Temperature = 0.9f };
        var active = Enumerable.Range(0, rows).Select(b => b != 1).ToArray();
        var fusedRngs = Enumerable.Range(0, rows).Select(b => new Random(b)).ToArray();
        var plainRngs = Enumerable.Range(0, rows).Select(b => new Random(b)).ToArray();
        using var noGrad = Autograd.NoGrad();
        using var rounding = Ops.RoundActivationsToBf16(); // the head's product as generation makes it
        for (int step = 0; step < 40; step++)
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

    [Fact]
    public void ServesOnlyGreedyAndPlainSampling()
    {
        var model = Model(300, bf16: false);
        Assert.True(HeadSampler.Applies(model, new SamplingOptions { Temperature = 0, TopK = 5 }));
        Assert.False(HeadSampler.Applies(model, new SamplingOptions { TopK = 5 }));
        Assert.False(HeadSampler.Applies(model, new SamplingOptions { TopP = 0.9f }));
        Assert.Throws<ArgumentException>(() => HeadSampler.SampleRows(model, Hidden(1, 0), 300, new SamplingOptions { TopK = 5 },
            [new Random(0)], [true], new int[1], new float[1]));
    }
}
