using System.Diagnostics;
using System.Text.Json;
using AlignSharp.Models;
using AlignSharp.Training.Rl;
using AlignSharp.Training.Runs;
using AlignSharp.Training.Sft;

namespace AlignSharp.Tests.Training;

/// <summary>
/// The shared run session and optimizer step under the failures of issue 14: an --out that holds a run, two processes
/// on one --out, --resume with changed options, kills during checkpoint swaps, non-finite updates, --max-grad-norm 0,
/// and SIGINT/SIGTERM.
/// </summary>
public sealed class RunSafetyTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("alignsharp-runs-").FullName;
    public void Dispose() { try { Directory.Delete(_dir, recursive: true); } catch (IOException) { } }
    private string P(string name) => Path.Combine(_dir, name);

    private string Data()
    {
        var words = new[] { "cat", "dog", "sun", "sea", "red", "owl", "fig", "ant" };
        return TinyModels.WriteJsonl(P("sft.jsonl"), Enumerable.Range(0, 8).Select(i => (object)new { prompt = $"{words[i]}?", completion = $" {words[i]}!" }));
    }

    private SftOptions Sft(string run, int steps = 4) => new()
    {
        Model = File.Exists(P("base/config.json")) ? P("base") : TinyModels.Create(P("base")),
        Data = File.Exists(P("sft.jsonl")) ? P("sft.jsonl") : Data(),
        Out = P(run), MaxSteps = steps, LearningRate = 1e-3f, BatchSize = 2, SaveSteps = 2, LoggingSteps = 1,
    };

    private static void AssertAllFinite(string modelDir)
    {
        foreach (var (name, p) in ModelIO.Load(modelDir).NamedParameters)
            Assert.True(p.ToArray().All(float.IsFinite), $"{modelDir}: {name} holds a non-finite value");
    }

    [Fact]
    public void AnOutThatHoldsARunIsRefusedWithoutResumeOrOverwrite()
    {
        SftTrainer.Train(Sft("run"), TextWriter.Null);
        var e = Assert.Throws<UserInputException>(() => SftTrainer.Train(Sft("run", 6), TextWriter.Null));
        Assert.Contains("--resume", e.Message);
        Assert.Contains("--overwrite", e.Message);
        // Nothing of the first run was touched.
        Assert.Equal(4, JsonDocument.Parse(File.ReadAllText(P("run/summary.json"))).RootElement.GetProperty("steps").GetInt32());

        // --overwrite replaces it: the old checkpoints are gone, so a later --resume cannot pick up the old run.
        SftTrainer.Train(Sft("run", 2) with { Overwrite = true, SaveSteps = 1 }, TextWriter.Null);
        var checkpoints = Directory.GetDirectories(P("run/checkpoints")).Select(d => Path.GetFileName(d)!).Order().ToArray();
        Assert.Equal(["step-000001", "step-000002"], checkpoints);
        Assert.Equal(2, File.ReadLines(P("run/metrics.jsonl")).Count());
        Assert.Throws<UserInputException>(() => new SftOptions { Out = "x", Model = "m", Data = P("sft.jsonl"), Resume = "", Overwrite = true }.Validate());
    }

    /// <summary>--threads holds for the run only: the caller's count afterwards and the process-wide default (read on
    /// another thread) are what they were, so a run never changes the threads of tests running beside it.</summary>
    [Fact]
    public void ThreadsOptionIsScopedToTheRun()
    {
        int before = AlignSharp.Engine.Kernels.ParallelFor.Threads;
        int processWide = Engine.SimdTests.OnAnotherThread(() => AlignSharp.Engine.Kernels.ParallelFor.Threads);
        int other = before == 1 ? 2 : 1;
        SftTrainer.Train(Sft("run", 1) with { Threads = other }, TextWriter.Null);
        Assert.Equal(before, AlignSharp.Engine.Kernels.ParallelFor.Threads);
        Assert.Equal(processWide, Engine.SimdTests.OnAnotherThread(() => AlignSharp.Engine.Kernels.ParallelFor.Threads));
    }

    [Fact]
    public void ASecondProcessOnTheSameOutIsRefused()
    {
        var o = Sft("run");
        using (var holder = RunSession.Open(o, "sft", TextWriter.Null))
        {
            var e = Assert.Throws<UserInputException>(() => SftTrainer.Train(o with { Resume = "" }, TextWriter.Null));
            Assert.Contains("in use by another training process", e.Message);
        }
        // Released with the session: the directory is usable again (it now holds a run, so --overwrite).
        SftTrainer.Train(o with { Overwrite = true }, TextWriter.Null);
        Assert.True(File.Exists(P("run/final/model.safetensors")));
    }

    [Fact]
    public void ResumeWithOptionsThatChangeTheMathIsAnErrorListingThem()
    {
        SftTrainer.Train(Sft("run"), TextWriter.Null);
        string other = TinyModels.WriteJsonl(P("other.jsonl"), [new { prompt = "a", completion = "b" }]);
        var e = Assert.Throws<UserInputException>(() => SftTrainer.Train(Sft("run", 6) with { Resume = "", LearningRate = 5e-3f, Data = other }, TextWriter.Null));
        Assert.Contains("--learning-rate", e.Message);
        Assert.Contains("--data", e.Message);
        Assert.DoesNotContain("--max-steps", e.Message);
        string config = File.ReadAllText(P("run/run_config.json"));
        Assert.Contains("0.001", config); // not rewritten by the refused resume

        var below = Assert.Throws<UserInputException>(() => SftTrainer.Train(Sft("run", 3) with { Resume = "" }, TextWriter.Null));
        Assert.Contains("below step 4", below.Message);

        // --max-steps may grow (and logging, threads, checkpoint schedule may change).
        var summary = SftTrainer.Train(Sft("run", 6) with { Resume = "", LoggingSteps = 2, Threads = 1 }, TextWriter.Null);
        Assert.Equal(6, summary["steps"]);

        // Without the recorded options (both run_config.json files gone) nothing can be checked: refused, not trusted.
        foreach (var f in Directory.GetFiles(P("run"), "run_config.json", SearchOption.AllDirectories)) File.Delete(f);
        var blind = Assert.Throws<UserInputException>(() => SftTrainer.Train(Sft("run", 8) with { Resume = "", LearningRate = 5e-3f }, TextWriter.Null));
        Assert.Contains("run_config.json", blind.Message);
    }

    [Fact]
    public void ResumingOverADataFileEditedSinceTheCheckpointSaysSo()
    {
        SftTrainer.Train(Sft("run"), TextWriter.Null);
        var quiet = new StringWriter();
        SftTrainer.Train(Sft("run", 5) with { Resume = "" }, quiet);
        Assert.DoesNotContain("changed since the checkpoint", quiet.ToString());

        // The same path, other content: the seeded order now runs over other examples.
        File.AppendAllText(P("sft.jsonl"), "{\"prompt\": \"elk?\", \"completion\": \" elk!\"}\n");
        var log = new StringWriter();
        SftTrainer.Train(Sft("run", 6) with { Resume = "" }, log);
        Assert.Contains($"--data {P("sft.jsonl")} changed since the checkpoint was written", log.ToString());
        Assert.Contains("skipped or repeated", log.ToString());
    }

    /// <summary>Resuming drops the log's lines past the checkpoint by swapping in a new file (a kill meanwhile leaves the
    /// old one whole), and a last line that lost its newline is not joined to the next.</summary>
    [Fact]
    public void ResumingRewritesTheMetricsLogWholeAndEndsItsLastLine()
    {
        Directory.CreateDirectory(P("log"));
        string path = P("log/metrics.jsonl");
        File.WriteAllText(path, string.Join("\n", Enumerable.Range(1, 3).Select(i => $"{{\"step\": {i}, \"time\": {i}.5, \"split\": \"train\"}}")));
        using (var log = new MetricsLog(path, resumeStep: 3)) log.Write(4, "train", [new("loss", 1.0)]);
        var lines = File.ReadAllLines(path);
        Assert.Equal([1, 2, 3, 4], lines.Select(l => System.Text.Json.JsonDocument.Parse(l).RootElement.GetProperty("step").GetInt32()));
        using (var log = new MetricsLog(path, resumeStep: 2)) log.Write(3, "train", [new("loss", 2.0)]);
        Assert.Equal([1, 2, 3], File.ReadAllLines(path).Select(l => System.Text.Json.JsonDocument.Parse(l).RootElement.GetProperty("step").GetInt32()));
        Assert.Equal(["metrics.jsonl"], Directory.GetFiles(P("log")).Select(Path.GetFileName));
    }

    /// <summary>Going back to an earlier checkpoint while later ones exist is refused naming them (their history would be
    /// mixed with the resumed run's); rotation deletes through a temporary name, so a kill leaves no half checkpoint.</summary>
    [Fact]
    public void ResumingFromAnEarlierCheckpointWithLaterOnesIsRefusedAndRotationLeavesNoHalfCheckpoint()
    {
        SftTrainer.Train(Sft("run", 6) with { SaveTotalLimit = 0 }, TextWriter.Null);
        var e = Assert.Throws<UserInputException>(() => SftTrainer.Train(Sft("run", 8) with { Resume = P("run/checkpoints/step-000002"), SaveTotalLimit = 0 }, TextWriter.Null));
        Assert.Contains("step-000004, step-000006", e.Message);
        // What a kill during a rotation's delete leaves behind is cleaned at the next start, never read as a checkpoint.
        Directory.CreateDirectory(P("run/checkpoints/.step-000002.tmp-0123"));
        SftTrainer.Train(Sft("run", 8) with { Resume = "", SaveTotalLimit = 2 }, TextWriter.Null);
        Assert.Equal(["step-000006", "step-000008"], Directory.GetDirectories(P("run/checkpoints")).Select(Path.GetFileName).Order());
    }

    [Fact]
    public void AKillDuringACheckpointSwapLosesNothingAndStaleTemporariesAreCleaned()
    {
        SftTrainer.Train(Sft("full"), TextWriter.Null);
        SftTrainer.Train(Sft("run"), TextWriter.Null);
        // The state a kill leaves in the middle of SwapIn(step-4): the complete old checkpoint set aside, the new one
        // still under its temporary name; and temporaries of earlier versions.
        string cp = P("run/checkpoints");
        Directory.Move(Path.Combine(cp, "step-000004"), Path.Combine(cp, ".step-000004.old-0123"));
        Directory.CreateDirectory(Path.Combine(cp, ".step-000004.tmp-4567", "policy"));
        Directory.CreateDirectory(Path.Combine(cp, ".tmp-step-000002-89ab"));
        Directory.CreateDirectory(P("run/final.tmp-cdef"));
        Directory.Move(P("run/final"), P("run/.final.old-0000"));

        var log = new StringWriter();
        SftTrainer.Train(Sft("run") with { Resume = "" }, log);
        Assert.Contains("restored", log.ToString());
        Assert.Contains("resumed from", log.ToString());
        Assert.Equal(["step-000002", "step-000004"], Directory.GetDirectories(cp).Select(d => Path.GetFileName(d)!).Order().ToArray());
        Assert.Equal(["checkpoints", "final"], Directory.GetDirectories(P("run")).Select(d => Path.GetFileName(d)!).Order().ToArray());
        Assert.Equal(File.ReadAllBytes(P("full/final/model.safetensors")), File.ReadAllBytes(P("run/final/model.safetensors")));
    }

    [Fact]
    public void RetryingAFinishedRunNeverRewritesItsNewestCheckpoint()
    {
        SftTrainer.Train(Sft("run"), TextWriter.Null);
        string model = P("run/checkpoints/step-000004/model/model.safetensors");
        var written = File.GetLastWriteTimeUtc(model);
        var inode = new FileInfo(model).Length;
        Thread.Sleep(20);
        SftTrainer.Train(Sft("run") with { Resume = "" }, TextWriter.Null);
        Assert.Equal(written, File.GetLastWriteTimeUtc(model));
        Assert.Equal(inode, new FileInfo(model).Length);
        Assert.True(File.Exists(P("run/checkpoints/step-000004/optimizer.bin")));
    }

    [Fact]
    public void AnUpdateThatWouldMakeWeightsNonFiniteIsNeverAppliedAndTheRunFails()
    {
        // lr 3e38: Adam's first step size lr / (1 − β1) overflows to −∞, so every weight would become ±∞ or NaN.
        var e = Assert.Throws<UserInputException>(() => SftTrainer.Train(Sft("one", 1) with { LearningRate = 3e38f }, TextWriter.Null));
        Assert.Contains("every one of the 1 steps was skipped", e.Message);
        Assert.False(Directory.Exists(P("one/final")));
        var summary = JsonDocument.Parse(File.ReadAllText(P("one/summary.json"))).RootElement;
        Assert.Equal("all_steps_skipped", summary.GetProperty("status").GetString());

        // With β1 = 0 the first step size is lr itself: the weights become ~±3e38, finite, and the next forward passes
        // overflow. The run stops after 5 bad steps in a row (steps 2–6). A skipped step still checkpoints on schedule
        // (its weights are the last finite ones) and still ends its logging window: a line at steps 2 and 4, each
        // counting the skipped steps of its own window, the second with no loss (none of its steps trained).
        var stop = Assert.Throws<UserInputException>(() => SftTrainer.Train(Sft("long", 8) with { LearningRate = 3e38f, AdamBeta1 = 0, LrScheduler = "constant", SaveSteps = 1, SaveTotalLimit = 0, LoggingSteps = 2 }, TextWriter.Null));
        Assert.Contains("5 steps in a row", stop.Message);
        Assert.Contains("step-000005", stop.Message);
        Assert.Equal(5, Directory.GetDirectories(P("long/checkpoints")).Length);
        foreach (var dir in Directory.GetDirectories(P("long/checkpoints"))) AssertAllFinite(Path.Combine(dir, "model"));
        var lines = File.ReadLines(P("long/metrics.jsonl")).Select(l => JsonDocument.Parse(l).RootElement).ToList();
        Assert.Equal([2, 4], lines.Select(l => l.GetProperty("step").GetInt32()));
        Assert.Equal([1, 2], lines.Select(l => l.GetProperty("skipped_steps").GetInt32()));
        Assert.True(lines[0].TryGetProperty("loss", out _));
        Assert.False(lines[1].TryGetProperty("loss", out _));
        Assert.Equal("stopped_non_finite", JsonDocument.Parse(File.ReadAllText(P("long/summary.json"))).RootElement.GetProperty("status").GetString());
    }

    [Fact]
    public void MaxGradNormZeroMeansNoClipping()
    {
        SftTrainer.Train(Sft("zero", 2) with { MaxGradNorm = 0, LearningRate = 1e-2f }, TextWriter.Null);
        SftTrainer.Train(Sft("huge", 2) with { MaxGradNorm = 1e30f, LearningRate = 1e-2f }, TextWriter.Null);
        Assert.Equal(File.ReadAllBytes(P("huge/final/model.safetensors")), File.ReadAllBytes(P("zero/final/model.safetensors")));
        var norm = JsonDocument.Parse(File.ReadLines(P("zero/metrics.jsonl")).First()).RootElement.GetProperty("grad_norm").GetDouble();
        Assert.True(norm > 0 && double.IsFinite(norm));
    }

    [Fact]
    public void SaveDtypeBf16IsHonouredByTheFinalModelAndCheckpointsStayF32()
    {
        SftTrainer.Train(Sft("bf16", 2) with { SaveDtype = "bf16" }, TextWriter.Null);
        Assert.Contains("\"BF16\"", SafetensorsHeader(P("bf16/final/model.safetensors")));
        Assert.Contains("\"F32\"", SafetensorsHeader(P("bf16/checkpoints/step-000002/model/model.safetensors")));
        Assert.DoesNotContain("\"F32\"", SafetensorsHeader(P("bf16/final/model.safetensors")));
    }

    private static string SafetensorsHeader(string file)
    {
        using var f = File.OpenRead(file);
        var len = new byte[8];
        f.ReadExactly(len);
        var header = new byte[BitConverter.ToInt64(len)];
        f.ReadExactly(header);
        return System.Text.Encoding.UTF8.GetString(header);
    }

    [Fact]
    public void OptionsThatWouldBeIgnoredAreRefused()
    {
        void Refused(TrainerOptions o, string flag) => Assert.Contains(flag, Assert.Throws<UserInputException>(o.Validate).Message);
        Refused(Sft("x") with { EvalSteps = 5 }, "--eval-steps");
        File.WriteAllText(P("eval.jsonl"), File.ReadAllText(P("sft.jsonl")));
        Refused(Sft("x") with { EvalData = P("eval.jsonl"), EvalSplit = 0.25 }, "--eval-split");
        Refused(Sft("x") with { SaveSteps = 0, SaveTotalLimit = 3 }, "--save-total-limit");
        Refused(Sft("x") with { Epochs = -1 }, "--epochs");
        Refused(new GrpoOptions { Out = "x", Policy = "p", Prompts = "q", RewardModel = "rm", RewardTimeout = 5 }, "--reward-timeout");
        Refused(new GrpoOptions { Out = "x", Policy = "p", Prompts = "q", RewardUrl = "http://localhost:1/", RewardModelWeight = 2 }, "--reward-model-weight");
        Refused(new GrpoOptions { Out = "x", Policy = "p", Prompts = "q", RewardUrl = "http://localhost:1/", NormalizeReward = false }, "--normalize-reward");
        Refused(new GrpoOptions { Out = "x", Policy = "p", Prompts = "q", RewardUrl = "http://localhost:1/", KlHorizon = 5 }, "--kl-horizon");
        // The same options where they apply pass.
        (Sft("x") with { EvalSteps = 5, EvalData = P("eval.jsonl") }).Validate();
        (Sft("x") with { EvalSteps = 5, EvalSplit = 0.25 }).Validate();
        (Sft("x") with { SaveSteps = 0 }).Validate();
        new GrpoOptions { Out = "x", Policy = "p", Prompts = "q", RewardUrl = "http://localhost:1/", RewardTimeout = 5 }.Validate();
        new GrpoOptions { Out = "x", Policy = "p", Prompts = "q", RewardUrl = "http://localhost:1/", KlHorizon = 5, TargetKl = 1 }.Validate();
    }

    [Fact]
    public void NonFiniteFloatOptionsAreRejectedNamingTheFlag()
    {
        var e = Assert.Throws<UserInputException>(() => (Sft("x") with { WeightDecay = float.NaN }).Validate());
        Assert.Contains("--weight-decay must be a finite number", e.Message);
        e = Assert.Throws<UserInputException>(() => (Sft("x") with { Epochs = double.PositiveInfinity }).Validate());
        Assert.Contains("--epochs", e.Message);
    }

    [Fact]
    public void TheResumeCommandDropsOverwriteAndAddsResume()
    {
        var o = Sft("run");
        var saved = RunSession.CommandLine;
        try
        {
            RunSession.CommandLine = ["sft", "--model", "m dir", "--out", o.Out!, "--overwrite"];
            using var session = RunSession.Open(o, "sft", TextWriter.Null);
            Assert.Equal($"alignsharp sft --model 'm dir' --out {o.Out} --resume", session.ResumeCommand());
            // TRL's spellings and a named checkpoint (which later checkpoints will have passed) go too: --resume takes the newest.
            RunSession.CommandLine = ["sft", "--overwrite_output_dir", "true", "--resume-from-checkpoint", "/r/checkpoints/step-000010", "--out", o.Out!,
                "--resume=/x", "--overwrite-output-dir", "--seed", "3"];
            Assert.Equal($"alignsharp sft --out {o.Out} --seed 3 --resume", session.ResumeCommand());
        }
        finally
        {
            RunSession.CommandLine = saved;
        }
    }
}

