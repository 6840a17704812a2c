using AlignSharp.Engine.Kernels;

namespace AlignSharp.Engine;

public static partial class Ops
{
    /// <summary>Softmax along the last axis. [..., N] → [..., N]. Backward: dx += y ⊙ (g − Σ g·y).</summary>
    public static Tensor Softmax(Tensor x) => SoftmaxLike(x, log: false);

    /// <summary>Log-softmax along the last axis. [..., N] → [..., N]. Backward: dx += g − softmax · Σ g.</summary>
    public static Tensor LogSoftmax(Tensor x) => SoftmaxLike(x, log: true);

    private static Tensor SoftmaxLike(Tensor x, bool log)
    {
        int n = x.Dim(-1), rows = ShapeUtil.Rows(x.Shape);
        var y = NewLike(x);
        RowKernels.SoftmaxRows(log, rows, n, x.Array, x.Offset, y.Array, y.Offset);
        if (Autograd.Needs(x))
            Autograd.Record(y, [x], g =>
            {
                x.GradForAccumulate();
                RowKernels.SoftmaxRowsBackward(log, rows, n, g.Array, g.Offset, y.Array, y.Offset, x.GradTensor!.Array, x.GradTensor.Offset);
            });
        return y;
    }
}
