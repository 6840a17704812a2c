using AlignSharp.Engine;

namespace AlignSharp.Training.Kto;

/// <summary>
/// The KTO loss of B unpaired examples: per-example losses [B] (differentiable, already multiplied by the desirable
/// or undesirable weight, not yet averaged), the reference point z (a constant), and each example's implicit reward
/// β·(log π − log π_ref) (constants).
/// </summary>
public sealed record KtoLossResult(Tensor Losses, float Kl, float[] Rewards);

/// <summary>
/// KTO (Ethayarajh et al. 2024, eq. 7–8), as TRL's KTOTrainer computes it. With r = log π(y|x) − log π_ref(y|x)
/// (sums over the completion's tokens) and the reference point z = max(0, mean over the batch of
/// log π(y'|x') − log π_ref(y'|x')) on mismatched pairs (completion i with prompt i+1), held constant:
/// a desirable example loses w_D·(1 − σ(β·(r − z))), an undesirable one w_U·(1 − σ(β·(z − r))).
/// </summary>
public static class KtoLoss
{
    /// <param name="logps">[B] policy log-probabilities of the completions (differentiable).</param>
    /// <param name="refLogps">[B] the reference's (constants).</param>
    /// <param name="klLogps">[B] policy log-probabilities of the mismatched pairs (read as constants: z is detached).</param>
    /// <param name="refKlLogps">[B] the reference's of the mismatched pairs.</param>
    /// <param name="desirable">[B] the labels.</param>
    /// <param name="referencePoint">false: APO-zero for unpaired data (TRL's apo_zero_unpaired), z = 0 (the mismatched
    /// pairs are not read): w_D·(1 − σ(β·r)) and w_U·σ(β·r).</param>
    public static KtoLossResult Compute(Tensor logps, float[] refLogps, float[] klLogps, float[] refKlLogps, bool[] desirable,
        float beta, float desirableWeight = 1f, float undesirableWeight = 1f, bool referencePoint = true)
    {
        int b = desirable.Length;
        double kl = 0;
        for (int i = 0; i < b && referencePoint; i++) kl += (double)klLogps[i] - refKlLogps[i];
        float z = b == 0 ? 0f : (float)Math.Max(0, kl / b);

        // β·(r − z) for a desirable example, β·(z − r) for an undesirable one: x = s·β·r − s·β·z with s = ±1; loss w·σ(−x) = w·(1 − σ(x)).
        var scale = new float[b];
        var shift = new float[b];
        var weight = new float[b];
        for (int i = 0; i < b; i++)
        {
            float s = desirable[i] ? 1f : -1f;
            scale[i] = -s * beta;
            shift[i] = s * beta * z;
            weight[i] = desirable[i] ? desirableWeight : undesirableWeight;
        }
        var ratio = Ops.Sub(logps, Tensor.FromArray(refLogps, b));
        var negX = Ops.Add(Ops.Mul(ratio, Tensor.FromArray(scale, b)), Tensor.FromArray(shift, b));
        var losses = Ops.Mul(Ops.Sigmoid(negX), Tensor.FromArray(weight, b));
        var r = ratio.ToArray();
        for (int i = 0; i < b; i++) r[i] *= beta;
        return new KtoLossResult(losses, z, r);
    }
}
