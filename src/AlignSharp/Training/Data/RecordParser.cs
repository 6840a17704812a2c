using System.Text.Json;

namespace AlignSharp.Training.Data;

/// <summary>
/// Turns one JSON object into a typed record, checking every field. Every problem is a
/// <see cref="BadRecordException"/> naming the field. Fields not listed for a format are ignored (ids, metadata).
/// </summary>
internal static class RecordParser
{
    public const string SftShapes = "{\"prompt\",\"completion\"}, {\"text\"} or {\"messages\"}";
    public const string PreferenceShapes = "{\"prompt\",\"chosen\",\"rejected\"}, {\"chosen\",\"rejected\"} (HH transcripts) or {\"prompt\",\"completions\",\"ranking\"}";
    public const string PromptShapes = "{\"prompt\"}";
    public const string UnpairedShapes = "{\"prompt\",\"completion\",\"label\"} or {\"messages\",\"label\"}";

    /// <summary>
    /// The format, from the fields present: "completions" or "ranking" → ranking; "chosen" or "rejected" → a pair
    /// (with "prompt") or HH transcripts (without); "messages" → conversation; "text" → text; "completion" →
    /// prompt/completion; "prompt" alone → prompt-only.
    /// </summary>
    public static RecordFormat DetectFormat(JsonElement obj, RecordSource source)
    {
        bool Has(string name) => obj.TryGetProperty(name, out _);
        if (Has("completions") || Has("ranking")) return RecordFormat.Ranking;
        if (Has("chosen") || Has("rejected")) return Has("prompt") ? RecordFormat.PreferencePair : RecordFormat.ImplicitPromptPair;
        if (Has("label") && (Has("completion") || Has("messages"))) return RecordFormat.Unpaired;
        if (Has("messages")) return RecordFormat.Messages;
        if (Has("text")) return RecordFormat.Text;
        if (Has("completion")) return RecordFormat.PromptCompletion;
        if (Has("prompt")) return RecordFormat.PromptOnly;
        var names = obj.EnumerateObject().Select(p => $"\"{p.Name}\"").ToList();
        throw new BadRecordException(source, null,
            $"no known fields (found {(names.Count == 0 ? "none" : string.Join(", ", names))}); a record is one of {SftShapes}, {PreferenceShapes} or {PromptShapes}.");
    }

    public static DatasetKind KindOf(RecordFormat format) => format switch
    {
        RecordFormat.PromptCompletion or RecordFormat.Text or RecordFormat.Messages => DatasetKind.Sft,
        RecordFormat.PreferencePair or RecordFormat.ImplicitPromptPair or RecordFormat.Ranking => DatasetKind.Preference,
        RecordFormat.Unpaired => DatasetKind.Unpaired,
        _ => DatasetKind.Prompt,
    };

    public static string Describe(DatasetKind kind) => kind switch
    {
        DatasetKind.Sft => $"an SFT record ({SftShapes})",
        DatasetKind.Preference => $"a preference record ({PreferenceShapes})",
        DatasetKind.Unpaired => $"an unpaired feedback record ({UnpairedShapes}, as `alignsharp kto` trains on)",
        _ => $"a prompt record ({PromptShapes})",
    };

    public static SftExample ParseSft(JsonElement obj, RecordFormat format, RecordSource source)
        => ParseSftFields(obj, format, source) with { TemplateKwargs = TemplateKwargs(obj, source) };

