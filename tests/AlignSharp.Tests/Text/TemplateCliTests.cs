using System.Text.Json;
using System.Text.Json.Nodes;
using AlignSharp.Text;
using AlignSharp.Training.Data;

namespace AlignSharp.Tests.Text;

/// <summary>`alignsharp template`: the model's own template renders as both references do; ids are the rendered text tokenized.</summary>
public class TemplateCliTests
{
    internal static string Compact(JsonElement e) => JsonNode.Parse(e.GetRawText())!.ToJsonString();

    /// <summary>A file of tests/fixtures/templates.</summary>
    internal static JsonElement Reference(string file) =>
        JsonDocument.Parse(File.ReadAllBytes(Path.Combine(CliRunner.RepoRoot, "tests", "fixtures", "templates", file))).RootElement;

    /// <summary>A model directory for `alignsharp template`: the small Llama tokenizer, and the reference's template
    /// <paramref name="name"/> with its special tokens as tokenizer_config.json.</summary>
    internal static void ModelWithTemplate(string dir, JsonElement reference, string name)
    {
        var template = reference.GetProperty("templates").GetProperty(name);
        File.Copy(Path.Combine(TokenizerFixtures.Small("llama-small"), "tokenizer.json"), Path.Combine(dir, "tokenizer.json"));
        var config = JsonNode.Parse(template.GetProperty("tokens").GetRawText())!.AsObject();
        config["chat_template"] = template.GetProperty("source").GetString();
        File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), config.ToJsonString());
    }

    [Fact]
    public void RendersEachRecordWithTheModelsTemplateAsTheReferencesDo()
    {
        var dir = Directory.CreateTempSubdirectory("tplcli");
        try
        {
            var reference = Reference("reference.json");
            ModelWithTemplate(dir.FullName, reference, "llama3_1");

            var conversations = reference.GetProperty("conversations").EnumerateArray().ToList();
            var cases = reference.GetProperty("chat").EnumerateArray()
                .Where(c => c.GetProperty("template").GetString() == "llama3_1").ToList();
            string input = Path.Combine(dir.FullName, "in.jsonl");
            // Alternate: the flag's value, and a per-record add_generation_prompt that overrides it.
            File.WriteAllLines(input, cases.Select((c, i) => i % 2 == 0 && !c.GetProperty("add_generation_prompt").GetBoolean()
                ? $"{{\"messages\": {Compact(conversations[c.GetProperty("conversation").GetInt32()])}}}"
                : $"{{\"messages\": {Compact(conversations[c.GetProperty("conversation").GetInt32()])}, \"add_generation_prompt\": {(c.GetProperty("add_generation_prompt").GetBoolean() ? "true" : "false")}}}"));

            var r = CliRunner.Run("template", "--model", dir.FullName, "--input", input);
            Assert.True(r.ExitCode == 0, r.StdErr);
            var lines = r.StdOut.TrimEnd('\n').Split('\n');
            Assert.Equal(cases.Count, lines.Length);
            var tokenizer = Tokenizers.Load(dir.FullName);
            for (int i = 0; i < cases.Count; i++)
            {
                using var line = JsonDocument.Parse(lines[i]);
                var text = line.RootElement.GetProperty("text").GetString()!;
                Assert.Equal(cases[i].GetProperty("text").GetString(), text);
                Assert.Equal(cases[i].GetProperty("python").GetProperty("text").GetString(), text);
                var ids = line.RootElement.GetProperty("ids").EnumerateArray().Select(x => x.GetInt32()).ToArray();
                Assert.Equal(TokenSequences.EncodeRendered(tokenizer, text), ids);
                Assert.Equal(1, ids.Count(x => x == tokenizer.BosId)); // the template writes <|begin_of_text|>; not added again
                Assert.Equal(text, tokenizer.Decode(ids));
            }

            r = CliRunner.Run("template", "--model", dir.FullName, "--input", input, "--add-generation-prompt");
            Assert.True(r.ExitCode == 0, r.StdErr);
            Assert.EndsWith("<|start_header_id|>assistant<|end_header_id|>\\n\\n\"", r.StdOut.Split('\n')[0].Split(", \"ids\"")[0]);

            File.WriteAllText(input, "{\"messages\": [{\"role\": \"user\", \"content\": \"ok\"}]}\n{\"messages\": \"not a list\"}\n");
            r = CliRunner.Run("template", "--model", dir.FullName, "--input", input);
            Assert.NotEqual(0, r.ExitCode);
            Assert.Contains("in.jsonl:2", r.StdErr);
            Assert.Contains("\"messages\"", r.StdErr);
            Assert.DoesNotContain("   at ", r.StdErr);
        }
        finally
        {
            dir.Delete(recursive: true);
        }
    }
}

