using AlignSharp.Engine.Kernels;

namespace AlignSharp.Engine;

// Rotary position embedding, Hugging Face "rotate_half" layout: pair i couples channels i and i + D/2 (the loops are
// in RopeKernels, the tables in RopeTable). Legend: B batch, T time, H heads, D head size (even), P = D/2 pairs.
public static partial class Ops
{
    /// <summary>
    /// Inverse frequencies 1/θ^(2i/D), i &lt; D/2, computed in float32 the way Hugging Face does
    /// (<c>1.0 / (base ** (torch.arange(0, dim, 2).float() / dim))</c>): the exponent is the float32 quotient,
    /// the power is rounded to float32 (evaluated in double), and the reciprocal is a float32 division.
    /// With <paramref name="divisors"/> (LongRoPE's per-pair factors, D/2 of them) the result is
    /// 1 / (divisor_i · θ^(2i/D)), the float32 product inverted, as transformers forms it.
    /// </summary>
    public static float[] RopeInverseFrequencies(int headDim, double theta, ReadOnlySpan<float> divisors = default)
    {
        if (headDim <= 0 || headDim % 2 != 0) throw new ArgumentOutOfRangeException(nameof(headDim), $"RoPE head size must be positive and even, got {headDim}.");
        if (!(theta > 0) || double.IsInfinity(theta)) throw new ArgumentOutOfRangeException(nameof(theta), $"RoPE theta (base) must be finite and > 0, got {theta}.");
        var inv = new float[headDim / 2];
        if (!divisors.IsEmpty && divisors.Length != inv.Length)
            throw new ArgumentException($"RoPE divisors: {divisors.Length} given, head size / 2 = {inv.Length} expected.", nameof(divisors));
        float b = (float)theta;
        for (int i = 0; i < inv.Length; i++)
        {
            float exponent = (float)(2 * i) / headDim;
            float power = (float)Math.Pow(b, exponent);
            inv[i] = 1f / (divisors.IsEmpty ? power : divisors[i] * power);
        }
        return inv;
    }

    /// <summary>
    /// Rotary embedding. x [B, T, H, D], positions [T] (shared by every batch row) or [B·T] (per token, e.g.
    /// left padding), invFreq [D/2] → [B, T, H, D] with, for θ = pos·invFreq[i]:
    /// out[i] = x[i]·cos θ − x[i+D/2]·sin θ, out[i+D/2] = x[i+D/2]·cos θ + x[i]·sin θ.
    /// The tables are built as <see cref="RopeTable"/> describes; scale multiplies both (LongRoPE's attention factor,
    /// applied by transformers to cos and sin in float32), scaling the output. A model builds its tables once per
    /// distinct positions (<see cref="RopeTableCache"/>) and calls the overload that takes them.
    /// Saves: the tables. Backward: rotation by −θ, times scale.
    /// </summary>
    public static Tensor Rope(Tensor x, ReadOnlySpan<int> positions, ReadOnlySpan<float> invFreq, float scale = 1f)
    {
        if (x.Rank != 4) throw new ArgumentException($"Rope needs x [B, T, H, D], got {ShapeUtil.Format(x.Shape)}.");
        int d = x.Dim(3);
        if (d % 2 != 0) throw new ArgumentException($"Rope needs an even head size, got D = {d}.");
        if (invFreq.Length != d / 2) throw new ArgumentException($"Rope: invFreq has {invFreq.Length} entries, D/2 = {d / 2} expected (see RopeInverseFrequencies).");
        return Rope(x, RopeTable.Build(positions, invFreq, scale));
    }

    /// <summary>Rotary embedding with prebuilt tables (one row per position: T rows shared by every batch row, or
    /// B·T, one per token). x [B, T, H, D] → [B, T, H, D], as the overload taking positions.</summary>
    public static Tensor Rope(Tensor x, RopeTable table)
    {
        if (x.Rank != 4) throw new ArgumentException($"Rope needs x [B, T, H, D], got {ShapeUtil.Format(x.Shape)}.");
        int b = x.Dim(0), t = x.Dim(1), h = x.Dim(2), d = x.Dim(3);
        if (d % 2 != 0) throw new ArgumentException($"Rope needs an even head size, got D = {d}.");
        if (table.Pairs != d / 2) throw new ArgumentException($"Rope: the table has {table.Pairs} frequency pairs, D/2 = {d / 2} expected.");
        if (table.Rows != t && table.Rows != b * t)
            throw new ArgumentException($"Rope: {table.Rows} positions; pass T = {t} (same for every batch row) or B·T = {b * t} (per token).");
        bool perToken = table.Rows != t;

        var y = NewLike(x);
        RopeKernels.Rotate(x.Array, x.Offset, y.Array, y.Offset, b, t, h, d, table.Cos, table.Sin, perToken, sign: 1f, accumulate: false);
        if (Autograd.Needs(x))
            Autograd.Record(y, [x], g =>
            {
                x.GradForAccumulate();
                RopeKernels.Rotate(g.Array, g.Offset, x.GradTensor!.Array, x.GradTensor.Offset, b, t, h, d, table.Cos, table.Sin, perToken, sign: -1f, accumulate: true);
            });
        return y;
    }
}
