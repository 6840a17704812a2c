using System.Text.Json;
using AlignSharp.Training.Data;
using AlignSharp.Training.Rewards;
using AlignSharp.Training.Rl;

namespace AlignSharp.Training.Evaluation;

/// <summary>
/// What a judge said about slot-aligned completions: rewards of the policy's (and the baseline's) completions, or, from a
/// pairwise judge, one preference per pair: 0 = the policy's completion is better, 1 = the baseline's, 0.5 = a tie
/// (values in between are accepted as the probability that the baseline's is better).
/// </summary>
public sealed record JudgeVerdict(double[]? PolicyRewards, double[]? BaselineRewards, double[]? Preferences);

/// <summary>A judge of an evaluation (<c>--judge-model</c> or <c>--judge-url</c>).</summary>
public interface IEvalJudge : IDisposable
{
    /// <summary>For eval.json: e.g. "reward_model DIR" or "url URL".</summary>
    string Description { get; }

    /// <summary>Judges the policy's completions (and the baseline's, slot by slot, when given).</summary>
    JudgeVerdict Judge(RewardInputs policy, IReadOnlyList<string>? baselineCompletions);
}

/// <summary>The judge of <c>--judge-model DIR</c> or <c>--judge-url URL</c> (eval and online-dpo).</summary>
public static class Judges
{
    /// <summary>A reward model (scores normalised with its stored mean and std) or an HTTP judge; exactly one must be given.
    /// <paramref name="bf16Matrices"/>: keep the reward model's matrices in bf16 (a frozen model, as --frozen-dtype says).</summary>
    public static IEvalJudge FromFlags(string? judgeModel, string? judgeUrl, int batchSize, bool bf16Matrices = false)
    {
        if ((judgeModel == null) == (judgeUrl == null)) throw new UserInputException("Give exactly one judge: --judge-model RM_DIR or --judge-url URL.");
        if (judgeModel != null && !Directory.Exists(judgeModel)) throw new UserInputException($"--judge-model: directory '{judgeModel}' does not exist.");
        return judgeModel != null
            ? new RewardJudge(new RewardModelSource(RewardModel.Load(judgeModel, bf16Matrices: bf16Matrices), normalize: true, batchSize), $"reward_model {judgeModel}")
            : new HttpJudge(judgeUrl!);
    }
}

/// <summary>A judge that scores every completion with a reward source (a reward model, or the reward endpoint protocol).</summary>
public sealed class RewardJudge(IRewardSource source, string description) : IEvalJudge
{
    public string Description => description;
    internal IRewardSource Source => source;

    public JudgeVerdict Judge(RewardInputs policy, IReadOnlyList<string>? baselineCompletions)
    {
        int n = policy.Count;
        var inputs = baselineCompletions == null ? policy : new RewardInputs(
            [.. policy.Prompts, .. policy.Prompts], [.. policy.PromptTexts, .. policy.PromptTexts], [.. policy.Completions, .. baselineCompletions]);
        var scores = source.Score(inputs).Select(x => (double)x).ToArray();
        return new JudgeVerdict(scores[..n], baselineCompletions == null ? null : scores[n..], null);
    }

    public void Dispose() => (source as IDisposable)?.Dispose();
}

/// <summary>
/// An HTTP judge (<c>--judge-url</c>). Without a baseline it is asked exactly as the reward endpoint is:
/// POST <c>{"prompts": [...], "completions": [...]}</c>, answered by <c>{"rewards": [...]}</c>. With a baseline the
/// lists hold the policy's n completions then the baseline's n, and <c>"pairs": [[i, n + i], ...]</c> says which are
/// compared; the judge answers either <c>{"rewards": [2n numbers]}</c> or <c>{"preferences": [n numbers]}</c>, where
/// preferences[k] is the index within pair k of the better completion: 0 (the first, the policy's), 1 (the second, the
/// baseline's) or 0.5 for a tie.
/// </summary>
public sealed class HttpJudge(string url, HttpRewardOptions? options = null) : IEvalJudge
{
    private readonly JsonEndpoint _endpoint = new(url, "--judge-url", options);

    public string Description => $"url {_endpoint.Url}";

    public JudgeVerdict Judge(RewardInputs policy, IReadOnlyList<string>? baselineCompletions)
    {
        int n = policy.Count;
        if (baselineCompletions == null)
        {
            using var answer = _endpoint.Post(Rl.HttpRewardSource.Request(policy.PromptTexts, policy.Completions));
            return new JudgeVerdict(_endpoint.Numbers(answer.RootElement, "rewards", n, "completions"), null, null);
        }
        var body = JsonSerializer.Serialize(new Dictionary<string, object>
        {
            ["prompts"] = (IReadOnlyList<string>)[.. policy.PromptTexts, .. policy.PromptTexts],
            ["completions"] = (IReadOnlyList<string>)[.. policy.Completions, .. baselineCompletions],
            ["pairs"] = Enumerable.Range(0, n).Select(i => new[] { i, n + i }).ToArray(),
        });
        using (var answer = _endpoint.Post(body))
        {
            var root = answer.RootElement;
            if (root.TryGetProperty("preferences", out _) && root.TryGetProperty("rewards", out _))
                throw _endpoint.Bad("the answer has both \"rewards\" and \"preferences\"; give one, so that it is clear which judges.");
            if (root.TryGetProperty("preferences", out _))
            {
                var preferences = _endpoint.Numbers(root, "preferences", n, "pairs");
                for (int i = 0; i < n; i++)
                    if (!(preferences[i] >= 0 && preferences[i] <= 1))
                        throw _endpoint.Bad($"preferences[{i}] is {preferences[i]}; each must lie in [0, 1]: 0 (the first completion of the pair is better), 1 (the second), 0.5 (a tie), or a share between.");
                return new JudgeVerdict(null, null, preferences);
            }
            if (!root.TryGetProperty("rewards", out _))
                throw _endpoint.Bad("the answer has neither \"rewards\" (one per completion) nor \"preferences\" (one per pair).");
            var rewards = _endpoint.Numbers(root, "rewards", 2 * n, "completions");
            return new JudgeVerdict(rewards[..n], rewards[n..], null);
        }
    }

    public void Dispose() => _endpoint.Dispose();
}
