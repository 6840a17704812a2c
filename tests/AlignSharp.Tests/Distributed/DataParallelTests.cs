using System.Diagnostics;
using System.Text.Json;
using AlignSharp.Models.Checkpoints;
using AlignSharp.Tests.Training;

namespace AlignSharp.Tests.Distributed;

/// <summary>A Fact that runs only where Open MPI's mpirun is installed, and says why it skipped otherwise.</summary>
public sealed class MpiFactAttribute : FactAttribute
{
    public const string Mpirun = "/usr/bin/mpirun";

    public MpiFactAttribute()
    {
        if (!File.Exists(Mpirun)) Skip = $"Open MPI is not installed ({Mpirun} missing); install it with: apt-get install -y openmpi-bin libopenmpi-dev";
    }
}

/// <summary>A Theory that runs only where Open MPI's mpirun is installed, and says why it skipped otherwise.</summary>
public sealed class MpiTheoryAttribute : TheoryAttribute
{
    public MpiTheoryAttribute()
    {
        if (!File.Exists(MpiFactAttribute.Mpirun)) Skip = $"Open MPI is not installed ({MpiFactAttribute.Mpirun} missing); install it with: apt-get install -y openmpi-bin libopenmpi-dev";
    }
}

/// <summary>A Fact that needs network namespaces (root, CAP_SYS_ADMIN) besides mpirun; skipped with the reason otherwise.</summary>
public sealed class NetnsFactAttribute : FactAttribute
{
    public NetnsFactAttribute()
    {
        if (!File.Exists(MpiFactAttribute.Mpirun)) { Skip = "Open MPI is not installed; install it with: apt-get install -y openmpi-bin libopenmpi-dev"; return; }
        string name = "asprobe" + Environment.ProcessId;
        if (Run("ip", "netns", "add", name) != 0) { Skip = "cannot create network namespaces here (needs root with CAP_SYS_ADMIN and iproute2)"; return; }
        Run("ip", "netns", "del", name);
    }

    static int Run(params string[] args)
    {
        try
        {
            var psi = new ProcessStartInfo(args[0]) { RedirectStandardError = true, RedirectStandardOutput = true };
            foreach (var a in args[1..]) psi.ArgumentList.Add(a);
            using var p = Process.Start(psi)!;
            p.WaitForExit(10_000);
            return p.ExitCode;
        }
        catch (System.ComponentModel.Win32Exception) { return -1; }
    }
}

