using System.Diagnostics;
using AlignSharp.Engine;
using AlignSharp.Engine.Kernels;
using AlignSharp.Models;
using AlignSharp.Text;

namespace AlignSharp.Bench;

/// <summary>
/// Decoding measurements that need the engine's internals, on a checkpoint loaded with bf16 matrices:
/// <list type="bullet">
/// <item><c>decode-ab DIR BATCH ROUNDS [idle-prefetch|gated-mlp|gated-down|lora|lora-terms|residual|experts|l2-prefetch]</c>: decoding steps (16-token prompts, 64 new tokens, as
/// <c>alignsharp bench sample</c>) with one optimisation on for two steps, off for two, and so on, so that both sides see
/// the same host (its bandwidth drifts within seconds): the idle worker's preloading (<see cref="Bf16Dot.IdlePrefetchOn"/>,
/// the default), the fused gated MLP (<see cref="Ops.FuseGatedLinear"/>) or its rounding of the down projection's input
/// (<see cref="Ops.FuseGatedDown"/>), or a rank-16 LoRA adapter on every linear layer (<c>lora</c>: on against off, what
/// a LoRA policy's generation pays), or with that adapter on, its terms inside the products or not (<c>lora-terms</c>,
/// <see cref="Ops.FuseLowRank"/>), or the residual adds inside the o and down projections' products or not (<c>residual</c>,
/// <see cref="Ops.FuseResidual"/>), or a mixture of experts' chosen experts run together or one by one (<c>experts</c>,
/// <see cref="Ops.FuseGatedGroups"/>), or the bf16 kernel's prefetches into L2 or into L1 (<c>l2-prefetch</c>,
/// <see cref="Bf16Dot.PrefetchIntoL2"/>); medians of each side, and of the layers
/// (hidden states) and the head + sampling apart.</item>
/// <item><c>decode-shapes DIR ROUNDS [1,M,…]</c>: every layer's product of one shape back to back through
/// <see cref="Gemm.MultiplyBf16"/> as generation calls it, at batch 1 and 8 (or the batches listed, 1 first) in turn: GB/s
/// of weights read and the ratio to batch 1's, medians.</item>
/// <item><c>decode-tail DIR BATCH ROUNDS</c>: the spread of decoding steps against plain reads of 1 GB in the same
/// process (median, mean, percentiles).</item>
/// <item><c>decode-products DIR ROUNDS</c>: a step's products alone (as the layers call them, on fixed activations)
/// against whole decoding steps, batch 1 and 8: what the rest of a step adds.</item>
/// <item><c>decode-head DIR ROUNDS</c>: the LM head's product alone against the fused head + sampler, batch 1 and 8.</item>
/// <item><c>decode-generate DIR BATCH CALLS [lora]</c>: whole <see cref="Generator.GenerateInBatches"/> calls as an RL rollout
/// makes them, with or without a rank-16 LoRA adapter on every linear layer.</item>
/// <item><c>decode-score-lora DIR BATCH ROUNDS [head]</c>: scoring passes (no gradient) with that adapter on and off
/// alternately.</item>
/// <item><c>decode-score-head DIR ROWS ROUNDS [no-grad]</c>: the LM head's log-probabilities of ROWS random hidden states,
/// forward and backward with the logits kept (as a PPO update scores its completion tokens), in chunks of
/// <see cref="TokenScoring.DefaultChunkRows"/> rows (the only chunking before 2026-12-02) against the chunks
/// <see cref="TokenScoring.ChunkRows"/> chooses; or without gradients (as a rollout scores them), whole rows of logits in
/// chunks of <see cref="TokenScoring.KeepFloats"/> / V against the default, by vocabulary tiles; alternately.</item>
/// <item><c>decode-attention</c>: one decoding step's attention at the 0.5B shape, hot, on one and two threads (no
/// checkpoint needed).</item>
/// </list>
/// Run: <c>dotnet run -c Release --project bench/AlignSharp.Bench -- decode-ab /path/to/checkpoint 8 30</c>.
/// </summary>
internal static class DecodeProbes
{
    private const int PromptLength = 16, NewTokens = 64;

