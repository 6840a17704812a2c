using System.Runtime.Intrinsics;

namespace AlignSharp.Engine.Optim;

/// <summary>AdamW hyperparameters. Defaults are PyTorch's <c>torch.optim.AdamW</c>.</summary>
public sealed record AdamWOptions
{
    /// <param name="Lr">Learning rate; finite, ≥ 0. Default 1e-3.</param>
    /// <param name="Beta1">Decay of the first-moment (mean) estimate; in [0, 1). Default 0.9.</param>
    /// <param name="Beta2">Decay of the second-moment (uncentred variance) estimate; in [0, 1). Default 0.999.</param>
    /// <param name="Eps">Added to the denominator √v̂ for stability; finite, ≥ 0. Default 1e-8.</param>
    /// <param name="WeightDecay">Decoupled weight decay (p ← p·(1 − lr·wd) before the Adam step); finite, ≥ 0. Default 0.01. A <see cref="ParamGroup"/> may override it.</param>
    public AdamWOptions(float Lr = 1e-3f, float Beta1 = 0.9f, float Beta2 = 0.999f, float Eps = 1e-8f, float WeightDecay = 0.01f)
    {
        this.Lr = Lr;
        this.Beta1 = Beta1;
        this.Beta2 = Beta2;
        this.Eps = Eps;
        this.WeightDecay = WeightDecay;
    }

    public float Lr { get; init => field = OptionChecks.NonNegative(value, nameof(Lr)); }
    public float Beta1 { get; init => field = OptionChecks.UnitInterval(value, nameof(Beta1)); }
    public float Beta2 { get; init => field = OptionChecks.UnitInterval(value, nameof(Beta2)); }
    public float Eps { get; init => field = OptionChecks.NonNegative(value, nameof(Eps)); }
    public float WeightDecay { get; init => field = OptionChecks.NonNegative(value, nameof(WeightDecay)); }
}

/// <summary>
/// Adam with decoupled weight decay (Loshchilov &amp; Hutter, "Decoupled Weight Decay Regularization", Alg. 2),
/// in PyTorch's formulation. For each parameter p with gradient g, at its t-th update, with lr the group's rate:
/// <code>
/// p ← p·(1 − lr·wd)                      decay first, on the pre-update value
/// m ← β1·m + (1 − β1)·g
/// v ← β2·v + (1 − β2)·g²
/// p ← p − lr/(1 − β1ᵗ) · m / (√v/√(1 − β2ᵗ) + ε)
/// </code>
/// t counts the updates of that parameter (a parameter skipped for a null gradient does not advance), like
/// PyTorch's per-parameter <c>state['step']</c>. Scalars are computed in float64, the element-wise update in float32.
/// </summary>
public sealed class AdamW : Optimizer
{
    public AdamWOptions Options { get; }

    public AdamW(IEnumerable<Tensor> parameters, AdamWOptions? options = null)
        : this([new ParamGroup(parameters?.ToArray() ?? throw new ArgumentNullException(nameof(parameters)))], options) { }

    public AdamW(IEnumerable<ParamGroup> groups, AdamWOptions? options = null)
        : base(groups, (options ??= new AdamWOptions()).Lr, options.WeightDecay, buffersPerParam: 2)
    {
        Options = options;
    }

    private protected override string Kind => nameof(AdamW);

    // Step's per-parameter inputs, reused so a step allocates nothing.
    private AdamWUpdate[]? _updates;
    private Tensor?[]? _grads;
    private long[]? _ends;

    public override void Step()
    {
        _updates ??= new AdamWUpdate[Params.Length];
        _grads ??= new Tensor?[Params.Length];
        _ends ??= new long[Params.Length];
        for (int i = 0; i < Params.Length; i++)
        {
            var g = _grads[i] = GradOf(i);
            if (g != null) _updates[i] = UpdateFor(i, ++ParamSteps[i]);
        }
        // All parameters in one parallel region: a model of many small tensors still uses every thread.
        ParamUpdate.RunAll(_updates, Params, _grads, State, _ends);
        Array.Clear(_grads);
        StepCount++;
    }

    private protected override bool UpdateStaysFinite(int[] flag)
    {
        for (int i = 0; i < Params.Length; i++)
            if (GradOf(i) is { } g && !ParamUpdate.StaysFinite(UpdateFor(i, ParamSteps[i] + 1), Params[i], g, State[i][0], State[i][1], flag))
                return false;
        return true;
    }

