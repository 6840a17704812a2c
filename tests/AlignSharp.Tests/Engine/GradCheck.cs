using AlignSharp.Engine;

namespace AlignSharp.Tests.Engine;

/// <summary>
/// Finite-difference gradient checks. The op runs in float32, but the scalar it is checked through is
/// Σ y·R with a fixed random R, summed in float64, so the central difference is not drowned in the
/// rounding of a float32 sum.
/// </summary>
public static class GradCheck
{
    public sealed record Options(double Step = 1e-3, double AbsTol = 2e-3, double RelTol = 2e-2);

    public static Tensor Random(Random rng, params int[] shape)
    {
        var t = Tensor.Zeros(shape);
        var s = t.Span;
        for (int i = 0; i < s.Length; i++) s[i] = (float)(rng.NextDouble() * 2 - 1);
        t.RequiresGrad = true;
        return t;
    }

    public static Tensor Positive(Random rng, params int[] shape)
    {
        var t = Random(rng, shape);
        var s = t.Span;
        for (int i = 0; i < s.Length; i++) s[i] = 0.5f + MathF.Abs(s[i]) * 2;
        return t;
    }

    /// <summary>Checks d(Σ f(inputs)·R)/d(input) for every input that requires grad.</summary>
    public static void Check(Func<Tensor[], Tensor> f, Tensor[] inputs, Options? options = null, int seed = 7)
    {
        var o = options ?? new Options();
        foreach (var t in inputs) t.ClearGrad();

        var y0 = f(inputs);
        var rng = new Random(seed);
        var r = new float[y0.Length];
        for (int i = 0; i < r.Length; i++) r[i] = (float)(rng.NextDouble() * 2 - 1);
        var loss = Ops.Sum(Ops.Mul(y0, Tensor.FromArray(r, y0.ShapeArrayCopy())));
        loss.Backward();

        double Eval()
        {
            using var _ = Autograd.NoGrad();
            var y = f(inputs).Span;
            double s = 0;
            for (int i = 0; i < y.Length; i++) s += (double)y[i] * r[i];
            return s;
        }

        for (int k = 0; k < inputs.Length; k++)
        {
            var x = inputs[k];
            if (!x.RequiresGrad) continue;
            Assert.True(x.Grad != null, $"input {k}: no gradient reached it");
            var analytic = x.Grad!.ToArray();
            var xs = x.Span;
            for (int i = 0; i < xs.Length; i++)
            {
                float orig = xs[i];
                xs[i] = (float)(orig + o.Step); double plus = Eval();
                xs[i] = (float)(orig - o.Step); double minus = Eval();
                xs[i] = orig;
                double numeric = (plus - minus) / (2 * o.Step);
                double err = Math.Abs(numeric - analytic[i]);
                double tol = o.AbsTol + o.RelTol * Math.Max(Math.Abs(numeric), Math.Abs(analytic[i]));
                Assert.True(err <= tol, $"input {k} element {i}: analytic {analytic[i]:G6} vs numeric {numeric:G6} (|diff| {err:G3} > tol {tol:G3})");
            }
        }
    }

    public static int[] ShapeArrayCopy(this Tensor t) => t.Shape.ToArray();
}
