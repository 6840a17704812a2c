using AlignSharp.Engine;
using AlignSharp.Engine.Kernels;
using AlignSharp.Models;
using AlignSharp.Models.Checkpoints;
using AlignSharp.Tests.Engine;

namespace AlignSharp.Tests.Models;

/// <summary>
/// Scoring without gradients goes over the vocabulary a tile at a time (<see cref="TokenLossKernels.VocabTile"/>): no row's
/// logits exist whole, and the log-probabilities and entropies are the bits of the pass with gradients over whole rows.
/// </summary>
public sealed class TokenScoringTileTests
{
    private static readonly Dictionary<(int Vocab, bool Bf16), TransformerModel> Models = [];

    /// <summary>A random Llama-shaped model with a vocabulary of several tiles, its matrices float32 or bf16 (saved and
    /// loaded, as a frozen checkpoint is).</summary>
    private static TransformerModel Model(int vocab, bool bf16)
    {
        lock (Models)
        {
            if (Models.TryGetValue((vocab, bf16), out var cached)) return cached;
            var model = TransformerModel.CreateRandom(ModelPresets.Llama(vocab, 64, 1, 4, 2), seed: 5, std: 0.5f);
            if (bf16)
            {
                string dir = Directory.CreateTempSubdirectory("alignsharp-tiles-").FullName;
                try
                {
                    ModelIO.Save(model, dir, SafetensorsDtype.BF16);
                    model = ModelIO.Load(dir, bf16Matrices: true);
                }
                finally { Directory.Delete(dir, recursive: true); }
                Assert.True(model.HeadWeight.IsBf16);
            }
            return Models[(vocab, bf16)] = model;
        }
    }

    /// <summary>
    /// PPO's old log-probabilities (no gradient: by tiles) against the update's (gradients, the logits of all rows kept, one
    /// product): the first ratio exp(new − old) must be exactly 1. Vocabularies of one whole tile, of three with a short
    /// last one, of 30 with a last tile narrower than a vector; 1–8 rows take the skinny products, more the blocked ones.
    /// </summary>
    [Theory]
    [InlineData(1024, 9, false, 1f)]
    [InlineData(2500, 1, false, 1f)]
    [InlineData(2500, 6, true, 0.7f)]
    [InlineData(2500, 9, true, 1f)]
    [InlineData(2500, 40, false, 0.7f)]
    [InlineData(2500, 40, true, 0.7f)]
    [InlineData(30727, 17, true, 1.3f)]
    public void WithoutGradientsTheTilesGiveTheBitsOfOneProductWithGradients(int vocab, int n, bool bf16, float temperature)
    {
        var model = Model(vocab, bf16);
        var rng = new Random(vocab + n);
        var hidden = GradCheck.Random(rng, n, model.Config.HiddenSize);
        // Every tile holds targets, the first and last token among them.
        var targets = Enumerable.Range(0, n).Select(i => i == 0 ? 0 : i == 1 ? vocab - 1 : rng.Next(vocab)).ToArray();

        float[] oldLp, oldEnt;
        using (Autograd.NoGrad())
        {
            var (lp, ent) = TokenScoring.LogProbs(model, hidden, targets, temperature);
            (oldLp, oldEnt) = (lp.ToArray(), ent.ToArray());
        }
        hidden.RequiresGrad = true;
        var (newLp, newEnt) = TokenScoring.LogProbs(model, hidden, targets, temperature, recompute: false);
        Autograd.Backward(Ops.Sum(newLp));
        Assert.NotNull(hidden.Grad);

        Assert.Equal(newLp.ToArray(), oldLp);
        Assert.Equal(newEnt.ToArray(), oldEnt);
    }

