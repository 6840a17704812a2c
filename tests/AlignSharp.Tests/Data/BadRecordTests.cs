using AlignSharp.Training.Data;

namespace AlignSharp.Tests.Data;

public sealed class BadRecordTests : IDisposable
{
    private readonly TempFiles _files = new();
    public void Dispose() => _files.Dispose();

    public static TheoryData<DatasetKind, string, string> Cases => new()
    {
        // kind, the record on line 3, the message after "data.jsonl:3: "
        { DatasetKind.Sft, """{"prompt": "a", "completion": "b",}""", "malformed JSON at byte 35 of the line: The JSON object contains a trailing comma at the end which is not supported in this mode." },
        { DatasetKind.Sft, "\"just a string\"", "expected a JSON object per line, found a string." },
        { DatasetKind.Sft, """{"id": 3, "answer": "x"}""", "no known fields (found \"id\", \"answer\"); a record is one of " },
        { DatasetKind.Sft, """{"completion": "b"}""", "field \"prompt\": missing." },
        { DatasetKind.Sft, """{"prompt": "a", "completion": 5}""", "field \"completion\": expected a string or a list of messages, found a number." },
        { DatasetKind.Sft, """{"prompt": "a", "completion": " \t"}""", "field \"completion\": is empty (only whitespace)." },
        { DatasetKind.Sft, """{"prompt": "", "completion": ""}""", "field \"completion\": is empty and so is the prompt: there is nothing to condition on or learn but an EOS." },
        { DatasetKind.Sft, """{"prompt": "a", "completion": null}""", "field \"completion\": is null; a value is required." },
        { DatasetKind.Sft, """{"text": ["a"]}""", "field \"text\": expected a string, found a list." },
        { DatasetKind.Sft, """{"text": " \n "}""", "field \"text\": is empty (only whitespace)." },
        { DatasetKind.Sft, """{"messages": [{"role": "user", "content": "hi"}, {"role": "bot", "content": "yo"}]}""", "field \"messages[1].role\": unknown role \"bot\"; expected \"system\", \"user\", \"assistant\" or \"tool\"." },
        { DatasetKind.Sft, """{"messages": [{"role": "user"}]}""", "field \"messages[0].content\": missing." },
        { DatasetKind.Sft, """{"messages": [{"role": "user", "content": 1}]}""", "field \"messages[0].content\": expected a string, found a number." },
        { DatasetKind.Sft, """{"messages": []}""", "field \"messages\": is an empty list of messages." },
        { DatasetKind.Sft, """{"messages": [{"role": "assistant", "content": "x"}, {"role": "user", "content": "hi"}]}""", "field \"messages\": the last message is a user turn; a conversation for SFT must end with the assistant turn it trains on." },
        { DatasetKind.Sft, """{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": " "}]}""", "field \"messages[1].content\": the final assistant turn (the completion) is empty (only whitespace)." },
        { DatasetKind.Preference, """{"prompt": "a", "chosen": "b"}""", "field \"rejected\": missing." },
        { DatasetKind.Preference, """{"prompt": "a", "chosen": "  ", "rejected": "c"}""", "field \"chosen\": is empty (only whitespace)." },
        { DatasetKind.Preference, """{"prompt": "a", "chosen": "b", "rejected": "\n"}""", "field \"rejected\": is empty (only whitespace)." },
        { DatasetKind.Preference, """{"prompt": "a", "chosen": "b", "rejected": "c", "margin": "big"}""", "field \"margin\": expected a number, found a string." },
        { DatasetKind.Preference, """{"prompt": "a", "chosen": [{"role": "user", "content": "b"}], "rejected": "c"}""", "field \"chosen[0].role\": is \"user\"; an answer holds assistant messages only (put the conversation so far in \"prompt\")." },
        { DatasetKind.Preference, """{"chosen": "Sure thing", "rejected": "No"}""", "field \"chosen\": \"chosen\" and \"rejected\" share no beginning, so no common prompt can be found; give an explicit \"prompt\" field." },
        { DatasetKind.Preference, """{"chosen": "\n\nHuman: hi\n\nAssistant: hello", "rejected": "\n\nHuman: hi\n\nAssistant:  "}""", "field \"rejected\": the answer after the shared prompt is empty (only whitespace)." },
        { DatasetKind.Preference, """{"prompt": "p", "completions": ["a", "b", "c"], "ranking": [0, 4, 1]}""", "field \"ranking\": index 4 is out of range for 3 completions." },
        { DatasetKind.Preference, """{"prompt": "p", "completions": ["a", "b", "c"], "ranking": [[0, 2], 2, 1]}""", "field \"ranking\": index 2 appears more than once; a ranking must mention every completion index exactly once." },
        { DatasetKind.Preference, """{"prompt": "p", "completions": ["a", "b", "c"], "ranking": [2, 0]}""", "field \"ranking\": index 1 is missing; a ranking must mention every completion index exactly once (3 completions)." },
        { DatasetKind.Preference, """{"prompt": "p", "completions": ["a", "b", "c"], "ranking": [0, 1.5, 2]}""", "field \"ranking\": 1.5 is not a completion index (an integer from 0 to 2)." },
        { DatasetKind.Preference, """{"prompt": "p", "completions": ["a", "b"], "ranking": "0>1"}""", "field \"ranking\": expected a list of completion indices from best to worst (ties as nested lists, e.g. [[0, 2], 1]), found a string." },
        { DatasetKind.Preference, """{"prompt": "p", "completions": ["a", "  "], "ranking": [0, 1]}""", "field \"completions[1]\": is empty (only whitespace)." },
        { DatasetKind.Preference, """{"prompt": "p", "completions": ["a"], "ranking": [0]}""", "field \"completions\": has 1 completion; a ranking needs at least 2." },
        { DatasetKind.Preference, """{"prompt": "p", "completions": ["a", "b"]}""", "field \"ranking\": missing." },
        { DatasetKind.Prompt, """{"prompt": ""}""", "field \"prompt\": is empty." },
        { DatasetKind.Prompt, """{"text": "abc"}""", "field \"text\": a {\"text\"} record has no prompt; prompts for RL come from a \"prompt\" (or \"messages\") field." },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void ErrorNamesFileLineAndField(DatasetKind kind, string record, string message)
    {
        var path = _files.Write("data.jsonl", "\n\n" + record + "\n");
        var e = Assert.ThrowsAny<UserInputException>(() => DatasetLoader.Load(path, new DataLoadOptions { ExpectedKind = kind }));
        Assert.StartsWith($"{path}:3: {message}", e.Message);
        if (message.StartsWith("field", StringComparison.Ordinal)) Assert.Equal($"{path}:3: {message}", e.Message);
        var bad = Assert.IsType<BadRecordException>(e);
        Assert.Equal(3, bad.Record.Line);
    }

    [Fact]
    public void SpecExampleMessage()
    {
        var path = _files.Lines("data.jsonl", Enumerable.Repeat("""{"prompt": "p", "completions": ["a", "b", "c"], "ranking": [0, 1, 2]}""", 16)
            .Append("""{"prompt": "p", "completions": ["a", "b", "c"], "ranking": [4, 1, 0]}""").ToArray());
        var e = Assert.Throws<BadRecordException>(() => DatasetLoader.LoadPreferences(path));
        Assert.Equal($"{path}:17: field \"ranking\": index 4 is out of range for 3 completions.", e.Message);
        Assert.Equal(("ranking", 17), (e.Field, e.Record.Line));
    }

    [Fact]
    public void SkipBadRecordsCountsThemAndKeepsAFewMessages()
    {
        var path = _files.Lines("data.jsonl",
            """{"prompt": "a", "completion": "b"}""",
            """{"prompt": "a", "completion": " "}""",
            """not json""",
            "",
            """{"prompt": "a"}""",
            """{"prompt": "c", "completion": "d"}""",
            """{"messages": [{"role": "robot", "content": "x"}]}""");
        var o = new DataLoadOptions { SkipBadRecords = true, MaxReportedSkips = 2 };
        var set = DatasetLoader.LoadSft(path, o);
        Assert.Equal(["b", "d"], set.Records.Select(r => r.Completion.Text));
        Assert.Equal([1, 6], set.Records.Select(r => r.Source.Line));
        Assert.Equal(4, set.Skipped);
        Assert.Equal(2, set.SkipExamples.Count);
        Assert.Equal($"{path}:2: field \"completion\": is empty (only whitespace).", set.SkipExamples[0]);
        Assert.Equal($"{path}:3: malformed JSON at byte 2 of the line: 'not json' is an invalid JSON literal. Expected the literal 'null'.", set.SkipExamples[1]);
        Assert.StartsWith("skipped 4 bad records, e.g.:\n  ", set.Warning);

        // Without skipping, the first bad record stops the load.
        Assert.Equal($"{path}:2: field \"completion\": is empty (only whitespace).", Assert.Throws<BadRecordException>(() => DatasetLoader.LoadSft(path)).Message);
    }

    [Fact]
    public void AFileWithOnlyBadRecordsIsAnErrorEvenWhenSkipping()
    {
        var path = _files.Lines("data.jsonl", """{"prompt": "a", "completion": " "}""");
        var e = Assert.Throws<UserInputException>(() => DatasetLoader.LoadSft(path, new DataLoadOptions { SkipBadRecords = true }));
        Assert.Equal($"{path}: no usable records; all 1 were bad, e.g. {path}:1: field \"completion\": is empty (only whitespace).", e.Message);
    }

    [Fact]
    public void JsonArrayElementErrorsNameTheirLine()
    {
        var path = _files.Write("data.json", """
            [
              {"prompt": "a", "completion": "b"},
              "oops",
              {"prompt": "a",
               "completion": 3}
            ]
            """);
        var e = Assert.Throws<BadRecordException>(() => DatasetLoader.LoadSft(path));
        Assert.Equal($"{path}:3: element 1 of the JSON array is a string; expected a JSON object (a record).", e.Message);
        var set = DatasetLoader.LoadSft(path, new DataLoadOptions { SkipBadRecords = true });
        Assert.Single(set.Records);
        Assert.Equal(2, set.Skipped);
        Assert.Equal($"{path}:4: field \"completion\": expected a string or a list of messages, found a number.", set.SkipExamples[1]);
    }

    [Fact]
    public void AMalformedJsonArrayStopsEvenWhenSkipping()
    {
        var path = _files.Write("data.json", "[\n  {\"prompt\": \"a\", \"completion\": \"b\"},\n  {\"prompt\": \"a\" \"completion\": \"b\"}\n]");
        var e = Assert.Throws<UserInputException>(() => DatasetLoader.LoadSft(path, new DataLoadOptions { SkipBadRecords = true }));
        Assert.StartsWith($"{path}:3: malformed JSON", e.Message);
    }

    [Fact]
    public void AnOverlongRecordIsAnErrorNamingItsField()
    {
        var path = _files.Lines("data.jsonl", """{"prompt": "abc", "completion": "d"}""", """{"prompt": "abc", "completion": "defghij"}""");
        var examples = DatasetLoader.LoadSft(path).Records;
        var tok = new CharTokenizer(addsBos: false);
        var o = new SftEncodingOptions { Truncation = new TruncationOptions { MaxLength = 8 } };
        var e = Assert.Throws<BadRecordException>(() => SftEncoder.Encode(examples, tok, ChatTemplate.ChatMl, o));
        Assert.Equal($"{path}:2: field \"completion\": the record is 11 tokens after tokenization (prompt 3 + completion 8 with EOS), longer than the max length of 8; " +
                     "raise the max length, shorten the record, skip bad records, or turn on truncation (keeps the end of the prompt and the start of the completion).", e.Message);

        var skipped = SftEncoder.Encode(examples, tok, ChatTemplate.ChatMl, o with { SkipBadRecords = true });
        Assert.Single(skipped.Records);
        Assert.Equal(1, skipped.Skipped);

        var pairs = _files.Lines("pairs.jsonl", """{"prompt": "ab", "chosen": "c", "rejected": "defghijk"}""");
        var pe = Assert.Throws<BadRecordException>(() => PreferenceEncoder.Encode(DatasetLoader.LoadPreferences(pairs).Records, tok, ChatTemplate.ChatMl,
            new PreferenceEncodingOptions { Truncation = new TruncationOptions { MaxLength = 8 } }));
        Assert.Equal(("rejected", 1), (pe.Field, pe.Record.Line));

        var longPrompt = Assert.Throws<BadRecordException>(() => SftEncoder.Encode(examples, tok, ChatTemplate.ChatMl,
            new SftEncodingOptions { Truncation = new TruncationOptions { MaxLength = 100, MaxPromptLength = 2 } }));
        Assert.Equal($"{path}:1: field \"prompt\": the prompt is 3 tokens after tokenization, longer than the max prompt length of 2; raise the max prompt length, shorten the prompt, or turn on truncation (keeps the end of the prompt).", longPrompt.Message);
    }
}
