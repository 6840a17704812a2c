using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using System.Numerics.Tensors;

namespace AlignSharp.Engine.Kernels;

/// <summary>
/// The shape of one causal attention call. Legend: B batch, T queries, S keys, Hq query heads, Hkv key/value heads,
/// G = Hq/Hkv, D head size, W window, S' = min(S, positionOffset + T) keys that any query can see. q and o are
/// [B, T, Hq, D], k and v [B, S, Hkv, D], the probabilities [B, Hq, T, S'], all row-major. With
/// <c>packedLd</c> &gt; 0, q, k and v (and their gradients) are instead column ranges of one packed [B, T, packedLd]
/// tensor (S = T): each of their rows is packedLd floats after the previous one.
/// </summary>
internal readonly struct AttentionGeometry(int batch, int queries, int keys, int queryHeads, int kvHeads, int headDim,
    int positionOffset, int? window, bool[]? keyMask, float scale, float cap, int packedLd = 0, int[]? segmentStarts = null,
    float[]? alibiSlopes = null)
{
    /// <summary>[Hq], or null: ALiBi's slope m of each query head; key s then adds m·(s − p) to the scaled score of the
    /// query at position p (see <see cref="AttentionKernels.AddAlibi"/>).</summary>
    public readonly float[]? AlibiSlopes = alibiSlopes;

    /// <summary>[B·T], or null: the first key query t of row b may see, its sequence's first token when several sequences
    /// are packed into one row (nondecreasing along a row, at most the query's own index).</summary>
    public readonly int[]? SegmentStarts = segmentStarts;

    public readonly int Batch = batch, Queries = queries, Keys = keys, QueryHeads = queryHeads, KvHeads = kvHeads, HeadDim = headDim;
    public readonly int PositionOffset = positionOffset;
    public readonly int? Window = window;
    public readonly bool[]? KeyMask = keyMask;
    public readonly float Scale = scale, Cap = cap;

    /// <summary>S': keys past it are never attended.</summary>
    public int VisibleKeys => (int)Math.Min(Keys, (long)PositionOffset + Queries);
    public int Group => QueryHeads / KvHeads;
    public int QueryStride => QueryHeads * HeadDim;
    public int KvStride => KvHeads * HeadDim;
    /// <summary>Floats between consecutive rows of q (and dQ); of k and v (and dK, dV); of o (and dO).</summary>
    public int QueryLd => packedLd > 0 ? packedLd : QueryStride;
    public int KvLd => packedLd > 0 ? packedLd : KvStride;
    public int OutLd => QueryStride;
    /// <summary>T·S' probabilities per (batch, query head).</summary>
    public int ProbSize => Queries * VisibleKeys;

    /// <summary>Multiply-adds of one head's QKᵀ (the block GEMMs skip what no query of a block sees).</summary>
    public long WorkPerHead => (long)Queries * (Window is int w ? Math.Min(VisibleKeys, (long)w + AttentionKernels.QueryBlock) : VisibleKeys) * HeadDim;

    /// <summary>
    /// Keys query <paramref name="query"/> of row <paramref name="row"/> (absolute position p = offset + query) may see
    /// before the key mask: [max(0, p − W + 1, its segment's start), min(S', p + 1)), or from 0 without a window or
    /// segments. Lo ≤ Hi always (an empty range is Hi, Hi).
    /// </summary>
    public (int Lo, int Hi) KeyRange(int row, int query)
    {
        long p = (long)PositionOffset + query;
        int hi = (int)Math.Min(VisibleKeys, p + 1);
        int lo = Window is int w ? (int)Math.Clamp(p - w + 1, 0, hi) : 0;
        if (SegmentStarts != null) lo = Math.Min(hi, Math.Max(lo, SegmentStarts[row * Queries + query]));
        return (lo, hi);
    }

    /// <summary>Keys a block of queries [t0, t0 + rows) of row <paramref name="row"/> may see, the union of their ranges
    /// (each end moves forward with the query): [Lo of t0, Hi of the last).</summary>
    public (int Lo, int Hi) BlockKeys(int row, int t0, int rows) => (KeyRange(row, t0).Lo, KeyRange(row, t0 + rows - 1).Hi);
}

/// <summary>
/// Causal scaled-dot-product attention, forward and backward (see <c>Ops.CausalAttention</c> for the contract). Heads
/// split across threads as struct work items: the forward owns whole (b, query head) pairs, the backward whole
/// (b, kv head) pairs, since the G query heads that share a kv head accumulate into the same dK/dV rows. Scratch comes
/// from <see cref="BufferPool"/>.
/// </summary>
internal static class AttentionKernels
{
    /// <summary>Up to this many queries per head, scores and outputs are formed row by row with dot products
    /// (KV-cached decoding); above it, with GEMMs.</summary>
    public const int RowPathMaxT = 4;

    /// <summary>Queries per GEMM block. Each block multiplies only against the keys from its first query's
    /// window start to its last query's position, so causal self-attention does ~(1 + 64/T)/2 of the full
    /// QKᵀ and PV work, and with a window W at most (W + 63)·64 scores per block.</summary>
    public const int QueryBlock = 64;

    /// <summary>o = softmax(scale·q·kᵀ + mask)·v; the probabilities go to p when given (a gradient is needed).</summary>
    public static void Forward(in AttentionGeometry g, float[] q, int qo, float[] k, int ko, float[] v, int vo, float[] o, int oo, float[]? p, int po)
    {
        if (p == null && DecodesByGroup(g))
            ParallelFor.Run(g.Batch * g.KvHeads, (int)Math.Max(1, (1 << 16) / Math.Max(1, g.WorkPerHead * g.Group)),
                new GroupWork(g, q, qo, k, ko, v, vo, o, oo));
        else
            ParallelFor.Run(g.Batch * g.QueryHeads, (int)Math.Max(1, (1 << 16) / Math.Max(1, g.WorkPerHead)),
                new ForwardWork(g, q, qo, k, ko, v, vo, o, oo, p, po));
    }

