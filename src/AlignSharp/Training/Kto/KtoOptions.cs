using AlignSharp.Training.Dpo;
using AlignSharp.Training.Runs;

namespace AlignSharp.Training.Kto;

/// <summary>
/// Options of <c>alignsharp kto</c>: the shared trainer and data options plus the policy, the reference and KTO's
/// β and class weights. --data and --eval-data hold unpaired feedback {"prompt","completion","label"} or
/// {"messages","label"} (label true: desirable), or preference pairs, unpaired as TRL's KTOTrainer does. Defaults follow TRL's KTOConfig (β 0.1, desirable and undesirable
/// weights 1.0, max length 1024) except the learning rate, 5e-6 as for dpo (TRL's 1e-6 suits billion-parameter models).
/// </summary>
public sealed record KtoOptions : ReferencedPolicyOptions
{
    [Option("β: temperature of the implicit reward β·log π/π_ref inside the sigmoid (TRL's beta).")]
    public float Beta { get; init; } = 0.1f;

    [Option("Weight of the desirable (label true) examples' losses (TRL's desirable_weight); raise it when desirable examples are rarer.")]
    public float DesirableWeight { get; init; } = 1f;

    [Option("Weight of the undesirable (label false) examples' losses (TRL's undesirable_weight).")]
    public float UndesirableWeight { get; init; } = 1f;

    [Option("Objective (TRL's loss_type): kto, or apo_zero_unpaired (APO-zero for unpaired feedback: the same losses with the reference point fixed at 0, so no KL estimate; D'Oosterlinck et al. 2024).")]
    public string LossType { get; init; } = "kto";

    /// <summary>A reference model besides the policy's own starting weights, or one kept through training.</summary>
    protected override bool HasFrozenWeights => TrainsAdapter || Reference != null || !PrecomputeReference;

    public override void Validate()
    {
        base.Validate();
        if (string.IsNullOrWhiteSpace(Policy)) throw new UserInputException("--policy (the model directory to train) is required.");
        if (!(Beta > 0) || float.IsInfinity(Beta)) throw new UserInputException($"--beta must be > 0, got {Beta}.");
        if (!(DesirableWeight >= 0) || float.IsInfinity(DesirableWeight)) throw new UserInputException($"--desirable-weight must be ≥ 0, got {DesirableWeight}.");
        if (!(UndesirableWeight >= 0) || float.IsInfinity(UndesirableWeight)) throw new UserInputException($"--undesirable-weight must be ≥ 0, got {UndesirableWeight}.");
        if (DesirableWeight == 0 && UndesirableWeight == 0) throw new UserInputException("--desirable-weight and --undesirable-weight are both 0: nothing would be trained.");
        if (LossType is not ("kto" or "apo_zero_unpaired")) throw new UserInputException($"--loss-type must be kto or apo_zero_unpaired, not '{LossType}'.");
        if (BatchSize < 2 && LossType == "kto")
            throw new UserInputException("--batch-size must be ≥ 2 for kto: the reference point is estimated from mismatched prompt/completion pairs within a batch, and a batch of 1 has none.");
        if (!string.IsNullOrWhiteSpace(EvalData) && EvalSplit > 0) throw new UserInputException("give either --eval-data or --eval-split, not both.");
    }
}
