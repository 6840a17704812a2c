using System.Numerics.Tensors;
using AlignSharp.Engine.Kernels;

namespace AlignSharp.Text;

/// <summary>
/// Draws one token from a row of logits [V] (V ≈ 150k for current vocabularies) with SIMD passes and no full sort:
/// <list type="number">
/// <item>e[i] = exp(logits[i]/T − max) in three vector passes (scale, shift, <see cref="FastMath"/> exp), into the
///   caller's scratch; the sum Z is accumulated per block of <see cref="Block"/> tokens (a float vector sum
///   each), blocks added in index order in double.</item>
/// <item>Plain sampling: u·Z is located first among the block sums, then by a running double sum inside that
///   block (the inverse CDF in token order, as before, without normalising all V probabilities).</item>
/// <item>top-k / top-p: the candidates are selected (quickselect over 64-bit keys "e descending, then id") and
///   nothing is sorted but the few keys at a boundary: top-k selects the K best; top-p selects by mass the fewest best
///   that reach P (<see cref="SelectMass"/>), measured within the top-K tokens renormalised when top-k is on too, as
///   Hugging Face applies its top-k and top-p warpers in turn; the draw selects by mass again, u·kept in key order.</item>
/// </list>
/// The distribution is the one the scalar version drew from; the numbers differ from it by rounding (a
/// polynomial exp within 2 ulp, vector sums), so a seed gives the same tokens except where u falls within
/// rounding of a boundary between two tokens.
/// </summary>
internal static class TokenSampler
{
    /// <summary>Tokens per block sum: small enough that locating u·Z inside a block is cheap.</summary>
    private const int Block = 1024;

    [ThreadStatic] private static float[]? t_scratch;
    [ThreadStatic] private static ulong[]? t_keys;

    /// <summary>
    /// Samples row b of <paramref name="logits"/> [B, stride] (its first <paramref name="sampleable"/> entries) for
    /// every b with <paramref name="active"/>[b], drawing from <paramref name="rngs"/>[b]: rows run in parallel, and
    /// as each row has its own stream the result does not depend on the thread count.
    /// </summary>
    public static void SampleRows(float[] logits, int stride, int sampleable, SamplingOptions o, Random[] rngs, bool[] active, int[] tokens, float[] logProbs)
    {
        int rows = rngs.Length;
        if (logits.Length < (long)rows * stride || sampleable > stride) throw new ArgumentException($"logits hold {logits.Length} values, {rows} rows of {stride} expected.", nameof(logits));
        // A row of a large vocabulary is worth a share of its own; small ones run inline.
        ParallelFor.Run(rows, Math.Max(1, (1 << 16) / Math.Max(1, sampleable)), new RowWork(logits, stride, sampleable, o, rngs, active, tokens, logProbs));
    }

    private readonly struct RowWork(float[] logits, int stride, int sampleable, SamplingOptions o, Random[] rngs, bool[] active,
        int[] tokens, float[] logProbs) : IRangeWork
    {
        public void Run(int start, int end)
        {
            if (t_scratch == null || t_scratch.Length < sampleable) t_scratch = new float[sampleable];
            bool filtered = o.TopK > 0 || o.TopP < 1;
            if (filtered && (t_keys == null || t_keys.Length < sampleable)) t_keys = new ulong[sampleable];
            for (int b = start; b < end; b++)
            {
                if (!active[b]) continue;
                (tokens[b], logProbs[b]) = Sample(logits.AsSpan(b * stride, sampleable), o, rngs[b], t_scratch, filtered ? t_keys! : []);
            }
        }
    }

