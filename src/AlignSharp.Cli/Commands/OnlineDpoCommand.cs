using System.CommandLine;
using AlignSharp.Training.OnlineDpo;

namespace AlignSharp.Cli.Commands;

/// <summary>
/// `alignsharp online-dpo --policy DIR --prompts FILE (--judge-model RM_DIR | --judge-url URL) --out RUN [--loss-type ...]`:
/// online DPO, the policy's own sampled pairs ranked by a judge each step; every flag comes from <see cref="OnlineDpoOptions"/>.
/// </summary>
public static class OnlineDpoCommand
{
    public static Command Create() => TrainerCommand.Create<OnlineDpoOptions>("online-dpo",
        "Online DPO: each step the policy samples two completions per prompt, a judge (reward model or HTTP judge) picks the better, and the DPO loss (any --loss-type) trains the policy against the frozen reference.",
        options =>
        {
            OnlineDpoTrainer.Train(options);
            return 0;
        });
}
