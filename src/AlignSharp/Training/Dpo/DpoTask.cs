using AlignSharp.Training.Data;
using AlignSharp.Text.Jinja;
using System.Diagnostics;
using AlignSharp.Engine;
using AlignSharp.Models;
using AlignSharp.Models.Checkpoints;
using AlignSharp.Models.Lora;
using AlignSharp.Text;
using AlignSharp.Training.Runs;

namespace AlignSharp.Training.Dpo;

/// <summary>
/// TRL's DPO metrics, as sums weighted by the units' weights (the loop divides by Σ weight to average):
/// over every (chosen, rejected) pair of a unit (one for a pair; a ranking's ordered pairs each carrying 1/P of its
/// weight) rewards/chosen, rewards/rejected, rewards/accuracies (chosen &gt; rejected strictly: a tie is not
/// accurate), rewards/margins, logps/chosen, logps/rejected (the log-probabilities the loss reads: sums, or
/// per-token means for ipo/simpo/orpo); logits/chosen and logits/rejected are TRL's batch means of the raw logits
/// over every answer position and vocabulary entry of the chosen (rejected) rows, weighted by the batch's weight.
/// </summary>
public static class DpoMetrics
{
    public static readonly string[] Names =
        ["rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen", "logps/rejected", "logits/chosen", "logits/rejected"];

    public static Dictionary<string, double> Sums(IReadOnlyList<RankedUnit> units, ReadOnlySpan<float> rowRewards, ReadOnlySpan<float> rowLogps, AnswerLogProbs answers)
    {
        var m = Names.ToDictionary(n => n, _ => 0.0);
        double chosenLogits = 0, rejectedLogits = 0, chosenCount = 0, rejectedCount = 0, weight = 0;
        foreach (var u in units)
        {
            var pairs = u.OrderedPairs().ToList();
            weight += u.Weight;
            foreach (var (c, r) in pairs)
            {
                double w = (double)u.Weight / pairs.Count;
                m["rewards/chosen"] += w * rowRewards[c];
                m["rewards/rejected"] += w * rowRewards[r];
                m["rewards/accuracies"] += rowRewards[c] > rowRewards[r] ? w : 0;
                m["rewards/margins"] += w * ((double)rowRewards[c] - rowRewards[r]);
                m["logps/chosen"] += w * rowLogps[c];
                m["logps/rejected"] += w * rowLogps[r];
                chosenLogits += answers.LogitSums[c];
                rejectedLogits += answers.LogitSums[r];
                chosenCount += (double)answers.Tokens[c] * answers.Vocab;
                rejectedCount += (double)answers.Tokens[r] * answers.Vocab;
            }
        }
        m["logits/chosen"] = chosenCount > 0 ? weight * chosenLogits / chosenCount : 0;
        m["logits/rejected"] = rejectedCount > 0 ? weight * rejectedLogits / rejectedCount : 0;
        return m;
    }
}

/// <summary>
/// DPO as the shared <see cref="TrainingLoop"/> sees it: fixed micro-batches of pairs (or rankings), each weighing
/// the sum of its units' weights; a forward pass scores the policy, looks up the reference, applies the chosen loss
/// and returns the weighted loss sum with the metric sums. Evaluation does the same without gradients.
/// </summary>
public sealed class DpoTask : ISupervisedTask
{
    private readonly DpoObjectiveOptions _options;
    private readonly DpoLossType _loss;
    private readonly TransformerModel _policy;
    private readonly ReferenceLogProbs? _reference;
    private readonly IReadOnlyList<DpoBatch> _train;
    private readonly IReadOnlyList<DpoBatch> _eval;

    /// <param name="adapter">Train this LoRA adapter on the frozen policy instead of all its weights.</param>
    /// <summary>ipo on the answers' summed log-probabilities, as TRL's OnlineDPOTrainer scores it (its DPOTrainer, like
    /// `alignsharp dpo`, on per-token means).</summary>
    public bool IpoOnSums { get; init; }

