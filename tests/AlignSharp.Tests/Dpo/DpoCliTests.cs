using System.Text.Json;
using AlignSharp.Training.Dpo;

namespace AlignSharp.Tests.Dpo;

/// <summary>`alignsharp dpo` as a user runs it: a process on an `init`ed byte-tokenizer model and files.</summary>
public sealed class DpoCliTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("alignsharp-dpo-cli-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string P(string name) => Path.Combine(_dir, name);

    private string Init()
    {
        var r = CliRunner.Run("init", "--arch", "gpt2", "--vocab-size", "259", "--d-model", "32", "--layers", "2", "--heads", "4",
            "--max-positions", "64", "--tokenizer", "byte", "--out", P("model"), "--seed", "3");
        Assert.True(r.ExitCode == 0, r.StdErr);
        return P("model");
    }

    [Fact]
    public void TrainsWithAConfigFileAndWritesTheRunDirectory()
    {
        string model = Init();
        string data = DpoFixtures.Pairs(P("train.jsonl"), 16, seed: 1);
        string eval = DpoFixtures.Pairs(P("eval.jsonl"), 8, seed: 2);
        File.WriteAllText(P("run.yaml"), "loss_type: sigmoid\nbeta: 0.2\nbatch_size: 4\nlearning-rate: 0.001\nlogging_steps: 1\n");
        var r = CliRunner.Run("dpo", "--config", P("run.yaml"), "--policy", model, "--data", data, "--eval-data", eval, "--out", P("run"),
            "--max-steps", "4", "--eval-steps", "2", "--save-steps", "2", "--beta", "0.3", "--threads", "1");
        Assert.True(r.ExitCode == 0, r.StdErr);

        foreach (var f in new[] { "run_config.json", "metrics.jsonl", "summary.json", ReferenceLogProbs.CacheFileName, "final/config.json", "final/model.safetensors", "final/tokenizer.json",
                     "checkpoints/step-000002/model/model.safetensors", "checkpoints/step-000002/optimizer.bin", "checkpoints/step-000002/trainer_state.json" })
            Assert.True(File.Exists(P("run/" + f)), f);
        var config = JsonDocument.Parse(File.ReadAllText(P("run/run_config.json"))).RootElement;
        Assert.Equal("dpo", config.GetProperty("trainer").GetString());
        Assert.Equal(0.3, config.GetProperty("beta").GetDouble(), 5);          // the flag overrides the file
        Assert.Equal(4, config.GetProperty("batch_size").GetInt32());          // from the file
        Assert.False(config.TryGetProperty("uses_reference", out _));          // only options, so the file can be read back

        var lines = File.ReadLines(P("run/metrics.jsonl")).Select(l => JsonDocument.Parse(l).RootElement).ToList();
        var train = lines.Where(l => l.GetProperty("split").GetString() == "train").ToList();
        var evals = lines.Where(l => l.GetProperty("split").GetString() == "eval").ToList();
        Assert.Equal(4, train.Count);
        Assert.Equal(2, evals.Count);   // steps 2 and 4
        foreach (var name in new[] { "step", "time", "loss", "learning_rate", "tokens_per_s" }.Concat(DpoMetrics.Names))
            Assert.True(train[0].TryGetProperty(name, out _), name);
        foreach (var name in new[] { "loss", "tokens_per_s" }.Concat(DpoMetrics.Names))
            Assert.True(evals[0].TryGetProperty(name, out _), name);
        Assert.Contains("dpo", r.StdErr);

        // Resume from the newest checkpoint finishes the run again from step 4 (nothing left) without error.
        var again = CliRunner.Run("dpo", "--config", P("run.yaml"), "--policy", model, "--data", data, "--out", P("run"), "--max-steps", "4", "--save-steps", "2", "--beta", "0.3", "--resume");
        Assert.True(again.ExitCode == 0, again.StdErr);
        Assert.Contains("resumed", again.StdErr);

        // --eval-only: one JSON object on stdout with the loss and the TRL metric names; the trained policy against its start.
        var e = CliRunner.Run("dpo", "--policy", P("run/final"), "--reference", model, "--data", eval, "--eval-only", "--beta", "0.3");
        Assert.True(e.ExitCode == 0, e.StdErr);
        var lines2 = e.StdOut.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Single(lines2);
        var o = JsonDocument.Parse(lines2[0]).RootElement;
        foreach (var name in new[] { "loss" }.Concat(DpoMetrics.Names)) Assert.True(o.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Number, name);
        Assert.NotEqual(0.0, o.GetProperty("rewards/margins").GetDouble());
    }

    /// <summary>TRL's further loss types by their names, as `dpo` runs them: each trains (the first step's loss is the closed
    /// form at Δ = 0, where policy and reference agree) and records its name; exo_pair without ε is a clean error.</summary>
    [Fact]
    public void TrlLossTypesTrainByName()
    {
        string model = Init();
        string data = DpoFixtures.Pairs(P("train.jsonl"), 8, seed: 1);
        // At the start every log-ratio is 0: u = Δ = 0, σ(0) = ½, log σ(0) = −log 2.
        double ln2 = Math.Log(2);
        foreach (var (type, extra, first) in new[]
        {
            ("robust", new[] { "--label_smoothing", "0.1" }, ln2),              // (0.9·ln2 − 0.1·ln2) / 0.8
            ("exo_pair", ["--label-smoothing", "0.001"], 0.5 * (-ln2 - Math.Log(0.999)) + 0.5 * (-ln2 - Math.Log(0.001))),
            ("nca_pair", [], 2 * ln2),                                           // ln2 + ½ln2 + ½ln2
            ("sppo_hard", [], 2 * 25.0),                                         // β = 0.1: 2·(1/(2β))² = 50
            ("apo_zero", [], 1.0),
            ("apo_down", [], 1.0),
            ("discopop", ["--discopop_tau", "0.05"], 0.5 * ln2 + 0.5),
            ("aot", [], ln2),                                                    // every sorted margin 0
            ("aot_pair", ["--label_smoothing", "0.1"], ln2),
            ("bco_pair", [], 2 * ln2),                                           // every reward and their running mean 0
        })
        {
            var r = CliRunner.Run(["dpo", "--policy", model, "--data", data, "--out", P(type), "--loss_type", type, "--max-steps", "2",
                "--batch-size", "4", "--threads", "1", "--save-steps", "0", "--logging-steps", "1", .. extra]);
            Assert.True(r.ExitCode == 0, $"{type}: {r.StdErr}");
            var train = File.ReadLines(P(type + "/metrics.jsonl")).Select(l => JsonDocument.Parse(l).RootElement)
                .Where(l => l.GetProperty("split").GetString() == "train").ToList();
            Assert.Equal(2, train.Count);
            Assert.Equal(first, train[0].GetProperty("loss").GetDouble(), 4);
            Assert.Equal(type, JsonDocument.Parse(File.ReadAllText(P(type + "/run_config.json"))).RootElement.GetProperty("loss_type").GetString());
        }
        var exo = CliRunner.Run("dpo", "--policy", model, "--data", data, "--out", P("exo0"), "--loss-type", "exo_pair", "--max-steps", "1");
        Assert.Equal(2, exo.ExitCode);
        Assert.Contains("exo_pair needs --label-smoothing", exo.StdErr);
    }

    /// <summary>--matmul-precision through the CLI: medium trains a LoRA run (run_config records it, metrics finite; on a
    /// CPU without the AVX512-BF16 kernel a note says the products run in float32); a bad value and a full-parameter run
    /// (whose float32 policy would differ from its frozen copies) are clear errors, exit 2.</summary>
    [Fact]
    public void MatmulPrecisionMediumTrainsAndBadValuesAreRefused()
    {
        string model = Init();
        string data = DpoFixtures.Pairs(P("train.jsonl"), 8, seed: 1);
        var r = CliRunner.Run("dpo", "--policy", model, "--data", data, "--out", P("medium"), "--lora-r", "4", "--matmul-precision", "medium",
            "--max-steps", "2", "--batch-size", "4", "--save-steps", "0", "--logging-steps", "1");
        Assert.True(r.ExitCode == 0, r.StdErr);
        Assert.Equal("medium", JsonDocument.Parse(File.ReadAllText(P("medium/run_config.json"))).RootElement.GetProperty("matmul_precision").GetString());
        var train = File.ReadLines(P("medium/metrics.jsonl")).Select(l => JsonDocument.Parse(l).RootElement)
            .Where(l => l.GetProperty("split").GetString() == "train").ToList();
        Assert.Equal(2, train.Count);
        Assert.All(train, l => Assert.True(double.IsFinite(l.GetProperty("loss").GetDouble())));
        Assert.Equal(!AlignSharp.Engine.Kernels.Gemm.Bf16BlockedRuns(transA: false), r.StdErr.Contains("no AVX512-BF16 kernel"));

        var bad = CliRunner.Run("dpo", "--policy", model, "--data", data, "--out", P("bad"), "--lora-r", "4", "--matmul-precision", "low");
        Assert.Equal(2, bad.ExitCode);
        Assert.Contains("--matmul-precision must be highest or medium, not 'low'", bad.StdErr);
        var full = CliRunner.Run("sft", "--model", model, "--data", data, "--out", P("full"), "--matmul-precision", "medium");
        Assert.Equal(2, full.ExitCode);
        Assert.Contains("--matmul-precision medium", full.StdErr);
        Assert.DoesNotContain("   at ", full.StdErr);
    }

    /// <summary>bco_pair's running reward mean moves with training (not with evaluation: a count of 2 after two steps with an
    /// evaluation after each), is kept in each checkpoint's trainer_state.json, and a run resumed from one ends bit for bit
    /// as the run that never stopped (its losses and its weights).</summary>
    [Fact]
    public void BcoPairsRunningMeanResumesWithTheRun()
    {
        string model = Init();
        string data = DpoFixtures.Pairs(P("train.jsonl"), 16, seed: 3);
        string eval = DpoFixtures.Pairs(P("eval.jsonl"), 4, seed: 4);
        string[] Args(string run) => ["dpo", "--policy", model, "--data", data, "--out", P(run), "--loss-type", "bco_pair", "--max-steps", "4",
            "--batch-size", "4", "--threads", "1", "--save-steps", "2", "--logging-steps", "1", "--learning-rate", "1e-3",
            "--eval-data", eval, "--eval-steps", "1"];
        Assert.Equal(0, CliRunner.Run(Args("full")).ExitCode);
        var part = CliRunner.Run(Args("part"));
        Assert.True(part.ExitCode == 0, part.StdErr);
        var state = JsonDocument.Parse(File.ReadAllText(P("part/checkpoints/step-000002/trainer_state.json"))).RootElement.GetProperty("extra");
        Assert.NotEqual(0.0, state.GetProperty("bco_running_mean").GetDouble());
        Assert.Equal(2.0, state.GetProperty("bco_running_count").GetDouble(), 9);
        Directory.Delete(P("part/final"), true);
        Directory.Delete(P("part/checkpoints/step-000004"), true);
        var resumed = CliRunner.Run([.. Args("part"), "--resume"]);
        Assert.True(resumed.ExitCode == 0, resumed.StdErr);
        Assert.Equal(File.ReadAllBytes(P("full/final/model.safetensors")), File.ReadAllBytes(P("part/final/model.safetensors")));
        double[] Losses(string run) => File.ReadLines(P(run + "/metrics.jsonl")).Select(l => JsonDocument.Parse(l).RootElement)
            .Where(l => l.GetProperty("split").GetString() == "train").Select(l => l.GetProperty("loss").GetDouble()).ToArray();
        Assert.Equal(Losses("full"), Losses("part"));
        var online = CliRunner.Run("online-dpo", "--policy", model, "--prompts", data, "--judge-url", "http://127.0.0.1:9", "--out", P("online"), "--loss-type", "bco_pair");
        Assert.Equal(2, online.ExitCode);
        Assert.Contains("bco_pair is for dpo", online.StdErr);
    }

    /// <summary>--rpo-alpha (TRL's rpo_alpha): at the first step policy and reference agree, so the sigmoid loss is ln 2
    /// and the logged loss is ln 2 + α·nll_loss; with orpo it is refused.</summary>
    [Fact]
    public void RpoAddsAlphaTimesTheChosenNll()
    {
        string model = Init();
        string data = DpoFixtures.Pairs(P("train.jsonl"), 8, seed: 1);
        var r = CliRunner.Run("dpo", "--policy", model, "--data", data, "--out", P("rpo"), "--rpo_alpha", "0.5", "--max-steps", "1",
            "--batch-size", "4", "--threads", "1", "--save-steps", "0", "--logging-steps", "1");
        Assert.True(r.ExitCode == 0, r.StdErr);
        var first = File.ReadLines(P("rpo/metrics.jsonl")).Select(l => JsonDocument.Parse(l).RootElement).First(l => l.GetProperty("split").GetString() == "train");
        double nll = first.GetProperty("nll_loss").GetDouble();
        Assert.True(nll > 1, $"nll_loss {nll}");   // a random byte model: several nats a token
        Assert.Equal(Math.Log(2) + 0.5 * nll, first.GetProperty("loss").GetDouble(), 4);
        var orpo = CliRunner.Run("dpo", "--policy", model, "--data", data, "--out", P("rpo-orpo"), "--loss-type", "orpo", "--rpo-alpha", "1", "--max-steps", "1");
        Assert.Equal(2, orpo.ExitCode);
        Assert.Contains("has its own NLL term", orpo.StdErr);
        // Options that would do nothing for the loss are refused: orpo's weight is --orpo-lambda (TRL's ORPOConfig
        // calls it beta); simpo and orpo take no reference model.
        string[] common = ["dpo", "--policy", model, "--data", data, "--out", P("never"), "--max-steps", "1"];
        foreach (var (extra, expected) in new (string[], string)[]
                 {
                     (["--loss-type", "orpo", "--beta", "0.2"], "its weight of the odds-ratio term is --orpo-lambda"),
                     (["--loss-type", "simpo", "--reference", model], "--loss-type simpo uses no reference model; --reference"),
                     (["--loss-type", "orpo", "--reference-free"], "--loss-type orpo uses no reference model; --reference-free"),
                     (["--simpo-gamma", "5"], "--simpo-gamma is a parameter of --loss-type simpo; sigmoid does not use it"),
                     (["--loss-type", "ipo", "--orpo-lambda", "5"], "--orpo-lambda is a parameter of --loss-type orpo; ipo does not use it"),
                     (["--loss-type", "simpo", "--discopop-tau", "5"], "--discopop-tau is a parameter of --loss-type discopop; simpo does not use it"),
                     (["--eval-only", "--learning-rate", "0.5"], "--out, --max-steps, --learning-rate have no meaning with --eval-only"),
                 })
        {
            var refused = CliRunner.Run([.. common, .. extra]);
            Assert.Equal(2, refused.ExitCode);
            Assert.Contains(expected, refused.StdErr);
        }
        Assert.False(Directory.Exists(P("never")));
    }

    [Fact]
    public void ABadDataLineIsReportedWithFileLineAndField()
    {
        string model = Init();
        string bad = P("bad.jsonl");
        File.WriteAllText(bad, "{\"prompt\": \"a:\", \"chosen\": \" x\", \"rejected\": \" y\"}\n{\"prompt\": \"b:\", \"chosen\": 5, \"rejected\": \" y\"}\n");
        var r = CliRunner.Run("dpo", "--policy", model, "--data", bad, "--out", P("run"), "--max-steps", "1");
        Assert.Equal(2, r.ExitCode);
        Assert.Contains("bad.jsonl:2: field \"chosen\"", r.StdErr);
        Assert.DoesNotContain("   at ", r.StdErr);

        var e = CliRunner.Run("dpo", "--policy", model, "--data", bad, "--eval-only", "--skip-bad-records");
        Assert.True(e.ExitCode == 0, e.StdErr);
        Assert.Contains("skipped 1 bad record", e.StdErr);

        var unknown = CliRunner.Run("dpo", "--policy", model, "--data", bad, "--out", P("run"), "--loss-type", "kto");
        Assert.Equal(2, unknown.ExitCode);
        Assert.Contains("--loss-type", unknown.StdErr);

        var help = CliRunner.Run("dpo", "--help");
        foreach (var flag in new[] { "--policy", "--data", "--eval-data", "--loss-type", "--beta", "--label-smoothing", "--simpo-gamma", "--orpo-lambda", "--reference-free", "--precompute-reference", "--eval-only", "--resume", "--config" })
            Assert.Contains(flag, help.StdOut);
    }
}
