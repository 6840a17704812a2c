using AlignSharp.Engine.Kernels;

namespace AlignSharp.Engine;

public static partial class Ops
{
    /// <summary>
    /// Batched matrix product C = op(A)·op(B) without materialised transposes.
    /// A: [..., M, K] ([..., K, M] when transA). B: [K, N] ([N, K] when transB), shared by every batch,
    /// or [..., K, N] with the same leading dimensions as A. → [..., M, N]
    /// </summary>
    public static Tensor MatMul(Tensor a, Tensor b, bool transA = false, bool transB = false)
    {
        if (a.Rank < 2 || b.Rank < 2) throw new ArgumentException($"MatMul needs matrices, got {ShapeUtil.Format(a.Shape)} and {ShapeUtil.Format(b.Shape)}.");
        int m = transA ? a.Dim(-1) : a.Dim(-2);
        int k = transA ? a.Dim(-2) : a.Dim(-1);
        int kb = transB ? b.Dim(-1) : b.Dim(-2);
        int n = transB ? b.Dim(-2) : b.Dim(-1);
        if (k != kb) throw new ArgumentException($"MatMul inner dimensions differ: {ShapeUtil.Format(a.Shape)}{(transA ? "ᵀ" : "")} · {ShapeUtil.Format(b.Shape)}{(transB ? "ᵀ" : "")}.");
        bool shared = b.Rank == 2;
        int batch = ShapeUtil.Count(a.Shape[..^2]);
        if (!shared)
        {
            if (!a.Shape[..^2].SequenceEqual(b.Shape[..^2]))
                throw new ArgumentException($"MatMul batch dimensions differ: {ShapeUtil.Format(a.Shape)} and {ShapeUtil.Format(b.Shape)}.");
        }
        var outShape = a.ShapeArray.ToArray();
        outShape[^2] = m;
        outShape[^1] = n;
        var c = Tensor.EmptyOwned(outShape);
        int lda = a.Dim(-1), ldb = b.Dim(-1);
        long sa = (long)a.Dim(-2) * a.Dim(-1), sb = shared ? 0 : (long)b.Dim(-2) * b.Dim(-1), sc = (long)m * n;

        // A shared right operand with untransposed A is one tall GEMM over all batches.
        bool flat = shared && !transA;
        if (flat) Gemm.Multiply(false, transB, batch * m, n, k, a.Span, lda, b.Span, ldb, c.Span, n, false);
        else Gemm.MultiplyBatched(batch, transA, transB, m, n, k, a.Span, lda, sa, b.Span, ldb, sb, c.Span, n, sc, false);

        if (Autograd.Needs(a, b))
            Autograd.Record(c, [a, b], g =>
            {
                var gs = g.Span;
                if (a.RequiresGrad)
                {
                    var da = a.GradForAccumulate();
                    if (flat)
                        Gemm.Multiply(false, !transB, batch * m, k, n, gs, n, b.Span, ldb, da, k, true);
                    else if (!transA) // dA[M,K] += dC[M,N] · op(B)ᵀ
                        Gemm.MultiplyBatched(batch, false, !transB, m, k, n, gs, n, sc, b.Span, ldb, sb, da, k, sa, true);
                    else              // dA_stored[K,M] += op(B)[K,N] · dCᵀ
                        Gemm.MultiplyBatched(batch, transB, true, k, m, n, b.Span, ldb, sb, gs, n, sc, da, m, sa, true);
                }
                if (b.RequiresGrad)
                {
                    var db = b.GradForAccumulate();
                    if (flat)
                    {
                        if (!transB) Gemm.Multiply(true, false, k, n, batch * m, a.Span, lda, gs, n, db, n, true);
                        else Gemm.Multiply(true, false, n, k, batch * m, gs, n, a.Span, lda, db, k, true);
                    }
                    else if (shared)
                    {
                        // One weight for every batch: accumulate batch by batch (never in parallel into one buffer).
                        for (int i = 0; i < batch; i++)
                        {
                            var ai = a.Span[(int)(i * sa)..]; var gi = gs[(int)(i * sc)..];
                            if (!transB) Gemm.Multiply(!transA, false, k, n, m, ai, lda, gi, n, db, n, true);
                            else Gemm.Multiply(true, transA, n, k, m, gi, n, ai, lda, db, k, true);
                        }
                    }
                    else if (!transB) // dB[K,N] += op(A)ᵀ · dC
                        Gemm.MultiplyBatched(batch, !transA, false, k, n, m, a.Span, lda, sa, gs, n, sc, db, n, sb, true);
                    else              // dB_stored[N,K] += dCᵀ · op(A)
                        Gemm.MultiplyBatched(batch, true, transA, n, k, m, gs, n, sc, a.Span, lda, sa, db, k, sb, true);
                }
            });
        return c;
    }

    /// <summary>y = x·Wᵀ + b. x [..., In], W [Out, In], b [Out] or null → [..., Out]. W may be a frozen bf16 tensor
    /// (<see cref="Tensor.ToBf16"/>): widened inside the GEMM, float32 accumulation, gradient for x only.</summary>
    public static Tensor Linear(Tensor x, Tensor w, Tensor? bias = null) => LinearCore(x, w, bias, null, null);

    [ThreadStatic] private static int t_roundActivations;