    public static int Run(string[] args)
    {
        if (args is ["decode-attention"]) { Attention(); return 0; }
        if (args.Length < 3) return Usage();
        var model = ModelIO.Load(args[1], bf16Matrices: true);
        switch (args[0])
        {
            case "decode-ab" when args.Length is 4 or 5:
                Action<bool>? flip = args.Length == 4 || args[4] == "idle-prefetch" ? on => Bf16Dot.IdlePrefetchOn = on
                    : args[4] == "gated-mlp" ? on => Ops.FuseGatedLinear = on
                    : args[4] == "gated-down" ? on => Ops.FuseGatedDown = on
                    : args[4] == "lora" ? Lora(model)
                    : args[4] == "lora-terms" ? LoraTerms(model)
                    : args[4] == "residual" ? on => Ops.FuseResidual = on
                    : args[4] == "experts" ? on => Ops.FuseGatedGroups = on
                    : args[4] == "l2-prefetch" ? on => Bf16Dot.PrefetchIntoL2 = on
                    : null;
                if (flip == null) return Usage();
                Alternate(model, int.Parse(args[2]), int.Parse(args[3]), args.Length == 4 ? "idle-prefetch" : args[4], flip);
                return 0;
            case "decode-tail" when args.Length == 4:
                Tail(model, int.Parse(args[2]), int.Parse(args[3]));
                return 0;
            case "decode-products" when args.Length == 3:
                Products(model, int.Parse(args[2]));
                return 0;
            case "decode-head" when args.Length == 3:
                Head(model, int.Parse(args[2]));
                return 0;
            case "decode-generate" when args.Length is 4 or 5:
                GenerateCalls(model, int.Parse(args[2]), int.Parse(args[3]), args.Length == 5 && args[4] == "lora");
                return 0;
            case "decode-score-lora" when args.Length == 4 || args is [_, _, _, _, "head"]:
                ScoreLora(model, int.Parse(args[2]), int.Parse(args[3]), withHead: args.Length == 5);
                return 0;
            case "decode-score-head" when args.Length == 4 || args is [_, _, _, _, "no-grad"]:
                ScoreHead(model, int.Parse(args[2]), int.Parse(args[3]), gradients: args.Length == 4);
                return 0;
            case "decode-shapes" when args.Length is 3 or 4:
                int[] batches = args.Length == 4 ? [.. args[3].Split(',').Select(int.Parse)] : [1, 8];
                if (batches.Length == 0 || batches[0] != 1 || batches.Any(m => m is < 1 or > 8)) return Usage();
                Shapes(model, int.Parse(args[2]), batches);
                return 0;
            default:
                return Usage();
        }
    }

    /// <summary>Whole <see cref="Generator.GenerateInBatches"/> calls (16-token prompts, 64 new tokens, T = 1), as an RL
    /// rollout makes them, with or without a rank-16 LoRA adapter: seconds a call and ms a token step.</summary>
    private static void GenerateCalls(TransformerModel model, int batch, int calls, bool lora)
    {
        if (lora) Lora(model);
        var rng = new Random(0);
        var prompts = Enumerable.Range(0, batch).Select(_ => Enumerable.Range(0, PromptLength).Select(_ => rng.Next(model.Config.VocabSize)).ToArray()).ToArray();
        var options = new SamplingOptions { MaxNewTokens = NewTokens, Temperature = 1f, EosIds = [] };
        for (int call = 0; call <= calls; call++)
        {
            var sw = Stopwatch.StartNew();
            Generator.GenerateInBatches(model, prompts, options with { Seed = call }, null, batch);
            if (call > 0) Console.WriteLine($"call {call}: {sw.Elapsed.TotalSeconds:F3} s, {sw.Elapsed.TotalMilliseconds / NewTokens:F2} ms a token step (prompt pass included)");
        }
    }

