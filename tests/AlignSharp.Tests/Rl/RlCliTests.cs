using System.Text.Json;

namespace AlignSharp.Tests.Rl;

/// <summary>alignsharp ppo / grpo / rloo as a user runs them: processes, files, a tiny reward-model directory.</summary>
public sealed class RlCliTests : IDisposable
{
    private readonly RlTestKit _kit = new();
    public void Dispose() => _kit.Dispose();

    private static readonly string[] TrlMetrics =
    [
        "objective/kl", "objective/entropy", "objective/non_score_reward", "objective/rlhf_reward", "objective/scores",
        "policy/approxkl_avg", "policy/clipfrac_avg", "loss/policy_avg", "val/ratio", "val/num_eos_tokens",
        "objective/kl_coef", "lr", "time/generation_s", "time/scoring_s", "time/training_s",
        "tokens_per_s/generation", "tokens_per_s/scoring", "tokens_per_s/training",
    ];

    private string[] Common(string command, string run) =>
    [
        command, "--policy", _kit.Policy(), "--prompts", _kit.Prompts(), "--out", _kit.Path(run), "--seed", "1",
        "--max-new-tokens", "4", "--batch-size", "4", "--threads", "2",
    ];

    [Fact]
    public void PpoRunsEndToEndWithAConfigFileCheckpointsAndResume()
    {
        string rm = _kit.RewardModelDir(mean: 0.5, std: 2);
        string ptx = _kit.File("sft.jsonl", "{\"prompt\": \"Q:\", \"completion\": \"aaa\"}\n{\"prompt\": \"R:\", \"completion\": \"ab\"}\n");
        string config = _kit.File("ppo.yaml", $"max_steps: 2\nsave_steps: 1\nlearning_rate: 0.001\nlr_scheduler: constant\nnum_ppo_epochs: 2\nkl_estimator: full\ntarget_kl: 1.0\nptx_data: {ptx}\nptx_coef: 0.5\nsample_steps: 1\nmissing_eos_penalty: 1.0\n");
        var r = CliRunner.Run([.. Common("ppo", "ppo"), "--reward-model", rm, "--config", config, "--kl-coef", "0.1"]);
        Assert.True(r.ExitCode == 0, r.StdErr);
        string run = _kit.Path("ppo");
        var lines = File.ReadAllLines(Path.Combine(run, "metrics.jsonl")).Select(l => JsonDocument.Parse(l).RootElement).ToList();
        var train = lines.Where(l => l.GetProperty("split").GetString() == "train").ToList();
        Assert.Equal([1, 2], train.Select(l => l.GetProperty("step").GetInt32()));
        foreach (var key in TrlMetrics.Concat(["loss/value_avg", "val/clipfrac_avg", "loss/ptx_avg"]))
            Assert.True(train[1].TryGetProperty(key, out _), $"metrics.jsonl lacks {key}");
        Assert.Equal(0.1, train[0].GetProperty("objective/kl_coef").GetDouble(), 6);
        var samples = lines.Where(l => l.GetProperty("split").GetString() == "samples").ToList();
        Assert.Equal(2, samples.Count);
        Assert.True(samples[0].GetProperty("samples")[0].TryGetProperty("completion", out _));

        var config0 = JsonDocument.Parse(File.ReadAllText(Path.Combine(run, "run_config.json"))).RootElement;
        Assert.Equal("ppo", config0.GetProperty("trainer").GetString());
        Assert.Equal("full", config0.GetProperty("kl_estimator").GetString());
        foreach (var f in new[] { "final/model.safetensors", "final/tokenizer.json", "value_model/model.safetensors", "summary.json",
                     "checkpoints/step-000002/policy/model.safetensors", "checkpoints/step-000002/value/model.safetensors", "checkpoints/step-000002/optimizer.bin" })
            Assert.True(File.Exists(Path.Combine(run, f)), f);
        var state = JsonDocument.Parse(File.ReadAllText(Path.Combine(run, "checkpoints/step-000002/trainer_state.json"))).RootElement;
        Assert.True(state.GetProperty("extra").GetProperty("kl_coef").GetDouble() > 0);

        // --resume continues from the newest checkpoint in --out.
        var resumed = CliRunner.Run([.. Common("ppo", "ppo"), "--reward-model", rm, "--config", config, "--kl-coef", "0.1", "--max-steps", "3", "--resume"]);
        Assert.True(resumed.ExitCode == 0, resumed.StdErr);
        Assert.Contains("resumed from", resumed.StdErr);
        Assert.Contains("step-000002", resumed.StdErr);
        var steps = File.ReadAllLines(Path.Combine(run, "metrics.jsonl")).Select(l => JsonDocument.Parse(l).RootElement)
            .Where(l => l.GetProperty("split").GetString() == "train").Select(l => l.GetProperty("step").GetInt32());
        Assert.Equal([1, 2, 3], steps);
    }

