using AlignSharp.Engine.Kernels;

namespace AlignSharp.Engine;

public static partial class Ops
{
    /// <summary>
    /// Layer norm over the last axis: (x − mean)/√(var + eps) · w + b (biased variance, as PyTorch).
    /// x [..., C], w [C], b [C] or null → [..., C]
    /// </summary>
    public static Tensor LayerNorm(Tensor x, Tensor w, Tensor? b, float eps = 1e-5f)
    {
        int c = x.Dim(-1), rows = ShapeUtil.Rows(x.Shape);
        if (w.Length != c || (b != null && b.Length != c))
            throw new ArgumentException($"LayerNorm weight/bias must have {c} elements.");
        var y = NewLike(x);
        var mean = new float[rows];
        var rstd = new float[rows];
        var xa = x.Array; int xo = x.Offset; var ya = y.Array; int yo = y.Offset;
        var wa = w.Array; int wo = w.Offset;
        var ba = b?.Array; int bo = b?.Offset ?? 0;
        ParallelFor.For(rows, Math.Max(1, 8192 / Math.Max(1, c)), (s, e) =>
        {
            for (int r = s; r < e; r++)
            {
                var xr = xa.AsSpan(xo + r * c, c); var yr = ya.AsSpan(yo + r * c, c);
                float mu = Simd.Sum(xr) / c;
                float var = 0;
                for (int i = 0; i < c; i++) { float d = xr[i] - mu; var += d * d; }
                float rs = 1f / MathF.Sqrt(var / c + eps);
                mean[r] = mu; rstd[r] = rs;
                var wr = wa.AsSpan(wo, c);
                if (ba != null)
                {
                    var br = ba.AsSpan(bo, c);
                    for (int i = 0; i < c; i++) yr[i] = (xr[i] - mu) * rs * wr[i] + br[i];
                }
                else for (int i = 0; i < c; i++) yr[i] = (xr[i] - mu) * rs * wr[i];
            }
        });
        var inputs = b == null ? new[] { x, w } : new[] { x, w, b };
        if (Autograd.AnyNeeds(inputs))
            Autograd.Record(y, inputs, g =>
            {
                bool needX = x.RequiresGrad, needW = w.RequiresGrad, needB = b != null && b.RequiresGrad;
                var ga = g.Array; int go = g.Offset;
                if (needX) x.GradForAccumulate();
                var dxa = needX ? x.GradTensor!.Array : null; int dxo = needX ? x.GradTensor!.Offset : 0;
                // Weight and bias gradients are sums over rows: each share sums its rows into its own slot, and the
                // slots are added in share order, so the result does not depend on timing.
                int shares = ParallelFor.SharesFor(rows, 16);
                var partW = needW ? new float[shares * c] : null;
                var partB = needB ? new float[shares * c] : null;
                ParallelFor.For(shares, 1, (s0, s1) =>
                {
                    var xhat = new float[c];
                    var dxhat = new float[c];
                    for (int share = s0; share < s1; share++)
                    {
                        int r0 = (int)((long)rows * share / shares), r1 = (int)((long)rows * (share + 1) / shares);
                        var pw = needW ? partW.AsSpan(share * c, c) : default;
                        var pb = needB ? partB.AsSpan(share * c, c) : default;
                        var ws = wa.AsSpan(wo, c);
                        for (int r = r0; r < r1; r++)
                        {
                            var gr = ga.AsSpan(go + r * c, c); var xr = xa.AsSpan(xo + r * c, c);
                            float mu = mean[r], rs = rstd[r];
                            Simd.ZipScalarRight<SubOp>(xr, mu, xhat);
                            Simd.ZipScalarRight<MulOp>(xhat, rs, xhat);
                            Simd.Zip<MulOp>(gr, ws, dxhat);
                            if (needW) Simd.ZipAccumulate<MulOp>(gr, xhat, pw);
                            if (needB) Simd.AddInto(gr, pb);
                            if (!needX) continue;
                            float meanD = Simd.Sum(dxhat) / c, meanDX = Simd.Dot(dxhat, xhat) / c;
                            var dr = dxa.AsSpan(dxo + r * c, c);
                            for (int i = 0; i < c; i++) dr[i] += rs * (dxhat[i] - meanD - xhat[i] * meanDX);
                        }
                    }
                });
                for (int share = 0; share < shares; share++)
                {
                    if (needW) Simd.AddInto(partW.AsSpan(share * c, c), w.GradForAccumulate());
                    if (needB) Simd.AddInto(partB.AsSpan(share * c, c), b!.GradForAccumulate());
                }
            });
        return y;
    }

    /// <summary>RMS norm over the last axis: x / √(mean(x²) + eps) · (weightOffset + w); Llama uses offset 0,
    /// Gemma stores w − 1 and uses offset 1. x [..., C], w [C] → [..., C]. Over a [B, T, H, Dh] tensor with w [Dh]
    /// this is Qwen3's / Gemma-3's per-head q/k norm.</summary>
    public static Tensor RmsNorm(Tensor x, Tensor w, float eps = 1e-6f, float weightOffset = 0f)
    {
        int c = x.Dim(-1), rows = ShapeUtil.Rows(x.Shape);
        if (w.Length != c) throw new ArgumentException($"RmsNorm weight must have {c} elements.");
        var y = NewLike(x);
        var rstd = new float[rows];
        var xa = x.Array; int xo = x.Offset; var ya = y.Array; int yo = y.Offset;
        var wa = w.Array; int wo = w.Offset;
        ParallelFor.For(rows, Math.Max(1, 8192 / Math.Max(1, c)), (s, e) =>
        {
            for (int r = s; r < e; r++)
            {
                var xr = xa.AsSpan(xo + r * c, c); var yr = ya.AsSpan(yo + r * c, c);
                float rs = 1f / MathF.Sqrt(Simd.Dot(xr, xr) / c + eps);
                rstd[r] = rs;
                var wr = wa.AsSpan(wo, c);
                for (int i = 0; i < c; i++) yr[i] = xr[i] * rs * (weightOffset + wr[i]);
            }
        });
        if (Autograd.Needs(x, w))
            Autograd.Record(y, [x, w], g =>
            {
                var gs = g.Span; var xs = x.Span; var ws = w.Span;
                var dx = x.RequiresGrad ? x.GradForAccumulate() : default;
                var dw = w.RequiresGrad ? w.GradForAccumulate() : default;
                for (int r = 0; r < rows; r++)
                {
                    var gr = gs.Slice(r * c, c); var xr = xs.Slice(r * c, c);
                    float rs = rstd[r];
                    float sumDX = 0;
                    for (int i = 0; i < c; i++)
                    {
                        float xhat = xr[i] * rs;
                        sumDX += gr[i] * (weightOffset + ws[i]) * xhat;
                        if (!dw.IsEmpty) dw[i] += gr[i] * xhat;
                    }
                    if (dx.IsEmpty) continue;
                    float meanDX = sumDX / c;
                    var dr = dx.Slice(r * c, c);
                    for (int i = 0; i < c; i++) dr[i] += rs * (gr[i] * (weightOffset + ws[i]) - xr[i] * rs * meanDX);
                }
            });
        return y;
    }
}
