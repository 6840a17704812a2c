using AlignSharp.Training.Dpo;
using AlignSharp.Training.Runs;

namespace AlignSharp.Training.OnlineDpo;

/// <summary>
/// Options of <c>alignsharp online-dpo</c>: the DPO objective (<see cref="DpoObjectiveOptions"/>: --loss-type, --beta,
/// the reference, LoRA) on pairs the policy samples itself from --prompts and a judge ranks. It reads no preference
/// file, so the data options of offline dpo (--data, --eval-data, --eval-split, --eval-steps, --truncate) and the
/// precomputed reference (answers change every step) are not options here. Defaults follow TRL's OnlineDPOConfig
/// (max_new_tokens 64, temperature 0.9, max_length 512, β 0.1, sigmoid loss) except the learning rate, 5e-6 as for
/// dpo (TRL's 5e-7 suits billion-parameter models).
/// </summary>
[OmitOptions(nameof(Data), nameof(EvalData), nameof(EvalSplit), nameof(EvalSteps), nameof(Truncate), nameof(PrecomputeReference))]
[TrlName("reward_model_path", nameof(JudgeModel))]
public sealed record OnlineDpoOptions : DpoObjectiveOptions
{
    /// <summary>A LoRA base, or the reference (always scored on the fly here).</summary>
    protected override bool HasFrozenWeights => TrainsAdapter || UsesReference;

    public OnlineDpoOptions()
    {
        MaxLength = 512;
        PrecomputeReference = false;
    }

    [Option("Prompts file (JSONL or JSON array): {\"prompt\": text or messages} records, or the prompts of SFT/preference records.", Required = true)]
    public string? Prompts { get; init; }

    [Option("Reward-model directory (alignsharp rm output) as the judge: of a prompt's two completions the one with the higher reward (scores normalised with its stored mean and std) is chosen; a tie goes to the first sampled.")]
    public string? JudgeModel { get; init; }

    [Option("HTTP judge: POST {\"prompts\", \"completions\", \"pairs\"} (each prompt's two completions) answered by {\"rewards\": [...]} (one per completion, as --reward-url) or {\"preferences\": [0|1|0.5, ...]} (per pair: 0 the first is better, 1 the second, 0.5 a tie, which goes to the first).")]
    public string? JudgeUrl { get; init; }

    [Option("Most tokens generated per completion (TRL's max_new_tokens).")]
    public int MaxNewTokens { get; init; } = 64;

    [Option("Sampling temperature of the two completions (> 0).")]
    public float Temperature { get; init; } = 0.9f;

    [Option("Sample from the K most likely tokens (0 = all).")]
    public int TopK { get; init; }

    [Option("Nucleus sampling threshold (1 = off).")]
    public float TopP { get; init; } = 1f;

    [Option("Subtracted from the judge's reward of a completion that reached --max-new-tokens without an end-of-sequence token, before the two are compared (TRL's missing_eos_penalty; 0 = none). Rewards only: a pairwise judge's preferences are taken as given.")]
    public float MissingEosPenalty { get; init; }

    /// <summary>The prompt limit: --max-prompt-length, else what --max-length leaves after --max-new-tokens.</summary>
    public int PromptLimit => MaxPromptLength > 0 ? MaxPromptLength : MaxLength - MaxNewTokens;

    public override void Validate()
    {
        base.Validate();
        ValidateObjective();
        if (Loss == Dpo.DpoLossType.BcoPair)
            throw new UserInputException("--loss-type bco_pair is for dpo (its running reward mean follows the dataset's batches); online-dpo takes the other losses.");
        if (string.IsNullOrWhiteSpace(Prompts)) throw new UserInputException("--prompts (the prompts file) is required.");
        if (!File.Exists(Prompts)) throw new UserInputException($"--prompts: {Prompts} does not exist.");
        if (JudgeModel != null && JudgeUrl != null) throw new UserInputException("Give one judge: --judge-model RM_DIR or --judge-url URL, not both.");
        if (JudgeModel != null && !Directory.Exists(JudgeModel)) throw new UserInputException($"--judge-model: directory '{JudgeModel}' does not exist.");
        if (MaxNewTokens < 1) throw new UserInputException("--max-new-tokens must be ≥ 1.");
        if (MaxNewTokens >= MaxLength) throw new UserInputException($"--max-new-tokens ({MaxNewTokens}) must be below --max-length ({MaxLength}), which also holds the prompt.");
        if (MaxPromptLength > 0 && MaxPromptLength + MaxNewTokens > MaxLength)
            throw new UserInputException($"--max-prompt-length {MaxPromptLength} + --max-new-tokens {MaxNewTokens} is more than --max-length {MaxLength}.");
        if (!(Temperature > 0)) throw new UserInputException("--temperature must be > 0: online DPO samples two different completions per prompt.");
        if (TopK < 0) throw new UserInputException("--top-k must be ≥ 0.");
        if (!(TopP > 0 && TopP <= 1)) throw new UserInputException("--top-p must be in (0, 1].");
        if (!(MissingEosPenalty >= 0)) throw new UserInputException("--missing-eos-penalty must be ≥ 0.");
    }
}
