using System.Text.Json;
using System.Text.Json.Nodes;
using AlignSharp.Models.Checkpoints;

namespace AlignSharp.Text.Jinja;

/// <summary>
/// A model's own chat template and the special tokens it is rendered with, as transformers finds them in a model
/// directory: <c>chat_template.jinja</c> when present, else <c>chat_template</c> in tokenizer_config.json (a string,
/// or a list of <c>{"name", "template"}</c> entries of which "default" is taken, or "tool_use" when the render is given
/// tools and the list has one, as transformers chooses).
/// </summary>
public static class ModelChatTemplate
{
    public const string JinjaFile = "chat_template.jinja";
    public const string ConfigFile = "tokenizer_config.json";

    static readonly string[] SpecialTokenKeys = ["bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"];

    /// <summary>The model's template source and the file it came from, or null when the directory has none;
    /// <paramref name="withTools"/>: the render gets a tools list, so a named "tool_use" template is preferred.</summary>
    public static (string Source, string Origin)? Find(string modelDirectory, bool withTools = false)
    {
        var jinja = Path.Combine(modelDirectory, JinjaFile);
        if (File.Exists(jinja)) return (ReadText(jinja), jinja);
        var configFile = Path.Combine(modelDirectory, ConfigFile);
        if (!File.Exists(configFile)) return null;
        using var config = ParseJson(configFile);
        if (config.RootElement.ValueKind != JsonValueKind.Object || !config.RootElement.TryGetProperty("chat_template", out var t)) return null;
        switch (t.ValueKind)
        {
            case JsonValueKind.Null: return null;
            case JsonValueKind.String: return (t.GetString()!, configFile);
            case JsonValueKind.Array:
                var named = new Dictionary<string, string>();
                foreach (var entry in t.EnumerateArray())
                {
                    if (entry.ValueKind != JsonValueKind.Object || !entry.TryGetProperty("name", out var n) || n.ValueKind != JsonValueKind.String
                        || !entry.TryGetProperty("template", out var body) || body.ValueKind != JsonValueKind.String)
                        throw new UserInputException($"{configFile}: field \"chat_template\": each entry of the list must be {{\"name\": ..., \"template\": ...}}.");
                    named.TryAdd(n.GetString()!, body.GetString()!);
                }
                if (withTools && named.TryGetValue("tool_use", out var tools)) return (tools, configFile);
                if (named.TryGetValue("default", out var main)) return (main, configFile);
                throw new UserInputException($"{configFile}: field \"chat_template\" lists templates ({string.Join(", ", named.Keys)}) but none named \"default\"; pass one with --chat-template FILE.jinja.");
            default:
                throw new UserInputException($"{configFile}: field \"chat_template\" must be a string or a list of named templates.");
        }
    }

    /// <summary>
    /// The template variables for the special tokens of tokenizer_config.json (and special_tokens_map.json for keys it
    /// lacks): bos_token, eos_token, unk_token, sep_token, pad_token, cls_token, mask_token as strings (an AddedToken
    /// object gives its "content"), additional_special_tokens as a list; unset (null) tokens are left undefined.
    /// </summary>
    public static Dictionary<string, object?> SpecialTokenVariables(string modelDirectory)
    {
        var vars = new Dictionary<string, object?>(StringComparer.Ordinal);
        foreach (var name in new[] { ConfigFile, "special_tokens_map.json" })
        {
            var file = Path.Combine(modelDirectory, name);
            if (!File.Exists(file)) continue;
            using var doc = ParseJson(file);
            if (doc.RootElement.ValueKind != JsonValueKind.Object) continue;
            foreach (var key in SpecialTokenKeys)
                if (!vars.ContainsKey(key) && doc.RootElement.TryGetProperty(key, out var v) && TokenText(v) is { } s) vars[key] = s;
            if (!vars.ContainsKey("additional_special_tokens") && doc.RootElement.TryGetProperty("additional_special_tokens", out var extra) && extra.ValueKind == JsonValueKind.Array)
                vars["additional_special_tokens"] = extra.EnumerateArray().Select(e => (object?)TokenText(e)).ToList();
        }
        return vars;
    }

    static string? TokenText(JsonElement v) => v.ValueKind switch
    {
        JsonValueKind.String => v.GetString(),
        JsonValueKind.Object when v.TryGetProperty("content", out var c) && c.ValueKind == JsonValueKind.String => c.GetString(),
        _ => null,
    };

    /// <summary>
    /// Writes <paramref name="source"/> as the model's template in <paramref name="directory"/>: chat_template.jinja,
    /// and "chat_template" in tokenizer_config.json (created when missing), each written atomically.
    /// </summary>
    public static void Write(string directory, string source)
    {
        AtomicFile.WriteText(Path.Combine(directory, JinjaFile), source);
        var configFile = Path.Combine(directory, ConfigFile);
        JsonObject config;
        if (File.Exists(configFile))
        {
            config = AlignSharp.Models.PythonJson.Parse(File.ReadAllText(configFile)) as JsonObject
                     ?? throw new UserInputException($"{configFile}: the top level is not a JSON object.");
        }
        else config = new JsonObject();
        config["chat_template"] = source;
        AtomicFile.WriteText(configFile, config.ToJsonString(new JsonSerializerOptions { WriteIndented = true, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }) + "\n");
    }

    static string ReadText(string file)
    {
        try { return File.ReadAllText(file); }
        catch (IOException e) { throw new UserInputException($"{file}: cannot read: {e.Message}", e); }
    }

    static JsonDocument ParseJson(string file)
    {
        try { return JsonDocument.Parse(File.ReadAllBytes(file)); }
        catch (JsonException e) { throw new UserInputException($"{file}: not valid JSON (line {e.LineNumber + 1}): {e.Message}", e); }
    }
}
