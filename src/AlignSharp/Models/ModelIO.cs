using System.Buffers;
using AlignSharp.Engine;
using AlignSharp.Engine.Kernels;
using AlignSharp.Models.Checkpoints;

namespace AlignSharp.Models;

/// <summary>Loads and saves <see cref="TransformerModel"/>s as Hugging Face checkpoint directories.</summary>
public static class ModelIO
{
    /// <summary>
    /// Reads config.json and the weights (single or sharded safetensors, F32/BF16/F16) from a directory.
    /// With <paramref name="head"/> different from the checkpoint's (e.g. a reward model started from a
    /// language model), the body is loaded and the new head is freshly initialised from <paramref name="seed"/>.
    /// </summary>
    /// <exception cref="UserInputException">A missing file, bad config, or tensors that do not match it.</exception>
    /// <param name="bf16Matrices">Keep every matrix as frozen bf16 (<see cref="TransformerModel.StoreMatricesAsBf16"/>)
    /// without ever holding the whole model in float32: for inference and frozen (reference, base) models.</param>
    public static TransformerModel Load(string directory, HeadKind? head = null, int seed = 0, bool bf16Matrices = false)
    {
        if (IsAdapterDirectory(directory)) return LoadAdapterDirectory(directory, head, seed, bf16Matrices);
        using var checkpoint = ModelCheckpoint.Open(directory);
        var config = checkpoint.Config;
        var wanted = head ?? config.Head;
        // Frozen bf16 matrices are made bf16 from the start and filled in place: no float32 copy of them ever exists.
        var model = bf16Matrices ? TransformerModel.WithBf16Matrices(config with { Head = wanted }) : new TransformerModel(config with { Head = wanted });
        float[]? scratch = null;   // one buffer for matrices stored in another dtype or layout, dropped after loading
        foreach (var (name, p) in model.NamedParameters)
        {
            if (checkpoint.Binding.Parameters.FirstOrDefault(b => b.CanonicalName == name) is { } binding)
            {
                string stored = binding.CheckpointName;   // errors name the tensor as the file does
                if (p.IsBf16)
                {
                    // A BF16 checkpoint tensor is copied bit for bit; anything else goes through float32 and is rounded.
                    var bits = p.Bf16Destination;
                    if (checkpoint.TryReadParameterBf16(name, bits))
                        RequireFinite(directory, stored, bits);
                    else
                    {
                        if (scratch == null || scratch.Length < p.Length) scratch = GC.AllocateUninitializedArray<float>(p.Length);
                        var values = scratch.AsSpan(0, p.Length);
                        checkpoint.ReadParameter(name, values);
                        RequireFinite(directory, stored, values);
                        Bf16.Narrow(values, bits);
                    }
                }
                else
                {
                    checkpoint.ReadParameter(name, p.Span);
                    RequireFinite(directory, stored, p.Span);
                }
            }
            else
                InitialiseNewHead(model, name, p, seed);
        }
        return model;
    }

    /// <summary>True for a PEFT adapter directory: adapter_config.json and no config.json of its own.</summary>
    public static bool IsAdapterDirectory(string directory)
        => File.Exists(Path.Combine(directory, Lora.LoraConfig.FileName)) && !File.Exists(Path.Combine(directory, "config.json"));

    /// <summary>
    /// The one rule for a model directory that holds a LoRA adapter (an rm, sft or RL run's final/ without --merge):
    /// it is its base model, adapter_config.json's base_model_name_or_path (a path as given, from the current
    /// directory, else relative to the adapter directory), with the adapter attached (<see cref="TransformerModel.Adapter"/>).
    /// A SEQ_CLS adapter makes a scalar-head model whose head is the score head saved with it (modules_to_save). A base
    /// that is itself an adapter directory is loaded merged (a LoRA run started from a LoRA run's final/).
    /// </summary>
    private static TransformerModel LoadAdapterDirectory(string directory, HeadKind? head, int seed, bool bf16Matrices)
    {
        var config = Lora.LoraConfig.Load(directory);
        string file = Path.Combine(directory, Lora.LoraConfig.FileName);
        string baseDir = BaseModelDirectory(config, directory, file);
        bool seqCls = config.TaskType == "SEQ_CLS";
        var wanted = head ?? (seqCls ? HeadKind.Scalar : null);
        var model = LoadMerged(baseDir, wanted, seed, bf16Matrices);
        model.Adapter = Lora.LoraAdapter.Load(directory, model);
        return model;
    }

    /// <summary>
    /// <see cref="Load"/> with an adapter directory's adapter merged into the weights (<see cref="MergeAttachedAdapter"/>):
    /// a trainer's starting model, a trunk to put a new adapter on. Every merged value is rounded to bf16 once at most:
    /// a base stored in bf16 loads as bf16 and merges row by row (no float32 copy of the model, so a 1.5B base peaks at its
    /// bf16 size); a float32 base asked for bf16 merges in float32 first and narrows after.
    /// </summary>
    public static TransformerModel LoadMerged(string directory, HeadKind? head = null, int seed = 0, bool bf16Matrices = false)
    {
        bool direct = bf16Matrices && (!IsAdapterDirectory(directory) || StoresBf16(directory));
        var model = MergeAttachedAdapter(Load(directory, head, seed, direct));
        if (bf16Matrices && !direct) model.StoreMatricesAsBf16();
        return model;
    }

