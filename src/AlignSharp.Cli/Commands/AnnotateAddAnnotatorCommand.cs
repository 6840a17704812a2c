using System.CommandLine;

namespace AlignSharp.Cli.Commands;

/// <summary>`alignsharp annotate add-annotator --project NAME --name WHO [--admin]`: prints the new token and sign-in link (shown once).</summary>
public static class AnnotateAddAnnotatorCommand
{
    public static Command Create()
    {
        var project = AnnotateCommand.ProjectOption();
        var db = AnnotateCommand.DbOption();
        var name = new Option<string>("--name") { Description = "The annotator's name, unique in the project (it goes into the export).", Required = true };
        var admin = new Option<bool>("--admin") { Description = "Also allow the admin view (progress, agreement, export) with this token." };
        var url = new Option<string>("--url")
        {
            Description = "Address the server will be reached at, for the sign-in link.",
            DefaultValueFactory = _ => "http://127.0.0.1:8080",
        };
        var command = new Command("add-annotator", "Add an annotator to a project and print their access token and sign-in link.")
        {
            project, db, name, admin, url,
        };
        command.SetAction(parse => CliErrors.Guard(() => Run(
            parse.GetValue(project)!, parse.GetValue(db), parse.GetValue(name)!, parse.GetValue(admin), parse.GetValue(url)!)));
        return command;
    }

    static int Run(string projectName, string? db, string name, bool admin, string url)
    {
        if (!Uri.TryCreate(url, UriKind.Absolute, out var uri) || (uri.Scheme != "http" && uri.Scheme != "https"))
            throw new CliException($"--url must be an http:// or https:// address, got '{url}'.");
        using var store = AnnotateCommand.Open(projectName, db);
        var (annotator, token) = store.AddAnnotator(name, admin);
        Console.WriteLine($"Added {(admin ? "admin" : "annotator")} {annotator.Name} (id {annotator.Id}) to project {projectName}.");
        Console.WriteLine($"Token: {token}");
        Console.WriteLine($"Sign-in link: {AnnotateCommand.SignInLink(url, token, admin)}");
        Console.WriteLine("The token is shown only now; the project stores only its hash.");
        return 0;
    }
}
