using AlignSharp.Distributed;
using AlignSharp.Engine;
using AlignSharp.Models;
using AlignSharp.Text;
using AlignSharp.Training.Data;

namespace AlignSharp.Training.Rl;

/// <summary>Where an update stands: the rollout step, the global micro-batch number, the current β, and the share of the
/// optimizer step that one micro-batch carries (its <see cref="RlAlgorithm.Weight"/> over the minibatch's total, so that
/// accumulation 1×8 equals 8×1).</summary>
public readonly record struct UpdateContext(int Step, long MicroBatch, double Beta, float Share);

/// <summary>What distinguishes PPO, GRPO and RLOO: the advantages of a rollout batch and the loss of a micro-batch.</summary>
public abstract class RlAlgorithm(RlOptions options)
{
    public RlOptions Options => options;

    /// <summary>The ranks whose rollouts form the batch together (data-parallel): whitening and rollout metrics use
    /// statistics over all of them. One process by default; the trainer sets it.</summary>
    public ICommunicator World { get; set; } = SingleProcess.Instance;

    /// <summary>The trainer's name: ppo, grpo or rloo.</summary>
    public abstract string Name { get; }

    /// <summary>True when the KL penalty is part of the reward (so that β·KL shows in objective/non_score_reward).</summary>
    public abstract bool KlInReward { get; }

    /// <summary>Fills <see cref="RolloutBatch.Advantages"/> (and the returns, for PPO) from scores, KL and values.</summary>
    public abstract void ComputeAdvantages(RolloutBatch batch, double beta);

    /// <summary>Whether the update also logs TRL's GRPO clip shares (clip_ratio/low_mean, high_mean, region_mean).</summary>
    protected virtual bool LogsClipRatios => false;

    /// <summary>Metrics of a step's rollout particular to the algorithm (joined to the step's metrics line); none by default.</summary>
    public virtual Dictionary<string, double> RolloutMetrics(RolloutBatch batch) => [];

    /// <summary>What the loss of <paramref name="rows"/> is averaged over: completion tokens (PPO's token mean) or completions
    /// (the critic-free per-completion mean). An optimizer step's loss is normalised by the sum over its micro-batches.</summary>
    public abstract double Weight(RolloutBatch batch, IReadOnlyList<int> rows);

    /// <summary>The loss of the micro-batch <paramref name="rows"/>, already scaled by its share, with its metrics (unscaled means).</summary>
    public abstract (Tensor Loss, Dictionary<string, double> Metrics) Loss(RlModels models, RolloutBatch batch, IReadOnlyList<int> rows, UpdateContext context);

    /// <summary>The policy's forward pass on a micro-batch and the clipped surrogate with its metrics. The logits [N, V] only
    /// when <paramref name="keepLogits"/> (the full KL in the loss); otherwise the log-probabilities are taken in row chunks.</summary>
    protected (Tensor Loss, Tensor? Logits, Tensor LogProbs, SequenceForward.Packed Packed, Dictionary<string, double> Metrics) PolicyTerm(
        RlModels models, RolloutBatch batch, IReadOnlyList<int> rows, float[] weights, float share, bool keepLogits = false)
    {
        var packed = SequenceForward.Pack(batch, rows);
        var logits = keepLogits ? SequenceForward.Logits(models.Policy, packed, options.Temperature) : null;
        var (logp, entropy) = logits != null ? Ops.TokenLogProbs(logits, packed.Targets) : SequenceForward.TokenLogProbs(models.Policy, packed, options.Temperature);
        var clip = new SurrogateClip(options.ClipRange, options.UpperClipRange, options.Delta);
        var lengths = options.ImportanceSamplingLevel == "sequence" ? rows.Select(r => batch.CompletionIds[r].Length).ToArray() : null;
        var (loss, m) = RlLosses.ClippedSurrogate(logp, SequenceForward.Concat(batch.LogProbs, rows), SequenceForward.Concat(batch.Advantages, rows), clip, weights, lengths);
        if (options.EntropyCoef > 0) loss = Ops.Add(loss, RlLosses.EntropyBonus(entropy, options.EntropyCoef, weights).Loss);
        var metrics = new Dictionary<string, double>();
        // A micro-batch without a share of the step's loss (dapo's token normaliser, every completion masked by
        // --mask-truncated-completions) has no mean loss to log (0/0), as it has no tokens to measure below.
        if (share > 0) metrics["loss/policy_avg"] = loss.Item() / share;
        // Means over tokens: a micro-batch whose every token is masked (all completions truncated under
        // --mask-truncated-completions) measures none, rather than a ratio of 0.
        if (weights.Any(w => w > 0))
        {
            metrics["policy/approxkl_avg"] = m.ApproxKl;
            metrics["policy/clipfrac_avg"] = m.ClipFraction;
            metrics["policy/entropy_avg"] = WeightedMean(entropy.Span, weights);
            metrics["val/ratio"] = m.RatioMean;
            metrics["val/ratio_var"] = m.RatioVariance;
        }
        if (LogsClipRatios && weights.Any(w => w > 0))
        {
            metrics["clip_ratio/low_mean"] = m.LowClipFraction;
            metrics["clip_ratio/high_mean"] = m.HighClipFraction;
            metrics["clip_ratio/region_mean"] = m.LowClipFraction + m.HighClipFraction;
        }
        return (loss, logits, logp, packed, metrics);
    }

