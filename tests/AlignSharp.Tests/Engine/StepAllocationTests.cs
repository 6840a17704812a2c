using AlignSharp.Engine;
using AlignSharp.Engine.Kernels;
using AlignSharp.Engine.Optim;
using AlignSharp.Models;
using Xunit.Abstractions;

namespace AlignSharp.Tests.Engine;

/// <summary>
/// What an op allocates on the GC heap in a warm <see cref="TensorScope"/>: its outputs, saved statistics and scratch
/// come from the pool, so only fixed bookkeeping (tensor and graph-node objects) remains, the same whatever the
/// number of rows. Measured with GC.GetAllocatedBytesForCurrentThread on one thread (kernels inline), the least of a few
/// warm rounds: a full test run once saw one round of each size off by ±88–264 bytes (the runtime's own work on the
/// thread, the same with either size), where anything sized by the rows would show in every round.
/// </summary>
public sealed class StepAllocationTests(ITestOutputHelper output)
{
    private static long WarmBytes(int rows, Func<Tensor, Tensor> op)
    {
        const int c = 48;
        var rng = new Random(rows);
        var x = Tensor.Parameter([rows, c], rng, 1f);
        long bytes = long.MaxValue;
        for (int round = 0; round < 5; round++)   // the first rounds fill the pool's size classes
        {
            x.ZeroGrad();
            long before = GC.GetAllocatedBytesForCurrentThread();
            using (TensorScope.Begin())
            {
                var y = op(x);
                Ops.Sum(Ops.Square(y)).Backward();
            }
            if (round >= 2) bytes = Math.Min(bytes, GC.GetAllocatedBytesForCurrentThread() - before);
        }
        return bytes;
    }

    [Theory]
    [InlineData("LayerNorm")]
    [InlineData("LayerNormNoBias")]
    [InlineData("RmsNorm")]
    public void NormsAllocateNothingSizedByTheRows(string which)
    {
        using var threads = ParallelFor.UseThreads(1);
        var rng = new Random(3);
        var w = Tensor.Parameter([48], rng, 0.5f);
        var b = Tensor.Parameter([48], rng, 0.5f);
        Func<Tensor, Tensor> op = which switch
        {
            "LayerNorm" => x => Ops.LayerNorm(x, w, b),
            "LayerNormNoBias" => x => Ops.LayerNorm(x, w, null),
            _ => x => Ops.RmsNorm(x, w),
        };
        long few = WarmBytes(8, op), many = WarmBytes(1000, op);
        Assert.True(many == few, $"{which}: {few} bytes for 8 rows, {many} bytes for 1000: something is allocated per row");
    }

    /// <summary>
    /// A whole warm training step (forward, cross entropy, backward, AdamW) of a tiny GPT-2 (LayerNorm, learned
    /// positions, GELU, biases) and a tiny Llama (RMSNorm, RoPE, SiLU gate, grouped-query attention): activations,
    /// saved statistics, indices, RoPE tables and scratch all come from the pool or a per-model cache, so 12× the tokens
    /// allocate exactly the same bytes, and those (graph nodes and tensor objects) stay small.
    /// </summary>
    [Theory]
    [InlineData("gpt2")]
    [InlineData("llama")]
    public void TinyModelTrainingStepAllocatesNothingSizedByTheTokens(string arch)
    {
        using var threads = ParallelFor.UseThreads(1);
        var config = arch == "gpt2" ? ModelPresets.Gpt2(64, 32, 2, 4, 64) : ModelPresets.Llama(64, 32, 2, 4, 2, 64, 64);
        var model = TransformerModel.CreateRandom(config, 1);
        var opt = new AdamW(ParamGroups.DecayAndNoDecay(model.NamedParameters, 0.1f), new AdamWOptions(Lr: 1e-3f, WeightDecay: 0.1f));
        long few = StepBytes(model, opt, 1, 8), many = StepBytes(model, opt, 4, 24);
        output.WriteLine($"{arch}: {few} bytes for 8 tokens, {many} for 96");
        Assert.True(many == few, $"{arch}: {few} bytes for 8 tokens, {many} bytes for 96: something is allocated per token");
        Assert.True(many < 64 * 1024, $"{arch}: a warm step allocates {many} bytes");
    }

    private static long StepBytes(TransformerModel model, AdamW opt, int batch, int seq)
    {
        var rng = new Random(batch);
        var ids = new int[batch * seq];
        var targets = new int[batch * seq];
        for (int i = 0; i < ids.Length; i++) { ids[i] = rng.Next(model.Config.VocabSize); targets[i] = rng.Next(model.Config.VocabSize); }
        long bytes = long.MaxValue;
        for (int round = 0; round < 6; round++)
        {
            long before = GC.GetAllocatedBytesForCurrentThread();
            using (TensorScope.Begin())
            {
                var logits = model.Forward(ids, batch, seq);
                var loss = Ops.CrossEntropy(Ops.Reshape(logits, batch * seq, model.Config.VocabSize), targets);
                opt.ZeroGrad();
                loss.Backward();
                opt.Step();
            }
            if (round >= 3) bytes = Math.Min(bytes, GC.GetAllocatedBytesForCurrentThread() - before);
        }
        return bytes;
    }
}
