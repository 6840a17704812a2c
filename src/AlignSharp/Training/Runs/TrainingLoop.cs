using AlignSharp.Engine;
using AlignSharp.Engine.Kernels;
using AlignSharp.Engine.Optim;
using System.Diagnostics;

namespace AlignSharp.Training.Runs;

/// <summary>What one micro-batch contributed: a summed loss (not yet normalised) and metric sums.</summary>
public sealed record MicroBatchResult(Tensor LossSum, Dictionary<string, double> MetricSums, long Tokens);

/// <summary>
/// One supervised objective (SFT, reward modelling, DPO, ...) as the loop sees it: micro-batches in a fixed
/// order, each with a normalisation weight known before its forward pass (target tokens, pairs), so that a
/// step's loss is Σ loss / Σ weight over its micro-batches and gradient accumulation 1×8 equals 8×1.
/// </summary>
public interface ISupervisedTask
{
    /// <summary>Micro-batches per epoch.</summary>
    int MicroBatches { get; }

    /// <summary>The units the loss of micro-batch <paramref name="index"/> is summed over.</summary>
    double Weight(int index);

    /// <summary>Forward pass of a micro-batch (with autograd on): summed loss and metric sums.</summary>
    MicroBatchResult Forward(int index, Random rng);

    /// <summary>Metrics on held-out data (already averaged), or null when there is none.</summary>
    Dictionary<string, double>? Evaluate();

    /// <summary>The parameters the optimizer updates, named.</summary>
    IReadOnlyList<(string Name, Tensor Parameter)> Parameters { get; }

    /// <summary>Writes the trained model(s) in Hugging Face layout into <paramref name="dir"/>.</summary>
    void SaveModel(string dir);

    /// <summary>Restores trained weights from a checkpoint directory written by <see cref="SaveModel"/>.</summary>
    void LoadModel(string dir);
}

/// <summary>
/// The training loop shared by the supervised trainers:
/// 1. order micro-batches by a seeded shuffle per epoch (a pure function of seed and epoch, so a resumed run
///    sees the same data);
/// 2. per optimizer step, sum the losses of its micro-batches, normalised by their total weight, and backprop;
/// 3. clip the gradient norm; a non-finite loss or norm skips the step (counted; too many in a row stops);
/// 4. set the scheduled learning rate and step AdamW;
/// 5. log, evaluate and checkpoint on their schedules; save the final model and a summary.
/// </summary>
public sealed class TrainingLoop(TrainerOptions options, ISupervisedTask task, string trainer)
{
    /// <summary>Consecutive non-finite steps after which training stops.</summary>
    public int MaxConsecutiveBadSteps { get; init; } = 5;

    public Dictionary<string, double> LastEval { get; private set; } = [];

    public int TotalSteps()
    {
        int perEpoch = Math.Max(1, task.MicroBatches / options.GradientAccumulationSteps);
        return options.MaxSteps > 0 ? options.MaxSteps : Math.Max(1, (int)Math.Ceiling(perEpoch * options.Epochs));
    }

    /// <summary>Global micro-batch sequence number → index within the epoch's shuffled order.</summary>
    private int[] _order = [];
    private int _orderEpoch = -1;

    private int MicroBatchAt(long sequence)
    {
        int n = task.MicroBatches;
        int epoch = (int)(sequence / n);
        if (epoch != _orderEpoch)
        {
            _order = Enumerable.Range(0, n).ToArray();
            new Random(HashSeed(options.Seed, epoch)).Shuffle(_order);
            _orderEpoch = epoch;
        }
        return _order[(int)(sequence % n)];
    }

    internal static int HashSeed(int seed, int stream)
    {
        ulong x = (ulong)(uint)seed * 0x9E3779B97F4A7C15UL ^ ((ulong)(uint)stream + 0x632BE59BD9B4E019UL) * 0xC2B2AE3D27D4EB4FUL;
        x ^= x >> 31; x *= 0xBF58476D1CE4E5B9UL; x ^= x >> 29;
        return (int)(x & 0x7FFFFFFF);
    }

