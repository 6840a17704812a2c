namespace AlignSharp.Engine.Kernels;

/// <summary>
/// Data movement: strided block copies (slices, concatenation), axis permutations, row gathers (embedding lookups)
/// and their scatter-add backward passes. Every kernel either overwrites (=) or accumulates (+=) into its destination,
/// the latter for gradients. Nothing is allocated on the GC heap.
/// </summary>
internal static class LayoutKernels
{
    /// <summary>dst[dstOffset + o·dstStride + j] (=|+=) src[srcOffset + o·srcStride + j] for o &lt; count, j &lt; chunk.</summary>
    public static void CopyBlocks(int count, int chunk, ReadOnlySpan<float> src, int srcOffset, int srcStride,
        Span<float> dst, int dstOffset, int dstStride, bool accumulate)
    {
        if (chunk == 0) return;
        for (int o = 0; o < count; o++)
        {
            var s = src.Slice(srcOffset + o * srcStride, chunk);
            var d = dst.Slice(dstOffset + o * dstStride, chunk);
            if (accumulate) Simd.AddInto(s, d);
            else s.CopyTo(d);
        }
    }

    /// <summary>
    /// dst (=|+=) src with its axes reordered: dst.shape[i] = srcShape[perm[i]], both row-major. Walks dst in order with
    /// an odometer over its axes (at most 16), moving the source index by the permuted strides.
    /// </summary>
    public static void Permute(ReadOnlySpan<float> src, ReadOnlySpan<int> srcShape, ReadOnlySpan<int> perm, Span<float> dst, bool accumulate)
    {
        int rank = srcShape.Length;
        if (rank > 16) throw new ArgumentException($"Permute supports up to 16 axes, got {rank}.");
        Span<int> srcStrides = stackalloc int[rank];
        for (int i = rank - 1, s = 1; i >= 0; i--) { srcStrides[i] = s; s *= srcShape[i]; }
        Span<int> dstShape = stackalloc int[rank];
        Span<int> stride = stackalloc int[rank];
        for (int i = 0; i < rank; i++) { dstShape[i] = srcShape[perm[i]]; stride[i] = srcStrides[perm[i]]; }
        Span<int> counter = stackalloc int[rank];
        counter.Clear();
        int n = dst.Length;
        if (n == 0) return;
        int srcIndex = 0;
        for (int o = 0; o < n; o++)
        {
            if (accumulate) dst[o] += src[srcIndex]; else dst[o] = src[srcIndex];
            for (int ax = rank - 1; ax >= 0; ax--)
            {
                counter[ax]++;
                srcIndex += stride[ax];
                if (counter[ax] < dstShape[ax]) break;
                srcIndex -= stride[ax] * dstShape[ax];
                counter[ax] = 0;
            }
        }
    }

    /// <summary>y[r, j] = x[r, index[r·K + j]]: x (R, N), y (R, K).</summary>
    public static void GatherLast(int rows, int n, int k, ReadOnlySpan<float> x, ReadOnlySpan<int> index, Span<float> y)
    {
        for (int r = 0; r < rows; r++)
            for (int j = 0; j < k; j++) y[r * k + j] = x[r * n + index[r * k + j]];
    }

    /// <summary>dx[r, index[r·K + j]] += g[r, j], in index order (a repeated index accumulates deterministically).</summary>
    public static void GatherLastBackward(int rows, int n, int k, ReadOnlySpan<float> g, ReadOnlySpan<int> index, Span<float> dx)
    {
        for (int r = 0; r < rows; r++)
            for (int j = 0; j < k; j++) dx[r * n + index[r * k + j]] += g[r * k + j];
    }

    /// <summary>y[i] = table[index[i]], rows of <paramref name="rowSize"/>: the embedding lookup.</summary>
    public static void SelectRows(int rowSize, ReadOnlySpan<float> table, ReadOnlySpan<int> index, Span<float> y)
    {
        for (int r = 0; r < index.Length; r++) table.Slice(index[r] * rowSize, rowSize).CopyTo(y.Slice(r * rowSize, rowSize));
    }

    /// <summary>y[i] = the bf16 table's row index[i], widened exactly.</summary>
    public static void SelectRows(int rowSize, ReadOnlySpan<ushort> table, ReadOnlySpan<int> index, Span<float> y)
    {
        for (int r = 0; r < index.Length; r++) Bf16.Widen(table.Slice(index[r] * rowSize, rowSize), y.Slice(r * rowSize, rowSize));
    }

    /// <summary>dtable[index[i]] += g[i] row by row, sequentially in index order: deterministic when an id repeats.</summary>
    public static void ScatterAddRows(int rowSize, ReadOnlySpan<float> g, ReadOnlySpan<int> index, Span<float> dtable)
    {
        for (int r = 0; r < index.Length; r++) Simd.AddInto(g.Slice(r * rowSize, rowSize), dtable.Slice(index[r] * rowSize, rowSize));
    }
}
