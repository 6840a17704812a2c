using System.Text.Json;

namespace AlignSharp.Text;

/// <summary>
/// The generation defaults a model directory carries in generation_config.json (as transformers reads it): the ids
/// that end a generation (<c>eos_token_id</c>, an int or a list — Llama-3 instruct stops on several) and sampling
/// settings (<c>do_sample</c>, <c>temperature</c>, <c>top_k</c>, <c>top_p</c>, <c>repetition_penalty</c>), each null when the
/// file does not set it.
/// <paramref name="Unapplied"/> names the settings the file makes that change transformers' generation but not this
/// sampler's (a repetition penalty, banned words, beams...), with their values, for a note.
/// </summary>
public sealed record GenerationConfig(IReadOnlyList<int>? EosTokenIds, bool? DoSample, float? Temperature, int? TopK, float? TopP,
    IReadOnlyList<string>? Unapplied = null, float? RepetitionPenalty = null)
{
    public const string FileName = "generation_config.json";

    /// <summary>generation_config.json fields that change what transformers generates, with the value that changes nothing.</summary>
    private static readonly (string Field, string? Neutral)[] NotApplied =
    [
        ("encoder_repetition_penalty", "1"), ("no_repeat_ngram_size", "0"), ("min_new_tokens", "0"),
        ("min_length", "0"), ("min_p", null), ("typical_p", "1"), ("epsilon_cutoff", "0"), ("eta_cutoff", "0"),
        ("num_beams", "1"), ("penalty_alpha", null), ("bad_words_ids", null), ("suppress_tokens", null),
        ("begin_suppress_tokens", null), ("forced_bos_token_id", null), ("forced_eos_token_id", null), ("sequence_bias", null),
        ("exponential_decay_length_penalty", null), ("guidance_scale", "1"), ("max_new_tokens", null), ("max_length", "20"),
        ("stop_strings", null),
    ];

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
            bool Set(string name, out JsonElement v) => root.TryGetProperty(name, out v) && v.ValueKind != JsonValueKind.Null;
            int? Int(JsonElement v) => v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out int i) ? i : null;
            IReadOnlyList<int>? eos = null;
            if (Set("eos_token_id", out var e))
            {
                const string ids = "an integer or a list of integers";
                eos = e.ValueKind == JsonValueKind.Array
                    ? e.EnumerateArray().Select(x => Int(x) ?? throw Bad("eos_token_id", ids)).ToList()
                    : [Int(e) ?? throw Bad("eos_token_id", ids)];
            }
            bool? doSample = !Set("do_sample", out var d) ? null
                : d.ValueKind is JsonValueKind.True or JsonValueKind.False ? d.GetBoolean() : throw Bad("do_sample", "true or false");
            float? Float(string name) => Set(name, out var v)
                ? v.ValueKind == JsonValueKind.Number ? v.GetSingle() : throw Bad(name, "a number") : null;
            int? topK = Set("top_k", out var k) ? Int(k) ?? throw Bad("top_k", "an integer") : null;
            float? temperature = Float("temperature"), topP = Float("top_p");
            if (temperature < 0) throw Bad("temperature", "≥ 0");
            if (topK < 0) throw Bad("top_k", "≥ 0");
            if (topP is { } p && !(p > 0 && p <= 1)) throw Bad("top_p", "in (0, 1]");
            float? repetition = Float("repetition_penalty");
            if (repetition is { } r && !(r > 0 && float.IsFinite(r))) throw Bad("repetition_penalty", "> 0");
            var unapplied = new List<string>();
            foreach (var (field, neutral) in NotApplied)
                if (Set(field, out var v) && v.GetRawText() is var raw && raw != neutral && raw != neutral + ".0" && raw != "[]")
                    unapplied.Add($"{field} {raw}");
            return new GenerationConfig(eos, doSample, temperature, topK, topP, unapplied, repetition);
        }
    }

    /// <summary>
    /// The sampling settings for generation when the user set none: greedy when do_sample is false, else the file's
    /// temperature, top_k and top_p where it sets them (1, all, 1 where it does not).
    /// </summary>
    public (float Temperature, int TopK, float TopP) SamplingDefaults() =>
        DoSample == false ? (0f, 0, 1f) : (Temperature ?? 1f, TopK ?? 0, TopP ?? 1f);
}
