using System.Text.Json.Serialization;
using AlignSharp.Training.Runs;

namespace AlignSharp.Training.Dpo;

/// <summary>The preference objectives of <c>alignsharp dpo</c> (see <see cref="DpoLosses"/> for the equations).</summary>
public enum DpoLossType
{
    /// <summary>DPO: −log σ(β·Δ), optionally label-smoothed (conservative DPO).</summary>
    Sigmoid,
    /// <summary>IPO: (Δ_avg − 1/(2β))² on length-averaged log-ratios.</summary>
    Ipo,
    /// <summary>SLiC hinge: max(0, 1 − β·Δ).</summary>
    Hinge,
    /// <summary>SimPO: −log σ(β·(avg log π(y_c) − avg log π(y_r)) − γ), reference-free.</summary>
    Simpo,
    /// <summary>ORPO: NLL of the chosen answer + λ·(−log σ(log odds ratio)), reference-free.</summary>
    Orpo,
    /// <summary>Plackett–Luce DPO: a ranking of K completions used whole.</summary>
    PlackettLuce,
    /// <summary>Robust DPO: the sigmoid loss made unbiased under label noise ε.</summary>
    Robust,
    /// <summary>EXO for pairs: KL from the model's pair distribution to the labels (1 − ε, ε).</summary>
    ExoPair,
    /// <summary>NCA for pairs: absolute implicit rewards through log σ.</summary>
    NcaPair,
    /// <summary>SPPO with hard labels: log-ratios pulled to ±1/(2β).</summary>
    SppoHard,
    /// <summary>APO-zero: chosen up, rejected down.</summary>
    ApoZero,
    /// <summary>APO-down: both down, the rejected more.</summary>
    ApoDown,
    /// <summary>DiscoPOP: logistic and exponential losses mixed by σ(β·Δ/τ).</summary>
    DiscoPop,
    /// <summary>AOT: sorted policy margins against sorted reference margins.</summary>
    Aot,
    /// <summary>AOT pair: sorted chosen log-ratios against sorted rejected log-ratios.</summary>
    AotPair,
    /// <summary>BCO pair: each answer's reward classified against a running mean of the batches' rewards.</summary>
    BcoPair,
}

/// <summary>
/// The DPO objective's options, shared by <c>alignsharp dpo</c> (offline, on preference files) and
/// <c>alignsharp online-dpo</c> (on pairs the policy samples and a judge ranks): the loss type and its parameters, on
/// top of the policy, the reference and the shared trainer options. Defaults follow TRL's DPOConfig (β 0.1, label
/// smoothing 0, sigmoid loss).
/// </summary>
public abstract record DpoObjectiveOptions : ReferencedPolicyOptions
{
    [Option("Objective: sigmoid (DPO), ipo, hinge (SLiC), simpo, orpo, plackett_luce (rankings of K completions used whole; pairs count as rankings of 2), robust, exo_pair, nca_pair, sppo_hard, apo_zero, apo_down, discopop, aot or aot_pair (TRL's names; docs/dpo.md).")]
    public string LossType { get; init; } = "sigmoid";

    [Option("β: strength of the implicit KL penalty (temperature of the implicit reward β·log π/π_ref); for simpo the reward scale. Not used by orpo (see --orpo-lambda).")]
    public float Beta { get; init; } = DefaultBeta;

    private const float DefaultBeta = 0.1f;

    [Option("Label smoothing ε in [0, 0.5): the assumed probability that a preference label is flipped (conservative DPO); sigmoid, simpo, robust, aot, aot_pair, and exo_pair (which needs ε > 0, e.g. 1e-3).")]
    public float LabelSmoothing { get; init; }

    [Option("DiscoPOP's temperature τ of the modulation σ(β·Δ/τ) (TRL's discopop_tau).")]
    public float DiscopopTau { get; init; } = DefaultDiscopopTau;

    private const float DefaultDiscopopTau = 0.05f;

