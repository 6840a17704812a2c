using System.Globalization;
using System.Net;
using System.Text;
using System.Text.Json;
using AlignSharp.Models;

namespace AlignSharp.Reports;

/// <summary>
/// <c>alignsharp report RUN_DIR [RUN_DIR …]</c>: trainers' run directories as one self-contained HTML page. It reads
/// <c>metrics.jsonl</c> (one object per logged step with <c>step</c>, <c>time</c>, <c>split</c> and numbers; lines with a
/// <c>samples</c> array are sample completions), <c>run_config.json</c>, <c>summary.json</c> and, when present,
/// <c>samples.jsonl</c>, and draws one inline SVG chart per metric over steps, every run and split a line of it (several
/// runs are overlaid). Metrics are grouped by what they measure (objective, policy, value, training, …, timing); a
/// metric whose every line is constant (and finite) is listed in a table instead of drawn, and one identical to an earlier
/// metric is named there rather than drawn twice. Non-finite values (a diverged step's NaN or ±∞) are never dropped: the
/// line breaks there, the step is marked, the legend notes it and a line above the charts lists them all. Everything is HTML-escaped; the page loads nothing from elsewhere.
/// </summary>
public static class RunReport
{
    public static string Render(string runDir) => Render([runDir]);

    public static string Render(IReadOnlyList<string> runDirs)
    {
        if (runDirs.Count == 0) throw new UserInputException("Give at least one run directory.");
        foreach (var d in runDirs)
        {
            if (!Directory.Exists(d)) throw new UserInputException($"{d} is not a directory.");
            if (!new[] { "metrics.jsonl", "run_config.json", "summary.json", "samples.jsonl" }.Any(f => File.Exists(Path.Combine(d, f))))
                throw new UserInputException($"{d} has none of metrics.jsonl, run_config.json, summary.json or samples.jsonl; point the report at a run directory (the --out of a trainer).");
        }
        if (runDirs.Count == 1)
        {
            string dir = runDirs[0];
            string trainer = Trainer(dir);
            return Html.Page($"{trainer}: {RunNames(runDirs)[0]}", $"<h1>{Html.Esc(trainer)} run: {Html.Esc(RunNames(runDirs)[0])}</h1><p class=\"muted\">{Html.Esc(Path.GetFullPath(dir))}</p>" + Sections(dir, 2));
        }
        var names = RunNames(runDirs);
        var sb = new StringBuilder($"<h1>{runDirs.Count} runs compared</h1><table><tr><th>run</th><th>trainer</th><th>directory</th></tr>");
        for (int i = 0; i < runDirs.Count; i++)
            sb.Append("<tr><td>").Append(Html.Esc(names[i])).Append("</td><td>").Append(Html.Esc(Trainer(runDirs[i]))).Append("</td><td class=\"text\">").Append(Html.Esc(Path.GetFullPath(runDirs[i]))).Append("</td></tr>");
        sb.Append("</table>");
        var summaries = runDirs.Select(d => ReadObject(Path.Combine(d, "summary.json"))).ToList();
        if (summaries.Any(x => x != null)) sb.Append("<h2>Summary</h2>").Append(Html.ColumnsTable(names, summaries, differingOnly: false));
        sb.Append(MetricCharts(runDirs.Select((d, i) => (names[i], ReadMetrics(Path.Combine(d, "metrics.jsonl")).Metrics)).ToList(), 2));
        var configs = runDirs.Select(d => ReadObject(Path.Combine(d, "run_config.json"))).ToList();
        if (configs.Any(x => x != null)) sb.Append("<h2>Configuration (options that differ)</h2>").Append(Html.ColumnsTable(names, configs, differingOnly: true));
        for (int i = 0; i < runDirs.Count; i++)
        {
            var samples = ReadMetrics(Path.Combine(runDirs[i], "metrics.jsonl")).Samples;
            samples.AddRange(ReadJsonl(Path.Combine(runDirs[i], "samples.jsonl")));
            if (samples.Count > 0) sb.Append("<details><summary>Sample completions: ").Append(Html.Esc(names[i])).Append("</summary>").Append(Html.RecordTable(samples, 60)).Append("</details>");
        }
        return Html.Page($"{runDirs.Count} runs compared", sb.ToString());
    }

