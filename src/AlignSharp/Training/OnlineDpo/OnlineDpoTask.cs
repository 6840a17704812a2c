using AlignSharp.Engine;
using AlignSharp.Models;
using AlignSharp.Models.Lora;
using AlignSharp.Text;
using AlignSharp.Training.Data;
using AlignSharp.Training.Dpo;
using AlignSharp.Training.Evaluation;
using AlignSharp.Training.Rl;
using AlignSharp.Training.Runs;

namespace AlignSharp.Training.OnlineDpo;

/// <summary>A prompt as online DPO samples from it: the record, the text the policy sees (after the chat template) and its tokens.</summary>
public sealed record OnlinePrompt(PromptExample Example, string Text, int[] Ids);

/// <summary>A prompt's two sampled completions after judging: which one was chosen, and the judge's rewards when it gave rewards.</summary>
public sealed record JudgedPair(Completion Chosen, Completion Rejected, double? ChosenScore, double? RejectedScore);

/// <summary>
/// Online DPO (Guo et al. 2024, "Direct Language Model Alignment from Online AI Feedback") as the shared
/// <see cref="TrainingLoop"/> sees it: a micro-batch is B prompts (weight B: one pair each). Its forward pass
/// 1. samples two completions per prompt from the current policy (no gradient, no LoRA dropout), seeded by the loop's
///    per-micro-batch random stream, so a resumed run samples exactly what the uninterrupted run did;
/// 2. asks the judge which is better: higher reward (after the missing-EOS penalty; a tie goes to the first sampled),
///    or a pairwise preference (0.5 goes to the first);
/// 3. scores the pairs with the DPO objective (<see cref="DpoTask.ScoreRows"/>: any --loss-type, against the frozen
///    reference) and adds TRL's online metrics.
/// </summary>
public sealed class OnlineDpoTask : ISupervisedTask
{
    /// <summary>The metrics online DPO adds to DPO's (see docs/metrics.md); the objective/scores* and rlhf_reward need rewards, the KL ones a reference.</summary>
    public static readonly string[] MetricNames =
        ["objective/kl", "objective/entropy", "objective/non_score_reward", "objective/rlhf_reward", "objective/scores", "objective/scores_margin", "val/contain_eos_token", "beta"];

    private readonly OnlineDpoOptions _options;
    private readonly TransformerModel _policy;
    private readonly ITokenizer _tokenizer;
    private readonly IEvalJudge _judge;
    private readonly IReadOnlyList<OnlinePrompt[]> _batches;
    private readonly DpoTask _dpo;
    private readonly int _padId;
    private readonly Action<string>? _warn;
    private bool _warnedPenalty;

    /// <param name="batches">The micro-batches: B prompts each.</param>
    public OnlineDpoTask(OnlineDpoOptions options, TransformerModel policy, ITokenizer tokenizer, ReferenceLogProbs? reference, IEvalJudge judge,
        IReadOnlyList<OnlinePrompt[]> batches, LoraAdapter? adapter = null, Action<string>? warn = null)
    {
        _options = options;
        _policy = policy;
        _tokenizer = tokenizer;
        _judge = judge;
        _batches = batches;
        _padId = TokenSequences.PadId(tokenizer);
        _warn = warn;
        _dpo = new DpoTask(options, policy, reference, [], [], adapter) { IpoOnSums = true };
    }

    public int MicroBatches => _batches.Count;

    public double Weight(int index) => _batches[index].Length;

    public ITrainable Trainable => _dpo.Trainable;

    /// <summary>Online DPO has no held-out preference data: its evaluation is <c>alignsharp eval</c> on the final model.</summary>
    public Dictionary<string, double>? Evaluate() => null;

    public MicroBatchResult Forward(int index, Random rng)
    {
        var prompts = _batches[index];
        int seed = rng.Next();
        var pairs = Judge(prompts, Sample(prompts, seed));
        if (_policy.Adapter is { } adapter) adapter.DropoutRng = rng;
        return Score(prompts, pairs);
    }

    /// <summary>Step 1: 2B completions, rows 0..B−1 the first of each prompt, B..2B−1 the second (stream i of <paramref name="seed"/> for row i).</summary>
    public List<Completion> Sample(IReadOnlyList<OnlinePrompt> prompts, int seed)
    {
        if (_policy.Adapter is { } adapter) adapter.DropoutRng = null;
        var ids = prompts.Select(p => p.Ids).Concat(prompts.Select(p => p.Ids)).ToArray();
        var sampling = new SamplingOptions { MaxNewTokens = _options.MaxNewTokens, Temperature = _options.Temperature, TopK = _options.TopK, TopP = _options.TopP, Seed = seed };
        using var noGrad = Autograd.NoGrad();
        return Generator.GenerateInBatches(_policy, ids, sampling, _tokenizer, ids.Length);
    }

