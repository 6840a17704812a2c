using AlignSharp.Engine;
using AlignSharp.Engine.Optim;

namespace AlignSharp.Training.Runs;

/// <summary>
/// Combines what the workers of a data-parallel run computed. With one worker (<see cref="SingleWorker"/>) both are
/// the identity. A data-parallel implementation sums each value over the workers (MPI all-reduce), so that a step's
/// loss is Σ loss / Σ weight over every worker's micro-batches and every worker applies the same update.
/// </summary>
public interface IGradientReducer
{
    /// <summary>The sum over workers of a scalar (normalisation weights, loss sums, finiteness votes).</summary>
    double Sum(double local);

    /// <summary>
    /// Called before the backward pass of a step's last micro-batch, with the parameters in registration order: a
    /// gradient-ready hook (<see cref="Autograd.OnGradientReady"/>) for that pass, so that reducing can start while it
    /// runs, or null when everything waits for <see cref="SumGradients"/>.
    /// </summary>
    Action<Tensor>? BeginLastBackward(IReadOnlyList<Tensor> parameters) => null;

    /// <summary>Replaces each parameter's gradient by its sum over workers (gradients are already scaled by 1 / global
    /// weight); the same parameters in the same order as <see cref="BeginLastBackward"/>.</summary>
    void SumGradients(IReadOnlyList<Tensor> parameters);
}

/// <summary>The single-process reducer: nothing to combine.</summary>
public sealed class SingleWorker : IGradientReducer
{
    public static readonly SingleWorker Instance = new();
    public double Sum(double local) => local;
    public void SumGradients(IReadOnlyList<Tensor> parameters) { }
}

/// <summary>How an optimizer step ended.</summary>
/// <param name="Applied">The update was applied.</param>
/// <param name="Loss">Σ loss / Σ weight of the step (all workers).</param>
/// <param name="GradNorm">Global gradient norm before clipping.</param>
/// <param name="SkipReason">Why the step was skipped ("loss", "gradient norm", "update"), or null.</param>
public readonly record struct StepOutcome(bool Applied, double Loss, double GradNorm, string? SkipReason);

/// <summary>
/// The one optimizer step of every trainer (SFT, RM, DPO, PPO, GRPO, RLOO):
/// 1. <see cref="Begin"/>: zero the gradients; the step's normalisation weight W (target tokens, pairs, completions,
///    completion tokens; summed over workers) gives each micro-batch loss the factor <see cref="Scale"/> = 1 / W, so
///    accumulation 1×8 equals 8×1;
/// 2. <see cref="Accumulate"/>: backprop each micro-batch's scaled loss (a non-finite loss marks the step bad);
/// 3. <see cref="Finish"/>: [data-parallel: sum gradients over workers] → clip the global norm (0 = no clipping) →
///    skip on a non-finite loss or norm → set the scheduled learning rate → apply the update only if every updated
///    weight and optimizer state stays finite (<see cref="IOptimizer.TryStep"/>), so non-finite weights are never
///    applied and never saved.
/// </summary>
public sealed class OptimizerStep
{
    private readonly TrainerOptions _options;
    private readonly ILrSchedule _schedule;
    private readonly IGradientReducer _reducer;
    private readonly Tensor[] _registered;
    private double _lossSum;
    private bool _lossFinite;

    /// <param name="trainable">The trained parameters (weight decay off for biases and norms).</param>
    /// <param name="totalUpdates">Optimizer steps in the whole run (the schedule's length).</param>
    public OptimizerStep(IReadOnlyList<(string Name, Tensor Parameter)> trainable, TrainerOptions options, int totalUpdates, IGradientReducer? reducer = null)
    {
        _options = options;
        _reducer = reducer ?? SingleWorker.Instance;
        _registered = [.. trainable.Select(t => t.Parameter)];
        Optimizer = new AdamW(ParamGroups.DecayAndNoDecay(trainable, options.WeightDecay),
            new AdamWOptions(options.LearningRate, options.AdamBeta1, options.AdamBeta2, options.AdamEpsilon, options.WeightDecay));
        _schedule = LrSchedules.Create(options.LrScheduler, options.LearningRate, options.WarmupFor(totalUpdates), totalUpdates);
    }

    public AdamW Optimizer { get; }

    /// <summary>The step's total weight W over every worker.</summary>
    public double StepWeight { get; private set; }

    /// <summary>1 / the step's total weight: the factor of each micro-batch's summed loss.</summary>
    public float Scale { get; private set; }

    /// <summary>Step 1: zero the gradients and fix the normalisation from the local weight of this step's micro-batches.</summary>
    public void Begin(double localWeight)
    {
        Optimizer.ZeroGrad();
        double weight = _reducer.Sum(localWeight);
        StepWeight = weight;
        Scale = weight > 0 ? (float)(1.0 / weight) : 0f;
        _lossSum = 0;
        _lossFinite = true;
    }

    /// <summary>
    /// Step 2: backprop <paramref name="scaledLoss"/> (a micro-batch's summed loss times <see cref="Scale"/>); returns its
    /// value. A non-finite loss is not backpropagated and makes <see cref="Finish"/> skip the step.
    /// <paramref name="last"/>: this is the step's last micro-batch on this worker, so a data-parallel reducer may
    /// start summing gradients that this backward pass has finished while it runs on.
    /// </summary>
    public double Accumulate(Tensor scaledLoss, bool last = false)
    {
        double value = scaledLoss.Item();
        _lossSum += value;
        if (!double.IsFinite(value)) { _lossFinite = false; return value; }
        if (!scaledLoss.RequiresGrad) return value;
        var ready = last ? _reducer.BeginLastBackward(_registered) : null;
        if (ready == null) scaledLoss.Backward();
        else
            using (Autograd.OnGradientReady(ready)) scaledLoss.Backward();
        return value;
    }

    /// <summary>Whether every micro-batch so far had a finite loss (a caller may stop accumulating early).</summary>
    public bool LossFinite => _lossFinite;

    /// <summary>Step 3: reduce, clip, check, schedule, update.</summary>
    public StepOutcome Finish()
    {
        var parameters = Optimizer.Parameters;
        // Data-parallel gradient averaging goes here: the reducer sums the (already 1/W-scaled) gradients over workers.
        _reducer.SumGradients(_registered);
        double loss = _reducer.Sum(_lossSum);
        bool lossFinite = _reducer.Sum(_lossFinite ? 0 : 1) == 0 && double.IsFinite(loss);
        if (!lossFinite) return Skip(loss, double.NaN, "loss");
        double norm = _options.MaxGradNorm > 0 ? GradClip.ClipGradNorm(parameters, _options.MaxGradNorm) : GradClip.GlobalNorm(parameters);
        if (!double.IsFinite(norm)) return Skip(loss, norm, "gradient norm");
        Optimizer.Lr = _schedule.LrAt(Optimizer.StepCount);
        if (!Optimizer.TryStep()) return Skip(loss, norm, "update (the new weights would not be finite)");
        return new StepOutcome(true, loss, norm, null);
    }

    private StepOutcome Skip(double loss, double norm, string reason)
    {
        Optimizer.ZeroGrad();
        return new StepOutcome(false, loss, norm, reason);
    }
}
