using System.Text;
using AlignSharp.Text;

namespace AlignSharp.Tests.Text;

/// <summary>
/// Our ids against ids from an independent implementation (@lenml/tokenizers, a JavaScript port of Hugging Face
/// tokenizers), for tricky and seeded-random texts. Small fixtures are committed; the full files come from
/// scripts/fetch-tokenizers.sh.
/// </summary>
public class ReferenceConformanceTests
{
    static void AssertMatchesReference(ITokenizer tokenizer, string name, Func<string, string> expectedRoundTrip)
    {
        var failures = new List<string>();
        foreach (var c in TokenizerFixtures.Reference(name))
        {
            var ids = tokenizer.Encode(c.Text, addSpecialTokens: true);
            var idsNoSpecial = tokenizer.Encode(c.Text, addSpecialTokens: false);
            if (!ids.SequenceEqual(c.Ids)) failures.Add($"{c}: ids [{string.Join(",", ids)}] != reference [{string.Join(",", c.Ids)}]");
            if (!idsNoSpecial.SequenceEqual(c.IdsNoSpecial)) failures.Add($"{c}: ids without specials differ");
            if (tokenizer.Decode(c.Ids) != c.Decoded) failures.Add($"{c}: decode differs from reference");
            if (tokenizer.Decode(c.Ids, skipSpecialTokens: true) != c.DecodedSkipSpecial) failures.Add($"{c}: decode(skip specials) differs");
            if (tokenizer.Decode(idsNoSpecial) != expectedRoundTrip(c.Text)) failures.Add($"{c}: decode(encode(x)) != x");
        }
        Assert.True(failures.Count == 0, $"{failures.Count} mismatches:\n" + string.Join("\n", failures.Take(20)));
    }

    static string Same(string s) => s;
    static string Nfc(string s) => UnicodeNormalization.Normalize(s, NormalizationForm.FormC);

    [Fact]
    public void Gpt2SmallMatchesReference() =>
        AssertMatchesReference(TokenizerFixtures.Load(TokenizerFixtures.Small("gpt2-small")), "gpt2-small", Same);

    [Fact]
    public void LlamaSmallMatchesReference() =>
        AssertMatchesReference(TokenizerFixtures.Load(TokenizerFixtures.Small("llama-small")), "llama-small", Nfc);

    [FullTokenizersFact]
    public void FullGpt2MatchesReference() =>
        AssertMatchesReference(TokenizerFixtures.Load(TokenizerFixtures.Full("gpt2")), "gpt2", Same);

    [FullTokenizersFact]
    public void FullLlama3MatchesReference() =>
        AssertMatchesReference(TokenizerFixtures.Load(TokenizerFixtures.Full("llama3")), "llama3", Same);

    [FullTokenizersFact]
    public void FullQwen3MatchesReference() =>
        AssertMatchesReference(TokenizerFixtures.Load(TokenizerFixtures.Full("qwen3")), "qwen3", Nfc);

    [FullTokenizersFact]
    public void FullFilesExposeSpecialTokens()
    {
        var llama = TokenizerFixtures.Load(TokenizerFixtures.Full("llama3"));
        Assert.Equal(128256, llama.VocabSize);
        Assert.Equal(("<|begin_of_text|>", 128000), (llama.BosToken, llama.BosId));
        Assert.Equal(("<|end_of_text|>", 128001), (llama.EosToken, llama.EosId));
        var qwen = TokenizerFixtures.Load(TokenizerFixtures.Full("qwen3"));
        Assert.Null(qwen.BosId);
        Assert.Equal(("<|im_end|>", 151645), (qwen.EosToken, qwen.EosId));
        Assert.Equal(("<|endoftext|>", 151643), (qwen.PadToken, qwen.PadId));
    }

    [Fact]
    public void SmallFixturesExposeSpecialTokensFromTokenizerConfig()
    {
        var llama = TokenizerFixtures.Load(TokenizerFixtures.Small("llama-small"));
        Assert.Equal("<|begin_of_text|>", llama.BosToken);
        Assert.Equal(llama.BosId, llama.Encode("x")[0]);
        Assert.Equal("<|eot_id|>", llama.EosToken);
        Assert.Equal("<|end_of_text|>", llama.PadToken);
        Assert.True(llama.IsSpecial(llama.EosId!.Value));
        Assert.Equal(llama.EosId, llama.TokenToId("<|eot_id|>"));
        Assert.Equal("<|eot_id|>", llama.IdToToken(llama.EosId.Value));
        var gpt2 = TokenizerFixtures.Load(TokenizerFixtures.Small("gpt2-small"));
        Assert.Equal(gpt2.BosId, gpt2.EosId);
        Assert.Null(gpt2.PadId);
        Assert.Equal(gpt2.VocabSize - 1, gpt2.EosId);
    }
}
