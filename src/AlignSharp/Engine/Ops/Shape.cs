using AlignSharp.Engine.Kernels;

namespace AlignSharp.Engine;

public static partial class Ops
{
    /// <summary>Same memory, another shape (one dimension may be −1). A view: no copy.</summary>
    public static Tensor Reshape(Tensor x, params int[] shape)
    {
        var resolved = (int[])shape.Clone();
        int infer = Array.IndexOf(resolved, -1);
        if (infer >= 0)
        {
            int known = 1;
            for (int i = 0; i < resolved.Length; i++) if (i != infer) known *= resolved[i];
            if (known == 0 || x.Length % known != 0)
                throw new ArgumentException($"Cannot reshape {ShapeUtil.Format(x.Shape)} to {ShapeUtil.Format(shape)}.");
            resolved[infer] = x.Length / known;
        }
        if (ShapeUtil.Count(resolved) != x.Length)
            throw new ArgumentException($"Cannot reshape {ShapeUtil.Format(x.Shape)} ({x.Length} elements) to {ShapeUtil.Format(shape)}.");
        var y = x.ViewAs(resolved);
        if (Autograd.Needs(x))
            Autograd.Record(y, [x], g => x.AddGradOf(g));
        return y;
    }

    /// <summary>Rows [start, start+length) of the first axis, as a view. [N, ...] → [length, ...]</summary>
    public static Tensor SliceRows(Tensor x, int start, int length)
    {
        if (x.Rank == 0) throw new ArgumentException("SliceRows needs at least one axis.");
        int n = x.Dim(0);
        if (start < 0 || length < 0 || start + length > n)
            throw new ArgumentOutOfRangeException(nameof(start), $"Rows [{start}, {start + length}) are outside [0, {n}).");
        int rowSize = n == 0 ? 0 : x.Length / n;
        var shape = x.ShapeArray.ToArray();
        shape[0] = length;
        var y = x.ViewAs(shape, start * rowSize);
        if (Autograd.Needs(x))
            Autograd.Record(y, [x], g => Simd.AddInto(g.Span, x.GradForAccumulate().Slice(start * rowSize, length * rowSize)));
        return y;
    }

    /// <summary>Rows [start, start+length) of matrix <paramref name="index"/> of a stack [E, R, C], as a view [length, C]
    /// whose gradient adds into the stack's: one expert's weight (or its gate or up rows) where a mixture of experts keeps
    /// each kind of weight in one tensor, as checkpoints store them.</summary>
    public static Tensor StackRows(Tensor stack, int index, int start, int length)
    {
        if (stack.Rank != 3) throw new ArgumentException($"StackRows needs a stack [E, R, C], not {ShapeUtil.Format(stack.Shape)}.");
        int count = stack.Dim(0), rows = stack.Dim(1), cols = stack.Dim(2);
        if ((uint)index >= (uint)count) throw new ArgumentOutOfRangeException(nameof(index), $"Matrix {index} is outside [0, {count}).");
        if (start < 0 || length < 0 || start + length > rows)
            throw new ArgumentOutOfRangeException(nameof(start), $"Rows [{start}, {start + length}) are outside [0, {rows}).");
        int offset = (index * rows + start) * cols;
        var y = stack.ViewAs([length, cols], offset);
        if (Autograd.Needs(stack))
            Autograd.Record(y, [stack], g => Simd.AddInto(g.Span, stack.GradForAccumulate().Slice(offset, length * cols)));
        return y;
    }

    /// <summary>Indices saved for a backward pass in a pooled buffer, their int bits stored as floats (no GC array per call).</summary>
    private static Tensor SaveIndices(ReadOnlySpan<int> index)
    {
        var saved = Tensor.EmptyOwned([index.Length]);
        index.CopyTo(IndicesIn(saved, 0, index.Length));
        return saved;
    }

    /// <summary>Row <paramref name="row"/> of a pooled float buffer [.., n] read as the n ints it holds (see <see cref="SaveIndices"/>).</summary>
    private static Span<int> IndicesIn(Tensor buffer, int row, int n)
        => System.Runtime.InteropServices.MemoryMarshal.Cast<float, int>(buffer.Span.Slice(row * n, n));

