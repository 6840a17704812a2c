using AlignSharp.Engine.Kernels;

namespace AlignSharp.Engine;

// Depthwise causal convolution along time (LFM2's short convolution): the recording and the checks; the loops are in
// ConvKernels. Legend: B batch, T time, C channels, K kernel width.
public static partial class Ops
{
    /// <summary>
    /// u [B, T, C], weight [C, 1, K] (PyTorch's Conv1d weight with groups = C), bias [C] or null → y [B, T, C] with
    /// y[b, t, c] = bias[c] + Σ_{j &lt; K} w[c, j]·u[b, t − K + 1 + j, c]: each channel mixes its own last K inputs.
    /// Inputs before t = 0 come from <paramref name="history"/> [B, K − 1, C] (the K − 1 inputs that preceded u, oldest
    /// first: a KV-cached pass continuing a sequence) or are zero; the history takes no gradient.
    /// Backward: du[b, s, c] = Σ_j w[c, j]·dy[b, s + K − 1 − j, c] (terms past T dropped), dw[c, j] = Σ_{b,t} dy[b, t, c]·u[b, t − K + 1 + j, c]
    /// (history included), dbias[c] = Σ_{b,t} dy[b, t, c]. <paramref name="segmentStarts"/> (B·T, no history): sequences
    /// packed into a row, each step's first step of its own sequence; inputs before it count as zeros.
    /// </summary>
    public static Tensor CausalConv(Tensor u, Tensor weight, Tensor? bias = null, float[]? history = null, int[]? segmentStarts = null)
    {
        if (u.Rank != 3) throw new ArgumentException($"CausalConv needs u [B, T, C], got {ShapeUtil.Format(u.Shape)}.");
        int b = u.Dim(0), t = u.Dim(1), c = u.Dim(2);
        if (weight.Rank != 3 || weight.Dim(0) != c || weight.Dim(1) != 1 || weight.Dim(2) < 1)
            throw new ArgumentException($"CausalConv: weight must be [C={c}, 1, K ≥ 1], got {ShapeUtil.Format(weight.Shape)}.");
        int k = weight.Dim(2);
        if (bias != null && (bias.Rank != 1 || bias.Dim(0) != c))
            throw new ArgumentException($"CausalConv: bias must be [C={c}], got {ShapeUtil.Format(bias.Shape)}.");
        if (history != null && history.Length < (long)b * (k - 1) * c)
            throw new ArgumentException($"CausalConv: history holds {history.Length} floats, B·(K − 1)·C = {(long)b * (k - 1) * c} expected.");
        if (u.IsBf16 || weight.IsBf16) throw new ArgumentException("CausalConv takes float32 tensors.");
        CheckSegmentStarts(segmentStarts, b, t, history != null, nameof(CausalConv));

        var y = Tensor.EmptyOwned([b, t, c]);
        var geometry = new ConvGeometry(b, t, c, k, segmentStarts);
        ConvKernels.Forward(geometry, u.Array, u.Offset, weight.Array, weight.Offset, bias?.Array, bias?.Offset ?? 0, history, y.Array, y.Offset);
        Tensor[] inputs = bias != null ? [u, weight, bias] : [u, weight];
        if (Autograd.AnyNeeds(inputs))
            Autograd.Record(y, inputs, g =>
            {
                if (u.RequiresGrad)
                {
                    u.GradForAccumulate();
                    ConvKernels.InputGrad(geometry, g.Array, g.Offset, weight.Array, weight.Offset, u.GradTensor!.Array, u.GradTensor.Offset);
                }
                if (weight.RequiresGrad)
                {
                    weight.GradForAccumulate();
                    ConvKernels.WeightGrad(geometry, g.Array, g.Offset, u.Array, u.Offset, history, weight.GradTensor!.Array, weight.GradTensor.Offset);
                }
                if (bias is { RequiresGrad: true })
                {
                    bias.GradForAccumulate();
                    ConvKernels.BiasGrad(geometry, g.Array, g.Offset, bias.GradTensor!.Array, bias.GradTensor.Offset);
                }
            });
        return y;
    }
}
