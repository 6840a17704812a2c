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
    /// <param name="expectedRoundTrip">What decode(encode(x, no specials)) must give for x; null where the tokenizer
    /// makes no promise (e.g. Llama 2 puts "▁" after every special token, so "&lt;s&gt;Hi" decodes as "&lt;s&gt; Hi").</param>
    static void AssertMatchesReference(ITokenizer tokenizer, string name, Func<string, string?> expectedRoundTrip)
    {
        var failures = new List<string>();
        int roundTrips = 0;
        foreach (var c in TokenizerFixtures.Reference(name))
        {
            var ids = tokenizer.Encode(c.Text, addSpecialTokens: true);
            var idsNoSpecial = tokenizer.Encode(c.Text, addSpecialTokens: false);
            if (!ids.SequenceEqual(c.Ids)) failures.Add($"{c}: ids [{string.Join(",", ids)}] != reference [{string.Join(",", c.Ids)}]");
            if (!idsNoSpecial.SequenceEqual(c.IdsNoSpecial)) failures.Add($"{c}: ids without specials differ");
            if (tokenizer.Decode(c.Ids) != c.Decoded) failures.Add($"{c}: decode differs from reference");
            if (tokenizer.Decode(c.Ids, skipSpecialTokens: true) != c.DecodedSkipSpecial) failures.Add($"{c}: decode(skip specials) differs");
            // The text a completion is handed out as: tokenizer_config.json's clean_up_tokenization_spaces applied.
            if (tokenizer.CleanUp(tokenizer.Decode(c.Ids, skipSpecialTokens: true)) != c.DecodedClean) failures.Add($"{c}: cleaned-up decode differs");
            string? expected = expectedRoundTrip(c.Text);
            if (expected is null) continue;
            roundTrips++;
            if (tokenizer.Decode(idsNoSpecial) != expected) failures.Add($"{c}: decode(encode(x)) != x");
        }
        Assert.True(roundTrips >= 100, $"only {roundTrips} round trips checked");
        Assert.True(failures.Count == 0, $"{failures.Count} mismatches:\n" + string.Join("\n", failures.Take(20)));
    }

    static string? Same(string s) => s;
    static string? Nfc(string s) => UnicodeNormalization.Normalize(s, NormalizationForm.FormC);

    /// <summary>SentencePiece style: a literal "▁" in the text decodes as a space.</summary>
    static string Metaspaced(string s) => s.Replace('\u2581', ' ');

    /// <summary>
    /// Llama 2 (legacy): the Prepend normalizer puts "▁" before every text segment, also the ones after a special
    /// token, and the Strip decoder removes only the first, so round trips hold for texts without special tokens.
    /// </summary>
    static Func<string, string?> LegacySentencePiece(ITokenizer tokenizer) =>
        s => ContainsAddedToken(tokenizer, s) ? null : Metaspaced(s);

    static bool ContainsAddedToken(ITokenizer tokenizer, string s) =>
        tokenizer.Encode(s, addSpecialTokens: false).Any(tokenizer.IsSpecial);

    /// <summary>
    /// Metaspace with prepend_scheme "first": a text that starts with a space gets no extra "▁", and the Strip decoder
    /// then removes its own leading space (as in Hugging Face tokenizers), so those texts do not round-trip.
    /// </summary>
    static string? MetaspaceFirst(string s) => s.StartsWith(' ') || s.StartsWith('\u2581') ? null : Metaspaced(s);

    [Fact]
    public void Gpt2SmallMatchesReference() =>
        AssertMatchesReference(TokenizerFixtures.Load(TokenizerFixtures.Small("gpt2-small")), "gpt2-small", Same);

    [Fact]
    public void LlamaSmallMatchesReference() =>
        AssertMatchesReference(TokenizerFixtures.Load(TokenizerFixtures.Small("llama-small")), "llama-small", Nfc);

    [Fact]
    public void Llama2SmallMatchesReference()
    {
        var tokenizer = TokenizerFixtures.Load(TokenizerFixtures.Small("llama2-small"));
        AssertMatchesReference(tokenizer, "llama2-small", LegacySentencePiece(tokenizer));
    }

    [Fact]
    public void MetaspaceSmallMatchesReference() =>
        AssertMatchesReference(TokenizerFixtures.Load(TokenizerFixtures.Small("metaspace-small")), "metaspace-small", MetaspaceFirst);

    [FullTokenizersFact]
    public void FullLlama2MatchesReference()
    {
        var tokenizer = TokenizerFixtures.Load(TokenizerFixtures.Full("llama2"));
        AssertMatchesReference(tokenizer, "llama2", LegacySentencePiece(tokenizer));
    }

    /// <summary>Gemma 3 adds no "▁" prefix and its decoder strips nothing, so every text round-trips, special tokens included.</summary>
    [FullTokenizersFact]
    public void FullGemma3MatchesReference() =>
        AssertMatchesReference(TokenizerFixtures.Load(TokenizerFixtures.Full("gemma3")), "gemma3", Metaspaced);

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
