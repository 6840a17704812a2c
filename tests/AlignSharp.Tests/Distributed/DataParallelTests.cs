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
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(timeoutMs))
        {
            p.Kill(entireProcessTree: true);
            throw new TimeoutException($"mpirun {string.Join(' ', args)} ran longer than {timeoutMs} ms");
        }
        return new CliRunner.Result(p.ExitCode, stdout.Result, stderr.Result);
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
    }

    [MpiFact]
    public void DpoOnTwoRanksEqualsOneProcessWithTheSameGlobalBatch()
    {
        TinyModels.Create(P("base"));
        var rng = new Random(5);
        TinyModels.WriteJsonl(P("prefs.jsonl"), Enumerable.Range(0, 24).Select(i =>
        {
            int a = rng.Next(50), b = rng.Next(50);
            return (object)new { prompt = $"{a}+{b}=", chosen = (a + b).ToString(), rejected = (a + b + 1 + rng.Next(9)).ToString() };
        }));
        string[] Args(string output, int accumulation) =>
        [
            "dpo", "--policy", P("base"), "--data", P("prefs.jsonl"), "--out", output, "--max-steps", "4", "--batch-size", "2",
            "--gradient-accumulation-steps", accumulation.ToString(), "--learning-rate", "0.001", "--logging-steps", "1",
        ];
        var single = CliRunner.Run([.. Args(P("single"), 2), "--threads", "1"]);
        Assert.True(single.ExitCode == 0, single.StdErr);
        var dp = Mpirun(2, Args(P("dp"), 1));
        Assert.True(dp.ExitCode == 0, dp.StdErr);
        Assert.Contains("(2 ranks)", dp.StdErr); // the reference log-probabilities were shared out
        var expected = Losses(P("single"));
        var actual = Losses(P("dp"));
        Assert.Equal(expected.Count, actual.Count);
        for (int i = 0; i < expected.Count; i++) Assert.True(Math.Abs(expected[i] - actual[i]) <= 1e-5 * Math.Abs(expected[i]), $"step {i + 1}: {expected[i]} vs {actual[i]}");
        AssertSameWeights(P("single/final"), P("dp/final"), 1e-4);
        Assert.True(File.Exists(P("dp/" + AlignSharp.Training.Dpo.ReferenceLogProbs.CacheFileName)));
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
        var single = CliRunner.Run([.. Args(P("single"), 2), "--threads", "1"]);
        Assert.True(single.ExitCode == 0, single.StdErr);
        var dp = Mpirun(2, Args(P("dp"), 1));
        Assert.True(dp.ExitCode == 0, dp.StdErr);
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

    [MpiFact]
    public void RlRefusesToRunOnSeveralRanks()
    {
        TinyModels.Create(P("base"));
        TinyModels.WriteJsonl(P("prompts.jsonl"), [new { prompt = "a" }, new { prompt = "b" }]);
        var r = Mpirun(2, ["grpo", "--policy", P("base"), "--prompts", P("prompts.jsonl"), "--out", P("run"), "--max-steps", "1", "--reward-url", "http://127.0.0.1:9/none"]);
        Assert.NotEqual(0, r.ExitCode);
        Assert.Contains("does not run data-parallel yet", r.StdErr);
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
