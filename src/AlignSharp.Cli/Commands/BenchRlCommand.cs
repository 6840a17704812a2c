using System.CommandLine;
using System.Diagnostics;
using System.Text.Json;
using AlignSharp.Engine.Kernels;
using AlignSharp.Models;
using AlignSharp.Text;
using AlignSharp.Training.Data;
using AlignSharp.Training.Rewards;
using AlignSharp.Training.Rl;

namespace AlignSharp.Cli.Commands;

/// <summary>
/// `alignsharp bench rl`: one PPO rollout step on a checkpoint, through the trainer's own parts (the models as
/// <see cref="RlTrainer.LoadModels"/> loads them, <see cref="RolloutCollector.CollectTokens"/>, <see cref="RlTrainer.TrainOn"/>),
/// on random prompt tokens with no end-of-sequence token (every completion is --max-new-tokens long), so that the PyTorch
/// reference bench/torch_qwen2_ppo.py runs the same shapes. Prints the median time of each part and the model-FLOPs
/// utilisation of the scoring passes and of the update against a float32 GEMM timed in the same process.
/// </summary>
public static class BenchRlCommand
{
    public static Command Create()
    {
        var modelDir = new Option<string>("--model") { Description = "The policy: a checkpoint directory (config.json + safetensors; no tokenizer needed).", Required = true };
        var rewardDir = new Option<string?>("--reward-model") { Description = "A scalar-head checkpoint that reads the policy's tokens (default: the policy's trunk with a random score head, a frozen copy)." };
        var batch = new Option<int>("--batch") { Description = "Prompts (= completions) per step; also the scoring and update micro-batch.", DefaultValueFactory = _ => 4 };
        var promptLen = new Option<int>("--prompt-len") { Description = "Prompt tokens (random ids).", DefaultValueFactory = _ => 16 };
        var newTokens = new Option<int>("--max-new-tokens") { Description = "Tokens generated per completion (no EOS stops them).", DefaultValueFactory = _ => 64 };
        var epochs = new Option<int>("--num-ppo-epochs") { Description = "PPO epochs over the batch in the update (the ppo trainer's default is 4).", DefaultValueFactory = _ => 1 };
        var steps = new Option<int>("--steps") { Description = "Timed PPO steps (the median of each part is reported).", DefaultValueFactory = _ => 3 };
        var warmup = new Option<int>("--warmup") { Description = "Untimed PPO steps first (JIT, buffer pools).", DefaultValueFactory = _ => 1 };
        var threads = new Option<int?>("--threads") { Description = "Kernel threads (default: all cores)." };
        var loraR = new Option<int>("--lora-r") { Description = "LoRA rank of the policy and value adapters (0 = full-parameter training of policy and value model).", DefaultValueFactory = _ => 0 };
        var loraAlpha = new Option<double>("--lora-alpha") { Description = "LoRA alpha (0 = 2×r), as the trainers take it." };
        var loraDropout = new Option<double>("--lora-dropout") { Description = "Dropout on the adapters' input in the update, as the trainers take it.", DefaultValueFactory = _ => 0.05 };
        var loraTargets = new Option<string>("--lora-target-modules") { Description = "Modules to adapt (checkpoint names, comma-separated) or all-linear.", DefaultValueFactory = _ => "all-linear" };
        var frozenDtype = new Option<string?>("--frozen-dtype") { Description = "Storage of the frozen weights (reference, reward model, a LoRA run's base): bf16 or fp32 (default: as the checkpoint stores them)." };
        var checkpointing = new Option<bool>("--gradient-checkpointing") { Description = "Recompute each block's activations in the backward pass (policy and value model)." };
        var precision = new Option<string>("--matmul-precision") { Description = "Products with frozen bf16 weights, as the trainers take it: highest (inputs exact) or medium (inputs rounded to bf16; needs --lora-r, as the trainers do).", DefaultValueFactory = _ => "highest" };
        var cmd = new Command("rl", "One PPO step on a checkpoint with its time split; prints {\"generation_s\", \"reference_s\", \"value_s\", \"reward_s\", \"update_s\", \"total_s\", \"mfu_scoring\", \"mfu_update\", ...} (medians).")
        {
            modelDir, rewardDir, batch, promptLen, newTokens, epochs, steps, warmup, threads, loraR, loraAlpha, loraDropout, loraTargets, frozenDtype, checkpointing, precision,
        };
        cmd.SetAction(r => CliErrors.Guard(() =>
        {
            int b = r.GetValue(batch), p = r.GetValue(promptLen), n = r.GetValue(newTokens), nSteps = r.GetValue(steps), nWarm = r.GetValue(warmup);
            if (b < 1) throw new CliException("--batch must be >= 1.");
            if (p < 1) throw new CliException("--prompt-len must be >= 1.");
            if (n < 1) throw new CliException("--max-new-tokens must be >= 1.");
            if (nSteps < 1) throw new CliException("--steps must be >= 1.");
            if (nWarm < 0) throw new CliException("--warmup must be >= 0.");
            if (r.GetValue(threads) is < 1) throw new CliException("--threads must be >= 1.");
            string dir = r.GetValue(modelDir)!;
            if (!Directory.Exists(dir)) throw new CliException($"--model: directory '{dir}' does not exist.");
            string? rmDir = r.GetValue(rewardDir);
            if (rmDir != null && !Directory.Exists(rmDir)) throw new CliException($"--reward-model: directory '{rmDir}' does not exist.");
            var options = new PpoOptions
            {
                Policy = dir,
                Prompts = "(random token ids)",
                Out = "(none: bench rl writes no run directory)",
                BatchSize = b,
                MaxPromptLength = p,
                MaxNewTokens = n,
                GenerationBatchSize = b,
                NumPpoEpochs = r.GetValue(epochs),
                ValueModel = "policy",
                LoraR = r.GetValue(loraR),
                LoraAlpha = r.GetValue(loraAlpha),
                LoraDropout = r.GetValue(loraDropout),
                LoraTargetModules = r.GetValue(loraTargets)!,
                FrozenDtype = r.GetValue(frozenDtype),
                GradientCheckpointing = r.GetValue(checkpointing),
                MatmulPrecision = r.GetValue(precision)!,
                Threads = r.GetValue(threads) ?? 0,
            };
            options.Validate();
            using var threadScope = ParallelFor.UseThreads(options.Threads);
            using var precisionScope = options.OpenMatmulPrecision();
            Console.Out.WriteLine(JsonSerializer.Serialize(Run(options, rmDir, nWarm, nSteps)));
            return 0;
        }));
        return cmd;
    }