/// <summary>
/// Data-parallel training under mpirun (2 ranks on loopback, one thread each) against the single-process run with
/// the same global batch (2 × accumulation): the same loss at every step, the same final weights within float
/// tolerance, and rank 0 alone writing the run directory.
/// </summary>
[Collection(SerialCollection.Name)]
public sealed class DataParallelTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("alignsharp-mpi-").FullName;
    public void Dispose() => Directory.Delete(_dir, recursive: true);
    private string P(string name) => Path.Combine(_dir, name);

    static CliRunner.Result Mpirun(int ranks, IEnumerable<string> args, string? launcher = null, int timeoutMs = 120_000)
    {
        using var p = StartMpirun(ranks, args, launcher);
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(timeoutMs))
        {
            p.Kill(entireProcessTree: true);
            throw new TimeoutException($"mpirun {string.Join(' ', args)} ran longer than {timeoutMs} ms");
        }
        return new CliRunner.Result(p.ExitCode, stdout.Result, stderr.Result);
    }

    static Process StartMpirun(int ranks, IEnumerable<string> args, string? launcher = null)
    {
        var psi = new ProcessStartInfo(launcher ?? MpiFactAttribute.Mpirun)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = CliRunner.RepoRoot,
        };
        if (launcher == null)
            foreach (var a in new[] { "--allow-run-as-root", "--oversubscribe", "-np", ranks.ToString(), "--mca", "btl", "self,tcp" }) psi.ArgumentList.Add(a);
        psi.ArgumentList.Add("dotnet");
        psi.ArgumentList.Add(CliRunner.CliDll);
        foreach (var a in args) psi.ArgumentList.Add(a);
        psi.ArgumentList.Add("--threads");
        psi.ArgumentList.Add("1");
        return Process.Start(psi)!;
    }

    static List<double> Losses(string run) => File.ReadLines(Path.Combine(run, "metrics.jsonl"))
        .Select(l => JsonDocument.Parse(l).RootElement)
        .Where(e => e.GetProperty("split").GetString() == "train")
        .Select(e => e.GetProperty("loss").GetDouble()).ToList();

    /// <summary>The same loss at every one of <paramref name="steps"/> logged steps, to 1e-5 relative.</summary>
    static void AssertSameLosses(string single, string dataParallel, int steps)
    {
        var expected = Losses(single);
        var actual = Losses(dataParallel);
        Assert.Equal(steps, expected.Count);
        Assert.Equal(steps, actual.Count);
        for (int i = 0; i < steps; i++) Assert.True(Math.Abs(expected[i] - actual[i]) <= 1e-5 * Math.Abs(expected[i]), $"step {i + 1}: {expected[i]} vs {actual[i]}");
    }

    static void AssertSameWeights(string a, string b, double tolerance)
    {
        using var x = SafetensorsFile.Open(Path.Combine(a, "model.safetensors"));
        using var y = SafetensorsFile.Open(Path.Combine(b, "model.safetensors"));
        Assert.Equal(x.Names.Order(), y.Names.Order());
        foreach (var name in x.Names)
        {
            var u = x.Read(name); var v = y.Read(name);
            for (int i = 0; i < u.Length; i++)
                Assert.True(Math.Abs(u[i] - v[i]) <= tolerance, $"{name}[{i}]: {u[i]} vs {v[i]}");
        }
    }

    /// <summary>The run with accumulation 2 in one process, then with accumulation 1 on 2 ranks (the same global batch);
    /// both must succeed. Returns the mpirun result.</summary>
    static CliRunner.Result SingleThenTwoRanks(Func<string, int, string[]> args, string single, string dp)
    {
        var one = CliRunner.Run([.. args(single, 2), "--threads", "1"]);
        Assert.True(one.ExitCode == 0, one.StdErr);
        var two = Mpirun(2, args(dp, 1));
        Assert.True(two.ExitCode == 0, two.StdErr);
        return two;
    }

    /// <summary>The same <paramref name="keys"/> at every one of <paramref name="steps"/> logged train steps, within a relative tolerance.</summary>
    static void AssertSameMetrics(string expectedRun, string actualRun, int steps, double tolerance, params string[] keys)
    {
        var expected = AlignSharp.Tests.Rl.RlTestKit.TrainMetrics(expectedRun);
        var actual = AlignSharp.Tests.Rl.RlTestKit.TrainMetrics(actualRun);
        Assert.Equal(steps, expected.Count);
        Assert.Equal(expected.Count, actual.Count);
        for (int i = 0; i < expected.Count; i++)
            foreach (var key in keys)
            {
                double e = expected[i].GetProperty(key).GetDouble(), a = actual[i].GetProperty(key).GetDouble();
                Assert.True(Math.Abs(e - a) <= tolerance * Math.Max(1, Math.Abs(e)), $"step {i + 1} {key}: {e} vs {a}");
            }
    }

    void WriteSftData()
    {
        var rng = new Random(3);
        TinyModels.WriteJsonl(P("sft.jsonl"), Enumerable.Range(0, 40).Select(i =>
        {
            int a = rng.Next(50), b = rng.Next(50);
            return (object)new { prompt = $"{a}+{b}=", completion = (a + b).ToString() };
        }));
    }

    string[] SftArgs(string output, int accumulation, int steps = 6, params string[] more) =>
    [
        "sft", "--model", P("base"), "--data", P("sft.jsonl"), "--out", output, "--max-steps", steps.ToString(), "--batch-size", "4",
        "--gradient-accumulation-steps", accumulation.ToString(), "--learning-rate", "0.001", "--logging-steps", "1", "--save-steps", "3", .. more,
    ];

    [MpiFact]
    public void SftOnTwoRanksEqualsOneProcessWithTheSameGlobalBatch()
    {
        TinyModels.Create(P("base"));
        WriteSftData();
        var single = CliRunner.Run([.. SftArgs(P("single"), 2), "--threads", "1"]);
        Assert.True(single.ExitCode == 0, single.StdErr);
        var dp = Mpirun(2, SftArgs(P("dp"), 1));
        Assert.True(dp.ExitCode == 0, dp.StdErr);

        var expected = Losses(P("single"));
        var actual = Losses(P("dp"));
        Assert.Equal(6, expected.Count);
        Assert.Equal(expected.Count, actual.Count);
        for (int i = 0; i < expected.Count; i++) Assert.True(Math.Abs(expected[i] - actual[i]) <= 1e-5 * Math.Abs(expected[i]), $"step {i + 1}: {expected[i]} vs {actual[i]}");
        AssertSameWeights(P("single/final"), P("dp/final"), 1e-4);
        // Rank 0 alone wrote: one run, one summary, one progress stream.
        Assert.Equal("completed", JsonDocument.Parse(File.ReadAllText(P("dp/summary.json"))).RootElement.GetProperty("status").GetString());
        Assert.Equal(1, CountOccurrences(dp.StdErr, "sft: done"));
        Assert.True(Directory.Exists(P("dp/checkpoints/step-000003")));
        // Each step all-reduces every gradient once (4 bytes a weight) plus a few scalars; one process reports nothing.
        long weights = 0;
        using (var model = SafetensorsFile.Open(P("dp/final/model.safetensors"))) foreach (var name in model.Names) weights += model.Read(name).Length;
        foreach (var line in AlignSharp.Tests.Rl.RlTestKit.TrainMetrics(P("dp")))
        {
            double bytes = line.GetProperty("dp/allreduce_bytes").GetDouble();
            Assert.InRange(bytes, 4.0 * weights, 4.0 * weights + 1024);
            Assert.True(line.GetProperty("dp/allreduce_s").GetDouble() > 0);
        }
        Assert.False(AlignSharp.Tests.Rl.RlTestKit.TrainMetrics(P("single"))[0].TryGetProperty("dp/allreduce_bytes", out _));
    }

    /// <summary>24 arithmetic preference pairs (a wrong sum rejected) in prefs.jsonl.</summary>
    void WritePreferences(int seed)
    {
        var rng = new Random(seed);
        TinyModels.WriteJsonl(P("prefs.jsonl"), Enumerable.Range(0, 24).Select(i =>
        {
            int a = rng.Next(50), b = rng.Next(50);
            return (object)new { prompt = $"{a}+{b}=", chosen = (a + b).ToString(), rejected = (a + b + 1 + rng.Next(9)).ToString() };
        }));
    }

    [MpiFact]
    public void DpoOnTwoRanksEqualsOneProcessWithTheSameGlobalBatch()
    {
        TinyModels.Create(P("base"));
        WritePreferences(5);
        string[] Args(string output, int accumulation) =>
        [
            "dpo", "--policy", P("base"), "--data", P("prefs.jsonl"), "--out", output, "--max-steps", "4", "--batch-size", "2",
            "--gradient-accumulation-steps", accumulation.ToString(), "--learning-rate", "0.001", "--logging-steps", "1",
        ];
        var dp = SingleThenTwoRanks(Args, P("single"), P("dp"));
        Assert.Contains("(2 ranks)", dp.StdErr); // the reference log-probabilities were shared out
        AssertSameLosses(P("single"), P("dp"), steps: 4);
        AssertSameWeights(P("single/final"), P("dp/final"), 1e-4);
        Assert.True(File.Exists(P("dp/" + AlignSharp.Training.Dpo.ReferenceLogProbs.CacheFileName)));
    }

    /// <summary>bco_pair's running mean over two ranks: each step takes in both ranks' batch means (a count of 2 a step, as
    /// TRL's RunningMoments gathers them), the ranks stay equal (their weights are compared at every checkpoint) and a
    /// resumed two-rank run ends as the one that never stopped.</summary>
    [MpiFact]
    public void BcoPairsRunningMeanIsSharedByTheRanks()
    {
        TinyModels.Create(P("base"));
        WritePreferences(6);
        string[] Args(string output) =>
        [
            "dpo", "--policy", P("base"), "--data", P("prefs.jsonl"), "--out", output, "--max-steps", "4", "--batch-size", "2",
            "--loss-type", "bco_pair", "--learning-rate", "0.001", "--logging-steps", "1", "--save-steps", "2",
        ];
        var full = Mpirun(2, Args(P("full")));
        Assert.True(full.ExitCode == 0, full.StdErr);
        var state = System.Text.Json.JsonDocument.Parse(File.ReadAllText(P("full/checkpoints/step-000002/trainer_state.json"))).RootElement.GetProperty("extra");
        Assert.Equal(4.0, state.GetProperty("bco_running_count").GetDouble(), 9);
        Assert.True(Mpirun(2, Args(P("part"))).ExitCode == 0);
        Directory.Delete(P("part/final"), true);
        Directory.Delete(P("part/checkpoints/step-000004"), true);
        var resumed = Mpirun(2, [.. Args(P("part")), "--resume"]);
        Assert.True(resumed.ExitCode == 0, resumed.StdErr);
        AssertSameLosses(P("full"), P("part"), steps: 4);
        AssertSameWeights(P("full/final"), P("part/final"), 0);
    }

    [MpiFact]
    public void OnlineDpoOnTwoRanksEqualsOneProcessWithTheSameGlobalBatch()
    {
        // Each rank samples and judges its own micro-batches from the random streams of their sequence numbers, so the
        // pairs are those of the single process with twice the accumulation.
        using var kit = new AlignSharp.Tests.Rl.RlTestKit();
        string policy = kit.Policy(), rm = kit.RewardModelDir(), prompts = kit.Prompts(count: 8);
        string[] Args(string output, int accumulation) =>
        [
            "online-dpo", "--policy", policy, "--prompts", prompts, "--judge-model", rm, "--out", output, "--max-steps", "3",
            "--batch-size", "2", "--max-new-tokens", "4", "--gradient-accumulation-steps", accumulation.ToString(),
            "--learning-rate", "0.001", "--logging-steps", "1",
        ];
        SingleThenTwoRanks(Args, P("single"), P("dp"));
        AssertSameLosses(P("single"), P("dp"), steps: 3);
        AssertSameWeights(P("single/final"), P("dp/final"), 1e-4);
        static long NumTokens(string run) => File.ReadLines(Path.Combine(run, "metrics.jsonl")).Select(l => JsonDocument.Parse(l).RootElement)
            .Last(e => e.GetProperty("split").GetString() == "train").GetProperty("num_tokens").GetInt64();
        Assert.Equal(NumTokens(P("single")), NumTokens(P("dp")));   // counted over both ranks
    }

    [MpiFact]
    public void ResumeWithAnotherNumberOfRanks()
    {
        TinyModels.Create(P("base"));
        WriteSftData();
        var first = Mpirun(2, SftArgs(P("run"), 1, steps: 3));
        Assert.True(first.ExitCode == 0, first.StdErr);
        var more = CliRunner.Run([.. SftArgs(P("run"), 1, steps: 6), "--resume", "--threads", "1"]);
        Assert.True(more.ExitCode == 0, more.StdErr);
        Assert.Contains("resumed from", more.StdErr);
        var summary = JsonDocument.Parse(File.ReadAllText(P("run/summary.json"))).RootElement;
        Assert.Equal(6, summary.GetProperty("steps").GetInt32());
        Assert.Equal(6, Losses(P("run")).Count);
    }

    /// <summary>A stop request reaching every rank through mpirun (SIGUSR1, which Open MPI forwards; SIGINT/SIGTERM to
    /// mpirun end the job after a second) or one rank alone (SIGTERM to rank 1): every rank finishes the same step (the
    /// request is all-reduced), rank 0 writes the checkpoint and the summary and prints the resume command, and the
    /// ranks exit with the signal's code (a follower used to die at once, and the job with it, leaving nothing since
    /// the last checkpoint).</summary>
    [MpiTheory]
    [InlineData("mpirun", "USR1", 138)]
    [InlineData("rank 1", "TERM", 143)]
    public void AStopRequestStopsEveryRankAfterTheSameStepWithACheckpoint(string target, string signal, int exitCode)
    {
        TinyModels.Create(P("base"));
        WriteSftData();
        using var p = StartMpirun(2, SftArgs(P("run"), 1, steps: 100_000));
        var stderr = p.StandardError.ReadToEndAsync();
        _ = p.StandardOutput.ReadToEndAsync();
        try
        {
            var clock = Stopwatch.StartNew();
            while (!(File.Exists(P("run/metrics.jsonl")) && File.ReadAllLines(P("run/metrics.jsonl")).Length >= 2))
            {
                if (p.HasExited || clock.Elapsed > TimeSpan.FromSeconds(90)) Assert.Fail($"the run did not start logging: {(p.HasExited ? stderr.Result : "")}");
                Thread.Sleep(200);
            }
            int pid = target == "mpirun" ? p.Id : RankProcess(p.Id, 1);
            using (var kill = Process.Start("kill", ["-" + signal, pid.ToString()])) kill.WaitForExit();
            if (!p.WaitForExit(120_000)) Assert.Fail($"mpirun did not stop within 120 s of SIG{signal} to {target}");
            Assert.True(File.Exists(P("run/summary.json")), $"no summary.json; mpirun exited {p.ExitCode}:\n{stderr.Result}");
            var summary = JsonDocument.Parse(File.ReadAllText(P("run/summary.json"))).RootElement;
            Assert.Equal("interrupted", summary.GetProperty("status").GetString());
            int step = summary.GetProperty("steps").GetInt32();
            Assert.True(Directory.Exists(P($"run/checkpoints/step-{step:D6}")), stderr.Result);
            Assert.Equal(step, Losses(P("run")).Count);
            Assert.Contains("--resume", stderr.Result);
            Assert.Equal(exitCode, p.ExitCode);
            Assert.DoesNotContain("MPI_ABORT", stderr.Result); // an orderly end, not a failure
        }
        finally
        {
            if (!p.HasExited) p.Kill(entireProcessTree: true);
        }
    }

    /// <summary>A rank that fails alone (here rank 1's data file is bad, as when one host holds a damaged copy) prints its
    /// error, prefixed with its rank, and ends the job.</summary>
    [MpiFact]
    public void ARankThatFailsAlonePrintsItsError()
    {
        TinyModels.Create(P("base"));
        WriteSftData();
        File.WriteAllText(P("bad.jsonl"), "{\"prompt\": \"a\", \"completion\": 3}\n");
        var psi = new ProcessStartInfo(MpiFactAttribute.Mpirun) { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = CliRunner.RepoRoot };
        foreach (var a in new[] { "--allow-run-as-root", "--oversubscribe", "--mca", "btl", "self,tcp" }) psi.ArgumentList.Add(a);
        foreach (var data in new[] { P("sft.jsonl"), P("bad.jsonl") })
        {
            if (data != P("sft.jsonl")) psi.ArgumentList.Add(":");
            foreach (var a in new[] { "-np", "1", "dotnet", CliRunner.CliDll, "sft", "--model", P("base"), "--data", data, "--out", P("run"), "--max-steps", "2", "--threads", "1" })
                psi.ArgumentList.Add(a);
        }
        using var p = Process.Start(psi)!;
        var stderr = p.StandardError.ReadToEndAsync();
        _ = p.StandardOutput.ReadToEndAsync();
        if (!p.WaitForExit(120_000)) { p.Kill(entireProcessTree: true); Assert.Fail("the job did not end"); }
        Assert.NotEqual(0, p.ExitCode);
        Assert.Contains("[rank 1]", stderr.Result);
        Assert.Contains("bad.jsonl:1", stderr.Result);
    }

    [MpiFact]
    public void BadInputIsReportedOnceAndEndsTheJobQuickly()
    {
        TinyModels.Create(P("base"));
        File.WriteAllText(P("bad.jsonl"), "{\"prompt\": \"a\", \"completion\": \"b\"}\n{\"prompt\": \"a\", \"completion\": 3}\n");
        var clock = Stopwatch.StartNew();
        var r = Mpirun(2, ["sft", "--model", P("base"), "--data", P("bad.jsonl"), "--out", P("run"), "--max-steps", "1"]);
        Assert.NotEqual(0, r.ExitCode);
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(60), $"took {clock.Elapsed}");
        Assert.Equal(1, CountOccurrences(r.StdErr, "bad.jsonl:2"));
        Assert.DoesNotContain("   at ", r.StdErr);
    }

    /// <summary>An RL run on 2 ranks against one process with twice the accumulation (the same global batch and
    /// micro-batches): the same metrics at every step and the same final policy (and value model).</summary>
    void AssertRlEquivalent(string trainer, string[] common, string[] metricKeys, params string[] models)
    {
        using var kit = new AlignSharp.Tests.Rl.RlTestKit();
        string[] Args(string output, int accumulation) =>
        [
            trainer, "--policy", kit.Policy(), "--prompts", kit.Prompts(count: 12), "--reward-model", kit.RewardModelDir(mean: 0.5, std: 2),
            "--out", Path.Combine(kit.Dir, output), "--seed", "3", "--max-new-tokens", "5", "--generation-batch-size", "4",
            "--learning-rate", "0.003", "--lr-scheduler", "constant", "--gradient-accumulation-steps", accumulation.ToString(), .. common,
        ];
        var dp = SingleThenTwoRanks(Args, "single", "dp");
        AssertSameMetrics(Path.Combine(kit.Dir, "single"), Path.Combine(kit.Dir, "dp"), 3, 1e-4, metricKeys);
        foreach (var model in models) AssertSameWeights(Path.Combine(kit.Dir, "single", model), Path.Combine(kit.Dir, "dp", model), 1e-4);
        Assert.Equal(1, CountOccurrences(dp.StdErr, $"{trainer}: done"));
    }

    [MpiFact]
    public void PpoOnTwoRanksEqualsOneProcessWithTheSameGlobalBatch() => AssertRlEquivalent("ppo",
        ["--max-steps", "3", "--batch-size", "2", "--num-mini-batches", "2", "--num-ppo-epochs", "2", "--target-kl", "0.5", "--whiten-rewards", "true"],
        ["loss/policy_avg", "loss/value_avg", "objective/scores", "objective/kl", "objective/kl_coef", "objective/entropy", "policy/clipfrac_avg", "val/num_eos_tokens", "completion_length", "grad_norm", "episode"],
        "final", "value_model");

    [MpiFact]
    public void GrpoOnTwoRanksEqualsOneProcessWithTheSameGlobalBatch() => AssertRlEquivalent("grpo",
        ["--max-steps", "3", "--batch-size", "2", "--num-mini-batches", "2", "--num-generations", "4", "--kl-coef", "0.05"],
        ["loss/policy_avg", "loss/kl_avg", "reward", "reward_std", "frac_reward_zero_std", "completions/mean_length", "objective/kl", "grad_norm"],
        "final");

    [MpiFact]
    public void RlooOnTwoRanksEqualsOneProcessWithTheSameGlobalBatch() => AssertRlEquivalent("rloo",
        ["--max-steps", "3", "--batch-size", "4", "--rloo-k", "2", "--normalize-advantage", "true", "--kl-coef", "0.05"],
        ["loss/policy_avg", "objective/scores", "objective/kl", "objective/rlhf_reward", "val/ratio", "grad_norm"],
        "final");

    /// <summary>An RL run started on 2 ranks resumes as one process (a step is then half the completions).</summary>
    [MpiFact]
    public void RlResumesWithAnotherNumberOfRanks()
    {
        using var kit = new AlignSharp.Tests.Rl.RlTestKit();
        string[] Args(int steps) =>
        [
            "grpo", "--policy", kit.Policy(), "--prompts", kit.Prompts(count: 8), "--reward-model", kit.RewardModelDir(),
            "--out", Path.Combine(kit.Dir, "run"), "--max-steps", steps.ToString(), "--batch-size", "4", "--num-generations", "2",
            "--max-new-tokens", "4", "--save-steps", "1",
        ];
        var first = Mpirun(2, Args(2));
        Assert.True(first.ExitCode == 0, first.StdErr);
        var more = CliRunner.Run([.. Args(3), "--resume", "--threads", "1"]);
        Assert.True(more.ExitCode == 0, more.StdErr);
        Assert.Contains("resumed from", more.StdErr);
        var lines = AlignSharp.Tests.Rl.RlTestKit.TrainMetrics(Path.Combine(kit.Dir, "run"));
        Assert.Equal([1, 2, 3], lines.Select(l => l.GetProperty("step").GetInt32()));
        Assert.Equal([8.0, 16.0, 20.0], lines.Select(l => l.GetProperty("episode").GetDouble()));
    }

    /// <summary>KTO's reference point z comes from the mismatched pairs inside each micro-batch of --batch-size examples,
    /// and ranks take whole micro-batches, so 2 ranks equal one process with twice the accumulation (docs/distributed.md
    /// says how TRL differs).</summary>
    [MpiFact]
    public void KtoOnTwoRanksEqualsOneProcessWithTheSameGlobalBatch()
    {
        TinyModels.Create(P("base"));
        var rng = new Random(7);
        TinyModels.WriteJsonl(P("unpaired.jsonl"), Enumerable.Range(0, 32).Select(i =>
        {
            int a = rng.Next(50), b = rng.Next(50);
            bool good = rng.Next(2) == 0;
            return (object)new { prompt = $"{a}+{b}=", completion = (a + b + (good ? 0 : 1 + rng.Next(9))).ToString(), label = good };
        }));
        string[] Args(string output, int accumulation) =>
        [
            "kto", "--policy", P("base"), "--data", P("unpaired.jsonl"), "--out", output, "--max-steps", "4", "--batch-size", "4",
            "--gradient-accumulation-steps", accumulation.ToString(), "--learning-rate", "0.001", "--logging-steps", "1",
        ];
        SingleThenTwoRanks(Args, P("single"), P("dp"));
        AssertSameMetrics(P("single"), P("dp"), 4, 1e-5, "loss", "kl", "rewards/chosen", "rewards/rejected");
        AssertSameWeights(P("single/final"), P("dp/final"), 1e-4);
    }

    /// <summary>
    /// The all-reduce overlapped with the backward pass (buckets of 1 KiB, so that many start while the pass runs, with
    /// gradient accumulation, checkpointed blocks, full-parameter or LoRA) gives the run of one blocking all-reduce after
    /// the pass bit for bit: the same reductions of the same gradients, started earlier.
    /// </summary>
    [MpiTheory]
    [InlineData(false)]
    [InlineData(true)]
    public void OverlappedAllReduceEqualsTheBlockingOneBitForBit(bool lora)
    {
        TinyModels.Create(P("base"));
        WriteSftData();
        string[] Args(string output, string bucketMb) => SftArgs(output, 2, 4, ["--allreduce-bucket-mb", bucketMb, "--gradient-checkpointing",
            .. lora ? new[] { "--lora-r", "4", "--lora-dropout", "0.1" } : Array.Empty<string>()]);
        var overlapped = Mpirun(2, Args(P("overlapped"), "0.001"));
        Assert.True(overlapped.ExitCode == 0, overlapped.StdErr);
        var blocking = Mpirun(2, Args(P("blocking"), "0"));
        Assert.True(blocking.ExitCode == 0, blocking.StdErr);
        Assert.Equal(Losses(P("blocking")), Losses(P("overlapped")));
        string weights = lora ? "adapter_model.safetensors" : "model.safetensors";
        using var x = SafetensorsFile.Open(P("blocking/final/" + weights));
        using var y = SafetensorsFile.Open(P("overlapped/final/" + weights));
        Assert.Equal(x.Names.Order(), y.Names.Order());
        foreach (var name in x.Names) Assert.True(x.Read(name).AsSpan().SequenceEqual(y.Read(name)), $"{name} differs");
        var bytes = AlignSharp.Tests.Rl.RlTestKit.TrainMetrics(P("overlapped")).Select(l => l.GetProperty("dp/allreduce_bytes").GetDouble());
        Assert.Equal(AlignSharp.Tests.Rl.RlTestKit.TrainMetrics(P("blocking")).Select(l => l.GetProperty("dp/allreduce_bytes").GetDouble()), bytes);
    }

    [Fact]
    public void ABadBucketSizeIsRefused()
    {
        TinyModels.Create(P("base"));
        WriteSftData();
        var r = CliRunner.Run([.. SftArgs(P("run"), 1, 1, "--allreduce-bucket-mb", "2000")]);
        Assert.NotEqual(0, r.ExitCode);
        Assert.Contains("--allreduce-bucket-mb must be in [0, 1024]", r.StdErr);
        Assert.DoesNotContain("   at ", r.StdErr);
    }

    /// <summary>
    /// A rank killed in the middle of an overlapped run (buckets of 1 KiB: during every backward pass the other rank has
    /// all-reduces outstanding) ends the whole job within seconds, with a non-zero exit, never a hang.
    /// </summary>
    [MpiFact]
    public void AKilledRankEndsAnOverlappedJobWithinSeconds()
    {
        TinyModels.Create(P("base"));
        WriteSftData();
        var psi = new ProcessStartInfo(MpiFactAttribute.Mpirun) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false, WorkingDirectory = CliRunner.RepoRoot };
        foreach (var a in new[] { "--allow-run-as-root", "--oversubscribe", "-np", "2", "--mca", "btl", "self,tcp", "dotnet", CliRunner.CliDll }) psi.ArgumentList.Add(a);
        foreach (var a in SftArgs(P("run"), 1, 100_000, "--allreduce-bucket-mb", "0.001", "--threads", "1")) psi.ArgumentList.Add(a);
        using var mpirun = Process.Start(psi)!;
        var stderr = mpirun.StandardError.ReadToEndAsync();
        _ = mpirun.StandardOutput.ReadToEndAsync();
        try
        {
            var clock = Stopwatch.StartNew();
            string metrics = P("run/metrics.jsonl");
            while (!(File.Exists(metrics) && File.ReadLines(metrics).Count() >= 3))
            {
                if (mpirun.HasExited) Assert.Fail("the job ended before training: " + stderr.Result);
                Assert.True(clock.Elapsed < TimeSpan.FromSeconds(90), "no training steps within 90 s");
                Thread.Sleep(100);
            }
            int rank1 = RankProcess(mpirun.Id, 1);
            Process.GetProcessById(rank1).Kill();   // SIGKILL
            clock.Restart();
            Assert.True(mpirun.WaitForExit(30_000), "the job did not end within 30 s of a rank being killed");
            Assert.NotEqual(0, mpirun.ExitCode);
        }
        finally
        {
            if (!mpirun.HasExited) mpirun.Kill(entireProcessTree: true);
        }
    }

    /// <summary>The process of MPI rank <paramref name="rank"/> among the children of <paramref name="mpirun"/>.</summary>
    static int RankProcess(int mpirun, int rank)
    {
        foreach (var dir in Directory.GetDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), out int pid)) continue;
            try
            {
                var stat = File.ReadAllText(Path.Combine(dir, "stat"));
                int ppid = int.Parse(stat[(stat.LastIndexOf(')') + 2)..].Split(' ')[1]);
                if (ppid != mpirun) continue;
                var environ = File.ReadAllText(Path.Combine(dir, "environ")).Split('\0');
                if (environ.Contains($"OMPI_COMM_WORLD_RANK={rank}")) return pid;
            }
            catch (IOException) { }
            catch (UnauthorizedAccessException) { }
        }
        throw new InvalidOperationException($"rank {rank} of mpirun {mpirun} not found");
    }

    [NetnsFact]
    public void SftAcrossTwoNetworkNamespacesOverTcp()
    {
        TinyModels.Create(P("base"));
        WriteSftData();
        var single = CliRunner.Run([.. SftArgs(P("single"), 2), "--threads", "1"]);
        Assert.True(single.ExitCode == 0, single.StdErr);
        var dp = Mpirun(2, SftArgs(P("dp"), 1), launcher: Path.Combine(CliRunner.RepoRoot, "scripts", "mpi-two-hosts.sh"));
        Assert.True(dp.ExitCode == 0, dp.StdErr);
        var expected = Losses(P("single"));
        var actual = Losses(P("dp"));
        for (int i = 0; i < expected.Count; i++) Assert.True(Math.Abs(expected[i] - actual[i]) <= 1e-5 * Math.Abs(expected[i]), $"step {i + 1}: {expected[i]} vs {actual[i]}");
        AssertSameWeights(P("single/final"), P("dp/final"), 1e-4);
    }

    static int CountOccurrences(string text, string what)
    {
        int n = 0;
        for (int i = text.IndexOf(what, StringComparison.Ordinal); i >= 0; i = text.IndexOf(what, i + what.Length, StringComparison.Ordinal)) n++;
        return n;
    }
}
