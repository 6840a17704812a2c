using AlignSharp.Text;

namespace AlignSharp.Training.Data;

/// <summary>What happens to a record longer than the limits of <see cref="TruncationOptions"/>.</summary>
public enum OverlongRecords
{
    /// <summary>It is a bad record: an error naming file, line and field, or skipped and counted with SkipBadRecords.</summary>
    Error,
    /// <summary>It is cut: the prompt keeps its end, the completion its start (an EOS cut off is not re-added).</summary>
    Truncate,
}

/// <summary>
/// Length limits, in tokens after tokenization. Truncation, when on: (1) a prompt longer than MaxPromptLength
/// keeps its last MaxPromptLength tokens; (2) if prompt + completion (with EOS) is longer than MaxLength, the
/// completion keeps its first MaxLength − prompt tokens; a prompt that leaves no room for even one completion
/// token makes the record bad (set MaxPromptLength below MaxLength to prevent that).
/// </summary>
public sealed record TruncationOptions
{
    /// <summary>Longest sequence: prompt + completion + EOS (default 1024; <c>--max-length</c>).</summary>
    public int MaxLength { get; init; } = 1024;

    /// <summary>Longest prompt; null (default) = only MaxLength applies (<c>--max-prompt-length</c>).</summary>
    public int? MaxPromptLength { get; init; }

    /// <summary>Longer records are errors (default) or truncated (<c>--truncate</c>).</summary>
    public OverlongRecords Overlong { get; init; } = OverlongRecords.Error;

    public void Validate()
    {
        if (MaxLength < 2) throw new UserInputException($"the max length must be at least 2 tokens, got {MaxLength}.");
        if (MaxPromptLength is { } p && (p < 1 || p >= MaxLength))
            throw new UserInputException($"the max prompt length must be from 1 to max length − 1 ({MaxLength - 1}) so the completion has room, got {p}.");
    }
}

/// <summary>Which tokens of an SFT example carry loss.</summary>
public enum LossOn
{
    /// <summary>The completion and, in a conversation, every assistant turn (default); prompt tokens get label −100.</summary>
    Completion,
    /// <summary>Only the final assistant turn (the completion); earlier assistant turns are masked like the prompt.</summary>
    FinalTurn,
    /// <summary>Every token, the prompt included.</summary>
    AllTokens,
}

/// <summary>How SFT examples become token sequences.</summary>
public sealed record SftEncodingOptions
{
    /// <summary>Length limits and truncation (default: max length 1024, longer records are errors).</summary>
    public TruncationOptions Truncation { get; init; } = new();

    /// <summary>Which tokens carry loss (default: completion / assistant turns only).</summary>
    public LossOn Loss { get; init; } = LossOn.Completion;

    /// <summary>Append the tokenizer's EOS after the completion unless it already ends with it (default true).</summary>
    public bool AppendEos { get; init; } = true;

    /// <summary>Skip and count overlong records instead of stopping (default false; <c>--skip-bad-records</c>).</summary>
    public bool SkipBadRecords { get; init; }

    /// <summary>How many skipped records' messages to keep for the warning (default 5).</summary>
    public int MaxReportedSkips { get; init; } = 5;

    public void Validate() => Truncation.Validate();
}

/// <summary>How preference pairs become token sequences.</summary>
public sealed record PreferenceEncodingOptions
{
    /// <summary>Length limits and truncation, applied to prompt + chosen and prompt + rejected (default: max length 1024, errors).</summary>
    public TruncationOptions Truncation { get; init; } = new();

    /// <summary>Append the tokenizer's EOS after each answer unless it already ends with it (default true).</summary>
    public bool AppendEos { get; init; } = true;

    /// <summary>Skip and count overlong records instead of stopping (default false; <c>--skip-bad-records</c>).</summary>
    public bool SkipBadRecords { get; init; }

    /// <summary>How many skipped records' messages to keep for the warning (default 5).</summary>
    public int MaxReportedSkips { get; init; } = 5;

    public void Validate() => Truncation.Validate();
}

/// <summary>
/// One training row of token ids with labels aligned to them (Hugging Face convention: Labels[t] is the target
/// of position t, i.e. the trainer scores logits[t − 1] against Labels[t]; −100 = no loss). The first token of
/// every example has label −100 (nothing in its own example predicts it). A packed row holds several examples,
/// starting at <see cref="ExampleStarts"/>.
/// </summary>
public sealed class SftSequence(int[] ids, int[] labels, int[] exampleStarts, RecordSource[] sources)
{
    public const int IgnoreIndex = -100;

    public int[] Ids { get; } = ids;
    public int[] Labels { get; } = labels;
    public int[] ExampleStarts { get; } = exampleStarts;
    public RecordSource[] Sources { get; } = sources;

