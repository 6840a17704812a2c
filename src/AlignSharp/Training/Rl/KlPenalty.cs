using AlignSharp.Engine;

namespace AlignSharp.Training.Rl;

/// <summary>
/// How the per-token KL(π ‖ π_ref) is estimated from a sampled token (Schulman, "Approximating KL divergence",
/// 2020), with Δ = log π(a) − log π_ref(a):
/// k1 = Δ (unbiased, can be negative); k2 = ½Δ² (biased, low variance); k3 = e^(−Δ) − 1 + Δ (unbiased, ≥ 0);
/// full = Σ_v π(v)·(log π(v) − log π_ref(v)), the exact KL between the two next-token distributions,
/// affordable because both models' logits are at hand.
/// </summary>
public enum KlEstimator { K1, K2, K3, Full }

public static class KlEstimators
{
    public static KlEstimator Parse(string name) => name?.Trim().ToLowerInvariant() switch
    {
        "k1" => KlEstimator.K1,
        "k2" => KlEstimator.K2,
        "k3" => KlEstimator.K3,
        "full" => KlEstimator.Full,
        _ => throw new UserInputException($"--kl-estimator must be k1, k2, k3 or full, not '{name}'."),
    };

    public static string Name(KlEstimator e) => e.ToString().ToLowerInvariant();

    /// <summary>k1, k2 or k3 of one sampled token from its log-probabilities under the policy and the reference.</summary>
    public static float Sampled(KlEstimator estimator, float logProb, float refLogProb)
    {
        float delta = logProb - refLogProb;
        return estimator switch
        {
            KlEstimator.K1 => delta,
            KlEstimator.K2 => 0.5f * delta * delta,
            KlEstimator.K3 => MathF.Exp(-delta) - 1f + delta,
            _ => throw new ArgumentException("The full KL needs both distributions: call Full with the logits."),
        };
    }

    /// <summary>
    /// Exact KL(p ‖ q) between the next-token distributions p = softmax(policyLogits / T) and
    /// q = softmax(refLogits / T), in float64: Σ_v p_v (log p_v − log q_v).
    /// </summary>
    public static float Full(ReadOnlySpan<float> policyLogits, ReadOnlySpan<float> refLogits, float temperature = 1f)
    {
        if (policyLogits.Length != refLogits.Length) throw new ArgumentException("Both distributions need the same vocabulary.");
        double invT = 1.0 / temperature;
        double lseP = LogSumExp(policyLogits, invT), lseQ = LogSumExp(refLogits, invT);
        double kl = 0;
        for (int v = 0; v < policyLogits.Length; v++)
        {
            double logP = policyLogits[v] * invT - lseP, logQ = refLogits[v] * invT - lseQ;
            kl += Math.Exp(logP) * (logP - logQ);
        }
        return (float)Math.Max(0, kl);
    }

    private static double LogSumExp(ReadOnlySpan<float> x, double scale)
    {
        double max = double.NegativeInfinity;
        foreach (var v in x) max = Math.Max(max, v * scale);
        double s = 0;
        foreach (var v in x) s += Math.Exp(v * scale - max);
        return max + Math.Log(s);
    }

    /// <summary>
    /// The estimator as a differentiable function of the policy's log-probabilities, for a KL term in the loss
    /// (GRPO, RLOO with the KL in the loss). logProbs [N] (with gradient), refLogProbs [N] (constants) → [N].
    /// The full KL in the loss needs both distributions: see <see cref="RlLosses.FullKlPenalty"/>.
    /// </summary>
    public static Tensor InLoss(KlEstimator estimator, Tensor logProbs, Tensor refLogProbs)
    {
        var delta = Ops.Sub(logProbs, refLogProbs);
        return estimator switch
        {
            KlEstimator.K1 => delta,
            KlEstimator.K2 => Ops.MulScalar(Ops.Square(delta), 0.5f),
            KlEstimator.K3 => Ops.Add(Ops.AddScalar(Ops.Exp(Ops.Neg(delta)), -1f), delta),
            _ => throw new ArgumentException("The full KL in the loss needs both models' logits: use RlLosses.FullKlPenalty."),
        };
    }
}

/// <summary>The KL coefficient β: fixed, or adapted towards a target KL.</summary>
public abstract class KlController
{
    /// <summary>The current β.</summary>
    public double Value { get; protected set; }

    /// <summary>Adjusts β after a rollout batch whose mean per-sequence KL was <paramref name="currentKl"/>, over <paramref name="batchSize"/> sequences.</summary>
    public abstract void Update(double currentKl, int batchSize);

    /// <summary>Restores β from a checkpoint.</summary>
    public void Restore(double value) => Value = value;
}

public sealed class FixedKlController : KlController
{
    public FixedKlController(double value) => Value = value;
    public override void Update(double currentKl, int batchSize) { }
}

/// <summary>
/// The adaptive controller of Ziegler et al. 2019 ("Fine-Tuning Language Models from Human Preferences", §2.2):
/// e = clip(KL / KL_target − 1, −0.2, 0.2); β ← β·(1 + e·n / horizon), n the number of sequences in the batch.
/// </summary>
public sealed class AdaptiveKlController : KlController
{
    public double Target { get; }
    public double Horizon { get; }

    public AdaptiveKlController(double initial, double target, double horizon)
    {
        if (!(target > 0)) throw new UserInputException("--target-kl must be > 0.");
        if (!(horizon > 0)) throw new UserInputException("--kl-horizon must be > 0.");
        Value = initial;
        Target = target;
        Horizon = horizon;
    }

    public override void Update(double currentKl, int batchSize)
    {
        if (!double.IsFinite(currentKl)) return;
        double error = Math.Clamp(currentKl / Target - 1, -0.2, 0.2);
        Value *= 1 + error * batchSize / Horizon;
    }
}
