using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using AlignSharp.Feedback;

namespace AlignSharp.Tests.Feedback;

/// <summary>The JSON API against the real server on a free loopback port.</summary>
public class AnnotationApiTests
{
    private static JsonObject Ranking(long task, params int[] order) =>
        new() { ["task_id"] = task, ["ranking"] = new JsonArray(order.Select(i => (JsonNode?)i).ToArray()) };

    [Fact]
    public async Task EveryApiRouteNeedsAValidToken()
    {
        using var dir = new TempDir();
        using var store = Projects.Create(dir);
        store.AddAnnotator("a");
        await using var server = await RunningServer.StartAsync(store);
        foreach (var client in new[] { server.Client(), server.Client("wrong-token") })
        {
            foreach (var path in new[] { "/api/me", "/api/tasks/next", "/api/tasks/1", "/api/rankings", "/api/admin/progress", "/api/admin/agreement", "/api/admin/export" })
            {
                using var response = await client.GetAsync(path);
                Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
                Assert.Equal("Bearer", response.Headers.WwwAuthenticate.Single().Scheme);
            }
            var (status, body) = await Http.Post(client, "/api/rankings", Ranking(1, 0, 1, 2, 3));
            Assert.Equal(401, status);
            Assert.Contains("Authorization: Bearer", (string)body!["error"]!);
        }
        Assert.Empty(store.TasksOf(1));
        Assert.Empty(store.SubmittedRankings());

        // A scheme other than Bearer is not accepted either.
        var basic = server.Client();
        basic.DefaultRequestHeaders.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Basic", "YTpi");
        Assert.Equal(401, (await Http.Get(basic, "/api/me")).Status);
    }

