using AlignSharp.Text.Jinja;
using System.Diagnostics;
using System.Text.Json.Nodes;
using AlignSharp.Distributed;
using AlignSharp.Engine;
using AlignSharp.Engine.Kernels;
using AlignSharp.Engine.Optim;
using AlignSharp.Models;
using AlignSharp.Models.Checkpoints;
using AlignSharp.Models.Lora;
using AlignSharp.Text;
using AlignSharp.Training.Data;
using AlignSharp.Training.Rewards;
using AlignSharp.Training.Runs;

namespace AlignSharp.Training.Rl;

/// <summary>
/// The RL loop shared by PPO, GRPO and RLOO. Each rollout step:
/// 1. take the step's prompts (a seeded shuffle per pass over the prompts, a pure function of seed and step);
/// 2. collect a rollout batch (<see cref="RolloutCollector.Collect"/>); a non-finite score skips the step (counted);
/// 3. compute advantages (the algorithm);
/// 4. NumPpoEpochs passes over the batch in NumMiniBatches shuffled minibatches: per minibatch, sum the losses of its
///    micro-batches, clip the gradient norm and step AdamW; a non-finite loss or gradient skips that update (counted);
///    MaxBadStepsInARow bad updates or rewards in a row stop the run, leaving the last good checkpoint as it was;
/// 5. update the KL controller with the batch's KL;
/// 6. log metrics (every step) and sample completions; checkpoint on schedule; at the end save the final policy.
/// </summary>
public sealed class RlTrainer
{
    private readonly RlOptions _options;
    private readonly RlAlgorithm _algorithm;
    private readonly RlModels _models;
    private readonly IReadOnlyList<PromptExample> _prompts;
    private readonly RewardFunction _reward;
    private int _skippedSteps, _skippedUpdates, _badInARow;
    private long _episodes;

    /// <summary>A trainer over models, prompts and rewards given directly (the library API); --policy and --prompts are then
    /// only recorded in run_config.json and may be left out.</summary>
    public RlTrainer(RlOptions options, RlAlgorithm algorithm, RlModels models, IReadOnlyList<PromptExample> prompts, RewardFunction reward)
    {
        (options with { Policy = options.Policy ?? "(given)", Prompts = options.Prompts ?? "(given)" }).Validate();
        if (prompts.Count == 0) throw new UserInputException("No prompts to train on.");
        if (algorithm is Ppo && models.Value == null) throw new UserInputException("PPO needs a value model.");
        _options = options; _algorithm = algorithm; _models = models; _prompts = prompts; _reward = reward;
        KlController = options.TargetKl > 0
            ? new AdaptiveKlController(options.KlCoef, options.TargetKl, options.KlHorizon)
            : new FixedKlController(options.KlCoef);
    }

    public KlController KlController { get; }

    /// <summary>Metrics of the last logged step.</summary>
    public IReadOnlyDictionary<string, double> LastMetrics { get; private set; } = new Dictionary<string, double>();

