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
}
