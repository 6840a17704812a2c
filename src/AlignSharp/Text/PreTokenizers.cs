namespace AlignSharp.Text;

/// <summary>
/// A tokenizer.json "pre_tokenizer": cuts a text segment into pieces that BPE encodes independently.
/// Pieces are slices of the segment (or, for ByteLevel's prefix space, of a new string).
/// </summary>
internal abstract class PreTokenizer
{
    /// <summary>Appends the pieces of a whole text to <paramref name="output"/>; empty pieces are dropped.</summary>
    public void Split(ReadOnlyMemory<char> piece, List<ReadOnlyMemory<char>> output) => Split(piece, output, atTextStart: true);

    /// <summary>
    /// Appends the pieces of <paramref name="piece"/> to <paramref name="output"/>; empty pieces are dropped.
    /// <paramref name="atTextStart"/>: whether the piece begins at offset 0 of the original text (not after an added
    /// token), which Metaspace's prepend_scheme "first" looks at.
    /// </summary>
    public abstract void Split(ReadOnlyMemory<char> piece, List<ReadOnlyMemory<char>> output, bool atTextStart);
}

/// <summary>How a Split pre-tokenizer treats the text its pattern matches (tokenizers' SplitDelimiterBehavior).</summary>
internal enum SplitBehavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous }

/// <summary>
/// Splits on a literal or regex pattern. The text is cut into alternating runs of matches and gaps; with
/// <c>invert</c> the roles swap. Then: Removed drops matches; Isolated keeps every run; MergedWithPrevious glues each
/// match to the run before it; MergedWithNext to the run after it; Contiguous joins adjacent matches into one piece.
/// </summary>
internal sealed class SplitPreTokenizer(OnigurumaRegex pattern, SplitBehavior behavior, bool invert) : PreTokenizer
{
    public override void Split(ReadOnlyMemory<char> piece, List<ReadOnlyMemory<char>> output, bool atTextStart)
    {
        var matches = new List<(int Start, int Length)>();
        pattern.Matches(piece.Span, matches);
        if (behavior == SplitBehavior.Isolated)
        {
            // Every run is its own piece, whichever of matches and gaps is inverted: no run bookkeeping needed.
            int end = 0;
            foreach (var (start, length) in matches)
            {
                if (start > end) output.Add(piece[end..start]);
                if (length > 0) output.Add(piece.Slice(start, length));
                end = start + length;
            }
            if (end < piece.Length) output.Add(piece[end..]);
            return;
        }

        // Runs covering the whole piece: (start, end, isMatch).
        var runs = new List<(int Start, int End, bool IsMatch)>(matches.Count * 2 + 1);
        int last = 0;
        foreach (var (start, length) in matches)
        {
            if (start > last) runs.Add((last, start, invert));
            runs.Add((start, start + length, !invert));
            last = start + length;
        }
        if (last < piece.Length) runs.Add((last, piece.Length, invert));

        var kept = new List<(int Start, int End, bool Removed)>(runs.Count);
        switch (behavior)
        {
            case SplitBehavior.Removed:
                foreach (var r in runs) kept.Add((r.Start, r.End, r.IsMatch));
                break;
            case SplitBehavior.Isolated:
                foreach (var r in runs) kept.Add((r.Start, r.End, false));
                break;
            case SplitBehavior.Contiguous:
            {
                bool previousMatch = false;
                foreach (var r in runs)
                {
                    if (r.IsMatch == previousMatch && kept.Count > 0) kept[^1] = (kept[^1].Start, r.End, false);
                    else kept.Add((r.Start, r.End, false));
                    previousMatch = r.IsMatch;
                }
                break;
            }
            case SplitBehavior.MergedWithPrevious:
            {
                bool previousMatch = false;
                foreach (var r in runs)
                {
                    if (r.IsMatch && !previousMatch && kept.Count > 0) kept[^1] = (kept[^1].Start, r.End, false);
                    else kept.Add((r.Start, r.End, false));
                    previousMatch = r.IsMatch;
                }
                break;
            }
            case SplitBehavior.MergedWithNext:
            {
                bool previousMatch = false; // in reverse order: whether the run after this one matched
                for (int i = runs.Count - 1; i >= 0; i--)
                {
                    var r = runs[i];
                    if (r.IsMatch && !previousMatch && kept.Count > 0) kept[^1] = (r.Start, kept[^1].End, false);
                    else kept.Add((r.Start, r.End, false));
                    previousMatch = r.IsMatch;
                }
                kept.Reverse();
                break;
            }
        }
        foreach (var (start, end, removed) in kept)
            if (!removed && end > start) output.Add(piece[start..end]);
    }
}