    /// <summary>
    /// Everything from options: the policy and its reference from --policy; rewards from --reward-model and --reward-url plus
    /// <paramref name="extraRewards"/> (e.g. C# functions); PPO's value model per --value-model; the prompts; PPO-ptx data.
    /// </summary>
    public static RlTrainer Create(RlOptions options, IEnumerable<(IRewardSource Source, double Weight)>? extraRewards = null)
    {
        options.Validate();
        using var threads = ParallelFor.UseThreads(options.Threads);
        var pre = options.LoadTrained(options.Policy!);
        MemoryTrace.Mark("policy loaded");
        if (pre.Model.Config.Head != HeadKind.LanguageModel) throw new UserInputException($"--policy {options.Policy}: the policy needs a language-model head.");
        var tokenizer = pre.RequireTokenizer("the policy (to tokenize prompts and decode completions)");
        var template = ChatTemplate.Resolve(options.ChatTemplate, options.Policy, options.ChatTemplateKwargs);

        var sources = new List<(IRewardSource, double)>();
        RewardModel? rewardModel = null;
        if (options.RewardModel != null)
        {
            rewardModel = RewardModel.Load(options.RewardModel, bf16Matrices: options.FrozenInBf16(options.RewardModel));
            MemoryTrace.Mark("reward model loaded");
            if (options.NormalizeReward) rewardModel.RequireNormalization("--normalize-reward");
            sources.Add((new RewardModelSource(rewardModel, options.NormalizeReward, options.BatchSize), options.RewardModelWeight));
        }
        if (options.RewardUrl != null)
            sources.Add((new HttpRewardSource(options.RewardUrl, new HttpRewardOptions { TimeoutSeconds = options.RewardTimeout, MaxRetries = options.RewardRetries }), options.RewardUrlWeight));
        if (extraRewards != null) sources.AddRange(extraRewards);
        var reward = new RewardFunction(sources);
        int positions = pre.Model.Config.MaxPositions;
        if (options.MaxNewTokens >= positions)
            throw new UserInputException($"--max-new-tokens {options.MaxNewTokens} leaves no room for a prompt in the policy's {positions} positions (max_position_embeddings).");
        if (options.MaxPromptLength + options.MaxNewTokens > positions)
        {
            Console.Error.WriteLine($"note: --max-prompt-length {options.MaxPromptLength} + --max-new-tokens {options.MaxNewTokens} is more than the policy's {positions} positions; prompts keep their last {positions - options.MaxNewTokens} tokens.");
            options = options with { MaxPromptLength = positions - options.MaxNewTokens };
        }

        var models = LoadModels(options, pre, tokenizer, template, rewardModel);
        PtxData? ptx = null;
        if (options is PpoOptions { PtxData: not null } ppo)
            ptx = PtxData.Load(ppo.PtxData, tokenizer, template, ppo.MaxPromptLength + ppo.MaxNewTokens, ppo.BatchSize, ppo.Seed, ppo.SkipBadRecords);
        RlAlgorithm algorithm = options switch
        {
            PpoOptions p => new Ppo(p, ptx),
            GrpoOptions g => new Grpo(g),
            RlooOptions r => new Rloo(r),
            _ => throw new ArgumentException($"Unknown RL options {options.GetType().Name}."),
        };

        var prompts = DatasetLoader.LoadPrompts(options.Prompts!, new DataLoadOptions { SkipBadRecords = options.SkipBadRecords });
        if (prompts.Warning != null) Console.Error.WriteLine($"warning: {prompts.Warning}");
        if (template.FallbackWarning(prompts.Records.Any(p => p.Prompt.IsConversational)) is { } fallback) Console.Error.WriteLine($"warning: {fallback}");
        return new RlTrainer(options, algorithm, models, prompts.Records, reward);
    }

    /// <summary>
    /// The models of a run as <see cref="Create"/> loads them: the policy <paramref name="pre"/> (loaded by
    /// <see cref="TrainerOptions.LoadTrained"/>) with its starting adapter, its reference, and PPO's value model per
    /// --value-model. <paramref name="tokenizer"/> may be null (rollouts from token ids) unless the value model comes from
    /// another model than the policy; <paramref name="rewardModel"/> only decides --value-model auto.
    /// </summary>
    public static RlModels LoadModels(RlOptions options, Pretrained pre, ITokenizer? tokenizer, ChatTemplate template, RewardModel? rewardModel)
    {
        // With LoRA the reference is the policy itself with the starting adapter (or none) in place of the trained one: no copy.
        // Otherwise a frozen copy of the starting policy (an adapter directory's adapter stays attached, it is frozen too).
        var adapter = options.StartingAdapter(pre.Model, options.Policy);
        var reference = adapter != null ? pre.Model : options.LoadFrozen(options.Policy!);
        TransformerModel? value = null;
        LoraAdapter? valueAdapter = null;
        if (options is PpoOptions ppo)
        {
            (value, valueAdapter) = adapter != null ? LoraValueModel(ppo, tokenizer, rewardModel, pre.Model, adapter) : (LoadValueModel(ppo, tokenizer, rewardModel).Model, null);
            value.GradientCheckpointing = ppo.GradientCheckpointing; // every kind of value model, a trunk shared with the policy too
            MemoryTrace.Mark("value model loaded");
        }
        return new RlModels(pre.Model, reference, value, tokenizer, template)
        {
            PolicyDirectory = options.Policy,
            PolicyAdapter = adapter,
            ValueAdapter = valueAdapter,
            ReferenceAdapter = options.Adapter != null ? adapter!.FrozenCopy() : null,
        };
    }

