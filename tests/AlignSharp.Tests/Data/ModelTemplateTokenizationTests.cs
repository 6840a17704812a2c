using System.Text.Json;
using System.Text.Json.Nodes;
using AlignSharp.Text;
using AlignSharp.Text.Jinja;
using AlignSharp.Training.Data;

namespace AlignSharp.Tests.Data;

/// <summary>
/// Each template family (the real chat templates of Qwen3, Llama-3.1, Gemma-3, DeepSeek-V3 and Llama-2/Mistral-style
/// ones, from tests/fixtures/templates/reference.json) used as a model's own template (`auto`), with a byte-level
/// tokenizer carrying that family's special tokens and BOS policy: special tokens in the rendered text are single
/// added-token ids, a BOS the template writes is not added again, there is never a second EOS, and the completion
/// is exactly what the whole conversation adds to the prompt rendered with the generation prompt.
/// </summary>
public class ModelTemplateTokenizationTests : IDisposable
{
    readonly string _root = Path.Combine(Path.GetTempPath(), "alignsharp-tpl-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        if (Directory.Exists(_root)) Directory.Delete(_root, recursive: true);
    }

    static readonly JsonElement Reference = JsonDocument.Parse(File.ReadAllBytes(
        Path.Combine(CliRunner.RepoRoot, "tests", "fixtures", "templates", "reference.json"))).RootElement;

