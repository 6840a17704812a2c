using AlignSharp.Engine;
using AlignSharp.Models;
using AlignSharp.Models.Checkpoints;
using AlignSharp.Models.Lora;
using AlignSharp.Text;

namespace AlignSharp.Training.Runs;

/// <summary>
/// What a trainer trains, as the run session and the optimizer step see it: the parameters the optimizer updates,
/// the state a checkpoint must hold to resume bit for bit, and the outputs written at the end. Every trainer asks this
/// one place for "the trainable parameters" and "save the trainable state"; a LoRA adapter is another implementation
/// (its parameters are the adapters, its outputs an adapter directory).
/// </summary>
public interface ITrainable
{
    /// <summary>The parameters the optimizer updates, named, in a fixed order (the optimizer state's order).</summary>
    IReadOnlyList<(string Name, Tensor Parameter)> Parameters { get; }

    /// <summary>Writes everything needed to resume exactly (float32) into the fresh checkpoint directory <paramref name="dir"/>.</summary>
    void SaveCheckpoint(string dir);

    /// <summary>Restores what <see cref="SaveCheckpoint"/> wrote; a missing or mismatched tensor is a <see cref="UserInputException"/>.</summary>
    void LoadCheckpoint(string dir);

    /// <summary>
    /// The final outputs: each a run-directory entry ("final", "value_model") and how to fill a fresh directory with it,
    /// weights stored as <paramref name="dtype"/>. The session writes each to a temporary folder and swaps it in.
    /// </summary>
    IReadOnlyList<(string Entry, Action<string> Write)> FinalOutputs(SafetensorsDtype dtype);
}

/// <summary>The one choice every trainer makes between training a model whole and training a LoRA adapter on it.</summary>
public static class Trainable
{
    /// <summary>
    /// <paramref name="model"/> trained whole when <paramref name="adapter"/> is null (<see cref="TrainableModel"/>, checkpoint
    /// subdirectory "model" unless named), else the adapter on the frozen model (<see cref="TrainableAdapter"/>, "adapter" unless named;
    /// <paramref name="merge"/>: the final entry is the merged model). Both write <paramref name="writeExtras"/> beside their
    /// final outputs and prefix their parameter names with <paramref name="namePrefix"/>.
    /// </summary>
    public static ITrainable For(TransformerModel model, LoraAdapter? adapter, string? sourceDirectory, bool merge, Action<string>? writeExtras,
        string? checkpointName = null, string finalEntry = "final", string namePrefix = "")
        => adapter == null
            ? new TrainableModel(model, sourceDirectory, checkpointName, finalEntry) { WriteExtras = writeExtras, NamePrefix = namePrefix }
            : new TrainableAdapter(model, adapter, sourceDirectory, merge, checkpointName, finalEntry) { WriteExtras = writeExtras, NamePrefix = namePrefix };
}

/// <summary>
/// A fully trained <see cref="TransformerModel"/>: all its parameters are trainable. In a checkpoint it is the
/// subdirectory <see cref="CheckpointName"/> (float32); at the end it is the run-directory entry <see cref="FinalEntry"/>
/// in Hugging Face layout, with the tokenizer files of <see cref="SourceDirectory"/> and any <see cref="WriteExtras"/>.
/// </summary>
public sealed class TrainableModel(TransformerModel model, string? sourceDirectory, string? checkpointName = null, string finalEntry = "final") : ITrainable
{
    public TransformerModel Model => model;
    public string? SourceDirectory => sourceDirectory;
    /// <summary>The checkpoint's subdirectory: "model" unless named.</summary>
    public string CheckpointName { get; } = checkpointName ?? "model";
    public string FinalEntry => finalEntry;

    /// <summary>Prefix of the parameter names (e.g. "value." so two models' names stay distinct in one optimizer).</summary>
    public string NamePrefix { get; init; } = "";

    /// <summary>Extra files written beside the final weights (e.g. reward_model.json).</summary>
    public Action<string>? WriteExtras { get; set; }