    /// <summary>
    /// The value model, always with a scalar head (a new one, seeded, unless the source has one): --value-model reward
    /// takes the reward model's body (TRL's default), policy the policy's, or a directory. auto is reward when a reward
    /// model is given and reads the policy's tokens (same tokenizer), else policy.
    /// </summary>
    private static (TransformerModel Model, string Directory) LoadValueModel(PpoOptions o, ITokenizer? policyTokenizer, RewardModel? rewardModel, bool lora = false)
    {
        string choice = lora && o.ValueModel == "auto" ? "policy" : o.ValueModel;
        if (choice != "policy" && policyTokenizer == null) throw new InvalidOperationException("A value model from another model than the policy needs the policy's tokenizer.");
        string dir = choice switch
        {
            "auto" => o.RewardModel != null && rewardModel != null && TokenizerComparison.SameTokens(rewardModel.Tokenizer, policyTokenizer!) ? o.RewardModel : o.Policy!,
            "reward" => o.RewardModel!,
            "policy" => o.Policy!,
            _ => Directory.Exists(choice) ? choice : throw new UserInputException($"--value-model must be auto, reward, policy or a model directory; '{choice}' is none of these."),
        };
        if (choice == "auto" && o.RewardModel != null && dir == o.Policy)
            Console.Error.WriteLine($"note: the reward model's tokenizer differs from the policy's, so the value model starts from the policy ({o.Policy}).");
        // With LoRA the value model's trunk is frozen (its adapter and head train), in the storage --frozen-dtype says.
        var value = ModelIO.LoadMerged(dir, HeadKind.Scalar, o.Seed, bf16Matrices: lora && o.FrozenInBf16(dir));
        if (dir != o.Policy)
        {
            // The value model reads the policy's token ids, so its vocabulary must be the policy's.
            var tok = rewardModel != null && dir == o.RewardModel ? rewardModel.Tokenizer : Pretrained.Load(dir).Tokenizer;
            if (tok != null && !TokenizerComparison.SameTokens(tok, policyTokenizer!))
                throw new UserInputException($"--value-model: {dir} has a different tokenizer from the policy, so it cannot read the policy's tokens; use --value-model policy.");
            if (value.Config.VocabSize < policyTokenizer!.VocabSize)
                throw new UserInputException($"--value-model: {dir} has {value.Config.VocabSize} token embeddings, fewer than the policy's tokenizer; use --value-model policy.");
        }
        return (value, dir);
    }

    /// <summary>
    /// PPO's value model with LoRA: a second adapter (the policy adapter's settings, task SEQ_CLS, a seed of its own) and a
    /// new scalar head, both trained, on a frozen trunk: the policy's own weights for --value-model auto or policy (no
    /// copy), else the named model (<see cref="LoadValueModel"/>'s rules, loaded once as a frozen trunk).
    /// </summary>
    private static (TransformerModel, LoraAdapter) LoraValueModel(PpoOptions o, ITokenizer? policyTokenizer, RewardModel? rewardModel, TransformerModel policy, LoraAdapter policyAdapter)
    {
        var (value, trunk) = o.ValueModel is "auto" or "policy"
            ? (TransformerModel.SharingTrunk(policy, HeadKind.Scalar, o.Seed), o.Policy!)
            : LoadValueModel(o, policyTokenizer, rewardModel, lora: true);
        // value_model/ records the trunk it adapts as its base, so it loads by the adapter-directory rule.
        var config = policyAdapter.Config.ForSequenceClassification() with { BaseModel = trunk };
        return (value, LoraAdapter.Create(value, config, TrainingLoop.HashSeed(o.Seed, 41)));
    }

    /// <summary>The processes training together (data-parallel under mpirun): each takes --batch-size × accumulation ×
    /// minibatches completions of every rollout step, so a step's global batch is that many times <c>World.Size</c>.</summary>
    public ICommunicator World { get; init; } = Distributed.World.Current;

    /// <summary>Prompts of one rollout step over all ranks.</summary>
    private int GlobalPromptsPerStep => _options.PromptsPerStep * World.Size;