    public static Dictionary<string, object> Run(PpoOptions options, string? rewardDir, int warmup, int steps)
    {
        string dir = options.Policy!;
        var pre = options.LoadTrained(dir);
        var cfg = pre.Model.Config;
        if (cfg.Head != HeadKind.LanguageModel) throw new CliException($"--model {dir}: the policy needs a language-model head.");
        int b = options.BatchSize, p = options.MaxPromptLength, n = options.MaxNewTokens;
        if (p + n > cfg.MaxPositions) throw new CliException($"--prompt-len + --max-new-tokens = {p + n} exceeds the policy's {cfg.MaxPositions} positions.");
        var models = RlTrainer.LoadModels(options, pre, tokenizer: null, ChatTemplate.Plain, rewardModel: null);
        // The reward model: the given scalar-head checkpoint, or the policy's weights with a random score head; frozen.
        var rewardModel = options.LoadFrozen(rewardDir ?? dir, rewardDir == null ? HeadKind.Scalar : null, seed: 17);
        if (rewardModel.Config.Head != HeadKind.Scalar) throw new CliException($"--reward-model {rewardDir}: a reward model needs a scalar head: {RewardModel.ScalarHeadHint}.");
        if (rewardModel.Config.VocabSize < cfg.VocabSize) throw new CliException($"--reward-model {rewardDir}: {rewardModel.Config.VocabSize} token embeddings, fewer than the policy's {cfg.VocabSize}: it cannot read the policy's tokens.");
        var reward = new RewardFunction(new TokenRewardModelSource(rewardModel, b));
        var rollout = RolloutOptions.From(options);
        var collector = new RolloutCollector(models, reward, rollout with { Sampling = rollout.Sampling with { EosIds = [] } });

        var rng = new Random(0);
        var promptIds = Enumerable.Range(0, b).Select(_ => Enumerable.Range(0, p).Select(_ => rng.Next(cfg.VocabSize)).ToArray()).ToArray();
        var prompts = promptIds.Select((_, i) => new PromptExample(ChatContent.FromText(""), new RecordSource("(random token ids)", i + 1))).ToArray();
        var texts = prompts.Select(_ => "").ToArray();
        var trainer = new RlTrainer(options, new Ppo(options), models, prompts, reward);

        var parts = new[] { "generation_s", "policy_s", "reference_s", "value_s", "reward_s", "scoring_s", "update_s", "total_s" };
        var times = parts.ToDictionary(k => k, _ => new List<double>());
        RolloutBatch? last = null;
        int total = warmup + steps;
        for (int step = 1; step <= total; step++)
        {
            var clock = Stopwatch.StartNew();
            var batch = collector.CollectTokens(prompts, texts, promptIds, seed: step);
            var updateClock = Stopwatch.StartNew();
            var (metrics, applied) = trainer.TrainOn(batch, step, total);
            double update = updateClock.Elapsed.TotalSeconds, all = clock.Elapsed.TotalSeconds;
            Console.Error.WriteLine($"{(step <= warmup ? "warmup" : "step")} {step}: generation {batch.GenerationSeconds:F2} s, scoring {batch.ScoringSeconds:F2} s " +
                $"(policy {batch.PolicyScoringSeconds:F2}, reference {batch.ReferenceSeconds:F2}, value {batch.ValueSeconds:F2}, reward {batch.RewardSeconds:F2}), " +
                $"update {update:F2} s ({applied} optimizer steps, policy loss {metrics.GetValueOrDefault("loss/policy_avg"):F4}), total {all:F2} s");
            if (step <= warmup) continue;
            times["generation_s"].Add(batch.GenerationSeconds);
            times["policy_s"].Add(batch.PolicyScoringSeconds);
            times["reference_s"].Add(batch.ReferenceSeconds);
            times["value_s"].Add(batch.ValueSeconds);
            times["reward_s"].Add(batch.RewardSeconds);
            times["scoring_s"].Add(batch.ScoringSeconds);
            times["update_s"].Add(update);
            times["total_s"].Add(all);
            last = batch;
        }
        var median = times.ToDictionary(kv => kv.Key, kv => Median(kv.Value));

        // Model FLOPs (PpoFlops) over the measured times, against the GEMM peak timed here: float32's, or with
        // --matmul-precision medium the bf16-input kernel's that the frozen products then run on.
        var flops = new PpoFlops(pre.Model, rewardModel, options.TrainsAdapter);
        var rows = last!.PromptIds.Select((ids, i) => (ids.Length, last.CompletionIds[i].Length)).ToArray();
        double scoringFlops = flops.Scoring(rows), updateFlops = flops.Update(rows) * options.NumPpoEpochs;
        bool medium = options.MatmulPrecision == "medium";
        double peak = BenchGemmCommand.MeasureGflops(1024, 1024, 1024, bf16Medium: medium);
        double scoringGflops = scoringFlops / median["scoring_s"] / 1e9, updateGflops = updateFlops / median["update_s"] / 1e9;
        var result = new Dictionary<string, object>
        {
            ["model"] = Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(dir))),
            ["reward_model"] = rewardDir == null ? "(policy trunk, random score head)" : Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(rewardDir))),
            ["params"] = pre.Model.ParameterCount,
            ["training"] = options.TrainsAdapter ? $"lora r{options.LoraR}" : "full-parameter",
            ["frozen_dtype"] = options.FrozenInBf16(dir) ? "bf16" : "fp32",
            ["gradient_checkpointing"] = options.GradientCheckpointing,
            ["matmul_precision"] = options.MatmulPrecision,
            ["batch"] = options.BatchSize,
            ["prompt_len"] = p,
            ["max_new_tokens"] = n,
            ["num_ppo_epochs"] = options.NumPpoEpochs,
            ["threads"] = ParallelFor.Threads,
            ["cpu"] = BenchHost.Cpu,
            ["bf16_prefetch"] = BenchHost.Bf16Prefetch,
            ["steps"] = steps,
            ["tokens"] = last.TotalTokens,
            ["completion_tokens"] = last.CompletionTokens,
        };
        foreach (var part in parts) result[part] = Math.Round(median[part], 3);
        result["generation_tokens_per_s"] = Math.Round(last.CompletionTokens / median["generation_s"], 2);
        result["scoring_flops"] = scoringFlops;
        result["update_flops"] = updateFlops;
        result["scoring_gflops"] = Math.Round(scoringGflops, 1);
        result["update_gflops"] = Math.Round(updateGflops, 1);
        result["gemm_peak_gflops"] = Math.Round(peak, 1);
        result["gemm_peak_kernel"] = !medium ? "f32" : Gemm.Bf16BlockedRuns(transA: false) ? "vdpbf16ps-blocked" : "rounded-widened";
        result["mfu_scoring"] = Math.Round(scoringGflops / peak, 4);
        result["mfu_update"] = Math.Round(updateGflops / peak, 4);
        result["peak_rss_mib"] = PeakRssMib();
        return result;
    }

    private static double Median(List<double> xs)
    {
        var s = xs.Order().ToArray();
        return s.Length % 2 == 1 ? s[s.Length / 2] : (s[s.Length / 2 - 1] + s[s.Length / 2]) / 2;
    }

    /// <summary>The process's peak resident set (VmHWM) in MiB, or -1 where /proc is not there.</summary>
    private static long PeakRssMib()
    {
        const string status = "/proc/self/status";
        if (!File.Exists(status)) return -1;
        var line = File.ReadLines(status).FirstOrDefault(l => l.StartsWith("VmHWM:", StringComparison.Ordinal));
        return line == null ? -1 : long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]) / 1024;
    }
}

