using AlignSharp.Training.Data;

namespace AlignSharp.Tests.Data;

public class TokenizationTests
{
    private const int X = SftSequence.IgnoreIndex;
    private static readonly RecordSource Src = new("data.jsonl", 1);
    private static int T(char c) => CharTokenizer.Offset + c;

    private static SftExample Pc(string prompt, string completion) => new(ChatContent.FromText(prompt), ChatContent.FromText(completion), Src);

    [Fact]
    public void SftTokenizesTheWholeTextWhereEachBoundaryFallsBetweenTokens()
    {
        // A Llama 2 tokenizer puts ▁ before every text it is given: " world" alone starts with a lone ▁, which
        // "Hi world" (what TRL tokenizes, and what generation meets) does not have.
        var tok = AlignSharp.Tests.Text.TokenizerFixtures.Load(AlignSharp.Tests.Text.TokenizerFixtures.Small("llama2-small"));
        var whole = tok.Encode("Hi world", addSpecialTokens: true);
        var prompt = tok.Encode("Hi", addSpecialTokens: true);
        Assert.Equal(prompt, whole[..prompt.Length]);
        Assert.NotEqual(whole[prompt.Length..], tok.Encode(" world", addSpecialTokens: false));
        var s = SftEncoder.Encode(Pc("Hi", " world"), tok, ChatTemplate.ChatMl, new SftEncodingOptions());
        Assert.Equal([.. whole, tok.EosId!.Value], s.Ids);
        Assert.Equal([.. Enumerable.Repeat(X, prompt.Length), .. whole[prompt.Length..], tok.EosId!.Value], s.Labels);

        // A boundary inside a token ("<eo" + "s>x", where the whole text holds the token <eos>): each piece on its own,
        // the boundary exact.
        var chars = new CharTokenizer(addsBos: false);
        var cut = SftEncoder.Encode(Pc("<eo", "s>x"), chars, ChatTemplate.ChatMl, new SftEncodingOptions());
        Assert.Equal([T('<'), T('e'), T('o'), T('s'), T('>'), T('x'), CharTokenizer.Eos], cut.Ids);
        Assert.Equal([X, X, X, T('s'), T('>'), T('x'), CharTokenizer.Eos], cut.Labels);
    }

    [Fact]
    public void PromptTokensAreMaskedAndEosIsAppended()
    {
        var s = SftEncoder.Encode(Pc("ab", "cd"), new CharTokenizer(), ChatTemplate.ChatMl, new SftEncodingOptions());
        Assert.Equal([CharTokenizer.Bos, T('a'), T('b'), T('c'), T('d'), CharTokenizer.Eos], s.Ids);
        Assert.Equal([X, X, X, T('c'), T('d'), CharTokenizer.Eos], s.Labels);
        Assert.Equal(3, s.LossTokenCount);

        var all = SftEncoder.Encode(Pc("ab", "cd"), new CharTokenizer(), ChatTemplate.ChatMl, new SftEncodingOptions { Loss = LossOn.AllTokens });
        Assert.Equal([X, T('a'), T('b'), T('c'), T('d'), CharTokenizer.Eos], all.Labels);
    }

    [Fact]
    public void EosIsNotDoubledAndCanBeTurnedOff()
    {
        var s = SftEncoder.Encode(Pc("a", "b<eos>"), new CharTokenizer(addsBos: false), ChatTemplate.ChatMl, new SftEncodingOptions());
        Assert.Equal([T('a'), T('b'), CharTokenizer.Eos], s.Ids);
        var off = SftEncoder.Encode(Pc("a", "b"), new CharTokenizer(addsBos: false), ChatTemplate.ChatMl, new SftEncodingOptions { AppendEos = false });
        Assert.Equal([T('a'), T('b')], off.Ids);
        var e = Assert.Throws<UserInputException>(() => SftEncoder.Encode(Pc("a", "b"), new CharTokenizer(hasEos: false), ChatTemplate.ChatMl, new SftEncodingOptions()));
        Assert.Contains("no EOS token", e.Message);
    }

    [Fact]
    public void TextRecordsTrainOnEveryToken()
    {
        var s = SftEncoder.Encode(new SftExample(null, ChatContent.FromText("hey"), Src), new CharTokenizer(), ChatTemplate.Plain, new SftEncodingOptions());
        Assert.Equal([CharTokenizer.Bos, T('h'), T('e'), T('y'), CharTokenizer.Eos], s.Ids);
        Assert.Equal([X, T('h'), T('e'), T('y'), CharTokenizer.Eos], s.Labels);
    }

