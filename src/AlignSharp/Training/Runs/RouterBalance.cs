using AlignSharp.Engine;
using AlignSharp.Models;

namespace AlignSharp.Training.Runs;

/// <summary>
/// The routers' load-balancing loss in a trainer's objective, where a mixture-of-experts config asks for it
/// (output_router_logits): router_aux_loss_coef times the loss, per unit of the micro-batch's weight (the loop divides
/// by the weights, so a trainer whose TRL counterpart adds coef · aux to a mean loss adds it to every unit), logged as
/// <c>aux_loss</c>.
/// </summary>
internal static class RouterBalance
{
    /// <summary><paramref name="lossSum"/> + coef · <paramref name="aux"/> · <paramref name="weight"/> (the sum itself
    /// without a loss), with aux · weight into <paramref name="metrics"/>.</summary>
    public static Tensor AddTo(Tensor lossSum, Tensor? aux, TransformerModel model, double weight, Dictionary<string, double> metrics)
    {
        if (aux == null) return lossSum;
        metrics["aux_loss"] = aux.Item() * weight;
        return Ops.Add(lossSum, Ops.MulScalar(aux, (float)(model.Config.Moe!.RouterAuxLossCoef!.Value * weight)));
    }
}
