using System.CommandLine;
using AlignSharp.Text;

namespace AlignSharp.Cli.Commands;

/// <summary>
/// `alignsharp generate`: completions for prompts. Input lines {"prompt": "..."} or {"prompt_ids": [...]};
/// output {"ids": [...new tokens...], "text": "...", "logprobs": [...]}, one per input line, in order.
/// </summary>
public static class GenerateCommand
{
    public static Command Create()
    {
        var model = new Option<string>("--model") { Description = "Model directory (config.json + safetensors [+ tokenizer.json]).", Required = true };
        var input = new Option<string>("--input") { Description = "JSONL: {\"prompt\": \"...\"} or {\"prompt_ids\": [...]} per line.", Required = true };
        var output = new Option<string?>("--output") { Description = "JSONL to write (default: stdout)." };
        var maxNew = new Option<int>("--max-new-tokens") { Description = "Most tokens to generate per prompt.", Required = true };
        var temperature = new Option<float>("--temperature") { Description = "Sampling temperature; 0 = greedy.", DefaultValueFactory = _ => 1f };
        var topK = new Option<int>("--top-k") { Description = "Sample from the K most likely tokens; 0 = all.", DefaultValueFactory = _ => 0 };
        var topP = new Option<float>("--top-p") { Description = "Nucleus sampling: the smallest set of tokens with probability ≥ P; 1 = all.", DefaultValueFactory = _ => 1f };
        var seed = new Option<int>("--seed") { Description = "Random seed (each input line has its own stream, so results do not depend on batching).", DefaultValueFactory = _ => 0 };
        var stop = new Option<string[]>("--stop") { Description = "Stop string (repeatable); the text ends before it.", AllowMultipleArgumentsPerToken = false };
        var batchSize = new Option<int>("--batch-size") { Description = "Prompts generated together.", DefaultValueFactory = _ => 8 };
        var truncate = new Option<bool>("--truncate") { Description = "Keep the last tokens of a prompt that, with --max-new-tokens, does not fit the model's positions, instead of reporting it." };
        var cmd = new Command("generate", "Sample completions with a KV cache: greedy, temperature, top-k, top-p.")
        {
            model, input, output, maxNew, temperature, topK, topP, seed, stop, batchSize, truncate,
        };
        cmd.SetAction(r => CliErrors.Guard(() =>
        {
            var pre = Pretrained.Load(r.GetValue(model)!);
            var options = new SamplingOptions
            {
                MaxNewTokens = r.GetValue(maxNew),
                Temperature = r.GetValue(temperature),
                TopK = r.GetValue(topK),
                TopP = r.GetValue(topP),
                Seed = r.GetValue(seed),
                StopStrings = r.GetValue(stop) ?? [],
            };
            options.Validate();
            int positions = pre.Model.Config.MaxPositions;
            if (options.MaxNewTokens >= positions)
                throw new UserInputException($"--max-new-tokens {options.MaxNewTokens} leaves no room for a prompt in the model's {positions} positions (max_position_embeddings).");
            int room = positions - options.MaxNewTokens;
            int cut = 0;
            int batch = Math.Max(1, r.GetValue(batchSize));
            var lines = Jsonl.ReadObjects(r.GetValue(input)!);
            var prompts = lines.Select(l =>
            {
                int[] ids = l.Has("prompt_ids") ? l.Ints("prompt_ids")
                    : l.Has("prompt") ? pre.RequireTokenizer("a text prompt").Encode(l.String("prompt"))
                    : throw new UserInputException($"{l.Where}: needs a field \"prompt\" or \"prompt_ids\"");
                string field = l.Has("prompt_ids") ? "prompt_ids" : "prompt";
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

            IEnumerable<string> Results()
            {
                for (int start = 0; start < prompts.Count; start += batch)
                {
                    var chunk = prompts.GetRange(start, Math.Min(batch, prompts.Count - start));
                    var completions = Generator.Generate(pre.Model, chunk, options, pre.Tokenizer, firstStream: start);
                    Console.Error.WriteLine($"generate: {Math.Min(start + batch, prompts.Count)}/{prompts.Count}");
                    foreach (var c in completions)
                        yield return Jsonl.Serialize(new { ids = c.Ids, text = c.Text ?? "", logprobs = c.LogProbs, finish_reason = c.FinishReason });
                }
            }
            Jsonl.Write(r.GetValue(output), Results());
            return 0;
        }));
        return cmd;
    }
}
