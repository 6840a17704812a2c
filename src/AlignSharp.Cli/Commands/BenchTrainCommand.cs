using System.CommandLine;
using System.Diagnostics;
using System.Text.Json;
using AlignSharp.Engine;
using AlignSharp.Engine.Kernels;
using AlignSharp.Engine.Optim;
using AlignSharp.Models;

namespace AlignSharp.Cli.Commands;

/// <summary>
/// `alignsharp bench train`: forward + cross-entropy + backward + AdamW on a fixed random batch, the same
/// workload as the PyTorch reference's bench_train.py (GPT-2-style model, AdamW β=(0.9, 0.95), wd 0.1).
/// </summary>
public static class BenchTrainCommand
{
    public static Command Create()
    {
        var config = new Option<string>("--config") { Description = "Model and batch: tiny (256 vocab, d128, 4 layers, 8×128), small (8192, d256, 6 layers, 8×256) or gpt2 (50257, d768, 12 layers, 4×256).", DefaultValueFactory = _ => "tiny" };
        var steps = new Option<int>("--steps") { Description = "Timed steps (the median is reported).", DefaultValueFactory = _ => 10 };
        var warmup = new Option<int>("--warmup") { Description = "Untimed steps first (JIT, pools).", DefaultValueFactory = _ => 3 };
        var threads = new Option<int?>("--threads") { Description = "Kernel threads (default: all cores)." };
        var batch = new Option<int?>("--batch") { Description = "Override the config's batch size." };
        var seq = new Option<int?>("--seq") { Description = "Override the config's sequence length." };
        var modelDir = new Option<string?>("--model") { Description = "A checkpoint directory to train (float32) instead of a --config preset; batch 1 × 256 positions (or the model's maximum, when smaller) unless --batch/--seq say otherwise." };
        var cmd = new Command("train", "Training-step throughput of a GPT-2-style preset or a checkpoint; prints {\"tokens_per_s\", \"ms_per_step\", \"gc_per_step\", \"model_gflops\", \"mfu\", ...}; mfu: model FLOPs over a float32 1024³ GEMM timed in the same process.")
        {
            config, modelDir, steps, warmup, threads, batch, seq,
        };
        cmd.SetAction(r => CliErrors.Guard(() =>
        {
            if (r.GetValue(threads) is < 1) throw new CliException("--threads must be >= 1.");
            using var threadScope = ParallelFor.UseThreads(r.GetValue(threads) ?? 0);
            string? dir = r.GetValue(modelDir);
            if (dir != null && r.GetResult(config) is { Implicit: false }) throw new CliException("--config and --model exclude each other: give one.");
            var (model, name, _) = BenchModels.Load(dir, r.GetValue(config)!, "f32");
            // A checkpoint's default is 256 positions, or all it has when it has fewer.
            var (b, s) = dir == null ? (ModelPresets.Bench(name).Batch, ModelPresets.Bench(name).Seq) : (1, Math.Min(256, model.Config.MaxPositions));
            b = r.GetValue(batch) ?? b;
            s = r.GetValue(seq) ?? s;
            if (b < 1 || s < 1) throw new CliException("--batch and --seq must be >= 1.");
            if (s > model.Config.MaxPositions) throw new CliException($"--seq {s} exceeds the model's {model.Config.MaxPositions} positions.");
            int nSteps = r.GetValue(steps), nWarm = r.GetValue(warmup);
            if (nSteps < 1) throw new CliException("--steps must be >= 1.");
            if (nWarm < 0) throw new CliException("--warmup must be >= 0.");
            Console.Out.WriteLine(JsonSerializer.Serialize(Run(model, name, b, s, nWarm, nSteps)));
            return 0;
        }));
        return cmd;
    }

