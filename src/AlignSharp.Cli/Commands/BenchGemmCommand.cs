using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using AlignSharp.Engine.Kernels;

namespace AlignSharp.Cli.Commands;

/// <summary>
/// `alignsharp bench gemm`: times C[m,n] = opA[m,k]·opB[k,n] and prints one JSON object with the median
/// of the timed repetitions: {"m","n","k","batch","trans_a","trans_b","b_dtype","threads","reps","gflops","ms","min_ms","max_ms","b_gbs"},
/// and with bf16 B "bf16_kernel": "vdpbf16ps" where the native AVX512-BF16 kernel ran (decode shapes; A rounded to bf16,
/// as in inference), else "widened" (B widened exactly; ALIGNSHARP_BF16_DOT=0 forces it); with --matmul-precision medium
/// "vdpbf16ps-blocked" (A rounded to bf16 at any shape, the blocked kernel) or "rounded-widened" (A rounded, float32 product).
/// </summary>
public static class BenchGemmCommand
{
    public static Command Create()
    {
        var m = new Option<int>("--m") { Description = "Rows of C (and of opA).", DefaultValueFactory = _ => 1024 };
        var n = new Option<int>("--n") { Description = "Columns of C (and of opB).", DefaultValueFactory = _ => 1024 };
        var k = new Option<int>("--k") { Description = "Inner dimension.", DefaultValueFactory = _ => 1024 };
        var batch = new Option<int>("--batch") { Description = "Independent products per call (MultiplyBatched); 1 = Multiply.", DefaultValueFactory = _ => 1 };
        var threads = new Option<int>("--threads") { Description = "Kernel threads (ParallelFor.Threads); default: the number of cores.", DefaultValueFactory = _ => Environment.ProcessorCount };
        var transA = new Option<bool>("--trans-a") { Description = "A is stored [k,m] and used transposed." };
        var transB = new Option<bool>("--trans-b") { Description = "B is stored [n,k] and used transposed." };
        var bDtype = new Option<string>("--b-dtype") { Description = "Storage of B: f32, or bf16 (frozen weights, Gemm.MultiplyBf16 as inference calls it; batch 1 only).", DefaultValueFactory = _ => "f32" };
        var precision = new Option<string>("--matmul-precision") { Description = "With --b-dtype bf16: highest (A exact, or rounded at decode shapes where the decode kernel runs, as generation calls it) or medium (A rounded to bf16 at every shape, as training with --matmul-precision medium calls it).", DefaultValueFactory = _ => "highest" };
        var reps = new Option<int>("--reps") { Description = "Timed repetitions (each loops the call for >= 20 ms on small shapes); the median is reported.", DefaultValueFactory = _ => 15 };

        var cmd = new Command("gemm", "Float32 GEMM throughput; prints {\"m\",\"n\",\"k\",\"threads\",\"gflops\",\"ms\",...} (medians).");
        foreach (var o in new Option[] { m, n, k, batch, threads, transA, transB, bDtype, precision, reps }) cmd.Options.Add(o);
        cmd.SetAction(parseResult => CliErrors.Guard(() =>
        {
            int vm = parseResult.GetValue(m), vn = parseResult.GetValue(n), vk = parseResult.GetValue(k);
            int vb = parseResult.GetValue(batch), vt = parseResult.GetValue(threads), vr = parseResult.GetValue(reps);
            bool ta = parseResult.GetValue(transA), tb = parseResult.GetValue(transB);
            if (vm < 1 || vn < 1 || vk < 1) throw new CliException("--m, --n and --k must be >= 1.");
            if (vb < 1) throw new CliException("--batch must be >= 1.");
            if (vt < 1) throw new CliException("--threads must be >= 1.");
            if (vr < 1) throw new CliException("--reps must be >= 1.");
            string dt = parseResult.GetValue(bDtype)!;
            if (dt != "f32" && dt != "bf16") throw new CliException($"--b-dtype must be f32 or bf16, not '{dt}'.");
            if (dt == "bf16" && vb != 1) throw new CliException("--b-dtype bf16 needs --batch 1 (there is no batched bf16 product).");
            string mp = parseResult.GetValue(precision)!;
            if (mp is not ("highest" or "medium")) throw new CliException($"--matmul-precision must be highest or medium, not '{mp}'.");
            if (mp == "medium" && dt != "bf16") throw new CliException("--matmul-precision medium applies to products with a bf16 B: add --b-dtype bf16.");
            using var threadScope = ParallelFor.UseThreads(vt);
            Console.WriteLine(Run(vm, vn, vk, vb, ta, tb, vr, dt == "bf16", mp == "medium"));
            return 0;
        }));
        return cmd;
    }