    [Option("RPO (Pang et al. 2024, TRL's rpo_alpha): add α × the chosen answers' NLL per token to the loss of every pair (0 = off; the paper uses 1); pairwise losses but orpo, which has its own.")]
    public float RpoAlpha { get; init; }

    [Option("SimPO target reward margin γ (TRL's simpo_gamma).")]
    public float SimpoGamma { get; init; } = DefaultSimpoGamma;

    private const float DefaultSimpoGamma = 0.5f;

    [Option("ORPO weight λ of the odds-ratio term beside the chosen answer's NLL (TRL's ORPO beta).")]
    public float OrpoLambda { get; init; } = DefaultOrpoLambda;

    private const float DefaultOrpoLambda = 0.1f;

    [Option("Use no reference model (log π_ref = 0) with sigmoid, ipo, hinge or plackett_luce; simpo and orpo never use one.")]
    public bool ReferenceFree { get; init; }

    /// <summary>The parsed <see cref="LossType"/>.</summary>
    [JsonIgnore]
    public DpoLossType Loss => ParseLossType(LossType);

    /// <summary>Whether a reference model takes part: not for simpo and orpo, nor with --reference-free.</summary>
    [JsonIgnore]
    public bool UsesReference => !ReferenceFree && Loss is not (DpoLossType.Simpo or DpoLossType.Orpo);

    public static DpoLossType ParseLossType(string name) => name.Trim().ToLowerInvariant() switch
    {
        "sigmoid" => DpoLossType.Sigmoid,
        "ipo" => DpoLossType.Ipo,
        "hinge" => DpoLossType.Hinge,
        "simpo" => DpoLossType.Simpo,
        "orpo" => DpoLossType.Orpo,
        "plackett_luce" or "plackett-luce" => DpoLossType.PlackettLuce,
        "robust" => DpoLossType.Robust,
        "exo_pair" => DpoLossType.ExoPair,
        "nca_pair" => DpoLossType.NcaPair,
        "sppo_hard" => DpoLossType.SppoHard,
        "apo_zero" => DpoLossType.ApoZero,
        "apo_down" => DpoLossType.ApoDown,
        "discopop" => DpoLossType.DiscoPop,
        "aot" => DpoLossType.Aot,
        "aot_pair" => DpoLossType.AotPair,
        "bco_pair" => DpoLossType.BcoPair,
        _ => throw new UserInputException($"--loss-type must be sigmoid, ipo, hinge, simpo, orpo, plackett_luce, robust, exo_pair, nca_pair, sppo_hard, apo_zero, apo_down, discopop, aot, aot_pair or bco_pair, not '{name}'."),
    };

    private static string LossTypeName(DpoLossType loss) => loss switch
    {
        DpoLossType.DiscoPop => "discopop",
        _ => loss.ToString().ToLowerInvariant(),
    };

