using System.Text;

namespace AlignSharp.Text;

/// <summary>A tokenizer.json "normalizer": rewrites the text before pre-tokenization.</summary>
internal abstract class Normalizer
{
    public abstract string Normalize(string text);
}

/// <summary>NFC, NFD, NFKC or NFKD, by our managed <see cref="UnicodeNormalization"/> (no ICU needed).</summary>
internal sealed class UnicodeNormalizer(NormalizationForm form) : Normalizer
{
    public override string Normalize(string text) => UnicodeNormalization.Normalize(text, form);
}

internal sealed class LowercaseNormalizer : Normalizer
{
    public override string Normalize(string text) => text.ToLowerInvariant();
}

/// <summary>Prepends a fixed string to non-empty text.</summary>
internal sealed class PrependNormalizer(string prefix) : Normalizer
{
    public override string Normalize(string text) => text.Length == 0 ? text : prefix + text;
}

/// <summary>Replaces every occurrence of a literal string or a regex with <c>content</c>.</summary>
internal sealed class ReplaceNormalizer : Normalizer
{
    readonly string? _literal;
    readonly OnigurumaRegex? _regex;
    readonly string _content;

    public ReplaceNormalizer(string? literal, OnigurumaRegex? regex, string content)
    {
        _literal = literal;
        _regex = regex;
        _content = content;
    }

    public override string Normalize(string text)
    {
        if (_literal is not null) return _literal.Length == 0 ? text : text.Replace(_literal, _content, StringComparison.Ordinal);
        var matches = new List<(int Start, int Length)>();
        _regex!.Matches(text, matches);
        if (matches.Count == 0) return text;
        var sb = new StringBuilder(text.Length);
        int last = 0;
        foreach (var (start, length) in matches)
        {
            sb.Append(text, last, start - last).Append(_content);
            last = start + length;
        }
        return sb.Append(text, last, text.Length - last).ToString();
    }
}

/// <summary>Strips whitespace on the left and/or right.</summary>
internal sealed class StripNormalizer(bool left, bool right) : Normalizer
{
    public override string Normalize(string text) => (left, right) switch
    {
        (true, true) => text.Trim(),
        (true, false) => text.TrimStart(),
        (false, true) => text.TrimEnd(),
        _ => text,
    };
}

internal sealed class SequenceNormalizer(IReadOnlyList<Normalizer> steps) : Normalizer
{
    public override string Normalize(string text)
    {
        foreach (var step in steps) text = step.Normalize(text);
        return text;
    }
}
