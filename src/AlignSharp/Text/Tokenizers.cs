using System.Text;
using System.Text.Json;

namespace AlignSharp.Text;

/// <summary>Loads tokenizers by name or path.</summary>
public static class Tokenizers
{
    /// <summary>
    /// <paramref name="path"/> is the word <c>byte</c> (a <see cref="ByteTokenizer"/>), a tokenizer.json file, or a model
    /// directory holding tokenizer.json. BOS/EOS/PAD token names come from a tokenizer_config.json next to the
    /// tokenizer.json when there is one (<c>bos_token</c>, <c>eos_token</c>, <c>pad_token</c>, as strings or
    /// <c>{"content": ...}</c> objects). Throws <see cref="UserInputException"/> naming the file for a missing file,
    /// malformed JSON, or an unsupported component.
    /// </summary>
    public static ITokenizer Load(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (path == "byte") return new ByteTokenizer();
        string file = Directory.Exists(path) ? Path.Combine(path, "tokenizer.json") : path;
        if (!File.Exists(file))
            throw new UserInputException(Directory.Exists(path)
                ? $"{path}: model directory has no tokenizer.json"
                : $"{path}: no such tokenizer file or directory (expected a tokenizer.json, a model directory, or 'byte')");
        string? configFile = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(file))!, "tokenizer_config.json");
        if (!File.Exists(configFile)) configFile = null;
        return TokenizerJson.Load(file, configFile);
    }
}

/// <summary>Reads tokenizer.json (+ tokenizer_config.json) into an <see cref="HfTokenizer"/>.</summary>
internal static class TokenizerJson
{
    public static HfTokenizer Load(string file, string? configFile)
    {
        using var doc = Parse(file);
        string? bos = null, eos = null, pad = null;
        bool? addBos = null;
        bool cleanUp = false;
        List<AddedToken> declared = [];
        if (configFile is not null)
        {
            using var config = Parse(configFile);
            bos = SpecialName(config.RootElement, "bos_token");
            eos = SpecialName(config.RootElement, "eos_token");
            pad = SpecialName(config.RootElement, "pad_token");
            addBos = SentencePieceAddsBos(config.RootElement);
            cleanUp = config.RootElement.TryGetProperty("clean_up_tokenization_spaces", out var c) && c.ValueKind == JsonValueKind.True;
            if (config.RootElement.TryGetProperty("added_tokens_decoder", out var decoder))
                declared = new Reader(configFile).AddedTokensDecoder(decoder);
        }
        return FromJson(doc.RootElement, file, bos, eos, pad, addBos, declared, cleanUp);
    }

    /// <summary>
    /// Whether a LlamaTokenizer, GemmaTokenizer or CodeLlamaTokenizer (fast or not) puts BOS first: transformers rebuilds
    /// those classes' post-processor from tokenizer_config.json's add_bos_token (default true) whatever tokenizer.json holds.
    /// Null for other classes, whose tokenizer.json post-processor stands. (Their add_eos_token is not applied: completions
    /// end with EOS here anyway, and a prompt never does.)
    /// </summary>
    static bool? SentencePieceAddsBos(JsonElement config)
    {
        if (!config.TryGetProperty("tokenizer_class", out var c) || c.ValueKind != JsonValueKind.String) return null;
        string name = c.GetString()!;
        if (name.EndsWith("Fast", StringComparison.Ordinal)) name = name[..^4];
        if (name is not ("LlamaTokenizer" or "GemmaTokenizer" or "CodeLlamaTokenizer")) return null;
        return !(config.TryGetProperty("add_bos_token", out var b) && b.ValueKind == JsonValueKind.False);
    }

