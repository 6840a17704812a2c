using System.CommandLine;
using AlignSharp.Training.Data;
using AlignSharp.Training.Evaluation;

namespace AlignSharp.Cli.Commands;

/// <summary>
/// `alignsharp eval`: a policy against a baseline on a prompt set, judged by a reward model or an HTTP judge; writes
/// eval.json (win rate and CIs, reward means, KL, length, distinct-2), samples.jsonl and eval.html.
/// </summary>
public static class EvalCommand
{
    public static Command Create()
    {
        var d = new EvalOptions();
        var policy = new Option<string>("--policy") { Description = "The policy to evaluate (a model directory with tokenizer.json).", Required = true };
        var baseline = new Option<string?>("--baseline") { Description = "The policy to compare against (same tokenizer): win rate and KL are measured against it." };
        var adapter = new Option<string?>("--adapter") { Description = "A LoRA adapter directory (PEFT) applied to --policy." };
        var baselineAdapter = new Option<string?>("--baseline-adapter") { Description = "A LoRA adapter directory (PEFT) applied to --baseline." };
        var prompts = new Option<string>("--prompts") { Description = "Prompts file (JSONL or JSON array): {\"prompt\": text or messages} records, or the prompts of SFT/preference records.", Required = true };
        var judgeModel = new Option<string?>("--judge-model") { Description = "Reward-model directory (alignsharp rm output) as the judge; its scores are normalised with the stored mean and std." };
        var judgeUrl = new Option<string?>("--judge-url") { Description = "HTTP judge: POST {\"prompts\", \"completions\"[, \"pairs\"]} answered by {\"rewards\": [...]} or {\"preferences\": [0|1|0.5, ...]} (docs/evaluation.md)." };
        var samples = new Option<int>("--samples-per-prompt") { Description = "Completions sampled per prompt and policy.", DefaultValueFactory = _ => d.SamplesPerPrompt };
        var output = new Option<string>("--out") { Description = "Output directory: eval.json, samples.jsonl, eval.html.", Required = true };
        var maxNew = new Option<int>("--max-new-tokens") { Description = "Most tokens generated per completion.", DefaultValueFactory = _ => d.MaxNewTokens };
        var temperature = new Option<float>("--temperature") { Description = "Sampling temperature (> 0); the KL is measured between the tempered distributions.", DefaultValueFactory = _ => d.Temperature };
        var seed = new Option<int>("--seed") { Description = "Random seed: slot i of each policy draws from stream i, so both policies share random numbers.", DefaultValueFactory = _ => d.Seed };
        var template = new Option<string>("--chat-template")
        {
            Description = "For message prompts (text prompts are used verbatim): auto (the policy's own template; plain when it has none), a built-in name (chatml, llama3, plain), or a .jinja file. The baseline is given the same prompt tokens.",
            DefaultValueFactory = _ => d.ChatTemplate,
        };
        var kwargs = new Option<string?>("--chat-template-kwargs") { Description = ChatTemplate.KwargsHelp };
        var maxPrompt = new Option<int>("--max-prompt-length") { Description = "Longest prompt in tokens; longer prompts keep their end.", DefaultValueFactory = _ => d.MaxPromptLength };
        var overwrite = new Option<bool>("--overwrite") { Description = "Replace the evaluation already in --out (eval.json, samples.jsonl, eval.html); without it such an --out is refused." };
        var batch = new Option<int>("--batch-size") { Description = "Sequences per generation and scoring batch.", DefaultValueFactory = _ => d.BatchSize };
        var cmd = new Command("eval", "Evaluate a policy against a baseline: seeded samples from both, judged by a reward model or an HTTP judge; " +
                                      "win rate (ties ½) and reward means with 95% intervals, KL to the baseline, length, distinct-2; eval.json and eval.html.")
        {
            policy, baseline, adapter, baselineAdapter, prompts, judgeModel, judgeUrl, samples, output, maxNew, temperature, seed, template, kwargs, maxPrompt, batch, overwrite,
        };
        cmd.SetAction(r => CliErrors.Guard(() =>
        {
            var options = new EvalOptions
            {
                Policy = r.GetValue(policy), Baseline = r.GetValue(baseline), Adapter = r.GetValue(adapter), BaselineAdapter = r.GetValue(baselineAdapter), Prompts = r.GetValue(prompts),
                JudgeModel = r.GetValue(judgeModel), JudgeUrl = r.GetValue(judgeUrl), SamplesPerPrompt = r.GetValue(samples),
                Out = r.GetValue(output), MaxNewTokens = r.GetValue(maxNew), Temperature = r.GetValue(temperature), Seed = r.GetValue(seed),
                ChatTemplate = r.GetValue(template)!, ChatTemplateKwargs = r.GetValue(kwargs), MaxPromptLength = r.GetValue(maxPrompt), BatchSize = r.GetValue(batch),
                Overwrite = r.GetValue(overwrite),
            };
            var json = PolicyComparison.RunAndWrite(options, Console.Error);
            Console.WriteLine(json.ToJsonString(AlignSharp.Training.Runs.RunDirectory.Json));
            Console.Error.WriteLine($"eval: wrote {Path.Combine(options.Out!, "eval.json")} and {Path.Combine(options.Out!, "eval.html")}");
            return 0;
        }));
        return cmd;
    }
}