/// <summary>
/// Keyword arguments of a chat template (transformers' apply_chat_template(..., **kwargs)): Qwen3's template with
/// enable_thinking false and true, through `alignsharp template --chat-template-kwargs`, renders as @huggingface/jinja
/// does (tests/fixtures/templates/kwargs_reference.json, from make_kwargs_reference.mjs).
/// </summary>
public class TemplateKwargsTests
{
    [Fact]
    public void QwenThreeRendersWithEnableThinkingAsTheReferenceDoes()
    {
        var dir = Directory.CreateTempSubdirectory("tplkw");
        try
        {
            var reference = TemplateCliTests.Reference("reference.json");
            TemplateCliTests.ModelWithTemplate(dir.FullName, reference, "qwen3");
            var conversations = reference.GetProperty("conversations").EnumerateArray().ToList();
            var cases = TemplateCliTests.Reference("kwargs_reference.json").GetProperty("cases").EnumerateArray().ToList();
            string input = Path.Combine(dir.FullName, "in.jsonl");
            int checkedCases = 0;
            foreach (var group in cases.GroupBy(c => c.GetProperty("kwargs").GetRawText()))
            {
                var list = group.ToList();
                File.WriteAllLines(input, list.Select(c =>
                    $"{{\"messages\": {TemplateCliTests.Compact(conversations[c.GetProperty("conversation").GetInt32()])}, \"add_generation_prompt\": {(c.GetProperty("add_generation_prompt").GetBoolean() ? "true" : "false")}}}"));
                var r = CliRunner.Run("template", "--model", dir.FullName, "--input", input, "--chat-template-kwargs", group.Key);
                Assert.True(r.ExitCode == 0, r.StdErr);
                var lines = r.StdOut.TrimEnd('\n').Split('\n');
                Assert.Equal(list.Count, lines.Length);
                for (int i = 0; i < list.Count; i++, checkedCases++)
                {
                    using var line = JsonDocument.Parse(lines[i]);
                    Assert.Equal(list[i].GetProperty("text").GetString(), line.RootElement.GetProperty("text").GetString());
                }
            }
            Assert.Equal(40, checkedCases);
            // Thinking off: the generation prompt ends with an empty think block, as Qwen3's template writes it.
            var off = cases.First(c => c.GetProperty("kwargs").GetProperty("enable_thinking").GetBoolean() == false && c.GetProperty("add_generation_prompt").GetBoolean());
            Assert.EndsWith("<|im_start|>assistant\n<think>\n\n</think>\n\n", off.GetProperty("text").GetString());
        }
        finally
        {
            dir.Delete(recursive: true);
        }
    }

