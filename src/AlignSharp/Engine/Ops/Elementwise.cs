using AlignSharp.Engine.Kernels;

namespace AlignSharp.Engine;

/// <summary>
/// The differentiable operations. Each op computes its forward value and, when an input requires grad,
/// records the backward function right beside it. Shape contracts are in each op's summary.
/// </summary>
public static partial class Ops
{
    /// <summary>Elementwise maps above this size are split across threads.</summary>
    private const int ParallelGrain = 1 << 15;

    /// <summary>The same for maps that evaluate an exp, log or tanh per element (≈ 0.3 ns each here, ten times an add):
    /// these pay for a split four times sooner. A decoding step's SiLU over batch 8 × 4864 took 11.7 µs on one core.</summary>
    private const int TranscendentalGrain = 1 << 13;

    // ---- parallel drivers over contiguous memory ---------------------------------------------------------

    private readonly struct MapWork<TOp>(float[] x, int xo, float[] y, int yo) : IRangeWork where TOp : IUnaryOp
    {
        public void Run(int s, int e) => Simd.Map<TOp>(x.AsSpan(xo + s, e - s), y.AsSpan(yo + s, e - s));
    }

    private readonly struct ZipWork<TOp>(float[] a, int ao, float[] b, int bo, float[] y, int yo) : IRangeWork where TOp : IBinaryOp
    {
        public void Run(int s, int e) => Simd.Zip<TOp>(a.AsSpan(ao + s, e - s), b.AsSpan(bo + s, e - s), y.AsSpan(yo + s, e - s));
    }

    private readonly struct ZipAccWork<TOp>(float[] a, int ao, float[] b, int bo, float[] y, int yo) : IRangeWork where TOp : IBinaryOp
    {
        public void Run(int s, int e) => Simd.ZipAccumulate<TOp>(a.AsSpan(ao + s, e - s), b.AsSpan(bo + s, e - s), y.AsSpan(yo + s, e - s));
    }

    private static void Map<TOp>(Tensor x, Tensor y, int grain = ParallelGrain) where TOp : IUnaryOp
        => ParallelFor.Run(x.Length, grain, new MapWork<TOp>(x.Array, x.Offset, y.Array, y.Offset));

    private static void Zip<TOp>(Tensor a, Tensor b, Tensor y) where TOp : IBinaryOp
        => ParallelFor.Run(a.Length, ParallelGrain, new ZipWork<TOp>(a.Array, a.Offset, b.Array, b.Offset, y.Array, y.Offset));

    /// <summary>target.grad += f(g, saved), all the same shape.</summary>
    private static void AccumulateGrad<TOp>(Tensor target, Tensor g, Tensor saved) where TOp : IBinaryOp
    {
        target.GradForWrite(out bool accumulate);
        var acc = target.GradTensor!;
        if (accumulate)
            ParallelFor.Run(g.Length, ParallelGrain, new ZipAccWork<TOp>(g.Array, g.Offset, saved.Array, saved.Offset, acc.Array, acc.Offset));
        else
            ParallelFor.Run(g.Length, ParallelGrain, new ZipWork<TOp>(g.Array, g.Offset, saved.Array, saved.Offset, acc.Array, acc.Offset));
    }

    private static Tensor NewLike(Tensor x) => Tensor.EmptyOwned(x.ShapeArray);

    // ---- unary -------------------------------------------------------------------------------------------

    private static Tensor Unary<TOp, TGrad>(Tensor x, bool gradFromOutput, int grain = ParallelGrain) where TOp : IUnaryOp where TGrad : IBinaryOp
    {
        var y = NewLike(x);
        Map<TOp>(x, y, grain);
        if (Autograd.Needs(x))
            Autograd.Record(y, [x], g => AccumulateGrad<TGrad>(x, g, gradFromOutput ? y : x));
        return y;
    }

    /// <summary>e^x. (any) → (same)</summary>
    public static Tensor Exp(Tensor x) => Unary<ExpOp, MulGradOp>(x, gradFromOutput: true, TranscendentalGrain);

