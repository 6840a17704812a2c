using AlignSharp.Engine;
using AlignSharp.Engine.Kernels;
using AlignSharp.Models;
using AlignSharp.Models.Lora;
using AlignSharp.Tests.Models;
using AlignSharp.Text;
using Xunit.Abstractions;

namespace AlignSharp.Tests.Engine;

/// <summary>
/// Work the decoding bf16 products do on the columns each thread has just made, against the same ops run apart, bit for
/// bit, since generation must not depend on which ran:
/// <list type="bullet">
/// <item>LoRA terms (<see cref="Bf16Dot.LowRank"/>: u·Bᵀ added in the shares) against <see cref="Ops.FuseLowRank"/> off,
/// where the term is a product of its own after the bf16 one and adapted layers run one by one; and against a float64 sum
/// of bf16(x)·W, the bias and u·Bᵀ;</item>
/// <item>residual connections (<see cref="Ops.AddLinear"/>, the gated MLP's residual: the residual added in the shares)
/// against <see cref="Ops.FuseResidual"/> off, where it is an <see cref="Ops.Add"/> after the product.</item>
/// </list>
/// Serial: the switches are process-wide.
/// </summary>
[Collection(SerialCollection.Name)]
public class FusedDecodingTests(ITestOutputHelper output)
{
    private static T Unfused<T>(Func<T> run)
    {
        Ops.FuseLowRank = false;
        try { return run(); }
        finally { Ops.FuseLowRank = true; }
    }

    private static T ResidualApart<T>(Func<T> run)
    {
        Ops.FuseResidual = false;
        try { return run(); }
        finally { Ops.FuseResidual = true; }
    }

    private bool Native(int rows)
    {
        bool native = Gemm.Bf16DotRuns(false, true, rows);
        output.WriteLine(native ? $"{rows} rows: the vdpbf16ps kernel ran, the terms inside it."
            : $"{rows} rows: {(rows > 8 ? "more than 8 rows" : Bf16Dot.UnavailableReason ?? $"GEMM path {Gemm.ActivePath}")}: separate exact products (x not rounded in the reference).");
        return native;
    }

    public enum Term { None, U, Factors }

    /// <summary>A bf16 layer [n, inF] with a term of rank r: none, u given ([rows, r]), or factors A [r, inF] and a scale.</summary>
    private static Ops.LinearLayer Layer(Random rng, int n, int inF, int rows, Term term, int r, bool bias) => new(
        GradCheck.Random(rng, n, inF).ToBf16(), bias ? GradCheck.Random(rng, n) : null,
        U: term == Term.U ? GradCheck.Random(rng, 1, rows, r) : null, B: term == Term.None ? null : GradCheck.Random(rng, n, r),
        A: term == Term.Factors ? GradCheck.Random(rng, r, inF) : null, Scale: term == Term.Factors ? 0.75f : 1f);

    /// <summary>The unfused layer: Linear, or LinearLowRank on u (given, or Scale·(x·Aᵀ) as two ops, as the adapter makes it).</summary>
    private static Tensor Separate(Tensor x, Ops.LinearLayer l) => l.B == null ? Ops.Linear(x, l.W, l.Bias)
        : Ops.LinearLowRank(x, l.W, l.Bias, l.U ?? Ops.MulScalar(Ops.Linear(x, l.A!), l.Scale), l.B);

