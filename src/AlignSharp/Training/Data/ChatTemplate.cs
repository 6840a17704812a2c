using System.Text.Json;
using AlignSharp.Text.Jinja;

namespace AlignSharp.Training.Data;

/// <summary>Which tokens of a training sequence a piece of rendered text belongs to.</summary>
public enum SegmentRole
{
    /// <summary>Prompt text: template markup, system and user turns, the header that opens an assistant turn.</summary>
    Prompt,
    /// <summary>An assistant turn of a conversation before the final one (gets loss unless only the final turn is trained).</summary>
    EarlierAssistantTurn,
    /// <summary>The completion: the final assistant turn's content and its end-of-turn markup.</summary>
    Completion,
}

/// <summary>A piece of rendered text. Pieces are tokenized separately and concatenated, so their token boundaries are exact.</summary>
public readonly record struct TextSegment(string Text, SegmentRole Role);

/// <summary>
/// Renders conversations into the text a model is trained on and generates from, with a Jinja chat template as
/// Hugging Face transformers renders it (variables <c>messages</c>, <c>add_generation_prompt</c>, <c>tools</c> = none,
/// the model's special tokens, and any keyword arguments: <see cref="WithKwargs"/>). Plain-text prompts and completions (the "standard" format) are used verbatim and
/// never templated. Built-in templates (their Jinja source is <see cref="BuiltInSource"/>):
/// <list type="bullet">
/// <item><c>chatml</c>: each message <c>&lt;|im_start|&gt;{role}\n{content}&lt;|im_end|&gt;\n</c>; generation prompt <c>&lt;|im_start|&gt;assistant\n</c>.</item>
/// <item><c>llama3</c>: <c>&lt;|begin_of_text|&gt;</c>, then each message <c>&lt;|start_header_id|&gt;{role}&lt;|end_header_id|&gt;\n\n{content}&lt;|eot_id|&gt;</c>
/// (content not trimmed); generation prompt <c>&lt;|start_header_id|&gt;assistant&lt;|end_header_id|&gt;\n\n</c>.</item>
/// <item><c>plain</c>: each message <c>System: {content}\n</c>, <c>User: {content}\n</c> or <c>Assistant: {content}\n</c>;
/// generation prompt <c>Assistant:</c> (the space before the answer belongs to the completion, as in Anthropic HH
/// transcripts, so that word-level tokenizers keep " word" tokens).</item>
/// </list>
/// Prompt/completion boundaries (any template): the conversation without its answer, rendered with
/// <c>add_generation_prompt=true</c>, must be a prefix of the whole conversation rendered without it; the rest is the
/// completion. When it is not a prefix the record is an error (the boundary is never guessed). When one side is
/// messages and the other plain text, the text becomes a user (prompt) or assistant (completion) message.
/// </summary>
public sealed class ChatTemplate
{
    private readonly JinjaTemplate _jinja;
    private readonly IReadOnlyDictionary<string, object?> _tokens;

    private ChatTemplate(string name, JinjaTemplate jinja, IReadOnlyDictionary<string, object?> tokens, bool isFallback = false)
    {
        Name = name;
        _jinja = jinja;
        _tokens = tokens;
        IsFallback = isFallback;
    }

    static ChatTemplate BuiltIn(string name) => new(name, JinjaTemplate.Parse(BuiltInSource(name), $"'{name}'"), new Dictionary<string, object?>());

    public static readonly ChatTemplate ChatMl = BuiltIn("chatml");
    public static readonly ChatTemplate Llama3 = BuiltIn("llama3");
    public static readonly ChatTemplate Plain = BuiltIn("plain");

    /// <summary>The built-in names <see cref="Get"/> accepts.</summary>
    public static IReadOnlyList<string> Names { get; } = ["chatml", "llama3", "plain"];

