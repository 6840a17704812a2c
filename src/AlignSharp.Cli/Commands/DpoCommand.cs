using System.CommandLine;
using System.Text;
using System.Text.Json;
using AlignSharp.Training.Dpo;

namespace AlignSharp.Cli.Commands;

/// <summary>
/// `alignsharp dpo --policy DIR --data PREFS.jsonl --out RUN [--eval-data FILE] [--loss-type ...] [--beta ...]`:
/// direct preference optimisation and its relatives; every flag comes from <see cref="DpoOptions"/>.
/// With --eval-only it trains nothing and prints one JSON object on stdout: loss, the TRL metrics and tokens_per_s.
/// </summary>
public static class DpoCommand
{
    public static Command Create() => TrainerCommand.Create<DpoOptions>("dpo",
        "Direct preference optimisation (DPO, IPO, SLiC hinge, SimPO, ORPO, Plackett–Luce) of a policy on preference pairs or rankings.",
        options =>
        {
            if (options.EvalOnly)
            {
                Console.Out.WriteLine(ToJson(DpoTrainer.EvaluateOnly(options)));
                return 0;
            }
            DpoTrainer.Train(options);
            return 0;
        });

    /// <summary>One line of JSON; non-finite values as strings ("NaN"), as metrics.jsonl writes them.</summary>
    public static string ToJson(IReadOnlyDictionary<string, double> metrics)
    {
        var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer))
        {
            w.WriteStartObject();
            foreach (var (k, v) in metrics)
            {
                if (double.IsFinite(v)) w.WriteNumber(k, v);
                else w.WriteString(k, v.ToString(System.Globalization.CultureInfo.InvariantCulture));
            }
            w.WriteEndObject();
        }
        return Encoding.UTF8.GetString(buffer.ToArray());
    }
}