    /// <summary>The base model directory of an adapter directory (see <see cref="LoadAdapterDirectory"/>), null for a model directory.</summary>
    public static string? AdapterBase(string directory)
        => IsAdapterDirectory(directory) ? BaseModelDirectory(Lora.LoraConfig.Load(directory), directory, Path.Combine(directory, Lora.LoraConfig.FileName)) : null;

    /// <summary>Where an adapter's base model is: base_model_name_or_path as given, else relative to the adapter directory.</summary>
    private static string BaseModelDirectory(Lora.LoraConfig config, string adapterDir, string file)
    {
        if (string.IsNullOrWhiteSpace(config.BaseModel))
            throw new UserInputException($"{file}: field \"base_model_name_or_path\" is missing, so the base model cannot be found; load the base model and give this directory as --adapter.");
        string relative = Path.Combine(adapterDir, config.BaseModel);
        if (Directory.Exists(config.BaseModel)) return config.BaseModel;
        if (Directory.Exists(relative)) return relative;
        throw new UserInputException($"{file}: field \"base_model_name_or_path\" is '{config.BaseModel}', which is not a model directory " +
            $"(neither from the current directory nor relative to {adapterDir}); load the base model and give this directory as --adapter.");
    }

    /// <summary>
    /// Folds an attached adapter (a model loaded from an adapter directory) into the weights and detaches it, so the model is
    /// plain base + adapter: how trainers start from a LoRA run's final/. Nothing happens without an adapter.
    /// </summary>
    public static TransformerModel MergeAttachedAdapter(TransformerModel model)
    {
        if (model.Adapter is { } adapter)
        {
            adapter.MergeInto(model);
            model.Adapter = null;
        }
        return model;
    }

    /// <summary>Whether the checkpoint in <paramref name="directory"/> (an adapter directory: its base's) stores its matrices in bf16.</summary>
    public static bool StoresBf16(string directory)
    {
        if (AdapterBase(directory) is { } baseDir) return StoresBf16(baseDir);
        using var checkpoint = ModelCheckpoint.Open(directory);
        return checkpoint.StoresBf16;
    }

    private static void RequireFinite(string directory, string name, ReadOnlySpan<ushort> bf16)
    {
        foreach (ushort b in bf16)
            if ((b & 0x7F80) == 0x7F80)
                throw new UserInputException($"{directory}: tensor '{name}' holds NaN or infinite values; the checkpoint is unusable (saved from a diverged run, or corrupt).");
    }

    internal static void RequireFinite(string directory, string name, ReadOnlySpan<float> values)
    {
        if (!System.Numerics.Tensors.TensorPrimitives.IsFiniteAll(values))
            throw new UserInputException($"{directory}: tensor '{name}' holds NaN or infinite values; the checkpoint is unusable (saved from a diverged run, or corrupt).");
    }

    internal static void InitialiseNewHead(TransformerModel model, string name, Tensor p, int seed)
    {
        // Only heads can be absent when the head kind changes; anything else is a binding bug.
        if (name == "score.weight")
        {
            // A small random projection (std 1/√(D+1), as value heads commonly start) so scores begin near 0.
            var rng = new Random(seed);
            var s = p.Span;
            float std = 1f / MathF.Sqrt(model.Config.EmbedDim + 1);
            for (int i = 0; i < s.Length; i++) s[i] = (float)(rng.NextGaussian() * std);
        }
        else if (name == "lm_head.weight")
        {
            // An untied LM head that the checkpoint lacks starts as a copy of the token embedding (both bf16 or both float32).
            var embed = model.Parameter("embed.weight");
            if (p.IsBf16) embed.Bf16Span.CopyTo(p.Bf16Destination);
            else embed.Span.CopyTo(p.Span);
        }
        else if (name == "lm_head.bias") p.Span.Clear();   // with the head it belongs to
        else throw new InvalidOperationException($"Parameter '{name}' is missing from the checkpoint binding.");
    }

    /// <summary>Writes config.json and model.safetensors (sharded above <paramref name="maxShardBytes"/>) atomically.</summary>
    public static void Save(TransformerModel model, string directory, SafetensorsDtype dtype = SafetensorsDtype.F32,
        long maxShardBytes = SafetensorsWriter.DefaultMaxShardBytes, ModelConfig? config = null)
        => ModelCheckpoint.Save(directory, config ?? model.Config, name =>
        {
            var p = model.Parameter(name);
            return p.IsBf16 ? p.ToArray() : new ReadOnlyMemory<float>(p.Array, p.Offset, p.Length);
        }, dtype, maxShardBytes);
}