    [Fact]
    public void GrpoAndRlooRunFromTheCommandLine()
    {
        string rm = _kit.RewardModelDir();
        var g = CliRunner.Run([.. Common("grpo", "grpo"), "--reward-model", rm, "--max-steps", "1", "--num-generations", "4", "--kl-coef", "0.02"]);
        Assert.True(g.ExitCode == 0, g.StdErr);
        var r = CliRunner.Run([.. Common("rloo", "rloo"), "--reward-model", rm, "--max-steps", "1", "--rloo-k", "2", "--kl-estimator", "full", "--kl-in-reward", "false"]);
        Assert.True(r.ExitCode == 0, r.StdErr);
        foreach (var (run, trainer) in new[] { ("grpo", "grpo"), ("rloo", "rloo") })
        {
            var line = RlTestKit.TrainMetrics(_kit.Path(run)).Single();
            foreach (var key in TrlMetrics) Assert.True(line.TryGetProperty(key, out _), $"{trainer}: metrics.jsonl lacks {key}");
            Assert.True(line.TryGetProperty("loss/kl_avg", out _));
            // GRPO's own (TRL's GRPOTrainer names); RLOO has no groups normalised by their std, so none of them.
            foreach (var key in new[] { "reward", "reward_std", "frac_reward_zero_std", "completions/mean_length" })
                Assert.Equal(trainer == "grpo", line.TryGetProperty(key, out _));
            if (trainer == "grpo")
            {
                double frac = line.GetProperty("frac_reward_zero_std").GetDouble();
                Assert.InRange(frac, 0, 1);
                Assert.True(line.GetProperty("reward_std").GetDouble() >= 0);
                Assert.Equal(line.GetProperty("completion_length").GetDouble(), line.GetProperty("completions/mean_length").GetDouble(), 9);
                Assert.Equal(line.GetProperty("objective/scores").GetDouble(), line.GetProperty("reward").GetDouble(), 6);
            }
            var summary = JsonDocument.Parse(File.ReadAllText(Path.Combine(_kit.Path(run), "summary.json"))).RootElement;
            Assert.Equal(trainer, summary.GetProperty("trainer").GetString());
        }
    }

    /// <summary>A step whose every completion is masked (all cut at --max-new-tokens under --mask-truncated-completions) has no
    /// token to average a ratio or an entropy over: those metrics are left out, not logged as 0.</summary>
    [Fact]
    public void AFullyMaskedStepLogsNoTokenMeans()
    {
        string rm = _kit.RewardModelDir();
        string[] common = Common("grpo", "masked");
        common[Array.IndexOf(common, "--max-new-tokens") + 1] = "1";
        var g = CliRunner.Run([.. common, "--reward-model", rm, "--max-steps", "1", "--num-generations", "4", "--mask-truncated-completions", "true"]);
        Assert.True(g.ExitCode == 0, g.StdErr);
        var line = RlTestKit.TrainMetrics(_kit.Path("masked")).Single();
        Assert.Equal(0, line.GetProperty("val/num_eos_tokens").GetDouble());   // every completion truncated
        foreach (var key in new[] { "val/ratio", "val/ratio_var", "policy/entropy_avg", "policy/approxkl_avg", "policy/clipfrac_avg" })
            Assert.False(line.TryGetProperty(key, out _), $"a fully masked step logged {key}");
        Assert.True(line.TryGetProperty("loss/policy_avg", out _));

        // dapo normalises by the step's counted tokens: none here, so there is no mean loss to log either (it was 0/0, "NaN").
        common[Array.IndexOf(common, "--out") + 1] = _kit.Path("masked-dapo");
        var d = CliRunner.Run([.. common, "--reward-model", rm, "--max-steps", "1", "--num-generations", "4",
            "--mask-truncated-completions", "true", "--loss-type", "dapo"]);
        Assert.True(d.ExitCode == 0, d.StdErr);
        var dapo = RlTestKit.TrainMetrics(_kit.Path("masked-dapo")).Single();
        Assert.False(dapo.TryGetProperty("loss/policy_avg", out _));
        Assert.DoesNotContain("NaN", File.ReadAllText(Path.Combine(_kit.Path("masked-dapo"), "metrics.jsonl")));
    }

