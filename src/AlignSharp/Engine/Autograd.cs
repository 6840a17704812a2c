namespace AlignSharp.Engine;

/// <summary>How a non-leaf tensor was made: its inputs and the function that sends its gradient back to them.</summary>
internal sealed class Node(Tensor[] inputs, Action<Tensor> backward)
{
    public readonly Tensor[] Inputs = inputs;
    public readonly Action<Tensor> Backward = backward;

    /// <summary>Leaves this node's backward adds gradient to without their being inputs: the parameters a checkpointed
    /// segment reads (its recomputation differentiates them). Counted for <see cref="Autograd.OnGradientReady"/>.</summary>
    public Tensor[]? HiddenLeaves;
}

/// <summary>
/// Reverse-mode differentiation. Ops record a <see cref="Node"/> on their output when gradients are
/// enabled and an input requires grad; <see cref="Backward"/> walks the recorded graph once in reverse
/// topological order, accumulating into leaf gradients, and then drops the graph and the intermediate
/// gradient buffers.
/// </summary>
public static partial class Autograd
{
    [ThreadStatic] private static int _disabledDepth;
    [ThreadStatic] private static Action<Tensor>? _gradientReady;
    /// <summary>While a checkpointed segment runs its forward without recording: the parameters it reads (see
    /// <see cref="Needs(Tensor)"/>), so that its backward knows which leaves it will reach.</summary>
    [ThreadStatic] private static HashSet<Tensor>? _segmentLeaves;
    private static int _generation;

    public static bool IsEnabled => _disabledDepth == 0;

    /// <summary>Whether a checkpointed segment's unrecorded forward is running on this thread: its values must equal
    /// those of the recomputation that backward differentiates (so no inference-only numerics).</summary>
    internal static bool InCheckpointedForward => _disabledDepth != 0 && _segmentLeaves != null;

    /// <summary>Inside the returned scope no graph is recorded (inference, optimizer updates).</summary>
    public static NoGradScope NoGrad()
    {
        _disabledDepth++;
        return new NoGradScope();
    }

    public readonly struct NoGradScope : IDisposable
    {
        public void Dispose() => _disabledDepth--;
    }

    // Every op asks Needs/AnyNeeds about exactly the inputs it would record; without recording, a checkpointed segment's
    // forward notes the parameters among them (the leaves its recomputation will differentiate).
    internal static bool Needs(Tensor a)
    {
        if (_disabledDepth == 0) return a.RequiresGrad;
        if (_segmentLeaves != null) NoteLeaf(a);
        return false;
    }

    internal static bool Needs(Tensor a, Tensor b)
    {
        if (_disabledDepth == 0) return a.RequiresGrad || b.RequiresGrad;
        if (_segmentLeaves != null) { NoteLeaf(a); NoteLeaf(b); }
        return false;
    }

    internal static bool AnyNeeds(ReadOnlySpan<Tensor> ts)
    {
        if (_disabledDepth != 0)
        {
            if (_segmentLeaves != null) foreach (var t in ts) NoteLeaf(t);
            return false;
        }
        foreach (var t in ts) if (t.RequiresGrad) return true;
        return false;
    }

    private static void NoteLeaf(Tensor t)
    {
        if (t.RequiresGrad && t.Node == null) _segmentLeaves!.Add(t);
    }

    /// <summary>
    /// Within the returned scope, every <see cref="Backward(Tensor)"/> on this thread calls <paramref name="ready"/> once
    /// for each leaf that requires grad and that the pass reaches, right after the last contribution to its gradient in
    /// that pass: the gradient is then final (until the next backward). Tied weights fire once, after their last use;
    /// a checkpointed segment's parameters fire after its recomputation. Data-parallel training starts the all-reduce
    /// of a bucket of gradients while the rest of the backward runs.
    /// </summary>
    public static GradientReadyScope OnGradientReady(Action<Tensor> ready)
    {
        ArgumentNullException.ThrowIfNull(ready);
        var scope = new GradientReadyScope(_gradientReady);
        _gradientReady = ready;
        return scope;
    }

    public readonly struct GradientReadyScope : IDisposable
    {
        private readonly Action<Tensor>? _previous;
        internal GradientReadyScope(Action<Tensor>? previous) => _previous = previous;
        public void Dispose() => _gradientReady = _previous;
    }

    /// <summary>Marks <paramref name="output"/> as computed from <paramref name="inputs"/>.</summary>
    internal static Tensor Record(Tensor output, Tensor[] inputs, Action<Tensor> backward)
    {
        output.RequiresGrad = true;
        output.Node = new Node(inputs, backward);
        return output;
    }