    private static SftExample ParseSftFields(JsonElement obj, RecordFormat format, RecordSource source)
    {
        var r = new FieldReader(obj, source);
        switch (format)
        {
            case RecordFormat.Text:
                return new SftExample(null, ChatContent.FromText(r.NonEmptyString("text")), source) { CompletionField = "text" };
            case RecordFormat.PromptCompletion:
                var prompt = r.Content("prompt", ContentUse.Prompt);
                var completion = r.Content("completion", ContentUse.Completion);
                if (prompt.Text == "" && completion.Text == "")
                    throw new BadRecordException(source, "completion", "is empty and so is the prompt: there is nothing to condition on or learn but an EOS.");
                return new SftExample(prompt, completion, source);
            case RecordFormat.Messages:
                var messages = r.Messages(r.Required("messages"), "messages");
                int last = messages.Count - 1;
                if (messages[last].Role != ChatRole.Assistant)
                    throw new BadRecordException(source, "messages",
                        $"the last message is a {messages[last].RoleName} turn; a conversation for SFT must end with the assistant turn it trains on.");
                // An empty final turn is valid (the answer is the template's end of turn and EOS); one of only whitespace is not.
                if (IsBlankAnswer(messages[last].Content))
                    throw new BadRecordException(source, $"messages[{last}].content", "the final assistant turn (the completion) is empty (only whitespace).");
                return new SftExample(ChatContent.FromMessages(messages.Take(last).ToArray()), ChatContent.FromMessages(messages[last]), source)
                {
                    PromptField = "messages",
                    CompletionField = "messages",
                };
            default:
                throw new InvalidOperationException($"{format} is not an SFT format.");
        }
    }

    /// <summary>
    /// {"prompt","completion","label"} or {"messages","label"}: the prompt and completion as <see cref="ParseSft"/>
    /// reads them, "label" a JSON boolean (true: desirable).
    /// </summary>
    /// <summary>An answer of only whitespace ("\n\n"): a bad record wherever an answer is read (almost always a data
    /// error), unlike the empty answer "" (the model answered with EOS at once), which is valid.</summary>
    public static bool IsBlankAnswer(string answer) => answer.Length > 0 && string.IsNullOrWhiteSpace(answer);

    public static UnpairedExample ParseUnpaired(JsonElement obj, RecordSource source)
    {
        var label = obj.GetProperty("label");
        if (label.ValueKind is not (JsonValueKind.True or JsonValueKind.False))
            throw new BadRecordException(source, "label", $"expected true (desirable) or false (undesirable), found {JsonKinds.Describe(label)}.");
        var format = obj.TryGetProperty("completion", out _) ? RecordFormat.PromptCompletion : RecordFormat.Messages;
        return new UnpairedExample(ParseSft(obj, format, source), label.ValueKind == JsonValueKind.True);
    }

    public static PreferencePair ParsePair(JsonElement obj, RecordFormat format, RecordSource source)
        => ParsePairFields(obj, format, source) with { TemplateKwargs = TemplateKwargs(obj, source) };

    private static PreferencePair ParsePairFields(JsonElement obj, RecordFormat format, RecordSource source)
    {
        var r = new FieldReader(obj, source);
        float margin = r.OptionalNumber("margin") ?? 0f;
        if (format == RecordFormat.PreferencePair)
        {
            var prompt = r.Content("prompt", ContentUse.Prompt);
            var chosen = r.Content("chosen", ContentUse.Completion);
            var rejected = r.Content("rejected", ContentUse.Completion);
            return new PreferencePair(prompt, chosen, rejected, margin, 1f, source);
        }

        var c = r.Required("chosen");
        var rj = r.Required("rejected");
        if (c.ValueKind == JsonValueKind.String && rj.ValueKind == JsonValueKind.String)
        {
            if (!ImplicitPrompt.TrySplit(c.GetString()!, rj.GetString()!, out var prompt, out var ca, out var ra, out var problem))
                throw new BadRecordException(source, "chosen", problem + ".");
            r.CheckAnswerText(ca, "chosen", "the answer after the shared prompt");
            r.CheckAnswerText(ra, "rejected", "the answer after the shared prompt");
            return new PreferencePair(ChatContent.FromText(prompt), ChatContent.FromText(ca), ChatContent.FromText(ra), margin, 1f, source) { PromptField = "chosen" };
        }
        if (c.ValueKind == JsonValueKind.Array && rj.ValueKind == JsonValueKind.Array)
        {
            var cm = r.Messages(c, "chosen");
            var rm = r.Messages(rj, "rejected");
            int k = ImplicitPrompt.SharedPromptLength(cm, rm);
            if (k == 0)
                throw new BadRecordException(source, "chosen",
                    "the \"chosen\" and \"rejected\" conversations share no leading messages followed by an assistant turn in both, so no common prompt can be found; give an explicit \"prompt\" field.");
            var ca = cm.Skip(k).ToArray();
            var ra = rm.Skip(k).ToArray();
            r.CheckAnswerMessages(ca, "chosen", k);
            r.CheckAnswerMessages(ra, "rejected", k);
            return new PreferencePair(ChatContent.FromMessages(cm.Take(k).ToArray()), ChatContent.FromMessages(ca), ChatContent.FromMessages(ra), margin, 1f, source) { PromptField = "chosen" };
        }
        if (c.ValueKind is not (JsonValueKind.String or JsonValueKind.Array))
            throw new BadRecordException(source, "chosen", $"expected a string or a list of messages, found {JsonKinds.Describe(c)}.");
        if (rj.ValueKind is not (JsonValueKind.String or JsonValueKind.Array))
            throw new BadRecordException(source, "rejected", $"expected a string or a list of messages, found {JsonKinds.Describe(rj)}.");
        throw new BadRecordException(source, "rejected",
            $"is {JsonKinds.Describe(rj)} but \"chosen\" is {JsonKinds.Describe(c)}; without a \"prompt\" field both must be whole transcripts of the same form.");
    }