    private static string Trainer(string dir) => ReadObject(Path.Combine(dir, "run_config.json"))?.GetValueOrDefault("trainer") as string ?? "run";

    /// <summary>Each run's name: its directory's name, or its path when two runs share a name.</summary>
    private static List<string> RunNames(IReadOnlyList<string> dirs)
    {
        var leaf = dirs.Select(d => Path.GetFileName(Path.GetFullPath(d).TrimEnd(Path.DirectorySeparatorChar))).ToList();
        return leaf.Select((n, i) => leaf.Count(x => x == n) > 1 ? dirs[i] : n).ToList();
    }

    /// <summary>The run's sections (summary, metric charts, sample completions, config) with headings at level <paramref name="h"/>.</summary>
    public static string Sections(string runDir, int h)
    {
        var sb = new StringBuilder();
        var summary = ReadObject(Path.Combine(runDir, "summary.json"));
        if (summary != null) sb.Append($"<h{h}>Summary</h{h}>").Append(Html.KeyValueTable(summary));

        var (metrics, samples) = ReadMetrics(Path.Combine(runDir, "metrics.jsonl"));
        samples.AddRange(ReadJsonl(Path.Combine(runDir, "samples.jsonl")));
        sb.Append(MetricCharts([("", metrics)], h));
        if (samples.Count > 0) sb.Append($"<h{h}>Sample completions</h{h}>").Append(Html.RecordTable(samples, 60));
        var config = ReadObject(Path.Combine(runDir, "run_config.json"));
        if (config != null) sb.Append($"<h{h}>Configuration</h{h}>").Append(Html.KeyValueTable(config));
        return sb.ToString();
    }

    /// <summary>
    /// The metric charts of one or more runs, grouped (<see cref="MetricGroup"/>); each chart has a line per run and split
    /// ("RUN split", or just the split for one unnamed run). Constant metrics go to a table; a metric identical to an
    /// earlier one is named, not drawn.
    /// </summary>
    public static string MetricCharts(IReadOnlyList<(string Run, Dictionary<string, Dictionary<string, List<(double, double)>>> Metrics)> runs, int h)
    {
        var order = runs.SelectMany(r => r.Metrics.Keys).Distinct().ToList();
        if (order.Count == 0) return "";
        var series = order.ToDictionary(m => m, m => runs.SelectMany(r => r.Metrics.TryGetValue(m, out var bySplit)
            ? bySplit.Select(kv => new ChartSeries(r.Run.Length == 0 ? kv.Key : kv.Key == "train" ? r.Run : $"{r.Run} {kv.Key}", kv.Value))
            : []).ToList());

        var constants = new List<(string Metric, List<ChartSeries> Series)>();
        var duplicates = new List<(string Metric, string Of)>();
        var drawn = new List<string>();
        foreach (var m in order)
        {
            // A metric with a non-finite value is drawn, never tabled as a constant: the chart marks where it was lost.
            if (series[m].All(s => s.Points.All(p => double.IsFinite(p.Item2)) && s.Points.Select(p => p.Item2).Distinct().Count() <= 1)) { constants.Add((m, series[m])); continue; }
            var same = drawn.FirstOrDefault(d => SameSeries(series[d], series[m]));
            if (same != null) { duplicates.Add((m, same)); continue; }
            drawn.Add(m);
        }

        var sb = new StringBuilder($"<h{h}>Metrics over steps</h{h}>");
        var nonFinite = order.SelectMany(m => series[m].Select(s => (Metric: m, s.Name, Note: SvgChart.NonFiniteNote(s.Points, "step")))).Where(x => x.Note != null).ToList();
        if (nonFinite.Count > 0)
            sb.Append("<p class=\"nonfinite\">Not finite (dashed lines in the charts): ")
              .Append(Html.Esc(string.Join("; ", nonFinite.Select(x => $"{x.Metric}{(x.Name.Length > 0 ? $" ({x.Name})" : "")}: {x.Note}")))).Append(".</p>");
        foreach (var group in drawn.GroupBy(MetricGroup).OrderBy(g => GroupRank(g.Key)).ThenBy(g => g.Key, StringComparer.Ordinal))
        {
            sb.Append($"<h{h + 1} class=\"group\">").Append(Html.Esc(group.Key)).Append($"</h{h + 1}><div class=\"charts\">");
            foreach (var m in group)
                sb.Append(SvgChart.Line(m, "step", m, series[m], markers: series[m].All(s => s.Points.Count <= 40)));
            sb.Append("</div>");
        }
        if (duplicates.Count > 0)
            sb.Append("<p class=\"muted\">Not drawn again: ").Append(Html.Esc(string.Join("; ", duplicates.Select(d => $"{d.Metric} (same as {d.Of})")))).Append(".</p>");
        if (constants.Count > 0)
        {
            sb.Append($"<h{h + 1}>Constant metrics</h{h + 1}><table><tr><th>metric</th><th>value</th></tr>");
            foreach (var (m, ss) in constants)
            {
                var values = ss.Where(s => s.Points.Count > 0).Select(s => (s.Name, s.Points[0].Item2)).ToList();
                string text = values.Select(v => v.Item2).Distinct().Count() == 1
                    ? Html.FormatNumber(values[0].Item2)
                    : string.Join(", ", values.Select(v => $"{v.Name}: {Html.FormatNumber(v.Item2)}"));
                sb.Append("<tr><td>").Append(Html.Esc(m)).Append("</td><td class=\"num\">").Append(Html.Esc(text)).Append("</td></tr>");
            }
            sb.Append("</table>");
        }
        return sb.ToString();
    }

