namespace AlignSharp.Models;

/// <summary>
/// A mixture of experts' routing decision from its router logits: which experts each token runs on, and the tokens of
/// each expert. Plain loops: a layer routes its tokens once per pass, a few thousand comparisons at the models' sizes.
/// </summary>
internal static class ExpertRouting
{
    /// <summary>For each of <paramref name="rows"/> rows of <paramref name="logits"/> [rows, experts], the ids of its
    /// <paramref name="k"/> largest logits, best first (equal logits: the lower id first) → [rows · k]. A NaN logit is
    /// refused: no order holds with it, and a diverged router would otherwise pick experts silently.</summary>
    public static int[] TopK(ReadOnlySpan<float> logits, int rows, int experts, int k)
    {
        var chosen = new int[rows * k];
        for (int r = 0; r < rows; r++)
        {
            var row = logits.Slice(r * experts, experts);
            var best = chosen.AsSpan(r * k, k);
            int filled = 0;
            for (int e = 0; e < experts; e++)
            {
                float v = row[e];
                if (float.IsNaN(v)) throw new ArithmeticException($"router logit of expert {e} is NaN (token {r}): the model's weights have diverged.");
                // Insertion into the best-first list; a later expert never passes an equal earlier one.
                int at = filled;
                while (at > 0 && row[best[at - 1]] < v) at--;
                if (at >= k) continue;
                for (int j = Math.Min(filled, k - 1); j > at; j--) best[j] = best[j - 1];
                best[at] = e;
                if (filled < k) filled++;
            }
        }
        return chosen;
    }

    /// <summary>The assignments (token t's j-th choice is assignment t·k + j) grouped by expert, in assignment order
    /// within an expert: <c>Order</c> [rows · k], expert e's at [Starts[e], Starts[e + 1]); and <c>Position</c>, where
    /// each assignment went in <c>Order</c> (its inverse).</summary>
    public static (int[] Order, int[] Starts, int[] Position) ByExpert(int[] chosen, int experts)
    {
        var starts = new int[experts + 1];
        foreach (int e in chosen) starts[e + 1]++;
        for (int e = 0; e < experts; e++) starts[e + 1] += starts[e];
        var next = starts[..experts];
        var order = new int[chosen.Length];
        var position = new int[chosen.Length];
        for (int a = 0; a < chosen.Length; a++)
        {
            int at = next[chosen[a]]++;
            order[at] = a;
            position[a] = at;
        }
        return (order, starts, position);
    }
}
