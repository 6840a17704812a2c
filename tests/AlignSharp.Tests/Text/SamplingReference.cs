using AlignSharp.Text;

namespace AlignSharp.Tests.Text;

/// <summary>
/// The sampling distribution written from its definitions, in double, for the samplers' tests: p = softmax(l/T);
/// greedy: the first largest logit and its log-softmax; plain sampling: the inverse CDF in token order; top-k / top-p:
/// a full sort by p descending then id, the K best, then the shortest prefix whose p (renormalised over those K, as
/// Hugging Face applies top-k and then top-p) reaches P, keep ≥ 1, and the inverse CDF in that order over the kept mass.
/// </summary>
internal static class SamplingReference
{
    /// <summary>The token drawn at uniform <paramref name="u"/> and its log-probability under the distribution drawn from.</summary>
    public static (int Token, double LogProb) Draw(double[] l, SamplingOptions o, double u)
    {
        int v = l.Length;
        double t = o.Temperature == 0 ? 1 : o.Temperature;
        double max = l.Max() / t;
        var p = l.Select(x => Math.Exp(x / t - max)).ToArray();
        double z = p.Sum();
        for (int i = 0; i < v; i++) p[i] /= z;
        if (o.Temperature == 0)
        {
            int best = Array.IndexOf(l, l.Max());
            return (best, Math.Log(p[best]));
        }
        if (o.TopK == 0 && o.TopP >= 1)
        {
            double acc = 0;
            for (int i = 0; i < v; i++)
            {
                acc += p[i];
                if (u < acc) return (i, Math.Log(p[i]));
            }
            return (v - 1, Math.Log(p[v - 1]));
        }
        var order = Enumerable.Range(0, v).OrderByDescending(i => p[i]).ThenBy(i => i).ToArray();
        int keep = o.TopK > 0 ? Math.Min(o.TopK, v) : v;
        if (o.TopP < 1)
        {
            // Hugging Face's warpers in turn: top-k keeps K tokens, the softmax renormalises them, top-p cuts that.
            double topK = order.Take(keep).Sum(i => p[i]), cum = 0;
            int n = 0;
            while (n < keep) { cum += p[order[n]] / topK; n++; if (cum >= o.TopP) break; }
            keep = Math.Max(1, n);
        }
        double kept = order.Take(keep).Sum(i => p[i]), target = u * kept, run = 0;
        for (int i = 0; i < keep; i++)
        {
            run += p[order[i]];
            if (target < run) return (order[i], Math.Log(p[order[i]] / kept));
        }
        return (order[keep - 1], Math.Log(p[order[keep - 1]] / kept));
    }
}