    /// <summary>Builds a tokenizer from the root of a tokenizer.json; <paramref name="source"/> names the file in errors.
    /// <paramref name="addBos"/>: the post-processor is BOS then the text (true) or the text alone (false), not tokenizer.json's.
    /// <paramref name="declared"/>: tokenizer_config.json's added_tokens_decoder; those tokenizer.json lacks (neither the id
    /// nor the text taken) are added, as transformers registers them when it loads the tokenizer.
    /// <paramref name="cleanUpSpaces"/>: tokenizer_config.json's clean_up_tokenization_spaces (<see cref="HfTokenizer.CleanUp"/>).</summary>
    public static HfTokenizer FromJson(JsonElement root, string source, string? bos = null, string? eos = null, string? pad = null, bool? addBos = null,
        IReadOnlyList<AddedToken>? declared = null, bool cleanUpSpaces = false)
    {
        var r = new Reader(source);
        if (root.ValueKind != JsonValueKind.Object) throw r.Error("the top level is not a JSON object");
        var normalizer = r.Normalizer(root.TryGetProperty("normalizer", out var n) ? n : default);
        // A ByteLevel pre-tokenizer makes the BPE byte-level (GPT-2, Llama 3, Qwen); without one the BPE works on code
        // points, SentencePiece style (Llama 2, Mistral, Gemma: byte_fallback, Metaspace or a "▁" Replace normalizer).
        var preTokenizer = r.PreTokenizer(root.TryGetProperty("pre_tokenizer", out var p) ? p : default, out bool byteLevel);
        var model = r.Model(r.Required(root, "model", "the top level"), byteLevel);
        var added = r.AddedTokens(root.TryGetProperty("added_tokens", out var a) ? a : default);
        if (declared is { Count: > 0 })
        {
            var vocabIds = model.Vocab.Values.ToHashSet();
            foreach (var t in declared)
                if (!added.Any(x => x.Id == t.Id || x.Content == t.Content) && !model.Vocab.ContainsKey(t.Content) && !vocabIds.Contains(t.Id))
                    added.Add(t);
        }
        var addedIds = added.ToDictionary(t => t.Content, t => t.Id, StringComparer.Ordinal);
        int TokenId(string token) =>
            addedIds.TryGetValue(token, out int id) ? id
            : model.Vocab.TryGetValue(token, out id) ? id
            : throw r.Error($"post_processor names token '{token}', which is not in the vocabulary");
        var post = addBos switch
        {
            true => new TemplatePostProcessor([TokenId(bos ?? throw r.Error("tokenizer_config.json asks for a BOS (add_bos_token) but names no bos_token"))], []),
            false => new TemplatePostProcessor([], []),
            null => r.PostProcessor(root.TryGetProperty("post_processor", out var pp) ? pp : default, TokenId),
        };
        var decoder = r.Decoder(root.TryGetProperty("decoder", out var d) ? d : default);
        return new HfTokenizer(model, normalizer, preTokenizer, post, decoder, added, bos, eos, pad) { CleanUpTokenizationSpaces = cleanUpSpaces };
    }

    static JsonDocument Parse(string file)
    {
        try
        {
            return JsonDocument.Parse(File.ReadAllBytes(file), new JsonDocumentOptions { MaxDepth = 256 });
        }
        catch (JsonException e)
        {
            throw new UserInputException($"{file}: not valid JSON (line {e.LineNumber + 1}): {e.Message}", e);
        }
        catch (IOException e)
        {
            throw new UserInputException($"{file}: cannot read: {e.Message}", e);
        }
    }

    static string? SpecialName(JsonElement config, string key)
    {
        if (!config.TryGetProperty(key, out var v)) return null;
        return v.ValueKind switch
        {
            JsonValueKind.String => v.GetString(),
            JsonValueKind.Object when v.TryGetProperty("content", out var c) && c.ValueKind == JsonValueKind.String => c.GetString(),
            _ => null,
        };
    }

    sealed class Reader(string source)
    {
        public UserInputException Error(string message) => new($"{source}: {message}");

        public JsonElement Required(JsonElement obj, string key, string where)
        {
            if (obj.ValueKind != JsonValueKind.Object || !obj.TryGetProperty(key, out var v))
                throw Error($"{where} has no \"{key}\"");
            return v;
        }

        string Type(JsonElement component, string kind)
        {
            if (component.ValueKind != JsonValueKind.Object || !component.TryGetProperty("type", out var t) || t.ValueKind != JsonValueKind.String)
                throw Error($"{kind} has no \"type\"");
            return t.GetString()!;
        }

