using System.Diagnostics;
using AlignSharp.Engine;
using AlignSharp.Models;
using AlignSharp.Models.Lora;
using AlignSharp.Text;
using AlignSharp.Training.Data;

namespace AlignSharp.Training.Rl;

/// <summary>
/// The models of an RL run: the policy being trained, its frozen reference (a copy of the starting policy), an optional
/// value model (PPO), and the policy's tokenizer (null only for rollouts from token ids, <see cref="RolloutCollector.CollectTokens"/>)
/// and chat template. With LoRA the policy trains <see cref="PolicyAdapter"/>
/// on its frozen weights and the reference is the policy itself (<c>Reference</c> is <c>Policy</c>) run with
/// <see cref="ReferenceAdapter"/> in place of the trained adapter; PPO's value model trains <see cref="ValueAdapter"/> and
/// its score head, on the policy's own trunk (<see cref="TransformerModel.SharingTrunk"/>) or a frozen model of its own.
/// </summary>
public sealed record RlModels(TransformerModel Policy, TransformerModel Reference, TransformerModel? Value, ITokenizer? Tokenizer, ChatTemplate Template)
{
    /// <summary>Where the policy came from (its tokenizer files are copied next to saved policies).</summary>
    public string? PolicyDirectory { get; init; }

    /// <summary>The LoRA adapter the policy trains (null: every weight).</summary>
    public LoraAdapter? PolicyAdapter { get; init; }

    /// <summary>The LoRA adapter the value model trains with its score head (null: every weight).</summary>
    public LoraAdapter? ValueAdapter { get; init; }

    /// <summary>With a LoRA policy, the reference's adapter: a frozen copy of the adapter training started from, or null (the base).</summary>
    public LoraAdapter? ReferenceAdapter { get; init; }

    /// <summary>The reference's logits [N, V] at the packed completion positions (the policy with its reference adapter when they share weights).</summary>
    public Tensor ReferenceLogits(SequenceForward.Packed packed, float temperature)
        => OnReference(m => SequenceForward.Logits(m, packed, temperature));

    /// <summary>Runs <paramref name="pass"/> on the reference: the policy with its reference adapter when they share weights, else the reference model.</summary>
    public T OnReference<T>(Func<TransformerModel, T> pass)
        => ReferenceEquals(Reference, Policy) ? LoraAdapter.Using(Policy, ReferenceAdapter, () => pass(Policy)) : pass(Reference);

    /// <summary>Sets the dropout stream of the trained adapters (a training forward) or clears it (null: rollouts, scoring).</summary>
    public void SetAdapterDropout(Random? rng)
    {
        if (PolicyAdapter != null) PolicyAdapter.DropoutRng = rng;
        if (ValueAdapter != null) ValueAdapter.DropoutRng = rng;
    }
}

/// <summary>
/// One rollout batch: S completions (a prompt repeated for each of its completions, consecutively), as ragged per-token
/// arrays (one entry per completion token, the final EOS included when generated).
/// </summary>
public sealed class RolloutBatch
{
    public required PromptExample[] Prompts { get; init; }
    public required string[] PromptTexts { get; init; }
    public required int[][] PromptIds { get; init; }
    public required int[][] CompletionIds { get; init; }
    public required string[] Completions { get; init; }
    /// <summary>True when the completion ended with an end-of-sequence token (false: it hit the length limit).</summary>
    public required bool[] EndsWithEos { get; init; }
    /// <summary>Log-probabilities under the sampling distribution (temperature, top-k, top-p), from the generator.</summary>
    public required float[][] SamplingLogProbs { get; init; }