    private static bool SameSeries(List<ChartSeries> a, List<ChartSeries> b)
        => a.Count == b.Count && a.Zip(b).All(p => p.First.Name == p.Second.Name && p.First.Points.SequenceEqual(p.Second.Points));

    /// <summary>
    /// The group a metric is charted in: objective/* → objective; policy/*, loss/policy*, loss/kl*, loss/ptx* → policy;
    /// val/*, value/*, loss/value* → value; time/*, tokens_per_s* → timing; a metric without a prefix → training; any other
    /// prefix is its own group.
    /// </summary>
    public static string MetricGroup(string metric)
    {
        int slash = metric.IndexOf('/');
        string prefix = slash < 0 ? "" : metric[..slash], rest = slash < 0 ? metric : metric[(slash + 1)..];
        return prefix switch
        {
            "objective" => "objective",
            "policy" => "policy",
            "val" or "value" => "value",
            "loss" => rest.StartsWith("value", StringComparison.Ordinal) ? "value" : "policy",
            "time" or "tokens_per_s" => "timing",
            "" => metric.StartsWith("tokens_per_s", StringComparison.Ordinal) || metric.EndsWith("_runtime_s", StringComparison.Ordinal) ? "timing" : "training",
            _ => prefix,
        };
    }

    private static int GroupRank(string group) => group switch
    {
        "objective" => 0, "policy" => 1, "value" => 2, "training" => 3, "timing" => 5, _ => 4,
    };