    public int TotalSteps() => _options.MaxSteps > 0 ? _options.MaxSteps
        // TRL's count: an episode is one completion, and a rollout step takes SequencesPerStep of them on every rank.
        : _options.TotalEpisodes > 0 ? Math.Max(1, (int)Math.Ceiling((double)_options.TotalEpisodes / (_options.SequencesPerStep * World.Size)))
        : Math.Max(1, (int)Math.Ceiling(_prompts.Count * _options.Epochs / GlobalPromptsPerStep));

    /// <summary>The prompts of rollout step <paramref name="step"/> (0-based) over all ranks: consecutive slots of seeded
    /// per-pass orders. Rank r takes the r-th consecutive share (each prompt's completions stay on one rank).</summary>
    public IReadOnlyList<PromptExample> PromptsForStep(int step)
    {
        int n = _prompts.Count, per = GlobalPromptsPerStep;
        var result = new PromptExample[per];
        int[]? order = null;
        int orderPass = -1;
        for (int i = 0; i < per; i++)
        {
            long k = (long)step * per + i;
            int pass = (int)(k / n);
            if (pass != orderPass)
            {
                order = Enumerable.Range(0, n).ToArray();
                new Random(TrainingLoop.HashSeed(_options.Seed, pass)).Shuffle(order);
                orderPass = pass;
            }
            result[i] = _prompts[order![(int)(k % n)]];
        }
        return result;
    }

    /// <summary>Combines workers' gradients (data-parallel); one worker by default.</summary>
    public IGradientReducer? Reducer { get; init; }

    /// <summary>The policy (checkpoint policy/, final/) and PPO's value model (checkpoint value/, value_model/), optimised together.</summary>
    /// <remarks>With LoRA, the adapters (the value adapter with its score head) in checkpoint adapters policy/ and value/, and
    /// in final/ and value_model/ (merged models with --merge).</remarks>
    private ITrainable Trainable()
    {
        Action<string> extras = dir => ModelChatTemplate.Write(dir, _models.Template.Source);
        var policy = Runs.Trainable.For(_models.Policy, _models.PolicyAdapter, _models.PolicyDirectory, _options.Merge, extras, "policy");
        if (_models.Value == null) return policy;
        var value = Runs.Trainable.For(_models.Value, _models.ValueAdapter, null, _options.Merge, null, "value", "value_model", "value.");
        return new TrainableSet(policy, value);
    }