    [Fact]
    public async Task AnnotatorRanksTasksAndBadSubmissionsGet400()
    {
        using var dir = new TempDir();
        using var store = Projects.Create(dir, prompts: 2, k: 4);
        var (_, token) = store.AddAnnotator("alice");
        await using var server = await RunningServer.StartAsync(store);
        var client = server.Client(token);

        var (status, me) = await Http.Get(client, "/api/me");
        Assert.Equal(200, status);
        Assert.Equal("alice", (string)me!["annotator"]!);
        Assert.False((bool)me["admin"]!);
        Assert.Equal("t", (string)me["project"]!);

        var (_, task) = await Http.Get(client, "/api/tasks/next");
        long id = (long)task!["task_id"]!;
        var shown = Http.ShownIds(task);
        Assert.Equal([0, 1, 2, 3], shown.Order());
        Assert.Equal(0, (int)task["progress"]!["done"]!);
        Assert.Equal(2, (int)task["progress"]!["total"]!);

        // Each bad body: 400 with a message, and the task is still open.
        string[] bad =
        [
            $"{{\"task_id\": {id}, \"ranking\": [0, 1, 2]}}",
            $"{{\"task_id\": {id}, \"ranking\": [0, 1, 2, 2]}}",
            $"{{\"task_id\": {id}, \"ranking\": [0, 1, 2, 9]}}",
            $"{{\"task_id\": {id}, \"ranking\": \"0,1,2,3\"}}",
            $"{{\"task_id\": {id}}}",
            $"{{\"task_id\": 12345, \"ranking\": [0, 1, 2, 3]}}",
            $"{{\"task_id\": \"{id}\", \"ranking\": [0, 1, 2, 3]}}",
            $"{{\"task_id\": {id}, \"ranking\": [0, 1, 2, 3], \"flags\": [{{\"completion_id\": 0, \"flag\": \"meh\"}}]}}",
            $"{{\"task_id\": {id}, \"ranking\": [0, 1, 2, 3], \"flags\": \"unsafe\"}}",
            $"{{\"task_id\": {id}, \"ranking\": [0, 1, 2, 3], \"flags\": [{{\"completion_id\": 0, \"flag\": \"\\ud800\"}}]}}",
            $"{{\"task_id\": {id}, \"ranking\": [0, 1, 2, 3], \"skip\": \"yes\"}}",
            $"{{\"task_id\": {id}, \"ranking\": [0, 1, 2, 3], \"skip\": true}}",
            $"{{\"task_id\": {id}, \"ranking\": [0, 1, 2, 3], \"flgas\": []}}",
            $"{{\"task_id\": {id}, \"ranking\": [0, 1, 2, 3], \"flags\": [{{\"completion_id\": 0, \"flag\": \"unsafe\", \"x\": 1}}]}}",
            "[1, 2, 3]",
            "{\"task_id\": ",
            "",
        ];
        foreach (var body in bad)
        {
            var (s, error) = await Http.Post(client, "/api/rankings", body);
            Assert.True(s == 400, $"{body} -> {s}");
            Assert.False(string.IsNullOrWhiteSpace((string?)error?["error"]), body);
        }
        Assert.Equal("assigned", (string)(await Http.Get(client, $"/api/tasks/{id}")).Body!["status"]!);
        Assert.Empty(store.SubmittedRankings());

        // A good submission with a tie and a flag.
        var good = new JsonObject
        {
            ["task_id"] = id,
            ["ranking"] = JsonNode.Parse($"[{shown[2]}, [{shown[0]}, {shown[3]}], {shown[1]}]"),
            ["flags"] = JsonNode.Parse($"[{{\"completion_id\": {shown[1]}, \"flag\": \"unsafe\"}}]"),
        };
        var (ok, result) = await Http.Post(client, "/api/rankings", good);
        Assert.Equal(200, ok);
        Assert.Equal("submitted", (string)result!["status"]!);
        Assert.Equal(1, (int)result["progress"]!["done"]!);

        // Submitting again is refused unless it says it is an edit.
        Assert.Equal(400, (await Http.Post(client, "/api/rankings", good)).Status);
        good["edit"] = true;
        good["ranking"] = JsonNode.Parse($"[{shown[0]}, {shown[1]}, {shown[2]}, {shown[3]}]");
        var (edited, editResult) = await Http.Post(client, "/api/rankings", good);
        Assert.Equal(200, edited);
        Assert.Equal(2, (int)editResult!["revision"]!);
        var saved = Assert.Single(store.SubmittedRankings());
        Assert.Equal($"[{shown[0]},{shown[1]},{shown[2]},{shown[3]}]", saved.Ranking.ToString());
        Assert.Equal([new CompletionFlag(shown[1], "unsafe")], saved.Flags);

        // The caller's answers and a task by id.
        var (_, mine) = await Http.Get(client, "/api/rankings");
        Assert.Equal(id, (long)mine!["rankings"]![0]!["task_id"]!);
        var (_, again) = await Http.Get(client, $"/api/tasks/{id}");
        Assert.Equal("submitted", (string)again!["status"]!);
        Assert.Equal(shown, Http.ShownIds(again));

        // Skip the second task; then nothing is left.
        var (_, second) = await Http.Get(client, "/api/tasks/next");
        long id2 = (long)second!["task_id"]!;
        Assert.NotEqual(id, id2);
        var (skipStatus, skip) = await Http.Post(client, "/api/rankings", $"{{\"task_id\": {id2}, \"skip\": true}}");
        Assert.Equal(200, skipStatus);
        Assert.Equal("skipped", (string)skip!["status"]!);
        var (_, none) = await Http.Get(client, "/api/tasks/next");
        Assert.Null(none!["task_id"]);
        Assert.Equal(2, (int)none["progress"]!["done"]!);
        Assert.Equal(2, (int)none["progress"]!["total"]!);
    }

