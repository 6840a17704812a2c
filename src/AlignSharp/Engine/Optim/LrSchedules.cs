namespace AlignSharp.Engine.Optim;

/// <summary>
/// A learning rate as a function of the optimizer step. <c>step</c> is the number of optimizer steps already taken:
/// 0 for the first update, so the loop is <c>opt.Lr = schedule.LrAt(opt.StepCount); opt.Step();</c>. This is the
/// indexing of Hugging Face's <c>LambdaLR</c> schedules (the first update uses the multiplier at 0, which is 0 when
/// there is warmup).
/// </summary>
public interface ILrSchedule
{
    float LrAt(int step);
}

/// <summary>
/// <paramref name="baseLr"/> throughout, after an optional linear warmup from 0 over <paramref name="warmupSteps"/>
/// (HF <c>get_constant_schedule</c> / <c>get_constant_schedule_with_warmup</c>).
/// </summary>
public sealed class ConstantSchedule : ILrSchedule
{
    public float BaseLr { get; }
    public int WarmupSteps { get; }

    public ConstantSchedule(float baseLr, int warmupSteps = 0)
    {
        BaseLr = OptionChecks.NonNegative(baseLr, nameof(baseLr));
        WarmupSteps = warmupSteps >= 0 ? warmupSteps : throw new ArgumentOutOfRangeException(nameof(warmupSteps), warmupSteps, "warmupSteps must be ≥ 0.");
    }

    public float LrAt(int step) => (float)(BaseLr * LrSchedules.Warmup(step, WarmupSteps));
}

/// <summary>
/// Linear warmup from 0 to <paramref name="baseLr"/> over <paramref name="warmupSteps"/>, then linear decay reaching
/// <paramref name="minLr"/> at <paramref name="totalSteps"/> and staying there. With minLr = 0 this is HF's
/// <c>get_linear_schedule_with_warmup</c>: multiplier step/warmup, then (total − step)/(total − warmup), floored at 0.
/// </summary>
public sealed class WarmupLinearSchedule : ILrSchedule
{
    private readonly LrSchedules.Shape _shape;

    public WarmupLinearSchedule(float baseLr, int warmupSteps, int totalSteps, float minLr = 0)
        => _shape = new LrSchedules.Shape(baseLr, warmupSteps, totalSteps, minLr);

    public float LrAt(int step)
    {
        if (step < _shape.WarmupSteps) return (float)(_shape.BaseLr * LrSchedules.Warmup(step, _shape.WarmupSteps));
        double factor = Math.Max(0.0, (double)(_shape.TotalSteps - step) / Math.Max(1, _shape.TotalSteps - _shape.WarmupSteps));
        return _shape.Decayed(factor);
    }
}

/// <summary>
/// Linear warmup from 0 to <paramref name="baseLr"/> over <paramref name="warmupSteps"/>, then a half cosine down to
/// <paramref name="minLr"/> at <paramref name="totalSteps"/>. With minLr = 0 this is HF's
/// <c>get_cosine_schedule_with_warmup</c> (num_cycles 0.5): multiplier 0.5·(1 + cos(π·progress)), progress =
/// (step − warmup)/(total − warmup); with minLr it is HF's cosine-with-min-lr form, minLr + (baseLr − minLr)·that.
/// Past <paramref name="totalSteps"/> the rate stays at minLr (progress is capped at 1, where HF's would rise again).
/// </summary>
public sealed class WarmupCosineSchedule : ILrSchedule
{
    private readonly LrSchedules.Shape _shape;

    public WarmupCosineSchedule(float baseLr, int warmupSteps, int totalSteps, float minLr = 0)
        => _shape = new LrSchedules.Shape(baseLr, warmupSteps, totalSteps, minLr);

    public float LrAt(int step)
    {
        if (step < _shape.WarmupSteps) return (float)(_shape.BaseLr * LrSchedules.Warmup(step, _shape.WarmupSteps));
        double progress = Math.Min(1.0, (double)(step - _shape.WarmupSteps) / Math.Max(1, _shape.TotalSteps - _shape.WarmupSteps));
        return _shape.Decayed(0.5 * (1 + Math.Cos(Math.PI * progress)));
    }
}