    /// <summary>
    /// ALiBi on one row of raw scores (before the scale): key j in [lo, hi) gains m·(j − p) / scale, so that the scaled score
    /// gains m·(j − p) for query head <paramref name="head"/>'s slope m and the query's position p. Keys are counted by
    /// cache slot: for the contiguous tokens of a row (left padding, right padding, packed sequences) j − p is the
    /// distance transformers forms from the mask's running count, and softmax ignores the shift that differs. Nothing
    /// without slopes. Every path applies it at the same point, so they keep giving the same bits.
    /// </summary>
    internal static unsafe void AddAlibi(float* row, int lo, int hi, in AttentionGeometry g, int head, long p)
    {
        if (g.AlibiSlopes is not { } slopes) return;
        float step = slopes[head] / g.Scale;
        for (int j = lo; j < hi; j++) row[j] += step * (float)(j - p);
    }

    /// <summary>A decoding step (one query per row, no probabilities kept, no soft cap, head sizes of whole 512-bit
    /// vectors) runs by (row, kv head): see <see cref="GroupRows512"/>.</summary>
    private static bool DecodesByGroup(in AttentionGeometry g) =>
        g.Queries == 1 && g.Cap == 0 && Rows512(g.HeadDim);

    /// <summary>Whether the 512-bit row kernels (<see cref="HeadRows512"/>, <see cref="GroupRows512"/>) take head size d.</summary>
    private static bool Rows512(int d) => Vector512.IsHardwareAccelerated && Avx512F.IsSupported && d % Vector512<float>.Count == 0;

    /// <summary>Keys per block of <see cref="GroupRows512"/>: 64 rows of K (or V) of head size 64 are 16 KB, in L1 with room.</summary>
    private const int GroupKeyBlock = 64;

    private readonly struct GroupWork(AttentionGeometry g, float[] qa, int qo, float[] ka, int ko, float[] va, int vo, float[] oa, int oo) : IRangeWork
    {
        public unsafe void Run(int start, int end)
        {
            int s = g.Keys, d = g.HeadDim, kvLd = g.KvLd, qLd = g.QueryLd, oLd = g.OutLd;
            // The G heads' weights, then one row of zeros: the weights of the heads that pad the group to a multiple of
            // SharedHeads in AddSharedRows (they add nothing, into a scratch row).
            int weights = g.Group * g.VisibleKeys;
            float[] p = BufferPool.Rent(weights + g.VisibleKeys + d);
            Array.Clear(p, weights, g.VisibleKeys);
            fixed (float* q0 = qa, k0 = ka, v0 = va, o0 = oa, p0 = p)
            {
                for (int gi = start; gi < end; gi++)
                {
                    int b = gi / g.KvHeads, kvh = gi % g.KvHeads, h = kvh * g.Group;
                    long kv = (long)b * s * kvLd + kvh * d;
                    GroupRows512(g, q0 + qo + (long)b * qLd + h * d, k0 + ko + kv, v0 + vo + kv, o0 + oo + (long)b * oLd + h * d, p0,
                        p0 + weights + g.VisibleKeys, b * s, h);
                }
            }
            BufferPool.Return(p);
        }
    }

    /// <summary>
    /// The G query heads that share one kv head, one query each (a decoding step), over keys in blocks of
    /// <see cref="GroupKeyBlock"/>: each block's K rows (then V rows) come from memory or L2 once and are read by every head
    /// from L1. Head by head, as <see cref="HeadRows512"/> goes, a long cache came from L2 G times (at 400 keys a kv head's
    /// K is 100 KB): batch 8 at 400 keys, 212 → 172 µs a call (before <see cref="Scores64"/>). Per head the same products and sums in the same order as
    /// <see cref="HeadRows512"/>, so the same bits: scores 16 keys at a time (the tail one by one), the two-pass softmax,
    /// P·V in registers over a block, carried in the output row from block to block (a float32 store and load change
    /// nothing), normalised at the end.
    /// </summary>
    private static unsafe void GroupRows512(in AttentionGeometry g, float* q, float* k, float* v, float* o, float* p, float* scratch, int maskOffset,
        int firstHead)
    {
        int d = g.HeadDim, group = g.Group, sEff = g.VisibleKeys, ld = g.KvLd;
        var (lo, hi) = g.KeyRange(maskOffset / g.Keys, 0);
        // A row whose keys [lo, hi) are all allowed (every row of a batch without padding) skips the mask, once for its
        // G heads: the same scores and exps either way.
        var keyMask = g.KeyMask != null && g.KeyMask.AsSpan(maskOffset + lo, hi - lo).Contains(false) ? g.KeyMask : null;
        for (int b0 = lo; b0 < hi; b0 += GroupKeyBlock)
        {
            int b1 = Math.Min(hi, b0 + GroupKeyBlock);
            for (int h = 0; h < group; h++) Scores(q + h * d, k, ld, d, p + h * sEff, b0, b1);
        }

        Span<float> inv = group <= 64 ? stackalloc float[group] : new float[group];
        for (int h = 0; h < group; h++)
        {
            AddAlibi(p + h * sEff, lo, hi, g, firstHead + h, g.PositionOffset);
            if (!ExpRow(p + h * sEff, lo, hi, g.Scale, keyMask, maskOffset, out inv[h]))
            {
                // No key allowed: zero weights and a zero inverse, so the output row stays zero, as HeadRows512 gives.
                inv[h] = 0f;
                new Span<float>(p + h * sEff + lo, hi - lo).Clear();
            }
            new Span<float>(o + h * d, d).Clear();
        }
        // Heads past the group (padding it to a multiple of SharedHeads) read the zero row that follows the G heads'
        // weights, at p + G·S', and write the scratch row.
        static float* Weights(float* p, int head, int group, int sEff) => p + (long)Math.Min(head, group) * sEff;
        static float* Output(float* o, int head, int group, int d, float* scratch) => head < group ? o + (long)head * d : scratch;
        for (int b0 = lo; b0 < hi; b0 += GroupKeyBlock)
        {
            int b1 = Math.Min(hi, b0 + GroupKeyBlock);
            for (int h = 0; h < group; h += SharedHeads)
                AddSharedRows(Weights(p, h, group, sEff), Weights(p, h + 1, group, sEff), Weights(p, h + 2, group, sEff), Weights(p, h + 3, group, sEff),
                    b0, b1, v, ld, d, Output(o, h, group, d, scratch), Output(o, h + 1, group, d, scratch),
                    Output(o, h + 2, group, d, scratch), Output(o, h + 3, group, d, scratch));
        }
        for (int h = 0; h < group; h++)
        {
            var row = new Span<float>(o + h * d, d);
            TensorPrimitives.Multiply(row, inv[h], row);
        }
    }