    public Dictionary<string, object?> Run()
    {
        using var threads = ParallelFor.UseThreads(_options.Threads);
        using var precision = _options.OpenMatmulPrecision();
        _algorithm.World = World;
        using var run = RunSession.Open(_options, _algorithm.Name);
        int total = TotalSteps();
        run.Progress.TotalSteps = total;
        var trainable = Trainable();
        var reducer = Reducer ?? (World.Size > 1 ? new DataParallelReducer(World, _options.AllreduceBucketMb) : null);
        var update = new OptimizerStep(trainable.Parameters, _options, total * _options.NumPpoEpochs * _options.NumMiniBatches, reducer);
        var opt = update.Optimizer;
        run.Restore(trainable, opt);
        RestoreCounters(run.ResumedState);
        int step = run.StartStep;
        var metrics = run.Metrics;
        var progress = run.Progress;
        var collector = new RolloutCollector(_models, _reward, RolloutOptions.From(_options));
        var window = new MetricsWindow();
        MemoryTrace.Mark("optimizer ready");
        var status = RunStatus.Completed;
        string? problem = null;
        int applied = 0;

        while (step < total && !run.StopRequestedOnAnyRank())
        {
            // This rank's share of the step's prompts; its rows sample from the streams of their global row indices.
            int per = _options.PromptsPerStep;
            var prompts = PromptsForStep(step).Skip(World.Rank * per).Take(per).ToArray();
            var batch = collector.Collect(prompts, _options.CompletionsPerPrompt, TrainingLoop.HashSeed(_options.Seed, step + 3_000_017),
                firstRow: World.Rank * _options.SequencesPerStep);
            step++;
            progress.Advance(step);
            if (World.Max(batch.Scores.Any(s => !float.IsFinite(s)) ? 1 : 0)[0] > 0)
            {
                _skippedSteps++;
                if (Bad(progress, $"step {step} skipped: a reward is not a finite number")) { status = RunStatus.StoppedNonFinite; break; }
                continue;
            }
            _algorithm.ComputeAdvantages(batch, KlController.Value);
            double beta = KlController.Value;
            var clock = Stopwatch.StartNew();
            var reduced = (reducer as DataParallelReducer)?.Snapshot() ?? default;
            MemoryTrace.Mark("rollout collected");
            var (train, gradNorm, updates, stop) = UpdatePhase(batch, update, step, progress);
            MemoryTrace.Mark("update done");
            applied += updates;
            if (stop) { status = RunStatus.StoppedNonFinite; break; }
            double trainSeconds = clock.Elapsed.TotalSeconds;
            var sequenceKl = batch.SequenceKl();
            var klTotal = World.Sum(sequenceKl.Sum(), batch.Count);
            KlController.Update(klTotal[0] / klTotal[1], (int)klTotal[1]);
            _episodes += (long)klTotal[1];

            var m = StepMetrics(batch, sequenceKl, beta, train, gradNorm, trainSeconds, opt.Lr);
            (reducer as DataParallelReducer)?.AddMetrics(m, reduced, steps: 1); // per rollout step (all its optimizer steps)
            window.Add(m);
            if (step % _options.LoggingSteps == 0 || step == total) metrics.Write(step, "train", window.Take());
            LastMetrics = m;
            progress.Report(step, new Dictionary<string, double> { ["score"] = m["objective/scores"], ["kl"] = m["objective/kl"], ["β"] = beta });
            if (_options.SampleSteps > 0 && (step % _options.SampleSteps == 0 || step == 1)) WriteSamples(metrics, step, batch);
            if (_options.SaveSteps > 0 && step % _options.SaveSteps == 0 && step != total) run.Checkpoint(step, Epoch(step), trainable, opt, Counters());
        }

        if (status == RunStatus.StoppedNonFinite)
            problem = $"{_badInARow} non-finite losses, gradients, updates or rewards in a row; stopped at step {step}.";
        else if (step > run.StartStep && applied == 0)
        {
            status = RunStatus.AllStepsSkipped;
            problem = $"no update was applied in {step - run.StartStep} steps (every one had non-finite values); no final model was written.";
        }
        var summary = new Dictionary<string, object?>
        {
            ["episodes"] = _episodes,
            ["skipped_steps"] = _skippedSteps,
            ["skipped_updates"] = _skippedUpdates,
            ["kl_coef"] = KlController.Value,
        };
        foreach (var key in new[] { "objective/scores", "objective/kl", "objective/rlhf_reward" })
            if (LastMetrics.TryGetValue(key, out var v)) summary[key] = v;
        var result = run.Finish(step, Epoch(step), trainable, opt, summary, status, problem, Counters());
        MemoryTrace.Mark("final saved");
        return result;
    }

    private OptimizerStep? _outsideRunUpdate;
    private Progress? _outsideRunProgress;

    /// <summary>
    /// For benchmarks (<c>alignsharp bench rl</c>): steps 3–5 of <see cref="Run"/> on a batch collected outside it (e.g. by
    /// <see cref="RolloutCollector.CollectTokens"/>): advantages, the PPO epochs with the run's optimizer (made on the first
    /// call for <paramref name="totalSteps"/> rollout steps, as <see cref="Run"/> makes it), and the KL controller; no run
    /// directory, metrics log or checkpoint, one process. Returns the update's mean loss metrics and the optimizer steps applied.
    /// </summary>
    public (Dictionary<string, double> Metrics, int Applied) TrainOn(RolloutBatch batch, int step, int totalSteps)
    {
        if (World.Size > 1) throw new InvalidOperationException("TrainOn runs in one process; data-parallel training goes through Run.");
        _outsideRunUpdate ??= new OptimizerStep(Trainable().Parameters, _options, totalSteps * _options.NumPpoEpochs * _options.NumMiniBatches);
        _outsideRunProgress ??= new Progress(_algorithm.Name, totalSteps, 1);
        _algorithm.ComputeAdvantages(batch, KlController.Value);
        var (train, _, applied, _) = UpdatePhase(batch, _outsideRunUpdate, step, _outsideRunProgress);
        var kl = batch.SequenceKl();
        KlController.Update(kl.Average(), kl.Length);
        return (train, applied);
    }