        static bool Bool(JsonElement obj, string key, bool fallback) =>
            obj.TryGetProperty(key, out var v) && v.ValueKind is JsonValueKind.True or JsonValueKind.False ? v.GetBoolean() : fallback;

        string String(JsonElement obj, string key, string where)
        {
            var v = Required(obj, key, where);
            return v.ValueKind == JsonValueKind.String ? v.GetString()! : throw Error($"{where}: \"{key}\" is not a string");
        }

        UserInputException Unsupported(string kind, string type, string supported) =>
            Error($"unsupported {kind} type '{type}' (supported: {supported})");

        public BpeModel Model(JsonElement model, bool byteLevel)
        {
            string type = model.ValueKind == JsonValueKind.Object && model.TryGetProperty("type", out var t) ? t.GetString() ?? "" : "BPE";
            if (type == "Unigram")
                throw Error("model type 'Unigram' (SentencePiece unigram, as in T5, ALBERT, XLM-R) is not supported; only BPE models are (byte-level as in GPT-2/Llama 3/Qwen, or SentencePiece-style BPE as in Llama 2/Mistral/Gemma)");
            if (type != "BPE") throw Unsupported("model", type, "BPE");
            bool byteFallback = Bool(model, "byte_fallback", false);
            if (byteLevel && byteFallback) throw Error("model: byte_fallback with a ByteLevel pre_tokenizer is not supported (byte-level BPE has no unknown characters)");
            if (model.TryGetProperty("dropout", out var dropout) && dropout.ValueKind == JsonValueKind.Number && dropout.GetDouble() > 0)
                throw Error("model: BPE dropout is not supported (set \"dropout\" to null for deterministic encoding)");
            foreach (var affix in new[] { "continuing_subword_prefix", "end_of_word_suffix" })
                if (model.TryGetProperty(affix, out var v) && v.ValueKind == JsonValueKind.String && v.GetString()!.Length > 0)
                    throw Error($"model: a non-empty {affix} is not supported");
            string? unk = model.TryGetProperty("unk_token", out var u) && u.ValueKind == JsonValueKind.String ? u.GetString() : null;
            var options = new BpeOptions(byteLevel ? BpeAlphabet.ByteLevel : BpeAlphabet.Character, Bool(model, "ignore_merges", false),
                byteFallback, byteLevel ? null : unk, Bool(model, "fuse_unk", false));

            var vocabJson = Required(model, "vocab", "model");
            if (vocabJson.ValueKind != JsonValueKind.Object) throw Error("model.vocab is not an object");
            var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
            foreach (var entry in vocabJson.EnumerateObject())
            {
                if (entry.Value.ValueKind != JsonValueKind.Number || !entry.Value.TryGetInt32(out int id) || id < 0)
                    throw Error($"model.vocab[\"{entry.Name}\"] is not a non-negative integer id");
                vocab[entry.Name] = id;
            }

            var merges = new List<(string, string)>();
            if (model.TryGetProperty("merges", out var mergesJson) && mergesJson.ValueKind == JsonValueKind.Array)
            {
                int i = 0;
                foreach (var m in mergesJson.EnumerateArray())
                {
                    if (m.ValueKind == JsonValueKind.String)
                    {
                        // Legacy format "left right": tokens never contain a space (it is Ġ in byte-level BPE).
                        string s = m.GetString()!;
                        int space = s.IndexOf(' ', 1);
                        if (space < 0 || s.IndexOf(' ', space + 1) >= 0) throw Error($"model.merges[{i}] \"{s}\" is not two tokens separated by one space");
                        merges.Add((s[..space], s[(space + 1)..]));
                    }
                    else if (m.ValueKind == JsonValueKind.Array && m.GetArrayLength() == 2
                             && m[0].ValueKind == JsonValueKind.String && m[1].ValueKind == JsonValueKind.String)
                    {
                        merges.Add((m[0].GetString()!, m[1].GetString()!));
                    }
                    else throw Error($"model.merges[{i}] is neither \"a b\" nor [\"a\", \"b\"]");
                    i++;
                }
            }
            return new BpeModel(vocab, merges, options, source);
        }