    /// <summary>--logging-steps N writes every N-th rollout step's line (and the last), each metric the mean of the window's
    /// steps, the learning rate and counters their latest value: the same rollouts logged every step give the expected means.</summary>
    [Fact]
    public void LoggingStepsAverageTheWindowsRolloutSteps()
    {
        string rm = _kit.RewardModelDir();
        string[] run = ["--reward-model", rm, "--max-steps", "3", "--num-generations", "2", "--learning-rate", "0.01", "--lr-scheduler", "linear"];
        Assert.Equal(0, CliRunner.Run([.. Common("grpo", "every"), .. run]).ExitCode);
        var g = CliRunner.Run([.. Common("grpo", "window"), .. run, "--logging-steps", "2"]);
        Assert.True(g.ExitCode == 0, g.StdErr);
        var every = RlTestKit.TrainMetrics(_kit.Path("every")).ToList();
        var window = RlTestKit.TrainMetrics(_kit.Path("window")).ToList();
        Assert.Equal([2, 3], window.Select(l => l.GetProperty("step").GetInt32()));
        double At(JsonElement line, string key) => line.GetProperty(key).GetDouble();
        foreach (var key in new[] { "objective/scores", "objective/kl", "loss/policy_avg", "completion_length", "reward_std" })
        {
            Assert.Equal((At(every[0], key) + At(every[1], key)) / 2, At(window[0], key), 9);
            Assert.Equal(At(every[2], key), At(window[1], key), 9);
        }
        foreach (var key in new[] { "learning_rate", "episode" }) Assert.Equal(At(every[1], key), At(window[0], key), 12);
        Assert.NotEqual(At(every[0], "learning_rate"), At(every[1], "learning_rate"));
    }

    /// <summary>TRL's total_episodes counts completions: ⌈E ÷ (batch × accumulation × minibatches)⌉ rollout steps, rloo's
    /// k completions of a prompt each an episode; with --max-steps it is refused rather than one of them ignored.</summary>
    [Fact]
    public void TotalEpisodesSetsTheRolloutStepsAsTrlCountsThem()
    {
        string rm = _kit.RewardModelDir();
        int TrainSteps(string run) => File.ReadAllLines(Path.Combine(_kit.Path(run), "metrics.jsonl")).Select(l => JsonDocument.Parse(l).RootElement)
            .Count(l => l.GetProperty("split").GetString() == "train");
        // ppo: batch 4 × accumulation 1 × 2 minibatches = 8 completions a step, 17 episodes → 3 steps; rloo with k = 2:
        // 4 a step (2 prompts), 9 → 3.
        foreach (var (command, run, extra) in new[]
        {
            ("ppo", "episodes-ppo", new[] { "--total_episodes", "17", "--num-mini-batches", "2", "--num-ppo-epochs", "1" }),
            ("rloo", "episodes-rloo", ["--total-episodes", "9", "--rloo-k", "2", "--num-ppo-epochs", "1"]),
        })
        {
            var r = CliRunner.Run([.. Common(command, run), "--reward-model", rm, "--save-steps", "0", .. extra]);
            Assert.True(r.ExitCode == 0, r.StdErr);
            Assert.Equal(3, TrainSteps(run));
            Assert.Equal(3, JsonDocument.Parse(File.ReadAllText(Path.Combine(_kit.Path(run), "summary.json"))).RootElement.GetProperty("steps").GetInt32());
        }

        var both = CliRunner.Run([.. Common("ppo", "episodes-both"), "--reward-model", rm, "--total-episodes", "8", "--max-steps", "2"]);
        Assert.Equal(2, both.ExitCode);
        Assert.Contains("--total-episodes and --max-steps", both.StdErr);
        Assert.DoesNotContain("   at ", both.StdErr);
    }

