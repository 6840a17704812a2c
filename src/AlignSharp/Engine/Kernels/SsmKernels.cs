using System.Numerics;
using System.Runtime.InteropServices;

namespace AlignSharp.Engine.Kernels;

/// <summary>The shape of one selective scan: B batch, T time, H heads of P channels, G groups, N state size;
/// x and y [B, T, H·P], dt [B, T, H], B and C [B, T, G·N]; SegmentStarts as <see cref="ConvGeometry"/>'s.</summary>
internal readonly record struct ScanGeometry(int Batch, int Time, int Heads, int HeadSize, int Groups, int StateSize, int[]? SegmentStarts)
{
    public int HeadsPerGroup => Heads / Groups;
    public int StateFloats => HeadSize * StateSize;

    /// <summary>Whether the state restarts from zero before step t of row b (a packed sequence starts there).</summary>
    public bool Restarts(int b, int t) => SegmentStarts != null && t > 0 && SegmentStarts[b * Time + t] == t;
}

/// <summary>The scan's inputs (arrays and offsets of contiguous tensors).</summary>
internal readonly record struct ScanInputs(float[] X, int Xo, float[] Dt, int Dto, float[] ALog, int ALogo, float[] DtBias, int DtBiaso,
    float[] B, int Bo, float[] C, int Co, float[] D, int Do);

/// <summary>Where the scan's gradients accumulate (null: not wanted).</summary>
internal readonly record struct ScanGrads(float[]? X, int Xo, float[]? Dt, int Dto, float[]? B, int Bo, float[]? C, int Co);

/// <summary>
/// Mamba-2's scan (see <c>Ops.SelectiveScan</c> for the contract), step by step in time: per step and head, one pass over
/// the [P, N] state that updates each row and dots it with C (N is innermost and contiguous: 128 in the released models,
/// a few vectors). Forward splits over (row, head) and updates a cache's state in place (at batch 8 a Granite-4.0-H
/// layer's states are 6 MB, read and written once a decoding step; a copy in and out would double that traffic).
/// Backward splits over (row, group, part of the group's heads): a fixed <see cref="HeadsPerPart"/>, so that a batch of
/// one still feeds every core and the sums do not depend on the thread count. Each item adds its heads' dB and dC into a
/// [T, N] buffer of its own, summed in part order afterwards, and re-runs its heads' scan chunk by chunk from states kept
/// every <see cref="Chunk"/> steps.
/// </summary>
internal static class SsmKernels
{
    private const int Chunk = 64;
    private const int HeadsPerPart = 8;

    /// <summary>torch's softplus (β = 1, threshold 20: the input itself above it).</summary>
    private static float Softplus(float v) => v > 20f ? v : MathF.Log(1f + MathF.Exp(v));

    /// <summary>softplus′ = sigmoid, 1 above the threshold (where softplus is the identity).</summary>
    private static float SoftplusGrad(float v) => v > 20f ? 1f : 1f / (1f + MathF.Exp(-v));

    public static void Forward(in ScanGeometry g, in ScanInputs inp, float[]? state, float[] y, int yo)
        => ParallelFor.Run(g.Batch * g.Heads, 1, new ForwardWork(g, inp, state, y, yo));

    private readonly struct ForwardWork(ScanGeometry g, ScanInputs inp, float[]? state, float[] y, int yo) : IRangeWork
    {
        public void Run(int start, int end)
        {
            var scratch = state == null ? BufferPool.Rent(g.StateFloats) : null;
            try
            {
                for (int item = start; item < end; item++)
                {
                    int b = item / g.Heads, h = item % g.Heads;
                    var st = state != null ? state.AsSpan(item * g.StateFloats, g.StateFloats) : scratch.AsSpan(0, g.StateFloats);
                    if (state == null) st.Clear();
                    var head = new Head(g, inp, h);
                    for (int t = 0; t < g.Time; t++)
                    {
                        if (g.Restarts(b, t)) st.Clear();
                        head.Step(b, t, st, y.AsSpan(yo + (b * g.Time + t) * g.Heads * g.HeadSize + h * g.HeadSize, g.HeadSize));
                    }
                }
            }
            finally { if (scratch != null) BufferPool.Return(scratch); }
        }
    }

