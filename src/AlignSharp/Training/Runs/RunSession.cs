using System.Globalization;
using System.Runtime.InteropServices;
using System.Text.Json;
using System.Text.Json.Nodes;
using AlignSharp.Distributed;
using AlignSharp.Engine.Optim;

namespace AlignSharp.Training.Runs;

/// <summary>A run stopped by SIGINT (exit code 130), SIGTERM (143) or SIGUSR1 (138) after writing its checkpoint and summary.</summary>
public sealed class RunInterruptedException(string message, int exitCode) : Exception(message)
{
    public int ExitCode { get; } = exitCode;
}

/// <summary>How a run ended, as summary.json's "status" says.</summary>
public enum RunStatus { Completed, Interrupted, StoppedNonFinite, AllStepsSkipped }

/// <summary>
/// One training run in its directory, shared by every trainer:
/// 1. <see cref="Open"/>: take the directory's lock (a second process on the same --out is refused); repair what a
///    killed run left (<see cref="RunDirectory.Recover"/>); refuse a directory holding a run unless --resume or
///    --overwrite; on --resume, check that the options that change the math match the checkpoint's; write
///    run_config.json; open metrics.jsonl; catch SIGINT/SIGTERM/SIGUSR1;
/// 2. the trainer's loop asks <see cref="StopRequested"/> after each step and calls <see cref="Checkpoint"/>;
/// 3. <see cref="Finish"/>: a last checkpoint, the final outputs swapped in, summary.json, and the exit status:
///    interrupted (130/143/138, with the exact resume command), stopped for non-finite values or every step skipped
///    (an error; the checkpoint it names holds finite weights, since non-finite updates are never applied).
/// </summary>
public sealed class RunSession : IDisposable
{
    /// <summary>The command line that started this process (set by the CLI), to print the exact resume command.</summary>
    public static IReadOnlyList<string>? CommandLine { get; set; }

    private readonly TrainerOptions _options;
    private readonly FileStream? _lock;
    private readonly ICommunicator _world;

    /// <summary>A data-parallel rank other than 0: it trains in step with rank 0 but writes nothing (rank 0 owns --out).</summary>
    public bool IsFollower => _world.Rank != 0;
    private readonly List<PosixSignalRegistration> _signals = [];
    private volatile int _signal;
    private int _lastCheckpointStep = -1;
    private readonly JsonObject? _inputs;

    public RunDirectory Directory { get; }
    public string Trainer { get; }
    public MetricsLog Metrics { get; }
    public Progress Progress { get; }

    /// <summary>The checkpoint resumed from, or null.</summary>
    public string? ResumedFrom { get; }
    public TrainerState? ResumedState { get; }

    /// <summary>The step training starts at (the checkpoint's, or 0).</summary>
    public int StartStep => _sharedStartStep ?? ResumedState?.Step ?? 0;

    private RunSession(TrainerOptions options, string trainer, TextWriter? log, ICommunicator world)
    {
        _options = options;
        Trainer = trainer;
        Directory = new RunDirectory(options.Out!);
        _world = world;
        if (IsFollower)
        {
            // Followers share rank 0's run but touch no file: their metrics and progress go nowhere. They catch the
            // signals too (Ctrl-C or scancel reach every rank), so that every rank finishes the step and rank 0 checkpoints.
            Progress = new Progress(trainer, 0, options.LoggingSteps, TextWriter.Null);
            Metrics = new MetricsLog("/dev/null", -1, "none");
            CatchSignals();
            return;
        }
        _lock = TakeLock(Directory.Path);
        try
        {
            Progress = new Progress(trainer, 0, options.LoggingSteps, log);
            foreach (var line in Directory.Recover()) Progress.Message($"{trainer}: {line}");
            if (options.Resume == null && Directory.HoldsRun())
            {
                if (!options.Overwrite)
                    throw new UserInputException($"--out {Directory.Path} already holds a run. Pass --resume to continue it, or --overwrite to delete it and start again (or choose another --out).");
                RefuseToDeleteInputs(options);
                Directory.Clear();
                Progress.Message($"{trainer}: --overwrite: removed the previous run in {Directory.Path}");
            }
            _inputs = InputFiles(options);
            ResumedFrom = Directory.ResolveResume(options.Resume);
            if (ResumedFrom != null)
            {
                ResumedState = TrainerState.Load(ResumedFrom);
                CheckResumable(options, trainer, ResumedFrom, ResumedState.Step);
                foreach (var line in ChangedInputs(ResumedState.Inputs, _inputs)) Progress.Message($"{trainer}: note: {line}");
                _lastCheckpointStep = ResumedState.Step;
            }
            Directory.WriteConfig(options, trainer);
            Metrics = new MetricsLog(Directory.MetricsPath, ResumedFrom != null ? StartStep : -1, options.ReportTo);
            if (ResumedFrom != null) Progress.Message($"{trainer}: resumed from {ResumedFrom} at step {StartStep}");
            CatchSignals();
        }
        catch
        {
            _lock?.Dispose();
            throw;
        }
    }

