using AlignSharp.Models;
using AlignSharp.Text;
using AlignSharp.Training.Data;
using AlignSharp.Training.Evaluation;
using AlignSharp.Training.Rewards;
using AlignSharp.Training.Rl;

namespace AlignSharp.Demo;

/// <summary>One evaluated response: its prompt, text, gold reward, proxy (reward-model) score and KL from SFT.</summary>
public sealed record EvaluatedResponse(WorldPrompt Prompt, string Text, double Gold, double Proxy, double Kl, bool Grammatical);

/// <summary>The metrics of one policy on the held-out prompts (the keys of results.json).</summary>
public sealed record PolicyMetrics(
    double GoldRewardMean, double GoldRewardCi95, double GoldWinRateVsSft, double ProxyScoreMean, double KlFromSft,
    double Fluency, double Distinct2, IReadOnlyList<EvaluatedResponse> Responses);

/// <summary>
/// Evaluation of policies on held-out prompts, from the experimenter's side (the only place besides the annotators
/// that reads the gold reward). Every policy answers the same list of prompts with the same per-slot random streams,
/// sampled at the experiment's temperature T. Sampling, KL and statistics are <c>alignsharp eval</c>'s
/// (<see cref="EvalSampler"/>, <see cref="EvalStatistics"/>): KL from SFT is the sampled estimate between the sampling
/// distributions (both models' logits divided by T), as the RL trainer measures it.
/// </summary>
public sealed class PolicyEvaluator
{
    private readonly TransformerModel _sft;
    private readonly RewardModelSource _rm;
    private readonly ITokenizer _tokenizer;
    private readonly IReadOnlyList<WorldPrompt> _prompts;
    private readonly int _maxNewTokens, _seed;
    private readonly float _temperature;
    private readonly EvalSampler _sampler;
    private double[]? _sftGold;

    public PolicyEvaluator(TransformerModel sft, RewardModel rm, ITokenizer tokenizer, IReadOnlyList<WorldPrompt> prompts, int maxNewTokens, int seed, float temperature)
    {
        _sft = sft; _rm = new RewardModelSource(rm, normalize: true, batchSize: 32); _tokenizer = tokenizer; _prompts = prompts;
        _maxNewTokens = maxNewTokens; _seed = seed; _temperature = temperature;
        _sampler = Sampler(prompts, seed);
    }

    public IReadOnlyList<WorldPrompt> Prompts => _prompts;

    private EvalSampler Sampler(IReadOnlyList<WorldPrompt> prompts, int seed) => new(_tokenizer,
        prompts.Select(p => _tokenizer.Encode(p.Text, addSpecialTokens: true)).ToArray(),
        new SamplingOptions { MaxNewTokens = _maxNewTokens, Temperature = _temperature, Seed = seed }, batchSize: 64);

    /// <summary>Samples one response per prompt slot from <paramref name="policy"/> and scores it.</summary>
    public PolicyMetrics Evaluate(TransformerModel policy, bool isSft = false)
    {
        var completions = _sampler.Sample(policy);
        var kl = isSft ? new double[completions.Count] : _sampler.Kl(policy, _sft, completions).Sampled;
        return Score(completions.Select(c => c.Text ?? "").ToArray(), kl, isSft);
    }

    /// <summary>
    /// Best-of-N: N samples from the SFT model per slot, the one the reward model scores highest is kept. Its KL from
    /// SFT is the standard analytic value log N − (N − 1)/N (Stiennon et al. 2020).
    /// </summary>
    public PolicyMetrics EvaluateBestOfN(int n)
    {
        var candidates = new List<Completion[]>();
        for (int k = 0; k < n; k++) candidates.Add(_sampler.Sample(_sft, k == 0 ? 0 : 1_000 * k).ToArray());
        var texts = new string[_prompts.Count];
        for (int i = 0; i < _prompts.Count; i++)
        {
            var options = Enumerable.Range(0, n).Select(k => candidates[k][i].Text ?? "").ToArray();
            var scores = ProxyScores(Enumerable.Repeat(_prompts[i], n).ToArray(), options);
            int best = 0;
            for (int k = 1; k < n; k++) if (scores[k] > scores[best]) best = k;
            texts[i] = options[best];
        }
        double kl = Math.Log(n) - (n - 1.0) / n;
        return Score(texts, Enumerable.Repeat(kl, texts.Length).ToArray(), false);
    }

    private PolicyMetrics Score(string[] texts, double[] kl, bool isSft)
    {
        var parsed = texts.Select(World.Parse).ToArray();
        var gold = texts.Select((t, i) => GoldReward.Score(_prompts[i], parsed[i]).Total).ToArray();
        var proxy = ProxyScores(_prompts, texts);
        if (isSft) _sftGold = gold;
        var sftGold = _sftGold ?? throw new InvalidOperationException("Evaluate the SFT model first: win rates are measured against it.");
        var winRate = EvalStatistics.WinRate(gold.Select((g, i) => EvalStatistics.Outcome(g, sftGold[i], 1e-9)).ToArray());
        var responses = texts.Select((t, i) => new EvaluatedResponse(_prompts[i], t, gold[i], proxy[i], kl[i], parsed[i].Grammatical)).ToArray();
        return new PolicyMetrics(gold.Average(), EvalStatistics.MeanHalfWidth95(gold), winRate.Value, proxy.Average(), kl.Average(),
            parsed.Count(p => p.Grammatical) / (double)parsed.Length, Distinct2OrZero(texts), responses);
    }

    /// <summary>Distinct-2, 0 where no completion has two words (a policy collapsed onto one-word answers has no variety to
    /// show; the demo's tables and results.json hold numbers).</summary>
    static double Distinct2OrZero(IReadOnlyList<string> texts) => EvalStatistics.Distinct2(texts) is var d && double.IsNaN(d) ? 0 : d;

    /// <summary>Normalised reward-model scores, (raw − mean)/std with the statistics stored at training time.</summary>
    public double[] ProxyScores(IReadOnlyList<WorldPrompt> prompts, IReadOnlyList<string> texts)
    {
        var chat = prompts.Select(p => ChatContent.FromText(p.Text)).ToArray();
        return _rm.Score(new RewardInputs(chat, prompts.Select(p => p.Text).ToArray(), texts)).Select(s => (double)s).ToArray();
    }

    /// <summary>One completion per slot of <paramref name="prompts"/> from <paramref name="model"/>, slot i from stream i of <paramref name="seed"/>.</summary>
    public IReadOnlyList<Completion> Sample(TransformerModel model, IReadOnlyList<WorldPrompt> prompts, int seed) => Sampler(prompts, seed).Sample(model);
}