    public static Dictionary<string, object> Run(TransformerModel model, string name, int batch, int seq, int warmup, int steps)
    {
        var cfg = model.Config;
        var opt = new AdamW(ParamGroups.DecayAndNoDecay(model.NamedParameters, 0.1f), new AdamWOptions(Lr: 3e-4f, Beta1: 0.9f, Beta2: 0.95f, WeightDecay: 0.1f));
        var rng = new Random(0);
        var data = new int[batch * (seq + 1)];
        for (int i = 0; i < data.Length; i++) data[i] = rng.Next(cfg.VocabSize);
        var x = new int[batch * seq];
        var y = new int[batch * seq];
        for (int r = 0; r < batch; r++)
            for (int t = 0; t < seq; t++) { x[r * seq + t] = data[r * (seq + 1) + t]; y[r * seq + t] = data[r * (seq + 1) + t + 1]; }

        float Step()
        {
            using var scope = TensorScope.Begin();
            var logits = model.Forward(x, batch, seq);
            var loss = Ops.CrossEntropy(logits.Reshape(batch * seq, cfg.VocabSize), y);
            opt.ZeroGrad();
            loss.Backward();
            opt.Step();
            return loss.Item();
        }

        float firstLoss = 0, lastLoss = 0;
        for (int i = 0; i < warmup; i++)
        {
            float l = Step();
            if (i == 0) firstLoss = l;
            Console.Error.WriteLine($"warmup {i}: loss {l:F4}");
        }
        var ms = new double[steps];
        int gc0 = GC.CollectionCount(0);
        long alloc0 = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < steps; i++)
        {
            var sw = Stopwatch.StartNew();
            lastLoss = Step();
            ms[i] = sw.Elapsed.TotalMilliseconds;
            if (warmup == 0 && i == 0) firstLoss = lastLoss;
            Console.Error.WriteLine($"step {i}: {ms[i]:F1} ms, {batch * seq / ms[i] * 1000:F0} tok/s, loss {lastLoss:F4}");
        }
        int gcs = GC.CollectionCount(0) - gc0;
        long allocated = GC.GetAllocatedBytesForCurrentThread() - alloc0;
        double medianMs = Median(ms);
        double tokPerS = batch * seq / medianMs * 1000;
        double flopsPerToken = TrainFlopsPerToken(model, seq);
        double peak = BenchGemmCommand.MeasureGflops(1024, 1024, 1024);
        return new Dictionary<string, object>
        {
            ["config"] = name,
            ["batch"] = batch,
            ["seq"] = seq,
            ["threads"] = ParallelFor.Threads,
            ["cpu"] = BenchHost.Cpu,
            ["params"] = model.ParameterCount,
            ["tokens_per_s"] = Math.Round(tokPerS, 1),
            ["ms_per_step"] = Math.Round(medianMs, 2),
            ["gc_per_step"] = Math.Round((double)gcs / steps, 3),
            ["alloc_bytes_per_step"] = allocated / steps,
            ["model_gflops"] = Math.Round(flopsPerToken * tokPerS / 1e9, 1),
            ["gemm_peak_gflops"] = Math.Round(peak, 1),
            ["mfu"] = Math.Round(flopsPerToken * tokPerS / 1e9 / peak, 4),
            ["loss_first"] = firstLoss,
            ["loss_last"] = lastLoss,
        };
    }

    /// <summary>The reference script's count: 6·(GEMM weights) + 6·(attention QKᵀ and AV, full square) per token
    /// (for the GPT-2 presets the GEMM weights are 12·d²·layers + d·vocab).</summary>
    public static double TrainFlopsPerToken(TransformerModel model, int seq)
    {
        var c = model.Config;
        double attention = (double)c.NumLayers * 2 * seq * c.QueryDim;
        return 6.0 * BenchModels.LinearMacsPerToken(model) + 6 * attention;
    }

    private static double Median(double[] xs)
    {
        var s = xs.OrderBy(v => v).ToArray();
        return s.Length % 2 == 1 ? s[s.Length / 2] : (s[s.Length / 2 - 1] + s[s.Length / 2]) / 2;
    }
}