    [Fact]
    public void ConversationTrainsOnAssistantTurnsWithExactSegmentBoundaries()
    {
        var tok = new CharTokenizer();
        var example = new SftExample(
            ChatContent.FromMessages(ChatMessage.User("Hi"), ChatMessage.Assistant("Yo"), ChatMessage.User("Ok")),
            ChatContent.FromMessages(ChatMessage.Assistant("Bye")), Src) { PromptField = "messages", CompletionField = "messages" };
        var s = SftEncoder.Encode(example, tok, ChatTemplate.ChatMl, new SftEncodingOptions());
        int[] expected =
        [
            .. tok.Encode("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", true),
            .. tok.Encode("Yo<|im_end|>\n", false),
            .. tok.Encode("<|im_start|>user\nOk<|im_end|>\n<|im_start|>assistant\n", false),
            .. tok.Encode("Bye<|im_end|>\n", false),
            CharTokenizer.Eos,
        ];
        Assert.Equal(expected, s.Ids);
        string Trained(int[] labels) => tok.Decode(labels.Where(l => l != X).ToArray());
        Assert.Equal("Yo<|im_end|>\nBye<|im_end|>\n<eos>", Trained(s.Labels));
        var final = SftEncoder.Encode(example, tok, ChatTemplate.ChatMl, new SftEncodingOptions { Loss = LossOn.FinalTurn });
        Assert.Equal("Bye<|im_end|>\n<eos>", Trained(final.Labels));
        Assert.Equal(s.Ids, final.Ids);
    }

    [Fact]
    public void TemplateBosAndTokenizerBosAreNotDoubled()
    {
        var tok = new CharTokenizer(bos: CharTokenizer.BeginOfText);
        var example = new SftExample(ChatContent.FromMessages(ChatMessage.User("Hi")), ChatContent.FromText("Yo"), Src);
        var s = SftEncoder.Encode(example, tok, ChatTemplate.Llama3, new SftEncodingOptions());
        Assert.Equal(CharTokenizer.BeginOfText, s.Ids[0]);
        Assert.NotEqual(CharTokenizer.BeginOfText, s.Ids[1]);
        Assert.Equal("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nYo<|eot_id|><eos>", tok.Decode(s.Ids));
    }

    [Fact]
    public void TruncationKeepsThePromptEndAndTheCompletionStart()
    {
        var o = new SftEncodingOptions { Truncation = new TruncationOptions { MaxLength = 6, MaxPromptLength = 3, Overlong = OverlongRecords.Truncate } };
        var s = SftEncoder.Encode(Pc("abcdef", "xyz"), new CharTokenizer(addsBos: false), ChatTemplate.ChatMl, o);
        // Prompt "abcdef" keeps "def"; completion "xyz"+EOS (4) keeps its first 6 − 3 = 3 tokens, so EOS is cut.
        Assert.Equal([T('d'), T('e'), T('f'), T('x'), T('y'), T('z')], s.Ids);
        Assert.Equal([X, X, X, T('x'), T('y'), T('z')], s.Labels);

        // Without a prompt limit the prompt stays whole and the completion is cut to fit.
        var s2 = SftEncoder.Encode(Pc("abc", "vwxyz"), new CharTokenizer(addsBos: false), ChatTemplate.ChatMl,
            o with { Truncation = o.Truncation with { MaxPromptLength = null } });
        Assert.Equal([T('a'), T('b'), T('c'), T('v'), T('w'), T('x')], s2.Ids);

        // Records that fit are untouched.
        var s3 = SftEncoder.Encode(Pc("ab", "c"), new CharTokenizer(addsBos: false), ChatTemplate.ChatMl, o);
        Assert.Equal([T('a'), T('b'), T('c'), CharTokenizer.Eos], s3.Ids);
    }

    [Fact]
    public void ConversationTruncationKeepsTheMasksOfTheKeptTokens()
    {
        var tok = new CharTokenizer(addsBos: false);
        var example = new SftExample(ChatContent.FromMessages(ChatMessage.User("Hi"), ChatMessage.Assistant("Yo"), ChatMessage.User("Ok")),
            ChatContent.FromMessages(ChatMessage.Assistant("Bye")), Src) { PromptField = "messages", CompletionField = "messages" };
        var o = new SftEncodingOptions { Truncation = new TruncationOptions { MaxLength = 64, MaxPromptLength = 22, Overlong = OverlongRecords.Truncate } };
        var s = SftEncoder.Encode(example, tok, ChatTemplate.Plain, o);
        // Plain prompt: "User: Hi\nAssistant: Yo\nUser: Ok\nAssistant:" (42 tokens) keeps its last 22; the kept
        // part of the earlier assistant turn still carries loss (but not position 0, which nothing predicts).
        Assert.Equal("Yo\nUser: Ok\nAssistant: Bye\n<eos>", tok.Decode(s.Ids));
        Assert.Equal("o\n Bye\n<eos>", tok.Decode(s.Labels.Where(l => l != X).ToArray()));
    }

