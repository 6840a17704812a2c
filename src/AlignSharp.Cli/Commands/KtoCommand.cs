using System.CommandLine;
using AlignSharp.Training.Kto;

namespace AlignSharp.Cli.Commands;

/// <summary>
/// `alignsharp kto --policy DIR --data FEEDBACK.jsonl --out RUN [--beta ...] [--desirable-weight ...]`: Kahneman–Tversky
/// optimisation on unpaired feedback; every flag comes from <see cref="KtoOptions"/>.
/// </summary>
public static class KtoCommand
{
    public static Command Create() => TrainerCommand.Create<KtoOptions>("kto",
        "Kahneman–Tversky optimisation (KTO) of a policy on unpaired feedback {\"prompt\",\"completion\",\"label\": true|false} (or preference pairs, unpaired as TRL does: chosen desirable, rejected undesirable).",
        options =>
        {
            KtoTrainer.Train(options);
            return 0;
        });
}
