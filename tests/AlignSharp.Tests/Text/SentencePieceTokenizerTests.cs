using System.Text.Json;
using AlignSharp.Text;

namespace AlignSharp.Tests.Text;

/// <summary>
/// SentencePiece-style BPE (Llama 2, Mistral, Gemma) piece by piece, on a tiny hand-made tokenizer.json whose ids are
/// worked out by hand below. The full files are checked against @lenml/tokenizers in <see cref="ReferenceConformanceTests"/>.
/// </summary>
public class SentencePieceTokenizerTests
{
    const string Meta = "\u2581";
    const int Unk = 0, Bos = 1, Space = 259, A = 260, B = 261, C = 262, AB = 263, SpaceAB = 264, ABC = 265, Emoji = 267;
    static int Byte(int b) => 3 + b;

    static string LlamaNormalizer =>
        $$"""{"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "{{Meta}}"}, {"type": "Replace", "pattern": {"String": " "}, "content": "{{Meta}}"} ]}""";

    static string LlamaDecoder =>
        $$"""
        {"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": "{{Meta}}"}, "content": " "},
         {"type": "ByteFallback"}, {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}
        """;

    const string Specials = """
        [{"id": 0, "content": "<unk>", "special": true, "normalized": false, "lstrip": false, "rstrip": false, "single_word": false},
         {"id": 1, "content": "<s>", "special": true, "normalized": false, "lstrip": false, "rstrip": false, "single_word": false},
         {"id": 2, "content": "</s>", "special": true, "normalized": false, "lstrip": false, "rstrip": false, "single_word": false}]
        """;

    /// <summary>
    /// Vocabulary: &lt;unk&gt; &lt;s&gt; &lt;/s&gt; (0-2), &lt;0x00&gt;..&lt;0xFF&gt; (3-258), ▁ a b c ab ▁ab abc ▁▁ 😀 (259-267).
    /// Merges by rank: a+b, ▁+ab, ab+c, ▁+▁.
    /// </summary>
    static string Tiny(string normalizer = "null", string preTokenizer = "null", string? decoder = null, bool byteFallback = true,
        string unk = "\"<unk>\"", bool fuseUnk = true, bool pairMerges = false, string addedTokens = Specials)
    {
        var vocab = new Dictionary<string, int> { ["<unk>"] = 0, ["<s>"] = 1, ["</s>"] = 2 };
        for (int b = 0; b < 256; b++) vocab[$"<0x{b:X2}>"] = Byte(b);
        string[] pieces = [Meta, "a", "b", "c", "ab", Meta + "ab", "abc", Meta + Meta, "😀"];
        for (int i = 0; i < pieces.Length; i++) vocab[pieces[i]] = Space + i;
        string merges = pairMerges
            ? $$"""[["a", "b"], ["{{Meta}}", "ab"], ["ab", "c"], ["{{Meta}}", "{{Meta}}"]]"""
            : $$"""["a b", "{{Meta}} ab", "ab c", "{{Meta}} {{Meta}}"]""";
        return $$$"""
            {"added_tokens": {{{addedTokens}}}, "normalizer": {{{normalizer}}}, "pre_tokenizer": {{{preTokenizer}}},
             "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0} }, {"Sequence": {"id": "A", "type_id": 0} }],
                                "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]} } },
             "decoder": {{{decoder ?? LlamaDecoder}}},
             "model": {"type": "BPE", "dropout": null, "unk_token": {{{unk}}}, "fuse_unk": {{{(fuseUnk ? "true" : "false")}}},
                       "byte_fallback": {{{(byteFallback ? "true" : "false")}}}, "vocab": {{{JsonSerializer.Serialize(vocab)}}}, "merges": {{{merges}}} }
            }
            """;
    }

    static HfTokenizer FromJson(string json) => TokenizerJson.FromJson(JsonDocument.Parse(json).RootElement, "test.json");

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void MergesFollowRankNotLength(bool pairMerges)
    {
        var tok = FromJson(Tiny(LlamaNormalizer, pairMerges: pairMerges));
        // "▁abc": a+b (rank 0), then ▁+ab (rank 1) beats ab+c (rank 2), leaving ▁ab c — never "abc".
        Assert.Equal(new[] { Bos, SpaceAB, C }, tok.Encode("abc"));
        // "▁ab▁c": a+b, ▁+ab; the second ▁ has no partner.
        Assert.Equal(new[] { SpaceAB, Space, C }, tok.Encode("ab c", addSpecialTokens: false));
        Assert.Equal(new[] { Space + 7, A }, tok.Encode(" a", addSpecialTokens: false)); // "▁▁a": ▁+▁
    }

