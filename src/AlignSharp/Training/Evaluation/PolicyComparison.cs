using System.Text.Json;
using System.Text.Json.Nodes;
using AlignSharp.Models;
using AlignSharp.Models.Checkpoints;
using AlignSharp.Text;
using AlignSharp.Training.Data;
using AlignSharp.Training.Rewards;
using AlignSharp.Training.Rl;

namespace AlignSharp.Training.Evaluation;

/// <summary>The options of <c>alignsharp eval</c> (flags in kebab case; their help and defaults are in src/AlignSharp.Cli/Commands/EvalCommand.cs).</summary>
public sealed record EvalOptions
{
    public string? Policy { get; init; }
    public string? Baseline { get; init; }
    /// <summary>A LoRA adapter directory applied to the policy (--adapter).</summary>
    public string? Adapter { get; init; }
    /// <summary>A LoRA adapter directory applied to the baseline (--baseline-adapter).</summary>
    public string? BaselineAdapter { get; init; }
    public string? Prompts { get; init; }
    public string? JudgeModel { get; init; }
    public string? JudgeUrl { get; init; }
    public int SamplesPerPrompt { get; init; } = 1;
    public string? Out { get; init; }
    public int MaxNewTokens { get; init; } = 64;
    public float Temperature { get; init; } = 1f;
    public int Seed { get; init; }
    /// <summary>--chat-template: auto (the policy's own template; plain when it has none), a built-in name, or a .jinja file.</summary>
    public string ChatTemplate { get; init; } = "auto";
    /// <summary>--chat-template-kwargs: a JSON object of the template's keyword arguments (Qwen3's enable_thinking).</summary>
    public string? ChatTemplateKwargs { get; init; }
    public int MaxPromptLength { get; init; } = 512;
    public int BatchSize { get; init; } = 16;
    /// <summary>--overwrite: replace the evaluation already in --out.</summary>
    public bool Overwrite { get; init; }

    /// <summary>The files an evaluation writes into --out.</summary>
    public static readonly string[] OutputFiles = ["eval.json", "samples.jsonl", "eval.html"];

    public void Validate()
    {
        if (string.IsNullOrWhiteSpace(Policy)) throw new UserInputException("--policy (the model to evaluate) is required.");
        if (string.IsNullOrWhiteSpace(Prompts)) throw new UserInputException("--prompts (the prompts file) is required.");
        if (!File.Exists(Prompts)) throw new UserInputException($"--prompts: {Prompts} does not exist.");
        if (string.IsNullOrWhiteSpace(Out)) throw new UserInputException("--out (the output directory) is required.");
        if (BaselineAdapter != null && Baseline == null) throw new UserInputException("--baseline-adapter needs --baseline (the model it applies to).");
        if ((JudgeModel == null) == (JudgeUrl == null)) throw new UserInputException("Give exactly one judge: --judge-model RM_DIR or --judge-url URL.");
        if (SamplesPerPrompt < 1) throw new UserInputException("--samples-per-prompt must be ≥ 1.");
        if (MaxNewTokens < 1) throw new UserInputException("--max-new-tokens must be ≥ 1.");
        if (!(Temperature > 0) || !float.IsFinite(Temperature)) throw new UserInputException("--temperature must be > 0: evaluation samples, and the KL is measured between the sampling distributions.");
        if (MaxPromptLength < 1) throw new UserInputException("--max-prompt-length must be ≥ 1.");
        if (BatchSize < 1) throw new UserInputException("--batch-size must be ≥ 1.");
        Data.ChatTemplate.ValidateOption(ChatTemplate, ChatTemplateKwargs);
        ValidateOut();
    }

    /// <summary>--out is a directory of its own: never a model or a training run (whose files an evaluation would mix
    /// with or replace), and an earlier evaluation there is replaced only with --overwrite.</summary>
    private void ValidateOut()
    {
        if (File.Exists(Out)) throw new UserInputException($"--out {Out} is a file; give a directory.");
        if (!Directory.Exists(Out)) return;
        if (File.Exists(Path.Combine(Out, "config.json")) || File.Exists(Path.Combine(Out, "adapter_config.json")))
            throw new UserInputException($"--out {Out} holds a model; write the evaluation to a directory of its own.");
        if (Runs.RunDirectory.HoldsRun(Out))
            throw new UserInputException($"--out {Out} holds a training run; write the evaluation to a directory of its own.");
        if (!Overwrite && OutputFiles.FirstOrDefault(f => File.Exists(Path.Combine(Out, f))) is { } earlier)
            throw new UserInputException($"--out {Out} already holds an evaluation ({earlier}); pass --overwrite to replace it, or choose another --out.");
    }
}

