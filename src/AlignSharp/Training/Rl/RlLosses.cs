using AlignSharp.Engine;

namespace AlignSharp.Training.Rl;

/// <summary>Policy-loss statistics, averaged with the loss's token weights.</summary>
public readonly record struct PolicyLossMetrics(double ClipFraction, double ApproxKl, double RatioMean, double RatioVariance,
    double LowClipFraction = 0, double HighClipFraction = 0);

/// <summary>The surrogate's clipping: the ratio kept within [1 − Low, 1 + High], and with Delta &gt; 0 the unclipped term's
/// ratio capped at Delta (two-sided clipping).</summary>
public readonly record struct SurrogateClip(float Low, float High, float Delta = 0);

/// <summary>
/// The RL losses as small pure functions over the N completion tokens of a micro-batch, packed in one vector.
/// Every function takes per-token weights w (Σw is the share of the optimizer step this micro-batch carries), so one
/// function serves a token mean (PPO: w = 1/N) and a per-sequence mean (GRPO: w = 1/(|o_i|·G)).
/// </summary>
public static class RlLosses
{
    /// <summary>
    /// PPO's clipped surrogate (Schulman et al. 2017, eq. 7), as a loss to minimise:
    /// ρ_t = exp(log π(a_t) − log π_old(a_t));  L = Σ_t w_t · max(−A_t·ρ'_t, −A_t·clip(ρ_t, 1 − ε, 1 + ε)).
    /// Metrics: the fraction of tokens where the clipped term is taken, approx KL ½(log ρ)², and ρ's mean and variance.
    /// logProbs [N] (with gradient) → [].
    /// </summary>
    public static (Tensor Loss, PolicyLossMetrics Metrics) ClippedSurrogate(
        Tensor logProbs, ReadOnlySpan<float> oldLogProbs, ReadOnlySpan<float> advantages, float clipRange, ReadOnlySpan<float> weights)
        => ClippedSurrogate(logProbs, oldLogProbs, advantages, new SurrogateClip(clipRange, clipRange), weights);

    /// <summary>
    /// The clipped surrogate with the variants of TRL's GRPOTrainer: the bounds 1 − ε_low and 1 + ε_high (DAPO's clip-higher
    /// when ε_high &gt; ε_low); ρ'_t = min(ρ_t, δ) in the unclipped term (two-sided clipping, INTELLECT-2) when δ &gt; 0; and with
    /// <paramref name="sequenceLengths"/> (the packed sequences' lengths, summing to N) one ratio per sequence, the exponential
    /// of its tokens' mean log-ratio, given to each of its tokens (GSPO, Zheng et al. 2025), its gradient through that mean.
    /// </summary>
    public static (Tensor Loss, PolicyLossMetrics Metrics) ClippedSurrogate(Tensor logProbs, ReadOnlySpan<float> oldLogProbs,
        ReadOnlySpan<float> advantages, SurrogateClip clip, ReadOnlySpan<float> weights, IReadOnlyList<int>? sequenceLengths = null)
    {
        int n = Check(logProbs, oldLogProbs, advantages, weights);
        var logRatio = Ops.Sub(logProbs, Tensor.FromArray(oldLogProbs, n));
        if (sequenceLengths != null) logRatio = SequenceMeans(logRatio, sequenceLengths);
        var ratio = Ops.Exp(logRatio);
        var negAdv = Tensor.FromArray(Negated(advantages), n);
        var unclipped = Ops.Mul(negAdv, clip.Delta > 0 ? Ops.Clamp(ratio, 0f, clip.Delta) : ratio);
        var clipped = Ops.Mul(negAdv, Ops.Clamp(ratio, 1 - clip.Low, 1 + clip.High));
        var loss = Ops.Sum(Ops.Mul(Ops.Maximum(unclipped, clipped), Tensor.FromArray(weights, n)));

        var r = ratio.Span; var u = unclipped.Span; var c = clipped.Span;
        double wsum = 0, clipFrac = 0, approxKl = 0, mean = 0, sq = 0, low = 0, high = 0;
        for (int t = 0; t < n; t++)
        {
            double w = weights[t], lr = Math.Log(r[t]);
            wsum += w;
            if (c[t] > u[t]) clipFrac += w;
            // TRL's clip_ratio: the ratio outside the bound on the side where the clipped term binds.
            if (r[t] < 1 - clip.Low && advantages[t] < 0) low += w;
            if (r[t] > 1 + clip.High && advantages[t] > 0) high += w;
            approxKl += w * 0.5 * lr * lr;
            mean += w * r[t];
            sq += w * r[t] * r[t];
        }
        if (wsum > 0) { clipFrac /= wsum; approxKl /= wsum; mean /= wsum; sq /= wsum; low /= wsum; high /= wsum; }
        return (loss, new PolicyLossMetrics(clipFrac, approxKl, mean, Math.Max(0, sq - mean * mean), low, high));
    }