    /// <summary>One head's constants and its view of the inputs.</summary>
    private readonly ref struct Head
    {
        private readonly ScanGeometry _g;
        private readonly ScanInputs _in;
        public readonly int H, Group;
        public readonly float A, D, Bias;

        public Head(in ScanGeometry g, in ScanInputs inp, int h)
        {
            _g = g;
            _in = inp;
            H = h;
            Group = h / g.HeadsPerGroup;
            A = -MathF.Exp(inp.ALog[inp.ALogo + h]);
            D = inp.D[inp.Do + h];
            Bias = inp.DtBias[inp.DtBiaso + h];
        }

        public float Raw(int b, int t) => _in.Dt[_in.Dto + (b * _g.Time + t) * _g.Heads + H] + Bias;
        public ReadOnlySpan<float> X(int b, int t) => _in.X.AsSpan(_in.Xo + (b * _g.Time + t) * _g.Heads * _g.HeadSize + H * _g.HeadSize, _g.HeadSize);
        public ReadOnlySpan<float> B(int b, int t) => _in.B.AsSpan(_in.Bo + (b * _g.Time + t) * _g.Groups * _g.StateSize + Group * _g.StateSize, _g.StateSize);
        public ReadOnlySpan<float> C(int b, int t) => _in.C.AsSpan(_in.Co + (b * _g.Time + t) * _g.Groups * _g.StateSize + Group * _g.StateSize, _g.StateSize);

        /// <summary>S ← exp(δ·A)·S + δ·x ⊗ B, and y = S·C + D·x.</summary>
        public void Step(int b, int t, Span<float> s, Span<float> y)
        {
            float delta = Softplus(Raw(b, t)), decay = MathF.Exp(delta * A);
            var x = X(b, t);
            var bt = B(b, t);
            var ct = C(b, t);
            int n = _g.StateSize;
            for (int p = 0; p < x.Length; p++) y[p] = UpdateRowDot(s.Slice(p * n, n), decay, delta * x[p], bt, ct) + D * x[p];
        }

        /// <summary>S ← exp(δ·A)·S + δ·x ⊗ B (the backward's re-run, which needs no y).</summary>
        public void Step(int b, int t, Span<float> s)
        {
            float delta = Softplus(Raw(b, t)), decay = MathF.Exp(delta * A);
            var x = X(b, t);
            var bt = B(b, t);
            int n = _g.StateSize;
            for (int p = 0; p < x.Length; p++) UpdateRow(s.Slice(p * n, n), decay, delta * x[p], bt);
        }
    }

    /// <summary>row ← decay·row + coef·b; returns ⟨row, c⟩.</summary>
    private static float UpdateRowDot(Span<float> row, float decay, float coef, ReadOnlySpan<float> b, ReadOnlySpan<float> c)
    {
        int n = row.Length, i = 0;
        float dot = 0;
        if (Vector.IsHardwareAccelerated && n >= Vector<float>.Count)
        {
            var r = MemoryMarshal.Cast<float, Vector<float>>(row);
            var bv = MemoryMarshal.Cast<float, Vector<float>>(b);
            var cv = MemoryMarshal.Cast<float, Vector<float>>(c);
            var acc = Vector<float>.Zero;
            for (int v = 0; v < r.Length; v++)
            {
                var next = r[v] * decay + bv[v] * coef;
                r[v] = next;
                acc += next * cv[v];
            }
            dot = Vector.Sum(acc);
            i = r.Length * Vector<float>.Count;
        }
        for (; i < n; i++)
        {
            row[i] = row[i] * decay + b[i] * coef;
            dot += row[i] * c[i];
        }
        return dot;
    }