    /// <summary>Policy log-probabilities recomputed by a forward pass at the training temperature: π_old of the update.</summary>
    public float[][] LogProbs { get; set; } = [];
    public float[][] RefLogProbs { get; set; } = [];
    /// <summary>Entropy of the policy's next-token distribution at each completion token.</summary>
    public float[][] Entropies { get; set; } = [];
    /// <summary>KL_t(π ‖ π_ref) by the run's estimator.</summary>
    public float[][] Kl { get; set; } = [];
    /// <summary>Value-model predictions V(s_t) before each completion token (PPO only).</summary>
    public float[][]? Values { get; set; }
    /// <summary>The total score of each completion: weighted sources, missing-EOS penalty, clipping.</summary>
    public float[] Scores { get; set; } = [];
    public IReadOnlyDictionary<string, float[]> ScoreParts { get; set; } = new Dictionary<string, float[]>();

    /// <summary>Per-token advantages (set by the algorithm).</summary>
    public float[][] Advantages { get; set; } = [];
    /// <summary>Per-token value targets (PPO).</summary>
    public float[][]? Returns { get; set; }

    public double GenerationSeconds { get; set; }
    /// <summary>Everything after generation: rewards plus the policy, reference and value passes below.</summary>
    public double ScoringSeconds { get; set; }
    /// <summary>The parts of <see cref="ScoringSeconds"/>: the reward sources, and the π_old, reference and value forward passes.</summary>
    public double RewardSeconds { get; set; }
    public double PolicyScoringSeconds { get; set; }
    public double ReferenceSeconds { get; set; }
    public double ValueSeconds { get; set; }

    public int Count => CompletionIds.Length;
    public int CompletionTokens => CompletionIds.Sum(c => c.Length);
    public int TotalTokens => CompletionTokens + PromptIds.Sum(p => p.Length);

    /// <summary>Σ_t KL_t of each completion.</summary>
    public double[] SequenceKl() => Kl.Select(k => k.Sum(x => (double)x)).ToArray();
}

/// <summary>Forward passes over prompt + completion rows, reading only the positions that predict completion tokens.</summary>
public static class SequenceForward
{
    /// <summary>
    /// Rows of a rollout batch, right-padded: ids and mask [B, T]; Positions [N]: the flat index b·T + p_b − 1 + j of the
    /// position predicting completion token j of row b; Targets [N]: those tokens. N = completion tokens of the rows.
    /// </summary>
    public sealed record Packed(int[] Ids, bool[]? Mask, int Batch, int Length, int[] Positions, int[] Targets, int[] CompletionLengths);

    public static Packed Pack(RolloutBatch batch, IReadOnlyList<int> rows) => Pack(batch.PromptIds, batch.CompletionIds, rows);

    /// <summary>The same, for the given rows of (prompt ids, completion ids).</summary>
    public static Packed Pack(IReadOnlyList<int[]> promptIds, IReadOnlyList<int[]> completionIds, IReadOnlyList<int> rows)
    {
        int b = rows.Count;
        int t = rows.Max(r => promptIds[r].Length + completionIds[r].Length);
        var ids = new int[b * t];
        var mask = new bool[b * t];
        var positions = new List<int>();
        var targets = new List<int>();
        var lengths = new int[b];
        bool padded = false;
        for (int i = 0; i < b; i++)
        {
            var p = promptIds[rows[i]];
            var c = completionIds[rows[i]];
            p.CopyTo(ids, i * t);
            c.CopyTo(ids, i * t + p.Length);
            mask.AsSpan(i * t, p.Length + c.Length).Fill(true);
            padded |= p.Length + c.Length < t;
            for (int j = 0; j < c.Length; j++) { positions.Add(i * t + p.Length - 1 + j); targets.Add(c[j]); }
            lengths[i] = c.Length;
        }
        return new Packed(ids, padded ? mask : null, b, t, positions.ToArray(), targets.ToArray(), lengths);
    }

    /// <summary>Logits / temperature at the positions predicting the completion tokens. → [N, V]</summary>
    public static Tensor Logits(TransformerModel model, Packed p, float temperature)
    {
        var logits = model.Head(Rows(model, p));
        return temperature == 1f ? logits : Ops.MulScalar(logits, 1f / temperature);
    }

