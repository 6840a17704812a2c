using System.Text.Json.Nodes;
using AlignSharp.Models;
using AlignSharp.Text;
using AlignSharp.Training.Data;

namespace AlignSharp.Feedback;

/// <summary>
/// Samples K completions per prompt for an annotation project. Prompt i is generated as one batch of K copies
/// with seed <c>options.Seed + i</c>, so each completion has its own sampling stream and the result does not
/// depend on how many prompts there are.
/// </summary>
public static class CompletionSampler
{
    public static IReadOnlyList<PromptCompletions> Sample(
        TransformerModel model, ITokenizer tokenizer, IReadOnlyList<string> prompts, int k, SamplingOptions options,
        Action<int, int>? progress = null)
    {
        options.Validate();
        if (k < 2 || k > AnnotationStore.MaxCompletionsPerPrompt)
            throw new UserInputException($"--k must be between 2 and {AnnotationStore.MaxCompletionsPerPrompt}, got {k}.");
        if (options.Temperature == 0)
            throw new UserInputException("temperature 0 is greedy decoding and would give K identical completions; use a temperature above 0.");
        var result = new List<PromptCompletions>(prompts.Count);
        for (int i = 0; i < prompts.Count; i++)
        {
            // A rendered chat prompt may already begin with the BOS the tokenizer adds: keep one.
            int[] ids = TokenSequences.DropDoubledBos(tokenizer.Encode(prompts[i], addSpecialTokens: true), tokenizer);
            var batch = Enumerable.Repeat(ids, k).ToArray();
            var completions = Generator.Generate(model, batch, options with { Seed = options.Seed + i }, tokenizer);
            result.Add(new PromptCompletions(
                prompts[i],
                completions.Select(c => c.Text ?? tokenizer.Decode(c.Ids, skipSpecialTokens: true)).ToList(),
                completions.Select(c => (string?)c.FinishReason).ToList()));
            progress?.Invoke(i + 1, prompts.Count);
        }
        return result;
    }

    /// <summary>The settings recorded in the project, as JSON.</summary>
    public static string DescribeSettings(string modelDirectory, int k, SamplingOptions options) => new JsonObject
    {
        ["model"] = modelDirectory,
        ["k"] = k,
        ["max_new_tokens"] = options.MaxNewTokens,
        ["temperature"] = options.Temperature,
        ["top_k"] = options.TopK,
        ["top_p"] = options.TopP,
        ["seed"] = options.Seed,
        ["stop"] = new JsonArray(options.StopStrings.Select(s => (JsonNode?)s).ToArray()),
    }.ToJsonString();
}
