using System.Text.Json;
using System.Text.Json.Nodes;
using AlignSharp.Engine;
using AlignSharp.Models;
using AlignSharp.Models.Checkpoints;
using AlignSharp.Models.Lora;

namespace AlignSharp.Tests.Models;

/// <summary>
/// LoRA adapters in PEFT's format. The fixtures under tests/fixtures/adapters are written by
/// scripts/make_lora_fixtures.py (PyTorch, PEFT's tensor names and scaling) with the logits of the merged model from the
/// independent float64 reference forward; the adapted model and the merged model must both reproduce them.
/// </summary>
public sealed class LoraAdapterTests
{
    static readonly string AdapterRoot = Path.Combine(Path.GetDirectoryName(Fixtures.Root)!, "adapters");

    public static TheoryData<string> AdapterNames => new("llama-gqa-qv", "llama-gqa-all-rslora", "gpt2-hub-c_attn", "phi3-qkv",
        "llama-gqa-dora", "phi3-qkv-dora", "gpt2-hub-dora", "gpt-neox-pythia-all", "opt-350m-all-linear", "bloom-hub-qkv-mlp", "lfm2-in-out-w1",
        "granite4-mamba-in-out", "falcon-h1-mixer-attn", "granitemoe-attn-router");

    public static TheoryData<string> DoraAdapterNames => new("llama-gqa-dora", "phi3-qkv-dora", "gpt2-hub-dora");

