using System.Text;
using AlignSharp.Text;
using BenchmarkDotNet.Attributes;

namespace AlignSharp.Bench;

/// <summary>
/// Stages of tokenizer encoding on one ~4 KB mixed document (prose, made-up words, numbers, code, CJK, emoji):
/// `dotnet run -c Release --project bench/AlignSharp.Bench -- --filter '*TokenizerBenchmarks*'`.
/// Needs scripts/fetch-tokenizers.sh for the Llama-3 tokenizer. End-to-end MB/s: `alignsharp bench tokenizer`.
/// </summary>
[MemoryDiagnoser]
public class TokenizerBenchmarks
{
    OnigurumaRegex _split = null!;
    ITokenizer _llama3 = null!;
    string _document = "";
    readonly List<(int Start, int Length)> _matches = new(4096);

    [GlobalSetup]
    public void Setup()
    {
        string dir = AppContext.BaseDirectory;
        while (!File.Exists(Path.Combine(dir, "AlignSharp.slnx"))) dir = Path.GetDirectoryName(dir) ?? throw new InvalidOperationException("repository root not found");
        _llama3 = Tokenizers.Load(Path.Combine(dir, "tests", "fixtures", "tokenizers", "full", "llama3"));
        _split = new OnigurumaRegex(SplitPatternScanner.Llama3Pattern);
        var rng = new Random(1);
        string[] words = ["the", "model", "reward", "kalotran", "serionex", "12345", "It's", "don't", "日本語の文章です。", "😀 👍🏽", "f(x) = x ** 2;", "\n\n", "   "];
        var sb = new StringBuilder();
        while (sb.Length < 4096) sb.Append(words[rng.Next(words.Length)]).Append(' ');
        _document = sb.ToString();
    }

    [Benchmark(Baseline = true)]
    public int SplitWithScanner()
    {
        _matches.Clear();
        _split.Matches(_document, _matches);
        return _matches.Count;
    }

    [Benchmark]
    public int SplitWithRegex()
    {
        _matches.Clear();
        _split.MatchesWithRegex(_document, _matches);
        return _matches.Count;
    }

    /// <summary>Whole pipeline; after the first iteration every piece is in the BPE cache.</summary>
    [Benchmark]
    public int EncodeCached() => _llama3.Encode(_document).Length;

    [Benchmark]
    public string NormalizeNfc() => UnicodeNormalization.Normalize(_document, NormalizationForm.FormC);
}
