using AlignSharp.Engine;
using AlignSharp.Models;
using AlignSharp.Text;

namespace AlignSharp.Tests.Models;

public class GenerationTests
{
    private static TransformerModel Model(string family) => family switch
    {
        "granite" => ModelIO.Load(Fixtures.Dir("granite-multipliers")),
        "bloom" => ModelIO.Load(Fixtures.Dir("bloomz-save-pretrained")),   // ALiBi over left-padded rows
        "lfm2" => ModelIO.Load(Fixtures.Dir("lfm2-hybrid-conv")),          // convolutions over left-padded rows
        "lfm2-conv-bias" => ModelIO.Load(Fixtures.Dir("lfm2-conv-bias-attn-idxs")),   // in_proj's bias at the padding
        _ => RandomModel(family),
    };

    private static TransformerModel RandomModel(string family) => TransformerModel.CreateRandom(family switch
    {
        "gpt2" => ModelPresets.Gpt2(40, 32, 2, 4, 64),
        "llama" => ModelPresets.Llama(40, 32, 2, 4, 2, 64),
        // Sequences in these tests run well past 4 positions, so the window decides what most of them see.
        _ => WindowedMistral(4),
    }, seed: 9, std: 0.3f);

    private static ModelConfig WindowedMistral(int? window) =>
        ModelPresets.Llama(40, 32, 2, 4, 2, 64) with { Family = ModelFamily.Mistral, SlidingWindow = window };

    [Theory]
    [InlineData("gpt2")]
    [InlineData("llama")]
    [InlineData("mistral-window-4")]
    public void KvCachedLogitsEqualFullRecompute(string family)
    {
        var model = Model(family);
        var ids = new[] { 3, 17, 5, 9, 22, 1, 30, 8, 12, 4 };
        using var noGrad = Autograd.NoGrad();
        var full = model.Forward(ids, 1, ids.Length).ToArray();

        var cache = new KvCache(model.Config, 1, ids.Length);
        var parts = new List<float>();
        parts.AddRange(model.Forward(ids.AsSpan(0, 6), 1, 6, cache: cache).ToArray());
        for (int t = 6; t < ids.Length; t++) parts.AddRange(model.Forward(ids.AsSpan(t, 1), 1, 1, cache: cache).ToArray());
        Assert.Equal(full.Length, parts.Count);
        for (int i = 0; i < full.Length; i++) Assert.True(Math.Abs(full[i] - parts[i]) < 1e-4, $"logit {i}: {full[i]} vs {parts[i]}");
    }

    /// <summary>A cache's arrays come from the pool and go back on Dispose: a second cache (handed the first one's
    /// arrays, still holding its keys) decodes exactly as the first did, batched; a disposed cache refuses use.</summary>
    [Fact]
    public void APooledCacheDecodesLikeAFreshOneAndRefusesUseAfterDispose()
    {
        var model = Model("llama");
        var ids = new[] { 3, 17, 5, 9, 22, 1, 30, 8, 12, 4, 7, 2 };
        using var noGrad = Autograd.NoGrad();
        float[] Decode(int[] other)
        {
            using var cache = new KvCache(model.Config, 2, 6);
            var parts = new List<float>();
            int[] batch = [.. ids.AsSpan(0, 3), .. other.AsSpan(0, 3)];
            parts.AddRange(model.Forward(batch, 2, 3, cache: cache).ToArray());
            for (int t = 3; t < 6; t++) parts.AddRange(model.Forward([ids[t], other[t]], 2, 1, cache: cache).ToArray());
            return [.. parts];
        }
        var first = Decode([.. ids.Skip(6)]);
        Decode([.. ids.Reverse()]);   // leaves other keys in the pooled arrays
        Assert.Equal(first, Decode([.. ids.Skip(6)]));

        var disposed = new KvCache(model.Config, 1, 4);
        disposed.Dispose();
        Assert.Throws<ObjectDisposedException>(() => model.Forward(ids.AsSpan(0, 2), 1, 2, cache: disposed));
    }

    /// <summary>Prefill and decode chunks of every size against one full pass: chunks of ≤ 4 take the row path,
    /// longer ones the GEMM blocks, and each chunk's window reaches back into keys only the cache holds.</summary>
    [Theory]
    [InlineData(new[] { 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1 })]
    [InlineData(new[] { 3, 3, 2, 4, 1, 9, 8 })]
    [InlineData(new[] { 7, 23 })]
    public void WindowedKvCachedLogitsEqualFullRecompute(int[] chunks)
    {
        var model = Model("mistral-window-4");
        var ids = Enumerable.Range(0, chunks.Sum()).Select(i => (i * 7 + 3) % 40).ToArray();
        AssertChunkedCacheEqualsFullPass(model, ids, chunks);
    }