    /// <summary>Checks the objective's options (the shared ones are checked by the trainer's own Validate).</summary>
    protected void ValidateObjective()
    {
        if (string.IsNullOrWhiteSpace(Policy)) throw new UserInputException("--policy (the model directory to train) is required.");
        var loss = Loss;
        if (!(Beta > 0) || float.IsInfinity(Beta)) throw new UserInputException($"--beta must be > 0, got {Beta}.");
        if (!(LabelSmoothing >= 0 && LabelSmoothing < 0.5f)) throw new UserInputException($"--label-smoothing must be in [0, 0.5), got {LabelSmoothing}.");
        if (LabelSmoothing > 0 && loss is not (DpoLossType.Sigmoid or DpoLossType.Simpo or DpoLossType.Robust or DpoLossType.ExoPair or DpoLossType.Aot or DpoLossType.AotPair))
            throw new UserInputException($"--label-smoothing applies to the sigmoid, simpo, robust, exo_pair, aot and aot_pair losses only, not {LossType}.");
        if (loss == DpoLossType.ExoPair && LabelSmoothing == 0)
            throw new UserInputException("--loss-type exo_pair needs --label-smoothing ε > 0 (the labels' distribution (1 − ε, ε) has a log ε); TRL's examples use 1e-3.");
        if (!(DiscopopTau > 0) || float.IsInfinity(DiscopopTau)) throw new UserInputException($"--discopop-tau must be > 0, got {DiscopopTau}.");
        if (!(RpoAlpha >= 0) || float.IsInfinity(RpoAlpha)) throw new UserInputException($"--rpo-alpha must be ≥ 0, got {RpoAlpha}.");
        if (RpoAlpha > 0 && loss is DpoLossType.Orpo or DpoLossType.PlackettLuce)
            throw new UserInputException($"--rpo-alpha adds the chosen answers' NLL to a pairwise loss; {LossType} {(loss == DpoLossType.Orpo ? "has its own NLL term" : "has no chosen answer per pair")}.");
        if (!float.IsFinite(SimpoGamma)) throw new UserInputException("--simpo-gamma must be a finite number.");
        if (!(OrpoLambda >= 0) || float.IsInfinity(OrpoLambda)) throw new UserInputException($"--orpo-lambda must be ≥ 0, got {OrpoLambda}.");
        if (ReferenceFree && Reference != null) throw new UserInputException("--reference-free and --reference contradict each other; give one.");
        // Accepted and ignored otherwise: TRL's ORPOConfig calls its λ beta, so a migrated config's beta would do nothing here.
        if (loss == DpoLossType.Orpo && Beta != DefaultBeta)
            throw new UserInputException("--beta is not used by orpo: its weight of the odds-ratio term is --orpo-lambda (what TRL's ORPOConfig calls beta).");
        foreach (var (flag, given, user) in new[]
        {
            ("--simpo-gamma", SimpoGamma != DefaultSimpoGamma, DpoLossType.Simpo),
            ("--orpo-lambda", OrpoLambda != DefaultOrpoLambda, DpoLossType.Orpo),
            ("--discopop-tau", DiscopopTau != DefaultDiscopopTau, DpoLossType.DiscoPop),
        })
            if (given && loss != user)
                throw new UserInputException($"{flag} is a parameter of --loss-type {LossTypeName(user)}; {LossType} does not use it.");
        if (loss is DpoLossType.Simpo or DpoLossType.Orpo && (Reference != null || ReferenceFree))
            throw new UserInputException($"--loss-type {LossType} uses no reference model; {(Reference != null ? "--reference" : "--reference-free")} would change nothing.");
    }
}

/// <summary>
/// Options of <c>alignsharp dpo</c>: the shared trainer and data options plus the policy, the reference and the
/// objective (<see cref="DpoObjectiveOptions"/>). --data and --eval-data hold preferences: pairs {"prompt","chosen","rejected"},
/// Anthropic HH {"chosen","rejected"} or rankings {"prompt","completions","ranking"} (split into weighted pairs, or used
/// whole by plackett_luce). Defaults follow TRL's DPOConfig (max length 1024) except the learning rate: TRL's 1e-6 is
/// tuned for billion-parameter models; models small enough to train on a CPU move too slowly at that rate, so the
/// default here is 5e-6 (raise it further for toy models: the tests use 1e-3 on a 30k-parameter model).
/// </summary>
public sealed record DpoOptions : DpoObjectiveOptions
{
    [Option("Compute the loss and metrics on --data (or --eval-data) without training; prints one JSON object on stdout. Needs no --out.")]
    public bool EvalOnly { get; init; }

    /// <summary>A LoRA base, or a reference model kept through training (not only the policy's own starting weights, precomputed).</summary>
    protected override bool HasFrozenWeights => TrainsAdapter || UsesReference && (Reference != null || !PrecomputeReference);