    public static void Backward(Tensor root)
    {
        if (root.Length != 1)
            throw new InvalidOperationException($"Backward() starts from a scalar; this tensor has shape {ShapeUtil.Format(root.Shape)}.");
        if (!root.RequiresGrad)
            throw new InvalidOperationException("Backward() on a tensor that does not require grad: no parameter took part in computing it (or it was computed under NoGrad).");

        var order = TopologicalOrder([root]);
        var ready = _gradientReady;
        if (root.IsLeaf)
        {
            root.GradForAccumulate()[0] += 1f;
            ready?.Invoke(root);
            return;
        }
        root.GradForAccumulate()[0] = 1f;
        Run(order, ready != null ? new PendingLeaves(order, ready) : null);
    }

    /// <summary>
    /// Backward from several tensors at once, each seeded with its given gradient (same shape): what a recomputed
    /// segment (<see cref="Checkpoint"/>) does with the gradients that reached its outputs. Roots that do not require
    /// grad are skipped.
    /// </summary>
    internal static void Backward(IReadOnlyList<(Tensor Root, Tensor Seed)> roots)
    {
        var live = new List<Tensor>();
        foreach (var (root, seed) in roots)
        {
            if (!root.RequiresGrad) continue;
            if (seed.Length != root.Length)
                throw new ArgumentException($"Backward: seed of shape {ShapeUtil.Format(seed.Shape)} for a tensor of shape {ShapeUtil.Format(root.Shape)}.");
            Kernels.Simd.AddInto(seed.Span, root.GradForAccumulate());
            live.Add(root);
        }
        Run(TopologicalOrder(live), null);   // a recomputation: its parameters are the anchor's hidden leaves
    }

    private static void Run(List<Tensor> order, PendingLeaves? pending)
    {
        // order lists every tensor after its inputs; walk it backwards so a tensor's gradient is complete
        // before it is sent on.
        for (int i = order.Count - 1; i >= 0; i--)
        {
            var t = order[i];
            var node = t.Node!;
            var g = t.GradTensor;
            if (g != null)
            {
                g.Storage.HandedOn = false;   // t's alone now, whoever handed it to t
                node.Backward(g);
            }
            t.Node = null;
            pending?.Done(node);
            if (g != null)
            {
                t.GradTensor = null;
                if (g.Storage.HandedOn) g.Storage.HandedOn = false;   // an input's gradient now (Tensor.AddGradOf)
                else if (g.Storage.Pooled) g.Storage.Release();
            }
        }
    }

    /// <summary>
    /// For <see cref="OnGradientReady"/>: how many nodes of this pass have yet to send gradient to each leaf. A leaf is
    /// ready when its count reaches zero; a node counts whether or not a gradient reached it.
    /// </summary>
    private sealed class PendingLeaves
    {
        private readonly Dictionary<Tensor, int> _uses = new(ReferenceEqualityComparer.Instance);
        private readonly Action<Tensor> _ready;

        public PendingLeaves(List<Tensor> order, Action<Tensor> ready)
        {
            _ready = ready;
            foreach (var t in order)
            {
                var node = t.Node!;
                foreach (var x in node.Inputs)
                    if (x.RequiresGrad && x.Node == null) _uses[x] = _uses.GetValueOrDefault(x) + 1;
                if (node.HiddenLeaves != null)
                    foreach (var x in node.HiddenLeaves) _uses[x] = _uses.GetValueOrDefault(x) + 1;
            }
        }

        public void Done(Node node)
        {
            foreach (var x in node.Inputs) Release(x);
            if (node.HiddenLeaves != null) foreach (var x in node.HiddenLeaves) Release(x);
        }

        private void Release(Tensor x)
        {
            if (!_uses.TryGetValue(x, out int left)) return;
            if (left > 1) { _uses[x] = left - 1; return; }
            _uses.Remove(x);
            _ready(x);
        }
    }

    /// <summary>Non-leaf tensors reachable from the roots through tensors that require grad, inputs first.</summary>
    private static List<Tensor> TopologicalOrder(IReadOnlyList<Tensor> roots)
    {
        int mark = Interlocked.Increment(ref _generation);
        var order = new List<Tensor>();
        var stack = new Stack<(Tensor T, int Next)>();
        foreach (var root in roots)
        {
            if (root.Node == null || root.VisitMark == mark) continue;
            root.VisitMark = mark;
            stack.Push((root, 0));
            while (stack.Count > 0)
            {
                var (t, next) = stack.Pop();
                var inputs = t.Node!.Inputs;
                if (next < inputs.Length)
                {
                    stack.Push((t, next + 1));
                    var c = inputs[next];
                    if (c.RequiresGrad && c.Node != null && c.VisitMark != mark)
                    {
                        c.VisitMark = mark;
                        stack.Push((c, 0));
                    }
                }
                else
                {
                    order.Add(t);
                }
            }
        }
        return order;
    }
}
