using AlignSharp.Engine.Kernels;

namespace AlignSharp.Engine;

public static partial class Ops
{
    /// <summary>
    /// Inverted dropout: each element is zeroed with probability <paramref name="p"/> and the kept ones are
    /// scaled by 1/(1−p), so the expectation is unchanged. (any) → (same). p = 0 returns x itself.
    /// One seed is drawn from <paramref name="rng"/> per call (<see cref="Random.NextInt64()"/>); the mask is a hash of
    /// (seed, element index) (<see cref="DropoutKernels"/>), so a seeded rng gives the same mask on any thread count
    /// and instruction set. Saves: nothing but the seed (the backward pass regenerates the mask). Backward: dx += g ⊙ mask.
    /// </summary>
    public static Tensor Dropout(Tensor x, float p, Random rng)
    {
        if (!(p >= 0f && p < 1f)) throw new ArgumentOutOfRangeException(nameof(p), $"Dropout probability must be in [0, 1), got {p}.");
        ArgumentNullException.ThrowIfNull(rng);
        if (p == 0f) return x;
        ulong seed = (ulong)rng.NextInt64();
        var y = NewLike(x);
        DropoutKernels.Apply(seed, p, x.Storage.Array, x.Offset, y.Storage.Array, y.Offset, x.Length, accumulate: false);
        if (Autograd.Needs(x))
            Autograd.Record(y, [x], g =>
            {
                x.GradForAccumulate();
                var dx = x.GradTensor!;
                DropoutKernels.Apply(seed, p, g.Storage.Array, g.Offset, dx.Storage.Array, dx.Offset, x.Length, accumulate: true);
            });
        return y;
    }
}
