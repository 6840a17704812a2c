using AlignSharp.Training.Runs;

namespace AlignSharp.Training.Rl;

/// <summary>
/// Options shared by PPO, GRPO and RLOO. One rollout step samples <see cref="SequencesPerStep"/> completions
/// (BatchSize × GradientAccumulationSteps × NumMiniBatches, as TRL counts them), scores them, then runs
/// NumPpoEpochs passes over them in NumMiniBatches shuffled minibatches, one optimizer step per minibatch, each made of
/// GradientAccumulationSteps micro-batches of BatchSize completions. --max-steps counts rollout steps; metrics.jsonl gets
/// one line per rollout step. Defaults follow Hugging Face TRL's configs.
/// </summary>
[TrlName("model", nameof(Policy))] // sft's and rm's flag for the model a run trains, so one spelling works everywhere
public abstract record RlOptions : TrainerOptions
{
    private const float DefaultWeight = 1f;
    private const double DefaultRewardTimeout = 60;
    private const int DefaultRewardRetries = 3;
    private const float DefaultKlHorizon = 10000f;

    protected RlOptions()
    {
        LoggingSteps = 1;
        LearningRate = 3e-6f;
    }

    [Option("Policy to train (an SFT checkpoint directory with tokenizer.json); its frozen copy is the KL reference.", Required = true)]
    public string? Policy { get; init; }

    [Option("Prompts file (JSONL or JSON array): {\"prompt\": text or messages} records, or the prompts of SFT/preference records.", Required = true)]
    public string? Prompts { get; init; }

    [Option("Skip and count bad prompt records instead of stopping at the first one.")]
    public bool SkipBadRecords { get; init; }

    [Option("Chat template for conversational prompts: auto (the model's own template, from chat_template.jinja or tokenizer_config.json; plain when it has none), a built-in name (chatml, llama3, plain), or a .jinja file. Text prompts are used verbatim.")]
    public string ChatTemplate { get; init; } = "auto";

    [Option(Data.ChatTemplate.KwargsHelp)]
    public string? ChatTemplateKwargs { get; init; }

    [Option("Longest prompt in tokens; longer prompts keep their end.")]
    public int MaxPromptLength { get; init; } = 512;

    [Option("Reward-model directory (alignsharp rm output): scores normalised with its stored mean and std.")]
    public string? RewardModel { get; init; }

    [Option("Weight of the reward model's score in the total reward.")]
    public float RewardModelWeight { get; init; } = DefaultWeight;

    [Option("Normalise reward-model scores with the mean and std stored in reward_model.json.")]
    public bool NormalizeReward { get; init; } = true;

    [Option("Reward endpoint: POST {\"prompts\": [...], \"completions\": [...]} answered by {\"rewards\": [...]}.")]
    public string? RewardUrl { get; init; }

    [Option("Weight of the endpoint's reward in the total reward.")]
    public float RewardUrlWeight { get; init; } = DefaultWeight;

    [Option("Seconds to wait for the reward endpoint's answer.", SafeToChangeOnResume = true)]
    public double RewardTimeout { get; init; } = DefaultRewardTimeout;

    [Option("Retries after a reward-endpoint timeout, connection failure or HTTP 5xx/429 (with exponential backoff from 1 s).", SafeToChangeOnResume = true)]
    public int RewardRetries { get; init; } = DefaultRewardRetries;

    [Option("Clip the total score to [−C, C] (0 = no clipping).")]
    public float RewardClip { get; init; }

    [Option("Subtracted from the score of a completion that reached --max-new-tokens without an end-of-sequence token (0 = none).")]
    public float MissingEosPenalty { get; init; }

    [Option("KL coefficient β (the starting value when --target-kl is set).")]
    public float KlCoef { get; init; } = 0.05f;

    [Option("Target KL per completion for the adaptive KL controller (Ziegler et al.); 0 keeps --kl-coef fixed.")]
    public float TargetKl { get; init; }

    [Option("Horizon of the adaptive KL controller, in completions.")]
    public float KlHorizon { get; init; } = DefaultKlHorizon;

    [Option("KL estimator: k1 (log π − log π_ref), k2, k3, or full (exact KL of the next-token distributions).")]
    public string KlEstimator { get; init; } = "k1";

    [Option("Most tokens generated per completion.")]
    public int MaxNewTokens { get; init; } = 53;

    [Option("Sampling temperature; log-probabilities for training use the same temperature.")]
    public float Temperature { get; init; } = 0.7f;

    [Option("Sample from the K most likely tokens (0 = all).")]
    public int TopK { get; init; }

    [Option("Nucleus sampling threshold (1 = off).")]
    public float TopP { get; init; } = 1f;