    /// <summary>
    /// s[j] = q·k_j for keys j in [lo, hi) (k_j = k + j·ld, d floats): 16 keys at a time, their 16 dot-product vectors
    /// summed by one transposing tree (45 shuffles and adds, against 16 horizontal sums), the tail key by key.
    /// </summary>
    private static unsafe void Scores(float* q, float* k, int ld, int d, float* s, int lo, int hi)
    {
        int sk = d == 64 ? Scores64(q, k, ld, s, lo, hi) : d == 128 ? Scores128(q, k, ld, s, lo, hi) : lo;
        for (; sk + 16 <= hi; sk += 16)
        {
            float* r = k + (long)sk * ld;
            SumEach(Dot(q, r, d), Dot(q, r + ld, d), Dot(q, r + 2 * ld, d), Dot(q, r + 3 * ld, d),
                    Dot(q, r + 4 * ld, d), Dot(q, r + 5 * ld, d), Dot(q, r + 6 * ld, d), Dot(q, r + 7 * ld, d),
                    Dot(q, r + 8 * ld, d), Dot(q, r + 9 * ld, d), Dot(q, r + 10 * ld, d), Dot(q, r + 11 * ld, d),
                    Dot(q, r + 12 * ld, d), Dot(q, r + 13 * ld, d), Dot(q, r + 14 * ld, d), Dot(q, r + 15 * ld, d))
                .Store(s + sk);
        }
        for (; sk < hi; sk++) s[sk] = Vector512.Sum(Dot(q, k + (long)sk * ld, d));
    }

    /// <summary>
    /// <see cref="Scores"/> for head size 64 with q in four registers and each key's dot product unrolled:
    /// from L1 the general loop (a loop per key, q reloaded) ran 2.25 ns a key, this 1.45. The same products in the same
    /// order as <see cref="Dot"/>, so the same bits. Returns the first key of the tail (fewer than 16 keys) left to score.
    /// </summary>
    private static unsafe int Scores64(float* q, float* k, int ld, float* s, int lo, int hi)
    {
        Vector512<float> q0 = Vector512.Load(q), q1 = Vector512.Load(q + 16), q2 = Vector512.Load(q + 32), q3 = Vector512.Load(q + 48);
        int sk = lo;
        for (; sk + 16 <= hi; sk += 16)
        {
            float* r = k + (long)sk * ld;
            SumEach(Dot64(q0, q1, q2, q3, r), Dot64(q0, q1, q2, q3, r + ld), Dot64(q0, q1, q2, q3, r + 2 * ld), Dot64(q0, q1, q2, q3, r + 3 * ld),
                    Dot64(q0, q1, q2, q3, r + 4 * ld), Dot64(q0, q1, q2, q3, r + 5 * ld), Dot64(q0, q1, q2, q3, r + 6 * ld), Dot64(q0, q1, q2, q3, r + 7 * ld),
                    Dot64(q0, q1, q2, q3, r + 8 * ld), Dot64(q0, q1, q2, q3, r + 9 * ld), Dot64(q0, q1, q2, q3, r + 10 * ld), Dot64(q0, q1, q2, q3, r + 11 * ld),
                    Dot64(q0, q1, q2, q3, r + 12 * ld), Dot64(q0, q1, q2, q3, r + 13 * ld), Dot64(q0, q1, q2, q3, r + 14 * ld), Dot64(q0, q1, q2, q3, r + 15 * ld))
                .Store(s + sk);
        }
        return sk;
    }