    /// <summary>Earlier assistant turns of its conversation left without loss (<see cref="ChatTemplate.SftSegments"/>).</summary>
    public int MaskedEarlierTurns { get; init; }
    public int Length => Ids.Length;

    /// <summary>Tokens that carry loss.</summary>
    public int LossTokenCount => Labels.Count(l => l != IgnoreIndex);
}

/// <summary>A preference pair as tokens: the prompt, and each answer with its EOS (after truncation).</summary>
public sealed record TokenizedPreference(int[] Prompt, int[] Chosen, int[] Rejected, float Margin, float Weight, RecordSource Source)
{
    /// <summary>The longer of prompt + chosen and prompt + rejected (what a batch pads to).</summary>
    public int Length => Prompt.Length + Math.Max(Chosen.Length, Rejected.Length);
}

/// <summary>
/// Tokenizes SFT examples. Each rendered segment (see <see cref="ChatTemplate.RenderSft"/>) is encoded on its own
/// and the ids concatenated, so the prompt/completion boundary is exact; only the first segment gets the
/// tokenizer's added special tokens (a BOS doubled by a template that writes it too is dropped once).
/// </summary>
public static class SftEncoder
{
    public static RecordSet<SftSequence> Encode(IReadOnlyList<SftExample> examples, ITokenizer tokenizer, ChatTemplate template, SftEncodingOptions? options = null)
    {
        options ??= new SftEncodingOptions();
        options.Validate();
        var log = new BadRecordLog(options.SkipBadRecords, options.MaxReportedSkips);
        var result = new List<SftSequence>(examples.Count);
        foreach (var e in examples)
        {
            try { result.Add(Encode(e, tokenizer, template, options)); }
            catch (BadRecordException ex) { log.Report(ex); }
        }
        return log.Result<SftSequence>(result);
    }

    /// <summary>One example; an overlong one throws <see cref="BadRecordException"/> (unless truncating).</summary>
    public static SftSequence Encode(SftExample example, ITokenizer tokenizer, ChatTemplate template, SftEncodingOptions options)
    {
        int? eos = options.AppendEos ? TokenSequences.RequireEos(tokenizer) : null;
        var own = template.For(example.TemplateKwargs);
        var segments = TokenSequences.Rendered(example.Source, example.PromptField, () => own.RenderSft(example));
        var pieces = Tokenize(segments, tokenizer);
        var prompt = new List<int>();
        var promptLoss = new List<bool>();
        int[] completion = [];
        for (int s = 0; s < segments.Count; s++)
        {
            var ids = pieces[s];
            if (s == segments.Count - 1 && segments[s].Role == SegmentRole.Completion) { completion = ids; break; }
            bool loss = options.Loss == LossOn.AllTokens || (options.Loss == LossOn.Completion && segments[s].Role != SegmentRole.Prompt);
            prompt.AddRange(ids);
            for (int i = 0; i < ids.Length; i++) promptLoss.Add(loss);
        }
        completion = TokenSequences.WithEos(completion, eos, templated: example.Prompt?.IsConversational == true || example.Completion.IsConversational);

        var t = options.Truncation;
        int promptStart = 0; // prompt tokens kept: [promptStart, prompt.Count)
        if (t.MaxPromptLength is { } maxPrompt && prompt.Count > maxPrompt)
        {
            if (t.Overlong == OverlongRecords.Error)
                throw new BadRecordException(example.Source, example.PromptField,
                    $"the prompt is {prompt.Count} tokens after tokenization, longer than the max prompt length of {maxPrompt}; raise the max prompt length, shorten the prompt, or turn on truncation (keeps the end of the prompt).");
            promptStart = prompt.Count - maxPrompt;
        }
        int promptLength = prompt.Count - promptStart;
        int completionLength = completion.Length;
        if (promptLength + completionLength > t.MaxLength)
        {
            if (t.Overlong == OverlongRecords.Error)
                throw new BadRecordException(example.Source, example.CompletionField, TokenSequences.TooLong(promptLength, completionLength, t.MaxLength, example.Prompt is not null));
            completionLength = t.MaxLength - promptLength;
            if (completionLength < 1)
                throw new BadRecordException(example.Source, example.PromptField, TokenSequences.NoRoom(promptLength, t.MaxLength));
        }

        int n = promptLength + completionLength;
        var outIds = new int[n];
        var labels = new int[n];
        for (int i = 0; i < promptLength; i++)
        {
            outIds[i] = prompt[promptStart + i];
            labels[i] = promptLoss[promptStart + i] ? outIds[i] : SftSequence.IgnoreIndex;
        }
        for (int i = 0; i < completionLength; i++) outIds[promptLength + i] = labels[promptLength + i] = completion[i];
        if (n > 0) labels[0] = SftSequence.IgnoreIndex;
        return new SftSequence(outIds, labels, [0], [example.Source]) { MaskedEarlierTurns = segments.MaskedEarlierTurns };
    }

