namespace AlignSharp.Engine.Kernels;

/// <summary>The shape of one depthwise causal convolution: B batch, T time, C channels, K kernel width; u, y and their
/// gradients are [B, T, C], the weight [C, K] (PyTorch's [C, 1, K]), the history [B, K − 1, C]. SegmentStarts (B·T, or
/// null): sequences packed into a row, the index of each step's first step of its own sequence; no step reads an input
/// before it.</summary>
internal readonly record struct ConvGeometry(int Batch, int Time, int Channels, int Width, int[]? SegmentStarts = null)
{
    /// <summary>Whether output step t of row b reads input step s (s ≤ t): not across the start of t's packed sequence.</summary>
    public bool Reads(int b, int t, int s) => SegmentStarts == null || s >= SegmentStarts[b * Time + t];
}

/// <summary>
/// Depthwise causal convolution (see <c>Ops.CausalConv</c> for the contract). LFM2's kernels are 3 wide, so each output
/// is a handful of multiply-adds over a row of C channels; the loops run channel-innermost (contiguous rows) and split
/// over batch rows (forward, input gradient) or channels (weight and bias gradients: each thread owns its sums).
/// </summary>
internal static class ConvKernels
{
    /// <summary>u at (b, s) for s ≥ −(K − 1) as output step t reads it: the row of u, the history's row for s &lt; 0, or
    /// null (zeros: before the sequence, or before t's packed sequence).</summary>
    private static ReadOnlySpan<float> Input(in ConvGeometry g, float[] u, int uo, float[]? history, int b, int t, int s)
    {
        int c = g.Channels;
        if (!g.Reads(b, t, s)) return default;
        if (s >= 0) return u.AsSpan(uo + (b * g.Time + s) * c, c);
        if (history == null) return default;
        return history.AsSpan((b * (g.Width - 1) + (g.Width - 1 + s)) * c, c);
    }

    public static void Forward(in ConvGeometry g, float[] u, int uo, float[] w, int wo, float[]? bias, int bo, float[]? history, float[] y, int yo)
        => ParallelFor.Run(g.Batch * g.Time, Math.Max(1, 16384 / Math.Max(1, g.Channels * g.Width)), new ForwardWork(g, u, uo, w, wo, bias, bo, history, y, yo));

    private readonly struct ForwardWork(ConvGeometry g, float[] u, int uo, float[] w, int wo, float[]? bias, int bo, float[]? history, float[] y, int yo) : IRangeWork
    {
        public void Run(int start, int end)
        {
            int c = g.Channels, k = g.Width;
            for (int bt = start; bt < end; bt++)
            {
                int b = bt / g.Time, t = bt % g.Time;
                var row = y.AsSpan(yo + bt * c, c);
                if (bias != null) bias.AsSpan(bo, c).CopyTo(row);
                else row.Clear();
                for (int j = 0; j < k; j++)
                {
                    var input = Input(g, u, uo, history, b, t, t - k + 1 + j);
                    if (input.IsEmpty) continue;
                    for (int ch = 0; ch < c; ch++) row[ch] += w[wo + ch * k + j] * input[ch];
                }
            }
        }
    }

    /// <summary>du += Σ_j w[·, j] ⊙ dy[t + K − 1 − j] for each input step t.</summary>
    public static void InputGrad(in ConvGeometry g, float[] dy, int go, float[] w, int wo, float[] du, int duo)
        => ParallelFor.Run(g.Batch * g.Time, Math.Max(1, 16384 / Math.Max(1, g.Channels * g.Width)), new InputGradWork(g, dy, go, w, wo, du, duo));

    private readonly struct InputGradWork(ConvGeometry g, float[] dy, int go, float[] w, int wo, float[] du, int duo) : IRangeWork
    {
        public void Run(int start, int end)
        {
            int c = g.Channels, k = g.Width, t = g.Time;
            for (int bs = start; bs < end; bs++)
            {
                int b = bs / t, s = bs % t;
                var row = du.AsSpan(duo + bs * c, c);
                for (int j = 0; j < k; j++)
                {
                    int tOut = s + k - 1 - j;
                    if (tOut >= t || !g.Reads(b, tOut, s)) continue;
                    var grad = dy.AsSpan(go + (b * t + tOut) * c, c);
                    for (int ch = 0; ch < c; ch++) row[ch] += w[wo + ch * k + j] * grad[ch];
                }
            }
        }
    }

    /// <summary>dw[c, j] += Σ_{b,t} dy[b, t, c]·u[b, t − K + 1 + j, c], split over channels.</summary>
    public static void WeightGrad(in ConvGeometry g, float[] dy, int go, float[] u, int uo, float[]? history, float[] dw, int dwo)
        => ParallelFor.Run(g.Channels, Math.Max(1, 4096 / Math.Max(1, g.Batch * g.Time * g.Width)), new WeightGradWork(g, dy, go, u, uo, history, dw, dwo));

    private readonly struct WeightGradWork(ConvGeometry g, float[] dy, int go, float[] u, int uo, float[]? history, float[] dw, int dwo) : IRangeWork
    {
        public void Run(int start, int end)
        {
            int c = g.Channels, k = g.Width;
            for (int b = 0; b < g.Batch; b++)
                for (int t = 0; t < g.Time; t++)
                {
                    var grad = dy.AsSpan(go + (b * g.Time + t) * c, c);
                    for (int j = 0; j < k; j++)
                    {
                        var input = Input(g, u, uo, history, b, t, t - k + 1 + j);
                        if (input.IsEmpty) continue;
                        for (int ch = start; ch < end; ch++) dw[dwo + ch * k + j] += grad[ch] * input[ch];
                    }
                }
        }
    }

    /// <summary>dbias[c] += Σ_{b,t} dy[b, t, c].</summary>
    public static void BiasGrad(in ConvGeometry g, float[] dy, int go, float[] db, int dbo)
    {
        int c = g.Channels;
        var sum = db.AsSpan(dbo, c);
        for (int bt = 0; bt < g.Batch * g.Time; bt++)
        {
            var grad = dy.AsSpan(go + bt * c, c);
            for (int ch = 0; ch < c; ch++) sum[ch] += grad[ch];
        }
    }
}
