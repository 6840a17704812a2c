using AlignSharp.Models;
using AlignSharp.Models.Checkpoints;
using AlignSharp.Text;

namespace AlignSharp.Tests.Training;

/// <summary>Tiny byte-tokenizer models on disk, as `alignsharp init --tokenizer byte` writes them.</summary>
public static class TinyModels
{
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
