using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text;
using AlignSharp.Text;

namespace AlignSharp.Cli.Commands;

/// <summary>
/// `alignsharp bench tokenizer --tokenizer PATH [--mb N]`: single-thread encode throughput, after an equal-sized warm-up, over N MB of generated
/// varied text (prose, made-up words, numbers, code, CJK, emoji), as 4 KB documents; prints one JSON object.
/// </summary>
public static class BenchTokenizerCommand
{
    public static Command Create()
    {
        var tokenizer = new Option<string>("--tokenizer") { Description = "tokenizer.json, model directory, or 'byte'.", Required = true };
        var mb = new Option<double>("--mb") { Description = "Megabytes (UTF-8) of text to encode (default 8).", DefaultValueFactory = _ => 8 };
        var command = new Command("tokenizer", "Encode throughput of a tokenizer in MB/s (one thread).") { tokenizer, mb };
        command.SetAction(parse => CliErrors.Guard(() => Run(parse.GetValue(tokenizer)!, parse.GetValue(mb))));
        return command;
    }

    static int Run(string path, double mb)
    {
        if (!(mb > 0)) throw new CliException("--mb must be positive");
        var tokenizer = Tokenizers.Load(path);
        // Warm-up on different text of the same size (JIT tiering reaches steady state; the BPE cache holds the
        // common words, as it does after the first megabytes of any real corpus), then time the measured documents.
        foreach (var d in GenerateDocuments((long)(mb * 1024 * 1024), seed: 4321)) tokenizer.Encode(d);
        var documents = GenerateDocuments((long)(mb * 1024 * 1024), seed: 1234);
        long bytes = documents.Sum(d => (long)Encoding.UTF8.GetByteCount(d));

        long tokens = 0;
        var clock = Stopwatch.StartNew();
        foreach (var d in documents) tokens += tokenizer.Encode(d).Length;
        double seconds = clock.Elapsed.TotalSeconds;

        double mbPerS = bytes / 1048576.0 / seconds;
        Console.Out.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"{{\"mb_per_s\": {mbPerS:F2}, \"mb\": {bytes / 1048576.0:F2}, \"tokens\": {tokens}, \"seconds\": {seconds:F3}, \"threads\": 1, \"vocab_size\": {tokenizer.VocabSize}}}"));
        return 0;
    }

    /// <summary>Deterministic documents of about 4 KB mixing sentence shapes with made-up words so the BPE cache sees a realistic miss rate.</summary>
    internal static List<string> GenerateDocuments(long targetBytes, int seed)
    {
        var rng = new Random(seed);
        string[] syllables = ["ka", "lo", "mi", "tran", "ser", "ion", "th", "qu", "ex", "pre", "ing", "al", "ver", "com", "ad", "st", "ou", "ph"];
        string[] common = ["the", "of", "and", "to", "in", "is", "that", "for", "it", "with", "as", "was", "on", "be", "by", "this", "model", "reward"];
        string[] extras =
        [
            "It's 3.14159 or 2,718 — isn't it?", "Don't panic: 42 answers.", "def f(x):\n    return x ** 2\n",
            "for (int i = 0; i < n; ++i) { sum += a[i]; }", "日本語の文章です。", "中文文本，标点。", "Привет, мир!", "café naïve résumé",
            "emoji 😀 👍🏽 👨‍👩‍👧", "\n\n", "   indented\tline", "https://example.com/path?q=1",
        ];
        var docs = new List<string>();
        long total = 0;
        var sb = new StringBuilder();
        while (total < targetBytes)
        {
            sb.Clear();
            while (sb.Length < 4096)
            {
                int kind = rng.Next(10);
                if (kind < 6) sb.Append(common[rng.Next(common.Length)]);
                else if (kind < 8)
                {
                    int n = 1 + rng.Next(4);
                    for (int i = 0; i < n; i++) sb.Append(syllables[rng.Next(syllables.Length)]);
                }
                else if (kind < 9) sb.Append(rng.Next(100000).ToString(CultureInfo.InvariantCulture));
                else sb.Append(extras[rng.Next(extras.Length)]);
                sb.Append(rng.Next(12) switch { 0 => ". ", 1 => ", ", 2 => "\n", _ => " " });
            }
            string doc = sb.ToString();
            docs.Add(doc);
            total += Encoding.UTF8.GetByteCount(doc);
        }
        return docs;
    }
}