    /// <summary><see cref="Scores64"/> for head size 128 (q in eight registers).</summary>
    private static unsafe int Scores128(float* q, float* k, int ld, float* s, int lo, int hi)
    {
        Vector512<float> q0 = Vector512.Load(q), q1 = Vector512.Load(q + 16), q2 = Vector512.Load(q + 32), q3 = Vector512.Load(q + 48);
        Vector512<float> q4 = Vector512.Load(q + 64), q5 = Vector512.Load(q + 80), q6 = Vector512.Load(q + 96), q7 = Vector512.Load(q + 112);
        int sk = lo;
        for (; sk + 16 <= hi; sk += 16)
        {
            float* r = k + (long)sk * ld;
            SumEach(Dot128(q0, q1, q2, q3, q4, q5, q6, q7, r), Dot128(q0, q1, q2, q3, q4, q5, q6, q7, r + ld),
                    Dot128(q0, q1, q2, q3, q4, q5, q6, q7, r + 2 * ld), Dot128(q0, q1, q2, q3, q4, q5, q6, q7, r + 3 * ld),
                    Dot128(q0, q1, q2, q3, q4, q5, q6, q7, r + 4 * ld), Dot128(q0, q1, q2, q3, q4, q5, q6, q7, r + 5 * ld),
                    Dot128(q0, q1, q2, q3, q4, q5, q6, q7, r + 6 * ld), Dot128(q0, q1, q2, q3, q4, q5, q6, q7, r + 7 * ld),
                    Dot128(q0, q1, q2, q3, q4, q5, q6, q7, r + 8 * ld), Dot128(q0, q1, q2, q3, q4, q5, q6, q7, r + 9 * ld),
                    Dot128(q0, q1, q2, q3, q4, q5, q6, q7, r + 10 * ld), Dot128(q0, q1, q2, q3, q4, q5, q6, q7, r + 11 * ld),
                    Dot128(q0, q1, q2, q3, q4, q5, q6, q7, r + 12 * ld), Dot128(q0, q1, q2, q3, q4, q5, q6, q7, r + 13 * ld),
                    Dot128(q0, q1, q2, q3, q4, q5, q6, q7, r + 14 * ld), Dot128(q0, q1, q2, q3, q4, q5, q6, q7, r + 15 * ld))
                .Store(s + sk);
        }
        return sk;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe Vector512<float> Dot128(Vector512<float> q0, Vector512<float> q1, Vector512<float> q2, Vector512<float> q3,
        Vector512<float> q4, Vector512<float> q5, Vector512<float> q6, Vector512<float> q7, float* k) =>
        Vector512.FusedMultiplyAdd(q7, Vector512.Load(k + 112), Vector512.FusedMultiplyAdd(q6, Vector512.Load(k + 96),
            Vector512.FusedMultiplyAdd(q5, Vector512.Load(k + 80), Vector512.FusedMultiplyAdd(q4, Vector512.Load(k + 64),
                Dot64(q0, q1, q2, q3, k)))));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe Vector512<float> Dot64(Vector512<float> q0, Vector512<float> q1, Vector512<float> q2, Vector512<float> q3, float* k) =>
        Vector512.FusedMultiplyAdd(q3, Vector512.Load(k + 48), Vector512.FusedMultiplyAdd(q2, Vector512.Load(k + 32),
            Vector512.FusedMultiplyAdd(q1, Vector512.Load(k + 16), q0 * Vector512.Load(k))));

    /// <summary>Heads <see cref="AddSharedRows"/> takes together: 4 × 4 accumulators of a 64-float slice, 4 V vectors and a
    /// weight in 25 of the 32 vector registers.</summary>
    private const int SharedHeads = 4;

    /// <summary>
    /// <see cref="AddWeightedRows"/> for four heads that read the same V rows (query heads of one kv head): o_i[0, d) +=
    /// Σ_{k in [lo, hi)} w_i[k] · v_k. Each V vector is loaded once for the four, and their sums advance side by side: head
    /// by head, each key's adds waited on the previous key's. With the mask skipped for rows that allow every key,
    /// <c>decode-attention</c> (batch 8, 14 heads over 2, hot) went 40.8 → 29.1 µs a call on one thread and 25.5 → 19.1 on
    /// two at 80 keys, 259 → 187 and 156 → 97 at 512 (docs/performance.md). Per head the same products and sums in the
    /// same order as AddWeightedRows, zero weights skipped alike, so the same bits.
    /// </summary>
    private static unsafe void AddSharedRows(float* w0, float* w1, float* w2, float* w3, int lo, int hi, float* v, int ld, int d,
        float* o0, float* o1, float* o2, float* o3)
    {
        int c = 0;
        for (; c + 64 <= d; c += 64)
        {
            Vector512<float> a00 = Vector512.Load(o0 + c), a01 = Vector512.Load(o0 + c + 16), a02 = Vector512.Load(o0 + c + 32), a03 = Vector512.Load(o0 + c + 48);
            Vector512<float> a10 = Vector512.Load(o1 + c), a11 = Vector512.Load(o1 + c + 16), a12 = Vector512.Load(o1 + c + 32), a13 = Vector512.Load(o1 + c + 48);
            Vector512<float> a20 = Vector512.Load(o2 + c), a21 = Vector512.Load(o2 + c + 16), a22 = Vector512.Load(o2 + c + 32), a23 = Vector512.Load(o2 + c + 48);
            Vector512<float> a30 = Vector512.Load(o3 + c), a31 = Vector512.Load(o3 + c + 16), a32 = Vector512.Load(o3 + c + 32), a33 = Vector512.Load(o3 + c + 48);
            float* vr = v + (long)lo * ld + c;
            for (int k = lo; k < hi; k++, vr += ld)
            {
                var v0 = Vector512.Load(vr); var v1 = Vector512.Load(vr + 16); var v2 = Vector512.Load(vr + 32); var v3 = Vector512.Load(vr + 48);
                AddScaled(w0[k], v0, v1, v2, v3, ref a00, ref a01, ref a02, ref a03);
                AddScaled(w1[k], v0, v1, v2, v3, ref a10, ref a11, ref a12, ref a13);
                AddScaled(w2[k], v0, v1, v2, v3, ref a20, ref a21, ref a22, ref a23);
                AddScaled(w3[k], v0, v1, v2, v3, ref a30, ref a31, ref a32, ref a33);
            }
            a00.Store(o0 + c); a01.Store(o0 + c + 16); a02.Store(o0 + c + 32); a03.Store(o0 + c + 48);
            a10.Store(o1 + c); a11.Store(o1 + c + 16); a12.Store(o1 + c + 32); a13.Store(o1 + c + 48);
            a20.Store(o2 + c); a21.Store(o2 + c + 16); a22.Store(o2 + c + 32); a23.Store(o2 + c + 48);
            a30.Store(o3 + c); a31.Store(o3 + c + 16); a32.Store(o3 + c + 32); a33.Store(o3 + c + 48);
        }
        for (; c < d; c += 16)
        {
            Vector512<float> a0 = Vector512.Load(o0 + c), a1 = Vector512.Load(o1 + c), a2 = Vector512.Load(o2 + c), a3 = Vector512.Load(o3 + c);
            float* vr = v + (long)lo * ld + c;
            for (int k = lo; k < hi; k++, vr += ld)
            {
                var vk = Vector512.Load(vr);
                if (w0[k] != 0f) a0 = Vector512.FusedMultiplyAdd(Vector512.Create(w0[k]), vk, a0);
                if (w1[k] != 0f) a1 = Vector512.FusedMultiplyAdd(Vector512.Create(w1[k]), vk, a1);
                if (w2[k] != 0f) a2 = Vector512.FusedMultiplyAdd(Vector512.Create(w2[k]), vk, a2);
                if (w3[k] != 0f) a3 = Vector512.FusedMultiplyAdd(Vector512.Create(w3[k]), vk, a3);
            }
            a0.Store(o0 + c); a1.Store(o1 + c); a2.Store(o2 + c); a3.Store(o3 + c);
        }
    }

    /// <summary>a_i += w · v_i for the four vectors of a 64-float slice, unless w is 0 (a masked key's V may be anything).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void AddScaled(float w, Vector512<float> v0, Vector512<float> v1, Vector512<float> v2, Vector512<float> v3,
        ref Vector512<float> a0, ref Vector512<float> a1, ref Vector512<float> a2, ref Vector512<float> a3)
    {
        if (w == 0f) return;
        var x = Vector512.Create(w);
        a0 = Vector512.FusedMultiplyAdd(x, v0, a0);
        a1 = Vector512.FusedMultiplyAdd(x, v1, a1);
        a2 = Vector512.FusedMultiplyAdd(x, v2, a2);
        a3 = Vector512.FusedMultiplyAdd(x, v3, a3);
    }

