using System.Globalization;
using System.Runtime.CompilerServices;

namespace AlignSharp.Text;

/// <summary>
/// Hand-written matchers for the split regexes of GPT-2, Llama 3 and Qwen 2/3, used by <see cref="OnigurumaRegex"/>
/// in place of the regex engine when a pattern is exactly one of them (any other pattern runs on the regex).
/// <para>
/// These patterns match at every position (each character is a letter, a number, whitespace or "other", and each kind
/// has an alternative), so the matches tile the text and a scanner only decides where each match ends. It does so by
/// trying the alternatives in order, as the backtracking engine does, with the backtracking worked out by hand in
/// the comments. Characters are classified per code point (a surrogate pair is one character), as Oniguruma and our
/// astral-proxy regex path do. The regex path stays the reference: tests compare both on random and adversarial text.
/// </para>
/// </summary>
internal abstract class SplitPatternScanner
{
    public const string Llama3Pattern = @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    public const string Qwen2Pattern = @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    /// <summary>The scanner for <paramref name="pattern"/>, or null when it is not one we have a scanner for.</summary>
    public static SplitPatternScanner? For(string pattern) => pattern switch
    {
        ByteLevelPreTokenizer.Gpt2Pattern => new Gpt2Scanner(),
        Llama3Pattern => new Llama3Scanner(maxDigits: 3),
        Qwen2Pattern => new Llama3Scanner(maxDigits: 1),
        _ => null,
    };

    /// <summary>Appends (start, length) of every match in <paramref name="text"/>, in order (as the regex would).</summary>
    public void Matches(ReadOnlySpan<char> text, List<(int Start, int Length)> output)
    {
        for (int i = 0; i < text.Length;)
        {
            int end = MatchEnd(text, i);
            output.Add((i, end - i));
            i = end;
        }
    }

    /// <summary>End of the match that starts at <paramref name="i"/> (i &lt; text.Length); always past i.</summary>
    protected abstract int MatchEnd(ReadOnlySpan<char> text, int i);

    // Character kinds: \p{L}, \p{N}, \s other than CR/LF, CR/LF, and everything else ([^\s\p{L}\p{N}]).
    protected const byte Other = 0, Letter = 1, Number = 2, Space = 3, NewLine = 4, HighSurrogate = 5;

    static readonly byte[] BmpKinds = BuildBmpKinds();

    static byte[] BuildBmpKinds()
    {
        var kinds = new byte[0x10000];
        for (int c = 0; c < kinds.Length; c++)
        {
            char ch = (char)c;
            kinds[c] = ch is '\r' or '\n' ? NewLine
                : char.IsWhiteSpace(ch) ? Space // exactly .NET's and Oniguruma's \s
                : char.IsHighSurrogate(ch) ? HighSurrogate
                : KindOf(CharUnicodeInfo.GetUnicodeCategory(ch));
        }
        return kinds;
    }

    static byte KindOf(UnicodeCategory category) => category switch
    {
        UnicodeCategory.UppercaseLetter or UnicodeCategory.LowercaseLetter or UnicodeCategory.TitlecaseLetter
            or UnicodeCategory.ModifierLetter or UnicodeCategory.OtherLetter => Letter,
        UnicodeCategory.DecimalDigitNumber or UnicodeCategory.LetterNumber or UnicodeCategory.OtherNumber => Number,
        UnicodeCategory.SpaceSeparator or UnicodeCategory.LineSeparator or UnicodeCategory.ParagraphSeparator => Space,
        _ => Other,
    };

    /// <summary>Kind of the code point at <paramref name="i"/> and its length in UTF-16 units (2 for a surrogate pair).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    protected static byte KindAt(ReadOnlySpan<char> text, int i, out int width)
    {
        byte kind = BmpKinds[text[i]];
        width = 1;
        if (kind != HighSurrogate) return kind;
        return AstralKindAt(text, i, out width);
    }