/// <summary>One evaluated slot: a prompt and the completions of the policy and the baseline drawn from the same stream.</summary>
public sealed record EvalSlot(
    string Prompt, string Policy, string? Baseline, int PolicyTokens, int? BaselineTokens,
    double? PolicyReward, double? BaselineReward, double? Preference, double? Outcome, double? KlSampled, double? KlExact);

/// <summary>The measurements of an evaluation (eval.json's numbers; NaN where not measured).</summary>
public sealed record EvalResult(
    IReadOnlyList<EvalSlot> Slots, Estimate? WinRate, Estimate? PolicyReward, Estimate? BaselineReward,
    Estimate? KlSampled, Estimate? KlExact, double KlSampledPerToken, double KlExactPerToken,
    double PolicyLength, double? BaselineLength, double PolicyDistinct2, double? BaselineDistinct2, string ChatTemplate);

/// <summary>
/// <c>alignsharp eval</c>: a policy against a baseline on a prompt set.
/// 1. Render and tokenize the prompts (as the RL trainers do); repeat each for its samples: the slots.
/// 2. Sample one completion per slot from each policy with the same seeded per-slot streams.
/// 3. KL(policy ‖ baseline) on the policy's completions: the sampled estimate Σ_t log π − log π_b and the exact Σ_t KL_t.
/// 4. Judge: rewards per completion (a reward model or a reward endpoint), or pairwise preferences (an HTTP judge).
/// 5. Statistics: win rate (ties ½; identical completions always tie) with its Wilson interval, reward means with normal
///    intervals, length, distinct-2; written as eval.json, samples.jsonl and eval.html.
/// </summary>
public static class PolicyComparison
{
    /// <summary>Two rewards closer than this (relative to the larger magnitude, at least 1) are a tie.</summary>
    public const double RewardTieTolerance = 1e-6;