    /// <summary>family → (BOS the tokenizer adds or null, the family's special tokens).</summary>
    static readonly Dictionary<string, (string? Bos, string[] Specials)> Families = new()
    {
        ["qwen3"] = (null, ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<think>", "</think>"]),
        ["llama3_1"] = ("<|begin_of_text|>", []),
        ["gemma3"] = ("<bos>", ["<bos>", "<start_of_turn>", "<end_of_turn>", "<pad>", "<unk>", "<start_of_image>"]),
        ["deepseek_v3"] = ("<｜begin▁of▁sentence｜>", ["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>"]),
        ["llama2_style"] = ("<s>", ["<s>", "</s>", "<unk>"]),
        ["mistral_style"] = ("<s>", ["<s>", "</s>", "<unk>"]),
    };

    /// <summary>A model directory: the llama-small tokenizer with the family's added tokens and BOS post-processor, and the family's tokenizer_config.json.</summary>
    string ModelDir(string family)
    {
        var dir = Path.Combine(_root, family);
        Directory.CreateDirectory(dir);
        var small = Path.Combine(CliRunner.RepoRoot, "tests", "fixtures", "tokenizers", "llama-small");
        var tok = JsonNode.Parse(File.ReadAllText(Path.Combine(small, "tokenizer.json")))!.AsObject();
        var added = tok["added_tokens"]!.AsArray();
        int next = added.Max(a => (int)a!["id"]!) + 1;
        var (bos, specials) = Families[family];
        foreach (var s in specials)
            if (!added.Any(a => (string)a!["content"]! == s))
                added.Add(new JsonObject { ["id"] = next++, ["content"] = s, ["single_word"] = false, ["lstrip"] = false, ["rstrip"] = false, ["normalized"] = false, ["special"] = true });
        var processors = tok["post_processor"]!["processors"]!.AsArray();
        if (bos is null) processors.RemoveAt(1);
        else
        {
            int bosId = (int)added.First(a => (string)a!["content"]! == bos)!["id"]!;
            var tp = processors[1]!.AsObject();
            tp["single"]![0]!["SpecialToken"]!["id"] = bos;
            tp["pair"]![0]!["SpecialToken"]!["id"] = bos;
            tp["pair"]![2]!["SpecialToken"]!["id"] = bos;
            tp["special_tokens"] = new JsonObject { [bos] = new JsonObject { ["id"] = bos, ["ids"] = new JsonArray(bosId), ["tokens"] = new JsonArray(bos) } };
        }
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"), tok.ToJsonString());
        var t = Reference.GetProperty("templates").GetProperty(family);
        var config = JsonNode.Parse(t.GetProperty("tokens").GetRawText())!.AsObject();
        config["chat_template"] = t.GetProperty("source").GetString();
        File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), config.ToJsonString());
        return dir;
    }

    static readonly ChatMessage[] Prompt = [ChatMessage.System("You are brief."), ChatMessage.User("Hi there"), ChatMessage.Assistant("Hello!"), ChatMessage.User("Name a colour ✓")];
    static readonly ChatMessage[] AlternatingPrompt = [ChatMessage.User("Hi there"), ChatMessage.Assistant("Hello!"), ChatMessage.User("Name a colour ✓")];

    public static TheoryData<string> FamilyNames() => new(Families.Keys);

    [Theory]
    [MemberData(nameof(FamilyNames))]
    public void SpecialTokensBosAndEosAreRightForEachFamily(string family)
    {
        var dir = ModelDir(family);
        var tokenizer = Tokenizers.Load(dir);
        var template = ChatTemplate.Resolve("auto", dir);
        Assert.False(template.IsFallback);
        var promptMessages = family == "mistral_style" ? AlternatingPrompt : Prompt;
        var example = new SftExample(ChatContent.FromMessages(promptMessages), ChatContent.FromMessages(ChatMessage.Assistant("Blue.")), new RecordSource("data.jsonl", 1)) { PromptField = "messages", CompletionField = "messages" };
        var seq = SftEncoder.Encode(example, tokenizer, template, new SftEncodingOptions { Loss = LossOn.FinalTurn });

        var full = template.RenderConversation([.. promptMessages, ChatMessage.Assistant("Blue.")]);
        var promptText = template.RenderPrompt(promptMessages);
        Assert.StartsWith(promptText, full);
        Assert.Equal(full, tokenizer.Decode(seq.Ids));

        // Special tokens written by the template are single added-token ids.
        var specials = Families[family].Specials.Concat(family == "llama3_1" ? ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"] : []);
        foreach (var s in specials.Where(s => full.Contains(s)))
        {
            int id = tokenizer.TokenToId(s)!.Value;
            Assert.Equal(CountOf(full, s), seq.Ids.Count(x => x == id));
        }

        // BOS: once, first, when the family has one; the template writes it and the tokenizer's is not doubled.
        if (Families[family].Bos is { } bos)
        {
            int bosId = tokenizer.BosId!.Value;
            Assert.Equal(bos, tokenizer.IdToToken(bosId));
            Assert.Equal(bosId, seq.Ids[0]);
            Assert.Equal(CountOf(full, bos), seq.Ids.Count(x => x == bosId));
        }
        else Assert.Null(tokenizer.BosId);

        // The completion: the labelled tokens decode to what the whole adds to the prompt, with exactly one EOS.
        var labelled = seq.Labels.Where(l => l != SftSequence.IgnoreIndex).ToArray();
        Assert.Equal(full[promptText.Length..], tokenizer.Decode(labelled));
        Assert.Equal(1, labelled.Count(x => x == tokenizer.EosId));
        Assert.Equal(CountOf(full, tokenizer.EosToken!), seq.Ids.Count(x => x == tokenizer.EosId));

        // The `template` command's ids are the same tokens for the whole conversation.
        Assert.Equal(seq.Ids, TokenSequences.EncodeRendered(tokenizer, full));
    }

    static int CountOf(string text, string token)
    {
        int n = 0;
        for (int i = text.IndexOf(token, StringComparison.Ordinal); i >= 0; i = text.IndexOf(token, i + token.Length, StringComparison.Ordinal)) n++;
        return n;
    }

    [Fact]
    public void PreferencePairsSplitAtTheGenerationPromptAndNeverDoubleEos()
    {
        var dir = ModelDir("qwen3");
        var tokenizer = Tokenizers.Load(dir);
        var template = ChatTemplate.Resolve("auto", dir);
        var pair = new PreferencePair(ChatContent.FromMessages(ChatMessage.User("2+2?")), ChatContent.FromText("4"), ChatContent.FromText("5"), 0, 1, new RecordSource("p.jsonl", 3));
        var t = PreferenceEncoder.Encode(pair, tokenizer, template, new PreferenceEncodingOptions());
        Assert.Equal("<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n", tokenizer.Decode(t.Prompt));
        // Qwen3 renders the final answer with an empty think block; the turn ends "<|im_end|>\n" and gets no second EOS.
        Assert.Equal("<think>\n\n</think>\n\n4<|im_end|>\n", tokenizer.Decode(t.Chosen));
        Assert.Equal(1, t.Chosen.Count(x => x == tokenizer.EosId));
    }

    [Fact]
    public void APromptThatIsNotAPrefixIsAnErrorNamingTheRecord()
    {
        var dir = ModelDir("qwen3");
        // A template that renders the generation prompt differently from a rendered assistant turn.
        File.WriteAllText(Path.Combine(dir, ModelChatTemplate.JinjaFile),
            "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}{% if add_generation_prompt %}<assistant>\n{% endif %}");
        var template = ChatTemplate.Resolve("auto", dir);
        var example = new SftExample(ChatContent.FromMessages(ChatMessage.User("Hi")), ChatContent.FromText("Yo"), new RecordSource("train.jsonl", 7));
        var e = Assert.Throws<BadRecordException>(() => template.RenderSft(example));
        Assert.Contains("train.jsonl:7", e.Message);
        Assert.Contains("not a prefix", e.Message);
    }

    [Fact]
    public void AutoFallsBackToPlainWithAWarningAndTemplatesAreWrittenIntoModels()
    {
        var dir = Path.Combine(_root, "bare");
        Directory.CreateDirectory(dir);
        var auto = ChatTemplate.Resolve("auto", dir);
        Assert.True(auto.IsFallback);
        Assert.Contains("'plain'", auto.FallbackWarning(dataHasMessages: true));
        Assert.Null(auto.FallbackWarning(dataHasMessages: false));

        // A built-in written into a model directory is that model's template from then on, rendering the same text.
        ModelChatTemplate.Write(dir, ChatTemplate.ChatMl.Source);
        var reloaded = ChatTemplate.Resolve("auto", dir);
        Assert.False(reloaded.IsFallback);
        var conversation = new[] { ChatMessage.User("Hi"), ChatMessage.Assistant("Yo") };
        Assert.Equal(ChatTemplate.ChatMl.RenderConversation(conversation), reloaded.RenderConversation(conversation));
        using var config = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "tokenizer_config.json")));
        Assert.Equal(ChatTemplate.ChatMl.Source, config.RootElement.GetProperty("chat_template").GetString());

        // chat_template.jinja wins over tokenizer_config.json; a list of named templates gives "default".
        var listed = Path.Combine(_root, "listed");
        Directory.CreateDirectory(listed);
        File.WriteAllText(Path.Combine(listed, "tokenizer_config.json"),
            "{\"chat_template\": [{\"name\": \"tool_use\", \"template\": \"T\"}, {\"name\": \"default\", \"template\": \"D{{ bos_token }}\"}], \"bos_token\": {\"content\": \"<s>\", \"lstrip\": false}}");
        Assert.Equal("D<s>", ChatTemplate.Resolve("auto", listed).RenderConversation([]));
        // Given tools, the list's "tool_use" template, as transformers' apply_chat_template chooses (and "default" without them).
        Assert.Equal("T", ChatTemplate.Resolve("auto", listed, "{\"tools\": [{\"type\": \"function\"}]}").RenderConversation([]));
        Assert.Equal("D<s>", ChatTemplate.Resolve("auto", listed, "{\"tools\": null}").RenderConversation([]));
        File.WriteAllText(Path.Combine(listed, "tokenizer_config.json"), "{\"chat_template\": [{\"name\": \"tool_use\", \"template\": \"T\"}]}");
        Assert.Contains("none named \"default\"", Assert.Throws<UserInputException>(() => ChatTemplate.Resolve("auto", listed)).Message);
    }

    [Fact]
    public void GenerationConfigReadsEosListsAndSamplingDefaults()
    {
        var dir = Path.Combine(_root, "gen");
        Directory.CreateDirectory(dir);
        Assert.Null(GenerationConfig.Load(dir));
        File.WriteAllText(Path.Combine(dir, "generation_config.json"), "{\"eos_token_id\": [128001, 128008, 128009], \"do_sample\": true, \"temperature\": 0.6, \"top_p\": 0.9}");
        var g = GenerationConfig.Load(dir)!;
        Assert.Equal([128001, 128008, 128009], g.EosTokenIds);
        Assert.Equal((0.6f, 0, 0.9f), g.SamplingDefaults());
        File.WriteAllText(Path.Combine(dir, "generation_config.json"), "{\"eos_token_id\": 2, \"do_sample\": false, \"temperature\": 0.7}");
        g = GenerationConfig.Load(dir)!;
        Assert.Equal([2], g.EosTokenIds);
        Assert.Equal((0f, 0, 1f), g.SamplingDefaults());
        File.WriteAllText(Path.Combine(dir, "generation_config.json"), "{\"eos_token_id\": \"x\"}");
        Assert.Contains("eos_token_id", Assert.Throws<UserInputException>(() => GenerationConfig.Load(dir)).Message);
    }
}