    public static RankingRecord ParseRanking(JsonElement obj, RecordSource source)
        => ParseRankingFields(obj, source) with { TemplateKwargs = TemplateKwargs(obj, source) };

    private static RankingRecord ParseRankingFields(JsonElement obj, RecordSource source)
    {
        var r = new FieldReader(obj, source);
        var prompt = r.Content("prompt", ContentUse.Prompt);
        var list = r.Required("completions");
        if (list.ValueKind != JsonValueKind.Array)
            throw new BadRecordException(source, "completions", $"expected a list of completions, found {JsonKinds.Describe(list)}.");
        var completions = new List<ChatContent>();
        int index = 0;
        foreach (var item in list.EnumerateArray()) completions.Add(r.Content(item, $"completions[{index++}]", ContentUse.Completion));
        if (completions.Count < 2)
            throw new BadRecordException(source, "completions", $"has {completions.Count} completion{(completions.Count == 1 ? "" : "s")}; a ranking needs at least 2.");
        var ranking = ParseRankingField(r.Required("ranking"), completions.Count, source);
        string? annotator = null;
        if (r.Optional("annotator") is { } a)
        {
            annotator = a.ValueKind switch
            {
                JsonValueKind.String => a.GetString(),
                JsonValueKind.Number => a.GetRawText(),
                _ => throw new BadRecordException(source, "annotator", $"expected a string (or a number), found {JsonKinds.Describe(a)}."),
            };
        }
        return new RankingRecord(prompt, completions, ranking, source) { Annotator = annotator };
    }

    private static IReadOnlyList<IReadOnlyList<int>> ParseRankingField(JsonElement e, int k, RecordSource source)
    {
        const string field = "ranking";
        if (e.ValueKind != JsonValueKind.Array)
            throw new BadRecordException(source, field, $"expected a list of completion indices from best to worst (ties as nested lists, e.g. [[0, 2], 1]), found {JsonKinds.Describe(e)}.");
        var seen = new bool[k];
        var groups = new List<IReadOnlyList<int>>();
        int Index(JsonElement v)
        {
            if (v.ValueKind != JsonValueKind.Number)
                throw new BadRecordException(source, field, $"expected a completion index (an integer) or a list of tied indices, found {JsonKinds.Describe(v)}.");
            int i;
            if (v.TryGetInt32(out int exact)) i = exact;
            else if (v.TryGetDouble(out double d) && d == Math.Floor(d) && Math.Abs(d) <= int.MaxValue) i = (int)d; // 2.0 from float-minded writers
            else
                throw new BadRecordException(source, field, $"{v.GetRawText()} is not a completion index (an integer from 0 to {k - 1}).");
            if (i < 0 || i >= k)
                throw new BadRecordException(source, field, $"index {i} is out of range for {k} completions.");
            if (seen[i])
                throw new BadRecordException(source, field, $"index {i} appears more than once; a ranking must mention every completion index exactly once.");
            seen[i] = true;
            return i;
        }
        foreach (var item in e.EnumerateArray())
        {
            if (item.ValueKind == JsonValueKind.Array)
            {
                var tie = new List<int>();
                foreach (var v in item.EnumerateArray())
                {
                    if (v.ValueKind == JsonValueKind.Array)
                        throw new BadRecordException(source, field, "a tie group holds indices, not further lists (e.g. [[0, 2], 1, 3]).");
                    tie.Add(Index(v));
                }
                if (tie.Count == 0) throw new BadRecordException(source, field, "holds an empty tie group [].");
                groups.Add(tie);
            }
            else
            {
                groups.Add([Index(item)]);
            }
        }
        var missing = Enumerable.Range(0, k).Where(i => !seen[i]).ToList();
        if (missing.Count > 0)
            throw new BadRecordException(source, field,
                $"{(missing.Count == 1 ? "index" : "indices")} {string.Join(", ", missing)} {(missing.Count == 1 ? "is" : "are")} missing; a ranking must mention every completion index exactly once ({k} completions).");
        return groups;
    }

