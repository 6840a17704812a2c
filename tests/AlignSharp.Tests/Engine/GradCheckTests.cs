using System.Reflection;
using AlignSharp.Engine;

namespace AlignSharp.Tests.Engine;

/// <summary>
/// One gradient check per differentiable op. Shapes are odd on purpose (7, 19, 37 elements per row) so both
/// the SIMD body and the scalar tail of every kernel take part, and broadcasting cases cover bias and
/// per-row shapes. <see cref="EveryOpHasAGradientCheck"/> fails when an op is added without a case here.
/// </summary>
public class GradCheckTests
{
    private static readonly GradCheck.Options Loose = new(Step: 1e-2, AbsTol: 5e-3, RelTol: 3e-2);

    /// <summary>Ops that have no gradient by design, each with the reason.</summary>
    private static readonly Dictionary<string, string> NoGradient = new()
    {
        ["MaxLast"] = "returns values without a gradient (used for numerics and sampling)",
        ["ArgMaxLast"] = "returns indices",
        ["RopeInverseFrequencies"] = "returns constants (a float[] table), not a tensor",
    };

    public static readonly Dictionary<string, Action> Cases = new()
    {
        ["Exp"] = () => Unary(Ops.Exp),
        ["Log"] = () => GradCheck.Check(x => Ops.Log(x[0]), [GradCheck.Positive(new Random(1), 3, 19)]),
        ["Tanh"] = () => Unary(Ops.Tanh),
        ["Sigmoid"] = () => Unary(Ops.Sigmoid),
        ["LogSigmoid"] = () => Unary(x => Ops.LogSigmoid(Ops.MulScalar(x, 4))),
        ["Softplus"] = () => Unary(x => Ops.Softplus(Ops.MulScalar(x, 4))),
        ["Relu"] = () => Unary(Ops.Relu),
        ["Gelu"] = () => Unary(x => Ops.Gelu(Ops.MulScalar(x, 3))),
        ["GeluErf"] = () => Unary(x => Ops.GeluErf(Ops.MulScalar(x, 3))),
        ["Activate"] = () =>
        {
            foreach (var activation in Enum.GetValues<Ops.GateActivation>()) Unary(x => Ops.Activate(Ops.MulScalar(x, 3), activation));
        },
        ["Silu"] = () => Unary(x => Ops.Silu(Ops.MulScalar(x, 3))),
        ["Square"] = () => Unary(Ops.Square),
        ["Sqrt"] = () => GradCheck.Check(x => Ops.Sqrt(x[0]), [GradCheck.Positive(new Random(2), 37)]),
        ["Neg"] = () => Unary(Ops.Neg),
        ["AddScalar"] = () => Unary(x => Ops.AddScalar(x, 0.7f)),
        ["MulScalar"] = () => Unary(x => Ops.MulScalar(x, -1.3f)),
        ["Clamp"] = () => Unary(x => Ops.Clamp(x, -0.5f, 0.4f)),
        ["Add"] = () => Binary(Ops.Add),
        ["Sub"] = () => Binary(Ops.Sub),
        ["Mul"] = () => Binary(Ops.Mul),
        ["Div"] = () =>
        {
            var rng = new Random(3);
            GradCheck.Check(x => Ops.Div(x[0], x[1]), [GradCheck.Random(rng, 2, 3, 19), GradCheck.Positive(rng, 2, 3, 19)]);
            GradCheck.Check(x => Ops.Div(x[0], x[1]), [GradCheck.Random(rng, 2, 3, 19), GradCheck.Positive(rng, 19)]);
            GradCheck.Check(x => Ops.Div(x[0], x[1]), [GradCheck.Random(rng, 2, 3, 19), GradCheck.Positive(rng, 2, 3, 1)]);
        },
        ["Minimum"] = () => Binary(Ops.Minimum),
        ["Maximum"] = () => Binary(Ops.Maximum),
        ["Where"] = () =>
        {
            var rng = new Random(4);
            var mask = Tensor.FromArray(Enumerable.Range(0, 21).Select(i => (float)(i % 3 == 0 ? 1 : 0)).ToArray(), 3, 7);
            GradCheck.Check(x => Ops.Where(mask, x[0], x[1]), [GradCheck.Random(rng, 3, 7), GradCheck.Random(rng, 3, 7)]);
        },
        ["MaskedFill"] = () =>
        {
            var mask = Tensor.FromArray(Enumerable.Range(0, 21).Select(i => (float)(i % 4 == 1 ? 1 : 0)).ToArray(), 3, 7);
            GradCheck.Check(x => Ops.MaskedFill(x[0], mask, -1e9f), [GradCheck.Random(new Random(5), 3, 7)]);
        },
        ["Sum"] = () => Unary(x => Ops.Sum(x)),
        ["Mean"] = () => Unary(x => Ops.Mean(x)),
        ["SumLast"] = () => { Unary(x => Ops.SumLast(x)); Unary(x => Ops.SumLast(x, keepDim: true)); },
        ["MeanLast"] = () => Unary(x => Ops.MeanLast(x)),
        ["Reshape"] = () => GradCheck.Check(x => Ops.Reshape(Ops.MulScalar(x[0], 2), 19, -1), [GradCheck.Random(new Random(16), 2, 19)]),
        ["SliceRows"] = () => GradCheck.Check(x => Ops.SliceRows(Ops.MulScalar(x[0], 2), 1, 2), [GradCheck.Random(new Random(17), 4, 7)]),
        ["StackRows"] = () =>
        {
            GradCheck.Check(x => Ops.StackRows(Ops.MulScalar(x[0], 2), 1, 1, 2), [GradCheck.Random(new Random(20), 3, 4, 5)]);
            // Two views of one stack (an expert's gate and up rows) add into the same gradient.
            GradCheck.Check(x => Ops.Mul(Ops.StackRows(x[0], 2, 0, 2), Ops.StackRows(x[0], 2, 2, 2)), [GradCheck.Random(new Random(21), 3, 4, 5)]);
        },
        ["Slice"] = () =>
        {
            GradCheck.Check(x => Ops.Slice(x[0], 1, 4, 9), [GradCheck.Random(new Random(18), 2, 19)]);
            GradCheck.Check(x => Ops.Slice(x[0], 0, 1, 2), [GradCheck.Random(new Random(19), 3, 2, 5)]);
        },
        ["Concat"] = () =>
        {
            var rng = new Random(6);
            GradCheck.Check(x => Ops.Concat(x, 1), [GradCheck.Random(rng, 2, 3, 5), GradCheck.Random(rng, 2, 1, 5), GradCheck.Random(rng, 2, 4, 5)]);
            GradCheck.Check(x => Ops.Concat(x, -1), [GradCheck.Random(rng, 3, 5), GradCheck.Random(rng, 3, 2)]);
        },
        ["Gather"] = () => GradCheck.Check(x => Ops.Gather(x[0], new[] { 0, 4, 4, 6, 1, 2 }, 2), [GradCheck.Random(new Random(7), 3, 7)]),
        ["IndexSelect"] = () => GradCheck.Check(x => Ops.IndexSelect(x[0], new[] { 2, 0, 2, 4 }), [GradCheck.Random(new Random(8), 5, 3)]),
        ["Embedding"] = () => GradCheck.Check(x => Ops.Embedding(x[0], new[] { 1, 3, 3, 0, 2, 1 }, 2, 3), [GradCheck.Random(new Random(9), 4, 5)]),
        ["Permute"] = () => GradCheck.Check(x => Ops.Permute(x[0], 2, 0, 3, 1), [GradCheck.Random(new Random(10), 2, 3, 4, 5)]),
        ["Transpose"] = () => GradCheck.Check(x => Ops.Transpose(x[0], 0, -1), [GradCheck.Random(new Random(11), 3, 2, 5)]),
        ["MatMul"] = () =>
        {
            var rng = new Random(12);
            foreach (var ta in new[] { false, true })
                foreach (var tb in new[] { false, true })
                {
                    int[] aShape = ta ? [2, 5, 3] : [2, 3, 5];
                    int[] bShape = tb ? [2, 4, 5] : [2, 5, 4];
                    GradCheck.Check(x => Ops.MatMul(x[0], x[1], ta, tb), [GradCheck.Random(rng, aShape), GradCheck.Random(rng, bShape)]);
                    int[] bShared = tb ? [4, 5] : [5, 4];
                    GradCheck.Check(x => Ops.MatMul(x[0], x[1], ta, tb), [GradCheck.Random(rng, aShape), GradCheck.Random(rng, bShared)]);
                }
        },
        ["Linear"] = () =>
        {
            var rng = new Random(13);
            GradCheck.Check(x => Ops.Linear(x[0], x[1], x[2]), [GradCheck.Random(rng, 2, 3, 7), GradCheck.Random(rng, 5, 7), GradCheck.Random(rng, 5)]);
            GradCheck.Check(x => Ops.Linear(x[0], x[1]), [GradCheck.Random(rng, 4, 19), GradCheck.Random(rng, 3, 19)]);
        },
        ["LinearLowRank"] = () =>
        {
            var rng = new Random(31);
            GradCheck.Check(x => Ops.LinearLowRank(x[0], x[1], x[2], x[3], x[4]),
                [GradCheck.Random(rng, 2, 3, 7), GradCheck.Random(rng, 5, 7), GradCheck.Random(rng, 5), GradCheck.Random(rng, 2, 3, 2), GradCheck.Random(rng, 5, 2)]);
            GradCheck.Check(x => Ops.LinearLowRank(x[0], x[1], null, x[2], x[3]),
                [GradCheck.Random(rng, 4, 19), GradCheck.Random(rng, 3, 19), GradCheck.Random(rng, 4, 3), GradCheck.Random(rng, 3, 3)]);
        },
        ["LinearShared"] = () =>
        {
            var rng = new Random(33);
            GradCheck.Check(x =>
            {
                var y = Ops.LinearShared(x[0], (x[1], x[2]), (x[3], null));
                return Ops.Add(y[0], Ops.MulScalar(y[1], 0.5f));
            }, [GradCheck.Random(rng, 2, 3, 7), GradCheck.Random(rng, 5, 7), GradCheck.Random(rng, 5), GradCheck.Random(rng, 5, 7)]);
        },
        ["GatedLinear"] = () =>
        {
            var rng = new Random(34);
            foreach (var activation in new[] { Ops.GateActivation.Silu, Ops.GateActivation.GeluTanh })
                GradCheck.Check(x => Ops.GatedLinear(x[0], (x[1], x[2]), (x[3], null), activation),
                    [GradCheck.Random(rng, 2, 3, 7), GradCheck.Random(rng, 5, 7), GradCheck.Random(rng, 5), GradCheck.Random(rng, 5, 7)]);
        },
        ["GatedMlps"] = () =>
        {
            // Two experts on their own rows, the second's gate and up as rows of one stack (as a mixture of experts keeps them).
            var rng = new Random(36);
            GradCheck.Check(x => Ops.Concat(Ops.GatedMlps([x[0], x[1]],
                    [new(x[2]), new(Ops.StackRows(x[5], 0, 0, 5))], [new(x[3]), new(Ops.StackRows(x[5], 0, 5, 5))], [new(x[4]), new(x[6])],
                    Ops.GateActivation.Silu), 0),
                [GradCheck.Random(rng, 2, 7), GradCheck.Random(rng, 3, 7), GradCheck.Random(rng, 5, 7), GradCheck.Random(rng, 5, 7),
                 GradCheck.Random(rng, 4, 5), GradCheck.Random(rng, 1, 10, 7), GradCheck.Random(rng, 4, 5)]);
        },
        ["GatedMlp"] = () =>
        {
            var rng = new Random(35);
            foreach (var activation in new[] { Ops.GateActivation.Silu, Ops.GateActivation.GeluTanh })
                GradCheck.Check(x => Ops.GatedMlp(x[0], (x[1], x[2]), (x[3], null), (x[4], x[5]), activation),
                    [GradCheck.Random(rng, 2, 3, 7), GradCheck.Random(rng, 5, 7), GradCheck.Random(rng, 5), GradCheck.Random(rng, 5, 7),
                     GradCheck.Random(rng, 4, 5), GradCheck.Random(rng, 4)]);
            // With a residual: residual + the MLP.
            GradCheck.Check(x => Ops.GatedMlp(x[0], (x[1], x[2]), (x[3], null), (x[4], x[5]), Ops.GateActivation.Silu, x[6]),
                [GradCheck.Random(rng, 2, 3, 7), GradCheck.Random(rng, 5, 7), GradCheck.Random(rng, 5), GradCheck.Random(rng, 5, 7),
                 GradCheck.Random(rng, 4, 5), GradCheck.Random(rng, 4), GradCheck.Random(rng, 2, 3, 4)]);
        },
        ["AddLinear"] = () =>
        {
            var rng = new Random(36);
            GradCheck.Check(x => Ops.AddLinear(x[0], x[1], new Ops.LinearLayer(x[2], x[3])),
                [GradCheck.Random(rng, 2, 3, 5), GradCheck.Random(rng, 2, 3, 7), GradCheck.Random(rng, 5, 7), GradCheck.Random(rng, 5)]);
            GradCheck.Check(x => Ops.AddLinear(x[0], x[1], new Ops.LinearLayer(x[2], U: x[3], B: x[4])),
                [GradCheck.Random(rng, 4, 5), GradCheck.Random(rng, 4, 7), GradCheck.Random(rng, 5, 7), GradCheck.Random(rng, 4, 2), GradCheck.Random(rng, 5, 2)]);
        },
        ["Softmax"] = () => Unary(Ops.Softmax),
        ["LogSoftmax"] = () => Unary(Ops.LogSoftmax),
        ["LayerNorm"] = () =>
        {
            var rng = new Random(14);
            GradCheck.Check(x => Ops.LayerNorm(x[0], x[1], x[2]), [GradCheck.Random(rng, 3, 19), GradCheck.Random(rng, 19), GradCheck.Random(rng, 19)], Loose);
            GradCheck.Check(x => Ops.LayerNorm(x[0], x[1], null), [GradCheck.Random(rng, 2, 7), GradCheck.Random(rng, 7)], Loose);
        },
        ["RmsNorm"] = () =>
        {
            var rng = new Random(15);
            GradCheck.Check(x => Ops.RmsNorm(x[0], x[1]), [GradCheck.Random(rng, 3, 19), GradCheck.Random(rng, 19)], Loose);
            // Gemma's (1 + w) weight.
            GradCheck.Check(x => Ops.RmsNorm(x[0], x[1], 1e-6f, weightOffset: 1f), [GradCheck.Random(rng, 3, 19), GradCheck.Random(rng, 19)], Loose);
            // Per-head q/k norm (Qwen3, Gemma-3): [B, T, H, Dh] normalised over Dh with one [Dh] weight shared by the heads.
            GradCheck.Check(x => Ops.RmsNorm(x[0], x[1]), [GradCheck.Random(rng, 1, 2, 3, 7), GradCheck.Random(rng, 7)], Loose);
            GradCheck.Check(x => Ops.RmsNorm(x[0], x[1], 1e-6f, weightOffset: 1f), [GradCheck.Random(rng, 2, 1, 3, 7), GradCheck.Random(rng, 7)], Loose);
        },
        // Values around ±cap so both the linear middle and the saturating tails take part.
        ["SoftCap"] = () => Unary(x => Ops.SoftCap(Ops.MulScalar(x, 3), 1.7f)),
    };

