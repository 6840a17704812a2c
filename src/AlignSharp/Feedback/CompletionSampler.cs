using System.Text.Json.Nodes;
using AlignSharp.Models;
using AlignSharp.Text;
using AlignSharp.Training.Data;

namespace AlignSharp.Feedback;

/// <summary>
/// Samples K completions per prompt for an annotation project. Prompt i is generated as one batch of K copies
/// with seed <c>options.Seed + i</c>, so each completion has its own sampling stream and the result does not
/// depend on how many prompts there are.
/// <para>
/// A completion that is only whitespace ("\n\n") cannot be ranked or trained on (an imported one is refused, and rm/dpo
/// refuse such records), so it is re-sampled: completion j's r-th retry draws from stream r·K + j of the prompt's seed,
/// at most <see cref="MaxResamples"/> times, so the result stays a function of the seed. A completion still only
/// whitespace after that fails the run, naming the prompt's file:line.
/// </para>
/// </summary>
public static class CompletionSampler
{
    /// <summary>How many times a whitespace-only completion is re-sampled before the prompt is given up on.</summary>
    public const int MaxResamples = 8;

    /// <param name="sources">Where each prompt came from (file:line), for errors; "prompt N" when not given.</param>
    public static IReadOnlyList<PromptCompletions> Sample(
        TransformerModel model, ITokenizer tokenizer, IReadOnlyList<string> prompts, int k, SamplingOptions options,
        Action<int, int>? progress = null, IReadOnlyList<string>? sources = null)
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
            var seeded = options with { Seed = options.Seed + i };
            var completions = Generator.Generate(model, batch, seeded, tokenizer).ToArray();
            string Text(Completion c) => c.Text ?? tokenizer.Decode(c.Ids, skipSpecialTokens: true);
            for (int j = 0; j < k; j++)
                for (int r = 1; r <= MaxResamples && RecordParser.IsBlankAnswer(Text(completions[j])); r++)
                    completions[j] = Generator.Generate(model, [ids], seeded, tokenizer, firstStream: r * k + j)[0];
            int blank = completions.Count(c => RecordParser.IsBlankAnswer(Text(c)));
            if (blank > 0)
                throw new UserInputException(
                    $"{(sources != null ? sources[i] : $"prompt {i + 1}")}: the model produced only whitespace for {blank} of the {k} completions of this prompt, " +
                    $"even after {MaxResamples} re-samples each; such completions cannot be ranked or trained on. Allow longer completions " +
                    $"(--max-new-tokens, now {options.MaxNewTokens}), try another --temperature (now {options.Temperature.ToString(System.Globalization.CultureInfo.InvariantCulture)}), " +
                    "or check the model and its chat template on this prompt.");
            result.Add(new PromptCompletions(
                prompts[i],
                completions.Select(Text).ToList(),
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