    /// <summary>
    /// Metric name → split → (step, value) points, in step order; and sample records (with their step). A value is a JSON
    /// number or a non-finite one (the strings "NaN", "Infinity", "-Infinity" that <c>MetricsLog</c> writes, or Python's bare
    /// literals), which is kept as NaN or ±∞.
    /// </summary>
    public static (Dictionary<string, Dictionary<string, List<(double, double)>>> Metrics, List<Dictionary<string, object?>> Samples) ReadMetrics(string path)
    {
        var metrics = new Dictionary<string, Dictionary<string, List<(double, double)>>>();
        var samples = new List<Dictionary<string, object?>>();
        foreach (var doc in Lines(path))
        {
            using (doc)
            {
                var o = doc.RootElement;
                if (o.ValueKind != JsonValueKind.Object) continue;
                double step = o.TryGetProperty("step", out var s) && s.ValueKind == JsonValueKind.Number ? s.GetDouble() : double.NaN;
                if (o.TryGetProperty("samples", out var arr) && arr.ValueKind == JsonValueKind.Array)
                {
                    foreach (var rec in arr.EnumerateArray())
                        if (rec.ValueKind == JsonValueKind.Object)
                        {
                            var d = new Dictionary<string, object?> { ["step"] = double.IsFinite(step) ? step : null };
                            foreach (var p in rec.EnumerateObject()) d[p.Name] = Value(p.Value);
                            samples.Add(d);
                        }
                    continue;
                }
                if (!double.IsFinite(step)) continue;
                string split = o.TryGetProperty("split", out var sp) && sp.ValueKind == JsonValueKind.String ? sp.GetString()! : "train";
                foreach (var p in o.EnumerateObject())
                {
                    if (p.Name is "step" or "split" or "time") continue;
                    // MetricsLog writes a non-finite value as the string "NaN", "Infinity" or "-Infinity": a diverged step, kept.
                    double? value = p.Value.ValueKind switch
                    {
                        JsonValueKind.Number => p.Value.GetDouble(),
                        JsonValueKind.String => PythonJson.NonFinite(p.Value.GetString()),
                        _ => null,
                    };
                    if (value is not double v) continue;
                    if (!metrics.TryGetValue(p.Name, out var bySplit)) metrics[p.Name] = bySplit = [];
                    if (!bySplit.TryGetValue(split, out var pts)) bySplit[split] = pts = [];
                    pts.Add((step, v));
                }
            }
        }
        // In step order (a hand-made or merged file need not be); a stable sort keeps file order within a step.
        foreach (var bySplit in metrics.Values)
            foreach (var split in bySplit.Keys.ToList())
                bySplit[split] = bySplit[split].OrderBy(p => p.Item1).ToList();
        return (metrics, samples);
    }

    private static List<Dictionary<string, object?>> ReadJsonl(string path)
    {
        var list = new List<Dictionary<string, object?>>();
        foreach (var doc in Lines(path))
            using (doc)
                if (doc.RootElement.ValueKind == JsonValueKind.Object)
                    list.Add(doc.RootElement.EnumerateObject().ToDictionary(p => p.Name, p => Value(p.Value)));
        return list;
    }

    /// <summary>
    /// The JSON lines of a run's file (none when it is missing). A cut-off last line, as a run killed in mid-write leaves
    /// it, is passed over; a line that is not JSON before it is damage, reported with file and line, not skipped.
    /// </summary>
    private static IEnumerable<JsonDocument> Lines(string path)
    {
        if (!File.Exists(path)) yield break;
        var lines = File.ReadAllLines(path);
        int last = Array.FindLastIndex(lines, l => !string.IsNullOrWhiteSpace(l));
        for (int i = 0; i <= last; i++)
        {
            if (string.IsNullOrWhiteSpace(lines[i])) continue;
            JsonDocument doc;
            try { doc = JsonDocument.Parse(PythonJson.QuoteLiterals(lines[i])); }
            catch (JsonException) when (i == last) { yield break; }
            catch (JsonException e) { throw new UserInputException($"{path}:{i + 1}: not a JSON line ({e.Message}); only a cut-off last line is passed over."); }
            yield return doc;
        }
    }

    public static Dictionary<string, object?>? ReadObject(string path)
    {
        if (!File.Exists(path)) return null;
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllText(path));
            return doc.RootElement.ValueKind == JsonValueKind.Object ? doc.RootElement.EnumerateObject().ToDictionary(p => p.Name, p => Value(p.Value)) : null;
        }
        catch (JsonException) { return null; }
    }

    private static object? Value(JsonElement e) => e.ValueKind switch
    {
        JsonValueKind.String => e.GetString(),
        JsonValueKind.Number => e.GetDouble(),
        JsonValueKind.True => true,
        JsonValueKind.False => false,
        JsonValueKind.Null => null,
        _ => e.GetRawText(),
    };
}

/// <summary>The HTML pieces of the reports: the page with its inline style, escaped tables.</summary>
public static class Html
{
    public static string Esc(string? s) => WebUtility.HtmlEncode(s ?? "");

