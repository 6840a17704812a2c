using AlignSharp.Text.Jinja;
using AlignSharp.Engine;
using AlignSharp.Models;
using AlignSharp.Models.Lora;
using AlignSharp.Text;
using AlignSharp.Training.Data;
using AlignSharp.Training.Rewards;
using AlignSharp.Training.Runs;

namespace AlignSharp.Training.RewardModeling;

/// <summary>Reward-model options (defaults close to TRL's RewardConfig, scaled for small CPU models).</summary>
[TrlName("model_name_or_path", nameof(Model))]
public sealed record RewardModelOptions : TextDataOptions
{
    public RewardModelOptions() => LearningRate = 1e-5f;

    [Option("Starting checkpoint: an SFT or base model directory; its LM head is replaced by a fresh scalar head.", Required = true)]
    public string? Model { get; init; }

    [Option("Coefficient of the centering regulariser coef · mean((r_chosen + r_rejected)²); 0 = off.")]
    public float CenterRewardsCoefficient { get; init; }

    public override void Validate()
    {
        base.Validate();
        if (string.IsNullOrWhiteSpace(Model)) throw new UserInputException("--model (the starting checkpoint) is required.");
        if (CenterRewardsCoefficient < 0) throw new UserInputException("--center-rewards-coefficient must be ≥ 0.");
    }
}

/// <summary>
/// A preference batch's 2B rows (chosen rows, then rejected rows) scored at their last real token; the loss is the
/// Bradley–Terry negative log-likelihood of the human choice, summed over pairs with their weights. A ranking's pairs
/// share a batch and each distinct completion is scored once (InstructGPT's batching: K forward passes, not K·(K−1)).
/// </summary>
public sealed class RewardModelTask : ISupervisedTask
{
    private readonly RewardModel _rm;
    private readonly List<PreferenceBatch> _train, _eval;
    private readonly float _centerCoef;

    /// <param name="adapter">A LoRA adapter to train on the frozen model (with the score head, saved as PEFT's modules_to_save); null: every weight.</param>
    /// <param name="merge">With an adapter: the final model is the merged model rather than the adapter.</param>
    public RewardModelTask(RewardModel rm, string sourceDir, IReadOnlyList<TokenizedPreference> train, IReadOnlyList<TokenizedPreference> eval,
        int batchSize, int seed, float centerCoef, int maxLength, LoraAdapter? adapter = null, bool merge = false)
    {
        _rm = rm;
        Info = rm.Info ?? new RewardModelInfo(rm.Template.Name, 0, 1, maxLength);
        void Extras(string dir)
        {
            ModelChatTemplate.Write(dir, rm.Template.Source);
            Info.Save(dir);
        }
        Trainable = Runs.Trainable.For(rm.Model, adapter, sourceDir, merge, Extras);
        _centerCoef = centerCoef;
        int pad = TokenSequences.PadId(rm.Tokenizer);
        var batching = new BatchingOptions { BatchSize = batchSize, Seed = seed };
        _train = PreferenceBatch.EpochByRecord(train, batching, 0, pad).ToList();
        _eval = eval.Count == 0 ? [] : PreferenceBatch.EpochByRecord(eval, batching with { Shuffle = false }, 0, pad).ToList();
    }

    public int MicroBatches => _train.Count;
    public ITrainable Trainable { get; }

    /// <summary>Written beside the weights as reward_model.json (the normalisation statistics are set after training).</summary>
    public RewardModelInfo Info { get; set; }
    /// <summary>Σ of the batch's pair weights (its pair count for plain pairs): the loss and metrics are weighted means, as dpo's.</summary>
    public double Weight(int index) => _train[index].Weights.Sum(w => (double)w);

    public MicroBatchResult Forward(int index, Random rng)
    {
        // LoRA dropout in the training forward only (its masks are kept for the backward); scoring elsewhere runs without.
        if (_rm.Model.Adapter is not { } adapter) return Score(_train[index]);
        adapter.DropoutRng = rng;
        try { return Score(_train[index]); }
        finally { adapter.DropoutRng = null; }
    }

    private MicroBatchResult Score(PreferenceBatch b)
    {
        int pairs = b.Margins.Length, rows = 2 * pairs, t = b.SeqLen;
        var (ids, mask, _, distinct, rowOf) = b.DistinctRows();
        var values = Ops.Reshape(_rm.Model.Forward(ids, distinct, t, keyMask: mask), distinct * t, 1);
        var scores = Ops.Reshape(Ops.IndexSelect(values, b.LastIndex.Select((last, r) => rowOf[r] * t + last).ToArray()), rows);
        var chosen = Ops.SliceRows(scores, 0, pairs);
        var rejected = Ops.SliceRows(scores, pairs, pairs);
        var loss = RewardLosses.BradleyTerrySum(chosen, rejected, b.Margins, b.Weights, _centerCoef);
        // Weighted as the loss is (the loop divides by Σ weight): a ranking's pairs share its weight.
        double correct = 0, margin = 0, rc = 0, rr = 0;
        var cs = chosen.Span; var rs = rejected.Span;
        for (int i = 0; i < pairs; i++)
        {
            double w = b.Weights[i];
            if (cs[i] > rs[i]) correct += w;
            margin += w * (cs[i] - rs[i]); rc += w * cs[i]; rr += w * rs[i];
        }
        var metrics = new Dictionary<string, double> { ["accuracy"] = correct, ["margin"] = margin, ["rewards/chosen"] = rc, ["rewards/rejected"] = rr };
        return new MicroBatchResult(loss, metrics, b.AttentionMask.Count(m => m));   // every answer's tokens, a shared row's twice
    }

