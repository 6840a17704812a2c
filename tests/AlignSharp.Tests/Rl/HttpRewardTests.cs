using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using AlignSharp.Training.Data;
using AlignSharp.Training.Rl;

namespace AlignSharp.Tests.Rl;

/// <summary>The HTTP reward client against a tiny local server on 127.0.0.1.</summary>
public sealed class HttpRewardTests
{
    private static RewardInputs Inputs(params string[] completions) => new(
        completions.Select(_ => ChatContent.FromText("Q:")).ToArray(), completions.Select(_ => "Q:").ToArray(), completions);

    private static readonly HttpRewardOptions Fast = new() { TimeoutSeconds = 5, MaxRetries = 2, BackoffSeconds = 0.05 };

    [Fact]
    public void AGoodAnswerGivesOneRewardPerCompletion()
    {
        using var server = new TestHttpServer((_, body) =>
        {
            var completions = JsonDocument.Parse(body).RootElement.GetProperty("completions").EnumerateArray().Select(c => c.GetString()!.Length);
            return (200, JsonSerializer.Serialize(new { rewards = completions.Select(l => l * 0.5) }), 0);
        });
        using var source = new HttpRewardSource(server.Url, Fast);
        Assert.Equal([0.5f, 1.5f, 0f], source.Score(Inputs("a", "abc", "")));
        var sent = JsonDocument.Parse(server.Bodies[0]).RootElement;
        Assert.Equal(["Q:", "Q:", "Q:"], sent.GetProperty("prompts").EnumerateArray().Select(p => p.GetString()));
    }

    [Fact]
    public void AWrongCountIsAClearErrorWithoutRetrying()
    {
        using var server = new TestHttpServer((_, _) => (200, "{\"rewards\": [1, 2]}", 0));
        using var source = new HttpRewardSource(server.Url, Fast);
        var e = Assert.Throws<UserInputException>(() => source.Score(Inputs("a", "b", "c")));
        Assert.Contains("2 rewards for 3 completions", e.Message);
        Assert.Equal(1, server.Requests);
    }

    [Theory]
    [InlineData("{\"rewards\": [1, \"x\"]}", "rewards[1] is the string \"x\", not a number")]
    [InlineData("{\"rewards\": [1, null]}", "rewards[1] is null, not a number")]
    [InlineData("{\"scores\": [1, 2]}", "no \"rewards\" field")]
    [InlineData("not json", "not JSON")]
    public void BadAnswersAreClearErrors(string answer, string expected)
    {
        using var server = new TestHttpServer((_, _) => (200, answer, 0));
        using var source = new HttpRewardSource(server.Url, Fast);
        var e = Assert.Throws<UserInputException>(() => source.Score(Inputs("a", "b")));
        Assert.Contains(expected, e.Message);
        Assert.Contains(server.Url, e.Message);
    }

    /// <summary>Python's json.dumps writes float('nan') and infinities bare: a reward endpoint's NaN is a non-finite reward (the
    /// run skips the step), not a parse error; an evaluation judge, which has no step to skip, names it.</summary>
    [Fact]
    public void PythonsNonFiniteLiteralsAreNonFiniteRewards()
    {
        using var server = new TestHttpServer((_, _) => (200, "{\"note\": \"NaN \\\" Infinity\", \"rewards\": [NaN, Infinity, -Infinity, 1.5]}", 0));
        using var source = new HttpRewardSource(server.Url, Fast);
        var rewards = source.Score(Inputs("a", "b", "c", "d"));
        Assert.True(float.IsNaN(rewards[0]));
        Assert.Equal([float.PositiveInfinity, float.NegativeInfinity, 1.5f], rewards[1..]);

        using var judge = new JsonEndpoint(server.Url, "--judge-url", Fast);
        using var answer = judge.Post("{}");
        Assert.Equal("NaN \" Infinity", answer.RootElement.GetProperty("note").GetString());   // strings stay as they were
        var e = Assert.Throws<UserInputException>(() => judge.Numbers(answer.RootElement, "rewards", 4, "completions"));
        Assert.Contains("rewards[0] is NaN, not a finite number", e.Message);
    }

    [Fact]
    public void TimeoutsAreRetriedThenReported()
    {
        // A timeout of a second, not less: under a loaded test run an attempt cancelled after 0.3 s had sometimes not
        // reached the server at all (it saw 2 requests of 3).
        using var server = new TestHttpServer((_, _) => (200, "{\"rewards\": [1]}", 5000));
        using var source = new HttpRewardSource(server.Url, Fast with { TimeoutSeconds = 1 });
        var e = Assert.Throws<UserInputException>(() => source.Score(Inputs("a")));
        Assert.Contains("gave up after 3 attempts", e.Message);
        Assert.Contains("no answer within 1 s", e.Message);
        // The server counts a request once its thread has read it, which on a loaded machine can come after the client
        // gave up on it: wait for the third, then give a fourth (there must be none) time to show.
        Assert.True(SpinWait.SpinUntil(() => Volatile.Read(ref server.Requests) >= 3, 10_000), $"the server saw {server.Requests} requests");
        Thread.Sleep(300);
        Assert.Equal(3, server.Requests);
    }

