using AlignSharp.Engine;
using AlignSharp.Engine.Kernels;
using Xunit.Abstractions;

namespace AlignSharp.Tests.Engine;

/// <summary>
/// <see cref="Ops.GatedLinear"/>, a gated MLP's act(x·W_gᵀ) ⊙ (x·W_uᵀ). Fused (generation on bf16 weights where the
/// vdpbf16ps kernel runs, the activation applied by each thread to the columns it has just computed) every output is
/// checked against a float64 reference (x rounded to bf16, the stored weights, the activation in double) and against the
/// unfused ops (<see cref="Ops.LinearShared"/>, then <see cref="Ops.Silu"/> or <see cref="Ops.Gelu"/>, then
/// <see cref="Ops.Mul"/>): bit for bit where those run whole 512-bit vectors (widths that are multiples of 16), within
/// float32 rounding elsewhere. Otherwise it is those ops, in values and gradients.
/// </summary>
public class GatedLinearTests(ITestOutputHelper output)
{
    private static double Act(double z, Ops.GateActivation activation) => activation switch
    {
        Ops.GateActivation.Silu => z / (1 + Math.Exp(-z)),
        Ops.GateActivation.GeluTanh => 0.5 * z * (1 + Math.Tanh(Math.Sqrt(2 / Math.PI) * (z + 0.044715 * z * z * z))),
        _ => z * NormalCdf.Phi(z),
    };

    [Theory]
    [InlineData(1, 48, Ops.GateActivation.Silu, true)]
    [InlineData(3, 37, Ops.GateActivation.Silu, true)]    // widths off the 24-column units and the 16-lane vectors
    [InlineData(8, 4000, Ops.GateActivation.Silu, true)]  // both threads
    [InlineData(8, 100, Ops.GateActivation.GeluTanh, true)]
    [InlineData(5, 4864, Ops.GateActivation.GeluTanh, true)]
    [InlineData(4, 300, Ops.GateActivation.GeluErf, true)]
    [InlineData(9, 48, Ops.GateActivation.Silu, true)]    // past the decode kernel: the unfused ops
    [InlineData(8, 48, Ops.GateActivation.Silu, false)]   // scoring, not generation: the unfused ops, exact x
    public void InferenceMatchesTheReferenceAndTheUnfusedOps(int rows, int width, Ops.GateActivation activation, bool generation)
    {
        bool native = generation && Gemm.Bf16DotRuns(false, true, rows);
        output.WriteLine(native ? "fused: the vdpbf16ps kernel ran, the activation applied per chunk of columns (x rounded to bf16 in the reference)."
            : $"unfused ops ({(!generation ? "outside RoundActivationsToBf16" : rows > 8 ? "more than 8 rows" : Bf16Dot.UnavailableReason ?? $"GEMM path {Gemm.ActivePath}")}): exact x in the reference.");
        var rng = new Random(rows * 1000 + width);
        const int inF = 45;
        var x = GradCheck.Random(rng, 1, rows, inF);
        var gate = GradCheck.Random(rng, width, inF).ToBf16();
        var up = GradCheck.Random(rng, width, inF).ToBf16();

        Tensor fused, unfused;
        using (Autograd.NoGrad())
        {
            using var rounding = generation ? Ops.RoundActivationsToBf16() : default;
            fused = Ops.GatedLinear(x, (gate, null), (up, null), activation);
            var ys = Ops.LinearShared(x, (gate, null), (up, null));
            unfused = Ops.Mul(Ops.Activate(ys[0], activation), ys[1]);
        }
        Assert.Equal([1, rows, width], fused.Shape.ToArray());
        float[] f = fused.ToArray(), u = unfused.ToArray();
        if (!native || width % 16 == 0) Assert.Equal(u, f); // bit for bit
        else
            for (int i = 0; i < f.Length; i++)
                Assert.True(Math.Abs(f[i] - u[i]) <= 1e-6 * Math.Abs(u[i]) + 1e-7, $"[{i}]: fused {f[i]} vs unfused {u[i]}");

        float[] xs = x.ToArray(), wg = gate.ToArray(), wu = up.ToArray();
        for (int r = 0; r < rows; r++)
            for (int j = 0; j < width; j++)
            {
                double g = 0, v = 0, mag = 0;
                for (int p = 0; p < inF; p++)
                {
                    double a = native ? GemmCase.RoundToBf16(xs[r * inF + p]) : xs[r * inF + p];
                    g += a * wg[j * inF + p];
                    v += a * wu[j * inF + p];
                    mag += Math.Abs(a * wg[j * inF + p]) + Math.Abs(a * wu[j * inF + p]);
                }
                double expected = Act(g, activation) * v;
                Assert.True(Math.Abs(f[r * width + j] - expected) <= 1e-5 * mag * (1 + Math.Abs(v) + Math.Abs(g)) + 1e-6,
                    $"[{r},{j}]: {f[r * width + j]} vs {expected}");
            }
    }