    private BufferPool.Parked? _updateArrays;

    /// <summary>
    /// <see cref="Update"/> as a phase of its own: the generation and scoring arrays are dropped first (their shapes are not
    /// the update's), and the update's own pooled arrays are parked afterwards and lent to the next step's update, whose
    /// shapes repeat; without that every update would start on fresh memory that the kernel clears page by page.
    /// </summary>
    private (Dictionary<string, double> Metrics, double GradNorm, int Applied, bool Stop) UpdatePhase(RolloutBatch batch, OptimizerStep update, int step, Progress progress)
    {
        BufferPool.EndPhase();
        if (_updateArrays != null) BufferPool.Unpark(_updateArrays);
        var result = Update(batch, update, step, progress);
        _updateArrays = BufferPool.Park();
        BufferPool.EndPhase();
        return result;
    }

    private double Epoch(int step) => (double)step * GlobalPromptsPerStep / _prompts.Count;

    /// <summary>
    /// Step 4: the PPO epochs over shuffled minibatches, one <see cref="OptimizerStep"/> per minibatch. Returns the mean of
    /// each loss metric (over every rank's micro-batches), the mean gradient norm, the updates applied, and whether too many
    /// bad updates in a row stop the run.
    /// </summary>
    private (Dictionary<string, double> Metrics, double GradNorm, int Applied, bool Stop) Update(RolloutBatch batch, OptimizerStep update, int step, Progress progress)
    {
        int accumulation = _options.GradientAccumulationSteps, micro = _options.BatchSize, minibatches = _options.NumMiniBatches;
        var sums = new Dictionary<string, double>();
        var counts = new Dictionary<string, int>();   // micro-batches that measured each metric (a fully masked one has no ratio)
        int updates = 0;
        double normSum = 0;
        // Micro-batches are numbered over all ranks (PPO-ptx's data): a minibatch's micro-batches in rank order.
        long microsPerMinibatch = (long)accumulation * World.Size;
        long microBase = (long)(step - 1) * _options.NumPpoEpochs * minibatches * microsPerMinibatch;
        for (int epoch = 0; epoch < _options.NumPpoEpochs; epoch++)
        {
            var dealt = MinibatchRows(step, epoch, batch.Count);
            for (int mb = 0; mb < minibatches; mb++)
            {
                var micros = dealt[mb].Chunk(micro).ToArray();
                long microIndex = microBase + (epoch * minibatches + mb) * microsPerMinibatch + (long)World.Rank * accumulation;
                update.Begin(micros.Sum(rows => _algorithm.Weight(batch, rows)));
                for (int mi = 0; mi < micros.Length; mi++)
                {
                    var rows = micros[mi];
                    using var scope = TensorScope.Begin();
                    float share = (float)(update.Scale * _algorithm.Weight(batch, rows));
                    // LoRA dropout in the update's forward passes only, from a stream fixed by the micro-batch (resume is exact).
                    _models.SetAdapterDropout(new Random(TrainingLoop.HashSeed(_options.Seed, (int)(microIndex % int.MaxValue) + 7_000_003)));
                    (Tensor loss, Dictionary<string, double> m) result;
                    try { result = _algorithm.Loss(_models, batch, rows, new UpdateContext(step, microIndex++, KlController.Value, share)); }
                    finally { _models.SetAdapterDropout(null); }
                    var (loss, m) = result;
                    update.Accumulate(loss, last: mi == micros.Length - 1);
                    if (!update.LossFinite) break;
                    foreach (var (k, v) in m)
                    {
                        sums[k] = sums.GetValueOrDefault(k) + v;
                        counts[k] = counts.GetValueOrDefault(k) + 1;
                    }
                }
                var outcome = update.Finish();
                if (!outcome.Applied)
                {
                    _skippedUpdates++;
                    if (Bad(progress, $"step {step}: update skipped: non-finite {outcome.SkipReason}")) return (Means(), double.NaN, updates, true);
                    continue;
                }
                _badInARow = 0;
                normSum += outcome.GradNorm;
                updates++;
            }
        }
        return (Means(), updates > 0 ? normSum / updates : double.NaN, updates, false);

        // Every rank's sums and counts of the (fixed) metric keys, then the means.
        Dictionary<string, double> Means()
        {
            var local = new double[2 * TrainMetricKeys.Length];
            for (int i = 0; i < TrainMetricKeys.Length; i++)
                if (sums.TryGetValue(TrainMetricKeys[i], out var v)) { local[2 * i] = v; local[2 * i + 1] = counts[TrainMetricKeys[i]]; }
            var total = World.Sum(local);
            var means = new Dictionary<string, double>();
            for (int i = 0; i < TrainMetricKeys.Length; i++)
                if (total[2 * i + 1] > 0) means[TrainMetricKeys[i]] = total[2 * i] / total[2 * i + 1];
            return means;
        }
    }

