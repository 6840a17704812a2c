using AlignSharp.Models;

namespace AlignSharp.Text;

/// <summary>A model directory as users bring it: config.json + safetensors, and tokenizer.json when present.</summary>
public sealed record Pretrained(TransformerModel Model, ITokenizer? Tokenizer, string Directory)
{
    /// <summary>
    /// Loads the model and, if the directory has a tokenizer.json, its tokenizer. A LoRA adapter directory is its base
    /// model with the adapter attached (<see cref="ModelIO.Load"/>'s rule), with the adapter directory's tokenizer, else the base's.
    /// <paramref name="bf16Matrices"/>: every matrix frozen in bf16 (see <see cref="ModelIO.Load"/>).
    /// </summary>
    public static Pretrained Load(string directory, HeadKind? head = null, int seed = 0, bool bf16Matrices = false)
        => WithTokenizer(directory, ModelIO.Load(RequireDirectory(directory), head, seed, bf16Matrices));

    /// <summary>
    /// <see cref="Load"/> for a trainer's starting model: an adapter directory's adapter is merged into the weights (the run
    /// starts from base + adapter; its own LoRA adapter, if any, goes on top, and its reference is base + adapter).
    /// </summary>
    public static Pretrained LoadForTraining(string directory, HeadKind? head = null, int seed = 0, bool bf16Matrices = false)
        => WithTokenizer(directory, ModelIO.LoadMerged(RequireDirectory(directory), head, seed, bf16Matrices));

    static string RequireDirectory(string directory) => System.IO.Directory.Exists(directory)
        ? directory
        : throw new UserInputException($"model directory '{directory}' does not exist");

    static Pretrained WithTokenizer(string directory, TransformerModel model)
    {
        string? tokenizerDir = File.Exists(Path.Combine(directory, "tokenizer.json")) ? directory : TokenizerDirectoryOfBase(directory);
        ITokenizer? tokenizer = tokenizerDir != null ? Tokenizers.Load(tokenizerDir) : null;
        if (tokenizer != null && tokenizer.VocabSize > model.Config.VocabSize)
            throw new UserInputException($"{directory}: the tokenizer has {tokenizer.VocabSize} tokens but the model's vocab_size is {model.Config.VocabSize}.");
        return new Pretrained(model, tokenizer, directory);
    }

    static string? TokenizerDirectoryOfBase(string directory)
    {
        for (string? dir = ModelIO.AdapterBase(directory); dir != null; dir = ModelIO.AdapterBase(dir))
            if (File.Exists(Path.Combine(dir, "tokenizer.json"))) return dir;
        return null;
    }

    /// <summary>Attaches the PEFT LoRA adapter saved in <paramref name="adapterDirectory"/> to the model (null: none); returns this.</summary>
    public Pretrained WithAdapter(string? adapterDirectory)
    {
        if (adapterDirectory == null) return this;
        if (!System.IO.Directory.Exists(adapterDirectory)) throw new UserInputException($"--adapter: directory '{adapterDirectory}' does not exist");
        ModelIO.MergeAttachedAdapter(Model); // a model given as an adapter directory: its adapter is part of the base
        Model.Adapter = Models.Lora.LoraAdapter.Load(adapterDirectory, Model);
        return this;
    }

    public ITokenizer RequireTokenizer(string why) => Tokenizer
        ?? throw new UserInputException($"{Directory} has no tokenizer.json, which {why} needs.");

    /// <summary>
    /// Saves a trained model into <paramref name="dir"/> with the tokenizer files of <paramref name="source"/> (its starting
    /// directory; null: none). A scalar-head model (reward, value) whose config names no pad token is given the tokenizer's
    /// pad id, else its EOS id, as TRL's reward script sets it: transformers' sequence classifiers find each row's last
    /// token by the pad id and refuse batches without one.
    /// </summary>
    public static void SaveModel(TransformerModel model, string dir, Models.Checkpoints.SafetensorsDtype dtype, string? source)
    {
        var config = model.Config;
        string? tokenizerDir = source == null ? null : File.Exists(Path.Combine(source, "tokenizer.json")) ? source : TokenizerDirectoryOfBase(source);
        if (config.Head == HeadKind.Scalar && config.PadTokenId == null && tokenizerDir != null
            && Tokenizers.Load(tokenizerDir) is var tokenizer && (tokenizer.PadId ?? tokenizer.EosId) is int pad)
            config = config with { PadTokenId = pad };
        ModelIO.Save(model, dir, dtype, config: config);
        if (source != null) CopyTokenizerFiles(source, dir);
    }

    /// <summary>Copies the tokenizer files, the chat template and generation_config.json (those present) into another model directory.</summary>
    public static void CopyTokenizerFiles(string fromDirectory, string toDirectory)
    {
        foreach (var name in new[] { "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja", GenerationConfig.FileName })
        {
            var src = Path.Combine(fromDirectory, name);
            if (File.Exists(src) && Path.GetFullPath(src) != Path.GetFullPath(Path.Combine(toDirectory, name)))
                File.Copy(src, Path.Combine(toDirectory, name), overwrite: true);
        }
    }
}