    /// <summary>
    /// Until the returned scope is disposed, unrecorded products with frozen bf16 weights on this thread may round their
    /// activations to bf16 (the vdpbf16ps kernel at decode shapes, ≤ 8 rows), as a bf16 model computes in PyTorch: what
    /// generation asks for (<c>Generator</c> opens it). Outside it they are exact, as the recorded (training) forward is,
    /// so tokens scored without gradients (PPO's old log-probs, the reference's, a reward model's) get the numbers
    /// training computes for them, however the scorer's chunks of rows fall.
    /// </summary>
    public static ActivationRounding RoundActivationsToBf16()
    {
        t_roundActivations++;
        return new ActivationRounding(open: true);
    }

    /// <summary>Whether a <see cref="RoundActivationsToBf16"/> scope is open on this thread (generation).</summary>
    public static bool RoundsActivations => t_roundActivations > 0;

    /// <summary>Ends a <see cref="RoundActivationsToBf16"/> or <see cref="Bf16Products"/> scope (a default value ends nothing).</summary>
    public readonly struct ActivationRounding : IDisposable
    {
        private readonly bool _open, _products;
        internal ActivationRounding(bool open, bool products = false) => (_open, _products) = (open, products);
        public void Dispose()
        {
            if (!_open) return;
            if (_products) t_bf16Products--;
            else t_roundActivations--;
        }
    }

    /// <summary>Whether a bf16 product on this thread may round its activations: inside <see cref="RoundActivationsToBf16"/>,
    /// nothing recorded (<paramref name="record"/> false), and not a checkpointed segment's forward, which backward
    /// recomputes and must find exact.</summary>
    private static bool MayRoundActivations(bool record) => t_roundActivations > 0 && !record && !Autograd.InCheckpointedForward;

    [ThreadStatic] private static int t_bf16Products;

    /// <summary>
    /// Until the returned scope is disposed, every product with a frozen bf16 weight on this thread rounds its float32
    /// input to bf16 (<see cref="Bf16Inputs.Always"/>): forward, backward (the input's gradient, dY·W) and unrecorded
    /// scoring alike, by one kernel whose rows do not depend on each other, so PPO's old log-probabilities, the
    /// reference's and the update's forward agree bit for bit, and a checkpointed segment's recomputation is its forward.
    /// This is what <c>--matmul-precision medium</c> asks for (as PyTorch's float32 matmul precision "medium" lets a
    /// product compute internally in bf16): on CPUs with AVX512-BF16 1.6–2× the float32 products' throughput. Generation
    /// inside it keeps <see cref="RoundActivationsToBf16"/>'s rule (its own kernel at decode shapes, exact elsewhere).
    /// Products with float32 weights stay float32.
    /// </summary>
    public static ActivationRounding Bf16Products()
    {
        t_bf16Products++;
        return new ActivationRounding(open: true, products: true);
    }

    /// <summary>Whether a <see cref="Bf16Products"/> scope is open on this thread.</summary>
    public static bool RoundsBf16Products => t_bf16Products > 0;

    /// <summary>What a product with a frozen bf16 weight may do with its input here: generation's rule where it applies
    /// (<see cref="MayRoundActivations"/>), else <see cref="Bf16Products"/>'s, else exact.</summary>
    internal static Bf16Inputs Bf16InputsFor(bool record) =>
        MayRoundActivations(record) ? Bf16Inputs.AtDecodeShapes : t_bf16Products > 0 ? Bf16Inputs.Always : Bf16Inputs.Exact;

    /// <summary>
    /// Linear(x, W_i, b_i) for several layers that read the same x (a block's q, k and v projections; its gate and up):
    /// the same values as separate calls. Where nothing is recorded, activations may be rounded
    /// (<see cref="RoundActivationsToBf16"/>) and every W is a frozen bf16 matrix that the vdpbf16ps kernel takes at this row
    /// count (decoding), x is rounded once and all the products share one parallel region;
    /// otherwise these are separate <see cref="Linear"/> calls.
    /// </summary>
    public static Tensor[] LinearShared(Tensor x, params (Tensor W, Tensor? Bias)[] layers)
        => LinearShared(x, [.. layers.Select(l => new LinearLayer(l.W, l.Bias))]);

    /// <summary>
    /// <see cref="LinearShared(Tensor, (Tensor W, Tensor? Bias)[])"/> for layers that may carry a low-rank term (LoRA):
    /// the same values as separate <see cref="Linear"/> / <see cref="LinearLowRank"/> calls. Fused, each thread adds a
    /// layer's term to the columns it has just made (<see cref="Bf16Dot.LowRank"/>).
    /// </summary>
    public static unsafe Tensor[] LinearShared(Tensor x, LinearLayer[] layers)
    {
        int rows = ShapeUtil.Rows(x.Shape), inF = x.Dim(-1);
        bool fused = layers.Length > 1 && Decodes(x);
        foreach (var layer in layers)
            fused = fused && Streams(layer, rows, inF);
        if (!fused)
        {
            var separate = new Tensor[layers.Length];
            for (int i = 0; i < layers.Length; i++) separate[i] = Linear(x, layers[i]);
            return separate;
        }

        var ys = new Tensor[layers.Length];
        for (int i = 0; i < layers.Length; i++)
        {
            var (w, bias) = (layers[i].W, layers[i].Bias);
            ys[i] = Tensor.EmptyOwned(ShapeUtil.WithLast(x.Shape, w.Dim(0)));
            if (bias != null) PointwiseKernels.FillRows(rows, w.Dim(0), bias.Span, ys[i].Span);
        }
        Span<int> at = stackalloc int[layers.Length];
        var us = MakeTermInputs(x.Span, rows, inF, layers, at);
        try
        {
            fixed (float* a = x.Span, u0 = us)
                RunShared(a, rows, inF, layers, ys, u0, at, stackalloc Bf16Dot.Product[layers.Length], 0);
        }
        finally { if (us != null) BufferPool.Return(us); }
        return ys;
    }

