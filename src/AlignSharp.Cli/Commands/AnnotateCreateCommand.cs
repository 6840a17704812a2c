using System.CommandLine;
using AlignSharp.Feedback;
using AlignSharp.Models;
using AlignSharp.Text;
using AlignSharp.Training.Data;

namespace AlignSharp.Cli.Commands;

/// <summary>
/// `alignsharp annotate create --project NAME (--model DIR --prompts FILE [--k 4] [sampling] | --import FILE.jsonl)
/// [--overlap 1] [--db PATH]`: makes the project file and an admin annotator, and prints the admin's token.
/// </summary>
public static class AnnotateCreateCommand
{
    public static Command Create()
    {
        var project = AnnotateCommand.ProjectOption();
        var db = AnnotateCommand.DbOption();
        var import = new Option<string?>("--import") { Description = "JSONL (or JSON array) of {\"prompt\", \"completions\": [...]} to rank, from any system; instead of --model." };
        var model = new Option<string?>("--model") { Description = "Model directory (config.json, safetensors, tokenizer.json) to sample completions from; needs --prompts." };
        var prompts = new Option<string?>("--prompts") { Description = "JSONL (or JSON array) of {\"prompt\"} to sample completions for, with --model." };
        var k = new Option<int?>("--k") { Description = "Completions per prompt (default 4 with --model; with --import, every record must have exactly K)." };
        var overlap = new Option<int>("--overlap") { Description = "How many different annotators rank each prompt.", DefaultValueFactory = _ => 1 };
        var maxNewTokens = new Option<int>("--max-new-tokens") { Description = "Most tokens per completion.", DefaultValueFactory = _ => 128 };
        var temperature = new Option<float>("--temperature") { Description = "Sampling temperature, above 0 (0 would make the K completions identical).", DefaultValueFactory = _ => 1f };
        var topK = new Option<int>("--top-k") { Description = "Sample from the K most likely tokens; 0 = off.", DefaultValueFactory = _ => 0 };
        var topP = new Option<float>("--top-p") { Description = "Nucleus sampling threshold; 1 = off.", DefaultValueFactory = _ => 1f };
        var seed = new Option<int>("--seed") { Description = "Sampling seed; prompt i uses seed + i.", DefaultValueFactory = _ => 0 };
        var chatTemplate = new Option<string>("--chat-template")
        {
            Description = "Chat template for message-list prompts ({\"prompt\": [messages]} or {\"messages\": [...]}), rendered with the generation prompt before sampling: auto (the model's own template; plain when it has none), a built-in name (chatml, llama3, plain), or a .jinja file. String prompts are never templated. The stored prompt is the rendered text the model saw.",
            DefaultValueFactory = _ => "auto",
        };
        var url = new Option<string>("--url")
        {
            Description = "Address the server will be reached at, for the admin sign-in link.",
            DefaultValueFactory = _ => "http://127.0.0.1:8080",
        };
        var command = new Command("create", "Create an annotation project from a model and prompts, or from imported completions.")
        {
            project, db, import, model, prompts, k, overlap, maxNewTokens, temperature, topK, topP, seed, chatTemplate, url,
        };
        command.Validators.Add(result =>
        {
            bool hasImport = result.GetResult(import) is not null, hasModel = result.GetResult(model) is not null;
            if (hasImport == hasModel) result.AddError("give exactly one of --import FILE.jsonl and --model DIR");
            if (hasModel && result.GetResult(prompts) is null) result.AddError("--model needs --prompts FILE");
            if (hasImport && result.GetResult(prompts) is not null) result.AddError("--prompts goes with --model, not --import");
            if (hasImport)
                foreach (var o in new Option[] { maxNewTokens, temperature, topK, topP, seed, chatTemplate })
                    if (result.GetResult(o) is { Implicit: false }) result.AddError($"{o.Name} is a sampling setting for --model; --import does not sample");
        });
        command.SetAction(parse => CliErrors.Guard(() =>
        {
            var sampling = new SamplingOptions
            {
                MaxNewTokens = parse.GetValue(maxNewTokens),
                Temperature = parse.GetValue(temperature),
                TopK = parse.GetValue(topK),
                TopP = parse.GetValue(topP),
                Seed = parse.GetValue(seed),
            };
            ChatTemplate.ValidateOption(parse.GetValue(chatTemplate));
            return Run(parse.GetValue(project)!, parse.GetValue(db), parse.GetValue(import), parse.GetValue(model), parse.GetValue(prompts),
                parse.GetValue(k), parse.GetValue(overlap), sampling, parse.GetValue(chatTemplate)!, parse.GetValue(url)!);
        }));
        return command;
    }

