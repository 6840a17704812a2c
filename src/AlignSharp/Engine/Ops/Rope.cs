using AlignSharp.Engine.Kernels;

namespace AlignSharp.Engine;

// Rotary position embedding, Hugging Face "rotate_half" layout: pair i couples channels i and i + D/2.
// Legend: B batch, T time, H heads, D head size (even), P = D/2 pairs.
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
    /// The angle is the float32 product pos·invFreq[i], exactly as Hugging Face forms it (its rounding
    /// dominates at long positions: ulp(1000) ≈ 6e-5), and cos/sin of that angle are evaluated in double
    /// and rounded once, so values match HF's float32 tables to ~1e-7. scale multiplies both tables (LongRoPE's
    /// attention factor, applied by transformers to cos and sin in float32), scaling the output.
    /// Saves: the cos/sin tables [rows, D/2]. Backward: rotation by −θ, times scale.
    /// </summary>
    public static Tensor Rope(Tensor x, ReadOnlySpan<int> positions, ReadOnlySpan<float> invFreq, float scale = 1f)
    {
        if (x.Rank != 4) throw new ArgumentException($"Rope needs x [B, T, H, D], got {ShapeUtil.Format(x.Shape)}.");
        int b = x.Dim(0), t = x.Dim(1), h = x.Dim(2), d = x.Dim(3);
        if (d % 2 != 0) throw new ArgumentException($"Rope needs an even head size, got D = {d}.");
        int half = d / 2;
        if (invFreq.Length != half) throw new ArgumentException($"Rope: invFreq has {invFreq.Length} entries, D/2 = {half} expected (see RopeInverseFrequencies).");
        bool perToken = positions.Length == b * t && positions.Length != t;
        if (positions.Length != t && positions.Length != b * t)
            throw new ArgumentException($"Rope: {positions.Length} positions; pass T = {t} (same for every batch row) or B·T = {b * t} (per token).");

        // One cos/sin row per distinct position row: [T, P] or [B·T, P].
        int tableRows = perToken ? b * t : t;
        var cos = new float[tableRows * half];
        var sin = new float[tableRows * half];
        for (int r = 0; r < tableRows; r++)
        {
            float pos = positions[r];
            for (int i = 0; i < half; i++)
            {
                double angle = pos * invFreq[i];   // float32 product, as HF, then widened
                cos[r * half + i] = (float)Math.Cos(angle) * scale;
                sin[r * half + i] = (float)Math.Sin(angle) * scale;
            }
        }

        var y = NewLike(x);
        RopeRotate(x.Array, x.Offset, y.Array, y.Offset, b, t, h, d, cos, sin, perToken, sign: 1f, accumulate: false);
        if (Autograd.Needs(x))
            Autograd.Record(y, [x], g =>
            {
                x.GradForAccumulate();
                RopeRotate(g.Array, g.Offset, x.GradTensor!.Array, x.GradTensor.Offset, b, t, h, d, cos, sin, perToken, sign: -1f, accumulate: true);
            });
        return y;
    }

    /// <summary>
    /// dst (=|+=) rotate(src, sign·θ) over [B, T, H, D]; sign −1 is the inverse rotation (the backward).
    /// Parallel over (b, t) rows; each row reads one table row.
    /// </summary>
    private static void RopeRotate(float[] src, int so, float[] dst, int dOff, int b, int t, int h, int d,
        float[] cos, float[] sin, bool perToken, float sign, bool accumulate)
    {
        int half = d / 2;
        ParallelFor.For(b * t, Math.Max(1, 16384 / Math.Max(1, h * d)), (s, e) =>
        {
            for (int bt = s; bt < e; bt++)
            {
                int tr = perToken ? bt : bt % t;
                var c = cos.AsSpan(tr * half, half);
                var sn = sin.AsSpan(tr * half, half);
                for (int hh = 0; hh < h; hh++)
                {
                    int baseIdx = (bt * h + hh) * d;
                    var x1 = src.AsSpan(so + baseIdx, half); var x2 = src.AsSpan(so + baseIdx + half, half);
                    var y1 = dst.AsSpan(dOff + baseIdx, half); var y2 = dst.AsSpan(dOff + baseIdx + half, half);
                    if (accumulate)
                        for (int i = 0; i < half; i++)
                        {
                            float si = sign * sn[i];
                            y1[i] += x1[i] * c[i] - x2[i] * si;
                            y2[i] += x2[i] * c[i] + x1[i] * si;
                        }
                    else
                        for (int i = 0; i < half; i++)
                        {
                            float si = sign * sn[i];
                            y1[i] = x1[i] * c[i] - x2[i] * si;
                            y2[i] = x2[i] * c[i] + x1[i] * si;
                        }
                }
            }
        });
    }
}
