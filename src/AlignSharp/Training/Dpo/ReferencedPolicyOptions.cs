using AlignSharp.Training.Runs;

namespace AlignSharp.Training.Dpo;

/// <summary>
/// What the trainers that move a policy against a frozen reference (dpo, online-dpo, kto) share: the policy, the reference, and
/// whether the reference log-probabilities are precomputed. Defaults as TRL's DPOConfig/KTOConfig (max length 1024)
/// except the learning rate: TRL's 1e-6 is tuned for billion-parameter models; models small enough to train on a CPU
/// move too slowly at that rate, so the default here is 5e-6.
/// </summary>
[TrlName("model_name_or_path", nameof(Policy))]
[TrlName("model", nameof(Policy))] // sft's and rm's flag for the model a run trains, so one spelling works everywhere
[TrlName("ref_model", nameof(Reference))]
[TrlName("precompute_ref_log_probs", nameof(PrecomputeReference))]
public abstract record ReferencedPolicyOptions : TextDataOptions
{
    protected ReferencedPolicyOptions()
    {
        LearningRate = 5e-6f;
    }

    [Option("Model directory to train (config.json + safetensors + tokenizer.json); its starting weights are the reference model unless --reference is given.", Required = true)]
    public string? Policy { get; init; }

    [Option("Reference model directory, frozen (default: the --policy model as it starts). With dpo --eval-only on a trained policy, pass the model it started from.")]
    public string? Reference { get; init; }

    [Option("Compute the reference log-probabilities once before training and cache them in DIR/reference_logps.bin (keyed by the reference weights and the batches), instead of running the frozen reference model every step. Same results either way.", SafeToChangeOnResume = true)]
    public bool PrecomputeReference { get; init; } = true;
}
