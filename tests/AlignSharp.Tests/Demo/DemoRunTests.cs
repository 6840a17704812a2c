using System.Text.Json;
using AlignSharp.Demo;

namespace AlignSharp.Tests.Demo;

/// <summary>The whole experiment with --quick settings: the effects point the right way.</summary>
[Collection(SerialCollection.Name)]
public class DemoRunTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("alignsharp-demo-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void QuickDemoShowsTheEffects()
    {
        var console = new StringWriter();
        var results = new DemoExperiment(DemoSettings.Quick, _dir, 0, console).Run();

        Assert.Empty(results.Unavailable);
        Assert.True(results.RewardModel.GoldAgreement > 0.6, $"reward model gold agreement {results.RewardModel.GoldAgreement:P1} is not clearly better than chance");
        var p = results.Policies;
        Assert.True(p["ppo"].GoldRewardMean > p["sft"].GoldRewardMean, $"PPO gold {p["ppo"].GoldRewardMean} ≤ SFT {p["sft"].GoldRewardMean}");
        Assert.True(p["dpo"].GoldRewardMean > p["sft"].GoldRewardMean, $"DPO gold {p["dpo"].GoldRewardMean} ≤ SFT {p["sft"].GoldRewardMean}");
        Assert.True(p["ppo_beta0"].KlFromSft > p["ppo"].KlFromSft, "β = 0 should drift further from SFT than PPO with the KL penalty");

        using var json = JsonDocument.Parse(File.ReadAllText(Path.Combine(_dir, "results.json")));
        var policies = json.RootElement.GetProperty("policies");
        foreach (var name in new[] { "sft", "best_of_n", "ppo", "dpo", "ppo_beta0" })
            foreach (var key in new[] { "gold_reward_mean", "gold_reward_ci95", "gold_win_rate_vs_sft", "proxy_score_mean", "kl_from_sft", "fluency", "distinct_2" })
                Assert.Equal(JsonValueKind.Number, policies.GetProperty(name).GetProperty(key).ValueKind);
        Assert.Equal(JsonValueKind.Number, json.RootElement.GetProperty("reward_model_gold_agreement").ValueKind);

        string html = File.ReadAllText(Path.Combine(_dir, "report.html"));
        Assert.Contains("Gold reward versus KL", html);
        Assert.Contains("Reward model calibration", html);
        Assert.Contains("report.html", console.ToString());

        // The annotators' rankings went through the annotation store and its export.
        Assert.True(File.Exists(Path.Combine(_dir, "annotation", "demo.annotations.db")));
        var first = JsonDocument.Parse(File.ReadLines(Path.Combine(_dir, "annotation", "rankings.jsonl")).First()).RootElement;
        Assert.Equal("demo", first.GetProperty("project").GetString());
    }
    [Fact]
    public void ASeededRunIsReproducible()
    {
        // A miniature of the experiment, twice with one seed and once with another: every number but the timings
        // and every sample response must repeat exactly (threaded kernels included), and another seed must differ.
        var tiny = DemoSettings.Quick with
        {
            Name = "tiny", CorpusDocuments = 200, PretrainSteps = 15, Demonstrations = 100, SftSteps = 5, AnnotationTasks = 24,
            RewardModelEpochs = 1, RewardModelEvalGroupsPerPrompt = 1, BestOfN = 2, PpoSteps = 2, PpoBatchSize = 16,
            PpoCheckpointEvery = 1, EvalSamplesPerPrompt = 1, MaxNewTokens = 24,
        };
        string Run(string name, int seed)
        {
            string dir = Path.Combine(_dir, name);
            new DemoExperiment(tiny, dir, seed, new StringWriter()).Run();
            var results = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "results.json")))!.AsObject();
            results.Remove("phase_seconds");
            return results.ToJsonString() + File.ReadAllText(Path.Combine(dir, "samples.json"));
        }
        string a = Run("a", 5), b = Run("b", 5), c = Run("c", 6);
        Assert.Equal(a, b);
        Assert.NotEqual(a, c);
    }
}