    /// <summary>
    /// A linear layer's tensors: y = x·Wᵀ + b, plus a low-rank term u·Bᵀ (B [Out, R]) where <paramref name="B"/> is given:
    /// with u given as <paramref name="U"/> ([..., R] with x's rows, <see cref="LinearLowRank"/>'s form), or made from the
    /// layer's own input as u = <paramref name="Scale"/>·(x·Aᵀ) with <paramref name="A"/> [R, In] (LoRA without dropout),
    /// which the decoding products make on the calling thread instead of as two ops.
    /// </summary>
    public readonly record struct LinearLayer(Tensor W, Tensor? Bias = null, Tensor? U = null, Tensor? B = null, Tensor? A = null, float Scale = 1f)
    {
        internal bool HasTerm => B != null;
    }

    /// <summary><see cref="Linear(Tensor, Tensor, Tensor?)"/> or <see cref="LinearLowRank"/>, as <paramref name="layer"/>
    /// has a term or not; in generation at decode shapes the term is made inside the bf16 product.</summary>
    public static unsafe Tensor Linear(Tensor x, LinearLayer layer)
    {
        if (!layer.HasTerm)
            return layer.U == null && layer.A == null ? Linear(x, layer.W, layer.Bias) : throw new ArgumentException("LinearLayer: a low-rank U or A without B.");
        int rows = ShapeUtil.Rows(x.Shape), inF = x.Dim(-1);
        if (!Decodes(x) || !Streams(layer, rows, inF))
            return LinearLowRank(x, layer.W, layer.Bias, TermInput(x, layer), layer.B!);
        return Streamed(x, layer, null);
    }

    /// <summary>The decoding product of a layer that <see cref="Streams"/>: x·Wᵀ + b + its term, plus
    /// <paramref name="residual"/> when given, each thread on the columns it makes (<see cref="Bf16Dot.Run"/>).</summary>
    private static unsafe Tensor Streamed(Tensor x, LinearLayer layer, Tensor? residual)
    {
        int rows = ShapeUtil.Rows(x.Shape), inF = x.Dim(-1), outF = layer.W.Dim(0);
        var y = Tensor.EmptyOwned(ShapeUtil.WithLast(x.Shape, outF));
        if (layer.Bias != null) PointwiseKernels.FillRows(rows, outF, layer.Bias.Span, y.Span);
        Span<int> at = stackalloc int[1];
        var us = MakeTermInputs(x.Span, rows, inF, [layer], at);
        try
        {
            fixed (float* a = x.Span, c = y.Span, u0 = us, l = SpanOrEmpty(layer.B), r = SpanOrEmpty(residual))
            fixed (ushort* b = layer.W.Bf16Span)
                Bf16Dot.Run(rows, outF, inF, a, inF, b, inF, c, outF, accumulate: layer.Bias != null, Term(layer, u0 + at[0], l), r);
        }
        finally { if (us != null) BufferPool.Return(us); }
        return y;
    }

    /// <summary>
    /// residual + Linear(x, layer): a residual connection around a linear layer (residual has the output's shape
    /// [..., Out]). The same values as Add(residual, Linear(x, layer)), which is what runs unless the layer runs fused in
    /// generation at decode shapes, as <see cref="Linear(Tensor, LinearLayer)"/> fuses it: then each thread of the bf16
    /// product adds the residual to the columns it has just made (<see cref="Bf16Dot.Product"/>), and the add is no pass of
    /// its own over the residual and the product's output, which the weights' stream had evicted by then.
    /// </summary>
    public static Tensor AddLinear(Tensor residual, Tensor x, LinearLayer layer) =>
        ResidualFuses(residual, x, layer) && Streams(layer, ShapeUtil.Rows(x.Shape), x.Dim(-1))
            ? Streamed(x, layer, residual)
            : Add(residual, Linear(x, layer));

    /// <summary>Whether a residual may go into the decoding product of <paramref name="layer"/> on x (its other conditions:
    /// <see cref="Streams"/>): switched on, nothing recorded, activations may be rounded, the kernel takes the rows, and the
    /// residual is a float32 tensor of the output's shape.</summary>
    private static bool ResidualFuses(Tensor residual, Tensor x, LinearLayer layer)
    {
        return FuseResidual && !residual.IsBf16 && residual.Shape.SequenceEqual(ShapeUtil.WithLast(x.Shape, layer.W.Dim(0)))
               && Decodes(x, residual);
    }

    /// <summary>Whether a product on x runs as a decoding product (<see cref="Bf16Dot"/>), as far as x decides: it has
    /// rows, nothing is recorded on it (or on <paramref name="also"/>), activations may be rounded, and the vdpbf16ps
    /// kernel takes that many rows. Each op adds its own layers' conditions (<see cref="Streams"/>).</summary>
    private static bool Decodes(Tensor x, Tensor? also = null)
    {
        int rows = ShapeUtil.Rows(x.Shape);
        return rows > 0 && MayRoundActivations(also == null ? Autograd.AnyNeeds([x]) : Autograd.AnyNeeds([x, also]))
               && Gemm.Bf16DotRuns(false, true, rows);
    }