    /// <summary>The metrics of the update loop (micro-batch means) that the step's metrics line carries.</summary>
    private static readonly string[] TrainMetricKeys =
        ["policy/approxkl_avg", "policy/clipfrac_avg", "loss/policy_avg", "loss/value_avg", "val/clipfrac_avg", "val/ratio", "val/ratio_var", "policy/entropy_avg", "loss/kl_avg", "loss/ptx_avg",
         "clip_ratio/low_mean", "clip_ratio/high_mean", "clip_ratio/region_mean"];

    /// <summary>
    /// This rank's rows in each minibatch of PPO epoch <paramref name="epoch"/>. The step's global batch (every rank's rows
    /// in rank order) is cut into blocks of NumMiniBatches consecutive rows, and each block deals one row to every
    /// minibatch in a seeded order, a function of (seed, step, epoch, block) alone. A rank's rows are whole blocks, so each
    /// minibatch is the same set of rows whatever the number of ranks, and every rank holds the same share of it.
    /// </summary>
    private List<int>[] MinibatchRows(int step, int epoch, int localRows)
    {
        int m = _options.NumMiniBatches;
        long firstRow = (long)World.Rank * localRows;
        int seed = TrainingLoop.HashSeed(TrainingLoop.HashSeed(_options.Seed, step + 5_000_011), epoch);
        var result = Enumerable.Range(0, m).Select(_ => new List<int>(localRows / m)).ToArray();
        var deal = new int[m];
        for (int i = 0; i < localRows; i += m)
        {
            for (int j = 0; j < m; j++) deal[j] = j;
            new Random(TrainingLoop.HashSeed(seed, (int)((firstRow + i) / m))).Shuffle(deal);
            for (int j = 0; j < m; j++) result[deal[j]].Add(i + j);
        }
        return result;
    }

    /// <summary>Counts a bad update or reward; true when --max-bad-steps-in-a-row is reached.</summary>
    private bool Bad(Progress progress, string what)
    {
        _badInARow++;
        progress.Message($"{_algorithm.Name}: {what} ({_badInARow} in a row)");
        return _badInARow >= _options.MaxBadStepsInARow;
    }

