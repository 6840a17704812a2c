namespace AlignSharp.Engine.Kernels;

/// <summary>
/// Rotary position embedding in Hugging Face's "rotate_half" layout: pair i couples channels i and i + P; or, interleaved
/// (GLM's and ERNIE 4.5's layout), channels 2i and 2i + 1.
/// Legend: B batch, T time, H heads, D head size, P pairs (D/2, or fewer with a partial rotary dimension 2P &lt; D,
/// whose channels 2P..D pass through unrotated). x and y are [B, T, H, D]; the tables [T, P] (one row per time step,
/// shared by every batch row) or [B·T, P] (one per token).
/// </summary>
internal static class RopeKernels
{
    /// <summary>cos[r, i] = cos(pos_r·invFreq[i])·scale, sin likewise: the float32 angle, widened, evaluated in double.</summary>
    public static void Tables(ReadOnlySpan<int> positions, ReadOnlySpan<float> invFreq, float scale, Span<float> cos, Span<float> sin)
    {
        int half = invFreq.Length;
        for (int r = 0; r < positions.Length; r++)
        {
            float pos = positions[r];
            for (int i = 0; i < half; i++)
            {
                double angle = pos * invFreq[i];   // float32 product, as HF, then widened
                cos[r * half + i] = (float)Math.Cos(angle) * scale;
                sin[r * half + i] = (float)Math.Sin(angle) * scale;
            }
        }
    }

    /// <summary>
    /// y (=|+=) x rotated by sign·θ: y[i] = x[i]·cos − x[i+P]·sign·sin, y[i+P] = x[i+P]·cos + x[i]·sign·sin, and
    /// y[j] (=|+=) x[j] for 2P ≤ j &lt; D. Sign −1 is the inverse rotation (the backward). perToken: table row b·T + t,
    /// else t. Parallel over (b, t) rows.
    /// </summary>
    public static void Rotate(float[] x, int xo, float[] y, int yo, int b, int t, int h, int d, int pairs,
        float[] cos, float[] sin, bool perToken, float sign, bool accumulate, bool interleaved = false)
        => ParallelFor.Run(b * t, Math.Max(1, 16384 / Math.Max(1, h * d)), new RotateWork(x, xo, y, yo, t, h, d, pairs, cos, sin, perToken, sign, accumulate, interleaved));

    private readonly struct RotateWork(float[] src, int so, float[] dst, int dOff, int t, int h, int d, int half,
        float[] cos, float[] sin, bool perToken, float sign, bool accumulate, bool interleaved) : IRangeWork
    {
        public void Run(int start, int end)
        {
            int rotary = 2 * half;
            for (int bt = start; bt < end; bt++)
            {
                int tr = perToken ? bt : bt % t;
                var c = cos.AsSpan(tr * half, half);
                var sn = sin.AsSpan(tr * half, half);
                for (int hh = 0; hh < h; hh++)
                {
                    int baseIdx = (bt * h + hh) * d;
                    if (interleaved)
                    {
                        // Pair i is channels 2i and 2i + 1 (strided, so scalar; a head's rotation is a few dozen pairs).
                        var xs = src.AsSpan(so + baseIdx, d); var ys = dst.AsSpan(dOff + baseIdx, d);
                        for (int i = 0; i < half; i++)
                        {
                            float si = sign * sn[i], a = xs[2 * i], bb = xs[2 * i + 1];
                            float ya = a * c[i] - bb * si, yb = bb * c[i] + a * si;
                            if (accumulate) { ys[2 * i] += ya; ys[2 * i + 1] += yb; }
                            else { ys[2 * i] = ya; ys[2 * i + 1] = yb; }
                        }
                        if (accumulate) for (int j = rotary; j < d; j++) ys[j] += xs[j];
                        else xs[rotary..].CopyTo(ys[rotary..]);
                        continue;
                    }
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
                    if (rotary == d) continue;
                    var xPass = src.AsSpan(so + baseIdx + rotary, d - rotary);
                    var yPass = dst.AsSpan(dOff + baseIdx + rotary, d - rotary);
                    if (accumulate) for (int i = 0; i < xPass.Length; i++) yPass[i] += xPass[i];
                    else xPass.CopyTo(yPass);
                }
            }
        }
    }
}