    static int Run(string projectName, string? db, string? importPath, string? modelDir, string? promptsPath, int? k, int overlap, SamplingOptions sampling, string chatTemplate, string url)
    {
        string path = AnnotateCommand.DatabasePath(projectName, db);
        if (File.Exists(path)) throw new CliException($"{path} already exists; choose another --project or --db, or delete the file to start over.");
        if (overlap < 1) throw new CliException($"--overlap must be ≥ 1, got {overlap}.");

        IReadOnlyList<PromptCompletions> items;
        string source;
        string? samplingJson = null;
        if (importPath != null)
        {
            items = CompletionImport.ReadCompletions(importPath, k);
            source = "import:" + Path.GetFullPath(importPath);
        }
        else
        {
            int count = k ?? 4;
            var loaded = DatasetLoader.LoadPrompts(promptsPath!);
            if (loaded.Warning != null) Console.Error.WriteLine($"warning: {loaded.Warning}");
            var template = ChatTemplate.Resolve(chatTemplate, modelDir);
            if (template.IsFallback && loaded.Records.Any(p => p.Prompt.IsConversational))
                Console.Error.WriteLine($"warning: {modelDir} has no chat template (chat_template.jinja or tokenizer_config.json chat_template); message prompts are formatted with the built-in 'plain' format (User:/Assistant:). Pass --chat-template to choose one.");
            // What the model is given, and what annotators see and the export holds: the rendered prompt.
            var promptTexts = loaded.Records.Select(p => template.RenderPrompt(p.Prompt)).ToList();
            var (model, tokenizer) = LoadPretrained(modelDir!);
            if (tokenizer == null) throw new CliException($"{modelDir} has no tokenizer (tokenizer.json); completions cannot be turned into text.");
            Console.Error.WriteLine($"Sampling {count} completions for each of {promptTexts.Count} prompts...");
            try
            {
                items = CompletionSampler.Sample(model, tokenizer, promptTexts, count, sampling,
                    (done, total) => Console.Error.Write($"\r  {done}/{total} prompts"), loaded.Records.Select(p => p.Source.ToString()).ToList());
            }
            catch (UserInputException)
            {
                Console.Error.WriteLine();   // the error on its own line, not after the progress counter
                throw;
            }
            Console.Error.WriteLine();
            source = "model:" + Path.GetFullPath(modelDir!);
            samplingJson = CompletionSampler.DescribeSettings(Path.GetFullPath(modelDir!), count, sampling);
        }

        using var store = AnnotationStore.Create(path, projectName, overlap, source, samplingJson, items);
        var (admin, token) = store.AddAnnotator("admin", isAdmin: true);
        int minK = items.Min(p => p.Completions.Count), maxK = items.Max(p => p.Completions.Count);
        string perPrompt = minK == maxK ? $"{minK}" : $"{minK}-{maxK}";
        string flags = AnnotateCommand.ProjectFlags(projectName, db);
        Console.WriteLine($"Created project {projectName} in {store.Path}: {items.Count} prompts × {perPrompt} completions, overlap {overlap}.");
        Console.WriteLine($"Admin token (annotator '{admin.Name}'): {token}");
        Console.WriteLine($"Admin sign-in link: {AnnotateCommand.SignInLink(url, token, admin: true)}");
        Console.WriteLine("The token is shown only now; the project stores only its hash.");
        Console.WriteLine($"Next: alignsharp annotate add-annotator {flags} --name WHO, then alignsharp annotate serve {flags} --port 8080");
        return 0;
    }

    /// <summary>A Hugging Face model directory (config.json + safetensors + tokenizer.json).</summary>
    static (TransformerModel Model, ITokenizer? Tokenizer) LoadPretrained(string directory)
    {
        var pre = Pretrained.Load(directory);
        return (pre.Model, pre.Tokenizer);
    }
}
