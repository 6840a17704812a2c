using System.Text;

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
/// Renders conversations into the text a model is trained on and generates from. Plain-text prompts and
/// completions (the "standard" format) are used verbatim and never templated; messages are rendered as:
/// <list type="bullet">
/// <item><c>chatml</c>: each message <c>&lt;|im_start|&gt;{role}\n{content}&lt;|im_end|&gt;\n</c>; generation prompt <c>&lt;|im_start|&gt;assistant\n</c>.</item>
/// <item><c>llama3</c>: <c>&lt;|begin_of_text|&gt;</c>, then each message <c>&lt;|start_header_id|&gt;{role}&lt;|end_header_id|&gt;\n\n{content}&lt;|eot_id|&gt;</c>
/// (content not trimmed); generation prompt <c>&lt;|start_header_id|&gt;assistant&lt;|end_header_id|&gt;\n\n</c>.</item>
/// <item><c>plain</c>: each message <c>System: {content}\n</c>, <c>User: {content}\n</c> or <c>Assistant: {content}\n</c>;
/// generation prompt <c>Assistant:</c> (the space before the answer belongs to the completion, as in Anthropic HH
/// transcripts, so that word-level tokenizers keep " word" tokens).</item>
/// </list>
/// An assistant turn is always the generation prompt followed by its body (<c>{content}</c> + end of turn; for plain,
/// <c>" " + content + "\n"</c>), so a rendered prompt plus a rendered completion is exactly the rendered conversation.
/// When one side is messages and the other plain text, the text becomes a user (prompt) or assistant (completion) message.
/// </summary>
public sealed class ChatTemplate
{
    private readonly string _system, _user, _assistant, _bodyPrefix, _end;

    private ChatTemplate(string name, string begin, string system, string user, string assistant, string bodyPrefix, string end)
    {
        Name = name;
        Begin = begin;
        _system = system;
        _user = user;
        _assistant = assistant;
        _bodyPrefix = bodyPrefix;
        _end = end;
    }

    public static readonly ChatTemplate ChatMl = new("chatml", "",
        "<|im_start|>system\n", "<|im_start|>user\n", "<|im_start|>assistant\n", "", "<|im_end|>\n");

    public static readonly ChatTemplate Llama3 = new("llama3", "<|begin_of_text|>",
        "<|start_header_id|>system<|end_header_id|>\n\n", "<|start_header_id|>user<|end_header_id|>\n\n",
        "<|start_header_id|>assistant<|end_header_id|>\n\n", "", "<|eot_id|>");

    public static readonly ChatTemplate Plain = new("plain", "", "System: ", "User: ", "Assistant:", " ", "\n");

    /// <summary>The names <see cref="Get"/> accepts.</summary>
    public static IReadOnlyList<string> Names { get; } = ["chatml", "llama3", "plain"];

    /// <summary>A built-in template by name (case-insensitive): chatml, llama3 or plain.</summary>
    public static ChatTemplate Get(string name) => name?.Trim().ToLowerInvariant() switch
    {
        "chatml" => ChatMl,
        "llama3" or "llama-3" => Llama3,
        "plain" => Plain,
        _ => throw new UserInputException($"unknown chat template \"{name}\"; choose one of: {string.Join(", ", Names)}."),
    };

    public string Name { get; }

    /// <summary>Text before the first message ("&lt;|begin_of_text|&gt;" for llama3, else empty).</summary>
    public string Begin { get; }

    /// <summary>The text that opens an assistant turn, appended to a prompt for generation.</summary>
    public string GenerationPrompt => _assistant;

    private string Header(ChatRole role) => role switch
    {
        ChatRole.System => _system,
        ChatRole.User => _user,
        _ => _assistant + _bodyPrefix,
    };

    /// <summary>The body of an assistant turn: what follows the generation prompt.</summary>
    public string AssistantBody(string content) => _bodyPrefix + content + _end;

    /// <summary>A whole conversation, no generation prompt.</summary>
    public string RenderConversation(IReadOnlyList<ChatMessage> messages)
    {
        var sb = new StringBuilder(Begin);
        foreach (var m in messages) sb.Append(Header(m.Role)).Append(m.Content).Append(_end);
        return sb.ToString();
    }

    /// <summary>A conversation so far, followed by the generation prompt: what the model continues.</summary>
    public string RenderPrompt(IReadOnlyList<ChatMessage> messages) => RenderConversation(messages) + GenerationPrompt;

    /// <summary>A prompt for generation: plain text verbatim, messages rendered with the generation prompt.</summary>
    public string RenderPrompt(ChatContent prompt) => prompt.IsConversational ? RenderPrompt(prompt.Messages!) : prompt.Text!;

    /// <summary>
    /// Prompt and completion text for training on an answer (preferences, scoring): plain text verbatim; otherwise
    /// the rendered prompt with the generation prompt, and the completion's assistant turn bodies (a second
    /// assistant message is opened with its own header).
    /// </summary>
    public (string Prompt, string Completion) RenderPromptAndCompletion(ChatContent prompt, ChatContent completion)
    {
        if (!prompt.IsConversational && !completion.IsConversational) return (prompt.Text!, completion.Text!);
        return (RenderPrompt(prompt.AsMessages(ChatRole.User)), RenderAnswer(completion.AsMessages(ChatRole.Assistant)));
    }

    /// <summary>Answer messages, each rendered as an assistant turn; the first one's header is the prompt's generation prompt.</summary>
    private string RenderAnswer(IReadOnlyList<ChatMessage> answer)
    {
        var sb = new StringBuilder();
        for (int i = 0; i < answer.Count; i++)
        {
            if (i > 0) sb.Append(GenerationPrompt);
            sb.Append(AssistantBody(answer[i].Content));
        }
        return sb.ToString();
    }

    /// <summary>
    /// The segments of an SFT example, adjacent segments of the same role merged. Text record: one Completion
    /// segment. Plain prompt/completion: Prompt (left out when empty) and Completion. Messages: Begin, each system
    /// or user turn, and the header of each assistant turn are Prompt; the body of an earlier assistant turn is
    /// EarlierAssistantTurn; the final answer's body is Completion.
    /// </summary>
    public IReadOnlyList<TextSegment> RenderSft(SftExample example)
    {
        var segments = new List<TextSegment>();
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
        Add(Begin, SegmentRole.Prompt);
        foreach (var m in example.Prompt.AsMessages(ChatRole.User))
        {
            if (m.Role == ChatRole.Assistant)
            {
                Add(GenerationPrompt, SegmentRole.Prompt);
                Add(AssistantBody(m.Content), SegmentRole.EarlierAssistantTurn);
            }
            else
            {
                Add(Header(m.Role) + m.Content + _end, SegmentRole.Prompt);
            }
        }
        var answer = example.Completion.AsMessages(ChatRole.Assistant);
        for (int i = 0; i < answer.Count; i++)
        {
            Add(GenerationPrompt, SegmentRole.Prompt);
            Add(AssistantBody(answer[i].Content), i == answer.Count - 1 ? SegmentRole.Completion : SegmentRole.EarlierAssistantTurn);
        }
        return segments;
    }
}