    /// <summary>Whether decoding products add a residual to the columns they make (<see cref="AddLinear"/>,
    /// <see cref="GatedMlp(Tensor, LinearLayer, LinearLayer, LinearLayer, GateActivation, Tensor?)"/>; on by default;
    /// tests and benchmarks switch it to compare).</summary>
    internal static bool FuseResidual { get; set; } = true;

    /// <summary>u of <paramref name="layer"/>'s term on input x, as ops: U, or MulScalar(Linear(x, A), Scale) as
    /// <c>LoraAdapter.LowRank</c> makes it.</summary>
    private static Tensor TermInput(Tensor x, LinearLayer layer) => layer.U ?? MulScalar(Linear(x, layer.A!), layer.Scale);

    /// <summary>u of a term into <paramref name="u"/> ([rows, R]) on the calling thread: a given U copied, or
    /// Scale·(x·Aᵀ) by the product <see cref="Linear(Tensor, Tensor, Tensor?)"/> runs on a float32 A, then
    /// <see cref="MulScalar"/>'s map, so <see cref="TermInput"/>'s bits without the two tensors and ops.</summary>
    private static void MakeTermInput(ReadOnlySpan<float> x, int rows, int inF, LinearLayer layer, Span<float> u)
    {
        if (layer.U is { } given)
        {
            given.Span.CopyTo(u);
            return;
        }
        int r = layer.A!.Dim(0);
        var span = u[..(rows * r)];
        Gemm.Multiply(false, true, rows, r, inF, x, inF, layer.A.Span, inF, span, r, accumulate: false);
        Simd.ZipScalarRight<MulOp>(span, layer.Scale, span);
    }

    /// <summary>The u's of the terms of <paramref name="layers"/> on x for a fused product (<see cref="MakeTermInput"/>),
    /// layer i's at <paramref name="at"/>[i] of one rented buffer; null when no layer has a term.</summary>
    private static float[]? MakeTermInputs(ReadOnlySpan<float> x, int rows, int inF, ReadOnlySpan<LinearLayer> layers, Span<int> at)
    {
        int total = 0;
        for (int i = 0; i < layers.Length; i++)
        {
            at[i] = total;
            if (layers[i].HasTerm) total += rows * layers[i].B!.Dim(1);
        }
        if (total == 0) return null;
        var us = BufferPool.Rent(total);
        for (int i = 0; i < layers.Length; i++)
            if (layers[i].HasTerm) MakeTermInput(x, rows, inF, layers[i], us.AsSpan(at[i]));
        return us;
    }

    /// <summary>Whether <paramref name="layer"/> can run in a fused decoding product over <paramref name="rows"/> rows of
    /// <paramref name="inF"/>: a frozen bf16 weight, a frozen bias that fits, and a frozen float32 low-rank term that fits
    /// and takes the small-k path (<see cref="Bf16Dot.LowRank.Fits"/>).</summary>
    private static bool Streams(LinearLayer layer, int rows, int inF)
    {
        var (w, bias, u, b) = (layer.W, layer.Bias, layer.U, layer.B);
        bool streams = w.IsBf16 && w.Rank == 2 && w.Dim(1) == inF && !Autograd.AnyNeeds([w])
                       && (bias == null || (bias.Rank == 1 && bias.Dim(0) == w.Dim(0) && !Autograd.AnyNeeds([bias])));
        if (b == null) return streams && u == null && layer.A == null;
        bool input = u != null
            ? !u.IsBf16 && u.Dim(-1) == b.Dim(1) && ShapeUtil.Rows(u.Shape) == rows && !Autograd.AnyNeeds([u])
            : layer.A is { } a && !a.IsBf16 && a.Rank == 2 && a.Dim(0) == b.Dim(1) && a.Dim(1) == inF && !Autograd.AnyNeeds([a]);
        return streams && FuseLowRank && input && !b.IsBf16 && b.Rank == 2 && b.Dim(0) == w.Dim(0) && !Autograd.AnyNeeds([b])
               && Bf16Dot.LowRank.Fits(rows, w.Dim(0), b.Dim(1));
    }

    /// <summary>
    /// A gated MLP's hidden activations, act(x·W_gᵀ + b_g) ⊙ (x·W_uᵀ + b_u): x [..., In], W_g and W_u [F, In], biases [F]
    /// or null → [..., F]; act is SiLU (SwiGLU) or the tanh GELU (GeGLU). The same values as
    /// Mul(Silu or Gelu(Linear(x, W_g, b_g)), Linear(x, W_u, b_u)), which is what runs unless, as for
    /// <see cref="LinearShared"/>, nothing is recorded, activations may be rounded and both weights are frozen bf16 matrices
    /// the vdpbf16ps kernel takes at this row count, with no biases: then each thread applies the activation and the
    /// product to the columns it has just computed, in cache (<see cref="Bf16Dot.RunGated{TAct}"/>), and neither the
    /// activation's output nor the up projection is a tensor.
    /// </summary>
    public static Tensor GatedLinear(Tensor x, (Tensor W, Tensor? Bias) gate, (Tensor W, Tensor? Bias) up, GateActivation activation)
        => GatedLinear(x, new LinearLayer(gate.W, gate.Bias), new LinearLayer(up.W, up.Bias), activation);