    /// <summary>A scoring pass (batch × 80 tokens, no gradient: the trunk, and with <paramref name="withHead"/> the LM head's
    /// log-probabilities at T = 0.7 as an RL rollout scores) with a rank-16 LoRA adapter on and off alternately: ms a pass, medians.</summary>
    private static void ScoreLora(TransformerModel model, int batch, int rounds, bool withHead)
    {
        var flip = Lora(model);
        var rng = new Random(0);
        int seq = PromptLength + NewTokens;
        var ids = Enumerable.Range(0, batch * seq).Select(_ => rng.Next(model.Config.VocabSize)).ToArray();
        var times = new[] { new List<double>(), new List<double>() };
        using var noGrad = Autograd.NoGrad();
        for (int round = 0; round <= rounds; round++)
            foreach (bool on in round % 2 == 0 ? new[] { true, false } : new[] { false, true })
            {
                flip(on);
                var sw = Stopwatch.StartNew();
                using (TensorScope.Begin())
                {
                    var hidden = Ops.Reshape(model.Hidden(ids, batch, seq), batch * seq, -1);
                    if (withHead) TokenScoring.LogProbs(model, hidden, ids, 0.7f);
                }
                if (round > 0) times[on ? 1 : 0].Add(sw.Elapsed.TotalMilliseconds);
            }
        Console.WriteLine($"batch {batch} × {seq} tokens, {(withHead ? "trunk and LM head" : "trunk")}: {Median(times[0]):F1} ms without the adapter, {Median(times[1]):F1} with it");
    }

    /// <summary>A rank-16 LoRA adapter on every linear layer (as <c>bench rl</c> trains by default), switched on and off.</summary>
    private static Action<bool> Lora(TransformerModel model)
    {
        var adapter = Models.Lora.LoraAdapter.Create(model, new Models.Lora.LoraConfig(16, 32, TargetModules: [Models.Lora.LoraConfig.AllLinear]), seed: 1);
        model.Adapter = adapter;
        return on => adapter.Enabled = on;
    }

    /// <summary>The adapter of <see cref="Lora"/> always on, its terms inside the bf16 products (<see cref="Ops.FuseLowRank"/>)
    /// or not.</summary>
    private static Action<bool> LoraTerms(TransformerModel model)
    {
        Lora(model)(true);
        return on => Ops.FuseLowRank = on;
    }

    /// <summary>See <c>decode-score-head</c> above: ms of a pass through the head, medians.</summary>
    private static void ScoreHead(TransformerModel model, int n, int rounds, bool gradients)
    {
        var rng = new Random(0);
        // With gradients the old way is chunks of DefaultChunkRows; without, whole rows in chunks of KeepFloats / V (the
        // default until the head went by vocabulary tiles).
        int d = model.Config.HiddenSize, small = gradients ? TokenScoring.DefaultChunkRows(model.Config.VocabSize)
            : (int)(TokenScoring.KeepFloats / model.Config.VocabSize);
        var h = Tensor.FromArray(Enumerable.Range(0, n * d).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray(), n, d);
        h.RequiresGrad = gradients;
        var targets = Enumerable.Range(0, n).Select(_ => rng.Next(model.Config.VocabSize)).ToArray();
        var times = new[] { new List<double>(), new List<double>() };
        for (int round = 0; round <= rounds; round++)
            foreach (int chunk in round % 2 == 0 ? new[] { small, 0 } : new[] { 0, small })
            {
                var sw = Stopwatch.StartNew();
                using (TensorScope.Begin())
                {
                    var (lp, _) = TokenScoring.LogProbs(model, h, targets, 0.7f, chunkRows: chunk, recompute: gradients ? false : null);
                    if (gradients) Autograd.Backward(Ops.Sum(lp));
                }
                if (gradients) h.ZeroGrad();
                if (round > 0) times[chunk == 0 ? 1 : 0].Add(sw.Elapsed.TotalMilliseconds);
            }
        int rows = TokenScoring.ChunkRows(n, model.Config.VocabSize, gradients, recompute: false);
        Console.WriteLine(gradients
            ? $"{n} rows, forward and backward, logits kept: chunks of at most {small} rows {Median(times[0]):F1} ms, chunks of {rows} rows (the default) {Median(times[1]):F1} ms"
            : $"{n} rows, no gradient: whole rows in chunks of at most {small} {Median(times[0]):F1} ms, by vocabulary tiles (the default) {Median(times[1]):F1} ms");
    }