/// <summary>
/// GPT-2's byte-level pre-tokenizer: optionally prefixes a space, optionally splits with the GPT-2 regex. The
/// byte → character mapping itself happens inside <see cref="BpeModel"/>, which encodes the UTF-8 bytes of each piece.
/// </summary>
internal sealed class ByteLevelPreTokenizer(bool addPrefixSpace, bool useRegex) : PreTokenizer
{
    internal const string Gpt2Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
    static readonly OnigurumaRegex Gpt2Regex = new(Gpt2Pattern);
    static readonly SplitPreTokenizer Gpt2Split = new(Gpt2Regex, SplitBehavior.Isolated, invert: false);

    public override void Split(ReadOnlyMemory<char> piece, List<ReadOnlyMemory<char>> output, bool atTextStart)
    {
        if (addPrefixSpace && !piece.Span.StartsWith(' ')) piece = (" " + piece.Span.ToString()).AsMemory();
        if (useRegex) Gpt2Split.Split(piece, output);
        else if (!piece.IsEmpty) output.Add(piece);
    }
}

/// <summary>Metaspace's prepend_scheme: when the replacement character is put in front of a piece.</summary>
internal enum PrependScheme { Always, First, Never }

/// <summary>
/// SentencePiece's whitespace handling: every space becomes <c>replacement</c> (U+2581 "▁"); a piece that does not
/// start with it gets one prepended (prepend_scheme "always"; "first": only the piece at the start of the text, not
/// one after an added token; "never"). With <c>split</c>, the piece is then cut before every replacement character
/// ("▁Hello▁▁world" → "▁Hello", "▁", "▁world"), as tokenizers' MergedWithNext split does.
/// </summary>
internal sealed class MetaspacePreTokenizer(char replacement, PrependScheme prependScheme, bool split) : PreTokenizer
{
    public override void Split(ReadOnlyMemory<char> piece, List<ReadOnlyMemory<char>> output, bool atTextStart)
    {
        var span = piece.Span;
        if (span.IsEmpty) return;
        bool prepend = (prependScheme == PrependScheme.Always || (prependScheme == PrependScheme.First && atTextStart))
                       && span[0] != ' ' && span[0] != replacement;
        var chars = new char[span.Length + (prepend ? 1 : 0)];
        int w = 0;
        if (prepend) chars[w++] = replacement;
        foreach (char c in span) chars[w++] = c == ' ' ? replacement : c;
        var text = chars.AsMemory();
        if (!split)
        {
            output.Add(text);
            return;
        }
        int start = 0;
        for (int i = 1; i < chars.Length; i++)
        {
            if (chars[i] != replacement) continue;
            output.Add(text[start..i]);
            start = i;
        }
        output.Add(text[start..]);
    }
}

internal sealed class SequencePreTokenizer(IReadOnlyList<PreTokenizer> steps) : PreTokenizer
{
    public override void Split(ReadOnlyMemory<char> piece, List<ReadOnlyMemory<char>> output, bool atTextStart)
    {
        var current = new List<ReadOnlyMemory<char>> { piece };
        var next = new List<ReadOnlyMemory<char>>();
        foreach (var step in steps)
        {
            next.Clear();
            // Only the first piece of a text that starts at offset 0 still starts there after a split.
            for (int i = 0; i < current.Count; i++) step.Split(current[i], next, atTextStart && i == 0);
            (current, next) = (next, current);
        }
        output.AddRange(current);
    }
}