    [Fact]
    public void TokensDeclaredOnlyInTokenizerConfigAreRegistered()
    {
        // transformers adds added_tokens_decoder entries that tokenizer.json lacks (a stale or hand-edited tokenizer.json).
        var dir = Directory.CreateTempSubdirectory("alignsharp-declared-");
        try
        {
            File.Copy(Path.Combine(TokenizerFixtures.Small("gpt2-small"), "tokenizer.json"), Path.Combine(dir.FullName, "tokenizer.json"));
            var plain = Tokenizers.Load(dir.FullName);
            int next = plain.VocabSize;
            File.WriteAllText(Path.Combine(dir.FullName, "tokenizer_config.json"),
                $"{{\"tokenizer_class\": \"GPT2Tokenizer\", \"eos_token\": \"<|im_end|>\", \"added_tokens_decoder\": {{" +
                $"\"{next}\": {{\"content\": \"<|im_start|>\", \"special\": true}}, \"{next + 1}\": {{\"content\": \"<|im_end|>\", \"special\": true}}}}}}");
            var tok = Tokenizers.Load(dir.FullName);
            var ids = tok.Encode("<|im_start|>hi<|im_end|>", addSpecialTokens: false);
            Assert.Equal(next, ids[0]);
            Assert.Equal(next + 1, ids[^1]);
            Assert.Equal(plain.Encode("hi", addSpecialTokens: false), ids[1..^1]);
            Assert.Equal(next + 1, tok.EosId);
            Assert.True(plain.Encode("<|im_start|>", addSpecialTokens: false).Length > 1);   // without the config: ordinary text
        }
        finally { dir.Delete(recursive: true); }
    }