    /// <summary>Loads a model directory for training; <paramref name="head"/> swaps the head (a reward or value model from an LM).</summary>
    public static TrainableModel Load(string directory, HeadKind? head = null, int seed = 0, string? checkpointName = null, string finalEntry = "final")
        => new(ModelIO.Load(directory, head, seed), directory, checkpointName, finalEntry);

    public IReadOnlyList<(string Name, Tensor Parameter)> Parameters
        => NamePrefix == "" ? model.NamedParameters : model.NamedParameters.Select(p => (NamePrefix + p.Name, p.Parameter)).ToList();

    public void SaveCheckpoint(string dir) => Save(Path.Combine(dir, CheckpointName), SafetensorsDtype.F32);

    public void LoadCheckpoint(string dir) => CopyWeights(Path.Combine(dir, CheckpointName), model);

    public IReadOnlyList<(string Entry, Action<string> Write)> FinalOutputs(SafetensorsDtype dtype) => [(finalEntry, d => Save(d, dtype))];

    /// <summary>Writes the model (config.json, safetensors), the source's tokenizer files and the extras into <paramref name="dir"/>.</summary>
    public void Save(string dir, SafetensorsDtype dtype)
    {
        Pretrained.SaveModel(model, dir, dtype, sourceDirectory);
        WriteExtras?.Invoke(dir);
    }

    /// <summary>Copies the weights saved in <paramref name="dir"/> into <paramref name="into"/>, checking every shape.</summary>
    public static void CopyWeights(string dir, TransformerModel into)
    {
        if (!Directory.Exists(dir)) throw new UserInputException($"{dir}: missing from the checkpoint (an incomplete checkpoint?).");
        var loaded = ModelIO.Load(dir, into.Config.Head);
        foreach (var (name, p) in into.NamedParameters)
        {
            var saved = loaded.Parameter(name);
            if (!ShapeUtil.SameShape(saved.Shape, p.Shape))
                throw new UserInputException($"{dir}: tensor '{name}' has shape {ShapeUtil.Format(saved.Shape)}, the model being trained {ShapeUtil.Format(p.Shape)}.");
            saved.Span.CopyTo(p.Span);
        }
    }
}

/// <summary>Several trainables optimised together (PPO's policy and value model), parameters concatenated in order.</summary>
public sealed class TrainableSet(params ITrainable[] parts) : ITrainable
{
    public IReadOnlyList<(string Name, Tensor Parameter)> Parameters => parts.SelectMany(p => p.Parameters).ToList();

    public void SaveCheckpoint(string dir) { foreach (var p in parts) p.SaveCheckpoint(dir); }

    public void LoadCheckpoint(string dir) { foreach (var p in parts) p.LoadCheckpoint(dir); }

    public IReadOnlyList<(string Entry, Action<string> Write)> FinalOutputs(SafetensorsDtype dtype) => parts.SelectMany(p => p.FinalOutputs(dtype)).ToList();
}

/// <summary>
/// LoRA adapters trained on a frozen <see cref="TransformerModel"/>: the base parameters stop requiring gradients and
/// only the adapters' A and B matrices are optimised, plus a scalar model's score head, trained whole and saved beside
/// the adapter as PEFT's modules_to_save does (<c>base_model.model.score.weight</c>; task_type SEQ_CLS). A checkpoint
/// holds the adapter (and head) alone (subdirectory <see cref="CheckpointName"/>, PEFT format, float32); the final entry
/// is the adapter in PEFT format with the source's tokenizer files and <see cref="WriteExtras"/>, or with <c>merge</c>
/// the merged model in Hugging Face layout.
/// </summary>
public sealed class TrainableAdapter : ITrainable
{
    private const string ScoreHead = "score.weight";
    private readonly TransformerModel _model;
    private readonly string? _sourceDirectory;
    private readonly bool _merge;
    private readonly IReadOnlyList<string> _wholeModules;

