namespace AlignSharp.Engine;

/// <summary>How a non-leaf tensor was made: its inputs and the function that sends its gradient back to them.</summary>
internal sealed class Node(Tensor[] inputs, Action<Tensor> backward)
{
    public readonly Tensor[] Inputs = inputs;
    public readonly Action<Tensor> Backward = backward;
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
    private static int _generation;

    public static bool IsEnabled => _disabledDepth == 0;

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

    internal static bool Needs(Tensor a) => _disabledDepth == 0 && a.RequiresGrad;
    internal static bool Needs(Tensor a, Tensor b) => _disabledDepth == 0 && (a.RequiresGrad || b.RequiresGrad);

    internal static bool AnyNeeds(ReadOnlySpan<Tensor> ts)
    {
        if (_disabledDepth != 0) return false;
        foreach (var t in ts) if (t.RequiresGrad) return true;
        return false;
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
        if (root.IsLeaf)
        {
            root.GradForAccumulate()[0] += 1f;
            return;
        }
        root.GradForAccumulate()[0] = 1f;
        Run(order);
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
        Run(TopologicalOrder(live));
    }

    private static void Run(List<Tensor> order)
    {
        // order lists every tensor after its inputs; walk it backwards so a tensor's gradient is complete
        // before it is sent on.
        for (int i = order.Count - 1; i >= 0; i--)
        {
            var t = order[i];
            var node = t.Node!;
            var g = t.GradTensor;
            if (g != null) node.Backward(g);
            t.Node = null;
            if (g != null)
            {
                t.GradTensor = null;
                if (g.Storage.Pooled) g.Storage.Release();
            }
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
