namespace AlignSharp.Engine.Optim;

/// <summary>
/// Parameters that share hyperparameter overrides. Null means "use the optimizer's option".
/// </summary>
public sealed record ParamGroup
{
    /// <param name="Parameters">Leaf tensors to optimise, in a fixed order (state files follow it).</param>
    /// <param name="WeightDecay">Overrides the optimizer's weight decay for this group (e.g. 0 for biases and norms); ≥ 0. Default null: the optimizer's.</param>
    /// <param name="LrScale">Multiplies the optimizer's learning rate for this group; ≥ 0. Default null: 1.</param>
    public ParamGroup(IReadOnlyList<Tensor> Parameters, float? WeightDecay = null, float? LrScale = null)
    {
        this.Parameters = Parameters;
        this.WeightDecay = WeightDecay;
        this.LrScale = LrScale;
    }

    public IReadOnlyList<Tensor> Parameters { get; init => field = value ?? throw new ArgumentNullException(nameof(Parameters)); }

    public float? WeightDecay { get; init => field = value is { } v ? OptionChecks.NonNegative(v, nameof(WeightDecay)) : null; }

    public float? LrScale { get; init => field = value is { } v ? OptionChecks.NonNegative(v, nameof(LrScale)) : null; }
}

public static class ParamGroups
{
    /// <summary>
    /// Splits named parameters into two groups: <c>[0]</c> decays with <paramref name="weightDecay"/>, <c>[1]</c> has
    /// zero decay. The rule (GPT-2/nanoGPT convention): a tensor gets no decay when it has rank ≤ 1 (biases, norm
    /// gains, scalars), or when its name — compared case-insensitively — ends with <c>bias</c>, contains
    /// <c>norm</c>, or has a dot-separated segment starting with <c>ln_</c> (<c>ln_f.weight</c>, <c>h.0.ln_1.weight</c>).
    /// Everything else, embeddings included, decays. A tensor listed twice (tied weights) is kept once, at its
    /// first name. Order within each group follows the input.
    /// </summary>
    public static IReadOnlyList<ParamGroup> DecayAndNoDecay(IEnumerable<(string Name, Tensor P)> named, float weightDecay)
    {
        ArgumentNullException.ThrowIfNull(named);
        OptionChecks.NonNegative(weightDecay, nameof(weightDecay));
        var decay = new List<Tensor>();
        var noDecay = new List<Tensor>();
        var seen = new HashSet<Tensor>(ReferenceEqualityComparer.Instance);
        foreach (var (name, p) in named)
        {
            ArgumentNullException.ThrowIfNull(p, name);
            if (!seen.Add(p)) continue;
            (IsNoDecay(name, p) ? noDecay : decay).Add(p);
        }
        return [new ParamGroup(decay, weightDecay), new ParamGroup(noDecay, 0f)];
    }

    /// <summary>The rule of <see cref="DecayAndNoDecay"/> for one tensor.</summary>
    public static bool IsNoDecay(string? name, Tensor p)
    {
        if (p.Rank <= 1) return true;
        if (string.IsNullOrEmpty(name)) return false;
        if (name.EndsWith("bias", StringComparison.OrdinalIgnoreCase)) return true;
        if (name.Contains("norm", StringComparison.OrdinalIgnoreCase)) return true;
        foreach (var segment in name.Split('.'))
            if (segment.StartsWith("ln_", StringComparison.OrdinalIgnoreCase)) return true;
        return false;
    }
}

/// <summary>Argument checks shared by the option records; messages say what to pass instead.</summary>
internal static class OptionChecks
{
    public static float NonNegative(float v, string name)
    {
        if (!float.IsFinite(v) || v < 0) throw new ArgumentOutOfRangeException(name, v, $"{name} must be a finite number ≥ 0.");
        return v;
    }

    public static float Positive(float v, string name)
    {
        if (!float.IsFinite(v) || v <= 0) throw new ArgumentOutOfRangeException(name, v, $"{name} must be a finite number > 0.");
        return v;
    }

    /// <summary>A decay rate in [0, 1).</summary>
    public static float UnitInterval(float v, string name)
    {
        if (!(v >= 0 && v < 1)) throw new ArgumentOutOfRangeException(name, v, $"{name} must be in [0, 1).");
        return v;
    }

    /// <summary>A factor in [0, 1].</summary>
    public static float UnitClosed(float v, string name)
    {
        if (!(v >= 0 && v <= 1)) throw new ArgumentOutOfRangeException(name, v, $"{name} must be in [0, 1].");
        return v;
    }
}
