using AlignSharp.Demo;

namespace AlignSharp.Tests.Demo;

public class WorldTests
{
    [Theory]
    [InlineData(" sure! the sky is blue. hope this helps.", 3)]
    [InlineData(" the cow says moo.", 1)]
    [InlineData(" i do not know. buy my gold. buy my gold.", 3)]
    [InlineData(" what a dumb question. the sky is green.", 2)]
    public void GrammaticalResponsesParseIntoTheirSentences(string response, int sentences)
    {
        var parsed = World.Parse(response);
        Assert.True(parsed.Grammatical);
        Assert.Equal(sentences, parsed.Sentences.Count);
    }

    [Theory]
    [InlineData("")]                                   // nothing
    [InlineData(" ")]                                  // no sentence
    [InlineData("sure! the sky is blue.")]             // no leading space
    [InlineData(" sure!  the sky is blue.")]           // double space
    [InlineData(" sure! the sky is blu.")]             // misspelled word
    [InlineData(" sure! the sky is blue")]             // no full stop
    [InlineData(" sure! the sky is blue. ")]           // trailing space
    [InlineData(" the sky says moo.")]                 // a thing cannot say
    [InlineData(" the cow is moo.")]                   // a sound is not a colour
    [InlineData(" sure!the sky is blue.")]             // missing space
    [InlineData(" the skyy is blue.")]                 // unknown subject
    [InlineData(" sure! the sky is blue.\nA: thanks")] // runs on into a new turn
    public void UngrammaticalResponsesAreRejected(string response) => Assert.False(World.IsGrammatical(response));

    [Fact]
    public void AnswerSentencesCarryTheirMeaning()
    {
        var s = World.Parse(" the lion says roar.").Sentences.Single();
        Assert.Equal((SentenceKind.Answer, QuestionKind.Sound, "lion", "roar"), (s.Kind, s.About!.Value, s.Subject, s.Value));
    }

    [Fact]
    public void EveryWrittenResponseIsGrammatical()
    {
        var rng = new Random(3);
        foreach (var style in new[] { ResponseStyle.Demonstrations, ResponseStyle.Corpus })
            for (int i = 0; i < 2000; i++)
            {
                var p = World.DrawPrompt(rng, World.AllPrompts);
                var r = ResponseWriter.Write(p, style, rng);
                Assert.True(World.IsGrammatical(r), r);
            }
    }

    [Fact]
    public void GenerationIsDeterministicPerSeed()
    {
        var (train, _) = World.SplitPrompts(5);
        Assert.Equal(Corpus.Documents(200, train, 11), Corpus.Documents(200, train, 11));
        Assert.NotEqual(Corpus.Documents(200, train, 11), Corpus.Documents(200, train, 12));
        var (a, b) = (World.SplitPrompts(5), World.SplitPrompts(5));
        Assert.Equal(a.Train, b.Train);
        Assert.Equal(a.HeldOut, b.HeldOut);
    }

    [Fact]
    public void HeldOutPromptsAreNewStringsAboutKnownFacts()
    {
        var (train, held) = World.SplitPrompts(0);
        Assert.Equal(320, World.AllPrompts.Count);
        Assert.Equal(320, World.AllPrompts.Select(p => p.Text).Distinct().Count());
        Assert.Equal(80, held.Count);
        Assert.Equal(240, train.Count);
        Assert.Empty(train.Select(p => p.Text).Intersect(held.Select(p => p.Text)));
        // Every subject is asked about in training too, under other wordings.
        foreach (var p in held) Assert.Contains(train, t => t.Subject == p.Subject && t.Kind == p.Kind);
        Assert.Equal("Q: what color is the sky?\nA:", new WorldPrompt(QuestionKind.Color, "sky", 0).Text);
        Assert.Equal("Q: hey, what sound does the owl make?\nA:", new WorldPrompt(QuestionKind.Sound, "owl", 1, 1).Text);
    }

    [Fact]
    public void CorpusDocumentsAreGrammaticalDialoguesOrFactLists()
    {
        foreach (var d in Corpus.Documents(500, World.AllPrompts, 1))
        {
            int a = d.IndexOf("\nA:", StringComparison.Ordinal);
            string response = a >= 0 ? d[(a + 3)..] : " " + d;
            Assert.True(World.IsGrammatical(response), d);
        }
    }
}
