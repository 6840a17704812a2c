using System.Numerics.Tensors;
using System.Runtime.Intrinsics;
using AlignSharp.Engine;
using AlignSharp.Engine.Kernels;
using AlignSharp.Models;
using Tensor = AlignSharp.Engine.Tensor;

namespace AlignSharp.Text;

/// <summary>
/// The LM head and the sampler in one walk over the vocabulary, so that no [B, V] logits exist: final hidden states
/// h [B, D] → one token per row with its log-probability, drawn as <see cref="TokenSampler.Sample"/> draws them from
/// head(h): greedy, temperature, top-k and top-p (together too). Legend: B rows, D hidden, V vocabulary (its first
/// <c>sampleable</c> entries), T tiles of <see cref="Tile"/> tokens, C candidates per tile, z = l/T.
/// <list type="number">
/// <item>Pass 1, tiles handed out to the threads in chunks of consecutive tiles (<see cref="ParallelFor.RunBalanced"/>: a
///   thread streams runs of the head's rows, and one that is done early takes tiles from another's back): the
///   tile's logits [B, Tile] by the head's own GEMM on the tile's rows (soft-capped where the model caps them), z =
///   l/T; per row the tile's max m_t and s_t = Σ exp(z − m_t) (a float vector sum, as TokenSampler's block sums),
///   for greedy also the tile's first arg-max, for plain sampling also the masses of the tile's blocks of
///   <see cref="Block"/> tokens (<see cref="Simd.SumExp"/>, in the same pass as s_t). One tile of logits per row and
///   thread exists at a time.</item>
/// <item>top-k / top-p, also in pass 1: per row the tile's best C tokens as 64-bit keys (z's order-preserving bits,
///   inverted, above the token id: ascending key = z descending, then id ascending, TokenSampler's order), chosen by
///   quickselect, and the tile's bound: the C-th best key where the tile has more than C tokens. A chunk's later
///   tiles key only tokens that beat the best bound seen in it (a vector compare skips the rest), so a peaked row
///   costs a few keys per tile. C = min(K, Tile) with top-k (so the exact prefix holds the whole top-K); top-p alone
///   keeps C = 256.</item>
/// <item>Per row: M = max m_t and Z = Σ_t s_t·exp(m_t − M) in tile order (double). Greedy: the first arg-max of the
///   first tile whose max is M, log p = −log Z. Plain sampling: u·Z is located among the tile masses s_t·exp(m_t − M),
///   then among that tile's block masses, then that one block's logits are made again (one row: Block·D weights,
///   1/2,374 of the 0.5B shape's head) and searched by a running sum in token order: the inverse CDF in token order, as
///   TokenSampler, with the same one draw per row.</item>
/// <item>top-k / top-p: τ = the smallest tile bound. Every token missing from the candidates ranks below its tile's
///   bound, so the candidates with keys ≤ τ are exactly the best tokens of the row, in order (and hold the whole
///   top-K when C ≥ K). They are selected and sorted in growing prefixes (256, ×4) and walked as TokenSampler walks
///   its sorted candidates: top-k first, then top-p accumulating exp(z − M) over the mass of the whole vocabulary, or
///   with top-k on of the top-K tokens (renormalised, as Hugging Face applies its warpers in turn), until P, keep ≥ 1;
///   one draw u·kept in that order; log p = log(exp(z − M)/kept).</item>
/// <item>Fallback: when top-p has not reached P within the exact prefix (a flat row, e.g. of a random-weight model,
///   whose nucleus reaches below τ) and top-k does not stop it first, that row is left for a second walk over the
///   head: the rows that need it get their full logits [F, V], tile by tile, and <see cref="TokenSampler.SampleRows"/>
///   draws for them (their one draw is not taken before). The unfused path's work and memory, for those rows only.</item>
/// </list>
/// The distribution is the unfused path's. The numbers differ from it by rounding only (per-tile maxima and sums
/// instead of global ones, block masses summed apart, exp in double on the candidates; the re-made block of a batch
/// row comes from the one-row GEMM), so a draw gives the same token except within rounding of a boundary between two
/// tokens. Which tokens are candidates depends on the tiles only, not on which thread runs which tiles (a chunk's
/// running bound drops only tokens that rank below some tile's bound, and so below τ; the tile with the smallest bound
/// always reports it), so the draws are the same from run to run however the chunks fall.
/// </summary>
internal static class HeadSampler
{
    /// <summary>Tokens per tile: the block size of TokenSampler's sums.</summary>
    public const int Tile = 1024;