    /// <summary>
    /// Draws one token; returns it with its log-probability under the distribution used (after temperature,
    /// top-k and top-p; for greedy decoding, under the plain softmax). <paramref name="scratch"/> holds ≥ V
    /// floats, <paramref name="keys"/> ≥ V keys when top-k or top-p is on.
    /// </summary>
    public static (int Token, float LogProb) Sample(ReadOnlySpan<float> logits, SamplingOptions o, Random rng, float[] scratch, ulong[] keys)
    {
        int v = logits.Length;
        if (v == 0) throw new ArgumentException("No logits to sample from.", nameof(logits));
        if (scratch.Length < v) throw new ArgumentException($"scratch holds {scratch.Length} values, {v} needed.", nameof(scratch));
        if (o.Temperature == 0)
        {
            int best = TensorPrimitives.IndexOfMax(logits);
            return (best, logits[best] - RowKernels.LogSumExp(logits, scratch));
        }

        // max_i fl(l_i/T) = fl(max_i l_i · 1/T): rounding is monotone, so this is exact.
        float invT = 1f / o.Temperature;
        var e = scratch.AsSpan(0, v);
        float max = Simd.Max(logits) * invT;
        Simd.ZipScalarRight<MulOp>(logits, invT, e);
        Simd.ZipScalarRight<SubOp>(e, max, e);
        Simd.Map<ExpOp>(e, e);

        int blocks = (v + Block - 1) / Block;
        Span<double> blockSums = blocks <= 1024 ? stackalloc double[blocks] : new double[blocks];
        double total = 0;
        for (int b = 0; b < blocks; b++)
        {
            int start = b * Block;
            blockSums[b] = Simd.Sum(e.Slice(start, Math.Min(Block, v - start)));
            total += blockSums[b];
        }

        if (o.TopK > 0 || o.TopP < 1) return SampleFiltered(e, total, o, rng, keys);

        double target = rng.NextDouble() * total, acc = 0;
        int block = 0;
        while (block < blocks - 1 && acc + blockSums[block] <= target) acc += blockSums[block++];
        int first = block * Block, end = Math.Min(v, first + Block);
        int pick = -1;
        for (int i = first; i < end; i++)
        {
            acc += e[i];
            if (target < acc) { pick = i; break; }
        }
        // The in-block running sum can fall short of the block's vector sum by rounding: take its last possible token.
        if (pick < 0)
            for (pick = end - 1; pick > 0 && e[pick] == 0; pick--) { }
        return (pick, (float)Math.Log(e[pick] / total));
    }

    /// <summary>top-k / top-p over e (unnormalised, Σ e = total), by selection (see the class summary).</summary>
    private static (int Token, float LogProb) SampleFiltered(ReadOnlySpan<float> e, double total, SamplingOptions o, Random rng, ulong[] keys)
    {
        int v = e.Length;
        if (keys.Length < v) throw new ArgumentException($"keys holds {keys.Length} values, {v} needed.", nameof(keys));
        // Ascending keys = descending e, ties by ascending token id (e ≥ 0, so its bits order as the values do).
        var k = keys.AsSpan(0, v);
        for (int i = 0; i < v; i++) k[i] = (ulong)~BitConverter.SingleToUInt32Bits(e[i]) << 32 | (uint)i;

        int limit = o.TopK > 0 ? Math.Min(o.TopK, v) : v;
        // Top-p after top-k measures the nucleus within the K kept tokens, renormalised (as Hugging Face's warpers apply
        // them in turn): its mass is over the top-K set, not over the whole vocabulary.
        double mass = total;
        if (limit < v && o.TopP < 1)
        {
            Select(k, limit);
            k = k[..limit];
            mass = 0;
            foreach (var key in k) mass += e[(int)(uint)key];
        }
        int keep;
        if (o.TopP < 1) keep = Math.Max(1, SelectMass(k, e, o.TopP * mass, strict: false));
        else
        {
            Select(k, limit);
            keep = limit;
        }
        var nucleus = k[..keep];
        double kept = 0;
        foreach (var key in nucleus) kept += e[(int)(uint)key];
        // The token where the running mass in key order first exceeds u·kept: the worst of the fewest best tokens that do.
        int r = Math.Max(1, SelectMass(nucleus, e, rng.NextDouble() * kept, strict: true));
        ulong worst = 0;
        foreach (var key in nucleus[..r]) worst = Math.Max(worst, key);
        int pick = (int)(uint)worst;
        return (pick, (float)Math.Log(e[pick] / kept));
    }

