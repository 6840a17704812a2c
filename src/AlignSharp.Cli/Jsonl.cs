using System.Text;
using System.Text.Json;

namespace AlignSharp.Cli;

/// <summary>
/// JSONL in, JSONL out for the commands that map one input line to one output line. Every input error names
/// the file, the line and the field; an output file is written under a temporary name and renamed at the end,
/// so a failure never leaves half a file.
/// </summary>
public static class Jsonl
{
    public sealed record Line(string File, int Number, JsonElement Value)
    {
        public string Where => $"{File}:{Number}";

        public UserInputException Error(string field, string message) => new($"{Where}: field \"{field}\": {message}");

        public bool Has(string field) => Value.TryGetProperty(field, out var v) && v.ValueKind != JsonValueKind.Null;

        public string String(string field)
        {
            if (!Value.TryGetProperty(field, out var v)) throw Error(field, "is missing");
            if (v.ValueKind != JsonValueKind.String) throw Error(field, $"must be a string, got {Kind(v)}");
            return v.GetString()!;
        }

        public int[] Ints(string field)
        {
            if (!Value.TryGetProperty(field, out var v)) throw Error(field, "is missing");
            if (v.ValueKind != JsonValueKind.Array) throw Error(field, $"must be an array of integers, got {Kind(v)}");
            var result = new int[v.GetArrayLength()];
            int i = 0;
            foreach (var e in v.EnumerateArray())
            {
                if (e.ValueKind != JsonValueKind.Number || !e.TryGetInt32(out result[i]))
                    throw Error(field, $"element {i} must be an integer, got {e.GetRawText()}");
                i++;
            }
            return result;
        }
    }

    private static string Kind(JsonElement e) => e.ValueKind.ToString().ToLowerInvariant();

    /// <summary>Every record as a JSON object (the library's one reader: JSONL or a JSON array, UTF-8 checked).</summary>
    public static List<Line> ReadObjects(string path)
    {
        if (!File.Exists(path)) throw new UserInputException($"{path}: no such input file");
        return AlignSharp.Training.Data.JsonRecords.ReadAll(path).Select(r => new Line(path, r.Source.Line, r.Value)).ToList();
    }

    /// <summary>Writes lines to <paramref name="outputPath"/> atomically, or to stdout when it is null.</summary>
    public static void Write(string? outputPath, IEnumerable<string> lines)
    {
        if (outputPath == null)
        {
            using var stdout = new StreamWriter(Console.OpenStandardOutput(), new UTF8Encoding(false));
            foreach (var l in lines) stdout.WriteLine(l);
            return;
        }
        AlignSharp.Models.Checkpoints.AtomicFile.Write(outputPath, s =>
        {
            using var w = new StreamWriter(s, new UTF8Encoding(false), leaveOpen: true);
            foreach (var l in lines) w.WriteLine(l);
        });
    }

    public static string Serialize(object value) => JsonSerializer.Serialize(value, Options);

    // Non-finite numbers (a log-probability of -∞, a NaN score) as strings, as metrics.jsonl writes them.
    private static readonly JsonSerializerOptions Options = new()
    {
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
        NumberHandling = System.Text.Json.Serialization.JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };
}