    public TrainableAdapter(TransformerModel model, LoraAdapter adapter, string? sourceDirectory, bool merge, string? checkpointName = null, string finalEntry = "final")
    {
        _model = model;
        _sourceDirectory = sourceDirectory;
        _merge = merge;
        _wholeModules = model.Config.Head == HeadKind.Scalar ? [ScoreHead] : [];
        Adapter = _wholeModules.Count > 0 && adapter.Config.TaskType != LoraConfig.SequenceClassification
            ? adapter.WithConfig(adapter.Config.ForSequenceClassification()) : adapter;
        CheckpointName = checkpointName ?? "adapter";
        FinalEntry = finalEntry;
        foreach (var (_, p) in model.NamedParameters) p.RequiresGrad = false;
        foreach (var (_, p) in Parameters) p.RequiresGrad = true;
        model.Adapter = Adapter;
    }

    /// <summary>Prefix of the parameter names (e.g. "value." so two adapters' names stay distinct in one optimizer).</summary>
    public string NamePrefix { get; init; } = "";

    public LoraAdapter Adapter { get; }
    public string CheckpointName { get; }
    public string FinalEntry { get; }

    /// <summary>Extra files written beside the final adapter or merged model (e.g. the chat template).</summary>
    public Action<string>? WriteExtras { get; set; }

    /// <summary>The adapter's A and B matrices (and DoRA magnitudes), then a scalar model's score head.</summary>
    public IReadOnlyList<(string Name, Tensor Parameter)> Parameters
        => Adapter.NamedParameters.Concat(_wholeModules.Select(m => ("base_model.model." + m, _model.Parameter(m))))
            .Select(p => (NamePrefix + p.Item1, p.Item2)).ToList();

    private IReadOnlyList<(string Name, Tensor Tensor)> WholeModules => _wholeModules.Select(m => (m, _model.Parameter(m))).ToList();

    public void SaveCheckpoint(string dir) => Adapter.Save(Path.Combine(dir, CheckpointName), WholeModules);

    public void LoadCheckpoint(string dir)
    {
        string path = Path.Combine(dir, CheckpointName);
        if (!Directory.Exists(path)) throw new UserInputException($"{path}: missing from the checkpoint (an incomplete checkpoint, or one of a run without LoRA?).");
        var loaded = LoraAdapter.Load(path, _model); // copies a saved score head into the model
        foreach (var m in _wholeModules.Except(loaded.SavedModules))
            throw new UserInputException($"{path}: no tensor 'base_model.model.{m}' (the checkpoint lacks the trained score head).");
        var saved = loaded.NamedParameters.ToDictionary(p => p.Name, p => p.Parameter, StringComparer.Ordinal);
        foreach (var (name, p) in Adapter.NamedParameters)
        {
            if (!saved.TryGetValue(name, out var s)) throw new UserInputException($"{path}: no tensor '{name}' (the checkpoint's adapter adapts other modules).");
            if (!ShapeUtil.SameShape(s.Shape, p.Shape))
                throw new UserInputException($"{path}: tensor '{name}' has shape {ShapeUtil.Format(s.Shape)}, the adapter being trained {ShapeUtil.Format(p.Shape)}.");
            s.Span.CopyTo(p.Span);
        }
    }

    public IReadOnlyList<(string Entry, Action<string> Write)> FinalOutputs(SafetensorsDtype dtype) => [(FinalEntry, d => Save(d, dtype))];

    /// <summary>Writes the adapter (or, merging, the merged model), the source's tokenizer files and the extras into <paramref name="dir"/>.</summary>
    public void Save(string dir, SafetensorsDtype dtype)
    {
        if (_merge) Pretrained.SaveModel(Merged(), dir, dtype, _sourceDirectory);
        else
        {
            Adapter.Save(dir, WholeModules, dtype);
            if (_sourceDirectory != null) Pretrained.CopyTokenizerFiles(_sourceDirectory, dir);
        }
        WriteExtras?.Invoke(dir);
    }

    /// <summary>A float32 copy of the base with the adapter merged in (the model being trained is left as it is).</summary>
    private TransformerModel Merged()
    {
        var merged = TransformerModel.CreateRandom(_model.Config, 0);
        foreach (var (name, p) in merged.NamedParameters) _model.Parameter(name).ToArray().CopyTo(p.Span);
        Adapter.MergeInto(merged);
        return merged;
    }
}
