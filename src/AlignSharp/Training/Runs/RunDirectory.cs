using System.Text.Json;
using System.Text.Json.Nodes;
using AlignSharp.Models.Checkpoints;

namespace AlignSharp.Training.Runs;

/// <summary>
/// A trainer's run directory:
/// <code>
/// DIR/.lock                held (an OS file lock) by the process training into DIR
/// DIR/run_config.json      the resolved options (defaults, config file and flags merged)
/// DIR/metrics.jsonl        one JSON object per logged step: step, time, split, metrics
/// DIR/checkpoints/step-N/  trainable state, optimizer state, run_config.json, trainer_state.json
/// DIR/final/               the final model in Hugging Face layout
/// DIR/summary.json         written at the end (also when interrupted or stopped)
/// </code>
/// Directories (checkpoints, final outputs) are replaced by <see cref="SwapIn"/>: written under a temporary name, then
/// the old one is renamed aside, the new one renamed into place, and only then the old one deleted. A kill at any point
/// leaves either the old or the new directory complete; <see cref="Recover"/> (run when a session opens) puts back an
/// old directory whose replacement never arrived and deletes temporary leftovers.
/// </summary>
public sealed class RunDirectory
{
    public string Path { get; }
    public string CheckpointsPath => System.IO.Path.Combine(Path, CheckpointsName);
    public string FinalPath => System.IO.Path.Combine(Path, FinalName);
    public string MetricsPath => System.IO.Path.Combine(Path, MetricsName);
    public string ConfigPath => System.IO.Path.Combine(Path, ConfigFileName);
    public string SummaryPath => System.IO.Path.Combine(Path, SummaryName);

    public const string ConfigFileName = "run_config.json";
    private const string CheckpointsName = "checkpoints", FinalName = "final", MetricsName = "metrics.jsonl", SummaryName = "summary.json";

