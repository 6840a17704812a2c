using AlignSharp.Engine.Kernels;
using AlignSharp.Models;
using AlignSharp.Text;
using AlignSharp.Training.Data;
using AlignSharp.Training.Dpo;
using AlignSharp.Training.Runs;

namespace AlignSharp.Training.Kto;

/// <summary>
/// <c>alignsharp kto</c>:
/// 1. load the policy (and its tokenizer) and the unpaired feedback; hold out the eval part;
/// 2. tokenize (exact prompt/answer boundary, EOS) and cut into fixed micro-batches with their mismatched pairs;
/// 3. get the reference log-probabilities of every row: precomputed once (cached in DIR/reference_logps.bin) or on
///    the fly from a frozen copy (the scorer and cache DPO uses);
/// 4. run the shared <see cref="TrainingLoop"/> (accumulation, clipping, logging, eval, checkpoints, resume).
/// </summary>
public static class KtoTrainer
{
    public static Dictionary<string, object?> Train(KtoOptions options, TextWriter? log = null)
    {
        options.Validate();
        log ??= Console.Error;
        using var threads = ParallelFor.UseThreads(options.Threads);
        using var precision = options.OpenMatmulPrecision();
        var policy = options.LoadTrained(options.Policy!, addsRouterAuxLoss: true);
        options = options with { MaxLength = options.MaxLengthFor(policy.Model.Config.MaxPositions, log) };
        var tokenizer = policy.RequireTokenizer("tokenizing feedback data");
        var template = ChatTemplate.Resolve(options.ChatTemplate, options.Policy, options.ChatTemplateKwargs);
        var (train, eval) = Load(options, options.Data!, tokenizer, template, log, split: options.EvalSplit > 0);
        if (options.EvalData != null) eval = Load(options, options.EvalData, tokenizer, template, log, split: false).Train;
        if (train.Count == 0) throw new UserInputException($"{options.Data}: no usable examples to train on.");

        using var session = RunSession.Open(options, "kto", log);
        var adapter = options.StartingAdapter(policy.Model, options.Policy);
        var rows = train.Concat(eval).Select(b => b.Rows).ToList();
        var reference = ReferenceLogProbs.ForPolicy(options, policy.Model, adapter, rows, session.Directory.Path, m => log.WriteLine("kto: " + m));
        var task = new KtoTask(options, policy.Model, reference, train, eval, adapter);
        return new TrainingLoop(options, task, "kto", log).Run(session);
    }

    private static (IReadOnlyList<KtoBatch> Train, IReadOnlyList<KtoBatch> Eval) Load(KtoOptions options, string file, ITokenizer tokenizer, ChatTemplate template, TextWriter log, bool split)
    {
        void Warn(string w) => log.WriteLine($"kto: {file}: {w}");
        var records = DatasetLoader.LoadUnpaired([file], new DataLoadOptions { ExpectedKind = DatasetKind.Unpaired, SkipBadRecords = options.SkipBadRecords });
        if (records.Warning is { } w) Warn(w);
        if (template.FallbackWarning(records.Records.Any(r => r.Example.Prompt?.IsConversational == true || r.Example.Completion.IsConversational)) is { } fw) Warn(fw);
        var (tr, ev) = split ? TrainEvalSplit.Split(records.Records, options.EvalSplit, options.Seed) : (records.Records, Array.Empty<UnpairedExample>());
        int pad = TokenSequences.PadId(tokenizer);
        IReadOnlyList<KtoBatch> Batch(IReadOnlyList<UnpairedExample> part)
            => KtoData.Batches(KtoData.Encode(part, tokenizer, template, options, Warn), options.BatchSize, options.Seed, options.MaxLength, pad);
        return (Batch(tr), Batch(ev));
    }
}
