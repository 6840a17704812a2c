using AlignSharp.Models;
using AlignSharp.Models.Checkpoints;
using AlignSharp.Text;

namespace AlignSharp.Tests.Training;

/// <summary>Tiny byte-tokenizer models on disk, as `alignsharp init --tokenizer byte` writes them.</summary>
public static class TinyModels
{
    /// <summary>
    /// A GPT-2 whose next-token logit for token v is <paramref name="logit"/>(v) whatever the input: the final norm is
    /// rigged to output the first unit vector (weight 0, bias e₀), so the tied head's logit for v is embed[v, 0].
    /// </summary>
    public static TransformerModel Rigged(ModelConfig gpt2, Func<int, float> logit)
    {
        var model = TransformerModel.CreateRandom(gpt2, seed: 1);
        if (!model.Config.TieWordEmbeddings) throw new ArgumentException("a rigged model needs a tied head (GPT-2).");
        model.Parameter("final_norm.weight").Span.Clear();
        var bias = model.Parameter("final_norm.bias").Span;
        bias.Clear();
        bias[0] = 1;
        var embed = model.Parameter("embed.weight").Span;
        for (int v = 0; v < gpt2.VocabSize; v++) embed[v * gpt2.HiddenSize] = logit(v);
        return model;
    }

    public static string Create(string dir, string arch = "gpt2", int seed = 1, int dModel = 32, int layers = 2)
    {
        var config = arch == "gpt2" ? ModelPresets.Gpt2(259, dModel, layers, 4, 128) : ModelPresets.Llama(259, dModel, layers, 4, 2, 2 * dModel, 128);
        config = config with { BosTokenId = ByteTokenizer.BosTokenId, EosTokenIds = [ByteTokenizer.EosTokenId], PadTokenId = ByteTokenizer.PadTokenId };
        var model = TransformerModel.CreateRandom(config, seed);
        ModelIO.Save(model, dir);
        AtomicFile.WriteText(Path.Combine(dir, "tokenizer.json"), ByteTokenizerJson.TokenizerJson());
        AtomicFile.WriteText(Path.Combine(dir, "tokenizer_config.json"), ByteTokenizerJson.TokenizerConfigJson());
        return dir;
    }

    public static string WriteJsonl(string path, IEnumerable<object> records)
    {
        File.WriteAllLines(path, records.Select(r => System.Text.Json.JsonSerializer.Serialize(r)));
        return path;
    }
}
