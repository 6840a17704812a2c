using AlignSharp.Engine;
using AlignSharp.Models;
using AlignSharp.Models.Lora;
using AlignSharp.Models.Checkpoints;
using AlignSharp.Tests.Engine;

namespace AlignSharp.Tests.Models;

/// <summary>
/// Gradient checkpointing (<see cref="TransformerModel.GradientCheckpointing"/>, <see cref="Autograd.Checkpoint"/>) gives
/// exactly the gradients of the ordinary path in every family, full-parameter and LoRA (with dropout, replayed), and
/// keeps fewer activations; the chunked LM-head scorer (<see cref="TokenScoring"/>) equals the unchunked log-softmax
/// and its gradients match finite differences.
/// </summary>
public sealed class MemoryTests
{
    public static TheoryData<string> Families => new("gpt2-hub", "llama-gqa", "qwen2-tied-bias", "qwen3-qk-norm", "gemma2-softcap-window",
        "gemma3-local-global", "phi3-longrope", "mistral-sliding-window", "smollm3-nope", "olmo2-post-norm", "granite-multipliers", "phi4-mini-partial-rotary", "gemma1-geglu", "gpt-neox-pythia", "gpt-neox-v5-sequential", "stablelm2-qkv-bias", "phi2-parallel-head-bias", "opt-125m-shape", "opt-350m-shape", "exaone4-hybrid-nope", "ernie45-interleaved-rope", "hunyuan-qk-norm-after-rope", "olmo1-nonparametric-norm", "bloom-hub-n-embed", "bloomz-save-pretrained", "lfm2-hybrid-conv", "lfm2-conv-bias-attn-idxs", "glm-edge-partial-interleaved", "starcoder2-window-bias", "gpt-bigcode-multi-query", "gpt-bigcode-multi-head", "gpt-neo-local-global", "helium-interleaved-rope", "granite4-hybrid-mamba", "granite4-dense-rope", "falcon-h1-mup", "falcon-h1-no-norm-bias", "granitemoe-top3-of-8", "granitemoe-defaults-bias", "granite4-hybrid-experts");

    private const int Batch = 2, Seq = 9;

    /// <summary>A padded batch (the second row shorter) and next-token targets, padding ignored.</summary>
    private static (int[] Ids, bool[] Mask, int[] Targets) Data(int vocab)
    {
        var ids = Enumerable.Range(0, Batch * Seq).Select(i => (i * 7 + 3) % vocab).ToArray();
        var mask = Enumerable.Range(0, Batch * Seq).Select(i => i < Seq || i % Seq < 6).ToArray();
        var targets = Enumerable.Range(0, Batch * Seq).Select(i => (i + 1) % Seq == 0 || !mask[i + 1] ? -100 : ids[i + 1]).ToArray();
        return (ids, mask, targets);
    }

    /// <summary>Loss and every trainable gradient of one forward/backward, with or without checkpointing.</summary>
    private static (float Loss, Dictionary<string, float[]> Grads) Step(TransformerModel model, IReadOnlyList<(string Name, Tensor P)> trainable,
        bool checkpointing, int? dropoutSeed = null)
    {
        foreach (var (_, p) in trainable) p.ClearGrad();
        model.GradientCheckpointing = checkpointing;
        if (model.Adapter != null) model.Adapter.DropoutRng = dropoutSeed is int s ? new Random(s) : null;
        using var scope = TensorScope.Begin();
        var (ids, mask, targets) = Data(model.Config.VocabSize);
        var logits = model.Forward(ids, Batch, Seq, keyMask: mask);
        var loss = Ops.CrossEntropy(Ops.Reshape(logits, Batch * Seq, -1), targets);
        float value = loss.Item();
        loss.Backward();
        model.GradientCheckpointing = false;
        return (value, trainable.Where(t => t.P.Grad != null).ToDictionary(t => t.Name, t => t.P.Grad!.ToArray()));
    }

    private static void AssertSameGradients(Dictionary<string, float[]> expected, Dictionary<string, float[]> actual, int expectedCount)
    {
        Assert.Equal(expectedCount, expected.Count);
        Assert.Equal(expected.Keys.Order(), actual.Keys.Order());
        foreach (var (name, g) in expected)
        {
            Assert.Contains(g, x => x != 0);
            Assert.True(g.AsSpan().SequenceEqual(actual[name]), $"{name}: the checkpointed gradient differs from the ordinary one");
        }
    }