    protected static double WeightedMean(ReadOnlySpan<float> x, ReadOnlySpan<float> w)
    {
        double s = 0, ws = 0;
        for (int i = 0; i < x.Length; i++) { s += w[i] * x[i]; ws += w[i]; }
        return ws > 0 ? s / ws : 0;
    }
}

/// <summary>
/// PPO with a value model (Ziegler et al. 2019; TRL's PPOTrainer): per-token rewards −β·KL_t plus the score at the last
/// completion token, GAE, whitened advantages, clipped surrogate + vf_coef × clipped value loss, optional entropy bonus
/// and PPO-ptx.
/// </summary>
public sealed class Ppo(PpoOptions options, PtxData? ptx = null) : RlAlgorithm(options)
{
    public override string Name => "ppo";
    public override bool KlInReward => true;

    /// <summary>r_t = −β·KL_t, plus the score at the completion's last token (its EOS when it has one; never padding:
    /// completions are stored unpadded). Then GAE(γ, λ) with the rollout values, and whitened advantages.</summary>
    public override void ComputeAdvantages(RolloutBatch batch, double beta)
    {
        var values = batch.Values ?? throw new InvalidOperationException("PPO needs the value model's values in the rollout.");
        var rewards = PerTokenRewards(batch.Kl, batch.Scores, beta);
        if (options.WhitenRewards) Advantages.Whiten(rewards, shiftMean: false, World);
        batch.Advantages = new float[batch.Count][];
        batch.Returns = new float[batch.Count][];
        for (int i = 0; i < batch.Count; i++)
            (batch.Advantages[i], batch.Returns[i]) = Advantages.Gae(rewards[i], values[i], options.Gamma, options.Lam);
        Advantages.Whiten(batch.Advantages, world: World);
    }

    /// <summary>r_t = −β·KL_t at every completion token, plus the score at the last one.</summary>
    public static float[][] PerTokenRewards(float[][] kl, float[] scores, double beta)
    {
        var rewards = new float[kl.Length][];
        for (int i = 0; i < kl.Length; i++)
        {
            rewards[i] = kl[i].Select(k => (float)(-beta * k)).ToArray();
            if (rewards[i].Length > 0) rewards[i][^1] += scores[i];
        }
        return rewards;
    }

    public override double Weight(RolloutBatch batch, IReadOnlyList<int> rows) => rows.Sum(r => batch.CompletionIds[r].Length);