    [Fact]
    public void AServerErrorIsRetriedAndARecoveryIsUsed()
    {
        using var server = new TestHttpServer((n, _) => n == 1 ? (503, "busy", 0) : (200, "{\"rewards\": [2.5]}", 0));
        using var source = new HttpRewardSource(server.Url, Fast);
        Assert.Equal([2.5f], source.Score(Inputs("a")));
        Assert.Equal(2, server.Requests);
    }

    [Fact]
    public void SourcesCombineWithWeights()
    {
        var reward = new RewardFunction([
            (new FunctionRewardSource("len", (_, c) => c.Select(x => (float)x.Length).ToArray()), 2.0),
            (RlTestKit.CountOf('a'), -1.0)]);
        var (total, parts) = reward.Score(Inputs("aa", "bbb"));
        Assert.Equal([2 * 2 - 2f, 2 * 3 - 0f], total);
        Assert.Equal([2f, 3f], parts["len"]);
    }
}

/// <summary>A reward model and an HTTP endpoint combined with weights in a training run.</summary>
public sealed class CombinedRewardRunTests : IDisposable
{
    private readonly RlTestKit _kit = new();
    public void Dispose() => _kit.Dispose();

    [Fact]
    public void ARunCombinesTheRewardModelAndTheEndpoint()
    {
        var listener = new System.Net.HttpListener();
        var probe = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        probe.Start();
        int port = ((System.Net.IPEndPoint)probe.LocalEndpoint).Port;
        probe.Stop();
        string url = $"http://127.0.0.1:{port}/r/";
        listener.Prefixes.Add(url);
        listener.Start();
        var bodies = new System.Collections.Concurrent.ConcurrentQueue<JsonElement>();
        var serve = Task.Run(() =>
        {
            while (listener.IsListening)
            {
                System.Net.HttpListenerContext ctx;
                try { ctx = listener.GetContext(); } catch (Exception) { return; }
                var body = JsonDocument.Parse(ctx.Request.InputStream).RootElement.Clone();
                bodies.Enqueue(body);
                int n = body.GetProperty("completions").GetArrayLength();
                var bytes = Encoding.UTF8.GetBytes(JsonSerializer.Serialize(new { rewards = Enumerable.Repeat(2.0, n) }));
                ctx.Response.OutputStream.Write(bytes);
                ctx.Response.Close();
            }
        });
        // As TRL hands a dataset's other columns to reward functions, the endpoint gets the prompt records' other fields.
        string prompts = _kit.File("extra.jsonl", "{\"prompt\": \"Q0:\", \"solution\": \"4\", \"meta\": {\"k\": [1]}}\n{\"prompt\": \"Q1:\", \"id\": 7}\n");
        try
        {
            var o = new GrpoOptions
            {
                Policy = _kit.Policy(), Prompts = prompts, Out = _kit.Path("combined"), MaxSteps = 1, MaxNewTokens = 3,
                BatchSize = 4, NumGenerations = 2, RewardModel = _kit.RewardModelDir(), RewardUrl = url, RewardUrlWeight = 0.5f, SaveSteps = 0, Threads = 2,
            };
            RlTrainer.Create(o).Run();
            var line = RlTestKit.TrainMetrics(o.Out!).Single();
            double model = line.GetProperty("objective/scores/reward_model").GetDouble();
            Assert.Equal(2.0, line.GetProperty("objective/scores/reward_url").GetDouble(), 6);
            Assert.Equal(model + 0.5 * 2.0, line.GetProperty("objective/scores").GetDouble(), 4);
            var sent = Assert.Single(bodies);
            Assert.Equal(["completions", "id", "meta", "prompts", "solution"], sent.EnumerateObject().Select(p => p.Name).Order());
            // Each completion's entry is its own prompt record's value (null where that record lacks the field).
            var promptTexts = sent.GetProperty("prompts").EnumerateArray().Select(p => p.GetString()!).ToArray();
            Assert.Equal(4, promptTexts.Length);
            for (int i = 0; i < 4; i++)
            {
                bool first = promptTexts[i].Contains("Q0:");
                Assert.Equal(first ? "\"4\"" : "null", sent.GetProperty("solution")[i].GetRawText());
                Assert.Equal(first ? "{\"k\":[1]}" : "null", sent.GetProperty("meta")[i].GetRawText());
                Assert.Equal(first ? "null" : "7", sent.GetProperty("id")[i].GetRawText());
            }
        }
        finally
        {
            listener.Close();
        }
    }
}
