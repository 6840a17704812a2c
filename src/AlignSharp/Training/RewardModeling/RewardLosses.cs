using AlignSharp.Engine;

namespace AlignSharp.Training.RewardModeling;

/// <summary>The reward model's objective, as a small pure function of the scores.</summary>
public static class RewardLosses
{
    /// <summary>
    /// Bradley–Terry: Σ_i w_i · −log σ(r_c,i − r_r,i − m_i), plus the optional centering term
    /// Σ_i w_i · coef · (r_c,i + r_r,i)² that keeps rewards near zero (summed; the caller normalises by Σ w, so with
    /// plain pairs, w = 1, it is TRL's coef · mean((r_c + r_r)²); a ranking's pairs weigh as in the Bradley–Terry term).
    /// chosen, rejected [B] → scalar.
    /// </summary>
    public static Tensor BradleyTerrySum(Tensor chosen, Tensor rejected, float[] margins, float[] weights, float centerCoef)
    {
        int b = chosen.Length;
        var diff = Ops.Sub(Ops.Sub(chosen, rejected), Tensor.FromArray(margins, b));
        var nll = Ops.Neg(Ops.LogSigmoid(diff));
        var w = Tensor.FromArray(weights, b);
        var loss = Ops.Sum(Ops.Mul(nll, w));
        if (centerCoef > 0) loss = Ops.Add(loss, Ops.MulScalar(Ops.Sum(Ops.Mul(Ops.Square(Ops.Add(chosen, rejected)), w)), centerCoef));
        return loss;
    }
}
