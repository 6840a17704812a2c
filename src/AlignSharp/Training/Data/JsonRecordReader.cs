using System.Text;
using System.Text.Json;

namespace AlignSharp.Training.Data;

/// <summary>A JSON object read from a data file with the line it starts on, or why that record could not be read.</summary>
internal readonly record struct RawRecord(RecordSource Source, JsonElement Element, BadRecordException? Error);

/// <summary>
/// Reads the records of a data file. The layout is detected from the first non-blank character: '[' is a JSON
/// array of objects (read whole; each record's line is the line its '{' is on), anything else is JSONL (one
/// object per line, blank lines ignored, streamed). UTF-8, with or without a byte-order mark.
/// A malformed JSONL line is one bad record; a malformed JSON array stops the file (it cannot be resynchronised).
/// </summary>
internal static class JsonRecordReader
{
    public static IEnumerable<RawRecord> Read(string path)
    {
        if (!File.Exists(path))
            throw new UserInputException(Directory.Exists(path)
                ? $"{path}: is a directory; give a JSONL or JSON data file."
                : $"{path}: file not found.");
        return StartsWithArray(path) ? ReadArray(path) : ReadLines(path);
    }

    private static bool StartsWithArray(string path)
    {
        using var stream = File.OpenRead(path);
        Span<byte> bom = stackalloc byte[3];
        int n = stream.ReadAtLeast(bom, 3, throwOnEndOfStream: false);
        bool hasBom = n == 3 && bom[0] == 0xEF && bom[1] == 0xBB && bom[2] == 0xBF;
        stream.Position = hasBom ? 3 : 0;
        int b;
        while ((b = stream.ReadByte()) >= 0)
            if (b is not (' ' or '\t' or '\r' or '\n')) return b == '[';
        return false;
    }

    private static IEnumerable<RawRecord> ReadLines(string path)
    {
        using var reader = new StreamReader(path, new UTF8Encoding(false), detectEncodingFromByteOrderMarks: true);
        bool jsonExtension = path.EndsWith(".json", StringComparison.OrdinalIgnoreCase);
        int lineNo = 0;
        string? line;
        while ((line = reader.ReadLine()) is not null)
        {
            lineNo++;
            if (string.IsNullOrWhiteSpace(line)) continue;
            yield return ParseLine(line, new RecordSource(path, lineNo), jsonExtension && lineNo == 1);
        }
    }

    private static RawRecord ParseLine(string line, RecordSource source, bool hintArray)
    {
        try
        {
            using var doc = JsonDocument.Parse(line);
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
                return Bad(source, $"expected a JSON object per line, found {JsonKinds.Describe(doc.RootElement)}.");
            return new RawRecord(source, doc.RootElement.Clone(), null);
        }
        catch (JsonException e)
        {
            string hint = hintArray ? " (a .json file holds either a JSON array of records or one record per line (JSONL); a record spanning several lines must be inside an array)" : "";
            return Bad(source, $"malformed JSON at byte {(e.BytePositionInLine ?? 0) + 1} of the line: {JsonKinds.Reason(e)}{hint}.");
        }
    }

    private static IEnumerable<RawRecord> ReadArray(string path)
    {
        byte[] bytes = File.ReadAllBytes(path);
        int offset = bytes.Length >= 3 && bytes[0] == 0xEF && bytes[1] == 0xBB && bytes[2] == 0xBF ? 3 : 0;
        return ParseArray(path, bytes.AsMemory(offset));
    }

    private static List<RawRecord> ParseArray(string path, ReadOnlyMemory<byte> json)
    {
        var records = new List<RawRecord>();
        var reader = new Utf8JsonReader(json.Span, new JsonReaderOptions { CommentHandling = JsonCommentHandling.Skip, AllowTrailingCommas = false });
        var span = json.Span;
        int line = 1;
        long counted = 0; // bytes scanned for newlines so far
        try
        {
            reader.Read(); // '['
            int element = 0;
            while (true)
            {
                if (!reader.Read()) throw new UserInputException($"{path}: the JSON array is not closed with ']'.");
                if (reader.TokenType == JsonTokenType.EndArray) break;
                var source = new RecordSource(path, LineAt(span, ref counted, ref line, reader.TokenStartIndex));
                if (reader.TokenType == JsonTokenType.StartObject)
                {
                    records.Add(new RawRecord(source, JsonElement.ParseValue(ref reader), null));
                }
                else
                {
                    var value = JsonElement.ParseValue(ref reader);
                    records.Add(Bad(source, $"element {element} of the JSON array is {JsonKinds.Describe(value)}; expected a JSON object (a record)."));
                }
                element++;
            }
            if (reader.Read()) throw new UserInputException($"{path}:{LineAt(span, ref counted, ref line, reader.TokenStartIndex)}: unexpected content after the closing ']' of the JSON array.");
        }
        catch (JsonException e)
        {
            throw new UserInputException(
                $"{path}:{(e.LineNumber ?? 0) + 1}: malformed JSON at byte {(e.BytePositionInLine ?? 0) + 1} of the line: {JsonKinds.Reason(e)}. " +
                "A broken JSON array cannot be read past the error, even when skipping bad records; fix it or convert the file to JSONL.", e);
        }
        return records;
    }

    /// <summary>The 1-based line of byte <paramref name="index"/>, counting newlines from where the last call stopped.</summary>
    private static int LineAt(ReadOnlySpan<byte> span, ref long counted, ref int line, long index)
    {
        for (; counted < index; counted++) if (span[(int)counted] == (byte)'\n') line++;
        return line;
    }

    private static RawRecord Bad(RecordSource source, string problem) => new(source, default, new BadRecordException(source, null, problem));
}

/// <summary>Words for JSON values in messages.</summary>
internal static class JsonKinds
{
    public static string Describe(JsonElement e) => e.ValueKind switch
    {
        JsonValueKind.String => "a string",
        JsonValueKind.Number => "a number",
        JsonValueKind.Array => "a list",
        JsonValueKind.Object => "an object",
        JsonValueKind.True or JsonValueKind.False => "a boolean",
        JsonValueKind.Null => "null",
        _ => "nothing",
    };

    /// <summary>System.Text.Json's message without its "LineNumber: 0 | BytePositionInLine: 5." suffix (we say where ourselves).</summary>
    public static string Reason(JsonException e)
    {
        string m = e.Message;
        int cut = m.IndexOf(" LineNumber:", StringComparison.Ordinal);
        if (cut >= 0) m = m[..cut];
        m = m.Replace(" Change the reader options.", "", StringComparison.Ordinal);
        return m.TrimEnd('.', ' ');
    }
}
