using System.Text.Json;
using System.Text.Json.Nodes;
using AlignSharp.Models.Checkpoints;

namespace AlignSharp.Training.Runs;

/// <summary>
/// A trainer's run directory:
/// <code>
/// DIR/run_config.json      the resolved options (defaults, config file and flags merged)
/// DIR/metrics.jsonl        one JSON object per logged step: step, time, split, metrics
/// DIR/checkpoints/step-N/  model(s), optimizer state, trainer_state.json (written atomically)
/// DIR/final/               the final model in Hugging Face layout
/// DIR/summary.json         written at the end
/// </code>
/// </summary>
public sealed class RunDirectory
{
    public string Path { get; }
    public string CheckpointsPath => System.IO.Path.Combine(Path, "checkpoints");
    public string FinalPath => System.IO.Path.Combine(Path, "final");
    public string MetricsPath => System.IO.Path.Combine(Path, "metrics.jsonl");

    public RunDirectory(string path)
    {
        Path = path;
        Directory.CreateDirectory(path);
    }

    internal static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
    };

    public void WriteConfig<T>(T options, string trainer) where T : TrainerOptions
    {
        // Only the declared options: the file can be fed back as --config.
        var node = new JsonObject { ["trainer"] = trainer };
        foreach (var p in options.GetType().GetProperties())
            if (p.GetCustomAttributes(typeof(OptionAttribute), true).Length > 0)
                node[JsonNamingPolicy.SnakeCaseLower.ConvertName(p.Name)] = JsonSerializer.SerializeToNode(p.GetValue(options), p.PropertyType, Json);
        AtomicFile.WriteText(System.IO.Path.Combine(Path, "run_config.json"), node.ToJsonString(Json) + "\n");
    }

    public void WriteSummary(IReadOnlyDictionary<string, object?> summary)
        => AtomicFile.WriteText(System.IO.Path.Combine(Path, "summary.json"), JsonSerializer.Serialize(summary, Json) + "\n");

    /// <summary>Checkpoint directories, oldest first.</summary>
    public IReadOnlyList<(int Step, string Path)> Checkpoints()
    {
        if (!Directory.Exists(CheckpointsPath)) return [];
        return Directory.GetDirectories(CheckpointsPath, "step-*")
            .Select(d => (Ok: int.TryParse(System.IO.Path.GetFileName(d)["step-".Length..], out int s), Step: s, Path: d))
            .Where(x => x.Ok && File.Exists(System.IO.Path.Combine(x.Path, TrainerState.FileName)))
            .OrderBy(x => x.Step).Select(x => (x.Step, x.Path)).ToList();
    }

    /// <summary>
    /// Writes a checkpoint for <paramref name="step"/>: <paramref name="write"/> fills a temporary directory,
    /// which is renamed into place only when complete, so a crash never leaves a half checkpoint. Then the
    /// oldest checkpoints beyond <paramref name="keep"/> (0 = all) are deleted.
    /// </summary>
    public string SaveCheckpoint(int step, TrainerState state, Action<string> write, int keep)
    {
        Directory.CreateDirectory(CheckpointsPath);
        string final = System.IO.Path.Combine(CheckpointsPath, $"step-{step:D6}");
        string tmp = System.IO.Path.Combine(CheckpointsPath, $".tmp-step-{step:D6}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(tmp);
        try
        {
            write(tmp);
            state.Save(tmp);
            if (Directory.Exists(final)) Directory.Delete(final, recursive: true);
            Directory.Move(tmp, final);
        }
        catch
        {
            if (Directory.Exists(tmp)) Directory.Delete(tmp, recursive: true);
            throw;
        }
        if (keep > 0)
        {
            var all = Checkpoints();
            for (int i = 0; i < all.Count - keep; i++) Directory.Delete(all[i].Path, recursive: true);
        }
        return final;
    }

    /// <summary>
    /// The checkpoint to resume from: <paramref name="resume"/> is a checkpoint directory, or empty/"latest" for
    /// the newest in this run; null when not resuming.
    /// </summary>
    public string? ResolveResume(string? resume)
    {
        if (resume == null) return null;
        if (resume is "" or "latest" or "true")
        {
            var all = Checkpoints();
            if (all.Count == 0) throw new UserInputException($"--resume: {CheckpointsPath} has no checkpoint to resume from.");
            return all[^1].Path;
        }
        if (!File.Exists(System.IO.Path.Combine(resume, TrainerState.FileName)))
            throw new UserInputException($"--resume: '{resume}' is not a checkpoint directory (no {TrainerState.FileName}).");
        return resume;
    }
}

/// <summary>Where training stood at a checkpoint. Everything else (data order, dropout) derives from (seed, step).</summary>
public sealed record TrainerState(int Step, double Epoch, JsonObject? Extra = null)
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
