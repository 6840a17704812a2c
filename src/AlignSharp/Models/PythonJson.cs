using System.Text.Json;
using System.Text.Json.Nodes;

namespace AlignSharp.Models;

/// <summary>
/// JSON as Python's json module writes it: non-finite floats as the bare literals Infinity, -Infinity and NaN, which
/// JSON has not. A transformers config can carry them (Mamba-2's time_step_limit (0.0, inf)), and so can the answer of
/// a reward server written in Python (a reward function's NaN).
/// </summary>
public static class PythonJson
{
    private static readonly string[] Literals = ["-Infinity", "Infinity", "NaN"];

    /// <summary><paramref name="json"/> with each bare literal outside strings put in quotes ("NaN"), everything else left
    /// as it is; <see cref="NonFinite"/> reads the quoted ones back.</summary>
    public static string QuoteLiterals(string json)
    {
        if (!json.Contains("Infinity") && !json.Contains("NaN")) return json;
        var sb = new System.Text.StringBuilder(json.Length + 16);
        bool inString = false;
        for (int i = 0; i < json.Length; i++)
        {
            char ch = json[i];
            if (inString)
            {
                sb.Append(ch);
                if (ch == '\\' && i + 1 < json.Length) sb.Append(json[++i]);
                else if (ch == '"') inString = false;
                continue;
            }
            if (ch == '"') { inString = true; sb.Append(ch); continue; }
            string? literal = Array.Find(Literals, l => string.CompareOrdinal(json, i, l, 0, l.Length) == 0);
            if (literal == null) { sb.Append(ch); continue; }
            sb.Append('"').Append(literal).Append('"');
            i += literal.Length - 1;
        }
        return sb.ToString();
    }

    /// <summary>The value of a quoted literal ("Infinity", "-Infinity", "NaN"); null for any other string.</summary>
    public static double? NonFinite(string? s) => s switch
    {
        "Infinity" => double.PositiveInfinity,
        "-Infinity" => double.NegativeInfinity,
        "NaN" => double.NaN,
        _ => null,
    };

    /// <summary>
    /// Parsed JSON in which a key given twice keeps its last value, as Python's json.loads reads it (JsonNode.Parse
    /// throws on the second); a file transformers loads must load here too.
    /// </summary>
    public static JsonNode? Parse(string json)
    {
        using var doc = JsonDocument.Parse(json);
        return ToNode(doc.RootElement);
    }

    /// <summary>A JSON element as a node, a repeated key keeping its last value.</summary>
    public static JsonNode? ToNode(JsonElement element)
    {
        switch (element.ValueKind)
        {
            case JsonValueKind.Object:
                var o = new JsonObject();
                foreach (var p in element.EnumerateObject()) o[p.Name] = ToNode(p.Value);
                return o;
            case JsonValueKind.Array:
                return new JsonArray(element.EnumerateArray().Select(ToNode).ToArray());
            case JsonValueKind.Null:
                return null;
            default:
                return JsonValue.Create(element.Clone());
        }
    }
}
