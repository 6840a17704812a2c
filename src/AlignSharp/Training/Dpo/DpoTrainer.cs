using AlignSharp.Engine.Kernels;
using AlignSharp.Models;
using AlignSharp.Models.Lora;
using AlignSharp.Text;
using AlignSharp.Training.Data;
using AlignSharp.Training.Runs;

namespace AlignSharp.Training.Dpo;

/// <summary>
/// <c>alignsharp dpo</c>:
/// 1. load the policy (and its tokenizer) and the preference data; hold out the eval part;
/// 2. tokenize (exact prompt/answer boundary, EOS) and cut into fixed micro-batches (pairs, or whole rankings);
/// 3. get the reference log-probabilities: precomputed once (cached in DIR/reference_logps.bin) or on the fly from
///    a frozen copy (with LoRA, from the policy with its adapter off); none for the reference-free losses;
/// 4. run the shared <see cref="TrainingLoop"/> (accumulation, clipping, logging, eval, checkpoints, resume).
/// </summary>
public static class DpoTrainer
{
    public static Dictionary<string, object?> Train(DpoOptions options, TextWriter? log = null)
    {
        options.Validate();
        log ??= Console.Error;
        using var threads = ParallelFor.UseThreads(options.Threads);
        using var precision = options.OpenMatmulPrecision();
        var policy = options.LoadTrained(options.Policy!, addsRouterAuxLoss: true);
        options = options with { MaxLength = options.MaxLengthFor(policy.Model.Config.MaxPositions, log) };
        var (train, eval) = LoadBatches(options, policy, log);
        if (train.Count == 0) throw new UserInputException($"{options.Data}: no usable preference pairs to train on.");

        // The session first: it locks --out and checks it before the reference cache is written there. The cache is keyed
        // by a hash of the reference and the batches, so --overwrite keeps it.
        using var session = RunSession.Open(options, "dpo", log);
        var adapter = options.StartingAdapter(policy.Model, options.Policy);
        var reference = options.UsesReference
            ? ReferenceLogProbs.ForPolicy(options, policy.Model, adapter, [.. train, .. eval], session.Directory.Path, m => log.WriteLine("dpo: " + m))
            : null;
        var task = new DpoTask(options, policy.Model, reference, train, eval, adapter);
        return new TrainingLoop(options, task, "dpo", log).Run(session);
    }

    /// <summary>
    /// <c>--eval-only</c>: loss and metrics (averaged by weight, as in training's eval) on --data or --eval-data; no
    /// run directory, nothing written. The reference is --reference, else the policy itself (so rewards are 0).
    /// </summary>
    public static Dictionary<string, double> EvaluateOnly(DpoOptions options, TextWriter? log = null)
    {
        options.Validate();
        log ??= Console.Error;
        using var threads = ParallelFor.UseThreads(options.Threads);
        using var precision = options.OpenMatmulPrecision();
        var policy = Pretrained.Load(options.Policy!);
        options = options with { MaxLength = options.MaxLengthFor(policy.Model.Config.MaxPositions, log) };
        string file = options.EvalData ?? options.Data!;
        var batches = Batches(options, policy, file, log, split: false).Train;
        if (batches.Count == 0) throw new UserInputException($"{file}: no usable preference pairs to evaluate.");
        ReferenceLogProbs? reference = null;
        if (options.UsesReference)
            reference = ReferenceLogProbs.OnTheFly(options.Reference != null ? LoadReference(options, policy.Model) : policy.Model);
        return new DpoTask(options, policy.Model, reference, [], []).Evaluate(batches);
    }

    private static (IReadOnlyList<DpoBatch> Train, IReadOnlyList<DpoBatch> Eval) LoadBatches(DpoOptions options, Pretrained policy, TextWriter log)
    {
        var (train, eval) = Batches(options, policy, options.Data!, log, split: options.EvalSplit > 0);
        if (options.EvalData != null) eval = Batches(options, policy, options.EvalData, log, split: false).Train;
        return (train, eval);
    }

    /// <summary>The batches of one file, split into train and eval parts by --eval-split when <paramref name="split"/>.</summary>
    private static (IReadOnlyList<DpoBatch> Train, IReadOnlyList<DpoBatch> Eval) Batches(DpoOptions options, Pretrained policy, string file, TextWriter log, bool split)
    {
        var tokenizer = policy.RequireTokenizer("tokenizing preference data");
        var template = ChatTemplate.Resolve(options.ChatTemplate, options.Policy, options.ChatTemplateKwargs);
        var load = new DataLoadOptions { ExpectedKind = DatasetKind.Preference, SkipBadRecords = options.SkipBadRecords };
        int pad = TokenSequences.PadId(tokenizer);
        void Warn(string w) => log.WriteLine($"dpo: {file}: {w}");
        if (options.Loss == DpoLossType.PlackettLuce)
        {
            var records = DatasetLoader.LoadRankingGroups([file], load);
            if (records.Warning is { } w) Warn(w);
            if (template.FallbackWarning(records.Records.Any(r => r.Prompt.IsConversational || r.Completions.Any(c => c.IsConversational))) is { } fw) Warn(fw);
            var (tr, ev) = split ? TrainEvalSplit.Split(records.Records, options.EvalSplit, options.Seed) : (records.Records, Array.Empty<RankingRecord>());
            return (DpoData.RankingBatches(DpoData.EncodeRankings(tr, tokenizer, template, options, Warn), options.BatchSize, options.Seed, pad),
                    DpoData.RankingBatches(DpoData.EncodeRankings(ev, tokenizer, template, options, Warn), options.BatchSize, options.Seed, pad));
        }
        var pairs = DatasetLoader.LoadPreferences([file], load);
        if (pairs.Warning is { } pw) Warn(pw);
        if (template.FallbackWarning(pairs.Records.Any(p => p.Prompt.IsConversational || p.Chosen.IsConversational)) is { } fallback) Warn(fallback);
        var (trainPairs, evalPairs) = split ? TrainEvalSplit.SplitPreferences(pairs.Records, options.EvalSplit, options.Seed) : (pairs.Records, Array.Empty<PreferencePair>());
        return (DpoData.PairBatches(DpoData.EncodePairs(trainPairs, tokenizer, template, options, Warn), options.BatchSize, options.Seed, pad),
                DpoData.PairBatches(DpoData.EncodePairs(evalPairs, tokenizer, template, options, Warn), options.BatchSize, options.Seed, pad));
    }

    /// <summary>The frozen reference (stored as --frozen-dtype says): --reference, else the policy directory's starting weights; it must
    /// share the policy's vocabulary.</summary>
    internal static TransformerModel LoadReference(ReferencedPolicyOptions options, TransformerModel policy)
    {
        string dir = options.Reference ?? options.Policy!;
        if (!Directory.Exists(dir)) throw new UserInputException($"--reference: model directory '{dir}' does not exist.");
        var model = options.LoadFrozen(dir);
        if (model.Config.VocabSize != policy.Config.VocabSize)
            throw new UserInputException($"--reference: {dir} has a vocabulary of {model.Config.VocabSize} tokens but the policy has {policy.Config.VocabSize}; the reference must share the policy's tokenizer.");
        return model;
    }
}