    private static int Usage()
    {
        Console.Error.WriteLine("usage: decode-ab CHECKPOINT_DIR BATCH ROUNDS [idle-prefetch|gated-mlp|gated-down|lora|lora-terms|residual|experts|l2-prefetch] | decode-tail CHECKPOINT_DIR BATCH ROUNDS | " +
            "decode-products CHECKPOINT_DIR ROUNDS | decode-head CHECKPOINT_DIR ROUNDS | decode-shapes CHECKPOINT_DIR ROUNDS [1,M,...] | " +
            "decode-generate CHECKPOINT_DIR BATCH CALLS [lora] | decode-score-lora CHECKPOINT_DIR BATCH ROUNDS [head] | " +
            "decode-score-head CHECKPOINT_DIR ROWS ROUNDS [no-grad] | decode-attention");
        return 2;
    }

    private static void Alternate(TransformerModel model, int batch, int rounds, string name, Action<bool> flip)
    {
        var withIt = new List<double>(); var without = new List<double>(); var layers = new List<double>(); var head = new List<double>();
        bool on = false;
        // Round 0 warms up (methods reach their optimised tier); it is not counted.
        for (int round = 0; round <= rounds; round++)
            Generate(model, batch, round, step => flip(on = ((step + round) & 3) is 1 or 2), (step, ms, layersMs) =>
            {
                // Step 0 is the prompt pass; step 1 the first whose products have a remembered successor.
                if (round == 0 || step < 2) return;
                (on ? withIt : without).Add(ms);
                layers.Add(layersMs);
                head.Add(ms - layersMs);
            });
        flip(true);
        Console.WriteLine($"batch {batch}, {rounds} rounds of {NewTokens} tokens: steps with {name} {Median(withIt):F3} ms (median of {withIt.Count}), " +
            $"without {Median(without):F3} ms (median of {without.Count}), without / with {Median(without) / Median(withIt):F3}; " +
            $"layers {Median(layers):F3} ms, head + sampling {Median(head):F3} ms");
    }

    /// <summary>One decoding step's attention at the 0.5B shape (batch 8, 14 query heads over 2 kv heads of 64, a
    /// cache of 520 positions), hot, at 17, 49, 80 and 512 keys, on one and two threads: µs a call, medians of 7 × 200.</summary>
    private static void Attention()
    {
        const int batch = 8, queryHeads = 14, kvHeads = 2, headDim = 64, capacity = 520;
        var rng = new Random(1);
        var (q, k, v) = (RandomTensor(rng, batch, 1, queryHeads, headDim), RandomTensor(rng, batch, capacity, kvHeads, headDim),
            RandomTensor(rng, batch, capacity, kvHeads, headDim));
        using var noGrad = Autograd.NoGrad();
        for (int pass = 0; pass < 2; pass++) // the first pass warms up (methods reach their optimised tier)
            foreach (int keys in new[] { 17, 49, 80, 512 })
                foreach (int threads in new[] { 1, 2 })
                {
                    using var scope = ParallelFor.UseThreads(threads);
                    var mask = new bool[batch * capacity];
                    for (int b = 0; b < batch; b++) Array.Fill(mask, true, b * capacity, keys);
                    var times = new List<double>();
                    for (int rep = 0; rep < 7; rep++)
                    {
                        var sw = Stopwatch.StartNew();
                        for (int i = 0; i < 200; i++) using (TensorScope.Begin()) Ops.CausalAttention(q, k, v, keys - 1, mask);
                        times.Add(sw.Elapsed.TotalMilliseconds * 1e3 / 200);
                    }
                    if (pass == 1) Console.WriteLine($"{keys} keys, {threads} thread(s): {Median(times):F2} µs a call");
                }
    }