    [Theory]
    [MemberData(nameof(Families))]
    public void CheckpointedGradientsEqualTheOrdinaryOnesFullParameter(string fixture)
    {
        var model = ModelIO.Load(Fixtures.Dir(fixture));
        var trainable = model.NamedParameters.Select(p => (p.Name, p.Parameter)).ToList();
        foreach (var (_, p) in trainable) p.RequiresGrad = true;
        var plain = Step(model, trainable, checkpointing: false);
        var checkpointed = Step(model, trainable, checkpointing: true);
        Assert.Equal(plain.Loss, checkpointed.Loss);
        // Positional embeddings past the sequence get no gradient; every other parameter does.
        AssertSameGradients(plain.Grads, checkpointed.Grads, trainable.Count);
    }

    [Theory]
    [MemberData(nameof(Families))]
    public void CheckpointedGradientsEqualTheOrdinaryOnesWithLoraAndDropout(string fixture)
    {
        var model = ModelIO.Load(Fixtures.Dir(fixture));
        var adapter = LoraAdapter.Create(model, new LoraConfig(4, 8, Dropout: 0.3, TargetModules: [LoraConfig.AllLinear]), seed: 1);
        // B away from zero, so every adapted layer changes the output and A gets a gradient too.
        var rng = new Random(9);
        foreach (var m in adapter.Modules) { var s = m.B.Span; for (int i = 0; i < s.Length; i++) s[i] = (float)(rng.NextDouble() - 0.5) * 0.2f; }
        foreach (var (_, p) in model.NamedParameters) p.RequiresGrad = false;
        foreach (var (_, p) in adapter.NamedParameters) p.RequiresGrad = true;
        model.Adapter = adapter;
        var trainable = adapter.NamedParameters.Select(p => (p.Name, p.Parameter)).ToList();

        var plain = Step(model, trainable, checkpointing: false, dropoutSeed: 5);
        var checkpointed = Step(model, trainable, checkpointing: true, dropoutSeed: 5);
        Assert.Equal(plain.Loss, checkpointed.Loss);
        AssertSameGradients(plain.Grads, checkpointed.Grads, trainable.Count);
        // The dropout really acts: another stream gives another loss.
        Assert.NotEqual(plain.Loss, Step(model, trainable, checkpointing: true, dropoutSeed: 6).Loss);
        Assert.All(model.NamedParameters, p => Assert.Null(p.Parameter.Grad));
    }

    /// <summary>DoRA under checkpointing: the replayed blocks use the same row norms and the same dropout masks, so the
    /// loss and every A, B and magnitude gradient equal the ordinary pass's.</summary>
    [Theory]
    [InlineData("llama-gqa")]
    [InlineData("phi3-longrope")]
    [InlineData("gpt2-hub")]
    public void CheckpointedGradientsEqualTheOrdinaryOnesWithDora(string fixture)
    {
        var model = ModelIO.Load(Fixtures.Dir(fixture));
        var adapter = LoraAdapter.Create(model, new LoraConfig(4, 8, Dropout: 0.3, TargetModules: [LoraConfig.AllLinear]) { UseDora = true }, seed: 1);
        var rng = new Random(9);
        foreach (var m in adapter.Modules)
        {
            var b = m.B.Span;
            for (int i = 0; i < b.Length; i++) b[i] = (float)(rng.NextDouble() - 0.5) * 0.2f;
            var g = m.Magnitude!.Span;
            for (int i = 0; i < g.Length; i++) g[i] *= 0.8f + 0.4f * (float)rng.NextDouble();
        }
        foreach (var (_, p) in model.NamedParameters) p.RequiresGrad = false;
        foreach (var (_, p) in adapter.NamedParameters) p.RequiresGrad = true;
        model.Adapter = adapter;
        var trainable = adapter.NamedParameters.Select(p => (p.Name, p.Parameter)).ToList();
        Assert.Contains(trainable, p => p.Name.EndsWith("lora_magnitude_vector", StringComparison.Ordinal));

        var plain = Step(model, trainable, checkpointing: false, dropoutSeed: 5);
        var checkpointed = Step(model, trainable, checkpointing: true, dropoutSeed: 5);
        Assert.Equal(plain.Loss, checkpointed.Loss);
        AssertSameGradients(plain.Grads, checkpointed.Grads, trainable.Count);
    }