    /// <summary>The step's metrics over every rank's rollouts: sums and counts all-reduced, times the slowest rank's.</summary>
    private Dictionary<string, double> StepMetrics(RolloutBatch batch, double[] sequenceKl, double beta, Dictionary<string, double> train, double gradNorm, double trainSeconds, float lr)
    {
        var parts = batch.ScoreParts.Count > 1 ? batch.ScoreParts.Keys.Order(StringComparer.Ordinal).ToArray() : [];
        var total = World.Sum([
            batch.Count, sequenceKl.Sum(), batch.Entropies.Sum(e => e.Sum(x => (double)x)), batch.Scores.Sum(s => (double)s),
            batch.EndsWithEos.Count(e => e), batch.CompletionTokens, batch.TotalTokens, .. parts.Select(name => batch.ScoreParts[name].Sum(x => (double)x))]);
        var seconds = World.Max(batch.GenerationSeconds, batch.ScoringSeconds, trainSeconds);
        double count = total[0], kl = total[1] / count, scores = total[3] / count, generationTokens = total[5], totalTokens = total[6];
        double generationSeconds = seconds[0], scoringSeconds = seconds[1];
        trainSeconds = seconds[2];
        var m = new Dictionary<string, double>
        {
            ["objective/kl"] = kl,
            ["objective/entropy"] = total[2] / count,
            ["objective/non_score_reward"] = -beta * kl,
            ["objective/rlhf_reward"] = scores - beta * kl,
            ["objective/scores"] = scores,
            ["objective/kl_coef"] = beta,
        };
        for (int i = 0; i < parts.Length; i++) m["objective/scores/" + parts[i]] = total[7 + i] / count;
        foreach (var key in TrainMetricKeys)
            if (train.TryGetValue(key, out var v)) m[key] = v;
        foreach (var (k, v) in _algorithm.RolloutMetrics(batch)) m[k] = v;
        m["val/num_eos_tokens"] = total[4];
        m["completion_length"] = generationTokens / count;
        m["lr"] = lr;
        m["learning_rate"] = lr;
        m["grad_norm"] = gradNorm;
        m["episode"] = _episodes;
        m["time/generation_s"] = generationSeconds;
        m["time/scoring_s"] = scoringSeconds;
        m["time/training_s"] = trainSeconds;
        m["tokens_per_s/generation"] = generationSeconds > 0 ? generationTokens / generationSeconds : 0;
        m["tokens_per_s/scoring"] = scoringSeconds > 0 ? totalTokens / scoringSeconds : 0;
        m["tokens_per_s/training"] = trainSeconds > 0 ? totalTokens * _options.NumPpoEpochs / trainSeconds : 0;
        m["eps"] = count / Math.Max(1e-9, generationSeconds + scoringSeconds + trainSeconds);
        if (_skippedSteps + _skippedUpdates > 0) { m["skipped_steps"] = _skippedSteps; m["skipped_updates"] = _skippedUpdates; }
        return m;
    }

    /// <summary>
    /// The rollout steps since the last logged line (--logging-steps, as TRL's trainers average their metrics between
    /// logs): each metric's mean over the steps that have it, except counters and the learning rate, which are their
    /// latest value.
    /// </summary>
    private sealed class MetricsWindow
    {
        private static readonly HashSet<string> Latest = ["lr", "learning_rate", "episode", "skipped_steps", "skipped_updates"];
        private readonly Dictionary<string, (double Sum, int Count)> _sums = [];

        public void Add(Dictionary<string, double> step)
        {
            foreach (var (k, v) in step)
                _sums[k] = Latest.Contains(k) ? (v, 1) : _sums.TryGetValue(k, out var s) ? (s.Sum + v, s.Count + 1) : (v, 1);
        }

        /// <summary>The window's line, in the order its metrics first came; the window starts again empty.</summary>
        public Dictionary<string, double> Take()
        {
            var line = _sums.ToDictionary(e => e.Key, e => e.Value.Sum / e.Value.Count);
            _sums.Clear();
            return line;
        }
    }

    private static void WriteSamples(MetricsLog metrics, int step, RolloutBatch batch)
    {
        var samples = Enumerable.Range(0, Math.Min(4, batch.Count))
            .Select(i => new Dictionary<string, object> { ["prompt"] = batch.PromptTexts[i], ["completion"] = batch.Completions[i], ["score"] = batch.Scores[i] })
            .ToArray();
        metrics.WriteRecord(new Dictionary<string, object> { ["step"] = step, ["split"] = "samples", ["samples"] = samples });
    }

    /// <summary>The KL coefficient and the counters, kept in trainer_state.json.</summary>
    private JsonObject Counters() => new()
    {
        ["kl_coef"] = KlController.Value,
        ["episodes"] = _episodes,
        ["skipped_steps"] = _skippedSteps,
        ["skipped_updates"] = _skippedUpdates,
    };

    private void RestoreCounters(TrainerState? state)
    {
        if (state?.Extra is not { } e) return;
        if (e["kl_coef"] is JsonNode k) KlController.Restore(k.GetValue<double>());
        _episodes = e["episodes"]?.GetValue<long>() ?? 0;
        _skippedSteps = e["skipped_steps"]?.GetValue<int>() ?? 0;
        _skippedUpdates = e["skipped_updates"]?.GetValue<int>() ?? 0;
    }
}
