using System.Text.Json.Nodes;
using AlignSharp.Feedback;
using AlignSharp.Models;
using AlignSharp.Text;

namespace AlignSharp.Tests.Feedback;

public class CompletionSamplerTests
{
    /// <summary>Letters a..z are ids 1..26; id 0 is BOS. Enough to drive generation end to end.</summary>
    private sealed class LetterTokenizer : ITokenizer
    {
        public int VocabSize => 27;
        public int[] Encode(string text, bool addSpecialTokens = true) =>
            (addSpecialTokens ? new[] { 0 } : []).Concat(text.Where(char.IsAsciiLetterLower).Select(ch => ch - 'a' + 1)).ToArray();
        public string Decode(ReadOnlySpan<int> ids, bool skipSpecialTokens = false)
        {
            var chars = new List<char>();
            foreach (int id in ids) if (id > 0 || !skipSpecialTokens) chars.Add(id == 0 ? '^' : (char)('a' + id - 1));
            return new string(chars.ToArray());
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

    [Fact]
    public void SamplesKCompletionsPerPromptReproducibly()
    {
        var model = TransformerModel.CreateRandom(ModelPresets.Gpt2(27, 16, 1, 2, 32), seed: 3, std: 0.5f);
        var tokenizer = new LetterTokenizer();
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
        Assert.Throws<UserInputException>(() => CompletionSampler.Sample(model, new LetterTokenizer(), ["a"], 2, new SamplingOptions { Temperature = 0 }));
    }
}
