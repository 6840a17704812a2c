using AlignSharp.Engine;
using AlignSharp.Engine.Kernels;

namespace AlignSharp.Models;

/// <summary>
/// The one log-probability scorer over the LM head: per-token log π(target) and entropies from final hidden states,
/// in chunks of rows, so the [N, V] logits (and, in the backward pass, their gradient) are never all alive at once
/// unless they fit a fixed budget. How the rows are chunked (<see cref="ChunkRows"/>):
/// <list type="bullet">
/// <item>Without gradients no row's logits exist whole: chunks of up to <see cref="KeepFloats"/> / V rows, each scored a
/// vocabulary tile at a time (<see cref="ByTiles"/>). Each chunk packs the whole head weight again, so fewer, taller
/// chunks are faster (Qwen2.5-0.5B, 256 rows: 342–357 ms in chunks of 55 rows, 243–250 ms in one product of whole rows;
/// by tiles 0.83–0.87 × the time of whole rows).</item>
/// <item>With gradients, when all N×V logits fit <see cref="KeepFloats"/> (a PPO update's completion tokens), they are
/// kept for the backward pass instead of recomputed (a third fewer LM-head FLOPs) and made by one product over all N
/// rows: they are all alive until the backward pass anyway (256 rows: 870 → 593 ms forward and backward, against 55-row
/// chunks).</item>
/// <item>Otherwise chunks of <see cref="ChunkFloats"/>, whose logits the backward pass makes again chunk by chunk
/// (<see cref="Autograd.Checkpoint"/>): the memory-bound case of long SFT or DPO batches.</item>
/// </list>
/// Chunks are of equal size, so none is a small remainder: a GEMM of at most 8 rows takes another path
/// (<c>GemmSkinny</c>) than a taller one, and a chunk that did would give its rows other bits than the same rows scored
/// in one product, which PPO's first ratio (old log-probabilities scored without gradients, new ones in the update)
/// must not see. A soft-capped head keeps whole rows without gradients too (see <see cref="ByTiles"/>). Legend: N rows
/// (tokens), D hidden, V vocabulary.
/// </summary>
public static class TokenScoring
{
    /// <summary>Sees the raw logits [rows, V] of the chunk starting at row <paramref name="firstRow"/>, once, in the forward pass.</summary>
    public delegate void LogitsVisitor(int firstRow, ReadOnlySpan<float> logits);

    /// <summary>Logits of one chunk whose backward pass recomputes them: about 32 MiB of float32 (52 rows of Qwen2.5's
    /// 152k vocabulary, the whole batch of a small one); in the backward pass as much again for their gradient.</summary>
    public const long ChunkFloats = 8L << 20;

    /// <summary>
    /// Logits (float32) at most alive at once otherwise: kept for the backward pass rather than recomputed, or one chunk
    /// scored without gradients. 64 Mi floats, 256 MiB (Qwen2.5's vocabulary: 441 rows); with kept logits as much again
    /// for their gradient while the backward pass runs.
    /// </summary>
    public const long KeepFloats = 64L << 20;

    /// <summary>Rows per recomputed chunk for a vocabulary of <paramref name="vocab"/>: <see cref="ChunkFloats"/> / V, at least 1.</summary>
    public static int DefaultChunkRows(int vocab) => (int)Math.Max(1, ChunkFloats / Math.Max(1, vocab));

    /// <summary>
    /// Rows per chunk of <paramref name="n"/> rows over a vocabulary of <paramref name="vocab"/> (see the class summary):
    /// at most <paramref name="maxRows"/> when given (&gt; 0), else <see cref="KeepFloats"/> / V without gradients, all N
    /// rows when the logits are kept for the backward pass, <see cref="DefaultChunkRows"/> when it recomputes them; then
    /// cut into equal chunks (<see cref="EqualChunkRows"/>).
    /// </summary>
    public static int ChunkRows(int n, int vocab, bool needsGrad, bool recompute, int maxRows = 0) =>
        EqualChunkRows(n, maxRows > 0 ? maxRows
            : !needsGrad ? (int)Math.Max(1, KeepFloats / Math.Max(1, vocab))
            : recompute ? DefaultChunkRows(vocab) : n);