    /// <summary>The median GFLOP/s of a float32 C[m,n] = A[m,k]·B[k,n] (the figure `bench gemm` prints), in this process:
    /// the GEMM peak that the model-FLOPs utilisation of `bench rl` is measured against. With <paramref name="bf16Medium"/>
    /// B is bf16 and A rounded to bf16 (`--b-dtype bf16 --matmul-precision medium`).</summary>
    public static double MeasureGflops(int m, int n, int k, int reps = 9, bool bf16Medium = false)
    {
        using var doc = System.Text.Json.JsonDocument.Parse(Run(m, n, k, 1, false, false, reps, bf16Medium, bf16Medium));
        return doc.RootElement.GetProperty("gflops").GetDouble();
    }

    private static string Run(int m, int n, int k, int batch, bool transA, bool transB, int reps, bool bf16, bool medium)
    {
        var rng = new Random(1234);
        float[] a = Fill(rng, (long)batch * m * k), b = Fill(rng, (long)batch * k * n), c = new float[(long)batch * m * n];
        ushort[] b16 = [];
        if (bf16)
        {
            b16 = new ushort[b.Length];
            Bf16.Narrow(b, b16);
            b = [];
        }
        int lda = transA ? m : k, ldb = transB ? k : n;
        void Call()
        {
            if (bf16) Gemm.MultiplyBf16(transA, transB, m, n, k, a, lda, b16, ldb, c, n, accumulate: false, medium ? Bf16Inputs.Always : Bf16Inputs.AtDecodeShapes);
            else if (batch == 1) Gemm.Multiply(transA, transB, m, n, k, a, lda, b, ldb, c, n, accumulate: false);
            else Gemm.MultiplyBatched(batch, transA, transB, m, n, k, a, lda, (long)m * k, b, ldb, (long)k * n, c, n, (long)m * n, accumulate: false);
        }

        // Warm-up: tier-up the JIT and grow the packing buffers; also sizes the inner loop to >= 20 ms per sample.
        var sw = Stopwatch.StartNew();
        int calls = 0;
        while (calls < 3 || sw.Elapsed.TotalMilliseconds < 300) { Call(); calls++; }
        double perCall = sw.Elapsed.TotalMilliseconds / calls;
        int inner = Math.Max(1, (int)(20.0 / Math.Max(perCall, 1e-6)));

        var samples = new double[reps];
        for (int r = 0; r < reps; r++)
        {
            long t0 = Stopwatch.GetTimestamp();
            for (int i = 0; i < inner; i++) Call();
            samples[r] = Stopwatch.GetElapsedTime(t0).TotalMilliseconds / inner;
        }
        Array.Sort(samples);
        double ms = samples[reps / 2];
        if (reps % 2 == 0) ms = 0.5 * (samples[reps / 2 - 1] + samples[reps / 2]);
        double gflops = 2.0 * m * n * k * batch / (ms * 1e6);
        // B's bytes over the time: the bound that matters for decode shapes (B read once per call).
        double bGbs = (double)k * n * batch * (bf16 ? 2 : 4) / (ms * 1e6);
        var inv = CultureInfo.InvariantCulture;
        string kernel = !bf16 ? ""
            : medium ? (Gemm.Bf16BlockedRuns(transA) ? ",\"bf16_kernel\":\"vdpbf16ps-blocked\"" : ",\"bf16_kernel\":\"rounded-widened\"")
            : Gemm.Bf16DotRuns(transA, transB, m) ? ",\"bf16_kernel\":\"vdpbf16ps\"" : ",\"bf16_kernel\":\"widened\"";
        return string.Create(inv,
            $"{{\"m\":{m},\"n\":{n},\"k\":{k},\"batch\":{batch},\"trans_a\":{(transA ? "true" : "false")},\"trans_b\":{(transB ? "true" : "false")}," +
            $"\"b_dtype\":\"{(bf16 ? "bf16" : "f32")}\",\"threads\":{ParallelFor.Threads},\"reps\":{reps},\"inner\":{inner},\"gflops\":{gflops:F2},\"ms\":{ms:F4},\"min_ms\":{samples[0]:F4},\"max_ms\":{samples[^1]:F4},\"b_gbs\":{bGbs:F1}{kernel}}}");
    }

    private static float[] Fill(Random rng, long count)
    {
        var x = new float[count];
        for (long i = 0; i < count; i++) x[i] = (float)(rng.NextDouble() * 2 - 1);
        return x;
    }
}
