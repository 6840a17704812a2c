using System.Text.Json;
using System.Text.Json.Nodes;
using AlignSharp.Engine;
using AlignSharp.Models;
using AlignSharp.Models.Checkpoints;
using AlignSharp.Tests.Engine;

namespace AlignSharp.Tests.Models;

/// <summary>
/// Qwen3, Gemma-2 and Gemma-3 beyond the reference logits (TransformerLogitsTests): gradients through their new
/// parts against finite differences, training, KV-cached decoding against full recompute (sliding layers included),
/// and a save → load round trip to the family's own tensor names and config keys.
/// </summary>
public sealed class FamilyTests : IDisposable
{
    private readonly string _temp = Path.Combine(Path.GetTempPath(), "alignsharp-families-" + Guid.NewGuid().ToString("N"));

    public FamilyTests() => Directory.CreateDirectory(_temp);

    public void Dispose() => Directory.Delete(_temp, recursive: true);

    public static TheoryData<string> NewFamilyFixtures => new("qwen3-qk-norm", "gemma2-softcap-window", "gemma3-local-global", "phi3-longrope", "qwen2-sliding-window", "smollm3-nope", "olmo2-post-norm",
        "qwen3-yarn-v5", "gemma3-v5-rope-per-layer-type", "granite-multipliers",
        "phi4-mini-partial-rotary", "gemma1-geglu", "gpt-neox-pythia", "gpt-neox-v5-sequential", "stablelm2-qkv-bias",
        "phi2-parallel-head-bias", "opt-125m-shape", "opt-350m-shape", "exaone4-hybrid-nope",
        "ernie45-interleaved-rope", "hunyuan-qk-norm-after-rope", "olmo1-nonparametric-norm", "bloom-hub-n-embed", "bloomz-save-pretrained",
        "lfm2-hybrid-conv", "lfm2-conv-bias-attn-idxs", "glm-edge-partial-interleaved", "starcoder2-window-bias",
        "gpt-bigcode-multi-query", "gpt-bigcode-multi-head", "gpt-neo-local-global", "helium-interleaved-rope",
        "granite4-hybrid-mamba", "granite4-dense-rope", "falcon-h1-mup", "falcon-h1-no-norm-bias", "granitemoe-top3-of-8", "granitemoe-defaults-bias", "granite4-hybrid-experts");

    private static readonly int[] Ids = [3, 17, 5, 9, 22, 1, 30, 8, 12, 4, 40, 2];

    private static TransformerModel Load(string fixture) => ModelIO.Load(Fixtures.Dir(fixture));

    [Theory]
    [MemberData(nameof(NewFamilyFixtures))]
    public void GradientsThroughTheFamilysNewPartsMatchFiniteDifferences(string fixture)
    {
        var model = Load(fixture);
        var c = model.Config;
        if (c.Activation == HiddenActivation.Relu)
        {
            // Finite differences cannot cross a ReLU's kinks: OPT's structure (positions, norms after the adds, the
            // embedding projections) is checked with the exact GELU in its place, on the same weights.
            var smooth = new TransformerModel(c with { Activation = HiddenActivation.Gelu });
            foreach (var (name, p) in model.NamedParameters) p.Span.CopyTo(smooth.Parameter(name).Span);
            (model, c) = (smooth, smooth.Config);
        }
        // Granite MoE: the router (through the gates) and both expert stacks (through the experts the tokens chose).
        var names = c.Moe != null ? ["layers.1.moe.router.weight", "layers.1.moe.input.weight", "layers.1.moe.output.weight"]
            : new List<string> { c.Table.GatedMlp ? "layers.1.mlp.gate.weight" : "layers.1.mlp.fc.weight" };
        if (!c.PostNorm && c.Table.NormParameters) names.Add("final_norm.weight");
        if (c.EmbedDim != c.HiddenSize) names.AddRange(["project_in.weight", "project_out.weight"]);
        if (c.LearnedPositions) names.Add("pos_embed.weight");
        if (c.InputNorms && c.Table.NormParameters) names.Add("layers.0.attn_norm.weight");
        if (!c.Table.NormParameters) names.Add("layers.0.attn.k.weight");   // OLMo 1: its norms have nothing to train
        // LFM2: the first convolution layer's three parts and the first attention layer's q/k norms.
        int conv = Enumerable.Range(0, c.NumLayers).FirstOrDefault(c.IsConvLayer, -1);
        int attention = Enumerable.Range(0, c.NumLayers).Where(l => !c.IsConvLayer(l)).Take(2).ToArray() is [var a0, .. var rest] ? a0 : -1;
        if (conv >= 0)
            names.AddRange([$"layers.{conv}.conv.in.weight", $"layers.{conv}.conv.kernel.weight", $"layers.{conv}.conv.out.weight",
                .. c.ConvBias ? [$"layers.{conv}.conv.kernel.bias"] : Array.Empty<string>()]);
        // Granite 4.0: every part of the first Mamba-2 mixer.
        int mamba = Enumerable.Range(0, c.NumLayers).FirstOrDefault(c.IsMambaLayer, -1);
        if (mamba >= 0)
            names.AddRange(new[] { "in.weight", "conv.weight", "conv.bias", "dt_bias", "a_log", "d", "norm.weight", "out.weight" }
                .Select(n => $"layers.{mamba}.mamba.{n}").Where(model.HasParameter));
        if (c.QkNorm) names.AddRange(conv >= 0 ? [$"layers.{attention}.attn.q_norm.weight", $"layers.{attention}.attn.k_norm.weight"]
            : ["layers.0.attn.q_norm.weight", "layers.1.attn.k_norm.weight"]);
        if (c.SandwichNorms) names.AddRange(["layers.0.attn_out_norm.weight", "layers.2.mlp_out_norm.weight"]);
        var inputs = names.Select(model.Parameter).ToArray();
        // Through the whole model: embedding scale, per-head norms, (1 + w) norms, soft caps, windows, local RoPE.
        int[] ids = Ids[..9];
        // LFM2's convolution output is cubic in conv.in (C ⊙ conv(B ⊙ x)) over large logits: the float32 loss's differences
        // scatter by ~1e-2 between steps of 1e-2 and 1e-3 (a probe of this session), so its absolute tolerance is wider.
        GradCheck.Check(_ => model.Forward(ids, 1, ids.Length), inputs, new GradCheck.Options(Step: 1e-2, AbsTol: c.ConvLayers != null ? 2e-2 : 5e-3, RelTol: 3e-2));
    }

    [Theory]
    [MemberData(nameof(NewFamilyFixtures))]
    public void TrainingReachesEveryParameterAndLowersTheLoss(string fixture)
    {
        var model = Load(fixture);
        int vocab = model.Config.VocabSize, batch = 2, seq = 10;
        var ids = Enumerable.Range(0, batch * seq).Select(i => (i * 7 + 3) % vocab).ToArray();
        var targets = Enumerable.Range(0, batch * seq).Select(i => (i + 1) % seq == 0 ? -100 : ids[i + 1]).ToArray();
        // Granite divides its logits by logits_scaling and Falcon-H1 multiplies them by lm_head_multiplier: the same step moves them that much less.
        float lr = 0.05f * (float)(model.Config.LogitsScaling ?? 1) / (float)(model.Config.Falcon?.LmHead ?? 1);
        float Step(bool update)
        {
            foreach (var p in model.Parameters) p.ClearGrad();
            var loss = Ops.CrossEntropy(Ops.Reshape(model.Forward(ids, batch, seq), batch * seq, vocab), targets);
            loss.Backward();
            if (update)
                foreach (var p in model.Parameters)
                {
                    var s = p.Span; var g = p.Grad!.Span;
                    for (int i = 0; i < s.Length; i++) s[i] -= lr * g[i];
                }
            return loss.Item();
        }
        float first = Step(update: false);
        foreach (var (name, p) in model.NamedParameters)
            Assert.True(p.Grad != null && p.Grad.ToArray().Any(g => g != 0), $"{fixture}: no gradient reached {name}");
        for (int i = 0; i < 20; i++) Step(update: true);
        float last = Step(update: false);
        Assert.True(last < first - 0.1f, $"{fixture}: loss went from {first} to {last}");
    }

    /// <summary>Prefill then chunks of every size: sliding layers must see exactly the keys the full pass sees.
    /// Phi-3's LongRoPE switches factors per call at original_max_position_embeddings (8 in the fixture) exactly as
    /// transformers does, so a cache equals the full pass only on one side of it: here it is moved past the
    /// sequence, keeping the factor 8 and its attention scaling.</summary>
    [Theory]
    [MemberData(nameof(NewFamilyFixtures))]
    public void KvCachedLogitsEqualFullRecompute(string fixture)
    {
        var model = Load(fixture);
        if (model.Config.RopeScaling is { IsLongRope: true } rs)
        {
            var shortOnly = new TransformerModel(model.Config with { RopeScaling = rs with { OriginalMaxPositionEmbeddings = 32 } });
            foreach (var (name, p) in model.NamedParameters) p.Span.CopyTo(shortOnly.Parameter(name).Span);
            model = shortOnly;
        }
        int vocab = model.Config.VocabSize;
        var ids = Enumerable.Range(0, 20).Select(i => (i * 11 + 5) % vocab).ToArray();
        GenerationTests.AssertChunkedCacheEqualsFullPass(model, ids, [6, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]);
        GenerationTests.AssertChunkedCacheEqualsFullPass(model, ids, [3, 7, 2, 8]);
    }

