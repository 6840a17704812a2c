using System.Diagnostics;
using AlignSharp.Engine;
using AlignSharp.Models;
using AlignSharp.Models.Lora;
using AlignSharp.Models.Checkpoints;
using AlignSharp.Text;
using AlignSharp.Text.Jinja;
using AlignSharp.Training.Data;
using AlignSharp.Training.Dpo;
using AlignSharp.Training.Runs;

namespace AlignSharp.Training.Kto;

/// <summary>An unpaired example as tokens: the prompt, the completion with its EOS, and its label.</summary>
public sealed record TokenizedUnpaired(int[] Prompt, int[] Completion, bool Desirable, RecordSource Source);

/// <summary>
/// A KTO micro-batch of B examples scored in one forward pass of 2B rows: rows 0..B−1 are the examples
/// (prompt i + completion i), rows B..2B−1 the mismatched pairs TRL estimates the reference point from: completion i
/// after prompt (i + 1) mod B, the completion cut to fit the max length.
/// </summary>
public sealed class KtoBatch
{
    public KtoBatch(IReadOnlyList<TokenizedUnpaired> examples, int maxLength, int padId)
    {
        int b = examples.Count;
        var rows = new List<SftSequence>(2 * b);
        foreach (var e in examples) rows.Add(Row(e.Prompt, e.Completion, e.Source));
        for (int i = 0; i < b; i++)
        {
            var prompt = examples[(i + 1) % b].Prompt;
            var completion = examples[i].Completion;
            int room = Math.Max(1, maxLength - prompt.Length);
            rows.Add(Row(prompt, completion.Length > room ? completion[..room] : completion, examples[i].Source));
        }
        Rows = DpoBatch.FromRows(rows, padId);
        Desirable = examples.Select(e => e.Desirable).ToArray();
    }

    private static SftSequence Row(int[] prompt, int[] completion, RecordSource source)
        => new([.. prompt, .. completion], [.. Enumerable.Repeat(SftSequence.IgnoreIndex, prompt.Length), .. completion], [0], [source]);

    /// <summary>The 2B rows as the log-prob scorer reads them.</summary>
    public DpoBatch Rows { get; }

    /// <summary>[B] labels.</summary>
    public bool[] Desirable { get; }

    public int Count => Desirable.Length;
}

/// <summary>Turns unpaired records into KTO micro-batches.</summary>
public static class KtoData
{
    /// <summary>
    /// Tokenized as preference answers are (exact prompt/answer boundary, EOS, truncation and its errors): each
    /// record through the pair encoder with its completion as both answers.
    /// </summary>
    public static IReadOnlyList<TokenizedUnpaired> Encode(IReadOnlyList<UnpairedExample> records, ITokenizer tokenizer, ChatTemplate template, KtoOptions options, Action<string> warn)
    {
        var encoding = new PreferenceEncodingOptions { Truncation = options.Truncation, SkipBadRecords = options.SkipBadRecords };
        encoding.Validate();
        var log = new BadRecordLog(encoding.SkipBadRecords, encoding.MaxReportedSkips);
        var result = new List<TokenizedUnpaired>(records.Count);
        foreach (var r in records)
        {
            var asPair = new PreferencePair(r.Example.Prompt ?? ChatContent.FromText(""), r.Example.Completion, r.Example.Completion, 0f, 1f, r.Source)
            {
                PromptField = r.Example.PromptField,
                ChosenField = r.Example.CompletionField,
                RejectedField = r.Example.CompletionField,
                TemplateKwargs = r.Example.TemplateKwargs,
            };
            try
            {
                var t = PreferenceEncoder.Encode(asPair, tokenizer, template, encoding);
                result.Add(new TokenizedUnpaired(t.Prompt, t.Chosen, r.Desirable, r.Source));
            }
            catch (BadRecordException e) { log.Report(e); }
        }
        var set = log.Result<TokenizedUnpaired>(result);
        if (set.Warning is { } w) warn(w);
        return set.Records;
    }

    /// <summary>Micro-batches of BatchSize examples in a seeded order fixed once (the training loop shuffles their order per epoch).</summary>
    public static IReadOnlyList<KtoBatch> Batches(IReadOnlyList<TokenizedUnpaired> examples, int batchSize, int seed, int maxLength, int padId)
    {
        if (examples.Count == 0) return [];
        var plan = LengthGroupedBatches.Plan(examples.Select(e => e.Prompt.Length + e.Completion.Length).ToArray(), new BatchingOptions { BatchSize = batchSize, Seed = seed }, 0);
        return plan.Select(indices => new KtoBatch(indices.Select(i => examples[i]).ToArray(), maxLength, padId)).ToList();
    }
}

/// <summary>
/// KTO as the shared <see cref="TrainingLoop"/> sees it: micro-batches weighing their example count; a forward pass
/// scores the examples and the mismatched pairs with the policy (one pass), looks up the reference and applies
/// <see cref="KtoLoss"/>. Metrics as TRL's KTOTrainer logs them: rewards/chosen, rewards/rejected, logps/chosen,
/// logps/rejected, logits/chosen, logits/rejected (means over the desirable, resp. undesirable, examples),
/// rewards/margins (chosen − rejected), count/chosen, count/rejected (examples per micro-batch) and kl (the
/// reference point z, mean over micro-batches).
/// </summary>
public sealed class KtoTask : ISupervisedTask
{
    private readonly KtoOptions _options;
    private readonly TransformerModel _policy;
    private readonly ReferenceLogProbs _reference;
    private readonly IReadOnlyList<KtoBatch> _train;
    private readonly IReadOnlyList<KtoBatch> _eval;

