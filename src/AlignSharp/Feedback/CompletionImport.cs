using System.Text.Json;
using AlignSharp.Training.Data;

namespace AlignSharp.Feedback;

/// <summary>
/// Reads what <c>annotate create --import</c> ranks: <c>{"prompt", "completions": [...]}</c> records. Files are JSONL (one object per line; blank lines ignored) or one
/// JSON array of objects. Errors name the file, the line and the field.
/// </summary>
public static class CompletionImport
{
    /// <summary>Reads completions to rank. With <paramref name="expectedCount"/>, every record must have exactly that many.</summary>
    public static IReadOnlyList<PromptCompletions> ReadCompletions(string path, int? expectedCount = null)
    {
        var result = new List<PromptCompletions>();
        foreach (var (record, where) in Records(path))
        {
            string prompt = RequiredString(record, "prompt", where);
            if (!record.TryGetProperty("completions", out var list))
                throw new UserInputException($"{where}: field \"completions\" is missing (a list of completion strings).");
            if (list.ValueKind != JsonValueKind.Array)
                throw new UserInputException($"{where}: field \"completions\" must be a list of strings, got {JsonKinds.Describe(list)}.");
            var completions = new List<string>();
            int i = 0;
            foreach (var c in list.EnumerateArray())
            {
                if (c.ValueKind != JsonValueKind.String)
                    throw new UserInputException($"{where}: field \"completions\"[{i}] must be a string, got {JsonKinds.Describe(c)}.");
                string text = c.GetString()!;
                // As the trainers read answers: "" is an answer (EOS at once), one of only whitespace a data error.
                if (RecordParser.IsBlankAnswer(text)) throw new UserInputException($"{where}: field \"completions\"[{i}] is only whitespace.");
                completions.Add(text);
                i++;
            }
            if (completions.Count < 2)
                throw new UserInputException($"{where}: field \"completions\" has {completions.Count} item(s); ranking needs at least 2.");
            if (completions.Count > AnnotationStore.MaxCompletionsPerPrompt)
                throw new UserInputException($"{where}: field \"completions\" has {completions.Count} items; at most {AnnotationStore.MaxCompletionsPerPrompt} can be ranked at once.");
            if (expectedCount is int k && completions.Count != k)
                throw new UserInputException($"{where}: field \"completions\" has {completions.Count} items but --k is {k}.");
            result.Add(new PromptCompletions(prompt, completions));
        }
        if (result.Count == 0) throw new UserInputException($"{path}: no records.");
        return result;
    }

    // The data layer's one reader: JSONL or a JSON array, UTF-8 checked, errors naming file and line.
    private static IEnumerable<(JsonElement Record, string Where)> Records(string path)
        => JsonRecords.ReadAll(path).Select(r => (r.Value, r.Source.ToString()));

    private static string RequiredString(JsonElement record, string field, string where)
    {
        if (!record.TryGetProperty(field, out var v)) throw new UserInputException($"{where}: field \"{field}\" is missing.");
        if (v.ValueKind != JsonValueKind.String) throw new UserInputException($"{where}: field \"{field}\" must be a string, got {JsonKinds.Describe(v)}.");
        string s = v.GetString()!;
        if (s.Trim().Length == 0) throw new UserInputException($"{where}: field \"{field}\" is empty.");
        return s;
    }
}
