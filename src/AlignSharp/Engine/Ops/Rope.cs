using AlignSharp.Engine.Kernels;

namespace AlignSharp.Engine;

// Rotary position embedding, Hugging Face "rotate_half" layout: pair i couples channels i and i + P (the loops are
// in RopeKernels, the tables in RopeTable). Legend: B batch, T time, H heads, D head size, R rotary dimension (even;
// D, or less with a partial rotary factor: channels R..D pass through), P = R/2 pairs.
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
    /// left padding), invFreq [R/2] → [B, T, H, D] with, for θ = pos·invFreq[i] and P = R/2:
    /// out[i] = x[i]·cos θ − x[i+P]·sin θ, out[i+P] = x[i+P]·cos θ + x[i]·sin θ, out[j] = x[j] for R ≤ j &lt; D.
    /// <paramref name="rotaryDim"/> R: D unless given (Phi-3's partial_rotary_factor rotates the first R channels only).
    /// The tables are built as <see cref="RopeTable"/> describes; scale multiplies both (LongRoPE's and YaRN's attention
    /// factor, applied by transformers to cos and sin in float32), scaling the rotated channels. A model builds its
    /// tables once per distinct positions (<see cref="RopeTableCache"/>) and calls the overload that takes them.
    /// Saves: the tables. Backward: rotation by −θ, times scale; the other channels' gradient passes through.
    /// <paramref name="interleaved"/>: pair i is channels 2i and 2i + 1 instead (GLM's and ERNIE 4.5's rotate_half over
    /// x[0::2], x[1::2], cos and sin repeated pairwise): out[2i] = x[2i]·cos θ − x[2i+1]·sin θ, out[2i+1] = x[2i+1]·cos θ + x[2i]·sin θ.
    /// </summary>
    public static Tensor Rope(Tensor x, ReadOnlySpan<int> positions, ReadOnlySpan<float> invFreq, float scale = 1f, int? rotaryDim = null,
        bool interleaved = false)
    {
        if (x.Rank != 4) throw new ArgumentException($"Rope needs x [B, T, H, D], got {ShapeUtil.Format(x.Shape)}.");
        int r = RotaryDim(x.Dim(3), rotaryDim);
        if (invFreq.Length != r / 2) throw new ArgumentException($"Rope: invFreq has {invFreq.Length} entries, R/2 = {r / 2} expected (see RopeInverseFrequencies).");
        return Rope(x, RopeTable.Build(positions, invFreq, scale), rotaryDim, interleaved);
    }

    /// <summary>Rotary embedding with prebuilt tables (one row per position: T rows shared by every batch row, or
    /// B·T, one per token). x [B, T, H, D] → [B, T, H, D], as the overload taking positions.</summary>
    public static Tensor Rope(Tensor x, RopeTable table, int? rotaryDim = null, bool interleaved = false)
    {
        if (x.Rank != 4) throw new ArgumentException($"Rope needs x [B, T, H, D], got {ShapeUtil.Format(x.Shape)}.");
        int b = x.Dim(0), t = x.Dim(1), h = x.Dim(2), d = x.Dim(3);
        int r = RotaryDim(d, rotaryDim);
        if (table.Pairs != r / 2) throw new ArgumentException($"Rope: the table has {table.Pairs} frequency pairs, R/2 = {r / 2} expected.");
        if (table.Rows != t && table.Rows != b * t)
            throw new ArgumentException($"Rope: {table.Rows} positions; pass T = {t} (same for every batch row) or B·T = {b * t} (per token).");
        bool perToken = table.Rows != t;

        var y = NewLike(x);
        RopeKernels.Rotate(x.Array, x.Offset, y.Array, y.Offset, b, t, h, d, table.Pairs, table.Cos, table.Sin, perToken, sign: 1f, accumulate: false, interleaved);
        if (Autograd.Needs(x))
            Autograd.Record(y, [x], g =>
            {
                x.GradForAccumulate();
                RopeKernels.Rotate(g.Array, g.Offset, x.GradTensor!.Array, x.GradTensor.Offset, b, t, h, d, table.Pairs, table.Cos, table.Sin, perToken, sign: -1f, accumulate: true, interleaved);
            });
        return y;
    }

    private static int RotaryDim(int d, int? rotaryDim)
    {
        int r = rotaryDim ?? d;
        if (r <= 0 || r % 2 != 0 || r > d) throw new ArgumentException($"Rope needs an even rotary dimension in (0, D = {d}], got {r}.");
        return r;
    }
}