    [Fact]
    public void ABackwardAfterTheAdapterWasSwitchedOffRecomputesWithTheForwardsAdapter()
    {
        // DPO scores the reference (adapter off) between the policy's forward and its backward.
        var model = ModelIO.Load(Fixtures.Dir("llama-gqa"));
        var adapter = LoraAdapter.Create(model, new LoraConfig(4, 8, TargetModules: [LoraConfig.AllLinear]), seed: 2);
        foreach (var m in adapter.Modules) m.B.Span.Fill(0.05f);
        foreach (var (_, p) in model.NamedParameters) p.RequiresGrad = false;
        foreach (var (_, p) in adapter.NamedParameters) p.RequiresGrad = true;
        model.Adapter = adapter;
        var trainable = adapter.NamedParameters.Select(p => (p.Name, p.Parameter)).ToList();
        var plain = Step(model, trainable, checkpointing: false);

        foreach (var (_, p) in trainable) p.ClearGrad();
        model.GradientCheckpointing = true;
        using var scope = TensorScope.Begin();
        var (ids, mask, targets) = Data(model.Config.VocabSize);
        var loss = Ops.CrossEntropy(Ops.Reshape(model.Forward(ids, Batch, Seq, keyMask: mask), Batch * Seq, -1), targets);
        adapter.Enabled = false;
        using (Autograd.NoGrad()) model.Forward(ids, Batch, Seq, keyMask: mask);
        loss.Backward();
        Assert.False(adapter.Enabled);
        adapter.Enabled = true;
        foreach (var (name, p) in trainable) Assert.True(plain.Grads[name].AsSpan().SequenceEqual(p.Grad!.ToArray()), name);
    }

    [Theory]
    [InlineData("llama-gqa", 1f)]
    [InlineData("gemma2-softcap-window", 0.7f)]
    public void ChunkedLogProbsEqualTheUnchunkedOnes(string fixture, float temperature)
    {
        var model = ModelIO.Load(Fixtures.Dir(fixture));
        foreach (var p in model.Parameters) p.RequiresGrad = true;
        var rng = new Random(4);
        int n = 11, v = model.Config.VocabSize;
        var hidden = GradCheck.Random(rng, n, model.Config.HiddenSize);
        var targets = Enumerable.Range(0, n).Select(i => rng.Next(v)).ToArray();
        var weights = Enumerable.Range(0, 2 * n).Select(_ => (float)rng.NextDouble() - 0.5f).ToArray();

        (float[] Values, float[] DHidden, float[] DHead, double[] Sums) Run(int chunkRows, bool recompute = true)
        {
            hidden.ClearGrad();
            model.HeadWeight.ClearGrad();
            using var scope = TensorScope.Begin();
            var sums = new double[n];
            Tensor lp, ent;
            if (chunkRows == 0)
            {
                // The plain reference: the whole [N, V] logits, then the fused log-softmax.
                var logits = model.Head(hidden);
                var raw = logits.Span;
                for (int r = 0; r < n; r++) { double s = 0; foreach (var x in raw.Slice(r * v, v)) s += x; sums[r] = s; }
                (lp, ent) = Ops.TokenLogProbs(temperature == 1f ? logits : Ops.MulScalar(logits, 1f / temperature), targets);
            }
            else
            {
                (lp, ent) = TokenScoring.LogProbs(model, hidden, targets, temperature, (first, logits) =>
                {
                    for (int r = 0; r < logits.Length / v; r++) { double s = 0; foreach (var x in logits.Slice(r * v, v)) s += x; sums[first + r] = s; }
                }, chunkRows, recompute);
            }
            var both = Ops.Concat([lp, ent], 0);
            Ops.Sum(Ops.Mul(both, Tensor.FromArray(weights, 2 * n))).Backward();
            return (both.ToArray(), hidden.Grad!.ToArray(), model.HeadWeight.Grad!.ToArray(), sums);
        }

        var whole = Run(0);
        foreach (var (chunk, recompute) in new[] { (1, true), (3, true), (4, true), (11, true), (64, true), (3, false), (64, false) })
        {
            var chunked = Run(chunk, recompute);
            AssertClose(whole.Sums.Select(x => (float)x).ToArray(), chunked.Sums.Select(x => (float)x).ToArray(), $"logit sums, chunks of {chunk}");
            AssertClose(whole.Values, chunked.Values, $"values, chunks of {chunk}");
            AssertClose(whole.DHidden, chunked.DHidden, $"d hidden, chunks of {chunk}");
            AssertClose(whole.DHead, chunked.DHead, $"d head, chunks of {chunk}");
        }
    }

