using System.Text.Json;
using AlignSharp.Tests.Text;
using AlignSharp.Training.Data;

namespace AlignSharp.Tests.Data;

/// <summary>
/// Training data with tool calls, tool results and reasoning (message fields beyond role and content): the data layer
/// hands every field to the chat template, as transformers passes a message dict, so an SFT example renders as
/// @huggingface/jinja renders the same messages (tests/fixtures/templates/tools_reference.json, from
/// make_tools_reference.mjs), and the tool call is in the trained answer.
/// </summary>
public sealed class ToolMessagesTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("alignsharp-tools-").FullName;
    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void SftExamplesWithToolCallsRenderAsTheReferenceDoes()
    {
        var reference = TemplateCliTests.Reference("tools_reference.json");
        var conversations = reference.GetProperty("conversations").EnumerateArray().ToList();
        string tools = TemplateCliTests.Compact(reference.GetProperty("tools"));
        int compared = 0;
        foreach (var c in reference.GetProperty("cases").EnumerateArray())
        {
            // A JavaScript renderer prints a mapping in text position as "[object Map]" where Python prints its repr, and
            // fails on a null content that Python's templates test with `is string`: such renders are no reference.
            if (!c.TryGetProperty("text", out var text) || text.GetString()!.Contains("[object Map]")) continue;
            string name = c.GetProperty("template").GetString()!;
            string model = Path.Combine(_dir, name);
            if (!Directory.Exists(model)) { Directory.CreateDirectory(model); TemplateCliTests.ModelWithTemplate(model, TemplateCliTests.Reference("reference.json"), name); }
            var template = ChatTemplate.Resolve("auto", model, c.GetProperty("with_tools").GetBoolean() ? $"{{\"tools\": {tools}}}" : null);

            string data = Path.Combine(_dir, "data.jsonl");
            File.WriteAllText(data, $"{{\"messages\": {TemplateCliTests.Compact(conversations[c.GetProperty("conversation").GetInt32()])}}}\n");
            var example = Assert.Single(DatasetLoader.LoadSft(data).Records);
            var segments = template.RenderSft(example);
            Assert.Equal(text.GetString(), string.Concat(segments.Select(s => s.Text)));
            Assert.Equal(SegmentRole.Completion, segments[^1].Role);
            compared++;
        }
        Assert.True(compared >= 14, $"{compared} renders compared");
    }

    /// <summary>TRL's per-record "tools" (a list, or the list as a JSON string) and "chat_template_kwargs" columns: a record's
    /// own arguments give the tokens that the same arguments given to every record (--chat-template-kwargs) give, whose
    /// renders the test above checks against @huggingface/jinja; in sft, dpo/rm pairs and kto alike.</summary>
    [Fact]
    public void PerRecordToolsAndTemplateArgumentsRenderAsTheGlobalOnes()
    {
        var reference = TemplateCliTests.Reference("tools_reference.json");
        string tools = TemplateCliTests.Compact(reference.GetProperty("tools"));
        string conversation = TemplateCliTests.Compact(reference.GetProperty("conversations")[0]);
        string model = Path.Combine(_dir, "qwen3");
        Directory.CreateDirectory(model);
        TemplateCliTests.ModelWithTemplate(model, TemplateCliTests.Reference("reference.json"), "qwen3");
        var plain = ChatTemplate.Resolve("auto", model);
        var global = ChatTemplate.Resolve("auto", model, $"{{\"tools\": {tools}, \"enable_thinking\": false}}");
        var tokenizer = new AlignSharp.Text.ByteTokenizer();
        string data = Path.Combine(_dir, "own.jsonl");
        File.WriteAllLines(data, [
            $"{{\"messages\": {conversation}}}",
            $"{{\"messages\": {conversation}, \"tools\": {tools}, \"chat_template_kwargs\": {{\"enable_thinking\": false}}}}",
            $"{{\"messages\": {conversation}, \"tools\": {JsonSerializer.Serialize(tools)}, \"chat_template_kwargs\": {{\"enable_thinking\": false}}}}",
            $"{{\"messages\": {conversation}, \"chat_template_kwargs\": {{\"tools\": {tools}, \"enable_thinking\": false}}}}",
        ]);
        var examples = DatasetLoader.LoadSft(data).Records;
        var expected = SftEncoder.Encode(examples[0], tokenizer, global, new SftEncodingOptions());
        Assert.NotEqual(expected.Ids, SftEncoder.Encode(examples[0], tokenizer, plain, new SftEncodingOptions()).Ids);
        foreach (var own in examples.Skip(1))
        {
            var got = SftEncoder.Encode(own, tokenizer, plain, new SftEncodingOptions());
            Assert.Equal(expected.Ids, got.Ids);
            Assert.Equal(expected.Labels, got.Labels);
        }

        // Preference pairs (dpo, rm) and unpaired feedback (kto) carry them the same way.
        string pairs = Path.Combine(_dir, "pairs.jsonl");
        File.WriteAllLines(pairs, [
            "{\"prompt\": [{\"role\": \"user\", \"content\": \"Hi\"}], \"chosen\": [{\"role\": \"assistant\", \"content\": \"A\"}], \"rejected\": [{\"role\": \"assistant\", \"content\": \"B\"}]}",
            $"{{\"prompt\": [{{\"role\": \"user\", \"content\": \"Hi\"}}], \"chosen\": [{{\"role\": \"assistant\", \"content\": \"A\"}}], \"rejected\": [{{\"role\": \"assistant\", \"content\": \"B\"}}], \"tools\": {tools}, \"chat_template_kwargs\": {{\"enable_thinking\": false}}}}",
        ]);
        var p = DatasetLoader.LoadPreferences(pairs).Records;
        var pairOptions = new PreferenceEncodingOptions();
        Assert.Equal(PreferenceEncoder.Encode(p[0], tokenizer, global, pairOptions).Prompt, PreferenceEncoder.Encode(p[1], tokenizer, plain, pairOptions).Prompt);
        string unpaired = Path.Combine(_dir, "kto.jsonl");
        File.WriteAllLines(unpaired, [$"{{\"prompt\": [{{\"role\": \"user\", \"content\": \"Hi\"}}], \"completion\": [{{\"role\": \"assistant\", \"content\": \"A\"}}], \"label\": true, \"tools\": {tools}}}"]);
        Assert.NotNull(Assert.Single(DatasetLoader.LoadUnpaired([unpaired]).Records).Example.TemplateKwargs);

        File.WriteAllText(data, $"{{\"messages\": {conversation}, \"tools\": 5}}\n");
        Assert.Contains("field \"tools\": expected a list of tool schemas", Assert.Throws<BadRecordException>(() => DatasetLoader.LoadSft(data)).Message);
    }

    [Fact]
    public void AToolCallIsTheTrainedAnswerAndToolResultsArePrompt()
    {
        string model = Path.Combine(_dir, "qwen3");
        Directory.CreateDirectory(model);
        TemplateCliTests.ModelWithTemplate(model, TemplateCliTests.Reference("reference.json"), "qwen3");
        var template = ChatTemplate.Resolve("auto", model);
        string data = Path.Combine(_dir, "calls.jsonl");
        File.WriteAllText(data,
            "{\"messages\": [{\"role\": \"user\", \"content\": \"Weather in Lima?\"}, {\"role\": \"assistant\", \"content\": \"\", \"tool_calls\": [{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"arguments\": {\"city\": \"Lima\"}}}]}]}\n" +
            "{\"messages\": [{\"role\": \"user\", \"content\": \"Weather?\"}, {\"role\": \"assistant\", \"content\": \"\", \"tool_calls\": [{\"type\": \"function\", \"function\": {\"name\": \"w\", \"arguments\": {}}}]}, {\"role\": \"tool\", \"content\": \"sunny\"}, {\"role\": \"assistant\", \"content\": \"Sunny.\"}]}\n");
        var examples = DatasetLoader.LoadSft(data).Records;
        var call = template.RenderSft(examples[0]);
        Assert.Contains("<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Lima\"}}\n</tool_call>", call[^1].Text);
        var answer = template.RenderSft(examples[1]);
        Assert.Contains(answer, s => s.Role == SegmentRole.Prompt && s.Text.Contains("<tool_response>\nsunny\n</tool_response>"));
        Assert.Equal(SegmentRole.Completion, answer[^1].Role);
        // Qwen3 renders an earlier turn without the think block its last turn gets, so there the tool-call turn is masked
        // like the prompt; under a template whose turns render the same wherever they stand, it is an answer too.
        Assert.DoesNotContain(answer, s => s.Role == SegmentRole.EarlierAssistantTurn);
        string jinja = Path.Combine(_dir, "calls.jinja");
        File.WriteAllText(jinja, "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% if m.tool_calls %}{{ m.tool_calls | tojson }}{% endif %}</s>{% endfor %}" +
            "{% if add_generation_prompt %}<assistant>{% endif %}");
        var turns = ChatTemplate.Resolve(jinja, null).RenderSft(examples[1]);
        Assert.Contains(new TextSegment("[{\"type\": \"function\", \"function\": {\"name\": \"w\", \"arguments\": {}}}]</s>", SegmentRole.EarlierAssistantTurn), turns);
        Assert.Contains(new TextSegment("<tool>sunny</s><assistant>", SegmentRole.Prompt), turns);

        // A message with neither content nor other fields is still an error naming it; an unknown role too.
        File.WriteAllText(data, "{\"messages\": [{\"role\": \"user\"}, {\"role\": \"assistant\", \"content\": \"x\"}]}\n");
        Assert.Equal("messages[0].content", Assert.Throws<BadRecordException>(() => DatasetLoader.LoadSft(data)).Field);
        File.WriteAllText(data, "{\"messages\": [{\"role\": \"robot\", \"content\": \"x\"}, {\"role\": \"assistant\", \"content\": \"x\"}]}\n");
        Assert.Contains("\"tool\"", Assert.Throws<BadRecordException>(() => DatasetLoader.LoadSft(data)).Message);
    }
}