    /// <summary>Natural log. (any) → (same)</summary>
    public static Tensor Log(Tensor x) => Unary<LogOp, LogGradOp>(x, gradFromOutput: false, TranscendentalGrain);

    public static Tensor Tanh(Tensor x) => Unary<TanhOp, TanhGradOp>(x, gradFromOutput: true, TranscendentalGrain);

    public static Tensor Sigmoid(Tensor x) => Unary<SigmoidOp, SigmoidGradOp>(x, gradFromOutput: true, TranscendentalGrain);

    /// <summary>log σ(x) = −softplus(−x), computed without overflow.</summary>
    public static Tensor LogSigmoid(Tensor x)
    {
        var y = NewLike(x);
        Map<NegOp>(x, y);
        Map<SoftplusOp>(y, y);
        Map<NegOp>(y, y);
        if (Autograd.Needs(x))
            Autograd.Record(y, [x], g => AccumulateGrad<LogSigmoidGradOp>(x, g, x));
        return y;
    }

    /// <summary>log(1 + e^x), computed without overflow.</summary>
    public static Tensor Softplus(Tensor x) => Unary<SoftplusOp, SoftplusGradOp>(x, gradFromOutput: false, TranscendentalGrain);

    public static Tensor Relu(Tensor x) => Unary<ReluOp, ReluGradOp>(x, gradFromOutput: false);

    /// <summary>GELU with the tanh approximation (GPT-2's gelu_new).</summary>
    public static Tensor Gelu(Tensor x) => Unary<GeluOp, GeluGradOp>(x, gradFromOutput: false, TranscendentalGrain);

    /// <summary>The exact GELU x·Φ(x) (PyTorch's gelu; transformers' "gelu"), see <see cref="GeluErfOp"/>.</summary>
    public static Tensor GeluErf(Tensor x) => Unary<GeluErfOp, GeluErfGradOp>(x, gradFromOutput: false, TranscendentalGrain);

    /// <summary>x·σ(x) (SiLU / swish).</summary>
    public static Tensor Silu(Tensor x) => Unary<SiluOp, SiluGradOp>(x, gradFromOutput: false, TranscendentalGrain);

    public static Tensor Square(Tensor x) => Unary<SquareOp, SquareGradOp>(x, gradFromOutput: false);

    public static Tensor Sqrt(Tensor x) => Unary<SqrtOp, SqrtGradOp>(x, gradFromOutput: true);

    public static Tensor Neg(Tensor x)
    {
        var y = NewLike(x);
        Map<NegOp>(x, y);
        if (Autograd.Needs(x))
            Autograd.Record(y, [x], g => Simd.ZipAccumulateUnary<NegOp>(g.Span, x.GradForAccumulate()));
        return y;
    }

    /// <summary>x + s.</summary>
    public static Tensor AddScalar(Tensor x, float s)
    {
        var y = NewLike(x);
        Simd.ZipScalarRight<AddOp>(x.Span, s, y.Span);
        if (Autograd.Needs(x))
            Autograd.Record(y, [x], g => x.AddGradOf(g));
        return y;
    }

    /// <summary>x · s.</summary>
    public static Tensor MulScalar(Tensor x, float s)
    {
        var y = NewLike(x);
        Simd.ZipScalarRight<MulOp>(x.Span, s, y.Span);
        if (Autograd.Needs(x))
            Autograd.Record(y, [x], g => Simd.ScaleAddInto(g.Span, s, x.GradForAccumulate()));
        return y;
    }

    /// <summary>Soft capping cap·tanh(x / cap) (Gemma-2's final and attention logits): smooth, odd, bounded by ±cap.
    /// (any) → (same). Backward: g·(1 − (y / cap)²).</summary>
    public static Tensor SoftCap(Tensor x, float cap)
    {
        if (!(cap > 0) || !float.IsFinite(cap)) throw new ArgumentOutOfRangeException(nameof(cap), $"SoftCap needs a finite cap > 0, got {cap}.");
        var y = NewLike(x);
        Simd.ZipScalarRight<DivOp>(x.Span, cap, y.Span);
        Map<TanhOp>(y, y);
        Simd.ZipScalarRight<MulOp>(y.Span, cap, y.Span);
        if (Autograd.Needs(x))
            Autograd.Record(y, [x], g => PointwiseKernels.SoftCapBackward(g.Span, y.Span, cap, x.GradForAccumulate()));
        return y;
    }

