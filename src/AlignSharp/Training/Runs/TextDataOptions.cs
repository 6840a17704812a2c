using AlignSharp.Training.Data;

namespace AlignSharp.Training.Runs;

/// <summary>Options of trainers that read a text dataset: files, split, formatting and length limits.</summary>
public abstract record TextDataOptions : TrainerOptions
{
    [Option("Training data: JSONL (one record per line) or a JSON array file.", Required = true)]
    public string? Data { get; init; }

    [Option("Held-out data file for evaluation (default: --eval-split of --data, or none).", SafeToChangeOnResume = true)]
    public string? EvalData { get; init; }

    [Option("Fraction of --data held out for evaluation when --eval-data is not given (e.g. 0.05).")]
    public double EvalSplit { get; init; }

    [Option("Evaluate every N optimizer steps (0 = only at the end).", SafeToChangeOnResume = true)]
    public int EvalSteps { get; init; }

    [Option("Chat template for message lists: auto (the model's own template, from chat_template.jinja or tokenizer_config.json; plain when it has none), a built-in name (chatml, llama3, plain), or a .jinja file. Plain strings are never templated.")]
    public string ChatTemplate { get; init; } = "auto";

    [Option(AlignSharp.Training.Data.ChatTemplate.KwargsHelp)]
    public string? ChatTemplateKwargs { get; init; }

    // TRL's SFTConfig, RewardConfig, DPOConfig and KTOConfig all default max_length to 1024.
    [Option("Longest sequence in tokens (prompt + completion + EOS).")]
    public int MaxLength { get; init; } = 1024;

    [Option("Longest prompt in tokens (0 = no separate limit; for online-dpo, what --max-length leaves after --max-new-tokens).")]
    public int MaxPromptLength { get; init; }

    [Option("Truncate records over the limits (keeps the end of the prompt and the start of the completion) instead of reporting them.")]
    public bool Truncate { get; init; }

    [Option("Skip bad or overlong records and report how many, instead of stopping at the first.")]
    public bool SkipBadRecords { get; init; }

    /// <summary>
    /// The length limit a model with <paramref name="maxPositions"/> positions can take: --max-length, lowered to the
    /// positions (with a note), so that an overlong record is reported (or truncated with --truncate) rather than crashing
    /// the forward pass.
    /// </summary>
    public int MaxLengthFor(int maxPositions, TextWriter log)
    {
        if (MaxLength <= maxPositions) return MaxLength;
        log.WriteLine($"note: --max-length {MaxLength} is more than the model's {maxPositions} positions; sequences are limited to {maxPositions} tokens.");
        return maxPositions;
    }

    [System.Text.Json.Serialization.JsonIgnore]
    public TruncationOptions Truncation => new()
    {
        MaxLength = MaxLength,
        MaxPromptLength = MaxPromptLength > 0 ? MaxPromptLength : null,
        Overlong = Truncate ? OverlongRecords.Truncate : OverlongRecords.Error,
    };

    public override void Validate()
    {
        base.Validate();
        if (!OmitOptionsAttribute.Omits(GetType(), nameof(Data)))
        {
            if (string.IsNullOrWhiteSpace(Data)) throw new UserInputException("--data (the training file) is required.");
            if (!File.Exists(Data)) throw new UserInputException($"--data: {Data} does not exist.");
        }
        if (EvalData != null && !File.Exists(EvalData)) throw new UserInputException($"--eval-data: {EvalData} does not exist.");
        if (!(EvalSplit >= 0 && EvalSplit < 1)) throw new UserInputException("--eval-split must be in [0, 1).");
        if (EvalSteps < 0) throw new UserInputException("--eval-steps must be ≥ 0.");
        if (EvalData != null && EvalSplit > 0) throw new UserInputException("--eval-data and --eval-split both give the eval set; give one.");
        if (EvalSteps > 0 && EvalData == null && EvalSplit == 0) throw new UserInputException("--eval-steps evaluates on an eval set: give --eval-data FILE or --eval-split FRACTION.");
        if (MaxLength < 2) throw new UserInputException("--max-length must be ≥ 2.");
        if (MaxPromptLength < 0 || MaxPromptLength >= MaxLength) throw new UserInputException("--max-prompt-length must be ≥ 0 and below --max-length.");
        AlignSharp.Training.Data.ChatTemplate.ValidateOption(ChatTemplate, ChatTemplateKwargs);
    }
}
