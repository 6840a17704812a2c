using System.Text.Json.Nodes;

namespace AlignSharp.Text;

/// <summary>
/// The byte tokenizer written as a Hugging Face <c>tokenizer.json</c>: a byte-level BPE with the 256 byte
/// symbols as its vocabulary (id = byte value) and no merges, plus the three specials and a template that
/// prepends BOS. Loading it gives exactly <see cref="ByteTokenizer"/>'s ids, here and in transformers.
/// </summary>
public static class ByteTokenizerJson
{
    public static string TokenizerJson()
    {
        var vocab = new JsonObject();
        for (int b = 0; b < 256; b++) vocab[ByteLevelAlphabet.ByteToChar[b].ToString()] = b;
        var tok = new ByteTokenizer();
        var added = new JsonArray();
        foreach (var (id, content) in new[] { (ByteTokenizer.BosTokenId, tok.BosToken!), (ByteTokenizer.EosTokenId, tok.EosToken!), (ByteTokenizer.PadTokenId, tok.PadToken!) })
            added.Add(new JsonObject
            {
                ["id"] = id, ["content"] = content, ["single_word"] = false, ["lstrip"] = false,
                ["rstrip"] = false, ["normalized"] = false, ["special"] = true,
            });
        JsonObject Special(string name) => new() { ["SpecialToken"] = new JsonObject { ["id"] = name, ["type_id"] = 0 } };
        JsonObject Seq(string name) => new() { ["Sequence"] = new JsonObject { ["id"] = name, ["type_id"] = 0 } };
        var root = new JsonObject
        {
            ["version"] = "1.0",
            ["truncation"] = null,
            ["padding"] = null,
            ["added_tokens"] = added,
            ["normalizer"] = null,
            ["pre_tokenizer"] = new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["trim_offsets"] = false, ["use_regex"] = false },
            ["post_processor"] = new JsonObject
            {
                ["type"] = "TemplateProcessing",
                ["single"] = new JsonArray(Special(tok.BosToken!), Seq("A")),
                ["pair"] = new JsonArray(Special(tok.BosToken!), Seq("A"), Seq("B")),
                ["special_tokens"] = new JsonObject
                {
                    [tok.BosToken!] = new JsonObject { ["id"] = tok.BosToken, ["ids"] = new JsonArray(ByteTokenizer.BosTokenId), ["tokens"] = new JsonArray(tok.BosToken) },
                },
            },
            ["decoder"] = new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["trim_offsets"] = false, ["use_regex"] = false },
            ["model"] = new JsonObject
            {
                ["type"] = "BPE", ["dropout"] = null, ["unk_token"] = null, ["continuing_subword_prefix"] = null,
                ["end_of_word_suffix"] = null, ["fuse_unk"] = false, ["byte_fallback"] = false, ["ignore_merges"] = false,
                ["vocab"] = vocab, ["merges"] = new JsonArray(),
            },
        };
        return root.ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true });
    }

    public static string TokenizerConfigJson()
    {
        var tok = new ByteTokenizer();
        return new JsonObject
        {
            ["tokenizer_class"] = "PreTrainedTokenizerFast",
            ["bos_token"] = tok.BosToken, ["eos_token"] = tok.EosToken, ["pad_token"] = tok.PadToken,
            ["add_bos_token"] = true, ["model_max_length"] = 1_000_000,
        }.ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true });
    }
}