    /// <summary>row ← decay·row + coef·b.</summary>
    private static void UpdateRow(Span<float> row, float decay, float coef, ReadOnlySpan<float> b)
    {
        int n = row.Length, i = 0;
        if (Vector.IsHardwareAccelerated && n >= Vector<float>.Count)
        {
            var r = MemoryMarshal.Cast<float, Vector<float>>(row);
            var bv = MemoryMarshal.Cast<float, Vector<float>>(b);
            for (int v = 0; v < r.Length; v++) r[v] = r[v] * decay + bv[v] * coef;
            i = r.Length * Vector<float>.Count;
        }
        for (; i < n; i++) row[i] = row[i] * decay + b[i] * coef;
    }

    /// <summary>Parts of a group's heads the backward splits into: <see cref="HeadsPerPart"/> heads each (the last may have fewer).</summary>
    private static int Parts(in ScanGeometry g) => (g.HeadsPerGroup + HeadsPerPart - 1) / HeadsPerPart;

    /// <summary>The heads [first, last) of backward item (row, group, part).</summary>
    private static (int First, int Last) HeadsOf(in ScanGeometry g, int item)
    {
        int parts = Parts(g), group = item / parts % g.Groups, first = group * g.HeadsPerGroup + item % parts * HeadsPerPart;
        return (first, Math.Min((group + 1) * g.HeadsPerGroup, first + HeadsPerPart));
    }

    /// <summary>The gradients of the scan (into <paramref name="grads"/>' arrays where given); returns the per-head sums
    /// dA (by A itself), d dtBias and dD.</summary>
    public static (float[] DA, float[] DBias, float[] DD) Backward(in ScanGeometry g, in ScanInputs inp, float[]? initial, float[] gy, int gyo, in ScanGrads grads)
    {
        int parts = Parts(g), items = g.Batch * g.Groups * parts, n = g.StateSize;
        int perItem = g.Time * n;
        var sums = new float[items * 3 * HeadsPerPart];   // per item: dA, dBias, dD of its heads
        var partialB = BufferPool.Rent(items * perItem);
        var partialC = BufferPool.Rent(items * perItem);
        try
        {
            Array.Clear(partialB, 0, items * perItem);
            Array.Clear(partialC, 0, items * perItem);
            ParallelFor.Run(items, 1, new BackwardWork(g, inp, initial, gy, gyo, grads, partialB, partialC, sums));
            // dB and dC of each (row, group): its parts' sums added in part order.
            for (int item = 0; item < items; item++)
            {
                int b = item / (g.Groups * parts), group = item / parts % g.Groups;
                for (int t = 0; t < g.Time; t++)
                {
                    int at = (b * g.Time + t) * g.Groups * n + group * n;
                    if (grads.B != null) Simd.AddInto(partialB.AsSpan(item * perItem + t * n, n), grads.B.AsSpan(grads.Bo + at, n));
                    if (grads.C != null) Simd.AddInto(partialC.AsSpan(item * perItem + t * n, n), grads.C.AsSpan(grads.Co + at, n));
                }
            }
        }
        finally
        {
            BufferPool.Return(partialB);
            BufferPool.Return(partialC);
        }
        var dA = new float[g.Heads];
        var dBias = new float[g.Heads];
        var dD = new float[g.Heads];
        for (int item = 0; item < items; item++)
        {
            var (first, last) = HeadsOf(g, item);
            for (int h = first; h < last; h++)
            {
                dA[h] += sums[(item * 3 + 0) * HeadsPerPart + h - first];
                dBias[h] += sums[(item * 3 + 1) * HeadsPerPart + h - first];
                dD[h] += sums[(item * 3 + 2) * HeadsPerPart + h - first];
            }
        }
        return (dA, dBias, dD);
    }