    /// <param name="adapter">Train this LoRA adapter on the frozen policy instead of all its weights.</param>
    public KtoTask(KtoOptions options, TransformerModel policy, ReferenceLogProbs reference, IReadOnlyList<KtoBatch> train, IReadOnlyList<KtoBatch> eval, LoraAdapter? adapter = null)
    {
        _options = options;
        _policy = policy;
        _reference = reference;
        _train = train;
        _eval = eval;
        Action<string> extras = dir => ModelChatTemplate.Write(dir, ChatTemplate.Resolve(_options.ChatTemplate, _options.Policy).Source);
        Trainable = Runs.Trainable.For(_policy, adapter, _options.Policy, options.Merge, extras);
    }

    public int MicroBatches => _train.Count;

    public double Weight(int index) => _train[index].Count;

    public MicroBatchResult Forward(int index, Random rng)
    {
        // LoRA dropout in the training forward only (its masks are kept for the backward).
        if (_policy.Adapter is not { } adapter) return Score(_train[index]);
        adapter.DropoutRng = rng;
        try { return Score(_train[index]); }
        finally { adapter.DropoutRng = null; }
    }

    public ITrainable Trainable { get; }

    public Dictionary<string, double>? Evaluate() => _eval.Count == 0 ? null : Evaluate(_eval);

    public void FinishMetrics(Dictionary<string, double> averaged) => Finish(averaged);

    /// <summary>Loss and metrics over <paramref name="batches"/> (loss averaged by example), with tokens/s; no gradients.</summary>
    public Dictionary<string, double> Evaluate(IReadOnlyList<KtoBatch> batches)
    {
        var m = SupervisedEvaluation.Average(batches, Score, b => b.Count);
        Finish(m);
        return m;
    }

    /// <summary>One batch: policy log-probabilities of the 2B rows (one forward pass), the loss sum over its B examples and the metric sums.</summary>
    public MicroBatchResult Score(KtoBatch batch)
    {
        int b = batch.Count;
        var answers = AnswerScoring.Compute(_policy, batch.Rows);
        // TRL's KTO: the completions' forward's load-balancing loss (the KL rows' forward runs without gradients there).
        var aux = _policy.RouterAuxLoss(firstRows: b);   // read before the reference's pass, which may be this model's
        var all = _reference.For(batch.Rows);
        var matched = Enumerable.Range(0, b).ToArray();
        var logps = Ops.IndexSelect(answers.Sums, matched);
        var policyAll = answers.Sums.ToArray();
        var result = KtoLoss.Compute(logps, all[..b], policyAll[b..], all[b..], batch.Desirable, _options.Beta, _options.DesirableWeight, _options.UndesirableWeight,
            referencePoint: _options.LossType == "kto");
        var metrics = MetricSums(batch, result, policyAll, answers);
        // output_router_logits: TRL's KTO adds coef · the loss to the batch's mean loss: here times its examples.
        return new MicroBatchResult(RouterBalance.AddTo(Ops.Sum(result.Losses), aux, _policy, b, metrics), metrics, batch.Rows.Tokens);
    }

    /// <summary>
    /// Sums the loop adds up over a logging window and divides by Σ weight; <see cref="Finish"/> turns the ratios
    /// into TRL's means (a sum over the chosen examples over their count; counts per micro-batch).
    /// </summary>
    private static Dictionary<string, double> MetricSums(KtoBatch batch, KtoLossResult result, float[] logps, AnswerLogProbs answers)
    {
        var m = new Dictionary<string, double> { ["kl"] = result.Kl * batch.Count, [MicroBatchKey] = 1 };
        foreach (var split in Splits) foreach (var name in PerSplit) m[$"{name}/{split}"] = 0;
        for (int i = 0; i < batch.Count; i++)
        {
            string split = batch.Desirable[i] ? "chosen" : "rejected";
            m[$"rewards/{split}"] += result.Rewards[i];
            m[$"logps/{split}"] += logps[i];
            // TRL: Σ over the split's completion tokens of each token's mean logit, over the split's tokens.
            m[$"logits/{split}"] += answers.LogitSums[i] / answers.Vocab;
            m[$"tokens/{split}"] += answers.Tokens[i];
            m[$"count/{split}"] += 1;
        }
        return m;
    }

    private const string MicroBatchKey = "micro_batches";
    private static readonly string[] Splits = ["chosen", "rejected"];
    private static readonly string[] PerSplit = ["rewards", "logps", "logits", "tokens", "count"];

    /// <summary>
    /// From averaged sums (each Σ over the window / Σ examples) to TRL's logged values: per-split means (left out
    /// when the window had no example of that split), rewards/margins, counts per micro-batch, kl per example.
    /// </summary>
    private static void Finish(Dictionary<string, double> m)
    {
        double microBatches = m.GetValueOrDefault(MicroBatchKey);
        m.Remove(MicroBatchKey);
        foreach (var split in Splits)
        {
            double count = m.GetValueOrDefault($"count/{split}"), tokens = m.GetValueOrDefault($"tokens/{split}");
            m.Remove($"tokens/{split}");
            foreach (var name in new[] { "rewards", "logps" })
            {
                if (count > 0) m[$"{name}/{split}"] /= count;
                else m.Remove($"{name}/{split}");
            }
            if (tokens > 0) m[$"logits/{split}"] /= tokens;
            else m.Remove($"logits/{split}");
            m[$"count/{split}"] = microBatches > 0 ? count / microBatches : 0;
        }
        if (m.TryGetValue("rewards/chosen", out var c) && m.TryGetValue("rewards/rejected", out var r)) m["rewards/margins"] = c - r;
    }
}