    /// <summary>Log-probabilities of the completion tokens and entropies, at the temperature, the LM head in row chunks
    /// (<see cref="TokenScoring"/>). → ([N], [N])</summary>
    public static (Tensor LogProbs, Tensor Entropy) TokenLogProbs(TransformerModel model, Packed p, float temperature)
        => TokenScoring.LogProbs(model, Rows(model, p), p.Targets, temperature);

    /// <summary>A scalar-head model's value at the positions predicting the completion tokens. → [N]</summary>
    public static Tensor Values(TransformerModel valueModel, Packed p)
    {
        if (valueModel.Config.Head != HeadKind.Scalar) throw new InvalidOperationException("The value model needs a scalar head.");
        return valueModel.Head(Rows(valueModel, p));
    }

    private static Tensor Rows(TransformerModel model, Packed p)
    {
        var hidden = model.Hidden(p.Ids, p.Batch, p.Length, keyMask: p.Mask);
        return Ops.IndexSelect(Ops.Reshape(hidden, p.Batch * p.Length, -1), p.Positions);
    }

    /// <summary>Splits a packed [N] vector back into one array per row.</summary>
    public static float[][] Unpack(ReadOnlySpan<float> packed, int[] lengths)
    {
        var result = new float[lengths.Length][];
        int at = 0;
        for (int i = 0; i < lengths.Length; i++) { result[i] = packed.Slice(at, lengths[i]).ToArray(); at += lengths[i]; }
        return result;
    }

    /// <summary>Concatenates the given rows of a ragged array into one vector (the packed order of <see cref="Pack"/>).</summary>
    public static float[] Concat(float[][] perRow, IReadOnlyList<int> rows)
    {
        var result = new float[rows.Sum(r => perRow[r].Length)];
        int at = 0;
        foreach (var r in rows) { perRow[r].CopyTo(result, at); at += perRow[r].Length; }
        return result;
    }
}

/// <summary>How rollouts are sampled and scored.</summary>
public sealed record RolloutOptions
{
    public SamplingOptions Sampling { get; init; } = new();
    public int MaxPromptLength { get; init; } = 512;
    public KlEstimator Estimator { get; init; } = KlEstimator.K1;
    public float MissingEosPenalty { get; init; }
    public float RewardClip { get; init; }
    public int GenerationBatchSize { get; init; } = 64;
    public int ForwardBatchSize { get; init; } = 8;

    public static RolloutOptions From(RlOptions o) => new()
    {
        Sampling = new SamplingOptions { MaxNewTokens = o.MaxNewTokens, Temperature = o.Temperature, TopK = o.TopK, TopP = o.TopP, RepetitionPenalty = o.RepetitionPenalty },
        MaxPromptLength = o.MaxPromptLength,
        Estimator = o.Estimator,
        MissingEosPenalty = o.MissingEosPenalty,
        RewardClip = o.RewardClip,
        GenerationBatchSize = o.GenerationBatchSize,
        ForwardBatchSize = o.BatchSize,
    };
}