    private static void AssertClose(float[] expected, float[] actual, string what)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
            Assert.True(Math.Abs(expected[i] - actual[i]) <= 1e-6 + 1e-5 * Math.Abs(expected[i]), $"{what}[{i}]: {actual[i]} vs {expected[i]}");
    }

    [Fact]
    public void ChunkedLogProbsGradientsMatchFiniteDifferences()
    {
        var model = ModelIO.Load(Fixtures.Dir("gemma2-softcap-window"));
        var head = model.HeadWeight;
        head.RequiresGrad = true;
        var rng = new Random(8);
        int n = 5;
        var hidden = GradCheck.Random(rng, n, model.Config.HiddenSize);
        var targets = Enumerable.Range(0, n).Select(i => rng.Next(model.Config.VocabSize)).ToArray();
        GradCheck.Check(x =>
        {
            var (lp, ent) = TokenScoring.LogProbs(model, x[0], targets, temperature: 0.8f, chunkRows: 2, recompute: true);
            return Ops.Concat([lp, ent], 0);
        }, [hidden, head], new GradCheck.Options(Step: 1e-2, AbsTol: 5e-3, RelTol: 3e-2));
        GradCheck.Check(x =>
        {
            var (lp, ent) = TokenScoring.LogProbs(model, x[0], targets, temperature: 0.8f, chunkRows: 2, recompute: false);
            return Ops.Concat([lp, ent], 0);
        }, [hidden, head], new GradCheck.Options(Step: 1e-2, AbsTol: 5e-3, RelTol: 3e-2));
    }
}

/// <summary>
/// How much memory a forward pass keeps alive, counted by <see cref="BufferPool.RentedFloats"/>: a process-wide count, so
/// this runs alone (other tests renting at the same time would be counted too).
/// </summary>
[Collection(SerialCollection.Name)]
public sealed class ActivationMemoryTests
{
    [Fact]
    public void CheckpointingAndInferenceKeepOnlyTheBlocksInputsAlive()
    {
        var model = ModelIO.Load(Fixtures.Dir("llama-gqa"));
        var config = model.Config;
        foreach (var p in model.Parameters) p.RequiresGrad = true;
        var ids = Enumerable.Range(0, 4 * 16).Select(i => i % config.VocabSize).ToArray();
        long Alive(bool checkpointing, bool noGrad = false)
        {
            model.GradientCheckpointing = checkpointing;
            using var scope = TensorScope.Begin();
            long before = BufferPool.RentedFloats;
            if (noGrad)
                using (Autograd.NoGrad()) model.Hidden(ids, 4, 16);
            else model.Hidden(ids, 4, 16);
            return BufferPool.RentedFloats - before;
        }
        long plain = Alive(false), checkpointed = Alive(true), inference = Alive(false, noGrad: true);
        long blockInputs = (long)(config.NumLayers + 1) * ids.Length * config.HiddenSize;
        Console.WriteLine($"alive after the forward: {plain} floats ordinary, {checkpointed} checkpointed, block inputs {blockInputs}");
        Assert.True(checkpointed < plain / 4, $"checkpointed forward holds {checkpointed} floats, the ordinary one {plain}");
        Assert.True(checkpointed <= 3 * blockInputs, $"checkpointed forward holds {checkpointed} floats; the block inputs are {blockInputs}");
        // Without gradients a block's intermediates go back to the pool as soon as it is done.
        Assert.True(inference <= checkpointed, $"a forward without gradients holds {inference} floats, the checkpointed one {checkpointed}");

        // A generator's prompt pass (a KV cache, no gradients) too: beyond the cache's own arrays (rented when it is made,
        // handed back when it is disposed) it holds no more than a forward without one.
        model.GradientCheckpointing = false;
        long cached;
        long beforeCache = BufferPool.RentedFloats;
        using (var cache = new KvCache(config, 4, 20))
        {
            using (var scope = TensorScope.Begin())
            using (Autograd.NoGrad())
            {
                long before = BufferPool.RentedFloats;
                model.Hidden(ids, 4, 16, cache: cache);
                cached = BufferPool.RentedFloats - before;
            }
        }
        Assert.Equal(beforeCache, BufferPool.RentedFloats);
        Assert.True(cached <= inference, $"a prompt pass with a KV cache holds {cached} floats, one without {inference}");
    }