    public static EvalResult Run(EvalOptions o, TextWriter? log = null)
    {
        o.Validate();
        log ??= TextWriter.Null;
        var prompts = DatasetLoader.LoadPrompts(o.Prompts!).Records;
        if (prompts.Count == 0) throw new UserInputException($"--prompts: {o.Prompts} has no prompts.");
        var policy = LoadPolicy(o.Policy!, o.Adapter, "--policy");
        var baseline = o.Baseline == null ? null : LoadPolicy(o.Baseline, o.BaselineAdapter, "--baseline");
        var tokenizer = policy.Tokenizer!;
        if (baseline != null && !TokenizerComparison.SameTokens(tokenizer, baseline.Tokenizer!))
            throw new UserInputException($"--baseline {o.Baseline}: its tokenizer differs from the policy's; the KL between them needs one vocabulary.");
        using IEvalJudge judge = Judges.FromFlags(o.JudgeModel, o.JudgeUrl, o.BatchSize);

        // 1. slots, rendered as the RL trainers render a policy's prompts (its own template unless told otherwise); the
        // baseline scores the same prompt tokens, so one template serves both.
        var template = Data.ChatTemplate.Resolve(o.ChatTemplate, o.Policy, o.ChatTemplateKwargs);
        if (template.FallbackWarning(prompts.Any(p => p.Prompt.IsConversational)) is { } fallback) log.WriteLine($"warning: {fallback}");
        var slotPrompts = new List<ChatContent>();
        var slotTexts = new List<string>();
        var slotIds = new List<int[]>();
        foreach (var p in prompts)
        {
            var (text, ids) = RolloutCollector.EncodePrompt(p, tokenizer, template, o.MaxPromptLength);
            for (int k = 0; k < o.SamplesPerPrompt; k++) { slotPrompts.Add(p.Prompt); slotTexts.Add(text); slotIds.Add(ids); }
        }
        var sampler = new EvalSampler(tokenizer, slotIds, new SamplingOptions { MaxNewTokens = o.MaxNewTokens, Temperature = o.Temperature, Seed = o.Seed }, o.BatchSize);

        // 2–3. samples and KL
        log.WriteLine($"eval: sampling {slotIds.Count} completions from {o.Policy}");
        var policySamples = sampler.Sample(policy.Model);
        List<Completion>? baselineSamples = null;
        SequenceKl? kl = null;
        if (baseline != null)
        {
            log.WriteLine($"eval: sampling {slotIds.Count} completions from {o.Baseline}");
            baselineSamples = sampler.Sample(baseline.Model);
            log.WriteLine("eval: KL to the baseline");
            kl = sampler.Kl(policy.Model, baseline.Model, policySamples);
        }

        // 4. judge
        log.WriteLine($"eval: judging with {judge.Description}");
        var policyTexts = policySamples.Select(c => c.Text ?? "").ToArray();
        var baselineTexts = baselineSamples?.Select(c => c.Text ?? "").ToArray();
        var verdict = judge.Judge(new RewardInputs(slotPrompts, slotTexts, policyTexts), baselineTexts);
        foreach (var r in (verdict.PolicyRewards ?? []).Concat(verdict.BaselineRewards ?? []))
            if (!double.IsFinite(r)) throw new UserInputException($"The judge ({judge.Description}) returned a reward that is not a finite number.");

        // 5. statistics
        var slots = new EvalSlot[slotIds.Count];
        for (int i = 0; i < slots.Length; i++)
        {
            double? outcome = null;
            if (baselineTexts != null)
                outcome = policyTexts[i] == baselineTexts[i] ? 0.5
                    : verdict.Preferences != null ? 1 - verdict.Preferences[i]
                    : EvalStatistics.Outcome(verdict.PolicyRewards![i], verdict.BaselineRewards![i], TieTolerance(verdict.PolicyRewards[i], verdict.BaselineRewards[i]));
            slots[i] = new EvalSlot(slotTexts[i], policyTexts[i], baselineTexts?[i], ContentTokens(policySamples[i]),
                baselineSamples == null ? null : ContentTokens(baselineSamples[i]),
                verdict.PolicyRewards?[i], verdict.BaselineRewards?[i], verdict.Preferences?[i], outcome, kl?.Sampled[i], kl?.Exact[i]);
        }
        double klTokens = kl == null ? 0 : kl.Tokens.Sum();
        return new EvalResult(slots,
            baseline == null ? null : EvalStatistics.WinRate(slots.Select(s => s.Outcome!.Value).ToArray()),
            verdict.PolicyRewards == null ? null : EvalStatistics.Mean(verdict.PolicyRewards),
            verdict.BaselineRewards == null ? null : EvalStatistics.Mean(verdict.BaselineRewards),
            kl == null ? null : EvalStatistics.Mean(kl.Sampled), kl == null ? null : EvalStatistics.Mean(kl.Exact),
            kl == null || klTokens == 0 ? double.NaN : kl.Sampled.Sum() / klTokens, kl == null || klTokens == 0 ? double.NaN : kl.Exact.Sum() / klTokens,
            slots.Average(s => s.PolicyTokens), baselineSamples == null ? null : slots.Average(s => s.BaselineTokens!.Value),
            EvalStatistics.Distinct2(policyTexts), baselineTexts == null ? null : EvalStatistics.Distinct2(baselineTexts), template.Name);
    }

    /// <summary>Runs the evaluation and writes DIR/eval.json, DIR/samples.jsonl and DIR/eval.html; returns eval.json's object.</summary>
    public static JsonObject RunAndWrite(EvalOptions o, TextWriter? log = null)
    {
        var result = Run(o, log);
        Directory.CreateDirectory(o.Out!);
        var json = ToJson(o, result);
        AtomicFile.WriteText(Path.Combine(o.Out!, "eval.json"), json.ToJsonString(Runs.RunDirectory.Json) + "\n");
        var lineOptions = new JsonSerializerOptions { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };
        AtomicFile.WriteText(Path.Combine(o.Out!, "samples.jsonl"), string.Concat(result.Slots.Select(s => JsonSerializer.Serialize(s, lineOptions) + "\n")));
        AtomicFile.WriteText(Path.Combine(o.Out!, "eval.html"), EvalReport.Render(json, result));
        return json;
    }

