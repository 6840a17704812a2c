namespace AlignSharp.Engine.Optim;

/// <summary>
/// An optimizer over an explicit, ordered list of parameters (leaf tensors). The training loop is:
/// forward, <c>loss.Backward()</c>, optionally <see cref="GradClip.ClipGradNorm"/>, set <see cref="Lr"/> from a
/// schedule (<c>opt.Lr = schedule.LrAt(opt.StepCount)</c>), <see cref="Step"/>, <see cref="ZeroGrad"/>.
/// </summary>
public interface IOptimizer
{
    /// <summary>Base learning rate; a group's rate is this times its <see cref="ParamGroup.LrScale"/>. Must be finite and ≥ 0.</summary>
    float Lr { get; set; }

    /// <summary>The optimised tensors in state-file order (groups concatenated in the order given), e.g. for <see cref="GradClip.ClipGradNorm"/>.</summary>
    IReadOnlyList<Tensor> Parameters { get; }

    /// <summary>Number of completed <see cref="Step"/> calls (0 before the first), restored by <see cref="LoadState"/>.</summary>
    int StepCount { get; }

    /// <summary>Updates every parameter that has a gradient; parameters whose <see cref="Tensor.Grad"/> is null are skipped untouched.</summary>
    void Step();

    /// <summary>
    /// <see cref="Step"/> only if it would leave every parameter and state value finite; otherwise changes nothing
    /// (parameters, state, step counts) and returns false. A trainer uses it so that a non-finite update is never
    /// applied, hence never saved.
    /// </summary>
    bool TryStep();

    /// <summary>
    /// Sets every existing gradient to zero in place (buffers are kept, so steady-state steps allocate
    /// nothing). Unlike PyTorch's default <c>set_to_none=True</c>, a parameter that took part in an earlier
    /// backward pass but not the next one is then updated with a zero gradient rather than skipped; call
    /// <see cref="Tensor.ClearGrad"/> on it to get PyTorch's skip.
    /// </summary>
    void ZeroGrad();

    /// <summary>Writes the step count, learning rate and per-parameter buffers (binary, versioned).</summary>
    void SaveState(Stream stream);

    /// <summary>
    /// Restores what <see cref="SaveState"/> wrote into an optimizer built over parameters of the same shapes in
    /// the same order. Hyperparameters other than the learning rate come from this optimizer's options, not the
    /// file. Throws <see cref="InvalidDataException"/> (and changes nothing) on any mismatch.
    /// </summary>
    void LoadState(Stream stream);
}
