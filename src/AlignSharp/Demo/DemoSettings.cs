namespace AlignSharp.Demo;

/// <summary>
/// The sizes of the demo experiment. <see cref="Default"/> finishes in about three and a half minutes on two cores
/// (the issue allows five); <see cref="Quick"/> (for CI and first contact) in about a minute (allowed: 90 s) and still
/// shows the direction of every effect. Measured numbers: docs/results.md.
/// </summary>
public sealed record DemoSettings
{
    public required string Name { get; init; }

    // The model: a small GPT-2 over bytes that starts from random weights.
    public int HiddenSize { get; init; } = 64;
    public int Layers { get; init; } = 2;
    public int Heads { get; init; } = 4;
    public int MaxPositions { get; init; } = 192;

    /// <summary>Sampling temperature everywhere: annotation samples, PPO rollouts, evaluation (KL is between the tempered distributions).</summary>
    public float Temperature { get; init; } = 0.8f;

    /// <summary>Longest response in tokens (bytes).</summary>
    public int MaxNewTokens { get; init; } = 128;

    // 1. Pretraining on the synthetic corpus, then SFT on demonstrations of mixed quality.
    public int CorpusDocuments { get; init; } = 6000;
    public int PretrainSteps { get; init; } = 1500;
    public float PretrainLearningRate { get; init; } = 1e-2f;
    public int Demonstrations { get; init; } = 2000;
    public int SftSteps { get; init; } = 200;
    public float SftLearningRate { get; init; } = 1e-3f;
    public int BatchSize { get; init; } = 32;

    // 2. Annotation: K responses per task, ranked by the simulated annotators.
    public int AnnotationTasks { get; init; } = 3600;
    public int CompletionsPerTask { get; init; } = 4;
    public int Overlap { get; init; } = 1;

    // 3. Reward model.
    public double RewardModelEpochs { get; init; } = 3;
    public float RewardModelLearningRate { get; init; } = 1e-3f;
    /// <summary>Held-out gold-agreement set: samples per held-out prompt (in groups of <see cref="CompletionsPerTask"/>).</summary>
    public int RewardModelEvalGroupsPerPrompt { get; init; } = 4;

    // 4. Policies.
    public int BestOfN { get; init; } = 8;
    public int PpoSteps { get; init; } = 60;
    public int PpoBatchSize { get; init; } = 64;
    public int PpoMiniBatches { get; init; } = 2;
    public int PpoEpochs { get; init; } = 2;
    public float PpoLearningRate { get; init; } = 1.5e-4f;
    public float PpoKlCoef { get; init; } = 0.3f;
    public int PpoCheckpointEvery { get; init; } = 10;
    public double DpoEpochs { get; init; } = 1;
    public float DpoLearningRate { get; init; } = 3e-5f;
    public float DpoBeta { get; init; } = 0.4f;
    /// <summary>cDPO label smoothing: the annotators' labels are noisy.</summary>
    public float DpoLabelSmoothing { get; init; } = 0.1f;

    // 5. Evaluation: samples per held-out prompt (there are 80 held-out prompts).
    public int EvalSamplesPerPrompt { get; init; } = 3;
    /// <summary>Samples per held-out prompt for each point of the gold-versus-KL curve.</summary>
    public int CurveSamplesPerPrompt { get; init; } = 1;

    public static DemoSettings Default { get; } = new() { Name = "default" };

    public static DemoSettings Quick { get; } = new()
    {
        Name = "quick",
        CorpusDocuments = 3000,
        PretrainSteps = 650,
        Demonstrations = 1000,
        SftSteps = 120,
        AnnotationTasks = 700,
        RewardModelEpochs = 2,
        RewardModelEvalGroupsPerPrompt = 2,
        PpoSteps = 20,
        PpoCheckpointEvery = 10,
        // Fewer preference pairs: a larger DPO step still shows the effect.
        DpoLearningRate = 5e-5f,
        EvalSamplesPerPrompt = 2,
        CurveSamplesPerPrompt = 1,
    };
}