    /// <summary>Feeds <paramref name="ids"/> through a KV cache in <paramref name="chunks"/> and compares every logit
    /// with one full pass.</summary>
    internal static void AssertChunkedCacheEqualsFullPass(TransformerModel model, int[] ids, int[] chunks)
    {
        using var noGrad = Autograd.NoGrad();
        var full = model.Forward(ids, 1, ids.Length).ToArray();
        var cache = new KvCache(model.Config, 1, ids.Length);
        var parts = new List<float>();
        int at = 0;
        foreach (var n in chunks)
        {
            parts.AddRange(model.Forward(ids.AsSpan(at, n), 1, n, cache: cache).ToArray());
            at += n;
        }
        Assert.Equal(full.Length, parts.Count);
        for (int i = 0; i < full.Length; i++) Assert.True(Math.Abs(full[i] - parts[i]) < 1e-4, $"{model.Config.Family} logit {i}: {full[i]} vs {parts[i]}");
    }

    [Fact]
    public void WindowChangesExactlyThePositionsThatReachPastIt()
    {
        var windowed = Model("mistral-window-4");
        var unwindowed = new TransformerModel(WindowedMistral(null));
        foreach (var (name, p) in windowed.NamedParameters) p.Span.CopyTo(unwindowed.Parameter(name).Span);
        var ids = new[] { 3, 17, 5, 9, 22, 1, 30, 8, 12, 4 };
        using var noGrad = Autograd.NoGrad();
        var a = windowed.Forward(ids, 1, ids.Length).ToArray();
        var b = unwindowed.Forward(ids, 1, ids.Length).ToArray();
        for (int t = 0; t < ids.Length; t++)
        {
            double diff = 0;
            for (int v = 0; v < 40; v++) diff = Math.Max(diff, Math.Abs(a[t * 40 + v] - b[t * 40 + v]));
            if (t < 4) Assert.True(diff < 1e-6, $"position {t} fits in the window but its logits moved by {diff}");
            else Assert.True(diff > 1e-3, $"position {t} reaches past the window but its logits moved only {diff}");
        }
    }

    /// <summary>Left padding sits before a row's first real token, so with a window it never displaces one; ALiBi counts
    /// its distances from the row's own tokens, and LFM2's convolutions see zeros there, as at a sequence's start.</summary>
    [Theory]
    [InlineData("gpt2")]
    [InlineData("llama")]
    [InlineData("mistral-window-4")]
    [InlineData("bloom")]
    [InlineData("lfm2")]
    [InlineData("lfm2-conv-bias")]
    public void BatchedGreedyEqualsOneByOne(string family)
    {
        var model = Model(family);
        int[][] prompts = [[1, 2, 3], [5, 6, 7, 8, 9, 10, 11], [20, 21, 22, 23, 24]];
        var o = new SamplingOptions { MaxNewTokens = 8, Temperature = 0, EosIds = [] };
        var batched = Generator.Generate(model, prompts, o);
        for (int b = 0; b < prompts.Length; b++)
        {
            var single = Generator.Generate(model, [prompts[b]], o)[0];
            Assert.Equal(single.Ids, batched[b].Ids);
            for (int i = 0; i < single.LogProbs.Length; i++) Assert.Equal(single.LogProbs[i], batched[b].LogProbs[i], 4);
        }
    }

    [Theory]
    [InlineData("llama")]
    [InlineData("mistral-window-4")]
    [InlineData("granite")] // its residual multiplier keeps the residual adds out of the decoding products
    [InlineData("bloom")]
    [InlineData("lfm2")]    // the convolution's cached last inputs against the whole sequence
    [InlineData("lfm2-conv-bias")]
    public void GreedyLogProbsMatchAFullForwardPass(string family)
    {
        var model = Model(family);
        int[] prompt = [4, 8, 15];
        var c = Generator.Generate(model, [prompt], new SamplingOptions { MaxNewTokens = 5, Temperature = 0, EosIds = [] })[0];
        var all = prompt.Concat(c.Ids).ToArray();
        using var noGrad = Autograd.NoGrad();
        var logits = model.Forward(all, 1, all.Length);
        var (lp, _) = Ops.TokenLogProbs(Ops.Reshape(logits, all.Length, model.Config.VocabSize), all.Skip(1).Append(0).ToArray());
        for (int i = 0; i < c.Ids.Length; i++) Assert.Equal(lp.Span[prompt.Length - 1 + i], c.LogProbs[i], 4);
    }