    private static void Unary(Func<Tensor, Tensor> op)
    {
        var rng = new Random(21);
        GradCheck.Check(x => op(x[0]), [GradCheck.Random(rng, 2, 19)]);
        GradCheck.Check(x => op(x[0]), [GradCheck.Random(rng, 37)]);
    }

    private static void Binary(Func<Tensor, Tensor, Tensor> op)
    {
        var rng = new Random(22);
        GradCheck.Check(x => op(x[0], x[1]), [GradCheck.Random(rng, 2, 3, 19), GradCheck.Random(rng, 2, 3, 19)]); // same shape
        GradCheck.Check(x => op(x[0], x[1]), [GradCheck.Random(rng, 2, 3, 19), GradCheck.Random(rng, 19)]);       // bias
        GradCheck.Check(x => op(x[0], x[1]), [GradCheck.Random(rng, 2, 3, 19), GradCheck.Random(rng, 2, 3, 1)]);  // per-row scale
        GradCheck.Check(x => op(x[0], x[1]), [GradCheck.Random(rng, 3, 1), GradCheck.Random(rng, 1, 5)]);         // outer
        GradCheck.Check(x => op(x[0], x[1]), [GradCheck.Random(rng, 1), GradCheck.Random(rng, 2, 7)]);            // scalar-like left
    }