    public Dictionary<string, double>? Evaluate()
    {
        if (_eval.Count == 0) return null;
        var sums = new Dictionary<string, double>();
        double loss = 0, weight = 0;
        int pairs = 0;
        foreach (var b in _eval)
        {
            using var scope = TensorScope.Begin();
            var r = Score(b);
            loss += r.LossSum.Item();
            weight += b.Weights.Sum(w => (double)w);
            pairs += b.Margins.Length;
            foreach (var (k, v) in r.MetricSums) sums[k] = sums.GetValueOrDefault(k) + v;
        }
        var m = new Dictionary<string, double> { ["loss"] = loss / weight };
        foreach (var (k, v) in sums) m[k] = v / weight;
        m["pairs"] = pairs;
        return m;
    }

}

public static class RewardModelTrainer
{
    public static Dictionary<string, object?> Train(RewardModelOptions o, TextWriter? log = null)
    {
        log ??= Console.Error;
        var pre = o.LoadTrained(o.Model!, HeadKind.Scalar);
        o = o with { MaxLength = o.MaxLengthFor(pre.Model.Config.MaxPositions, log) };
        var tokenizer = pre.RequireTokenizer("reward modelling");
        var template = ChatTemplate.Resolve(o.ChatTemplate, o.Model, o.ChatTemplateKwargs);
        var load = new DataLoadOptions { ExpectedKind = DatasetKind.Preference, SkipBadRecords = o.SkipBadRecords };
        var data = DatasetLoader.LoadPreferences(o.Data!, load);
        if (data.Warning != null) log.WriteLine($"warning: {data.Warning}");
        if (template.FallbackWarning(data.Records.Any(p => p.Prompt.IsConversational || p.Chosen.IsConversational)) is { } fallback) log.WriteLine($"warning: {fallback}");
        IReadOnlyList<PreferencePair> train = data.Records, eval = [];
        if (o.EvalData != null)
        {
            var e = DatasetLoader.LoadPreferences(o.EvalData, load);
            if (e.Warning != null) log.WriteLine($"warning: {e.Warning}");
            eval = e.Records;
        }
        else if (o.EvalSplit > 0) (train, eval) = TrainEvalSplit.SplitPreferences(train, o.EvalSplit, o.Seed);

        var encoding = new PreferenceEncodingOptions { Truncation = o.Truncation, SkipBadRecords = o.SkipBadRecords };
        var trainPairs = PreferenceEncoder.Encode(train, tokenizer, template, encoding);
        if (trainPairs.Warning != null) log.WriteLine($"warning: {trainPairs.Warning}");
        var evalPairs = PreferenceEncoder.Encode(eval, tokenizer, template, encoding);
        if (trainPairs.Records.Count == 0) throw new UserInputException($"{o.Data}: no usable preference pairs.");
        log.WriteLine($"rm: {trainPairs.Records.Count} training pairs, {evalPairs.Records.Count} eval pairs");

        // Recorded so that scoring renders as training did: its template's keyword arguments, and whether every record was text.
        bool textAnswers = train.All(p => !p.Prompt.IsConversational && !p.Chosen.IsConversational && !p.Rejected.IsConversational);
        RewardModelInfo Info(double mean, double std) => new(template.Name, mean, std, o.MaxLength, o.ChatTemplateKwargs, textAnswers);
        var rm = new RewardModel(pre.Model, tokenizer, template, Info(0, 1));
        var adapter = o.StartingAdapter(pre.Model, o.Model, LoraConfig.SequenceClassification);
        var task = new RewardModelTask(rm, o.Model!, trainPairs.Records, evalPairs.Records, o.BatchSize, o.Seed, o.CenterRewardsCoefficient, o.MaxLength, adapter, o.Merge);
        var loop = new TrainingLoop(o, task, "rm", log)
        {
            // Reward statistics on the training answers, so the RL phase can normalise scores (stored beside the model).
            BeforeFinalSave = () =>
            {
                var sequences = trainPairs.Records.SelectMany(p => new[] { p.Prompt.Concat(p.Chosen).ToArray(), p.Prompt.Concat(p.Rejected).ToArray() }).ToList();
                var scores = rm.ScoreSequences(sequences);
                double mean = scores.Average(s => (double)s);
                double std = Math.Sqrt(scores.Average(s => (s - mean) * (s - mean)));
                task.Info = Info(mean, std > 0 ? std : 1);
                return new Dictionary<string, object?> { ["reward_mean"] = mean, ["reward_std"] = std };
            },
        };
        return loop.Run();
    }
}
