using AlignSharp.Engine;
using AlignSharp.Models;

namespace AlignSharp.Text;

/// <summary>
/// How to pick new tokens. Temperature 0 means greedy. TopK 0 and TopP 1 disable those filters.
/// Seed fixes the sampling; each prompt draws from its own stream (seed, prompt index), so a prompt's
/// completion does not depend on how the prompts are split into batches.
/// </summary>
public sealed record SamplingOptions
{
    /// <summary>Most tokens to generate per prompt (default 64).</summary>
    public int MaxNewTokens { get; init; } = 64;

    /// <summary>Softmax temperature; 0 = greedy (default 1).</summary>
    public float Temperature { get; init; } = 1f;

    /// <summary>Keep only the K most likely tokens; 0 = off (default 0).</summary>
    public int TopK { get; init; }

    /// <summary>Keep the smallest set of most likely tokens whose probability reaches P; 1 = off (default 1). With TopK, the
    /// probabilities are those of the top-K tokens renormalised (top-k, then top-p, as Hugging Face applies them).</summary>
    public float TopP { get; init; } = 1f;

    /// <summary>Random seed (default 0).</summary>
    public int Seed { get; init; }

    /// <summary>Token ids that end a sequence (default: the tokenizer's EOS, else the model config's).</summary>
    public IReadOnlyList<int>? EosIds { get; init; }

    /// <summary>Strings that end a sequence; the returned text stops before the first one (needs a tokenizer).</summary>
    public IReadOnlyList<string> StopStrings { get; init; } = [];

    /// <summary>transformers' repetition_penalty (Keskar et al. 2019), applied before temperature and the filters: the logit of
    /// every token already in the row (prompt or completion) is divided by it where positive, multiplied where negative;
    /// 1 = off (default).</summary>
    public float RepetitionPenalty { get; init; } = 1f;

    public void Validate()
    {
        if (MaxNewTokens < 0) throw new UserInputException($"max new tokens must be ≥ 0, got {MaxNewTokens}.");
        if (Temperature < 0 || float.IsNaN(Temperature)) throw new UserInputException($"temperature must be ≥ 0, got {Temperature}.");
        // The logits are divided by it: one so small that 1/T is infinite would make every probability NaN.
        if (Temperature > 0 && !float.IsFinite(1f / Temperature)) throw new UserInputException($"temperature {Temperature} is too small to divide by; 0 decodes greedily.");
        if (StopStrings.Any(s => s.Length == 0)) throw new UserInputException("a stop string is empty: it would stop every completion at once.");
        if (TopK < 0) throw new UserInputException($"top-k must be ≥ 0, got {TopK}.");
        if (!(TopP > 0 && TopP <= 1)) throw new UserInputException($"top-p must be in (0, 1], got {TopP}.");
        if (!(RepetitionPenalty > 0) || float.IsInfinity(RepetitionPenalty)) throw new UserInputException($"repetition penalty must be > 0, got {RepetitionPenalty}.");
    }
}

/// <summary>
/// One completion. Ids are the new tokens (an ending EOS included); LogProbs[i] is the log-probability of
/// Ids[i] under the distribution it was drawn from (after temperature, top-k and top-p; for greedy decoding,
/// under the model's plain softmax). FinishReason: "eos", "stop" (a stop string) or "length".
/// </summary>
public sealed record Completion(int[] Ids, string? Text, float[] LogProbs, string FinishReason);

/// <summary>Batched, KV-cached autoregressive generation over prompts of different lengths.</summary>
public static class Generator
{
    /// <summary>
    /// <see cref="Generate"/> over any number of prompts, <paramref name="batchSize"/> rows at a time. Prompt i draws from
    /// stream <paramref name="firstStream"/> + i whatever the batch size, so the result is the same as one call over all
    /// prompts (and a data-parallel rank holding rows from <paramref name="firstStream"/> on samples them as one process would).
    /// </summary>
    public static List<Completion> GenerateInBatches(TransformerModel model, IReadOnlyList<int[]> prompts, SamplingOptions options, ITokenizer? tokenizer, int batchSize, int firstStream = 0)
    {
        if (batchSize < 1) throw new UserInputException($"The generation batch size must be ≥ 1, got {batchSize}.");
        var result = new List<Completion>(prompts.Count);
        for (int start = 0; start < prompts.Count; start += batchSize)
        {
            var chunk = prompts.Skip(start).Take(batchSize).ToArray();
            result.AddRange(Generate(model, chunk, options, tokenizer, firstStream: firstStream + start));
        }
        return result;
    }

