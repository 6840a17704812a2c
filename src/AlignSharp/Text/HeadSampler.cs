using System.Numerics.Tensors;
using AlignSharp.Engine;
using AlignSharp.Engine.Kernels;
using AlignSharp.Models;
using Tensor = AlignSharp.Engine.Tensor;

namespace AlignSharp.Text;

/// <summary>
/// The LM head and the sampler in one walk over the vocabulary, so that no [B, V] logits exist: final hidden states
/// h [B, D] → one token per row with its log-probability, drawn as <see cref="TokenSampler.Sample"/> draws them from
/// head(h), for plain sampling (temperature, no top-k / top-p) and greedy decoding. Legend: B rows, D hidden,
/// V vocabulary (its first <c>sampleable</c> entries), T tiles of <see cref="Tile"/> tokens.
/// <list type="number">
/// <item>Pass 1, tiles split over the threads (each thread streams its own contiguous run of the head's rows): the
///   tile's logits [B, Tile] by the head's own GEMM on the tile's rows (soft-capped where the model caps them), z =
///   l/T; per row the tile's max m_t and s_t = Σ exp(z − m_t) (a float vector sum, as TokenSampler's block sums),
///   for greedy also the tile's first arg-max. One tile of logits per row and thread exists at a time.</item>
/// <item>Per row: M = max m_t and Z = Σ_t s_t·exp(m_t − M) in tile order (double). Greedy: the first arg-max of the
///   first tile whose max is M, log p = −log Z. Sampling: u·Z is located among the tile masses s_t·exp(m_t − M), then
///   that one tile's logits are made again (one row: Tile·D weights, 0.7% of the head) and searched by a running sum in
///   token order: the inverse CDF in token order, as TokenSampler, with the same one draw per row.</item>
/// </list>
/// The distribution is the unfused path's. The numbers differ from it by rounding only (per-tile maxima and sums
/// instead of global ones; the re-made tile of a batch row comes from the one-row GEMM), so a draw gives the same token
/// except within rounding of a boundary between two tokens.
/// </summary>
internal static class HeadSampler
{
    /// <summary>Tokens per tile: the block size of TokenSampler's sums (small enough to re-make one cheaply).</summary>
    public const int Tile = 1024;

    [ThreadStatic] private static float[]? t_tile;

    /// <summary>Whether <see cref="SampleRows"/> serves these options (greedy, or sampling without top-k / top-p) on this model.</summary>
    public static bool Applies(TransformerModel model, SamplingOptions o)
        => model.Config.Head == HeadKind.LanguageModel && (o.Temperature == 0 || (o.TopK == 0 && o.TopP >= 1));

    /// <summary>
    /// hidden [B, D] → for every b with <paramref name="active"/>[b]: tokens[b] drawn from softmax(head(h_b)/T) over the
    /// first <paramref name="sampleable"/> tokens with one draw from <paramref name="rngs"/>[b] (none when greedy), and
    /// logProbs[b] its log-probability. Inactive rows draw nothing and keep their entries.
    /// </summary>
    public static void SampleRows(TransformerModel model, float[] hidden, int sampleable, SamplingOptions o, Random[] rngs, bool[] active, int[] tokens, float[] logProbs)
    {
        if (!Applies(model, o)) throw new ArgumentException("HeadSampler serves greedy decoding and plain sampling (no top-k / top-p) on an LM head.", nameof(o));
        int rows = rngs.Length, d = model.Config.HiddenSize;
        var w = model.HeadWeight;
        if (hidden.Length < (long)rows * d) throw new ArgumentException($"hidden holds {hidden.Length} values, {rows} rows of {d} expected.", nameof(hidden));
        if (sampleable < 1 || sampleable > w.Dim(0)) throw new ArgumentOutOfRangeException(nameof(sampleable), $"{sampleable} sampleable tokens of a {w.Dim(0)}-token head.");
        int tiles = (sampleable + Tile - 1) / Tile;
        var head = new HeadTiles(w, hidden, rows, d, sampleable, o.Temperature == 0 ? 1f : 1f / o.Temperature, o.Temperature == 0,
            model.Config.FinalLogitSoftcap is double cap ? (float)cap : 0f, active,
            new float[rows * tiles], new double[rows * tiles], new int[rows * tiles]);
        ParallelFor.Run(tiles, 1, head);
        var draws = new double[rows];
        for (int b = 0; b < rows; b++) if (active[b] && o.Temperature != 0) draws[b] = rngs[b].NextDouble();
        // Rows re-make their tiles in parallel (one small GEMV each); at B = 1 it runs inline.
        ParallelFor.Run(rows, 1, new RowDraws(head, tiles, draws, tokens, logProbs));
    }