    [Option("Repetition penalty of the sampling (transformers' repetition_penalty, TRL's GRPO/RLOO option): the logits of tokens already in the prompt or completion divided by it (multiplied where negative); 1 = off. Like top-k and top-p it shapes only the sampling; the training log-probabilities are the policy's.")]
    public float RepetitionPenalty { get; init; } = 1f;

    [Option("Prompts generated together (rows of one KV-cached batch).")]
    public int GenerationBatchSize { get; init; } = 64;

    [Option("Completions to train on in all, as TRL's total_episodes: ⌈E ÷ (completions per rollout step × processes)⌉ rollout steps, in place of --epochs over the prompts (0 = --max-steps, or --epochs).")]
    public int TotalEpisodes { get; init; }

    [Option("Passes over each rollout batch.")]
    public int NumPpoEpochs { get; init; } = 4;

    [Option("Minibatches (optimizer steps) per pass over a rollout batch.")]
    public int NumMiniBatches { get; init; } = 1;

    [Option("Clip range ε of the policy ratio.")]
    public float ClipRange { get; init; } = 0.2f;

    [Option("Upper clip range: the ratio is kept within [1 − ε, 1 + this] (DAPO's clip-higher, e.g. 0.28; 0 = --clip-range).")]
    public float ClipRangeHigh { get; init; }

    /// <summary>ε_high: --clip-range-high, or --clip-range when it is 0.</summary>
    public float UpperClipRange => ClipRangeHigh > 0 ? ClipRangeHigh : ClipRange;

    [Option("Two-sided clipping (INTELLECT-2): the unclipped term's ratio is capped at δ, which must exceed 1 + the upper clip range (0 = off).")]
    public float Delta { get; init; }

    [Option("Where the policy ratio is taken: token (one per token, PPO's), or sequence (one per completion, the exponential of its tokens' mean log-ratio: GSPO; grpo and rloo).")]
    public string ImportanceSamplingLevel { get; init; } = "token";

    [Option("Entropy bonus coefficient (0 = none).")]
    public float EntropyCoef { get; init; }

    [Option("Write a few sample completions to metrics.jsonl every N steps (0 = never).", SafeToChangeOnResume = true)]
    public int SampleSteps { get; init; } = 10;

    [Option("Stop after this many non-finite updates or rewards in a row (each is skipped and counted).", SafeToChangeOnResume = true)]
    public int MaxBadStepsInARow { get; init; } = 5;

    /// <summary>Completions sampled per prompt.</summary>
    public abstract int CompletionsPerPrompt { get; }

    /// <summary>Completions per rollout step.</summary>
    public int SequencesPerStep => BatchSize * GradientAccumulationSteps * NumMiniBatches;

    public int PromptsPerStep => SequencesPerStep / CompletionsPerPrompt;

    public KlEstimator Estimator => KlEstimators.Parse(KlEstimator);

    /// <summary>The reference model (and the reward model, when given) stay frozen.</summary>
    protected override bool HasFrozenWeights => true;

