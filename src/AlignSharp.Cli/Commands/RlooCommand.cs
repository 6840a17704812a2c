using System.CommandLine;
using AlignSharp.Training.Rl;

namespace AlignSharp.Cli.Commands;

/// <summary>`alignsharp rloo`: REINFORCE leave-one-out (no critic).</summary>
public static class RlooCommand
{
    public static Command Create() => TrainerCommand.Create<RlooOptions>("rloo",
        "RL fine-tuning with RLOO: --rloo-k completions per prompt, each baselined by the mean reward of the others; " +
        "KL penalty in the reward (default) or in the loss.",
        o => { RlTrainer.Create(o).Run(); return 0; });
}