    public DpoTask(DpoObjectiveOptions options, TransformerModel policy, ReferenceLogProbs? reference, IReadOnlyList<DpoBatch> train, IReadOnlyList<DpoBatch> eval, LoraAdapter? adapter = null)
    {
        _options = options;
        _loss = options.Loss;
        _policy = policy;
        _reference = options.UsesReference ? reference ?? throw new ArgumentNullException(nameof(reference), $"the {options.LossType} loss needs a reference.") : null;
        _train = train;
        _eval = eval;
        Action<string> extras = dir => ModelChatTemplate.Write(dir, ChatTemplate.Resolve(_options.ChatTemplate, _options.Policy).Source);
        Trainable = Runs.Trainable.For(_policy, adapter, _options.Policy, options.Merge, extras);
    }

    public int MicroBatches => _train.Count;

    public double Weight(int index) => _train[index].Weight;

    public MicroBatchResult Forward(int index, Random rng)
    {
        if (_policy.Adapter is { } adapter) adapter.DropoutRng = rng;
        _training = true;
        try { return Score(_train[index]); }
        finally { _training = false; }
    }

    // BCO pair's running mean of the batches' rewards: moved by training batches only (TRL's moves in evaluation too),
    // over every rank's batch as TRL's RunningMoments gathers them, and kept in checkpoints.
    private readonly DpoLosses.RunningMean _bcoRewards = new();
    private bool _training;

    public IReadOnlyDictionary<string, double> State => _loss == DpoLossType.BcoPair
        ? new Dictionary<string, double> { ["bco_running_mean"] = _bcoRewards.Mean, ["bco_running_count"] = _bcoRewards.Count }
        : new Dictionary<string, double>();

    public void Restore(IReadOnlyDictionary<string, double> state) => _bcoRewards.Set(state["bco_running_mean"], state["bco_running_count"]);

    private float BcoDelta(PairLogProbs lp)
    {
        if (!_training) return (float)_bcoRewards.Mean;
        var batch = new[] { DpoLosses.MeanReward(lp, _options.Beta), 1.0 };
        var world = Distributed.World.Current;
        if (world.Size > 1) world.AllReduceSum(batch);
        _bcoRewards.Add(batch[0] / batch[1], batch[1]);
        return (float)_bcoRewards.Mean;
    }

    public ITrainable Trainable { get; }

    public Dictionary<string, double>? Evaluate() => _eval.Count == 0 ? null : Evaluate(_eval);

    /// <summary>Loss and metrics averaged over <paramref name="batches"/> (by weight), with tokens/s; no gradients.</summary>
    public Dictionary<string, double> Evaluate(IReadOnlyList<DpoBatch> batches)
    {
        if (_policy.Adapter is { } adapter) adapter.DropoutRng = null; // no LoRA dropout in evaluation
        return SupervisedEvaluation.Average(batches, Score, b => b.Weight);
    }

    /// <summary>One batch: policy log-probabilities (one forward pass), the loss per unit, Σ weight·loss and the metric sums.</summary>
    public MicroBatchResult Score(DpoBatch batch) => ScoreRows(batch).Result;