    public static IReadOnlyList<Completion> Generate(TransformerModel model, IReadOnlyList<int[]> prompts, SamplingOptions options, ITokenizer? tokenizer = null, int firstStream = 0)
    {
        options.Validate();
        if (model.Config.Head != HeadKind.LanguageModel) throw new UserInputException("Generation needs a model with a language-model head.");
        if (options.StopStrings.Count > 0 && tokenizer == null) throw new UserInputException("Stop strings need a tokenizer.");
        int batch = prompts.Count;
        if (batch == 0) return [];
        foreach (var p in prompts) if (p.Length == 0) throw new UserInputException("A prompt is empty: generation needs at least one prompt token (e.g. BOS).");

        var eos = new HashSet<int>(options.EosIds ?? (tokenizer?.EosId is int e ? [e] : model.Config.EosTokenIds));
        int promptLen = prompts.Max(p => p.Length);
        int maxNew = options.MaxNewTokens;
        int capacity = promptLen + maxNew;
        if (model.Config.LearnedPositions && capacity > model.Config.MaxPositions)
            throw new UserInputException($"Prompt ({promptLen} tokens) plus {maxNew} new tokens exceeds the model's {model.Config.MaxPositions} positions.");

        // Left padding: row b's prompt ends at column promptLen-1; pads are masked and take position 0.
        var valid = new bool[batch * capacity];
        var ids = new int[batch * promptLen];
        var positions = new int[batch * promptLen];
        var nextPosition = new int[batch];
        for (int b = 0; b < batch; b++)
        {
            int pad = promptLen - prompts[b].Length;
            for (int t = 0; t < promptLen; t++)
            {
                bool real = t >= pad;
                ids[b * promptLen + t] = real ? prompts[b][t - pad] : 0;
                positions[b * promptLen + t] = real ? t - pad : 0;
                valid[b * capacity + t] = real;
            }
            nextPosition[b] = prompts[b].Length;
        }

        var rngs = Enumerable.Range(0, batch).Select(b => new Random(StreamSeed(options.Seed, firstStream + b))).ToArray();
        var outIds = Enumerable.Range(0, batch).Select(_ => new List<int>()).ToArray();
        var outLogProbs = Enumerable.Range(0, batch).Select(_ => new List<float>()).ToArray();
        var finish = new string?[batch];
        var texts = new string?[batch];
        using var cache = new KvCache(model.Config, batch, capacity);
        int vocab = model.Config.VocabSize;
        // Rows of the embedding past the tokenizer's vocabulary (padding to a round size) have no text: never sample them.
        int sampleable = Math.Min(vocab, tokenizer?.VocabSize ?? vocab);
        var stepLogProbs = new float[batch];
        // The LM head and the sampler walk the vocabulary in tiles straight from the last hidden states (no [B, V]
        // logits). A top-p row whose nucleus reaches below the tiles' candidates costs HeadSampler a second walk over the
        // head (its full logits); when most rows of the first steps do (a flat model: random weights, a high
        // temperature), the rest of the call takes the unfused path, which walks the head once. Same distribution.
        // The repetition penalty changes the logits of the tokens a row has seen before any sampling: on whole logit rows.
        bool penalised = options.RepetitionPenalty != 1f;
        bool fused = HeadSampler.Applies(model) && !penalised;
        int sampledRows = 0, fallbackRows = 0;

        using var noGrad = Autograd.NoGrad();
        // Decoding's products may round activations to bf16 (vdpbf16ps), as a bf16 model generates in PyTorch.
        using var rounding = Ops.RoundActivationsToBf16();
        int step = 0, seq = promptLen;
        int[] stepIds = ids, stepPositions = positions;
        while (step < maxNew && finish.Any(f => f == null))
        {
            float[] last;
            using (TensorScope.Begin())
            {
                int keys = cache.Length + seq;
                var keyMask = new bool[batch * keys];
                for (int b = 0; b < batch; b++) Array.Copy(valid, b * capacity, keyMask, b * keys, keys);
                var hidden = model.Hidden(stepIds, batch, seq, stepPositions, keyMask, cache);
                // Only the last position of each row needs the (large) vocabulary projection.
                var h = Ops.Slice(Ops.Reshape(hidden, batch, seq, -1), 1, seq - 1, 1);
                last = fused ? h.ToArray() : model.Head(h).ToArray();
            }

            var next = new int[batch];
            var active = finish.Select(f => f == null).ToArray();
            if (fused)
            {
                fallbackRows += HeadSampler.SampleRows(model, last, sampleable, options, rngs, active, next, stepLogProbs);
                sampledRows += active.Count(a => a);
                if (step >= 3 && 2 * fallbackRows > sampledRows) fused = false;
            }
            else
            {
                if (penalised) Penalise(last, vocab, prompts, outIds, active, options.RepetitionPenalty);
                TokenSampler.SampleRows(last, vocab, sampleable, options, rngs, active, next, stepLogProbs);
            }
            for (int b = 0; b < batch; b++)
            {
                if (!active[b]) continue;
                int token = next[b];
                outIds[b].Add(token);
                outLogProbs[b].Add(stepLogProbs[b]);
                if (eos.Contains(token)) finish[b] = "eos";
                else if (options.StopStrings.Count > 0)
                {
                    var text = tokenizer!.Decode(outIds[b].ToArray(), skipSpecialTokens: true);
                    foreach (var stop in options.StopStrings)
                    {
                        int at = text.IndexOf(stop, StringComparison.Ordinal);
                        if (at >= 0) { finish[b] = "stop"; texts[b] = text[..at]; break; }
                    }
                }
            }
            step++;

            // The next step feeds one token per row. A finished row feeds a placeholder: rows never attend to
            // each other, so it affects nothing but that row, which samples no more.
            int col = promptLen + step - 1;
            stepIds = next;
            stepPositions = new int[batch];
            for (int b = 0; b < batch; b++)
            {
                stepPositions[b] = nextPosition[b]++;
                valid[b * capacity + col] = true;
            }
            seq = 1;
        }

        var result = new Completion[batch];
        for (int b = 0; b < batch; b++)
        {
            var idArr = outIds[b].ToArray();
            string? text = texts[b] ?? tokenizer?.Decode(idArr, skipSpecialTokens: true);
            if (text != null) text = tokenizer!.CleanUp(text);
            result[b] = new Completion(idArr, text, outLogProbs[b].ToArray(), finish[b] ?? "length");
        }
        return result;
    }

