using AlignSharp.Training.Data;

namespace AlignSharp.Tests.Data;

public sealed class DatasetFormatTests : IDisposable
{
    private readonly TempFiles _files = new();
    public void Dispose() => _files.Dispose();

    private const string SftLines = """
        {"prompt": "2+2=", "completion": "4", "id": 7}

        {"text": "The sky is blue."}
        {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Bye"}, {"role": "Assistant", "content": "Goodbye."}]}
        """;

    private static void AssertSft(IReadOnlyList<SftExample> r, string path, int[] lines)
    {
        Assert.Equal(3, r.Count);
        Assert.Equal("2+2=", r[0].Prompt!.Text);
        Assert.Equal("4", r[0].Completion.Text);
        Assert.Null(r[1].Prompt);
        Assert.Equal("The sky is blue.", r[1].Completion.Text);
        Assert.Equal("text", r[1].CompletionField);
        var prompt = r[2].Prompt!.Messages!;
        Assert.Equal([ChatRole.System, ChatRole.User, ChatRole.Assistant, ChatRole.User], prompt.Select(m => m.Role));
        Assert.Equal("Hello!", prompt[2].Content);
        Assert.Equal(ChatMessage.Assistant("Goodbye."), Assert.Single(r[2].Completion.Messages!));
        Assert.Equal(lines, r.Select(x => x.Source.Line));
        Assert.All(r, x => Assert.Equal(path, x.Source.File));
    }

    [Fact]
    public void SftJsonlWithBlankLinesAndBom()
    {
        var path = _files.Write("sft.jsonl", SftLines.Replace("\n", "\r\n") + "\r\n\r\n", bom: true);
        Assert.Equal(DatasetKind.Sft, DatasetLoader.DetectKind(path));
        var loaded = DatasetLoader.Load(path);
        Assert.Equal(DatasetKind.Sft, loaded.Kind);
        AssertSft(loaded.Sft!.Records, path, [1, 3, 4]);
        Assert.Equal(0, loaded.Skipped);
        Assert.Null(loaded.Warning);
    }

    [Fact]
    public void SftJsonArrayGivesTheSameRecordsWithTheLineOfEachObject()
    {
        var path = _files.Write("sft.json", """

            [
              {"prompt": "2+2=",
               "completion": "4", "id": 7},
              {"text": "The sky is blue."},

              {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                            {"role": "user", "content": "Bye"}, {"role": "Assistant", "content": "Goodbye."}]}
            ]
            """, bom: true);
        AssertSft(DatasetLoader.LoadSft(path).Records, path, [3, 5, 7]);
    }

    [Fact]
    public void PreferencePairsAsTextAndMessagesWithMargin()
    {
        var path = _files.Lines("prefs.jsonl",
            """{"prompt": "Capital of France?", "chosen": " Paris.", "rejected": " Lyon.", "margin": 1.5}""",
            """{"prompt": [{"role": "user", "content": "Say hi"}], "chosen": [{"role": "assistant", "content": "Hi!"}], "rejected": "Go away.", "margin": null}""");
        var loaded = DatasetLoader.Load(path);
        Assert.Equal(DatasetKind.Preference, loaded.Kind);
        var p = loaded.Preferences!.Records;
        Assert.Equal(2, p.Count);
        Assert.Equal(("Capital of France?", " Paris.", " Lyon.", 1.5f, 1f), (p[0].Prompt.Text, p[0].Chosen.Text, p[0].Rejected.Text, p[0].Margin, p[0].Weight));
        Assert.Equal(ChatMessage.User("Say hi"), Assert.Single(p[1].Prompt.Messages!));
        Assert.Equal(ChatMessage.Assistant("Hi!"), Assert.Single(p[1].Chosen.Messages!));
        Assert.Equal("Go away.", p[1].Rejected.Text);
        Assert.Equal((0f, 1f), (p[1].Margin, p[1].Weight));
        Assert.Equal(new RecordSource(path, 2), p[1].Source);
    }

