using System.CommandLine;
using System.Diagnostics;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using System.Text.Json;
using AlignSharp.Engine.Kernels;
using AlignSharp.Models;
using AlignSharp.Text;

namespace AlignSharp.Cli.Commands;

/// <summary>
/// `alignsharp bench sample`: KV-cached sampling throughput, the workload of the PyTorch reference's
/// bench_sample.py (random prompt, multinomial sampling at temperature 1, prefill included in the time), optionally
/// filtered by top-k / top-p.
/// On a preset (<c>--config</c>, random weights) or any checkpoint (<c>--model</c>), float32 or bf16 weights.
/// Also reports the memory-bandwidth bound: every decoding step reads all weights once.
/// </summary>
public static class BenchSampleCommand
{
    public static Command Create()
    {
        var config = new Option<string>("--config") { Description = "tiny, small or gpt2 (the reference scripts' shapes; random weights). Not with --model.", DefaultValueFactory = _ => "tiny" };
        var modelDir = new Option<string?>("--model") { Description = "A checkpoint directory (config.json + safetensors) to sample from instead of a --config preset." };
        var weightsDtype = new Option<string>("--weights-dtype") { Description = "Storage of the weight matrices: f32, bf16 (frozen, widened inside the kernels), or auto: bf16 when every matrix of the --model checkpoint is stored BF16, else f32.", DefaultValueFactory = _ => "auto" };
        var batch = new Option<int>("--batch") { Description = "Sequences generated together.", DefaultValueFactory = _ => 8 };
        var prompt = new Option<int>("--prompt-len") { Description = "Prompt tokens.", DefaultValueFactory = _ => 16 };
        var newTokens = new Option<int>("--new-tokens") { Description = "Generated tokens per sequence (at least 2).", DefaultValueFactory = _ => 112 };
        var repeats = new Option<int>("--repeats") { Description = "Timed generate() calls (median reported).", DefaultValueFactory = _ => 3 };
        var threads = new Option<int?>("--threads") { Description = "Kernel threads (default: all cores)." };
        var bandwidth = new Option<double?>("--bandwidth-gbs") { Description = "Memory bandwidth in GB/s for the bound (default: measured here)." };
        var topK = new Option<int>("--top-k") { Description = "Sample from the K most likely tokens (temperature 1); 0 = all.", DefaultValueFactory = _ => 0 };
        var topP = new Option<float>("--top-p") { Description = "Nucleus sampling (temperature 1): the smallest set of most likely tokens with probability ≥ P; 1 = all.", DefaultValueFactory = _ => 1f };
        var cmd = new Command("sample", "KV-cached sampling tokens/s; prints {\"tokens_per_s\", \"ms_per_token_step\", \"bandwidth_bound_fraction\", \"decode_ms_per_step\", \"decode_bandwidth_bound_fraction\", ...}.")
        {
            config, modelDir, weightsDtype, batch, prompt, newTokens, repeats, threads, bandwidth, topK, topP,
        };
        cmd.SetAction(r => CliErrors.Guard(() =>
        {
            int b = r.GetValue(batch), p = r.GetValue(prompt), n = r.GetValue(newTokens), reps = r.GetValue(repeats);
            if (b < 1) throw new CliException("--batch must be >= 1.");
            if (p < 1) throw new CliException("--prompt-len must be >= 1.");
            if (n < 2) throw new CliException("--new-tokens must be >= 2 (the decode time is the difference of n and 1 new tokens).");
            if (reps < 1) throw new CliException("--repeats must be >= 1.");
            if (r.GetValue(threads) is < 1) throw new CliException("--threads must be >= 1.");
            int k = r.GetValue(topK);
            float nucleus = r.GetValue(topP);
            if (k < 0) throw new CliException($"--top-k must be >= 0 (0 = off), not {k}.");
            if (!(nucleus > 0 && nucleus <= 1)) throw new CliException($"--top-p must be in (0, 1] (1 = off), not {nucleus}.");
            using var threadScope = ParallelFor.UseThreads(r.GetValue(threads) ?? 0);
            if (r.GetValue(bandwidth) is double bw && !(bw > 0)) throw new CliException("--bandwidth-gbs must be > 0.");
            string dtype = r.GetValue(weightsDtype)!;
            if (dtype is not ("auto" or "f32" or "bf16")) throw new CliException($"--weights-dtype must be auto, f32 or bf16, not '{dtype}'.");
            string? dir = r.GetValue(modelDir);
            if (dir != null && r.GetResult(config) is { Implicit: false }) throw new CliException("--config and --model exclude each other: give one.");

            var (model, name, bf16) = BenchModels.Load(dir, r.GetValue(config)!, dtype);
            var cfg = model.Config;
            if (p + n > cfg.MaxPositions) throw new CliException($"--prompt-len + --new-tokens = {p + n} exceeds the model's {cfg.MaxPositions} positions.");
            var rng = new Random(0);
            var prompts = Enumerable.Range(0, b).Select(_ => Enumerable.Range(0, p).Select(_ => rng.Next(cfg.VocabSize)).ToArray()).ToArray();
            var options = new SamplingOptions { MaxNewTokens = n, Temperature = 1f, TopK = k, TopP = nucleus, EosIds = [], Seed = 1 };
            // Warm-up as long as a timed run: a shorter one left the first timed run 10-25% slow (methods still being
            // recompiled at their optimised tier).
            Generator.Generate(model, prompts, options);
            // Whole runs (prefill + n steps, as bench_sample.py times them) and prefill + 1 step: their difference
            // over n - 1 is the decode step alone, the part bound by reading the weights.
            // The host's bandwidth drifts (other tenants; 36-69 GB/s seen on one day), so unless --bandwidth-gbs fixes
            // it, it is measured right before and after each pair of runs, and each pair is set against its own.
            double? fixedGbs = r.GetValue(bandwidth);
            var probe = fixedGbs == null ? new MemoryBandwidth() : null;
            // Bytes one decode step reads: every weight matrix a Linear uses (embedding tables only by the rows
            // looked up), norms and biases, and the cache: the filled part of the attention layers' keys and values
            // (averaged over the steps), recurrent layers' inputs and states.
            long weightBytes = BenchModels.DecodeWeightBytes(model, b);
            double bytesPerStep = weightBytes + KvCache.StepBytes(cfg, b, p + (n - 1) / 2.0);
            double FloorMs(double gbs) => bytesPerStep / (gbs * 1e9) * 1e3;
            double DecodeMs(double fullS, double firstS) => Math.Max(1e-9, (fullS - firstS) / (n - 1) * 1e3);
            var full = new List<double>();
            var first = new List<double>();
            var gbsPerRun = new List<double>();
            var fractions = new List<double>();
            var decodeFractions = new List<double>();
            var readMs = new List<double>();
            var readFractions = new List<double>();
            var ofRead = new List<double>();
            for (int i = 0; i < reps; i++)
            {
                double gbsBefore = fixedGbs ?? probe!.MeasureReadGBs();
                var sw = Stopwatch.StartNew();
                Generator.Generate(model, prompts, options with { Seed = i });
                full.Add(sw.Elapsed.TotalSeconds);
                sw.Restart();
                Generator.Generate(model, prompts, options with { Seed = i, MaxNewTokens = 1 });
                first.Add(sw.Elapsed.TotalSeconds);
                double gbsHere = fixedGbs ?? (gbsBefore + probe!.MeasureReadGBs()) / 2;
                gbsPerRun.Add(gbsHere);
                fractions.Add(FloorMs(gbsHere) / (full[^1] / n * 1e3));
                decodeFractions.Add(FloorMs(gbsHere) / DecodeMs(full[^1], first[^1]));
                string reference = "";
                if (probe != null)
                {
                    // What the bound's own loop does with one step's bytes, as many times as there are decode steps:
                    // the same statistic (a mean over as many reads) on the same host a moment later.
                    readMs.Add(probe.MeanReadSeconds((long)bytesPerStep, n - 1) * 1e3);
                    readFractions.Add(FloorMs(gbsHere) / readMs[^1]);
                    ofRead.Add(readMs[^1] / DecodeMs(full[^1], first[^1]));
                    reference = $", a plain read of its bytes {readMs[^1]:F2} ms ({readFractions[^1]:F3} of the bound)";
                }
                Console.Error.WriteLine($"run {i}: {b * n / full[^1]:F1} tokens/s, prefill + 1 step {first[^1] * 1e3:F1} ms, " +
                    $"bandwidth {gbsHere:F1} GB/s, decode fraction of the bound {decodeFractions[^1]:F3}{reference}");
            }
            double median = Median(full), medianFirst = Median(first);
            double gbs = Median(gbsPerRun);
            double floorMsPerStep = FloorMs(gbs);
            double msPerStep = median / n * 1e3;
            double decodeMs = DecodeMs(median, medianFirst);
            var report = new Dictionary<string, object>
            {
                ["config"] = name,
                ["weights_dtype"] = bf16 ? "bf16" : "f32",
                ["params"] = model.ParameterCount,
                ["batch"] = b,
                ["prompt_len"] = p,
                ["new_tokens"] = n,
                ["top_k"] = k,
                ["top_p"] = nucleus,
                ["threads"] = ParallelFor.Threads,
                ["cpu"] = BenchHost.Cpu,
                ["bf16_prefetch"] = BenchHost.Bf16Prefetch,
                ["tokens_per_s"] = Math.Round(b * n / median, 2),
                ["ms_per_token_step"] = Math.Round(msPerStep, 3),
                ["prefill_plus_one_step_ms"] = Math.Round(medianFirst * 1e3, 2),
                ["decode_ms_per_step"] = Math.Round(decodeMs, 3),
                ["weight_mb"] = Math.Round(model.ParameterBytes / 1e6, 1),
                ["bytes_per_step_mb"] = Math.Round(bytesPerStep / 1e6, 1),
                ["bandwidth_gbs"] = Math.Round(gbs, 1),
                ["bandwidth_gbs_min"] = Math.Round(gbsPerRun.Min(), 1),
                ["bandwidth_gbs_max"] = Math.Round(gbsPerRun.Max(), 1),
                ["bandwidth_floor_ms_per_step"] = Math.Round(floorMsPerStep, 3),
                // Medians of each run against the bandwidth measured around it.
                ["bandwidth_bound_fraction"] = Math.Round(Median(fractions), 3),
                ["decode_bandwidth_bound_fraction"] = Math.Round(Median(decodeFractions), 3),
            };
            if (readMs.Count > 0)
            {
                // The bound is a best-of probe; a decode step is a mean over steps, host hiccups included. A plain read of
                // the same bytes, timed as the steps are, shows how close to the bound any step of this size gets here.
                report["plain_read_ms_per_step"] = Math.Round(Median(readMs), 3);
                report["plain_read_bandwidth_bound_fraction"] = Math.Round(Median(readFractions), 3);
                report["decode_fraction_of_plain_read"] = Math.Round(Median(ofRead), 3);
            }
            Console.Out.WriteLine(JsonSerializer.Serialize(report));
            return 0;
        }));
        return cmd;
    }