/// <summary>
/// Model FLOPs of a PPO step's dense work, counted as the PyTorch reference counts them (bench/torch_qwen2_ppo.py): a
/// linear layer costs 2 FLOPs per weight per token forward, 2 for its input gradient and 2 more for its weight gradient
/// when it trains (full-parameter; with LoRA the base is frozen and the adapters' own small products are not counted);
/// attention QKᵀ and AV over the full square, 4·T·q_dim per token and layer forward, twice that backward. The LM head
/// (V × d) runs only at the completion positions; value and reward heads are one row and not counted. Recomputation by
/// gradient checkpointing is not model FLOPs.
/// </summary>
public sealed class PpoFlops(TransformerModel policy, TransformerModel rewardModel, bool lora)
{
    private readonly double _trunk = BenchModels.LinearMacsPerToken(policy) - HeadMacs(policy);
    private readonly double _head = HeadMacs(policy);
    private readonly double _rewardTrunk = BenchModels.LinearMacsPerToken(rewardModel) - HeadMacs(rewardModel);

    private static double HeadMacs(TransformerModel m) => m.Config.Head == HeadKind.LanguageModel ? (double)m.Config.VocabSize * m.Config.EmbedDim : 0;

    /// <summary>Forward FLOPs of one trunk pass over rows of T = prompt + completion tokens.</summary>
    private static double Trunk(TransformerModel m, double macsPerToken, (int Prompt, int Completion)[] rows) =>
        rows.Sum(r => { double t = r.Prompt + r.Completion; return 2 * macsPerToken * t + 4.0 * m.Config.NumLayers * m.Config.QueryDim * t * t; });