    // Anthropic HH-RLHF lines: whole transcripts, identical up to the final assistant answer.
    private const string HhTea = """{"chosen": "\n\nHuman: How do I make a cup of tea?\n\nAssistant: Boil water, add a tea bag, and steep for three minutes.\n\nHuman: How long should green tea steep?\n\nAssistant: About two minutes, in water just below boiling.", "rejected": "\n\nHuman: How do I make a cup of tea?\n\nAssistant: Boil water, add a tea bag, and steep for three minutes.\n\nHuman: How long should green tea steep?\n\nAssistant: About ten minutes at a rolling boil."}""";
    private const string HhShort = """{"chosen": "\n\nHuman: What is 7 times 8?\n\nAssistant: 56", "rejected": "\n\nHuman: What is 7 times 8?\n\nAssistant: I can't do math.", "margin": 2}""";

    [Fact]
    public void HhTranscriptsSplitAtTheLastSharedAssistantMarker()
    {
        var path = _files.Lines("hh.jsonl", HhTea, HhShort);
        var p = DatasetLoader.LoadPreferences(path).Records;
        Assert.Equal(2, p.Count);
        // The answers share " About t", but the prompt stops at the last "\n\nAssistant:" inside the shared prefix.
        Assert.Equal("\n\nHuman: How do I make a cup of tea?\n\nAssistant: Boil water, add a tea bag, and steep for three minutes.\n\nHuman: How long should green tea steep?\n\nAssistant:", p[0].Prompt.Text);
        Assert.Equal(" About two minutes, in water just below boiling.", p[0].Chosen.Text);
        Assert.Equal(" About ten minutes at a rolling boil.", p[0].Rejected.Text);
        Assert.Equal("\n\nHuman: What is 7 times 8?\n\nAssistant:", p[1].Prompt.Text);
        Assert.Equal((" 56", " I can't do math.", 2f), (p[1].Chosen.Text, p[1].Rejected.Text, p[1].Margin));
    }

    [Fact]
    public void ImplicitPromptSplitRule()
    {
        Assert.True(ImplicitPrompt.TrySplit("\n\nHuman: a\n\nAssistant: x", "\n\nHuman: a\n\nAssistant: y", out var prompt, out var c, out var r, out _));
        Assert.Equal(("\n\nHuman: a\n\nAssistant:", " x", " y"), (prompt, c, r));
        // Identical transcripts: the prompt still ends at the last marker.
        Assert.True(ImplicitPrompt.TrySplit("\n\nHuman: a\n\nAssistant: x", "\n\nHuman: a\n\nAssistant: x", out prompt, out c, out _, out _));
        Assert.Equal(("\n\nHuman: a\n\nAssistant:", " x"), (prompt, c));
        // The transcripts differ before any assistant turn.
        Assert.False(ImplicitPrompt.TrySplit("\n\nHuman: a\n\nAssistant: x", "\n\nHuman: b\n\nAssistant: x", out _, out _, out _, out var problem));
        Assert.Contains("share no", problem);
        // A marker cut by the end of the shared prefix does not count.
        Assert.False(ImplicitPrompt.TrySplit("\n\nHuman: a\n\nAssistant: x", "\n\nHuman: a\n\nAssist", out _, out _, out _, out _));
        // Texts that are no HH transcripts split as TRL's extract_prompt does (its documented example): the common
        // prefix, the space before the answers given to them.
        Assert.True(ImplicitPrompt.TrySplit("The sky is blue.", "The sky is green.", out prompt, out c, out r, out _));
        Assert.Equal(("The sky is", " blue.", " green."), (prompt, c, r));
        Assert.True(ImplicitPrompt.TrySplit("Answer: yes", "Answer: no", out prompt, out c, out r, out _));
        Assert.Equal(("Answer:", " yes", " no"), (prompt, c, r));
        Assert.False(ImplicitPrompt.TrySplit("Sure", "No", out _, out _, out _, out problem));
        Assert.Contains("share no beginning", problem);
        Assert.False(ImplicitPrompt.TrySplit("Yes", "Yes, sure", out _, out _, out _, out problem));
        Assert.Contains("is the beginning of the other", problem);
    }

