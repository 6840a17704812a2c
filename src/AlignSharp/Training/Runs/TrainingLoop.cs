using AlignSharp.Distributed;
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

    /// <summary>What is trained: its parameters, checkpoint state and final outputs.</summary>
    ITrainable Trainable { get; }

    /// <summary>Turns a logging window's averaged metric sums (each Σ / Σ weight) into the values logged (e.g. ratios of two sums); by default they are logged as they are.</summary>
    void FinishMetrics(Dictionary<string, double> averaged) { }

    /// <summary>What the task carries from step to step besides the weights (BCO's running reward mean), by name, kept in
    /// each checkpoint's trainer_state.json; empty when nothing. Equal on every rank.</summary>
    IReadOnlyDictionary<string, double> State => new Dictionary<string, double>();

    /// <summary>Takes back <see cref="State"/> from the checkpoint a run resumes from.</summary>
    void Restore(IReadOnlyDictionary<string, double> state) { }
}

/// <summary>Evaluation of a supervised task's batches: the loss and metric sums averaged by weight, with tokens/s; no gradients.</summary>
public static class SupervisedEvaluation
{
    public static Dictionary<string, double> Average<TBatch>(IEnumerable<TBatch> batches, Func<TBatch, MicroBatchResult> score, Func<TBatch, double> weightOf)
    {
        var clock = Stopwatch.StartNew();
        double loss = 0, weight = 0;
        long tokens = 0;
        var sums = new Dictionary<string, double>();
        using (Autograd.NoGrad())
            foreach (var b in batches)
            {
                using var scope = TensorScope.Begin();
                var r = score(b);
                loss += r.LossSum.Item();
                weight += weightOf(b);
                tokens += r.Tokens;
                foreach (var (k, v) in r.MetricSums) sums[k] = sums.GetValueOrDefault(k) + v;
            }
        var m = new Dictionary<string, double> { ["loss"] = weight > 0 ? loss / weight : 0 };
        foreach (var (k, v) in sums) m[k] = weight > 0 ? v / weight : 0;
        m["tokens_per_s"] = clock.Elapsed.TotalSeconds > 0 ? tokens / clock.Elapsed.TotalSeconds : 0;
        return m;
    }
}

/// <summary>
/// The training loop shared by the supervised trainers, on the shared <see cref="RunSession"/> and <see cref="OptimizerStep"/>:
/// 1. order micro-batches by a seeded shuffle per epoch (a pure function of seed and epoch, so a resumed run
///    sees the same data);
/// 2. per optimizer step, backprop each micro-batch's summed loss divided by the step's total weight (1×8 = 8×1);
/// 3. the optimizer step: clip, skip a non-finite loss, norm or update (counted; too many in a row stops), schedule, AdamW;
/// 4. log, evaluate and checkpoint on their schedules; stop cleanly on SIGINT/SIGTERM; save the final model and a summary.
/// </summary>
public sealed class TrainingLoop(TextDataOptions options, ISupervisedTask task, string trainer, TextWriter? log = null)
{
    /// <summary>Consecutive non-finite steps after which training stops.</summary>
    public int MaxConsecutiveBadSteps { get; init; } = 5;

    /// <summary>Combines workers' gradients (data-parallel); one worker by default.</summary>
    public IGradientReducer? Reducer { get; init; }

    /// <summary>Runs after training, before the final outputs are written (e.g. reward statistics); its entries join the summary.</summary>
    public Func<Dictionary<string, object?>>? BeforeFinalSave { get; init; }

    public Dictionary<string, double> LastEval { get; private set; } = [];

    /// <summary>The data-parallel ranks (one process unless started by mpirun or srun).</summary>
    public ICommunicator World { get; init; } = Distributed.World.Current;

    /// <summary>Micro-batches per optimizer step over all ranks: accumulation × ranks.</summary>
    private int MicroBatchesPerStep => options.GradientAccumulationSteps * World.Size;

    /// <summary>Optimizer steps per epoch: every micro-batch once, the last step taking what remains (transformers' Trainer:
    /// an epoch of 10 micro-batches at accumulation 4 is steps of 4, 4 and 2).</summary>
    private int StepsPerEpoch => (task.MicroBatches + MicroBatchesPerStep - 1) / MicroBatchesPerStep;

    public int TotalSteps()
        => options.MaxSteps > 0 ? options.MaxSteps : Math.Max(1, (int)Math.Ceiling(StepsPerEpoch * options.Epochs));

    /// <summary>Fractional epochs after <paramref name="steps"/> optimizer steps: whole epochs plus the share of the
    /// current one's micro-batches used.</summary>
    private double Epoch(int steps)
    {
        int within = steps % StepsPerEpoch;
        return steps / StepsPerEpoch + Math.Min((double)within * MicroBatchesPerStep, task.MicroBatches) / task.MicroBatches;
    }

