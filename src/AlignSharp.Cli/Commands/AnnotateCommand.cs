using System.CommandLine;
using AlignSharp.Feedback;

namespace AlignSharp.Cli.Commands;

/// <summary>
/// `alignsharp annotate create|add-annotator|serve|export`: human-feedback collection. A project lives in one SQLite
/// file, <c>NAME.annotations.db</c> in the current directory unless <c>--db PATH</c> says otherwise.
/// </summary>
public static class AnnotateCommand
{
    public static Command Create()
    {
        var annotate = new Command("annotate", "Collect human rankings of model outputs: create a project, add annotators, serve the web app, export the rankings.");
        annotate.Subcommands.Add(AnnotateCreateCommand.Create());
        annotate.Subcommands.Add(AnnotateAddAnnotatorCommand.Create());
        annotate.Subcommands.Add(AnnotateServeCommand.Create());
        annotate.Subcommands.Add(AnnotateExportCommand.Create());
        return annotate;
    }

    public static Option<string> ProjectOption() => new("--project")
    {
        Description = "Project name (letters, digits, '.', '_', '-'); its file is NAME.annotations.db in the current directory unless --db is given.",
        Required = true,
    };

    public static Option<string?> DbOption() => new("--db")
    {
        Description = "The project's SQLite file (default: NAME.annotations.db in the current directory).",
    };

    public static string DatabasePath(string project, string? db)
    {
        AnnotationStore.ValidateProjectName(project);
        return db ?? AnnotationStore.DefaultPath(project);
    }

    public static AnnotationStore Open(string project, string? db) => AnnotationStore.Open(DatabasePath(project, db), project);

    /// <summary>The flags that name a project, for the hints the commands print.</summary>
    public static string ProjectFlags(string project, string? db) => db == null ? $"--project {project}" : $"--project {project} --db {db}";

    /// <summary>A sign-in link: the token rides in the fragment, which browsers do not send to the server.</summary>
    public static string SignInLink(string baseUrl, string token, bool admin) => $"{baseUrl.TrimEnd('/')}/{(admin ? "admin" : "")}#token={token}";
}
