using System.Text;
using AlignSharp.Text;

namespace AlignSharp.Tests.Text;

/// <summary>
/// The fast paths of encoding against their kept references: the hand-written split scanners against the regex
/// engine, the rank-array BPE merge against the plain scan, the cached encoder against an uncached one.
/// </summary>
public class TokenizerFastPathTests
{
    public static TheoryData<string> ScannedPatterns => new()
    {
        ByteLevelPreTokenizer.Gpt2Pattern, SplitPatternScanner.Llama3Pattern, SplitPatternScanner.Qwen2Pattern,
    };

    // Every kind the patterns tell apart, with the edge cases of each: contractions in both cases and near misses,
    // Unicode spaces (NBSP, U+2000, U+3000, NEL, U+2028), CR/LF, non-ASCII letters and digits, combining marks,
    // astral letters / digits / symbols, lone surrogates.
    static readonly string[] Atoms =
    [
        "a", "Z", "é", "ж", "日", "ß", "ǅ", "ʰ", "1", "٣", "Ⅻ", "²", " ", " ", "  ", "\t", "\r", "\n", "\r\n", "\u00A0",
        "\u2000", "\u3000", "\u0085", "\u2028", "\u000B", "'", "'s", "'S", "'t", "'re", "'RE", "'rE", "'ve", "'m", "'ll",
        "'LL", "'d", "'x", "'r", "'l", ".", ",", "!", "(", "-", "_", "\u0301", "\u200D", "😀", "𝐀", "𝐚", "𝟏", "\uD800",
        "\uDC00", "\uFFFF", "\u001F", "hello", "123456", "   ", "\n\n", " \n ",
    ];

    static string RandomText(Random rng, int atoms)
    {
        var sb = new StringBuilder();
        for (int i = 0; i < atoms; i++) sb.Append(Atoms[rng.Next(Atoms.Length)]);
        return sb.ToString();
    }

    static void AssertScannerMatchesRegex(OnigurumaRegex re, string text)
    {
        var fast = new List<(int Start, int Length)>();
        var reference = new List<(int Start, int Length)>();
        re.Matches(text, fast);
        re.MatchesWithRegex(text, reference);
        Assert.True(reference.SequenceEqual(fast), $"pattern {re.Pattern} on {Escape(text)}: scanner [{string.Join(",", fast)}] != regex [{string.Join(",", reference)}]");
    }

    static string Escape(string s) => string.Concat(s.Select(c => c is >= ' ' and <= '~' ? c.ToString() : $"\\u{(int)c:X4}"));

    [Theory]
    [MemberData(nameof(ScannedPatterns))]
    public void ScannerAgreesWithRegexOnRandomText(string pattern)
    {
        var re = new OnigurumaRegex(pattern);
        var rng = new Random(11);
        for (int trial = 0; trial < 3000; trial++) AssertScannerMatchesRegex(re, RandomText(rng, rng.Next(1, 24)));
    }

    [Theory]
    [MemberData(nameof(ScannedPatterns))]
    public void ScannerAgreesWithRegexOnEveryBmpCharacterInContext(string pattern)
    {
        // Each BMP code unit alone and between each kind of neighbour, so every character's class is checked.
        var re = new OnigurumaRegex(pattern);
        string[] contexts = ["{0}", "a{0}b", " {0} ", "{0}{0}1", "'{0}", "\n{0}\n", "!{0}x", "{0} ", "1{0}1234"];
        var sb = new StringBuilder();
        foreach (string context in contexts)
        {
            for (int c = 0; c < 0x10000; c += 512)
            {
                sb.Clear();
                for (int d = c; d < c + 512; d++) sb.Append(string.Format(context, (char)d)).Append('\u3000');
                AssertScannerMatchesRegex(re, sb.ToString());
            }
        }
    }

    [Fact]
    public void OtherPatternsStayOnTheRegexEngine()
    {
        Assert.Null(SplitPatternScanner.For(@"\p{L}+|\p{N}{1,3}|[^\s\p{L}\p{N}]+|\s+"));
        Assert.Null(SplitPatternScanner.For(SplitPatternScanner.Llama3Pattern + "|x"));
        Assert.NotNull(SplitPatternScanner.For(SplitPatternScanner.Qwen2Pattern));
    }

