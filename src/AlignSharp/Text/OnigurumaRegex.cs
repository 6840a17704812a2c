using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

namespace AlignSharp.Text;

/// <summary>
/// A Hugging Face (Oniguruma-flavoured) regex run with .NET's engine, matching by code point as Oniguruma does.
/// <para>
/// Translation: possessive quantifiers (<c>x++</c>, <c>x*+</c>, <c>x?+</c>, <c>x{n,m}+</c>) become atomic groups;
/// <c>(?i:...)</c>, <c>\p{L}</c>, <c>\p{N}</c>, lookarounds and <c>\s</c> mean the same in both engines (.NET's
/// <c>\s</c> is exactly Unicode White_Space, as Oniguruma's).
/// </para>
/// <para>
/// Astral code points: .NET regexes see UTF-16 code units, so <c>\p{L}</c> would not match a letter outside the BMP
/// and a negated class could split a surrogate pair. When the input holds surrogates we match on a proxy string in
/// which every astral code point is replaced by one BMP character of the same Unicode general category (e.g. 𝐀 →
/// Greek Α, an emoji → ©), then map match offsets back. This is exact for patterns that distinguish characters only
/// by general category, whitespace and ASCII literals (all GPT-2/Llama-3/Qwen patterns); a pattern naming specific
/// astral characters or ranges is not supported.
/// </para>
/// <para>
/// The split patterns of GPT-2, Llama 3 and Qwen 2/3 run on a hand-written <see cref="SplitPatternScanner"/> (several
/// times faster, same matches); <see cref="MatchesWithRegex"/> is the regex path, kept as the reference.
/// </para>
/// </summary>
internal sealed class OnigurumaRegex
{
    readonly Regex _regex;
    readonly SplitPatternScanner? _scanner;

    public string Pattern { get; }

    public OnigurumaRegex(string pattern)
    {
        Pattern = pattern;
        _regex = new Regex(Translate(pattern), RegexOptions.Compiled | RegexOptions.CultureInvariant);
        _scanner = SplitPatternScanner.For(pattern);
    }

    /// <summary>Appends (start, length) of every match in <paramref name="text"/>, in order.</summary>
    public void Matches(ReadOnlySpan<char> text, List<(int Start, int Length)> output)
    {
        if (_scanner is not null) _scanner.Matches(text, output);
        else MatchesWithRegex(text, output);
    }

