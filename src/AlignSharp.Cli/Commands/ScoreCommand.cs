using System.CommandLine;
using AlignSharp.Training.Data;
using AlignSharp.Training.Rewards;

namespace AlignSharp.Cli.Commands;

/// <summary>`alignsharp score`: reward-model scores of prompt/completion pairs. In {"prompt", "completion"}, out {"score": x}.</summary>
public static class ScoreCommand
{
    public static Command Create()
    {
        var model = new Option<string>("--reward-model") { Description = "Reward-model directory (from `alignsharp rm`).", Required = true };
        var adapter = new Option<string?>("--adapter") { Description = "A LoRA adapter directory (PEFT) applied to --reward-model; a SEQ_CLS adapter (alignsharp rm --lora-r) brings its score head, so --reward-model may then be the language model it was trained on." };
        var input = new Option<string>("--input") { Description = "JSONL: {\"prompt\": string or messages, \"completion\": string or assistant messages} per line.", Required = true };
        var output = new Option<string?>("--output") { Description = "JSONL to write (default: stdout)." };
        var normalize = new Option<bool>("--normalize") { Description = "Report (score − mean) / std with the statistics recorded at training time." };
        var chatTemplate = new Option<string>("--chat-template")
        {
            Description = "For message prompts: auto (the template the reward model was trained with), a built-in name (chatml, llama3, plain), or a .jinja file.",
            DefaultValueFactory = _ => "auto",
        };
        var truncate = new Option<bool>("--truncate") { Description = "Keep the last tokens of a prompt + completion longer than the reward model takes (its max_length, at most its positions) instead of reporting it." };
        var cmd = new Command("score", "Score completions with a reward model.") { model, adapter, input, output, normalize, chatTemplate, truncate };
        cmd.SetAction(r => CliErrors.Guard(() =>
        {
            var spec = r.GetValue(chatTemplate)!;
            ChatTemplate.ValidateOption(spec);
            OutputPaths.RefuseInput("--output", r.GetValue(output), ("--input", r.GetValue(input)), ("--reward-model", r.GetValue(model)), ("--adapter", r.GetValue(adapter)));
            var rm = RewardModel.Load(r.GetValue(model)!, r.GetValue(adapter));
            if (!string.Equals(spec.Trim(), "auto", StringComparison.OrdinalIgnoreCase))
                rm = new RewardModel(rm.Model, rm.Tokenizer, ChatTemplate.Resolve(spec, rm.Directory), rm.Info) { Directory = rm.Directory };
            bool norm = r.GetValue(normalize);
            if (norm) rm.RequireNormalization("--normalize");
            var lines = Jsonl.ReadObjects(r.GetValue(input)!);
            int cut = 0;
            var sequences = lines.Select(l =>
            {
                var (prompt, completion) = Pair(l);
                var ids = rm.Encode(prompt, completion, out bool truncated);
                if (truncated && !r.GetValue(truncate))
                    throw l.Error("completion", $"prompt + completion is longer than the reward model's {rm.MaxTokens} tokens; pass --truncate to score its last {rm.MaxTokens} tokens");
                if (truncated) cut++;
                return ids;
            }).ToList();
            if (cut > 0) Console.Error.WriteLine($"warning: {cut} of {sequences.Count} inputs were longer than {rm.MaxTokens} tokens; their starts were cut off (--truncate).");
            var scores = rm.ScoreSequences(sequences);
            Jsonl.Write(r.GetValue(output), scores.Select(s => Jsonl.Serialize(new { score = norm ? rm.Normalize(s) : s })));
            return 0;
        }));
        return cmd;
    }

    /// <summary>A line's prompt and completion, read as the training data reads them (every message field kept, roles and
    /// answers checked), so a score renders exactly what `rm` trained on.</summary>
    private static (ChatContent Prompt, ChatContent Completion) Pair(Jsonl.Line l)
    {
        var reader = new FieldReader(l.Value, new RecordSource(l.File, l.Number));
        return (reader.Content("prompt", ContentUse.Prompt), reader.Content("completion", ContentUse.Completion));
    }
}