    public RunDirectory(string path)
    {
        Path = path;
        try { Directory.CreateDirectory(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new UserInputException($"--out {path}: the run directory cannot be created: {e.Message}");
        }
    }

    internal static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
        // A summary of a diverged run may hold NaN: written "NaN", as metrics.jsonl writes it.
        NumberHandling = System.Text.Json.Serialization.JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    /// <summary>The declared options as a JSON object (snake_case keys), as written to run_config.json.</summary>
    public static JsonObject ConfigNode<T>(T options, string trainer) where T : TrainerOptions
    {
        // Only the declared options: the file can be fed back as --config. Not --resume and --overwrite, which say what
        // to do with --out this once: fed back, they would delete the run or resume from nothing.
        var node = new JsonObject { ["trainer"] = trainer };
        foreach (var p in options.GetType().GetProperties())
            if (OmitOptionsAttribute.IsOption(options.GetType(), p) && p.Name is not (nameof(TrainerOptions.Resume) or nameof(TrainerOptions.Overwrite)))
                node[JsonNamingPolicy.SnakeCaseLower.ConvertName(p.Name)] = JsonSerializer.SerializeToNode(p.GetValue(options), p.PropertyType, Json);
        return node;
    }

    public void WriteConfig<T>(T options, string trainer) where T : TrainerOptions
        => AtomicFile.WriteText(ConfigPath, ConfigNode(options, trainer).ToJsonString(Json) + "\n");

    public void WriteSummary(IReadOnlyDictionary<string, object?> summary)
        => AtomicFile.WriteText(SummaryPath, JsonSerializer.Serialize(summary, Json) + "\n");

    /// <summary>True when the directory holds (part of) a training run.</summary>
    public bool HoldsRun() => HoldsRun(Path);

    /// <summary><see cref="HoldsRun()"/> for a directory that may not exist (nothing is created).</summary>
    public static bool HoldsRun(string path)
    {
        string At(string name) => System.IO.Path.Combine(path, name);
        return File.Exists(At(ConfigFileName)) || File.Exists(At(MetricsName)) || File.Exists(At(SummaryName)) || Directory.Exists(At(FinalName))
               || (Directory.Exists(At(CheckpointsName)) && Directory.EnumerateFileSystemEntries(At(CheckpointsName)).Any());
    }

    /// <summary>What <see cref="Clear"/> deletes: the entries above, PPO's value_model/ and the TensorBoard event files of
    /// --report-to tensorboard (runs/), which would otherwise show the deleted run beside the new one.</summary>
    private static readonly string[] RunEntries = [ConfigFileName, MetricsName, SummaryName, FinalName, "value_model", CheckpointsName, "runs"];

    /// <summary>The entry <see cref="Clear"/> would delete that is or holds <paramref name="path"/>, or null.</summary>
    public string? ClearedEntryHolding(string path)
    {
        string full = System.IO.Path.TrimEndingDirectorySeparator(System.IO.Path.GetFullPath(path));
        foreach (var name in RunEntries)
        {
            string entry = System.IO.Path.GetFullPath(System.IO.Path.Combine(Path, name));
            if (full == entry || full.StartsWith(entry + System.IO.Path.DirectorySeparatorChar, StringComparison.Ordinal)) return entry;
        }
        return null;
    }

    /// <summary>Deletes what a run writes (<see cref="RunEntries"/>); other files (caches keyed by their inputs) are left alone.</summary>
    public void Clear()
    {
        foreach (var name in RunEntries)
        {
            string path = System.IO.Path.Combine(Path, name);
            if (Directory.Exists(path)) Directory.Delete(path, recursive: true);
            else if (File.Exists(path)) File.Delete(path);
        }
    }

    /// <summary>Checkpoint directories, oldest first.</summary>
    public IReadOnlyList<(int Step, string Path)> Checkpoints()
    {
        if (!Directory.Exists(CheckpointsPath)) return [];
        return Directory.GetDirectories(CheckpointsPath, "step-*")
            .Select(d => (Ok: int.TryParse(System.IO.Path.GetFileName(d)["step-".Length..], out int s), Step: s, Path: d))
            .Where(x => x.Ok && File.Exists(System.IO.Path.Combine(x.Path, TrainerState.FileName)))
            .OrderBy(x => x.Step).Select(x => (x.Step, x.Path)).ToList();
    }

    public string CheckpointPath(int step) => System.IO.Path.Combine(CheckpointsPath, $"step-{step:D6}");

    /// <summary>
    /// Writes a checkpoint for <paramref name="step"/>: <paramref name="write"/> fills a temporary directory, which is
    /// swapped in only when complete (<see cref="SwapIn"/>). Then the oldest checkpoints beyond <paramref name="keep"/>
    /// (0 = all) are deleted, never the one just written.
    /// </summary>
    public string SaveCheckpoint(int step, TrainerState state, Action<string> write, int keep)
    {
        Directory.CreateDirectory(CheckpointsPath);
        string final = CheckpointPath(step);
        SwapIn(final, dir =>
        {
            write(dir);
            state.Save(dir); // last: a directory with trainer_state.json is complete
        });
        if (keep > 0)
        {
            var all = Checkpoints();
            for (int i = 0; i < all.Count - keep; i++)
                if (all[i].Path != final) Discard(all[i].Path);
        }
        return final;
    }

    /// <summary>
    /// Replaces directory <paramref name="target"/> by what <paramref name="write"/> puts into a fresh temporary
    /// directory beside it; the old directory is deleted only after the new one is in place.
    /// </summary>
    public static void SwapIn(string target, Action<string> write)
    {
        string parent = System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(target))!;
        string name = System.IO.Path.GetFileName(target);
        string tmp = System.IO.Path.Combine(parent, $".{name}.tmp-{Guid.NewGuid():N}");
        Directory.CreateDirectory(tmp);
        try
        {
            write(tmp);
        }
        catch
        {
            TryDelete(tmp);
            throw;
        }
        string? old = null;
        if (Directory.Exists(target))
        {
            old = System.IO.Path.Combine(parent, $".{name}.old-{Guid.NewGuid():N}");
            Directory.Move(target, old);
        }
        Directory.Move(tmp, target);
        if (old != null) Directory.Delete(old, recursive: true);
    }