    /// <summary>
    /// <see cref="GatedLinear(Tensor, (Tensor W, Tensor? Bias), (Tensor W, Tensor? Bias), GateActivation)"/> where the gate
    /// and up projections may carry low-rank terms (LoRA): act(gate(x)) ⊙ up(x) with each projection a
    /// <see cref="LinearLowRank"/> where it has a term. Fused, each thread adds the terms to the columns of both it has
    /// just made, before the activation.
    /// </summary>
    public static unsafe Tensor GatedLinear(Tensor x, LinearLayer gate, LinearLayer up, GateActivation activation)
    {
        int rows = ShapeUtil.Rows(x.Shape), inF = x.Dim(-1);
        if (!GatedFuses(x, gate, up))
        {
            var ys = LinearShared(x, [gate, up]);
            return Mul(Activate(ys[0], activation), ys[1]);
        }

        int outF = gate.W.Dim(0);
        var y = Tensor.EmptyOwned(ShapeUtil.WithLast(x.Shape, outF));
        var upC = BufferPool.Rent(rows * outF);
        Span<int> at = stackalloc int[2];
        var us = MakeTermInputs(x.Span, rows, inF, [gate, up], at);
        try
        {
            fixed (float* a = x.Span, g = y.Span, u = upC, u0 = us)
            fixed (ushort* bg = gate.W.Bf16Span, bu = up.W.Bf16Span)
            fixed (float* gl = SpanOrEmpty(gate.B), ul = SpanOrEmpty(up.B))
            {
                var gp = new Bf16Dot.Product(bg, inF, outF, g, outF, accumulate: false, Term(gate, u0 + at[0], gl));
                var upr = new Bf16Dot.Product(bu, inF, outF, u, outF, accumulate: false, Term(up, u0 + at[1], ul));
                if (activation == GateActivation.Silu) Bf16Dot.RunGated<SiluOp>(rows, inF, a, inF, gp, upr);
                else if (activation == GateActivation.GeluTanh) Bf16Dot.RunGated<GeluOp>(rows, inF, a, inF, gp, upr);
                else Bf16Dot.RunGated<GeluErfOp>(rows, inF, a, inF, gp, upr);
            }
        }
        finally
        {
            BufferPool.Return(upC);
            if (us != null) BufferPool.Return(us);
        }
        return y;
    }

    private static ReadOnlySpan<float> SpanOrEmpty(Tensor? t) => t == null ? default : t.Span;

    /// <summary><paramref name="layer"/>'s low-rank term over its u at <paramref name="u"/> and its pinned B (none without one).</summary>
    private static unsafe Bf16Dot.LowRank Term(LinearLayer layer, float* u, float* b)
        => layer.B is { } lb ? new Bf16Dot.LowRank(u, b, lb.Dim(1)) : default;

    /// <summary>
    /// A gated MLP, Linear(GatedLinear(x, gate, up, activation), W_d, b_d): x [..., In], W_d [Out, F] → [..., Out], with
    /// the same values. Where <see cref="GatedLinear"/> fuses and W_d is a frozen bf16 matrix without bias, the threads
    /// write bf16 of the hidden activations straight into the down projection's input as the kernel reads it
    /// (<see cref="Bf16Dot.RunGatedDown{TAct}"/>): the hidden activations are never a tensor, and the down projection does
    /// not round them on one thread (12 µs a layer at batch 8; steps 0.6–0.9% faster).
    /// </summary>
    public static Tensor GatedMlp(Tensor x, (Tensor W, Tensor? Bias) gate, (Tensor W, Tensor? Bias) up, (Tensor W, Tensor? Bias) down, GateActivation activation,
        Tensor? residual = null)
        => GatedMlp(x, new LinearLayer(gate.W, gate.Bias), new LinearLayer(up.W, up.Bias), new LinearLayer(down.W, down.Bias), activation, residual);

