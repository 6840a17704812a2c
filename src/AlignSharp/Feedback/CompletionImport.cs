using System.Text.Json;

namespace AlignSharp.Feedback;

/// <summary>
/// Reads the inputs of <c>annotate create</c>: completions to rank, <c>{"prompt", "completions": [...]}</c>, and
/// prompts to sample from, <c>{"prompt"}</c>. Files are JSONL (one object per line; blank lines ignored) or one
/// JSON array of objects. Errors name the file, the line (or array element) and the field.
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
                throw new UserInputException($"{where}: field \"completions\" must be a list of strings, got {Kind(list)}.");
            var completions = new List<string>();
            int i = 0;
            foreach (var c in list.EnumerateArray())
            {
                if (c.ValueKind != JsonValueKind.String)
                    throw new UserInputException($"{where}: field \"completions\"[{i}] must be a string, got {Kind(c)}.");
                string text = c.GetString()!;
                if (text.Trim().Length == 0) throw new UserInputException($"{where}: field \"completions\"[{i}] is empty.");
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

    private static IEnumerable<(JsonElement Record, string Where)> Records(string path)
    {
        if (!File.Exists(path)) throw new UserInputException($"{path} not found.");
        string text = File.ReadAllText(path);
        if (text.TrimStart().StartsWith('['))
        {
            JsonDocument doc;
            try { doc = JsonDocument.Parse(text); }
            catch (JsonException e) { throw new UserInputException($"{path}: not valid JSON ({e.Message}).", e); }
            using (doc)
            {
                int index = 0;
                foreach (var e in doc.RootElement.EnumerateArray())
                {
                    string where = $"{path}: element {index}";
                    if (e.ValueKind != JsonValueKind.Object) throw new UserInputException($"{where}: expected an object, got {Kind(e)}.");
                    yield return (e.Clone(), where);
                    index++;
                }
            }
            yield break;
        }

        int lineNumber = 0;
        foreach (var line in text.Split('\n'))
        {
            lineNumber++;
            if (line.Trim().Length == 0) continue;
            string where = $"{path}:{lineNumber}";
            JsonElement e;
            try
            {
                using var doc = JsonDocument.Parse(line);
                e = doc.RootElement.Clone();
            }
            catch (JsonException ex) { throw new UserInputException($"{where}: not valid JSON ({ex.Message}).", ex); }
            if (e.ValueKind != JsonValueKind.Object) throw new UserInputException($"{where}: expected a JSON object, got {Kind(e)}.");
            yield return (e, where);
        }
    }

    private static string RequiredString(JsonElement record, string field, string where)
    {
        if (!record.TryGetProperty(field, out var v)) throw new UserInputException($"{where}: field \"{field}\" is missing.");
        if (v.ValueKind != JsonValueKind.String) throw new UserInputException($"{where}: field \"{field}\" must be a string, got {Kind(v)}.");
        string s = v.GetString()!;
        if (s.Trim().Length == 0) throw new UserInputException($"{where}: field \"{field}\" is empty.");
        return s;
    }

    private static string Kind(JsonElement e) => e.ValueKind switch
    {
        JsonValueKind.Array => "a list",
        JsonValueKind.Object => "an object",
        JsonValueKind.String => "a string",
        JsonValueKind.Number => "a number",
        JsonValueKind.True or JsonValueKind.False => "a boolean",
        _ => "null",
    };
}