    [Fact]
    public void KwargsThatAreNotAJsonObjectOrSetARenderVariableAreErrors()
    {
        Assert.Contains("expected a JSON object", Assert.Throws<UserInputException>(() => ChatTemplate.ParseKwargs("[1]")).Message);
        Assert.Contains("malformed JSON", Assert.Throws<UserInputException>(() => ChatTemplate.ParseKwargs("{enable_thinking: false")).Message);
        Assert.Contains("\"add_generation_prompt\" is set by each render", Assert.Throws<UserInputException>(() => ChatTemplate.ParseKwargs("{\"add_generation_prompt\": true}")).Message);
        // A tools list given as a keyword argument replaces the default none; other kwargs are plain variables.
        string file = Path.Combine(Path.GetTempPath(), $"kw-{Guid.NewGuid():N}.jinja");
        File.WriteAllText(file, "{% if tools %}tools {{ tools|length }}{% else %}no tools{% endif %}, {{ greeting | default('none') }}");
        try
        {
            Assert.Equal("no tools, none", ChatTemplate.Resolve(file, null).Render([], addGenerationPrompt: false));
            Assert.Equal("tools 2, hi", ChatTemplate.Resolve(file, null, "{\"tools\": [1, 2], \"greeting\": \"hi\"}").Render([], addGenerationPrompt: false));
            // A record's own "tools" and "chat_template_kwargs" (TRL's columns) on top of --chat-template-kwargs.
            string input = Path.Combine(Path.GetTempPath(), $"kw-{Guid.NewGuid():N}.jsonl");
            File.WriteAllText(input, "{\"messages\": [], \"tools\": [1, 2, 3]}\n{\"messages\": [], \"chat_template_kwargs\": {\"greeting\": \"yo\"}}\n{\"messages\": []}\n");
            try
            {
                string model = AlignSharp.Tests.Training.TinyModels.Create(input + ".model");
                var r = CliRunner.Run("template", "--model", model, "--chat-template", file, "--input", input, "--chat-template-kwargs", "{\"greeting\": \"hi\"}");
                Assert.True(r.ExitCode == 0, r.StdErr);
                Assert.Equal(["tools 3, hi", "no tools, yo", "no tools, hi"],
                    r.StdOut.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => System.Text.Json.JsonDocument.Parse(l).RootElement.GetProperty("text").GetString()));
            }
            finally
            {
                File.Delete(input);
                if (Directory.Exists(input + ".model")) Directory.Delete(input + ".model", recursive: true);
            }
        }
        finally
        {
            File.Delete(file);
        }
    }
}

/// <summary>
/// The real templates with the real tokenizers: rendered text tokenized as training and `alignsharp template` do
/// equals @lenml/tokenizers' encoding with add_special_tokens=false (transformers' apply_chat_template(tokenize=True)).
/// </summary>
public class FullTemplateTokenizationTests
{
    [FullTokenizersFact]
    public void TemplatesTokenizeAsApplyChatTemplate()
    {
        var reference = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(CliRunner.RepoRoot, "tests", "fixtures", "templates", "reference.json"))).RootElement;
        var conversations = reference.GetProperty("conversations").EnumerateArray().ToList();
        var failures = new List<string>();
        int checkedCases = 0;
        foreach (var name in new[] { "qwen3", "llama3_1", "deepseek_v3" })
        {
            var dir = TokenizerFixtures.Full(name);
            Assert.True(File.Exists(Path.Combine(dir, "tokenizer.json")), $"{dir}: missing; run scripts/fetch-tokenizers.sh");
            var tokenizer = TokenizerFixtures.Load(dir);
            var template = ChatTemplate.Resolve("auto", dir);
            foreach (var c in reference.GetProperty("chat").EnumerateArray())
            {
                if (c.GetProperty("template").GetString() != name || !c.TryGetProperty("ids", out var expectedIds)) continue;
                var messages = AlignSharp.Text.Jinja.JinjaJson.FromJson(conversations[c.GetProperty("conversation").GetInt32()]);
                var text = template.Render(messages, c.GetProperty("add_generation_prompt").GetBoolean());
                var ids = TokenSequences.EncodeRendered(tokenizer, text);
                var expected = expectedIds.EnumerateArray().Select(x => x.GetInt32()).ToArray();
                string label = $"{name} conversation {c.GetProperty("conversation").GetInt32()}";
                if (text != c.GetProperty("text").GetString()) failures.Add($"{label}: text differs");
                else if (!ids.SequenceEqual(expected)) failures.Add($"{label}: ids [{string.Join(",", ids.Take(8))}…] != [{string.Join(",", expected.Take(8))}…]");
                checkedCases++;
            }
        }
        Assert.True(failures.Count == 0, string.Join("\n", failures));
        Assert.Equal(60, checkedCases);
    }
}
