using AlignSharp.Text.Jinja;
using System.Diagnostics;
using System.Text.Json.Nodes;
using AlignSharp.Engine;
using AlignSharp.Engine.Kernels;
using AlignSharp.Engine.Optim;
using AlignSharp.Models;
using AlignSharp.Models.Checkpoints;
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
        RequireSingleProcess(options switch { PpoOptions => "ppo", GrpoOptions => "grpo", _ => "rloo" });
        options.Validate();
        using var threads = ParallelFor.UseThreads(options.Threads);
        var pre = Pretrained.Load(options.Policy!);
        if (pre.Model.Config.Head != HeadKind.LanguageModel) throw new UserInputException($"--policy {options.Policy}: the policy needs a language-model head.");
        var tokenizer = pre.RequireTokenizer("the policy (to tokenize prompts and decode completions)");
        var reference = ModelIO.Load(options.Policy!);
        var template = ChatTemplate.Resolve(options.ChatTemplate, options.Policy);

        var sources = new List<(IRewardSource, double)>();
        RewardModel? rewardModel = null;
        if (options.RewardModel != null)
        {
            rewardModel = RewardModel.Load(options.RewardModel);
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

        TransformerModel? value = null;
        PtxData? ptx = null;
        if (options is PpoOptions ppo)
        {
            value = LoadValueModel(ppo, tokenizer, rewardModel);
            if (ppo.PtxData != null)
                ptx = PtxData.Load(ppo.PtxData, tokenizer, template, ppo.MaxPromptLength + ppo.MaxNewTokens, ppo.BatchSize, ppo.Seed, ppo.SkipBadRecords);
        }
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
        var models = new RlModels(pre.Model, reference, value, tokenizer, template) { PolicyDirectory = options.Policy };
        return new RlTrainer(options, algorithm, models, prompts.Records, reward);
    }

    /// <summary>
    /// The value model, always with a scalar head (a new one, seeded, unless the source has one): --value-model reward
    /// takes the reward model's body (TRL's default), policy the policy's, or a directory. auto is reward when a reward
    /// model is given and reads the policy's tokens (same tokenizer), else policy.
    /// </summary>
    private static TransformerModel LoadValueModel(PpoOptions o, ITokenizer policyTokenizer, RewardModel? rewardModel)
    {
        string choice = o.ValueModel;
        string dir = choice switch
        {
            "auto" => o.RewardModel != null && rewardModel != null && TokenizerComparison.SameTokens(rewardModel.Tokenizer, policyTokenizer) ? o.RewardModel : o.Policy!,
            "reward" => o.RewardModel!,
            "policy" => o.Policy!,
            _ => Directory.Exists(choice) ? choice : throw new UserInputException($"--value-model must be auto, reward, policy or a model directory; '{choice}' is none of these."),
        };
        if (choice == "auto" && o.RewardModel != null && dir == o.Policy)
            Console.Error.WriteLine($"note: the reward model's tokenizer differs from the policy's, so the value model starts from the policy ({o.Policy}).");
        var value = ModelIO.Load(dir, HeadKind.Scalar, o.Seed);
        if (dir != o.Policy)
        {
            // The value model reads the policy's token ids, so its vocabulary must be the policy's.
            var tok = rewardModel != null && dir == o.RewardModel ? rewardModel.Tokenizer : Pretrained.Load(dir).Tokenizer;
            if (tok != null && !TokenizerComparison.SameTokens(tok, policyTokenizer))
                throw new UserInputException($"--value-model: {dir} has a different tokenizer from the policy, so it cannot read the policy's tokens; use --value-model policy.");
            if (value.Config.VocabSize < policyTokenizer.VocabSize)
                throw new UserInputException($"--value-model: {dir} has {value.Config.VocabSize} token embeddings, fewer than the policy's tokenizer; use --value-model policy.");
        }
        return value;
    }

    /// <summary>PPO, GRPO and RLOO are not data-parallel yet: under mpirun they stop at once with this message rather than train N copies.</summary>
    private static void RequireSingleProcess(string algorithm)
    {
        if (Distributed.World.Current.Size > 1)
            throw new UserInputException($"{algorithm} does not run data-parallel yet (this is one of {Distributed.World.Current.Size} MPI ranks); run it as a single process. sft, rm and dpo run under mpirun.");
    }

    public int TotalSteps() => _options.MaxSteps > 0
        ? _options.MaxSteps
        : Math.Max(1, (int)Math.Ceiling(_prompts.Count * _options.Epochs / _options.PromptsPerStep));

    /// <summary>The prompts of rollout step <paramref name="step"/> (0-based): consecutive slots of seeded per-pass orders.</summary>
    public IReadOnlyList<PromptExample> PromptsForStep(int step)
    {
        int n = _prompts.Count, per = _options.PromptsPerStep;
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
    private ITrainable Trainable()
    {
        var policy = new TrainableModel(_models.Policy, _models.PolicyDirectory, "policy", "final")
        {
            WriteExtras = dir => ModelChatTemplate.Write(dir, _models.Template.Source),
        };
        if (_models.Value == null) return policy;
        return new TrainableSet(policy, new TrainableModel(_models.Value, null, "value", "value_model") { NamePrefix = "value." });
    }

    public Dictionary<string, object?> Run()
    {
        RequireSingleProcess(_algorithm.Name);
        using var threads = ParallelFor.UseThreads(_options.Threads);
        using var run = RunSession.Open(_options, _algorithm.Name);
        int total = TotalSteps();
        run.Progress.TotalSteps = total;
        var trainable = Trainable();
        var update = new OptimizerStep(trainable.Parameters, _options, total * _options.NumPpoEpochs * _options.NumMiniBatches, Reducer);
        var opt = update.Optimizer;
        run.Restore(trainable, opt);
        RestoreCounters(run.ResumedState);
        int step = run.StartStep;
        var metrics = run.Metrics;
        var progress = run.Progress;
        var collector = new RolloutCollector(_models, _reward, RolloutOptions.From(_options));
        var status = RunStatus.Completed;
        string? problem = null;
        int applied = 0;

        while (step < total && !run.StopRequested)
        {
            var prompts = PromptsForStep(step);
            var batch = collector.Collect(prompts, _options.CompletionsPerPrompt, TrainingLoop.HashSeed(_options.Seed, step + 3_000_017));
            step++;
            progress.Advance(step);
            if (batch.Scores.Any(s => !float.IsFinite(s)))
            {
                _skippedSteps++;
                if (Bad(progress, $"step {step} skipped: a reward is not a finite number")) { status = RunStatus.StoppedNonFinite; break; }
                continue;
            }
            _algorithm.ComputeAdvantages(batch, KlController.Value);
            double beta = KlController.Value;
            var clock = Stopwatch.StartNew();
            var (train, gradNorm, updates, stop) = Update(batch, update, step, progress);
            applied += updates;
            if (stop) { status = RunStatus.StoppedNonFinite; break; }
            double trainSeconds = clock.Elapsed.TotalSeconds;
            var sequenceKl = batch.SequenceKl();
            KlController.Update(sequenceKl.Average(), batch.Count);
            _episodes += batch.Count;

            var m = StepMetrics(batch, sequenceKl, beta, train, gradNorm, trainSeconds, opt.Lr);
            metrics.Write(step, "train", m);
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
        return run.Finish(step, Epoch(step), trainable, opt, summary, status, problem, Counters());
    }

    private double Epoch(int step) => (double)step * _options.PromptsPerStep / _prompts.Count;

    /// <summary>
    /// Step 4: the PPO epochs over shuffled minibatches, one <see cref="OptimizerStep"/> per minibatch. Returns the mean of
    /// each loss metric, the mean gradient norm, the updates applied, and whether too many bad updates in a row stop the run.
    /// </summary>
    private (Dictionary<string, double> Metrics, double GradNorm, int Applied, bool Stop) Update(RolloutBatch batch, OptimizerStep update, int step, Progress progress)
    {
        int accumulation = _options.GradientAccumulationSteps, micro = _options.BatchSize;
        int minibatch = micro * accumulation;
        var sums = new Dictionary<string, double>();
        int counted = 0, updates = 0;
        double normSum = 0;
        var rng = new Random(TrainingLoop.HashSeed(_options.Seed, step + 5_000_011));
        long microIndex = (long)(step - 1) * _options.NumPpoEpochs * _options.NumMiniBatches * accumulation;
        for (int epoch = 0; epoch < _options.NumPpoEpochs; epoch++)
        {
            var order = Enumerable.Range(0, batch.Count).ToArray();
            rng.Shuffle(order);
            for (int mb = 0; mb < _options.NumMiniBatches; mb++)
            {
                var micros = Enumerable.Range(0, accumulation).Select(a => order.AsSpan(mb * minibatch + a * micro, micro).ToArray()).ToArray();
                update.Begin(micros.Sum(rows => _algorithm.Weight(batch, rows)));
                foreach (var rows in micros)
                {
                    using var scope = TensorScope.Begin();
                    float share = (float)(update.Scale * _algorithm.Weight(batch, rows));
                    var (loss, m) = _algorithm.Loss(_models, batch, rows, new UpdateContext(step, microIndex++, KlController.Value, share));
                    update.Accumulate(loss);
                    if (!update.LossFinite) break;
                    foreach (var (k, v) in m) sums[k] = sums.GetValueOrDefault(k) + v;
                    counted++;
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

        Dictionary<string, double> Means() => sums.ToDictionary(kv => kv.Key, kv => kv.Value / Math.Max(1, counted));
    }

    /// <summary>Counts a bad update or reward; true when --max-bad-steps-in-a-row is reached.</summary>
    private bool Bad(Progress progress, string what)
    {
        _badInARow++;
        progress.Message($"{_algorithm.Name}: {what} ({_badInARow} in a row)");
        return _badInARow >= _options.MaxBadStepsInARow;
    }

    private Dictionary<string, double> StepMetrics(RolloutBatch batch, double[] sequenceKl, double beta, Dictionary<string, double> train, double gradNorm, double trainSeconds, float lr)
    {
        double kl = sequenceKl.Average();
        double scores = batch.Scores.Average(s => (double)s);
        double generationTokens = batch.CompletionTokens;
        var m = new Dictionary<string, double>
        {
            ["objective/kl"] = kl,
            ["objective/entropy"] = batch.Entropies.Average(e => e.Sum(x => (double)x)),
            ["objective/non_score_reward"] = -beta * kl,
            ["objective/rlhf_reward"] = scores - beta * kl,
            ["objective/scores"] = scores,
            ["objective/kl_coef"] = beta,
        };
        if (batch.ScoreParts.Count > 1)
            foreach (var (name, s) in batch.ScoreParts) m["objective/scores/" + name] = s.Average(x => (double)x);
        foreach (var key in new[] { "policy/approxkl_avg", "policy/clipfrac_avg", "loss/policy_avg", "loss/value_avg", "val/clipfrac_avg", "val/ratio", "val/ratio_var", "policy/entropy_avg", "loss/kl_avg", "loss/ptx_avg" })
            if (train.TryGetValue(key, out var v)) m[key] = v;
        foreach (var (k, v) in _algorithm.RolloutMetrics(batch)) m[k] = v;
        m["val/num_eos_tokens"] = batch.EndsWithEos.Count(e => e);
        m["completion_length"] = generationTokens / batch.Count;
        m["lr"] = lr;
        m["learning_rate"] = lr;
        m["grad_norm"] = gradNorm;
        m["episode"] = _episodes;
        m["time/generation_s"] = batch.GenerationSeconds;
        m["time/scoring_s"] = batch.ScoringSeconds;
        m["time/training_s"] = trainSeconds;
        m["tokens_per_s/generation"] = batch.GenerationSeconds > 0 ? generationTokens / batch.GenerationSeconds : 0;
        m["tokens_per_s/scoring"] = batch.ScoringSeconds > 0 ? batch.TotalTokens / batch.ScoringSeconds : 0;
        m["tokens_per_s/training"] = trainSeconds > 0 ? (double)batch.TotalTokens * _options.NumPpoEpochs / trainSeconds : 0;
        m["eps"] = batch.Count / Math.Max(1e-9, batch.GenerationSeconds + batch.ScoringSeconds + trainSeconds);
        if (_skippedSteps + _skippedUpdates > 0) { m["skipped_steps"] = _skippedSteps; m["skipped_updates"] = _skippedUpdates; }
        return m;
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