/// <summary>Samples and scores a rollout batch. See <see cref="Collect"/> for the steps.</summary>
public sealed class RolloutCollector(RlModels models, RewardFunction reward, RolloutOptions options)
{
    /// <summary>
    /// 1. Render each prompt with the chat template and tokenize it (keeping its last MaxPromptLength tokens); repeat it
    ///    for each of its <paramref name="completionsPerPrompt"/> completions.
    /// 2. Sample completions from the policy with the KV-cached generator (stream <paramref name="firstRow"/> + i of
    ///    <paramref name="seed"/> for row i: a data-parallel rank passes the global index of its first row).
    /// 3. Score them: weighted reward sources, minus the missing-EOS penalty, clipped.
    /// 4. Forward the policy (π_old log-probabilities and entropies at the sampling temperature, as TRL recomputes them),
    ///    the reference (π_ref log-probabilities) and the value model (values), in micro-batches without gradients.
    /// 5. Per-token KL_t by the estimator (the full KL from both models' logits).
    /// </summary>
    public RolloutBatch Collect(IReadOnlyList<PromptExample> prompts, int completionsPerPrompt, int seed, int firstRow = 0)
    {
        var tokenizer = models.Tokenizer ?? throw new InvalidOperationException("Text prompts need the policy's tokenizer.");
        // 1. prompts
        var rowsPrompts = new List<PromptExample>();
        var promptTexts = new List<string>();
        var promptIds = new List<int[]>();
        foreach (var p in prompts)
        {
            var (text, ids) = EncodePrompt(p, tokenizer, models.Template, options.MaxPromptLength);
            for (int k = 0; k < completionsPerPrompt; k++) { rowsPrompts.Add(p); promptTexts.Add(text); promptIds.Add(ids); }
        }
        return CollectTokens(rowsPrompts.ToArray(), promptTexts.ToArray(), promptIds.ToArray(), seed, firstRow);
    }

    /// <summary>Steps 2–5 of <see cref="Collect"/> on rows already tokenized (one per completion; benchmarks pass token ids
    /// with empty texts). Reward sources get the ids too (<see cref="RewardInputs.PromptIds"/>).</summary>
    public RolloutBatch CollectTokens(PromptExample[] rowsPrompts, string[] promptTexts, int[][] promptIds, int seed, int firstRow = 0)
    {
        var clock = Stopwatch.StartNew();
        // 2. generation
        var completions = Generator.GenerateInBatches(models.Policy, promptIds, options.Sampling with { Seed = seed }, models.Tokenizer, options.GenerationBatchSize, firstRow);
        var batch = new RolloutBatch
        {
            Prompts = rowsPrompts,
            PromptTexts = promptTexts,
            PromptIds = promptIds,
            CompletionIds = completions.Select(c => c.Ids).ToArray(),
            Completions = completions.Select(c => c.Text ?? "").ToArray(),
            EndsWithEos = completions.Select(c => c.FinishReason == "eos").ToArray(),
            SamplingLogProbs = completions.Select(c => c.LogProbs).ToArray(),
            GenerationSeconds = clock.Elapsed.TotalSeconds,
        };
        MemoryTrace.Mark("generated");
        BufferPool.EndPhase(); // the decoding shapes are not the scoring passes'
        clock.Restart();

        // 3. scores
        var inputs = new RewardInputs(batch.Prompts.Select(p => p.Prompt).ToArray(), batch.PromptTexts, batch.Completions)
        {
            PromptIds = batch.PromptIds,
            CompletionIds = batch.CompletionIds,
            ExtraFields = batch.Prompts.Select(p => p.ExtraFields).ToArray(),
        };
        var (scores, parts) = reward.Score(inputs);
        for (int i = 0; i < scores.Length; i++)
        {
            if (!batch.EndsWithEos[i]) scores[i] -= options.MissingEosPenalty;
            if (options.RewardClip > 0) scores[i] = Math.Clamp(scores[i], -options.RewardClip, options.RewardClip);
        }
        batch.Scores = scores;
        batch.ScoreParts = parts;
        batch.RewardSeconds = clock.Elapsed.TotalSeconds;
        MemoryTrace.Mark("rewards scored");

        // 4–5. log-probabilities, values and KL
        Forward(batch);
        batch.ScoringSeconds = clock.Elapsed.TotalSeconds;
        return batch;
    }

