using System.Globalization;
using System.Text;
using AlignSharp.Models.Checkpoints;
using AlignSharp.Reports;

namespace AlignSharp.Demo;

/// <summary>
/// The demo's one-page report: the results table, the reward model's agreement and calibration, the gold-versus-KL
/// curve of the PPO runs, sample responses per policy, then every phase's run (metrics over steps, config, samples).
/// </summary>
public static class DemoReport
{
    public static void Write(string path, string runDir, DemoResults r) => AtomicFile.WriteText(path, Render(runDir, r));

    public static string Render(string runDir, DemoResults r)
    {
        var sb = new StringBuilder();
        sb.Append($"<h1>AlignSharp simulated-human RLHF experiment</h1><p class=\"muted\">{Html.Esc(r.Settings)} settings, seed {r.Seed}; {Html.Esc(Path.GetFullPath(runDir))}</p>");
        sb.Append("<p>A byte-level GPT-2 learns a tiny English-like language from random weights, is fine-tuned on demonstrations of mixed quality, ")
          .Append("and its answers are ranked by simulated annotators (Plackett–Luce over a hidden gold reward, with noise and two biased people) through the annotation store. ")
          .Append("A reward model learns their taste; PPO (with and without the KL penalty), DPO and best-of-N optimise against it. ")
          .Append("Every policy is judged on held-out prompts by the gold reward, which training never saw.</p>");

        sb.Append("<h2>Results on held-out prompts</h2><table><tr><th>policy</th><th>gold reward</th><th>±95%</th><th>gold win rate vs SFT</th><th>proxy (RM) score</th><th>KL from SFT</th><th>fluency</th><th>distinct-2</th></tr>");
        foreach (var name in DemoExperiment.PolicyOrder.Where(r.Policies.ContainsKey))
        {
            var m = r.Policies[name];
            sb.Append("<tr><th>").Append(Html.Esc(name)).Append("</th>")
              .Append(Num(m.GoldRewardMean)).Append(Num(m.GoldRewardCi95)).Append(Pct(m.GoldWinRateVsSft)).Append(Num(m.ProxyScoreMean))
              .Append(Num(m.KlFromSft)).Append(Pct(m.Fluency)).Append(Num(m.Distinct2)).Append("</tr>");
        }
        sb.Append("</table>");
        if (r.Unavailable.Count > 0) sb.Append("<p class=\"muted\">Not run: ").Append(Html.Esc(string.Join("; ", r.Unavailable))).Append("</p>");
        sb.Append("<p class=\"muted\">Gold reward: −3 if ungrammatical, else correctness (+2 right, −1 wrong, −1.5 no answer) + politeness (≤ +1, −1 per rude phrase) − 0.3 per sentence beyond 3 − 1 per repeated sentence − 2 for the forbidden topic; the best answer scores 3. ")
          .Append("Win rate counts ties as ½. Best-of-N's KL is the analytic log N − (N−1)/N.</p>");

        var rm = r.RewardModel;
        sb.Append("<h2>Reward model</h2>");
        sb.Append(CultureInfo.InvariantCulture, $"<p>Held-out agreement with the gold pairwise preferences: <b>{rm.GoldAgreement:P1}</b> on {rm.Pairs} pairs. ");
        sb.Append(CultureInfo.InvariantCulture, $"A single annotator agrees with gold on {rm.AnnotatorGoldAgreement:P1} of them on average; the ideal model of the annotators' labels would reach {rm.AgreementCeiling:P1} (the ceiling their noise and bias imply). {r.AnnotationRankings} rankings were collected.</p>");
        var calib = rm.Calibration.Where(b => b.Pairs > 0).ToList();
        sb.Append("<div class=\"charts\">");
        sb.Append(SvgChart.Line("Reward model calibration", "predicted P(preferred) = σ(r_i − r_j)", "observed",
        [
            new ChartSeries("gold agrees", calib.Select(b => (b.MeanPredicted, b.GoldAgreement)).ToList()),
            new ChartSeries("annotators prefer (P-L mean)", calib.Select(b => (b.MeanPredicted, b.AnnotatorPreference)).ToList()),
        ], diagonal: true));

        var curves = r.GoldVersusKl;
        if (curves.Count > 0)
        {
            sb.Append(SvgChart.Line("Gold reward versus KL from SFT (PPO checkpoints)", "KL(π ‖ π_SFT) per response", "gold reward",
                curves.Select(kv => new ChartSeries(kv.Key, kv.Value.Select(p => (p.Kl, p.Gold)).ToList())).ToList()));
            sb.Append(SvgChart.Line("Proxy (reward-model) score versus KL", "KL(π ‖ π_SFT) per response", "proxy score",
                curves.Select(kv => new ChartSeries(kv.Key, kv.Value.Select(p => (p.Kl, p.Proxy)).ToList())).ToList()));
        }
        sb.Append("</div>");
        sb.Append("<table><tr><th>predicted P</th><th>pairs</th><th>mean predicted</th><th>gold agrees</th><th>annotators prefer</th></tr>");
        foreach (var b in rm.Calibration)
            sb.Append(CultureInfo.InvariantCulture, $"<tr><td>[{b.Low:F1}, {b.High:F1})</td><td class=\"num\">{b.Pairs}</td>").Append(Num(b.MeanPredicted)).Append(Num(b.GoldAgreement)).Append(Num(b.AnnotatorPreference)).Append("</tr>");
        sb.Append("</table>");

        if (curves.Count > 0)
        {
            sb.Append("<h3>Gold-versus-KL points</h3><table><tr><th>run</th><th>step</th><th>KL</th><th>gold</th><th>proxy</th></tr>");
            foreach (var (name, pts) in curves)
                foreach (var p in pts)
                    sb.Append("<tr><td>").Append(Html.Esc(name)).Append(CultureInfo.InvariantCulture, $"</td><td class=\"num\">{p.Step}</td>").Append(Num(p.Kl)).Append(Num(p.Gold)).Append(Num(p.Proxy)).Append("</tr>");
            sb.Append("</table>");
        }

        sb.Append("<h2>Sample responses</h2>");
        foreach (var name in DemoExperiment.PolicyOrder.Where(r.Policies.ContainsKey))
        {
            // Every policy answered the same slots: the same spread of slots shows six different prompts side by side.
            var responses = r.Policies[name].Responses;
            var rows = Enumerable.Range(0, Math.Min(6, responses.Count)).Select(k => responses[k * responses.Count / Math.Min(6, responses.Count)]).Select(x => (IReadOnlyDictionary<string, object?>)new Dictionary<string, object?>
            {
                ["prompt"] = x.Prompt.Question, ["response"] = x.Text, ["gold"] = x.Gold, ["proxy"] = Math.Round(x.Proxy, 3), ["grammatical"] = x.Grammatical ? "yes" : "no",
            }).ToList();
            sb.Append("<h3>").Append(Html.Esc(name)).Append("</h3>").Append(Html.RecordTable(rows, 6));
        }

        sb.Append("<h2>Phases</h2><table><tr><th>phase</th><th>seconds</th></tr>");
        foreach (var (phase, s) in r.PhaseSeconds) sb.Append("<tr><td>").Append(Html.Esc(phase)).Append("</td>").Append(Num(s)).Append("</tr>");
        sb.Append("</table>");
        foreach (var (dir, title) in new[] { ("pretrain", "1. Pretraining"), ("sft", "1. Supervised fine-tuning"), ("rm", "3. Reward model"), ("ppo", "4. PPO (KL penalty)"), ("ppo_beta0", "4. PPO with β = 0"), ("dpo", "4. DPO") })
        {
            string path = Path.Combine(runDir, dir);
            if (!Directory.Exists(path)) continue;
            var body = RunReport.Sections(path, 3);
            if (body.Length > 0) sb.Append("<details><summary>").Append(Html.Esc(title)).Append(" run</summary>").Append(body).Append("</details>");
        }
        return Html.Page("AlignSharp demo report", sb.ToString());
    }

    private static string Num(double v) => $"<td class=\"num\">{(double.IsFinite(v) ? v.ToString("F3", CultureInfo.InvariantCulture) : "–")}</td>";
    private static string Pct(double v) => $"<td class=\"num\">{(double.IsFinite(v) ? v.ToString("P1", CultureInfo.InvariantCulture) : "–")}</td>";
}
