using AlignSharp.Distributed;

namespace AlignSharp.Training.Rl;

/// <summary>
/// Advantage estimators over ragged sequences (one array per completion, one entry per completion token).
/// </summary>
public static class Advantages
{
    /// <summary>
    /// Generalised advantage estimation (Schulman et al. 2016, eq. 16), per sequence, with V = 0 after the last token:
    /// δ_t = r_t + γ·V_{t+1} − V_t;  A_t = δ_t + γλ·A_{t+1};  returns R_t = A_t + V_t (the value model's targets).
    /// </summary>
    public static (float[] Advantages, float[] Returns) Gae(ReadOnlySpan<float> rewards, ReadOnlySpan<float> values, float gamma, float lambda)
    {
        if (rewards.Length != values.Length) throw new ArgumentException($"{rewards.Length} rewards for {values.Length} values.");
        int n = rewards.Length;
        var adv = new float[n];
        var ret = new float[n];
        double next = 0, nextValue = 0;
        for (int t = n - 1; t >= 0; t--)
        {
            double delta = rewards[t] + gamma * nextValue - values[t];
            next = delta + gamma * lambda * next;
            adv[t] = (float)next;
            ret[t] = (float)(next + values[t]);
            nextValue = values[t];
        }
        return (adv, ret);
    }

    /// <summary>
    /// Whitening over every token of every sequence, in place: (x − mean) / √(var + 1e-8), with the unbiased variance
    /// (as TRL's masked_whiten). Without <paramref name="shiftMean"/> the mean is added back (used for rewards).
    /// Fewer than two values are left unchanged. Data-parallel: with <paramref name="world"/> the mean and variance are
    /// those of every rank's sequences together (two all-reduces), so each rank whitens its share as one process would.
    /// </summary>
    public static void Whiten(IReadOnlyList<float[]> sequences, bool shiftMean = true, ICommunicator? world = null)
    {
        world ??= SingleProcess.Instance;
        double n = 0, sum = 0;
        foreach (var s in sequences) { n += s.Length; foreach (var x in s) sum += x; }
        if (world.Size > 1) { var total = world.Sum(n, sum); n = total[0]; sum = total[1]; }
        if (n < 2) return;
        double mean = sum / n, sq = 0;
        foreach (var s in sequences) foreach (var x in s) sq += (x - mean) * (x - mean);
        if (world.Size > 1) sq = world.Sum(sq)[0];
        double inv = 1 / Math.Sqrt(sq / (n - 1) + 1e-8);
        foreach (var s in sequences)
            for (int i = 0; i < s.Length; i++)
                s[i] = (float)((s[i] - mean) * inv + (shiftMean ? 0 : mean));
    }

    /// <summary>
    /// GRPO's group-relative advantage (Shao et al. 2024, DeepSeekMath §4.1.2): scores in consecutive groups of
    /// <paramref name="groupSize"/>, A_i = (r_i − mean_group) / (std_group + ε), std unbiased as in TRL.
    /// </summary>
    public static float[] GroupRelative(ReadOnlySpan<float> scores, int groupSize, float epsilon = 1e-4f)
        => GroupRelative(scores, groupSize, RewardScaling.Group, null, epsilon);

    /// <summary>
    /// <see cref="GroupRelative(ReadOnlySpan{float}, int, float)"/> with TRL's scale_rewards: r_i − mean_group divided by
    /// (the group's std + ε) for <see cref="RewardScaling.Group"/>, by (the std of every score of the batch + ε) for
    /// <see cref="RewardScaling.Batch"/> (over every rank's scores with <paramref name="world"/>), or by nothing for
    /// <see cref="RewardScaling.None"/> (Dr. GRPO, Liu et al. 2025). Stds unbiased, as torch.std.
    /// </summary>
    public static float[] GroupRelative(ReadOnlySpan<float> scores, int groupSize, RewardScaling scaling, ICommunicator? world, float epsilon = 1e-4f)
    {
        var (means, stds) = GroupStats(scores, groupSize);
        double batchStd = scaling == RewardScaling.Batch ? Std(scores, world ?? SingleProcess.Instance) : 0;
        var adv = new float[scores.Length];
        for (int i = 0; i < scores.Length; i++)
        {
            double centred = scores[i] - means[i / groupSize];
            adv[i] = (float)(scaling switch
            {
                RewardScaling.Group => centred / (stds[i / groupSize] + epsilon),
                RewardScaling.Batch => centred / (batchStd + epsilon),
                _ => centred,
            });
        }
        return adv;
    }

    /// <summary>The unbiased std of every rank's values together (0 for fewer than two).</summary>
    private static double Std(ReadOnlySpan<float> x, ICommunicator world)
    {
        double sum = 0;
        foreach (var v in x) sum += v;
        var t = world.Sum(x.Length, sum);
        if (t[0] < 2) return 0;
        double mean = t[1] / t[0], sq = 0;
        foreach (var v in x) sq += (v - mean) * (v - mean);
        return Math.Sqrt(world.Sum(sq)[0] / (t[0] - 1));
    }

    /// <summary>Mean and unbiased standard deviation (0 for a group of one) of each consecutive group of <paramref name="groupSize"/> scores.</summary>
    public static (double[] Means, double[] Stds) GroupStats(ReadOnlySpan<float> scores, int groupSize)
    {
        CheckGroups(scores.Length, groupSize);
        int groups = scores.Length / groupSize;
        var means = new double[groups];
        var stds = new double[groups];
        for (int g = 0; g < groups; g++)
        {
            var group = scores.Slice(g * groupSize, groupSize);
            double mean = 0;
            foreach (var r in group) mean += r;
            mean /= groupSize;
            double sq = 0;
            foreach (var r in group) sq += (r - mean) * (r - mean);
            means[g] = mean;
            stds[g] = groupSize > 1 ? Math.Sqrt(sq / (groupSize - 1)) : 0;
        }
        return (means, stds);
    }

    /// <summary>
    /// RLOO's leave-one-out baseline (Ahmadian et al. 2024, eq. 6): A_i = r_i − (1/(k−1))·Σ_{j≠i} r_j, over consecutive
    /// groups of k completions of the same prompt.
    /// </summary>
    public static float[] LeaveOneOut(ReadOnlySpan<float> rewards, int k)
    {
        CheckGroups(rewards.Length, k);
        if (k < 2) throw new ArgumentException("RLOO needs at least 2 completions per prompt.");
        var adv = new float[rewards.Length];
        for (int g = 0; g < rewards.Length; g += k)
        {
            double sum = 0;
            for (int i = 0; i < k; i++) sum += rewards[g + i];
            for (int i = 0; i < k; i++) adv[g + i] = (float)(rewards[g + i] - (sum - rewards[g + i]) / (k - 1));
        }
        return adv;
    }

    private static void CheckGroups(int count, int groupSize)
    {
        if (groupSize < 1 || count % groupSize != 0) throw new ArgumentException($"{count} scores do not split into groups of {groupSize}.");
    }
}

/// <summary>What GRPO divides its centred rewards by (TRL's scale_rewards).</summary>
public enum RewardScaling { Group, Batch, None }