    [Fact]
    public void APromptThatLeavesNoRoomIsABadRecordEvenWhenTruncating()
    {
        var o = new SftEncodingOptions { Truncation = new TruncationOptions { MaxLength = 4, Overlong = OverlongRecords.Truncate } };
        var e = Assert.Throws<BadRecordException>(() => SftEncoder.Encode(Pc("abcde", "x"), new CharTokenizer(addsBos: false), ChatTemplate.ChatMl, o));
        Assert.Equal("data.jsonl:1: field \"prompt\": the prompt is 5 tokens after tokenization, leaving no room for the completion within the max length of 4; set a max prompt length below the max length so truncation keeps room for the completion.", e.Message);
    }

    [Fact]
    public void InvalidTruncationOptionsAreUserErrors()
    {
        Assert.Throws<UserInputException>(() => new TruncationOptions { MaxLength = 1 }.Validate());
        var e = Assert.Throws<UserInputException>(() => new TruncationOptions { MaxLength = 8, MaxPromptLength = 8 }.Validate());
        Assert.Contains("max prompt length", e.Message);
    }

    [Fact]
    public void PreferencePairsTokenizePromptOnceAndEachAnswerSeparately()
    {
        var tok = new CharTokenizer();
        var pair = new PreferencePair(ChatContent.FromText("Q:"), ChatContent.FromText(" yes"), ChatContent.FromText(" no"), 0.5f, 2f, Src);
        var t = PreferenceEncoder.Encode(pair, tok, ChatTemplate.ChatMl, new PreferenceEncodingOptions());
        Assert.Equal([CharTokenizer.Bos, T('Q'), T(':')], t.Prompt);
        Assert.Equal([T(' '), T('y'), T('e'), T('s'), CharTokenizer.Eos], t.Chosen);
        Assert.Equal([T(' '), T('n'), T('o'), CharTokenizer.Eos], t.Rejected);
        Assert.Equal((0.5f, 2f, 8), (t.Margin, t.Weight, t.Length));

        var conv = new PreferencePair(ChatContent.FromMessages(ChatMessage.User("Hi")), ChatContent.FromText("A"), ChatContent.FromText("B"), 0, 1, Src);
        var tc = PreferenceEncoder.Encode(conv, tok, ChatTemplate.ChatMl, new PreferenceEncodingOptions());
        Assert.Equal(tok.Encode("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", true), tc.Prompt);
        Assert.Equal([.. tok.Encode("A<|im_end|>\n", false), CharTokenizer.Eos], tc.Chosen);
    }

    [Fact]
    public void PreferenceTruncationCutsThePromptOnceAndEachAnswerToFit()
    {
        var tok = new CharTokenizer(addsBos: false);
        var pair = new PreferencePair(ChatContent.FromText("abcdef"), ChatContent.FromText("xy"), ChatContent.FromText("uvwxyz"), 0, 1, Src);
        var o = new PreferenceEncodingOptions { Truncation = new TruncationOptions { MaxLength = 7, MaxPromptLength = 4, Overlong = OverlongRecords.Truncate } };
        var t = PreferenceEncoder.Encode(pair, tok, ChatTemplate.ChatMl, o);
        Assert.Equal([T('c'), T('d'), T('e'), T('f')], t.Prompt);
        Assert.Equal([T('x'), T('y'), CharTokenizer.Eos], t.Chosen);
        Assert.Equal([T('u'), T('v'), T('w')], t.Rejected);
    }

    [Fact]
    public void EncodeManySkipsOverlongRecordsWhenAsked()
    {
        var examples = new[] { Pc("a", "b"), Pc("a", "bbbbbbbbbb"), Pc("c", "d") };
        var o = new SftEncodingOptions { Truncation = new TruncationOptions { MaxLength = 5 }, SkipBadRecords = true };
        var set = SftEncoder.Encode(examples, new CharTokenizer(), ChatTemplate.ChatMl, o);
        Assert.Equal(2, set.Records.Count);
        Assert.Equal(1, set.Skipped);
        Assert.Contains("longer than the max length of 5", Assert.Single(set.SkipExamples));
    }
}