    private static double Median(List<double> xs) => xs.Order().ElementAt(xs.Count / 2);
}

/// <summary>
/// Read bandwidth of a large array summed by all kernel threads (the bound for decoding): the best of a few passes of
/// two loops, a plain vector sum and one that also prefetches each line 16 KB ahead (as the decode kernels prefetch): on
/// a busy host the plain loop alone read less than the kernel itself streams, which put fractions of the bound above 1.
/// The array is allocated once (pinned), so that probing between timed runs leaves the GC nothing to do.
/// </summary>
public sealed unsafe class MemoryBandwidth
{
    private readonly float[] _data;
    private readonly float[] _partial = new float[1];

    public MemoryBandwidth(int mib = 512)
    {
        _data = GC.AllocateUninitializedArray<float>(mib * 1024 * 1024 / sizeof(float), pinned: true);
        new Random(1).NextBytes(System.Runtime.InteropServices.MemoryMarshal.AsBytes(_data.AsSpan()));
    }

    public double MeasureReadGBs(int repeats = 5)
    {
        double best = double.MaxValue;
        for (int i = 0; i < repeats; i++)
        {
            double plain = Time(_data.Length, prefetch: false);
            if (plain < best) (best, _prefetchFaster) = (plain, false);
            if (!CanPrefetch) continue;
            double prefetched = Time(_data.Length, prefetch: true);
            if (prefetched < best) (best, _prefetchFaster) = (prefetched, true);
        }
        return _data.Length * (double)sizeof(float) / best / 1e9;
    }

