using AlignSharp.Engine.Kernels;

namespace AlignSharp.Engine;

public static partial class Ops
{
    /// <summary>Sum of all elements. (any) → []</summary>
    public static Tensor Sum(Tensor x)
    {
        var y = Tensor.EmptyOwned([]);
        y.Span[0] = Simd.Sum(x.Span);
        if (Autograd.Needs(x))
            Autograd.Record(y, [x], g => PointwiseKernels.BroadcastRowsInto(1, x.Length, g.Span, x.GradForAccumulate()));
        return y;
    }

    /// <summary>Mean of all elements. (any) → []</summary>
    public static Tensor Mean(Tensor x) => MulScalar(Sum(x), 1f / Math.Max(1, x.Length));

    /// <summary>Sum along the last axis. [..., N] → [...] (or [..., 1] with keepDim)</summary>
    public static Tensor SumLast(Tensor x, bool keepDim = false)
    {
        int n = x.Rank == 0 ? 1 : x.Dim(-1);
        int rows = ShapeUtil.Rows(x.Shape);
        var shape = keepDim ? ShapeUtil.WithLast(x.Shape, 1) : x.Shape[..^1].ToArray();
        var y = Tensor.EmptyOwned(shape);
        PointwiseKernels.SumRows(rows, n, x.Span, y.Span);
        if (Autograd.Needs(x))
            Autograd.Record(y, [x], g => PointwiseKernels.BroadcastRowsInto(rows, n, g.Span, x.GradForAccumulate()));
        return y;
    }

    /// <summary>Mean along the last axis. [..., N] → [...] (or [..., 1] with keepDim)</summary>
    public static Tensor MeanLast(Tensor x, bool keepDim = false)
        => MulScalar(SumLast(x, keepDim), 1f / Math.Max(1, x.Rank == 0 ? 1 : x.Dim(-1)));

    /// <summary>Maximum along the last axis, without gradient. [..., N] → [...]</summary>
    public static Tensor MaxLast(Tensor x)
    {
        int n = x.Dim(-1);
        int rows = ShapeUtil.Rows(x.Shape);
        var y = Tensor.EmptyOwned(x.Shape[..^1].ToArray());
        PointwiseKernels.MaxRows(rows, n, x.Span, y.Span);
        return y;
    }

    /// <summary>Index of the maximum along the last axis (first one on ties). [..., N] → int[rows]</summary>
    public static int[] ArgMaxLast(Tensor x)
    {
        int n = x.Dim(-1);
        int rows = ShapeUtil.Rows(x.Shape);
        var result = new int[rows];
        PointwiseKernels.ArgMaxRows(rows, n, x.Span, result);
        return result;
    }
}
