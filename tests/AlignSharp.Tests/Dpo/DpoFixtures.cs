using System.Text.Json;
using AlignSharp.Models;
using AlignSharp.Models.Checkpoints;
using AlignSharp.Text;

namespace AlignSharp.Tests.Dpo;

/// <summary>Tiny byte-tokenizer models and a synthetic preference: chosen answers start with the marker '#'.</summary>
internal static class DpoFixtures
{
    public const char Marker = '#';

    /// <summary>A GPT-2 style model (d 32, 2 layers, 4 heads, 64 positions) with the byte tokenizer, written to <paramref name="dir"/>.</summary>
    public static string TinyModel(string dir, int seed)
    {
        var tok = new ByteTokenizer();
        var config = ModelPresets.Gpt2(tok.VocabSize, 32, 2, 4, 64) with { BosTokenId = tok.BosId, EosTokenIds = [tok.EosId!.Value], PadTokenId = tok.PadId };
        ModelIO.Save(TransformerModel.CreateRandom(config, seed), dir);
        AtomicFile.WriteText(Path.Combine(dir, "tokenizer.json"), ByteTokenizerJson.TokenizerJson());
        AtomicFile.WriteText(Path.Combine(dir, "tokenizer_config.json"), ByteTokenizerJson.TokenizerConfigJson());
        return dir;
    }

    private static string Word(Random rng, int n) => new(Enumerable.Range(0, n).Select(_ => (char)('a' + rng.Next(8))).ToArray());

    public static string Prompt(Random rng) => Word(rng, 3) + ":";

    /// <summary>Pairs {"prompt": "abc:", "chosen": " #xyz", "rejected": " xyz"}: the chosen answer is the rejected one behind the marker.</summary>
    public static string Pairs(string path, int count, int seed)
    {
        var rng = new Random(seed);
        var lines = Enumerable.Range(0, count).Select(_ =>
        {
            string w = Word(rng, 3);
            return JsonSerializer.Serialize(new { prompt = Prompt(rng), chosen = $" {Marker}{w}", rejected = $" {w}" });
        });
        File.WriteAllLines(path, lines);
        return path;
    }

    /// <summary>Rankings of 3 completions: " #w" best, " w" next, " w!" worst, completions in shuffled order.</summary>
    public static string Rankings(string path, int count, int seed)
    {
        var rng = new Random(seed);
        var lines = Enumerable.Range(0, count).Select(_ =>
        {
            string w = Word(rng, 3);
            string[] byRank = [$" {Marker}{w}", $" {w}", $" {w}!"];
            int[] order = [0, 1, 2];
            rng.Shuffle(order);
            var completions = order.Select(i => byRank[i]).ToArray();
            var ranking = Enumerable.Range(0, 3).OrderBy(i => order[i]).ToArray();
            return JsonSerializer.Serialize(new { prompt = Prompt(rng), completions, ranking });
        });
        File.WriteAllLines(path, lines);
        return path;
    }
}