    /// <summary>
    /// Candidates a tile keeps for top-p (fewer when a top-k is smaller): a quarter of a tile, which makes the exact
    /// prefix at least 256 tokens and, on a peaked row, far more (every tile's best tokens above the largest of the
    /// tiles' 256th-best values); 2 KB of keys per row and tile at most.
    /// </summary>
    public const int NucleusCandidates = 256;

    /// <summary>Tokens per block of a tile whose mass pass 1 keeps for plain sampling, so that the draw re-makes one block
    /// (64 head rows, 1/16 of a tile) instead of the whole tile: at batch 8 the re-made tiles read 8 × 1.8 MB of weights a
    /// step, ≈ 0.3 ms.</summary>
    public const int Block = 64;

    private const int BlocksPerTile = Tile / Block;

    /// <summary>How many of the next tile's weight rows pass 1 prefetches before summing a tile's rows: as many as the
    /// product's own prefetch runs ahead (native/bf16dot.c, PREFETCH_LEAD).</summary>
    private const int NextTileWarmRows = 8;

    [ThreadStatic] private static float[]? t_tile;
    [ThreadStatic] private static ulong[]? t_keys;
    [ThreadStatic] private static ulong[]? t_candidates;
    [ThreadStatic] private static float[]? t_blockSums;
    [ThreadStatic] private static ulong[]? t_merged;

    /// <summary>Whether <see cref="SampleRows"/> serves this model: any sampling options on a language-model head without a
    /// bias (Phi-2's biased head is sampled from its whole logits).</summary>
    public static bool Applies(TransformerModel model) => model.Config.Head == HeadKind.LanguageModel && model.HeadBias == null;

    /// <summary>
    /// hidden [B, D] → for every b with <paramref name="active"/>[b]: tokens[b] drawn from softmax(head(h_b)/T) over the
    /// first <paramref name="sampleable"/> tokens, filtered by top-k then top-p as <see cref="TokenSampler"/> filters,
    /// with one draw from <paramref name="rngs"/>[b] (none when greedy), and logProbs[b] its log-probability under
    /// that distribution (greedy: under the plain softmax). Inactive rows draw nothing and keep their entries.
    /// Returns how many rows needed the fallback (their full logits: see the class summary).
    /// </summary>
    public static int SampleRows(TransformerModel model, float[] hidden, int sampleable, SamplingOptions o, Random[] rngs, bool[] active, int[] tokens, float[] logProbs)
    {
        if (!Applies(model)) throw new ArgumentException("HeadSampler serves language-model heads only.", nameof(model));
        int rows = rngs.Length, d = model.Config.EmbedDim;
        var w = model.HeadWeight;
        if (hidden.Length < (long)rows * d) throw new ArgumentException($"hidden holds {hidden.Length} values, {rows} rows of {d} expected.", nameof(hidden));
        if (sampleable < 1 || sampleable > w.Dim(0)) throw new ArgumentOutOfRangeException(nameof(sampleable), $"{sampleable} sampleable tokens of a {w.Dim(0)}-token head.");
        int tiles = (sampleable + Tile - 1) / Tile;
        bool greedy = o.Temperature == 0, filtered = !greedy && (o.TopK > 0 || o.TopP < 1);
        int c = filtered ? CandidatesPerTile(o) : 0;
        ulong[] candidates = [];
        if (filtered)
        {
            // Reused across calls on this thread (the generator's): rows·T·C keys, most of them unused on a peaked row.
            long need = (long)rows * tiles * c;
            if (t_candidates == null || t_candidates.Length < need) t_candidates = new ulong[need];
            candidates = t_candidates;
        }
        float[] blockSums = [];
        if (!greedy && !filtered)
        {
            // Reused across calls on this thread, as the candidates: 76 KB a step at batch 8 on a 151,936-token head.
            int need = rows * tiles * BlocksPerTile;
            if (t_blockSums == null || t_blockSums.Length < need) t_blockSums = new float[need];
            blockSums = t_blockSums;
        }
        var head = new HeadTiles(w, hidden, rows, d, sampleable, greedy ? 1f : 1f / o.Temperature, greedy,
            model.Config.FinalLogitSoftcap is double cap ? (float)cap : 0f, active,
            new float[rows * tiles], new double[rows * tiles], new int[rows * tiles], blockSums,
            c, candidates, filtered ? new int[rows * tiles] : [], filtered ? new ulong[rows * tiles] : []);
        ParallelFor.RunBalanced(tiles, 1, 1, head);
        if (!filtered)
        {
            var draws = new double[rows];
            for (int b = 0; b < rows; b++) if (active[b] && !greedy) draws[b] = rngs[b].NextDouble();
            // Rows re-make their blocks in parallel (one small GEMV each); at B = 1 it runs inline.
            ParallelFor.Run(rows, 1, new RowDraws(head, tiles, draws, tokens, logProbs));
            return 0;
        }

        var fallback = new bool[rows];
        ParallelFor.Run(rows, 1, new FilteredDraws(head, tiles, o, rngs, tokens, logProbs, fallback));
        int f = fallback.Count(x => x);
        if (f > 0) SampleFullRows(head, tiles, o, rngs, fallback, f, tokens, logProbs);
        return f;
    }