    /// <summary>Outer/middle/inner decomposition of a tensor around one axis.</summary>
    private static (int Outer, int Dim, int Inner) AroundAxis(ReadOnlySpan<int> shape, int axis)
    {
        int outer = ShapeUtil.Count(shape[..axis]);
        int inner = ShapeUtil.Count(shape[(axis + 1)..]);
        return (outer, shape[axis], inner);
    }

    private static int NormalizeAxis(int axis, int rank)
    {
        int a = axis < 0 ? axis + rank : axis;
        if (a < 0 || a >= rank) throw new ArgumentOutOfRangeException(nameof(axis), $"Axis {axis} is out of range for rank {rank}.");
        return a;
    }

    /// <summary>Elements [start, start+length) along <paramref name="axis"/> (a copy).</summary>
    public static Tensor Slice(Tensor x, int axis, int start, int length)
    {
        axis = NormalizeAxis(axis, x.Rank);
        var (outer, dim, inner) = AroundAxis(x.Shape, axis);
        if (start < 0 || length < 0 || start + length > dim)
            throw new ArgumentOutOfRangeException(nameof(start), $"[{start}, {start + length}) is outside axis {axis} of size {dim}.");
        var shape = x.ShapeArray.ToArray();
        shape[axis] = length;
        var y = Tensor.EmptyOwned(shape);
        int chunk = length * inner;
        LayoutKernels.CopyBlocks(outer, chunk, x.Span, start * inner, dim * inner, y.Span, 0, chunk, accumulate: false);
        if (Autograd.Needs(x))
            Autograd.Record(y, [x], g =>
                LayoutKernels.CopyBlocks(outer, chunk, g.Span, 0, chunk, x.GradForAccumulate(), start * inner, dim * inner, accumulate: true));
        return y;
    }

    /// <summary>Joins tensors along <paramref name="axis"/>; all other dimensions must agree.</summary>
    public static Tensor Concat(IReadOnlyList<Tensor> parts, int axis)
    {
        if (parts.Count == 0) throw new ArgumentException("Concat needs at least one tensor.");
        var first = parts[0];
        axis = NormalizeAxis(axis, first.Rank);
        int total = 0;
        foreach (var p in parts)
        {
            if (p.Rank != first.Rank) throw new ArgumentException("Concat needs tensors of equal rank.");
            for (int i = 0; i < p.Rank; i++)
                if (i != axis && p.Dim(i) != first.Dim(i))
                    throw new ArgumentException($"Concat along axis {axis}: shapes {ShapeUtil.Format(first.Shape)} and {ShapeUtil.Format(p.Shape)} differ elsewhere.");
            total += p.Dim(axis);
        }
        var shape = first.ShapeArray.ToArray();
        shape[axis] = total;
        var y = Tensor.EmptyOwned(shape);
        var (outer, _, inner) = AroundAxis(shape, axis);
        var ys = y.Span;
        int rowOut = total * inner;
        int offset = 0;
        foreach (var p in parts)
        {
            int chunk = p.Dim(axis) * inner;
            LayoutKernels.CopyBlocks(outer, chunk, p.Span, 0, chunk, ys, offset, rowOut, accumulate: false);
            offset += chunk;
        }
        var inputs = parts.ToArray();
        if (Autograd.AnyNeeds(inputs))
            Autograd.Record(y, inputs, g =>
            {
                var gs = g.Span;
                int off = 0;
                foreach (var p in inputs)
                {
                    int chunk = p.Dim(axis) * inner;
                    if (p.RequiresGrad) LayoutKernels.CopyBlocks(outer, chunk, gs, off, rowOut, p.GradForAccumulate(), 0, chunk, accumulate: true);
                    off += chunk;
                }
            });
        return y;
    }

