using System.Globalization;
using System.Text.RegularExpressions;
using AlignSharp.Reports;

namespace AlignSharp.Tests.Demo;

/// <summary>Charts that fit their data, and `alignsharp report` over several runs.</summary>
public sealed class ReportOverlayTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("alignsharp-report-overlay-").FullName;
    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static List<string> Attr(string svg, string element, string cls, string attr) =>
        Regex.Matches(svg, $"<{element} class=\"{cls}\"[^>]*? {attr}=\"([^\"]*)\"").Select(m => m.Groups[1].Value).ToList();

    private static List<string> Labels(string svg, string cls) =>
        Regex.Matches(svg, $"<text class=\"{cls}\"[^>]*>([^<]*)</text>").Select(m => m.Groups[1].Value).ToList();

    [Fact]
    public void TheXAxisStartsAtTheFirstStepAndTheLegendIsBesideThePlot()
    {
        string svg = SvgChart.Line("loss", "step", "loss", [new ChartSeries("run a", [(10, 1), (20, 3), (50, 2)]), new ChartSeries("run b", [(10, 2), (50, 2.5)])]);
        double left = double.Parse(Attr(svg, "rect", "plot", "x")[0], CultureInfo.InvariantCulture);
        double right = left + double.Parse(Attr(svg, "rect", "plot", "width")[0], CultureInfo.InvariantCulture);
        var points = Attr(svg, "polyline", "series", "points").Select(p => p.Split(' ').Select(xy => double.Parse(xy.Split(',')[0], CultureInfo.InvariantCulture)).ToArray()).ToList();
        Assert.Equal(2, points.Count);
        Assert.All(points, p => { Assert.Equal(left, p[0]); Assert.Equal(right, p[^1]); });   // first step at the left edge, last at the right
        var xTicks = Labels(svg, "xtick").Select(t => double.Parse(t, CultureInfo.InvariantCulture)).ToList();
        Assert.All(xTicks, t => Assert.InRange(t, 10, 50));                                     // no tick before the first step
        var legendX = Regex.Matches(svg, "<text class=\"legend\" x=\"([^\"]*)\"").Select(m => double.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture)).ToList();
        Assert.Equal(2, legendX.Count);
        Assert.All(legendX, x => Assert.True(x > right, $"legend at x {x} overlaps the plot (right edge {right})"));
    }

    [Fact]
    public void TickLabelsHaveThePrecisionOfTheirSpacing()
    {
        string small = SvgChart.Line("lr", "step", "lr", [new ChartSeries("", [(1, 0.0012), (2, 0.0018)])]);
        var labels = Labels(small, "ytick");
        Assert.Equal(labels.Count, labels.Distinct().Count());
        Assert.Contains("0.0014", labels);                   // spacing 0.0002: four decimals
        Assert.All(labels, l => Assert.InRange(double.Parse(l, CultureInfo.InvariantCulture), 0.00117, 0.00183));

        var large = Labels(SvgChart.Line("tokens", "step", "n", [new ChartSeries("", [(1, 1000), (2, 1005)])]), "ytick");
        Assert.Contains("1002", large);                      // spacing 1: no decimals
        Assert.All(large, l => Assert.DoesNotContain(".", l));

        Assert.Equal("0.3", SvgChart.TickLabel(0.30000000000000004, 0.1));
        Assert.Equal("0.0", SvgChart.TickLabel(-1e-17, 0.1));   // no "-0.0"
        Assert.Equal("2.5e-5", SvgChart.TickLabel(2.5e-5, 5e-6));
    }

    private string Run(string name, double scale)
    {
        string dir = Path.Combine(_dir, name);
        Directory.CreateDirectory(dir);
        var lines = Enumerable.Range(1, 4).Select(s => string.Create(CultureInfo.InvariantCulture,
            $"{{\"step\":{s},\"time\":{s},\"split\":\"train\",\"loss\":{scale / s},\"objective/kl\":{scale * s},\"objective/scores\":{s + scale},\"objective/scores/reward_model\":{s + scale}," +
            $"\"objective/kl_coef\":0.05,\"policy/approxkl_avg\":{s * s},\"val/clipfrac_avg\":{1.0 / (s + scale)},\"loss/value_avg\":{scale - s},\"time/generation_s\":{s * 0.5 + scale}}}"));
        File.WriteAllLines(Path.Combine(dir, "metrics.jsonl"), lines);
        File.WriteAllText(Path.Combine(dir, "run_config.json"), $$"""{"trainer":"ppo","learning_rate":{{scale}},"seed":1}""");
        return dir;
    }

    [Fact]
    public void SeveralRunsAreOverlaidGroupedWithoutDuplicateOrConstantCharts()
    {
        string a = Run("a", 1), b = Run("b", 2);
        string html = RunReport.Render([a, b]);
        Assert.Contains("2 runs compared", html);

        // One chart per metric, one line per run.
        var kl = Regex.Match(html, "<svg[^>]*aria-label=\"objective/kl\".*?</svg>").Value;
        Assert.Equal(2, Regex.Matches(kl, "<polyline").Count);
        Assert.Contains(">a</text>", kl);
        Assert.Contains(">b</text>", kl);

        // Groups in order: objective, policy, value, training, timing; loss/value_avg with the value metrics.
        int At(string s) { int i = html.IndexOf(s, StringComparison.Ordinal); Assert.True(i >= 0, $"missing {s}"); return i; }
        int objective = At("class=\"group\">objective<"), policy = At("class=\"group\">policy<"), value = At("class=\"group\">value<"),
            training = At("class=\"group\">training<"), timing = At("class=\"group\">timing<");
        Assert.True(objective < policy && policy < value && value < training && training < timing);
        int valueLoss = At("aria-label=\"loss/value_avg\"");
        Assert.True(value < valueLoss && valueLoss < training);
        Assert.True(timing < At("aria-label=\"time/generation_s\""));

        // The duplicate is named, not drawn; the constant is a table row, not a chart.
        Assert.DoesNotContain("aria-label=\"objective/scores/reward_model\"", html);
        Assert.Contains("objective/scores/reward_model (same as objective/scores)", html);
        Assert.DoesNotContain("aria-label=\"objective/kl_coef\"", html);
        Assert.Matches("<td>objective/kl_coef</td><td class=\"num\">0.05</td>", html);

        // Only the differing options are compared.
        Assert.Contains("<th>learning_rate</th>", html);
        Assert.DoesNotContain("<th>seed</th>", html);
    }

    [Fact]
    public void ReportCommandTakesSeveralRuns()
    {
        string a = Run("a", 1), b = Run("b", 2);
        string output = Path.Combine(_dir, "both.html");
        var r = CliRunner.Run(["report", a, b, "--output", output]);
        Assert.True(r.ExitCode == 0, r.StdErr);
        Assert.Contains(output, r.StdOut);
        Assert.Contains("2 runs compared", File.ReadAllText(output));
        var bad = CliRunner.Run(["report", a, Path.Combine(_dir, "missing")]);
        Assert.NotEqual(0, bad.ExitCode);
        Assert.Contains("not a directory", bad.StdErr);
    }

    private static string Chart(string html, string metric) => Regex.Match(html, $"<svg[^>]*aria-label=\"{Regex.Escape(metric)}\".*?</svg>").Value;

    private static List<double[]> PolylineXs(string svg) => Attr(svg, "polyline", "series", "points")
        .Select(p => p.Split(' ').Select(xy => double.Parse(xy.Split(',')[0], CultureInfo.InvariantCulture)).ToArray()).ToList();

    [Fact]
    public void NonFiniteValuesBreakTheLineAndAreMarkedNeverDropped()
    {
        // As MetricsLog writes them: non-finite values as strings; "gone" is NaN at every step, one run's loss always NaN.
        string a = Path.Combine(_dir, "a"), b = Path.Combine(_dir, "b");
        Directory.CreateDirectory(a);
        Directory.CreateDirectory(b);
        File.WriteAllLines(Path.Combine(a, "metrics.jsonl"),
        [
            """{"step":1,"time":1,"split":"train","loss":2.0,"grad_norm":1.0,"gone":"NaN"}""",
            """{"step":2,"time":2,"split":"train","loss":1.5,"grad_norm":"Infinity","gone":"NaN"}""",
            """{"step":3,"time":3,"split":"train","loss":"NaN","grad_norm":2.0,"gone":"NaN"}""",
            """{"step":4,"time":4,"split":"train","loss":1.0,"grad_norm":3.0,"gone":"NaN"}""",
            """{"step":5,"time":5,"split":"train","loss":0.8,"grad_norm":NaN,"gone":"NaN"}""",   // Python's bare literal
        ]);
        File.WriteAllLines(Path.Combine(b, "metrics.jsonl"),
            Enumerable.Range(1, 5).Select(s => $$"""{"step":{{s}},"time":{{s}},"split":"train","loss":"NaN","grad_norm":{{s}},"gone":"NaN"}"""));

        string html = RunReport.Render([a, b]);
        string loss = Chart(html, "loss");
        // Run a's loss: two segments (steps 1–2 and 4–5), not one line joining step 2 to step 4.
        var xs = PolylineXs(loss);
        Assert.Equal(2, xs.Count);
        Assert.All(xs, x => Assert.Equal(2, x.Length));
        // The lost step is marked, and both runs are in the legend with their notes.
        Assert.Contains("a: NaN at step 3", loss);
        Assert.Contains(">NaN at step 3</text>", loss);
        Assert.Contains(">b</text>", loss);
        Assert.Contains(">NaN at every step</text>", loss);
        string grad = Chart(html, "grad_norm");
        Assert.Contains(">+∞, NaN at steps 2, 5</text>", grad);
        Assert.Contains("a: +∞ at step 2", grad);
        Assert.Contains("a: NaN at step 5", grad);
        // A metric non-finite everywhere is still charted (not tabled as a constant, not missing).
        string gone = Chart(html, "gone");
        Assert.NotEmpty(gone);
        Assert.Contains("no finite value", gone);
        Assert.DoesNotContain("<td>gone</td>", html);
        Assert.Contains("gone (b): NaN at every step", html);     // the list above the charts
        Assert.DoesNotContain("NaN\"", Regex.Replace(html, "<text[^>]*>|<title>", ""));   // no NaN coordinate
        Assert.DoesNotMatch("(x|y|cx|cy|x1|x2|y1|y2)=\"(NaN|-?Infinity|∞)", html);
    }

    [Fact]
    public void HugeValuesArePlacedInsideThePlot()
    {
        string svg = SvgChart.Line("huge", "step", "v", [new ChartSeries("", [(1, 1e308), (2, -1e308), (3, double.MaxValue), (4, -double.MaxValue)])]);
        var points = Attr(svg, "polyline", "series", "points").Single().Split(' ')
            .Select(xy => xy.Split(',').Select(v => double.Parse(v, CultureInfo.InvariantCulture)).ToArray()).ToList();
        Assert.Equal(4, points.Count);
        Assert.All(points, p => Assert.InRange(p[1], SvgChart.Top, SvgChart.Height - SvgChart.Bottom));
        Assert.True(points[0][1] < points[1][1]);                 // 1e308 above −1e308
        Assert.NotEmpty(Labels(svg, "ytick"));
        Assert.DoesNotContain("NaN", svg);
        Assert.DoesNotContain("Infinity", svg);
    }

    [Fact]
    public void PointsAreDrawnInStepOrder()
    {
        string run = Path.Combine(_dir, "shuffled");
        Directory.CreateDirectory(run);
        File.WriteAllLines(Path.Combine(run, "metrics.jsonl"), new[] { 3, 1, 4, 2 }.Select(s => $$"""{"step":{{s}},"split":"train","loss":{{s * s}}}"""));
        var (metrics, _) = RunReport.ReadMetrics(Path.Combine(run, "metrics.jsonl"));
        Assert.Equal([1.0, 2, 3, 4], metrics["loss"]["train"].Select(p => p.Item1));
        var xs = PolylineXs(Chart(RunReport.Render(run), "loss")).Single();
        Assert.Equal(xs.Order(), xs);
    }

    [Fact]
    public void LegendNamesStayDistinct()
    {
        static List<string> Shown(params string[] names) => SvgChart.LegendNames(names, 20).Select(l => string.Concat(l)).ToList();
        // The hunter's pair: the seed at the end tells them apart.
        var seeds = Shown("runA-with-a-very-long-name-seed0", "runA-with-a-very-long-name-seed1");
        Assert.Equal(2, seeds.Distinct().Count());
        Assert.All(seeds, s => Assert.True(s.Length <= 20, s));
        Assert.EndsWith("seed0", seeds[0]);
        // Differing in the middle only: the differing stretch is shown.
        var middle = Shown("experiment-lr1e-4-shared-tail-of-the-name", "experiment-lr3e-4-shared-tail-of-the-name");
        Assert.Equal(2, middle.Distinct().Count());
        Assert.Contains("lr1e-4", middle[0]);
        Assert.Contains("lr3e-4", middle[1]);
        // Short names and identical names are left alone.
        Assert.Equal(["a", "b train", "b train"], Shown("a", "b train", "b train"));
        // Every name stays distinct, however they collide.
        string[] many = [.. Enumerable.Range(0, 12).Select(i => $"prefix-{i % 3}-{new string('x', 30)}-{i % 4}")];
        Assert.Equal(many.Length, Shown(many).Distinct().Count());
        // In the chart: the full name is the tooltip, the legend shows the shortened one.
        string svg = SvgChart.Line("loss", "step", "loss", [new ChartSeries("runA-with-a-very-long-name-seed0", [(1, 1), (2, 2)]), new ChartSeries("runA-with-a-very-long-name-seed1", [(1, 2), (2, 1)])]);
        Assert.Contains("<title>runA-with-a-very-long-name-seed0</title>runA-with…name-seed0", svg);
    }
}