    /// <summary>x [N] packed by sequences of the given lengths → [N], each element its sequence's mean (an empty sequence
    /// has no elements). The gradient of each element spreads evenly over its sequence.</summary>
    public static Tensor SequenceMeans(Tensor x, IReadOnlyList<int> lengths)
    {
        int n = x.Length, longest = lengths.Count == 0 ? 0 : lengths.Max();
        if (lengths.Sum() != n) throw new ArgumentException($"Sequence lengths summing to {lengths.Sum()} for {n} values.");
        if (n == 0 || longest == 0) return x;
        // Gather into [S, longest] (padding reads element 0 and is masked out), sum each row, scale, gather back.
        var padded = new int[lengths.Count * longest];
        var keep = new float[padded.Length];
        var inverse = new float[lengths.Count];
        var owner = new int[n];
        int at = 0;
        for (int s = 0; s < lengths.Count; s++)
        {
            for (int j = 0; j < lengths[s]; j++) { padded[s * longest + j] = at + j; keep[s * longest + j] = 1; owner[at + j] = s; }
            inverse[s] = lengths[s] > 0 ? 1f / lengths[s] : 0f;
            at += lengths[s];
        }
        var rows = Ops.Reshape(Ops.Mul(Ops.Gather(x, padded, padded.Length), Tensor.FromArray(keep, padded.Length)), lengths.Count, longest);
        var means = Ops.Mul(Ops.SumLast(rows), Tensor.FromArray(inverse, lengths.Count));
        return Ops.Gather(means, owner, n);
    }

    /// <summary>
    /// PPO's clipped value loss (as in OpenAI baselines and TRL):
    /// V^clip_t = V_old,t + clip(V_t − V_old,t, −ε_v, ε_v);  L = ½·Σ_t w_t · max((V_t − R_t)², (V^clip_t − R_t)²).
    /// Returns the loss and the (weighted) fraction of tokens where the clipped term is taken. values [N] → [].
    /// </summary>
    public static (Tensor Loss, double ClipFraction) ClippedValue(
        Tensor values, ReadOnlySpan<float> oldValues, ReadOnlySpan<float> returns, float clipRange, ReadOnlySpan<float> weights)
    {
        int n = Check(values, oldValues, returns, weights);
        var old = Tensor.FromArray(oldValues, n);
        var ret = Tensor.FromArray(returns, n);
        var clippedValues = Ops.Add(old, Ops.Clamp(Ops.Sub(values, old), -clipRange, clipRange));
        var unclippedLoss = Ops.Square(Ops.Sub(values, ret));
        var clippedLoss = Ops.Square(Ops.Sub(clippedValues, ret));
        var loss = Ops.MulScalar(Ops.Sum(Ops.Mul(Ops.Maximum(unclippedLoss, clippedLoss), Tensor.FromArray(weights, n))), 0.5f);

        var u = unclippedLoss.Span; var c = clippedLoss.Span;
        double wsum = 0, clipFrac = 0;
        for (int t = 0; t < n; t++) { wsum += weights[t]; if (c[t] > u[t]) clipFrac += weights[t]; }
        return (loss, wsum > 0 ? clipFrac / wsum : 0);
    }

