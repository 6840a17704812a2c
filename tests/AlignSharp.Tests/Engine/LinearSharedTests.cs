using AlignSharp.Engine;
using AlignSharp.Engine.Kernels;
using Xunit.Abstractions;

namespace AlignSharp.Tests.Engine;

/// <summary>
/// <see cref="Ops.LinearShared"/> (several linear layers on one input: q, k, v; gate, up). Fused (generation on bf16
/// weights where the vdpbf16ps kernel runs) every output is checked against a float64 product of x rounded to bf16 and
/// the stored weights, and must equal the separate <see cref="Ops.Linear"/> calls bit for bit, since decoding must not
/// depend on which of the two ran. Recorded, it is those calls: values and gradients are compared with them, and its
/// finite-difference check is in GradCheckTests.
/// </summary>
public class LinearSharedTests(ITestOutputHelper output)
{
    private static Tensor Random(Random rng, params int[] shape)
    {
        var t = Tensor.Parameter(shape, 0f);
        var s = t.Span;
        for (int i = 0; i < s.Length; i++) s[i] = (float)(rng.NextDouble() * 2 - 1);
        return t;
    }

    [Theory]
    [InlineData(1, true)]
    [InlineData(3, true)]
    [InlineData(8, true)]
    [InlineData(9, true)]  // past the decode kernel: separate calls
    [InlineData(8, false)] // scoring, not generation: separate exact calls
    public void InferenceOnBf16WeightsMatchesTheReferenceAndTheSeparateLayers(int rows, bool generation)
    {
        bool native = generation && Gemm.Bf16DotRuns(false, true, rows);
        output.WriteLine(native ? "fused: the vdpbf16ps kernel ran (x rounded to bf16 in the reference)."
            : $"separate Linear calls ({(!generation ? "outside RoundActivationsToBf16" : rows > 8 ? "more than 8 rows" : Bf16Dot.UnavailableReason ?? $"GEMM path {Gemm.ActivePath}")}): exact x in the reference.");
        var rng = new Random(rows);
        const int inF = 45;
        var x = Random(rng, 1, rows, inF);
        // Output widths off the kernel's 24-column units and tiles, one above the parallel threshold; biases on two of three.
        int[] widths = [5, 130, 4000];
        var layers = widths.Select((n, i) => (W: Random(rng, n, inF).ToBf16(), Bias: i == 1 ? null : Random(rng, n))).ToArray();

        Tensor[] fused, separate;
        using (Autograd.NoGrad())
        {
            using var rounding = generation ? Ops.RoundActivationsToBf16() : default;
            fused = Ops.LinearShared(x, layers);
            separate = [.. layers.Select(l => Ops.Linear(x, l.W, l.Bias))];
        }
        var xs = x.ToArray();
        for (int i = 0; i < layers.Length; i++)
        {
            Assert.Equal([1, rows, widths[i]], fused[i].Shape.ToArray());
            Assert.Equal(separate[i].ToArray(), fused[i].ToArray()); // bit for bit
            var w = layers[i].W.ToArray();
            var bias = layers[i].Bias?.ToArray();
            var y = fused[i].ToArray();
            for (int r = 0; r < rows; r++)
                for (int j = 0; j < widths[i]; j++)
                {
                    double sum = bias?[j] ?? 0, mag = Math.Abs(sum);
                    for (int p = 0; p < inF; p++)
                    {
                        double a = native ? GemmCase.RoundToBf16(xs[r * inF + p]) : xs[r * inF + p];
                        sum += a * w[j * inF + p];
                        mag += Math.Abs(a * w[j * inF + p]);
                    }
                    Assert.True(Math.Abs(y[r * widths[i] + j] - sum) <= 1e-5 * mag + 1e-6, $"layer {i} [{r},{j}]: {y[r * widths[i] + j]} vs {sum}");
                }
        }
    }

    [Fact]
    public void RecordedItIsTheSeparateLayersInValuesAndGradients()
    {
        var rng = new Random(7);
        var x = Random(rng, 2, 3, 11);
        var layers = new[] { (W: Random(rng, 6, 11), Bias: (Tensor?)Random(rng, 6)), (W: Random(rng, 4, 11), Bias: null) };
        var coef = new[] { Random(rng, 2, 3, 6), Random(rng, 2, 3, 4) };
        float[][] Grads() => [x.Grad!.ToArray(), layers[0].W.Grad!.ToArray(), layers[0].Bias!.Grad!.ToArray(), layers[1].W.Grad!.ToArray()];
        void Zero() { x.ZeroGrad(); foreach (var (w, b) in layers) { w.ZeroGrad(); b?.ZeroGrad(); } }

        var fused = Ops.LinearShared(x, layers);
        Ops.Add(Ops.Sum(Ops.Mul(fused[0], coef[0])), Ops.Sum(Ops.Mul(fused[1], coef[1]))).Backward();
        var fusedGrads = Grads();
        Zero();
        var separate = layers.Select(l => Ops.Linear(x, l.W, l.Bias)).ToArray();
        Ops.Add(Ops.Sum(Ops.Mul(separate[0], coef[0])), Ops.Sum(Ops.Mul(separate[1], coef[1]))).Backward();
        for (int i = 0; i < 2; i++) Assert.Equal(separate[i].ToArray(), fused[i].ToArray());
        var separateGrads = Grads();
        for (int i = 0; i < fusedGrads.Length; i++) Assert.Equal(separateGrads[i], fusedGrads[i]);
    }
}