    /// <summary>Deletes a directory so that a kill on the way leaves no part of it under its own name: it is renamed to a
    /// temporary name first, which <see cref="Recover"/> removes (a half-deleted checkpoint still read as one).</summary>
    private static void Discard(string dir)
    {
        string parent = System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(dir))!;
        string doomed = System.IO.Path.Combine(parent, $".{System.IO.Path.GetFileName(dir)}.tmp-{Guid.NewGuid():N}");
        Directory.Move(dir, doomed);
        Directory.Delete(doomed, recursive: true);
    }

    /// <summary>
    /// Repairs what a killed process left: an old directory set aside by <see cref="SwapIn"/> whose replacement never
    /// arrived is put back; other set-aside and temporary directories (and the temporaries of earlier versions,
    /// <c>.tmp-step-*</c>, <c>final.tmp-*</c>) are deleted. Returns what was done, for the log.
    /// </summary>
    public IReadOnlyList<string> Recover()
    {
        var done = new List<string>();
        foreach (var dir in new[] { Path, CheckpointsPath })
        {
            if (!Directory.Exists(dir)) continue;
            foreach (var entry in Directory.GetDirectories(dir))
            {
                string name = System.IO.Path.GetFileName(entry);
                int old = name.LastIndexOf(".old-", StringComparison.Ordinal);
                if (name.StartsWith('.') && old > 1)
                {
                    string target = System.IO.Path.Combine(dir, name[1..old]);
                    if (!Directory.Exists(target)) { Directory.Move(entry, target); done.Add($"restored {target} (its replacement was interrupted)"); }
                    else { TryDelete(entry); done.Add($"removed {entry}"); }
                }
                else if (name.Contains(".tmp-", StringComparison.Ordinal))
                {
                    TryDelete(entry);
                    done.Add($"removed unfinished {entry}");
                }
            }
        }
        return done;
    }

    private static void TryDelete(string dir)
    {
        try { Directory.Delete(dir, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }

    /// <summary>
    /// The checkpoint to resume from: <paramref name="resume"/> is a checkpoint directory, or empty/"latest" for
    /// the newest in this run; null when not resuming.
    /// </summary>
    public string? ResolveResume(string? resume)
    {
        if (resume == null) return null;
        if (resume is "" or "latest" || string.Equals(resume, "true", StringComparison.OrdinalIgnoreCase))
        {
            var all = Checkpoints();
            if (all.Count == 0)
                throw new UserInputException($"--resume: {CheckpointsPath} has no checkpoint to resume from; start again with --overwrite (or name a checkpoint directory).");
            return all[^1].Path;
        }
        if (!File.Exists(System.IO.Path.Combine(resume, TrainerState.FileName)))
            throw new UserInputException($"--resume: '{resume}' is not a checkpoint directory (no {TrainerState.FileName}).");
        // Going back to an earlier checkpoint: the later ones hold another history, which this run's checkpoints would
        // be mixed with (rotation would delete this run's and keep those; a later --resume would pick them).
        int step = TrainerState.Load(resume).Step;
        if (Checkpoints().Where(c => c.Step > step).Select(c => c.Path).ToList() is { Count: > 0 } later)
            throw new UserInputException($"--resume {resume}: --out holds later checkpoints of the run ({string.Join(", ", later.Select(System.IO.Path.GetFileName))}); " +
                "to go back to step " + step + ", move or delete them first, or resume into another --out.");
        return resume;
    }
}

/// <summary>
/// Where training stood at a checkpoint. Everything else (data order, dropout) derives from (seed, step) and the data,
/// so <paramref name="Inputs"/> records each input file as it was read (<see cref="RunSession"/> compares on --resume).
/// </summary>
public sealed record TrainerState(int Step, double Epoch, JsonObject? Extra = null, JsonObject? Inputs = null)
{
    public const string FileName = "trainer_state.json";

    public void Save(string dir)
        => AtomicFile.WriteText(System.IO.Path.Combine(dir, FileName), JsonSerializer.Serialize(this, RunDirectory.Json) + "\n");

    public static TrainerState Load(string dir)
    {
        string path = System.IO.Path.Combine(dir, FileName);
        try
        {
            return JsonSerializer.Deserialize<TrainerState>(File.ReadAllText(path), RunDirectory.Json)
                   ?? throw new UserInputException($"{path}: empty trainer state.");
        }
        catch (JsonException e)
        {
            throw new UserInputException($"{path}: unreadable trainer state: {e.Message}");
        }
    }
}