    /// <summary>transformers' repetition penalty, written out here step by step on full forward passes: the logits of the
    /// tokens already in the row divided by the penalty (multiplied where negative), then the argmax; the log-probability
    /// is that of the penalised distribution. Batched rows see only their own tokens.</summary>
    [Fact]
    public void GreedyDecodingWithARepetitionPenaltyFollowsTransformersFormula()
    {
        var model = Model("llama");
        int[][] prompts = [[4, 8, 15], [1, 2, 3, 4, 5, 6, 7]];
        var o = new SamplingOptions { MaxNewTokens = 8, Temperature = 0, EosIds = [], RepetitionPenalty = 1.8f };
        var batched = Generator.Generate(model, prompts, o);
        int v = model.Config.VocabSize;
        bool changed = false;
        for (int b = 0; b < prompts.Length; b++)
        {
            var ids = prompts[b].ToList();
            for (int step = 0; step < o.MaxNewTokens; step++)
            {
                float[] row;
                using (Autograd.NoGrad()) row = model.Forward(ids.ToArray(), 1, ids.Count).ToArray()[((ids.Count - 1) * v)..];
                int plain = Array.IndexOf(row, row.Max());
                foreach (int id in ids.Distinct()) row[id] = row[id] < 0 ? row[id] * 1.8f : row[id] / 1.8f;
                int next = Array.IndexOf(row, row.Max());
                changed |= next != plain;
                double logZ = Math.Log(row.Sum(x => Math.Exp(x - row.Max()))) + row.Max();
                Assert.Equal(next, batched[b].Ids[step]);
                Assert.Equal(row[next] - logZ, batched[b].LogProbs[step], 4);
                ids.Add(next);
            }
        }
        Assert.True(changed, "the penalty never changed a token: the check would not see it missing");
        Assert.Throws<UserInputException>(() => Generator.Generate(model, prompts, o with { RepetitionPenalty = 0 }));
    }

    [Fact]
    public void SeededSamplingIsReproducibleAndStopsAtEos()
    {
        var model = Model("gpt2");
        int[][] prompts = [[1, 2], [3]];
        var o = new SamplingOptions { MaxNewTokens = 20, Temperature = 1.5f, TopK = 10, TopP = 0.9f, Seed = 42, EosIds = [7] };
        var a = Generator.Generate(model, prompts, o);
        var b = Generator.Generate(model, prompts, o);
        for (int i = 0; i < 2; i++) Assert.Equal(a[i].Ids, b[i].Ids);
        foreach (var c in a)
        {
            int at = Array.IndexOf(c.Ids, 7);
            if (at >= 0) { Assert.Equal(c.Ids.Length - 1, at); Assert.Equal("eos", c.FinishReason); }
            else { Assert.Equal(20, c.Ids.Length); Assert.Equal("length", c.FinishReason); }
            Assert.All(c.LogProbs, lp => Assert.True(lp <= 0 && lp > -50));
        }
        var other = Generator.Generate(model, prompts, o with { Seed = 43 });
        Assert.False(other[0].Ids.SequenceEqual(a[0].Ids) && other[1].Ids.SequenceEqual(a[1].Ids), "another seed should give other samples");
    }

    [Fact]
    public void SamplingFrequenciesFollowTheFilteredDistribution()
    {
        float[] logits = [2f, 1f, 0f, -1f, 0.5f];
        var probs = new float[5]; var keys = new ulong[5];
        var rng = new Random(3);
        var o = new SamplingOptions { Temperature = 1f, TopK = 3 };
        var counts = new int[5];
        const int n = 20000;
        for (int i = 0; i < n; i++) counts[TokenSampler.Sample(logits, o, rng, probs, keys).Token]++;
        // top-3 keeps tokens 0, 1, 4 with weights e^2, e^1, e^0.5
        double z = Math.Exp(2) + Math.Exp(1) + Math.Exp(0.5);
        Assert.Equal(0, counts[2] + counts[3]);
        Assert.InRange(counts[0] / (double)n, Math.Exp(2) / z - 0.015, Math.Exp(2) / z + 0.015);
        Assert.InRange(counts[4] / (double)n, Math.Exp(0.5) / z - 0.015, Math.Exp(0.5) / z + 0.015);
        var (tok, lp) = TokenSampler.Sample(logits, o with { TopP = 0.5f }, rng, probs, keys);
        Assert.Equal(0, tok); // token 0 alone has p ≥ 0.5 after top-k renormalisation... and in the full softmax
        Assert.Equal(0f, lp, 5);
    }
}