        public Normalizer? Normalizer(JsonElement json)
        {
            if (json.ValueKind is JsonValueKind.Undefined or JsonValueKind.Null) return null;
            string type = Type(json, "normalizer");
            return type switch
            {
                "NFC" => new UnicodeNormalizer(NormalizationForm.FormC),
                "NFD" => new UnicodeNormalizer(NormalizationForm.FormD),
                "NFKC" => new UnicodeNormalizer(NormalizationForm.FormKC),
                "NFKD" => new UnicodeNormalizer(NormalizationForm.FormKD),
                "Lowercase" => new LowercaseNormalizer(),
                "Prepend" => new PrependNormalizer(String(json, "prepend", "normalizer Prepend")),
                "Strip" => new StripNormalizer(Bool(json, "strip_left", false), Bool(json, "strip_right", false)),
                "Replace" => Replace(json),
                "Sequence" => new SequenceNormalizer(Required(json, "normalizers", "normalizer Sequence").EnumerateArray()
                    .Select(s => Normalizer(s) ?? throw Error("normalizer Sequence holds a null step")).ToList()),
                _ => throw Unsupported("normalizer", type, "NFC, NFD, NFKC, NFKD, Lowercase, Prepend, Strip, Replace, Sequence"),
            };
        }

        ReplaceNormalizer Replace(JsonElement json)
        {
            var (literal, regex) = Pattern(Required(json, "pattern", "normalizer Replace"), "normalizer Replace");
            return new ReplaceNormalizer(literal, literal is null ? regex : null, String(json, "content", "normalizer Replace"));
        }

        (string? Literal, OnigurumaRegex Regex) Pattern(JsonElement pattern, string where)
        {
            if (pattern.TryGetProperty("String", out var s) && s.ValueKind == JsonValueKind.String)
                return (s.GetString()!, new OnigurumaRegex(System.Text.RegularExpressions.Regex.Escape(s.GetString()!)));
            if (pattern.TryGetProperty("Regex", out var r) && r.ValueKind == JsonValueKind.String)
            {
                try
                {
                    return (null, new OnigurumaRegex(r.GetString()!));
                }
                catch (ArgumentException e)
                {
                    throw Error($"{where}: regex /{r.GetString()}/ cannot be translated to .NET: {e.Message}");
                }
            }
            throw Error($"{where}: pattern is neither {{\"String\": ...}} nor {{\"Regex\": ...}}");
        }

        /// <summary><paramref name="byteLevel"/>: whether the chain ends with ByteLevel (required by byte-level BPE).</summary>
        public PreTokenizer PreTokenizer(JsonElement json, out bool byteLevel)
        {
            byteLevel = false;
            if (json.ValueKind is JsonValueKind.Undefined or JsonValueKind.Null) return new SequencePreTokenizer([]);
            string type = Type(json, "pre_tokenizer");
            switch (type)
            {
                case "ByteLevel":
                    byteLevel = true;
                    return new ByteLevelPreTokenizer(Bool(json, "add_prefix_space", true), Bool(json, "use_regex", true));
                case "Split":
                {
                    var (_, regex) = Pattern(Required(json, "pattern", "pre_tokenizer Split"), "pre_tokenizer Split");
                    string behavior = String(json, "behavior", "pre_tokenizer Split");
                    if (!Enum.TryParse<SplitBehavior>(behavior, out var b) || !Enum.IsDefined(b))
                        throw Error($"pre_tokenizer Split: unknown behavior '{behavior}' (expected Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous)");
                    return new SplitPreTokenizer(regex, b, Bool(json, "invert", false));
                }
                case "Metaspace":
                    return new MetaspacePreTokenizer(Replacement(json, "pre_tokenizer Metaspace"), PrependScheme(json, "pre_tokenizer Metaspace"), Bool(json, "split", true));
                case "Sequence":
                {
                    var steps = new List<PreTokenizer>();
                    var items = Required(json, "pretokenizers", "pre_tokenizer Sequence").EnumerateArray().ToList();
                    for (int i = 0; i < items.Count; i++)
                    {
                        steps.Add(PreTokenizer(items[i], out bool stepByteLevel));
                        if (stepByteLevel && i != items.Count - 1)
                            throw Error("pre_tokenizer Sequence: ByteLevel must be the last step");
                        byteLevel |= stepByteLevel;
                    }
                    return new SequencePreTokenizer(steps);
                }
                default:
                    throw Unsupported("pre_tokenizer", type, "ByteLevel, Split, Metaspace, Sequence");
            }
        }

