namespace AlignSharp.Engine.Kernels;

/// <summary>
/// NumPy-style broadcasting of two shapes. The last output axis is walked as a contiguous inner loop in
/// which each operand either advances (stride 1) or repeats one value (stride 0), so bias adds
/// ([B,T,C] + [C]) and per-row scales ([B,T,C] · [B,T,1]) run as plain SIMD loops.
/// </summary>
internal sealed class BroadcastPlan
{
    public readonly int[] OutShape;
    public readonly int[] StrideA, StrideB;   // element strides per output axis (0 = broadcast)
    public readonly int Inner;                // length of the last output axis
    public readonly int Outer;                // number of inner rows
    public readonly bool Same;

    public BroadcastPlan(ReadOnlySpan<int> a, ReadOnlySpan<int> b)
    {
        int rank = Math.Max(a.Length, b.Length);
        OutShape = new int[rank];
        StrideA = new int[rank];
        StrideB = new int[rank];
        int sa = 1, sb = 1;
        for (int i = rank - 1; i >= 0; i--)
        {
            int da = i - (rank - a.Length) >= 0 ? a[i - (rank - a.Length)] : 1;
            int db = i - (rank - b.Length) >= 0 ? b[i - (rank - b.Length)] : 1;
            if (da != db && da != 1 && db != 1)
                throw new ArgumentException($"Shapes {ShapeUtil.Format(a)} and {ShapeUtil.Format(b)} do not broadcast.");
            OutShape[i] = Math.Max(da, db);
            StrideA[i] = da == 1 ? 0 : sa;
            StrideB[i] = db == 1 ? 0 : sb;
            sa *= da;
            sb *= db;
        }
        Same = a.SequenceEqual(b);
        Inner = rank == 0 ? 1 : OutShape[^1];
        Outer = Inner == 0 ? 0 : ShapeUtil.Count(OutShape) / Inner;
        if (rank == 0) { StrideA = [0]; StrideB = [0]; OutShape = []; }
    }

    /// <summary>Stride of operand <paramref name="which"/> (0 = a, 1 = b) along the last output axis: 1, or 0 when broadcast.</summary>
    private int InnerStride(int which)
    {
        var strides = which == 0 ? StrideA : StrideB;
        return strides.Length == 0 ? 0 : strides[^1];
    }

    /// <summary>Start offset into operand <paramref name="which"/> of inner row <paramref name="row"/>.</summary>
    private int OperandOffset(int row, int which)
    {
        RowOffsets(row, out int oa, out int ob);
        return which == 0 ? oa : ob;
    }

    /// <summary>Start offsets into a and b of inner row <paramref name="row"/>.</summary>
    private void RowOffsets(int row, out int offA, out int offB)
    {
        offA = 0; offB = 0;
        for (int axis = OutShape.Length - 2; axis >= 0 && row > 0; axis--)
        {
            int d = OutShape[axis];
            int idx = row % d;
            row /= d;
            offA += idx * StrideA[axis];
            offB += idx * StrideB[axis];
        }
    }

    /// <summary>y = f(a, b) over the broadcast output.</summary>
    public void Apply<TOp>(ReadOnlySpan<float> a, ReadOnlySpan<float> b, Span<float> y) where TOp : IBinaryOp
    {
        if (Same) { Simd.Zip<TOp>(a, b, y); return; }
        int n = Inner, sa = InnerStride(0), sb = InnerStride(1);
        for (int row = 0; row < Outer; row++)
        {
            RowOffsets(row, out int oa, out int ob);
            var yr = y.Slice(row * n, n);
            if (sa == 1 && sb == 1) Simd.Zip<TOp>(a.Slice(oa, n), b.Slice(ob, n), yr);
            else if (sa == 1) Simd.ZipScalarRight<TOp>(a.Slice(oa, n), b[ob], yr);
            else if (sb == 1) Simd.ZipScalarLeft<TOp>(a[oa], b.Slice(ob, n), yr);
            else yr.Fill(TOp.Apply(a[oa], b[ob]));
        }
    }

    /// <summary>
    /// Sums an output-shaped tensor <paramref name="full"/> down to operand <paramref name="which"/>'s shape
    /// (0 = a, 1 = b) and adds the result into <paramref name="target"/>.
    /// </summary>
    public void ReduceInto(ReadOnlySpan<float> full, Span<float> target, int which)
    {
        int inner = InnerStride(which), n = Inner;
        for (int row = 0; row < Outer; row++)
        {
            int off = OperandOffset(row, which);
            var src = full.Slice(row * n, n);
            if (inner == 1) Simd.AddInto(src, target.Slice(off, n));
            else target[off] += Simd.Sum(src);
        }
    }

    /// <summary>y = f(full, operand) where <paramref name="full"/> has the output shape and the operand is a or b
    /// (<paramref name="which"/> 0 or 1), broadcast: the backward of a product or quotient, with no second plan.</summary>
    public void ApplyToOperand<TOp>(ReadOnlySpan<float> full, ReadOnlySpan<float> operand, int which, Span<float> y) where TOp : IBinaryOp
    {
        int inner = InnerStride(which), n = Inner;
        for (int row = 0; row < Outer; row++)
        {
            int off = OperandOffset(row, which);
            var yr = y.Slice(row * n, n);
            if (inner == 1) Simd.Zip<TOp>(full.Slice(row * n, n), operand.Slice(off, n), yr);
            else Simd.ZipScalarRight<TOp>(full.Slice(row * n, n), operand[off], yr);
        }
    }

    /// <summary>
    /// Routes g to whichever operand min (<paramref name="min"/> true) or max selected, a on ties: dst = g where the
    /// operand <paramref name="which"/> won, 0 elsewhere. All output-shaped.
    /// </summary>
    public void SelectGrad(ReadOnlySpan<float> g, ReadOnlySpan<float> a, ReadOnlySpan<float> b, bool min, int which, Span<float> dst)
    {
        int n = Inner, ia = InnerStride(0), ib = InnerStride(1);
        for (int row = 0; row < Outer; row++)
        {
            RowOffsets(row, out int oa, out int ob);
            for (int j = 0; j < n; j++)
            {
                float av = a[oa + j * ia], bv = b[ob + j * ib];
                bool aWins = min ? av <= bv : av >= bv;
                dst[row * n + j] = aWins == (which == 0) ? g[row * n + j] : 0f;
            }
        }
    }
}
