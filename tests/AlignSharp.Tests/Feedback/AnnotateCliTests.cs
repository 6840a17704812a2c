using System.Diagnostics;
using System.Text.Json.Nodes;
using AlignSharp.Feedback;

namespace AlignSharp.Tests.Feedback;

/// <summary>`alignsharp annotate ...` run as a process, as a user runs it.</summary>
public class AnnotateCliTests
{
    private const string Completions = """
        {"prompt": "Say hi", "completions": ["hi", "hello", "hey", "yo"]}
        {"prompt": "Count to 3", "completions": ["1 2 3", "one two three", "3 2 1", "1, 2, 3"]}
        """;

    private static void AssertUserError(CliRunner.Result r, string message)
    {
        Assert.NotEqual(0, r.ExitCode);
        Assert.Contains(message, r.StdErr);
        Assert.DoesNotContain("   at ", r.StdErr);   // no stack trace
    }

    [Fact]
    public void CreateAddAnnotatorAndExportRoundTrip()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir.File("comp.jsonl"), Completions);
        var created = FeedbackCli.Run(dir.Path, "annotate", "create", "--project", "demo", "--import", "comp.jsonl", "--overlap", "2");
        Assert.True(created.ExitCode == 0, created.StdErr);
        Assert.Contains("2 prompts × 4 completions, overlap 2", created.StdOut);
        Assert.True(File.Exists(dir.File("demo.annotations.db")), "default file NAME.annotations.db in the current directory");
        string adminToken = FeedbackCli.Field(created.StdOut, "Admin token (annotator 'admin'):");
        Assert.Contains($"/admin#token={adminToken}", FeedbackCli.Field(created.StdOut, "Admin sign-in link:"));

        var added = FeedbackCli.Run(dir.Path, "annotate", "add-annotator", "--project", "demo", "--name", "alice", "--url", "http://127.0.0.1:9123");
        Assert.True(added.ExitCode == 0, added.StdErr);
        string token = FeedbackCli.Field(added.StdOut, "Token:");
        Assert.Equal($"http://127.0.0.1:9123/#token={token}", FeedbackCli.Field(added.StdOut, "Sign-in link:"));
        AssertUserError(FeedbackCli.Run(dir.Path, "annotate", "add-annotator", "--project", "demo", "--name", "alice"), "already exists");

        using (var store = AnnotationStore.Open(dir.File("demo.annotations.db"), "demo"))
        {
            Assert.True(store.Authenticate(adminToken)!.IsAdmin);
            var alice = store.Authenticate(token)!;
            Assert.Equal("alice", alice.Name);
            Assert.False(alice.IsAdmin);
            Assert.Equal(2, store.Project.Overlap);
            Assert.StartsWith("import:", store.Project.Source);
            while (store.NextTask(alice.Id) is { } task)
                store.Submit(alice.Id, new RankingSubmission(task.TaskId, [[3], [0, 1], [2]], [new CompletionFlag(2, "broken")]));
        }

        var rankings = FeedbackCli.Run(dir.Path, "annotate", "export", "--project", "demo", "--format", "rankings", "--out", "rankings.jsonl");
        Assert.True(rankings.ExitCode == 0, rankings.StdErr);
        var lines = File.ReadAllLines(dir.File("rankings.jsonl")).Select(l => JsonNode.Parse(l)!).ToList();
        Assert.Equal(2, lines.Count);
        Assert.Equal("Say hi", (string)lines[0]["prompt"]!);
        Assert.Equal(["hi", "hello", "hey", "yo"], lines[0]["completions"]!.AsArray().Select(c => (string)c!));
        Assert.Equal("[3,[0,1],2]", lines[0]["ranking"]!.ToJsonString());
        Assert.Equal("alice", (string)lines[0]["annotator"]!);
        Assert.Equal("demo", (string)lines[0]["project"]!);

        var pairs = FeedbackCli.Run(dir.Path, "annotate", "export", "--project", "demo", "--format", "pairs", "--out", "pairs.jsonl");
        Assert.True(pairs.ExitCode == 0, pairs.StdErr);
        var pairLines = File.ReadAllLines(dir.File("pairs.jsonl")).Select(l => JsonNode.Parse(l)!).ToList();
        Assert.Equal(2 * 5, pairLines.Count);   // 6 pairs per ranking less the tie
        Assert.Equal(("yo", "hi"), ((string)pairLines[0]["chosen"]!, (string)pairLines[0]["rejected"]!));
        Assert.All(pairLines, p => Assert.Equal("alice", (string)p["annotator"]!));
    }

    [Fact]
    public void MistakesAreReportedWithoutStackTraces()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir.File("comp.jsonl"), Completions);
        File.WriteAllText(dir.File("bad.jsonl"), "{\"prompt\": \"a\", \"completions\": [\"x\", \"y\"]}\n{\"prompt\": \"b\", \"completions\": [\"x\", 7]}\n");
        AssertUserError(FeedbackCli.Run(dir.Path, "annotate", "create", "--project", "bad", "--import", "bad.jsonl"), "bad.jsonl:2: field \"completions\"[1] must be a string");
        Assert.False(File.Exists(dir.File("bad.annotations.db")));
        AssertUserError(FeedbackCli.Run(dir.Path, "annotate", "create", "--project", "k", "--import", "comp.jsonl", "--k", "3"), "--k is 3");
        AssertUserError(FeedbackCli.Run(dir.Path, "annotate", "create", "--project", "m", "--model", "no-such-dir", "--prompts", "comp.jsonl"), "does not exist");
        AssertUserError(FeedbackCli.Run(dir.Path, "annotate", "create", "--project", "m", "--import", "comp.jsonl", "--model", "x"), "exactly one of --import");
        AssertUserError(FeedbackCli.Run(dir.Path, "annotate", "create", "--project", "../up", "--import", "comp.jsonl"), "not usable");
        AssertUserError(FeedbackCli.Run(dir.Path, "annotate", "add-annotator", "--project", "nothing", "--name", "x"), "not found");

        Assert.Equal(0, FeedbackCli.Run(dir.Path, "annotate", "create", "--project", "p", "--import", "comp.jsonl").ExitCode);
        AssertUserError(FeedbackCli.Run(dir.Path, "annotate", "create", "--project", "p", "--import", "comp.jsonl"), "already exists");
        AssertUserError(FeedbackCli.Run(dir.Path, "annotate", "export", "--project", "p", "--format", "xml", "--out", "x.jsonl"), "xml");
        Assert.False(File.Exists(dir.File("x.jsonl")));
    }

    [Fact]
    public void DbChoosesTheFile()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir.File("comp.jsonl"), Completions);
        Directory.CreateDirectory(dir.File("data"));
        Assert.Equal(0, FeedbackCli.Run(dir.Path, "annotate", "create", "--project", "q", "--db", "data/q.db", "--import", "comp.jsonl").ExitCode);
        Assert.True(File.Exists(dir.File("data/q.db")));
        Assert.False(File.Exists(dir.File("q.annotations.db")));
        var added = FeedbackCli.Run(dir.Path, "annotate", "add-annotator", "--project", "q", "--db", "data/q.db", "--name", "zoe", "--admin");
        Assert.Equal(0, added.ExitCode);
        Assert.Contains("/admin#token=", added.StdOut);
        AssertUserError(FeedbackCli.Run(dir.Path, "annotate", "add-annotator", "--project", "other", "--db", "data/q.db", "--name", "x"), "holds project 'q'");
    }

    /// <summary>Starts `annotate serve --port 0` and returns the process and the address it printed.</summary>
    private static async Task<(Process Process, Uri Address)> Serve(string directory, string project)
    {
        var process = Process.Start(FeedbackCli.StartInfo(directory, ["annotate", "serve", "--project", project, "--port", "0"]))!;
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        while (true)
        {
            string? line = await process.StandardOutput.ReadLineAsync(timeout.Token);
            if (line == null) throw new InvalidOperationException("serve exited: " + await process.StandardError.ReadToEndAsync());
            if (line.StartsWith("Serving project", StringComparison.Ordinal)) return (process, new Uri(line[(line.LastIndexOf(' ') + 1)..]));
        }
    }

    [Fact]
    public async Task KillingTheServerDuringSubmissionsLosesNoAcceptedRankingAndCorruptsNothing()
    {
        using var dir = new TempDir();
        string[] tokens;
        using (var store = Projects.Create(dir, prompts: 200, k: 4, overlap: 1, name: "kill"))
            tokens = Enumerable.Range(0, 16).Select(i => store.AddAnnotator($"a{i}").Token).ToArray();

        var (server, address) = await Serve(dir.Path, "kill");
        var accepted = new System.Collections.Concurrent.ConcurrentBag<(string Token, long Task, string Ranking)>();
        try
        {
            using var killAt = new CancellationTokenSource();
            var workers = tokens.Select(async token =>
            {
                using var client = new HttpClient { BaseAddress = address, Timeout = TimeSpan.FromSeconds(20) };
                client.DefaultRequestHeaders.Authorization = new("Bearer", token);
                try
                {
                    while (true)
                    {
                        var (_, task) = await Http.Get(client, "/api/tasks/next");
                        if (task?["task_id"] is null) return;
                        long id = (long)task["task_id"]!;
                        var order = Http.ShownIds(task);
                        var body = new JsonObject { ["task_id"] = id, ["ranking"] = new JsonArray(order.Select(i => (JsonNode?)i).ToArray()) };
                        var (status, _) = await Http.Post(client, "/api/rankings", body);
                        if (status != 200) return;
                        accepted.Add((token, id, RankingOrder.FromOrder(order, 4).ToString()));
                        if (accepted.Count >= 60) killAt.Cancel();
                    }
                }
                catch (HttpRequestException) { }          // the server died under us
                catch (TaskCanceledException) { }
            }).ToList();
            await Task.WhenAny(Task.Delay(TimeSpan.FromSeconds(30)), Task.Delay(Timeout.Infinite, killAt.Token).ContinueWith(_ => { }));
            server.Kill();                                   // SIGKILL: no shutdown code runs
            await Task.WhenAll(workers);
        }
        finally
        {
            if (!server.HasExited) server.Kill();
            server.WaitForExit();
            server.Dispose();
        }
        Assert.True(accepted.Count >= 60, $"only {accepted.Count} submissions were accepted before the kill");

        using (var store = AnnotationStore.Open(dir.File("kill.annotations.db"), "kill"))
        {
            Assert.Equal("ok", store.IntegrityCheck());
            var saved = store.SubmittedRankings().ToDictionary(r => (r.AnnotatorName, r.TaskId), r => r.Ranking.ToString());
            var names = tokens.Select((t, i) => (t, i)).ToDictionary(x => x.t, x => $"a{x.i}");
            foreach (var (token, task, ranking) in accepted)
                Assert.Equal(ranking, saved[(names[token], task)]);
            Assert.InRange(saved.Count, accepted.Count, accepted.Count + tokens.Length);   // at most the in-flight ones besides
        }

        // Restarted, the server shows every accepted ranking to its annotator; SIGTERM stops it cleanly.
        var (restarted, again) = await Serve(dir.Path, "kill");
        try
        {
            using var client = new HttpClient { BaseAddress = again };
            foreach (var group in accepted.GroupBy(a => a.Token))
            {
                client.DefaultRequestHeaders.Authorization = new("Bearer", group.Key);
                var (status, mine) = await Http.Get(client, "/api/rankings");
                Assert.Equal(200, status);
                var listed = mine!["rankings"]!.AsArray().Select(r => (long)r!["task_id"]!).ToHashSet();
                Assert.All(group, a => Assert.Contains(a.Task, listed));
            }
            using var term = Process.Start("kill", ["-TERM", restarted.Id.ToString()]);
            term.WaitForExit();
            Assert.True(restarted.WaitForExit(15_000), "serve did not stop on SIGTERM");
            Assert.Equal(0, restarted.ExitCode);
        }
        finally
        {
            if (!restarted.HasExited) restarted.Kill();
            restarted.Dispose();
        }
    }
}