    [Fact]
    public void ImplicitPromptFromMessageTranscripts()
    {
        var path = _files.Lines("hh-messages.jsonl",
            """{"chosen": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}], "rejected": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "What?"}]}""");
        var p = Assert.Single(DatasetLoader.LoadPreferences(path).Records);
        Assert.Equal(ChatMessage.User("Hi"), Assert.Single(p.Prompt.Messages!));
        Assert.Equal("Hello!", Assert.Single(p.Chosen.Messages!).Content);
        Assert.Equal("What?", Assert.Single(p.Rejected.Messages!).Content);
    }

    [Fact]
    public void RankingsBecomeOrderedPairsWithTiesAndWeights()
    {
        var path = _files.Lines("rank.jsonl",
            """{"prompt": "P1", "completions": ["a", "b", "c", "d"], "ranking": [[0, 2], 1, 3], "annotator": "ann-7"}""",
            """{"prompt": "P2", "completions": ["x", "y"], "ranking": [1, 0]}""");
        var pairs = DatasetLoader.LoadPreferences(path).Records;
        // Ranking 1: groups {0,2} > {1} > {3}: pairs (0,1) (2,1) (0,3) (2,3) (1,3) = (16 − (4+1+1))/2 = 5; ranking 2: (1,0).
        Assert.Equal(
            [("P1", "a", "b"), ("P1", "c", "b"), ("P1", "a", "d"), ("P1", "c", "d"), ("P1", "b", "d"), ("P2", "y", "x")],
            pairs.Select(p => (p.Prompt.Text, p.Chosen.Text, p.Rejected.Text)));
        // N = 6 pairs in G = 2 groups: w = N / (G·P_g) = 6/(2·5) = 0.6 for P1, 6/(2·1) = 3 for P2; mean weight 1.
        Assert.Equal([0.6f, 0.6f, 0.6f, 0.6f, 0.6f, 3f], pairs.Select(p => p.Weight));
        Assert.Equal(1.0, pairs.Average(p => (double)p.Weight), 6);
        Assert.All(pairs.Take(5), p => Assert.Equal("ann-7", p.Annotator));
        Assert.Null(pairs[5].Annotator);
        Assert.Equal(("completions[2]", "completions[1]"), (pairs[1].ChosenField, pairs[1].RejectedField));
        Assert.All(pairs, p => Assert.Equal(0f, p.Margin));
    }

    [Fact]
    public void RankingWithoutTiesGivesKChoose2PairsAndAllTiedGivesNone()
    {
        var path = _files.Lines("rank.jsonl",
            """{"prompt": "P", "completions": ["a", "b", "c", "d"], "ranking": [3, 1, 0, 2]}""",
            """{"prompt": "Q", "completions": ["a", "b", "c"], "ranking": [[0, 1.0, 2]]}""");
        var rankings = DatasetLoader.LoadRankings(path).Records;
        Assert.Equal(6, rankings[0].PairCount);
        Assert.Equal([(3, 1), (3, 0), (3, 2), (1, 0), (1, 2), (0, 2)], rankings[0].OrderedPairs());
        Assert.Equal(0, rankings[1].PairCount);
        var pairs = DatasetLoader.LoadPreferences(path).Records;
        Assert.Equal(6, pairs.Count);
        Assert.All(pairs, p => Assert.Equal(1f, p.Weight)); // one group: 6 / (1·6)
    }