    /// <summary>The Jinja source of a built-in template (what is written into a trained model that used it).</summary>
    public static string BuiltInSource(string name) => name switch
    {
        "chatml" => "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}{% endfor %}"
                    + "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}",
        "llama3" => "{{ '<|begin_of_text|>' }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] + '<|eot_id|>' }}{% endfor %}"
                    + "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}",
        "plain" => "{% for message in messages %}{{ message['role'] | capitalize + ': ' + message['content'] + '\\n' }}{% endfor %}"
                   + "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}",
        _ => throw new ArgumentException($"no built-in chat template '{name}'", nameof(name)),
    };

    /// <summary>A built-in template by name (case-insensitive): chatml, llama3 or plain.</summary>
    public static ChatTemplate Get(string name) => name?.Trim().ToLowerInvariant() switch
    {
        "chatml" => ChatMl,
        "llama3" or "llama-3" => Llama3,
        "plain" => Plain,
        _ => throw new UserInputException($"unknown chat template \"{name}\"; choose auto, a .jinja file, or one of: {string.Join(", ", Names)}."),
    };

    /// <summary>What <c>--chat-template</c> says about itself without a model: auto, a built-in name, or a .jinja file that
    /// exists; and <c>--chat-template-kwargs</c>, when given, a JSON object <see cref="Resolve(string?, string?, string?)"/> takes.</summary>
    public static void ValidateOption(string? spec, string? kwargs = null)
    {
        if (!string.IsNullOrWhiteSpace(kwargs)) ParseKwargs(kwargs);
        if (spec is null || IsAuto(spec) || Names.Contains(spec.Trim().ToLowerInvariant()) || spec.Trim().ToLowerInvariant() == "llama-3") return;
        if (File.Exists(spec)) return;
        throw new UserInputException($"--chat-template: \"{spec}\" is neither auto, a built-in template ({string.Join(", ", Names)}), nor an existing .jinja file.");
    }

    static bool IsAuto(string spec) => string.Equals(spec.Trim(), "auto", StringComparison.OrdinalIgnoreCase);

    /// <summary>
    /// The template <c>--chat-template</c> names for the model in <paramref name="modelDirectory"/>: <c>auto</c> (the
    /// model's own template when it has one — chat_template.jinja or tokenizer_config.json — else <c>plain</c>, marked
    /// <see cref="IsFallback"/>), a built-in name, or the path of a .jinja file (rendered with the model's special tokens).
    /// </summary>
    public static ChatTemplate Resolve(string? spec, string? modelDirectory) => Resolve(spec, modelDirectory, withTools: false);

    private static ChatTemplate Resolve(string? spec, string? modelDirectory, bool withTools)
    {
        spec ??= "auto";
        var tokens = modelDirectory is null ? new Dictionary<string, object?>() : ModelChatTemplate.SpecialTokenVariables(modelDirectory);
        if (IsAuto(spec))
        {
            var own = modelDirectory is null ? null : ModelChatTemplate.Find(modelDirectory, withTools);
            if (own is null) return new ChatTemplate("plain", Plain._jinja, Plain._tokens, isFallback: true);
            return new ChatTemplate("auto", JinjaTemplate.Parse(own.Value.Source, own.Value.Origin), tokens);
        }
        var lower = spec.Trim().ToLowerInvariant();
        if (Names.Contains(lower) || lower == "llama-3") return Get(spec);
        if (!File.Exists(spec)) ValidateOption(spec);
        string source;
        try { source = File.ReadAllText(spec); }
        catch (IOException e) { throw new UserInputException($"--chat-template: cannot read {spec}: {e.Message}", e); }
        return new ChatTemplate(Path.GetFullPath(spec), JinjaTemplate.Parse(source, spec), tokens);
    }

    /// <summary><see cref="Resolve(string?, string?)"/> with <c>--chat-template-kwargs</c> (<see cref="ParseKwargs"/>; none when null or blank).</summary>
    public static ChatTemplate Resolve(string? spec, string? modelDirectory, string? kwargs)
    {
        if (string.IsNullOrWhiteSpace(kwargs)) return Resolve(spec, modelDirectory);
        var parsed = ParseKwargs(kwargs);
        // As transformers: given tools, a model whose templates are named takes its "tool_use" one.
        bool withTools = parsed.TryGetValue("tools", out var tools) && tools != null;
        return Resolve(spec, modelDirectory, withTools).WithKwargs(parsed);
    }

