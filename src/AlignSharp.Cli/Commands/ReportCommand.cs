using System.CommandLine;
using AlignSharp.Models.Checkpoints;
using AlignSharp.Reports;

namespace AlignSharp.Cli.Commands;

/// <summary>`alignsharp report RUN_DIR`: a run directory as one self-contained HTML page.</summary>
public static class ReportCommand
{
    public static Command Create()
    {
        var runDir = new Argument<string>("RUN_DIR") { Description = "A trainer's run directory (metrics.jsonl, run_config.json, summary.json, samples)." };
        var output = new Option<string?>("--output") { Description = "HTML file to write. [default: RUN_DIR/report.html]" };
        var cmd = new Command("report", "Render a run directory as a self-contained HTML page: SVG plots of every metric over steps, the config, sample completions.")
        { runDir, output };
        cmd.SetAction(r => CliErrors.Guard(() =>
        {
            string dir = r.GetValue(runDir)!;
            string path = r.GetValue(output) ?? Path.Combine(dir, "report.html");
            AtomicFile.WriteText(path, RunReport.Render(dir));
            Console.WriteLine(path);
            return 0;
        }));
        return cmd;
    }
}