    public override void Validate()
    {
        base.Validate();
        if (string.IsNullOrWhiteSpace(Policy)) throw new UserInputException("--policy (the SFT checkpoint to train) is required.");
        if (string.IsNullOrWhiteSpace(Prompts)) throw new UserInputException("--prompts (the prompts file) is required.");
        Data.ChatTemplate.ValidateOption(ChatTemplate, ChatTemplateKwargs);
        _ = Estimator;
        if (MaxPromptLength < 1) throw new UserInputException("--max-prompt-length must be ≥ 1.");
        if (MaxNewTokens < 1) throw new UserInputException("--max-new-tokens must be ≥ 1.");
        if (!(Temperature > 0)) throw new UserInputException("--temperature must be > 0 (RL needs sampling; the training log-probabilities use it).");
        if (TopK < 0) throw new UserInputException("--top-k must be ≥ 0.");
        if (!(TopP > 0 && TopP <= 1)) throw new UserInputException("--top-p must be in (0, 1].");
        if (!(RepetitionPenalty > 0) || float.IsInfinity(RepetitionPenalty)) throw new UserInputException("--repetition-penalty must be > 0 (1 = off).");
        if (GenerationBatchSize < 1) throw new UserInputException("--generation-batch-size must be ≥ 1.");
        if (NumPpoEpochs < 1) throw new UserInputException("--num-ppo-epochs must be ≥ 1.");
        if (NumMiniBatches < 1) throw new UserInputException("--num-mini-batches must be ≥ 1.");
        if (TotalEpisodes < 0) throw new UserInputException("--total-episodes must be ≥ 0.");
        if (TotalEpisodes > 0 && MaxSteps > 0) throw new UserInputException("--total-episodes and --max-steps both set the length of the run; give one.");
        if (BatchSize < 1 || GradientAccumulationSteps < 1) throw new UserInputException("--batch-size and --gradient-accumulation-steps must be ≥ 1.");
        if (!(ClipRange > 0)) throw new UserInputException("--clip-range must be > 0.");
        if (!(ClipRangeHigh >= 0)) throw new UserInputException("--clip-range-high must be ≥ 0 (0 = --clip-range).");
        if (!(Delta >= 0)) throw new UserInputException("--delta must be ≥ 0 (0 = off).");
        if (Delta > 0 && !(Delta > 1 + UpperClipRange)) throw new UserInputException($"--delta {Delta} must exceed 1 + the upper clip range ({1 + UpperClipRange}), or the clipped term always wins.");
        if (ImportanceSamplingLevel is not ("token" or "sequence")) throw new UserInputException($"--importance-sampling-level must be token or sequence, not \"{ImportanceSamplingLevel}\".");
        if (!(KlCoef >= 0)) throw new UserInputException("--kl-coef must be ≥ 0.");
        if (!(TargetKl >= 0)) throw new UserInputException("--target-kl must be ≥ 0 (0 = fixed --kl-coef).");
        if (TargetKl > 0 && !(KlCoef > 0)) throw new UserInputException("--target-kl adapts β multiplicatively, so --kl-coef (its start) must be > 0.");
        if (!(KlHorizon > 0)) throw new UserInputException("--kl-horizon must be > 0.");
        if (!(RewardClip >= 0)) throw new UserInputException("--reward-clip must be ≥ 0 (0 = off).");
        if (!float.IsFinite(MissingEosPenalty)) throw new UserInputException("--missing-eos-penalty must be a number.");
        if (!(EntropyCoef >= 0)) throw new UserInputException("--entropy-coef must be ≥ 0.");
        if (SampleSteps < 0) throw new UserInputException("--sample-steps must be ≥ 0.");
        if (MaxBadStepsInARow < 1) throw new UserInputException("--max-bad-steps-in-a-row must be ≥ 1.");
        // Settings of a reward source that is not there would be accepted and ignored.
        if (RewardUrl == null && (RewardTimeout != DefaultRewardTimeout || RewardRetries != DefaultRewardRetries || RewardUrlWeight != DefaultWeight))
            throw new UserInputException("--reward-timeout, --reward-retries and --reward-url-weight apply to --reward-url, which is not given.");
        if (RewardModel == null && (RewardModelWeight != DefaultWeight || !NormalizeReward))
            throw new UserInputException("--reward-model-weight and --normalize-reward apply to --reward-model, which is not given.");
        if (TargetKl == 0 && KlHorizon != DefaultKlHorizon)
            throw new UserInputException("--kl-horizon is the adaptive KL controller's, which runs only with --target-kl; β stays --kl-coef without it.");
        if (SequencesPerStep % CompletionsPerPrompt != 0)
            throw new UserInputException($"--batch-size × --gradient-accumulation-steps × --num-mini-batches = {SequencesPerStep} completions per step must be a multiple of the {CompletionsPerPrompt} completions per prompt.");
    }
}

/// <summary>PPO (Schulman et al. 2017) with a value model, as in Ziegler et al. 2019 and TRL's PPOTrainer.</summary>
[TrlName("sft_model_path", nameof(Policy))]
[TrlName("reward_model_path", nameof(RewardModel))]
[TrlName("response_length", nameof(MaxNewTokens))]
[TrlName("cliprange", nameof(ClipRange))]
[TrlName("cliprange_value", nameof(ClipRangeValue))]
public sealed record PpoOptions : RlOptions
{
    [Option("Value model: auto (the reward model when --reward-model is given, as TRL does; else the policy; with LoRA always the policy), reward, policy, or a model directory; its head is a new scalar head unless it has one. With LoRA it trains a second adapter and its head on a frozen trunk: the policy's own (policy, auto; no copy) or the named model's.")]
    public string ValueModel { get; init; } = "auto";

    [Option("Value loss coefficient.")]
    public float VfCoef { get; init; } = 0.1f;

    [Option("Clip range of the value prediction around its rollout value.")]
    public float ClipRangeValue { get; init; } = 0.2f;

    [Option("Discount γ of GAE.")]
    public float Gamma { get; init; } = 1f;

    [Option("λ of GAE.")]
    public float Lam { get; init; } = 0.95f;

    [Option("Whiten the per-token rewards (scale only) before GAE.")]
    public bool WhitenRewards { get; init; }

    [Option("PPO-ptx: an SFT/pretraining dataset whose language-model loss is added to the PPO loss.")]
    public string? PtxData { get; init; }

    [Option("PPO-ptx coefficient γ_ptx (needs --ptx-data).")]
    public float PtxCoef { get; init; }

    public override int CompletionsPerPrompt => 1;