    /// <summary>A prompt as the policy sees it: rendered with the chat template, tokenized (a doubled BOS dropped), its last
    /// <paramref name="maxPromptLength"/> tokens kept.</summary>
    public static (string Text, int[] Ids) EncodePrompt(PromptExample p, ITokenizer tokenizer, ChatTemplate template, int maxPromptLength)
    {
        string text = TokenSequences.Rendered(p.Source, p.PromptField, () => template.RenderPrompt(p.Prompt));
        var ids = TokenSequences.DropDoubledBos(tokenizer.Encode(text, addSpecialTokens: true), tokenizer);
        if (ids.Length == 0) throw new BadRecordException(p.Source, p.PromptField, "the prompt is empty after tokenization.");
        if (ids.Length > maxPromptLength) ids = ids[^maxPromptLength..];
        return (text, ids);
    }

    private void Forward(RolloutBatch batch)
    {
        int n = batch.Count;
        batch.LogProbs = new float[n][];
        batch.RefLogProbs = new float[n][];
        batch.Entropies = new float[n][];
        batch.Kl = new float[n][];
        if (models.Value != null) batch.Values = new float[n][];
        float temperature = options.Sampling.Temperature;
        using var noGrad = Autograd.NoGrad();
        for (int start = 0; start < n; start += options.ForwardBatchSize)
        {
            var rows = Enumerable.Range(start, Math.Min(options.ForwardBatchSize, n - start)).ToArray();
            using var scope = TensorScope.Begin();
            var packed = SequenceForward.Pack(batch, rows);
            // The full KL needs both distributions; the sampled estimators only the log-probabilities (LM head in row chunks).
            bool full = options.Estimator == KlEstimator.Full;
            long t0 = Stopwatch.GetTimestamp();
            var policyLogits = full ? SequenceForward.Logits(models.Policy, packed, temperature) : null;
            var (logp, entropy) = full ? Ops.TokenLogProbs(policyLogits!, packed.Targets) : SequenceForward.TokenLogProbs(models.Policy, packed, temperature);
            long t1 = Stopwatch.GetTimestamp();
            var refLogits = full ? models.ReferenceLogits(packed, temperature) : null;
            var (refLogp, _) = full ? Ops.TokenLogProbs(refLogits!, packed.Targets) : models.OnReference(m => SequenceForward.TokenLogProbs(m, packed, temperature));
            long t2 = Stopwatch.GetTimestamp();
            batch.PolicyScoringSeconds += Stopwatch.GetElapsedTime(t0, t1).TotalSeconds;
            batch.ReferenceSeconds += Stopwatch.GetElapsedTime(t1, t2).TotalSeconds;
            var kl = new float[logp.Length];
            var lp = logp.Span; var rp = refLogp.Span;
            if (full)
            {
                int v = policyLogits!.Dim(-1);
                var pl = policyLogits.Span; var ql = refLogits!.Span;
                for (int t = 0; t < kl.Length; t++) kl[t] = KlEstimators.Full(pl.Slice(t * v, v), ql.Slice(t * v, v));
            }
            else for (int t = 0; t < kl.Length; t++) kl[t] = KlEstimators.Sampled(options.Estimator, lp[t], rp[t]);
            Scatter(batch.LogProbs, rows, SequenceForward.Unpack(lp, packed.CompletionLengths));
            Scatter(batch.RefLogProbs, rows, SequenceForward.Unpack(rp, packed.CompletionLengths));
            Scatter(batch.Entropies, rows, SequenceForward.Unpack(entropy.Span, packed.CompletionLengths));
            Scatter(batch.Kl, rows, SequenceForward.Unpack(kl, packed.CompletionLengths));
            if (models.Value != null)
            {
                long t3 = Stopwatch.GetTimestamp();
                Scatter(batch.Values!, rows, SequenceForward.Unpack(SequenceForward.Values(models.Value, packed).Span, packed.CompletionLengths));
                batch.ValueSeconds += Stopwatch.GetElapsedTime(t3).TotalSeconds;
            }
        }
    }

    private static void Scatter(float[][] target, int[] rows, float[][] values)
    {
        for (int i = 0; i < rows.Length; i++) target[rows[i]] = values[i];
    }
}