    /// <summary>
    /// The head applied to tile t: logits [rows, n] of hidden rows [first row, first row + rows) against head rows
    /// [t·Tile, t·Tile + n), soft-capped when <see cref="Cap"/> &gt; 0, then scaled by InvT.
    /// </summary>
    private readonly record struct HeadTiles(Tensor W, float[] Hidden, int Rows, int D, int Sampleable, float InvT, bool Greedy, float Cap,
        bool[] Active, float[] TileMax, double[] TileSum, int[] TileArg) : IRangeWork
    {
        public int TileCount => (Sampleable + Tile - 1) / Tile;

        public Span<float> Logits(int tile, int firstRow, int rows, float[] buffer)
        {
            int first = tile * Tile, n = Math.Min(Tile, Sampleable - first);
            var a = Hidden.AsSpan(firstRow * D, rows * D);
            var c = buffer.AsSpan(0, rows * n);
            // Sampling records nothing, so it takes the product an unrecorded Linear takes (bf16-rounded activations where
            // the CPU has vdpbf16ps): the same logits as the unfused head.
            if (W.IsBf16) Gemm.MultiplyBf16(false, true, rows, n, D, a, D, W.Bf16Span.Slice(first * D, n * D), D, c, n, false, bf16Activations: true);
            else Gemm.Multiply(false, true, rows, n, D, a, D, W.Span.Slice(first * D, n * D), D, c, n, false);
            if (Cap > 0)
            {
                // As Ops.SoftCap: cap · tanh(l / cap).
                Simd.ZipScalarRight<DivOp>(c, Cap, c);
                Simd.Map<TanhOp>(c, c);
                Simd.ZipScalarRight<MulOp>(c, Cap, c);
            }
            return c;
        }

        public void Run(int start, int end)
        {
            if (t_tile == null || t_tile.Length < Rows * Tile) t_tile = new float[Rows * Tile];
            int tiles = TileCount;
            for (int t = start; t < end; t++)
            {
                var logits = Logits(t, 0, Rows, t_tile);
                int n = logits.Length / Rows;
                for (int b = 0; b < Rows; b++)
                {
                    if (!Active[b]) continue;
                    var z = logits.Slice(b * n, n);
                    if (Greedy) TileArg[b * tiles + t] = TensorPrimitives.IndexOfMax(z);
                    else Simd.ZipScalarRight<MulOp>(z, InvT, z);
                    float max = Simd.Max(z);
                    Simd.ZipScalarRight<SubOp>(z, max, z);
                    Simd.Map<ExpOp>(z, z);
                    TileMax[b * tiles + t] = max;
                    TileSum[b * tiles + t] = Simd.Sum(z);
                }
            }
        }
    }

    /// <summary>Pass 2 for rows [start, end): the token from the tile statistics (and, when sampling, one re-made tile).</summary>
    private readonly struct RowDraws(HeadTiles head, int tiles, double[] draws, int[] tokens, float[] logProbs) : IRangeWork
    {
        public void Run(int start, int end)
        {
            for (int b = start; b < end; b++)
                if (head.Active[b]) (tokens[b], logProbs[b]) = Draw(b);
        }

        private (int Token, float LogProb) Draw(int b)
        {
            var max = head.TileMax.AsSpan(b * tiles, tiles);
            var sum = head.TileSum.AsSpan(b * tiles, tiles);
            float m = Simd.Max(max);
            double z = 0;
            for (int t = 0; t < tiles; t++) z += sum[t] * Math.Exp(max[t] - m);
            if (head.Greedy)
            {
                int best = max.IndexOf(m);
                return (best * Tile + head.TileArg[b * tiles + best], (float)-Math.Log(z));
            }

            double target = draws[b] * z, acc = 0;
            int tile = 0;
            for (; tile < tiles - 1; tile++)
            {
                double mass = sum[tile] * Math.Exp(max[tile] - m);
                if (acc + mass > target) break;
                acc += mass;
            }
            // Inside the tile, in its own scale: e_i = exp(z_i − m_t), whose masses are those above divided by exp(m_t − M).
            if (t_tile == null || t_tile.Length < Tile) t_tile = new float[Math.Max(head.Rows, 1) * Tile];
            var e = head.Logits(tile, b, 1, t_tile);
            Simd.ZipScalarRight<MulOp>(e, head.InvT, e);
            Simd.ZipScalarRight<SubOp>(e, max[tile], e);
            Simd.Map<ExpOp>(e, e);
            double scale = Math.Exp(max[tile] - m), local = (target - acc) / scale, run = 0;
            int pick = -1;
            for (int i = 0; i < e.Length; i++)
            {
                run += e[i];
                if (local < run) { pick = i; break; }
            }
            // The running sum can fall short of the tile's vector sum by rounding: take its last possible token.
            if (pick < 0)
                for (pick = e.Length - 1; pick > 0 && e[pick] == 0; pick--) { }
            return (tile * Tile + pick, (float)(Math.Log(e[pick]) + (max[tile] - m) - Math.Log(z)));
        }
    }
}