    /// <summary>
    /// <see cref="Score"/> with what it read per row: the policy's answer log-probabilities and the reference's sums
    /// (null without a reference), for trainers that log more about the rows (online DPO's KL and entropy).
    /// </summary>
    public (MicroBatchResult Result, AnswerLogProbs Policy, float[]? ReferenceSums) ScoreRows(DpoBatch batch)
    {
        var answers = AnswerScoring.Compute(_policy, batch);
        var aux = _policy.RouterAuxLoss();   // read before the reference's pass, which may be this model's
        // ipo, simpo and orpo read per-token means; the others sums over the answer.
        bool mean = _loss is DpoLossType.Simpo or DpoLossType.Orpo || _loss == DpoLossType.Ipo && !IpoOnSums;
        var logps = mean ? answers.Means() : answers.Sums;
        Tensor? refLogps = null;
        float[]? referenceSums = null;
        if (_reference != null)
        {
            var sums = referenceSums = _reference.For(batch);
            refLogps = Tensor.FromArray(mean ? sums.Select((s, i) => s / Math.Max(1, answers.Tokens[i])).ToArray() : sums, sums.Length);
        }

        Tensor losses;
        float[] rowRewards;
        IReadOnlyDictionary<string, float[]>? extra = null;
        int[] chosenRows = [];
        if (_loss == DpoLossType.PlackettLuce)
        {
            var pl = DpoLosses.PlackettLuce(logps, refLogps, batch.Units.Select(u => u.Groups).ToArray(), _options.Beta);
            (losses, rowRewards) = (pl.Losses, pl.RowRewards);
        }
        else
        {
            var (c, r) = batch.PairRows();
            chosenRows = c;
            var lp = new PairLogProbs(Ops.IndexSelect(logps, c), Ops.IndexSelect(logps, r),
                refLogps is null ? null : Ops.IndexSelect(refLogps, c), refLogps is null ? null : Ops.IndexSelect(refLogps, r));
            var pair = PairwiseLoss(lp);
            (losses, extra) = (pair.Losses, pair.Extra);
            rowRewards = new float[batch.Rows];
            for (int i = 0; i < c.Length; i++) { rowRewards[c[i]] = pair.ChosenRewards[i]; rowRewards[r[i]] = pair.RejectedRewards[i]; }
        }

        var weights = batch.Units.Select(u => u.Weight).ToArray();
        // AOT's losses are per sorted position, not per pair: each carries the pairs' mean weight (the same total).
        if (_loss is DpoLossType.Aot or DpoLossType.AotPair) Array.Fill(weights, weights.Average());
        var lossSum = Ops.Sum(Ops.Mul(losses, Tensor.FromArray(weights, weights.Length)));
        var metrics = DpoMetrics.Sums(batch.Units, rowRewards, logps.Span, answers);
        if (_options.RpoAlpha > 0)
        {
            // RPO (Pang et al. 2024; TRL's rpo_alpha): + α·NLL of the chosen answers, a token mean over the batch's chosen
            // answers added to every pair's loss, so α·NLL times the batch's weight in the step's sum.
            var nll = DpoLosses.ChosenNll(answers.Sums, answers.Tokens, chosenRows);   // pairwise losses only (validated)
            float weight = weights.Sum();
            lossSum = Ops.Add(lossSum, Ops.MulScalar(nll, _options.RpoAlpha * weight));
            metrics["nll_loss"] = nll.Item() * weight;
        }
        // output_router_logits: TRL's DPO adds coef · the policy forward's load-balancing loss to every unit's loss.
        lossSum = RouterBalance.AddTo(lossSum, aux, _policy, weights.Sum(), metrics);
        if (extra != null)
            foreach (var (name, values) in extra)
                metrics[name] = values.Select((x, i) => (double)weights[i] * x).Sum();
        return (new MicroBatchResult(lossSum, metrics, batch.Tokens), answers, referenceSums);
    }

    private PairLoss PairwiseLoss(PairLogProbs lp) => _loss switch
    {
        DpoLossType.Sigmoid => DpoLosses.Sigmoid(lp, _options.Beta, _options.LabelSmoothing),
        DpoLossType.Ipo => DpoLosses.Ipo(lp, _options.Beta),
        DpoLossType.Hinge => DpoLosses.Hinge(lp, _options.Beta),
        DpoLossType.Simpo => DpoLosses.Simpo(lp, _options.Beta, _options.SimpoGamma, _options.LabelSmoothing),
        DpoLossType.Orpo => DpoLosses.Orpo(lp, _options.OrpoLambda),
        DpoLossType.Robust => DpoLosses.Robust(lp, _options.Beta, _options.LabelSmoothing),
        DpoLossType.ExoPair => DpoLosses.ExoPair(lp, _options.Beta, _options.LabelSmoothing),
        DpoLossType.NcaPair => DpoLosses.NcaPair(lp, _options.Beta),
        DpoLossType.SppoHard => DpoLosses.SppoHard(lp, _options.Beta),
        DpoLossType.ApoZero => DpoLosses.ApoZero(lp, _options.Beta),
        DpoLossType.ApoDown => DpoLosses.ApoDown(lp, _options.Beta),
        DpoLossType.DiscoPop => DpoLosses.DiscoPop(lp, _options.Beta, _options.DiscopopTau),
        DpoLossType.Aot => DpoLosses.Aot(lp, _options.Beta, _options.LabelSmoothing),
        DpoLossType.AotPair => DpoLosses.AotPair(lp, _options.Beta, _options.LabelSmoothing),
        DpoLossType.BcoPair => DpoLosses.BcoPair(lp, _options.Beta, BcoDelta(lp)),
        _ => throw new InvalidOperationException($"{_loss} is not a pairwise loss."),
    };

}