    /// <summary>
    /// One round of generation as <c>bench sample</c> runs it: a 16-token prompt pass (step 0) and 63 decoding steps at
    /// batch B, plain sampling at T = 1, the rows' streams seeded by the round. <paramref name="before"/> runs untimed
    /// before each step; <paramref name="after"/> gets the step's time and that of its layers (the rest is the head
    /// and the sampler), in ms.
    /// </summary>
    private static void Generate(TransformerModel model, int batch, int round, Action<int> before, Action<int, double, double> after)
    {
        var cfg = model.Config;
        var rng = new Random(0);
        var prompt = Enumerable.Range(0, batch * PromptLength).Select(_ => rng.Next(cfg.VocabSize)).ToArray();
        var options = new SamplingOptions { MaxNewTokens = NewTokens, Temperature = 1f, EosIds = [] };
        using var cache = new KvCache(cfg, batch, PromptLength + NewTokens);
        using var noGrad = Autograd.NoGrad();
        using var rounding = Ops.RoundActivationsToBf16();
        var rngs = Enumerable.Range(0, batch).Select(b => new Random(round * 1000 + b)).ToArray();
        var active = Enumerable.Repeat(true, batch).ToArray();
        var tokens = new int[batch];
        var logProbs = new float[batch];
        int[] ids = prompt;
        int seq = PromptLength;
        for (int step = 0; step < NewTokens; step++)
        {
            before(step);
            var positions = new int[batch * seq];
            for (int b = 0; b < batch; b++) for (int t = 0; t < seq; t++) positions[b * seq + t] = cache.Length + t;
            var keyMask = new bool[batch * (cache.Length + seq)];
            Array.Fill(keyMask, true);
            var sw = Stopwatch.StartNew();
            float[] last;
            using (TensorScope.Begin())
            {
                var hidden = model.Hidden(ids, batch, seq, positions, keyMask, cache);
                last = Ops.Slice(Ops.Reshape(hidden, batch, seq, -1), 1, seq - 1, 1).ToArray();
            }
            double layersMs = sw.Elapsed.TotalMilliseconds;
            HeadSampler.SampleRows(model, last, cfg.VocabSize, options, rngs, active, tokens, logProbs);
            after(step, sw.Elapsed.TotalMilliseconds, layersMs);
            ids = (int[])tokens.Clone();
            seq = 1;
        }
    }

    /// <summary>
    /// The spread of decoding steps against that of plain reads of a similar size in the same process: rounds of
    /// generation (steps 2–63; steps during which a gen-0 collection ran apart), each followed by 62 reads of 1 GB
    /// on two threads by a plain vector sum: median, mean and percentiles in ms.
    /// </summary>
    private static void Tail(TransformerModel model, int batch, int rounds)
    {
        var steps = new List<double>(); var gcSteps = new List<double>(); var reads = new List<double>();
        var data = GC.AllocateUninitializedArray<float>(250_000_000, pinned: true);
        new Random(1).NextBytes(System.Runtime.InteropServices.MemoryMarshal.AsBytes(data.AsSpan()));
        float sink = 0;
        for (int round = 0; round <= rounds; round++)
        {
            int collections = 0;
            Generate(model, batch, round, _ => collections = GC.CollectionCount(0), (step, ms, _) =>
            {
                if (round > 0 && step >= 2) (GC.CollectionCount(0) != collections ? gcSteps : steps).Add(ms);
            });
            for (int i = 0; i < NewTokens - 2; i++)
            {
                var sw = Stopwatch.StartNew();
                ParallelFor.For(data.Length, 1 << 20, (s, e) => { float acc = Simd.Sum(data.AsSpan(s, e - s)); lock (data) sink += acc; });
                if (round > 0) reads.Add(sw.Elapsed.TotalMilliseconds);
            }
        }
        static string Stats(List<double> v)
        {
            if (v.Count == 0) return "none";
            var s = v.Order().ToList();
            double mean = v.Average(), med = s[s.Count / 2];
            return $"n {s.Count} median {med:F3} mean {mean:F3} mean/median {mean / med:F3} p10 {s[s.Count / 10]:F3} p90 {s[s.Count * 9 / 10]:F3} p99 {s[s.Count * 99 / 100]:F3} max {s[^1]:F3}";
        }
        var all = steps.Concat(gcSteps).ToList();
        Console.WriteLine($"steps without GC: {Stats(steps)}");
        Console.WriteLine($"steps with GC:    {Stats(gcSteps)}");
        Console.WriteLine($"all steps:        {Stats(all)}");
        Console.WriteLine($"plain reads 1 GB: {Stats(reads)} ({sink != 12345})");
    }