    /// <summary>Rows per chunk when <paramref name="n"/> rows are cut into chunks of at most <paramref name="maxRows"/>:
    /// as many chunks as that takes, of equal size (the last one at most as many rows fewer as there are chunks).</summary>
    public static int EqualChunkRows(int n, int maxRows)
    {
        if (n <= maxRows) return Math.Max(1, n);
        int chunks = (n + maxRows - 1) / maxRows;
        return (n + chunks - 1) / chunks;
    }

    /// <summary>
    /// hidden [N, D] (final hidden states after the last norm, the rows to score), targets [N]
    /// → (LogProbs [N] = log softmax(head(h) / temperature)[target], Entropy [N]), both differentiable (into
    /// <paramref name="hidden"/> and a trainable head). <paramref name="visit"/>, when given, sees each chunk's raw logits
    /// (for metrics such as TRL's logits/chosen or token accuracy) while the chunk exists. <paramref name="chunkRows"/>: the
    /// most rows a chunk may have; 0 = as <see cref="ChunkRows"/> chooses. <paramref name="recompute"/>: whether the
    /// backward pass makes each chunk's logits again (true) or keeps them from the forward pass (false); null = keep when
    /// N×V ≤ <see cref="KeepFloats"/>. Without gradients it does not apply: no logits are kept (by tiles when neither
    /// <paramref name="visit"/> nor <paramref name="chunkRows"/> is given, else each chunk's logits go back to the pool as
    /// soon as the chunk is reduced).
    /// </summary>
    public static (Tensor LogProbs, Tensor Entropy) LogProbs(TransformerModel model, Tensor hidden, int[] targets, float temperature = 1f,
        LogitsVisitor? visit = null, int chunkRows = 0, bool? recompute = null)
    {
        if (model.Config.Head != HeadKind.LanguageModel) throw new InvalidOperationException("Token log-probabilities need a model with an LM head.");
        if (hidden.Rank != 2 || hidden.Dim(1) != model.Config.EmbedDim)
            throw new ArgumentException($"TokenScoring: hidden states {ShapeUtil.Format(hidden.Shape)}, [N, {model.Config.EmbedDim}] expected.");
        int n = hidden.Dim(0);
        if (targets.Length != n) throw new ArgumentException($"TokenScoring: {targets.Length} targets for {n} rows.");
        if (!(temperature > 0)) throw new ArgumentOutOfRangeException(nameof(temperature), "The temperature must be > 0.");
        int v = model.Config.VocabSize;
        var head = model.HeadWeight;
        var logProbs = new List<Tensor>();
        var entropies = new List<Tensor>();
        if (n == 0) return (Tensor.Zeros(0), Tensor.Zeros(0));
        // Without gradients the checkpoint only scopes each chunk's logits (nothing is recomputed): always take it then.
        bool needsGrad = Autograd.IsEnabled && (head.RequiresGrad || model.HeadBias is { RequiresGrad: true } || Autograd.Needs(hidden));
        bool again = !needsGrad || (recompute ?? (long)n * v > KeepFloats);
        int chunk = ChunkRows(n, v, needsGrad, again, chunkRows);
        if (!needsGrad && visit == null && chunkRows == 0 && model.Config.FinalLogitSoftcap == null && model.HeadBias == null)
            return ByTiles(model, hidden, targets, 1f / temperature, chunk);
        for (int start = 0; start < n; start += chunk)
        {
            int rows = Math.Min(chunk, n - start), at = start;
            bool first = true;
            Tensor[] Chunk(Tensor[] h)
            {
                var logits = model.Head(h[0]);
                if (first) visit?.Invoke(at, logits.Span);
                first = false;
                // The temperature is applied row by row inside the pass: no scaled copy of the chunk's logits.
                var (lp, entropy) = Ops.TokenLogProbs(logits, targets.AsSpan(at, rows), 1f / temperature);
                return [lp, entropy];
            }
            var slice = Ops.SliceRows(hidden, start, rows);
            var outputs = again ? Autograd.Checkpoint([slice], Chunk, head.RequiresGrad || model.HeadBias is { RequiresGrad: true }) : Chunk([slice]);
            logProbs.Add(outputs[0]);
            entropies.Add(outputs[1]);
        }
        return logProbs.Count == 1 ? (logProbs[0], entropies[0]) : (Ops.Concat(logProbs, 0), Ops.Concat(entropies, 0));
    }

