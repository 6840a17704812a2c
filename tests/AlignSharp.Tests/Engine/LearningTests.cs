using AlignSharp.Engine;
using AlignSharp.Models;

namespace AlignSharp.Tests.Engine;

/// <summary>End-to-end checks that the engine learns: a tiny MLP and a tiny transformer on toy tasks.</summary>
[Collection(SerialCollection.Name)]
public class LearningTests
{
    private static void SgdStep(IEnumerable<Tensor> ps, float lr)
    {
        foreach (var p in ps)
        {
            if (p.Grad == null) continue;
            var s = p.Span; var g = p.Grad.Span;
            for (int i = 0; i < s.Length; i++) s[i] -= lr * g[i];
            p.ZeroGrad();
        }
    }

    [Fact]
    public void TinyMlpLearnsXor()
    {
        var rng = new Random(1);
        var w1 = Tensor.Parameter([16, 2], rng, 1f);
        var b1 = Tensor.Parameter([16], 0f);
        var w2 = Tensor.Parameter([1, 16], rng, 0.5f);
        var b2 = Tensor.Parameter([1], 0f);
        var x = Tensor.FromArray([0, 0, 0, 1, 1, 0, 1, 1], 4, 2);
        var y = Tensor.FromArray([0, 1, 1, 0], 4, 1);
        float loss = 0;
        for (int step = 0; step < 2000; step++)
        {
            using var scope = TensorScope.Begin();
            var h = Ops.Tanh(Ops.Linear(x, w1, b1));
            var p = Ops.Sigmoid(Ops.Linear(h, w2, b2));
            var l = Ops.Mean(Ops.Square(Ops.Sub(p, y)));
            l.Backward();
            loss = l.Item();
            SgdStep([w1, b1, w2, b2], 0.5f);
        }
        Assert.True(loss < 0.01f, $"XOR loss {loss} did not fall below 0.01");
    }

    /// <summary>Next-token prediction on a repeating pattern; a 2-layer transformer must fit it.</summary>
    [Theory]
    [InlineData("gpt2")]
    [InlineData("llama")]
    public void TinyTransformerLearnsASequence(string family)
    {
        var config = family == "gpt2" ? ModelPresets.Gpt2(16, 32, 2, 4, 32) : ModelPresets.Llama(16, 32, 2, 4, 2, 64);
        var model = TransformerModel.CreateRandom(config, seed: 3, std: 0.1f);
        int batch = 4, seq = 12;
        var ids = new int[batch * seq];
        var rng = new Random(5);
        for (int b = 0; b < batch; b++)
        {
            int start = rng.Next(16);
            for (int t = 0; t < seq; t++) ids[b * seq + t] = (start + 3 * t) % 16; // next = current + 3
        }
        var inputs = ids; var targets = new int[batch * seq];
        for (int i = 0; i < targets.Length; i++) targets[i] = (i + 1) % seq == 0 ? -100 : ids[i + 1];
        float first = 0, last = 0;
        for (int step = 0; step < 150; step++)
        {
            using var scope = TensorScope.Begin();
            var logits = model.Forward(inputs, batch, seq);
            var loss = Ops.CrossEntropy(Ops.Reshape(logits, batch * seq, 16), targets);
            loss.Backward();
            if (step == 0) first = loss.Item();
            last = loss.Item();
            SgdStep(model.Parameters, 0.3f);
        }
        Assert.True(first > 2f, $"initial loss {first} should be near ln 16");
        Assert.True(last < 0.1f, $"{family}: loss fell only from {first} to {last}, expected < 0.1");
    }

    [Fact]
    public void SameSeedGivesBitwiseIdenticalLossesSingleThreaded()
    {
        float[] Run()
        {
            var config = ModelPresets.Gpt2(16, 32, 2, 4, 32);
            var model = TransformerModel.CreateRandom(config, seed: 11);
            var ids = Enumerable.Range(0, 24).Select(i => (i * 7) % 16).ToArray();
            var targets = ids.Skip(1).Append(0).ToArray();
            var losses = new float[5];
            for (int s = 0; s < 5; s++)
            {
                using var scope = TensorScope.Begin();
                var loss = Ops.CrossEntropy(Ops.Reshape(model.Forward(ids, 2, 12), 24, 16), targets);
                loss.Backward();
                losses[s] = loss.Item();
                SgdStep(model.Parameters, 0.1f);
            }
            return losses;
        }
        using (AlignSharp.Engine.Kernels.ParallelFor.UseThreads(1))
        {
            var a = Run();
            var b = Run();
            Assert.Equal(a.Select(BitConverter.SingleToInt32Bits), b.Select(BitConverter.SingleToInt32Bits));
        }
    }

    [Fact]
    public void MultiThreadedLossStaysWithinFloatToleranceOfSingleThreaded()
    {
        float Loss(int threads)
        {
            using var scoped = AlignSharp.Engine.Kernels.ParallelFor.UseThreads(threads);
            var model = TransformerModel.CreateRandom(ModelPresets.Gpt2(64, 64, 2, 4, 64), seed: 2);
            var ids = Enumerable.Range(0, 128).Select(i => (i * 5) % 64).ToArray();
            using var scope = TensorScope.Begin();
            return Ops.CrossEntropy(Ops.Reshape(model.Forward(ids, 2, 64), 128, 64), ids).Item();
        }
        Assert.Equal(Loss(1), Loss(2), 4);
    }
}
