using System.Text.Json;
using AlignSharp.Tests.Rl;

namespace AlignSharp.Tests.OnlineDpo;

/// <summary>alignsharp online-dpo as a user runs it: a reward-model judge, an HTTP judge answering preferences, bad input.</summary>
public sealed class OnlineDpoCliTests : IDisposable
{
    private readonly RlTestKit _kit = new();
    public void Dispose() => _kit.Dispose();

    private string[] Common(string run) =>
    [
        "online-dpo", "--policy", _kit.Policy(), "--prompts", _kit.Prompts(count: 4), "--out", _kit.Path(run), "--seed", "1",
        "--max-new-tokens", "4", "--batch-size", "2", "--max-steps", "2", "--logging-steps", "1", "--threads", "2",
    ];

    private static List<JsonElement> Train(string run) => RlTestKit.TrainMetrics(run);

    [Fact]
    public void TrainsWithARewardModelJudgeAndLogsTrlsMetrics()
    {
        string rm = _kit.RewardModelDir(mean: 0.5, std: 2);
        var r = CliRunner.Run([.. Common("rm"), "--judge-model", rm, "--loss-type", "ipo", "--missing-eos-penalty", "1"]);
        Assert.True(r.ExitCode == 0, r.StdErr);
        var lines = Train(_kit.Path("rm"));
        Assert.Equal([1, 2], lines.Select(l => l.GetProperty("step").GetInt32()));
        foreach (var key in new[] { "loss", "objective/kl", "objective/entropy", "objective/non_score_reward", "objective/rlhf_reward", "objective/scores",
                     "objective/scores_margin", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen",
                     "logps/rejected", "val/contain_eos_token", "beta", "grad_norm", "learning_rate" })
            Assert.True(lines[1].TryGetProperty(key, out _), $"metrics.jsonl lacks {key}");
        Assert.True(lines[0].GetProperty("objective/scores_margin").GetDouble() >= 0);
        Assert.True(File.Exists(Path.Combine(_kit.Path("rm"), "final", "model.safetensors")));
        var config = JsonDocument.Parse(File.ReadAllText(Path.Combine(_kit.Path("rm"), "run_config.json"))).RootElement;
        Assert.Equal("online-dpo", config.GetProperty("trainer").GetString());
        Assert.False(config.TryGetProperty("data", out _));   // no --data: online DPO reads prompts
    }

    [Fact]
    public void AnHttpJudgeAnsweringPreferencesSeesEachPromptsTwoCompletionsRenderedWithTheChatTemplate()
    {
        using var server = new TestHttpServer((_, body) =>
        {
            var doc = JsonDocument.Parse(body).RootElement;
            int pairs = doc.GetProperty("pairs").GetArrayLength();
            // Prefers the second completion of every pair.
            return (200, JsonSerializer.Serialize(new { preferences = Enumerable.Repeat(1, pairs) }), 0);
        });
        string prompts = _kit.File("chat.jsonl", "{\"prompt\": [{\"role\": \"user\", \"content\": \"hi\"}]}\n{\"prompt\": [{\"role\": \"user\", \"content\": \"yo\"}]}\n");
        var args = Common("url");
        args[Array.IndexOf(args, "--prompts") + 1] = prompts;
        var r = CliRunner.Run([.. args, "--judge-url", server.Url, "--chat-template", "chatml"]);
        Assert.True(r.ExitCode == 0, r.StdErr);
        Assert.Equal(2, server.Requests);
        var request = JsonDocument.Parse(server.Bodies[0]).RootElement;
        Assert.Equal(4, request.GetProperty("completions").GetArrayLength());
        Assert.Equal([[0, 2], [1, 3]], request.GetProperty("pairs").EnumerateArray().Select(p => p.EnumerateArray().Select(x => x.GetInt32()).ToArray()));
        var sent = request.GetProperty("prompts").EnumerateArray().Select(p => p.GetString()!).ToArray();
        Assert.All(sent, p => Assert.StartsWith("<|im_start|>user\n", p));
        Assert.Equal(sent[0], sent[2]);
        var lines = Train(_kit.Path("url"));
        Assert.False(lines[0].TryGetProperty("objective/scores", out _));   // preferences give no scores
        Assert.True(lines[0].TryGetProperty("objective/kl", out _));
    }

