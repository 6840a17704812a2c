using AlignSharp.Engine.Kernels;

namespace AlignSharp.Engine;

public static partial class Ops
{
    /// <summary>Softmax along the last axis. [..., N] → [..., N]</summary>
    public static Tensor Softmax(Tensor x)
    {
        int n = x.Dim(-1), rows = ShapeUtil.Rows(x.Shape);
        var y = NewLike(x);
        var xa = x.Array; int xo = x.Offset; var ya = y.Array; int yo = y.Offset;
        ParallelFor.For(rows, Math.Max(1, 4096 / Math.Max(1, n)), (s, e) =>
        {
            for (int r = s; r < e; r++) RowKernels.Softmax(xa.AsSpan(xo + r * n, n), ya.AsSpan(yo + r * n, n));
        });
        if (Autograd.Needs(x))
            Autograd.Record(y, [x], g =>
            {
                // dx = y ⊙ (g − Σ g·y)
                var gs = g.Span; var ys = y.Span; var dx = x.GradForAccumulate();
                for (int r = 0; r < rows; r++)
                {
                    var gr = gs.Slice(r * n, n); var yr = ys.Slice(r * n, n); var dr = dx.Slice(r * n, n);
                    float dot = Simd.Dot(gr, yr);
                    for (int i = 0; i < n; i++) dr[i] += yr[i] * (gr[i] - dot);
                }
            });
        return y;
    }

    /// <summary>Log-softmax along the last axis. [..., N] → [..., N]</summary>
    public static Tensor LogSoftmax(Tensor x)
    {
        int n = x.Dim(-1), rows = ShapeUtil.Rows(x.Shape);
        var y = NewLike(x);
        var xa = x.Array; int xo = x.Offset; var ya = y.Array; int yo = y.Offset;
        ParallelFor.For(rows, Math.Max(1, 4096 / Math.Max(1, n)), (s, e) =>
        {
            for (int r = s; r < e; r++) RowKernels.LogSoftmax(xa.AsSpan(xo + r * n, n), ya.AsSpan(yo + r * n, n));
        });
        if (Autograd.Needs(x))
            Autograd.Record(y, [x], g =>
            {
                // dx = g − softmax · Σ g
                var gs = g.Span; var ys = y.Span; var dx = x.GradForAccumulate();
                for (int r = 0; r < rows; r++)
                {
                    var gr = gs.Slice(r * n, n); var yr = ys.Slice(r * n, n); var dr = dx.Slice(r * n, n);
                    float sum = Simd.Sum(gr);
                    for (int i = 0; i < n; i++) dr[i] += gr[i] - MathF.Exp(yr[i]) * sum;
                }
            });
        return y;
    }
}
