using AlignSharp.Engine;
using AlignSharp.Models;
using AlignSharp.Text;
using AlignSharp.Training.Data;
using AlignSharp.Training.Rewards;

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
/// sampled at the experiment's temperature T. KL from SFT is measured between the
/// sampling distributions (both models' logits divided by T), as the RL trainer measures it.
/// </summary>
public sealed class PolicyEvaluator
{
    private readonly TransformerModel _sft;
    private readonly RewardModel _rm;
    private readonly ITokenizer _tokenizer;
    private readonly IReadOnlyList<WorldPrompt> _prompts;
    private readonly int _maxNewTokens, _seed;
    private readonly float _temperature;
    private double[]? _sftGold;

    public PolicyEvaluator(TransformerModel sft, RewardModel rm, ITokenizer tokenizer, IReadOnlyList<WorldPrompt> prompts, int maxNewTokens, int seed, float temperature)
    {
        _sft = sft; _rm = rm; _tokenizer = tokenizer; _prompts = prompts; _maxNewTokens = maxNewTokens; _seed = seed; _temperature = temperature;
    }

    public IReadOnlyList<WorldPrompt> Prompts => _prompts;

    private SamplingOptions Sampling(int seedOffset = 0) => new() { MaxNewTokens = _maxNewTokens, Temperature = _temperature, Seed = _seed + seedOffset };

    /// <summary>Samples one response per prompt slot from <paramref name="policy"/> and scores it.</summary>
    public PolicyMetrics Evaluate(TransformerModel policy, bool isSft = false)
    {
        var completions = Sample(policy, _prompts, Sampling());
        var sftLogProbs = isSft ? completions.Select(c => c.LogProbs.Sum(x => (double)x)).ToArray() : SequenceLogProbs(_sft, _prompts, completions);
        var kl = completions.Select((c, i) => c.LogProbs.Sum(x => (double)x) - sftLogProbs[i]).ToArray();
        return Score(completions.Select(c => c.Text ?? "").ToArray(), kl, isSft);
    }

    /// <summary>
    /// Best-of-N: N samples from the SFT model per slot, the one the reward model scores highest is kept. Its KL from
    /// SFT is the standard analytic value log N − (N − 1)/N (Stiennon et al. 2020).
    /// </summary>
    public PolicyMetrics EvaluateBestOfN(int n)
    {
        var candidates = new List<Completion[]>();
        for (int k = 0; k < n; k++) candidates.Add(Sample(_sft, _prompts, Sampling(k == 0 ? 0 : 1_000 * k)).ToArray());
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
        double wins = 0;
        for (int i = 0; i < gold.Length; i++) wins += gold[i] > sftGold[i] + 1e-9 ? 1 : Math.Abs(gold[i] - sftGold[i]) <= 1e-9 ? 0.5 : 0;
        var responses = texts.Select((t, i) => new EvaluatedResponse(_prompts[i], t, gold[i], proxy[i], kl[i], parsed[i].Grammatical)).ToArray();
        return new PolicyMetrics(gold.Average(), Ci95(gold), wins / gold.Length, proxy.Average(), kl.Average(),
            parsed.Count(p => p.Grammatical) / (double)parsed.Length, Distinct2(texts), responses);
    }

    /// <summary>Half-width of the normal 95% interval of the mean: 1.96 · s / √n.</summary>
    public static double Ci95(IReadOnlyList<double> x)
    {
        if (x.Count < 2) return 0;
        double mean = x.Average();
        double var = x.Sum(v => (v - mean) * (v - mean)) / (x.Count - 1);
        return 1.96 * Math.Sqrt(var / x.Count);
    }

    /// <summary>Distinct word bigrams over all bigrams of all responses (Li et al. 2016's distinct-2).</summary>
    public static double Distinct2(IEnumerable<string> texts)
    {
        var seen = new HashSet<string>(StringComparer.Ordinal);
        long total = 0;
        foreach (var t in texts)
        {
            var w = t.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            for (int i = 0; i + 1 < w.Length; i++) { seen.Add(w[i] + " " + w[i + 1]); total++; }
        }
        return total == 0 ? 0 : seen.Count / (double)total;
    }

    /// <summary>Normalised reward-model scores, (raw − mean)/std with the statistics stored at training time.</summary>
    public double[] ProxyScores(IReadOnlyList<WorldPrompt> prompts, IReadOnlyList<string> texts)
    {
        var seqs = texts.Select((t, i) => _rm.Encode(ChatContent.FromText(prompts[i].Text), t)).ToList();
        return _rm.ScoreSequences(seqs, 32).Select(s => (double)_rm.Normalize(s)).ToArray();
    }

    public IReadOnlyList<Completion> Sample(TransformerModel model, IReadOnlyList<WorldPrompt> prompts, SamplingOptions options, int batch = 64)
    {
        var result = new List<Completion>(prompts.Count);
        for (int start = 0; start < prompts.Count; start += batch)
        {
            var ids = prompts.Skip(start).Take(batch).Select(p => _tokenizer.Encode(p.Text, addSpecialTokens: true)).ToArray();
            result.AddRange(Generator.Generate(model, ids, options, _tokenizer, firstStream: start));
        }
        return result;
    }

    /// <summary>Σ_t log p_T(y_t | prompt, y_&lt;t) of each sampled completion under <paramref name="model"/>, logits divided by the temperature.</summary>
    public double[] SequenceLogProbs(TransformerModel model, IReadOnlyList<WorldPrompt> prompts, IReadOnlyList<Completion> completions, int batch = 32)
    {
        var result = new double[completions.Count];
        int vocab = model.Config.VocabSize;
        using var noGrad = Autograd.NoGrad();
        for (int start = 0; start < completions.Count; start += batch)
        {
            int b = Math.Min(batch, completions.Count - start);
            var prompt = new int[b][];
            var rows = new int[b][];
            for (int i = 0; i < b; i++)
            {
                prompt[i] = _tokenizer.Encode(prompts[start + i].Text, addSpecialTokens: true);
                rows[i] = prompt[i].Concat(completions[start + i].Ids).ToArray();
            }
            int t = rows.Max(r => r.Length);
            var ids = new int[b * t];
            var mask = new bool[b * t];
            for (int i = 0; i < b; i++)
                for (int j = 0; j < rows[i].Length; j++) { ids[i * t + j] = rows[i][j]; mask[i * t + j] = true; }
            using var scope = TensorScope.Begin();
            var logits = model.Forward(ids, b, t, keyMask: mask).Span;
            for (int i = 0; i < b; i++)
            {
                double sum = 0;
                for (int j = prompt[i].Length; j < rows[i].Length; j++)
                {
                    var row = logits.Slice((i * t + j - 1) * vocab, vocab);
                    double inv = 1.0 / _temperature, max = double.NegativeInfinity;
                    foreach (var v in row) max = Math.Max(max, v * inv);
                    double z = 0;
                    foreach (var v in row) z += Math.Exp(v * inv - max);
                    sum += row[rows[i][j]] * inv - max - Math.Log(z);
                }
                result[start + i] = sum;
            }
        }
        return result;
    }
}
