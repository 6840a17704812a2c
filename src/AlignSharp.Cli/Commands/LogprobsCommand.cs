using System.CommandLine;
using AlignSharp.Engine;
using AlignSharp.Text;

namespace AlignSharp.Cli.Commands;

/// <summary>
/// `alignsharp logprobs`: per-token log-probabilities of given sequences. Input lines {"ids": [...]} or
/// {"text": "..."}; output {"logprobs": [null, lp1, ...]} with lp_t = log p(ids[t] | ids[&lt;t]).
/// </summary>
public static class LogprobsCommand
{
    public static Command Create()
    {
        var model = new Option<string>("--model") { Description = "Model directory (config.json + safetensors [+ tokenizer.json for text input]).", Required = true };
        var input = new Option<string>("--input") { Description = "JSONL: {\"ids\": [...]} or {\"text\": \"...\"} per line.", Required = true };
        var output = new Option<string?>("--output") { Description = "JSONL to write (default: stdout)." };
        var adapter = new Option<string?>("--adapter") { Description = "A LoRA adapter directory (PEFT: adapter_config.json + adapter_model.safetensors) applied to --model." };
        var cmd = new Command("logprobs", "Log-probability of every token given the ones before it.") { model, adapter, input, output };
        cmd.SetAction(r => CliErrors.Guard(() =>
        {
            OutputPaths.RefuseInput("--output", r.GetValue(output), ("--input", r.GetValue(input)), ("--model", r.GetValue(model)), ("--adapter", r.GetValue(adapter)));
            var pre = Pretrained.Load(r.GetValue(model)!).WithAdapter(r.GetValue(adapter));
            var lines = Jsonl.ReadObjects(r.GetValue(input)!);
            int max = pre.Model.Config.MaxPositions; // learned positions end there; RoPE models are not trained beyond it either
            if (lines.Count == 0) throw new UserInputException($"{r.GetValue(input)}: no records to score.");
            var sequences = lines.Select(l =>
            {
                if (l.Has("ids") && l.Has("text")) throw l.Error("text", "given beside \"ids\"; give one of them");
                int[] ids = l.Has("ids") ? l.Ints("ids")
                    : l.Has("text") ? pre.RequireTokenizer("text input").Encode(l.String("text"))
                    : throw new UserInputException($"{l.Where}: needs a field \"ids\" or \"text\"");
                foreach (var id in ids)
                    if (id < 0 || id >= pre.Model.Config.VocabSize) throw l.Error(l.Has("ids") ? "ids" : "text", $"token id {id} is outside the vocabulary [0, {pre.Model.Config.VocabSize})");
                if (ids.Length > max) throw l.Error(l.Has("ids") ? "ids" : "text", $"{ids.Length} tokens exceed the model's {max} positions (max_position_embeddings)");
                return ids;
            }).ToList();
            Jsonl.Write(r.GetValue(output), sequences.Select(ids => Jsonl.Serialize(new { logprobs = LogProbs(pre, ids) })));
            Console.Error.WriteLine($"logprobs: {sequences.Count} sequences");
            return 0;
        }));
        return cmd;
    }

    private static float?[] LogProbs(Pretrained pre, int[] ids)
    {
        var result = new float?[ids.Length];
        if (ids.Length < 2) return result;
        using var noGrad = Autograd.NoGrad();
        using var scope = TensorScope.Begin();
        int v = pre.Model.Config.VocabSize;
        var logits = Ops.Reshape(pre.Model.Forward(ids, 1, ids.Length), ids.Length, v);
        var targets = new int[ids.Length];
        Array.Copy(ids, 1, targets, 0, ids.Length - 1);
        var (lp, _) = Ops.TokenLogProbs(logits, targets);
        var s = lp.Span;
        for (int t = 1; t < ids.Length; t++) result[t] = s[t - 1];
        return result;
    }
}