    static byte AstralKindAt(ReadOnlySpan<char> text, int i, out int width)
    {
        if (i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]))
        {
            width = 2;
            return KindOf(CharUnicodeInfo.GetUnicodeCategory(char.ConvertToUtf32(text[i], text[i + 1])));
        }
        width = 1;
        return Other; // a lone surrogate (category Cs)
    }

    /// <summary>Kind at i, or a value matching no kind at the end of the text.</summary>
    protected static byte KindAtOrEnd(ReadOnlySpan<char> text, int i, out int width)
    {
        if (i < text.Length) return KindAt(text, i, out width);
        width = 0;
        return byte.MaxValue;
    }

    /// <summary>End of the run of <paramref name="kind"/> characters starting at <paramref name="i"/>.</summary>
    protected static int SkipRun(ReadOnlySpan<char> text, int i, byte kind)
    {
        while (i < text.Length && KindAt(text, i, out int w) == kind) i += w;
        return i;
    }

    /// <summary>
    /// Length of "'s|'t|'re|'ve|'m|'ll|'d" at i (text[i] is an apostrophe), 0 when none matches. Ignoring case is
    /// ASCII-only: .NET's invariant case equivalences for these letters are exactly their ASCII upper/lower pairs.
    /// </summary>
    protected static int ContractionLength(ReadOnlySpan<char> text, int i, bool ignoreCase)
    {
        char a = Fold(text, i + 1, ignoreCase), b = Fold(text, i + 2, ignoreCase);
        return a switch
        {
            's' or 't' or 'm' or 'd' => 2,
            'r' or 'v' when b == 'e' => 3,
            'l' when b == 'l' => 3,
            _ => 0,
        };
    }

    static char Fold(ReadOnlySpan<char> text, int i, bool ignoreCase)
    {
        if (i >= text.Length) return '\0';
        char c = text[i];
        return ignoreCase && c is >= 'A' and <= 'Z' ? (char)(c | 0x20) : c;
    }

    /// <summary>
    /// "\s+(?!\S)|\s+" at i, preceded by "\s*[\r\n]+" when <paramref name="newlineAlternative"/>. Greedy \s* then
    /// backtracking to a CR/LF ends the first just after the run's last CR/LF. \s+(?!\S) takes the whole run at the end
    /// of the text, else gives back the run's last character (which is followed by \S) if one remains; \s+ takes the run.
    /// </summary>
    protected static int WhitespaceEnd(ReadOnlySpan<char> text, int i, bool newlineAlternative)
    {
        int j = i, last = i, lastNewLine = -1;
        while (j < text.Length)
        {
            byte kind = KindAt(text, j, out int w);
            if (kind == NewLine) lastNewLine = j;
            else if (kind != Space) break;
            last = j;
            j += w;
        }
        if (newlineAlternative && lastNewLine >= 0) return lastNewLine + 1;
        if (j == text.Length) return j;
        return last > i ? last : j;
    }

    /// <summary>
    /// GPT-2: <c>'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+</c>.
    /// </summary>
    sealed class Gpt2Scanner : SplitPatternScanner
    {
        protected override int MatchEnd(ReadOnlySpan<char> text, int i)
        {
            char c = text[i];
            if (c == '\'')
            {
                int len = ContractionLength(text, i, ignoreCase: false);
                if (len > 0) return i + len;
            }
            byte kind = KindAt(text, i, out _);
            if (c == ' ')
            {
                // " ?X+" with the space: whichever of letter / number / other follows it.
                byte next = KindAtOrEnd(text, i + 1, out _);
                if (next is Letter or Number or Other) return SkipRun(text, i + 1, next);
            }
            if (kind is Letter or Number or Other) return SkipRun(text, i, kind);
            return WhitespaceEnd(text, i, newlineAlternative: false);
        }
    }

    /// <summary>
    /// Llama 3 (maxDigits 3) and Qwen 2/3 (maxDigits 1): <c>(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|
    /// \p{N}{1,maxDigits}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+</c>.
    /// </summary>
    sealed class Llama3Scanner(int maxDigits) : SplitPatternScanner
    {
        protected override int MatchEnd(ReadOnlySpan<char> text, int i)
        {
            char c = text[i];
            if (c == '\'')
            {
                int len = ContractionLength(text, i, ignoreCase: true);
                if (len > 0) return i + len;
            }
            byte kind = KindAt(text, i, out int width);
            if (kind == Letter) return SkipRun(text, i + width, Letter);
            // [^\r\n\p{L}\p{N}]?\p{L}+ with the optional character: any other or non-newline space before a letter.
            if (kind is Other or Space && KindAtOrEnd(text, i + width, out int next) == Letter)
                return SkipRun(text, i + width + next, Letter);
            if (kind == Number)
            {
                int end = i + width;
                for (int d = 1; d < maxDigits && KindAtOrEnd(text, end, out int w) == Number; d++) end += w;
                return end;
            }
            // " ?[^\s\p{L}\p{N}]+[\r\n]*": c is other, or a space followed by other.
            int start = kind == Other ? i : c == ' ' && KindAtOrEnd(text, i + 1, out _) == Other ? i + 1 : -1;
            if (start >= 0)
            {
                int end = SkipRun(text, start, Other);
                while (end < text.Length && text[end] is '\r' or '\n') end++;
                return end;
            }
            return WhitespaceEnd(text, i, newlineAlternative: true);
        }
    }
}
