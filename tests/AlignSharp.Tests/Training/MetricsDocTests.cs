using System.Text.Json;
using System.Text.RegularExpressions;
using AlignSharp.Tests.Rl;

namespace AlignSharp.Tests.Training;

/// <summary>docs/metrics.md lists every metric every trainer writes: tiny runs of each, every key of every line checked against the page.</summary>
public sealed class MetricsDocTests : IDisposable
{
    private readonly RlTestKit _kit = new();
    public void Dispose() => _kit.Dispose();

    private static readonly HashSet<string> LineFields = ["step", "time", "split", "samples"];

    [Fact]
    public void EveryLoggedMetricIsDocumented()
    {
        string doc = File.ReadAllText(Path.Combine(CliRunner.RepoRoot, "docs", "metrics.md"));
        var documented = Regex.Matches(doc, "`([a-z0-9_/]+)`").Select(m => m.Groups[1].Value).ToHashSet();
        string policy = _kit.Policy();
        string rm = _kit.RewardModelDir();
        string sft = _kit.File("sft.jsonl", string.Join("\n", Enumerable.Range(0, 6).Select(i => $"{{\"prompt\": \"q{i}\", \"completion\": \" a{i}\"}}")));
        string prefs = _kit.File("prefs.jsonl", string.Join("\n", Enumerable.Range(0, 6).Select(i => $"{{\"prompt\": \"q{i}\", \"chosen\": \" a{i}\", \"rejected\": \" b{i}\"}}")));
        string kto = _kit.File("kto.jsonl", string.Join("\n", Enumerable.Range(0, 6).Select(i => $"{{\"prompt\": \"q{i}\", \"completion\": \" a{i}\", \"label\": {(i % 2 == 0 ? "true" : "false")}}}")));
        string prompts = _kit.Prompts(count: 4);
        string[] common = ["--max-steps", "2", "--logging-steps", "1", "--batch-size", "2", "--threads", "2"];
        var runs = new (string Name, string[] Args)[]
        {
            ("sft", ["sft", "--model", policy, "--data", sft, "--eval-split", "0.3"]),
            ("rm", ["rm", "--model", policy, "--data", prefs, "--eval-split", "0.3"]),
            ("dpo", ["dpo", "--policy", policy, "--data", prefs, "--eval-split", "0.3", "--loss-type", "orpo"]),
            ("kto", ["kto", "--policy", policy, "--data", kto, "--eval-split", "0.3"]),
            ("online-dpo", ["online-dpo", "--policy", policy, "--prompts", prompts, "--judge-model", rm, "--max-new-tokens", "4"]),
            ("ppo", ["ppo", "--policy", policy, "--prompts", prompts, "--reward-model", rm, "--max-new-tokens", "4", "--ptx-data", sft, "--ptx-coef", "0.1"]),
            ("grpo", ["grpo", "--policy", policy, "--prompts", prompts, "--reward-model", rm, "--max-new-tokens", "4", "--num-generations", "2"]),
            ("rloo", ["rloo", "--policy", policy, "--prompts", prompts, "--reward-model", rm, "--max-new-tokens", "4", "--kl-in-reward", "false"]),
        };
        var missing = new List<string>();
        foreach (var (name, args) in runs)
        {
            string run = _kit.Path("run-" + name);
            var r = CliRunner.Run([.. args, .. common, "--out", run]);
            Assert.True(r.ExitCode == 0, $"{name}: {r.StdErr}");
            foreach (var line in File.ReadLines(Path.Combine(run, "metrics.jsonl")))
                foreach (var p in JsonDocument.Parse(line).RootElement.EnumerateObject())
                    if (!LineFields.Contains(p.Name) && !documented.Contains(p.Name) && !p.Name.StartsWith("objective/scores/", StringComparison.Ordinal))
                        missing.Add($"{name}: {p.Name}");
        }
        Assert.True(missing.Count == 0, "not in docs/metrics.md: " + string.Join(", ", missing.Distinct()));
    }
}
