using AlignSharp.Models;

namespace AlignSharp.Text;

/// <summary>A model directory as users bring it: config.json + safetensors, and tokenizer.json when present.</summary>
public sealed record Pretrained(TransformerModel Model, ITokenizer? Tokenizer, string Directory)
{
    /// <summary>Loads the model and, if the directory has a tokenizer.json, its tokenizer. <paramref name="bf16Matrices"/>: every
    /// matrix frozen in bf16 (see <see cref="ModelIO.Load"/>).</summary>
    public static Pretrained Load(string directory, HeadKind? head = null, int seed = 0, bool bf16Matrices = false)
    {
        if (!System.IO.Directory.Exists(directory)) throw new UserInputException($"model directory '{directory}' does not exist");
        var model = ModelIO.Load(directory, head, seed, bf16Matrices);
        ITokenizer? tokenizer = File.Exists(Path.Combine(directory, "tokenizer.json")) ? Tokenizers.Load(directory) : null;
        if (tokenizer != null && tokenizer.VocabSize > model.Config.VocabSize)
            throw new UserInputException($"{directory}: the tokenizer has {tokenizer.VocabSize} tokens but the model's vocab_size is {model.Config.VocabSize}.");
        return new Pretrained(model, tokenizer, directory);
    }

    /// <summary>Attaches the PEFT LoRA adapter saved in <paramref name="adapterDirectory"/> to the model (null: none); returns this.</summary>
    public Pretrained WithAdapter(string? adapterDirectory)
    {
        if (adapterDirectory == null) return this;
        if (!System.IO.Directory.Exists(adapterDirectory)) throw new UserInputException($"--adapter: directory '{adapterDirectory}' does not exist");
        Model.Adapter = Models.Lora.LoraAdapter.Load(adapterDirectory, Model);
        return this;
    }

    public ITokenizer RequireTokenizer(string why) => Tokenizer
        ?? throw new UserInputException($"{Directory} has no tokenizer.json, which {why} needs.");

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