    /// <summary>
    /// A KL penalty in the loss (GRPO, Shao et al. 2024 eq. 3; RLOO with the KL in the loss): L = β·Σ_t w_t·k_t with
    /// k_t the chosen estimator of KL(π ‖ π_ref) at token t. Returns the loss and the weighted mean of k_t.
    /// </summary>
    public static (Tensor Loss, double MeanKl) KlPenalty(Tensor logProbs, ReadOnlySpan<float> refLogProbs, KlEstimator estimator, float beta, ReadOnlySpan<float> weights)
    {
        int n = Check(logProbs, refLogProbs, refLogProbs, weights);
        var kl = KlEstimators.InLoss(estimator, logProbs, Tensor.FromArray(refLogProbs, n));
        var loss = Ops.MulScalar(Ops.Sum(Ops.Mul(kl, Tensor.FromArray(weights, n))), beta);
        return (loss, WeightedMean(kl.Span, weights));
    }

    /// <summary>
    /// The exact KL penalty in the loss: L = β·Σ_t w_t·Σ_v π_t(v)·(log π_t(v) − log π_ref,t(v)), differentiable through the
    /// policy's logits. logits [N, V] (policy, at the training temperature, with gradient), refLogProbs [N, V] (log-softmax
    /// of the reference's logits, constants) → []. Returns the loss and the weighted mean of KL_t.
    /// </summary>
    public static (Tensor Loss, double MeanKl) FullKlPenalty(Tensor logits, Tensor refLogProbs, float beta, ReadOnlySpan<float> weights)
    {
        int n = logits.Dim(0);
        if (logits.Rank != 2 || !logits.Shape.SequenceEqual(refLogProbs.Shape) || weights.Length != n)
            throw new ArgumentException($"FullKlPenalty needs logits and reference log-probabilities [N, V] and N weights: {logits}, {refLogProbs}, {weights.Length}.");
        var logp = Ops.LogSoftmax(logits);
        var kl = Ops.SumLast(Ops.Mul(Ops.Exp(logp), Ops.Sub(logp, refLogProbs)));
        var loss = Ops.MulScalar(Ops.Sum(Ops.Mul(kl, Tensor.FromArray(weights, n))), beta);
        return (loss, WeightedMean(kl.Span, weights));
    }

    /// <summary>Entropy bonus: L = −c·Σ_t w_t·H_t (maximising entropy). Returns the loss and the weighted mean entropy.</summary>
    public static (Tensor Loss, double MeanEntropy) EntropyBonus(Tensor entropy, float coefficient, ReadOnlySpan<float> weights)
    {
        int n = Check(entropy, weights, weights, weights);
        var loss = Ops.MulScalar(Ops.Sum(Ops.Mul(entropy, Tensor.FromArray(weights, n))), -coefficient);
        return (loss, WeightedMean(entropy.Span, weights));
    }

    /// <summary>Token weights for a mean over all tokens of the given sequences, scaled by <paramref name="share"/>.</summary>
    public static float[] TokenMeanWeights(IReadOnlyList<int> lengths, float share = 1f)
    {
        int n = lengths.Sum();
        var w = new float[n];
        Array.Fill(w, n > 0 ? share / n : 0f);
        return w;
    }

    /// <summary>Token weights for a mean over sequences of each sequence's token mean, scaled by <paramref name="share"/>.</summary>
    public static float[] SequenceMeanWeights(IReadOnlyList<int> lengths, float share = 1f)
    {
        var w = new float[lengths.Sum()];
        int at = 0;
        foreach (var len in lengths)
        {
            w.AsSpan(at, len).Fill(share / (len * lengths.Count));
            at += len;
        }
        return w;
    }

    private static double WeightedMean(ReadOnlySpan<float> x, ReadOnlySpan<float> w)
    {
        double s = 0, ws = 0;
        for (int i = 0; i < x.Length; i++) { s += w[i] * x[i]; ws += w[i]; }
        return ws > 0 ? s / ws : 0;
    }

    private static float[] Negated(ReadOnlySpan<float> x)
    {
        var y = new float[x.Length];
        for (int i = 0; i < x.Length; i++) y[i] = -x[i];
        return y;
    }

    private static int Check(Tensor x, ReadOnlySpan<float> a, ReadOnlySpan<float> b, ReadOnlySpan<float> w)
    {
        int n = x.Length;
        if (x.Rank != 1 || a.Length != n || b.Length != n || w.Length != n)
            throw new ArgumentException($"The loss needs one value per token: tensor {x}, {a.Length}, {b.Length} and {w.Length} values.");
        return n;
    }
}