    /// <summary>C: candidates per row and tile (see the class summary).</summary>
    internal static int CandidatesPerTile(SamplingOptions o)
        => o.TopK > 0 ? Math.Min(o.TopK, Tile) : NucleusCandidates;

    /// <summary>A token's key: ascending keys = z descending, then id ascending (−0 keyed as +0).</summary>
    internal static ulong Key(float z, int id)
    {
        uint u = BitConverter.SingleToUInt32Bits(z + 0f);
        uint ordered = (u & 0x8000_0000u) != 0 ? ~u : u | 0x8000_0000u;
        return (ulong)~ordered << 32 | (uint)id;
    }

    /// <summary>z of a key (the inverse of <see cref="Key"/>).</summary>
    internal static float Value(ulong key)
    {
        uint ordered = ~(uint)(key >> 32);
        return BitConverter.UInt32BitsToSingle((ordered & 0x8000_0000u) != 0 ? ordered & 0x7FFF_FFFFu : ~ordered);
    }

    /// <summary>
    /// The head applied to tile t: logits [rows, n] of hidden rows [first row, first row + rows) against head rows
    /// [t·Tile, t·Tile + n), soft-capped when <see cref="Cap"/> &gt; 0 (not yet divided by T). Pass 1 (<see cref="Run"/>)
    /// fills, per row b and tile t at b·T + t: TileMax, TileSum, TileArg (greedy), for plain sampling the masses of the
    /// tile's blocks BlockSums[(b·T + t)·BlocksPerTile ..] (in the tile's scale, exp(z − m_t)) and, for top-k / top-p,
    /// the candidate keys Candidates[(b·T + t)·C ..] (CandidateCount of them) and TileBound (ulong.MaxValue: none).
    /// </summary>
    private readonly record struct HeadTiles(Tensor W, float[] Hidden, int Rows, int D, int Sampleable, float InvT, bool Greedy, float Cap,
        bool[] Active, float[] TileMax, double[] TileSum, int[] TileArg, float[] BlockSums, int C, ulong[] Candidates, int[] CandidateCount,
        ulong[] TileBound) : IChunkWork
    {
        public int TileCount => (Sampleable + Tile - 1) / Tile;

        /// <summary>Row b's M = max_t m_t and Z = Σ_t s_t·exp(m_t − M), tiles added in order (double).</summary>
        public (float Max, double Sum) RowTotals(int b)
        {
            int tiles = TileCount;
            var max = TileMax.AsSpan(b * tiles, tiles);
            var sum = TileSum.AsSpan(b * tiles, tiles);
            float m = Simd.Max(max);
            double z = 0;
            for (int t = 0; t < tiles; t++) z += sum[t] * Math.Exp(max[t] - m);
            return (m, z);
        }

        public Span<float> Logits(int tile, int firstRow, int rows, float[] buffer)
            => Logits(tile * Tile, Math.Min(Tile, Sampleable - tile * Tile), firstRow, rows, buffer);

        /// <summary>Logits [rows, n] against head rows [first, first + n) (see the other overload).</summary>
        public Span<float> Logits(int first, int n, int firstRow, int rows, float[] buffer)
        {
            var a = Hidden.AsSpan(firstRow * D, rows * D);
            var c = buffer.AsSpan(0, rows * n);
            // Sampling is generation: the product an unrecorded Linear takes inside Ops.RoundActivationsToBf16 (which
            // Generator opens; bf16-rounded activations where the CPU has vdpbf16ps), so the same logits as the unfused head.
            Ops.ProductWithRows(a, rows, W, first, n, c, accumulate: false, W.IsBf16 ? Bf16Inputs.AtDecodeShapes : Bf16Inputs.Exact);
            if (Cap > 0)
            {
                // As Ops.SoftCap: cap · tanh(l / cap).
                Simd.ZipScalarRight<DivOp>(c, Cap, c);
                Simd.Map<TanhOp>(c, c);
                Simd.ZipScalarRight<MulOp>(c, Cap, c);
            }
            return c;
        }

        public void Run(int start, int end, int streamEnd)
        {
            if (t_tile == null || t_tile.Length < Rows * Tile) t_tile = new float[Rows * Tile];
            if (C > 0 && (t_keys == null || t_keys.Length < Tile)) t_keys = new ulong[Tile];
            int tiles = TileCount;
            // The best tile bound of this chunk so far, per row: tokens keyed above it cannot be among the row's exact best.
            Span<ulong> running = C > 0 ? (Rows <= 256 ? stackalloc ulong[Rows] : new ulong[Rows]) : [];
            running.Fill(ulong.MaxValue);
            for (int t = start; t < end; t++)
            {
                var logits = Logits(t, 0, Rows, t_tile);
                // The next tile's first lines load while this one's rows are summed (its product then starts warm).
                if (t + 1 < streamEnd && W.IsBf16) Bf16Dot.PrefetchStart(W.Bf16Span[((t + 1) * Tile * D)..], NextTileWarmRows * D * sizeof(ushort));
                int n = logits.Length / Rows;
                for (int b = 0; b < Rows; b++)
                {
                    if (!Active[b]) continue;
                    var z = logits.Slice(b * n, n);
                    if (Greedy) TileArg[b * tiles + t] = TensorPrimitives.IndexOfMax(z);
                    else if (InvT != 1) Simd.ZipScalarRight<MulOp>(z, InvT, z); // z·1 = z: nothing to do at T = 1
                    if (C > 0) KeepCandidates(z, t, b * tiles + t, ref running[b]);
                    float max = Simd.Max(z);
                    TileMax[b * tiles + t] = max;
                    TileSum[b * tiles + t] = Simd.SumExp(z, max, BlockSums.Length == 0 ? default
                        : BlockSums.AsSpan((b * tiles + t) * BlocksPerTile, (n + Block - 1) / Block), Block);
                }
            }
        }

        /// <summary>
        /// One row's tile z → its best C keys (of those keyed ≤ <paramref name="running"/>) into the row's slot, and the
        /// tile's bound: its C-th best key when it has more than C tokens and all of its best C beat the running bound.
        /// </summary>
        private void KeepCandidates(ReadOnlySpan<float> z, int tile, int slot, ref ulong running)
        {
            var keys = t_keys!.AsSpan(0, z.Length);
            int m = KeysAbove(z, tile * Tile, running, keys);
            ulong bound = ulong.MaxValue;
            if (z.Length > C && m >= C)
            {
                // All keys below the running bound came in, so these are the tile's best C.
                TokenSampler.Select(keys[..m], C);
                m = C;
                bound = 0;
                foreach (var k in keys[..C]) bound = Math.Max(bound, k);
                running = Math.Min(running, bound);
            }
            keys[..m].CopyTo(Candidates.AsSpan(slot * C, m));
            CandidateCount[slot] = m;
            TileBound[slot] = bound;
        }
    }