    private static double Attention(TransformerModel m, (int Prompt, int Completion)[] rows) =>
        rows.Sum(r => { double t = r.Prompt + r.Completion; return 4.0 * m.Config.NumLayers * m.Config.QueryDim * t * t; });

    /// <summary>π_old (trunk + LM head at the completion positions), the reference (the same), the value model (trunk) and
    /// the reward model (its trunk), all forward.</summary>
    public double Scoring((int Prompt, int Completion)[] rows)
    {
        double head = 2 * _head * rows.Sum(r => r.Completion);
        return 3 * Trunk(policy, _trunk, rows) + 2 * head + Trunk(rewardModel, _rewardTrunk, rows);
    }

    /// <summary>One PPO epoch: the policy (trunk + LM head) and the value model (trunk), forward and backward.</summary>
    public double Update((int Prompt, int Completion)[] rows)
    {
        double perWeight = lora ? 6 - 2 : 6; // forward 2 + input gradient 2 (+ weight gradient 2 when the weights train)
        double tokens = rows.Sum(r => r.Prompt + r.Completion), completions = rows.Sum(r => r.Completion);
        double linear = perWeight * _trunk * tokens, attention = 3 * Attention(policy, rows);
        return 2 * (linear + attention) + perWeight * _head * completions;
    }
}