    /// <summary>
    /// The segments' tokens. The whole text is tokenized at once, as TRL tokenizes an SFT example (prompt and completion
    /// together), and cut where each segment ends, when every segment boundary falls between tokens: the text up to it
    /// tokenizes to a prefix of the whole. So "Hi" + " world" is [▁Hi, ▁world] under a SentencePiece tokenizer that puts
    /// ▁ before every text it is given, not [▁Hi, ▁, ▁world] — the sequence generation meets. Where a token would straddle a
    /// boundary, each segment is tokenized on its own (the boundary stays exact).
    /// </summary>
    static int[][] Tokenize(IReadOnlyList<TextSegment> segments, ITokenizer tokenizer)
    {
        int[] Encode(string text, bool first) => first
            ? TokenSequences.DropDoubledBos(tokenizer.Encode(text, addSpecialTokens: true), tokenizer)
            : tokenizer.Encode(text, addSpecialTokens: false);
        if (segments.Count > 1 && Joint(segments, Encode) is { } joint) return joint;
        return segments.Select((segment, i) => Encode(segment.Text, i == 0)).ToArray();
    }

    /// <summary>The whole text's tokens cut at the segments' ends, or null when a boundary falls inside a token.</summary>
    static int[][]? Joint(IReadOnlyList<TextSegment> segments, Func<string, bool, int[]> encode)
    {
        var whole = encode(string.Concat(segments.Select(s => s.Text)), true);
        var result = new int[segments.Count][];
        var text = new System.Text.StringBuilder();
        int start = 0;
        for (int s = 0; s < segments.Count; s++)
        {
            text.Append(segments[s].Text);
            int end = whole.Length;
            if (s < segments.Count - 1)
            {
                var upTo = encode(text.ToString(), true);
                if (upTo.Length < start || upTo.Length > whole.Length || !upTo.AsSpan().SequenceEqual(whole.AsSpan(0, upTo.Length))) return null;
                end = upTo.Length;
            }
            result[s] = whole[start..end];
            start = end;
        }
        return result;
    }
}

/// <summary>Tokenizes preference pairs: the prompt once, each answer on its own (exact boundary), EOS after each answer.</summary>
public static class PreferenceEncoder
{
    public static RecordSet<TokenizedPreference> Encode(IReadOnlyList<PreferencePair> pairs, ITokenizer tokenizer, ChatTemplate template, PreferenceEncodingOptions? options = null)
    {
        options ??= new PreferenceEncodingOptions();
        options.Validate();
        var log = new BadRecordLog(options.SkipBadRecords, options.MaxReportedSkips);
        var result = new List<TokenizedPreference>(pairs.Count);
        foreach (var p in pairs)
        {
            try { result.Add(Encode(p, tokenizer, template, options)); }
            catch (BadRecordException ex) { log.Report(ex); }
        }
        return log.Result<TokenizedPreference>(result);
    }

    /// <summary>
    /// One pair; an overlong one throws <see cref="BadRecordException"/> (unless truncating). Truncation is that of
    /// <see cref="TruncationOptions"/> with the prompt cut once for both answers and each answer cut to fit beside it.
    /// </summary>
    public static TokenizedPreference Encode(PreferencePair pair, ITokenizer tokenizer, ChatTemplate template, PreferenceEncodingOptions options)
    {
        int? eos = options.AppendEos ? TokenSequences.RequireEos(tokenizer) : null;
        var own = template.For(pair.TemplateKwargs);
        var (promptText, chosenText) = TokenSequences.Rendered(pair.Source, pair.ChosenField, () => own.RenderPromptAndCompletion(pair.Prompt, pair.Chosen, pair.Source, pair.ChosenField));
        var (_, rejectedText) = TokenSequences.Rendered(pair.Source, pair.RejectedField, () => own.RenderPromptAndCompletion(pair.Prompt, pair.Rejected, pair.Source, pair.RejectedField));
        var prompt = TokenSequences.DropDoubledBos(tokenizer.Encode(promptText, addSpecialTokens: true), tokenizer);
        bool templated = pair.Prompt.IsConversational || pair.Chosen.IsConversational || pair.Rejected.IsConversational;
        var chosen = TokenSequences.WithEos(tokenizer.Encode(chosenText, addSpecialTokens: false), eos, templated);
        var rejected = TokenSequences.WithEos(tokenizer.Encode(rejectedText, addSpecialTokens: false), eos, templated);

        var t = options.Truncation;
        if (t.MaxPromptLength is { } maxPrompt && prompt.Length > maxPrompt)
        {
            if (t.Overlong == OverlongRecords.Error)
                throw new BadRecordException(pair.Source, pair.PromptField,
                    $"the prompt is {prompt.Length} tokens after tokenization, longer than the max prompt length of {maxPrompt}; raise the max prompt length, shorten the prompt, or turn on truncation (keeps the end of the prompt).");
            prompt = prompt[^maxPrompt..];
        }
        chosen = Fit(chosen, pair.ChosenField);
        rejected = Fit(rejected, pair.RejectedField);
        return new TokenizedPreference(prompt, chosen, rejected, pair.Margin, pair.Weight, pair.Source);

        int[] Fit(int[] answer, string field)
        {
            if (prompt.Length + answer.Length <= t.MaxLength) return answer;
            if (t.Overlong == OverlongRecords.Error)
                throw new BadRecordException(pair.Source, field, TokenSequences.TooLong(prompt.Length, answer.Length, t.MaxLength, true));
            int room = t.MaxLength - prompt.Length;
            if (room < 1) throw new BadRecordException(pair.Source, pair.PromptField, TokenSequences.NoRoom(prompt.Length, t.MaxLength));
            return answer[..room];
        }
    }
}

