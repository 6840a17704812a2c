using AlignSharp.Engine;

namespace AlignSharp.Tests.Engine;

/// <summary>
/// <see cref="Ops.LinearLowRank"/> (a linear layer with LoRA's low-rank term in the same output) against the unfused
/// expression it replaces, x·Wᵀ + b + u·Bᵀ as two Linear ops and an Add, in values and in every gradient, with float32
/// and frozen bf16 weights. Its finite-difference check is in GradCheckTests.
/// </summary>
public class LinearLowRankTests
{
    [Theory]
    [InlineData(false, true)]
    [InlineData(true, true)]
    [InlineData(true, false)]
    public void EqualsTheUnfusedSumInValuesAndGradients(bool bf16, bool withBias)
    {
        var rng = new Random(4);
        const int rows = 37, inF = 41, outF = 29, r = 5;
        Tensor Param(string name, params int[] shape)
        {
            var t = Tensor.Parameter(shape, 0f, name);
            var s = t.Span;
            for (int i = 0; i < s.Length; i++) s[i] = (float)(rng.NextDouble() * 2 - 1);
            return t;
        }
        var x = Param("x", 1, rows, inF);
        var w32 = Param("w", outF, inF);
        var w = bf16 ? w32.ToBf16() : w32;
        var wRef = bf16 ? Tensor.FromArray(w.ToArray(), [outF, inF]) : w32; // the same (rounded) values in float32
        var bias = withBias ? Param("bias", outF) : null;
        var u = Param("u", 1, rows, r);
        var b = Param("b", outF, r);

        var fused = Ops.LinearLowRank(x, w, bias, u, b);
        var coef = Tensor.FromArray(Enumerable.Range(0, rows * outF).Select(i => (float)Math.Sin(i)).ToArray(), [1, rows, outF]);
        Ops.Sum(Ops.Mul(fused, coef)).Backward();
        var grads = new[] { x, u, b, bias }.Select(t => t?.Grad?.ToArray()).ToArray();
        var wGrad = bf16 ? null : w32.Grad!.ToArray();
        foreach (var t in new[] { x, w32, u, b, bias }) t?.ZeroGrad();

        var unfused = Ops.Add(Ops.Linear(x, bf16 ? w : wRef, bias), Ops.Linear(u, b));
        Ops.Sum(Ops.Mul(unfused, coef)).Backward();
        var fv = fused.ToArray();
        var uv = unfused.ToArray();
        for (int i = 0; i < fv.Length; i++) Assert.True(Math.Abs(fv[i] - uv[i]) <= 1e-5f * (1 + Math.Abs(uv[i])), $"y[{i}]: {fv[i]} vs {uv[i]}");
        var expected = new[] { x, u, b, bias }.Select(t => t?.Grad?.ToArray()).ToArray();
        for (int k = 0; k < grads.Length; k++)
        {
            if (expected[k] == null) { Assert.Null(grads[k]); continue; }
            for (int i = 0; i < expected[k]!.Length; i++)
                Assert.True(Math.Abs(grads[k]![i] - expected[k]![i]) <= 1e-4f * (1 + Math.Abs(expected[k]![i])), $"grad {k}[{i}]: {grads[k]![i]} vs {expected[k]![i]}");
        }
        if (wGrad != null)
        {
            var we = w32.Grad!.ToArray();
            for (int i = 0; i < we.Length; i++) Assert.True(Math.Abs(wGrad[i] - we[i]) <= 1e-4f * (1 + Math.Abs(we[i])), $"dW[{i}]");
        }
    }

    [Fact]
    public void RejectsFactorsThatDoNotFit()
    {
        var x = Tensor.Zeros(4, 6);
        var w = Tensor.Zeros(3, 6);
        Assert.Throws<ArgumentException>(() => Ops.LinearLowRank(x, w, null, Tensor.Zeros(4, 2), Tensor.Zeros(5, 2)));  // B's rows ≠ Out
        Assert.Throws<ArgumentException>(() => Ops.LinearLowRank(x, w, null, Tensor.Zeros(4, 2), Tensor.Zeros(3, 3)));  // ranks differ
        Assert.Throws<ArgumentException>(() => Ops.LinearLowRank(x, w, null, Tensor.Zeros(5, 2), Tensor.Zeros(3, 2)));  // rows differ
    }
}