    /// <summary>
    /// Keys of the tokens of z (ids from <paramref name="firstId"/>) keyed ≤ <paramref name="bound"/>, in token order →
    /// <paramref name="into"/>; returns their count. A vector compare with bound's value skips the lanes that cannot
    /// pass (Vector256 or Vector128 as <see cref="Simd"/> allows, then a scalar tail); a lane that may pass is keyed.
    /// </summary>
    internal static int KeysAbove(ReadOnlySpan<float> z, int firstId, ulong bound, Span<ulong> into)
    {
        int m = 0, i = 0;
        if (bound == ulong.MaxValue)
        {
            for (; i < z.Length; i++) into[m++] = Key(z[i], firstId + i);
            return m;
        }
        float floor = Value(bound);
        if (Simd.UseAvx2)
        {
            var f = Vector256.Create(floor);
            for (; i <= z.Length - Vector256<float>.Count; i += Vector256<float>.Count)
                if (Vector256.GreaterThanOrEqualAny(Vector256.Create(z.Slice(i, Vector256<float>.Count)), f))
                    m = KeyLanes(z, i, Vector256<float>.Count, firstId, floor, bound, into, m);
        }
        else if (Simd.UseVector128)
        {
            var f = Vector128.Create(floor);
            for (; i <= z.Length - Vector128<float>.Count; i += Vector128<float>.Count)
                if (Vector128.GreaterThanOrEqualAny(Vector128.Create(z.Slice(i, Vector128<float>.Count)), f))
                    m = KeyLanes(z, i, Vector128<float>.Count, firstId, floor, bound, into, m);
        }
        return KeyLanes(z, i, z.Length - i, firstId, floor, bound, into, m);
    }