    /// <summary><see cref="Matches"/> on .NET's regex engine, whatever the pattern.</summary>
    internal void MatchesWithRegex(ReadOnlySpan<char> text, List<(int Start, int Length)> output)
    {
        if (text.IndexOfAnyInRange('\uD800', '\uDFFF') < 0)
        {
            foreach (var m in _regex.EnumerateMatches(text)) output.Add((m.Index, m.Length));
            return;
        }
        // Proxy: one char per code point; offsets[i] is the UTF-16 offset of proxy char i (offsets[n] = text.Length).
        var proxy = new char[text.Length];
        var offsets = new int[text.Length + 1];
        int n = 0;
        for (int i = 0; i < text.Length; n++)
        {
            offsets[n] = i;
            if (char.IsHighSurrogate(text[i]) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]))
            {
                proxy[n] = Representative(CharUnicodeInfo.GetUnicodeCategory(char.ConvertToUtf32(text[i], text[i + 1])));
                i += 2;
            }
            else
            {
                proxy[n] = text[i];
                i++;
            }
        }
        offsets[n] = text.Length;
        foreach (var m in _regex.EnumerateMatches(proxy.AsSpan(0, n)))
        {
            int start = offsets[m.Index];
            output.Add((start, offsets[m.Index + m.Length] - start));
        }
    }

    /// <summary>A BMP character of the given general category that case-folds to no ASCII character.</summary>
    internal static char Representative(UnicodeCategory category) => category switch
    {
        UnicodeCategory.UppercaseLetter => '\u0391',
        UnicodeCategory.LowercaseLetter => '\u03B1',
        UnicodeCategory.TitlecaseLetter => '\u01C5',
        UnicodeCategory.ModifierLetter => '\u02B0',
        UnicodeCategory.OtherLetter => '\u05D0',
        UnicodeCategory.NonSpacingMark => '\u0300',
        UnicodeCategory.SpacingCombiningMark => '\u0903',
        UnicodeCategory.EnclosingMark => '\u20DD',
        UnicodeCategory.DecimalDigitNumber => '\u0660',
        UnicodeCategory.LetterNumber => '\u2160',
        UnicodeCategory.OtherNumber => '\u00B2',
        UnicodeCategory.SpaceSeparator => '\u2000',
        UnicodeCategory.LineSeparator => '\u2028',
        UnicodeCategory.ParagraphSeparator => '\u2029',
        UnicodeCategory.Control => '\u0080',
        UnicodeCategory.Format => '\u00AD',
        UnicodeCategory.PrivateUse => '\uE000',
        UnicodeCategory.ConnectorPunctuation => '\u203F',
        UnicodeCategory.DashPunctuation => '\u2010',
        UnicodeCategory.OpenPunctuation => '\u2045',
        UnicodeCategory.ClosePunctuation => '\u2046',
        UnicodeCategory.InitialQuotePunctuation => '\u00AB',
        UnicodeCategory.FinalQuotePunctuation => '\u00BB',
        UnicodeCategory.OtherPunctuation => '\u00A1',
        UnicodeCategory.MathSymbol => '\u00AC',
        UnicodeCategory.CurrencySymbol => '\u00A2',
        UnicodeCategory.ModifierSymbol => '\u00B4',
        UnicodeCategory.OtherSymbol => '\u00A9',
        _ => '\u0378', // unassigned
    };

    /// <summary>Rewrites Oniguruma-only syntax (possessive quantifiers) into .NET syntax.</summary>
    internal static string Translate(string pattern)
    {
        var sb = new StringBuilder(pattern.Length + 16);
        // Start offsets (in sb) of the open groups, and of the last complete atom.
        var groupStarts = new Stack<int>();
        int atomStart = -1;
        int i = 0;
        while (i < pattern.Length)
        {
            char c = pattern[i];
            if (c == '\\')
            {
                int len = EscapeLength(pattern, i);
                atomStart = sb.Length;
                sb.Append(pattern, i, len);
                i += len;
            }
            else if (c == '[')
            {
                int end = ClassEnd(pattern, i);
                atomStart = sb.Length;
                sb.Append(pattern, i, end - i);
                i = end;
            }
            else if (c == '(')
            {
                groupStarts.Push(sb.Length);
                sb.Append(c);
                i++;
                atomStart = -1;
            }
            else if (c == ')')
            {
                sb.Append(c);
                i++;
                atomStart = groupStarts.Count > 0 ? groupStarts.Pop() : -1;
            }
            else if (c is '*' or '+' or '?' || (c == '{' && QuantifierEnd(pattern, i) > 0))
            {
                int end = c == '{' ? QuantifierEnd(pattern, i) : i + 1;
                string quantifier = pattern[i..end];
                i = end;
                if (i < pattern.Length && pattern[i] == '+' && atomStart >= 0)
                {
                    // Possessive: x{q}+ == (?>x{q}).
                    sb.Insert(atomStart, "(?>");
                    sb.Append(quantifier).Append(')');
                    i++;
                }
                else
                {
                    sb.Append(quantifier);
                    if (i < pattern.Length && pattern[i] == '?') { sb.Append('?'); i++; } // lazy
                }
                atomStart = -1;
            }
            else
            {
                atomStart = sb.Length;
                sb.Append(c);
                i++;
            }
        }
        return sb.ToString();
    }

    static int EscapeLength(string p, int i)
    {
        if (i + 1 >= p.Length) return 1;
        char e = p[i + 1];
        if ((e is 'p' or 'P') && i + 2 < p.Length && p[i + 2] == '{')
        {
            int close = p.IndexOf('}', i + 2);
            return close < 0 ? 2 : close - i + 1;
        }
        if (e == 'x' && i + 2 < p.Length && p[i + 2] == '{')
        {
            int close = p.IndexOf('}', i + 2);
            return close < 0 ? 2 : close - i + 1;
        }
        return 2;
    }

    static int ClassEnd(string p, int i)
    {
        int j = i + 1;
        if (j < p.Length && p[j] == '^') j++;
        if (j < p.Length && p[j] == ']') j++; // a leading ']' is literal
        int depth = 1;
        while (j < p.Length)
        {
            char c = p[j];
            if (c == '\\') { j += EscapeLength(p, j); continue; }
            if (c == '[') depth++;
            else if (c == ']' && --depth == 0) return j + 1;
            j++;
        }
        return p.Length;
    }

    /// <summary>End offset of a {n}, {n,} or {n,m} quantifier starting at i, or 0 when '{' is a literal.</summary>
    static int QuantifierEnd(string p, int i)
    {
        int j = i + 1;
        int digits = 0;
        while (j < p.Length && char.IsAsciiDigit(p[j])) { j++; digits++; }
        if (digits == 0) return 0;
        if (j < p.Length && p[j] == ',')
        {
            j++;
            while (j < p.Length && char.IsAsciiDigit(p[j])) j++;
        }
        return j < p.Length && p[j] == '}' ? j + 1 : 0;
    }
}