    public override (Tensor Loss, Dictionary<string, double> Metrics) Loss(RlModels models, RolloutBatch batch, IReadOnlyList<int> rows, UpdateContext context)
    {
        var lengths = rows.Select(r => batch.CompletionIds[r].Length).ToArray();
        var weights = RlLosses.TokenMeanWeights(lengths, context.Share);
        var (loss, _, _, packed, metrics) = PolicyTerm(models, batch, rows, weights, context.Share);
        var values = SequenceForward.Values(models.Value ?? throw new InvalidOperationException("PPO needs a value model."), packed);
        var (valueLoss, valueClip) = RlLosses.ClippedValue(values, SequenceForward.Concat(batch.Values!, rows), SequenceForward.Concat(batch.Returns!, rows), options.ClipRangeValue, weights);
        loss = Ops.Add(loss, Ops.MulScalar(valueLoss, options.VfCoef));
        metrics["loss/value_avg"] = valueLoss.Item() / context.Share;
        metrics["val/clipfrac_avg"] = valueClip;
        if (ptx != null)
        {
            var lm = ptx.Loss(models.Policy, context.MicroBatch);
            loss = Ops.Add(loss, Ops.MulScalar(lm, options.PtxCoef * context.Share));
            metrics["loss/ptx_avg"] = lm.Item();
        }
        return (loss, metrics);
    }
}

/// <summary>
/// The critic-free family: GRPO (Shao et al. 2024) and RLOO (Ahmadian et al. 2024). Both broadcast one advantage per
/// completion to its tokens and minimise the clipped surrogate averaged per completion then over completions
/// (DeepSeekMath eq. 3), plus β × the KL estimator when the KL is in the loss.
/// </summary>
public abstract class CriticFree(RlOptions options) : RlAlgorithm(options)
{
    /// <summary>One advantage per completion.</summary>
    protected abstract float[] SequenceAdvantages(RolloutBatch batch, double beta);

    public override void ComputeAdvantages(RolloutBatch batch, double beta)
    {
        var adv = SequenceAdvantages(batch, beta);
        batch.Advantages = batch.CompletionIds.Select((c, i) => Enumerable.Repeat(adv[i], c.Length).ToArray()).ToArray();
    }

    public override double Weight(RolloutBatch batch, IReadOnlyList<int> rows) => rows.Count;

    /// <summary>The per-token weights of the micro-batch <paramref name="rows"/> (Σ = <paramref name="share"/> unless tokens are
    /// masked): each completion's token mean, then the mean over completions.</summary>
    public virtual float[] TokenWeights(RolloutBatch batch, IReadOnlyList<int> rows, float share)
        => RlLosses.SequenceMeanWeights(rows.Select(r => batch.CompletionIds[r].Length).ToArray(), share);

    public override (Tensor Loss, Dictionary<string, double> Metrics) Loss(RlModels models, RolloutBatch batch, IReadOnlyList<int> rows, UpdateContext context)
    {
        var weights = TokenWeights(batch, rows, context.Share);
        bool fullKl = !KlInReward && context.Beta > 0 && Options.Estimator == KlEstimator.Full;
        var (loss, logits, logp, packed, metrics) = PolicyTerm(models, batch, rows, weights, context.Share, keepLogits: fullKl);
        if (!KlInReward && context.Beta > 0)
        {
            var (klLoss, meanKl) = fullKl
                ? RlLosses.FullKlPenalty(logits!, ReferenceLogProbs(models, packed), (float)context.Beta, weights)
                : RlLosses.KlPenalty(logp, SequenceForward.Concat(batch.RefLogProbs, rows), Options.Estimator, (float)context.Beta, weights);
            loss = Ops.Add(loss, klLoss);
            metrics["loss/kl_avg"] = meanKl;
        }
        return (loss, metrics);
    }

    /// <summary>The reference's log-softmax at the completion positions, without gradient (for the full KL in the loss). → [N, V]</summary>
    private Tensor ReferenceLogProbs(RlModels models, SequenceForward.Packed packed)
    {
        using var noGrad = Autograd.NoGrad();
        return Ops.LogSoftmax(models.ReferenceLogits(packed, Options.Temperature));
    }
}

