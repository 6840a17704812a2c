namespace AlignSharp.Text;

/// <summary>
/// A Hugging Face tokenizer.json tokenizer with a BPE model, byte-level (GPT-2, Llama 3, Qwen2/3) or
/// SentencePiece-style with byte fallback (Llama 2, Mistral, Gemma; see <see cref="BpeModel"/>). Pipeline per
/// <see cref="Encode"/>: split out added tokens that match the raw text → normalize each remaining gap → split out
/// added tokens marked <c>normalized</c> → pre-tokenize → byte-level BPE per piece → post-process (e.g. BOS).
/// Immutable and thread-safe (the BPE cache is concurrent). Built by <see cref="Tokenizers.Load"/>.
/// </summary>
public sealed class HfTokenizer : ITokenizer
{
    /// <summary>tokenizer_config.json's clean_up_tokenization_spaces (false when absent, transformers' default since 4.45).</summary>
    public bool CleanUpTokenizationSpaces { get; init; }

    /// <inheritdoc/>
    public string CleanUp(string decoded) => !CleanUpTokenizationSpaces ? decoded : decoded
        .Replace(" .", ".").Replace(" ?", "?").Replace(" !", "!").Replace(" ,", ",").Replace(" ' ", "'")
        .Replace(" n't", "n't").Replace(" 'm", "'m").Replace(" 's", "'s").Replace(" 've", "'ve").Replace(" 're", "'re");

    readonly BpeModel _model;
    readonly Normalizer? _normalizer;
    readonly PreTokenizer _preTokenizer;
    readonly PostProcessor _postProcessor;
    readonly Decoder _decoder;
    readonly AddedTokenMatcher _rawAdded;
    readonly AddedTokenMatcher _normalizedAdded;
    readonly Dictionary<string, int> _addedByContent;
    readonly string?[] _idToToken;
    readonly bool[] _special;

    internal HfTokenizer(BpeModel model, Normalizer? normalizer, PreTokenizer preTokenizer, PostProcessor postProcessor,
        Decoder decoder, IReadOnlyList<AddedToken> added, string? bos, string? eos, string? pad)
    {
        _model = model;
        _normalizer = normalizer;
        _preTokenizer = preTokenizer;
        _postProcessor = postProcessor;
        _decoder = decoder;
        _rawAdded = new AddedTokenMatcher(added.Where(t => !t.Normalized || normalizer is null));
        // As in tokenizers, a "normalized" added token is looked for in the normalized text in its normalized form
        // (under Llama 2's Prepend+Replace normalizer, "a b" is looked for as "▁a▁b").
        _normalizedAdded = new AddedTokenMatcher(added.Where(t => t.Normalized && normalizer is not null)
            .Select(t => t with { Content = normalizer!.Normalize(t.Content) }));
        _addedByContent = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var t in added) _addedByContent[t.Content] = t.Id;

        int size = 0;
        foreach (var id in model.Vocab.Values) size = Math.Max(size, id + 1);
        foreach (var t in added) size = Math.Max(size, t.Id + 1);
        _idToToken = new string?[size];
        _special = new bool[size];
        foreach (var (token, id) in model.Vocab) _idToToken[id] = token;
        foreach (var t in added)
        {
            _idToToken[t.Id] = t.Content;
            _special[t.Id] = t.Special;
        }
        BosToken = bos;
        EosToken = eos;
        PadToken = pad;
    }

    public int VocabSize => _idToToken.Length;
    public string? BosToken { get; }
    public string? EosToken { get; }
    public string? PadToken { get; }
    public int? BosId => BosToken is null ? null : TokenToId(BosToken);
    public int? EosId => EosToken is null ? null : TokenToId(EosToken);
    public int? PadId => PadToken is null ? null : TokenToId(PadToken);

    public int[] Encode(string text, bool addSpecialTokens = true)
    {
        ArgumentNullException.ThrowIfNull(text);
        var ids = new List<int>(text.Length / 3 + 4);
        var segments = new List<Segment>();
        _rawAdded.Split(text, 0, text.Length, segments);
        foreach (var s in segments)
        {
            if (s.IsAdded) { ids.Add(s.AddedId); continue; }
            bool atStart = s.Start == 0;
            if (_normalizer is null) { EncodePlain(text.AsMemory(s.Start, s.Length), atStart, ids); continue; }
            string normalized = _normalizer.Normalize(text.Substring(s.Start, s.Length));
            if (_normalizedAdded.IsEmpty) { EncodePlain(normalized.AsMemory(), atStart, ids); continue; }
            var inner = new List<Segment>();
            _normalizedAdded.Split(normalized, 0, normalized.Length, inner);
            foreach (var n in inner)
            {
                if (n.IsAdded) ids.Add(n.AddedId);
                else EncodePlain(normalized.AsMemory(n.Start, n.Length), atStart && n.Start == 0, ids);
            }
        }
        return _postProcessor.Process(ids, addSpecialTokens).ToArray();
    }

    void EncodePlain(ReadOnlyMemory<char> text, bool atTextStart, List<int> ids)
    {
        if (text.IsEmpty) return;
        var pieces = new List<ReadOnlyMemory<char>>();
        _preTokenizer.Split(text, pieces, atTextStart);
        foreach (var piece in pieces) _model.Encode(piece.Span, ids);
    }

    public string Decode(ReadOnlySpan<int> ids, bool skipSpecialTokens = false)
    {
        var tokens = new List<string>(ids.Length);
        foreach (int id in ids)
        {
            string token = IdToToken(id) ?? throw new ArgumentOutOfRangeException(nameof(ids), $"token id {id} is not in the vocabulary (size {VocabSize})");
            if (skipSpecialTokens && _special[id]) continue;
            tokens.Add(token);
        }
        return _decoder.Decode(tokens);
    }

    public int? TokenToId(string token) =>
        _addedByContent.TryGetValue(token, out int a) ? a : _model.Vocab.TryGetValue(token, out int v) ? v : null;

    public string? IdToToken(int id) => (uint)id < (uint)_idToToken.Length ? _idToToken[id] : null;

    public bool IsSpecial(int id) => (uint)id < (uint)_special.Length && _special[id];
}