    /// <summary>
    /// <see cref="GatedMlp(Tensor, (Tensor W, Tensor? Bias), (Tensor W, Tensor? Bias), (Tensor W, Tensor? Bias), GateActivation)"/>
    /// where each projection may carry a low-rank term (LoRA): Linear(GatedLinear(x, gate, up), down) with
    /// <see cref="Linear(Tensor, LinearLayer)"/>. Fused, a factor-form term of the down projection is made from the hidden
    /// activations G (as the unfused down projection makes it from the hidden tensor) between the gated products and the
    /// down projection, on the calling thread. With <paramref name="residual"/> (the output's shape): residual + that, as
    /// <see cref="AddLinear"/> adds it (in the down projection's product where that fuses).
    /// </summary>
    public static unsafe Tensor GatedMlp(Tensor x, LinearLayer gate, LinearLayer up, LinearLayer down, GateActivation activation, Tensor? residual = null)
    {
        int rows = ShapeUtil.Rows(x.Shape), inF = x.Dim(-1), outF = gate.W.Dim(0);
        // A given u for the down projection could only have been made from a hidden tensor, which a fused MLP never makes.
        bool fused = GatedDownFuses(x, gate, up, down);
        if (!fused)
        {
            var hidden = GatedLinear(x, gate, up, activation);
            return residual == null ? Linear(hidden, down) : AddLinear(residual, hidden, down);
        }
        // The residual's conditions on x's rows and the down projection's width (the hidden activations are never a tensor).
        if (residual != null && !ResidualFuses(residual, x, down)) return Add(residual, GatedMlp(x, gate, up, down, activation));

        int outD = down.W.Dim(0);
        var y = Tensor.EmptyOwned(ShapeUtil.WithLast(x.Shape, outD));
        var (gC, upC) = (BufferPool.Rent(rows * outF), BufferPool.Rent(rows * outF));
        Span<int> at = stackalloc int[2];
        var us = MakeTermInputs(x.Span, rows, inF, [gate, up], at);
        float[]? ud = down.HasTerm ? BufferPool.Rent(rows * down.B!.Dim(1)) : null;
        try
        {
            fixed (float* a = x.Span, g = gC, u = upC, c = y.Span, u0 = us, pud = ud)
            fixed (ushort* bg = gate.W.Bf16Span, bu = up.W.Bf16Span, bd = down.W.Bf16Span)
            fixed (float* gl = SpanOrEmpty(gate.B), ul = SpanOrEmpty(up.B), dl = SpanOrEmpty(down.B))
            {
                var gp = new Bf16Dot.Product(bg, inF, outF, g, outF, accumulate: false, Term(gate, u0 + at[0], gl));
                var upr = new Bf16Dot.Product(bu, inF, outF, u, outF, accumulate: false, Term(up, u0 + at[1], ul));
                ushort* g16 = activation switch
                {
                    GateActivation.Silu => Bf16Dot.RunGatedRounding<SiluOp>(rows, inF, a, inF, gp, upr),
                    GateActivation.GeluTanh => Bf16Dot.RunGatedRounding<GeluOp>(rows, inF, a, inF, gp, upr),
                    _ => Bf16Dot.RunGatedRounding<GeluErfOp>(rows, inF, a, inF, gp, upr),
                };
                // G (float, over the gate's product) is the hidden tensor's values: the down term's u from it.
                if (ud != null) MakeTermInput(new ReadOnlySpan<float>(g, rows * outF), rows, outF, down, ud);
                fixed (float* r = SpanOrEmpty(residual))
                    Bf16Dot.RunDown(rows, outF, g16, new Bf16Dot.Product(bd, outF, outD, c, outD, accumulate: false, Term(down, pud, dl), r));
            }
        }
        finally
        {
            BufferPool.Return(upC);
            BufferPool.Return(gC);
            if (us != null) BufferPool.Return(us);
            if (ud != null) BufferPool.Return(ud);
        }
        return y;
    }

    /// <summary>
    /// Several gated MLPs (<see cref="GatedMlp(Tensor, LinearLayer, LinearLayer, LinearLayer, GateActivation, Tensor?)"/>)
    /// of the same widths, each on its own rows: a mixture of experts' chosen experts on their tokens. Where every one
    /// fuses whole (decoding, frozen bf16 weights, no biases or low-rank terms) they run together
    /// (<see cref="Bf16Dot.RunGatedGroups{TAct}"/>: two parallel regions in all, not two each), each output with the values
    /// it has alone; otherwise one by one.
    /// </summary>
    public static unsafe Tensor[] GatedMlps(Tensor[] xs, LinearLayer[] gates, LinearLayer[] ups, LinearLayer[] downs, GateActivation activation)
    {
        int f = gates.Length > 0 ? gates[0].W.Dim(0) : 0, inF = xs.Length > 0 ? xs[0].Dim(-1) : 0, outD = downs.Length > 0 ? downs[0].W.Dim(0) : 0;
        bool together = FuseGatedGroups && xs.Length > 1;
        for (int i = 0; together && i < xs.Length; i++)
            together = !gates[i].HasTerm && !ups[i].HasTerm && !downs[i].HasTerm && GatedDownFuses(xs[i], gates[i], ups[i], downs[i])
                       && gates[i].W.Dim(0) == f && xs[i].Dim(-1) == inF && downs[i].W.Dim(0) == outD;
        if (!together) return [.. xs.Select((x, i) => GatedMlp(x, gates[i], ups[i], downs[i], activation))];

        var ys = xs.Select(x => Tensor.EmptyOwned(ShapeUtil.WithLast(x.Shape, outD))).ToArray();
        int rows = xs.Sum(x => ShapeUtil.Rows(x.Shape));
        var (gC, upC) = (BufferPool.Rent(rows * f), BufferPool.Rent(rows * f));
        try
        {
            fixed (float* g = gC, u = upC)
                PinGroups(xs, gates, ups, downs, ys, g, u, activation, new Bf16Dot.GatedGroup[xs.Length], 0, 0);
        }
        finally
        {
            BufferPool.Return(upC);
            BufferPool.Return(gC);
        }
        return ys;
    }

    // Pins group i's input, weights and output, then the next group's; with all pinned, runs them. g, u: scratch for the
    // gate's and up's products, each group's rows after the previous group's.
    private static unsafe void PinGroups(Tensor[] xs, LinearLayer[] gates, LinearLayer[] ups, LinearLayer[] downs, Tensor[] ys, float* g, float* u,
        GateActivation activation, Bf16Dot.GatedGroup[] groups, int i, int row)
    {
        int f = gates[0].W.Dim(0), inF = xs[0].Dim(-1), outD = downs[0].W.Dim(0);
        if (i == xs.Length)
        {
            switch (activation)
            {
                case GateActivation.Silu: Bf16Dot.RunGatedGroups<SiluOp>(inF, groups); break;
                case GateActivation.GeluTanh: Bf16Dot.RunGatedGroups<GeluOp>(inF, groups); break;
                default: Bf16Dot.RunGatedGroups<GeluErfOp>(inF, groups); break;
            }
            return;
        }
        int rows = ShapeUtil.Rows(xs[i].Shape);
        fixed (float* a = xs[i].Span, c = ys[i].Span)
        fixed (ushort* bg = gates[i].W.Bf16Span, bu = ups[i].W.Bf16Span, bd = downs[i].W.Bf16Span)
        {
            groups[i] = new Bf16Dot.GatedGroup(rows, a, inF, new Bf16Dot.Product(bg, inF, f, g + (long)row * f, f, accumulate: false),
                new Bf16Dot.Product(bu, inF, f, u + (long)row * f, f, accumulate: false), new Bf16Dot.Product(bd, f, outD, c, outD, accumulate: false));
            PinGroups(xs, gates, ups, downs, ys, g, u, activation, groups, i + 1, row + rows);
        }
    }