    /// <summary>o[0, d) += Σ_{k in [lo, hi)} w[k] · v_k (v_k = v + k·ld), 64 then 16 floats at a time in registers, skipping
    /// zero weights (masked keys, whose V may be anything, or exps that underflowed).</summary>
    private static unsafe void AddWeightedRows(float* w, int lo, int hi, float* v, int ld, int d, float* o)
    {
        int c = 0;
        for (; c + 64 <= d; c += 64)
        {
            Vector512<float> a0 = Vector512.Load(o + c), a1 = Vector512.Load(o + c + 16), a2 = Vector512.Load(o + c + 32), a3 = Vector512.Load(o + c + 48);
            float* vr = v + (long)lo * ld + c;
            for (int k = lo; k < hi; k++, vr += ld)
            {
                if (w[k] == 0f) continue;
                var wk = Vector512.Create(w[k]);
                a0 = Vector512.FusedMultiplyAdd(wk, Vector512.Load(vr), a0);
                a1 = Vector512.FusedMultiplyAdd(wk, Vector512.Load(vr + 16), a1);
                a2 = Vector512.FusedMultiplyAdd(wk, Vector512.Load(vr + 32), a2);
                a3 = Vector512.FusedMultiplyAdd(wk, Vector512.Load(vr + 48), a3);
            }
            a0.Store(o + c);
            a1.Store(o + c + 16);
            a2.Store(o + c + 32);
            a3.Store(o + c + 48);
        }
        for (; c < d; c += 16)
        {
            var a0 = Vector512.Load(o + c);
            float* vr = v + (long)lo * ld + c;
            for (int k = lo; k < hi; k++, vr += ld)
                if (w[k] != 0f) a0 = Vector512.FusedMultiplyAdd(Vector512.Create(w[k]), Vector512.Load(vr), a0);
            a0.Store(o + c);
        }
    }

    private readonly struct ForwardWork(AttentionGeometry g, float[] qa, int qo, float[] ka, int ko, float[] va, int vo,
        float[] oa, int oo, float[]? pa, int po) : IRangeWork
    {
        public unsafe void Run(int start, int end)
        {
            int t = g.Queries, s = g.Keys, hq = g.QueryHeads, d = g.HeadDim, sEff = g.VisibleKeys;
            int qLd = g.QueryLd, kvLd = g.KvLd, oLd = g.OutLd, pSize = g.ProbSize;
            float[]? scratch = pa == null ? BufferPool.Rent(pSize) : null;
            for (int bh = start; bh < end; bh++)
            {
                int b = bh / hq, h = bh % hq, kvh = h / g.Group;
                var p = pa != null ? pa.AsSpan(po + bh * pSize, pSize) : scratch.AsSpan(0, pSize);
                int qOff = qo + b * t * qLd + h * d;
                int kOff = ko + b * s * kvLd + kvh * d;
                int vOff = vo + b * s * kvLd + kvh * d;
                int oOff = oo + b * t * oLd + h * d;
                if (t <= RowPathMaxT)
                {
                    HeadRows(g, qa, qOff, ka, kOff, va, vOff, oa, oOff, p, b * s, h, keep: pa != null);
                    continue;
                }
                for (int t0 = 0; t0 < t; t0 += QueryBlock)
                {
                    // Query block [t0, t1) sees keys [lo, hi): the GEMMs skip the causal upper triangle and,
                    // with a window, the keys every query of the block has left behind. Scores outside a row's
                    // own range (stale columns included) are cleared by its softmax.
                    int rowsIn = Math.Min(QueryBlock, t - t0);
                    var (lo, hi) = g.BlockKeys(b, t0, rowsIn);
                    var pb = p.Slice(t0 * sEff, rowsIn * sEff);
                    Gemm.Multiply(false, true, rowsIn, hi - lo, d, qa.AsSpan(qOff + t0 * qLd), qLd, ka.AsSpan(kOff + lo * kvLd), kvLd, pb[lo..], sEff, false);
                    for (int tq = t0; tq < t0 + rowsIn; tq++)
                    {
                        var (rLo, rHi) = g.KeyRange(b, tq);
                        if (g.AlibiSlopes != null)
                            fixed (float* row = p.Slice(tq * sEff, sEff)) AddAlibi(row, rLo, rHi, g, h, (long)g.PositionOffset + tq);
                        SoftmaxRow(p.Slice(tq * sEff, sEff), rLo, rHi, g.Scale, g.Cap, g.KeyMask, b * s);
                    }
                    // No key at all (hi == lo): a zero-depth GEMM writes zeros, the empty-row output.
                    Gemm.Multiply(false, false, rowsIn, d, hi - lo, pb[lo..], sEff, va.AsSpan(vOff + lo * kvLd), kvLd, oa.AsSpan(oOff + t0 * oLd), oLd, false);
                }
            }
            if (scratch != null) BufferPool.Return(scratch);
        }
    }

