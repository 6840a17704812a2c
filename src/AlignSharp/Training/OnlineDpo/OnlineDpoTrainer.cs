using AlignSharp.Engine.Kernels;
using AlignSharp.Models;
using AlignSharp.Models.Lora;
using AlignSharp.Text;
using AlignSharp.Training.Data;
using AlignSharp.Training.Dpo;
using AlignSharp.Training.Evaluation;
using AlignSharp.Training.Rl;
using AlignSharp.Training.Runs;

namespace AlignSharp.Training.OnlineDpo;

/// <summary>
/// <c>alignsharp online-dpo</c>:
/// 1. load the policy (and its tokenizer), the prompts (rendered with the chat template, each keeping its last
///    prompt-limit tokens) and the judge (--judge-model, --judge-url, or a judge given by the library caller);
/// 2. cut the prompts (in a seeded order) into micro-batches of --batch-size prompts;
/// 3. the frozen reference: --reference, else the policy as it starts (with LoRA, the policy with its adapter off);
///    none for the reference-free losses;
/// 4. run the shared <see cref="TrainingLoop"/>: each micro-batch samples, judges and trains (<see cref="OnlineDpoTask"/>).
/// </summary>
public static class OnlineDpoTrainer
{
    /// <param name="judge">The judge; null: the one of --judge-model or --judge-url (exactly one must be given then).</param>
    public static Dictionary<string, object?> Train(OnlineDpoOptions options, IEvalJudge? judge = null, TextWriter? log = null)
    {
        options.Validate();
        if (judge == null && options.JudgeModel == null && options.JudgeUrl == null)
            throw new UserInputException("Give a judge: --judge-model RM_DIR (a reward model) or --judge-url URL (an HTTP judge).");
        log ??= Console.Error;
        using var threads = ParallelFor.UseThreads(options.Threads);
        using var precision = options.OpenMatmulPrecision();
        var policy = options.LoadTrained(options.Policy!, addsRouterAuxLoss: true);
        options = options with { MaxLength = options.MaxLengthFor(policy.Model.Config.MaxPositions, log) };
        if (options.MaxNewTokens >= options.MaxLength)
            throw new UserInputException($"--max-new-tokens ({options.MaxNewTokens}) leaves no room for the prompt in the model's {options.MaxLength} positions.");
        var tokenizer = policy.RequireTokenizer("sampling from prompts");
        var template = ChatTemplate.Resolve(options.ChatTemplate, options.Policy, options.ChatTemplateKwargs);
        var batches = Batches(options, tokenizer, template, log);

        // The judge model never trains: kept as --frozen-dtype says (and in bf16 with --matmul-precision medium), as the
        // RL trainers keep their reward model.
        using var ownedJudge = judge == null
            ? Judges.FromFlags(options.JudgeModel, options.JudgeUrl, options.BatchSize, options.JudgeModel != null && Directory.Exists(options.JudgeModel) && options.FrozenInBf16(options.JudgeModel))
            : null;
        judge ??= ownedJudge!;
        using var session = RunSession.Open(options, "online-dpo", log);
        var adapter = options.StartingAdapter(policy.Model, options.Policy);
        // Never precomputed (the completions do not exist yet): a LoRA policy's own base, else the reference model on the fly.
        var reference = options.UsesReference
            ? ReferenceLogProbs.ForPolicy(options, policy.Model, adapter, [], session.Directory.Path, m => log.WriteLine("online-dpo: " + m))
            : null;
        log.WriteLine($"online-dpo: {batches.Sum(b => b.Length)} prompts in {batches.Count} micro-batches; judge: {judge.Description}");
        var task = new OnlineDpoTask(options, policy.Model, tokenizer, reference, judge, batches, adapter, w => log.WriteLine("online-dpo: warning: " + w));
        return new TrainingLoop(options, task, "online-dpo", log).Run(session);
    }

    /// <summary>The prompts as micro-batches of --batch-size (the last one may be smaller), in an order shuffled once by --seed.</summary>
    public static IReadOnlyList<OnlinePrompt[]> Batches(OnlineDpoOptions options, Text.ITokenizer tokenizer, ChatTemplate template, TextWriter log)
    {
        var records = DatasetLoader.LoadPrompts(options.Prompts!, new DataLoadOptions { SkipBadRecords = options.SkipBadRecords });
        if (records.Warning is { } w) log.WriteLine($"online-dpo: {options.Prompts}: {w}");
        if (template.FallbackWarning(records.Records.Any(p => p.Prompt.IsConversational)) is { } fallback) log.WriteLine($"online-dpo: {options.Prompts}: {fallback}");
        var prompts = new List<OnlinePrompt>();
        var bad = new BadRecordLog(options.SkipBadRecords, 5);
        foreach (var p in records.Records)
        {
            try
            {
                var (text, ids) = RolloutCollector.EncodePrompt(p, tokenizer, template, options.PromptLimit);
                prompts.Add(new OnlinePrompt(p, text, ids));
            }
            catch (BadRecordException e) { bad.Report(e); }
        }
        var kept = bad.Result(prompts);
        if (kept.Warning is { } skipped) log.WriteLine($"online-dpo: {options.Prompts}: {skipped}");
        if (kept.Records.Count == 0) throw new UserInputException($"--prompts: {options.Prompts} has no usable prompts.");
        var order = kept.Records.ToArray();
        new Random(options.Seed).Shuffle(order);
        return order.Chunk(options.BatchSize).ToList();
    }
}