    [Fact]
    public void LoadingFrozenBf16MatricesAllocatesNoFloat32CopyOfThem()
    {
        // Float32 matrices allocated and then replaced by bf16 ones left the GC that much memory to recycle, and recycled
        // memory is cleared, so loading the next frozen model (a reward model after the policy) grew the process by it.
        string dir = Directory.CreateTempSubdirectory("alignsharp-bf16-load-").FullName;
        try
        {
            var config = ModelPresets.Llama(vocabSize: 4096, hiddenSize: 256, layers: 2, heads: 4, kvHeads: 2);
            ModelIO.Save(TransformerModel.CreateRandom(config, seed: 3), dir, SafetensorsDtype.BF16);
            ModelIO.Load(dir, bf16Matrices: true); // warm up: the first load also compiles and caches
            long before = GC.GetTotalAllocatedBytes(precise: true);
            var model = ModelIO.Load(dir, bf16Matrices: true);
            long allocated = GC.GetTotalAllocatedBytes(precise: true) - before;
            long matrixValues = model.NamedParameters.Where(p => p.Parameter.IsBf16).Sum(p => (long)p.Parameter.Length);
            Assert.True(matrixValues > 0.9 * model.ParameterCount, "the matrices should dominate this model");
            Console.WriteLine($"bf16 load allocated {allocated} bytes for {model.ParameterBytes} bytes of parameters ({matrixValues} matrix values)");
            // The parameters as stored, plus less than a quarter of what float32 matrices would take (headers, names, buffers).
            Assert.True(allocated < model.ParameterBytes + matrixValues, $"loading allocated {allocated} bytes; the parameters take {model.ParameterBytes}");
        }
        finally { Directory.Delete(dir, recursive: true); }
    }

    [Fact]
    public void ATensorReadFromAMappedCheckpointLeavesTheResidentMemory()
    {
        // Pages of the mapped file count as the process's own once touched; a load dropped none of them until it closed
        // the file, so loading a model peaked at the model plus the whole file.
        string dir = Directory.CreateTempSubdirectory("alignsharp-mapped-").FullName;
        try
        {
            string path = Path.Combine(dir, "model.safetensors");
            var values = Enumerable.Range(0, 16 << 20).Select(i => (float)(i % 1000)).ToArray(); // 64 MiB
            SafetensorsWriter.Write(path, [("w", new[] { 4096, values.Length / 4096 }, new ReadOnlyMemory<float>(values))]);
            var destination = new float[values.Length];
            using var file = SafetensorsFile.Open(path);
            long before = RssFile();
            file.ReadInto("w", destination);
            long grown = RssFile() - before;
            Assert.Equal(values, destination);
            Console.WriteLine($"file-backed resident memory grew by {grown} bytes reading a {values.Length * 4}-byte tensor");
            Assert.True(grown < values.Length, $"reading {values.Length * 4} bytes left {grown} bytes of the file resident");
        }
        finally { Directory.Delete(dir, recursive: true); }
    }

    private static long RssFile()
    {
        var status = MemoryTrace.ProcessStatus();
        Assert.True(status.ContainsKey("RssFile"), "/proc/self/status has no RssFile line (this test needs Linux)");
        return status["RssFile"];
    }
}