    /// <summary>
    /// Picks along the last axis: y[..., j] = x[..., index[..., j]]. [..., N] with index [..., K] → [..., K].
    /// Index has one entry per output element (rows × K, row-major).
    /// </summary>
    public static Tensor Gather(Tensor x, ReadOnlySpan<int> index, int k)
    {
        int n = x.Dim(-1);
        int rows = ShapeUtil.Rows(x.Shape);
        if (index.Length != rows * k) throw new ArgumentException($"Gather needs {rows}×{k} indices, got {index.Length}.");
        foreach (var i in index) if ((uint)i >= (uint)n) throw new ArgumentOutOfRangeException(nameof(index), $"Index {i} is outside [0, {n}).");
        var y = Tensor.EmptyOwned(ShapeUtil.WithLast(x.Shape, k));
        LayoutKernels.GatherLast(rows, n, k, x.Span, index, y.Span);
        if (Autograd.Needs(x))
        {
            var saved = SaveIndices(index);
            int count = index.Length;
            Autograd.Record(y, [x], g => LayoutKernels.GatherLastBackward(rows, n, k, g.Span, IndicesIn(saved, 0, count), x.GradForAccumulate()));
        }
        return y;
    }

    /// <summary>Rows of a table: y[i] = x[index[i]]. [N, ...] → [len(index), ...] (embedding lookup)</summary>
    public static Tensor IndexSelect(Tensor x, ReadOnlySpan<int> index)
    {
        int n = x.Dim(0);
        int rowSize = n == 0 ? 0 : x.Length / n;
        foreach (var i in index) if ((uint)i >= (uint)n) throw new ArgumentOutOfRangeException(nameof(index), $"Index {i} is outside [0, {n}).");
        var shape = x.ShapeArray.ToArray();
        shape[0] = index.Length;
        var y = Tensor.EmptyOwned(shape);
        if (x.IsBf16)
        {
            // A frozen bf16 table (e.g. a bf16 token embedding): rows widened exactly, no gradient.
            LayoutKernels.SelectRows(rowSize, x.Bf16Span, index, y.Span);
            return y;
        }
        LayoutKernels.SelectRows(rowSize, x.Span, index, y.Span);
        if (Autograd.Needs(x))
        {
            var saved = SaveIndices(index);
            int count = index.Length;
            Autograd.Record(y, [x], g => LayoutKernels.ScatterAddRows(rowSize, g.Span, IndicesIn(saved, 0, count), x.GradForAccumulate()));
        }
        return y;
    }

    /// <summary>Embedding lookup: weight [V, D], ids of shape S → [S..., D].</summary>
    public static Tensor Embedding(Tensor weight, ReadOnlySpan<int> ids, params int[] idsShape)
    {
        if (weight.Rank != 2) throw new ArgumentException("Embedding weight must be [vocab, dim].");
        if (ShapeUtil.Count(idsShape) != ids.Length) throw new ArgumentException($"{ids.Length} ids do not fill shape {ShapeUtil.Format(idsShape)}.");
        var rows = IndexSelect(weight, ids);
        return Reshape(rows, [.. idsShape, weight.Dim(1)]);
    }

    /// <summary>Axes reordered (a copy): y.shape[i] = x.shape[perm[i]].</summary>
    public static Tensor Permute(Tensor x, params int[] perm)
    {
        int rank = x.Rank;
        if (perm.Length != rank || perm.Distinct().Count() != rank || perm.Any(p => p < 0 || p >= rank))
            throw new ArgumentException($"{ShapeUtil.Format(perm)} is not a permutation of {rank} axes.");
        var shape = new int[rank];
        for (int i = 0; i < rank; i++) shape[i] = x.Dim(perm[i]);
        var y = Tensor.EmptyOwned(shape);
        LayoutKernels.Permute(x.Span, x.Shape, perm, y.Span, accumulate: false);
        if (Autograd.Needs(x))
        {
            var inverse = new int[rank];
            for (int i = 0; i < rank; i++) inverse[perm[i]] = i;
            Autograd.Record(y, [x], g => LayoutKernels.Permute(g.Span, shape, inverse, x.GradForAccumulate(), accumulate: true));
        }
        return y;
    }

    /// <summary>Swaps two axes (a copy).</summary>
    public static Tensor Transpose(Tensor x, int axis0, int axis1)
    {
        var perm = Enumerable.Range(0, x.Rank).ToArray();
        axis0 = NormalizeAxis(axis0, x.Rank);
        axis1 = NormalizeAxis(axis1, x.Rank);
        (perm[axis0], perm[axis1]) = (perm[axis1], perm[axis0]);
        return Permute(x, perm);
    }
}