        /// <summary>An int32 JSON number (TryGetInt32 alone throws on a string or null).</summary>
        static bool IsInt(JsonElement v, out int value)
        {
            value = 0;
            return v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out value);
        }

        public List<AddedToken> AddedTokens(JsonElement json)
        {
            var list = new List<AddedToken>();
            if (json.ValueKind != JsonValueKind.Array) return list;
            int i = 0;
            foreach (var t in json.EnumerateArray())
            {
                string where = $"added_tokens[{i++}]";
                var idJson = Required(t, "id", where);
                if (!IsInt(idJson, out int id) || id < 0) throw Error($"{where}: \"id\" is not a non-negative integer");
                list.Add(new AddedToken(id, String(t, "content", where), Bool(t, "special", false), Bool(t, "single_word", false),
                    Bool(t, "lstrip", false), Bool(t, "rstrip", false), Bool(t, "normalized", !Bool(t, "special", false))));
            }
            return list;
        }

        /// <summary>tokenizer_config.json's added_tokens_decoder: {"id": {"content", "special", "lstrip", …}}.</summary>
        public List<AddedToken> AddedTokensDecoder(JsonElement json)
        {
            var list = new List<AddedToken>();
            if (json.ValueKind != JsonValueKind.Object) return list;
            foreach (var p in json.EnumerateObject())
            {
                string where = $"added_tokens_decoder[\"{p.Name}\"]";
                if (!int.TryParse(p.Name, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int id))
                    throw Error($"{where}: the key is not a token id");
                var t = p.Value;
                list.Add(new AddedToken(id, String(t, "content", where), Bool(t, "special", false), Bool(t, "single_word", false),
                    Bool(t, "lstrip", false), Bool(t, "rstrip", false), Bool(t, "normalized", !Bool(t, "special", false))));
            }
            return list;
        }

        public PostProcessor PostProcessor(JsonElement json, Func<string, int> tokenId)
        {
            if (json.ValueKind is JsonValueKind.Undefined or JsonValueKind.Null) return new IdentityPostProcessor();
            string type = Type(json, "post_processor");
            switch (type)
            {
                case "ByteLevel":
                    return new IdentityPostProcessor();
                case "Sequence":
                    return new SequencePostProcessor(Required(json, "processors", "post_processor Sequence").EnumerateArray()
                        .Select(p => PostProcessor(p, tokenId)).ToList());
                case "BertProcessing":
                case "RobertaProcessing":
                {
                    int Pair(string key)
                    {
                        var v = Required(json, key, $"post_processor {type}");
                        if (v.ValueKind != JsonValueKind.Array || v.GetArrayLength() != 2 || !IsInt(v[1], out int id))
                            throw Error($"post_processor {type}: \"{key}\" is not [token, id]");
                        return id;
                    }
                    return new TemplatePostProcessor([Pair("cls")], [Pair("sep")]);
                }
                case "TemplateProcessing":
                {
                    var specials = new Dictionary<string, int[]>(StringComparer.Ordinal);
                    if (json.TryGetProperty("special_tokens", out var st) && st.ValueKind == JsonValueKind.Object)
                        foreach (var s in st.EnumerateObject())
                            specials[s.Name] = s.Value.TryGetProperty("ids", out var ids) && ids.ValueKind == JsonValueKind.Array
                                ? ids.EnumerateArray().Select(x => IsInt(x, out int id) ? id : throw Error($"post_processor TemplateProcessing: special_tokens \"{s.Name}\": \"ids\" holds {x.GetRawText()}, not an integer")).ToArray()
                                : [tokenId(s.Name)];
                    var prefix = new List<int>();
                    var suffix = new List<int>();
                    bool seenSequence = false;
                    foreach (var item in Required(json, "single", "post_processor TemplateProcessing").EnumerateArray())
                    {
                        if (item.TryGetProperty("Sequence", out _)) { seenSequence = true; continue; }
                        if (!item.TryGetProperty("SpecialToken", out var sp))
                            throw Error("post_processor TemplateProcessing: a \"single\" item is neither Sequence nor SpecialToken");
                        string name = String(sp, "id", "post_processor TemplateProcessing SpecialToken");
                        int[] ids = specials.TryGetValue(name, out var known) ? known : [tokenId(name)];
                        (seenSequence ? suffix : prefix).AddRange(ids);
                    }
                    return new TemplatePostProcessor(prefix.ToArray(), suffix.ToArray());
                }
                default:
                    throw Unsupported("post_processor", type, "ByteLevel, TemplateProcessing, BertProcessing, RobertaProcessing, Sequence");
            }
        }

