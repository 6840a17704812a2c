using AlignSharp.Feedback;

namespace AlignSharp.Demo;

/// <summary>A systematic taste an annotator adds to the gold reward.</summary>
public enum AnnotatorBias
{
    None,
    /// <summary>Likes long answers: +0.4 per sentence.</summary>
    Verbose,
    /// <summary>Likes being flattered: +1.5 per polite phrase, repeats included.</summary>
    Flattery,
}

/// <summary>
/// A simulated person. Shown K responses to a prompt, they rank them by a Plackett–Luce draw over their utility
/// u = gold reward + bias, with weights exp(u / <see cref="Temperature"/>): the best is picked with probability
/// ∝ exp(u_i/T), then the best of the rest, and so on. A low temperature is a careful annotator, a high one a noisy
/// one. Identical texts are tied (a person sees the same answer twice). Under Plackett–Luce, i is ranked above j
/// with probability σ((u_i − u_j)/T), whatever the other responses are.
/// </summary>
public sealed record SimulatedAnnotator(string Name, double Temperature, AnnotatorBias Bias = AnnotatorBias.None)
{
    public double Utility(WorldPrompt prompt, string response)
    {
        var parsed = World.Parse(response);
        double u = GoldReward.Score(prompt, parsed).Total;
        if (!parsed.Grammatical) return u;
        return Bias switch
        {
            AnnotatorBias.Verbose => u + 0.4 * parsed.Sentences.Count,
            AnnotatorBias.Flattery => u + 1.5 * parsed.Sentences.Count(s => s.IsPolite),
            _ => u,
        };
    }

    /// <summary>P(i ranked above j) = σ((u_i − u_j)/T).</summary>
    public double PreferenceProbability(double ui, double uj) => 1 / (1 + Math.Exp(-(ui - uj) / Temperature));

    /// <summary>
    /// A ranking of <paramref name="responses"/>, best first, as groups of indices (identical texts share a group).
    /// Sampled with the Gumbel-max form of Plackett–Luce: sort by u/T + Gumbel noise.
    /// </summary>
    public IReadOnlyList<IReadOnlyList<int>> Rank(WorldPrompt prompt, IReadOnlyList<string> responses, Random rng)
    {
        var distinct = responses.Distinct(StringComparer.Ordinal).ToArray();
        var utilities = distinct.Select(r => Utility(prompt, r)).ToArray();
        var order = PlackettLuce.Sample(utilities.Select(u => u / Temperature).ToArray(), rng);
        return order.Select(d => (IReadOnlyList<int>)Enumerable.Range(0, responses.Count).Where(i => responses[i] == distinct[d]).ToArray()).ToArray();
    }

    /// <summary>
    /// The annotators of the demo: six careful-to-noisy people and three with a systematic bias (one likes long
    /// answers, two like flattery), as real rater pools have. The flattery shows up in the reward model as a taste for
    /// polite phrases that holds beyond what the gold reward allows: a policy optimised without the KL penalty can pile
    /// them up.
    /// </summary>
    public static IReadOnlyList<SimulatedAnnotator> DefaultPool { get; } =
    [
        new("alice", 0.3), new("bob", 0.4), new("carol", 0.5), new("dave", 0.8), new("erin", 0.35), new("frank", 0.6),
        new("grace", 0.5, AnnotatorBias.Verbose), new("heidi", 0.5, AnnotatorBias.Flattery), new("ivan", 0.5, AnnotatorBias.Flattery),
    ];
}

/// <summary>Plackett–Luce rankings over log-weights s_i (here u_i/T).</summary>
public static class PlackettLuce
{
    /// <summary>A ranking (indices best first): argsort of s_i + Gumbel(0, 1), which has exactly the Plackett–Luce law.</summary>
    public static int[] Sample(IReadOnlyList<double> logWeights, Random rng)
    {
        var keys = new double[logWeights.Count];
        for (int i = 0; i < keys.Length; i++)
        {
            double u = rng.NextDouble();
            while (u <= 0) u = rng.NextDouble();
            keys[i] = logWeights[i] - Math.Log(-Math.Log(u));
        }
        var order = Enumerable.Range(0, keys.Length).ToArray();
        Array.Sort(order, (a, b) => keys[b].CompareTo(keys[a]) is var c && c != 0 ? c : a.CompareTo(b));
        return order;
    }

    /// <summary>P(ranking) = Π_k exp(s_{r_k}) / Σ_{m ≥ k} exp(s_{r_m}).</summary>
    public static double Probability(IReadOnlyList<double> logWeights, IReadOnlyList<int> ranking)
    {
        double p = 1;
        for (int k = 0; k < ranking.Count; k++)
        {
            double max = ranking.Skip(k).Max(i => logWeights[i]);
            double denom = ranking.Skip(k).Sum(i => Math.Exp(logWeights[i] - max));
            p *= Math.Exp(logWeights[ranking[k]] - max) / denom;
        }
        return p;
    }
}

/// <summary>
/// Runs simulated annotators against an annotation project exactly as people use the web app: each asks the store
/// for its next task (<see cref="AnnotationStore.NextTask"/>), reads the prompt and the completions it was shown,
/// and submits a ranking of completion ids (<see cref="AnnotationStore.Submit"/>). Annotators take turns until no task
/// is left. Each ranking's randomness is a function of (seed, annotator, task), so the result is reproducible.
/// </summary>
public static class SimulatedAnnotation
{
    public static int Run(AnnotationStore store, IReadOnlyList<SimulatedAnnotator> annotators, int seed, Action<int, int>? progress = null)
    {
        var byText = World.AllPrompts.ToDictionary(p => p.Text);
        var ids = annotators.Select(a => store.AddAnnotator(a.Name).Annotator.Id).ToArray();
        var active = Enumerable.Range(0, annotators.Count).ToList();
        int submitted = 0, total = store.Project.Prompts * store.Project.Overlap;
        while (active.Count > 0)
        {
            foreach (int a in active.ToArray())
            {
                var task = store.NextTask(ids[a]);
                if (task == null) { active.Remove(a); continue; }
                if (!byText.TryGetValue(task.Prompt, out var prompt))
                    throw new InvalidOperationException($"The simulated annotators only understand the demo world's prompts, not '{task.Prompt}'.");
                // The completions as shown (display order); the ranking refers to their ids.
                var shownIds = task.Completions.Select(c => c.Id).ToArray();
                var texts = task.Completions.Select(c => c.Text).ToArray();
                var rng = new Random(Seeds.Mix(seed, a, (int)task.TaskId));
                // Rank in id order so the draw does not depend on the (randomised) display order.
                var byId = new string[texts.Length];
                for (int i = 0; i < texts.Length; i++) byId[shownIds[i]] = texts[i];
                var groups = annotators[a].Rank(prompt, byId, rng);
                store.Submit(ids[a], new RankingSubmission(task.TaskId, groups, []));
                submitted++;
                progress?.Invoke(submitted, total);
            }
        }
        return submitted;
    }
}

/// <summary>Stable seed mixing (HashCode is randomised per process).</summary>
public static class Seeds
{
    public static int Mix(int seed, int a, int b = 0)
    {
        ulong x = (ulong)(uint)seed * 0x9E3779B97F4A7C15UL ^ (ulong)(uint)a * 0xC2B2AE3D27D4EB4FUL ^ (ulong)(uint)b * 0x165667B19E3779F9UL;
        x ^= x >> 31; x *= 0xBF58476D1CE4E5B9UL; x ^= x >> 29; x *= 0x94D049BB133111EBUL; x ^= x >> 32;
        return (int)(x & 0x7FFFFFFF);
    }
}