/// <summary>Token-level helpers shared by the encoders and batch builders.</summary>
public static class TokenSequences
{
    /// <summary>The id used for padding: the tokenizer's PAD, else its EOS, else 0 (padding is masked, so any id works).</summary>
    public static int PadId(ITokenizer tokenizer) => tokenizer.PadId ?? tokenizer.EosId ?? 0;

    /// <summary>
    /// A record's rendering: an error the chat template raises on it (Gemma's "roles must alternate") is that record's,
    /// naming its file, line and field, so --skip-bad-records skips it like any other bad record.
    /// </summary>
    public static T Rendered<T>(RecordSource source, string field, Func<T> render)
    {
        try { return render(); }
        catch (Text.Jinja.JinjaException e) { throw new BadRecordException(source, field, e.Message); }
    }

    internal static int RequireEos(ITokenizer tokenizer) => tokenizer.EosId ?? throw new UserInputException(tokenizer.EosToken is { } named
        ? $"tokenizer_config.json's \"eos_token\" is \"{named}\", which is not a token of tokenizer.json's vocabulary, so completions cannot be ended with it; name a token the vocabulary holds."
        : "the tokenizer has no EOS token, so completions cannot be ended with one; set \"eos_token\" in tokenizer_config.json or turn off appending EOS.");

    /// <summary>
    /// The completion ended by EOS. Text used verbatim gets it unless it already ends with it (TRL's
    /// <c>endswith(eos_token)</c>: an EOS inside, between documents, still ends with one); a turn rendered by a chat
    /// template gets it unless it already holds it (a template that ends the turn with EOS and a newline, as Qwen's
    /// <c>&lt;|im_end|&gt;\n</c>, must not get a second one).
    /// </summary>
    internal static int[] WithEos(int[] ids, int? eos, bool templated) =>
        eos is not { } e || (templated ? Array.IndexOf(ids, e) >= 0 : ids.Length > 0 && ids[^1] == e) ? ids : [.. ids, e];

    /// <summary>
    /// Rendered text as training tokenizes a prompt: special tokens written in the text map to their ids, the
    /// tokenizer adds its special tokens (e.g. BOS), and a BOS the chat template already wrote is not doubled.
    /// </summary>
    public static int[] EncodeRendered(ITokenizer tokenizer, string text) => DropDoubledBos(tokenizer.Encode(text, addSpecialTokens: true), tokenizer);

    /// <summary>A template that writes BOS as text plus a tokenizer that adds BOS gives two; keep one.</summary>
    internal static int[] DropDoubledBos(int[] ids, ITokenizer tokenizer) =>
        tokenizer.BosId is { } bos && ids.Length >= 2 && ids[0] == bos && ids[1] == bos ? ids[1..] : ids;

    internal static string TooLong(int prompt, int completion, int max, bool hasPrompt) =>
        (hasPrompt
            ? $"the record is {prompt + completion} tokens after tokenization (prompt {prompt} + completion {completion} with EOS)"
            : $"the record is {completion} tokens after tokenization (with EOS)")
        + $", longer than the max length of {max}; raise the max length, shorten the record, skip bad records, or turn on truncation (keeps the end of the prompt and the start of the completion).";

    internal static string NoRoom(int prompt, int max) =>
        $"the prompt is {prompt} tokens after tokenization, leaving no room for the completion within the max length of {max}; set a max prompt length below the max length so truncation keeps room for the completion.";
}