    /// <summary>transformers' RepetitionPenaltyLogitsProcessor on each active row of <paramref name="logits"/> [B, V]: every
    /// distinct token of the row's prompt and completion so far, once. (transformers' left-padded batches also penalise
    /// the pad token in their padded rows; a row here sees only its own tokens, so batching changes nothing.)</summary>
    private static void Penalise(float[] logits, int vocab, IReadOnlyList<int[]> prompts, List<int>[] completions, bool[] active, float penalty)
    {
        var seen = new HashSet<int>();
        for (int b = 0; b < prompts.Count; b++)
        {
            if (!active[b]) continue;
            seen.Clear();
            seen.UnionWith(prompts[b]);
            seen.UnionWith(completions[b]);
            foreach (int id in seen)
            {
                ref float l = ref logits[b * vocab + id];
                l = l < 0 ? l * penalty : l / penalty;
            }
        }
    }

    /// <summary>A stable seed for prompt stream <paramref name="stream"/> (HashCode is randomised per process).</summary>
    private static int StreamSeed(int seed, int stream)
    {
        ulong x = (ulong)(uint)seed * 0x9E3779B97F4A7C15UL ^ (ulong)(uint)stream * 0xC2B2AE3D27D4EB4FUL;
        x ^= x >> 31; x *= 0xBF58476D1CE4E5B9UL; x ^= x >> 29;
        return (int)(x & 0x7FFFFFFF);
    }
}