    [Fact]
    public void RankScanMergeAgreesWithScanMerge()
    {
        var tok = TokenizerFixtures.Load(TokenizerFixtures.Small("gpt2-small"));
        var model = (BpeModel)typeof(HfTokenizer).GetField("_model", System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Instance)!.GetValue(tok)!;
        var rng = new Random(5);
        string alphabet = "aaabbeeeiinnoorssttth  ";
        for (int trial = 0; trial < 2000; trial++)
        {
            int n = rng.Next(0, BpeModel.HeapThreshold + 1);
            var text = new string(Enumerable.Range(0, n).Select(_ => alphabet[rng.Next(alphabet.Length)]).ToArray());
            var symbols = Encoding.UTF8.GetBytes(text).Select(b => model.Vocab[ByteLevelAlphabet.ByteToChar[b].ToString()]).ToArray();
            var a = (int[])symbols.Clone();
            var b = (int[])symbols.Clone();
            int na = model.MergeByScan(a, a.Length), nb = model.MergeByRankScan(b, new int[2 * b.Length]);
            Assert.Equal(a.AsSpan(0, na).ToArray(), b.AsSpan(0, nb).ToArray());
        }
    }

    [Fact]
    public void CachedEncodingEqualsFreshEncoding()
    {
        // A second pass is served from the piece cache (including colliding slots); a fresh tokenizer has no cache.
        string path = TokenizerFixtures.Small("llama-small");
        var warm = Tokenizers.Load(path);
        var rng = new Random(3);
        var texts = Enumerable.Range(0, 300).Select(_ => RandomText(rng, 40)).ToList();
        texts.Add(new string('x', 300) + " " + string.Concat(Enumerable.Repeat("ab", 200))); // pieces too long to cache
        var first = texts.Select(t => warm.Encode(t)).ToList();
        var second = texts.Select(t => warm.Encode(t)).ToList();
        var fresh = Tokenizers.Load(path);
        for (int i = 0; i < texts.Count; i++)
        {
            Assert.Equal(first[i], second[i]);
            Assert.Equal(fresh.Encode(texts[i]), first[i]);
        }
    }
}

public class NormalizationQuickCheckTests
{
    // Starters with and without decompositions, combining marks in and out of canonical order, composition pairs,
    // Hangul syllables and jamo, compatibility characters, singletons, astral characters, lone surrogates.
    static readonly string[] Atoms =
    [
        "a", "e", "é", "e\u0301", "\u0301", "\u0327", "\u0323", "\u0307", "\u0338", "<", "で", "て", "\u3099", "ñ", "Å",
        "\u212B", "\u2126", "ﬁ", "²", "①", "가", "각", "\u1100", "\u1161", "\u11A8", "日", "\u0344", "\u0F73", "\u05B0",
        "\u0591", "𝐀", "😀", "\uD800", "\uFFFD", "x", " ", "ǅ", "\u0958", "\u2ADC", "ő", "ṩ", "s\u0323\u0307",
    ];

    [Theory]
    [InlineData(NormalizationForm.FormC)]
    [InlineData(NormalizationForm.FormD)]
    [InlineData(NormalizationForm.FormKC)]
    [InlineData(NormalizationForm.FormKD)]
    public void QuickCheckedNormalizeEqualsFullNormalize(NormalizationForm form)
    {
        var rng = new Random(17);
        var sb = new StringBuilder();
        int quick = 0;
        for (int trial = 0; trial < 20000; trial++)
        {
            sb.Clear();
            int n = rng.Next(1, 6);
            for (int i = 0; i < n; i++) sb.Append(Atoms[rng.Next(Atoms.Length)]);
            string text = sb.ToString();
            if (UnicodeNormalization.IsQuickCheckYes(text, form)) quick++;
            Assert.Equal(UnicodeNormalization.NormalizeFull(text, form), UnicodeNormalization.Normalize(text, form));
        }
        Assert.InRange(quick, 1000, 19000); // both paths are exercised
    }

    [Fact]
    public void AlreadyComposedTextTakesTheQuickPath()
    {
        Assert.True(UnicodeNormalization.IsQuickCheckYes("café 日本語の文章です。 👨‍👩‍👧 가", NormalizationForm.FormC));
        Assert.False(UnicodeNormalization.IsQuickCheckYes("cafe\u0301", NormalizationForm.FormC));
        Assert.False(UnicodeNormalization.IsQuickCheckYes("café", NormalizationForm.FormD));
    }
}