    private static bool CanPrefetch => Sse.IsSupported && Vector256.IsHardwareAccelerated;

    /// <summary>Which loop read fastest in the last <see cref="MeasureReadGBs"/>.</summary>
    private bool _prefetchFaster;

    /// <summary>Mean seconds that loop takes to read <paramref name="bytes"/> (the array from its start, over again when
    /// it is shorter), over <paramref name="passes"/> reads back to back.</summary>
    public double MeanReadSeconds(long bytes, int passes)
    {
        long floats = Math.Max(1, bytes / sizeof(float));
        double total = 0;
        for (int pass = 0; pass < passes; pass++)
            for (long done = 0; done < floats; done += _data.Length)
                total += Time((int)Math.Min(_data.Length, floats - done), _prefetchFaster && CanPrefetch);
        return total / passes;
    }

    private double Time(int count, bool prefetch)
    {
        var data = _data;
        var sw = Stopwatch.StartNew();
        ParallelFor.For(count, 1 << 20, (s, e) =>
        {
            float acc = prefetch ? PrefetchedSum(data, s, e) : Simd.Sum(data.AsSpan(s, e - s));
            lock (_partial) _partial[0] += acc; // keeps the sum, so the reads cannot be dropped
        });
        return sw.Elapsed.TotalSeconds;
    }

    /// <summary>Σ data[s..e) two 32-byte vectors a line, each 64-byte line prefetched 16 KB before it is read (never past e).</summary>
    private static float PrefetchedSum(float[] data, int s, int e)
    {
        const int Ahead = 16 * 1024, Line = 64 / sizeof(float), Half = Line / 2;
        var acc0 = Vector256<float>.Zero;
        var acc1 = Vector256<float>.Zero;
        fixed (float* p = data)
        {
            byte* last = (byte*)(p + e) - 64;
            int i = s;
            for (; i + Line <= e; i += Line)
            {
                byte* next = (byte*)(p + i) + Ahead;
                Sse.Prefetch0(next < last ? next : last);
                acc0 += Vector256.Load(p + i);
                acc1 += Vector256.Load(p + i + Half);
            }
            float sum = Vector256.Sum(acc0 + acc1);
            for (; i < e; i++) sum += p[i];
            return sum;
        }
    }
}