    /// <summary>
    /// One (batch, head) for few queries: scores by dot products over each query's visible keys only (window
    /// included), then O = P·V by scaled adds. p [T, S'] receives the probabilities when <paramref name="keep"/> (they are
    /// saved for backward); otherwise it is scratch, left holding weights that may not be normalised.
    /// </summary>
    private static unsafe void HeadRows(in AttentionGeometry g, float[] qa, int qOff, float[] ka, int kOff, float[] va, int vOff,
        float[] oa, int oOff, Span<float> p, int maskOffset, int head, bool keep)
    {
        int d = g.HeadDim, sEff = g.VisibleKeys, qLd = g.QueryLd, kvLd = g.KvLd, oLd = g.OutLd;
        if (Rows512(d))
        {
            HeadRows512(g, qa, qOff, ka, kOff, va, vOff, oa, oOff, p, maskOffset, head, keep);
            return;
        }
        var keyMask = g.KeyMask;
        int row = maskOffset / g.Keys;
        for (int tq = 0; tq < g.Queries; tq++)
        {
            var (lo, hi) = g.KeyRange(row, tq);
            var qr = qa.AsSpan(qOff + tq * qLd, d);
            var pr = p.Slice(tq * sEff, sEff);
            for (int sk = lo; sk < hi; sk++)
                pr[sk] = keyMask != null && !keyMask[maskOffset + sk] ? 0f : Simd.Dot(qr, ka.AsSpan(kOff + sk * kvLd, d));
            if (g.AlibiSlopes != null)
                fixed (float* scores = pr) AddAlibi(scores, lo, hi, g, head, (long)g.PositionOffset + tq);
            SoftmaxRow(pr, lo, hi, g.Scale, g.Cap, keyMask, maskOffset);
            var or = oa.AsSpan(oOff + tq * oLd, d);
            or.Clear();
            for (int sk = lo; sk < hi; sk++)
                if (pr[sk] != 0f) Simd.ScaleAddInto(va.AsSpan(vOff + sk * kvLd, d), pr[sk], or);
        }
    }

    /// <summary>
    /// <see cref="HeadRows"/> for head sizes that are whole 512-bit vectors (64 and 128 in today's models), over pointers.
    /// Decoding calls this once per (row, head, layer) over every cached key, where per-key and per-pass overheads cost
    /// more than the arithmetic, so: scores 16 keys at a time, whose 16 dot-product vectors are summed by one transposing
    /// tree (45 shuffles and adds, against 16 horizontal sums); the softmax in two passes (scale, mask and max; exp and
    /// sum) instead of six; and O = P·V with the output in registers, 64 floats at a time, normalised once at the end.
    /// With a soft cap the softmax is <see cref="SoftmaxRow"/>'s. p as in <see cref="HeadRows"/>.
    /// </summary>
    private static unsafe void HeadRows512(in AttentionGeometry g, float[] qa, int qOff, float[] ka, int kOff, float[] va, int vOff,
        float[] oa, int oOff, Span<float> p, int maskOffset, int head, bool keep)
    {
        int d = g.HeadDim, sEff = g.VisibleKeys, qLd = g.QueryLd, kvLd = g.KvLd, oLd = g.OutLd;
        var keyMask = g.KeyMask;
        int row = maskOffset / g.Keys;
        fixed (float* q0 = qa, k0 = ka, v0 = va, o0 = oa, p0 = p)
        {
            for (int tq = 0; tq < g.Queries; tq++)
            {
                var (lo, hi) = g.KeyRange(row, tq);
                float* qr = q0 + qOff + (long)tq * qLd, kb = k0 + kOff, vb = v0 + vOff, or = o0 + oOff + (long)tq * oLd;
                var pr = p.Slice(tq * sEff, sEff);
                pr[..lo].Clear();
                pr[hi..].Clear();
                float* ps = p0 + (long)tq * sEff;
                Scores(qr, kb, kvLd, d, ps, lo, hi);
                AddAlibi(ps, lo, hi, g, head, (long)g.PositionOffset + tq);

                float inv = 1f;
                if (g.Cap > 0) SoftmaxRow(pr, lo, hi, g.Scale, g.Cap, keyMask, maskOffset);
                else if (!ExpRow(ps, lo, hi, g.Scale, keyMask, maskOffset, out inv))
                {
                    pr.Clear(); // no key allowed: zero probabilities, zero output
                    new Span<float>(or, d).Clear();
                    continue;
                }
                WeightedRows(ps, lo, hi, vb, kvLd, d, inv, or);
                if (keep && inv != 1f) TensorPrimitives.Multiply(pr[lo..hi], inv, pr[lo..hi]);
            }
        }
    }

    /// <summary>q·k over d floats (a multiple of 16), as 16 partial sums.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe Vector512<float> Dot(float* q, float* k, int d)
    {
        var acc = Vector512.Load(q) * Vector512.Load(k);
        for (int c = 16; c < d; c += 16) acc = Vector512.FusedMultiplyAdd(Vector512.Load(q + c), Vector512.Load(k + c), acc);
        return acc;
    }