    [Fact]
    public async Task AnnotatorsSeeAndChangeOnlyTheirOwnWork()
    {
        using var dir = new TempDir();
        using var store = Projects.Create(dir, prompts: 3, k: 3, overlap: 2);
        var (_, aliceToken) = store.AddAnnotator("alice");
        var (_, bobToken) = store.AddAnnotator("bob");
        await using var server = await RunningServer.StartAsync(store);
        var alice = server.Client(aliceToken);
        var bob = server.Client(bobToken);

        var (_, aTask) = await Http.Get(alice, "/api/tasks/next");
        long aId = (long)aTask!["task_id"]!;
        Assert.Equal(200, (await Http.Post(alice, "/api/rankings", Ranking(aId, 0, 1, 2))).Status);

        // Bob cannot read or answer Alice's task, and cannot edit her ranking.
        Assert.Equal(404, (await Http.Get(bob, $"/api/tasks/{aId}")).Status);
        var (status, error) = await Http.Post(bob, "/api/rankings", new JsonObject { ["task_id"] = aId, ["ranking"] = new JsonArray(2, 1, 0), ["edit"] = true });
        Assert.Equal(400, status);
        Assert.Contains("not one of your tasks", (string)error!["error"]!);
        var (_, bobs) = await Http.Get(bob, "/api/rankings");
        Assert.Empty(bobs!["rankings"]!.AsArray());
        Assert.Equal("[0,1,2]", Assert.Single(store.SubmittedRankings()).Ranking.ToString());

        // Not an admin: the admin routes are forbidden.
        Assert.Equal(403, (await Http.Get(bob, "/api/admin/progress")).Status);
        Assert.Equal(403, (await Http.Get(bob, "/api/admin/agreement")).Status);

        // Overlap 2: Bob gets the prompt Alice ranked first (closest to its overlap), with his own order.
        var (_, bTask) = await Http.Get(bob, "/api/tasks/next");
        Assert.Equal(aId, (long)bTask!["task_id"]!);
        Assert.Equal(200, (await Http.Post(bob, "/api/rankings", Ranking(aId, 0, 2, 1))).Status);
        Assert.Equal(2, store.SubmittedRankings().Count);
    }

    [Fact]
    public async Task AdminSeesProgressAgreementAndExport()
    {
        using var dir = new TempDir();
        using var store = Projects.Create(dir, prompts: 2, k: 3, overlap: 2);
        var (_, adminToken) = store.AddAnnotator("boss", isAdmin: true);
        var tokens = new[] { store.AddAnnotator("alice").Token, store.AddAnnotator("bob").Token };
        await using var server = await RunningServer.StartAsync(store);
        var rankings = new[] { new[] { 0, 1, 2 }, new[] { 1, 0, 2 } };
        for (int who = 0; who < 2; who++)
        {
            var client = server.Client(tokens[who]);
            for (int n = 0; n < 2; n++)
            {
                var (_, task) = await Http.Get(client, "/api/tasks/next");
                Assert.Equal(200, (await Http.Post(client, "/api/rankings", Ranking((long)task!["task_id"]!, rankings[who]))).Status);
            }
        }
        var admin = server.Client(adminToken);
        var (s1, progress) = await Http.Get(admin, "/api/admin/progress");
        Assert.Equal(200, s1);
        Assert.Equal(4, (int)progress!["ranked"]!);
        Assert.Equal(4, (int)progress["target"]!);
        Assert.Equal(2, (int)progress["prompts_complete"]!);
        var alice = progress["annotators"]!.AsArray().Single(a => (string)a!["name"]! == "alice")!;
        Assert.Equal(2, (int)alice["submitted"]!);

        var (s2, agreement) = await Http.Get(admin, "/api/admin/agreement");
        Assert.Equal(200, s2);
        // Both tasks: [0,1,2] vs [1,0,2]: tau-b 1/3, pairwise agreement 2/3.
        Assert.Equal(2, (int)agreement!["overall"]!["tasks"]!);
        Assert.Equal(1.0 / 3, (double)agreement["overall"]!["kendall_tau_b"]!, 9);
        Assert.Equal(2.0 / 3, (double)agreement["overall"]!["pairwise_agreement"]!, 9);
        var pair = agreement["pairs"]!.AsArray().Single()!;
        Assert.Equal(["alice", "bob"], pair["annotators"]!.AsArray().Select(a => (string)a!["name"]!));

        using var export = await admin.GetAsync("/api/admin/export?format=pairs");
        Assert.Equal(HttpStatusCode.OK, export.StatusCode);
        var lines = (await export.Content.ReadAsStringAsync()).Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(12, lines.Length);   // 4 rankings x 3 pairs
        Assert.Equal(400, (await Http.Get(admin, "/api/admin/export?format=xml")).Status);
    }