    public static IEnumerable<object[]> CaseNames() => Cases.Keys.Select(k => new object[] { k });

    [Theory]
    [MemberData(nameof(CaseNames))]
    public void GradientMatchesFiniteDifferences(string op) => Cases[op]();

    [Fact]
    public void EveryOpHasAGradientCheck()
    {
        var ops = typeof(Ops).GetMethods(BindingFlags.Public | BindingFlags.Static)
            .Where(m => m.ReturnType == typeof(Tensor) || m.ReturnType.IsGenericType || m.ReturnType.IsArray)
            .Select(m => m.Name).Distinct();
        var missing = ops.Where(n => !Cases.ContainsKey(n) && !NoGradient.ContainsKey(n) && !FusedCases.Names.Contains(n)).ToList();
        Assert.True(missing.Count == 0, "ops without a gradient check: " + string.Join(", ", missing));
    }
}

/// <summary>Names covered by gradient checks kept in other files (fused kernels register here).</summary>
public static class FusedCases
{
    /// <summary>Initialised here, not from the other files' static constructors, so the names are present
    /// whichever test runs first. The cases themselves are in FusedOpsTests.cs.</summary>
    public static readonly HashSet<string> Names = ["CrossEntropy", "TokenLogProbs", "CausalAttention", "CausalAttentionPacked", "Rope", "Dropout", "CausalConv", "SelectiveScan"];
}
