using System.CommandLine;
using AlignSharp.Training.Rl;

namespace AlignSharp.Cli.Commands;

/// <summary>`alignsharp ppo`: PPO with a value model and a KL penalty in the reward.</summary>
public static class PpoCommand
{
    public static Command Create() => TrainerCommand.Create<PpoOptions>("ppo",
        "RL fine-tuning with PPO: rollouts from --policy on --prompts, rewards from --reward-model and/or --reward-url, " +
        "per-token KL penalty to the starting policy, GAE, clipped policy and value losses.",
        o => { RlTrainer.Create(o).Run(); return 0; });
}