    /// <summary>
    /// --overwrite must not delete what this run reads: a starting model, adapter, reference or data file inside the
    /// previous run (`sft --model RUN/final --out RUN --overwrite`) would be gone before it is loaded.
    /// </summary>
    private void RefuseToDeleteInputs(TrainerOptions options)
    {
        foreach (var (flag, path) in InputPaths(options))
            if (Directory.ClearedEntryHolding(path) is { } entry)
                throw new UserInputException($"{flag} {path} lies in {entry}, which --overwrite would delete before this run reads it; " +
                    "copy it out of --out first, or choose another --out.");
    }

    /// <summary>The options naming a file or directory that exists (not a URL or a name), with their flags: what the run reads.</summary>
    private static IEnumerable<(string Flag, string Path)> InputPaths(TrainerOptions options)
    {
        foreach (var p in options.GetType().GetProperties())
        {
            if (p.PropertyType != typeof(string) || p.Name is nameof(TrainerOptions.Out) or nameof(TrainerOptions.Resume)) continue;
            if (p.GetValue(options) is not string value || value.Length == 0) continue;
            if (File.Exists(value) || System.IO.Directory.Exists(value)) yield return (OptionAttribute.FlagName(p.Name), value);
        }
    }

    /// <summary>
    /// Size and modification time of each input file (data, prompts, templates; not model directories), recorded in
    /// every checkpoint: the order a resumed run continues in derives from the seed, the step and the data, so a data
    /// file edited since the checkpoint silently shifts which examples come next. Pipes and devices are passed over.
    /// </summary>
    private static JsonObject InputFiles(TrainerOptions options)
    {
        var files = new JsonObject();
        foreach (var (flag, path) in InputPaths(options))
        {
            var info = new FileInfo(path);
            if (!info.Exists || info.FullName.StartsWith("/dev/", StringComparison.Ordinal) || info.FullName.StartsWith("/proc/", StringComparison.Ordinal)) continue;
            files[flag] = new JsonObject
            {
                ["path"] = info.FullName,
                ["bytes"] = info.Length,
                ["modified"] = info.LastWriteTimeUtc.ToString("O", CultureInfo.InvariantCulture),
            };
        }
        return files;
    }

    /// <summary>Notes for each input file whose size or modification time differs from the checkpoint's record of it.</summary>
    private static IEnumerable<string> ChangedInputs(JsonObject? before, JsonObject? now)
    {
        if (before == null || now == null) yield break;   // a checkpoint from before inputs were recorded
        foreach (var (flag, then) in before)
        {
            if (now[flag] is not JsonObject current || then is not JsonObject old || JsonNode.DeepEquals(old, current)) continue;
            yield return $"{flag} {current["path"]} changed since the checkpoint was written ({Describe(old)} then, {Describe(current)} now): " +
                "the resumed run continues the seeded order over the file as it is now, so examples may be skipped or repeated.";
        }
    }

    private static string Describe(JsonObject file) => $"{file["bytes"]} bytes, modified {file["modified"]}";

    /// <summary>Opens the run directory for <paramref name="trainer"/>; progress and messages go to <paramref name="log"/> (default stderr).</summary>
    public static RunSession Open(TrainerOptions options, string trainer, TextWriter? log = null) => new(options, trainer, log, World.Current);

