using AlignSharp.Engine.Kernels;

namespace AlignSharp.Engine;

public static partial class Ops
{
    /// <summary>
    /// Inverted dropout: each element is zeroed with probability <paramref name="p"/> and the kept ones are
    /// scaled by 1/(1−p), so the expectation is unchanged. (any) → (same). p = 0 returns x itself.
    /// The mask is drawn sequentially from <paramref name="rng"/> (one NextSingle per element, in memory
    /// order), so a seeded rng gives the same mask on any thread count.
    /// Saves: the scaled mask (0 or 1/(1−p) per element). Backward: dx += g ⊙ mask.
    /// </summary>
    public static Tensor Dropout(Tensor x, float p, Random rng)
    {
        if (!(p >= 0f && p < 1f)) throw new ArgumentOutOfRangeException(nameof(p), $"Dropout probability must be in [0, 1), got {p}.");
        ArgumentNullException.ThrowIfNull(rng);
        if (p == 0f) return x;
        var mask = NewLike(x);
        PointwiseKernels.DropoutMask(rng, p, mask.Span);
        var y = NewLike(x);
        Zip<MulOp>(x, mask, y);
        if (Autograd.Needs(x))
            Autograd.Record(y, [x], g => AccumulateGrad<MulOp>(x, g, mask));
        return y;
    }
}
