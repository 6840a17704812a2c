namespace AlignSharp.Training.Evaluation;

/// <summary>An estimate with its 95% confidence interval [Low, High].</summary>
public readonly record struct Estimate(double Value, double Low, double High);

/// <summary>
/// The statistics of an evaluation, as pure functions (one place for <c>alignsharp eval</c> and the demo):
/// means with the normal-approximation interval, win rates (ties count half) with the Wilson score interval,
/// and distinct-2.
/// </summary>
public static class EvalStatistics
{
    /// <summary>The two-sided 95% quantile of the standard normal distribution, as usually rounded.</summary>
    public const double Z95 = 1.96;

    /// <summary>Half-width of the normal 95% interval of the mean: z · s / √n, s the sample standard deviation (n − 1); 0 below two values.</summary>
    public static double MeanHalfWidth95(IReadOnlyList<double> x)
    {
        if (x.Count < 2) return 0;
        double mean = x.Average();
        double var = x.Sum(v => (v - mean) * (v - mean)) / (x.Count - 1);
        return Z95 * Math.Sqrt(var / x.Count);
    }

    /// <summary>The mean with its normal-approximation 95% interval (mean ± z·s/√n); NaN for no values.</summary>
    public static Estimate Mean(IReadOnlyList<double> x)
    {
        if (x.Count == 0) return new Estimate(double.NaN, double.NaN, double.NaN);
        double mean = x.Average(), h = MeanHalfWidth95(x);
        return new Estimate(mean, mean - h, mean + h);
    }

    /// <summary>
    /// The outcome of a comparison from two scores: 1 when <paramref name="a"/> beats <paramref name="b"/> by more than
    /// <paramref name="tolerance"/>, 0 when it loses by more, ½ for a tie.
    /// </summary>
    public static double Outcome(double a, double b, double tolerance = 0)
        => a > b + tolerance ? 1 : b > a + tolerance ? 0 : 0.5;

    /// <summary>
    /// The win rate p̂ = (wins + ties/2) / n of outcomes in [0, 1] (1 win, ½ tie, 0 loss), with the Wilson score interval
    /// (center (p̂ + z²/2n) / (1 + z²/n), half-width z/(1 + z²/n) · √(p̂(1 − p̂)/n + z²/4n²)) at n = the number of
    /// comparisons. With ties it is conservative: a tie has variance 0, less than the p̂(1 − p̂) the formula assumes.
    /// </summary>
    public static Estimate WinRate(IReadOnlyList<double> outcomes)
    {
        int n = outcomes.Count;
        if (n == 0) return new Estimate(double.NaN, double.NaN, double.NaN);
        foreach (var o in outcomes)
            if (!(o >= 0 && o <= 1)) throw new ArgumentException($"An outcome must be in [0, 1], got {o}.");
        double p = outcomes.Average(), z2 = Z95 * Z95;
        double denominator = 1 + z2 / n;
        double center = (p + z2 / (2 * n)) / denominator;
        double half = Z95 / denominator * Math.Sqrt(p * (1 - p) / n + z2 / (4.0 * n * n));
        return new Estimate(p, Math.Max(0, center - half), Math.Min(1, center + half));
    }

    /// <summary>Distinct word bigrams over all bigrams of all texts (Li et al. 2016's distinct-2; words split at white space);
    /// NaN when there are none (0/0: no text has two words), which eval.json writes as null.</summary>
    public static double Distinct2(IEnumerable<string> texts)
    {
        var seen = new HashSet<(string, string)>();
        long total = 0;
        foreach (var t in texts)
        {
            var w = t.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);
            for (int i = 0; i + 1 < w.Length; i++) { seen.Add((w[i], w[i + 1])); total++; }
        }
        return total == 0 ? double.NaN : seen.Count / (double)total;
    }
}