    /// <summary>
    /// The same inside <see cref="Ops.Bf16Products"/> (--matmul-precision medium), whose products with the bf16 head round
    /// their inputs: the tiles without gradients, the update's one product with gradients and its recomputed chunks give the
    /// same bits, and they differ from the exact products' (the inputs were rounded).
    /// </summary>
    [Theory]
    [InlineData(2500, 6, 1f)]
    [InlineData(2500, 40, 0.7f)]
    [InlineData(30727, 17, 1.3f)]
    public void WithBf16ProductsTheTilesStillGiveTheBitsOfTheUpdate(int vocab, int n, float temperature)
    {
        var model = Model(vocab, bf16: true);
        var rng = new Random(vocab + 3 * n);
        var hidden = GradCheck.Random(rng, n, model.Config.HiddenSize);
        var targets = Enumerable.Range(0, n).Select(_ => rng.Next(vocab)).ToArray();
        float[] exact;
        using (Autograd.NoGrad()) exact = TokenScoring.LogProbs(model, hidden, targets, temperature).LogProbs.ToArray();

        using var products = Ops.Bf16Products();
        float[] old;
        using (Autograd.NoGrad()) old = TokenScoring.LogProbs(model, hidden, targets, temperature).LogProbs.ToArray();
        foreach (bool recompute in new[] { false, true })
        {
            var h = Tensor.FromArray(hidden.ToArray(), n, model.Config.HiddenSize);
            h.RequiresGrad = true;
            var (lp, _) = TokenScoring.LogProbs(model, h, targets, temperature, recompute: recompute);
            Autograd.Backward(Ops.Sum(lp));
            Assert.Equal(lp.ToArray(), old);
        }
        Assert.NotEqual(exact, old);
    }

    /// <summary>
    /// The calling thread never makes a [rows, V] block of logits without gradients (it did, a chunk of rows at a time, before
    /// the tiles): what it allocates, with the pool emptied first, is about a tile of each row, not a row.
    /// </summary>
    [Fact]
    public void WithoutGradientsNoWholeRowOfLogitsIsMade()
    {
        const int vocab = 30727, n = 40;
        var model = Model(vocab, bf16: true);
        var rng = new Random(1);
        var hidden = GradCheck.Random(rng, n, model.Config.HiddenSize);
        var targets = Enumerable.Range(0, n).Select(_ => rng.Next(vocab)).ToArray();
        using var noGrad = Autograd.NoGrad();
        TokenScoring.LogProbs(model, hidden, targets); // compiles what it calls
        BufferPool.Trim();
        long before = GC.GetAllocatedBytesForCurrentThread();
        TokenScoring.LogProbs(model, hidden, targets);
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        long wholeRows = (long)n * vocab * sizeof(float);
        Console.WriteLine($"scoring {n} rows of a {vocab}-token head without gradients allocated {allocated} bytes on the calling thread (whole rows: {wholeRows})");
        Assert.True(allocated < wholeRows / 8, $"{allocated} bytes allocated; the rows' logits are {wholeRows}");
    }

    /// <summary>
    /// A row over three tiles, its log-probability and entropy against the definitions in double: log p(t) = z_t − log Σ
    /// exp(z), H = −Σ p log p. The logits are spread widely (tiles whose maxima differ by tens) so the tiles' shifts matter.
    /// </summary>
    [Fact]
    public void TilesCombineToTheRowsLogSoftmaxAndEntropy()
    {
        const int v = 2100;
        var rng = new Random(7);
        var z = Enumerable.Range(0, v).Select(i => (float)(rng.NextDouble() * 6 - 3 + (i < 1024 ? -40 : i < 2048 ? 0 : 12))).ToArray();
        int tiles = TokenLossKernels.VocabTiles(v);
        Assert.Equal(3, tiles);
        var (m, s, u) = (new float[tiles], new float[tiles], new float[tiles]);
        var (d, e) = (new float[TokenLossKernels.VocabTile], new float[TokenLossKernels.VocabTile]);
        for (int t = 0; t < tiles; t++)
        {
            int t0 = t * TokenLossKernels.VocabTile;
            TokenLossKernels.TileStats(z.AsSpan(t0, Math.Min(TokenLossKernels.VocabTile, v - t0)), d, e, out m[t], out s[t], out u[t]);
        }
        foreach (int target in new[] { 0, 1500, 2099 })
        {
            var (lse, logProb, entropy) = TokenLossKernels.CombineTiles(m, s, u, z[target]);

            double max = z.Max(), sum = z.Sum(x => Math.Exp(x - max)), logZ = max + Math.Log(sum);
            double h = -z.Sum(x => Math.Exp(x - logZ) * (x - logZ));
            Assert.Equal(logZ, lse, 4);
            Assert.Equal(z[target] - logZ, logProb, 4);
            Assert.Equal(h, entropy, 4);
        }
    }

    [Fact]
    public void ATargetOutsideTheVocabularyIsRefusedWithoutGradients()
    {
        var model = Model(2500, bf16: false);
        var hidden = GradCheck.Random(new Random(2), 3, model.Config.HiddenSize);
        using var noGrad = Autograd.NoGrad();
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => TokenScoring.LogProbs(model, hidden, [1, 2500, 3]));
        Assert.Contains("target 2500 at row 1", e.Message);
    }
}
