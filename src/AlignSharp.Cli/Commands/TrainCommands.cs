using System.CommandLine;
using AlignSharp.Training.RewardModeling;
using AlignSharp.Training.Sft;

namespace AlignSharp.Cli.Commands;

/// <summary>`alignsharp sft` and `alignsharp rm`: the supervised phases of RLHF. Every option: `--help`.</summary>
public static class TrainCommands
{
    public static Command Sft() => TrainerCommand.Create<SftOptions>("sft",
        "Supervised fine-tuning: next-token loss on completions (prompt tokens masked by default).",
        o => { SftTrainer.Train(o); return 0; });

    public static Command RewardModel() => TrainerCommand.Create<RewardModelOptions>("rm",
        "Train a reward model on preference pairs or rankings (Bradley–Terry), from an SFT or base checkpoint.",
        o => { RewardModelTrainer.Train(o); return 0; });
}