    /// <summary>A decoding step's products alone, as the layers call them (q, k, v shared; o; the gated MLP with its down
    /// projection; the head as one product), on fixed activations, against whole decoding steps, at batch 1 and 8 in
    /// turn.</summary>
    private static void Products(TransformerModel model, int rounds)
    {
        var cfg = model.Config;
        int[] batches = [1, 8];
        var products = batches.ToDictionary(m => m, _ => new List<double>());
        var steps = batches.ToDictionary(m => m, _ => new List<double>());
        var rng = new Random(4);
        var x = batches.ToDictionary(m => m, m => RandomTensor(rng, m, cfg.HiddenSize));
        var head = model.HeadWeight;
        var logits = new float[8 * head.Dim(0)];
        for (int round = 0; round <= rounds; round++)
            foreach (int m in batches)
            {
                using (Autograd.NoGrad())
                using (Ops.RoundActivationsToBf16())
                    for (int rep = 0; rep < 20; rep++)
                    {
                        var sw = Stopwatch.StartNew();
                        using (TensorScope.Begin())
                        {
                            for (int l = 0; l < cfg.NumLayers; l++)
                            {
                                Tensor W(string name) => model.Parameter($"layers.{l}.{name}.weight");
                                Ops.LinearShared(x[m], (W("attn.q"), null), (W("attn.k"), null), (W("attn.v"), null));
                                Ops.Linear(x[m], W("attn.o"));
                                Ops.GatedMlp(x[m], (W("mlp.gate"), null), (W("mlp.up"), null), (W("mlp.down"), null), Ops.GateActivation.Silu);
                            }
                            Gemm.MultiplyBf16(false, true, m, head.Dim(0), head.Dim(1), x[m].Span, head.Dim(1), head.Bf16Span, head.Dim(1),
                                logits.AsSpan(0, m * head.Dim(0)), head.Dim(0), false, Bf16Inputs.AtDecodeShapes);
                        }
                        if (round > 0) products[m].Add(sw.Elapsed.TotalMilliseconds);
                    }
                Generate(model, m, round, _ => { }, (step, ms, _) => { if (round > 0 && step >= 2) steps[m].Add(ms); });
            }
        foreach (int m in batches)
            Console.WriteLine($"batch {m}: products alone {Median(products[m]):F3} ms, whole steps {Median(steps[m]):F3} ms, the rest {Median(steps[m]) - Median(products[m]):F3} ms");
    }