    /// <summary>The eval.json object (keys documented in docs/evaluation.md).</summary>
    public static JsonObject ToJson(EvalOptions o, EvalResult r)
    {
        static JsonNode? Num(double? x) => x is double v && double.IsFinite(v) ? JsonValue.Create(v) : null;
        static JsonNode? Ci(Estimate? e) => e is Estimate v && double.IsFinite(v.Low) ? new JsonArray(v.Low, v.High) : null;
        JsonObject PerPolicy(double? policy, double? baseline)
        {
            var obj = new JsonObject { ["policy"] = Num(policy) };
            if (o.Baseline != null) obj["baseline"] = Num(baseline);
            return obj;
        }
        JsonObject PerPolicyCi(Estimate? policy, Estimate? baseline)
        {
            var obj = new JsonObject { ["policy"] = Ci(policy) };
            if (o.Baseline != null) obj["baseline"] = Ci(baseline);
            return obj;
        }
        var outcomes = r.Slots.Where(s => s.Outcome != null).Select(s => s.Outcome!.Value).ToArray();
        return new JsonObject
        {
            ["policy"] = o.Policy,
            ["adapter"] = o.Adapter,
            ["baseline"] = o.Baseline,
            ["baseline_adapter"] = o.BaselineAdapter,
            ["prompts"] = o.Prompts,
            ["judge"] = o.JudgeModel != null ? $"reward_model {o.JudgeModel}" : $"url {o.JudgeUrl}",
            ["judge_kind"] = r.Slots.Any(s => s.Preference != null) ? "pairwise" : "reward",
            ["num_prompts"] = r.Slots.Count / o.SamplesPerPrompt,
            ["samples_per_prompt"] = o.SamplesPerPrompt,
            ["num_samples"] = r.Slots.Count,
            ["seed"] = o.Seed,
            ["temperature"] = o.Temperature,
            ["max_new_tokens"] = o.MaxNewTokens,
            ["chat_template"] = r.ChatTemplate,
            ["win_rate"] = Num(r.WinRate?.Value),
            ["win_rate_ci95"] = Ci(r.WinRate),
            ["wins"] = o.Baseline == null ? null : outcomes.Count(x => x == 1),
            ["ties"] = o.Baseline == null ? null : outcomes.Count(x => x > 0 && x < 1),
            ["losses"] = o.Baseline == null ? null : outcomes.Count(x => x == 0),
            ["reward_mean"] = PerPolicy(r.PolicyReward?.Value, r.BaselineReward?.Value),
            ["reward_mean_ci95"] = PerPolicyCi(r.PolicyReward, r.BaselineReward),
            ["kl_to_baseline"] = o.Baseline == null ? null : new JsonObject
            {
                ["sampled"] = Num(r.KlSampled?.Value),
                ["exact"] = Num(r.KlExact?.Value),
                ["sampled_ci95"] = Ci(r.KlSampled),
                ["exact_ci95"] = Ci(r.KlExact),
                ["sampled_per_token"] = Num(r.KlSampledPerToken),
                ["exact_per_token"] = Num(r.KlExactPerToken),
            },
            ["length_mean"] = PerPolicy(r.PolicyLength, r.BaselineLength),
            ["distinct_2"] = PerPolicy(r.PolicyDistinct2, r.BaselineDistinct2),
            ["ci_method"] = "win_rate: Wilson score interval (z = 1.96) at p = (wins + ties/2)/n; means: normal approximation mean ± 1.96·s/√n",
        };
    }

    private static double TieTolerance(double a, double b) => RewardTieTolerance * Math.Max(1, Math.Max(Math.Abs(a), Math.Abs(b)));

    /// <summary>Tokens of a completion without its final end-of-sequence token.</summary>
    public static int ContentTokens(Completion c) => c.Ids.Length - (c.FinishReason == "eos" && c.Ids.Length > 0 ? 1 : 0);

    private static Pretrained LoadPolicy(string dir, string? adapter, string flag)
    {
        if (!Directory.Exists(dir)) throw new UserInputException($"{flag}: {dir} is not a directory.");
        var pre = Pretrained.Load(dir).WithAdapter(adapter);
        if (pre.Model.Config.Head != HeadKind.LanguageModel) throw new UserInputException($"{flag} {dir}: a policy needs a language-model head.");
        pre.RequireTokenizer($"{flag} (to tokenize prompts and decode completions)");
        return pre;
    }
}