    private static FileStream TakeLock(string dir)
    {
        string path = Path.Combine(dir, ".lock");
        try
        {
            // FileShare.None is an exclusive OS lock (flock on Unix), released by the kernel if the process dies.
            var stream = new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
            stream.SetLength(0);
            var pid = System.Text.Encoding.ASCII.GetBytes(Environment.ProcessId.ToString(CultureInfo.InvariantCulture) + "\n");
            stream.Write(pid);
            stream.Flush();
            return stream;
        }
        catch (IOException)
        {
            string holder = "";
            try { holder = File.ReadAllText(path).Trim(); } catch (IOException) { }
            throw new UserInputException($"--out {dir} is in use by another training process{(holder != "" ? $" (pid {holder})" : "")}; wait for it to finish or choose another --out.");
        }
    }

    /// <summary>
    /// --resume may change only the options marked <see cref="OptionAttribute.SafeToChangeOnResume"/>; --max-steps may
    /// grow but not fall below the step reached. The reference is the checkpoint's own run_config.json (or the run's),
    /// and for an option it does not name (one added since), that option's default.
    /// </summary>
    private void CheckResumable(TrainerOptions options, string trainer, string checkpoint, int step)
    {
        if (options.MaxSteps > 0 && options.MaxSteps < step)
            throw new UserInputException($"--max-steps {options.MaxSteps} is below step {step}, which the checkpoint {checkpoint} already reached; pass --max-steps {step} or more.");
        string saved = Path.Combine(checkpoint, RunDirectory.ConfigFileName);
        if (!File.Exists(saved)) saved = Path.Combine(Path.GetDirectoryName(Path.GetDirectoryName(Path.GetFullPath(checkpoint))!)!, RunDirectory.ConfigFileName);
        if (!File.Exists(saved))
            throw new UserInputException($"--resume {checkpoint}: neither the checkpoint nor its run holds {RunDirectory.ConfigFileName}, so the options " +
                "it was trained with cannot be checked against these; resuming could silently train on with others. Start a new run from its weights instead.");
        JsonObject before;
        try { before = JsonNode.Parse(File.ReadAllText(saved)) as JsonObject ?? throw new JsonException("not an object"); }
        catch (JsonException e) { throw new UserInputException($"{saved}: unreadable run configuration: {e.Message}"); }
        var now = RunDirectory.ConfigNode(options, trainer);
        var safe = options.GetType().GetProperties()
            .Where(p => p.GetCustomAttributes(typeof(OptionAttribute), true).OfType<OptionAttribute>().Any(a => a.SafeToChangeOnResume))
            .Select(p => JsonNamingPolicy.SnakeCaseLower.ConvertName(p.Name)).ToHashSet();
        // An option the run's configuration lacks is newer than the run, which trained as its default says.
        var defaults = RunDirectory.ConfigNode((TrainerOptions)Activator.CreateInstance(options.GetType())!, trainer);
        var differences = new List<string>();
        foreach (var (key, value) in now)
        {
            if (safe.Contains(key)) continue;
            if (!before.TryGetPropertyValue(key, out var old) && !defaults.TryGetPropertyValue(key, out old)) continue;
            if (!JsonNode.DeepEquals(old, value))
                differences.Add(key == "trainer" ? $"  trainer: the checkpoint was written by {old}, this is {value}"
                    : $"  {OptionAttribute.FlagName(Pascal(key))}: {Show(old)} in the checkpoint, {Show(value)} now");
        }
        if (differences.Count > 0)
            throw new UserInputException($"--resume: these options differ from the run being resumed ({saved}) and would change the training:\n" +
                string.Join("\n", differences) + "\nUse the run's values (its run_config.json works as --config), or start a new run in another --out.");
    }

    private static string Show(JsonNode? v) => v == null ? "(none)" : v.ToJsonString();
    private static string Pascal(string snake) => string.Concat(snake.Split('_').Select(w => w.Length == 0 ? w : char.ToUpperInvariant(w[0]) + w[1..]));