    /// <summary>
    /// Reorders <paramref name="keys"/> (distinct, ascending = e descending) so that its r smallest come first, in any
    /// order, and returns r: the fewest best tokens whose mass Σ e, accumulated in key order, reaches
    /// <paramref name="target"/> (exceeds it when <paramref name="strict"/>); all of them when rounding leaves the whole
    /// mass short. A quickselect on mass instead of count (expected linear time), so a nucleus of most of a 150k
    /// vocabulary, or the draw inside it, needs no sort of it: only the last ≤ 32 keys around the boundary are sorted.
    /// </summary>
    internal static int SelectMass(Span<ulong> keys, ReadOnlySpan<float> e, double target, bool strict)
    {
        bool Reaches(double mass) => strict ? mass > target : mass >= target;
        int lo = 0, hi = keys.Length;
        double acc = 0; // the mass of keys[..lo), the lo best, short of the target
        while (hi - lo > 32)
        {
            ulong a = keys[lo], b = keys[lo + (hi - lo) / 2], c = keys[hi - 1];
            ulong pivot = Math.Max(Math.Min(a, b), Math.Min(Math.Max(a, b), c));
            // [lo, split) better than the pivot, [split, hi) the pivot and worse; then the pivot to split.
            int split = lo, at = -1;
            double better = 0;
            for (int i = lo; i < hi; i++)
            {
                ulong key = keys[i];
                if (key < pivot)
                {
                    better += e[(int)(uint)key];
                    (keys[i], keys[split]) = (keys[split], key);
                    if (at == split) at = i;
                    split++;
                }
                else if (key == pivot) at = i;
            }
            if (Reaches(acc + better))
            {
                hi = split;
                continue;
            }
            (keys[at], keys[split]) = (keys[split], keys[at]);
            acc += better + e[(int)(uint)pivot];
            if (Reaches(acc)) return split + 1;
            lo = split + 1;
        }
        keys[lo..hi].Sort();
        for (int i = lo; i < hi; i++)
        {
            acc += e[(int)(uint)keys[i]];
            if (Reaches(acc)) return i + 1;
        }
        return hi;
    }

    /// <summary>
    /// Reorders <paramref name="keys"/> so that its <paramref name="count"/> smallest keys come first, in any
    /// order (quickselect, median-of-three pivots; the keys are distinct).
    /// </summary>
    internal static void Select(Span<ulong> keys, int count)
    {
        int lo = 0, hi = keys.Length - 1;
        if (count <= 0 || count >= keys.Length) return;
        while (hi > lo)
        {
            int mid = lo + (hi - lo) / 2;
            // Median of three to keys[mid], then Hoare partition around it.
            if (keys[mid] < keys[lo]) (keys[mid], keys[lo]) = (keys[lo], keys[mid]);
            if (keys[hi] < keys[lo]) (keys[hi], keys[lo]) = (keys[lo], keys[hi]);
            if (keys[hi] < keys[mid]) (keys[hi], keys[mid]) = (keys[mid], keys[hi]);
            ulong pivot = keys[mid];
            int i = lo, j = hi;
            while (i <= j)
            {
                while (keys[i] < pivot) i++;
                while (keys[j] > pivot) j--;
                if (i <= j) { (keys[i], keys[j]) = (keys[j], keys[i]); i++; j--; }
            }
            // [lo, j] ≤ pivot ≤ [i, hi]; the boundary between the first count keys and the rest lies at count.
            if (count - 1 <= j) hi = j;
            else if (count - 1 >= i) lo = i;
            else return;
        }
    }
}
