using System.Text;
using System.Text.Json;
using AlignSharp.Text;

namespace AlignSharp.Tests.Text;

public class TokenizerComponentTests
{
    static List<string> Split(PreTokenizer pre, string text)
    {
        var pieces = new List<ReadOnlyMemory<char>>();
        pre.Split(text.AsMemory(), pieces);
        return pieces.Select(p => p.ToString()).ToList();
    }

    // Expected pieces follow tokenizers' SplitDelimiterBehavior semantics, worked by hand.
    [Theory]
    [InlineData((int)SplitBehavior.Removed, false, new[] { "a", "b", "c" })]
    [InlineData((int)SplitBehavior.Isolated, false, new[] { "a", "-", "b", "-", "-", "c", "-" })]
    [InlineData((int)SplitBehavior.MergedWithPrevious, false, new[] { "a-", "b-", "-", "c-" })]
    [InlineData((int)SplitBehavior.MergedWithNext, false, new[] { "a", "-b", "-", "-c", "-" })]
    [InlineData((int)SplitBehavior.Contiguous, false, new[] { "a", "-", "b", "--", "c", "-" })]
    [InlineData((int)SplitBehavior.Removed, true, new[] { "a", "b", "c" })]
    [InlineData((int)SplitBehavior.MergedWithPrevious, true, new[] { "a-", "b--", "c-" })]
    public void SplitBehaviours(int behaviorValue, bool invert, string[] expected)
    {
        var behavior = (SplitBehavior)behaviorValue;
        var split = new SplitPreTokenizer(new OnigurumaRegex(invert ? "[a-z]" : "-"), behavior, invert);
        Assert.Equal(expected, Split(split, "a-b--c-"));
    }

    [Fact]
    public void ByteLevelPreTokenizerUsesGpt2RegexAndPrefixSpace()
    {
        Assert.Equal(new[] { " Hello", ",", " world", "'s", "  ", " 123" }, Split(new ByteLevelPreTokenizer(true, true), "Hello, world's   123"));
        Assert.Equal(new[] { "Hello world" }, Split(new ByteLevelPreTokenizer(false, false), "Hello world"));
        Assert.Equal(new[] { " x" }, Split(new ByteLevelPreTokenizer(true, false), "x"));
    }

    [Fact]
    public void RegexMatchesAstralLettersAndDigitsAsSingleCodePoints()
    {
        // 𝐀𝐁 are astral letters (Lu), 𝟏𝟐𝟑𝟒 astral digits (Nd), 😀 an astral symbol.
        var re = new OnigurumaRegex(@"\p{L}+|\p{N}{1,3}|[^\s\p{L}\p{N}]+|\s+");
        var found = new List<(int Start, int Length)>();
        string text = "𝐀𝐁 𝟏𝟐𝟑𝟒😀!";
        re.Matches(text, found);
        Assert.Equal(new[] { "𝐀𝐁", " ", "𝟏𝟐𝟑", "𝟒", "😀!" }, found.Select(m => text.Substring(m.Start, m.Length)));
    }

    [Fact]
    public void PossessiveQuantifiersBecomeAtomicGroups()
    {
        Assert.Equal(@"(?>\p{L}+)", OnigurumaRegex.Translate(@"\p{L}++"));
        Assert.Equal(@"(?>[a-z]*) ?(?>(ab)?)x{2,3}?", OnigurumaRegex.Translate(@"[a-z]*+ ?(ab)?+x{2,3}?"));
        var re = new OnigurumaRegex("a++a");
        var found = new List<(int, int)>();
        re.Matches("aaaa", found);
        Assert.Empty(found); // possessive: a++ leaves nothing for the final a
    }

    [Theory]
    [InlineData("cafe\u0301", NormalizationForm.FormC, "caf\u00e9")]
    [InlineData("caf\u00e9", NormalizationForm.FormD, "cafe\u0301")]
    [InlineData("\u1e0b\u0323", NormalizationForm.FormC, "\u1e0d\u0307")] // canonical reordering then composition
    [InlineData("\u1100\u1161\u11a8", NormalizationForm.FormC, "\uac01")] // Hangul LVT
    [InlineData("\uac01", NormalizationForm.FormD, "\u1100\u1161\u11a8")]
    [InlineData("\ufb01 \u2460", NormalizationForm.FormKC, "fi 1")]
    [InlineData("\u212b", NormalizationForm.FormC, "\u00c5")] // singleton decomposition
    [InlineData("ascii only", NormalizationForm.FormD, "ascii only")]
    public void UnicodeNormalizationForms(string input, NormalizationForm form, string expected) =>
        Assert.Equal(expected, UnicodeNormalization.Normalize(input, form));

    static HfTokenizer FromJson(string json) => TokenizerJson.FromJson(JsonDocument.Parse(json).RootElement, "test.json");

