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
            Autograd.Record(y, [x], g =>
            {
                float gv = g.Span[0];
                var dx = x.GradForAccumulate();
                for (int i = 0; i < dx.Length; i++) dx[i] += gv;
            });
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
        var xs = x.Span; var ys = y.Span;
        for (int r = 0; r < rows; r++) ys[r] = Simd.Sum(xs.Slice(r * n, n));
        if (Autograd.Needs(x))
            Autograd.Record(y, [x], g =>
            {
                var gs = g.Span; var dx = x.GradForAccumulate();
                for (int r = 0; r < rows; r++)
                {
                    var row = dx.Slice(r * n, n);
                    float gv = gs[r];
                    for (int i = 0; i < n; i++) row[i] += gv;
                }
            });
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
        var xs = x.Span; var ys = y.Span;
        for (int r = 0; r < rows; r++) ys[r] = Simd.Max(xs.Slice(r * n, n));
        return y;
    }

    /// <summary>Index of the maximum along the last axis (first one on ties). [..., N] → int[rows]</summary>
    public static int[] ArgMaxLast(Tensor x)
    {
        int n = x.Dim(-1);
        int rows = ShapeUtil.Rows(x.Shape);
        var result = new int[rows];
        var xs = x.Span;
        for (int r = 0; r < rows; r++)
        {
            var row = xs.Slice(r * n, n);
            int best = 0;
            for (int i = 1; i < n; i++) if (row[i] > row[best]) best = i;
            result[r] = best;
        }
        return result;
    }
}
