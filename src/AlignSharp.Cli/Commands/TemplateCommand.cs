using System.CommandLine;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using AlignSharp.Text;
using AlignSharp.Text.Jinja;
using AlignSharp.Training.Data;

namespace AlignSharp.Cli.Commands;

/// <summary>
/// `alignsharp template --model DIR --input FILE [--add-generation-prompt] [--chat-template SPEC]`: renders each input
/// record <c>{"messages": [...]}</c> (optional per-record <c>"add_generation_prompt"</c>) with the chat template and
/// prints one line <c>{"text": ..., "ids": [...]}</c>, the ids being the text tokenized as training tokenizes it
/// (special tokens written by the template map to their ids; a BOS the template writes is not added again).
/// </summary>
public static class TemplateCommand
{
    public static Command Create()
    {
        var model = new Option<string>("--model") { Description = "Model directory with tokenizer.json (and tokenizer_config.json / chat_template.jinja).", Required = true };
        var adapter = new Option<string?>("--adapter")
        {
            Description = "A LoRA adapter directory (PEFT): the tokenizer files and chat template saved with it (a LoRA run's final/) are used in place of --model's; an adapter changes no token, so without such files the output is --model's.",
        };
        var input = new Option<string>("--input") { Description = "JSONL or JSON-array file of {\"messages\": [...]} records (any message fields: role, content, tool_calls, …).", Required = true };
        var agp = new Option<bool>("--add-generation-prompt") { Description = "Render with add_generation_prompt=true (a record's own \"add_generation_prompt\" field wins)." };
        var template = new Option<string>("--chat-template")
        {
            Description = "auto (the model's own template; plain when it has none), a built-in name (chatml, llama3, plain), or a .jinja file.",
            DefaultValueFactory = _ => "auto",
        };
        var kwargs = new Option<string?>("--chat-template-kwargs") { Description = ChatTemplate.KwargsHelp };
        var command = new Command("template", "Render conversations with a model's chat template: one {\"text\", \"ids\"} JSON line per record.")
        {
            model, adapter, input, agp, template, kwargs,
        };
        command.SetAction(parse => CliErrors.Guard(() => Run(parse.GetValue(model)!, parse.GetValue(adapter), parse.GetValue(input)!, parse.GetValue(agp), parse.GetValue(template)!, parse.GetValue(kwargs))));
        return command;
    }

    static readonly JsonSerializerOptions Json = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    static int Run(string modelDir, string? adapterDir, string inputPath, bool addGenerationPrompt, string templateSpec, string? kwargs)
    {
        if (!Directory.Exists(modelDir)) throw new UserInputException($"--model: {modelDir} is not a directory.");
        ChatTemplate.ValidateOption(templateSpec, kwargs);
        if (adapterDir != null)
        {
            if (!Directory.Exists(adapterDir)) throw new UserInputException($"--adapter: {adapterDir} is not a directory.");
            AlignSharp.Models.Lora.LoraConfig.Load(adapterDir); // a PEFT adapter directory, or a clear error
        }
        // The adapter directory's own tokenizer and template files win over the model's (a LoRA run saves them there).
        string tokenizerDir = adapterDir != null && File.Exists(Path.Combine(adapterDir, "tokenizer.json")) ? adapterDir : modelDir;
        string templateDir = adapterDir != null && ModelChatTemplate.Find(adapterDir) != null ? adapterDir : modelDir;
        var tokenizer = Tokenizers.Load(tokenizerDir);
        var template = ChatTemplate.Resolve(templateSpec, templateDir, kwargs);
        if (template.FallbackWarning(dataHasMessages: true) is { } warning) Console.Error.WriteLine($"warning: {warning}");
        using var stdout = new StreamWriter(Console.OpenStandardOutput(), new UTF8Encoding(false));
        int count = 0;
        foreach (var record in JsonRecordReader.Read(inputPath))
        {
            if (record.Error is not null) throw record.Error;
            var e = record.Element;
            if (e.ValueKind != JsonValueKind.Object) throw new BadRecordException(record.Source, null, "expected an object with a \"messages\" list.");
            if (!e.TryGetProperty("messages", out var messages)) throw new BadRecordException(record.Source, "messages", "the field is missing.");
            if (messages.ValueKind != JsonValueKind.Array) throw new BadRecordException(record.Source, "messages", $"must be a list of messages, got {messages.ValueKind}.");
            bool agp = addGenerationPrompt;
            if (e.TryGetProperty("add_generation_prompt", out var flag))
            {
                if (flag.ValueKind is not (JsonValueKind.True or JsonValueKind.False))
                    throw new BadRecordException(record.Source, "add_generation_prompt", $"must be true or false, got {flag.ValueKind}.");
                agp = flag.GetBoolean();
            }
            // The record's own "tools" and "chat_template_kwargs", as TRL's trainers pass them.
            var own = template.For(RecordParser.TemplateKwargs(e, record.Source));
            string text;
            try
            {
                text = own.Render(JinjaJson.FromJson(messages), agp);
            }
            catch (JinjaException ex)
            {
                throw new BadRecordException(record.Source, "messages", ex.Message);
            }
            var ids = TokenSequences.EncodeRendered(tokenizer, text);
            stdout.WriteLine($"{{\"text\": {JsonSerializer.Serialize(text, Json)}, \"ids\": [{string.Join(", ", ids)}]}}");
            count++;
        }
        stdout.Flush();
        Console.Error.WriteLine($"template: {count} records ({(template.IsFallback ? "plain (fallback)" : template.Name)})");
        return 0;
    }
}
