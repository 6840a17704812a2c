namespace AlignSharp.Training.Data;

/// <summary>Speaker of a chat message. In files: "system", "user", "assistant" or "tool" (a tool's result; case-insensitive).</summary>
public enum ChatRole { System, User, Assistant, Tool }

/// <summary>One turn of a conversation.</summary>
public sealed record ChatMessage(ChatRole Role, string Content)
{
    /// <summary>The role as written in files and chat templates: "system", "user", "assistant" or "tool".</summary>
    public string RoleName => Role switch
    {
        ChatRole.System => "system",
        ChatRole.User => "user",
        ChatRole.Tool => "tool",
        _ => "assistant",
    };

    /// <summary>
    /// The message's other fields as the file gave them (tool_calls, reasoning_content, name, tool_call_id, …, and a
    /// content of null), one JSON object that the chat template sees beside role and content, as transformers passes a
    /// message dict whole; null when there are none. Kept as text so that messages compare by value.
    /// </summary>
    public string? Fields { get; init; }

    public static ChatMessage System(string content) => new(ChatRole.System, content);
    public static ChatMessage User(string content) => new(ChatRole.User, content);
    public static ChatMessage Assistant(string content) => new(ChatRole.Assistant, content);
}

/// <summary>
/// A prompt or a completion as a file gives it: plain text (the "standard" format, used verbatim) or a list of
/// chat messages (the "conversational" format, rendered by a <see cref="ChatTemplate"/>). Exactly one of
/// <see cref="Text"/> and <see cref="Messages"/> is set.
/// </summary>
public sealed class ChatContent
{
    private ChatContent(string? text, IReadOnlyList<ChatMessage>? messages) { Text = text; Messages = messages; }

    public string? Text { get; }
    public IReadOnlyList<ChatMessage>? Messages { get; }
    public bool IsConversational => Messages is not null;

    public static ChatContent FromText(string text) => new(text ?? throw new ArgumentNullException(nameof(text)), null);
    public static ChatContent FromMessages(IReadOnlyList<ChatMessage> messages) => new(null, messages ?? throw new ArgumentNullException(nameof(messages)));
    public static ChatContent FromMessages(params ChatMessage[] messages) => new(null, messages);

    /// <summary>The messages; plain text becomes one message of <paramref name="textRole"/>.</summary>
    public IReadOnlyList<ChatMessage> AsMessages(ChatRole textRole) => Messages ?? [new ChatMessage(textRole, Text!)];

    public override string ToString() => Text ?? string.Join("\n", Messages!.Select(m => $"{m.RoleName}: {m.Content}"));
}

/// <summary>Where a record came from: the file as the user named it and the 1-based line its record starts on.</summary>
public readonly record struct RecordSource(string File, int Line)
{
    public override string ToString() => $"{File}:{Line}";
}

/// <summary>What a data file holds, as a trainer needs it.</summary>
public enum DatasetKind
{
    /// <summary>Supervised fine-tuning: {"prompt","completion"}, {"text"} or {"messages"}.</summary>
    Sft,
    /// <summary>Preferences: {"prompt","chosen","rejected"}, Anthropic HH {"chosen","rejected"}, or rankings {"prompt","completions","ranking"}.</summary>
    Preference,
    /// <summary>Prompts for the RL phase: {"prompt"}.</summary>
    Prompt,
    /// <summary>Unpaired feedback for KTO: {"prompt","completion","label"} or {"messages","label"}.</summary>
    Unpaired,
}

/// <summary>The record layout one JSON object has, told apart by its fields.</summary>
public enum RecordFormat
{
    /// <summary>{"prompt", "completion"}.</summary>
    PromptCompletion,
    /// <summary>{"text"}: loss on every token.</summary>
    Text,
    /// <summary>{"messages": [{"role", "content"}, ...]}: the final assistant turn is the completion.</summary>
    Messages,
    /// <summary>{"prompt", "chosen", "rejected"} with an optional "margin".</summary>
    PreferencePair,
    /// <summary>{"chosen", "rejected"} holding whole transcripts (Anthropic HH); the prompt is their shared prefix.</summary>
    ImplicitPromptPair,
    /// <summary>{"prompt", "completions", "ranking"} with an optional "annotator".</summary>
    Ranking,
    /// <summary>{"prompt"} alone.</summary>
    PromptOnly,
    /// <summary>{"prompt", "completion", "label"} or {"messages", "label"}: one completion judged desirable (true) or not (false).</summary>
    Unpaired,
}

/// <summary>
/// One supervised example. <see cref="Prompt"/> is null for {"text"} records (loss on every token). For a
/// {"messages"} record, Prompt is every message before the final assistant turn (earlier assistant turns
/// included; they get loss too by default) and <see cref="Completion"/> is that final turn.
/// </summary>
public sealed record SftExample(ChatContent? Prompt, ChatContent Completion, RecordSource Source)
{
    /// <summary>The record's field holding the prompt, for messages ("prompt" or "messages").</summary>
    public string PromptField { get; init; } = "prompt";

    /// <summary>The record's field holding the completion, for messages ("completion", "text" or "messages").</summary>
    public string CompletionField { get; init; } = "completion";

    /// <summary>The record's own chat-template arguments ("tools", "chat_template_kwargs"), or null.</summary>
    public IReadOnlyDictionary<string, object?>? TemplateKwargs { get; init; }
}

/// <summary>
/// One preference: <see cref="Chosen"/> is preferred to <see cref="Rejected"/> as an answer to
/// <see cref="Prompt"/>. Margin: how strongly (0 when the file gives none). Weight: this pair's share of the
/// loss (see <see cref="RankingRecord"/> for the rule; 1 for a file of plain pairs).
/// </summary>
public sealed record PreferencePair(ChatContent Prompt, ChatContent Chosen, ChatContent Rejected, float Margin, float Weight, RecordSource Source)
{
    /// <summary>The record's own chat-template arguments ("tools", "chat_template_kwargs"), or null.</summary>
    public IReadOnlyDictionary<string, object?>? TemplateKwargs { get; init; }

    /// <summary>The "annotator" field of the ranking this pair came from, when given.</summary>
    public string? Annotator { get; init; }

    /// <summary>The record's field holding the chosen answer ("chosen", or "completions[i]" for a ranking).</summary>
    public string ChosenField { get; init; } = "chosen";

    /// <summary>The record's field holding the rejected answer ("rejected", or "completions[j]" for a ranking).</summary>
    public string RejectedField { get; init; } = "rejected";

    /// <summary>The record's field holding the prompt ("prompt", or "chosen" when it was extracted from transcripts).</summary>
    public string PromptField { get; init; } = "prompt";
}

/// <summary>
/// One unpaired judgement (KTO): a completion of a prompt, desirable (<see cref="Desirable"/> true, thumbs up) or
/// undesirable. The prompt and completion are read as an SFT record's are.
/// </summary>
public sealed record UnpairedExample(SftExample Example, bool Desirable)
{
    public RecordSource Source => Example.Source;
}

/// <summary>A prompt for the RL phase.</summary>
public sealed record PromptExample(ChatContent Prompt, RecordSource Source)
{
    public string PromptField { get; init; } = "prompt";

    /// <summary>The record's other fields ("solution", "answer", metadata) as one JSON object, or null when it has none:
    /// TRL hands a dataset's extra columns to its reward functions, so the reward endpoint receives them too.</summary>
    public string? ExtraFields { get; init; }
}