    [Fact]
    public async Task FiftyConcurrentSubmissionsAreAllKeptOnce()
    {
        using var dir = new TempDir();
        using var store = Projects.Create(dir, prompts: 50, k: 4, overlap: 1);
        var tokens = Enumerable.Range(0, 50).Select(i => store.AddAnnotator($"a{i}").Token).ToArray();
        await using var server = await RunningServer.StartAsync(store);
        var clients = tokens.Select(t => server.Client(t)).ToArray();

        // 50 annotators ask for a task at once: 50 different prompts.
        var tasks = await Task.WhenAll(clients.Select(c => Http.Get(c, "/api/tasks/next")));
        var ids = tasks.Select(t => (long)t.Body!["task_id"]!).ToArray();
        Assert.Equal(50, ids.Distinct().Count());

        // ... and submit at once.
        var orders = tasks.Select(t => Http.ShownIds(t.Body!).Reverse().ToArray()).ToArray();
        var start = new TaskCompletionSource();
        var posts = Enumerable.Range(0, 50).Select(async i =>
        {
            await start.Task;
            return await Http.Post(clients[i], "/api/rankings", Ranking(ids[i], orders[i]));
        }).ToArray();
        start.SetResult();
        var results = await Task.WhenAll(posts);
        Assert.All(results, r => Assert.Equal(200, r.Status));

        var saved = store.SubmittedRankings();
        Assert.Equal(50, saved.Count);
        for (int i = 0; i < 50; i++)
        {
            var r = saved.Single(x => x.AnnotatorName == $"a{i}");
            Assert.Equal(ids[i], r.TaskId);
            Assert.Equal(RankingOrder.FromOrder(orders[i], 4).ToString(), r.Ranking.ToString());
            Assert.Equal(1, r.Revision);
        }

        // The same submission sent 10 times at once is accepted exactly once.
        var (_, next) = await Http.Get(clients[0], "/api/tasks/next");
        Assert.Null(next!["task_id"]);   // overlap 1, every prompt taken
        using var extra = Projects.Create(dir, prompts: 1, k: 2, name: "dup");
        var (_, dupToken) = extra.AddAnnotator("d");
        await using var dupServer = await RunningServer.StartAsync(extra);
        var dupClient = dupServer.Client(dupToken);
        var (_, dupTask) = await Http.Get(dupClient, "/api/tasks/next");
        var same = await Task.WhenAll(Enumerable.Range(0, 10).Select(_ => Http.Post(dupClient, "/api/rankings", Ranking((long)dupTask!["task_id"]!, 1, 0))));
        Assert.Equal(1, same.Count(r => r.Status == 200));
        Assert.Equal(9, same.Count(r => r.Status == 400));
        Assert.Equal(1, Assert.Single(extra.SubmittedRankings()).Revision);
    }

    [Fact]
    public async Task ConcurrentAnnotatorsReachTheOverlapExactly()
    {
        using var dir = new TempDir();
        using var store = Projects.Create(dir, prompts: 10, k: 3, overlap: 3);
        var tokens = Enumerable.Range(0, 8).Select(i => store.AddAnnotator($"a{i}").Token).ToArray();
        await using var server = await RunningServer.StartAsync(store);
        var got = await Task.WhenAll(tokens.Select(async token =>
        {
            var client = server.Client(token);
            var mine = new List<long>();
            for (int guard = 0; guard < 20; guard++)
            {
                var (_, task) = await Http.Get(client, "/api/tasks/next");
                if (task!["task_id"] is null) break;
                long id = (long)task["task_id"]!;
                mine.Add(id);
                Assert.Equal(200, (await Http.Post(client, "/api/rankings", Ranking(id, 2, 1, 0))).Status);
            }
            return mine;
        }));
        Assert.All(got, mine => Assert.Equal(mine.Count, mine.Distinct().Count()));
        Assert.Equal(30, got.Sum(m => m.Count));
        var saved = store.SubmittedRankings();
        Assert.Equal(30, saved.Count);
        Assert.All(saved.GroupBy(r => r.TaskId), g => Assert.Equal(3, g.Count()));
    }

