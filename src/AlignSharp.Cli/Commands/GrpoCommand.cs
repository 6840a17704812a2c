using System.CommandLine;
using AlignSharp.Training.Rl;

namespace AlignSharp.Cli.Commands;

/// <summary>`alignsharp grpo`: group-relative policy optimisation (no critic), KL in the loss.</summary>
public static class GrpoCommand
{
    public static Command Create() => TrainerCommand.Create<GrpoOptions>("grpo",
        "RL fine-tuning with GRPO: --num-generations completions per prompt, advantages relative to the group, " +
        "clipped surrogate with a k3 KL penalty to the starting policy in the loss.",
        o => { RlTrainer.Create(o).Run(); return 0; });
}