    [Fact]
    public void AnHttpJudgeAnsweringRewardsPicksTheHigherOne()
    {
        // Rewards as --reward-url answers them: one per completion (the first completions, then the second ones).
        using var server = new TestHttpServer((_, body) =>
        {
            var completions = JsonDocument.Parse(body).RootElement.GetProperty("completions").EnumerateArray().Select(c => c.GetString()!).ToArray();
            return (200, JsonSerializer.Serialize(new { rewards = completions.Select(c => c.Length) }), 0);
        });
        var r = CliRunner.Run([.. Common("rewards"), "--judge-url", server.Url]);
        Assert.True(r.ExitCode == 0, r.StdErr);
        var lines = Train(_kit.Path("rewards"));
        foreach (var line in lines)
        {
            Assert.True(line.GetProperty("objective/scores").GetDouble() >= 0);
            Assert.True(line.GetProperty("objective/scores_margin").GetDouble() >= 0);   // the chosen one never scores lower
        }
    }

    [Fact]
    public void LoraTrainsOnlyAnAdapterAndTheRunConfigFeedsBackAsConfig()
    {
        string rm = _kit.RewardModelDir();
        var r = CliRunner.Run([.. Common("lora"), "--judge-model", rm, "--lora-r", "4", "--learning-rate", "0.01"]);
        Assert.True(r.ExitCode == 0, r.StdErr);
        string final = Path.Combine(_kit.Path("lora"), "final");
        Assert.True(File.Exists(Path.Combine(final, "adapter_config.json")), "final/ holds the PEFT adapter");
        Assert.True(File.Exists(Path.Combine(final, "adapter_model.safetensors")));
        var lines = Train(_kit.Path("lora"));
        Assert.True(double.IsFinite(lines[^1].GetProperty("loss").GetDouble()));

        // run_config.json (which holds no offline-dpo data options) is a valid --config for a new run.
        var again = CliRunner.Run("online-dpo", "--config", Path.Combine(_kit.Path("lora"), "run_config.json"), "--out", _kit.Path("again"), "--max-steps", "1");
        Assert.True(again.ExitCode == 0, again.StdErr);
        Assert.True(File.Exists(Path.Combine(_kit.Path("again"), "final", "adapter_config.json")));
    }

    [Fact]
    public void BadInputGetsClearErrors()
    {
        string rm = _kit.RewardModelDir();
        void Fails(string expected, params string[] args)
        {
            var r = CliRunner.Run(args);
            Assert.True(r.ExitCode != 0, $"expected a failure for {string.Join(' ', args)}");
            Assert.Contains(expected, r.StdErr);
            Assert.DoesNotContain("   at ", r.StdErr);
        }
        Fails("Give a judge", Common("none"));
        Fails("not both", [.. Common("both"), "--judge-model", rm, "--judge-url", "http://127.0.0.1:1/"]);
        Fails("--judge-model: directory", [.. Common("nodir"), "--judge-model", _kit.Path("nope")]);
        string[] missing = Common("missing");
        missing[Array.IndexOf(missing, "--prompts") + 1] = _kit.Path("nope.jsonl");
        Fails("--prompts:", [.. missing, "--judge-model", rm]);
        Fails("--data", [.. Common("data"), "--judge-model", rm, "--data", _kit.Prompts()]);  // not an option of online-dpo
        Fails("--max-new-tokens (4) must be below --max-length (4)", [.. Common("long"), "--judge-model", rm, "--max-length", "4"]);
        Fails("--temperature must be > 0", [.. Common("temp"), "--judge-model", rm, "--temperature", "0"]);
        Fails("--loss-type must be", [.. Common("loss"), "--judge-model", rm, "--loss-type", "nope"]);
        string bad = _kit.File("bad.jsonl", "{\"prompt\": \"ok\"}\n{\"text\": 3}\n");
        string[] badPrompts = Common("bad");
        badPrompts[Array.IndexOf(badPrompts, "--prompts") + 1] = bad;
        Fails("bad.jsonl:2", [.. badPrompts, "--judge-model", rm]);
        using var server = new TestHttpServer((_, _) => (200, "{\"rewards\": [1]}", 0));
        Fails("rewards", [.. Common("count"), "--judge-url", server.Url]);
    }
}