    /// <summary>A tiny byte-level BPE: every byte's character plus "ab", "abc"; merges given in the requested format.</summary>
    static string TinyTokenizer(bool pairMerges, string extra = "", string addedTokens = "[]", string normalizer = "null")
    {
        var vocab = new Dictionary<string, int>();
        for (int b = 0; b < 256; b++) vocab[ByteLevelAlphabet.ByteToChar[b].ToString()] = b;
        vocab["ab"] = 256;
        vocab["abc"] = 257;
        string merges = pairMerges ? "[[\"a\",\"b\"],[\"ab\",\"c\"]]" : "[\"a b\",\"ab c\"]";
        return $$"""
            {"added_tokens": {{addedTokens}}, "normalizer": {{normalizer}},
             "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true},
             "decoder": {"type": "ByteLevel"}, {{extra}}
             "model": {"type": "BPE", "vocab": {{JsonSerializer.Serialize(vocab)}}, "merges": {{merges}} }
            }
            """;
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void BothMergeFormatsGiveTheSameIds(bool pairMerges)
    {
        var tok = FromJson(TinyTokenizer(pairMerges));
        // GPT-2 regex pieces: "abc", " ababd"; " " is byte 32, 'd' byte 100.
        Assert.Equal(new[] { 257, 32, 256, 256, 100 }, tok.Encode("abc ababd"));
        Assert.Equal("abc ababd", tok.Decode(tok.Encode("abc ababd")));
    }

    [Fact]
    public void AddedTokensHonourSpecialLstripRstripSingleWord()
    {
        string added = """
            [{"id": 300, "content": "<s>", "special": true, "lstrip": false, "rstrip": false, "single_word": false, "normalized": false},
             {"id": 301, "content": "[M]", "special": true, "lstrip": true, "rstrip": true, "single_word": false, "normalized": false},
             {"id": 302, "content": "cat", "special": false, "lstrip": false, "rstrip": false, "single_word": true, "normalized": false}]
            """;
        var tok = FromJson(TinyTokenizer(true, addedTokens: added));
        Assert.Equal(new[] { 300, 257, 300 }, tok.Encode("<s>abc<s>"));
        Assert.Equal(new[] { 256, 301, 256 }, tok.Encode("ab  [M]  ab")); // the spaces are swallowed
        Assert.Equal(302, tok.Encode("cat cats")[0]);
        Assert.DoesNotContain(302, tok.Encode("cats")); // single_word: not inside a word
        Assert.Equal("abab", tok.Decode([300, 256, 301, 256], skipSpecialTokens: true));
        Assert.Equal("<s>ab[M]ab", tok.Decode([300, 256, 301, 256]));
        Assert.True(tok.IsSpecial(300));
        Assert.False(tok.IsSpecial(302));
    }

    /// <summary>Byte-level symbols (gpt2-small: each UTF-8 byte's character) and character symbols (llama2-small, with "▁").</summary>
    [Theory]
    [InlineData("gpt2-small", "aaabbeeeiinnoorssttth  ", 7)]
    [InlineData("llama2-small", "aaabbeeeiinnoorssttth\u2581\u2581\u2581", 11)]
    public void HeapMergeAgreesWithScanMerge(string fixture, string alphabet, int seed)
    {
        var tok = TokenizerFixtures.Load(TokenizerFixtures.Small(fixture));
        var model = (BpeModel)typeof(HfTokenizer).GetField("_model", System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Instance)!.GetValue(tok)!;
        bool byteLevel = fixture == "gpt2-small";
        var rng = new Random(seed);
        for (int trial = 0; trial < 200; trial++)
        {
            int n = rng.Next(1, 300);
            var text = new string(Enumerable.Range(0, n).Select(_ => alphabet[rng.Next(alphabet.Length)]).ToArray());
            var symbols = byteLevel
                ? Encoding.UTF8.GetBytes(text).Select(b => model.Vocab[ByteLevelAlphabet.ByteToChar[b].ToString()]).ToArray()
                : text.Select(c => model.Vocab[c.ToString()]).ToArray();
            var a = (int[])symbols.Clone();
            var b = (int[])symbols.Clone();
            int na = model.MergeByScan(a, a.Length), nb = model.MergeWithHeap(b, b.Length);
            Assert.Equal(a.AsSpan(0, na).ToArray(), b.AsSpan(0, nb).ToArray());
        }
    }

    [Theory]
    [InlineData("gpt2-small")]
    [InlineData("llama-small")]
    [InlineData("llama2-small")]
    public void RandomUnicodeRoundTrips(string name)
    {
        var tok = TokenizerFixtures.Load(TokenizerFixtures.Small(name));
        var rng = new Random(12345);
        for (int trial = 0; trial < 300; trial++)
        {
            var sb = new StringBuilder();
            int len = rng.Next(0, 60);
            for (int i = 0; i < len; i++)
            {
                int cp = rng.Next(4) switch
                {
                    0 => rng.Next(0x09, 0x7F),
                    1 => rng.Next(0xA0, 0x3000),
                    2 => rng.Next(0x3000, 0xD800),
                    _ => rng.Next(0x10000, 0x10FFFF),
                };
                sb.Append(char.ConvertFromUtf32(cp));
            }
            string text = sb.ToString();
            var ids = tok.Encode(text, addSpecialTokens: false);
            string expected = name switch
            {
                "llama-small" => UnicodeNormalization.Normalize(text, NormalizationForm.FormC),
                "llama2-small" => text.Replace('\u2581', ' '), // SentencePiece: a literal ▁ is a space
                _ => text,
            };
            Assert.DoesNotContain(ids, tok.IsSpecial);
            Assert.Equal(expected, tok.Decode(ids));
        }
    }

    [Fact]
    public void EncodingIsThreadSafe()
    {
        var tok = TokenizerFixtures.Load(TokenizerFixtures.Small("llama-small"));
        var texts = TokenizerFixtures.Reference("llama-small").Select(c => c.Text).ToArray();
        var expected = texts.Select(t => tok.Encode(t)).ToArray();
        Parallel.For(0, 64, i =>
        {
            for (int k = 0; k < texts.Length; k++)
            {
                int j = (k + i) % texts.Length;
                Assert.Equal(expected[j], tok.Encode(texts[j]));
            }
        });
    }
}
