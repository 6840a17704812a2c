using AlignSharp.Demo;
using AlignSharp.Reports;

namespace AlignSharp.Tests.Demo;

public class ReportTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("alignsharp-report-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string FakeRun()
    {
        File.WriteAllLines(Path.Combine(_dir, "metrics.jsonl"),
        [
            """{"step":1,"time":0.1,"split":"train","loss":2.5,"objective/kl":0.0}""",
            """{"step":2,"time":0.2,"split":"train","loss":2.0,"objective/kl":0.1}""",
            """{"step":2,"time":0.3,"split":"eval","loss":2.2}""",
            """{"step":2,"split":"samples","samples":[{"prompt":"Q: <b>hi</b> & bye","completion":"<script>alert(1)</script>","score":0.5}]}""",
        ]);
        File.WriteAllText(Path.Combine(_dir, "run_config.json"), """{"trainer":"ppo","learning_rate":0.001,"out":"x<y"}""");
        File.WriteAllText(Path.Combine(_dir, "summary.json"), """{"steps":2,"final_model":"final"}""");
        return _dir;
    }

    [Fact]
    public void RunReportPlotsEveryMetricAndEscapesText()
    {
        string html = RunReport.Render(FakeRun());
        Assert.StartsWith("<!DOCTYPE html>", html);
        Assert.Equal(2, CountOf(html, "<svg"));                           // loss and objective/kl
        Assert.Contains("aria-label=\"loss\"", html);
        Assert.Contains("aria-label=\"objective/kl\"", html);
        Assert.Equal(2, CountOf(html, "<polyline"));                      // loss: train has 2 points; eval 1 point (marker only); kl 2 points
        Assert.Contains("&lt;script&gt;alert(1)&lt;/script&gt;", html);
        Assert.DoesNotContain("<script>", html);
        Assert.Contains("Q: &lt;b&gt;hi&lt;/b&gt; &amp; bye", html);
        Assert.Contains("x&lt;y", html);                                  // config
        Assert.Contains("final_model", html);                             // summary
        Assert.DoesNotContain("http://", html.Replace("http://www.w3.org/2000/svg", ""));   // self-contained
    }

    [Fact]
    public void ReportCommandWritesTheHtmlFile()
    {
        FakeRun();
        var r = CliRunner.Run(["report", _dir]);
        Assert.True(r.ExitCode == 0, r.StdErr);
        Assert.Contains("<svg", File.ReadAllText(Path.Combine(_dir, "report.html")));
        var bad = CliRunner.Run(["report", Path.Combine(_dir, "missing")]);
        Assert.NotEqual(0, bad.ExitCode);
        Assert.Contains("not a directory", bad.StdErr);
        // Another command's --out is named as the unknown option it is here, and nothing is written.
        var flag = CliRunner.Run(["report", _dir, "--out", Path.Combine(_dir, "elsewhere")]);
        Assert.Equal(2, flag.ExitCode);
        Assert.Contains("unknown option --out", flag.StdErr);
        Assert.Contains("--output", flag.StdErr);
        Assert.False(Directory.Exists(Path.Combine(_dir, "elsewhere")));
    }

    [Fact]
    public void DemoWithAnUnusableRunDirectoryFailsWithoutAStackTrace()
    {
        string file = Path.Combine(_dir, "a-file");
        File.WriteAllText(file, "");
        var r = CliRunner.Run(["demo", "--quick", "--out", file]);
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("--out", r.StdErr);
        Assert.Contains(file, r.StdErr);
        Assert.DoesNotContain("   at ", r.StdErr);

        // Below a file, the directory cannot be created: the file-system error is reported, not thrown.
        var below = CliRunner.Run(["demo", "--quick", "--out", Path.Combine(file, "run")]);
        Assert.Equal(1, below.ExitCode);
        Assert.StartsWith("error: ", below.StdErr.TrimStart());
        Assert.DoesNotContain("   at ", below.StdErr);
    }

    [Fact]
    public void DemoReportHasTheTableTheCurveAndTheCalibration()
    {
        var responses = new[] { new EvaluatedResponse(new WorldPrompt(QuestionKind.Color, "sky", 0), " <i>sure!</i>", -3, 0.1, 0, false) };
        PolicyMetrics M(double gold) => new(gold, 0.1, 0.7, 0.5, 1.2, 0.95, 0.3, responses);
        var results = new DemoResults("quick", 0,
            new Dictionary<string, PolicyMetrics> { ["sft"] = M(0), ["best_of_n"] = M(1), ["ppo"] = M(2), ["dpo"] = M(1.5), ["ppo_beta0"] = M(-1) },
            new RewardModelReport(100, 0.8, 0.85, 0.97, [new CalibrationBin(0.5, 0.6, 10, 0.55, 0.6, 0.58), new CalibrationBin(0.9, 1.0, 5, 0.95, 0.9, 0.9)]),
            new Dictionary<string, IReadOnlyList<CurvePoint>>
            {
                ["ppo"] = [new CurvePoint(0, 0, 0, 0), new CurvePoint(5, 1, 1, 1)],
                ["ppo_beta0"] = [new CurvePoint(0, 0, 0, 0), new CurvePoint(5, 8, -1, 3)],
            },
            new Dictionary<string, double> { ["sft"] = 1.5 }, 300, []);
        string html = DemoReport.Render(_dir, results);
        Assert.Contains("aria-label=\"Reward model calibration\"", html);
        Assert.Contains("aria-label=\"Gold reward versus KL from SFT (PPO checkpoints)\"", html);
        foreach (var name in DemoExperiment.PolicyOrder) Assert.Contains($"<th>{name}</th>", html);
        Assert.Contains("&lt;i&gt;sure!&lt;/i&gt;", html);
        Assert.DoesNotContain("<i>sure!", html);
    }

    private static int CountOf(string s, string what)
    {
        int n = 0;
        for (int i = s.IndexOf(what, StringComparison.Ordinal); i >= 0; i = s.IndexOf(what, i + 1, StringComparison.Ordinal)) n++;
        return n;
    }
}