/// <summary>annotate create --model: message prompts go through the model's chat template before sampling.</summary>
public sealed class AnnotateCreateTemplateTests
{
    [Fact]
    public void MessagePromptsAreRenderedWithTheModelsTemplate()
    {
        using var dir = new TempDir();
        string model = AlignSharp.Tests.Training.TinyModels.Create(dir.File("base"));
        File.WriteAllText(Path.Combine(model, "chat_template.jinja"),
            "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] | trim }}\n{% endfor %}{% if add_generation_prompt %}[assistant] {% endif %}");
        File.WriteAllText(dir.File("prompts.jsonl"),
            "{\"prompt\": [{\"role\": \"system\", \"content\": \"Be brief. \"}, {\"role\": \"user\", \"content\": \"hi\"}]}\n{\"prompt\": \"plain text\"}\n");
        var created = FeedbackCli.Run(dir.Path, "annotate", "create", "--project", "t", "--model", model, "--prompts", "prompts.jsonl", "--k", "2", "--max-new-tokens", "3");
        Assert.True(created.ExitCode == 0, created.StdErr);
        var prompts = new List<string>();
        using (var db = new Microsoft.Data.Sqlite.SqliteConnection($"Data Source={dir.File("t.annotations.db")};Mode=ReadOnly;Pooling=False"))
        {
            db.Open();
            using var query = db.CreateCommand();
            query.CommandText = "SELECT text FROM prompts ORDER BY text";
            using var reader = query.ExecuteReader();
            while (reader.Read()) prompts.Add(reader.GetString(0));
        }
        Assert.Equal(["[system] Be brief.\n[user] hi\n[assistant] ", "plain text"], prompts);

        // A template that is not there is an error naming it; --chat-template with --import is refused.
        var missing = FeedbackCli.Run(dir.Path, "annotate", "create", "--project", "u", "--model", model, "--prompts", "prompts.jsonl", "--chat-template", "nope.jinja");
        Assert.NotEqual(0, missing.ExitCode);
        Assert.Contains("nope.jinja", missing.StdErr);
        Assert.DoesNotContain("   at ", missing.StdErr);
    }
}