    public static string Page(string title, string body) => $$"""
        <!DOCTYPE html>
        <html lang="en"><head><meta charset="utf-8"><title>{{Esc(title)}}</title>
        <style>
        body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; padding: 0 1em; color: #222; }
        h1 { font-size: 1.5em; } h2 { font-size: 1.25em; margin-top: 1.6em; border-bottom: 1px solid #ddd; } h3 { font-size: 1.05em; }
        table { border-collapse: collapse; margin: .5em 0; font-size: .9em; }
        th, td { border: 1px solid #ddd; padding: .25em .55em; text-align: left; vertical-align: top; }
        th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
        .charts { display: flex; flex-wrap: wrap; gap: 8px; } svg.chart { border: 1px solid #eee; background: #fff; }
        .muted { color: #777; font-size: .9em; } pre { white-space: pre-wrap; } code, td.text { font-family: ui-monospace, monospace; }
        details { margin: .6em 0; } summary { cursor: pointer; font-weight: bold; }
        </style></head><body>
        {{body}}
        </body></html>

        """;

    public static string Cell(object? v) => v switch
    {
        null => "<td></td>",
        double d => $"<td class=\"num\">{Esc(FormatNumber(d))}</td>",
        float f => $"<td class=\"num\">{Esc(FormatNumber(f))}</td>",
        int or long => $"<td class=\"num\">{Esc(Convert.ToString(v, CultureInfo.InvariantCulture))}</td>",
        _ => $"<td class=\"text\">{Esc(Convert.ToString(v, CultureInfo.InvariantCulture))}</td>",
    };

    public static string FormatNumber(double d) => double.IsFinite(d) && Math.Abs(d - Math.Round(d)) < 1e-12 && Math.Abs(d) < 1e15
        ? d.ToString("0", CultureInfo.InvariantCulture)
        : d.ToString("G5", CultureInfo.InvariantCulture);

    public static string KeyValueTable(IEnumerable<KeyValuePair<string, object?>> pairs)
    {
        var sb = new StringBuilder("<table>");
        foreach (var (k, v) in pairs) sb.Append("<tr><th>").Append(Esc(k)).Append("</th>").Append(Cell(v)).Append("</tr>");
        return sb.Append("</table>").ToString();
    }

    /// <summary>Keys as rows, one column per named object; with <paramref name="differingOnly"/>, only the keys whose values differ.</summary>
    public static string ColumnsTable(IReadOnlyList<string> names, IReadOnlyList<Dictionary<string, object?>?> objects, bool differingOnly)
    {
        var keys = objects.SelectMany(o => o?.Keys ?? Enumerable.Empty<string>()).Distinct().ToList();
        var sb = new StringBuilder("<table><tr><th></th>");
        foreach (var n in names) sb.Append("<th>").Append(Esc(n)).Append("</th>");
        sb.Append("</tr>");
        foreach (var k in keys)
        {
            var values = objects.Select(o => o?.GetValueOrDefault(k)).ToList();
            if (differingOnly && values.Select(v => Convert.ToString(v, CultureInfo.InvariantCulture)).Distinct().Count() <= 1) continue;
            sb.Append("<tr><th>").Append(Esc(k)).Append("</th>");
            foreach (var v in values) sb.Append(Cell(v));
            sb.Append("</tr>");
        }
        return sb.Append("</table>").ToString();
    }

    public static string RecordTable(IReadOnlyList<IReadOnlyDictionary<string, object?>> records, int maxRows)
    {
        var columns = records.SelectMany(r => r.Keys).Distinct().ToList();
        var sb = new StringBuilder("<table><tr>");
        foreach (var c in columns) sb.Append("<th>").Append(Esc(c)).Append("</th>");
        sb.Append("</tr>");
        foreach (var r in records.Take(maxRows))
        {
            sb.Append("<tr>");
            foreach (var c in columns) sb.Append(Cell(r.GetValueOrDefault(c)));
            sb.Append("</tr>");
        }
        sb.Append("</table>");
        if (records.Count > maxRows) sb.Append($"<p class=\"muted\">{maxRows} of {records.Count} shown.</p>");
        return sb.ToString();
    }

    public static string RecordTable(IReadOnlyList<Dictionary<string, object?>> records, int maxRows)
        => RecordTable(records.Select(r => (IReadOnlyDictionary<string, object?>)r).ToList(), maxRows);
}