    /// <summary>y[r, j] = bias[j] + Σ bf16(x)·W + Σ u·B in float64, within float32 rounding of the magnitudes (u of a
    /// factor-form term in float64 from x and A).</summary>
    private static void AssertNearReference(Tensor y, Tensor x, Ops.LinearLayer layer, bool roundX, string what)
    {
        int rows = ShapeUtil.Rows(x.Shape), inF = x.Dim(-1), outF = layer.W.Dim(0), r = layer.B?.Dim(1) ?? 0;
        float[] xs = x.ToArray(), w = layer.W.ToArray(), ys = y.ToArray();
        float[]? bias = layer.Bias?.ToArray(), b = layer.B?.ToArray();
        double[]? u = layer.U?.ToArray().Select(v => (double)v).ToArray();
        if (layer.A is { } fa)
        {
            var a = fa.ToArray();
            u = new double[rows * r];
            for (int i = 0; i < rows; i++)
                for (int p = 0; p < r; p++)
                {
                    double sum = 0;
                    for (int q = 0; q < inF; q++) sum += (double)xs[i * inF + q] * a[p * inF + q];
                    u[i * r + p] = layer.Scale * sum;
                }
        }
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < outF; j++)
            {
                double sum = bias?[j] ?? 0, mag = Math.Abs(sum);
                for (int p = 0; p < inF; p++)
                {
                    double a = roundX ? GemmCase.RoundToBf16(xs[i * inF + p]) : xs[i * inF + p];
                    sum += a * w[j * inF + p];
                    mag += Math.Abs(a * w[j * inF + p]);
                }
                for (int p = 0; p < r; p++)
                {
                    sum += u![i * r + p] * b![j * r + p];
                    mag += Math.Abs(u[i * r + p] * b[j * r + p]);
                }
                Assert.True(Math.Abs(ys[i * outF + j] - sum) <= 1e-5 * mag + 1e-6, $"{what} [{i},{j}]: {ys[i * outF + j]} vs {sum}");
            }
    }

    [Theory]
    [InlineData(1)]
    [InlineData(3)]
    [InlineData(8)]
    [InlineData(9)] // past the decode kernel: separate products either way
    public void SharedProductsWithTermsEqualTheLayersOneByOne(int rows)
    {
        bool native = Native(rows);
        var rng = new Random(rows);
        const int inF = 45;
        var x = GradCheck.Random(rng, 1, rows, inF);
        // Widths off the 24-column units and the tiles, one above the parallel threshold; a term given as u (rank 3), none
        // (LoRA need not adapt all of them), factors (rank 16, u made inside) and factors again (rank 8); biases on some.
        var layers = new[]
        {
            Layer(rng, 5, inF, rows, Term.U, 3, bias: true),
            Layer(rng, 130, inF, rows, Term.None, 0, bias: false),
            Layer(rng, 4000, inF, rows, Term.Factors, 16, bias: true),
            Layer(rng, 77, inF, rows, Term.Factors, 8, bias: false),
        };

        Tensor[] fused, separate;
        using (Autograd.NoGrad())
        using (Ops.RoundActivationsToBf16())
        {
            fused = Ops.LinearShared(x, layers);
            separate = Unfused(() => layers.Select(l => Separate(x, l)).ToArray());
        }
        for (int i = 0; i < layers.Length; i++)
        {
            Assert.Equal(separate[i].ToArray(), fused[i].ToArray()); // bit for bit
            AssertNearReference(fused[i], x, layers[i], native, $"layer {i}");
        }
    }

    [Theory]
    [InlineData(1, 896, 16, true, Term.U)]
    [InlineData(1, 896, 16, true, Term.Factors)]
    [InlineData(4, 130, 8, false, Term.U)]
    [InlineData(4, 130, 8, false, Term.Factors)]
    [InlineData(8, 4200, 64, true, Term.Factors)] // r·n past the small-k path for 8 rows: the term stays a product of its own
    [InlineData(7, 53, 1, false, Term.U)]
    [InlineData(6, 900, 4, true, Term.Factors)]
    public void ALayerWithATermEqualsTheBf16ProductThenTheTerm(int rows, int outF, int r, bool withBias, Term term)
    {
        bool native = Native(rows);
        var rng = new Random(outF + r);
        const int inF = 70;
        var x = GradCheck.Random(rng, 1, rows, inF);
        var layer = Layer(rng, outF, inF, rows, term, r, withBias);
        output.WriteLine($"the term {(Bf16Dot.LowRank.Fits(rows, outF, r) ? "fits" : "does not fit")} the small-k path");
        Tensor fused, separate;
        using (Autograd.NoGrad())
        using (Ops.RoundActivationsToBf16())
        {
            fused = Ops.Linear(x, layer);
            separate = Unfused(() => Separate(x, layer));
        }
        Assert.Equal(separate.ToArray(), fused.ToArray());
        AssertNearReference(fused, x, layer, native, "layer");
    }

    /// <summary>The gated MLP's first half with terms on the gate, the up projection or both: the terms go in before the
    /// activation. Widths of whole 512-bit vectors give the unfused ops' bits; others agree within rounding.</summary>
    [Theory]
    [InlineData(8, 4000, Term.U, Term.Factors)]
    [InlineData(3, 4864, Term.Factors, Term.None)]
    [InlineData(1, 64, Term.None, Term.U)]
    [InlineData(5, 130, Term.Factors, Term.Factors)]
    public void TheGatedProductsWithTermsEqualTheOpsOneByOne(int rows, int f, Term gateTerm, Term upTerm)
    {
        Native(rows);
        var rng = new Random(f + rows);
        const int inF = 45, r = 16;
        var x = GradCheck.Random(rng, 1, rows, inF);
        var (gate, up) = (Layer(rng, f, inF, rows, gateTerm, r, bias: false), Layer(rng, f, inF, rows, upTerm, r, bias: false));

        float[] fused, separate;
        using (Autograd.NoGrad())
        using (Ops.RoundActivationsToBf16())
        {
            fused = Ops.GatedLinear(x, gate, up, Ops.GateActivation.Silu).ToArray();
            separate = Unfused(() => Ops.Mul(Ops.Silu(Separate(x, gate)), Separate(x, up)).ToArray());
        }
        AssertSameOrWithinRounding(separate, fused, exact: f % 16 == 0);
    }

    /// <summary>Widths of whole 512-bit vectors give the unfused activation's bits; others agree within rounding.</summary>
    private static void AssertSameOrWithinRounding(float[] separate, float[] fused, bool exact)
    {
        if (exact) Assert.Equal(separate, fused);
        else
            for (int i = 0; i < fused.Length; i++)
                Assert.True(Math.Abs(fused[i] - separate[i]) <= 1e-5f * (1 + Math.Abs(separate[i])), $"[{i}] {fused[i]} vs {separate[i]}");
    }

    /// <summary>The whole gated MLP with terms: the down projection's factor-form u made from the hidden activations
    /// between the gated products and the down projection; against GatedLinear then the down layer, unfused.</summary>
    [Theory]
    [InlineData(8, 4864, 896, Term.Factors, Term.Factors, Term.Factors, GateActivation.Silu)]
    [InlineData(4, 4864, 130, Term.None, Term.None, Term.Factors, GateActivation.Silu)]
    [InlineData(1, 64, 40, Term.U, Term.Factors, Term.None, GateActivation.GeluTanh)]
    [InlineData(5, 100, 24, Term.Factors, Term.None, Term.Factors, GateActivation.Silu)]
    public void TheGatedMlpWithTermsEqualsTheOpsOneByOne(int rows, int f, int outF, Term gateTerm, Term upTerm, Term downTerm, GateActivation act)
    {
        Native(rows);
        var rng = new Random(f + outF + rows);
        const int inF = 45, r = 16;
        var x = GradCheck.Random(rng, 1, rows, inF);
        var (gate, up, down) = (Layer(rng, f, inF, rows, gateTerm, r, false), Layer(rng, f, inF, rows, upTerm, r, false),
            Layer(rng, outF, f, rows, downTerm, r, false));
        var activation = act == GateActivation.Silu ? Ops.GateActivation.Silu : Ops.GateActivation.GeluTanh;

        float[] fused, separate;
        using (Autograd.NoGrad())
        using (Ops.RoundActivationsToBf16())
        {
            fused = Ops.GatedMlp(x, gate, up, down, activation).ToArray();
            separate = Unfused(() =>
            {
                var g = Separate(x, gate);
                var hidden = Ops.Mul(activation == Ops.GateActivation.Silu ? Ops.Silu(g) : Ops.Gelu(g), Separate(x, up));
                return Separate(hidden, down).ToArray();
            });
        }
        AssertSameOrWithinRounding(separate, fused, exact: f % 16 == 0);
    }

    /// <summary>A mixture of experts' chosen experts at decode shapes (<see cref="Ops.GatedMlps"/>): several gated MLPs on
    /// their own rows run together, each output bit for bit the one it has alone; widths off the 24-column units.</summary>
    [Theory]
    [InlineData(new[] { 1, 1, 1, 1, 1, 1, 1, 1 }, 512, 1024)]   // batch 1: one token's 8 experts (granite-3.1-1b-a400m's widths)
    [InlineData(new[] { 3, 1, 8, 2, 5 }, 100, 45)]
    [InlineData(new[] { 2, 7 }, 37, 130)]
    public void ExpertsTogetherEqualEachAlone(int[] rows, int f, int d)
    {
        Native(rows.Max());
        var rng = new Random(f + d);
        var xs = rows.Select(m => GradCheck.Random(rng, m, d)).ToArray();
        var layers = rows.Select(_ => (Layer(rng, f, d, 1, Term.None, 0, false), Layer(rng, f, d, 1, Term.None, 0, false), Layer(rng, d, f, 1, Term.None, 0, false))).ToArray();
        using (Autograd.NoGrad())
        using (Ops.RoundActivationsToBf16())
        {
            var together = Ops.GatedMlps(xs, [.. layers.Select(l => l.Item1)], [.. layers.Select(l => l.Item2)], [.. layers.Select(l => l.Item3)], Ops.GateActivation.Silu);
            for (int i = 0; i < xs.Length; i++)
                Assert.Equal(Ops.GatedMlp(xs[i], layers[i].Item1, layers[i].Item2, layers[i].Item3, Ops.GateActivation.Silu).ToArray(), together[i].ToArray());
        }
    }

    public enum GateActivation { Silu, GeluTanh }

    /// <summary>A LoRA adapter of rank r on every linear layer with B drawn at random (PEFT starts it at zero), so every term counts.</summary>
    private static LoraAdapter RandomAdapter(TransformerModel model, int rank, int seed, int bSeed)
    {
        var adapter = LoraAdapter.Create(model, new LoraConfig(rank, 2 * rank, TargetModules: [LoraConfig.AllLinear]), seed);
        var rng = new Random(bSeed);
        foreach (var module in adapter.Modules)
        {
            var s = module.B.Span;
            for (int i = 0; i < s.Length; i++) s[i] = (float)(rng.NextDouble() - 0.5) * 0.2f;
        }
        return adapter;
    }

    /// <summary>
    /// Generation with a LoRA adapter on every linear layer (B drawn at random, so every term counts) on bf16 fixtures:
    /// q/k/v biases (Qwen2), fused q/k/v and gate/up checkpoint tensors whose adapters are sliced by rows (Phi-3),
    /// Llama with grouped queries, GPT-2, Gemma-2 and GPT-NeoX. The same tokens and log-probabilities with the terms inside the products as without,
    /// and different ones from the base model.
    /// </summary>
    [Theory]
    [InlineData("qwen2-tied-bias", 4)]
    [InlineData("phi3-longrope", 4)]
    [InlineData("llama-gqa", 4)]
    [InlineData("llama-gqa", 80)]            // past the small-k path: every term a product of its own
    [InlineData("gpt2-hub", 4)]              // one fused c_attn tensor (Conv1D), a GELU MLP, biases
    [InlineData("gemma2-softcap-window", 4)] // GeGLU, soft caps
    [InlineData("gpt-neox-pythia", 4)]       // q/k/v fused head by head, partial RoPE, parallel residual
    [InlineData("phi2-parallel-head-bias", 4)] // one norm for attention and MLP, the LM head's bias (sampled unfused)
    [InlineData("opt-125m-shape", 4)]        // learned positions two rows in, ReLU MLP with the residual in its product
    [InlineData("opt-350m-shape", 4)]        // norms after the adds, embeddings projected in and out
    [InlineData("ernie45-interleaved-rope", 4)] // RoPE on adjacent pairs, biases on every projection
    [InlineData("bloomz-save-pretrained", 4)] // ALiBi, the embeddings' LayerNorm, q/k/v fused head by head
    [InlineData("lfm2-hybrid-conv", 4)]       // gated short convolutions with their cached inputs, q/k norms
    [InlineData("glm-edge-partial-interleaved", 4)] // interleaved RoPE on half of each head, gate_up_proj's adapters sliced by rows
    [InlineData("starcoder2-window-bias", 4)] // LayerNorms, a GELU MLP with biases, a sliding window
    [InlineData("gpt-bigcode-multi-query", 4)] // one key/value head inside the fused c_attn (nn.Linear), learned positions
    [InlineData("gpt-neo-local-global", 4)]  // unscaled scores, local layers with a window
    [InlineData("granite4-hybrid-mamba", 4)]
    [InlineData("granitemoe-top3-of-8", 4)]
    [InlineData("granite4-hybrid-experts", 4)] // experts beside the shared MLP, Mamba-2 mixers   // experts' products on views of the bf16 stacks, a LoRA term on the router
    [InlineData("falcon-h1-mup", 4)]          // attention and a mixer in every layer, µP multipliers, the grouped gated norm // Mamba-2 mixers with their cached convolution inputs and states, NoPE attention
    public void GenerationWithAnAdapterIsTheSameWithTheTermsInsideTheProducts(string fixture, int rank)
    {
        Native(3);
        var model = ModelIO.Load(Fixtures.Dir(fixture), bf16Matrices: true);
        var adapter = RandomAdapter(model, rank, seed: 1, bSeed: 9);
        int[][] prompts = [[1, 2, 3], [5, 6, 7, 8, 9], [20, 21]];
        var options = new SamplingOptions { MaxNewTokens = 6, Temperature = 1, Seed = 11, EosIds = [] };

        var baseRun = Generator.Generate(model, prompts, options);
        model.Adapter = adapter;
        var fused = Generator.Generate(model, prompts, options);
        var separate = Unfused(() => Generator.Generate(model, prompts, options));
        for (int b = 0; b < prompts.Length; b++)
        {
            Assert.Equal(separate[b].Ids, fused[b].Ids);
            Assert.Equal(separate[b].LogProbs, fused[b].LogProbs); // bit for bit
        }
        Assert.NotEqual(baseRun.SelectMany(c => c.LogProbs), fused.SelectMany(c => c.LogProbs));
    }

    /// <summary>A linear layer with a residual, x + Linear(h): the residual added inside the product against an Add after
    /// it, with and without bias and LoRA terms, widths off the 24-column units and the 16-lane vectors, 1–9 rows.</summary>
    [Theory]
    [InlineData(1, 896, false, Term.None)]
    [InlineData(3, 130, true, Term.None)]
    [InlineData(8, 896, false, Term.Factors)]
    [InlineData(5, 53, true, Term.U)]
    [InlineData(8, 4864, false, Term.None)]
    [InlineData(9, 200, false, Term.None)] // past the decode kernel: Add after the product either way
    public void AResidualInsideTheProductEqualsTheAddAfterIt(int rows, int outF, bool withBias, Term term)
    {
        Native(rows);
        var rng = new Random(outF + rows);
        const int inF = 70;
        var x = GradCheck.Random(rng, 1, rows, inF);
        var residual = GradCheck.Random(rng, 1, rows, outF);
        var layer = Layer(rng, outF, inF, rows, term, 16, withBias);
        float[] fused, apart, alone;
        using (Autograd.NoGrad())
        using (Ops.RoundActivationsToBf16())
        {
            fused = Ops.AddLinear(residual, x, layer).ToArray();
            apart = ResidualApart(() => Ops.AddLinear(residual, x, layer).ToArray());
            alone = Ops.Linear(x, layer).ToArray();
        }
        Assert.Equal(apart, fused);
        var r = residual.ToArray();
        Assert.Equal(r.Zip(alone, (a, b) => a + b), fused);
    }

    /// <summary>The gated MLP with a residual (the down projection's product adds it), terms on any projection.</summary>
    [Theory]
    [InlineData(8, 4864, 896, Term.None, Term.None, Term.None)]
    [InlineData(4, 4864, 130, Term.Factors, Term.None, Term.Factors)]
    [InlineData(1, 64, 40, Term.None, Term.Factors, Term.None)]
    [InlineData(9, 100, 24, Term.None, Term.None, Term.None)] // past the decode kernel
    public void TheGatedMlpWithAResidualEqualsTheAddAfterIt(int rows, int f, int outF, Term gateTerm, Term upTerm, Term downTerm)
    {
        Native(rows);
        var rng = new Random(f + outF + rows + 1);
        const int inF = 45, r = 16;
        var x = GradCheck.Random(rng, 1, rows, inF);
        var residual = GradCheck.Random(rng, 1, rows, outF);
        var (gate, up, down) = (Layer(rng, f, inF, rows, gateTerm, r, false), Layer(rng, f, inF, rows, upTerm, r, false),
            Layer(rng, outF, f, rows, downTerm, r, false));
        float[] fused, apart, alone;
        using (Autograd.NoGrad())
        using (Ops.RoundActivationsToBf16())
        {
            fused = Ops.GatedMlp(x, gate, up, down, Ops.GateActivation.Silu, residual).ToArray();
            apart = ResidualApart(() => Ops.GatedMlp(x, gate, up, down, Ops.GateActivation.Silu, residual).ToArray());
            alone = Ops.GatedMlp(x, gate, up, down, Ops.GateActivation.Silu).ToArray();
        }
        Assert.Equal(apart, fused);
        Assert.Equal(residual.ToArray().Zip(alone, (a, b) => a + b), fused);
    }

    /// <summary>
    /// Generation on bf16 fixtures with the residual adds inside the products and apart: the same tokens and
    /// log-probabilities, without and with a LoRA adapter (random B), on the gated families, GPT-2 (its MLP's projection)
    /// and Gemma-2, whose sandwich norms keep the adds apart.
    /// </summary>
    [Theory]
    [InlineData("llama-gqa", false)]
    [InlineData("llama-gqa", true)]
    [InlineData("qwen2-tied-bias", true)]
    [InlineData("phi3-longrope", false)]
    [InlineData("gpt2-hub", false)]
    [InlineData("gemma2-softcap-window", false)]
    [InlineData("opt-125m-shape", true)]
    public void GenerationIsTheSameWithTheResidualsInsideTheProducts(string fixture, bool withAdapter)
    {
        Native(3);
        var model = ModelIO.Load(Fixtures.Dir(fixture), bf16Matrices: true);
        if (withAdapter) model.Adapter = RandomAdapter(model, 8, seed: 2, bSeed: 4);
        int[][] prompts = [[1, 2, 3], [5, 6, 7, 8, 9], [20, 21]];
        var options = new SamplingOptions { MaxNewTokens = 6, Temperature = 1, Seed = 12, EosIds = [] };
        var fused = Generator.Generate(model, prompts, options);
        var apart = ResidualApart(() => Generator.Generate(model, prompts, options));
        for (int b = 0; b < prompts.Length; b++)
        {
            Assert.Equal(apart[b].Ids, fused[b].Ids);
            Assert.Equal(apart[b].LogProbs, fused[b].LogProbs); // bit for bit
        }
    }
}
