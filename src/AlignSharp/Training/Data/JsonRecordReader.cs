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
        Stream stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
        if (!stream.CanSeek)
        {
            // A pipe (/dev/stdin, a shell's <(...)) can be read only once: whole, into memory.
            var memory = new MemoryStream();
            using (stream) stream.CopyTo(memory);
            memory.Position = 0;
            stream = memory;
        }
        bool array = StartsWithArray(stream);
        stream.Position = 0;
        if (!array) return ReadLines(path, stream);
        using (stream)
        {
            var bytes = new MemoryStream();
            stream.CopyTo(bytes);
            return ReadArray(path, bytes.ToArray());
        }
    }

    private static bool StartsWithArray(Stream stream)
    {
        Span<byte> bom = stackalloc byte[3];
        int n = stream.ReadAtLeast(bom, 3, throwOnEndOfStream: false);
        bool hasBom = n == 3 && bom[0] == 0xEF && bom[1] == 0xBB && bom[2] == 0xBF;
        stream.Position = hasBom ? 3 : 0;
        int b;
        while ((b = stream.ReadByte()) >= 0)
            if (b is not (' ' or '\t' or '\r' or '\n')) return b == '[';
        return false;
    }

    private static IEnumerable<RawRecord> ReadLines(string path, Stream stream)
    {
        // Raw bytes per line (not a StreamReader, which would turn invalid UTF-8 into U+FFFD without a word).
        using var owned = stream;
        bool jsonExtension = path.EndsWith(".json", StringComparison.OrdinalIgnoreCase);
        var line = new List<byte>(256);
        int lineNo = 0;
        bool first = true;
        while (true)
        {
            int b = stream.ReadByte();
            if (b >= 0 && b != '\n') { line.Add((byte)b); continue; }
            if (b < 0 && line.Count == 0 && lineNo > 0) yield break;
            lineNo++;
            var bytes = CollectionsMarshalSpan(line);
            if (first && bytes.Length >= 3 && bytes[0] == 0xEF && bytes[1] == 0xBB && bytes[2] == 0xBF) bytes = bytes[3..];
            first = false;
            if (bytes.Length > 0 && bytes[^1] == '\r') bytes = bytes[..^1];
            if (!IsBlank(bytes)) yield return ParseLine(bytes.ToArray(), new RecordSource(path, lineNo), jsonExtension && lineNo == 1);
            line.Clear();
            if (b < 0) yield break;
        }
    }

    private static Span<byte> CollectionsMarshalSpan(List<byte> list) => System.Runtime.InteropServices.CollectionsMarshal.AsSpan(list);

    private static bool IsBlank(ReadOnlySpan<byte> bytes)
    {
        foreach (var b in bytes) if (b is not ((byte)' ' or (byte)'\t' or (byte)'\r')) return false;
        return true;
    }

    private static RawRecord ParseLine(byte[] line, RecordSource source, bool hintArray)
    {
        if (InvalidUtf8At(line) is int bad)
            return Bad(source, FieldAt(line, bad), $"invalid UTF-8 at byte {bad + 1} of the line (0x{line[bad]:X2}); save the file as UTF-8.");
        try
        {
            using var doc = JsonDocument.Parse(line);
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
                return Bad(source, $"expected a JSON object per line, found {JsonKinds.Describe(doc.RootElement)}.");
            return Checked(new RawRecord(source, doc.RootElement.Clone(), null));
        }
        catch (JsonException e)
        {
            string hint = hintArray ? " (a .json file holds either a JSON array of records or one record per line (JSONL); a record spanning several lines must be inside an array)" : "";
            return Bad(source, $"malformed JSON at byte {(e.BytePositionInLine ?? 0) + 1} of the line: {JsonKinds.Reason(e)}{hint}.");
        }
    }

    /// <summary>The index of the first byte that is not part of valid UTF-8, or null.</summary>
    private static int? InvalidUtf8At(ReadOnlySpan<byte> bytes)
    {
        if (System.Text.Unicode.Utf8.IsValid(bytes)) return null;
        int at = 0;
        while (at < bytes.Length)
        {
            if (System.Text.Rune.DecodeFromUtf8(bytes[at..], out _, out int used) != System.Buffers.OperationStatus.Done) return at;
            at += used;
        }
        return null;
    }

    /// <summary>The name of the property whose value holds byte <paramref name="index"/> of a JSON line, or null.</summary>
    private static string? FieldAt(byte[] line, int index)
    {
        string? field = null;
        try
        {
            var reader = new Utf8JsonReader(line.AsSpan(0, index), isFinalBlock: false, default);
            while (reader.Read())
                if (reader.TokenType == JsonTokenType.PropertyName && reader.CurrentDepth == 1) field = reader.GetString();
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException) { }
        return field;
    }

    /// <summary>
    /// Every string (values and property names) must be valid text: System.Text.Json accepts a lone surrogate escape
    /// ("\ud800") and invalid UTF-8 inside a string, and only fails when the string is read, deep in a trainer. Checked
    /// here once, so the error names the file, line and field.
    /// </summary>
    private static RawRecord Checked(RawRecord record)
    {
        if (record.Error != null) return record;
        string? problem = TextProblem(record.Element, "", out string? field);
        return problem == null ? record : Bad(record.Source, field, problem);
    }

    internal static string? TextProblem(JsonElement e, string path, out string? field)
    {
        field = null;
        switch (e.ValueKind)
        {
            case JsonValueKind.String:
                try { e.GetString(); }
                catch (InvalidOperationException)
                {
                    field = path == "" ? null : path;
                    return "not valid text: a lone UTF-16 surrogate escape (such as \\ud800 without its pair) or invalid UTF-8.";
                }
                return null;
            case JsonValueKind.Object:
                foreach (var p in e.EnumerateObject())
                {
                    string name;
                    try { name = p.Name; }
                    catch (InvalidOperationException)
                    {
                        field = path == "" ? null : path;
                        return "a property name is not valid text (a lone UTF-16 surrogate escape or invalid UTF-8).";
                    }
                    if (TextProblem(p.Value, path == "" ? name : $"{path}.{name}", out field) is { } problem) return problem;
                }
                return null;
            case JsonValueKind.Array:
                int i = 0;
                foreach (var item in e.EnumerateArray())
                {
                    if (TextProblem(item, $"{path}[{i}]", out field) is { } problem) return problem;
                    i++;
                }
                return null;
            default:
                return null;
        }
    }

    private static IEnumerable<RawRecord> ReadArray(string path, byte[] bytes)
    {
        int offset = bytes.Length >= 3 && bytes[0] == 0xEF && bytes[1] == 0xBB && bytes[2] == 0xBF ? 3 : 0;
        if (InvalidUtf8At(bytes.AsSpan(offset)) is int bad)
        {
            int line = 1 + bytes.AsSpan(0, offset + bad).Count((byte)'\n');
            throw new UserInputException($"{path}:{line}: invalid UTF-8 (byte 0x{bytes[offset + bad]:X2}); save the file as UTF-8.");
        }
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
                    records.Add(Checked(new RawRecord(source, JsonElement.ParseValue(ref reader), null)));
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

    private static RawRecord Bad(RecordSource source, string problem) => Bad(source, null, problem);

    private static RawRecord Bad(RecordSource source, string? field, string problem) => new(source, default, new BadRecordException(source, field, problem));
}

/// <summary>The JSON objects of a data file (JSONL or a JSON array) for commands that read every record or none.</summary>
public static class JsonRecords
{
    /// <summary>
    /// Every record with its file and line. The first bad record (malformed JSON, not an object, invalid UTF-8, a lone
    /// surrogate escape) throws a <see cref="BadRecordException"/> naming file, line and field.
    /// </summary>
    public static List<(RecordSource Source, JsonElement Value)> ReadAll(string path) => Each(path).ToList();

    /// <summary><see cref="ReadAll"/> as a stream (JSONL is read a line at a time): for commands that handle each record
    /// as it comes.</summary>
    public static IEnumerable<(RecordSource Source, JsonElement Value)> Each(string path)
    {
        foreach (var raw in JsonRecordReader.Read(path))
        {
            if (raw.Error != null) throw raw.Error;
            yield return (raw.Source, raw.Element);
        }
    }

    /// <summary>
    /// Why some string in <paramref name="value"/> is not valid text (a lone surrogate escape or invalid UTF-8, which
    /// System.Text.Json only rejects when the string is read), with the field's path; null when every string is fine.
    /// </summary>
    public static string? InvalidText(JsonElement value, out string? field) => JsonRecordReader.TextProblem(value, "", out field);
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