    /// <summary>min(max(x, lo), hi); the gradient passes where lo ≤ x ≤ hi (as in PyTorch).</summary>
    public static Tensor Clamp(Tensor x, float lo, float hi)
    {
        if (lo > hi) throw new ArgumentException($"Clamp bounds are reversed: {lo} > {hi}.");
        var y = NewLike(x);
        PointwiseKernels.Clamp(x.Span, lo, hi, y.Span);
        if (Autograd.Needs(x))
            Autograd.Record(y, [x], g => PointwiseKernels.ClampBackward(g.Span, x.Span, lo, hi, x.GradForAccumulate()));
        return y;
    }

    // ---- binary with broadcasting ------------------------------------------------------------------------

    /// <summary>a + b with NumPy broadcasting (e.g. [B,T,C] + [C]).</summary>
    public static Tensor Add(Tensor a, Tensor b) => Binary<AddOp>(a, b, BinaryKind.Add);

    /// <summary>a − b with broadcasting.</summary>
    public static Tensor Sub(Tensor a, Tensor b) => Binary<SubOp>(a, b, BinaryKind.Sub);

    /// <summary>a · b with broadcasting (e.g. [B,T,C] · [B,T,1]).</summary>
    public static Tensor Mul(Tensor a, Tensor b) => Binary<MulOp>(a, b, BinaryKind.Mul);

    /// <summary>a / b with broadcasting.</summary>
    public static Tensor Div(Tensor a, Tensor b) => Binary<DivOp>(a, b, BinaryKind.Div);

    /// <summary>Elementwise minimum with broadcasting; on ties the gradient goes to a.</summary>
    public static Tensor Minimum(Tensor a, Tensor b) => Binary<MinOp>(a, b, BinaryKind.Min);

    /// <summary>Elementwise maximum with broadcasting; on ties the gradient goes to a.</summary>
    public static Tensor Maximum(Tensor a, Tensor b) => Binary<MaxOp>(a, b, BinaryKind.Max);

    private enum BinaryKind { Add, Sub, Mul, Div, Min, Max }

    private static Tensor Binary<TOp>(Tensor a, Tensor b, BinaryKind kind) where TOp : IBinaryOp
    {
        var plan = new BroadcastPlan(a.Shape, b.Shape);
        var y = Tensor.EmptyOwned(plan.OutShape);
        if (plan.Same) Zip<TOp>(a, b, y);
        else plan.Apply<TOp>(a.Span, b.Span, y.Span);
        if (Autograd.Needs(a, b))
            Autograd.Record(y, [a, b], g => BinaryBackward(kind, plan, g, a, b, y));
        return y;
    }

    /// <param name="nodeGradient">full is the gradient the backward pass gave this node (not a temporary), which an
    /// operand of the same shape may take over (<see cref="Tensor.AddGradOf"/>).</param>
    private static void BinaryBackward(BroadcastPlan plan, Tensor full, Tensor target, int which, bool nodeGradient = false)
    {
        if (target.Length != full.Length) plan.ReduceInto(full.Span, target.GradForAccumulate(), which);
        else if (nodeGradient) target.AddGradOf(full);
        else Simd.AddInto(full.Span, target.GradForAccumulate());
    }

