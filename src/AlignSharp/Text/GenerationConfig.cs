using System.Text.Json;

namespace AlignSharp.Text;

/// <summary>
/// The generation defaults a model directory carries in generation_config.json (as transformers reads it): the ids
/// that end a generation (<c>eos_token_id</c>, an int or a list — Llama-3 instruct stops on several) and sampling
/// settings (<c>do_sample</c>, <c>temperature</c>, <c>top_k</c>, <c>top_p</c>), each null when the file does not set it.
/// </summary>
public sealed record GenerationConfig(IReadOnlyList<int>? EosTokenIds, bool? DoSample, float? Temperature, int? TopK, float? TopP)
{
    public const string FileName = "generation_config.json";

    /// <summary>The directory's generation_config.json, or null when there is none.</summary>
    public static GenerationConfig? Load(string directory)
    {
        var file = Path.Combine(directory, FileName);
        if (!File.Exists(file)) return null;
        JsonDocument doc;
        try { doc = JsonDocument.Parse(File.ReadAllBytes(file)); }
        catch (JsonException e) { throw new UserInputException($"{file}: not valid JSON (line {e.LineNumber + 1}): {e.Message}", e); }
        using (doc)
        {
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object) throw new UserInputException($"{file}: the top level is not a JSON object.");
            UserInputException Bad(string field, string what) => new($"{file}: field \"{field}\" must be {what}.");
            IReadOnlyList<int>? eos = null;
            if (root.TryGetProperty("eos_token_id", out var e) && e.ValueKind != JsonValueKind.Null)
            {
                eos = e.ValueKind switch
                {
                    JsonValueKind.Number when e.TryGetInt32(out int id) => [id],
                    JsonValueKind.Array => e.EnumerateArray().Select(x => x.TryGetInt32(out int id) ? id : throw Bad("eos_token_id", "an integer or a list of integers")).ToList(),
                    _ => throw Bad("eos_token_id", "an integer or a list of integers"),
                };
            }
            bool? doSample = root.TryGetProperty("do_sample", out var d) && d.ValueKind is JsonValueKind.True or JsonValueKind.False ? d.GetBoolean() : null;
            float? Float(string name) => root.TryGetProperty(name, out var v) && v.ValueKind != JsonValueKind.Null
                ? v.ValueKind == JsonValueKind.Number ? v.GetSingle() : throw Bad(name, "a number") : null;
            int? topK = root.TryGetProperty("top_k", out var k) && k.ValueKind != JsonValueKind.Null
                ? k.TryGetInt32(out int kv) ? kv : throw Bad("top_k", "an integer") : null;
            return new GenerationConfig(eos, doSample, Float("temperature"), topK, Float("top_p"));
        }
    }

    /// <summary>
    /// The sampling settings for generation when the user set none: greedy when do_sample is false, else the file's
    /// temperature, top_k and top_p where it sets them (1, all, 1 where it does not).
    /// </summary>
    public (float Temperature, int TopK, float TopP) SamplingDefaults() =>
        DoSample == false ? (0f, 0, 1f) : (Temperature ?? 1f, TopK ?? 0, TopP ?? 1f);
}