    private readonly struct BackwardWork(ScanGeometry g, ScanInputs inp, float[]? initial, float[] gy, int gyo, ScanGrads grads,
        float[] partialB, float[] partialC, float[] sums) : IRangeWork
    {
        public void Run(int start, int end)
        {
            int sf = g.StateFloats, chunks = (g.Time + Chunk - 1) / Chunk, parts = Parts(g);
            var marks = BufferPool.Rent(Math.Max(1, chunks) * sf);
            var states = BufferPool.Rent(Math.Min(Chunk, Math.Max(1, g.Time)) * sf);
            var gs = BufferPool.Rent(sf);
            var zeros = BufferPool.Rent(sf);
            var gb = BufferPool.Rent(g.HeadSize);
            try
            {
                Array.Clear(zeros, 0, sf);
                for (int item = start; item < end; item++)
                {
                    var (first, last) = HeadsOf(g, item);
                    for (int h = first; h < last; h++)
                        BackwardHead(item / (g.Groups * parts), h, first, item, marks, states, gs.AsSpan(0, sf), zeros.AsSpan(0, sf), gb.AsSpan(0, g.HeadSize));
                }
            }
            finally
            {
                BufferPool.Return(marks);
                BufferPool.Return(states);
                BufferPool.Return(gs);
                BufferPool.Return(zeros);
                BufferPool.Return(gb);
            }
        }

        private void BackwardHead(int b, int h, int first, int item, float[] marks, float[] states, Span<float> gState, ReadOnlySpan<float> zeros, Span<float> gb)
        {
            int sf = g.StateFloats, n = g.StateSize, pSize = g.HeadSize, chunks = (g.Time + Chunk - 1) / Chunk;
            var head = new Head(g, inp, h);
            // The states before each chunk, from a first run.
            var s = marks.AsSpan(0, sf);
            if (initial != null) initial.AsSpan((b * g.Heads + h) * sf, sf).CopyTo(s);
            else s.Clear();
            for (int c = 1; c < chunks; c++)
            {
                var mark = marks.AsSpan(c * sf, sf);
                marks.AsSpan((c - 1) * sf, sf).CopyTo(mark);
                for (int t = (c - 1) * Chunk; t < c * Chunk; t++)
                {
                    if (g.Restarts(b, t)) mark.Clear();
                    head.Step(b, t, mark);
                }
            }
            gState.Clear();
            float dA = 0, dBias = 0, dD = 0;
            for (int c = chunks - 1; c >= 0; c--)
            {
                int t0 = c * Chunk, t1 = Math.Min(g.Time, t0 + Chunk);
                ReadOnlySpan<float> prev = marks.AsSpan(c * sf, sf);
                for (int t = t0; t < t1; t++)
                {
                    var st = states.AsSpan((t - t0) * sf, sf);
                    if (g.Restarts(b, t)) st.Clear();
                    else prev.CopyTo(st);
                    head.Step(b, t, st);
                    prev = st;
                }
                for (int t = t1 - 1; t >= t0; t--)
                {
                    bool restart = g.Restarts(b, t);
                    ReadOnlySpan<float> st = states.AsSpan((t - t0) * sf, sf);
                    // S_{t−1}: zeros across a restart (and before a sequence without a state).
                    ReadOnlySpan<float> before = restart ? zeros : t > t0 ? states.AsSpan((t - t0 - 1) * sf, sf) : marks.AsSpan(c * sf, sf);
                    float raw = head.Raw(b, t), delta = Softplus(raw), decay = MathF.Exp(delta * head.A);
                    var x = head.X(b, t);
                    var bt = head.B(b, t);
                    var ct = head.C(b, t);
                    int row = (b * g.Time + t) * g.Heads * pSize + h * pSize;
                    var dy = gy.AsSpan(gyo + row, pSize);
                    var dC = partialC.AsSpan(item * g.Time * n + t * n, n);
                    var dB = partialB.AsSpan(item * g.Time * n + t * n, n);
                    float dDecay = 0, xGb = 0;
                    for (int p = 0; p < pSize; p++)
                    {
                        // Ĝ_t = dy_t ⊗ C_t + (carried) exp(δ_{t+1}·A)·Ĝ_{t+1}; then its products.
                        var (gbp, withBefore) = RowBackward(gState.Slice(p * n, n), dy[p], ct, st.Slice(p * n, n), dC, bt, delta * x[p], dB, before.Slice(p * n, n));
                        gb[p] = gbp;
                        dDecay += withBefore;
                        xGb += x[p] * gbp;
                        dD += dy[p] * x[p];
                    }
                    if (grads.X != null)
                    {
                        var dx = grads.X.AsSpan(grads.Xo + row, pSize);
                        for (int p = 0; p < pSize; p++) dx[p] += head.D * dy[p] + delta * gb[p];
                    }
                    float dDelta = xGb + dDecay * head.A * decay;
                    dA += dDecay * delta * decay;
                    float dRaw = dDelta * SoftplusGrad(raw);
                    dBias += dRaw;
                    if (grads.Dt != null) grads.Dt[grads.Dto + (b * g.Time + t) * g.Heads + h] += dRaw;
                    // Carry Ĝ_t to step t − 1 (nothing crosses a restart).
                    if (restart) gState.Clear();
                    else Scale(gState, decay);
                }
            }
            // Rows share heads: each item keeps its own sums, added in item order afterwards (the same bits on any thread count).
            int slot = h - first;
            sums[(item * 3 + 0) * HeadsPerPart + slot] = dA;
            sums[(item * 3 + 1) * HeadsPerPart + slot] = dBias;
            sums[(item * 3 + 2) * HeadsPerPart + slot] = dD;
        }
    }

