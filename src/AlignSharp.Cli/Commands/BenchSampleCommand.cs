using System.CommandLine;
using System.Diagnostics;
using System.Text.Json;
using AlignSharp.Engine.Kernels;
using AlignSharp.Models;
using AlignSharp.Text;

namespace AlignSharp.Cli.Commands;

/// <summary>
/// `alignsharp bench sample`: KV-cached sampling throughput, the workload of the PyTorch reference's
/// bench_sample.py (random prompt, multinomial sampling at temperature 1, prefill included in the time).
/// Also reports the memory-bandwidth bound: every decoding step reads all weights once.
/// </summary>
public static class BenchSampleCommand
{
    public static Command Create()
    {
        var config = new Option<string>("--config") { Description = "tiny, small or gpt2 (the reference scripts' shapes).", DefaultValueFactory = _ => "tiny" };
        var batch = new Option<int>("--batch") { Description = "Sequences generated together.", DefaultValueFactory = _ => 8 };
        var prompt = new Option<int>("--prompt-len") { Description = "Prompt tokens.", DefaultValueFactory = _ => 16 };
        var newTokens = new Option<int>("--new-tokens") { Description = "Generated tokens per sequence.", DefaultValueFactory = _ => 112 };
        var repeats = new Option<int>("--repeats") { Description = "Timed generate() calls (median reported).", DefaultValueFactory = _ => 3 };
        var threads = new Option<int?>("--threads") { Description = "Kernel threads (default: all cores)." };
        var bandwidth = new Option<double?>("--bandwidth-gbs") { Description = "Memory bandwidth in GB/s for the bound (default: measured here)." };
        var cmd = new Command("sample", "KV-cached sampling tokens/s; prints {\"tokens_per_s\", \"ms_per_token_step\", \"bandwidth_bound_fraction\", ...}.")
        {
            config, batch, prompt, newTokens, repeats, threads, bandwidth,
        };
        cmd.SetAction(r => CliErrors.Guard(() =>
        {
            if (r.GetValue(threads) is int t) ParallelFor.Threads = t;
            var (cfg, _, _) = ModelPresets.Bench(r.GetValue(config)!);
            int b = r.GetValue(batch), p = r.GetValue(prompt), n = r.GetValue(newTokens);
            var model = TransformerModel.CreateRandom(cfg, seed: 0);
            var rng = new Random(0);
            var prompts = Enumerable.Range(0, b).Select(_ => Enumerable.Range(0, p).Select(_ => rng.Next(cfg.VocabSize)).ToArray()).ToArray();
            var options = new SamplingOptions { MaxNewTokens = n, Temperature = 1f, EosIds = [], Seed = 1 };
            Generator.Generate(model, prompts, options with { MaxNewTokens = 4 });
            var times = new List<double>();
            for (int i = 0; i < Math.Max(1, r.GetValue(repeats)); i++)
            {
                var sw = Stopwatch.StartNew();
                Generator.Generate(model, prompts, options with { Seed = i });
                times.Add(sw.Elapsed.TotalSeconds);
                Console.Error.WriteLine($"run {i}: {b * n / times[^1]:F1} tokens/s");
            }
            double median = times.Order().ElementAt(times.Count / 2);
            double gbs = r.GetValue(bandwidth) ?? MemoryBandwidth.MeasureReadGBs();
            long weightBytes = model.ParameterCount * sizeof(float);
            double floorMsPerStep = weightBytes / (gbs * 1e9) * 1e3;
            double msPerStep = median / n * 1e3;
            Console.Out.WriteLine(JsonSerializer.Serialize(new Dictionary<string, object>
            {
                ["config"] = r.GetValue(config)!,
                ["batch"] = b,
                ["prompt_len"] = p,
                ["new_tokens"] = n,
                ["threads"] = ParallelFor.Threads,
                ["tokens_per_s"] = Math.Round(b * n / median, 1),
                ["ms_per_token_step"] = Math.Round(msPerStep, 3),
                ["weight_mb"] = Math.Round(weightBytes / 1e6, 1),
                ["bandwidth_gbs"] = Math.Round(gbs, 1),
                ["bandwidth_floor_ms_per_step"] = Math.Round(floorMsPerStep, 3),
                ["bandwidth_bound_fraction"] = Math.Round(floorMsPerStep / msPerStep, 3),
            }));
            return 0;
        }));
        return cmd;
    }
}

/// <summary>Read bandwidth of a large array summed by all kernel threads (the bound for decoding).</summary>
public static class MemoryBandwidth
{
    public static double MeasureReadGBs(int mib = 512, int repeats = 7)
    {
        var data = new float[mib * 1024 * 1024 / sizeof(float)];
        new Random(1).NextBytes(System.Runtime.InteropServices.MemoryMarshal.AsBytes(data.AsSpan()));
        var best = double.MaxValue;
        var partial = new float[ParallelFor.Threads];
        for (int i = 0; i < repeats; i++)
        {
            var sw = Stopwatch.StartNew();
            ParallelFor.For(data.Length, 1 << 20, (s, e) =>
            {
                float acc = Simd.Sum(data.AsSpan(s, e - s));
                lock (partial) partial[0] += acc;
            });
            best = Math.Min(best, sw.Elapsed.TotalSeconds);
        }
        return data.Length * (double)sizeof(float) / best / 1e9;
    }
}