    [Fact]
    public async Task RankingsSurviveARestart()
    {
        using var dir = new TempDir();
        string token;
        long id;
        using (var store = Projects.Create(dir, prompts: 2, k: 3))
        {
            token = store.AddAnnotator("a").Token;
            await using var server = await RunningServer.StartAsync(store);
            var client = server.Client(token);
            var (_, task) = await Http.Get(client, "/api/tasks/next");
            id = (long)task!["task_id"]!;
            Assert.Equal(200, (await Http.Post(client, "/api/rankings", Ranking(id, 2, 0, 1))).Status);
        }
        using (var store = AnnotationStore.Open(dir.File("t.annotations.db"), "t"))
        {
            await using var server = await RunningServer.StartAsync(store);
            var client = server.Client(token);
            var (status, mine) = await Http.Get(client, "/api/rankings");
            Assert.Equal(200, status);
            var only = Assert.Single(mine!["rankings"]!.AsArray())!;
            Assert.Equal(id, (long)only["task_id"]!);
            Assert.Equal("[2,0,1]", only["ranking"]!.ToJsonString());
            var (_, next) = await Http.Get(client, "/api/tasks/next");
            Assert.NotEqual(id, (long)next!["task_id"]!);
        }
    }

    [Fact]
    public async Task OversizedRequestsAreRefused()
    {
        using var dir = new TempDir();
        using var store = Projects.Create(dir, prompts: 1, k: 2);
        var (_, token) = store.AddAnnotator("a");
        await using var server = await RunningServer.StartAsync(store, maxBody: 4096);
        var client = server.Client(token);
        var (_, task) = await Http.Get(client, "/api/tasks/next");
        string padding = new string(' ', 8000);
        var (status, _) = await Http.Post(client, "/api/rankings", $"{{\"task_id\": {task!["task_id"]}, \"ranking\": [0, 1]{padding}}}");
        Assert.Equal(413, status);
        Assert.Empty(store.SubmittedRankings());
    }

    [Fact]
    public async Task ThePageIsServedWithAStrictContentSecurityPolicyAndNoExternalAssets()
    {
        using var dir = new TempDir();
        using var store = Projects.Create(dir);
        await using var server = await RunningServer.StartAsync(store);
        var client = server.Client();
        foreach (var path in new[] { "/", "/admin", "/app.js", "/app.css" })
        {
            using var response = await client.GetAsync(path);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            string csp = response.Headers.GetValues("Content-Security-Policy").Single();
            Assert.Contains("default-src 'none'", csp);
            Assert.Contains("script-src 'self'", csp);
            Assert.Equal("nosniff", response.Headers.GetValues("X-Content-Type-Options").Single());
            string text = await response.Content.ReadAsStringAsync();
            Assert.DoesNotContain("http://", text);
            Assert.DoesNotContain("https://", text);
            Assert.DoesNotContain("//cdn", text);
        }
        string js = await client.GetStringAsync("/app.js");
        Assert.DoesNotContain("innerHTML", js);
        Assert.DoesNotContain("insertAdjacentHTML", js);
        Assert.DoesNotContain("document.write", js);
        Assert.Equal(404, (await Http.Get(client, "/api/nothing-here")).Status);
    }

    [Fact]
    public async Task ModelOutputIsEscapedInTheJson()
    {
        using var dir = new TempDir();
        using var store = AnnotationStore.Create(dir.File("x.db"), "x", 1, "test", null,
            [new PromptCompletions("<b>p</b>", ["<script>alert(1)</script>", "a & b"])]);
        var (_, token) = store.AddAnnotator("a");
        await using var server = await RunningServer.StartAsync(store);
        var client = server.Client(token);
        string raw = await client.GetStringAsync("/api/tasks/next");
        Assert.DoesNotContain("<script>", raw);
        Assert.DoesNotContain("<b>", raw);
        var task = JsonNode.Parse(raw)!;
        Assert.Contains(task["completions"]!.AsArray(), c => (string)c!["text"]! == "<script>alert(1)</script>");
    }
}