public static class LrSchedules
{
    /// <summary>The names <see cref="Create"/> accepts (the <c>--lr-schedule</c> values).</summary>
    public static IReadOnlyList<string> Names { get; } = ["constant", "constant_with_warmup", "linear", "cosine"];

    /// <summary>
    /// Builds a schedule by name (case-insensitive), as transformers names them: <c>constant</c> (<see cref="ConstantSchedule"/>
    /// without warmup: transformers' constant has none, so a warmup is an error here rather than ignored),
    /// <c>constant_with_warmup</c>, <c>linear</c> (<see cref="WarmupLinearSchedule"/>), <c>cosine</c>
    /// (<see cref="WarmupCosineSchedule"/>); totalSteps is unused by the constant ones.
    /// </summary>
    public static ILrSchedule Create(string name, float baseLr, int warmupSteps, int totalSteps, float minLr = 0)
    {
        ArgumentNullException.ThrowIfNull(name);
        switch (name.Trim().ToLowerInvariant())
        {
            case "constant" or "constant_with_warmup":
                if (minLr != 0) throw new ArgumentException("minLr has no meaning for the constant schedule; use \"linear\" or \"cosine\", or leave minLr at 0.", nameof(minLr));
                if (warmupSteps > 0 && name.Trim().ToLowerInvariant() == "constant")
                    throw new ArgumentException("the constant schedule has no warmup (as in transformers); use \"constant_with_warmup\".", nameof(warmupSteps));
                return new ConstantSchedule(baseLr, warmupSteps);
            case "linear": return new WarmupLinearSchedule(baseLr, warmupSteps, totalSteps, minLr);
            case "cosine": return new WarmupCosineSchedule(baseLr, warmupSteps, totalSteps, minLr);
            default:
                throw new ArgumentException($"Unknown learning-rate schedule '{name}'. Use one of: {string.Join(", ", Names)}.", nameof(name));
        }
    }

    /// <summary>Warmup multiplier step/warmup (HF: step / max(1, warmup)), 1 once warmup is over.</summary>
    internal static double Warmup(int step, int warmupSteps)
    {
        if (step < 0) throw new ArgumentOutOfRangeException(nameof(step), step, "step counts optimizer steps taken and must be ≥ 0.");
        return step < warmupSteps ? (double)step / Math.Max(1, warmupSteps) : 1.0;
    }

    /// <summary>The validated arguments the warmup-then-decay schedules share.</summary>
    internal readonly struct Shape
    {
        public readonly float BaseLr, MinLr;
        public readonly int WarmupSteps, TotalSteps;

        public Shape(float baseLr, int warmupSteps, int totalSteps, float minLr)
        {
            BaseLr = OptionChecks.NonNegative(baseLr, nameof(baseLr));
            if (warmupSteps < 0) throw new ArgumentOutOfRangeException(nameof(warmupSteps), warmupSteps, "warmupSteps must be ≥ 0.");
            // A warmup longer than the run is allowed, as in HF: the rate is still rising when the run ends. (A short
            // data set with a warmup meant for a long one must train, not stop.)
            if (totalSteps < 1) throw new ArgumentOutOfRangeException(nameof(totalSteps), totalSteps, "totalSteps must be ≥ 1.");
            MinLr = OptionChecks.NonNegative(minLr, nameof(minLr));
            if (minLr > baseLr) throw new ArgumentOutOfRangeException(nameof(minLr), minLr, $"minLr must not exceed baseLr ({baseLr}).");
            WarmupSteps = warmupSteps;
            TotalSteps = totalSteps;
        }

        /// <summary>minLr + (baseLr − minLr)·factor, factor in [0, 1].</summary>
        public float Decayed(double factor) => (float)(MinLr + ((double)BaseLr - MinLr) * factor);
    }
}