    /// <summary>
    /// SIGUSR1 by its number where .NET has no name for it. It is the stop request that reaches every rank under
    /// Open MPI: mpirun forwards SIGUSR1 to the ranks and goes on, whereas SIGINT/SIGTERM to mpirun end the job (the
    /// ranks get SIGTERM after odls_base_sigkill_timeout, 1 s, SIGKILL as long again later, and their output is no
    /// longer read meanwhile, so a rank writing its progress blocks): too short for a step and a checkpoint.
    /// </summary>
    private static PosixSignal? Usr1 => OperatingSystem.IsLinux() ? (PosixSignal)10
        : OperatingSystem.IsMacOS() || OperatingSystem.IsFreeBSD() ? (PosixSignal)30 : null;

    private void CatchSignals()
    {
        var signals = new List<(PosixSignal, int, string)> { (PosixSignal.SIGINT, 130, "interrupted"), (PosixSignal.SIGTERM, 143, "terminated") };
        if (Usr1 is { } usr1) signals.Add((usr1, 128 + (int)usr1, "stop requested (SIGUSR1)"));
        foreach (var (signal, code, what) in signals)
        {
            try
            {
                _signals.Add(PosixSignalRegistration.Create(signal, ctx =>
                {
                    if (_signal != 0) Environment.Exit(code); // a second signal: stop at once
                    ctx.Cancel = true;
                    _signal = code;
                    Console.Error.WriteLine($"\n{Trainer}: {what}: finishing the current step, then writing a checkpoint (signal again to stop at once)");
                }));
            }
            catch (PlatformNotSupportedException) { }
        }
    }

    /// <summary>Whether <paramref name="code"/> is the exit code of a run stopped by one of the signals it catches.</summary>
    public static bool IsStopExitCode(int code) => code is 130 or 143 || (Usr1 is { } usr1 && code == 128 + (int)usr1);

    /// <summary>True once SIGINT, SIGTERM or SIGUSR1 arrived: the loop should finish its step and call <see cref="Finish"/>.</summary>
    public bool StopRequested => _signal != 0;

    /// <summary>
    /// Whether any rank was asked to stop (collective: every rank calls it once per step, so all stop after the same
    /// step). With one process, <see cref="StopRequested"/>.
    /// </summary>
    public bool StopRequestedOnAnyRank()
    {
        if (_world.Size == 1) return StopRequested;
        var votes = new double[] { _signal };
        _world.AllReduceMax(votes);
        if (votes[0] != 0 && _signal == 0) _signal = (int)votes[0];
        return votes[0] != 0;
    }

    /// <summary>For tests and embedding hosts: behave as if SIGINT (130), SIGTERM (143) or SIGUSR1 (138) arrived.</summary>
    public void RequestStop(int exitCode = 130) => _signal = exitCode;

    /// <summary>Restores the trainable state and the optimizer from the checkpoint resumed from (nothing when not resuming).</summary>
    public void Restore(ITrainable trainable, IOptimizer optimizer)
    {
        RestoreFromDisk(trainable, optimizer);
        if (_world.Size > 1) ShareRootState(trainable, optimizer);
    }

    /// <summary>
    /// Data-parallel start: every rank takes rank 0's step, weights and optimizer state (a resumed checkpoint, or the
    /// weights rank 0 loaded), so the ranks start bitwise identical whatever files each could read.
    /// </summary>
    private void ShareRootState(ITrainable trainable, IOptimizer optimizer)
    {
        var header = new double[] { StartStep };
        if (IsFollower) header[0] = 0;
        _world.AllReduceSum(header);
        _sharedStartStep = (int)header[0];
        foreach (var (_, p) in trainable.Parameters)
        {
            var bytes = System.Runtime.InteropServices.MemoryMarshal.AsBytes(p.Span);
            _world.Broadcast(bytes);
        }
        var state = new MemoryStream();
        if (!IsFollower) optimizer.SaveState(state);
        var length = new double[] { IsFollower ? 0 : state.Length };
        _world.AllReduceSum(length);
        var buffer = IsFollower ? new byte[(long)length[0]] : state.ToArray();
        _world.Broadcast(buffer);
        if (IsFollower) optimizer.LoadState(new MemoryStream(buffer));
    }

