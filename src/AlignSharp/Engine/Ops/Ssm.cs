using AlignSharp.Engine.Kernels;

namespace AlignSharp.Engine;

// Mamba-2's selective state-space scan (the mixer of Granite 4.0-H, Bamba and Falcon-H1): the recording and the checks;
// the loops are in SsmKernels. Legend: B batch, T time, H heads, P head size, G groups (of heads sharing B and C),
// N state size.
public static partial class Ops
{
    /// <summary>
    /// The scan of each head h over time, its state S [P, N] starting at zero (or <paramref name="state"/>):
    /// δ_t = softplus(dt[t, h] + dtBias[h]), S_t = exp(δ_t·A_h)·S_{t−1} + δ_t·x_t ⊗ B_t, y_t = S_t·C_t + D_h·x_t, with
    /// A_h = −exp(aLog[h]) and B_t, C_t those of h's group (heads h·G/H … share one).
    /// Shapes: x [B, T, H·P], dt [B, T, H], aLog, dtBias and d [H], bm and cm [B, T, G·N] → y [B, T, H·P].
    /// <paramref name="state"/> [B, H, P, N] (a KV-cached pass): read as S_{−1}, then overwritten with the last S; it
    /// takes no gradient. <paramref name="segmentStarts"/> (B·T, no state): sequences packed into a row, each step's first
    /// step of its own sequence; S restarts from zero there.
    /// Backward (through every input): with Ĝ_t = dy_t ⊗ C_t + exp(δ_{t+1}·A)·Ĝ_{t+1}, dC_t = Σ_h S_tᵀ·dy_t,
    /// dx_t = D·dy_t + δ_t·Ĝ_t·B_t, dB_t = Σ_h δ_t·Ĝ_tᵀ·x_t, dδ_t = x_t·Ĝ_t·B_t + ⟨Ĝ_t, S_{t−1}⟩·A·exp(δ_t·A) (then through
    /// the softplus), dA = Σ_t ⟨Ĝ_t, S_{t−1}⟩·δ_t·exp(δ_t·A) (then through A = −exp(aLog)), dD = Σ_t ⟨dy_t, x_t⟩. The states
    /// are not kept between the passes: the backward runs the scan again, keeping one chunk of states at a time.
    /// </summary>
    public static Tensor SelectiveScan(Tensor x, Tensor dt, Tensor aLog, Tensor dtBias, Tensor bm, Tensor cm, Tensor d, int groups,
        float[]? state = null, int[]? segmentStarts = null)
    {
        if (x.Rank != 3 || dt.Rank != 3 || bm.Rank != 3 || cm.Rank != 3)
            throw new ArgumentException($"SelectiveScan needs x [B, T, H·P], dt [B, T, H], B and C [B, T, G·N]; got {ShapeUtil.Format(x.Shape)}, {ShapeUtil.Format(dt.Shape)}, {ShapeUtil.Format(bm.Shape)}, {ShapeUtil.Format(cm.Shape)}.");
        int b = x.Dim(0), t = x.Dim(1), heads = dt.Dim(2);
        if (dt.Dim(0) != b || dt.Dim(1) != t || heads < 1 || x.Dim(2) % heads != 0)
            throw new ArgumentException($"SelectiveScan: dt {ShapeUtil.Format(dt.Shape)} must be [B={b}, T={t}, H] with H dividing x's {x.Dim(2)} columns.");
        if (groups < 1 || heads % groups != 0) throw new ArgumentException($"SelectiveScan: {groups} groups do not divide {heads} heads.");
        if (!bm.Shape.SequenceEqual(cm.Shape) || bm.Dim(0) != b || bm.Dim(1) != t || bm.Dim(2) % groups != 0 || bm.Dim(2) == 0)
            throw new ArgumentException($"SelectiveScan: B and C must both be [B={b}, T={t}, G·N] with G = {groups}; got {ShapeUtil.Format(bm.Shape)}, {ShapeUtil.Format(cm.Shape)}.");
        foreach (var (v, name) in new[] { (aLog, "aLog"), (dtBias, "dtBias"), (d, "d") })
            if (v.Rank != 1 || v.Dim(0) != heads) throw new ArgumentException($"SelectiveScan: {name} must be [H={heads}], got {ShapeUtil.Format(v.Shape)}.");
        if (x.IsBf16 || dt.IsBf16 || bm.IsBf16 || cm.IsBf16 || aLog.IsBf16 || dtBias.IsBf16 || d.IsBf16) throw new ArgumentException("SelectiveScan takes float32 tensors.");
        var geometry = new ScanGeometry(b, t, heads, x.Dim(2) / heads, groups, bm.Dim(2) / groups, segmentStarts);
        if (state != null && state.Length < (long)b * heads * geometry.HeadSize * geometry.StateSize)
            throw new ArgumentException($"SelectiveScan: state holds {state.Length} floats, B·H·P·N = {(long)b * heads * geometry.HeadSize * geometry.StateSize} expected.");
        CheckSegmentStarts(segmentStarts, b, t, state != null, nameof(SelectiveScan));

        var inputs = new ScanInputs(x.Array, x.Offset, dt.Array, dt.Offset, aLog.Array, aLog.Offset, dtBias.Array, dtBias.Offset,
            bm.Array, bm.Offset, cm.Array, cm.Offset, d.Array, d.Offset);
        Tensor[] recorded = [x, dt, aLog, dtBias, bm, cm, d];
        bool record = Autograd.AnyNeeds(recorded);
        // The backward starts again from the state this pass started from, which the forward overwrites.
        float[]? initial = record && state != null ? (float[])state.Clone() : null;
        var y = Tensor.EmptyOwned([b, t, x.Dim(2)]);
        SsmKernels.Forward(geometry, inputs, state, y.Array, y.Offset);
        if (record)
            Autograd.Record(y, recorded, g =>
            {
                float[]? Grad(Tensor v) => v.RequiresGrad ? AccumulationArray(v) : null;
                var grads = new ScanGrads(Grad(x), x.GradTensor?.Offset ?? 0, Grad(dt), dt.GradTensor?.Offset ?? 0, Grad(bm), bm.GradTensor?.Offset ?? 0,
                    Grad(cm), cm.GradTensor?.Offset ?? 0);
                var (dA, dBias, dD) = SsmKernels.Backward(geometry, inputs, initial, g.Array, g.Offset, grads);
                void Add(Tensor v, float[] sums)
                {
                    if (!v.RequiresGrad) return;
                    var dst = v.GradForAccumulate();
                    for (int h = 0; h < heads; h++) dst[h] += sums[h];
                }
                // dA is by A = −exp(aLog): dA/daLog = A.
                for (int h = 0; h < heads; h++) dA[h] *= -MathF.Exp(aLog.Span[h]);
                Add(aLog, dA);
                Add(dtBias, dBias);
                Add(d, dD);
            });
        return y;
    }

    /// <summary>The array a tensor's gradient accumulates in (created zeroed on first use).</summary>
    private static float[] AccumulationArray(Tensor v)
    {
        v.GradForAccumulate();
        return v.GradTensor!.Array;
    }
}