    /// <summary>The help of every <c>--chat-template-kwargs</c> option.</summary>
    public const string KwargsHelp = "Keyword arguments of the chat template, a JSON object whose members are variables of every render, as transformers' apply_chat_template(..., **kwargs) passes them: {\"enable_thinking\": false} for Qwen3, a \"tools\" list.";

    /// <summary>Variables a render sets itself, which keyword arguments (flags or a record's own) may not replace.</summary>
    internal static readonly string[] RenderVariables = ["messages", "add_generation_prompt"];

    /// <summary>
    /// <c>--chat-template-kwargs</c>: a JSON object whose members become variables of every render, as transformers'
    /// <c>apply_chat_template(..., **kwargs)</c> passes them (Qwen3's <c>enable_thinking</c>, a <c>tools</c> list).
    /// </summary>
    public static IReadOnlyDictionary<string, object?> ParseKwargs(string json)
    {
        JsonDocument doc;
        try { doc = JsonDocument.Parse(json); }
        catch (JsonException e) { throw new UserInputException($"--chat-template-kwargs: malformed JSON: {e.Message}"); }
        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
                throw new UserInputException($"--chat-template-kwargs: expected a JSON object such as {{\"enable_thinking\": false}}, got {doc.RootElement.ValueKind}.");
            var kwargs = new Dictionary<string, object?>();
            foreach (var p in doc.RootElement.EnumerateObject())
            {
                if (RenderVariables.Contains(p.Name))
                    throw new UserInputException($"--chat-template-kwargs: \"{p.Name}\" is set by each render and cannot be given.");
                kwargs[p.Name] = JinjaJson.FromJson(p.Value);
            }
            return kwargs;
        }
    }

    /// <summary>This template for one record: with the record's own arguments ("tools", "chat_template_kwargs") on top
    /// of the template's, or the template itself when the record has none.</summary>
    public ChatTemplate For(IReadOnlyDictionary<string, object?>? recordKwargs) => recordKwargs is null ? this : WithKwargs(recordKwargs);

    /// <summary>This template with <paramref name="kwargs"/> as variables of every render (after the special tokens, so
    /// they may replace one, as keyword arguments do in transformers).</summary>
    public ChatTemplate WithKwargs(IReadOnlyDictionary<string, object?> kwargs)
    {
        var variables = new Dictionary<string, object?>(_tokens);
        foreach (var (k, v) in kwargs) variables[k] = v;
        return new ChatTemplate(Name, _jinja, variables, IsFallback);
    }

    /// <summary>
    /// "chatml", "llama3", "plain"; "auto" for the model's own template; the full path for a .jinja file. A trained model
    /// gets the template written into its directory, so "auto" reloads it.
    /// </summary>
    public string Name { get; }

    /// <summary>True when <c>auto</c> found no template in the model and fell back to <c>plain</c>.</summary>
    public bool IsFallback { get; }

    /// <summary>The Jinja source (written into a trained model's directory as its chat template).</summary>
    public string Source => _jinja.Source;

    /// <summary>The warning for data with message lists rendered by the <c>plain</c> fallback, or null.</summary>
    public string? FallbackWarning(bool dataHasMessages) => IsFallback && dataHasMessages
        ? "the model has no chat template (no chat_template.jinja, no \"chat_template\" in tokenizer_config.json), so message lists are formatted with the built-in 'plain' template (System:/User:/Assistant: lines); pass --chat-template NAME or FILE.jinja to choose another."
        : null;

    /// <summary>A render's variables: the special tokens and keyword arguments, the messages, the generation-prompt flag, and
    /// <c>tools</c> and <c>documents</c> as none unless a keyword argument gives them.</summary>
    Dictionary<string, object?> Variables(object? messages, bool addGenerationPrompt)
    {
        var vars = new Dictionary<string, object?>(_tokens) { ["messages"] = messages, ["add_generation_prompt"] = addGenerationPrompt };
        vars.TryAdd("tools", null);
        vars.TryAdd("documents", null);
        return vars;
    }

    /// <summary>Renders a conversation with the template's variables.</summary>
    public string Render(IReadOnlyList<ChatMessage> messages, bool addGenerationPrompt)
    {
        var messageList = messages.Select(m =>
        {
            var d = new JinjaDict { ["role"] = m.RoleName, ["content"] = m.Content };
            if (m.Fields != null)
            {
                using var fields = System.Text.Json.JsonDocument.Parse(m.Fields);
                foreach (var p in fields.RootElement.EnumerateObject()) d[p.Name] = JinjaJson.FromJson(p.Value);
            }
            return (object?)d;
        }).ToList();
        return _jinja.Render(Variables(messageList, addGenerationPrompt));
    }

    /// <summary>Renders messages given as JSON values (any fields: tool calls, reasoning, …), as the <c>template</c> command does.</summary>
    public string Render(object? messages, bool addGenerationPrompt) => _jinja.Render(Variables(messages, addGenerationPrompt));

    /// <summary>A whole conversation, no generation prompt.</summary>
    public string RenderConversation(IReadOnlyList<ChatMessage> messages) => Render(messages, addGenerationPrompt: false);

    /// <summary>A conversation so far, followed by the generation prompt (or continuing its final assistant message): what the model continues.</summary>
    public string RenderPrompt(IReadOnlyList<ChatMessage> messages)
    {
        if (messages.Count == 0 || messages[^1].Role != ChatRole.Assistant) return Render(messages, addGenerationPrompt: true);
        // A prompt that ends with the assistant's own words (a prefill such as "Sure, ") is continued, as TRL renders it
        // (transformers' continue_final_message): the conversation without the generation prompt, cut after that
        // message's content, so the answer goes on inside the open turn instead of after a closed one.
        string rendered = Render(messages, addGenerationPrompt: false);
        string final = messages[^1].Content, trimmed = final.Trim(), leading = final.TrimStart();
        if (trimmed.Length == 0) return rendered;
        int at = rendered.LastIndexOf(trimmed, StringComparison.Ordinal);
        if (at < 0)
            throw new UserInputException($"chat template {Name}: a prompt's final assistant message {System.Text.Json.JsonSerializer.Serialize(trimmed)} " +
                "does not appear in the rendered conversation, so it cannot be continued.");
        // Trailing whitespace the template kept stays; whitespace it trimmed is not put back.
        return string.CompareOrdinal(rendered, at, leading, 0, leading.Length) == 0 ? rendered[..(at + leading.Length)] : rendered[..(at + trimmed.Length)];
    }

    /// <summary>A prompt for generation: plain text verbatim, messages rendered with the generation prompt.</summary>
    public string RenderPrompt(ChatContent prompt) => prompt.IsConversational ? RenderPrompt(prompt.Messages!) : prompt.Text!;

    /// <summary>
    /// Prompt and completion text for training on an answer (preferences, scoring): plain text verbatim; otherwise the
    /// prompt messages rendered with the generation prompt, and what the whole conversation adds to that.
    /// <paramref name="source"/> names the record in the error when the prompt is not a prefix of the conversation.
    /// </summary>
    public (string Prompt, string Completion) RenderPromptAndCompletion(ChatContent prompt, ChatContent completion, RecordSource? source = null, string? field = null)
    {
        if (!prompt.IsConversational && !completion.IsConversational) return (prompt.Text!, completion.Text!);
        var promptMessages = prompt.AsMessages(ChatRole.User);
        var all = promptMessages.Concat(completion.AsMessages(ChatRole.Assistant)).ToList();
        var promptText = RenderPrompt(promptMessages);
        var full = RenderConversation(all);
        RequirePrefix(promptText, full, source, field ?? "prompt");
        return (promptText, full[promptText.Length..]);
    }

    void RequirePrefix(string prefix, string full, RecordSource? source, string field)
    {
        if (full.StartsWith(prefix, StringComparison.Ordinal)) return;
        int at = 0;
        while (at < prefix.Length && at < full.Length && prefix[at] == full[at]) at++;
        string Around(string s) => System.Text.Json.JsonSerializer.Serialize(s.Substring(at, Math.Min(40, s.Length - at)));
        string problem = $"chat template {Name}: the conversation without its answer, rendered with the generation prompt, is not a prefix of the whole conversation " +
                         $"(they differ at character {at}: {Around(prefix)} vs {Around(full)}), so the prompt/completion boundary is unknown; " +
                         "use a template that renders earlier turns the same way with and without the answer, or pass --chat-template.";
        if (source is { } src) throw new BadRecordException(src, field, problem);
        throw new UserInputException(problem);
    }

    /// <summary>An SFT example's segments, and how many earlier assistant turns stayed in the prompt (no loss) because
    /// the template does not render them the same way once the conversation goes on.</summary>
    public sealed class SftSegments : List<TextSegment>
    {
        public int MaskedEarlierTurns { get; set; }
    }

    /// <summary>
    /// The segments of an SFT example, adjacent segments of the same role merged. Text record: one Completion
    /// segment. Plain prompt/completion: Prompt (left out when empty) and Completion. Messages: the final answer
    /// (what the whole conversation adds to the prompt rendered with the generation prompt) is Completion; an earlier
    /// assistant turn is EarlierAssistantTurn when its rendering in context is exact (the conversation up to it with
    /// the generation prompt, and up to and including it, are both prefixes of the whole), else Prompt (e.g. a
    /// template that drops the reasoning of earlier turns); the rest is Prompt.
    /// </summary>
    public SftSegments RenderSft(SftExample example)
    {
        var segments = new SftSegments();
        void Add(string text, SegmentRole role)
        {
            if (text.Length == 0) return;
            if (segments.Count > 0 && segments[^1].Role == role) segments[^1] = new TextSegment(segments[^1].Text + text, role);
            else segments.Add(new TextSegment(text, role));
        }

        if (example.Prompt is null)
        {
            Add(example.Completion.IsConversational ? RenderConversation(example.Completion.Messages!) : example.Completion.Text!, SegmentRole.Completion);
            return segments;
        }
        if (!example.Prompt.IsConversational && !example.Completion.IsConversational)
        {
            Add(example.Prompt.Text!, SegmentRole.Prompt);
            Add(example.Completion.Text!, SegmentRole.Completion);
            return segments;
        }
        var promptMessages = example.Prompt.AsMessages(ChatRole.User);
        var all = promptMessages.Concat(example.Completion.AsMessages(ChatRole.Assistant)).ToList();
        var full = RenderConversation(all);
        var promptText = RenderPrompt(promptMessages);
        RequirePrefix(promptText, full, example.Source, example.PromptField);
        int done = 0;
        // Earlier assistant turns of a conversation (a "messages" record) are answers too; a "prompt" field is masked whole,
        // assistant turns and all, as TRL's completion_only_loss masks it.
        bool conversation = example.PromptField == "messages";
        for (int i = 0; conversation && i < promptMessages.Count; i++)
        {
            if (promptMessages[i].Role != ChatRole.Assistant) continue;
            var before = RenderPrompt(all.GetRange(0, i));
            var through = RenderConversation(all.GetRange(0, i + 1));
            if (before.Length < done || through.Length < before.Length || through.Length > promptText.Length
                || !full.StartsWith(before, StringComparison.Ordinal) || !full.StartsWith(through, StringComparison.Ordinal))
            {
                segments.MaskedEarlierTurns++;
                continue;
            }
            Add(full[done..before.Length], SegmentRole.Prompt);
            Add(full[before.Length..through.Length], SegmentRole.EarlierAssistantTurn);
            done = through.Length;
        }
        Add(full[done..promptText.Length], SegmentRole.Prompt);
        Add(full[promptText.Length..], SegmentRole.Completion);
        return segments;
    }
}
