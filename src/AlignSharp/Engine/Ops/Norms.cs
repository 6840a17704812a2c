using AlignSharp.Engine.Kernels;

namespace AlignSharp.Engine;

public static partial class Ops
{
    /// <summary>
    /// Layer norm over the last axis: (x − mean)/√(var + eps) · w + b (biased variance, as PyTorch).
    /// x [..., C], w [C], b [C] or null → [..., C]
    /// </summary>
    public static Tensor LayerNorm(Tensor x, Tensor w, Tensor? b, float eps = 1e-5f)
    {
        int c = x.Dim(-1), rows = ShapeUtil.Rows(x.Shape);
        if (w.Length != c || (b != null && b.Length != c))
            throw new ArgumentException($"LayerNorm weight/bias must have {c} elements.");
        var y = NewLike(x);
        var mean = Tensor.EmptyOwned([rows]);   // pooled inside a TensorScope, like every activation
        var rstd = Tensor.EmptyOwned([rows]);
        NormKernels.LayerNormForward(rows, c, eps, x.Array, x.Offset, w.Array, w.Offset, b?.Array, b?.Offset ?? 0,
            y.Array, y.Offset, mean.Array, mean.Offset, rstd.Array, rstd.Offset);
        Tensor[] inputs = b == null ? [x, w] : [x, w, b];
        if (Autograd.AnyNeeds(inputs))
            Autograd.Record(y, inputs, g =>
            {
                bool needX = x.RequiresGrad, needW = w.RequiresGrad, needB = b != null && b.RequiresGrad;
                bool accumulate = true;
                if (needX) x.GradForWrite(out accumulate);
                var dx = needX ? x.GradTensor : null;
                NormKernels.LayerNormBackward(rows, c, g.Array, g.Offset, x.Array, x.Offset, w.Array, w.Offset,
                    mean.Array, mean.Offset, rstd.Array, rstd.Offset, dx?.Array, dx?.Offset ?? 0, accumulate,
                    needW ? w.GradForAccumulate() : default, needB ? b!.GradForAccumulate() : default, needW, needB);
            });
        return y;
    }

    /// <summary>RMS norm over the last axis: x / √(mean(x²) + eps) · (weightOffset + w); Llama uses offset 0,
    /// Gemma stores w − 1 and uses offset 1. x [..., C], w [C] → [..., C]. Over a [B, T, H, Dh] tensor with w [Dh]
    /// this is Qwen3's / Gemma-3's per-head q/k norm.</summary>
    public static Tensor RmsNorm(Tensor x, Tensor w, float eps = 1e-6f, float weightOffset = 0f)
    {
        int c = x.Dim(-1), rows = ShapeUtil.Rows(x.Shape);
        if (w.Length != c) throw new ArgumentException($"RmsNorm weight must have {c} elements.");
        var y = NewLike(x);
        var rstd = Tensor.EmptyOwned([rows]);
        NormKernels.RmsNormForward(rows, c, eps, weightOffset, x.Array, x.Offset, w.Array, w.Offset, y.Array, y.Offset, rstd.Array, rstd.Offset);
        if (Autograd.Needs(x, w))
            Autograd.Record(y, [x, w], g =>
            {
                bool accumulate = true;
                var dx = x.RequiresGrad ? x.GradForWrite(out accumulate) : default;
                NormKernels.RmsNormBackward(rows, c, weightOffset, g.Span, x.Span, w.Span, rstd.Span, dx, accumulate,
                    w.RequiresGrad ? w.GradForAccumulate() : default);
            });
        return y;
    }
}
