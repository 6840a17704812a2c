using System.Globalization;
using System.Net;
using System.Text;
using System.Text.Json;

namespace AlignSharp.Reports;

/// <summary>
/// <c>alignsharp report RUN_DIR</c>: any trainer's run directory as one self-contained HTML page. It reads
/// <c>metrics.jsonl</c> (one object per logged step with <c>step</c>, <c>time</c>, <c>split</c> and numbers; lines with a
/// <c>samples</c> array are sample completions), <c>run_config.json</c>, <c>summary.json</c> and, when present,
/// <c>samples.jsonl</c>, and draws one inline SVG chart per metric over steps (one line per split). Everything is
/// HTML-escaped; the page loads nothing from elsewhere.
/// </summary>
public static class RunReport
{
    public static string Render(string runDir)
    {
        if (!Directory.Exists(runDir)) throw new UserInputException($"{runDir} is not a directory.");
        string name = Path.GetFileName(Path.GetFullPath(runDir).TrimEnd(Path.DirectorySeparatorChar));
        string trainer = ReadObject(Path.Combine(runDir, "run_config.json"))?.GetValueOrDefault("trainer") as string ?? "run";
        var body = Sections(runDir, 2);
        if (body.Length == 0)
            throw new UserInputException($"{runDir} has none of metrics.jsonl, run_config.json, summary.json or samples.jsonl; point the report at a run directory (the --out of a trainer).");
        return Html.Page($"{trainer}: {name}", $"<h1>{Html.Esc(trainer)} run: {Html.Esc(name)}</h1><p class=\"muted\">{Html.Esc(Path.GetFullPath(runDir))}</p>" + body);
    }

    /// <summary>The run's sections (summary, metric charts, sample completions, config) with headings at level <paramref name="h"/>.</summary>
    public static string Sections(string runDir, int h)
    {
        var sb = new StringBuilder();
        var summary = ReadObject(Path.Combine(runDir, "summary.json"));
        if (summary != null) sb.Append($"<h{h}>Summary</h{h}>").Append(Html.KeyValueTable(summary));

        var (metrics, samples) = ReadMetrics(Path.Combine(runDir, "metrics.jsonl"));
        samples.AddRange(ReadJsonl(Path.Combine(runDir, "samples.jsonl")));
        if (metrics.Count > 0)
        {
            sb.Append($"<h{h}>Metrics over steps</h{h}><div class=\"charts\">");
            foreach (var (metric, splits) in metrics)
                sb.Append(SvgChart.Line(metric, "step", metric, splits.Select(kv => new ChartSeries(kv.Key, kv.Value)).ToList(), markers: splits.Values.All(v => v.Count <= 40)));
            sb.Append("</div>");
        }
        if (samples.Count > 0) sb.Append($"<h{h}>Sample completions</h{h}>").Append(Html.RecordTable(samples, 60));
        var config = ReadObject(Path.Combine(runDir, "run_config.json"));
        if (config != null) sb.Append($"<h{h}>Configuration</h{h}>").Append(Html.KeyValueTable(config));
        return sb.ToString();
    }

    /// <summary>Metric name → split → (step, value) points, in file order; and sample records (with their step).</summary>
    public static (Dictionary<string, Dictionary<string, List<(double, double)>>> Metrics, List<Dictionary<string, object?>> Samples) ReadMetrics(string path)
    {
        var metrics = new Dictionary<string, Dictionary<string, List<(double, double)>>>();
        var samples = new List<Dictionary<string, object?>>();
        if (!File.Exists(path)) return (metrics, samples);
        foreach (var line in File.ReadLines(path))
        {
            if (string.IsNullOrWhiteSpace(line)) continue;
            JsonDocument doc;
            try { doc = JsonDocument.Parse(line); } catch (JsonException) { continue; }
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
                    if (p.Name is "step" or "split" or "time" || p.Value.ValueKind != JsonValueKind.Number) continue;
                    if (!metrics.TryGetValue(p.Name, out var bySplit)) metrics[p.Name] = bySplit = [];
                    if (!bySplit.TryGetValue(split, out var pts)) bySplit[split] = pts = [];
                    pts.Add((step, p.Value.GetDouble()));
                }
            }
        }
        return (metrics, samples);
    }

    private static List<Dictionary<string, object?>> ReadJsonl(string path)
    {
        var list = new List<Dictionary<string, object?>>();
        if (!File.Exists(path)) return list;
        foreach (var line in File.ReadLines(path))
        {
            if (string.IsNullOrWhiteSpace(line)) continue;
            try
            {
                using var doc = JsonDocument.Parse(line);
                if (doc.RootElement.ValueKind == JsonValueKind.Object)
                    list.Add(doc.RootElement.EnumerateObject().ToDictionary(p => p.Name, p => Value(p.Value)));
            }
            catch (JsonException) { }
        }
        return list;
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
