using System.CommandLine;
using System.Text;
using System.Text.Json;
using AlignSharp.Text;
using AlignSharp.Training.Data;

namespace AlignSharp.Cli.Commands;

/// <summary>
/// `alignsharp tokenize --tokenizer PATH (--input IN.jsonl [--output OUT.jsonl] | --text "...") [--no-special-tokens]`:
/// each input line <c>{"text": ...}</c> becomes one output line <c>{"ids": [...]}</c>, in order.
/// </summary>
public static class TokenizeCommand
{
    public static Command Create()
    {
        var tokenizer = new Option<string>("--tokenizer")
        {
            Description = "A tokenizer.json file, a model directory holding tokenizer.json (+ tokenizer_config.json), or 'byte' (256 bytes + <|bos|>, <|eos|>, <|pad|>).",
            Required = true,
        };
        var input = new Option<string?>("--input") { Description = "JSONL file, one {\"text\": \"...\"} object per line." };
        var output = new Option<string?>("--output") { Description = "JSONL file to write, one {\"ids\": [...]} per input line (default: stdout)." };
        var text = new Option<string?>("--text") { Description = "Tokenize this one string instead of --input; prints {\"ids\": [...]}." };
        var noSpecial = new Option<bool>("--no-special-tokens")
        {
            Description = "Do not add the tokens the tokenizer adds around a text (e.g. BOS). Special tokens written in the text are still recognised.",
        };
        var command = new Command("tokenize", "Encode text to token ids with a Hugging Face tokenizer.json or the byte tokenizer.")
        {
            tokenizer, input, output, text, noSpecial,
        };
        command.Validators.Add(result =>
        {
            bool hasInput = result.GetResult(input) is not null, hasText = result.GetResult(text) is not null;
            if (hasInput == hasText) result.AddError("give exactly one of --input and --text");
            if (hasText && result.GetResult(output) is not null) result.AddError("--output goes with --input, not --text");
        });
        command.SetAction(parse => CliErrors.Guard(() => Run(
            parse.GetValue(tokenizer)!, parse.GetValue(input), parse.GetValue(output), parse.GetValue(text), !parse.GetValue(noSpecial))));
        return command;
    }

    static int Run(string tokenizerPath, string? inputPath, string? outputPath, string? text, bool addSpecialTokens)
    {
        OutputPaths.RefuseInput("--output", outputPath, ("--input", inputPath), ("--tokenizer", tokenizerPath));
        var tokenizer = Tokenizers.Load(tokenizerPath);
        if (text is not null)
        {
            Console.Out.WriteLine(IdsLine(tokenizer.Encode(text, addSpecialTokens)));
            return 0;
        }
        if (!File.Exists(inputPath)) throw new CliException($"{inputPath}: no such input file");

        // Streamed to the output (written atomically: bad input leaves no partial file) as the records are read.
        bool stdout = outputPath is null;
        int lineNumber = 0;
        long tokens = 0;
        IEnumerable<string> Lines()
        {
            foreach (var (source, record) in JsonRecords.Each(inputPath!))
            {
                lineNumber++;
                var ids = tokenizer.Encode(ReadText(record, source), addSpecialTokens);
                tokens += ids.Length;
                yield return IdsLine(ids);
            }
        }
        Jsonl.Write(outputPath, Lines());
        Console.Error.WriteLine($"tokenize: {lineNumber} records, {tokens} tokens{(stdout ? "" : $" -> {outputPath}")}");
        return 0;
    }

    /// <summary>A record's "text" (the one reader has checked the JSON, its UTF-8 and its escapes).</summary>
    static string ReadText(JsonElement record, RecordSource source)
    {
        if (!record.TryGetProperty("text", out var value)) throw new BadRecordException(source, "text", "is missing.");
        if (value.ValueKind != JsonValueKind.String) throw new BadRecordException(source, "text", $"must be a string, found {value.ValueKind.ToString().ToLowerInvariant()}.");
        return value.GetString()!;
    }

    internal static string IdsLine(int[] ids)
    {
        var sb = new StringBuilder(ids.Length * 6 + 12).Append("{\"ids\": [");
        for (int i = 0; i < ids.Length; i++)
        {
            if (i > 0) sb.Append(", ");
            sb.Append(ids[i]);
        }
        return sb.Append("]}").ToString();
    }
}