    public Dictionary<string, object?> Run()
    {
        if (task.MicroBatches == 0) throw new UserInputException("The training data produced no batches.");
        if (options.Threads > 0) ParallelFor.Threads = options.Threads;
        var run = new RunDirectory(options.Out!);
        run.WriteConfig(options, trainer);
        var opt = new AdamW(ParamGroups.DecayAndNoDecay(task.Parameters, options.WeightDecay),
            new AdamWOptions(options.LearningRate, options.AdamBeta1, options.AdamBeta2, options.AdamEpsilon, options.WeightDecay));
        int total = TotalSteps();
        var schedule = LrSchedules.Create(options.LrScheduler, options.LearningRate, options.WarmupSteps, total);

        int step = 0;
        string? resumeFrom = run.ResolveResume(options.Resume);
        if (resumeFrom != null)
        {
            var state = TrainerState.Load(resumeFrom);
            task.LoadModel(Path.Combine(resumeFrom, "model"));
            using (var f = File.OpenRead(Path.Combine(resumeFrom, "optimizer.bin"))) opt.LoadState(f);
            step = state.Step;
        }
        using var metrics = new MetricsLog(run.MetricsPath, resumeFrom != null ? step : -1, options.ReportTo);
        var progress = new Progress(trainer, total, options.LoggingSteps);
        if (resumeFrom != null) progress.Message($"{trainer}: resumed from {resumeFrom} at step {step}");

        var sums = new Dictionary<string, double>();
        double units = 0, lossSum = 0, gradNormSum = 0;
        long tokens = 0;
        int logged = 0, skipped = 0, badInARow = 0;
        var window = Stopwatch.StartNew();
        int accumulation = options.GradientAccumulationSteps;

        while (step < total)
        {
            opt.ZeroGrad();
            long first = (long)step * accumulation;
            double weight = 0;
            for (int a = 0; a < accumulation; a++) weight += task.Weight(MicroBatchAt(first + a));
            float scale = weight > 0 ? (float)(1.0 / weight) : 0f;
            double stepLoss = 0;
            var stepSums = new Dictionary<string, double>();
            long stepTokens = 0;
            for (int a = 0; a < accumulation; a++)
            {
                int mb = MicroBatchAt(first + a);
                using var scope = TensorScope.Begin();
                var r = task.Forward(mb, new Random(HashSeed(options.Seed, (int)(first + a) + 1_000_003)));
                var loss = Ops.MulScalar(r.LossSum, scale);
                stepLoss += r.LossSum.Item();
                if (loss.RequiresGrad) loss.Backward();
                foreach (var (k, v) in r.MetricSums) stepSums[k] = stepSums.GetValueOrDefault(k) + v;
                stepTokens += r.Tokens;
            }
            float norm = options.MaxGradNorm > 0
                ? GradClip.ClipGradNorm(opt.Parameters, options.MaxGradNorm)
                : GradClip.ClipGradNorm(opt.Parameters, float.PositiveInfinity);
            if (!double.IsFinite(stepLoss) || !float.IsFinite(norm))
            {
                skipped++;
                badInARow++;
                opt.ZeroGrad();
                progress.Message($"{trainer}: step {step + 1} skipped: non-finite {(double.IsFinite(stepLoss) ? "gradient norm" : "loss")} ({badInARow} in a row)");
                if (badInARow >= MaxConsecutiveBadSteps)
                    throw new UserInputException($"{trainer}: {badInARow} steps in a row had a non-finite loss or gradient; stopped. " +
                        $"The last good checkpoint is in {run.CheckpointsPath}. Try a lower --learning-rate.");
                step++;
                continue;
            }
            badInARow = 0;
            opt.Lr = schedule.LrAt(opt.StepCount);
            opt.Step();
            step++;

            units += weight; lossSum += stepLoss; gradNormSum += norm; tokens += stepTokens; logged++;
            foreach (var (k, v) in stepSums) sums[k] = sums.GetValueOrDefault(k) + v;

            if (step % options.LoggingSteps == 0 || step == total)
            {
                double seconds = window.Elapsed.TotalSeconds;
                var m = new Dictionary<string, double>
                {
                    ["loss"] = units > 0 ? lossSum / units : 0,
                };
                foreach (var (k, v) in sums) m[k] = units > 0 ? v / units : 0;
                m["grad_norm"] = gradNormSum / logged;
                m["learning_rate"] = opt.Lr;
                m["epoch"] = (double)step * accumulation / task.MicroBatches;
                m["tokens_per_s"] = seconds > 0 ? tokens / seconds : 0;
                if (skipped > 0) m["skipped_steps"] = skipped;
                metrics.Write(step, "train", m);
                progress.Report(step, new Dictionary<string, double> { ["loss"] = m["loss"], ["tok/s"] = m["tokens_per_s"] });
                sums.Clear(); units = 0; lossSum = 0; gradNormSum = 0; tokens = 0; logged = 0;
                window.Restart();
            }
            if (options.EvalSteps > 0 && step % options.EvalSteps == 0 && step != total) Evaluate(step, metrics, progress);
            if (options.SaveSteps > 0 && step % options.SaveSteps == 0 && step != total) Checkpoint(run, step, opt);
        }

        Evaluate(step, metrics, progress);
        Checkpoint(run, step, opt);
        string finalTmp = run.FinalPath + ".tmp-" + Guid.NewGuid().ToString("N");
        task.SaveModel(finalTmp);
        if (Directory.Exists(run.FinalPath)) Directory.Delete(run.FinalPath, recursive: true);
        Directory.Move(finalTmp, run.FinalPath);

        var summary = new Dictionary<string, object?>
        {
            ["trainer"] = trainer,
            ["steps"] = step,
            ["skipped_steps"] = skipped,
            ["train_runtime_s"] = Math.Round(metrics.Elapsed, 2),
            ["final_model"] = run.FinalPath,
        };
        foreach (var (k, v) in LastEval) summary["eval_" + k] = v;
        run.WriteSummary(summary);
        progress.Message($"{trainer}: done, {step} steps; final model in {run.FinalPath}");
        return summary;
    }

    private void Checkpoint(RunDirectory run, int step, IOptimizer opt)
    {
        if (options.SaveSteps == 0) return;
        run.SaveCheckpoint(step, new TrainerState(step, (double)step * options.GradientAccumulationSteps / task.MicroBatches), dir =>
        {
            task.SaveModel(Path.Combine(dir, "model"));
            using var f = File.Create(Path.Combine(dir, "optimizer.bin"));
            opt.SaveState(f);
        }, options.SaveTotalLimit);
    }

    private void Evaluate(int step, MetricsLog metrics, Progress progress)
    {
        Dictionary<string, double>? m;
        using (Autograd.NoGrad()) m = task.Evaluate();
        if (m == null) return;
        LastEval = m;
        metrics.Write(step, "eval", m);
        progress.Message($"eval at step {step}: " + string.Join("  ", m.Select(kv => $"{kv.Key} {kv.Value:G5}")));
    }
}
