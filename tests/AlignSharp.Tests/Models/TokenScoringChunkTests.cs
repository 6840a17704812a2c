using AlignSharp.Engine;
using AlignSharp.Models;
using AlignSharp.Tests.Engine;

namespace AlignSharp.Tests.Models;

/// <summary>How <see cref="TokenScoring"/> cuts its rows into chunks, and that the cut never changes a row's bits.</summary>
public sealed class TokenScoringChunkTests
{
    [Theory]
    [InlineData(0, 55, 1)]
    [InlineData(1, 55, 1)]
    [InlineData(55, 55, 55)]
    [InlineData(56, 55, 28)]    // 28 + 28, not 55 + 1
    [InlineData(111, 55, 37)]   // 37 · 3
    [InlineData(256, 55, 52)]   // 52 · 4 + 48: a PPO batch of 4 × 64 completion tokens at Qwen2.5's vocabulary
    [InlineData(5, 2, 2)]       // 2 + 2 + 1
    [InlineData(41, 20, 14)]    // 14 + 14 + 13
    [InlineData(46, 20, 16)]    // 16 + 16 + 14
    public void ChunksAreOfEqualSize(int n, int maxRows, int expected) =>
        Assert.Equal(expected, TokenScoring.EqualChunkRows(n, maxRows));

    /// <summary>Qwen2.5's vocabulary (151,936): without gradients chunks of up to KeepFloats / V = 441 rows; with the
    /// logits kept (N·V ≤ KeepFloats) one product; recomputed chunks of up to ChunkFloats / V = 55 rows; a given maximum wins.</summary>
    [Theory]
    [InlineData(256, false, true, 0, 256)]
    [InlineData(1000, false, true, 0, 334)]   // 441 at most: 3 chunks
    [InlineData(256, true, false, 0, 256)]
    [InlineData(1000, true, true, 0, 53)]     // 55 at most: 19 chunks
    [InlineData(256, false, true, 52, 52)]    // 52 · 4 + 48
    public void ChunksFollowTheMemoryBudgetOfTheirMode(int n, bool needsGrad, bool recompute, int maxRows, int expected)
    {
        Assert.Equal(441, (int)(TokenScoring.KeepFloats / 151936));
        Assert.Equal(55, TokenScoring.DefaultChunkRows(151936));
        Assert.Equal(expected, TokenScoring.ChunkRows(n, 151936, needsGrad, recompute, maxRows));
    }

    /// <summary>
    /// PPO scores the old log-probabilities without gradients (the rows in chunks) and the new ones with gradients (the
    /// logits kept, all rows in one product); the first ratio is exp(new − old) and must be exactly 1. Cut 46 rows into
    /// chunks of at most 20 by taking 20 at a time, the last chunk would be six rows, which a bf16 head multiplies on
    /// another path (the skinny GEMM, another summation order) than 46 rows together.
    /// </summary>
    [Fact]
    public void ChunkedScoringWithoutGradientsGivesTheBitsOfOneProductWithGradients()
    {
        var model = ModelIO.Load(Fixtures.Dir("llama-gqa"), bf16Matrices: true);
        Assert.True(model.HeadWeight.IsBf16);
        var rng = new Random(3);
        int n = 46;
        var hidden = GradCheck.Random(rng, n, model.Config.HiddenSize);
        var targets = Enumerable.Range(0, n).Select(_ => rng.Next(model.Config.VocabSize)).ToArray();

        float[] oldLp, oldEnt;
        using (Autograd.NoGrad())
        {
            var (lp, ent) = TokenScoring.LogProbs(model, hidden, targets, temperature: 0.7f, chunkRows: 20);
            (oldLp, oldEnt) = (lp.ToArray(), ent.ToArray());
        }
        hidden.RequiresGrad = true;
        var (newLp, newEnt) = TokenScoring.LogProbs(model, hidden, targets, temperature: 0.7f);
        Autograd.Backward(Ops.Sum(newLp));
        Assert.NotNull(hidden.Grad);

        Assert.Equal(oldLp, newLp.ToArray());
        Assert.Equal(oldEnt, newEnt.ToArray());
    }
}
