using System.Text.Json;
using AlignSharp.Text;

namespace AlignSharp.Tests.Text;

/// <summary>One reference case written by tests/fixtures/tokenizers/make_reference.mjs.</summary>
public sealed record ReferenceCase(string Text, int[] Ids, int[] IdsNoSpecial, string Decoded, string DecodedSkipSpecial, string DecodedClean)
{
    public override string ToString() => JsonSerializer.Serialize(Text.Length > 40 ? Text[..40] + "…" : Text);
}

public static class TokenizerFixtures
{
    public static string Dir { get; } = Path.Combine(CliRunner.RepoRoot, "tests", "fixtures", "tokenizers");
    public static string Small(string name) => Path.Combine(Dir, name);
    public static string Full(string name) => Path.Combine(Dir, "full", name);
    public static bool FullPresent => new[] { "gpt2", "llama3", "qwen3", "llama2", "gemma3" }.All(n => File.Exists(Path.Combine(Full(n), "tokenizer.json")));

    static readonly Dictionary<string, ITokenizer> Loaded = new();

    /// <summary>Each tokenizer is loaded once per test run (the full files take a moment to parse).</summary>
    public static ITokenizer Load(string path)
    {
        lock (Loaded)
        {
            if (!Loaded.TryGetValue(path, out var t)) Loaded[path] = t = Tokenizers.Load(path);
            return t;
        }
    }

    public static IReadOnlyList<ReferenceCase> Reference(string name)
    {
        using var doc = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(Dir, "reference", name + ".json")));
        return doc.RootElement.GetProperty("cases").EnumerateArray().Select(c => new ReferenceCase(
            c.GetProperty("text").GetString()!,
            c.GetProperty("ids").EnumerateArray().Select(x => x.GetInt32()).ToArray(),
            c.GetProperty("ids_no_special").EnumerateArray().Select(x => x.GetInt32()).ToArray(),
            c.GetProperty("decoded").GetString()!,
            c.GetProperty("decoded_skip_special").GetString()!,
            c.GetProperty("decoded_clean").GetString()!)).ToList();
    }

    public static TheoryData<int> CaseIndices(string name)
    {
        var data = new TheoryData<int>();
        for (int i = 0; i < Reference(name).Count; i++) data.Add(i);
        return data;
    }
}

/// <summary>A fact over the full-size tokenizer files; skipped, with the reason, when they are not installed.</summary>
public sealed class FullTokenizersFactAttribute : FactAttribute
{
    public FullTokenizersFactAttribute()
    {
        if (!TokenizerFixtures.FullPresent)
            Skip = "full-size tokenizer.json files missing: run scripts/fetch-tokenizers.sh";
    }
}
