namespace AlignSharp.Engine;

public static partial class Autograd
{
    /// <summary>
    /// Activation checkpointing: runs <paramref name="segment"/> on <paramref name="inputs"/> without recording it and
    /// without keeping its intermediates (they go back to the pool as soon as it returns); only the inputs and outputs
    /// stay alive. The backward pass runs the segment again on the same inputs, with gradients, and differentiates that
    /// copy seeded with the gradients that reached the outputs: the gradients of the inputs and of every parameter the
    /// segment uses are those of the ordinary path, for the price of one more forward of the segment.
    /// The segment must compute the same values when called again (replay any randomness from a seed it captures) and
    /// its outputs must not be views of its inputs. <paramref name="parametersNeedGrad"/>: whether a parameter the
    /// segment reads requires grad (the inputs are checked here).
    /// </summary>
    public static Tensor[] Checkpoint(Tensor[] inputs, Func<Tensor[], Tensor[]> segment, bool parametersNeedGrad)
    {
        bool record = IsEnabled && (parametersNeedGrad || AnyNeeds(inputs));
        Tensor[] outputs;
        // Recording, the forward notes the parameters the segment reads: the leaves its recomputation will reach.
        var outer = _segmentLeaves;
        var leaves = record ? new HashSet<Tensor>(ReferenceEqualityComparer.Instance) : outer;
        _segmentLeaves = leaves;
        using (NoGrad())
        {
            var scope = TensorScope.Begin();
            try
            {
                outputs = segment(inputs.Select(x => x.Detach()).ToArray());
                foreach (var o in outputs) TensorScope.Keep(o);
            }
            finally
            {
                scope.Dispose();
                _segmentLeaves = outer;
                if (outer != null && leaves != null && leaves != outer) outer.UnionWith(leaves);
            }
        }
        if (!record) return outputs;

        // The outputs hand their gradients to one anchor node, which recomputes the segment once for all of them.
        var seeds = new Tensor?[outputs.Length];
        var anchor = Record(Tensor.EmptyOwned([1]), inputs, _ => Recompute(inputs, segment, seeds));
        anchor.Node!.HiddenLeaves = [.. leaves!];
        for (int i = 0; i < outputs.Length; i++)
        {
            int at = i;
            Record(outputs[i], [anchor], g =>
            {
                // g goes back to the pool right after this node: keep a copy for the anchor.
                seeds[at] = g.Clone();
                anchor.GradForAccumulate();
            });
        }
        return outputs;
    }

    private static void Recompute(Tensor[] inputs, Func<Tensor[], Tensor[]> segment, Tensor?[] seeds)
    {
        int saved = _disabledDepth;
        _disabledDepth = 0;   // a backward run under NoGrad still records the recomputed segment
        try
        {
            // The inputs' gradient buffers belong to the outer pass: made before the recomputation's scope begins.
            foreach (var x in inputs) if (x.RequiresGrad) x.GradForAccumulate();
            using var scope = TensorScope.Begin();
            var leaves = new Tensor[inputs.Length];
            for (int i = 0; i < inputs.Length; i++)
            {
                leaves[i] = inputs[i].Detach();
                if (!inputs[i].RequiresGrad) continue;
                leaves[i].RequiresGrad = true;
                leaves[i].SetGradStorage(Tensor.ZerosOwned((int[])inputs[i].ShapeArray.Clone()));   // pooled, unlike a parameter's
            }
            var outputs = segment(leaves);
            var roots = new List<(Tensor, Tensor)>();
            for (int i = 0; i < outputs.Length; i++)
                if (seeds[i] is { } seed) roots.Add((outputs[i], seed));
            Backward(roots);
            for (int i = 0; i < inputs.Length; i++)
                if (inputs[i].RequiresGrad) Kernels.Simd.AddInto(leaves[i].GradTensor!.Span, inputs[i].GradForAccumulate());
        }
        finally
        {
            _disabledDepth = saved;
            Array.Clear(seeds);
        }
    }
}