    /// <summary>
    /// TRL's per-record template arguments, which its SFT, DPO, KTO and reward trainers pass to the chat template of that
    /// record: "tools" (a list of tool schemas, or that list as a JSON string) and "chat_template_kwargs" (an object,
    /// whose entries win over "tools"); null when the record has neither.
    /// </summary>
    internal static IReadOnlyDictionary<string, object?>? TemplateKwargs(JsonElement obj, RecordSource source)
    {
        Dictionary<string, object?>? kwargs = null;
        if (obj.TryGetProperty("tools", out var tools) && tools.ValueKind != JsonValueKind.Null)
        {
            JsonDocument? parsed = null;
            try
            {
                if (tools.ValueKind == JsonValueKind.String)
                {
                    try { parsed = JsonDocument.Parse(tools.GetString()!); }
                    catch (JsonException e) { throw new BadRecordException(source, "tools", $"a string that is not JSON: {JsonKinds.Reason(e)}"); }
                }
                var list = parsed?.RootElement ?? tools;
                if (list.ValueKind != JsonValueKind.Array)
                    throw new BadRecordException(source, "tools", $"expected a list of tool schemas (or that list as a JSON string), found {JsonKinds.Describe(list)}.");
                (kwargs ??= [])["tools"] = Text.Jinja.JinjaJson.FromJson(list);
            }
            finally { parsed?.Dispose(); }
        }
        if (obj.TryGetProperty("chat_template_kwargs", out var given) && given.ValueKind != JsonValueKind.Null)
        {
            if (given.ValueKind != JsonValueKind.Object)
                throw new BadRecordException(source, "chat_template_kwargs", $"expected an object of the template's keyword arguments, found {JsonKinds.Describe(given)}.");
            foreach (var p in given.EnumerateObject())
            {
                if (ChatTemplate.RenderVariables.Contains(p.Name))
                    throw new BadRecordException(source, $"chat_template_kwargs.{p.Name}", "is set by each render and cannot be given.");
                (kwargs ??= [])[p.Name] = Text.Jinja.JinjaJson.FromJson(p.Value);
            }
        }
        return kwargs;
    }

    /// <summary>The prompt of any record that has one (for RL prompts taken from SFT or preference files).</summary>
    public static PromptExample ParsePrompt(JsonElement obj, RecordFormat format, RecordSource source)
    {
        return ParsePromptField(obj, format, source) with { ExtraFields = ExtraFields(obj) };
    }

    /// <summary>The fields that make a record's shape (<see cref="DetectFormat"/>) and its parts.</summary>
    private static readonly string[] ShapeFields = ["prompt", "completion", "completions", "ranking", "chosen", "rejected", "label", "messages", "text", "margin"];

    /// <summary>The fields of <paramref name="obj"/> other than <see cref="ShapeFields"/>, as a JSON object; null when none.</summary>
    private static string? ExtraFields(JsonElement obj)
    {
        var extra = obj.EnumerateObject().Where(p => Array.IndexOf(ShapeFields, p.Name) < 0).ToList();
        if (extra.Count == 0) return null;
        var buffer = new System.Buffers.ArrayBufferWriter<byte>();
        using (var w = new Utf8JsonWriter(buffer))
        {
            w.WriteStartObject();
            foreach (var p in extra) p.WriteTo(w);
            w.WriteEndObject();
        }
        return System.Text.Encoding.UTF8.GetString(buffer.WrittenSpan);
    }