/// <summary>
/// GRPO: advantage (r − mean_group) / (std + 1e-4), the std the group's (or the batch's, or none: --scale-rewards); KL to
/// the reference in the loss (k3 by default); the loss aggregated as TRL's loss_type says (see <see cref="TokenWeights"/>).
/// </summary>
public sealed class Grpo(GrpoOptions options) : CriticFree(options)
{
    public override string Name => "grpo";
    public override bool KlInReward => false;
    protected override bool LogsClipRatios => true;

    protected override float[] SequenceAdvantages(RolloutBatch batch, double beta)
        => Advantages.GroupRelative(batch.Scores, options.NumGenerations, options.RewardScaling, World);

    /// <summary>Whether row r's tokens count in the loss: not when --mask-truncated-completions drops a completion that
    /// reached --max-new-tokens without its end-of-sequence token (DAPO's overlong filtering).</summary>
    private bool Counted(RolloutBatch batch, int r) => !options.MaskTruncatedCompletions || batch.EndsWithEos[r];

    private int CountedTokens(RolloutBatch batch, IReadOnlyList<int> rows) => rows.Where(r => Counted(batch, r)).Sum(r => batch.CompletionIds[r].Length);

    /// <summary>What a micro-batch's loss is normalised by, summed over the optimizer step: completions (grpo, dr_grpo),
    /// micro-batches (bnpo: each its own token mean, as TRL's per-micro-batch mean), or counted tokens (dapo).</summary>
    public override double Weight(RolloutBatch batch, IReadOnlyList<int> rows) => options.LossType switch
    {
        "bnpo" => 1,
        "dapo" => CountedTokens(batch, rows),
        _ => rows.Count,
    };

    /// <summary>
    /// TRL's loss types, the loss being Σ_t w_t·ℓ_t over the optimizer step's tokens (ℓ_t the clipped surrogate plus β·KL_t):
    /// grpo — each completion's token mean, then the mean over completions (DeepSeekMath eq. 3); bnpo — each micro-batch's
    /// token mean, averaged over micro-batches; dr_grpo — the token sum over (completions × --max-new-tokens) (Liu et al.
    /// 2025); dapo — the token sum over every token of the step (Yu et al. 2025). A completion masked by
    /// --mask-truncated-completions gets weight 0 and, as in TRL, still counts among the completions (grpo, dr_grpo).
    /// </summary>
    public override float[] TokenWeights(RolloutBatch batch, IReadOnlyList<int> rows, float share)
    {
        int tokens = CountedTokens(batch, rows);
        var w = new float[rows.Sum(r => batch.CompletionIds[r].Length)];
        int at = 0;
        foreach (var r in rows)
        {
            int len = batch.CompletionIds[r].Length;
            float each = !Counted(batch, r) || len == 0 ? 0f : options.LossType switch
            {
                "bnpo" or "dapo" => share / tokens,
                "dr_grpo" => share / ((float)rows.Count * options.MaxNewTokens),
                _ => share / ((float)len * rows.Count),
            };
            w.AsSpan(at, len).Fill(each);
            at += len;
        }
        return w;
    }

    /// <summary>
    /// As TRL's GRPOTrainer logs them: reward (mean score), reward_std (mean over prompts of the unbiased std of their
    /// group's scores), frac_reward_zero_std (share of prompts whose completions all scored the same, so they get no
    /// advantage), completions/mean_length (completion tokens per completion).
    /// </summary>
    public override Dictionary<string, double> RolloutMetrics(RolloutBatch batch)
    {
        var (_, stds) = Advantages.GroupStats(batch.Scores, options.NumGenerations);
        // Sums over every rank's groups (each prompt's group is on one rank), then the means.
        var t = World.Sum(batch.Scores.Sum(s => (double)s), batch.Count, stds.Sum(), stds.Count(s => Math.Abs(s) <= 1e-8), stds.Length, batch.CompletionTokens);
        return new Dictionary<string, double>
        {
            ["reward"] = t[0] / t[1],
            ["reward_std"] = t[2] / t[4],
            ["frac_reward_zero_std"] = t[3] / t[4],
            ["completions/mean_length"] = t[5] / t[1],
        };
    }
}