    /// <summary>Step 2: each prompt's completions (rows i and B + i) judged; the better is chosen.</summary>
    public JudgedPair[] Judge(IReadOnlyList<OnlinePrompt> prompts, IReadOnlyList<Completion> completions)
    {
        int b = prompts.Count;
        var inputs = new RewardInputs(prompts.Select(p => p.Example.Prompt).ToArray(), prompts.Select(p => p.Text).ToArray(),
            completions.Take(b).Select(c => c.Text ?? "").ToArray());
        var verdict = _judge.Judge(inputs, completions.Skip(b).Select(c => c.Text ?? "").ToArray());
        var pairs = new JudgedPair[b];
        for (int i = 0; i < b; i++)
        {
            Completion first = completions[i], second = completions[b + i];
            bool firstWins;
            double? s1 = null, s2 = null;
            if (verdict.PolicyRewards is { } r1 && verdict.BaselineRewards is { } r2)
            {
                if (!double.IsFinite(r1[i]) || !double.IsFinite(r2[i]))
                    throw new UserInputException($"The judge ({_judge.Description}) returned a reward that is not a finite number.");
                s1 = r1[i] - (first.FinishReason == "eos" ? 0 : _options.MissingEosPenalty);
                s2 = r2[i] - (second.FinishReason == "eos" ? 0 : _options.MissingEosPenalty);
                firstWins = s1 >= s2;
            }
            else
            {
                if (_options.MissingEosPenalty > 0 && !_warnedPenalty)
                {
                    _warnedPenalty = true;
                    _warn?.Invoke("the judge answers with preferences, so --missing-eos-penalty (which lowers rewards) has no effect.");
                }
                firstWins = verdict.Preferences![i] <= 0.5;
            }
            pairs[i] = firstWins ? new JudgedPair(first, second, s1, s2) : new JudgedPair(second, first, s2, s1);
        }
        return pairs;
    }

    /// <summary>Step 3: the DPO loss and metrics of the judged pairs, with TRL's online metrics (sums over pairs; the loop averages them).</summary>
    public MicroBatchResult Score(IReadOnlyList<OnlinePrompt> prompts, IReadOnlyList<JudgedPair> pairs)
    {
        var tokenized = prompts.Select((p, i) => new TokenizedPreference(p.Ids, pairs[i].Chosen.Ids, pairs[i].Rejected.Ids, 0f, 1f, p.Example.Source)).ToArray();
        var batch = DpoBatch.FromPairs(PreferenceBatch.Create(tokenized, _padId));
        var (result, policy, reference) = _dpo.ScoreRows(batch);
        var (c, r) = batch.PairRows();
        var sums = policy.Sums.Span;
        var m = result.MetricSums;
        double beta = _options.Beta;
        foreach (var name in MetricNames) m[name] = 0;
        bool scored = pairs.All(p => p.ChosenScore.HasValue);
        for (int i = 0; i < pairs.Count; i++)
        {
            // Per pair the mean over its two completions, so that the loop's average is the mean over all completions, as TRL's.
            double entropy = -(sums[c[i]] + (double)sums[r[i]]) / 2;
            m["objective/entropy"] += entropy;
            double kl = 0;
            if (reference != null)
            {
                kl = (sums[c[i]] - (double)reference[c[i]] + sums[r[i]] - reference[r[i]]) / 2;
                m["objective/kl"] += kl;
                m["objective/non_score_reward"] += -beta * kl;
            }
            if (scored)
            {
                double chosen = pairs[i].ChosenScore!.Value, rejected = pairs[i].RejectedScore!.Value;
                m["objective/scores"] += (chosen + rejected) / 2;
                m["objective/scores_margin"] += chosen - rejected;
                if (reference != null) m["objective/rlhf_reward"] += (chosen + rejected) / 2 - beta * kl;
            }
            m["val/contain_eos_token"] += ((pairs[i].Chosen.FinishReason == "eos" ? 1 : 0) + (pairs[i].Rejected.FinishReason == "eos" ? 1 : 0)) / 2.0;
            m["beta"] += beta;
        }
        if (reference == null) { m.Remove("objective/kl"); m.Remove("objective/non_score_reward"); }
        if (!scored || reference == null) m.Remove("objective/rlhf_reward");
        if (!scored) { m.Remove("objective/scores"); m.Remove("objective/scores_margin"); }
        return result;
    }
}