    private static void BinaryBackward(BinaryKind kind, BroadcastPlan plan, Tensor g, Tensor a, Tensor b, Tensor y)
    {
        if (plan.Same && kind == BinaryKind.Mul)
        {
            if (a.RequiresGrad) AccumulateGrad<MulOp>(a, g, b);
            if (b.RequiresGrad) AccumulateGrad<MulOp>(b, g, a);
            return;
        }
        if (kind == BinaryKind.Add || kind == BinaryKind.Sub)
        {
            if (a.RequiresGrad) BinaryBackward(plan, g, a, 0, nodeGradient: true);
            if (b.RequiresGrad)
            {
                if (kind == BinaryKind.Add) BinaryBackward(plan, g, b, 1, nodeGradient: true);
                else
                {
                    var neg = Tensor.EmptyOwned(g.ShapeArray);
                    Simd.Map<NegOp>(g.Span, neg.Span);
                    BinaryBackward(plan, neg, b, 1);
                }
            }
            return;
        }

        // Mul, Div, Min, Max: form the output-shaped contribution, then reduce it to each operand's shape.
        var tmp = Tensor.EmptyOwned(g.ShapeArray);
        if (a.RequiresGrad)
        {
            switch (kind)
            {
                case BinaryKind.Mul: plan.ApplyToOperand<MulOp>(g.Span, b.Span, 1, tmp.Span); break;
                case BinaryKind.Div: plan.ApplyToOperand<DivOp>(g.Span, b.Span, 1, tmp.Span); break;
                default: plan.SelectGrad(g.Span, a.Span, b.Span, kind == BinaryKind.Min, 0, tmp.Span); break;
            }
            BinaryBackward(plan, tmp, a, 0);
        }
        if (b.RequiresGrad)
        {
            switch (kind)
            {
                case BinaryKind.Mul: plan.ApplyToOperand<MulOp>(g.Span, a.Span, 0, tmp.Span); break;
                case BinaryKind.Div:
                    // d(a/b)/db = −(a/b)/b = −y/b
                    Simd.Zip<MulOp>(g.Span, y.Span, tmp.Span);
                    plan.ApplyToOperand<NegDivOp>(tmp.Span, b.Span, 1, tmp.Span);
                    break;
                default: plan.SelectGrad(g.Span, a.Span, b.Span, kind == BinaryKind.Min, 1, tmp.Span); break;
            }
            BinaryBackward(plan, tmp, b, 1);
        }
        if (tmp.Storage.Pooled) tmp.Storage.Release();
    }

    /// <summary>mask ? a : b elementwise; mask holds 0/1 (no gradient). All three have the same shape.</summary>
    public static Tensor Where(Tensor mask, Tensor a, Tensor b)
    {
        if (!ShapeUtil.SameShape(mask.Shape, a.Shape) || !ShapeUtil.SameShape(a.Shape, b.Shape))
            throw new ArgumentException($"Where needs equal shapes, got mask {ShapeUtil.Format(mask.Shape)}, a {ShapeUtil.Format(a.Shape)}, b {ShapeUtil.Format(b.Shape)}.");
        var y = NewLike(a);
        PointwiseKernels.Select(mask.Span, a.Span, b.Span, y.Span);
        if (Autograd.Needs(a, b))
            Autograd.Record(y, [a, b], g =>
            {
                if (a.RequiresGrad) PointwiseKernels.AccumulateWhere(g.Span, mask.Span, whereSet: true, a.GradForAccumulate());
                if (b.RequiresGrad) PointwiseKernels.AccumulateWhere(g.Span, mask.Span, whereSet: false, b.GradForAccumulate());
            });
        return y;
    }

    /// <summary>x with <paramref name="value"/> wherever mask ≠ 0 (mask has x's shape; no gradient flows there).</summary>
    public static Tensor MaskedFill(Tensor x, Tensor mask, float value)
    {
        if (!ShapeUtil.SameShape(mask.Shape, x.Shape))
            throw new ArgumentException($"MaskedFill mask {ShapeUtil.Format(mask.Shape)} must match x {ShapeUtil.Format(x.Shape)}.");
        var y = NewLike(x);
        PointwiseKernels.MaskedFill(x.Span, mask.Span, value, y.Span);
        if (Autograd.Needs(x))
            Autograd.Record(y, [x], g => PointwiseKernels.AccumulateWhere(g.Span, mask.Span, whereSet: false, x.GradForAccumulate()));
        return y;
    }
}
