using System.Text.Json;
using AlignSharp.Tests.Rl;
using AlignSharp.Text;

namespace AlignSharp.Tests.Evaluation;

/// <summary>`alignsharp eval` end to end on tiny byte-level models, checked against other commands and the judges' own answers.</summary>
public sealed class EvalCliTests : IDisposable
{
    private readonly RlTestKit _kit = new();
    public void Dispose() => _kit.Dispose();

    private static JsonElement Json(string path) => JsonDocument.Parse(File.ReadAllText(path)).RootElement;
    private static List<JsonElement> Lines(string path) => File.ReadAllLines(path).Select(l => JsonDocument.Parse(l).RootElement).ToList();
    private static List<JsonElement> Lines(CliRunner.Result r) => r.StdOut.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => JsonDocument.Parse(l).RootElement).ToList();

    [Fact]
    public void RewardModelJudgeAgreesWithGenerateScoreAndLogprobs()
    {
        string policy = _kit.Policy(1), baseline = _kit.Policy(2, "baseline"), rm = _kit.RewardModelDir(mean: 0.5, std: 2);
        string prompts = _kit.Prompts(count: 3);
        string outDir = _kit.Path("eval");
        var r = CliRunner.Run("eval", "--policy", policy, "--baseline", baseline, "--prompts", prompts, "--judge-model", rm,
            "--samples-per-prompt", "2", "--max-new-tokens", "8", "--seed", "5", "--out", outDir);
        Assert.True(r.ExitCode == 0, r.StdErr);
        var json = Json(Path.Combine(outDir, "eval.json"));
        var slots = Lines(Path.Combine(outDir, "samples.jsonl"));
        Assert.Equal(6, slots.Count);
        Assert.Equal(3, json.GetProperty("num_prompts").GetInt32());
        Assert.Equal(6, json.GetProperty("num_samples").GetInt32());
        string[] slotPrompts = ["Q0:", "Q0:", "Q1:", "Q1:", "Q2:", "Q2:"];

        // Seeded generation: slot i is stream i of the seed, as `alignsharp generate` draws line i.
        string genInput = TinyModelsJsonl("gen.jsonl", slotPrompts.Select(p => (object)new { prompt = p }));
        var policyGen = Lines(Run("generate", "--model", policy, "--input", genInput, "--max-new-tokens", "8", "--seed", "5", "--temperature", "1"));
        var baselineGen = Lines(Run("generate", "--model", baseline, "--input", genInput, "--max-new-tokens", "8", "--seed", "5", "--temperature", "1"));
        for (int i = 0; i < 6; i++)
        {
            Assert.Equal(slotPrompts[i], slots[i].GetProperty("prompt").GetString());
            Assert.Equal(policyGen[i].GetProperty("text").GetString(), slots[i].GetProperty("policy").GetString());
            Assert.Equal(baselineGen[i].GetProperty("text").GetString(), slots[i].GetProperty("baseline").GetString());
        }

        // Rewards: the reward model's normalised scores, as `alignsharp score --normalize` gives them.
        double[] Scores(string field) => Lines(Run("score", "--reward-model", rm, "--normalize", "--input",
            TinyModelsJsonl(field + ".jsonl", slots.Select((s, i) => (object)new { prompt = slotPrompts[i], completion = s.GetProperty(field).GetString() }))))
            .Select(l => l.GetProperty("score").GetDouble()).ToArray();
        var policyScores = Scores("policy");
        var baselineScores = Scores("baseline");
        Assert.Equal(policyScores.Average(), json.GetProperty("reward_mean").GetProperty("policy").GetDouble(), 4);
        Assert.Equal(baselineScores.Average(), json.GetProperty("reward_mean").GetProperty("baseline").GetDouble(), 4);
        var ci = json.GetProperty("reward_mean_ci95").GetProperty("policy");
        Assert.True(ci[0].GetDouble() <= policyScores.Average() && policyScores.Average() <= ci[1].GetDouble());

        // Win rate: ties half, identical completions tie.
        var outcomes = Enumerable.Range(0, 6).Select(i =>
            slots[i].GetProperty("policy").GetString() == slots[i].GetProperty("baseline").GetString() ? 0.5
            : policyScores[i] > baselineScores[i] ? 1.0 : policyScores[i] < baselineScores[i] ? 0.0 : 0.5).ToArray();
        Assert.Equal(outcomes.Average(), json.GetProperty("win_rate").GetDouble(), 9);
        Assert.Equal(outcomes.Count(o => o == 1), json.GetProperty("wins").GetInt32());
        Assert.Equal(outcomes.Count(o => o == 0), json.GetProperty("losses").GetInt32());
        var winCi = json.GetProperty("win_rate_ci95");
        Assert.True(winCi[0].GetDouble() <= outcomes.Average() && outcomes.Average() <= winCi[1].GetDouble());

        // KL sampled: Σ_t log π(y_t) − log π_b(y_t), with π's log-probabilities from generate and π_b's from logprobs.
        var tokenizer = Pretrained.Load(policy).Tokenizer!;
        string lpInput = TinyModelsJsonl("lp.jsonl", policyGen.Select((g, i) => (object)new { ids = tokenizer.Encode(slotPrompts[i]).Concat(g.GetProperty("ids").EnumerateArray().Select(x => x.GetInt32())).ToArray() }));
        var baseLp = Lines(Run("logprobs", "--model", baseline, "--input", lpInput));
        var kl = policyGen.Select((g, i) =>
        {
            var lp = g.GetProperty("logprobs").EnumerateArray().Select(x => x.GetDouble()).ToArray();
            var lq = baseLp[i].GetProperty("logprobs").EnumerateArray().Select(x => x.ValueKind == JsonValueKind.Null ? 0 : x.GetDouble()).TakeLast(lp.Length).ToArray();
            return lp.Zip(lq, (a, b) => a - b).Sum();
        }).ToArray();
        var klJson = json.GetProperty("kl_to_baseline");
        Assert.Equal(kl.Average(), klJson.GetProperty("sampled").GetDouble(), 3);
        for (int i = 0; i < 6; i++)
        {
            Assert.Equal(kl[i], slots[i].GetProperty("kl_sampled").GetDouble(), 3);
            Assert.True(slots[i].GetProperty("kl_exact").GetDouble() > 0);    // two different random models
        }
        Assert.True(klJson.GetProperty("exact").GetDouble() > 0);
        Assert.True(klJson.GetProperty("exact_per_token").GetDouble() > 0);

        // Length without the final EOS, distinct-2 over word bigrams.
        double length = policyGen.Average(g => g.GetProperty("ids").GetArrayLength() - (g.GetProperty("finish_reason").GetString() == "eos" ? 1 : 0));
        Assert.Equal(length, json.GetProperty("length_mean").GetProperty("policy").GetDouble(), 9);
        var bigrams = policyGen.SelectMany(g =>
        {
            var w = g.GetProperty("text").GetString()!.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);
            return Enumerable.Range(0, Math.Max(0, w.Length - 1)).Select(k => w[k] + "\u0001" + w[k + 1]);
        }).ToList();
        Assert.Equal(bigrams.Count == 0 ? 0 : bigrams.Distinct().Count() / (double)bigrams.Count, json.GetProperty("distinct_2").GetProperty("policy").GetDouble(), 9);

        string html = File.ReadAllText(Path.Combine(outDir, "eval.html"));
        Assert.StartsWith("<!DOCTYPE html>", html);
        Assert.Contains("<th>baseline</th>", html);
        Assert.Contains(System.Net.WebUtility.HtmlEncode(slots[0].GetProperty("policy").GetString()!), html);
    }

    [Fact]
    public void PairwiseHttpJudgeAndTheIdenticalBaseline()
    {
        string policy = _kit.Policy(1), baseline = _kit.Policy(2, "baseline");
        string prompts = _kit.Prompts(count: 4);
        // Prefers the longer completion of each pair; a tie when equally long.
        using var server = new TestHttpServer((_, body) =>
        {
            var root = JsonDocument.Parse(body).RootElement;
            var completions = root.GetProperty("completions").EnumerateArray().Select(c => c.GetString()!).ToArray();
            var preferences = root.GetProperty("pairs").EnumerateArray().Select(p =>
            {
                int a = completions[p[0].GetInt32()].Length, b = completions[p[1].GetInt32()].Length;
                return a > b ? 0.0 : a < b ? 1.0 : 0.5;
            });
            return (200, JsonSerializer.Serialize(new { preferences }), 0);
        });
        string outDir = _kit.Path("pairwise");
        var r = CliRunner.Run("eval", "--policy", policy, "--baseline", baseline, "--prompts", prompts, "--judge-url", server.Url, "--max-new-tokens", "10", "--out", outDir);
        Assert.True(r.ExitCode == 0, r.StdErr);
        var json = Json(Path.Combine(outDir, "eval.json"));
        var slots = Lines(Path.Combine(outDir, "samples.jsonl"));
        var expected = slots.Select(s =>
        {
            string a = s.GetProperty("policy").GetString()!, b = s.GetProperty("baseline").GetString()!;
            return a == b || a.Length == b.Length ? 0.5 : a.Length > b.Length ? 1.0 : 0.0;
        }).Average();
        Assert.Equal(expected, json.GetProperty("win_rate").GetDouble(), 9);
        Assert.Equal("pairwise", json.GetProperty("judge_kind").GetString());
        Assert.Equal(JsonValueKind.Null, json.GetProperty("reward_mean").GetProperty("policy").ValueKind);
        var sent = JsonDocument.Parse(server.Bodies[0]).RootElement;
        Assert.Equal(8, sent.GetProperty("prompts").GetArrayLength());
        Assert.Equal([[0, 4], [1, 5], [2, 6], [3, 7]], sent.GetProperty("pairs").EnumerateArray().Select(p => p.EnumerateArray().Select(x => x.GetInt32()).ToArray()));

        // Against itself: the same completions (common random numbers), all ties, no KL at all.
        string selfDir = _kit.Path("self");
        var self = CliRunner.Run("eval", "--policy", policy, "--baseline", policy, "--prompts", prompts, "--judge-url", server.Url, "--samples-per-prompt", "2", "--max-new-tokens", "10", "--out", selfDir);
        Assert.True(self.ExitCode == 0, self.StdErr);
        var selfJson = Json(Path.Combine(selfDir, "eval.json"));
        Assert.Equal(0.5, selfJson.GetProperty("win_rate").GetDouble());
        Assert.Equal(8, selfJson.GetProperty("ties").GetInt32());
        Assert.Equal(0, selfJson.GetProperty("kl_to_baseline").GetProperty("sampled").GetDouble());
        Assert.Equal(0, selfJson.GetProperty("kl_to_baseline").GetProperty("exact").GetDouble());
    }

    [Fact]
    public void RewardEndpointJudgeWithoutBaseline()
    {
        string policy = _kit.Policy(1);
        string prompts = _kit.Prompts(count: 3);
        using var server = new TestHttpServer((_, body) =>
        {
            var root = JsonDocument.Parse(body).RootElement;
            Assert.False(root.TryGetProperty("pairs", out JsonElement pairs));
            var rewards = root.GetProperty("completions").EnumerateArray().Select(c => c.GetString()!.Length * 0.5);
            return (200, JsonSerializer.Serialize(new { rewards }), 0);
        });
        string outDir = _kit.Path("solo");
        var r = CliRunner.Run("eval", "--policy", policy, "--prompts", prompts, "--judge-url", server.Url, "--max-new-tokens", "6", "--out", outDir);
        Assert.True(r.ExitCode == 0, r.StdErr);
        var json = Json(Path.Combine(outDir, "eval.json"));
        var slots = Lines(Path.Combine(outDir, "samples.jsonl"));
        Assert.Equal(slots.Average(s => s.GetProperty("policy").GetString()!.Length * 0.5), json.GetProperty("reward_mean").GetProperty("policy").GetDouble(), 9);
        Assert.Equal(JsonValueKind.Null, json.GetProperty("win_rate").ValueKind);
        Assert.Equal(JsonValueKind.Null, json.GetProperty("kl_to_baseline").ValueKind);
        Assert.False(json.GetProperty("reward_mean").TryGetProperty("baseline", out _));
        // Written for people too: text as it reads, not \u escapes (JSON readers see the same string either way).
        Assert.Contains("(wins + ties/2)/n; means: normal approximation mean ± 1.96·s/√n", File.ReadAllText(Path.Combine(outDir, "eval.json")));
        Assert.Contains("mean ± 1.96", r.StdOut);
    }

    /// <summary>Message prompts are rendered with the policy's own template by default, as the RL trainers render them;
    /// --chat-template picks another and --chat-template-kwargs reach the render. The rendered prompt is what samples.jsonl
    /// records and what the judge is sent.</summary>
    [Fact]
    public void MessagePromptsUseThePolicysOwnTemplate()
    {
        string policy = _kit.Path("templated-policy");
        CopyDirectory(_kit.Policy(1), policy);
        File.WriteAllText(Path.Combine(policy, "chat_template.jinja"),
            "{{ banner | default('') }}{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}{% if add_generation_prompt %}>{% endif %}");
        string prompts = TinyModelsJsonl("messages.jsonl", Enumerable.Range(0, 2).Select(i => (object)new { prompt = new[] { new { role = "user", content = $"Q{i}" } } }));
        var sent = new List<string>();
        using var server = new TestHttpServer((_, body) =>
        {
            var root = JsonDocument.Parse(body).RootElement;
            lock (sent) sent.AddRange(root.GetProperty("prompts").EnumerateArray().Select(p => p.GetString()!));
            return (200, JsonSerializer.Serialize(new { rewards = root.GetProperty("completions").EnumerateArray().Select(_ => 1.0) }), 0);
        });
        foreach (var (name, extra, expected, template) in new[]
        {
            ("own", Array.Empty<string>(), new[] { "<user>Q0>", "<user>Q1>" }, "auto"),
            ("kwargs", ["--chat-template-kwargs", "{\"banner\": \"KW \"}"], ["KW <user>Q0>", "KW <user>Q1>"], "auto"),
            ("plain", ["--chat-template", "plain"], ["User: Q0\nAssistant:", "User: Q1\nAssistant:"], "plain"),
        })
        {
            sent.Clear();
            string outDir = _kit.Path("tpl-" + name);
            var r = CliRunner.Run(["eval", "--policy", policy, "--prompts", prompts, "--judge-url", server.Url, "--max-new-tokens", "4", "--out", outDir, .. extra]);
            Assert.True(r.ExitCode == 0, r.StdErr);
            Assert.Equal(expected, Lines(Path.Combine(outDir, "samples.jsonl")).Select(s => s.GetProperty("prompt").GetString()));
            Assert.Equal(expected, sent);
            Assert.Equal(template, Json(Path.Combine(outDir, "eval.json")).GetProperty("chat_template").GetString());
        }

        var bad = CliRunner.Run("eval", "--policy", policy, "--prompts", prompts, "--judge-url", server.Url, "--chat-template-kwargs", "[1]", "--out", _kit.Path("tpl-bad"));
        Assert.NotEqual(0, bad.ExitCode);
        Assert.Contains("--chat-template-kwargs", bad.StdErr);
        Assert.DoesNotContain("   at ", bad.StdErr);
    }

    private static void CopyDirectory(string from, string to)
    {
        Directory.CreateDirectory(to);
        foreach (var f in Directory.GetFiles(from)) File.Copy(f, Path.Combine(to, Path.GetFileName(f)));
    }

    [Fact]
    public void BadInvocationsAreClearErrors()
    {
        string policy = _kit.Policy(1), rm = _kit.RewardModelDir();
        string prompts = _kit.Prompts(count: 2);
        var both = CliRunner.Run("eval", "--policy", policy, "--prompts", prompts, "--judge-model", rm, "--judge-url", "http://127.0.0.1:1/", "--out", _kit.Path("x"));
        Assert.NotEqual(0, both.ExitCode);
        Assert.Contains("exactly one judge", both.StdErr);
        var missing = CliRunner.Run("eval", "--policy", policy, "--prompts", _kit.Path("nope.jsonl"), "--judge-model", rm, "--out", _kit.Path("x"));
        Assert.NotEqual(0, missing.ExitCode);
        Assert.Contains("nope.jsonl", missing.StdErr);
        using var server = new TestHttpServer((_, _) => (200, "{\"preferences\": [0]}", 0));
        var wrong = CliRunner.Run("eval", "--policy", policy, "--baseline", _kit.Policy(2, "b"), "--prompts", prompts, "--judge-url", server.Url, "--max-new-tokens", "8", "--out", _kit.Path("x"));
        Assert.NotEqual(0, wrong.ExitCode);
        Assert.Contains("--judge-url", wrong.StdErr);
        Assert.Contains("1 preferences for 2 pairs", wrong.StdErr);
        using var ambiguous = new TestHttpServer((_, _) => (200, "{\"preferences\": [0, 1], \"rewards\": [1, 2, 3, 4]}", 0));
        var two = CliRunner.Run("eval", "--policy", policy, "--baseline", _kit.Policy(2, "b"), "--prompts", prompts, "--judge-url", ambiguous.Url, "--max-new-tokens", "8", "--out", _kit.Path("x"));
        Assert.NotEqual(0, two.ExitCode);
        Assert.Contains("both \"rewards\" and \"preferences\"", two.StdErr);
        foreach (var res in new[] { both, missing, wrong, two }) Assert.DoesNotContain("   at ", res.StdErr);
        Assert.False(File.Exists(_kit.Path("x/eval.json")));
    }

    private CliRunner.Result Run(params string[] args)
    {
        var r = CliRunner.Run(args);
        Assert.True(r.ExitCode == 0, $"alignsharp {string.Join(' ', args)}: {r.StdErr}");
        return r;
    }

    private string TinyModelsJsonl(string name, IEnumerable<object> records) => Training.TinyModels.WriteJsonl(_kit.Path(name), records);
}
