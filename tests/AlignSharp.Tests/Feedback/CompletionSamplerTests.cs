using System.Text.Json.Nodes;
using AlignSharp.Feedback;
using AlignSharp.Models;
using AlignSharp.Tests.Training;
using AlignSharp.Text;

namespace AlignSharp.Tests.Feedback;

public class CompletionSamplerTests
{
    /// <summary>Id 0 is BOS ('^'), id i the i-th character of <paramref name="chars"/>; other characters are dropped.
    /// Enough to drive generation end to end.</summary>
    private sealed class CharTokenizer(string chars) : ITokenizer
    {
        public int VocabSize => chars.Length;
        public int[] Encode(string text, bool addSpecialTokens = true) =>
            (addSpecialTokens ? new[] { 0 } : []).Concat(text.Where(ch => chars.IndexOf(ch) > 0).Select(ch => chars.IndexOf(ch))).ToArray();
        public string Decode(ReadOnlySpan<int> ids, bool skipSpecialTokens = false)
        {
            var decoded = new List<char>();
            foreach (int id in ids) if (id > 0 || !skipSpecialTokens) decoded.Add(chars[id]);
            return new string(decoded.ToArray());
        }
        public int? TokenToId(string token) => null;
        public string? IdToToken(int id) => null;
        public bool IsSpecial(int id) => id == 0;
        public string? BosToken => "^";
        public string? EosToken => null;
        public string? PadToken => null;
        public int? BosId => 0;
        public int? EosId => null;
        public int? PadId => null;
    }

    /// <summary>Letters a..z are ids 1..26.</summary>
    private static CharTokenizer LetterTokenizer() => new("^abcdefghijklmnopqrstuvwxyz");

    /// <summary>' ' 1, '\n' 2, 'a' 3: a vocabulary in which a completion can be only whitespace.</summary>
    private static CharTokenizer SpaceTokenizer() => new("^ \na");

    [Fact]
    public void SamplesKCompletionsPerPromptReproducibly()
    {
        var model = TransformerModel.CreateRandom(ModelPresets.Gpt2(27, 16, 1, 2, 32), seed: 3, std: 0.5f);
        var tokenizer = LetterTokenizer();
        var options = new SamplingOptions { MaxNewTokens = 6, Temperature = 1.5f, Seed = 11, EosIds = [] };
        var calls = new List<int>();
        var first = CompletionSampler.Sample(model, tokenizer, ["hello", "world"], 4, options, (done, _) => calls.Add(done));
        Assert.Equal([1, 2], calls);
        Assert.Equal(2, first.Count);
        Assert.All(first, p =>
        {
            Assert.Equal(4, p.Completions.Count);
            Assert.All(p.Completions, c => Assert.InRange(c.Length, 1, 6));   // 6 tokens; a sampled BOS is special and decodes to nothing
            Assert.All(p.FinishReasons!, r => Assert.Equal("length", r));
            Assert.True(p.Completions.Distinct().Count() > 1, "K samples at temperature 1.5 should not all coincide");
        });
        var again = CompletionSampler.Sample(model, tokenizer, ["hello", "world"], 4, options);
        Assert.Equal(first.SelectMany(p => p.Completions), again.SelectMany(p => p.Completions));

        var settings = JsonNode.Parse(CompletionSampler.DescribeSettings("/m", 4, options))!;
        Assert.Equal(4, (int)settings["k"]!);
        Assert.Equal(1.5f, (float)settings["temperature"]!);
        Assert.Equal(11, (int)settings["seed"]!);
        Assert.Equal(6, (int)settings["max_new_tokens"]!);
    }

    [Fact]
    public void GreedyIsRefusedBecauseItGivesIdenticalCompletions()
    {
        var model = TransformerModel.CreateRandom(ModelPresets.Gpt2(27, 16, 1, 2, 32), seed: 3);
        Assert.Throws<UserInputException>(() => CompletionSampler.Sample(model, LetterTokenizer(), ["a"], 2, new SamplingOptions { Temperature = 0 }));
    }

    private static TransformerModel Rigged(params float[] logits) => TinyModels.Rigged(ModelPresets.Gpt2(logits.Length, 8, 1, 2, 32), v => logits[v]);

    [Fact]
    public void AWhitespaceOnlyCompletionIsResampledFromItsOwnStream()
    {
        // ' ' and '\n' together as likely as 'a': one-token completions are whitespace half the time.
        var model = Rigged(-100, MathF.Log(0.5f), MathF.Log(0.5f), 0);
        var tokenizer = SpaceTokenizer();
        var options = new SamplingOptions { MaxNewTokens = 1, Temperature = 1, Seed = 5, EosIds = [] };
        var first = Generator.Generate(model, Enumerable.Repeat(tokenizer.Encode("a"), 6).ToArray(), options, tokenizer);
        Assert.Contains(first, c => string.IsNullOrWhiteSpace(c.Text ?? tokenizer.Decode(c.Ids, true)));   // the seed does draw whitespace

        var sampled = CompletionSampler.Sample(model, tokenizer, ["a"], 6, options);
        Assert.All(sampled[0].Completions, c => Assert.Equal("a", c));
        // Deterministic for the seed: the same completions again.
        Assert.Equal(sampled[0].Completions, CompletionSampler.Sample(model, tokenizer, ["a"], 6, options)[0].Completions);
    }

    [Fact]
    public void AModelThatKeepsProducingWhitespaceFailsNamingThePrompt()
    {
        var model = Rigged(-100, 100, 0, -100);     // ' ' almost always, sometimes '\n', never 'a'
        var tokenizer = SpaceTokenizer();
        var options = new SamplingOptions { MaxNewTokens = 3, Temperature = 1, Seed = 0, EosIds = [] };
        var e = Assert.Throws<UserInputException>(() => CompletionSampler.Sample(model, tokenizer, ["a", "aa"], 2, options, sources: ["prompts.jsonl:1", "prompts.jsonl:2"]));
        Assert.StartsWith("prompts.jsonl:1: ", e.Message);
        Assert.Contains("only whitespace", e.Message);
        Assert.Contains("--max-new-tokens", e.Message);
        Assert.Contains("--temperature", e.Message);
        // Without sources, the prompt's number.
        Assert.StartsWith("prompt 1: ", Assert.Throws<UserInputException>(() => CompletionSampler.Sample(model, tokenizer, ["a"], 2, options)).Message);
    }
}