    public override void Validate()
    {
        base.Validate();
        if (!(VfCoef >= 0)) throw new UserInputException("--vf-coef must be ≥ 0.");
        if (!(ClipRangeValue > 0)) throw new UserInputException("--clip-range-value must be > 0.");
        if (!(Gamma >= 0 && Gamma <= 1)) throw new UserInputException("--gamma must be in [0, 1].");
        if (!(Lam >= 0 && Lam <= 1)) throw new UserInputException("--lam must be in [0, 1].");
        if (!(PtxCoef >= 0)) throw new UserInputException("--ptx-coef must be ≥ 0.");
        if ((PtxData != null) != (PtxCoef > 0)) throw new UserInputException("PPO-ptx needs both --ptx-data and a --ptx-coef > 0.");
        if (ValueModel is "reward" && RewardModel == null) throw new UserInputException("--value-model reward needs --reward-model DIR (or use --value-model policy).");
        if (ImportanceSamplingLevel == "sequence") throw new UserInputException("--importance-sampling-level sequence (GSPO) needs one advantage per completion: use grpo or rloo; PPO's advantages are per token.");
    }
}

/// <summary>GRPO (Shao et al. 2024): groups of completions per prompt, group-relative advantages, KL in the loss.</summary>
[TrlName("model_name_or_path", nameof(Policy))]
[TrlName("beta", nameof(KlCoef))]
[TrlName("max_completion_length", nameof(MaxNewTokens))]
[TrlName("num_iterations", nameof(NumPpoEpochs))]
[TrlName("epsilon", nameof(ClipRange))]
[TrlName("epsilon_high", nameof(ClipRangeHigh))]
public sealed record GrpoOptions : RlOptions
{
    public GrpoOptions()
    {
        KlCoef = 0.04f;
        KlEstimator = "k3";
        MaxNewTokens = 256;
        Temperature = 1f;
        NumPpoEpochs = 1;
        LearningRate = 1e-6f;
    }

    [Option("Completions per prompt G (a group).")]
    public int NumGenerations { get; init; } = 8;

    [Option("How the loss is averaged (TRL's loss_type): grpo (each completion's token mean, then over completions), bnpo (each micro-batch's token mean), dr_grpo (token sum ÷ (completions × --max-new-tokens)), dapo (token sum ÷ the optimizer step's tokens).")]
    public string LossType { get; init; } = "grpo";

    [Option("What the centred rewards are divided by (TRL's scale_rewards): group (the group's std), batch (the std of all the step's rewards), none (Dr. GRPO); true and false mean group and none.")]
    public string ScaleRewards { get; init; } = "group";

    [Option("Leave completions that reached --max-new-tokens without an end-of-sequence token out of the loss (DAPO; they keep their place in the group's advantages).")]
    public bool MaskTruncatedCompletions { get; init; }

    public override int CompletionsPerPrompt => NumGenerations;

    /// <summary>--scale-rewards parsed.</summary>
    public RewardScaling RewardScaling => ScaleRewards.Trim().ToLowerInvariant() switch
    {
        "group" or "true" => RewardScaling.Group,
        "batch" => RewardScaling.Batch,
        "none" or "false" => RewardScaling.None,
        _ => throw new UserInputException($"--scale-rewards must be group, batch or none (or true / false), not \"{ScaleRewards}\"."),
    };

    public override void Validate()
    {
        if (NumGenerations < 2) throw new UserInputException("--num-generations must be ≥ 2 (the advantage compares completions within a group).");
        base.Validate();
        if (LossType is not ("grpo" or "bnpo" or "dr_grpo" or "dapo")) throw new UserInputException($"--loss-type must be grpo, bnpo, dr_grpo or dapo, not \"{LossType}\".");
        _ = RewardScaling;
    }
}

/// <summary>RLOO (Ahmadian et al. 2024): k completions per prompt, leave-one-out baseline.</summary>
[TrlName("sft_model_path", nameof(Policy))]
[TrlName("reward_model_path", nameof(RewardModel))]
[TrlName("response_length", nameof(MaxNewTokens))]
[TrlName("max_completion_length", nameof(MaxNewTokens))]
[TrlName("cliprange", nameof(ClipRange))]
public sealed record RlooOptions : RlOptions
{
    [Option("Completions per prompt k.")]
    public int RlooK { get; init; } = 2;

    [Option("Put the KL penalty in the reward (score − β·Σ KL_t, as TRL); false puts β·KL_t in the loss.")]
    public bool KlInReward { get; init; } = true;

    [Option("Whiten the advantages over the batch.")]
    public bool NormalizeAdvantage { get; init; }

    public override int CompletionsPerPrompt => RlooK;

    public override void Validate()
    {
        if (RlooK < 2) throw new UserInputException("--rloo-k must be ≥ 2 (the baseline is the mean of the other k − 1).");
        base.Validate();
    }
}