    static (string Base, List<(int[] Ids, float[][] Logits)> Cases) Reference(string dir)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "reference.json")));
        string baseName = doc.RootElement.TryGetProperty("base", out var b) ? b.GetString()! : "";
        var cases = doc.RootElement.GetProperty("cases").EnumerateArray().Select(c => (
            c.GetProperty("input_ids").EnumerateArray().Select(e => e.GetInt32()).ToArray(),
            c.GetProperty("logits").EnumerateArray().Select(r => r.EnumerateArray().Select(e => e.GetSingle()).ToArray()).ToArray())).ToList();
        return (baseName, cases);
    }

    static void AssertLogits(TransformerModel model, List<(int[] Ids, float[][] Logits)> cases, double tolerance, string what)
    {
        using var scope = TensorScope.Begin();
        foreach (var (ids, expected) in cases)
        {
            var logits = model.Forward(ids, 1, ids.Length).Span;
            int v = model.Config.VocabSize;
            for (int t = 0; t < ids.Length; t++)
                for (int j = 0; j < v; j++)
                    Assert.True(Math.Abs(logits[t * v + j] - expected[t][j]) <= tolerance * (1 + Math.Abs(expected[t][j])),
                        $"{what}: t={t} v={j}: {logits[t * v + j]} vs {expected[t][j]}");
        }
    }

    [Theory]
    [MemberData(nameof(AdapterNames))]
    public void PeftAdapterMatchesMergedReference(string name)
    {
        string dir = Path.Combine(AdapterRoot, name);
        var (baseName, cases) = Reference(dir);
        var model = ModelIO.Load(Fixtures.Dir(baseName));
        model.Adapter = LoraAdapter.Load(dir, model);
        AssertLogits(model, cases, 1e-4, $"{name} adapted");

        // Adapters off: exactly the base model's own reference.
        model.Adapter.Enabled = false;
        AssertLogits(model, Reference(Fixtures.Dir(baseName)).Cases, 1e-4, $"{name} adapters off");

        // Merged into the weights (and saved and loaded as a plain checkpoint): the same logits without the adapter.
        var merged = ModelIO.Load(Fixtures.Dir(baseName));
        LoraAdapter.Load(dir, merged).MergeInto(merged);
        string outDir = Path.Combine(Path.GetTempPath(), "alignsharp-lora-merged-" + Guid.NewGuid().ToString("N"));
        try
        {
            ModelIO.Save(merged, outDir);
            AssertLogits(ModelIO.Load(outDir), cases, 1e-4, $"{name} merged");
        }
        finally { Directory.Delete(outDir, true); }
    }

    /// <summary>DoRA's gradients against PyTorch's (make_lora_fixtures.py: autograd through m / ‖W + scale·B·A‖ ⊙ (W +
    /// scale·B·A) with the norm detached, as PEFT): the mean next-token cross entropy of one case, every A, B and
    /// magnitude, through the gated MLP (Llama), Phi-3's fused q/k/v and gate/up (one magnitude over the parts) and
    /// GPT-2's Conv1D c_attn and c_fc.</summary>
    [Theory]
    [MemberData(nameof(DoraAdapterNames))]
    public void DoraGradientsMatchPyTorch(string name)
    {
        string dir = Path.Combine(AdapterRoot, name);
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "reference.json")));
        var grads = doc.RootElement.GetProperty("grads");
        var model = ModelIO.Load(Fixtures.Dir(doc.RootElement.GetProperty("base").GetString()!));
        foreach (var (_, p) in model.NamedParameters) p.RequiresGrad = false;
        model.Adapter = LoraAdapter.Load(dir, model);
        var ids = grads.GetProperty("input_ids").EnumerateArray().Select(e => e.GetInt32()).ToArray();
        using (TensorScope.Begin())
        {
            var logits = model.Forward(ids, 1, ids.Length).Reshape(-1, model.Config.VocabSize);
            var loss = Ops.CrossEntropy(logits, [.. ids[1..], -100]);
            Assert.Equal(grads.GetProperty("loss").GetDouble(), loss.Item(), 4);
            loss.Backward();
        }
        var expected = grads.GetProperty("tensors");
        Assert.Equal(expected.EnumerateObject().Count(), model.Adapter.NamedParameters.Count);
        foreach (var (pname, p) in model.Adapter.NamedParameters)
        {
            var want = expected.GetProperty(pname).EnumerateArray().Select(e => e.GetDouble()).ToArray();
            var got = p.Grad!.ToArray();
            Assert.Equal(want.Length, got.Length);
            double scale = want.Max(Math.Abs);
            for (int i = 0; i < want.Length; i++)
                Assert.True(Math.Abs(got[i] - want[i]) <= 1e-4 * scale + 1e-6, $"{pname}[{i}]: {got[i]} vs {want[i]}");
        }
    }

    /// <summary>KV-cached generation through unmerged DoRA layers (run apart from the fused decoding products) gives the
    /// merged model's tokens and log-probabilities.</summary>
    [Theory]
    [InlineData("llama-gqa-dora")]
    [InlineData("phi3-qkv-dora")]
    public void GenerationWithADoraAdapterIsTheMergedModels(string name)
    {
        string dir = Path.Combine(AdapterRoot, name);
        var (baseName, _) = Reference(dir);
        var model = ModelIO.Load(Fixtures.Dir(baseName));
        model.Adapter = LoraAdapter.Load(dir, model);
        var merged = ModelIO.Load(Fixtures.Dir(baseName));
        LoraAdapter.Load(dir, merged).MergeInto(merged);
        int[][] prompts = [[1, 2, 3], [5, 6, 7, 8, 9]];
        var options = new AlignSharp.Text.SamplingOptions { MaxNewTokens = 6, Temperature = 0, EosIds = [] };
        var adapted = AlignSharp.Text.Generator.Generate(model, prompts, options);
        var fromMerged = AlignSharp.Text.Generator.Generate(merged, prompts, options);
        for (int b = 0; b < prompts.Length; b++)
        {
            Assert.Equal(fromMerged[b].Ids, adapted[b].Ids);
            for (int i = 0; i < adapted[b].LogProbs.Length; i++) Assert.Equal(fromMerged[b].LogProbs[i], adapted[b].LogProbs[i], 3);
        }
    }

    /// <summary>With dropout on the adapter's input h, PEFT's DoRA layer is x·Wᵀ + b + (g − 1) ⊙ h·Wᵀ + g ⊙ scale·(h·Aᵀ)·Bᵀ
    /// (g = m / ‖W + scale·B·A‖): computed here by hand in double, the same mask drawn from the same seed.</summary>
    [Fact]
    public void DoraWithDropoutIsPeftsFormula()
    {
        var model = ModelIO.Load(Fixtures.Dir("qwen2-tied-bias"));   // q has a bias
        var adapter = LoraAdapter.Create(model, new LoraConfig(3, 6, 0.4, ["q_proj"]) { UseDora = true }, seed: 4);
        var module = adapter.Modules[0];
        var rng = new Random(8);
        foreach (var t in new[] { module.A, module.B }) { var span = t.Span; for (int i = 0; i < span.Length; i++) span[i] = (float)(rng.NextDouble() - 0.5); }
        var mag = module.Magnitude!.Span;
        for (int i = 0; i < mag.Length; i++) mag[i] *= 0.5f + (float)rng.NextDouble();
        int n = 5, d = model.Config.HiddenSize, outF = model.Config.QueryDim, r = 3;
        var x = Tensor.FromArray(Enumerable.Range(0, n * d).Select(i => (float)Math.Sin(i * 0.37)).ToArray(), n, d);
        var w = model.Parameter("layers.0.attn.q.weight");
        var bias = model.Parameter("layers.0.attn.q.bias");
        adapter.DropoutRng = new Random(21);
        float[] y;
        using (TensorScope.Begin()) y = adapter.DoraLinear("layers.0.attn.q", x, w, bias)!.ToArray();
        float[] h;
        using (TensorScope.Begin()) h = Ops.Dropout(x, 0.4f, new Random(21)).ToArray();
        Assert.Contains(h, v => v == 0);
        var W = w.ToArray(); var A = module.A.ToArray(); var B = module.B.ToArray(); var b = bias.ToArray(); var m = module.Magnitude!.ToArray();
        double s = module.Scale;
        for (int o = 0; o < outF; o++)
        {
            double norm = 0;
            for (int i = 0; i < d; i++)
            {
                double delta = 0;
                for (int k = 0; k < r; k++) delta += B[o * r + k] * A[k * d + i];
                norm += Math.Pow(W[o * d + i] + s * delta, 2);
            }
            double g = m[o] / Math.Sqrt(norm);
            for (int t = 0; t < n; t++)
            {
                double wx = 0, wh = 0, low = 0;
                for (int i = 0; i < d; i++) { wx += W[o * d + i] * x.Span[t * d + i]; wh += W[o * d + i] * h[t * d + i]; }
                for (int k = 0; k < r; k++)
                {
                    double ah = 0;
                    for (int i = 0; i < d; i++) ah += A[k * d + i] * h[t * d + i];
                    low += B[o * r + k] * ah;
                }
                double want = wx + b[o] + (g - 1) * wh + g * s * low;
                Assert.True(Math.Abs(y[t * outF + o] - want) <= 1e-4 * (1 + Math.Abs(want)), $"t={t} o={o}: {y[t * outF + o]} vs {want}");
            }
        }
    }

    /// <summary>A new DoRA adapter (B = 0, m = ‖W‖ per row) gives the base model's logits, and saves and loads in PEFT's
    /// layout: lora_magnitude_vector [out] beside lora_A and lora_B, use_dora true.</summary>
    [Fact]
    public void NewDoraAdapterStartsAsTheBaseModelAndSavesInPeftsLayout()
    {
        var model = ModelIO.Load(Fixtures.Dir("llama-gqa"));
        int[] ids = [3, 17, 42, 5, 9];
        float[] before;
        using (TensorScope.Begin()) before = model.Forward(ids, 1, ids.Length).ToArray();
        model.Adapter = LoraAdapter.Create(model, new LoraConfig(4, 8, TargetModules: [LoraConfig.AllLinear]) { UseDora = true }, seed: 1);
        float[] after;
        using (TensorScope.Begin()) after = model.Forward(ids, 1, ids.Length).ToArray();
        for (int i = 0; i < before.Length; i++) Assert.True(Math.Abs(before[i] - after[i]) <= 1e-5 * (1 + Math.Abs(before[i])), $"{i}: {after[i]} vs {before[i]}");
        // After a step changes B, the row norms are remade: the adapted model equals the merged one.
        foreach (var m in model.Adapter.Modules) m.B.Span.Fill(0.02f);
        var merged = ModelIO.Load(Fixtures.Dir("llama-gqa"));
        model.Adapter.MergeInto(merged);
        float[] adapted, fromMerged;
        using (TensorScope.Begin()) adapted = model.Forward(ids, 1, ids.Length).ToArray();
        using (TensorScope.Begin()) fromMerged = merged.Forward(ids, 1, ids.Length).ToArray();
        for (int i = 0; i < adapted.Length; i++) Assert.True(Math.Abs(adapted[i] - fromMerged[i]) <= 1e-4 * (1 + Math.Abs(adapted[i])), $"{i}: {adapted[i]} vs merged {fromMerged[i]}");
        Assert.NotEqual(after, adapted);
        string dir = Path.Combine(Path.GetTempPath(), "alignsharp-dora-save-" + Guid.NewGuid().ToString("N"));
        try
        {
            model.Adapter.Save(dir);
            using (var file = SafetensorsFile.Open(Path.Combine(dir, LoraAdapter.WeightsFileName)))
            {
                Assert.Equal(3 * 7 * model.Config.NumLayers, file.Names.Count);
                Assert.Equal([(long)model.Config.QueryDim], file.GetInfo("base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector").Shape);
                Assert.Equal([(long)model.Config.IntermediateSize], file.GetInfo("base_model.model.model.layers.1.mlp.up_proj.lora_magnitude_vector").Shape);
            }
            Assert.True((bool)JsonNode.Parse(File.ReadAllText(Path.Combine(dir, LoraConfig.FileName)))!["use_dora"]!);
            var loaded = LoraAdapter.Load(dir, model);
            Assert.Equal(model.Adapter.NamedParameters.Select(p => p.Name), loaded.NamedParameters.Select(p => p.Name));
            foreach (var ((_, x), (_, y)) in model.Adapter.NamedParameters.Zip(loaded.NamedParameters)) Assert.Equal(x.ToArray(), y.ToArray());
            // A magnitude without use_dora, or use_dora without magnitudes, is refused naming the tensor or module.
            var config = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, LoraConfig.FileName)))!.AsObject();
            config["use_dora"] = false;
            File.WriteAllText(Path.Combine(dir, LoraConfig.FileName), config.ToJsonString());
            Assert.Contains("lora_magnitude_vector' is a DoRA magnitude, but adapter_config.json does not say use_dora: true",
                Assert.Throws<UserInputException>(() => LoraAdapter.Load(dir, model)).Message);
            var plain = LoraAdapter.Create(model, new LoraConfig(4, 8, TargetModules: ["q_proj"]), seed: 1);
            plain.Save(dir);
            config["use_dora"] = true;
            File.WriteAllText(Path.Combine(dir, LoraConfig.FileName), config.ToJsonString());
            Assert.Contains("has no lora_magnitude_vector (use_dora: true)", Assert.Throws<UserInputException>(() => LoraAdapter.Load(dir, model)).Message);
            // PEFT settings that change the adapter's arithmetic are refused by name, not loaded as a plain LoRA; their
            // "off" values (null, false, []) load.
            plain.Save(dir);
            foreach (var (field, on) in new (string, JsonNode)[] { ("alora_invocation_tokens", new JsonArray(5, 6)), ("layer_replication", new JsonArray(new JsonArray(0, 2))),
                         ("use_qalora", true), ("lora_bias", true), ("target_parameters", new JsonArray("mlp.experts.gate_up_proj")) })
            {
                var peft = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, LoraConfig.FileName)))!.AsObject();
                peft[field] = on.DeepClone();
                File.WriteAllText(Path.Combine(dir, LoraConfig.FileName), peft.ToJsonString());
                Assert.Contains($"{field} asks for", Assert.Throws<UserInputException>(() => LoraAdapter.Load(dir, model)).Message);
                peft[field] = on is JsonArray ? new JsonArray() : false;
                File.WriteAllText(Path.Combine(dir, LoraConfig.FileName), peft.ToJsonString());
                LoraAdapter.Load(dir, model);
            }
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void NewAdapterStartsAsTheBaseModelExactly()
    {
        var model = ModelIO.Load(Fixtures.Dir("llama-gqa"));
        int[] ids = [3, 17, 42, 5, 9];
        float[] before;
        using (TensorScope.Begin()) before = model.Forward(ids, 1, ids.Length).ToArray();
        model.Adapter = LoraAdapter.Create(model, new LoraConfig(4, 8, TargetModules: [LoraConfig.AllLinear]), seed: 1);
        Assert.Equal(7 * model.Config.NumLayers, model.Adapter.Modules.Count);
        Assert.All(model.Adapter.Modules, m => Assert.Contains(m.A.Span.ToArray(), x => x != 0));
        using (TensorScope.Begin()) Assert.Equal(before, model.Forward(ids, 1, ids.Length).ToArray());
    }

    [Fact]
    public void KaimingUniformInitialisationOfA()
    {
        var model = ModelIO.Load(Fixtures.Dir("llama-gqa"));
        var adapter = LoraAdapter.Create(model, new LoraConfig(8, 16, TargetModules: ["q_proj"]), seed: 3);
        var a = adapter.Modules[0].A.Span.ToArray();
        float bound = 1f / MathF.Sqrt(model.Config.HiddenSize);
        Assert.All(a, x => Assert.InRange(x, -bound, bound));
        Assert.True(a.Max() > 0.8 * bound && a.Min() < -0.8 * bound, "A should fill its Kaiming-uniform range");
        Assert.All(adapter.Modules, m => Assert.All(m.B.Span.ToArray(), x => Assert.Equal(0f, x)));
    }

    /// <summary>An adapter whose target_modules is one string (PEFT full-matches it as a regular expression) and which
    /// carries a rank_pattern is saved again with both as read: rewritten as a list or dropped, PEFT could not load the
    /// continued adapter (a list entry is a module name; rank_pattern sizes the layers).</summary>
    [Fact]
    public void AContinuedAdapterKeepsItsTargetPatternAndRankPattern()
    {
        string source = Path.Combine(AdapterRoot, "llama-gqa-qv");
        string copy = Path.Combine(Path.GetTempPath(), "alignsharp-lora-pattern-" + Guid.NewGuid().ToString("N"));
        string saved = copy + "-saved";
        try
        {
            Directory.CreateDirectory(copy);
            File.Copy(Path.Combine(source, LoraAdapter.WeightsFileName), Path.Combine(copy, LoraAdapter.WeightsFileName));
            var config = JsonNode.Parse(File.ReadAllText(Path.Combine(source, LoraConfig.FileName)))!.AsObject();
            const string pattern = @"model\.layers\.\d+\.self_attn\.(q_proj|v_proj)";
            config["target_modules"] = pattern;
            config["rank_pattern"] = new JsonObject { ["model.layers.1.self_attn.v_proj"] = 4 };
            File.WriteAllText(Path.Combine(copy, LoraConfig.FileName), config.ToJsonString());

            var model = ModelIO.Load(Fixtures.Dir("llama-gqa"));
            var adapter = LoraAdapter.Load(copy, model);
            model.Adapter = adapter;
            AssertLogits(model, Reference(source).Cases, 1e-4, "pattern copy");   // the same adapter, whatever its config's form
            adapter.Save(saved);
            var written = JsonNode.Parse(File.ReadAllText(Path.Combine(saved, LoraConfig.FileName)))!.AsObject();
            Assert.Equal(pattern, (string?)written["target_modules"]);
            Assert.Equal(4, (int)written["rank_pattern"]!["model.layers.1.self_attn.v_proj"]!);
            Assert.Equal("all-linear", (string?)JsonNode.Parse(new LoraConfig(4, 8, TargetModules: [LoraConfig.AllLinear]).ToJson())!["target_modules"]);
        }
        finally
        {
            if (Directory.Exists(copy)) Directory.Delete(copy, true);
            if (Directory.Exists(saved)) Directory.Delete(saved, true);
        }
    }

    [Fact]
    public void SavedAdapterHasPeftNamesShapesAndConfig()
    {
        var model = ModelIO.Load(Fixtures.Dir("gpt2-hub"));
        var adapter = LoraAdapter.Create(model, new LoraConfig(4, 8, 0.1, ["c_attn"], UseRslora: true, FanInFanOut: true, BaseModel: "gpt2"), seed: 2);
        foreach (var m in adapter.Modules) m.B.Span.Fill(0.5f);
        string dir = Path.Combine(Path.GetTempPath(), "alignsharp-lora-save-" + Guid.NewGuid().ToString("N"));
        try
        {
            adapter.Save(dir);
            using (var file = SafetensorsFile.Open(Path.Combine(dir, LoraAdapter.WeightsFileName)))
            {
                Assert.Equal(2 * model.Config.NumLayers, file.Names.Count);
                int d = model.Config.HiddenSize;
                for (int i = 0; i < model.Config.NumLayers; i++)
                {
                    Assert.Equal([4L, d], file.GetInfo($"base_model.model.transformer.h.{i}.attn.c_attn.lora_A.weight").Shape);
                    Assert.Equal([3L * d, 4], file.GetInfo($"base_model.model.transformer.h.{i}.attn.c_attn.lora_B.weight").Shape);
                }
            }
            var config = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, LoraConfig.FileName)))!.AsObject();
            Assert.Equal("LORA", (string?)config["peft_type"]);
            Assert.Equal("CAUSAL_LM", (string?)config["task_type"]);
            Assert.Equal(4, (int)config["r"]!);
            Assert.Equal(8.0, (double)config["lora_alpha"]!);
            Assert.Equal(0.1, (double)config["lora_dropout"]!);
            Assert.Equal(["c_attn"], config["target_modules"]!.AsArray().Select(x => (string)x!));
            Assert.True((bool)config["use_rslora"]!);
            Assert.True((bool)config["fan_in_fan_out"]!);
            Assert.Equal("gpt2", (string?)config["base_model_name_or_path"]);

            var loaded = LoraAdapter.Load(dir, ModelIO.Load(Fixtures.Dir("gpt2-hub")));
            Assert.Equal(adapter.NamedParameters.Select(p => p.Name), loaded.NamedParameters.Select(p => p.Name));
            foreach (var ((_, x), (_, y)) in adapter.NamedParameters.Zip(loaded.NamedParameters)) Assert.Equal(x.ToArray(), y.ToArray());
            Assert.Equal(8 / MathF.Sqrt(4), loaded.Modules[0].Scale);
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void GradientsReachOnlyTheAdapter()
    {
        var model = ModelIO.Load(Fixtures.Dir("llama-gqa"));
        foreach (var (_, p) in model.NamedParameters) p.RequiresGrad = false;
        model.Adapter = LoraAdapter.Create(model, new LoraConfig(2, 4, TargetModules: ["q_proj", "down_proj"]), seed: 5);
        foreach (var m in model.Adapter.Modules) m.B.Span.Fill(0.01f); // B = 0 would leave A without gradient
        int[] ids = [1, 2, 3, 4];
        using (TensorScope.Begin())
        {
            var logits = model.Forward(ids, 1, ids.Length);
            Ops.CrossEntropy(logits.Reshape(-1, model.Config.VocabSize), [2, 3, 4, 5]).Backward();
        }
        Assert.All(model.Adapter.NamedParameters, p => Assert.Contains(p.Parameter.Grad!.ToArray(), g => g != 0));
        Assert.All(model.NamedParameters, p => Assert.Null(p.Parameter.Grad));
    }

    [Fact]
    public void UnknownTargetModuleIsAClearError()
    {
        var model = ModelIO.Load(Fixtures.Dir("llama-gqa"));
        var e = Assert.Throws<UserInputException>(() => LoraAdapter.Create(model, new LoraConfig(4, 8, TargetModules: ["q_proj", "c_attn"]), 1));
        Assert.Contains("'c_attn'", e.Message);
        Assert.Contains("q_proj", e.Message);
    }

    [Fact]
    public void AdapterForAnotherModelIsRejectedNamingTheTensor()
    {
        var model = ModelIO.Load(Fixtures.Dir("gpt2-hub"));
        var e = Assert.Throws<UserInputException>(() => LoraAdapter.Load(Path.Combine(AdapterRoot, "llama-gqa-qv"), model));
        Assert.Contains("self_attn.q_proj", e.Message);
        Assert.Contains(LoraAdapter.WeightsFileName, e.Message);
    }

    /// <summary>
    /// A LoRA run's final/ on a bf16 base, loaded merged with bf16 matrices (a trainer starting from it, frozen in bf16):
    /// every parameter bit-identical to merging a float32 copy and narrowing it, an adapted weight within one bf16
    /// rounding of base + scale·B·A in double, and no float32 copy of the matrices allocated on the way.
    /// </summary>
    [Fact]
    public void ALoraRunOnABf16BaseMergesIntoBf16WithoutAFloat32Copy()
    {
        string root = Directory.CreateTempSubdirectory("alignsharp-bf16-merge-").FullName;
        try
        {
            string baseDir = Path.Combine(root, "base"), adapterDir = Path.Combine(root, "final");
            var config = ModelPresets.Llama(vocabSize: 4096, hiddenSize: 256, layers: 2, heads: 4, kvHeads: 2);
            ModelIO.Save(TransformerModel.CreateRandom(config, seed: 3), baseDir, SafetensorsDtype.BF16);
            var adapter = LoraAdapter.Create(ModelIO.Load(baseDir), new LoraConfig(4, 8, 0, ["q_proj", "v_proj"], BaseModel: baseDir), 7);
            var rng = new Random(11);
            foreach (var m in adapter.Modules)
            {
                var b = m.B.Span;
                for (int i = 0; i < b.Length; i++) b[i] = (float)(rng.NextDouble() - 0.5);
            }
            adapter.Save(adapterDir);

            var viaFloat32 = ModelIO.LoadMerged(adapterDir);
            viaFloat32.StoreMatricesAsBf16();
            ModelIO.LoadMerged(adapterDir, bf16Matrices: true); // warm up: the first load also compiles and caches
            // This thread's count, not the process's: tests in other classes allocate in parallel with this one, and
            // loading and merging run on the calling thread (the engine's workers allocate nothing).
            long before = GC.GetAllocatedBytesForCurrentThread();
            var merged = ModelIO.LoadMerged(adapterDir, bf16Matrices: true);
            long allocated = GC.GetAllocatedBytesForCurrentThread() - before;

            foreach (var (name, p) in viaFloat32.NamedParameters)
            {
                Assert.Equal(p.IsBf16, merged.Parameter(name).IsBf16);
                Assert.Equal(p.ToArray(), merged.Parameter(name).ToArray());
            }
            // layers.1.attn.q.weight against base + scale·B·A in double.
            var module = adapter.Modules.First(m => m.Parts.Any(part => part.Prefix == "layers.1.attn.q"));
            var (_, first, rows) = module.Parts.First(part => part.Prefix == "layers.1.attn.q");
            var baseW = ModelIO.Load(baseDir).Parameter("layers.1.attn.q.weight").ToArray();
            var w = merged.Parameter("layers.1.attn.q.weight").ToArray();
            var (a, bAll) = (module.A.ToArray(), module.B.ToArray());
            int inF = module.A.Dim(1), r = module.Rank;
            for (int o = 0; o < rows; o++)
                for (int i = 0; i < inF; i++)
                {
                    double expected = baseW[o * inF + i];
                    for (int k = 0; k < r; k++) expected += module.Scale * (double)bAll[(first + o) * r + k] * a[k * inF + i];
                    Assert.True(Math.Abs(w[o * inF + i] - expected) <= Math.Abs(expected) / 256 + 1e-6, $"[{o},{i}]: {w[o * inF + i]} vs {expected}");
                }

            long matrixValues = merged.NamedParameters.Where(p => p.Parameter.IsBf16).Sum(p => (long)p.Parameter.Length);
            Console.WriteLine($"bf16 merged load allocated {allocated} bytes for {merged.ParameterBytes} bytes of parameters");
            Assert.True(allocated < merged.ParameterBytes + matrixValues, $"loading merged allocated {allocated} bytes; the parameters take {merged.ParameterBytes}");
        }
        finally { Directory.Delete(root, recursive: true); }
    }

    /// <summary>A copy of fixture adapter <paramref name="fixture"/> whose adapter_config.json <paramref name="edit"/> changes.</summary>
    static string EditedCopy(string fixture, Action<JsonObject> edit)
    {
        string source = Path.Combine(AdapterRoot, fixture);
        string copy = Directory.CreateTempSubdirectory("alignsharp-lora-config-").FullName;
        File.Copy(Path.Combine(source, LoraAdapter.WeightsFileName), Path.Combine(copy, LoraAdapter.WeightsFileName));
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(source, LoraConfig.FileName)))!.AsObject();
        edit(config);
        File.WriteAllText(Path.Combine(copy, LoraConfig.FileName), config.ToJsonString());
        return copy;
    }

    /// <summary>
    /// init_lora_weights values with which PEFT changes the base weights when it loads the adapter (LoraLayer.update_layer:
    /// pissa, pissa_niter_N, corda, olora and lora_ga subtract the initial scale·B·A from W; loftq quantises W) are refused
    /// naming the file and the field and saying how PEFT converts such an adapter; adding it to the unchanged base
    /// would give other log-probabilities.
    /// </summary>
    [Theory]
    [InlineData("pissa")]
    [InlineData("pissa_niter_4")]
    [InlineData("olora")]
    [InlineData("corda")]
    [InlineData("lora_ga")]
    [InlineData("loftq")]
    [InlineData("PiSSA")]
    public void InitialisationsThatChangeTheBaseWeightsAreRefused(string init)
    {
        string dir = EditedCopy("llama-gqa-qv", c => c["init_lora_weights"] = init);
        try
        {
            var e = Assert.Throws<UserInputException>(() => LoraAdapter.Load(dir, ModelIO.Load(Fixtures.Dir("llama-gqa"))));
            Assert.Contains(Path.Combine(dir, LoraConfig.FileName), e.Message);
            Assert.Contains("\"init_lora_weights\"", e.Message);
            Assert.Contains($"\"{init}\"", e.Message);
            Assert.Contains(init == "PiSSA" ? "PEFT does not know" : init == "loftq" ? "merge_and_unload" : "path_initial_model_for_weight_conversion", e.Message);
        }
        finally { Directory.Delete(dir, true); }
    }

    /// <summary>Values that only initialise A and B (which the file's tensors replace) load as plain LoRA, giving the
    /// fixture's reference logits, and a continued adapter is saved with the value its file had.</summary>
    [Theory]
    [InlineData("true")]
    [InlineData("false")]
    [InlineData("\"gaussian\"")]
    [InlineData("\"eva\"")]
    [InlineData("\"orthogonal\"")]
    public void InitialisationsOfAAndBAloneLoadAndAreKept(string init)
    {
        string dir = EditedCopy("llama-gqa-qv", c => c["init_lora_weights"] = JsonNode.Parse(init));
        string saved = dir + "-saved";
        try
        {
            var model = ModelIO.Load(Fixtures.Dir("llama-gqa"));
            model.Adapter = LoraAdapter.Load(dir, model);
            AssertLogits(model, Reference(Path.Combine(AdapterRoot, "llama-gqa-qv")).Cases, 1e-4, $"init_lora_weights {init}");
            model.Adapter.Save(saved);
            var written = JsonNode.Parse(File.ReadAllText(Path.Combine(saved, LoraConfig.FileName)))!["init_lora_weights"]!;
            Assert.Equal(init, written.ToJsonString());
            Assert.Equal("true", JsonNode.Parse(new LoraConfig(4, 8, TargetModules: ["q_proj"]).ToJson())!["init_lora_weights"]!.ToJsonString());
        }
        finally
        {
            Directory.Delete(dir, true);
            if (Directory.Exists(saved)) Directory.Delete(saved, true);
        }
    }

    /// <summary>A MiCA adapter (init_lora_weights "mica") computes as plain LoRA, so it loads (the fixture's reference
    /// logits), but PEFT trains its lora_A alone, so continuing it with --adapter is refused naming the field.</summary>
    [Fact]
    public void AMicaAdapterLoadsButIsNotContinued()
    {
        string dir = EditedCopy("llama-gqa-qv", c => c["init_lora_weights"] = "mica");
        try
        {
            var model = ModelIO.Load(Fixtures.Dir("llama-gqa"));
            model.Adapter = LoraAdapter.Load(dir, model);
            AssertLogits(model, Reference(Path.Combine(AdapterRoot, "llama-gqa-qv")).Cases, 1e-4, "mica");
            var options = new AlignSharp.Training.Sft.SftOptions { Out = "x", Adapter = dir };
            var e = Assert.Throws<UserInputException>(() => options.StartingAdapter(ModelIO.Load(Fixtures.Dir("llama-gqa")), null));
            Assert.Contains("\"init_lora_weights\" is \"mica\"", e.Message);
            Assert.Contains("--adapter", e.Message);
        }
        finally { Directory.Delete(dir, true); }
    }

    /// <summary>
    /// fan_in_fan_out as PEFT sets it on the adapted layers and saves it: true on GPT-2's Conv1D (a new adapter, and a
    /// PEFT-format adapter saying false, which loads with the same reference logits as one saying true), false on
    /// nn.Linear whatever the file says.
    /// </summary>
    [Fact]
    public void FanInFanOutIsTrueForConv1DAndFalseForLinear()
    {
        string gpt2False = EditedCopy("gpt2-hub-c_attn", c => c["fan_in_fan_out"] = false);
        string llamaTrue = EditedCopy("llama-gqa-qv", c => c["fan_in_fan_out"] = true);
        try
        {
            var gpt2 = ModelIO.Load(Fixtures.Dir("gpt2-hub"));
            Assert.True(LoraAdapter.Create(gpt2, new LoraConfig(4, 8, TargetModules: ["c_attn", "c_fc"]), 1).Config.FanInFanOut);
            Assert.True(LoraAdapter.Create(gpt2, new LoraConfig(4, 8, TargetModules: [LoraConfig.AllLinear]), 1).Config.FanInFanOut);
            Assert.Contains("\"fan_in_fan_out\": true", LoraAdapter.Create(gpt2, new LoraConfig(4, 8, TargetModules: ["c_proj"]), 1).Config.ToJson());
            gpt2.Adapter = LoraAdapter.Load(gpt2False, gpt2);
            Assert.True(gpt2.Adapter.Config.FanInFanOut);
            AssertLogits(gpt2, Reference(Path.Combine(AdapterRoot, "gpt2-hub-c_attn")).Cases, 1e-4, "gpt2 fan_in_fan_out false");

            var llama = ModelIO.Load(Fixtures.Dir("llama-gqa"));
            Assert.False(LoraAdapter.Create(llama, new LoraConfig(4, 8, TargetModules: ["q_proj"], FanInFanOut: true), 1).Config.FanInFanOut);
            llama.Adapter = LoraAdapter.Load(llamaTrue, llama);
            Assert.False(llama.Adapter.Config.FanInFanOut);
            AssertLogits(llama, Reference(Path.Combine(AdapterRoot, "llama-gqa-qv")).Cases, 1e-4, "llama fan_in_fan_out true");
        }
        finally
        {
            Directory.Delete(gpt2False, true);
            Directory.Delete(llamaTrue, true);
        }
    }

    /// <summary>
    /// layers_to_transform as PEFT reads it: [] is unset (len(layer_indexes) != 0), a list (or one index) naming every
    /// layer the tensors are in loads them (the fixture's reference logits) and is saved again as read, and a tensor in
    /// a layer outside it is an error naming the tensor and its layer.
    /// </summary>
    [Fact]
    public void LayersToTransformIsHonouredAndAnEmptyListIsUnset()
    {
        var cases = Reference(Path.Combine(AdapterRoot, "llama-gqa-qv")).Cases;
        string empty = EditedCopy("llama-gqa-qv", c => c["layers_to_transform"] = new JsonArray());
        string both = EditedCopy("llama-gqa-qv", c => { c["layers_to_transform"] = new JsonArray(1, 0); c["layers_pattern"] = "layers"; });
        string one = EditedCopy("llama-gqa-qv", c => c["layers_to_transform"] = 1);
        string saved = both + "-saved";
        try
        {
            var model = ModelIO.Load(Fixtures.Dir("llama-gqa"));
            model.Adapter = LoraAdapter.Load(empty, model);
            AssertLogits(model, cases, 1e-4, "layers_to_transform []");
            Assert.Null(model.Adapter.Config.LayersToTransform);

            model.Adapter = LoraAdapter.Load(both, model);
            AssertLogits(model, cases, 1e-4, "layers_to_transform [1, 0]");
            model.Adapter.Save(saved);
            var written = JsonNode.Parse(File.ReadAllText(Path.Combine(saved, LoraConfig.FileName)))!;
            Assert.Equal("[1,0]", written["layers_to_transform"]!.ToJsonString());
            Assert.Equal("[\"layers\"]", written["layers_pattern"]!.ToJsonString());

            var e = Assert.Throws<UserInputException>(() => LoraAdapter.Load(one, model));
            Assert.Contains("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", e.Message);
            Assert.Contains("layers_to_transform [1]", e.Message);
            Assert.Contains("layer 0", e.Message);
            Assert.DoesNotContain("layers.1.", e.Message);
        }
        finally
        {
            foreach (var d in new[] { empty, both, one, saved }) if (Directory.Exists(d)) Directory.Delete(d, true);
        }
    }

    /// <summary>target_modules "ALL-LINEAR" is PEFT's all-linear (tuners_utils compares target_modules.lower()), not a
    /// regular expression that matches no module.</summary>
    [Fact]
    public void AllLinearIsReadCaseInsensitively()
    {
        string dir = EditedCopy("llama-gqa-qv", c => c["target_modules"] = "ALL-LINEAR");
        try
        {
            var model = ModelIO.Load(Fixtures.Dir("llama-gqa"));
            model.Adapter = LoraAdapter.Load(dir, model);
            Assert.Equal([LoraConfig.AllLinear], model.Adapter.Config.TargetModules!);
            Assert.Null(model.Adapter.Config.TargetModulesString);
            AssertLogits(model, Reference(Path.Combine(AdapterRoot, "llama-gqa-qv")).Cases, 1e-4, "ALL-LINEAR");
        }
        finally { Directory.Delete(dir, true); }
    }
}
