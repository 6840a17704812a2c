using System.Runtime.Intrinsics;

namespace AlignSharp.Engine.Optim;

/// <summary>SGD hyperparameters. Defaults are PyTorch's <c>torch.optim.SGD</c> (lr default as in PyTorch ≥ 2.2).</summary>
public sealed record SgdOptions
{
    /// <param name="Lr">Learning rate; finite, ≥ 0. Default 1e-3.</param>
    /// <param name="Momentum">Momentum factor μ in [0, 1); 0 turns momentum (and its state buffer) off. Default 0.</param>
    /// <param name="Dampening">Dampening τ in [0, 1]: the buffer takes (1 − τ)·g after its first step. Default 0.</param>
    /// <param name="WeightDecay">L2 penalty added to the gradient (g ← g + wd·p, coupled, unlike AdamW); finite, ≥ 0. Default 0. A <see cref="ParamGroup"/> may override it.</param>
    /// <param name="Nesterov">Nesterov momentum; needs Momentum &gt; 0 and Dampening = 0. Default false.</param>
    public SgdOptions(float Lr = 1e-3f, float Momentum = 0f, float Dampening = 0f, float WeightDecay = 0f, bool Nesterov = false)
    {
        this.Lr = Lr;
        this.Momentum = Momentum;
        this.Dampening = Dampening;
        this.WeightDecay = WeightDecay;
        this.Nesterov = Nesterov;
        Validate();
    }

    public float Lr { get; init => field = OptionChecks.NonNegative(value, nameof(Lr)); }
    public float Momentum { get; init => field = OptionChecks.UnitInterval(value, nameof(Momentum)); }
    public float Dampening { get; init => field = OptionChecks.UnitClosed(value, nameof(Dampening)); }
    public float WeightDecay { get; init => field = OptionChecks.NonNegative(value, nameof(WeightDecay)); }
    public bool Nesterov { get; init; }

    /// <summary>Cross-field rule (also run by <see cref="Sgd"/>, since <c>with</c> can change fields one at a time).</summary>
    internal void Validate()
    {
        if (Nesterov && (Momentum <= 0 || Dampening != 0))
            throw new ArgumentException("Nesterov momentum needs Momentum > 0 and Dampening = 0.");
    }
}

/// <summary>
/// Stochastic gradient descent with optional momentum, dampening, Nesterov and L2 weight decay, as PyTorch's SGD.
/// For parameter p with gradient g:
/// <code>
/// d ← g + wd·p                                  (if wd ≠ 0)
/// b ← d on the parameter's first update,         (if μ ≠ 0)
///     else μ·b + (1 − τ)·d
/// d ← d + μ·b if Nesterov, else b                (if μ ≠ 0)
/// p ← p − lr·d
/// </code>
/// </summary>
public sealed class Sgd : Optimizer
{
    public SgdOptions Options { get; }

    public Sgd(IEnumerable<Tensor> parameters, SgdOptions? options = null)
        : this([new ParamGroup(parameters?.ToArray() ?? throw new ArgumentNullException(nameof(parameters)))], options) { }

    public Sgd(IEnumerable<ParamGroup> groups, SgdOptions? options = null)
        : base(groups, (options ??= new SgdOptions()).Lr, options.WeightDecay, buffersPerParam: options.Momentum != 0 ? 1 : 0)
    {
        options.Validate();
        Options = options;
    }

    private protected override string Kind => nameof(Sgd);

    public override void Step()
    {
        for (int i = 0; i < Params.Length; i++)
        {
            var g = GradOf(i);
            if (g == null) continue;
            var op = UpdateFor(i, first: ParamSteps[i]++ == 0);
            ParamUpdate.Run(op, Params[i], g, Options.Momentum != 0 ? State[i][0] : [], []);
        }
        StepCount++;
    }

    private protected override bool UpdateStaysFinite(int[] flag)
    {
        for (int i = 0; i < Params.Length; i++)
            if (GradOf(i) is { } g && !ParamUpdate.StaysFinite(UpdateFor(i, ParamSteps[i] == 0), Params[i], g, Options.Momentum != 0 ? State[i][0] : [], [], flag))
                return false;
        return true;
    }

