namespace AlignSharp.Engine;

// TEMPORARY: compositions of existing differentiable ops with the signatures of the fused kernels that land
// from feat/fused. Deleted at that merge.
public static partial class Ops
{
    public static Tensor CrossEntropy(Tensor logits, ReadOnlySpan<int> targets, int ignoreIndex = -100, ReadOnlySpan<float> weights = default)
    {
        int v = logits.Dim(-1), rows = logits.Length / v;
        var safe = new int[rows];
        var w = new float[rows];
        float total = 0;
        for (int i = 0; i < rows; i++)
        {
            bool keep = targets[i] != ignoreIndex;
            safe[i] = keep ? targets[i] : 0;
            w[i] = keep ? (weights.IsEmpty ? 1f : weights[i]) : 0f;
            total += w[i];
        }
        var lp = Gather(LogSoftmax(Reshape(logits, rows, v)), safe, 1);
        var weighted = Mul(lp, Tensor.FromArray(w, rows, 1));
        return MulScalar(Sum(weighted), total > 0 ? -1f / total : 0f);
    }

    public static Tensor Rope(Tensor x, ReadOnlySpan<int> positions, ReadOnlySpan<float> invFreq)
    {
        int b = x.Dim(0), t = x.Dim(1), d = x.Dim(3), half = d / 2;
        var cos = new float[b * t * half];
        var sin = new float[b * t * half];
        for (int bi = 0; bi < b; bi++)
            for (int ti = 0; ti < t; ti++)
            {
                int pos = positions.Length == t ? positions[ti] : positions[bi * t + ti];
                for (int i = 0; i < half; i++)
                {
                    float ang = pos * invFreq[i];
                    cos[(bi * t + ti) * half + i] = MathF.Cos(ang);
                    sin[(bi * t + ti) * half + i] = MathF.Sin(ang);
                }
            }
        var c = Tensor.FromArray(cos, b, t, 1, half);
        var s = Tensor.FromArray(sin, b, t, 1, half);
        var x1 = Slice(x, -1, 0, half);
        var x2 = Slice(x, -1, half, half);
        return Concat([Sub(Mul(x1, c), Mul(x2, s)), Add(Mul(x2, c), Mul(x1, s))], -1);
    }

    public static Tensor CausalAttention(Tensor q, Tensor k, Tensor v, int positionOffset = 0, bool[]? keyMask = null, float? scale = null)
    {
        int b = q.Dim(0), t = q.Dim(1), h = q.Dim(2), d = q.Dim(3), s = k.Dim(1), hkv = k.Dim(2);
        var q3 = Reshape(Permute(q, 0, 2, 1, 3), b * h, t, d);
        var k3 = Reshape(Permute(k, 0, 2, 1, 3), b * hkv, s, d);
        var v3 = Reshape(Permute(v, 0, 2, 1, 3), b * hkv, s, d);
        if (hkv != h)
        {
            var idx = new int[b * h];
            for (int bi = 0; bi < b; bi++) for (int hi = 0; hi < h; hi++) idx[bi * h + hi] = bi * hkv + hi / (h / hkv);
            k3 = IndexSelect(k3, idx);
            v3 = IndexSelect(v3, idx);
        }
        var scores = MulScalar(MatMul(q3, k3, transB: true), scale ?? 1f / MathF.Sqrt(d));
        var mask = new float[b * h * t * s];
        for (int bi = 0; bi < b; bi++)
            for (int hi = 0; hi < h; hi++)
                for (int ti = 0; ti < t; ti++)
                    for (int si = 0; si < s; si++)
                        mask[((bi * h + hi) * t + ti) * s + si] = si > positionOffset + ti || (keyMask != null && !keyMask[bi * s + si]) ? 1 : 0;
        var p = Softmax(MaskedFill(scores, Tensor.FromArray(mask, b * h, t, s), -1e30f));
        var o = MatMul(p, v3);
        return Permute(Reshape(o, b, h, t, d), 0, 2, 1, 3);
    }

    public static float[] RopeInverseFrequencies(int headDim, double theta)
    {
        var f = new float[headDim / 2];
        for (int i = 0; i < f.Length; i++) f[i] = (float)(1.0 / Math.Pow(theta, 2.0 * i / headDim));
        return f;
    }

    public static (Tensor LogProbs, Tensor Entropy) TokenLogProbs(Tensor logits, ReadOnlySpan<int> targets)
    {
        int v = logits.Dim(-1), rows = logits.Length / v;
        var lsm = LogSoftmax(Reshape(logits, rows, v));
        var lp = Reshape(Gather(lsm, targets, 1), logits.Shape[..^1].ToArray());
        var ent = Neg(SumLast(Mul(Exp(lsm), lsm)));
        return (lp, Reshape(ent, logits.Shape[..^1].ToArray()));
    }
}