        public Decoder Decoder(JsonElement json)
        {
            if (json.ValueKind is JsonValueKind.Undefined or JsonValueKind.Null) return new JoinDecoder();
            return new ChainDecoder(DecoderSteps(json));
        }

        List<DecoderStep> DecoderSteps(JsonElement json)
        {
            string type = Type(json, "decoder");
            switch (type)
            {
                case "ByteLevel": return [new ByteLevelDecoder()];
                case "ByteFallback": return [new ByteFallbackDecoder()];
                case "Fuse": return [new FuseDecoder()];
                case "Replace":
                {
                    var (literal, regex) = Pattern(Required(json, "pattern", "decoder Replace"), "decoder Replace");
                    return [new ReplaceDecoder(new ReplaceNormalizer(literal, literal is null ? regex : null, String(json, "content", "decoder Replace")))];
                }
                case "Strip":
                {
                    string content = String(json, "content", "decoder Strip");
                    if (content.Length != 1) throw Error("decoder Strip: \"content\" must be one character");
                    return [new StripDecoder(content[0], Count(json, "start", "decoder Strip"), Count(json, "stop", "decoder Strip"))];
                }
                case "Metaspace":
                    return [new MetaspaceDecoder(Replacement(json, "decoder Metaspace"), PrependScheme(json, "decoder Metaspace"))];
                case "Sequence":
                    return Required(json, "decoders", "decoder Sequence").EnumerateArray().SelectMany(DecoderSteps).ToList();
                default:
                    throw Unsupported("decoder", type, "ByteLevel, ByteFallback, Fuse, Replace, Strip, Metaspace, Sequence");
            }
        }

        int Count(JsonElement obj, string key, string where)
        {
            var v = Required(obj, key, where);
            return v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out int n) && n >= 0 ? n : throw Error($"{where}: \"{key}\" is not a non-negative integer");
        }

        char Replacement(JsonElement json, string where)
        {
            string r = String(json, "replacement", where);
            return r.Length == 1 ? r[0] : throw Error($"{where}: \"replacement\" must be one character, got \"{r}\"");
        }

        /// <summary>
        /// Metaspace's prepend_scheme ("always" when absent); the older <c>add_prefix_space: false</c> means "never",
        /// and contradicting an explicit scheme is an error, as in tokenizers.
        /// </summary>
        PrependScheme PrependScheme(JsonElement json, string where)
        {
            var scheme = Text.PrependScheme.Always;
            if (json.TryGetProperty("prepend_scheme", out var ps) && ps.ValueKind != JsonValueKind.Null)
            {
                scheme = ps.ValueKind == JsonValueKind.String ? ps.GetString() switch
                {
                    "always" => Text.PrependScheme.Always,
                    "first" => Text.PrependScheme.First,
                    "never" => Text.PrependScheme.Never,
                    var other => throw Error($"{where}: unknown prepend_scheme '{other}' (expected always, first, never)"),
                } : throw Error($"{where}: \"prepend_scheme\" is not a string");
            }
            if (json.TryGetProperty("add_prefix_space", out var aps) && aps.ValueKind == JsonValueKind.False)
            {
                if (scheme != Text.PrependScheme.Never && json.TryGetProperty("prepend_scheme", out var given) && given.ValueKind == JsonValueKind.String)
                    throw Error($"{where}: add_prefix_space false contradicts prepend_scheme '{given.GetString()}'");
                scheme = Text.PrependScheme.Never;
            }
            return scheme;
        }
    }
}