    [Theory]
    [InlineData("qwen3-qk-norm", "model.layers.1.self_attn.k_norm.weight", "model.layers.0.post_attention_layernorm.weight")]
    [InlineData("gemma2-softcap-window", "model.layers.2.pre_feedforward_layernorm.weight", "model.layers.0.post_feedforward_layernorm.weight")]
    [InlineData("gemma3-local-global", "model.layers.0.self_attn.q_norm.weight", "model.layers.1.pre_feedforward_layernorm.weight")]
    [InlineData("phi3-longrope", "model.layers.0.self_attn.qkv_proj.weight", "model.layers.1.mlp.gate_up_proj.weight")]
    [InlineData("smollm3-nope", "model.layers.2.self_attn.q_proj.weight", "model.layers.3.mlp.down_proj.weight")]
    [InlineData("olmo2-post-norm", "model.layers.0.self_attn.q_norm.weight", "model.layers.2.post_feedforward_layernorm.weight")]
    [InlineData("gpt-neox-pythia", "gpt_neox.layers.1.attention.query_key_value.weight", "embed_out.weight")]
    [InlineData("gpt-neox-v5-sequential", "gpt_neox.layers.0.mlp.dense_4h_to_h.bias", "gpt_neox.final_layer_norm.bias")]
    [InlineData("stablelm2-qkv-bias", "model.layers.1.post_attention_layernorm.bias", "model.norm.bias")]
    [InlineData("phi2-parallel-head-bias", "model.layers.1.self_attn.dense.bias", "lm_head.bias")]
    [InlineData("opt-125m-shape", "model.decoder.embed_positions.weight", "model.decoder.final_layer_norm.bias")]
    [InlineData("opt-350m-shape", "model.decoder.project_in.weight", "model.decoder.layers.1.final_layer_norm.weight")]
    [InlineData("exaone4-hybrid-nope", "model.layers.3.self_attn.k_norm.weight", "model.layers.0.post_feedforward_layernorm.weight")]
    [InlineData("ernie45-interleaved-rope", "model.layers.1.mlp.down_proj.bias", "model.layers.0.self_attn.o_proj.bias")]
    [InlineData("hunyuan-qk-norm-after-rope", "model.layers.1.self_attn.query_layernorm.weight", "model.layers.0.self_attn.key_layernorm.weight")]
    [InlineData("olmo1-nonparametric-norm", "model.layers.1.mlp.up_proj.weight", "model.embed_tokens.weight")]
    [InlineData("bloomz-save-pretrained", "transformer.word_embeddings_layernorm.weight", "transformer.h.0.mlp.dense_4h_to_h.weight")]
    [InlineData("lfm2-hybrid-conv", "model.layers.0.conv.conv.weight", "model.layers.2.self_attn.q_layernorm.weight")]
    [InlineData("lfm2-conv-bias-attn-idxs", "model.layers.2.conv.conv.bias", "lm_head.weight")]
    [InlineData("glm-edge-partial-interleaved", "model.layers.1.mlp.gate_up_proj.weight", "model.layers.0.self_attn.k_proj.bias")]
    [InlineData("starcoder2-window-bias", "model.layers.1.mlp.c_fc.bias", "model.norm.bias")]
    [InlineData("gpt-bigcode-multi-query", "transformer.h.1.attn.c_attn.weight", "transformer.wpe.weight")]
    [InlineData("gpt-bigcode-multi-head", "transformer.h.0.attn.c_attn.bias", "transformer.ln_f.bias")]
    [InlineData("gpt-neo-local-global", "transformer.h.1.attn.attention.out_proj.bias", "transformer.wpe.weight")]
    [InlineData("helium-interleaved-rope", "model.layers.1.mlp.down_proj.bias", "model.layers.0.self_attn.v_proj.bias")]
    [InlineData("granite4-hybrid-mamba", "model.layers.2.mamba.A_log", "model.layers.1.shared_mlp.input_linear.weight")]
    [InlineData("granite4-dense-rope", "model.layers.2.self_attn.o_proj.bias", "lm_head.weight")]
    [InlineData("falcon-h1-mup", "model.layers.1.mamba.norm.weight", "model.final_layernorm.weight")]
    [InlineData("falcon-h1-no-norm-bias", "model.layers.0.mamba.out_proj.bias", "model.layers.1.feed_forward.up_proj.bias")]
    public void SaveAndLoadRoundTripsToTheFamilysNamesAndKeys(string fixture, string tensorA, string tensorB)
    {
        var model = Load(fixture);
        string dir = Path.Combine(_temp, fixture);
        ModelIO.Save(model, dir);
        using (var reader = CheckpointReader.Open(dir))
        {
            var names = reader.Shapes().Keys.ToHashSet();
            using var original = CheckpointReader.Open(Fixtures.Dir(fixture));
            // Exactly the HF names (tied: no lm_head), less the buffers loading skips (Pythia's attention masks).
            var skipped = CheckpointNames.Bind(model.Config, original).Ignored;
            Assert.Equal(original.Shapes().Keys.Except(skipped).Order(), names.Order());
            Assert.Contains(tensorA, names);
            Assert.Contains(tensorB, names);
            // Every tensor as the checkpoint had it: Phi-3's split projections are fused again in their order.
            foreach (var name in names) Assert.Equal(original.Read(name), reader.Read(name));
        }
        var saved = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "config.json")))!.AsObject();
        var source = JsonNode.Parse(File.ReadAllText(Path.Combine(Fixtures.Dir(fixture), "config.json")))!.AsObject();
        Assert.Equal((string)source["model_type"]!, (string)saved["model_type"]!);
        Assert.Equal((string)source["architectures"]![0]!, (string)saved["architectures"]![0]!);
        foreach (var (key, value) in source)
            if (key != "torch_dtype")
                Assert.True(SameJson(value, saved[key]), $"{fixture}: config key '{key}' changed from {value?.ToJsonString()} to {saved[key]?.ToJsonString()}");
        var loaded = ModelIO.Load(dir);
        Assert.Equal(model.Config, loaded.Config);
        using var noGrad = Autograd.NoGrad();
        Assert.Equal(model.Forward(Ids, 1, Ids.Length).ToArray(), loaded.Forward(Ids, 1, Ids.Length).ToArray());
    }

    /// <summary>JSON equality with numbers compared by value (1000000.0 == 1000000, 1e-06 == 1E-06).</summary>
    private static bool SameJson(JsonNode? a, JsonNode? b) => (a, b) switch
    {
        (JsonObject oa, JsonObject ob) => oa.Count == ob.Count && oa.All(p => ob.ContainsKey(p.Key) && SameJson(p.Value, ob[p.Key])),
        (JsonArray xa, JsonArray xb) => xa.Count == xb.Count && xa.Zip(xb).All(p => SameJson(p.First, p.Second)),
        (JsonValue va, JsonValue vb) when va.GetValueKind() == System.Text.Json.JsonValueKind.Number && vb.GetValueKind() == System.Text.Json.JsonValueKind.Number
            => va.GetValue<double>() == vb.GetValue<double>(),
        _ => JsonNode.DeepEquals(a, b),
    };

    /// <summary>SmolLM3's NoPE layers: the config's list, else transformers' default from no_rope_layer_interval
    /// (layer i rotates unless i + 1 is a multiple of it); a layer without RoPE ignores positions altogether.</summary>
    [Fact]
    public void SmolLM3NoRopeLayersComeFromTheListOrTheInterval()
    {
        var fixture = ModelConfig.Load(Fixtures.Dir("smollm3-nope"));
        Assert.Equal([true, true, false, true], fixture.RopeLayers);
        string Json(string extra) => "{\"model_type\":\"smollm3\",\"vocab_size\":10,\"hidden_size\":8,\"num_hidden_layers\":8,\"num_attention_heads\":2,\"intermediate_size\":16" + extra + "}";
        ModelConfig Parse(string extra) => ModelConfig.Parse(Json(extra));
        Assert.Equal([true, true, true, false, true, true, true, false], Parse("").RopeLayers);
        Assert.Equal([true, false, true, false, true, false, true, false], Parse(",\"no_rope_layer_interval\":2").RopeLayers);
        Assert.Equal(2_000_000, Parse("").RopeTheta);
        foreach (var (extra, message) in new[]
        {
            (",\"no_rope_layers\":[1,1,0]", "one 0 or 1 per layer (8)"),
            (",\"no_rope_layers\":[1,1,0,2,1,1,1,1]", "no_rope_layers[3]"),
            (",\"no_rope_layer_interval\":0", "no_rope_layer_interval"),
            (",\"use_sliding_window\":true", "use_sliding_window"),
        })
            Assert.Contains(message, Assert.ThrowsAny<Exception>(() => Parse(extra)).Message);

        // Layer 2 uses no positions: with every layer NoPE, shifting all positions changes nothing at all.
        var model = Load("smollm3-nope");
        var nope = new TransformerModel(model.Config with { RopeLayers = [false, false, false, false] });
        foreach (var (name, p) in model.NamedParameters) p.Span.CopyTo(nope.Parameter(name).Span);
        int[] ids = Ids[..6];
        using var noGrad = Autograd.NoGrad();
        var at0 = nope.Forward(ids, 1, ids.Length).ToArray();
        var at5 = nope.Forward(ids, 1, ids.Length, positions: Enumerable.Range(5, ids.Length).ToArray()).ToArray();
        Assert.Equal(at0, at5);
        Assert.NotEqual(model.Forward(ids, 1, ids.Length).ToArray(), at0);
    }

    [Fact]
    public void GemmaLayerTypesComeFromTheConfigOrTheFamilysPattern()
    {
        var gemma2 = ModelConfig.Load(Fixtures.Dir("gemma2-softcap-window"));
        Assert.Equal([true, false, true], gemma2.SlidingLayers);   // no layer_types: every even layer
        Assert.Equal((5, (int?)null, 5), (gemma2.WindowOf(0), gemma2.WindowOf(1), gemma2.WindowOf(2)));
        Assert.Equal((24.0, 2.0, 3.0), (gemma2.QueryPreAttnScalar, gemma2.AttnLogitSoftcap, gemma2.FinalLogitSoftcap));
        Assert.Equal((ModelFamily.Gemma2, true, 1f, true, true, false), (gemma2.Family, gemma2.TieWordEmbeddings, gemma2.NormWeightOffset, gemma2.SandwichNorms, gemma2.ScaledEmbedding, gemma2.QkNorm));
        Assert.Equal(HiddenActivation.GeluTanh, gemma2.Activation);

        var gemma3 = ModelConfig.Load(Fixtures.Dir("gemma3-local-global"));
        Assert.Equal([true, false, true], gemma3.SlidingLayers);
        Assert.Equal((10000.0, 1e6, (double?)null, (double?)null), (gemma3.LocalRopeTheta, gemma3.RopeTheta, gemma3.AttnLogitSoftcap, gemma3.FinalLogitSoftcap));
        Assert.Equal(new RopeScaling("linear", 8, 0, 0, 0), gemma3.RopeScaling);
        Assert.True(gemma3.QkNorm);

        var phi3 = ModelConfig.Load(Fixtures.Dir("phi3-longrope"));
        Assert.Equal(("longrope", 8.0, 8), (phi3.RopeScaling!.Type, phi3.RopeScaling.Factor, phi3.RopeScaling.OriginalMaxPositionEmbeddings));
        Assert.Equal([1.0, 1.3, 2.1, 3.7], phi3.RopeScaling.ShortFactor);
        Assert.Equal((float)Math.Sqrt(2), phi3.RopeAttentionFactor);
        Assert.Equal((false, true), (phi3.UsesLongRopeFactors(7), phi3.UsesLongRopeFactors(8)));
        // inv_freq = 1 / (factor · θ^(2j/d)), as transformers forms it in float32.
        Assert.Equal(1f / (11f * MathF.Pow(10000f, 0.75f)), phi3.RopeFrequencies(longContext: true)[3], 1e-12f);
        Assert.Equal(1f / 1.3f / MathF.Pow(10000f, 0.25f), phi3.RopeFrequencies()[1], 1e-9f);
        // Phi3Config reads rope_scaling type yarn (and su) as longrope, its factor unused; written back as longrope.
        var phi3Yarn = ModelConfig.Load(Fixtures.Dir("phi3-yarn-type-longrope"));
        Assert.Equal(("longrope", 8.0, 8), (phi3Yarn.RopeScaling!.Type, phi3Yarn.RopeScaling.Factor, phi3Yarn.RopeScaling.OriginalMaxPositionEmbeddings));
        Assert.Equal(phi3Yarn with { Source = null }, ModelConfig.Parse((phi3Yarn with { Source = null }).ToJson()) with { Source = null });
        // The pre-training length is Phi3Config's top-level attribute (default 4096), never rope_scaling's.
        var phi3Inner = ModelConfig.Load(Fixtures.Dir("phi3-longrope-inner-original"));
        Assert.Equal((4096, 1f, false), (phi3Inner.RopeScaling!.OriginalMaxPositionEmbeddings, phi3Inner.RopeAttentionFactor, phi3Inner.UsesLongRopeFactors(63)));
        // llama3: a top-level original_max_position_embeddings equal to rope_scaling's is accepted (a different one is refused).
        var llama3 = ModelConfig.Parse("{\"model_type\":\"llama\",\"vocab_size\":10,\"hidden_size\":8,\"num_hidden_layers\":1,\"num_attention_heads\":2,\"intermediate_size\":16,"
            + "\"original_max_position_embeddings\":64,\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":8,\"low_freq_factor\":1,\"high_freq_factor\":4,\"original_max_position_embeddings\":64}}");
        Assert.Equal(64, llama3.RopeScaling!.OriginalMaxPositionEmbeddings);

        // transformers' defaults when keys are absent.
        const string minimal = "\"vocab_size\":10,\"hidden_size\":8,\"num_hidden_layers\":7,\"num_attention_heads\":2,\"num_key_value_heads\":1,\"intermediate_size\":16";
        var g2 = ModelConfig.Parse("{\"model_type\":\"gemma2\"," + minimal + "}");
        Assert.Equal((256, 256.0, 50.0, 30.0, 4096, true, 8192), (g2.HeadDim, g2.QueryPreAttnScalar, g2.AttnLogitSoftcap, g2.FinalLogitSoftcap, g2.SlidingWindow, g2.TieWordEmbeddings, g2.MaxPositions));
        Assert.Equal([true, false, true, false, true, false, true], g2.SlidingLayers);
        var g3 = ModelConfig.Parse("{\"model_type\":\"gemma3_text\"," + minimal + "}");
        Assert.Equal((256, (double?)null, (double?)null, 4096, 1e6, 10000.0, 131072), (g3.HeadDim, g3.AttnLogitSoftcap, g3.FinalLogitSoftcap, g3.SlidingWindow, g3.RopeTheta, g3.LocalRopeTheta, g3.MaxPositions));
        Assert.Equal([true, true, true, true, true, false, true], g3.SlidingLayers);   // sliding_window_pattern 6
        var g3p = ModelConfig.Parse("{\"model_type\":\"gemma3_text\",\"sliding_window_pattern\":3," + minimal + "}");
        Assert.Equal([true, true, false, true, true, false, true], g3p.SlidingLayers);
        // Qwen: a window only with use_sliding_window, on layers ≥ max_window_layers unless layer_types says otherwise.
        var qwen2 = ModelConfig.Load(Fixtures.Dir("qwen2-sliding-window"));
        Assert.Equal(5, qwen2.SlidingWindow);
        Assert.Equal([false, true, true], qwen2.SlidingLayers);
        Assert.Null(ModelConfig.Parse("{\"model_type\":\"qwen2\",\"sliding_window\":5," + minimal + "}").SlidingWindow);
        var q2 = ModelConfig.Parse("{\"model_type\":\"qwen2\",\"use_sliding_window\":true," + minimal + "}");
        Assert.Equal((4096, 7), (q2.SlidingWindow, q2.SlidingLayers!.Count(x => !x)));   // max_window_layers 28 > 7 layers
        var q3w = ModelConfig.Parse("{\"model_type\":\"qwen3\",\"use_sliding_window\":true,\"sliding_window\":3,\"layer_types\":[\"full_attention\",\"sliding_attention\",\"full_attention\",\"sliding_attention\",\"sliding_attention\",\"full_attention\",\"full_attention\"]," + minimal + "}");
        Assert.Equal([false, true, false, true, true, false, false], q3w.SlidingLayers);
        Assert.Equal(q3w, ModelConfig.Parse((q3w with { Source = null }).ToJson()));
        var q3 = ModelConfig.Parse("{\"model_type\":\"qwen3\"," + minimal + "}");
        Assert.Equal((128, false, false, 32768, false), (q3.HeadDim, q3.AttentionQkvBias, q3.TieWordEmbeddings, q3.MaxPositions, q3.SandwichNorms));
        // null soft caps and window switch them off, and survive a save.
        var off = ModelConfig.Parse("{\"model_type\":\"gemma2\",\"attn_logit_softcapping\":null,\"final_logit_softcapping\":null,\"sliding_window\":null," + minimal + "}");
        Assert.Equal(((double?)null, (double?)null, (int?)null), (off.AttnLogitSoftcap, off.FinalLogitSoftcap, off.SlidingWindow));
        Assert.Equal(off, ModelConfig.Parse(off.ToJson()));
    }

    [Theory]
    [InlineData("{\"model_type\":\"gemma3\",\"vocab_size\":10}", "model_type 'gemma3' is not supported")]
    [InlineData("{\"model_type\":\"falcon\",\"vocab_size\":10}", "supported: gpt2, llama, qwen2, mistral, qwen3, gemma2, gemma3_text, phi3, smollm3, olmo2, granite, gemma, gpt_neox, stablelm, phi, opt, exaone4, ernie4_5, hunyuan_v1_dense, olmo, bloom")]
    [InlineData("{\"model_type\":\"qwen3\",\"vocab_size\":10,\"hidden_size\":8,\"num_hidden_layers\":1,\"num_attention_heads\":2,\"intermediate_size\":16,\"use_sliding_window\":true,\"sliding_window\":0}", "field 'sliding_window' must be positive or null")]
    [InlineData("{\"model_type\":\"qwen3\",\"vocab_size\":10,\"hidden_size\":8,\"num_hidden_layers\":1,\"num_attention_heads\":2,\"intermediate_size\":16,\"rope_scaling\":{\"rope_type\":\"proportional\",\"factor\":4}}", "field 'rope_scaling' type 'proportional' is not supported for qwen3 (supported: default, linear, dynamic, llama3, yarn)")]
    [InlineData("{\"model_type\":\"gemma2\",\"vocab_size\":10,\"hidden_size\":8,\"num_hidden_layers\":2,\"num_attention_heads\":2,\"intermediate_size\":16,\"layer_types\":[\"full_attention\"]}", "field 'layer_types' must be a list of 2 entries")]
    [InlineData("{\"model_type\":\"gemma3_text\",\"vocab_size\":10,\"hidden_size\":8,\"num_hidden_layers\":2,\"num_attention_heads\":2,\"intermediate_size\":16,\"layer_types\":[\"full_attention\",\"chunked_attention\"]}", "field 'layer_types[1]' \"chunked_attention\" is not")]
    [InlineData("{\"model_type\":\"gemma2\",\"vocab_size\":10,\"hidden_size\":8,\"num_hidden_layers\":2,\"num_attention_heads\":2,\"intermediate_size\":16,\"hidden_activation\":\"silu\"}", "field 'hidden_activation' 'silu' is not supported")]
    [InlineData("{\"model_type\":\"gemma2\",\"vocab_size\":10,\"hidden_size\":8,\"num_hidden_layers\":2,\"num_attention_heads\":2,\"intermediate_size\":16,\"attn_logit_softcapping\":0}", "field 'attn_logit_softcapping' must be positive")]
    [InlineData("{\"model_type\":\"gemma2\",\"vocab_size\":10,\"hidden_size\":8,\"num_hidden_layers\":2,\"num_attention_heads\":2,\"intermediate_size\":16,\"use_bidirectional_attention\":true}", "field 'use_bidirectional_attention' true is not supported")]
    [InlineData("{\"model_type\":\"llama\",\"vocab_size\":10,\"hidden_size\":8,\"num_hidden_layers\":1,\"num_attention_heads\":2,\"intermediate_size\":16,\"pretraining_tp\":2,\"attention_bias\":true}", "field 'pretraining_tp' 2 with attention_bias true is not supported")]
    [InlineData("{\"model_type\":\"llama\",\"vocab_size\":10,\"hidden_size\":8,\"num_hidden_layers\":1,\"num_attention_heads\":2,\"intermediate_size\":16,\"pretraining_tp\":2,\"mlp_bias\":true}", "field 'pretraining_tp' 2 with mlp_bias true is not supported")]
    [InlineData("{\"model_type\":\"llama\",\"vocab_size\":10,\"hidden_size\":8,\"num_hidden_layers\":1,\"num_attention_heads\":2,\"intermediate_size\":16,\"pretraining_tp\":3}", "field 'pretraining_tp' 3 does not divide")]
    [InlineData("{\"model_type\":\"llama\",\"vocab_size\":10,\"hidden_size\":8,\"num_hidden_layers\":1,\"num_attention_heads\":2,\"intermediate_size\":16,\"original_max_position_embeddings\":16,\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":8,\"low_freq_factor\":1,\"high_freq_factor\":4,\"original_max_position_embeddings\":64}}", "field 'original_max_position_embeddings' 16 differs from rope_scaling.original_max_position_embeddings 64")]
    [InlineData("{\"model_type\":\"phi3\",\"vocab_size\":10,\"hidden_size\":8,\"num_hidden_layers\":1,\"num_attention_heads\":2,\"intermediate_size\":16,\"rope_scaling\":{\"type\":\"linear\",\"factor\":2}}", "field 'rope_scaling' type 'linear' is not supported for phi3 (transformers' Phi3Config accepts default and longrope, reading su and yarn as longrope)")]
    [InlineData("{\"model_type\":\"phi3\",\"vocab_size\":10,\"hidden_size\":8,\"num_hidden_layers\":1,\"num_attention_heads\":2,\"intermediate_size\":16,\"rope_parameters\":{\"rope_type\":\"dynamic\",\"factor\":2}}", "field 'rope_parameters' type 'dynamic' is not supported for phi3")]
    [InlineData("{\"model_type\":\"phi3\",\"vocab_size\":10,\"hidden_size\":8,\"num_hidden_layers\":1,\"num_attention_heads\":2,\"intermediate_size\":16,\"partial_rotary_factor\":0.75}", "partial_rotary_factor 0.75 gives 3 rotary channels of head_dim 4; it must be a positive even number")]
    [InlineData("{\"model_type\":\"phi3\",\"vocab_size\":10,\"hidden_size\":8,\"num_hidden_layers\":1,\"num_attention_heads\":2,\"intermediate_size\":16,\"rope_scaling\":{\"type\":\"longrope\",\"short_factor\":[1,1],\"long_factor\":[1,2,3]}}", "field 'rope_scaling.long_factor' must hold head_dim / 2 = 2 positive numbers, not 3")]
    [InlineData("{\"model_type\":\"phi3\",\"vocab_size\":10,\"hidden_size\":8,\"num_hidden_layers\":1,\"num_attention_heads\":2,\"intermediate_size\":16,\"rope_scaling\":{\"type\":\"su\",\"short_factor\":[1,1]}}", "field 'rope_scaling.long_factor' is missing")]
    [InlineData("{\"model_type\":\"llama\",\"vocab_size\":10,\"hidden_size\":8,\"num_hidden_layers\":1,\"num_attention_heads\":2,\"intermediate_size\":16,\"rope_scaling\":{\"type\":\"longrope\",\"short_factor\":[1,1],\"long_factor\":[1,2]}}", "type 'longrope' is not supported for llama")]
    [InlineData("{\"model_type\":\"llama\",\"vocab_size\":10,\"hidden_size\":8,\"num_hidden_layers\":1,\"num_attention_heads\":2,\"intermediate_size\":16,\"rope_parameters\":{\"rope_type\":\"default\"},\"rope_scaling\":{\"rope_type\":\"linear\",\"factor\":2}}", "field 'rope_scaling' is given together with 'rope_parameters'")]
    [InlineData("{\"model_type\":\"llama\",\"vocab_size\":10,\"hidden_size\":8,\"num_hidden_layers\":1,\"num_attention_heads\":2,\"intermediate_size\":16,\"rope_theta\":500000,\"rope_parameters\":{\"rope_type\":\"default\",\"rope_theta\":10000}}", "field 'rope_parameters.rope_theta' 10000 differs from the top-level rope_theta 500000")]
    [InlineData("{\"model_type\":\"llama\",\"vocab_size\":10,\"hidden_size\":8,\"num_hidden_layers\":1,\"num_attention_heads\":2,\"intermediate_size\":16,\"rope_parameters\":{\"rope_type\":\"default\",\"rope_theta\":10000,\"partial_rotary_factor\":0.5}}", "field 'rope_parameters.partial_rotary_factor' other than 1 is not supported")]
    [InlineData("{\"model_type\":\"llama\",\"vocab_size\":10,\"hidden_size\":8,\"num_hidden_layers\":1,\"num_attention_heads\":2,\"intermediate_size\":16,\"partial_rotary_factor\":0.5}", "field 'partial_rotary_factor' other than 1 is not supported")]
    [InlineData("{\"model_type\":\"llama\",\"vocab_size\":10,\"hidden_size\":8,\"num_hidden_layers\":1,\"num_attention_heads\":2,\"intermediate_size\":16,\"rope_parameters\":{\"rope_type\":\"longrope\",\"factor\":2}}", "field 'rope_parameters' type 'longrope' is not supported for llama")]
    [InlineData("{\"model_type\":\"llama\",\"vocab_size\":10,\"hidden_size\":8,\"num_hidden_layers\":1,\"num_attention_heads\":2,\"intermediate_size\":16,\"rope_parameters\":{\"rope_type\":\"yarn\",\"original_max_position_embeddings\":32}}", "field 'rope_parameters.factor' is missing")]
    [InlineData("{\"model_type\":\"llama\",\"vocab_size\":10,\"hidden_size\":8,\"num_hidden_layers\":1,\"num_attention_heads\":2,\"intermediate_size\":16,\"rope_parameters\":[10000]}", "field 'rope_parameters' must be an object or null")]
    [InlineData("{\"model_type\":\"qwen2\",\"vocab_size\":10,\"hidden_size\":8,\"num_hidden_layers\":2,\"num_attention_heads\":2,\"intermediate_size\":16,\"layer_types\":[\"full_attention\",\"sliding_attention\"],\"rope_parameters\":{\"full_attention\":{\"rope_theta\":10000},\"sliding_attention\":{\"rope_theta\":20000}}}", "field 'rope_parameters.sliding_attention' differs from rope_parameters.full_attention: qwen2 uses one RoPE for every layer")]
    [InlineData("{\"model_type\":\"gemma3_text\",\"vocab_size\":10,\"hidden_size\":8,\"num_hidden_layers\":2,\"num_attention_heads\":2,\"intermediate_size\":16,\"rope_parameters\":{\"full_attention\":{\"rope_theta\":1000000},\"sliding_attention\":{\"rope_type\":\"linear\",\"factor\":2}}}", "field 'rope_parameters.sliding_attention' must have rope_type 'default'")]
    [InlineData("{\"model_type\":\"gemma3_text\",\"vocab_size\":10,\"hidden_size\":8,\"num_hidden_layers\":2,\"num_attention_heads\":2,\"intermediate_size\":16,\"rope_parameters\":{\"sliding_attention\":{\"rope_theta\":10000}}}", "field 'rope_parameters.full_attention' is missing")]
    [InlineData("{\"model_type\":\"gemma3_text\",\"vocab_size\":10,\"hidden_size\":8,\"num_hidden_layers\":2,\"num_attention_heads\":2,\"intermediate_size\":16,\"rope_local_base_freq\":20000,\"rope_parameters\":{\"full_attention\":{\"rope_theta\":1000000},\"sliding_attention\":{\"rope_theta\":10000}}}", "field 'rope_local_base_freq' 20000 differs from rope_parameters.sliding_attention.rope_theta 10000")]
    [InlineData("{\"model_type\":\"granite\",\"vocab_size\":10,\"hidden_size\":8,\"num_hidden_layers\":1,\"num_attention_heads\":2,\"intermediate_size\":16,\"residual_multiplier\":0}", "field 'residual_multiplier' must be a positive number, not 0")]
    [InlineData("{\"model_type\":\"granite\",\"vocab_size\":10,\"hidden_size\":8,\"num_hidden_layers\":1,\"num_attention_heads\":2,\"intermediate_size\":16,\"logits_scaling\":\"8\"}", "field 'logits_scaling' must be a number")]
    public void BadFamilyConfigsAreRejectedNamingTheField(string json, string expected)
    {
        string path = Path.Combine(_temp, "config.json");
        File.WriteAllText(path, json);
        var e = Assert.Throws<UserInputException>(() => ModelConfig.Load(_temp));
        Assert.Contains(path, e.Message);
        Assert.Contains(expected, e.Message);
    }

    /// <summary>Gemma 1's activation: hidden_activation where the config has it (the 1.1 releases, over their hidden_act
    /// gelu), else hidden_act as written (gelu: the exact GELU); written back to both keys, so that transformers 4 (which
    /// reads hidden_activation) and 5 (hidden_act) run what AlignSharp ran.</summary>
    [Fact]
    public void GemmaOnesActivationComesFromHiddenActivationFirst()
    {
        var config = ModelConfig.Load(Fixtures.Dir("gemma1-geglu"));
        Assert.Equal(HiddenActivation.GeluTanh, config.Activation);
        var written = JsonNode.Parse(config.ToJson())!;
        Assert.Equal(("gelu_pytorch_tanh", "gelu_pytorch_tanh"), ((string)written["hidden_act"]!, (string)written["hidden_activation"]!));
        const string shape = "\"model_type\":\"gemma\",\"vocab_size\":10,\"hidden_size\":8,\"num_hidden_layers\":1,\"num_attention_heads\":2,\"intermediate_size\":16";
        var original = ModelConfig.Parse("{" + shape + ",\"hidden_act\":\"gelu\"}");
        Assert.Equal(HiddenActivation.Gelu, original.Activation);
        Assert.Null(JsonNode.Parse(original.ToJson())!["hidden_activation"]);
        Assert.Equal(HiddenActivation.GeluTanh, ModelConfig.Parse("{" + shape + "}").Activation);
        Assert.Equal((256, true), (original.HeadDim, original.TieWordEmbeddings));
    }

    /// <summary>GPT-NeoX's keys: transformers 4's rotary_pct (default 0.25) and rotary_emb_base (default 10000) are
    /// transformers 5's rope_parameters.partial_rotary_factor and rope_theta, each written back where its format keeps it;
    /// use_parallel_residual and attention_bias default to true; the two bases disagreeing is an error naming the field.</summary>
    [Fact]
    public void GptNeoXReadsItsRotaryKeysInBothFormats()
    {
        const string shape = "\"model_type\":\"gpt_neox\",\"vocab_size\":10,\"hidden_size\":32,\"num_hidden_layers\":1,\"num_attention_heads\":2,\"intermediate_size\":16";
        var defaults = ModelConfig.Parse("{" + shape + "}");
        Assert.Equal((16, 4, 10000.0), (defaults.HeadDim, defaults.RotaryDim, defaults.RopeTheta));
        Assert.Equal((true, true, true, true, false), (defaults.ParallelResidual!.Value, defaults.AttentionQkvBias, defaults.AttentionOutputBias, defaults.MlpBias, defaults.TieWordEmbeddings));
        Assert.Equal((HiddenActivation.Gelu, 1e-5), (defaults.Activation, defaults.NormEps));
        var legacy = ModelConfig.Parse("{" + shape + ",\"rotary_pct\":0.5,\"rotary_emb_base\":5000,\"use_parallel_residual\":false,\"attention_bias\":false}");
        Assert.Equal((8, 5000.0, false, false, true), (legacy.RotaryDim, legacy.RopeTheta, legacy.ParallelResidual!.Value, legacy.AttentionQkvBias, legacy.MlpBias));
        var written = JsonNode.Parse(legacy.ToJson())!;
        Assert.Equal((0.5, 5000.0, false), ((double)written["rotary_pct"]!, (double)written["rotary_emb_base"]!, (bool)written["use_parallel_residual"]!));
        Assert.Null(written["rope_theta"]);
        Assert.Null(written["partial_rotary_factor"]);
        var v5 = ModelConfig.Parse("{" + shape + ",\"use_parallel_residual\":false,\"attention_bias\":false,\"rope_parameters\":{\"rope_type\":\"default\",\"rope_theta\":5000,\"partial_rotary_factor\":0.5}}");
        Assert.Equal(legacy, v5);
        var v5Written = JsonNode.Parse(v5.ToJson())!;
        Assert.Equal(0.5, (double)v5Written["rope_parameters"]!["partial_rotary_factor"]!);
        Assert.Null(v5Written["rotary_pct"]);
        Assert.Equal(v5, ModelConfig.Parse(v5.ToJson()));
        var e = Assert.Throws<UserInputException>(() => ModelConfig.Parse("{" + shape + ",\"rotary_emb_base\":5000,\"rope_parameters\":{\"rope_theta\":10000}}"));
        Assert.Contains("field 'rope_parameters.rope_theta' 10000 differs from the top-level rotary_emb_base 5000", e.Message);
        e = Assert.Throws<UserInputException>(() => ModelConfig.Parse("{" + shape + ",\"rotary_pct\":0.1}"));
        Assert.Contains("gives 1 rotary channels of head_dim 16", e.Message);
        // A grouped-query NeoX config cannot exist: its projection is fused head by head.
        e = Assert.Throws<UserInputException>(() => new TransformerModel(defaults with { NumKvHeads = 1 }));
        Assert.Contains("one projection", e.Message);
    }

    /// <summary>StableLM: use_qkv_bias read and written; partial_rotary_factor 0.25 when absent, and in a transformers 5
    /// config written back where it stood (StableLmConfig keeps it at the top level beside rope_parameters); the 12B's
    /// per-head q/k LayerNorm and parallel residual are refused naming the key.</summary>
    [Fact]
    public void StableLmKeysAndWhatItRefuses()
    {
        const string shape = "\"model_type\":\"stablelm\",\"vocab_size\":10,\"hidden_size\":32,\"num_hidden_layers\":1,\"num_attention_heads\":2,\"intermediate_size\":16";
        var defaults = ModelConfig.Parse("{" + shape + "}");
        Assert.Equal((4, false, false, false, 1e-5), (defaults.RotaryDim, defaults.AttentionQkvBias, defaults.AttentionOutputBias, defaults.MlpBias, defaults.NormEps));
        Assert.Equal((NormKind.LayerNorm, HiddenActivation.Silu, false), (defaults.Norm, defaults.Activation, defaults.TieWordEmbeddings));
        var biased = ModelConfig.Parse("{" + shape + ",\"use_qkv_bias\":true}");
        Assert.True((bool)JsonNode.Parse(biased.ToJson())!["use_qkv_bias"]!);
        Assert.Contains("layers.0.attn.k.bias", new TransformerModel(biased).NamedParameters.Select(p => p.Name));
        var topLevel = ModelConfig.Parse("{" + shape + ",\"partial_rotary_factor\":0.5,\"rope_parameters\":{\"rope_type\":\"default\",\"rope_theta\":10000}}");
        var written = JsonNode.Parse(topLevel.ToJson())!;
        Assert.Equal((8, 0.5), (topLevel.RotaryDim, (double)written["partial_rotary_factor"]!));
        Assert.Null(written["rope_parameters"]!["partial_rotary_factor"]);
        var inside = ModelConfig.Parse("{" + shape + ",\"rope_parameters\":{\"rope_type\":\"default\",\"rope_theta\":10000,\"partial_rotary_factor\":0.5}}");
        Assert.Equal(topLevel, inside);
        Assert.Equal(0.5, (double)JsonNode.Parse(inside.ToJson())!["rope_parameters"]!["partial_rotary_factor"]!);
        Assert.Contains("field 'qk_layernorm' true is not supported",
            Assert.Throws<UserInputException>(() => ModelConfig.Parse("{" + shape + ",\"qk_layernorm\":true}")).Message);
        Assert.Contains("field 'use_parallel_residual' true is not supported",
            Assert.Throws<UserInputException>(() => ModelConfig.Parse("{" + shape + ",\"use_parallel_residual\":true}")).Message);
    }

    /// <summary>Phi-1/1.5/2's LM head has a bias: the tiled scorer and the fused sampler leave such a head to its whole
    /// logits, so log-probabilities without gradients are the bits of the pass with them (PPO's first ratio is 1) and the
    /// log-softmax of the full forward's logits, and greedy decoding with the KV cache takes each full pass's arg-max. The
    /// config: partial_rotary_factor 0.5 by default, num_key_value_heads null = heads, a tied head or qk_layernorm refused.</summary>
    [Fact]
    public void PhiHeadBiasReachesScoringAndGeneration()
    {
        var model = Load("phi2-parallel-head-bias");
        Assert.NotNull(model.HeadBias);
        int v = model.Config.VocabSize;
        int[] ids = Ids[..9];
        var targets = ids[1..].Append(4).ToArray();
        float[] noGrad, full;
        using (Autograd.NoGrad())
        {
            noGrad = TokenScoring.LogProbs(model, Ops.Reshape(model.Hidden(ids, 1, ids.Length), ids.Length, model.Config.HiddenSize), targets).LogProbs.ToArray();
            full = model.Forward(ids, 1, ids.Length).ToArray();
        }
        var withGrad = TokenScoring.LogProbs(model, Ops.Reshape(model.Hidden(ids, 1, ids.Length), ids.Length, model.Config.HiddenSize), targets).LogProbs.ToArray();
        Assert.Equal(withGrad, noGrad);
        for (int t = 0; t < ids.Length; t++)
        {
            var row = full.AsSpan(t * v, v).ToArray();
            double max = row.Max(), lse = max + Math.Log(row.Sum(z => Math.Exp(z - max)));
            Assert.True(Math.Abs(row[targets[t]] - lse - noGrad[t]) < 1e-4, $"t={t}: {noGrad[t]} vs {row[targets[t]] - lse}");
        }
        // Without the bias the scores differ: it is in them.
        var bias = model.HeadBias!.Span.ToArray();
        model.HeadBias.Span.Clear();
        using (Autograd.NoGrad())
            Assert.NotEqual(noGrad, TokenScoring.LogProbs(model, Ops.Reshape(model.Hidden(ids, 1, ids.Length), ids.Length, model.Config.HiddenSize), targets).LogProbs.ToArray());
        bias.CopyTo(model.HeadBias.Span);

        var greedy = AlignSharp.Text.Generator.Generate(model, [ids[..4]], new AlignSharp.Text.SamplingOptions { MaxNewTokens = 5, Temperature = 0, EosIds = [] })[0].Ids;
        var sequence = ids[..4].ToList();
        using (Autograd.NoGrad())
            foreach (int token in greedy)
            {
                var logits = model.Forward(sequence.ToArray(), 1, sequence.Count).ToArray().AsSpan((sequence.Count - 1) * v, v).ToArray();
                Assert.Equal(Array.IndexOf(logits, logits.Max()), token);
                sequence.Add(token);
            }

        const string shape = "\"model_type\":\"phi\",\"vocab_size\":10,\"hidden_size\":32,\"num_hidden_layers\":1,\"num_attention_heads\":2,\"intermediate_size\":16";
        var defaults = ModelConfig.Parse("{" + shape + ",\"num_key_value_heads\":null}");
        Assert.Equal((2, 8, HiddenActivation.GeluTanh, true), (defaults.NumKvHeads, defaults.RotaryDim, defaults.Activation, defaults.HasLmHeadBias));
        Assert.False((defaults with { Head = HeadKind.Scalar }).HasLmHeadBias);
        Assert.Contains("its LM head has a bias of its own",
            Assert.Throws<UserInputException>(() => ModelConfig.Parse("{" + shape + ",\"tie_word_embeddings\":true}")).Message);
        Assert.Contains("field 'qk_layernorm' true is not supported",
            Assert.Throws<UserInputException>(() => ModelConfig.Parse("{" + shape + ",\"qk_layernorm\":true}")).Message);
    }

    /// <summary>OPT's keys: ffn_dim, activation_function relu, enable_bias, word_embed_proj_dim (default hidden_size) and
    /// do_layer_norm_before (default true), each written back; no norm epsilon key (always 1e-5, none written); a tied head
    /// by default; LayerNorms without weights and _remove_final_layer_norm refused naming the key.</summary>
    [Fact]
    public void OptKeysAndWhatItRefuses()
    {
        const string shape = "\"model_type\":\"opt\",\"vocab_size\":10,\"hidden_size\":32,\"num_hidden_layers\":1,\"num_attention_heads\":2,\"ffn_dim\":64";
        var defaults = ModelConfig.Parse("{" + shape + "}");
        Assert.Equal((32, false, true, true, HiddenActivation.Relu, 1e-5, 2048), (defaults.EmbedDim, defaults.PostNorm, defaults.MlpBias, defaults.TieWordEmbeddings, defaults.Activation, defaults.NormEps, defaults.MaxPositions));
        var narrow = ModelConfig.Parse("{" + shape + ",\"word_embed_proj_dim\":16,\"do_layer_norm_before\":false,\"enable_bias\":false}");
        var written = JsonNode.Parse(narrow.ToJson())!;
        Assert.Equal((16, false, false, 64), ((int)written["word_embed_proj_dim"]!, (bool)written["do_layer_norm_before"]!, (bool)written["enable_bias"]!, (int)written["ffn_dim"]!));
        Assert.Null(written["layer_norm_eps"]);
        Assert.Equal(narrow, ModelConfig.Parse(narrow.ToJson()));
        var names = new TransformerModel(narrow).NamedParameters.Select(p => p.Name).ToList();
        Assert.Contains("project_in.weight", names);
        Assert.DoesNotContain("final_norm.weight", names);
        Assert.DoesNotContain("layers.0.attn.q.bias", names);
        Assert.Equal([2050, 32], new TransformerModel(narrow).Parameter("pos_embed.weight").Shape.ToArray());
        Assert.Contains("field 'layer_norm_elementwise_affine' false is not supported",
            Assert.Throws<UserInputException>(() => ModelConfig.Parse("{" + shape + ",\"layer_norm_elementwise_affine\":false}")).Message);
        Assert.Contains("field '_remove_final_layer_norm' true is not supported",
            Assert.Throws<UserInputException>(() => ModelConfig.Parse("{" + shape + ",\"_remove_final_layer_norm\":true}")).Message);
    }

    /// <summary>BLOOM's keys: hidden_size or n_embed, n_head or num_attention_heads, n_layer or num_hidden_layers, each read
    /// and written back as the config spells it, and nothing added (the family has no intermediate size, activation or
    /// position limit in its config; n_inner stays as it was, ignored as transformers ignores it); the MLP 4·hidden,
    /// GELU-tanh, eps 1e-5, a tied head; the slopes against transformers' build_alibi_tensor for 1 … 40 heads (the
    /// fixture's reference, float32 powers there: within two ulps); the post-LayerNorm residual and slow_but_exact refused naming the key. A hub checkpoint
    /// without the transformer. prefix is saved with it, as save_pretrained of BloomForCausalLM writes, keeping its spelling.</summary>
    [Fact]
    public void BloomKeysSlopesAndWhatItRefuses()
    {
        var hub = ModelConfig.Load(Fixtures.Dir("bloom-hub-n-embed"));
        Assert.Equal((48, 6, 2, 192, HiddenActivation.GeluTanh, 1e-5, true, 2048),
            (hub.HiddenSize, hub.NumHeads, hub.NumLayers, hub.IntermediateSize, hub.Activation, hub.NormEps, hub.TieWordEmbeddings, hub.MaxPositions));
        var written = JsonNode.Parse(hub.ToJson())!.AsObject();
        Assert.Equal((48, 6, 2), ((int)written["n_embed"]!, (int)written["num_attention_heads"]!, (int)written["n_layer"]!));
        foreach (var key in new[] { "hidden_size", "n_head", "num_hidden_layers", "intermediate_size", "hidden_act", "max_position_embeddings", "rope_theta" })
            Assert.False(written.ContainsKey(key), $"{key} written");
        Assert.True(written.ContainsKey("n_inner") && written["n_inner"] is null);
        Assert.Equal(hub, ModelConfig.Parse(hub.ToJson()));

        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(Fixtures.Dir("bloom-hub-n-embed"), "reference.json")));
        int checkedCounts = 0;
        foreach (var entry in doc.RootElement.GetProperty("alibi_slopes_by_heads").EnumerateObject())
        {
            int heads = int.Parse(entry.Name);
            var config = ModelConfig.Parse($"{{\"model_type\":\"bloom\",\"vocab_size\":10,\"hidden_size\":{2 * heads},\"n_layer\":1,\"n_head\":{heads}}}");
            var expected = entry.Value.EnumerateArray().Select(e => e.GetDouble()).ToArray();
            Assert.Equal(expected.Length, config.AlibiSlopes!.Length);
            for (int h = 0; h < heads; h++) Assert.True(Math.Abs(config.AlibiSlopes[h] - expected[h]) <= 2.5e-7 * expected[h], $"{heads} heads, head {h}: {config.AlibiSlopes[h]} vs {expected[h]}");
            checkedCounts++;
        }
        Assert.Equal(40, checkedCounts);

        const string shape = "\"model_type\":\"bloom\",\"vocab_size\":10,\"hidden_size\":16,\"n_layer\":1,\"n_head\":2";
        Assert.Contains("field 'apply_residual_connection_post_layernorm' true is not supported",
            Assert.Throws<UserInputException>(() => ModelConfig.Parse("{" + shape + ",\"apply_residual_connection_post_layernorm\":true}")).Message);
        Assert.Contains("field 'slow_but_exact' true is not supported",
            Assert.Throws<UserInputException>(() => ModelConfig.Parse("{" + shape + ",\"slow_but_exact\":true}")).Message);
        Assert.Contains("field 'hidden_size' is missing",
            Assert.Throws<UserInputException>(() => ModelConfig.Parse("{\"model_type\":\"bloom\",\"vocab_size\":10,\"n_layer\":1,\"n_head\":2}")).Message);
        var narrowMlp = ModelConfig.Parse("{" + shape + "}") with { IntermediateSize = 32 };
        Assert.Contains("MLP is always 4·hidden_size = 64 wide, not 32", Assert.Throws<UserInputException>(() => new TransformerModel(narrowMlp)).Message);

        var model = Load("bloom-hub-n-embed");
        string dir = Path.Combine(_temp, "bloom-hub");
        ModelIO.Save(model, dir);
        using (var reader = CheckpointReader.Open(dir))
        {
            using var original = CheckpointReader.Open(Fixtures.Dir("bloom-hub-n-embed"));
            Assert.Equal(original.Shapes().Keys.Select(n => "transformer." + n).Order(), reader.Shapes().Keys.Order());
        }
        var savedConfig = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "config.json")))!.AsObject();
        Assert.Equal((48, 6), ((int)savedConfig["n_embed"]!, (int)savedConfig["num_attention_heads"]!));
        using var noGrad = Autograd.NoGrad();
        Assert.Equal(model.Forward(Ids, 1, Ids.Length).ToArray(), ModelIO.Load(dir).Forward(Ids, 1, Ids.Length).ToArray());
    }

    /// <summary>Left padding against the reference's padded batch: BLOOM forms ALiBi from the running count of each row's
    /// real tokens, AlignSharp from key slots, the same distances for a row's contiguous tokens (softmax ignores the
    /// shift), so BLOOM matches with and without the positions the trainers pass. LFM2's reference zeroes the padding
    /// before each convolution (what transformers' apply_mask_to_padding_states is for; transformers' LFM2 leaves it
    /// unapplied, see ShortConv) and counts RoPE positions from the first real token: the unpadded case's logits.</summary>
    [Theory]
    [InlineData("bloom-hub-n-embed")]
    [InlineData("bloomz-save-pretrained")]
    [InlineData("lfm2-hybrid-conv")]
    [InlineData("lfm2-conv-bias-attn-idxs")]
    [InlineData("granite4-hybrid-mamba")]
    [InlineData("granite4-hybrid-experts")]
    [InlineData("granite4-dense-rope")]
    [InlineData("falcon-h1-mup")]
    [InlineData("falcon-h1-no-norm-bias")]
    public void LeftPaddedRowsMatchTheReferencesPaddedBatch(string fixture)
    {
        var model = Load(fixture);
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(Fixtures.Dir(fixture), "reference.json")));
        double absTol = doc.RootElement.GetProperty("tolerance").GetProperty("abs").GetDouble();
        double relTol = doc.RootElement.GetProperty("tolerance").GetProperty("rel").GetDouble();
        var padded = doc.RootElement.GetProperty("left_padded");
        int[] ids = padded.GetProperty("input_ids").EnumerateArray().Select(e => e.GetInt32()).ToArray();
        bool[] mask = padded.GetProperty("attention_mask").EnumerateArray().Select(e => e.GetInt32() == 1).ToArray();
        var expected = padded.GetProperty("logits").EnumerateArray().Select(r => r.EnumerateArray().Select(e => e.GetDouble()).ToArray()).ToArray();
        int pads = mask.Count(m => !m), vocab = model.Config.VocabSize;
        Assert.True(pads > 0 && mask[..pads].All(m => !m));
        int[] positions = Enumerable.Range(0, ids.Length).Select(t => Math.Max(0, t - pads)).ToArray();
        using var noGrad = Autograd.NoGrad();
        foreach (var given in model.Config.Table.Alibi ? new[] { null, positions } : [positions])
        {
            var logits = model.Forward(ids, 1, ids.Length, given, mask).ToArray();
            for (int t = pads; t < ids.Length; t++)
                for (int v = 0; v < vocab; v++)
                    Assert.True(Math.Abs(logits[t * vocab + v] - expected[t - pads][v]) <= absTol + relTol * Math.Abs(expected[t - pads][v]),
                        $"{fixture} t={t} v={v}: {logits[t * vocab + v]} vs {expected[t - pads][v]}");
        }
    }

    /// <summary>Granite 4.0's keys: layer_types ("mamba" / "attention"; absent: every layer a mixer, as transformers'
    /// layers_block_type), the mamba_* shape with transformers' defaults ("auto" head size kept as written), RoPE only with
    /// position_embedding_type "rope", the MLP width from shared_intermediate_size (not intermediate_size), experts refused
    /// (num_local_experts absent means 8), bad values named.</summary>
    [Fact]
    public void GraniteMoeHybridKeysLayerKindsAndExperts()
    {
        foreach (var fixture in new[] { "granite4-hybrid-mamba", "granite4-dense-rope" })
        {
            var config = ModelConfig.Load(Fixtures.Dir(fixture));
            Assert.Equal(config, ModelConfig.Parse(config.ToJson()));
        }
        var hybrid = ModelConfig.Load(Fixtures.Dir("granite4-hybrid-mamba"));
        Assert.Equal([true, false, true, true], hybrid.MambaLayers);
        Assert.Equal(new MambaShape(4, 16, 8, 2, 4, 2, true, false, 4), hybrid.Mamba);
        Assert.Equal((48, 164), (hybrid.IntermediateSize, hybrid.Mamba!.InProjRows));   // shared_intermediate_size; z 64 + xBC (64 + 2·2·8) + dt 4
        Assert.False(hybrid.UsesRope(1));   // "nope"
        var dense = ModelConfig.Load(Fixtures.Dir("granite4-dense-rope"));
        Assert.Equal((16, 40, true), (dense.Mamba!.HeadDim, dense.IntermediateSize, dense.UsesRope(0)));
        var written = JsonNode.Parse(dense.ToJson())!.AsObject();
        Assert.Equal(("auto", "rope", "[\"attention\",\"attention\",\"attention\"]"), ((string)written["mamba_d_head"]!, (string)written["position_embedding_type"]!, written["layer_types"]!.ToJsonString()));

        var withNull = JsonNode.Parse(hybrid.ToJson())!.AsObject();
        withNull["position_embedding_type"] = null;   // transformers' default: no position encoding, written back as null
        var nullType = ModelConfig.Parse(withNull.ToJsonString());
        Assert.Equal(("nope", "null"), (nullType.PositionEmbeddingType, JsonNode.Parse(nullType.ToJson())!["position_embedding_type"]?.ToJsonString() ?? "null"));
        const string shape = "\"model_type\":\"granitemoehybrid\",\"vocab_size\":10,\"hidden_size\":16,\"num_hidden_layers\":2,\"num_attention_heads\":2,\"shared_intermediate_size\":8";
        var defaults = ModelConfig.Parse("{" + shape + ",\"num_local_experts\":0,\"mamba_n_heads\":8}");
        Assert.Equal([true, true], defaults.MambaLayers);
        Assert.Equal(new MambaShape(8, 4, 256, 1, 4, 2, true, false, 256), defaults.Mamba);
        Assert.Equal((false, 1e-6, 2048), (defaults.TieWordEmbeddings, defaults.NormEps, defaults.MaxPositions));
        Assert.False(defaults.UsesRope(0));
        Assert.Null(defaults.Moe);   // num_local_experts 0: the shared MLP alone
        // Absent, transformers' 8 experts of 2 per token, intermediate_size (11008) wide, beside the shared MLP.
        var experts = ModelConfig.Parse("{" + shape + ",\"mamba_n_heads\":8}");
        Assert.Equal((new MoeShape(8, 2, 11008), 8), (experts.Moe, experts.IntermediateSize));
        Assert.Equal(new MoeShape(62, 4, 12), ModelConfig.Parse("{" + shape + ",\"num_local_experts\":62,\"num_experts_per_tok\":4,\"intermediate_size\":12,\"mamba_n_heads\":8}").Moe);
        var withExperts = ModelConfig.Load(Fixtures.Dir("granite4-hybrid-experts"));
        Assert.Equal((new MoeShape(6, 2, 12), 20), (withExperts.Moe, withExperts.IntermediateSize));
        Assert.Equal(withExperts, ModelConfig.Parse(withExperts.ToJson()));
        var model = new TransformerModel(withExperts);
        Assert.True(model.HasParameter("layers.2.mlp.gate.weight") && model.HasParameter("layers.2.moe.input.weight"));
        Assert.Contains("field 'num_local_experts' must be a positive integer, not -1",
            Assert.Throws<UserInputException>(() => ModelConfig.Parse("{" + shape + ",\"num_local_experts\":-1,\"mamba_n_heads\":8}")).Message);
        Assert.Equal(0.001, ModelConfig.Parse("{" + shape + ",\"output_router_logits\":true,\"mamba_n_heads\":8}").Moe!.RouterAuxLossCoef);
        Assert.Contains("field 'layer_types[1]' \"conv\" is not 'mamba' or 'attention'",
            Assert.Throws<UserInputException>(() => ModelConfig.Parse("{" + shape + ",\"num_local_experts\":0,\"mamba_n_heads\":8,\"layer_types\":[\"mamba\",\"conv\"]}")).Message);
        Assert.Contains("field 'mamba_n_heads' 5 must be positive and divide mamba_expand · hidden_size = 32",
            Assert.Throws<UserInputException>(() => ModelConfig.Parse("{" + shape + ",\"num_local_experts\":0,\"mamba_n_heads\":5}")).Message);
        Assert.Contains("field 'mamba_n_groups' 3 must be positive and divide mamba_n_heads 8",
            Assert.Throws<UserInputException>(() => ModelConfig.Parse("{" + shape + ",\"num_local_experts\":0,\"mamba_n_heads\":8,\"mamba_n_groups\":3}")).Message);
        Assert.Contains("field 'mamba_d_head' 6 · mamba_n_heads 8 must equal mamba_expand · hidden_size = 32",
            Assert.Throws<UserInputException>(() => ModelConfig.Parse("{" + shape + ",\"num_local_experts\":0,\"mamba_n_heads\":8,\"mamba_d_head\":6}")).Message);
    }

    /// <summary>The cache bytes a decoding step reads (what `bench sample`'s bound counts), by layer kind, computed by hand:
    /// the Granite 4.0 fixture (mamba, attention, mamba, mamba; kv 2 × 8; mixers of 4 heads × 16, state 8, conv 4 over
    /// 64 + 2·2·8 = 96 channels) at batch 2 over 5 positions: the attention layer's keys and values 2·2·16·4·5 = 1280
    /// bytes; each mixer its conv inputs 2·3·96·4 = 2304 and its state, read and written, 2·2·(4·16·8)·4 = 8192. LFM2's
    /// (conv, conv, attention, conv, attention; kv 2 × 16; width 3 over 64 channels): 2·2·32·4·5 = 2560 per attention layer,
    /// 2·2·64·4 = 1024 per convolution.</summary>
    [Fact]
    public void CacheStepBytesCountEachLayerKind()
    {
        Assert.Equal(1280 + 3 * (2304 + 8192), KvCache.StepBytes(ModelConfig.Load(Fixtures.Dir("granite4-hybrid-mamba")), 2, 5));
        Assert.Equal(2 * 2560 + 3 * 1024, KvCache.StepBytes(ModelConfig.Load(Fixtures.Dir("lfm2-hybrid-conv")), 2, 5));
    }

    /// <summary>Falcon-H1's keys: the mixer's width from mamba_d_ssm (default 1024; null: mamba_expand · hidden), "auto" head
    /// size, the gated norm only with mamba_rms_norm (per group, before the gate by default), the multipliers (each 1 by
    /// default; the lists of 2 and 5 checked), a mixer in every layer, written back and read again to the same config;
    /// time_step_limit other than (0, inf) refused.</summary>
    [Fact]
    public void FalconH1KeysAndMultipliers()
    {
        var mup = ModelConfig.Load(Fixtures.Dir("falcon-h1-mup"));
        Assert.Equal(mup, ModelConfig.Parse(mup.ToJson()));
        Assert.Equal((48, 6, 8, 2, true, 2), (mup.Mamba!.Inner, mup.Mamba.Heads, mup.Mamba.HeadDim, mup.Mamba.NormGroups, mup.Mamba.NormBeforeGate, mup.Mamba.Groups));
        Assert.Equal((0.390625, 0.0390625, 0.5859375, 0.5), (mup.Falcon!.Key, mup.Falcon.LmHead, mup.Falcon.MlpDown, mup.Falcon.SsmC));
        Assert.True(Enumerable.Range(0, mup.NumLayers).All(l => mup.IsMambaLayer(l) && mup.HasAttention(l)));
        var plain = ModelConfig.Load(Fixtures.Dir("falcon-h1-no-norm-bias"));
        Assert.Equal((0, true, true), (plain.Mamba!.NormGroups, plain.Mamba.ProjBias, plain.Mamba.OutBias));
        Assert.Equal(plain, ModelConfig.Parse(plain.ToJson()));

        const string shape = "\"model_type\":\"falcon_h1\",\"vocab_size\":10,\"hidden_size\":16,\"num_hidden_layers\":2,\"num_attention_heads\":2,\"intermediate_size\":8";
        var defaults = ModelConfig.Parse("{" + shape + ",\"mamba_n_heads\":8}");
        Assert.Equal((1024, 128, 256, 0, true), (defaults.Mamba!.Inner, defaults.Mamba.HeadDim, defaults.Mamba.StateSize, defaults.Mamba.NormGroups, defaults.Mamba.NormBeforeGate));
        Assert.Equal(new FalconMultipliers(1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1), defaults.Falcon);
        Assert.Equal(32, ModelConfig.Parse("{" + shape + ",\"mamba_n_heads\":8,\"mamba_d_ssm\":null}").Mamba!.Inner);   // expand 2 · 16
        Assert.Contains("field 'ssm_multipliers' must be a list of 5 numbers",
            Assert.Throws<UserInputException>(() => ModelConfig.Parse("{" + shape + ",\"mamba_n_heads\":8,\"ssm_multipliers\":[1,2]}")).Message);
        Assert.Contains("field 'mamba_n_heads' 5 must be positive and divide the mixer's 1024 channels",
            Assert.Throws<UserInputException>(() => ModelConfig.Parse("{" + shape + ",\"mamba_n_heads\":5}")).Message);
        Assert.Contains("field 'time_step_limit' [0.001,0.1] is not supported",
            Assert.Throws<UserInputException>(() => ModelConfig.Parse("{" + shape + ",\"mamba_n_heads\":8,\"time_step_limit\":[0.001,0.1]}")).Message);

        // Python's json writes transformers' default (0.0, inf) with a bare Infinity: read as that default (in any family's
        // config), not written back (transformers' default takes its place); a literal inside a string is left alone.
        var pythonJson = "{" + shape + ",\"mamba_n_heads\":8,\"time_step_limit\": [0.0, Infinity],\"note\":\"NaN Infinity\"}";
        var fromPython = ModelConfig.Parse(pythonJson);
        var rewritten = JsonNode.Parse(fromPython.ToJson())!.AsObject();
        Assert.False(rewritten.ContainsKey("time_step_limit"));
        Assert.Equal("NaN Infinity", (string)rewritten["note"]!);
        Assert.Equal(fromPython, ModelConfig.Parse(fromPython.ToJson()));
        Assert.Contains("field 'time_step_limit' [0.0,\"-Infinity\"] is not supported", Assert.Throws<UserInputException>(
            () => ModelConfig.Parse("{" + shape + ",\"mamba_n_heads\":8,\"time_step_limit\":[0.0,-Infinity]}")).Message);
        var granite = File.ReadAllText(Path.Combine(Fixtures.Dir("granite4-hybrid-mamba"), "config.json")).Replace("\"use_cache\"", "\"time_step_limit\": [0.0, Infinity], \"use_cache\"");
        Assert.Equal(ModelConfig.Load(Fixtures.Dir("granite4-hybrid-mamba")).Mamba, ModelConfig.Parse(granite).Mamba);
    }

    /// <summary>Granite MoE's keys: num_local_experts and num_experts_per_tok (transformers' 8 and 2 when absent), the
    /// experts' width from intermediate_size, output_router_logits with router_aux_loss_coef (0.001), written back and read
    /// again to the same config; a top-k outside [1, experts] or a negative coefficient refused by name; no dense MLP, an
    /// expert stack per kind instead.</summary>
    [Fact]
    public void GraniteMoeKeysAndExperts()
    {
        var top3 = ModelConfig.Load(Fixtures.Dir("granitemoe-top3-of-8"));
        Assert.Equal(new MoeShape(8, 3, 16), top3.Moe);
        Assert.Equal(top3, ModelConfig.Parse(top3.ToJson()));
        var defaults = ModelConfig.Load(Fixtures.Dir("granitemoe-defaults-bias"));
        Assert.Equal(new MoeShape(8, 2, 12), defaults.Moe);
        var rewritten = JsonNode.Parse(defaults.ToJson())!.AsObject();
        Assert.Equal((8, 2, 12), ((int)rewritten["num_local_experts"]!, (int)rewritten["num_experts_per_tok"]!, (int)rewritten["intermediate_size"]!));
        Assert.Equal(defaults, ModelConfig.Parse(defaults.ToJson()));

        var model = new TransformerModel(top3);
        Assert.Equal([8, 2 * 16, 32], model.Parameter("layers.0.moe.input.weight").ShapeArray);   // gate rows, then up
        Assert.Equal([8, 32, 16], model.Parameter("layers.1.moe.output.weight").ShapeArray);
        Assert.False(model.HasParameter("layers.0.mlp.gate.weight"));
        Assert.False(model.HasParameter("layers.0.mlp.down.weight"));

        const string shape = "\"model_type\":\"granitemoe\",\"vocab_size\":10,\"hidden_size\":16,\"num_hidden_layers\":2,\"num_attention_heads\":2,\"intermediate_size\":8";
        Assert.Contains("field 'num_experts_per_tok' 9 must be between 1 and num_local_experts 8",
            Assert.Throws<UserInputException>(() => ModelConfig.Parse("{" + shape + ",\"num_experts_per_tok\":9}")).Message);
        Assert.Contains("field 'num_experts_per_tok' 0 must be between 1",
            Assert.Throws<UserInputException>(() => ModelConfig.Parse("{" + shape + ",\"num_experts_per_tok\":0}")).Message);
        Assert.Contains("field 'num_local_experts' must be a positive integer",
            Assert.Throws<UserInputException>(() => ModelConfig.Parse("{" + shape + ",\"num_local_experts\":0}")).Message);
        // output_router_logits: the load-balancing loss's weight, router_aux_loss_coef (0.001 when absent), read and written back.
        Assert.Null(ModelConfig.Parse("{" + shape + ",\"output_router_logits\":false,\"router_aux_loss_coef\":0.5}").Moe!.RouterAuxLossCoef);
        Assert.Equal(0.001, ModelConfig.Parse("{" + shape + ",\"output_router_logits\":true}").Moe!.RouterAuxLossCoef);
        var aux = ModelConfig.Parse("{" + shape + ",\"output_router_logits\":true,\"router_aux_loss_coef\":0.05}");
        Assert.Equal(0.05, aux.Moe!.RouterAuxLossCoef);
        Assert.Equal(aux, ModelConfig.Parse(aux.ToJson()));
        Assert.Equal(new MoeShape(8, 2, 8), ModelConfig.Parse("{" + shape + ",\"output_router_logits\":false}").Moe);
        Assert.Contains("field 'router_aux_loss_coef' must be a finite number ≥ 0, not -1",
            Assert.Throws<UserInputException>(() => ModelConfig.Parse("{" + shape + ",\"output_router_logits\":true,\"router_aux_loss_coef\":-1}")).Message);
    }

    /// <summary>The routing: each row's k largest logits best first, an equal logit after the earlier expert, NaN refused;
    /// the assignments grouped by expert in order, with their inverse.</summary>
    [Fact]
    public void ExpertRoutingPicksTheLargestAndGroupsByExpert()
    {
        float[] logits = [0.5f, 2f, -1f, 2f, 0f,    // row 0: 2 (expert 1) before the equal 2 (expert 3), then 0.5
                          -3f, -2f, -1f, -4f, -5f]; // row 1: experts 2, 1, 0
        Assert.Equal([1, 3, 0, 2, 1, 0], ExpertRouting.TopK(logits, 2, 5, 3));
        Assert.Equal([3, 2], ExpertRouting.TopK(new float[] { 1f, 2f, 3f, 4f, 0f }, 1, 5, 2));
        Assert.Equal([4], ExpertRouting.TopK(new float[] { 1f, 2f, 3f, 4f, 9f }, 1, 5, 1));
        Assert.Contains("expert 2 is NaN (token 0)", Assert.Throws<ArithmeticException>(() => ExpertRouting.TopK(new float[] { 1f, 2f, float.NaN }, 1, 3, 1)).Message);

        var (order, starts, position) = ExpertRouting.ByExpert([1, 3, 0, 2, 1, 0], 5);
        Assert.Equal([0, 2, 4, 5, 6, 6], starts);
        Assert.Equal([2, 5, 0, 4, 3, 1], order);   // expert 0: assignments 2, 5; expert 1: 0, 4; expert 2: 3; expert 3: 1
        for (int a = 0; a < order.Length; a++) Assert.Equal(a, order[position[a]]);
    }

    /// <summary>LFM2's keys: layer_types ("conv" / "full_attention") or the older full_attn_idxs, written back as
    /// layer_types (and full_attn_idxs where the config had it); the MLP width from block_ff_dim or intermediate_size as
    /// transformers adjusts it (the fixtures' reference widths), left in the config's keys when they still give it and
    /// written plainly (block_auto_adjust_ff_dim false) when not; conv_L_cache, conv_bias; bad layer kinds named.</summary>
    [Fact]
    public void Lfm2KeysLayerKindsAndMlpWidth()
    {
        foreach (var fixture in new[] { "lfm2-hybrid-conv", "lfm2-conv-bias-attn-idxs" })
        {
            var config = ModelConfig.Load(Fixtures.Dir(fixture));
            using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(Fixtures.Dir(fixture), "reference.json")));
            Assert.Equal(doc.RootElement.GetProperty("mlp_width").GetInt32(), config.IntermediateSize);
            Assert.Equal(config, ModelConfig.Parse(config.ToJson()));
        }
        var hybrid = ModelConfig.Load(Fixtures.Dir("lfm2-hybrid-conv"));
        Assert.Equal((160, 3, false, true, 1e6, 1e-5), (hybrid.IntermediateSize, hybrid.ConvWidth, hybrid.ConvBias, hybrid.TieWordEmbeddings, hybrid.RopeTheta, hybrid.NormEps));
        Assert.Equal([true, true, false, true, false], hybrid.ConvLayers);
        var written = JsonNode.Parse(hybrid.ToJson())!.AsObject();
        Assert.Equal((200, 200, true), ((int)written["intermediate_size"]!, (int)written["block_ff_dim"]!, (bool)written["block_auto_adjust_ff_dim"]!));
        var idxs = ModelConfig.Load(Fixtures.Dir("lfm2-conv-bias-attn-idxs"));
        Assert.Equal([true, false, true], idxs.ConvLayers!);
        Assert.Equal((66, true, false), (idxs.IntermediateSize, idxs.ConvBias, idxs.TieWordEmbeddings));
        var idxsWritten = JsonNode.Parse(idxs.ToJson())!.AsObject();
        Assert.Equal("[\"conv\",\"full_attention\",\"conv\"]", idxsWritten["layer_types"]!.ToJsonString());
        Assert.Equal("[1]", idxsWritten["full_attn_idxs"]!.ToJsonString());

        var plain = hybrid with { IntermediateSize = 96, Source = null };
        var plainWritten = JsonNode.Parse(plain.ToJson())!.AsObject();
        Assert.Equal((96, false), ((int)plainWritten["intermediate_size"]!, (bool)plainWritten["block_auto_adjust_ff_dim"]!));
        Assert.Equal(plain, ModelConfig.Parse(plain.ToJson()));
        var resized = JsonNode.Parse((hybrid with { IntermediateSize = 96 }).ToJson())!.AsObject();
        Assert.False(resized.ContainsKey("block_ff_dim"));
        Assert.Equal(96, ModelConfig.Parse(resized.ToJsonString()).IntermediateSize);

        const string shape = "\"model_type\":\"lfm2\",\"vocab_size\":10,\"hidden_size\":16,\"num_hidden_layers\":2,\"num_attention_heads\":2";
        var defaults = ModelConfig.Parse("{" + shape + "}");
        Assert.Equal((8192, 3, 128000), (defaults.IntermediateSize, defaults.ConvWidth, defaults.MaxPositions));   // 12288 → int(2·12288/3) = 8192, a multiple of 256
        Assert.Equal([false, false], defaults.ConvLayers);
        Assert.Contains("field 'layer_types[1]' \"sliding_attention\" is not 'conv' or 'full_attention'",
            Assert.Throws<UserInputException>(() => ModelConfig.Parse("{" + shape + ",\"layer_types\":[\"conv\",\"sliding_attention\"]}")).Message);
        Assert.Contains("field 'full_attn_idxs[0]' 2 is not a layer index in [0, 2)",
            Assert.Throws<UserInputException>(() => ModelConfig.Parse("{" + shape + ",\"full_attn_idxs\":[2]}")).Message);
    }

    /// <summary>GLM's defaults (transformers' GlmConfig): attention_bias true on q, k and v only, head_dim 128, RoPE on
    /// half of each head (64 channels, interleaved), eps 1.5625e-7, untied; attention_bias false drops the q/k/v biases;
    /// both written back.</summary>
    [Fact]
    public void GlmDefaultsAndBiases()
    {
        const string shape = "\"model_type\":\"glm\",\"vocab_size\":10,\"hidden_size\":256,\"num_hidden_layers\":1,\"num_attention_heads\":2,\"num_key_value_heads\":1,\"intermediate_size\":32";
        var defaults = ModelConfig.Parse("{" + shape + "}");
        Assert.Equal((true, false, false, 128, 64, 1.5625e-7, false, 131072),
            (defaults.AttentionQkvBias, defaults.AttentionOutputBias, defaults.MlpBias, defaults.HeadDim, defaults.RotaryDim, defaults.NormEps, defaults.TieWordEmbeddings, defaults.MaxPositions));
        var noBias = ModelConfig.Parse("{" + shape + ",\"attention_bias\":false}");
        Assert.False(noBias.AttentionQkvBias);
        Assert.DoesNotContain("layers.0.attn.q.bias", new TransformerModel(noBias).NamedParameters.Select(p => p.Name));
        Assert.Equal(noBias, ModelConfig.Parse(noBias.ToJson()));
        Assert.False((bool)JsonNode.Parse(noBias.ToJson())!["attention_bias"]!);
        Assert.Equal(defaults, ModelConfig.Parse(defaults.ToJson()));
    }

    /// <summary>Helium's defaults (transformers' HeliumConfig): no biases, eps 1e-8, base 100000, head_dim 128, interleaved
    /// RoPE over the whole head, untied; attention_bias gives q, k and v biases and never o_proj's, mlp_bias the MLP's;
    /// both written back.</summary>
    [Fact]
    public void HeliumDefaultsAndBiases()
    {
        const string shape = "\"model_type\":\"helium\",\"vocab_size\":10,\"hidden_size\":256,\"num_hidden_layers\":1,\"num_attention_heads\":2,\"intermediate_size\":32";
        var defaults = ModelConfig.Parse("{" + shape + "}");
        Assert.Equal((false, false, false, 1e-8, 100000.0, 128, 128, false),
            (defaults.AttentionQkvBias, defaults.AttentionOutputBias, defaults.MlpBias, defaults.NormEps, defaults.RopeTheta, defaults.HeadDim, defaults.RotaryDim, defaults.TieWordEmbeddings));
        var biased = ModelConfig.Parse("{" + shape + ",\"attention_bias\":true,\"mlp_bias\":true}");
        var names = new TransformerModel(biased).NamedParameters.Select(p => p.Name).ToList();
        Assert.Contains("layers.0.attn.q.bias", names);
        Assert.Contains("layers.0.mlp.down.bias", names);
        Assert.DoesNotContain("layers.0.attn.o.bias", names);
        var written = JsonNode.Parse(biased.ToJson())!;
        Assert.Equal((true, true), ((bool)written["attention_bias"]!, (bool)written["mlp_bias"]!));
        Assert.Equal(biased, ModelConfig.Parse(biased.ToJson()));
    }

    /// <summary>Starcoder2's defaults (transformers' Starcoder2Config): biases everywhere (use_bias true), no window unless
    /// sliding_window says, GELU-tanh, eps 1e-5 under norm_epsilon, tied; use_bias false drops every bias; both written back.</summary>
    [Fact]
    public void Starcoder2DefaultsAndBiases()
    {
        const string shape = "\"model_type\":\"starcoder2\",\"vocab_size\":10,\"hidden_size\":16,\"num_hidden_layers\":1,\"num_attention_heads\":2,\"num_key_value_heads\":1,\"intermediate_size\":32";
        var defaults = ModelConfig.Parse("{" + shape + "}");
        Assert.Equal((true, true, true, (int?)null, HiddenActivation.GeluTanh, 1e-5, true, 4096),
            (defaults.AttentionQkvBias, defaults.AttentionOutputBias, defaults.MlpBias, defaults.SlidingWindow, defaults.Activation, defaults.NormEps, defaults.TieWordEmbeddings, defaults.MaxPositions));
        var plain = ModelConfig.Parse("{" + shape + ",\"use_bias\":false,\"norm_epsilon\":1e-6,\"sliding_window\":7}");
        Assert.Equal((false, false, false, 1e-6, 7), (plain.AttentionQkvBias, plain.AttentionOutputBias, plain.MlpBias, plain.NormEps, plain.SlidingWindow!.Value));
        Assert.DoesNotContain(new TransformerModel(plain).NamedParameters, p => p.Name.EndsWith(".bias") && !p.Name.Contains("norm"));
        var written = JsonNode.Parse(plain.ToJson())!;
        Assert.Equal((false, 1e-6, 7), ((bool)written["use_bias"]!, (double)written["norm_epsilon"]!, (int)written["sliding_window"]!));
        Assert.Equal(plain, ModelConfig.Parse(plain.ToJson()));
    }

    /// <summary>GPTBigCode's keys: GPT-2's (n_embd, n_head, …) or transformers' names for them, kept as spelled;
    /// multi_query (default true) gives one key/value head and a c_attn of D + 2·hd rows with k and v after q, false as
    /// many as query heads, fused head by head; written back; scale_attn_weights false refused naming the key.</summary>
    [Fact]
    public void GptBigCodeMultiQueryAndKeys()
    {
        var mq = ModelConfig.Load(Fixtures.Dir("gpt-bigcode-multi-query"));
        Assert.Equal((1, 4, 128, HiddenActivation.GeluTanh, true), (mq.NumKvHeads, mq.NumHeads, mq.IntermediateSize, mq.Activation, mq.TieWordEmbeddings));
        Assert.Equal(QkvLayout.Concatenated, mq.QkvLayout);
        Assert.Equal([64 + 2 * 16, 64], new TransformerModel(mq).Parameter("layers.0.attn.qkv.weight").Shape.ToArray());
        var mh = ModelConfig.Load(Fixtures.Dir("gpt-bigcode-multi-head"));
        Assert.Equal((4, 256, QkvLayout.PerHead), (mh.NumKvHeads, mh.IntermediateSize, mh.QkvLayout));
        Assert.False((bool)JsonNode.Parse(mh.ToJson())!["multi_query"]!);
        Assert.Equal(mh, ModelConfig.Parse(mh.ToJson()));
        var spelled = ModelConfig.Parse("{\"model_type\":\"gpt_bigcode\",\"vocab_size\":10,\"hidden_size\":32,\"num_hidden_layers\":1,\"num_attention_heads\":2,\"max_position_embeddings\":16}");
        Assert.Equal((32, 2, 16, 1), (spelled.HiddenSize, spelled.NumHeads, spelled.MaxPositions, spelled.NumKvHeads));
        var written = JsonNode.Parse(spelled.ToJson())!.AsObject();
        Assert.Equal((32, 16), ((int)written["hidden_size"]!, (int)written["max_position_embeddings"]!));
        Assert.False(written.ContainsKey("n_embd") || written.ContainsKey("n_positions"));
        Assert.Contains("field 'scale_attn_weights' false is not supported",
            Assert.Throws<UserInputException>(() => ModelConfig.Parse("{\"model_type\":\"gpt_bigcode\",\"vocab_size\":10,\"n_embd\":32,\"n_layer\":1,\"n_head\":2,\"scale_attn_weights\":false}")).Message);
    }

    /// <summary>GPT-Neo's keys: num_layers / num_heads (or transformers' names), attention_types expanded to local layers
    /// with window_size (default 256), written back as read while they still give the layers and one group per layer
    /// otherwise; an attention scale of 1; intermediate_size null (4·hidden) kept null; a wrong layer count named.</summary>
    [Fact]
    public void GptNeoAttentionTypesAndScale()
    {
        var neo = ModelConfig.Load(Fixtures.Dir("gpt-neo-local-global"));
        Assert.Equal([false, true, false, true], Enumerable.Range(0, 4).Select(neo.IsSlidingLayer));
        Assert.Equal((5, 1f, 192), (neo.SlidingWindow!.Value, neo.AttentionScale, neo.IntermediateSize));
        var written = JsonNode.Parse(neo.ToJson())!.AsObject();
        Assert.Equal("[[[\"global\",\"local\"],2]]", written["attention_types"]!.ToJsonString());
        Assert.True(written.ContainsKey("intermediate_size") && written["intermediate_size"] is null);
        var allGlobal = neo with { SlidingWindow = null, SlidingLayers = null };
        var allGlobalJson = JsonNode.Parse(allGlobal.ToJson())!;
        Assert.Equal("[[[\"global\"],1],[[\"global\"],1],[[\"global\"],1],[[\"global\"],1]]", allGlobalJson["attention_types"]!.ToJsonString());
        Assert.Equal(allGlobal, ModelConfig.Parse(allGlobal.ToJson()) with { Source = null });
        const string shape = "\"model_type\":\"gpt_neo\",\"vocab_size\":10,\"hidden_size\":16,\"num_layers\":2,\"num_heads\":2";
        var defaults = ModelConfig.Parse("{" + shape + ",\"attention_types\":[[[\"global\",\"local\"],1]]}");
        Assert.Equal((256, 64, 2048, HiddenActivation.GeluTanh), (defaults.SlidingWindow!.Value, defaults.IntermediateSize, defaults.MaxPositions, defaults.Activation));
        Assert.Contains("field 'attention_types' gives 24 layers, not num_layers 2", Assert.Throws<UserInputException>(() => ModelConfig.Parse("{" + shape + "}")).Message);
        Assert.Contains("field 'attention_types[0]' \"sliding\" is not 'global' or 'local'",
            Assert.Throws<UserInputException>(() => ModelConfig.Parse("{" + shape + ",\"attention_types\":[[[\"sliding\"],2]]}")).Message);
    }

    /// <summary>EXAONE 4's RoPE follows its window: with sliding_window the sliding layers rotate and the full ones do not
    /// (layer_types, or sliding_window_pattern 4 without it); with sliding_window null every layer rotates and none
    /// slides; the default window is 4096. Rotating the full layer too fails the fixture's reference (a mutation check of
    /// this session), and a config whose rotating layers disagree with its window is refused.</summary>
    [Fact]
    public void ExaoneFourRotatesItsSlidingLayersOnly()
    {
        var hybrid = ModelConfig.Load(Fixtures.Dir("exaone4-hybrid-nope"));
        Assert.Equal([true, true, true, false], Enumerable.Range(0, 4).Select(hybrid.UsesRope));
        Assert.Equal([4, 4, 4, null], Enumerable.Range(0, 4).Select(hybrid.WindowOf));
        const string shape = "\"model_type\":\"exaone4\",\"vocab_size\":10,\"hidden_size\":16,\"num_hidden_layers\":2,\"num_attention_heads\":2,\"intermediate_size\":16";
        var plain = ModelConfig.Parse("{" + shape + ",\"sliding_window\":null}");
        Assert.True(plain.UsesRope(0) && plain.UsesRope(1) && plain.SlidingWindow == null);
        var typed = ModelConfig.Parse("{" + shape + ",\"layer_types\":[\"full_attention\",\"sliding_attention\"]}");
        Assert.Equal((4096, false, true), (typed.SlidingWindow!.Value, typed.UsesRope(0), typed.UsesRope(1)));
        Assert.Equal(typed, ModelConfig.Parse(typed.ToJson()));
        Assert.Contains("rotates exactly its sliding layers",
            Assert.Throws<UserInputException>(() => new TransformerModel(typed with { RopeLayers = null })).Message);
    }

    /// <summary>partial_rotary_factor at the top level (transformers 4) or inside rope_parameters (transformers 5) is the
    /// same config, written back where each format keeps it; the two disagreeing is an error.</summary>
    [Fact]
    public void PartialRotaryFactorIsReadAndWrittenWhereEachFormatKeepsIt()
    {
        const string shape = "\"model_type\":\"phi3\",\"vocab_size\":10,\"hidden_size\":16,\"num_hidden_layers\":1,\"num_attention_heads\":2,\"intermediate_size\":16";
        var legacy = ModelConfig.Parse("{" + shape + ",\"partial_rotary_factor\":0.75}");
        Assert.Equal((8, 6, 3), (legacy.HeadDim, legacy.RotaryDim, legacy.RopeFrequencies().Length));
        Assert.Equal(0.75, (double)JsonNode.Parse(legacy.ToJson())!["partial_rotary_factor"]!);
        var v5 = ModelConfig.Parse("{" + shape + ",\"rope_parameters\":{\"rope_type\":\"default\",\"rope_theta\":10000,\"partial_rotary_factor\":0.75}}");
        Assert.Equal(legacy, v5);
        var written = JsonNode.Parse(v5.ToJson())!;
        Assert.Equal(0.75, (double)written["rope_parameters"]!["partial_rotary_factor"]!);
        Assert.Null(written["partial_rotary_factor"]);
        Assert.Equal(v5, ModelConfig.Parse(v5.ToJson()));
        var e = Assert.Throws<UserInputException>(() => ModelConfig.Parse("{" + shape + ",\"partial_rotary_factor\":0.5,\"rope_parameters\":{\"partial_rotary_factor\":0.75}}"));
        Assert.Contains("field 'partial_rotary_factor' 0.5 differs from rope_parameters.partial_rotary_factor 0.75", e.Message);
    }

    [Fact]
    public void EveryFamilyTableRoundTripsItsOwnConfig()
    {
        foreach (var table in FamilyTables.All)
        {
            // head_dim 8: GPT-NeoX's default rotary_pct 0.25 turns 2 channels of it.
            var k = table.Keys;
            var config = ModelConfig.Parse($"{{\"model_type\":\"{table.ModelType}\",\"vocab_size\":10,\"{k.HiddenSize}\":16,\"{k.NumLayers}\":3,\"{k.NumHeads}\":2"
                + (k.IntermediateSize != null ? $",\"{k.IntermediateSize}\":16" : "")
                + (table.Window == WindowRule.AttentionTypes ? ",\"attention_types\":[[[\"global\",\"local\",\"global\"],1]]" : "")   // GPT-Neo's default is 24 layers
                + (table.MambaLayers ? ",\"num_local_experts\":0,\"mamba_n_heads\":4,\"mamba_d_state\":8" : "")   // Granite 4.0: no experts; every layer a mixer
                + (table.ParallelMamba ? ",\"mamba_d_ssm\":32,\"mamba_n_heads\":4,\"mamba_d_state\":8" : "")   // Falcon-H1: a small mixer
                + (k.HeadDim != null ? $",\"{k.HeadDim}\":8}}" : "}"));
            Assert.Equal(table.Family, config.Family);
            var json = JsonNode.Parse(config.ToJson())!;
            Assert.Equal(table.ModelType, (string)json["model_type"]!);
            Assert.Equal(table.CausalLm, (string)json["architectures"]![0]!);
            Assert.Equal(config, ModelConfig.Parse(config.ToJson()));
            var scalar = config with { Head = HeadKind.Scalar, Source = null };
            Assert.Equal(table.SequenceClassification, (string)JsonNode.Parse(scalar.ToJson())!["architectures"]![0]!);
            Assert.Equal(scalar, ModelConfig.Parse(scalar.ToJson()));
            // Every family's fresh model has exactly the parameters its name table binds.
            Assert.Equal(CheckpointNames.ForSaving(config).Select(p => p.CanonicalName), new TransformerModel(config).NamedParameters.Select(p => p.Name));
        }
    }
}