    /// <summary>The gate's activation as an op with its gradient.</summary>
    public static Tensor Activate(Tensor x, GateActivation activation) => activation switch
    {
        GateActivation.Silu => Silu(x),
        GateActivation.GeluTanh => Gelu(x),
        _ => GeluErf(x),
    };

    /// <summary>Whether <see cref="GatedMlp(Tensor, LinearLayer, LinearLayer, LinearLayer, GateActivation, Tensor?)"/> fuses
    /// whole: the gated half fuses, and the down projection takes its input in bf16 (no bias, no given u).</summary>
    private static bool GatedDownFuses(Tensor x, LinearLayer gate, LinearLayer up, LinearLayer down) =>
        GatedFuses(x, gate, up) && FuseGatedDown && down.Bias == null && down.U == null && Streams(down, ShapeUtil.Rows(x.Shape), gate.W.Dim(0));

    /// <summary>Whether <see cref="GatedLinear"/>'s conditions to fuse hold (see there).</summary>
    private static bool GatedFuses(Tensor x, LinearLayer gate, LinearLayer up)
    {
        int rows = ShapeUtil.Rows(x.Shape), inF = x.Dim(-1);
        return FuseGatedLinear && gate.Bias == null && up.Bias == null && Decodes(x)
               && up.W.Dim(0) == gate.W.Dim(0) && Streams(gate, rows, inF) && Streams(up, rows, inF);
    }

    /// <summary>Whether <see cref="GatedMlp"/> may hand the down projection its input in bf16 (on by default; benchmarks
    /// switch it to compare).</summary>
    internal static bool FuseGatedDown { get; set; } = true;

    /// <summary>Whether decoding products add their LoRA terms to the columns they make (<see cref="Bf16Dot.LowRank"/>; on by
    /// default; tests and benchmarks switch it to compare). Off, a layer with a term is <see cref="LinearLowRank"/> on its
    /// u, whose term is a product of its own, and <see cref="LinearShared(Tensor, LinearLayer[])"/>,
    /// <see cref="GatedLinear(Tensor, LinearLayer, LinearLayer, GateActivation)"/> and <see cref="GatedMlp(Tensor, LinearLayer, LinearLayer, LinearLayer, GateActivation)"/>
    /// run such layers one by one.</summary>
    internal static bool FuseLowRank { get; set; } = true;

    /// <summary>Whether <see cref="GatedMlps"/> may run its MLPs together (on by default; benchmarks switch it to compare).</summary>
    internal static bool FuseGatedGroups { get; set; } = true;

    /// <summary>Whether <see cref="GatedLinear"/> may fuse (on by default; benchmarks switch it to compare).</summary>
    internal static bool FuseGatedLinear { get; set; } = true;

    /// <summary>The activation of a gated MLP's gate (<see cref="GatedLinear"/>).</summary>
    public enum GateActivation
    {
        /// <summary>SiLU, x·σ(x): SwiGLU (Llama, Qwen, Mistral).</summary>
        Silu,
        /// <summary>The tanh approximation of GELU: GeGLU (Gemma).</summary>
        GeluTanh,
        /// <summary>The exact GELU, x·Φ(x).</summary>
        GeluErf,
    }

    // Pins layer i's weight and output, then the next layer's; with all pinned, runs the products.
    // u0 + at[i]: layer i's u (MakeTermInputs).
    private static unsafe void RunShared(float* a, int rows, int inF, LinearLayer[] layers, Tensor[] ys, float* u0, ReadOnlySpan<int> at,
        Span<Bf16Dot.Product> products, int i)
    {
        if (i == layers.Length)
        {
            Bf16Dot.RunShared(rows, inF, a, inF, products);
            return;
        }
        var layer = layers[i];
        int outF = layer.W.Dim(0);
        fixed (ushort* b = layer.W.Bf16Span)
        fixed (float* c = ys[i].Span, l = SpanOrEmpty(layer.B))
        {
            products[i] = new Bf16Dot.Product(b, inF, outF, c, outF, accumulate: layer.Bias != null, Term(layer, u0 + at[i], l));
            RunShared(a, rows, inF, layers, ys, u0, at, products, i + 1);
        }
    }

