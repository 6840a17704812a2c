using System.Text;

namespace AlignSharp.Text;

/// <summary>A tokenizer.json "decoder": turns token strings back into text.</summary>
internal abstract class Decoder
{
    public abstract string Decode(IReadOnlyList<string> tokens);
}

/// <summary>
/// One step of a decoder chain, as in tokenizers' <c>decode_chain</c>: token strings in, token strings out. A chain
/// (one step, or a "Sequence") runs its steps in order and concatenates what the last one returns.
/// </summary>
internal abstract class DecoderStep
{
    public abstract List<string> DecodeChain(List<string> tokens);
}

internal sealed class ChainDecoder(IReadOnlyList<DecoderStep> steps) : Decoder
{
    public override string Decode(IReadOnlyList<string> tokens)
    {
        var current = tokens as List<string> ?? tokens.ToList();
        foreach (var step in steps) current = step.DecodeChain(current);
        return string.Concat(current);
    }
}

/// <summary>Maps each token's characters back to bytes (<see cref="ByteLevelAlphabet"/>) and decodes the UTF-8, invalid sequences as U+FFFD.</summary>
internal sealed class ByteLevelDecoder : DecoderStep
{
    public override List<string> DecodeChain(List<string> tokens)
    {
        var bytes = new List<byte>();
        foreach (var t in tokens) ByteLevelAlphabet.AppendBytes(t, bytes);
        return [Encoding.UTF8.GetString(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(bytes))];
    }
}

/// <summary>
/// Runs of byte-fallback tokens (<c>&lt;0xNN&gt;</c>) become the text their bytes encode; a run that is not valid
/// UTF-8 becomes one U+FFFD per byte, as in tokenizers (so a partial character mid-generation shows as �).
/// </summary>
internal sealed class ByteFallbackDecoder : DecoderStep
{
    static readonly UTF8Encoding Strict = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    public override List<string> DecodeChain(List<string> tokens)
    {
        var result = new List<string>(tokens.Count);
        var run = new List<byte>();
        foreach (var token in tokens)
        {
            if (TryParseByte(token, out byte b))
            {
                run.Add(b);
                continue;
            }
            Flush(run, result);
            result.Add(token);
        }
        Flush(run, result);
        return result;
    }

    static bool TryParseByte(string token, out byte value)
    {
        value = 0;
        return token.Length == 6 && token.StartsWith("<0x", StringComparison.Ordinal) && token[5] == '>'
               && byte.TryParse(token.AsSpan(3, 2), System.Globalization.NumberStyles.AllowHexSpecifier, null, out value);
    }

    static void Flush(List<byte> run, List<string> result)
    {
        if (run.Count == 0) return;
        try
        {
            result.Add(Strict.GetString(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(run)));
        }
        catch (DecoderFallbackException)
        {
            for (int i = 0; i < run.Count; i++) result.Add("\uFFFD");
        }
        run.Clear();
    }
}

/// <summary>Joins all tokens into one.</summary>
internal sealed class FuseDecoder : DecoderStep
{
    public override List<string> DecodeChain(List<string> tokens) => [string.Concat(tokens)];
}

/// <summary>Replaces a literal or regex in every token (e.g. "▁" → " ").</summary>
internal sealed class ReplaceDecoder(ReplaceNormalizer replace) : DecoderStep
{
    public override List<string> DecodeChain(List<string> tokens) => tokens.Select(replace.Normalize).ToList();
}

/// <summary>Removes up to <c>start</c> leading and <c>stop</c> trailing <c>content</c> characters from every token.</summary>
internal sealed class StripDecoder(char content, int start, int stop) : DecoderStep
{
    public override List<string> DecodeChain(List<string> tokens) => tokens.Select(Strip).ToList();

    string Strip(string token)
    {
        int from = 0;
        while (from < start && from < token.Length && token[from] == content) from++;
        int to = token.Length;
        while (token.Length - to < stop && to > from && token[to - 1] == content) to--;
        return token[from..to];
    }
}

/// <summary>
/// Inverse of the Metaspace pre-tokenizer: the replacement character becomes a space, except in the first token,
/// where it is dropped unless prepend_scheme is "never" (tokenizers' behaviour; transformers.js drops only the first).
/// </summary>
internal sealed class MetaspaceDecoder(char replacement, PrependScheme prependScheme) : DecoderStep
{
    public override List<string> DecodeChain(List<string> tokens)
    {
        var result = new List<string>(tokens.Count);
        for (int i = 0; i < tokens.Count; i++)
            result.Add(i == 0 && prependScheme != PrependScheme.Never
                ? tokens[i].Replace(replacement.ToString(), "", StringComparison.Ordinal)
                : tokens[i].Replace(replacement, ' '));
        return result;
    }
}

/// <summary>No decoder in tokenizer.json: tokens joined with spaces, as tokenizers does.</summary>
internal sealed class JoinDecoder : Decoder
{
    public override string Decode(IReadOnlyList<string> tokens) => string.Join(' ', tokens);
}