    private static int KeyLanes(ReadOnlySpan<float> z, int start, int count, int firstId, float floor, ulong bound, Span<ulong> into, int m)
    {
        for (int i = start; i < start + count; i++)
        {
            // z ≥ floor is necessary (ties are settled by the id in the key); NaN never passes.
            if (!(z[i] >= floor)) continue;
            ulong key = Key(z[i], firstId + i);
            if (key <= bound) into[m++] = key;
        }
        return m;
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
            var (m, z) = head.RowTotals(b);
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
            // First the block, by the block masses of pass 1; the sums can fall short of the tile's by rounding: then
            // the last block with mass.
            double scale = Math.Exp(max[tile] - m), local = (target - acc) / scale, run = 0;
            int first = tile * Tile, blocks = (Math.Min(Tile, head.Sampleable - first) + Block - 1) / Block;
            var blockSums = head.BlockSums.AsSpan((b * tiles + tile) * BlocksPerTile, blocks);
            int block = 0;
            while (block < blocks && !(local < run + blockSums[block])) run += blockSums[block++];
            if (block == blocks)
            {
                for (block = blocks - 1; block > 0 && blockSums[block] == 0; block--) { }
                run = 0;
                for (int i = 0; i < block; i++) run += blockSums[i];
            }
            // Then the token: the block's logits made again (one row, Block head rows), searched by a running sum.
            first += block * Block;
            if (t_tile == null || t_tile.Length < Tile) t_tile = new float[Math.Max(head.Rows, 1) * Tile];
            Span<float> e;
            using (Bf16Dot.OffSequence()) e = head.Logits(first, Math.Min(Block, head.Sampleable - first), b, 1, t_tile);
            Simd.ZipScalarRight<MulOp>(e, head.InvT, e);
            Simd.ZipScalarRight<SubOp>(e, max[tile], e);
            Simd.Map<ExpOp>(e, e);
            int pick = -1;
            for (int i = 0; i < e.Length; i++)
            {
                run += e[i];
                if (local < run) { pick = i; break; }
            }
            // The running sum can fall short of the block's vector sum by rounding: take its last possible token.
            if (pick < 0)
                for (pick = e.Length - 1; pick > 0 && e[pick] == 0; pick--) { }
            return (first + pick, (float)(Math.Log(e[pick]) + (max[tile] - m) - Math.Log(z)));
        }
    }

    /// <summary>
    /// Pass 2 of top-k / top-p for rows [start, end): the row's exact candidates merged, filtered and drawn from (see
    /// the class summary); a row whose nucleus reaches below the exact prefix is marked in <c>fallback</c>, undrawn.
    /// </summary>
    private readonly struct FilteredDraws(HeadTiles head, int tiles, SamplingOptions o, Random[] rngs, int[] tokens, float[] logProbs, bool[] fallback) : IRangeWork
    {
        public void Run(int start, int end)
        {
            for (int b = start; b < end; b++)
            {
                if (!head.Active[b]) continue;
                if (Draw(b) is { } pick) (tokens[b], logProbs[b]) = pick;
                else fallback[b] = true;
            }
        }

        private (int Token, float LogProb)? Draw(int b)
        {
            var (m, z) = head.RowTotals(b);

            // The exact prefix: candidates keyed ≤ τ, the smallest tile bound.
            ulong tau = ulong.MaxValue;
            foreach (var bound in head.TileBound.AsSpan(b * tiles, tiles)) tau = Math.Min(tau, bound);
            int c = head.C, total = 0;
            for (int t = 0; t < tiles; t++) total += head.CandidateCount[b * tiles + t];
            if (t_merged == null || t_merged.Length < total) t_merged = new ulong[Math.Max(total, Tile)];
            int exact = 0;
            for (int t = 0; t < tiles; t++)
                foreach (var key in head.Candidates.AsSpan((b * tiles + t) * c, head.CandidateCount[b * tiles + t]))
                    if (key <= tau) t_merged[exact++] = key;
            var k = t_merged.AsSpan(0, exact);

            // As TokenSampler.SampleFiltered, over exp(z − M): the best `limit` tokens (top-k), then the shortest sorted
            // prefix whose mass reaches P of Z (top-p), keep ≥ 1. Only `exact` of them are known in order.
            int limit = o.TopK > 0 ? Math.Min(o.TopK, head.Sampleable) : head.Sampleable;
            // Top-p after top-k measures the nucleus within the top-K tokens, renormalised, as TokenSampler does. With
            // top-k on, C = min(K, Tile), so the exact prefix holds the whole top-K and its mass is known.
            double mass = z;
            if (o.TopK > 0 && o.TopP < 1 && limit < head.Sampleable && limit <= exact)
            {
                if (limit < exact) TokenSampler.Select(k, limit);
                k = k[..limit];
                exact = limit;
                mass = 0;
                foreach (var key in k) mass += Math.Exp((double)Value(key) - m);
            }
            int cap = Math.Min(limit, exact), sorted = 0, keep;
            if (o.TopP < 1 && cap < limit)
            {
                // A flat row: when all that is known holds less than P, no order of it will do; skip the sorting.
                double known = 0;
                foreach (var key in k) known += Math.Exp((double)Value(key) - m);
                if (known / z < o.TopP) return null;
            }
            int next = o.TopP < 1 ? Math.Min(cap, NucleusCandidates) : cap;
            double cum = 0;
            while (true)
            {
                if (next < exact) TokenSampler.Select(k[sorted..], next - sorted);
                k[sorted..next].Sort();
                int n = next;
                if (o.TopP < 1)
                    for (n = sorted; n < next;)
                    {
                        cum += Math.Exp((double)Value(k[n++]) - m) / mass;
                        if (cum >= o.TopP) break;
                    }
                if (o.TopP < 1 && cum >= o.TopP) { keep = Math.Max(1, n); break; }
                if (next == cap)
                {
                    // P not reached (or no top-p) by the end of what is known: exact only if top-k stops here.
                    if (cap < limit) return null;
                    keep = cap;
                    break;
                }
                sorted = next;
                next = (int)Math.Min(cap, 4L * next);
            }

            double kept = 0;
            for (int i = 0; i < keep; i++) kept += Math.Exp((double)Value(k[i]) - m);
            double u = rngs[b].NextDouble() * kept, acc = 0;
            int pick = keep - 1;
            for (int i = 0; i < keep; i++)
            {
                acc += Math.Exp((double)Value(k[i]) - m);
                if (u < acc) { pick = i; break; }
            }
            return ((int)(uint)k[pick], (float)((double)Value(k[pick]) - m - Math.Log(kept)));
        }
    }

    /// <summary>
    /// The fallback for the <paramref name="count"/> rows marked in <paramref name="rows"/>: their full logits [F, V], made
    /// tile by tile (tiles over the threads), then TokenSampler draws for them, one draw each from their own streams.
    /// </summary>
    private static void SampleFullRows(HeadTiles head, int tiles, SamplingOptions o, Random[] rngs, bool[] rows, int count, int[] tokens, float[] logProbs)
    {
        int v = head.Sampleable, d = head.D;
        var which = Enumerable.Range(0, rows.Length).Where(b => rows[b]).ToArray();
        var hidden = new float[count * d];
        for (int f = 0; f < count; f++) head.Hidden.AsSpan(which[f] * d, d).CopyTo(hidden.AsSpan(f * d));
        var logits = new float[(long)count * v];
        ParallelFor.Run(tiles, 1, new FullRows(head with { Hidden = hidden, Rows = count }, logits));
        var (picked, picks) = (new int[count], new float[count]);
        TokenSampler.SampleRows(logits, v, v, o, which.Select(b => rngs[b]).ToArray(), Enumerable.Repeat(true, count).ToArray(), picked, picks);
        for (int f = 0; f < count; f++) (tokens[which[f]], logProbs[which[f]]) = (picked[f], picks[f]);
    }

    /// <summary>Tiles [start, end) of every row of the head: logits (capped, not divided by T) into Full [Rows, Sampleable].</summary>
    private readonly struct FullRows(HeadTiles head, float[] full) : IRangeWork
    {
        public void Run(int start, int end)
        {
            if (t_tile == null || t_tile.Length < head.Rows * Tile) t_tile = new float[head.Rows * Tile];
            for (int t = start; t < end; t++)
            {
                var logits = head.Logits(t, 0, head.Rows, t_tile);
                int n = logits.Length / head.Rows;
                for (int r = 0; r < head.Rows; r++) logits.Slice(r * n, n).CopyTo(full.AsSpan(r * head.Sampleable + t * Tile, n));
            }
        }
    }
}