    /// <summary>
    /// y = x·Wᵀ + b + u·Bᵀ: a linear layer plus a low-rank term written into the same output (LoRA, with u =
    /// scale·(dropout(x)·Aᵀ)), so the sum is never a second [..., Out] tensor and pass. x [..., In], W [Out, In] (float32
    /// or frozen bf16), b [Out] or null, u [..., R] (the same rows as x), B [Out, R] float32 → [..., Out].
    /// </summary>
    public static Tensor LinearLowRank(Tensor x, Tensor w, Tensor? bias, Tensor u, Tensor b)
    {
        if (b.Rank != 2 || b.Dim(0) != w.Dim(0) || u.Dim(-1) != b.Dim(1) || ShapeUtil.Rows(u.Shape) != ShapeUtil.Rows(x.Shape))
            throw new ArgumentException($"LinearLowRank: low-rank factors {ShapeUtil.Format(u.Shape)} · {ShapeUtil.Format(b.Shape)}ᵀ do not fit " +
                $"input {ShapeUtil.Format(x.Shape)} and weight {ShapeUtil.Format(w.Shape)} (u [..., R] with x's rows, B [Out, R]).");
        return LinearCore(x, w, bias, u, b);
    }

    /// <summary>
    /// y [rows, count] (+)= x [rows, in] · W[first, first + count)ᵀ for a weight W [out, in], float32 or bf16, recording
    /// nothing: the product <see cref="Linear(Tensor, Tensor, Tensor?)"/> runs, on a range of W's rows (the LM head a tile
    /// at a time). Each element's sum does not depend on which rows of W are multiplied with it, so a range gives the
    /// columns of the whole product. <paramref name="inputs"/>: as <see cref="Gemm.MultiplyBf16"/> takes it.
    /// </summary>
    internal static void ProductWithRows(ReadOnlySpan<float> x, int rows, Tensor w, int first, int count, Span<float> y, bool accumulate, Bf16Inputs inputs)
    {
        int inF = w.Dim(1);
        if (w.IsBf16) Gemm.MultiplyBf16(false, true, rows, count, inF, x, inF, w.Bf16Span.Slice(first * inF, count * inF), inF, y, count, accumulate, inputs);
        else Gemm.Multiply(false, true, rows, count, inF, x, inF, w.Span.Slice(first * inF, count * inF), inF, y, count, accumulate);
    }

    private static Tensor LinearCore(Tensor x, Tensor w, Tensor? bias, Tensor? u, Tensor? ub)
    {
        if (w.Rank != 2 || x.Dim(-1) != w.Dim(1))
            throw new ArgumentException($"Linear: input {ShapeUtil.Format(x.Shape)} does not fit weight {ShapeUtil.Format(w.Shape)} ([out, in]).");
        if (bias != null && (bias.Rank != 1 || bias.Dim(0) != w.Dim(0)))
            throw new ArgumentException($"Linear: bias {ShapeUtil.Format(bias.Shape)} does not fit weight {ShapeUtil.Format(w.Shape)}.");
        int rows = ShapeUtil.Rows(x.Shape), inF = w.Dim(1), outF = w.Dim(0);
        var y = Tensor.EmptyOwned(ShapeUtil.WithLast(x.Shape, outF));
        var ys = y.Span;
        if (bias != null) PointwiseKernels.FillRows(rows, outF, bias.Span, ys);
        Tensor[] inputs = (bias, u) switch
        {
            (null, null) => [x, w],
            (_, null) => [x, w, bias],
            (null, _) => [x, w, u, ub!],
            _ => [x, w, bias, u, ub!],
        };
        bool record = Autograd.AnyNeeds(inputs);
        if (w.IsBf16 && w.RequiresGrad) throw new InvalidOperationException($"Linear: weight {w.Name ?? ShapeUtil.Format(w.Shape)} is stored as bf16 and cannot take gradients.");
        // Generation may round x to bf16 for vdpbf16ps, as a bf16 model in PyTorch does; training and scoring keep x exact
        // unless the run asked for bf16 products (Bf16Products), and then the backward does too.
        var xInputs = w.IsBf16 ? Bf16InputsFor(record) : Bf16Inputs.Exact;
        var backwardInputs = xInputs == Bf16Inputs.Always ? Bf16Inputs.Always : Bf16Inputs.Exact;
        ProductWithRows(x.Span, rows, w, 0, outF, ys, accumulate: bias != null, xInputs);
        int r = ub?.Dim(1) ?? 0;
        if (u != null) Gemm.Multiply(false, true, rows, outF, r, u.Span, r, ub!.Span, r, ys, outF, accumulate: true);

        if (record)
            Autograd.Record(y, inputs, g =>
            {
                var gs = g.Span;
                if (x.RequiresGrad)
                {
                    var dx = x.GradForWrite(out bool accumulate);
                    if (w.IsBf16) Gemm.MultiplyBf16(false, false, rows, inF, outF, gs, outF, w.Bf16Span, inF, dx, inF, accumulate, backwardInputs);
                    else Gemm.Multiply(false, false, rows, inF, outF, gs, outF, w.Span, inF, dx, inF, accumulate);
                }
                if (w.RequiresGrad) Gemm.Multiply(true, false, outF, inF, rows, gs, outF, x.Span, inF, w.GradForAccumulate(), inF, true);
                if (bias != null && bias.RequiresGrad) PointwiseKernels.SumRowsInto(rows, outF, gs, bias.GradForAccumulate());
                if (u != null && u.RequiresGrad) Gemm.Multiply(false, false, rows, r, outF, gs, outF, ub!.Span, r, u.GradForAccumulate(), r, true);
                if (ub != null && ub.RequiresGrad) Gemm.Multiply(true, false, outF, r, rows, gs, outF, u!.Span, r, ub.GradForAccumulate(), r, true);
            });
        return y;
    }
}