/// <summary>SIGINT, SIGTERM and SIGUSR1 on a real CLI process: finish the step, checkpoint, summary, resume command, exit 130/143/138.</summary>
public sealed class RunSignalTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("alignsharp-signal-").FullName;
    public void Dispose() { try { Directory.Delete(_dir, recursive: true); } catch (IOException) { } }
    private string P(string name) => Path.Combine(_dir, name);

    [Theory]
    [InlineData("INT", 130)]
    [InlineData("TERM", 143)]
    [InlineData("USR1", 138)]
    public async Task ASignalCheckpointsWritesTheSummaryAndPrintsTheResumeCommand(string signal, int exitCode)
    {
        if (!OperatingSystem.IsLinux() && !OperatingSystem.IsMacOS()) return;
        string model = TinyModels.Create(P("base"));
        string data = TinyModels.WriteJsonl(P("sft.jsonl"), Enumerable.Range(0, 4).Select(i => (object)new { prompt = $"q{i}", completion = $" a{i}" }));
        string[] args = ["sft", "--model", model, "--data", data, "--out", P("run"), "--max-steps", "1000000", "--save-steps", "0", "--logging-steps", "1", "--batch-size", "2", "--threads", "1"];
        var start = CliRunner.StartInfo(args);
        if (OperatingSystem.IsLinux())
        {
            // A test host started as a background job of a non-interactive shell inherits SIGINT as ignored, exec passes
            // that on, and .NET then installs no SIGINT handler: the run would never see the signal. coreutils' env
            // restores the default disposition before it execs the CLI (same pid, so the kill below reaches it).
            start.ArgumentList.Insert(0, start.FileName);
            start.ArgumentList.Insert(0, "--default-signal=INT");
            start.FileName = "env";
        }
        using var process = Process.Start(start)!;
        var stderr = process.StandardError.ReadToEndAsync();
        var stdout = process.StandardOutput.ReadToEndAsync();
        var clock = Stopwatch.StartNew();
        while (!(File.Exists(P("run/metrics.jsonl")) && File.ReadAllText(P("run/metrics.jsonl")).Contains("\"step\":2")))
        {
            if (process.HasExited || clock.Elapsed > TimeSpan.FromSeconds(60)) break;
            await Task.Delay(50);
        }
        Assert.False(process.HasExited, stderr.IsCompleted ? await stderr : "exited early");
        using (var kill = Process.Start("kill", ["-" + signal, process.Id.ToString()])) kill.WaitForExit();
        // Generous: under a loaded full test run the step in flight, the checkpoint and its fsyncs share two cores with
        // other tests' processes. On a timeout the run's own output says where it was.
        using (var patience = new CancellationTokenSource(TimeSpan.FromSeconds(180)))
        {
            try { await process.WaitForExitAsync(patience.Token); }
            catch (OperationCanceledException)
            {
                process.Kill(true);
                await process.WaitForExitAsync();
                Assert.Fail($"the run did not stop within 180 s of SIG{signal}; its stderr:\n{await stderr}");
            }
        }
        string err = await stderr;
        Assert.Equal(exitCode, process.ExitCode);
        Assert.Contains("Resume with:", err);
        Assert.Contains("--resume", err);
        var summary = JsonDocument.Parse(File.ReadAllText(P("run/summary.json"))).RootElement;
        Assert.Equal("interrupted", summary.GetProperty("status").GetString());
        int steps = summary.GetProperty("steps").GetInt32();
        Assert.True(Directory.Exists(P($"run/checkpoints/step-{steps:D6}")), err);

        // The printed command resumes (here with --max-steps lowered to finish at once).
        var resumed = CliRunner.Run([.. args[..^10], "--max-steps", (steps + 1).ToString(), "--save-steps", "0", "--logging-steps", "1", "--batch-size", "2", "--resume"]);
        Assert.True(resumed.ExitCode == 0, resumed.StdErr);
        Assert.Contains($"at step {steps}", resumed.StdErr);
        Assert.True(File.Exists(P("run/final/model.safetensors")));
    }
}