    /// <summary>The 16 horizontal sums of a0..a15, in order, as one vector: pairs, then quads within 128-bit lanes
    /// (unpacks), then across lanes (128-bit shuffles).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> SumEach(Vector512<float> a0, Vector512<float> a1, Vector512<float> a2, Vector512<float> a3,
        Vector512<float> a4, Vector512<float> a5, Vector512<float> a6, Vector512<float> a7,
        Vector512<float> a8, Vector512<float> a9, Vector512<float> a10, Vector512<float> a11,
        Vector512<float> a12, Vector512<float> a13, Vector512<float> a14, Vector512<float> a15)
    {
        // Per 128-bit lane: [x0+x2, y0+y2, x1+x3, y1+y3] for x = a(2i), y = a(2i+1) …
        static Vector512<float> Pairs(Vector512<float> x, Vector512<float> y) => Avx512F.UnpackLow(x, y) + Avx512F.UnpackHigh(x, y);
        // … then [Σx, Σy, Σx', Σy'] of the lane for two pairs (64-bit unpacks move the float pairs; the adds are float) …
        static Vector512<float> Quads(Vector512<float> x, Vector512<float> y)
            => Avx512F.UnpackLow(x.AsDouble(), y.AsDouble()).AsSingle() + Avx512F.UnpackHigh(x.AsDouble(), y.AsDouble()).AsSingle();
        // … then lanes (0+1, 2+3) of x, then of y: 0x88 picks lanes 0, 2 of each, 0xDD lanes 1, 3.
        static Vector512<float> Lanes(Vector512<float> x, Vector512<float> y) => Avx512F.Shuffle4x128(x, y, 0x88) + Avx512F.Shuffle4x128(x, y, 0xDD);
        var c0 = Quads(Pairs(a0, a1), Pairs(a2, a3));
        var c1 = Quads(Pairs(a4, a5), Pairs(a6, a7));
        var c2 = Quads(Pairs(a8, a9), Pairs(a10, a11));
        var c3 = Quads(Pairs(a12, a13), Pairs(a14, a15));
        return Lanes(Lanes(c0, c1), Lanes(c2, c3));
    }

    /// <summary>
    /// Scores [lo, hi) → exp(scale·s − max) in place, keys the mask forbids → 0; inv = 1 / their sum. False when no key is
    /// allowed. The same exp as <see cref="SoftmaxRow"/>'s (<see cref="FastMath.Exp(Vector512{float})"/>).
    /// </summary>
    private static unsafe bool ExpRow(float* s, int lo, int hi, float scale, bool[]? keyMask, int maskOffset, out float inv)
    {
        inv = 0f;
        var vs = Vector512.Create(scale);
        var vmax = Vector512.Create(float.NegativeInfinity);
        int i = lo;
        if (keyMask == null)
        {
            for (; i + 16 <= hi; i += 16)
            {
                var x = Vector512.Load(s + i) * vs;
                x.Store(s + i);
                vmax = Vector512.Max(vmax, x);
            }
            for (int k = i; k < hi; k++) s[k] *= scale;
        }
        else
        {
            for (; i + 16 <= hi; i += 16) (Vector512.Load(s + i) * vs).Store(s + i);
            for (int k = i; k < hi; k++) s[k] *= scale;
            for (int k = lo; k < hi; k++)
                if (!keyMask[maskOffset + k]) s[k] = float.NegativeInfinity;
            for (i = lo; i + 16 <= hi; i += 16) vmax = Vector512.Max(vmax, Vector512.Load(s + i));
        }
        var m256 = Vector256.Max(vmax.GetLower(), vmax.GetUpper());
        var m128 = Vector128.Max(m256.GetLower(), m256.GetUpper());
        float max = MathF.Max(MathF.Max(m128.GetElement(0), m128.GetElement(1)), MathF.Max(m128.GetElement(2), m128.GetElement(3)));
        for (; i < hi; i++) max = MathF.Max(max, s[i]);
        if (float.IsNegativeInfinity(max)) return false;
        var vm = Vector512.Create(max);
        var vsum = Vector512<float>.Zero;
        i = lo;
        for (; i + 16 <= hi; i += 16)
        {
            var e = FastMath.Exp(Vector512.Load(s + i) - vm);
            e.Store(s + i);
            vsum += e;
        }
        float sum = Vector512.Sum(vsum);
        if (i < hi)
        {
            // The tail through the same vector exp (masked lanes read −∞ → 0).
            var tail = Vector512.Create(float.NegativeInfinity);
            for (int l = 0; l < hi - i; l++) tail = tail.WithElement(l, s[i + l]);
            var e = FastMath.Exp(tail - vm);
            for (int l = 0; l < hi - i; l++) { s[i + l] = e.GetElement(l); sum += e.GetElement(l); }
        }
        inv = 1f / sum;
        return true;
    }

    /// <summary>o[0, d) = inv · Σ_{k in [lo, hi)} w[k] · v_k (v_k = v + k·ld): <see cref="AddWeightedRows"/> from zero, then
    /// one multiply.</summary>
    private static unsafe void WeightedRows(float* w, int lo, int hi, float* v, int ld, int d, float inv, float* o)
    {
        var row = new Span<float>(o, d);
        row.Clear();
        AddWeightedRows(w, lo, hi, v, ld, d, o);
        TensorPrimitives.Multiply(row, inv, row);
    }

    /// <summary>
    /// Raw scores → probabilities in place for one query row: entries [lo, hi) are scaled (and soft-capped when
    /// cap &gt; 0) and softmaxed over the keys keyMask allows; masked keys and every entry outside [lo, hi) become 0;
    /// a row with no allowed key becomes all zeros.
    /// </summary>
    private static void SoftmaxRow(Span<float> row, int lo, int hi, float scale, float cap, bool[]? keyMask, int maskOffset)
    {
        var live = row[lo..hi];
        row[..lo].Clear();
        row[hi..].Clear();
        TensorPrimitives.Multiply(live, scale, live);
        if (cap > 0)
            for (int i = 0; i < live.Length; i++) live[i] = cap * MathF.Tanh(live[i] / cap);
        if (keyMask != null)
            for (int sk = lo; sk < hi; sk++)
                if (!keyMask[maskOffset + sk]) live[sk - lo] = float.NegativeInfinity;
        float max = live.IsEmpty ? float.NegativeInfinity : Simd.Max(live);
        if (float.IsNegativeInfinity(max))
        {
            live.Clear();
            return;
        }
        Simd.ZipScalarRight<SubOp>(live, max, live);
        Simd.Map<ExpOp>(live, live);
        if (keyMask != null)
            for (int sk = lo; sk < hi; sk++)
                if (!keyMask[maskOffset + sk]) live[sk - lo] = 0f;
        TensorPrimitives.Multiply(live, 1f / Simd.Sum(live), live);
    }

    /// <summary>
    /// Accumulates the gradients of q, k and v (each null when not wanted) from dO and the saved probabilities p,
    /// per (b, kv head) over the G query heads that share it, by query blocks of <see cref="QueryBlock"/>:
    /// dV += Pᵀ·dO, dP = dO·Vᵀ, dS = scale·P ⊙ (dP − rowsum(P ⊙ dP)), dQ += dS·K, dK += dSᵀ·Q; with a soft cap
    /// dS is further multiplied by 1 − tanh²(z / c), z recomputed from Q·Kᵀ (one more GEMM per block).
    /// </summary>
    public static void Backward(in AttentionGeometry g, float[] dO, int go, float[] q, int qo, float[] k, int ko, float[] v, int vo,
        float[] p, int po, float[]? dq, int dqo, float[]? dk, int dko, float[]? dv, int dvo)
        => ParallelFor.Run(g.Batch * g.KvHeads, (int)Math.Max(1, (1 << 16) / Math.Max(1, g.WorkPerHead * g.Group)),
            new BackwardWork(g, dO, go, q, qo, k, ko, v, vo, p, po, dq, dqo, dk, dko, dv, dvo));

    private readonly struct BackwardWork(AttentionGeometry g, float[] ga, int go, float[] qa, int qo, float[] ka, int ko, float[] va, int vo,
        float[] pa, int po, float[]? dq, int dqo, float[]? dk, int dko, float[]? dv, int dvo) : IRangeWork
    {
        public void Run(int start, int end)
        {
            int t = g.Queries, s = g.Keys, hq = g.QueryHeads, hkv = g.KvHeads, d = g.HeadDim, sEff = g.VisibleKeys;
            int qLd = g.QueryLd, kvLd = g.KvLd, oLd = g.OutLd, pSize = g.ProbSize, group = g.Group;
            float sc = g.Scale, cap = g.Cap;
            bool needScores = dq != null || dk != null;
            var dpBuf = needScores ? BufferPool.Rent(pSize) : null;
            var zBuf = needScores && cap > 0 ? BufferPool.Rent(pSize) : null;
            for (int bk = start; bk < end; bk++)
            {
                int b = bk / hkv, kvh = bk % hkv;
                int kvOff = b * s * kvLd + kvh * d;
                for (int j = 0; j < group; j++)
                {
                    int h = kvh * group + j;
                    int qOff = b * t * qLd + h * d;
                    for (int t0 = 0; t0 < t; t0 += QueryBlock)
                    {
                        // Query block [t0, t1) against the keys [lo, hi) it can see; P is zero outside them.
                        int rowsIn = Math.Min(QueryBlock, t - t0);
                        var (lo, hi) = g.BlockKeys(b, t0, rowsIn);
                        int kv = hi - lo;
                        if (kv == 0) continue;
                        var p = pa.AsSpan(po + (b * hq + h) * pSize + t0 * sEff + lo, (rowsIn - 1) * sEff + kv);
                        int qbOff = qOff + t0 * qLd, kvbOff = kvOff + lo * kvLd;
                        var gO = ga.AsSpan(go + b * t * oLd + h * d + t0 * oLd);
                        if (dv != null)
                            Gemm.Multiply(true, false, kv, d, rowsIn, p, sEff, gO, oLd, dv.AsSpan(dvo + kvbOff), kvLd, true);
                        if (!needScores) continue;
                        var dp = dpBuf.AsSpan(0, (rowsIn - 1) * sEff + kv);
                        Gemm.Multiply(false, true, rowsIn, kv, d, gO, oLd, va.AsSpan(vo + kvbOff), kvLd, dp, sEff, false);
                        var z = zBuf.AsSpan(0, zBuf == null ? 0 : (rowsIn - 1) * sEff + kv);
                        if (zBuf != null)
                            Gemm.Multiply(false, true, rowsIn, kv, d, qa.AsSpan(qo + qbOff), qLd, ka.AsSpan(ko + kvbOff), kvLd, z, sEff, false);
                        for (int r = 0; r < rowsIn; r++)
                        {
                            var pr = p.Slice(r * sEff, kv); var dr = dp.Slice(r * sEff, kv);
                            float dot = Simd.Dot(pr, dr);
                            // dS = scale · P ⊙ (dP − Σ P·dP); zero wherever P is (masked keys, empty rows).
                            TensorPrimitives.AddMultiply(dr, -dot, pr, dr);
                            TensorPrimitives.Multiply(dr, sc, dr);
                            if (zBuf != null) SoftCapBackwardRow(z.Slice(r * sEff, kv), dr, sc, cap);
                        }
                        if (dq != null)
                            Gemm.Multiply(false, false, rowsIn, d, kv, dp, sEff, ka.AsSpan(ko + kvbOff), kvLd, dq.AsSpan(dqo + qbOff), qLd, true);
                        if (dk != null)
                            Gemm.Multiply(true, false, kv, d, rowsIn, dp, sEff, qa.AsSpan(qo + qbOff), qLd, dk.AsSpan(dko + kvbOff), kvLd, true);
                    }
                }
            }
            if (dpBuf != null) BufferPool.Return(dpBuf);
            if (zBuf != null) BufferPool.Return(zBuf);
        }
    }

    /// <summary>dS ⊙= 1 − tanh²(scale·z / cap) over one row: the soft cap's derivative at the raw scores z.</summary>
    private static void SoftCapBackwardRow(ReadOnlySpan<float> z, Span<float> ds, float scale, float cap)
    {
        for (int i = 0; i < ds.Length; i++)
        {
            float th = MathF.Tanh(z[i] * scale / cap);
            ds[i] *= 1f - th * th;
        }
    }
}