    private SgdUpdate UpdateFor(int i, bool first) => new(
        negLr: (float)(-(double)Lr * LrScaleOf[i]),
        weightDecay: WeightDecayOf[i],
        momentum: Options.Momentum,
        oneMinusDampening: (float)(1 - (double)Options.Dampening),
        nesterov: Options.Nesterov,
        firstStep: first);
}

/// <summary>One SGD update; s1 = momentum buffer b (untouched when momentum is 0). Same operation order at every width.</summary>
internal readonly struct SgdUpdate(float negLr, float weightDecay, float momentum, float oneMinusDampening, bool nesterov, bool firstStep) : IParamUpdate
{
    public void Lanes512(ref float p, ref float g, ref float b, ref float unused, nuint i)
    {
        var pv = Vector512.LoadUnsafe(ref p, i);
        var d = Vector512.LoadUnsafe(ref g, i);
        if (weightDecay != 0) d = Vector512.FusedMultiplyAdd(pv, Vector512.Create(weightDecay), d);
        if (momentum != 0)
        {
            var bv = firstStep ? d : Vector512.FusedMultiplyAdd(d, Vector512.Create(oneMinusDampening), Vector512.LoadUnsafe(ref b, i) * Vector512.Create(momentum));
            bv.StoreUnsafe(ref b, i);
            d = nesterov ? Vector512.FusedMultiplyAdd(bv, Vector512.Create(momentum), d) : bv;
        }
        Vector512.FusedMultiplyAdd(d, Vector512.Create(negLr), pv).StoreUnsafe(ref p, i);
    }

    public void Lanes256(ref float p, ref float g, ref float b, ref float unused, nuint i)
    {
        var pv = Vector256.LoadUnsafe(ref p, i);
        var d = Vector256.LoadUnsafe(ref g, i);
        if (weightDecay != 0) d = Vector256.FusedMultiplyAdd(pv, Vector256.Create(weightDecay), d);
        if (momentum != 0)
        {
            var bv = firstStep ? d : Vector256.FusedMultiplyAdd(d, Vector256.Create(oneMinusDampening), Vector256.LoadUnsafe(ref b, i) * Vector256.Create(momentum));
            bv.StoreUnsafe(ref b, i);
            d = nesterov ? Vector256.FusedMultiplyAdd(bv, Vector256.Create(momentum), d) : bv;
        }
        Vector256.FusedMultiplyAdd(d, Vector256.Create(negLr), pv).StoreUnsafe(ref p, i);
    }

    public void Lanes128(ref float p, ref float g, ref float b, ref float unused, nuint i)
    {
        var pv = Vector128.LoadUnsafe(ref p, i);
        var d = Vector128.LoadUnsafe(ref g, i);
        if (weightDecay != 0) d = Vector128.FusedMultiplyAdd(pv, Vector128.Create(weightDecay), d);
        if (momentum != 0)
        {
            var bv = firstStep ? d : Vector128.FusedMultiplyAdd(d, Vector128.Create(oneMinusDampening), Vector128.LoadUnsafe(ref b, i) * Vector128.Create(momentum));
            bv.StoreUnsafe(ref b, i);
            d = nesterov ? Vector128.FusedMultiplyAdd(bv, Vector128.Create(momentum), d) : bv;
        }
        Vector128.FusedMultiplyAdd(d, Vector128.Create(negLr), pv).StoreUnsafe(ref p, i);
    }

    public void Lane(ref float p, ref float g, ref float b, ref float unused)
    {
        float d = g;
        if (weightDecay != 0) d = MathF.FusedMultiplyAdd(p, weightDecay, d);
        if (momentum != 0)
        {
            b = firstStep ? d : MathF.FusedMultiplyAdd(d, oneMinusDampening, b * momentum);
            d = nesterov ? MathF.FusedMultiplyAdd(b, momentum, d) : b;
        }
        p = MathF.FusedMultiplyAdd(d, negLr, p);
    }
}