/// <summary>RLOO: reward r_i = score_i − β·Σ_t KL_t (KL in the reward, default) or the score (KL in the loss); advantage
/// r_i − mean of the other k − 1 rewards of the prompt; optionally whitened.</summary>
public sealed class Rloo(RlooOptions options) : CriticFree(options)
{
    public override string Name => "rloo";
    public override bool KlInReward => options.KlInReward;

    protected override float[] SequenceAdvantages(RolloutBatch batch, double beta)
    {
        var kl = batch.SequenceKl();
        var rewards = batch.Scores.Select((s, i) => KlInReward ? (float)(s - beta * kl[i]) : s).ToArray();
        var adv = Advantages.LeaveOneOut(rewards, options.RlooK);
        if (options.NormalizeAdvantage) { var wrapped = new[] { adv }; Advantages.Whiten(wrapped, world: World); }
        return adv;
    }
}

/// <summary>
/// PPO-ptx's data (Ouyang et al. 2022, eq. 2): SFT examples whose language-model loss (completion tokens) is added with
/// coefficient γ_ptx. Micro-batch m takes rows in a seeded order per pass, so a resumed run sees the same data.
/// </summary>
public sealed class PtxData
{
    private readonly IReadOnlyList<SftSequence> _rows;
    private readonly int _batchSize, _seed, _padId;

    public PtxData(IReadOnlyList<SftSequence> rows, int batchSize, int seed, int padId)
    {
        if (rows.Count == 0) throw new UserInputException("--ptx-data has no usable examples.");
        _rows = rows; _batchSize = batchSize; _seed = seed; _padId = padId;
    }

    public static PtxData Load(string path, ITokenizer tokenizer, ChatTemplate template, int maxLength, int batchSize, int seed, bool skipBadRecords)
    {
        var examples = DatasetLoader.LoadSft(path, new DataLoadOptions { SkipBadRecords = skipBadRecords });
        var encoded = SftEncoder.Encode(examples.Records, tokenizer, template, new SftEncodingOptions
        {
            Truncation = new TruncationOptions { MaxLength = maxLength, Overlong = OverlongRecords.Truncate },
            SkipBadRecords = skipBadRecords,
        });
        return new PtxData(encoded.Records, batchSize, seed, TokenSequences.PadId(tokenizer));
    }

    private int[] _order = [];
    private int _orderPass = -1;

    /// <summary>The seeded order of the rows in pass <paramref name="pass"/> over them.</summary>
    private int[] OrderOfPass(int pass)
    {
        if (pass != _orderPass)
        {
            _order = Enumerable.Range(0, _rows.Count).ToArray();
            new Random(Runs.TrainingLoop.HashSeed(_seed, pass + 7_000_001)).Shuffle(_order);
            _orderPass = pass;
        }
        return _order;
    }

    /// <summary>Mean next-token cross entropy over the completion tokens of micro-batch <paramref name="microBatch"/>. → []</summary>
    public Tensor Loss(TransformerModel policy, long microBatch)
    {
        int n = _rows.Count;
        var rows = new SftSequence[Math.Min(_batchSize, n)];
        for (int i = 0; i < rows.Length; i++)
        {
            long k = microBatch * rows.Length + i;
            rows[i] = _rows[OrderOfPass((int)(k / n))[(int)(k % n)]];
        }
        var batch = SftBatch.Create(rows, _padId);
        int b = batch.BatchSize, t = batch.SeqLen;
        var targets = new int[b * t];
        for (int r = 0; r < b; r++)
            for (int j = 0; j < t; j++) targets[r * t + j] = j + 1 < t ? batch.Labels[r * t + j + 1] : SftSequence.IgnoreIndex;
        var logits = policy.Forward(batch.InputIds, b, t, keyMask: batch.AttentionMask);
        return Ops.CrossEntropy(Ops.Reshape(logits, b * t, -1), targets);
    }
}