    /// <summary>
    /// <see cref="Ops.GatedMlp"/> at decode shapes, fused (each thread has the kernel round its hidden columns straight
    /// into the down projection's input, by k-chunk, 32-blocks cut by its range under masks) against the unfused ops,
    /// <see cref="Ops.GatedLinear"/> then <see cref="Ops.Linear"/>, whose product rounds that input whole on one thread:
    /// bit for bit, at widths F of one k-chunk and of four (4864: the 0.5B shape's down projection), and off the 32-wide
    /// blocks and the 24-column units (zeros past F to its multiple of 32, over infinities a wider product left there),
    /// with down weights over a wide range.
    /// </summary>
    [Theory]
    [InlineData(1, 4864, 896, Ops.GateActivation.Silu)]
    [InlineData(8, 4864, 896, Ops.GateActivation.Silu)]
    [InlineData(8, 4864, 130, Ops.GateActivation.GeluTanh)]
    [InlineData(3, 100, 40, Ops.GateActivation.Silu)]
    [InlineData(5, 37, 24, Ops.GateActivation.GeluTanh)]
    [InlineData(4, 300, 40, Ops.GateActivation.GeluErf)]
    [InlineData(8, 2000, 50, Ops.GateActivation.Silu)]
    [InlineData(9, 48, 20, Ops.GateActivation.Silu)]      // past the decode kernel: the unfused ops
    public void GatedMlpIsTheGatedLinearThenTheDownProjectionBitForBit(int rows, int width, int outF, Ops.GateActivation activation)
    {
        bool native = Gemm.Bf16DotRuns(false, true, rows);
        output.WriteLine(native ? "fused: bf16 of the hidden activations written by the gated product's threads, by k-chunk."
            : $"unfused ops ({(rows > 8 ? "more than 8 rows" : Bf16Dot.UnavailableReason ?? $"GEMM path {Gemm.ActivePath}")}).");
        var rng = new Random(rows * 7919 + width);
        const int inF = 45;
        var x = GradCheck.Random(rng, 1, rows, inF);
        var gate = GradCheck.Random(rng, width, inF).ToBf16();
        var up = GradCheck.Random(rng, width, inF).ToBf16();
        var down = GradCheck.Random(rng, outF, width);
        var ds = down.Span;
        for (int i = 0; i < ds.Length; i += 7) ds[i] *= i % 3 == 0 ? 1e-30f : 1e4f;
        down = down.ToBf16();

        Tensor fused, unfused;
        using (Autograd.NoGrad())
        using (Ops.RoundActivationsToBf16())
        {
            // First a wide one whose hidden activations overflow, so that this thread's buffer for the down projection's
            // input holds infinities where this product's zero padding goes (past F, up to its multiple of 32): left
            // there, they would meet the kernel's zero-masked weights as 0·∞ = NaN.
            var wide = GradCheck.Random(rng, 4864, inF);
            var ws = wide.Span;
            for (int i = 0; i < ws.Length; i++) ws[i] *= 1e30f;
            wide = wide.ToBf16();
            Ops.GatedMlp(x, (wide, null), (wide, null), (GradCheck.Random(rng, 8, 4864).ToBf16(), null), activation);
            fused = Ops.GatedMlp(x, (gate, null), (up, null), (down, null), activation);
            unfused = Ops.Linear(Ops.GatedLinear(x, (gate, null), (up, null), activation), down);
        }
        Assert.Equal([1, rows, outF], fused.Shape.ToArray());
        Assert.Equal(unfused.ToArray(), fused.ToArray());
    }

    /// <summary>Recorded, or with biases, it is the unfused ops: the same values and gradients.</summary>
    [Fact]
    public void RecordedOrWithBiasesItIsTheUnfusedOps()
    {
        var rng = new Random(5);
        var x = GradCheck.Random(rng, 2, 3, 11);
        var (gw, gb, uw) = (GradCheck.Random(rng, 6, 11), GradCheck.Random(rng, 6), GradCheck.Random(rng, 6, 11));
        var coef = GradCheck.Random(rng, 2, 3, 6);
        float[][] Grads() => [x.Grad!.ToArray(), gw.Grad!.ToArray(), gb.Grad!.ToArray(), uw.Grad!.ToArray()];
        void Zero() { foreach (var t in new[] { x, gw, gb, uw }) t.ZeroGrad(); }

        var fused = Ops.GatedLinear(x, (gw, gb), (uw, null), Ops.GateActivation.Silu);
        Ops.Sum(Ops.Mul(fused, coef)).Backward();
        var fusedGrads = Grads();
        Zero();
        var unfused = Ops.Mul(Ops.Silu(Ops.Linear(x, gw, gb)), Ops.Linear(x, uw));
        Ops.Sum(Ops.Mul(unfused, coef)).Backward();
        Assert.Equal(unfused.ToArray(), fused.ToArray());
        var unfusedGrads = Grads();
        for (int i = 0; i < fusedGrads.Length; i++) Assert.Equal(unfusedGrads[i], fusedGrads[i]);

        // Generation with a bias on the gate: not fused, the unfused ops' values.
        var bw = GradCheck.Random(rng, 6, 11).ToBf16();
        using (Autograd.NoGrad())
        using (Ops.RoundActivationsToBf16())
        {
            var biased = Ops.GatedLinear(x, (bw, gb), (bw, null), Ops.GateActivation.GeluTanh);
            var ys = Ops.LinearShared(x, (bw, gb), (bw, null));
            Assert.Equal(Ops.Mul(Ops.Gelu(ys[0]), ys[1]).ToArray(), biased.ToArray());
        }
    }
}