    private static PromptExample ParsePromptField(JsonElement obj, RecordFormat format, RecordSource source)
    {
        var r = new FieldReader(obj, source);
        switch (format)
        {
            case RecordFormat.PromptOnly:
            case RecordFormat.PromptCompletion:
            case RecordFormat.PreferencePair:
            case RecordFormat.Unpaired when obj.TryGetProperty("prompt", out _):
            case RecordFormat.Ranking:
                return new PromptExample(r.Content("prompt", ContentUse.RlPrompt), source);
            case RecordFormat.ImplicitPromptPair:
                return new PromptExample(ParsePair(obj, format, source).Prompt, source) { PromptField = "chosen" };
            case RecordFormat.Messages:
            case RecordFormat.Unpaired:
                var messages = r.Messages(r.Required("messages"), "messages");
                int end = messages[^1].Role == ChatRole.Assistant ? messages.Count - 1 : messages.Count;
                if (end == 0) throw new BadRecordException(source, "messages", "holds no prompt (only an assistant turn).");
                return new PromptExample(ChatContent.FromMessages(messages.Take(end).ToArray()), source) { PromptField = "messages" };
            default:
                throw new BadRecordException(source, "text", "a {\"text\"} record has no prompt; prompts for RL come from a \"prompt\" (or \"messages\") field.");
        }
    }
}

/// <summary>What a content field is for, which decides what it may hold.</summary>
internal enum ContentUse
{
    /// <summary>A prompt for training: text (may be empty) or a non-empty list of messages.</summary>
    Prompt,
    /// <summary>A prompt for RL: must not be empty.</summary>
    RlPrompt,
    /// <summary>An answer: text, or assistant messages; empty text is valid (the model answered with EOS at once), only whitespace is not.</summary>
    Completion,
}