    /// <summary>
    /// Without gradients, the head a vocabulary tile at a time (<see cref="TokenLossKernels.VocabTile"/> of its rows): per
    /// chunk of rows, the threads take tiles, each makes the chunk's logits over its tile and reduces them at once to the
    /// statistics <see cref="Ops.TokenLogProbs"/> combines, so no more than a tile of any row's logits exists. A tile's logits
    /// are the columns of the one product (each element's sum does not depend on the columns multiplied with it) and the
    /// statistics and their combination are the op's, so the log-probabilities and entropies are its bits: PPO's first
    /// ratio is exactly 1. Not for a soft-capped head: its tanh runs over the whole logits, where a scalar tail falls elsewhere.
    /// </summary>
    private static (Tensor LogProbs, Tensor Entropy) ByTiles(TransformerModel model, Tensor hidden, int[] targets, float scale, int chunk)
    {
        int n = hidden.Dim(0), v = model.Config.VocabSize, tiles = TokenLossKernels.VocabTiles(v);
        Ops.CheckTargets(targets, v, "TokenScoring");
        var stats = new float[3 * n * tiles];
        var zTarget = new float[n];
        // As the whole-row path's head runs: exact (inside a checkpoint, which generation's rounding never reaches), or with
        // bf16 inputs in a run of bf16 products, whose kernel gives a row the same bits in any tile. Read here, on the
        // calling thread: the tiles run on the workers, where the caller's scope is not open.
        var inputs = Ops.RoundsBf16Products && model.HeadWeight.IsBf16 ? Bf16Inputs.Always : Bf16Inputs.Exact;
        for (int start = 0; start < n; start += chunk)
        {
            int rows = Math.Min(chunk, n - start);
            ParallelFor.RunBalanced(tiles, 1, 1, new HeadTiles(model.HeadWeight, hidden, start, rows, n, tiles, targets, scale, stats, zTarget, inputs));
        }
        var logProbs = new float[n];
        var entropy = new float[n];
        for (int r = 0; r < n; r++)
        {
            var (_, logProb, h) = TokenLossKernels.CombineTiles(stats.AsSpan(r * tiles, tiles), stats.AsSpan((n + r) * tiles, tiles),
                stats.AsSpan((2 * n + r) * tiles, tiles), zTarget[r]);
            (logProbs[r], entropy[r]) = (logProb, h);
        }
        return (Tensor.FromArray(logProbs, n), Tensor.FromArray(entropy, n));
    }

    /// <summary>Tiles of <see cref="ByTiles"/> for rows [first, first + rows): stats holds the planes m, s, u, each [N, T].</summary>
    private readonly struct HeadTiles(Tensor w, Tensor hidden, int first, int rows, int n, int tiles, int[] targets, float scale,
        float[] stats, float[] zTarget, Bf16Inputs inputs) : IChunkWork
    {
        public void Run(int start, int end, int streamEnd)
        {
            int v = w.Dim(0), d = w.Dim(1), tile = TokenLossKernels.VocabTile;
            var logits = BufferPool.Rent(rows * tile);
            var scratch = BufferPool.Rent(2 * tile);
            var a = hidden.Span.Slice(first * d, rows * d);
            for (int t = start; t < end; t++)
            {
                int t0 = t * tile, cols = Math.Min(tile, v - t0);
                var c = logits.AsSpan(0, rows * cols);
                Ops.ProductWithRows(a, rows, w, t0, cols, c, accumulate: false, inputs);
                for (int i = 0; i < rows; i++)
                {
                    int r = first + i;
                    var z = c.Slice(i * cols, cols);
                    if (scale != 1f) Simd.ZipScalarRight<MulOp>(z, scale, z);
                    TokenLossKernels.TileStats(z, scratch.AsSpan(0, tile), scratch.AsSpan(tile, tile),
                        out stats[r * tiles + t], out stats[(n + r) * tiles + t], out stats[(2 * n + r) * tiles + t]);
                    int target = targets[r] - t0;
                    if ((uint)target < (uint)cols) zTarget[r] = z[target];
                }
            }
            BufferPool.Return(scratch);
            BufferPool.Return(logits);
        }
    }
}
