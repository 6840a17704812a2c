using System.Buffers;

namespace AlignSharp.Text;

/// <summary>One entry of tokenizer.json's "added_tokens".</summary>
internal sealed record AddedToken(int Id, string Content, bool Special, bool SingleWord, bool LStrip, bool RStrip, bool Normalized);

/// <summary>A slice of the input: either plain text for the normal pipeline or an added token's id.</summary>
internal readonly record struct Segment(int Start, int Length, int AddedId)
{
    public bool IsAdded => AddedId >= 0;
}

/// <summary>
/// Finds added tokens in text before normalization and BPE, as tokenizers' AddedVocabulary does: leftmost match,
/// longest on ties; <c>single_word</c> tokens only match with no word character on either side; <c>lstrip</c> /
/// <c>rstrip</c> swallow the whitespace to their left / right.
/// </summary>
internal sealed class AddedTokenMatcher
{
    readonly AddedToken[] _tokens;
    readonly SearchValues<string>? _search;
    readonly Dictionary<char, AddedToken[]> _byFirstChar;

    public AddedTokenMatcher(IEnumerable<AddedToken> tokens)
    {
        _tokens = tokens.Where(t => t.Content.Length > 0).ToArray();
        _byFirstChar = _tokens.GroupBy(t => t.Content[0])
            .ToDictionary(g => g.Key, g => g.OrderByDescending(t => t.Content.Length).ToArray());
        if (_tokens.Length > 0)
            _search = SearchValues.Create(_tokens.Select(t => t.Content).Distinct().ToArray(), StringComparison.Ordinal);
    }

    public bool IsEmpty => _tokens.Length == 0;

    /// <summary>Appends the segments of text[start..start+length] (absolute offsets) to <paramref name="output"/>.</summary>
    public void Split(string text, int start, int length, List<Segment> output)
    {
        int end = start + length;
        int pos = start; // first offset not yet emitted
        int searchFrom = start;
        while (_search is not null && searchFrom < end)
        {
            int rel = text.AsSpan(searchFrom, end - searchFrom).IndexOfAny(_search);
            if (rel < 0) break;
            int at = searchFrom + rel;
            AddedToken? hit = null;
            foreach (var t in _byFirstChar[text[at]])
            {
                if (t.Content.Length > end - at || !text.AsSpan(at, t.Content.Length).SequenceEqual(t.Content)) continue;
                if (t.SingleWord && !IsWordBoundary(text, start, end, at, at + t.Content.Length)) continue;
                hit = t;
                break;
            }
            if (hit is null) { searchFrom = at + 1; continue; }
            int matchStart = at, matchEnd = at + hit.Content.Length;
            if (hit.LStrip) while (matchStart > pos && char.IsWhiteSpace(text[matchStart - 1])) matchStart--;
            if (hit.RStrip) while (matchEnd < end && char.IsWhiteSpace(text[matchEnd])) matchEnd++;
            if (matchStart > pos) output.Add(new Segment(pos, matchStart - pos, -1));
            output.Add(new Segment(matchStart, matchEnd - matchStart, hit.Id));
            pos = searchFrom = matchEnd;
        }
        if (end > pos) output.Add(new Segment(pos, end - pos, -1));
    }

    static bool IsWordChar(char c) => char.IsLetterOrDigit(c) || c == '_';

    static bool IsWordBoundary(string text, int start, int end, int matchStart, int matchEnd) =>
        (matchStart == start || !IsWordChar(text[matchStart - 1])) && (matchEnd == end || !IsWordChar(text[matchEnd]));
}