    private int? _sharedStartStep;

    private void RestoreFromDisk(ITrainable trainable, IOptimizer optimizer)
    {
        if (ResumedFrom == null) return;
        trainable.LoadCheckpoint(ResumedFrom);
        string path = Path.Combine(ResumedFrom, "optimizer.bin");
        if (!File.Exists(path)) throw new UserInputException($"{ResumedFrom}: no optimizer.bin (an incomplete checkpoint?).");
        try
        {
            using var f = File.OpenRead(path);
            optimizer.LoadState(f);
        }
        catch (InvalidDataException e)
        {
            throw new UserInputException($"{path}: {e.Message}");
        }
    }

    /// <summary>
    /// Writes checkpoint step-N: the trainable state, optimizer.bin, run_config.json and trainer_state.json (with
    /// <paramref name="extra"/>), swapped in atomically. A step already checkpointed (e.g. the one just resumed from) is
    /// not rewritten, so a retried finished run never touches its newest checkpoint.
    /// </summary>
    public void Checkpoint(int step, double epoch, ITrainable trainable, IOptimizer optimizer, JsonObject? extra = null)
    {
        if (_world.Size > 1) CheckRanksAgree(step, trainable);
        if (!IsFollower) WriteCheckpoint(step, epoch, trainable, optimizer, extra);
    }

    private void WriteCheckpoint(int step, double epoch, ITrainable trainable, IOptimizer optimizer, JsonObject? extra)
    {
        if (step == _lastCheckpointStep && File.Exists(Path.Combine(Directory.CheckpointPath(step), TrainerState.FileName))) return;
        Directory.SaveCheckpoint(step, new TrainerState(step, epoch, extra, _inputs), dir =>
        {
            trainable.SaveCheckpoint(dir);
            using (var f = File.Create(Path.Combine(dir, "optimizer.bin"))) optimizer.SaveState(f);
            File.Copy(Directory.ConfigPath, Path.Combine(dir, RunDirectory.ConfigFileName));
        }, _options.SaveTotalLimit);
        _lastCheckpointStep = step;
    }

    /// <summary>
    /// Data-parallel ranks apply identical updates, so their weights must be bitwise equal: a hash of every rank's
    /// weights is compared at each checkpoint, and a difference stops the run before anything is saved.
    /// </summary>
    private void CheckRanksAgree(int step, ITrainable trainable)
    {
        ulong hash = 14695981039346656037UL;
        foreach (var (_, p) in trainable.Parameters)
            foreach (var b in System.Runtime.InteropServices.MemoryMarshal.AsBytes(p.Span)) hash = (hash ^ b) * 1099511628211UL;
        // Two 32-bit halves travel exactly as doubles.
        var mine = new double[] { hash >> 32, hash & 0xFFFFFFFF };
        var all = new double[2 * _world.Size];
        _world.AllGather(mine, all);
        for (int r = 1; r < _world.Size; r++)
            if (all[2 * r] != all[0] || all[2 * r + 1] != all[1])
                throw new UserInputException($"{Trainer}: at step {step} the weights of rank {r} differ from rank 0's; the data-parallel ranks diverged, so nothing was saved. " +
                    "Every rank must run the same build on the same kind of CPU (SIMD widths round differently).");
    }

    /// <summary>The newest checkpoint's directory, or null.</summary>
    public string? LastCheckpoint => Directory.Checkpoints() is { Count: > 0 } all ? all[^1].Path : null;