    /// <summary>The lane math of parameter <paramref name="i"/>'s <paramref name="t"/>-th update.</summary>
    private AdamWUpdate UpdateFor(int i, int t)
    {
        double beta1 = Options.Beta1, beta2 = Options.Beta2;
        double lr = (double)Lr * LrScaleOf[i];
        double biasCorrection1 = 1 - Math.Pow(beta1, t);
        double biasCorrection2 = 1 - Math.Pow(beta2, t);
        return new AdamWUpdate(
            decay: (float)(1 - lr * WeightDecayOf[i]),
            beta1: Options.Beta1,
            oneMinusBeta1: (float)(1 - beta1),
            beta2: Options.Beta2,
            oneMinusBeta2: (float)(1 - beta2),
            invSqrtBiasCorrection2: (float)(1 / Math.Sqrt(biasCorrection2)),
            eps: Options.Eps,
            negStepSize: (float)(-lr / biasCorrection1));
    }
}

/// <summary>One AdamW update; s1 = m (first moment), s2 = v (second moment). Same operation order at every width.</summary>
internal readonly struct AdamWUpdate(
    float decay, float beta1, float oneMinusBeta1, float beta2, float oneMinusBeta2,
    float invSqrtBiasCorrection2, float eps, float negStepSize) : IParamUpdate
{
    public void Lanes512(ref float p, ref float g, ref float m, ref float v, nuint i)
    {
        var gv = Vector512.LoadUnsafe(ref g, i);
        var mv = Vector512.FusedMultiplyAdd(gv, Vector512.Create(oneMinusBeta1), Vector512.LoadUnsafe(ref m, i) * Vector512.Create(beta1));
        var vv = Vector512.FusedMultiplyAdd(gv * Vector512.Create(oneMinusBeta2), gv, Vector512.LoadUnsafe(ref v, i) * Vector512.Create(beta2));
        var denom = Vector512.FusedMultiplyAdd(Vector512.Sqrt(vv), Vector512.Create(invSqrtBiasCorrection2), Vector512.Create(eps));
        var pv = Vector512.FusedMultiplyAdd(mv / denom, Vector512.Create(negStepSize), Vector512.LoadUnsafe(ref p, i) * Vector512.Create(decay));
        mv.StoreUnsafe(ref m, i);
        vv.StoreUnsafe(ref v, i);
        pv.StoreUnsafe(ref p, i);
    }

    public void Lanes256(ref float p, ref float g, ref float m, ref float v, nuint i)
    {
        var gv = Vector256.LoadUnsafe(ref g, i);
        var mv = Vector256.FusedMultiplyAdd(gv, Vector256.Create(oneMinusBeta1), Vector256.LoadUnsafe(ref m, i) * Vector256.Create(beta1));
        var vv = Vector256.FusedMultiplyAdd(gv * Vector256.Create(oneMinusBeta2), gv, Vector256.LoadUnsafe(ref v, i) * Vector256.Create(beta2));
        var denom = Vector256.FusedMultiplyAdd(Vector256.Sqrt(vv), Vector256.Create(invSqrtBiasCorrection2), Vector256.Create(eps));
        var pv = Vector256.FusedMultiplyAdd(mv / denom, Vector256.Create(negStepSize), Vector256.LoadUnsafe(ref p, i) * Vector256.Create(decay));
        mv.StoreUnsafe(ref m, i);
        vv.StoreUnsafe(ref v, i);
        pv.StoreUnsafe(ref p, i);
    }

    public void Lanes128(ref float p, ref float g, ref float m, ref float v, nuint i)
    {
        var gv = Vector128.LoadUnsafe(ref g, i);
        var mv = Vector128.FusedMultiplyAdd(gv, Vector128.Create(oneMinusBeta1), Vector128.LoadUnsafe(ref m, i) * Vector128.Create(beta1));
        var vv = Vector128.FusedMultiplyAdd(gv * Vector128.Create(oneMinusBeta2), gv, Vector128.LoadUnsafe(ref v, i) * Vector128.Create(beta2));
        var denom = Vector128.FusedMultiplyAdd(Vector128.Sqrt(vv), Vector128.Create(invSqrtBiasCorrection2), Vector128.Create(eps));
        var pv = Vector128.FusedMultiplyAdd(mv / denom, Vector128.Create(negStepSize), Vector128.LoadUnsafe(ref p, i) * Vector128.Create(decay));
        mv.StoreUnsafe(ref m, i);
        vv.StoreUnsafe(ref v, i);
        pv.StoreUnsafe(ref p, i);
    }

    public void Lane(ref float p, ref float g, ref float m, ref float v)
    {
        float gs = g;
        m = MathF.FusedMultiplyAdd(gs, oneMinusBeta1, m * beta1);
        v = MathF.FusedMultiplyAdd(gs * oneMinusBeta2, gs, v * beta2);
        float denom = MathF.FusedMultiplyAdd(MathF.Sqrt(v), invSqrtBiasCorrection2, eps);
        p = MathF.FusedMultiplyAdd(m / denom, negStepSize, p * decay);
    }
}