    [Fact]
    public void PairsAndRankingsMixedAcrossFilesShareOneWeighting()
    {
        var pairsFile = _files.Lines("pairs.jsonl",
            """{"prompt": "p", "chosen": "a", "rejected": "b"}""",
            """{"prompt": "q", "chosen": "a", "rejected": "b"}""");
        var rankFile = _files.Lines("rank.jsonl", """{"prompt": "r", "completions": ["a", "b", "c"], "ranking": [0, 1, 2]}""");
        var pairs = DatasetLoader.LoadPreferences([pairsFile, rankFile]).Records;
        // N = 2 + 3 = 5, G = 3: plain pair 5/(3·1), ranking pair 5/(3·3).
        Assert.Equal([5f / 3, 5f / 3, 5f / 9, 5f / 9, 5f / 9], pairs.Select(p => p.Weight));
        Assert.Equal(1.0, pairs.Average(p => (double)p.Weight), 6);
    }

    [Fact]
    public void PlainPairsAllGetWeightOne()
    {
        var path = _files.Lines("pairs.jsonl", HhTea, HhShort, """{"prompt": "p", "chosen": "a", "rejected": "b"}""");
        Assert.All(DatasetLoader.LoadPreferences(path).Records, p => Assert.Equal(1f, p.Weight));
    }

    [Fact]
    public void PromptOnlyRecordsAndPromptsFromOtherKinds()
    {
        var path = _files.Lines("prompts.jsonl",
            """{"prompt": "Write a haiku."}""",
            """{"prompt": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"}]}""");
        var loaded = DatasetLoader.Load(path);
        Assert.Equal(DatasetKind.Prompt, loaded.Kind);
        Assert.Equal("Write a haiku.", loaded.Prompts!.Records[0].Prompt.Text);
        Assert.Equal(2, loaded.Prompts.Records[1].Prompt.Messages!.Count);

        var hh = _files.Lines("hh.jsonl", HhShort, SftLines.Split('\n')[3]);
        var prompts = DatasetLoader.Load(hh, new DataLoadOptions { ExpectedKind = DatasetKind.Prompt }).Prompts!.Records;
        Assert.Equal("\n\nHuman: What is 7 times 8?\n\nAssistant:", prompts[0].Prompt.Text);
        Assert.Equal(4, prompts[1].Prompt.Messages!.Count); // the conversation before its final assistant turn
    }

    [Fact]
    public void AFileOfAnotherKindThanExpectedIsAnError()
    {
        var path = _files.Lines("sft.jsonl", """{"prompt": "a", "completion": "b"}""");
        var e = Assert.Throws<BadRecordException>(() => DatasetLoader.Load(path, new DataLoadOptions { ExpectedKind = DatasetKind.Preference }));
        Assert.StartsWith($"{path}:1: expected a preference record", e.Message);
        Assert.Contains("\"prompt\", \"completion\"", e.Message);
    }

    [Fact]
    public void ARecordOfAnotherKindThanTheFirstIsBad()
    {
        var path = _files.Lines("mixed.jsonl", """{"prompt": "a", "completion": "b"}""", """{"prompt": "a", "chosen": "b", "rejected": "c"}""");
        var e = Assert.Throws<BadRecordException>(() => DatasetLoader.Load(path));
        Assert.StartsWith($"{path}:2: expected an SFT record", e.Message);
    }

    [Fact]
    public void EmptyAndMissingFilesAreErrors()
    {
        var empty = _files.Write("empty.jsonl", "\n\n");
        Assert.Equal($"{empty}: holds no records.", Assert.Throws<UserInputException>(() => DatasetLoader.LoadSft(empty)).Message);
        var emptyArray = _files.Write("empty.json", " [ ] ");
        Assert.Equal($"{emptyArray}: holds no records.", Assert.Throws<UserInputException>(() => DatasetLoader.LoadSft(emptyArray)).Message);
        var missing = Path.Combine(_files.Dir, "nope.jsonl");
        Assert.Equal($"{missing}: file not found.", Assert.Throws<UserInputException>(() => DatasetLoader.Load(missing)).Message);
    }
}