    public override void Validate()
    {
        if (EvalOnly)
        {
            // No run directory, optimizer or schedule: only what evaluation reads.
            if (BatchSize < 1) throw new UserInputException("--batch-size must be ≥ 1.");
            if (Threads < 0) throw new UserInputException("--threads must be ≥ 0.");
            if (string.IsNullOrWhiteSpace(Data) && string.IsNullOrWhiteSpace(EvalData))
                throw new UserInputException("--eval-only needs the data to evaluate: --data FILE (or --eval-data FILE).");
            if (!string.IsNullOrWhiteSpace(Data) && !string.IsNullOrWhiteSpace(EvalData))
                throw new UserInputException("--eval-only evaluates one file: give --data or --eval-data, not both.");
            if (Resume != null) throw new UserInputException("--resume has no meaning with --eval-only.");
            if (EvalSplit > 0) throw new UserInputException("--eval-split has no meaning with --eval-only, which evaluates the whole file.");
            if (LoraR > 0 || Merge) throw new UserInputException("--lora-r, --use-peft and --merge train an adapter; they have no meaning with --eval-only.");
            if (FrozenDtype is not (null or "bf16" or "fp32")) throw new UserInputException($"--frozen-dtype must be bf16 or fp32, not '{FrozenDtype}'.");
            if (MatmulPrecision is not ("highest" or "medium")) throw new UserInputException($"--matmul-precision must be highest or medium, not '{MatmulPrecision}'.");
            if (MatmulPrecision != "highest")
                throw new UserInputException("--matmul-precision medium applies to a LoRA run's frozen base; --eval-only trains no adapter and evaluates with exact products.");
            // It trains nothing and writes nothing (the JSON goes to stdout): options of a run would be ignored.
            var d = new DpoOptions();
            var inert = new List<string>();
            foreach (var (flag, given) in new[]
            {
                ("--out", !string.IsNullOrEmpty(Out)), ("--overwrite", Overwrite), ("--max-steps", MaxSteps != d.MaxSteps), ("--epochs", Epochs != d.Epochs),
                ("--learning-rate", LearningRate != d.LearningRate), ("--lr-scheduler", LrScheduler != d.LrScheduler), ("--warmup-steps", WarmupSteps != d.WarmupSteps),
                ("--warmup-ratio", WarmupRatio != d.WarmupRatio), ("--weight-decay", WeightDecay != d.WeightDecay), ("--adam-beta1", AdamBeta1 != d.AdamBeta1),
                ("--adam-beta2", AdamBeta2 != d.AdamBeta2), ("--adam-epsilon", AdamEpsilon != d.AdamEpsilon), ("--max-grad-norm", MaxGradNorm != d.MaxGradNorm),
                ("--gradient-accumulation-steps", GradientAccumulationSteps != d.GradientAccumulationSteps), ("--logging-steps", LoggingSteps != d.LoggingSteps),
                ("--save-steps", SaveSteps != d.SaveSteps), ("--save-total-limit", SaveTotalLimit != d.SaveTotalLimit), ("--save-dtype", SaveDtype != d.SaveDtype),
                ("--report-to", ReportTo != d.ReportTo), ("--eval-steps", EvalSteps != d.EvalSteps), ("--gradient-checkpointing", GradientCheckpointing),
            })
                if (given) inert.Add(flag);
            if (inert.Count > 0)
                throw new UserInputException($"{string.Join(", ", inert)} {(inert.Count == 1 ? "has" : "have")} no meaning with --eval-only, which trains nothing and writes nothing (its JSON goes to stdout).");
            string file = EvalData ?? Data!;
            if (!File.Exists(file)) throw new UserInputException($"{(EvalData != null ? "--eval-data" : "--data")}: {file} does not exist.");
            global::AlignSharp.Training.Data.ChatTemplate.ValidateOption(ChatTemplate, ChatTemplateKwargs);
            Truncation.Validate();
        }
        else
        {
            base.Validate();
        }
        ValidateObjective();
        if (!string.IsNullOrWhiteSpace(EvalData) && EvalSplit > 0 && !EvalOnly)
            throw new UserInputException("give either --eval-data or --eval-split, not both.");
    }
}