    /// <summary>
    /// Ends the run at <paramref name="step"/>. Completed: a checkpoint (when --save-steps &gt; 0), the final outputs
    /// swapped in, summary.json. Interrupted: a checkpoint (always), summary.json, then <see cref="RunInterruptedException"/>
    /// with the resume command. Stopped for non-finite values or every step skipped: summary.json, then an error naming
    /// the last (finite) checkpoint. The summary gets "status", "steps" and <paramref name="summary"/>'s entries.
    /// </summary>
    public Dictionary<string, object?> Finish(int step, double epoch, ITrainable trainable, IOptimizer optimizer, Dictionary<string, object?> summary,
        RunStatus status = RunStatus.Completed, string? problem = null, JsonObject? extra = null)
    {
        if (status == RunStatus.Completed && StopRequested) status = RunStatus.Interrupted;
        var result = new Dictionary<string, object?>
        {
            ["trainer"] = Trainer,
            ["status"] = JsonNamingPolicy.SnakeCaseLower.ConvertName(status.ToString()),
            ["steps"] = step,
        };
        foreach (var (k, v) in summary) result.TryAdd(k, v);
        result["train_runtime_s"] = Math.Round(Metrics.Elapsed, 2);
        if (IsFollower)
        {
            if (status == RunStatus.Completed && _options.SaveSteps > 0) CheckRanksAgree(step, trainable);
            if (status == RunStatus.Interrupted) throw new RunInterruptedException($"{Trainer}: stopped at step {step}", _signal);
            if (status != RunStatus.Completed) throw new UserInputException($"{Trainer}: {problem}");
            return result;
        }
        switch (status)
        {
            case RunStatus.Completed:
                if (_options.SaveSteps > 0) Checkpoint(step, epoch, trainable, optimizer, extra);
                foreach (var (entry, write) in trainable.FinalOutputs(_options.SaveDtypeValue))
                {
                    string target = Path.Combine(Directory.Path, entry);
                    RunDirectory.SwapIn(target, write);
                    result.TryAdd(entry == "final" ? "final_model" : entry, target);
                }
                Directory.WriteSummary(result);
                Progress.Message($"{Trainer}: done, {step} steps; final model in {Directory.FinalPath}");
                return result;
            case RunStatus.Interrupted:
                if (step > StartStep || LastCheckpoint == null) WriteCheckpoint(step, epoch, trainable, optimizer, extra);
                result["checkpoint"] = LastCheckpoint;
                Directory.WriteSummary(result);
                throw new RunInterruptedException($"{Trainer}: stopped at step {step}; checkpoint {LastCheckpoint}. Resume with:\n  {ResumeCommand()}", _signal);
            default:
                string? last = LastCheckpoint;
                result["checkpoint"] = last;
                Directory.WriteSummary(result);
                throw new UserInputException($"{Trainer}: {problem} " +
                    (last != null ? $"The last good checkpoint (finite weights) is {last}. " : "No checkpoint was written. ") +
                    "Try a lower --learning-rate, or check the data and reward source.");
        }
    }

    /// <summary>The command that continues this run: the original command line without --overwrite and --resume (in
    /// any spelling, with their values), then --resume, which takes the newest checkpoint: the one just written.</summary>
    public string ResumeCommand()
    {
        if (CommandLine is not { Count: > 0 } args) return $"the same {Trainer} command with --resume (--out {Quote(Directory.Path)})";
        string[] dropped = ["--overwrite", "--overwrite-output-dir", "--overwrite_output_dir", "--resume", "--resume-from-checkpoint", "--resume_from_checkpoint"];
        var kept = new List<string>();
        for (int i = 0; i < args.Count; i++)
        {
            string flag = args[i].Split('=', 2)[0];
            if (Array.IndexOf(dropped, flag) < 0) { kept.Add(args[i]); continue; }
            // The flag's own value, if it has one: a path or true/false, never the next option.
            if (!args[i].Contains('=') && i + 1 < args.Count && !args[i + 1].StartsWith("--", StringComparison.Ordinal)
                && (flag.StartsWith("--resume", StringComparison.Ordinal) || args[i + 1] is "true" or "false")) i++;
        }
        kept.Add("--resume");
        return "alignsharp " + string.Join(' ', kept.Select(Quote));
    }

    private static string Quote(string s)
        => s.Length > 0 && s.All(c => char.IsLetterOrDigit(c) || "-_./=:,@+".Contains(c)) ? s : "'" + s.Replace("'", "'\\''") + "'";

    public void Dispose()
    {
        foreach (var s in _signals) s.Dispose();
        _signals.Clear();
        Metrics?.Dispose();
        Progress?.Dispose();
        _lock?.Dispose();
    }
}
