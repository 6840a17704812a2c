namespace AlignSharp.Cli;

/// <summary>
/// Flags of transformers' TrainingArguments and TRL's ModelConfig that AlignSharp does not take, with what to use instead.
/// A TRL user's command line carries them out of habit; System.CommandLine reports them as unrecognised (and the command
/// fails), and these lines say why and what does the job here.
/// </summary>
public static class ForeignFlags
{
    private const string Precision = "AlignSharp trains in float32 (weights, gradients and optimizer state); --frozen-dtype bf16 keeps the frozen weights (a LoRA base, the reference, a reward model) in bf16, --matmul-precision medium rounds the inputs of their products to bf16 (float32 sums), and --save-dtype bf16 saves in bf16.";

    private static readonly Dictionary<string, string> Hints = new(StringComparer.Ordinal)
    {
        ["bf16"] = Precision,
        ["fp16"] = Precision,
        ["tf32"] = Precision,
        ["torch_dtype"] = Precision,
        ["dtype"] = Precision,
        ["attn_implementation"] = "attention runs in AlignSharp's own kernels (causal, sliding-window and packed); there is no implementation to choose.",
        ["load_in_4bit"] = "quantized (bitsandbytes) base weights are not supported; --frozen-dtype bf16 halves the frozen weights' memory.",
        ["load_in_8bit"] = "quantized (bitsandbytes) base weights are not supported; --frozen-dtype bf16 halves the frozen weights' memory.",
        ["deepspeed"] = "several machines or processes train data-parallel under mpirun (see docs/distributed.md).",
        ["fsdp"] = "several machines or processes train data-parallel under mpirun (see docs/distributed.md).",
        ["gradient_checkpointing_kwargs"] = "--gradient-checkpointing takes no options: every block is recomputed in the backward pass.",
        ["completion_only_loss"] = "--loss-on says which tokens carry loss: completion (the default: the prompt masked, every assistant turn of a conversation), final_turn, or all.",
        ["assistant_only_loss"] = "--loss-on says which tokens carry loss: completion (the default: every assistant turn of a conversation, the prompt masked), final_turn, or all.",
        ["dataset_name"] = "there is no hub access: give the data as a local file with --data (JSONL or a JSON array; docs/data-formats.md).",
        ["optim"] = "the optimizer is AdamW (torch's semantics; --adam-beta1, --adam-beta2, --adam-epsilon, --weight-decay).",
        ["torch_compile"] = "there is nothing to switch on: AlignSharp's kernels are its own.",
        ["use_liger_kernel"] = "there is nothing to switch on: AlignSharp's kernels are its own.",
        ["push_to_hub"] = "runs write their final model and checkpoints to --out; there is no hub upload.",
        ["hub_model_id"] = "runs write their final model and checkpoints to --out; there is no hub upload.",
        ["chat_template_path"] = "give the chat template with --chat-template FILE.jinja (or a built-in name: chatml, llama3, plain).",
        ["eval_strategy"] = "evaluation runs every --eval-steps optimizer steps and at the end, when --eval-data or --eval-split is given; there is no strategy to choose.",
        ["evaluation_strategy"] = "evaluation runs every --eval-steps optimizer steps and at the end, when --eval-data or --eval-split is given; there is no strategy to choose.",
        ["save_strategy"] = "a checkpoint is written every --save-steps steps (0 = only the final model); there is no strategy to choose.",
        ["logging_strategy"] = "metrics are written every --logging-steps steps; there is no strategy to choose.",
        ["per_device_eval_batch_size"] = "evaluation uses --batch-size.",
        ["truncation_mode"] = "with --truncate a prompt keeps its end and a completion its start (docs/data-formats.md); there is no mode to choose.",
        ["lr_scheduler_kwargs"] = "the schedules take no options: --lr-scheduler constant, constant_with_warmup, linear or cosine, with --warmup-steps or --warmup-ratio.",
        ["num_generations"] = "completions per prompt are grpo's --num-generations and rloo's --rloo-k (TRL 1.x RLOOConfig's num_generations); ppo samples one per prompt.",
        ["epsilon"] = "the ratio's clip range is --clip-range (TRL's cliprange / epsilon).",
    };

    /// <summary>The hint for a config-file key (any spelling) that is such a flag, or null.</summary>
    public static string? HintForKey(string key) => Hints.GetValueOrDefault(key.Replace('-', '_'));

    /// <summary>One line for each unrecognised token that is such a flag (in either spelling, with or without =value).</summary>
    public static IEnumerable<string> HintsFor(IEnumerable<string> unmatched)
    {
        foreach (var token in unmatched)
        {
            if (!token.StartsWith("--", StringComparison.Ordinal)) continue;
            string name = token[2..].Split('=')[0].Replace('-', '_');
            if (Hints.TryGetValue(name, out var hint)) yield return $"{token.Split('=')[0]}: {hint}";
        }
    }
}
