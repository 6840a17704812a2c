using System.CommandLine;
using System.Text;
using AlignSharp.Feedback;
using AlignSharp.Models.Checkpoints;

namespace AlignSharp.Cli.Commands;

/// <summary>
/// `alignsharp annotate export --project NAME --format rankings|pairs --out FILE.jsonl`: the accepted rankings in the
/// formats the reward-model and DPO trainers read, with annotator ids (see <see cref="AnnotationExport"/>).
/// </summary>
public static class AnnotateExportCommand
{
    public static Command Create()
    {
        var project = AnnotateCommand.ProjectOption();
        var db = AnnotateCommand.DbOption();
        var format = new Option<string>("--format")
        {
            Description = "rankings: one {\"prompt\", \"completions\", \"ranking\", \"annotator\", ...} line per ranking; pairs: one {\"prompt\", \"chosen\", \"rejected\", \"annotator\", ...} line per strictly ordered pair (ties give none).",
            DefaultValueFactory = _ => AnnotationExport.Rankings,
        };
        format.AcceptOnlyFromAmong([.. AnnotationExport.Formats]);
        var output = new Option<string>("--out") { Description = "JSONL file to write (replaced whole, only once complete).", Required = true };
        var command = new Command("export", "Write the collected rankings as JSONL for the reward-model and DPO trainers.")
        {
            project, db, format, output,
        };
        command.SetAction(parse => CliErrors.Guard(() => Run(parse.GetValue(project)!, parse.GetValue(db), parse.GetValue(format)!, parse.GetValue(output)!)));
        return command;
    }

    static int Run(string projectName, string? db, string format, string outPath)
    {
        string dbPath = AnnotateCommand.DatabasePath(projectName, db);
        OutputPaths.RefuseInput("--out", outPath, ("the project's database", dbPath), ("its journal", dbPath + "-wal"), ("its shared memory", dbPath + "-shm"));
        using var store = AnnotateCommand.Open(projectName, db);
        var rankings = store.SubmittedRankings();
        int lines = 0;
        AtomicFile.Write(outPath, stream =>
        {
            using var writer = new StreamWriter(stream, new UTF8Encoding(false), leaveOpen: true) { NewLine = "\n" };
            lines = AnnotationExport.Write(format, projectName, rankings, writer);
        });
        int annotators = rankings.Select(r => r.AnnotatorId).Distinct().Count();
        int tasks = rankings.Select(r => r.TaskId).Distinct().Count();
        Console.WriteLine($"Wrote {lines} {(format == AnnotationExport.Pairs ? "pairs" : "rankings")} ({rankings.Count} rankings of {tasks} prompts by {annotators} annotators) to {outPath}.");
        return 0;
    }
}