/// <summary>Reads typed fields of one record, throwing <see cref="BadRecordException"/>s that name them.</summary>
internal readonly struct FieldReader(JsonElement obj, RecordSource source)
{
    public JsonElement Required(string name)
    {
        if (!obj.TryGetProperty(name, out var e))
            throw new BadRecordException(source, name, "missing.");
        if (e.ValueKind == JsonValueKind.Null)
            throw new BadRecordException(source, name, "is null; a value is required.");
        return e;
    }

    /// <summary>The field, or null when absent or JSON null.</summary>
    public JsonElement? Optional(string name) =>
        obj.TryGetProperty(name, out var e) && e.ValueKind != JsonValueKind.Null ? e : null;

    public string NonEmptyString(string name)
    {
        var e = Required(name);
        if (e.ValueKind != JsonValueKind.String)
            throw new BadRecordException(source, name, $"expected a string, found {JsonKinds.Describe(e)}.");
        string s = e.GetString()!;
        CheckNotEmpty(s, name, null);
        return s;
    }

    public float? OptionalNumber(string name)
    {
        if (Optional(name) is not { } e) return null;
        if (e.ValueKind != JsonValueKind.Number)
            throw new BadRecordException(source, name, $"expected a number, found {JsonKinds.Describe(e)}.");
        double v = e.GetDouble();
        if (!double.IsFinite(v) || Math.Abs(v) > float.MaxValue)
            throw new BadRecordException(source, name, $"{e.GetRawText()} is not a finite number.");
        return (float)v;
    }

    public void CheckNotEmpty(string s, string field, string? what)
    {
        if (string.IsNullOrWhiteSpace(s))
            throw new BadRecordException(source, field, $"{(what is null ? "is" : what + " is")} empty{(s.Length > 0 ? " (only whitespace)" : "")}.");
    }

    /// <summary>
    /// An answer's text: "" is valid (the model answered with EOS at once: the answer is one EOS token); text of only
    /// whitespace is reported, as it is almost always a data error.
    /// </summary>
    public void CheckAnswerText(string s, string field, string? what)
    {
        if (s.Length > 0) CheckNotEmpty(s, field, what);
    }

    public ChatContent Content(string name, ContentUse use) => Content(Required(name), name, use);

    public ChatContent Content(JsonElement e, string field, ContentUse use)
    {
        switch (e.ValueKind)
        {
            case JsonValueKind.String:
                string s = e.GetString()!;
                if (use == ContentUse.RlPrompt) CheckNotEmpty(s, field, null);
                else if (use == ContentUse.Completion) CheckAnswerText(s, field, null);
                return ChatContent.FromText(s);
            case JsonValueKind.Array:
                var messages = Messages(e, field);
                if (use == ContentUse.Completion) CheckAnswerMessages(messages, field, 0);
                return ChatContent.FromMessages(messages);
            default:
                throw new BadRecordException(source, field, $"expected a string or a list of messages, found {JsonKinds.Describe(e)}.");
        }
    }

    /// <summary>An answer's messages: all assistant turns, none of only whitespace (empty content is an empty answer). <paramref name="offset"/> numbers them as in the file.</summary>
    public void CheckAnswerMessages(IReadOnlyList<ChatMessage> messages, string field, int offset)
    {
        if (messages.Count == 0) throw new BadRecordException(source, field, "holds no answer after the shared prompt.");
        for (int i = 0; i < messages.Count; i++)
        {
            if (messages[i].Role != ChatRole.Assistant)
                throw new BadRecordException(source, $"{field}[{i + offset}].role",
                    $"is \"{messages[i].RoleName}\"; an answer holds assistant messages only (put the conversation so far in \"prompt\").");
            CheckAnswerText(messages[i].Content, $"{field}[{i + offset}].content", null);
        }
    }

    /// <summary>A non-empty list of {"role","content", …} objects with known roles and string (or, beside other fields, null) contents.</summary>
    public List<ChatMessage> Messages(JsonElement e, string field)
    {
        if (e.ValueKind != JsonValueKind.Array)
            throw new BadRecordException(source, field, $"expected a list of messages ({{\"role\", \"content\"}} objects), found {JsonKinds.Describe(e)}.");
        var messages = new List<ChatMessage>();
        int i = 0;
        foreach (var m in e.EnumerateArray())
        {
            string at = $"{field}[{i}]";
            if (m.ValueKind != JsonValueKind.Object)
                throw new BadRecordException(source, at, $"expected a message ({{\"role\", \"content\"}} object), found {JsonKinds.Describe(m)}.");
            if (!m.TryGetProperty("role", out var role) || role.ValueKind == JsonValueKind.Null)
                throw new BadRecordException(source, at + ".role", "missing.");
            if (role.ValueKind != JsonValueKind.String)
                throw new BadRecordException(source, at + ".role", $"expected a string, found {JsonKinds.Describe(role)}.");
            string roleName = role.GetString()!;
            ChatRole parsed = roleName.ToLowerInvariant() switch
            {
                "system" => ChatRole.System,
                "user" => ChatRole.User,
                "assistant" => ChatRole.Assistant,
                "tool" => ChatRole.Tool,
                _ => throw new BadRecordException(source, at + ".role", $"unknown role \"{roleName}\"; expected \"system\", \"user\", \"assistant\" or \"tool\"."),
            };
            // Other fields (an assistant's tool_calls or reasoning_content, a tool result's name) go to the template as given.
            var others = m.EnumerateObject().Where(p => p.Name is not ("role" or "content")).ToList();
            bool hasContent = m.TryGetProperty("content", out var content) && content.ValueKind != JsonValueKind.Null;
            if (!hasContent && others.Count == 0)
                throw new BadRecordException(source, at + ".content", "missing.");
            if (hasContent && content.ValueKind != JsonValueKind.String)
                throw new BadRecordException(source, at + ".content", $"expected a string, found {JsonKinds.Describe(content)}.");
            string? fields = null;
            if (others.Count > 0 || !hasContent)
            {
                var o = new System.Text.Json.Nodes.JsonObject();
                if (!hasContent) o["content"] = null;   // a tool call without words: the template sees None, as in transformers
                foreach (var p in others) o[p.Name] = AlignSharp.Models.PythonJson.ToNode(p.Value);
                fields = o.ToJsonString();
            }
            messages.Add(new ChatMessage(parsed, hasContent ? content.GetString()! : "") { Fields = fields });
            i++;
        }
        if (messages.Count == 0) throw new BadRecordException(source, field, "is an empty list of messages.");
        return messages;
    }
}
