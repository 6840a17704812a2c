using System.CommandLine;
using System.Net;
using System.Runtime.InteropServices;
using AlignSharp.Web;

namespace AlignSharp.Cli.Commands;

/// <summary>
/// `alignsharp annotate serve --project NAME [--port 8080] [--host 127.0.0.1] [--overlap N]`: runs the annotation web
/// app until Ctrl+C or SIGTERM. Every accepted submission is already committed, so stopping (or killing) it loses nothing.
/// </summary>
public static class AnnotateServeCommand
{
    public static Command Create()
    {
        var project = AnnotateCommand.ProjectOption();
        var db = AnnotateCommand.DbOption();
        var port = new Option<int>("--port") { Description = "TCP port; 0 picks a free port and prints it.", DefaultValueFactory = _ => 8080 };
        var host = new Option<string>("--host")
        {
            Description = "Address to listen on; 127.0.0.1 is this machine only, 0.0.0.0 opens it to the network over plain HTTP; put HTTPS in front.",
            DefaultValueFactory = _ => "127.0.0.1",
        };
        var overlap = new Option<int?>("--overlap") { Description = "Change how many annotators rank each prompt (kept in the project; default: as set by create)." };
        var maxBody = new Option<int>("--max-request-kb") { Description = "Largest request body in KiB; larger requests get 413.", DefaultValueFactory = _ => 64 };
        var command = new Command("serve", "Serve the annotation web app and its JSON API (/api/) for a project.")
        {
            project, db, port, host, overlap, maxBody,
        };
        command.SetAction(parse => CliErrors.Guard(() => Run(
            parse.GetValue(project)!, parse.GetValue(db), parse.GetValue(host)!, parse.GetValue(port), parse.GetValue(overlap), parse.GetValue(maxBody))));
        return command;
    }

    static int Run(string projectName, string? db, string host, int port, int? overlap, int maxBodyKb)
    {
        using var store = AnnotateCommand.Open(projectName, db);
        if (overlap is int o) store.SetOverlap(o);
        var options = new AnnotationServerOptions { Host = host, Port = port, MaxRequestBodyBytes = (long)maxBodyKb * 1024 };

        using var stop = new CancellationTokenSource();
        Console.CancelKeyPress += (_, e) => { e.Cancel = true; stop.Cancel(); };
        using var terminate = PosixSignalRegistration.Create(PosixSignal.SIGTERM, context => { context.Cancel = true; stop.Cancel(); });

        var server = AnnotationServer.StartAsync(store, options).GetAwaiter().GetResult();
        try
        {
            var info = store.Project;
            Console.WriteLine($"Serving project {info.Name} ({info.Prompts} prompts, overlap {info.Overlap}) at {server.BaseAddress}");
            Console.WriteLine($"Annotators sign in with the link from: alignsharp annotate add-annotator {AnnotateCommand.ProjectFlags(projectName, db)} --name WHO --url {server.BaseAddress.ToString().TrimEnd('/')}");
            if (!IPAddress.IsLoopback(IPAddress.TryParse(host, out var ip) ? ip : IPAddress.Loopback))
                Console.Error.WriteLine("warning: listening beyond this machine over plain HTTP: tokens and rankings travel unencrypted; put an HTTPS proxy in front.");
            Console.WriteLine("Press Ctrl+C to stop.");
            Console.Out.Flush();
            stop.Token.WaitHandle.WaitOne();
        }
        finally
        {
            server.DisposeAsync().AsTask().GetAwaiter().GetResult();
        }
        Console.WriteLine("Stopped.");
        return 0;
    }
}