    [Fact]
    public void LlamaAndGemmaClassesPutBosFirstAsTokenizerConfigSays()
    {
        // transformers rebuilds a LlamaTokenizer's (and GemmaTokenizer's) post-processor from add_bos_token; other classes
        // keep tokenizer.json's.
        var dir = Directory.CreateTempSubdirectory("alignsharp-addbos-");
        try
        {
            File.Copy(Path.Combine(TokenizerFixtures.Small("llama2-small"), "tokenizer.json"), Path.Combine(dir.FullName, "tokenizer.json"));
            var config = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(TokenizerFixtures.Small("llama2-small"), "tokenizer_config.json")))!.AsObject();
            int[] Encoded(string tokenizerClass, bool? addBos)
            {
                config["tokenizer_class"] = tokenizerClass;
                if (addBos is bool b) config["add_bos_token"] = b; else config.Remove("add_bos_token");
                File.WriteAllText(Path.Combine(dir.FullName, "tokenizer_config.json"), config.ToJsonString());
                return Tokenizers.Load(dir.FullName).Encode("Hello world", addSpecialTokens: true);
            }
            var withBos = Encoded("LlamaTokenizer", true);
            Assert.Equal(1, withBos[0]);   // <s>
            Assert.Equal(withBos[1..], Encoded("LlamaTokenizerFast", false));
            Assert.Equal(withBos, Encoded("GemmaTokenizer", null));          // the class's default: BOS
            Assert.Equal(withBos, Encoded("PreTrainedTokenizerFast", false)); // tokenizer.json's post-processor stands
        }
        finally { dir.Delete(recursive: true); }
    }

    [Fact]
    public void MissingCharactersFallBackToUtf8ByteTokens()
    {
        var tok = FromJson(Tiny(LlamaNormalizer));
        Assert.Equal(new[] { Space, Byte(0xC3), Byte(0xA9) }, tok.Encode("é", addSpecialTokens: false));
        Assert.Equal(new[] { Space, Emoji }, tok.Encode("😀", addSpecialTokens: false)); // a surrogate pair in the vocabulary
        Assert.Equal(new[] { Space, Byte(0xF0), Byte(0x9D), Byte(0x84), Byte(0x9E) }, tok.Encode("𝄞", addSpecialTokens: false));
        Assert.Equal("é𝄞 abc", tok.Decode(tok.Encode("é𝄞 abc", addSpecialTokens: false)));
    }

    [Fact]
    public void WithoutByteFallbackUnknownCharactersBecomeUnkFusedOrNot()
    {
        var fused = FromJson(Tiny(LlamaNormalizer, byteFallback: false, fuseUnk: true));
        Assert.Equal(new[] { Space, Unk }, fused.Encode("éé", addSpecialTokens: false));
        Assert.Equal(new[] { Space, Unk, A, Unk }, fused.Encode("éaé", addSpecialTokens: false));
        var separate = FromJson(Tiny(LlamaNormalizer, byteFallback: false, fuseUnk: false));
        Assert.Equal(new[] { Space, Unk, Unk }, separate.Encode("éé", addSpecialTokens: false));
        var dropped = FromJson(Tiny(LlamaNormalizer, byteFallback: false, unk: "null"));
        Assert.Equal(new[] { Space, A }, dropped.Encode("éa", addSpecialTokens: false));
        var e = Assert.Throws<UserInputException>(() => FromJson(Tiny(unk: "\"<nope>\"")));
        Assert.Contains("test.json", e.Message);
        Assert.Contains("<nope>", e.Message);
    }

    [Fact]
    public void LlamaDecoderChainStripsOneLeadingSpaceAndJoinsBytes()
    {
        var tok = FromJson(Tiny(LlamaNormalizer));
        int[] ids = [Bos, SpaceAB, C, Space, Byte(0xC3), Byte(0xA9)];
        Assert.Equal("<s> abc é", tok.Decode(ids));
        Assert.Equal("abc é", tok.Decode(ids, skipSpecialTokens: true));
        // An incomplete UTF-8 sequence is one U+FFFD per byte (tokenizers' ByteFallback), e.g. mid-generation.
        Assert.Equal("ab\uFFFD\uFFFD", tok.Decode([A, B, Byte(0xF0), Byte(0x9D)]));
        Assert.Equal("\uFFFDa", tok.Decode([Byte(0xA9), A]));
    }

    static List<string> Pieces(PreTokenizer pre, string text, bool atTextStart)
    {
        var pieces = new List<ReadOnlyMemory<char>>();
        pre.Split(text.AsMemory(), pieces, atTextStart);
        return pieces.Select(p => p.ToString()).ToList();
    }

    [Theory]
    [InlineData((int)PrependScheme.Always, true, true, "Hello  world", new[] { "▁Hello", "▁", "▁world" })]
    [InlineData((int)PrependScheme.Always, false, false, "Hello  world", new[] { "▁Hello▁▁world" })]
    [InlineData((int)PrependScheme.First, false, true, "Hello world", new[] { "▁Hello▁world" })]
    [InlineData((int)PrependScheme.First, false, false, "Hello world", new[] { "Hello▁world" })]
    [InlineData((int)PrependScheme.Never, true, true, "Hello world", new[] { "Hello", "▁world" })]
    [InlineData((int)PrependScheme.Always, false, true, " x", new[] { "▁x" })]
    [InlineData((int)PrependScheme.Always, false, true, "▁x", new[] { "▁x" })]
    public void MetaspacePreTokenizer(int scheme, bool split, bool atTextStart, string text, string[] expected) =>
        Assert.Equal(expected, Pieces(new MetaspacePreTokenizer('\u2581', (PrependScheme)scheme, split), text, atTextStart));

    [Fact]
    public void MetaspaceFirstPrependsOnlyAtTheStartOfTheText()
    {
        string pre = """{"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": false}""";
        var tok = FromJson(Tiny(preTokenizer: pre));
        Assert.Equal(new[] { SpaceAB }, tok.Encode("ab", addSpecialTokens: false));
        Assert.Equal(new[] { Bos, AB }, tok.Encode("<s>ab", addSpecialTokens: false)); // after an added token: no ▁
        Assert.Equal(new[] { SpaceAB, Bos, AB, Space, C }, tok.Encode("ab<s>ab c", addSpecialTokens: false));
        var always = FromJson(Tiny(preTokenizer: pre.Replace("first", "always")));
        Assert.Equal(new[] { SpaceAB, Bos, SpaceAB, Space, C }, always.Encode("ab<s>ab c", addSpecialTokens: false));
        // The older spelling: add_prefix_space false means "never", and contradicting prepend_scheme is an error.
        var never = FromJson(Tiny(preTokenizer: """{"type": "Metaspace", "replacement": "▁", "add_prefix_space": false}"""));
        Assert.Equal(new[] { AB }, never.Encode("ab", addSpecialTokens: false));
        var e = Assert.Throws<UserInputException>(() => FromJson(Tiny(preTokenizer:
            """{"type": "Metaspace", "replacement": "▁", "add_prefix_space": false, "prepend_scheme": "always"}""")));
        Assert.Contains("prepend_scheme", e.Message);
    }

    [Fact]
    public void DecoderSteps()
    {
        // Metaspace: in the first token every ▁ is dropped (tokenizers), unless prepend_scheme is "never".
        List<string> tokens = ["▁▁a", "▁b", "<0x41>", "c▁"];
        Assert.Equal(["a", " b", "<0x41>", "c "], new MetaspaceDecoder('\u2581', PrependScheme.Always).DecodeChain(tokens));
        Assert.Equal(["  a", " b", "<0x41>", "c "], new MetaspaceDecoder('\u2581', PrependScheme.Never).DecodeChain(tokens));
        Assert.Equal(["▁▁a", "▁b", "A", "c▁"], new ByteFallbackDecoder().DecodeChain(tokens));
        Assert.Equal(["▁▁a▁b<0x41>c▁"], new FuseDecoder().DecodeChain(tokens));
        Assert.Equal([" x ", "x", ""], new StripDecoder(' ', 1, 0).DecodeChain(["  x ", "x", " "]));
        Assert.Equal(["x", "", "y"], new StripDecoder(' ', 2, 1).DecodeChain(["  x ", "   ", "y"]));
    }

    [Fact]
    public void StripAndPrependNormalizers()
    {
        var tok = FromJson(Tiny("""{"type": "Sequence", "normalizers": [{"type": "Strip", "strip_left": true, "strip_right": false}, {"type": "Prepend", "prepend": "▁"}]}""",
            decoder: """{"type": "Fuse"}"""));
        Assert.Equal(new[] { SpaceAB, Byte(0x20), Byte(0x20) }, tok.Encode("   ab  ", addSpecialTokens: false));
        Assert.Empty(tok.Encode("   ", addSpecialTokens: false)); // stripped to nothing: Prepend adds nothing to empty text
    }

    [Fact]
    public void NormalizedAddedTokensAreMatchedInNormalizedForm()
    {
        string added = Specials.TrimEnd().TrimEnd(']') +
            """, {"id": 268, "content": "c a", "special": false, "normalized": true, "lstrip": false, "rstrip": false, "single_word": false}]""";
        string replace = $$"""{"type": "Replace", "pattern": {"String": " "}, "content": "{{Meta}}"}""";
        var tok = FromJson(Tiny(replace, addedTokens: added));
        // "c a" is looked for as "c▁a" in the normalized text: both spellings match it.
        Assert.Equal(new[] { AB, 268, B }, tok.Encode("abc ab", addSpecialTokens: false));
        Assert.Equal(new[] { AB, 268, B }, tok.Encode("abc▁ab", addSpecialTokens: false));
        var raw = FromJson(Tiny(replace, addedTokens: added.Replace("\"normalized\": true", "\"normalized\": false")));
        Assert.Equal(new[] { AB, 268, B }, raw.Encode("abc ab", addSpecialTokens: false));
        Assert.DoesNotContain(268, raw.Encode("abc▁ab", addSpecialTokens: false));
    }

    [Theory]
    [InlineData("""{"type": "Unigram", "vocab": [["a", 0.0]]}""", "Unigram")]
    [InlineData("""{"type": "BPE", "dropout": 0.1, "vocab": {}, "merges": []}""", "dropout")]
    public void UnsupportedModelsAreClearErrors(string model, string expected)
    {
        var e = Assert.Throws<UserInputException>(() => FromJson($$"""{"model": {{model}}}"""));
        Assert.Contains("test.json", e.Message);
        Assert.Contains(expected, e.Message);
    }

    /// <summary>
    /// BpeModel cuts long SentencePiece words before "▁" where no merge can span the cut; the ids must be those of
    /// the reference merge loop on the whole word. Gemma 3 has the one spanning merge ">" + "▁&lt;/".
    /// </summary>
    static void AssertCutWordsMatchWholeWord(ITokenizer tokenizer, string alphabet, int seed)
    {
        var model = (BpeModel)typeof(HfTokenizer).GetField("_model", System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Instance)!.GetValue(tokenizer)!;
        var rng = new Random(seed);
        for (int trial = 0; trial < 100; trial++)
        {
            var text = new string(Enumerable.Range(0, rng.Next(1, 400)).Select(_ => alphabet[rng.Next(alphabet.Length)]).ToArray());
            var whole = text.Select(c => model.Vocab[c.ToString()]).ToArray();
            int count = model.MergeByScan(whole, whole.Length);
            var cut = new List<int>();
            model.Encode(text, cut);
            Assert.Equal(whole.AsSpan(0, count).ToArray(), cut);
        }
    }

    [Fact]
    public void CutWordsMatchWholeWordLlama2Small() =>
        AssertCutWordsMatchWholeWord(TokenizerFixtures.Load(TokenizerFixtures.Small("llama2-small")), "▁▁▁theoisan<>/.", 3);

    [FullTokenizersFact]
    public void CutWordsMatchWholeWordGemma3() =>
        AssertCutWordsMatchWholeWord(TokenizerFixtures.Load(TokenizerFixtures.Full("gemma3")), "▁▁▁▁theoisan<>>/.", 5);

    [Fact]
    public void SmallFixtureExposesLlamaSpecialTokens()
    {
        var tok = TokenizerFixtures.Load(TokenizerFixtures.Small("llama2-small"));
        Assert.Equal(("<s>", 1), (tok.BosToken, tok.BosId));
        Assert.Equal(("</s>", 2), (tok.EosToken, tok.EosId));
        Assert.Null(tok.PadId);
        Assert.Equal(1, tok.Encode("x")[0]);
        Assert.Equal("<0x0A>", tok.IdToToken(tok.Encode("\n", addSpecialTokens: false)[^1]));
    }
}
