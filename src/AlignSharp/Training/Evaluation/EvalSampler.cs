using AlignSharp.Engine;
using AlignSharp.Models;
using AlignSharp.Text;
using AlignSharp.Training.Rl;

namespace AlignSharp.Training.Evaluation;

/// <summary>
/// Per completion: Σ_t of the sampled KL estimate log π(y_t) − log π_b(y_t) (k1 at the sampled token), Σ_t of the exact
/// KL(π(·|ctx_t) ‖ π_b(·|ctx_t)) between the two next-token distributions, and the number of tokens t.
/// </summary>
public sealed record SequenceKl(double[] Sampled, double[] Exact, int[] Tokens);

/// <summary>
/// Sampling for evaluation: every model answers the same prompt slots with the same per-slot random streams (slot i
/// draws from stream i of the seed, whatever the batching), so two policies are compared on common random numbers.
/// Used by <c>alignsharp eval</c> and by the demo's evaluation.
/// </summary>
public sealed class EvalSampler
{
    private readonly ITokenizer _tokenizer;
    private readonly SamplingOptions _sampling;
    private readonly int _batchSize;

    /// <param name="promptIds">The token ids of each slot's prompt (a prompt repeated for each of its samples).</param>
    public EvalSampler(ITokenizer tokenizer, IReadOnlyList<int[]> promptIds, SamplingOptions sampling, int batchSize = 32)
    {
        if (!(sampling.Temperature > 0)) throw new UserInputException("--temperature must be > 0: evaluation samples, and the KL is measured between the sampling distributions.");
        if (sampling.TopK != 0 || sampling.TopP != 1) throw new ArgumentException("Evaluation samples from the full tempered distribution (the KL is measured on it): top-k and top-p must be off.");
        _tokenizer = tokenizer; PromptIds = promptIds; _sampling = sampling; _batchSize = batchSize;
    }

    public IReadOnlyList<int[]> PromptIds { get; }
    public float Temperature => _sampling.Temperature;

    /// <summary>One completion per slot from <paramref name="model"/>; <paramref name="seedOffset"/> ≠ 0 draws other streams (best-of-N candidates).</summary>
    public List<Completion> Sample(TransformerModel model, int seedOffset = 0)
        => Generator.GenerateInBatches(model, PromptIds, _sampling with { Seed = _sampling.Seed + seedOffset }, _tokenizer, _batchSize);

    /// <summary>
    /// KL(π ‖ π_b) of each slot's completion (sampled from π), between the tempered distributions (logits / T) as the RL
    /// trainers measure it: both models read prompt + completion in one forward pass each.
    /// </summary>
    public SequenceKl Kl(TransformerModel policy, TransformerModel baseline, IReadOnlyList<Completion> completions)
    {
        if (completions.Count != PromptIds.Count) throw new ArgumentException("One completion per slot.");
        if (policy.Config.VocabSize != baseline.Config.VocabSize)
            throw new UserInputException($"The policy ({policy.Config.VocabSize} tokens) and the baseline ({baseline.Config.VocabSize} tokens) have different vocabularies; the KL between them needs one.");
        int n = completions.Count;
        var sampled = new double[n];
        var exact = new double[n];
        var tokens = new int[n];
        var completionIds = completions.Select(c => c.Ids).ToArray();
        using var noGrad = Autograd.NoGrad();
        for (int start = 0; start < n; start += _batchSize)
        {
            var rows = Enumerable.Range(start, Math.Min(_batchSize, n - start)).Where(r => completionIds[r].Length > 0).ToArray();
            if (rows.Length == 0) continue;
            using var scope = TensorScope.Begin();
            var packed = SequenceForward.Pack(PromptIds, completionIds, rows);
            var p = SequenceForward.Logits(policy, packed, Temperature);
            var q = SequenceForward.Logits(baseline, packed, Temperature);
            var lp = Ops.TokenLogProbs(p, packed.Targets).LogProbs.Span;
            var lq = Ops.TokenLogProbs(q, packed.Targets).LogProbs.Span;
            int v = p.Dim(-1);
            var ps = p.Span; var qs = q.Span;
            int at = 0;
            for (int i = 0; i < rows.Length; i++)
            {
                int r = rows[i];
                for (int j = 0; j < packed.CompletionLengths[i]; j++, at++)
                {
                    sampled[r] += lp[at] - (double)lq[at];
                    exact[r] += KlEstimators.Full(ps.Slice(at * v, v), qs.Slice(at * v, v));
                }
                tokens[r] = packed.CompletionLengths[i];
            }
        }
        return new SequenceKl(sampled, exact, tokens);
    }
}
