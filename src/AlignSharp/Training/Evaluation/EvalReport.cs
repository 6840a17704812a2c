using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;
using AlignSharp.Reports;

namespace AlignSharp.Training.Evaluation;

/// <summary>eval.html: the numbers of eval.json, then the examples side by side (prompt, the policy's and the baseline's completions, the judge's verdict). Everything is HTML-escaped.</summary>
public static class EvalReport
{
    public const int MaxExamples = 200;

    public static string Render(JsonObject json, EvalResult r)
    {
        var sb = new StringBuilder();
        // A model with its adapter, as given: "MODEL + adapter DIR".
        static string? Named(JsonNode? model, JsonNode? adapter) => (string?)adapter is { } a ? $"{(string?)model} + adapter {a}" : (string?)model;
        sb.Append("<h1>Evaluation: ").Append(Html.Esc(Named(json["policy"], json["adapter"]))).Append("</h1>");
        sb.Append("<p class=\"muted\">baseline ").Append(Html.Esc(Named(json["baseline"], json["baseline_adapter"]) ?? "none")).Append("; prompts ").Append(Html.Esc((string?)json["prompts"]))
          .Append("; judge ").Append(Html.Esc((string?)json["judge"])).Append("</p>");
        sb.Append("<h2>Results</h2>");
        bool hasBaseline = r.Slots.Any(s => s.Baseline != null);
        sb.Append("<table><tr><th></th><th>policy</th>").Append(hasBaseline ? "<th>baseline</th>" : "").Append("</tr>");
        void Row(string name, string policy, string? baseline)
        {
            sb.Append("<tr><th>").Append(Html.Esc(name)).Append("</th><td class=\"num\">").Append(Html.Esc(policy)).Append("</td>");
            if (hasBaseline) sb.Append("<td class=\"num\">").Append(Html.Esc(baseline ?? "")).Append("</td>");
            sb.Append("</tr>");
        }
        Row("reward mean [95% CI]", Interval(r.PolicyReward), Interval(r.BaselineReward));
        Row("length mean (tokens)", F(r.PolicyLength), r.BaselineLength is double b ? F(b) : null);
        Row("distinct-2", F(r.PolicyDistinct2), r.BaselineDistinct2 is double d ? F(d) : null);
        sb.Append("</table>");
        if (hasBaseline)
        {
            sb.Append("<table>");
            sb.Append("<tr><th>win rate vs baseline [95% CI]</th><td class=\"num\">").Append(Html.Esc(Interval(r.WinRate))).Append("</td></tr>");
            sb.Append("<tr><th>wins / ties / losses</th><td class=\"num\">").Append(Html.Esc($"{json["wins"]} / {json["ties"]} / {json["losses"]}")).Append("</td></tr>");
            sb.Append("<tr><th>KL(policy ‖ baseline) per completion, sampled [95% CI]</th><td class=\"num\">").Append(Html.Esc(Interval(r.KlSampled))).Append("</td></tr>");
            sb.Append("<tr><th>KL per completion, exact per token [95% CI]</th><td class=\"num\">").Append(Html.Esc(Interval(r.KlExact))).Append("</td></tr>");
            sb.Append("</table>");
        }
        sb.Append("<p class=\"muted\">").Append(Html.Esc((string?)json["ci_method"])).Append(". Ties count half; identical completions always tie.</p>");

        sb.Append("<h2>Examples</h2><table><tr><th>#</th><th>prompt</th><th>policy</th><th>reward</th>");
        if (hasBaseline) sb.Append("<th>baseline</th><th>reward</th><th>verdict</th>");
        sb.Append("</tr>");
        for (int i = 0; i < Math.Min(MaxExamples, r.Slots.Count); i++)
        {
            var s = r.Slots[i];
            sb.Append(CultureInfo.InvariantCulture, $"<tr><td class=\"num\">{i}</td>").Append("<td class=\"text\">").Append(Html.Esc(s.Prompt)).Append("</td>")
              .Append("<td class=\"text\">").Append(Html.Esc(s.Policy)).Append("</td>").Append(Html.Cell(s.PolicyReward));
            if (hasBaseline)
            {
                string verdict = s.Outcome switch { 1 => "policy", 0 => "baseline", 0.5 => "tie", double x => $"policy {x:F2}", null => "" };
                sb.Append("<td class=\"text\">").Append(Html.Esc(s.Baseline)).Append("</td>").Append(Html.Cell(s.BaselineReward))
                  .Append("<td>").Append(Html.Esc(verdict)).Append("</td>");
            }
            sb.Append("</tr>");
        }
        sb.Append("</table>");
        if (r.Slots.Count > MaxExamples) sb.Append(CultureInfo.InvariantCulture, $"<p class=\"muted\">{MaxExamples} of {r.Slots.Count} shown; all are in samples.jsonl.</p>");
        return Html.Page("AlignSharp evaluation", sb.ToString());
    }

    private static string F(double x) => double.IsFinite(x) ? x.ToString("0.####", CultureInfo.InvariantCulture) : "–";

    private static string Interval(Estimate? e) => e is Estimate v && double.IsFinite(v.Value) ? $"{F(v.Value)} [{F(v.Low)}, {F(v.High)}]" : "–";
}