    /// <summary>
    /// The global sequence numbers (<see cref="MicroBatchAt"/>) of this rank's micro-batches in optimizer step
    /// <paramref name="step"/>: its consecutive share of the step's, the same whatever the number of ranks. The last
    /// step of an epoch has fewer; there each rank takes an equal share, the ranks past the epoch's end starting it
    /// again (as PyTorch's DistributedSampler pads an epoch), so no rank idles.
    /// </summary>
    private long[] StepSequences(int step)
    {
        int m = task.MicroBatches, perStep = MicroBatchesPerStep, accumulation = options.GradientAccumulationSteps;
        int epoch = step / StepsPerEpoch, start = step % StepsPerEpoch * perStep;
        int count = Math.Min(perStep, m - start);
        int share = count == perStep ? accumulation : (count + World.Size - 1) / World.Size;
        var sequences = new long[share];
        for (int a = 0; a < share; a++)
        {
            int position = start + World.Rank * share + a;
            sequences[a] = (long)epoch * m + position % m;
        }
        return sequences;
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

    /// <summary>Trains in a session of its own, or in <paramref name="session"/> when the trainer opened one earlier (to keep caches in the run directory).</summary>
    public Dictionary<string, object?> Run(RunSession? session = null)
    {
        if (task.MicroBatches == 0) throw new UserInputException("The training data produced no batches.");
        using var threads = ParallelFor.UseThreads(options.Threads);
        using var precision = options.OpenMatmulPrecision();
        using var owned = session == null ? RunSession.Open(options, trainer, log: log) : null;
        var run = session ?? owned!;
        int total = TotalSteps();
        run.Progress.TotalSteps = total;
        var trainable = task.Trainable;
        var reducer = Reducer ?? (World.Size > 1 ? new DataParallelReducer(World, options.AllreduceBucketMb) : null);
        var update = new OptimizerStep(trainable.Parameters, options, total, reducer);
        var reduced = (reducer as DataParallelReducer)?.Snapshot() ?? default;
        var opt = update.Optimizer;
        run.Restore(trainable, opt);
        int step = run.StartStep;
        var metrics = run.Metrics;
        var progress = run.Progress;

        var sums = new Dictionary<string, double>();
        double units = 0, lossSum = 0, gradNormSum = 0;
        long tokens = 0;
        long numTokens = RestoreNumTokens(run);
        RestoreTaskState(run);
        int logged = 0, skipped = 0, windowSkipped = 0, badInARow = 0, applied = 0;
        var window = Stopwatch.StartNew();
        RunStatus status = RunStatus.Completed;
        string? problem = null;

        while (step < total && !run.StopRequestedOnAnyRank())
        {
            var sequences = StepSequences(step);
            double weight = 0;
            foreach (var sequence in sequences) weight += task.Weight(MicroBatchAt(sequence));
            update.Begin(weight);
            var stepSums = new Dictionary<string, double>();
            long stepTokens = 0;
            for (int a = 0; a < sequences.Length; a++)
            {
                int mb = MicroBatchAt(sequences[a]);
                using var scope = TensorScope.Begin();
                var r = task.Forward(mb, new Random(HashSeed(options.Seed, (int)sequences[a] + 1_000_003)));
                update.Accumulate(Ops.MulScalar(r.LossSum, update.Scale), last: a == sequences.Length - 1);
                foreach (var (k, v) in r.MetricSums) stepSums[k] = stepSums.GetValueOrDefault(k) + v;
                stepTokens += r.Tokens;
            }
            var outcome = update.Finish();
            step++;
            // TRL's num_tokens: the real (non-padding) tokens of every micro-batch trained on so far, over all ranks.
            if (outcome.Applied) numTokens += World.Size > 1 ? SumOverRanks(stepTokens) : stepTokens;
            else if (World.Size > 1) SumOverRanks(0);
            progress.Advance(step);
            if (!outcome.Applied)
            {
                skipped++;
                windowSkipped++;
                badInARow++;
                progress.Message($"{trainer}: step {step} skipped: non-finite {outcome.SkipReason} ({badInARow} in a row)");
                if (badInARow >= MaxConsecutiveBadSteps)
                {
                    status = RunStatus.StoppedNonFinite;
                    problem = $"{badInARow} steps in a row had a non-finite loss, gradient or update; stopped at step {step}.";
                    break;
                }
            }
            else
            {
                badInARow = 0;
                applied++;
                units += update.StepWeight; lossSum += outcome.Loss * update.StepWeight; gradNormSum += outcome.GradNorm; tokens += stepTokens; logged++;
                foreach (var (k, v) in stepSums) sums[k] = sums.GetValueOrDefault(k) + v;
            }

            // A skipped step still ends its logging window (a line at every --logging-steps, as transformers' Trainer
            // logs) and still evaluates and checkpoints on schedule: its weights are the last finite ones.
            if (step % options.LoggingSteps == 0 || step == total)
            {
                if (World.Size > 1) tokens = SumOverRanks(sums, tokens);
                double seconds = window.Elapsed.TotalSeconds;
                var m = new Dictionary<string, double>();
                if (logged > 0)
                {
                    m["loss"] = units > 0 ? lossSum / units : 0;
                    foreach (var (k, v) in sums) m[k] = units > 0 ? v / units : 0;
                    task.FinishMetrics(m);
                    m["grad_norm"] = gradNormSum / logged;
                }
                m["learning_rate"] = opt.Lr;
                m["epoch"] = Epoch(step);
                m["tokens_per_s"] = seconds > 0 ? tokens / seconds : 0;
                m["num_tokens"] = numTokens;
                if (windowSkipped > 0) m["skipped_steps"] = windowSkipped;
                if (reducer is DataParallelReducer dp) { dp.AddMetrics(m, reduced, logged + windowSkipped); reduced = dp.Snapshot(); }
                metrics.Write(step, "train", m);
                var shown = new Dictionary<string, double>();
                if (m.TryGetValue("loss", out double shownLoss)) shown["loss"] = shownLoss;
                shown["tok/s"] = m["tokens_per_s"];
                progress.Report(step, shown);
                sums.Clear(); units = 0; lossSum = 0; gradNormSum = 0; tokens = 0; logged = 0; windowSkipped = 0;
                window.Restart();
            }
            if (options.EvalSteps > 0 && step % options.EvalSteps == 0 && step != total) Evaluate(step, metrics, progress);
            if (options.SaveSteps > 0 && step % options.SaveSteps == 0 && step != total) run.Checkpoint(step, Epoch(step), trainable, opt, CheckpointState(numTokens));
        }

        if (status == RunStatus.Completed && step > run.StartStep && applied == 0)
        {
            status = RunStatus.AllStepsSkipped;
            problem = $"every one of the {step - run.StartStep} steps was skipped for non-finite values; no final model was written.";
        }
        var summary = new Dictionary<string, object?> { ["skipped_steps"] = skipped };
        if (status == RunStatus.Completed && !run.StopRequested)
        {
            Evaluate(step, metrics, progress);
            foreach (var (k, v) in LastEval) summary["eval_" + k] = v;
            if (BeforeFinalSave?.Invoke() is { } more)
            {
                foreach (var (k, v) in more) summary[k] = v;
                // Finite weights whose outputs overflow (reward statistics of ±∞) are no model to save either.
                if (more.FirstOrDefault(e => e.Value is double d && !double.IsFinite(d)) is { Key: not null } bad)
                {
                    status = RunStatus.StoppedNonFinite;
                    problem = $"after step {step} the model's {bad.Key} is {bad.Value}: its outputs overflow, so it is not saved as final.";
                }
            }
        }
        summary["num_tokens"] = numTokens;
        return run.Finish(step, Epoch(step), trainable, opt, summary, status, problem, CheckpointState(numTokens));
    }

    /// <summary>num_tokens and the task's <see cref="ISupervisedTask.State"/> as a checkpoint's trainer_state.json keeps
    /// them, so that a resumed run counts on from there.</summary>
    private System.Text.Json.Nodes.JsonObject CheckpointState(long numTokens)
    {
        var state = new System.Text.Json.Nodes.JsonObject { ["num_tokens"] = numTokens };
        foreach (var (name, value) in task.State) state[name] = value;
        return state;
    }

    /// <summary>The task's state from the checkpoint resumed from (rank 0 reads it; every rank takes rank 0's), for the
    /// names the task keeps; nothing for a new run or a checkpoint without them.</summary>
    private void RestoreTaskState(RunSession run)
    {
        var names = task.State.Keys.ToArray();
        if (names.Length == 0) return;
        var extra = run.ResumedState?.Extra;
        var values = names.Select(n => run.IsFollower ? 0 : extra?[n]?.GetValue<double>() ?? double.NaN).ToArray();
        if (World.Size > 1) World.AllReduceSum(values);
        if (values.Any(double.IsNaN)) return;   // a new run, or a checkpoint written before the task kept these
        task.Restore(names.Zip(values).ToDictionary(p => p.First, p => p.Second));
    }

    /// <summary>num_tokens of the checkpoint resumed from (rank 0's, shared), or 0 for a new run or an older checkpoint without it.</summary>
    private long RestoreNumTokens(RunSession run)
    {
        long n = run.ResumedState?.Extra?["num_tokens"]?.GetValue<long>() ?? 0;
        if (World.Size == 1) return n;
        return SumOverRanks(run.IsFollower ? 0 : n);
    }

    private long SumOverRanks(long value)
    {
        var v = new double[] { value };
        World.AllReduceSum(v);
        return (long)v[0];
    }

    /// <summary>Adds every rank's metric sums (keys in sorted order, the same on every rank) and token count.</summary>
    private long SumOverRanks(Dictionary<string, double> sums, long tokens)
    {
        var keys = sums.Keys.Order(StringComparer.Ordinal).ToArray();
        var values = new double[keys.Length + 1];
        for (int i = 0; i < keys.Length; i++) values[i] = sums[keys[i]];
        values[^1] = tokens;
        World.AllReduceSum(values);
        for (int i = 0; i < keys.Length; i++) sums[keys[i]] = values[i];
        return (long)values[^1];
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
