namespace AlignSharp.Text;

/// <summary>
/// Text ↔ token ids. Implementations are immutable after construction and safe to call from many threads.
/// </summary>
public interface ITokenizer
{
    /// <summary>Number of embedding rows a model needs: the largest id (added tokens included) plus one.</summary>
    int VocabSize { get; }

    /// <summary>
    /// Encodes <paramref name="text"/>. Special tokens written inside the text (e.g. <c>&lt;|endoftext|&gt;</c>) are
    /// always recognised; <paramref name="addSpecialTokens"/> controls only the tokens the tokenizer adds around
    /// the text (e.g. a BOS token from a template post-processor).
    /// </summary>
    int[] Encode(string text, bool addSpecialTokens = true);

    /// <summary>Decodes ids to text; with <paramref name="skipSpecialTokens"/>, tokens marked special are dropped.</summary>
    string Decode(ReadOnlySpan<int> ids, bool skipSpecialTokens = false);

    /// <summary>
    /// A decoded text as transformers' decode returns it: with tokenizer_config.json's clean_up_tokenization_spaces
    /// true (GPT-2, Llama 3), the spaces its English tokenizers once put before punctuation and contractions are removed
    /// (" ." → ".", " n't" → "n't", ...). Applied to texts handed out (completions), never to ones re-read as tokens.
    /// </summary>
    string CleanUp(string decoded) => decoded;

    /// <summary>The id of a token string (vocabulary or added token), or null when unknown.</summary>
    int? TokenToId(string token);

    /// <summary>The token string of an id, or null when the id is out of range or unused.</summary>
    string? IdToToken(int id);

    /// <summary>True when <paramref name="id"/> is a special token (skipped by <c>Decode(skipSpecialTokens: true)</c>).</summary>
    bool IsSpecial(int id);

    string? BosToken { get; }
    string? EosToken { get; }
    string? PadToken { get; }
    int? BosId { get; }
    int? EosId { get; }
    int? PadId { get; }
}

public static class TokenizerComparison
{
    /// <summary>
    /// True when two tokenizers give the same ids (same vocabulary size, same EOS, and the same encoding of a probe
    /// text with digits, white space, accents and an emoji): a model can then read the other's tokens.
    /// </summary>
    public static bool SameTokens(ITokenizer a, ITokenizer b)
    {
        const string probe = "The value model reads the policy's tokens: 123 \n\t é 🙂";
        return a.VocabSize == b.VocabSize && a.EosId == b.EosId && a.Encode(probe).SequenceEqual(b.Encode(probe));
    }
}
