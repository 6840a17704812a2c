using System.CommandLine;
using System.Text.Json;
using AlignSharp.Text;
using AlignSharp.Training.Data;

namespace AlignSharp.Cli.Commands;

/// <summary>
/// `alignsharp generate`: completions for prompts. Input lines {"prompt": "..."}, {"prompt": [messages]},
/// {"messages": [...]} (rendered with the chat template and its generation prompt) or {"prompt_ids": [...]};
/// output {"prompt": as given (prompt_ids as their text), "completion": "...", "ids": [...new tokens...], "text": "...", "logprobs": [...],
/// "finish_reason": ...}, one per input line, in order (so the output can be piped into `score`). Sampling flags not
/// given take the model's generation_config.json defaults; generation stops at any of its eos_token_id.
/// </summary>
public static class GenerateCommand
{
    public static Command Create()
    {
        var model = new Option<string>("--model") { Description = "Model directory (config.json + safetensors [+ tokenizer.json]).", Required = true };
        var input = new Option<string>("--input") { Description = "JSONL: {\"prompt\": \"...\"}, {\"prompt\": [messages]}, {\"messages\": [...]} or {\"prompt_ids\": [...]} per line.", Required = true };
        var output = new Option<string?>("--output") { Description = "JSONL to write (default: stdout)." };
        var adapter = new Option<string?>("--adapter") { Description = "A LoRA adapter directory (PEFT: adapter_config.json + adapter_model.safetensors) applied to --model." };
        var maxNew = new Option<int>("--max-new-tokens") { Description = "Most tokens to generate per prompt.", Required = true };
        var temperature = new Option<float?>("--temperature") { Description = "Sampling temperature; 0 = greedy (default: generation_config.json's, else 1; greedy when it sets do_sample false)." };
        var topK = new Option<int?>("--top-k") { Description = "Sample from the K most likely tokens; 0 = all (default: generation_config.json's, else 0)." };
        var topP = new Option<float?>("--top-p") { Description = "Nucleus sampling: the smallest set of tokens with probability ≥ P (within the top-k, renormalised, when --top-k is set, as Hugging Face does); 1 = all (default: generation_config.json's, else 1)." };
        var repetition = new Option<float?>("--repetition-penalty") { Description = "transformers' repetition penalty: the logits of tokens already in the prompt or completion divided by it (multiplied where negative); 1 = off (default: generation_config.json's, else 1)." };
        var chatTemplate = new Option<string>("--chat-template")
        {
            Description = "For message prompts: auto (the model's own template; plain when it has none), a built-in name (chatml, llama3, plain), or a .jinja file.",
            DefaultValueFactory = _ => "auto",
        };
        var kwargs = new Option<string?>("--chat-template-kwargs") { Description = ChatTemplate.KwargsHelp };
        var seed = new Option<int>("--seed") { Description = "Random seed (each input line has its own random stream, so batching does not change the draws; the logits of another batch size can differ in their last bits, which changes a token only at a near tie).", DefaultValueFactory = _ => 0 };
        var stop = new Option<string[]>("--stop") { Description = "Stop string (repeatable); the text ends before it.", AllowMultipleArgumentsPerToken = false };
        var batchSize = new Option<int>("--batch-size") { Description = "Prompts generated together.", DefaultValueFactory = _ => 8 };
        var truncate = new Option<bool>("--truncate") { Description = "Keep the last tokens of a prompt that, with --max-new-tokens, does not fit the model's positions, instead of reporting it." };
        var cmd = new Command("generate", "Sample completions with a KV cache: greedy, temperature, top-k, top-p.")
        {
            model, adapter, input, output, maxNew, temperature, topK, topP, repetition, seed, stop, batchSize, chatTemplate, kwargs, truncate,
        };
        cmd.SetAction(r => CliErrors.Guard(() =>
        {
            ChatTemplate.ValidateOption(r.GetValue(chatTemplate), r.GetValue(kwargs));
            OutputPaths.RefuseInput("--output", r.GetValue(output), ("--input", r.GetValue(input)), ("--model", r.GetValue(model)), ("--adapter", r.GetValue(adapter)));
            var pre = Pretrained.Load(r.GetValue(model)!).WithAdapter(r.GetValue(adapter));
            var generation = GenerationConfig.Load(pre.Directory);
            if (generation?.Unapplied is { Count: > 0 } unapplied)
                Console.Error.WriteLine($"note: {GenerationConfig.FileName} sets {string.Join(", ", unapplied)}, which this sampler does not apply " +
                    "(it applies eos_token_id, do_sample, temperature, top_k, top_p and repetition_penalty; the flags set the rest).");
            var (defaultTemperature, defaultTopK, defaultTopP) = generation?.SamplingDefaults() ?? (1f, 0, 1f);
            var options = new SamplingOptions
            {
                MaxNewTokens = r.GetValue(maxNew),
                Temperature = r.GetValue(temperature) ?? defaultTemperature,
                TopK = r.GetValue(topK) ?? defaultTopK,
                TopP = r.GetValue(topP) ?? defaultTopP,
                Seed = r.GetValue(seed),
                StopStrings = r.GetValue(stop) ?? [],
                RepetitionPenalty = r.GetValue(repetition) ?? generation?.RepetitionPenalty ?? 1f,
                EosIds = StopIds(generation, pre),
            };
            options.Validate();
            // As transformers warns: greedy decoding takes the most likely token, so filters given with it change nothing.
            if (options.Temperature == 0 && (r.GetValue(topK) is > 0 || r.GetValue(topP) is < 1))
                Console.Error.WriteLine("warning: --temperature 0 decodes greedily (the most likely token); --top-k and --top-p change nothing then.");
            int positions = pre.Model.Config.MaxPositions;
            if (options.MaxNewTokens >= positions)
                throw new UserInputException($"--max-new-tokens {options.MaxNewTokens} leaves no room for a prompt in the model's {positions} positions (max_position_embeddings).");
            int room = positions - options.MaxNewTokens;
            int cut = 0;
            int batch = r.GetValue(batchSize);
            if (batch < 1) throw new UserInputException($"--batch-size must be >= 1, not {batch}.");
            var lines = Jsonl.ReadObjects(r.GetValue(input)!);
            if (lines.Count == 0) throw new UserInputException($"{r.GetValue(input)}: no records to generate from.");
            ChatTemplate? template = null;
            ChatTemplate Template()
            {
                if (template is not null) return template;
                template = ChatTemplate.Resolve(r.GetValue(chatTemplate), pre.Directory, r.GetValue(kwargs));
                if (template.FallbackWarning(dataHasMessages: true) is { } warning) Console.Error.WriteLine($"warning: {warning}");
                return template;
            }
            var prompts = lines.Select(l =>
            {
                string field = l.Has("prompt_ids") ? "prompt_ids" : l.Has("prompt") ? "prompt" : "messages";
                int[] ids = l.Has("prompt_ids") ? l.Ints("prompt_ids")
                    : l.Has("prompt") && l.Value.GetProperty("prompt").ValueKind == JsonValueKind.String ? pre.RequireTokenizer("a text prompt").Encode(l.String("prompt"))
                    : l.Has("prompt") || l.Has("messages") ? MessagePrompt(l, field)
                    : throw new UserInputException($"{l.Where}: needs a field \"prompt\", \"messages\" or \"prompt_ids\"");
                if (ids.Length == 0) throw l.Error(field, "is empty (generation needs at least one prompt token)");
                foreach (var id in ids)
                    if (id < 0 || id >= pre.Model.Config.VocabSize) throw l.Error(field, $"token id {id} is outside the vocabulary [0, {pre.Model.Config.VocabSize})");
                if (ids.Length > room)
                {
                    if (!r.GetValue(truncate))
                        throw l.Error(field, $"{ids.Length} prompt tokens + --max-new-tokens {options.MaxNewTokens} exceed the model's {positions} positions; shorten it, lower --max-new-tokens, or pass --truncate to keep its last {room} tokens");
                    ids = ids[^room..];
                    cut++;
                }
                return ids;
            }).ToList();
            if (cut > 0) Console.Error.WriteLine($"warning: {cut} prompts were cut to their last {room} tokens (--truncate).");

            int[] MessagePrompt(Jsonl.Line l, string field)
            {
                var messages = l.Value.GetProperty(field);
                if (messages.ValueKind != JsonValueKind.Array) throw l.Error(field, "must be a string or a list of messages");
                // Read as training data reads messages (roles checked, every field kept), and rendered as the RL trainers
                // render a prompt: a generation prompt, or the final assistant message continued.
                var source = new RecordSource(l.File, l.Number);
                var parsed = new FieldReader(l.Value, source).Messages(messages, field);
                string text = TokenSequences.Rendered(source, field, () => Template().RenderPrompt(parsed));
                return TokenSequences.EncodeRendered(pre.RequireTokenizer("a message prompt"), text);
            }

            IEnumerable<string> Results()
            {
                for (int start = 0; start < prompts.Count; start += batch)
                {
                    var chunk = prompts.GetRange(start, Math.Min(batch, prompts.Count - start));
                    var completions = Generator.Generate(pre.Model, chunk, options, pre.Tokenizer, firstStream: start);
                    Console.Error.WriteLine($"generate: {Math.Min(start + batch, prompts.Count)}/{prompts.Count}");
                    for (int i = 0; i < completions.Count; i++)
                    {
                        var c = completions[i];
                        var line = lines[start + i];
                        // prompt_ids come back as their text (special tokens kept), so the line still pipes into `score`.
                        object? prompt = line.Value.TryGetProperty("prompt", out var p) ? p : line.Value.TryGetProperty("messages", out var m) ? m
                            : pre.Tokenizer?.Decode(line.Ints("prompt_ids"));
                        yield return Jsonl.Serialize(new { prompt, completion = c.Text ?? "", ids = c.Ids, text = c.Text ?? "", logprobs = c.LogProbs, finish_reason = c.FinishReason });
                    }
                }
            }
            Jsonl.Write(r.GetValue(output), Results());
            return 0;
        }));
        return cmd;
    }

    /// <summary>Stop on any of generation_config.json's eos_token_id (config.json's without that file, as transformers builds
    /// its generation config from the model's) and the tokenizer's EOS; null (the generator's default) when none is known.</summary>
    static IReadOnlyList<int>? StopIds(GenerationConfig? generation, Pretrained pre)
    {
        var ids = new List<int>(generation != null ? generation.EosTokenIds ?? [] : pre.Model.Config.EosTokenIds);
        if (pre.Tokenizer?.EosId is int eos && !ids.Contains(eos)) ids.Add(eos);
        return ids.Count > 0 ? ids : null;
    }
}