    /// <summary>TRL's GRPO variants by their TRL names: each reaches the run (run_config.json) and the update (the final
    /// policy differs from plain GRPO's on the same seed); bad values and GSPO on PPO are clean errors.</summary>
    [Fact]
    public void GrpoVariantsByTheirTrlNames()
    {
        string rm = _kit.RewardModelDir();
        string[] Grpo(string run) => [.. Common("grpo", run), "--reward-model", rm, "--num-generations", "2", "--max-steps", "2", "--save-steps", "0",
            "--learning-rate", "0.01", "--num-ppo-epochs", "2"];
        var plain = CliRunner.Run(Grpo("plain"));
        Assert.True(plain.ExitCode == 0, plain.StdErr);
        var trainLine = File.ReadAllLines(Path.Combine(_kit.Path("plain"), "metrics.jsonl")).Select(l => JsonDocument.Parse(l).RootElement)
            .First(l => l.GetProperty("split").GetString() == "train");
        foreach (var key in new[] { "clip_ratio/low_mean", "clip_ratio/high_mean", "clip_ratio/region_mean" })
            Assert.True(trainLine.TryGetProperty(key, out _), key);
        byte[] Weights(string run) => File.ReadAllBytes(Path.Combine(_kit.Path(run), "final", "model.safetensors"));
        foreach (var (run, extra, key, value) in new[]
        {
            ("dapo", new[] { "--loss_type", "dapo", "--mask_truncated_completions" }, "loss_type", "dapo"),
            ("drgrpo", ["--loss-type", "dr_grpo", "--scale_rewards", "false"], "scale_rewards", "false"),
            ("batch", ["--scale-rewards", "batch"], "scale_rewards", "batch"),
            ("gspo", ["--importance_sampling_level", "sequence", "--epsilon", "0.0003", "--epsilon_high", "0.0004"], "importance_sampling_level", "sequence"),
            ("delta", ["--epsilon_high", "0.28", "--delta", "1.5"], "delta", "1.5"),
        })
        {
            var r = CliRunner.Run([.. Grpo(run), .. extra]);
            Assert.True(r.ExitCode == 0, $"{run}: {r.StdErr}");
            var config = JsonDocument.Parse(File.ReadAllText(Path.Combine(_kit.Path(run), "run_config.json"))).RootElement;
            Assert.Equal(value, config.GetProperty(key).ToString());
            if (run != "delta") Assert.NotEqual(Weights("plain"), Weights(run));   // δ only acts on ratios above 1.5, which two steps need not reach
        }

        foreach (var (args, message) in new[]
        {
            (new[] { "--loss-type", "ppo" }, "--loss-type must be grpo, bnpo, dr_grpo or dapo"),
            (["--scale-rewards", "yes"], "--scale-rewards must be group, batch or none"),
            (["--importance-sampling-level", "seq"], "--importance-sampling-level must be token or sequence"),
            (["--delta", "1.1"], "must exceed 1 + the upper clip range"),
        })
        {
            var bad = CliRunner.Run([.. Grpo("bad"), .. args]);
            Assert.Equal(2, bad.ExitCode);
            Assert.Contains(message, bad.StdErr);
            Assert.DoesNotContain("   at ", bad.StdErr);
        }
        var ppo = CliRunner.Run([.. Common("ppo", "ppo-gspo"), "--reward-model", rm, "--importance-sampling-level", "sequence"]);
        Assert.Equal(2, ppo.ExitCode);
        Assert.Contains("use grpo or rloo", ppo.StdErr);
    }

    [Fact]
    public void BadInputIsReportedWithFileLineAndField()
    {
        string rm = _kit.RewardModelDir();
        string prompts = _kit.File("bad.jsonl", "{\"prompt\": \"fine\"}\n{\"prompt\": 5}\n");
        var r = CliRunner.Run("ppo", "--policy", _kit.Policy(), "--prompts", prompts, "--reward-model", rm, "--out", _kit.Path("bad"), "--max-steps", "1");
        Assert.Equal(2, r.ExitCode);
        Assert.Contains("bad.jsonl:2", r.StdErr);
        Assert.Contains("\"prompt\"", r.StdErr);

        var noReward = CliRunner.Run("grpo", "--policy", _kit.Policy(), "--prompts", _kit.Prompts(), "--out", _kit.Path("x"), "--max-steps", "1");
        Assert.Equal(2, noReward.ExitCode);
        Assert.Contains("--reward-model", noReward.StdErr);

        var badEstimator = CliRunner.Run("ppo", "--policy", _kit.Policy(), "--prompts", _kit.Prompts(), "--reward-model", rm, "--out", _kit.Path("y"), "--kl-estimator", "k9");
        Assert.Equal(2, badEstimator.ExitCode);
        Assert.Contains("k1, k2, k3 or full", badEstimator.StdErr);

        var indivisible = CliRunner.Run("grpo", "--policy", _kit.Policy(), "--prompts", _kit.Prompts(), "--reward-model", rm, "--out", _kit.Path("z"), "--batch-size", "6", "--num-generations", "4");
        Assert.Equal(2, indivisible.ExitCode);
        Assert.Contains("multiple of the 4 completions per prompt", indivisible.StdErr);
    }
}