    /// <summary>The LM head at batch 1 and 8 alternately: the product alone (one <see cref="Gemm.MultiplyBf16"/> over the
    /// whole head, two threads) and <see cref="HeadSampler.SampleRows"/> drawing from it (plain sampling at T = 1), so
    /// that their difference is what the sampler adds to the product: ms a call and GB/s of the head's weights, medians.</summary>
    private static void Head(TransformerModel model, int rounds)
    {
        var cfg = model.Config;
        var w = model.HeadWeight;
        int n = w.Dim(0), k = w.Dim(1);
        var rng = new Random(2);
        var a = new float[8 * k];
        for (int i = 0; i < a.Length; i++) a[i] = (float)(rng.NextDouble() * 2 - 1);
        var c = new float[8 * n];
        var options = new SamplingOptions { MaxNewTokens = NewTokens, Temperature = 1f, EosIds = [] };
        int[] batches = [1, 8];
        var product = batches.ToDictionary(m => m, _ => new List<double>());
        var sampled = batches.ToDictionary(m => m, _ => new List<double>());
        using var rounding = Ops.RoundActivationsToBf16();
        // The first fifth of the rounds warms up: the sampler's loops reach their optimised tier only after some hundred
        // calls (with 30 rounds its row arithmetic measured several times slower), so give it ≥ 200 rounds.
        for (int round = 0; round <= rounds; round++)
            foreach (int m in batches)
            {
                var sw = Stopwatch.StartNew();
                Gemm.MultiplyBf16(false, true, m, n, k, a.AsSpan(0, m * k), k, w.Bf16Span, k, c.AsSpan(0, m * n), n, false, Bf16Inputs.AtDecodeShapes);
                double gemm = sw.Elapsed.TotalMilliseconds;
                var rngs = Enumerable.Range(0, m).Select(b => new Random(round * 1000 + b)).ToArray();
                sw.Restart();
                HeadSampler.SampleRows(model, a, cfg.VocabSize, options, rngs, Enumerable.Repeat(true, m).ToArray(), new int[m], new float[m]);
                if (round * 5 < rounds) continue;
                product[m].Add(gemm);
                sampled[m].Add(sw.Elapsed.TotalMilliseconds);
            }
        double gb = n * (double)k * sizeof(ushort) / 1e6;
        foreach (int m in batches)
            Console.WriteLine($"batch {m}: product {Median(product[m]):F3} ms ({gb / Median(product[m]):F1} GB/s), sampled {Median(sampled[m]):F3} ms " +
                $"({gb / Median(sampled[m]):F1} GB/s), the sampler adds {Median(sampled[m]) - Median(product[m]):F3} ms");
    }

    private static void Shapes(TransformerModel model, int rounds, int[] batches)
    {
        string[] names = ["attn.q", "attn.k", "attn.v", "attn.o", "mlp.gate", "mlp.up", "mlp.down"];
        var cfg = model.Config;
        int widest = Math.Max(cfg.HiddenSize, cfg.IntermediateSize);
        var a = new float[8 * widest];
        var c = new float[8 * widest];
        for (int i = 0; i < a.Length; i++) a[i] = (i % 17 - 8) * 0.01f;
        var gbs = names.ToDictionary(n => n, _ => batches.ToDictionary(m => m, _ => new List<double>()));
        for (int round = 0; round <= rounds; round++)
            foreach (int m in round % 2 == 0 ? batches : batches.Reverse())
                foreach (var name in names)
                {
                    long bytes = 0;
                    var sw = Stopwatch.StartNew();
                    for (int l = 0; l < cfg.NumLayers; l++)
                    {
                        var w = model.Parameter($"layers.{l}.{name}.weight");
                        int n = w.Dim(0), k = w.Dim(1);
                        Gemm.MultiplyBf16(false, true, m, n, k, a.AsSpan(0, m * k), k, w.Bf16Span, k, c.AsSpan(0, m * n), n, false, Bf16Inputs.AtDecodeShapes);
                        bytes += (long)n * k * sizeof(ushort);
                    }
                    if (round > 0) gbs[name][m].Add(bytes / sw.Elapsed.TotalSeconds / 1e9);
                }
        foreach (var name in names)
            Console.WriteLine($"{name,-10} " + string.Join(" ", batches.Select(m => $"m{m} {Median(gbs[name][m]):F1} ({Median(gbs[name][m]) / Median(gbs[name][1]):F3})")));
    }

    /// <summary>A tensor of this shape, uniform in [−0.5, 0.5).</summary>
    private static Tensor RandomTensor(Random rng, params int[] shape)
    {
        var t = Tensor.Zeros(shape);
        var span = t.Span;
        for (int i = 0; i < span.Length; i++) span[i] = (float)(rng.NextDouble() - 0.5);
        return t;
    }

    private static double Median(List<double> values)
    {
        var sorted = values.Order().ToList();
        return sorted.Count == 0 ? double.NaN : sorted[sorted.Count / 2];
    }
}
