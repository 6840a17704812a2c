using System.CommandLine;
using AlignSharp.Models.Checkpoints;
using AlignSharp.Reports;

namespace AlignSharp.Cli.Commands;

/// <summary>`alignsharp report RUN_DIR [RUN_DIR …]`: run directories as one self-contained HTML page (several runs overlaid).</summary>
public static class ReportCommand
{
    public static Command Create()
    {
        var runDir = new Argument<string[]>("RUN_DIR") { Description = "Trainers' run directories (metrics.jsonl, run_config.json, summary.json, samples); several are overlaid.", Arity = ArgumentArity.OneOrMore };
        var output = new Option<string?>("--output") { Description = "HTML file to write. [default: RUN_DIR/report.html for one run, report.html in the current directory for several]" };
        var cmd = new Command("report", "Render run directories as a self-contained HTML page: SVG plots of every metric over steps (several runs overlaid, grouped by objective, policy, value, training and timing), the configs, sample completions.")
        { runDir, output };
        cmd.SetAction(r => CliErrors.Guard(() =>
        {
            string[] dirs = r.GetValue(runDir)!;
            // An unknown flag reaches the arguments as a run directory; name it as the flag it is.
            if (dirs.FirstOrDefault(d => d.StartsWith('-') && !Directory.Exists(d)) is { } flag)
                throw new UserInputException($"report: unknown option {flag}; its one option is --output FILE.html (the page to write).");
            string path = r.GetValue(output) ?? (dirs.Length == 1 ? Path.Combine(dirs[0], "report.html") : "report.html");
            // A page replaces an earlier page, never anything else: a run's metrics.jsonl, a model's config.json, data.
            if (File.Exists(path) && !path.EndsWith(".html", StringComparison.OrdinalIgnoreCase) && !path.EndsWith(".htm", StringComparison.OrdinalIgnoreCase))
                throw new UserInputException($"--output {path} exists and is not an HTML page; the report replaces only an earlier page (*.html). Choose another file.");
            AtomicFile.WriteText(path, RunReport.Render(dirs));
            Console.WriteLine(path);
            return 0;
        }));
        return cmd;
    }
}