    /// <summary>For one state row: gRow += dyp·c; dC += dyp·s; dB += xd·gRow; returns ⟨gRow, b⟩ and ⟨gRow, before⟩.</summary>
    private static (float GB, float WithBefore) RowBackward(Span<float> gRow, float dyp, ReadOnlySpan<float> c, ReadOnlySpan<float> s, Span<float> dC,
        ReadOnlySpan<float> b, float xd, Span<float> dB, ReadOnlySpan<float> before)
    {
        int n = gRow.Length, i = 0;
        float gbSum = 0, beforeSum = 0;
        if (Vector.IsHardwareAccelerated && n >= Vector<float>.Count)
        {
            var gv = MemoryMarshal.Cast<float, Vector<float>>(gRow);
            var cv = MemoryMarshal.Cast<float, Vector<float>>(c);
            var sv = MemoryMarshal.Cast<float, Vector<float>>(s);
            var bv = MemoryMarshal.Cast<float, Vector<float>>(b);
            var dCv = MemoryMarshal.Cast<float, Vector<float>>(dC);
            var dBv = MemoryMarshal.Cast<float, Vector<float>>(dB);
            var pv = MemoryMarshal.Cast<float, Vector<float>>(before);
            Vector<float> gbAcc = Vector<float>.Zero, beforeAcc = Vector<float>.Zero;
            for (int v = 0; v < gv.Length; v++)
            {
                var gg = gv[v] + cv[v] * dyp;
                gv[v] = gg;
                dCv[v] += sv[v] * dyp;
                dBv[v] += gg * xd;
                gbAcc += gg * bv[v];
                beforeAcc += gg * pv[v];
            }
            gbSum = Vector.Sum(gbAcc);
            beforeSum = Vector.Sum(beforeAcc);
            i = gv.Length * Vector<float>.Count;
        }
        for (; i < n; i++)
        {
            float gg = gRow[i] + c[i] * dyp;
            gRow[i] = gg;
            dC[i] += s[i] * dyp;
            dB[i] += gg * xd;
            gbSum += gg * b[i];
            beforeSum += gg * before[i];
        }
        return (gbSum, beforeSum);
    }

    private static void Scale(Span<float> v, float factor)
    {
        for (int i = 0; i < v.Length; i++) v[i] *= factor;
    }
}
