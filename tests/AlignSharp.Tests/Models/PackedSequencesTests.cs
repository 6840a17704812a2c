using AlignSharp.Engine;
using AlignSharp.Models;
using AlignSharp.Training.Data;

namespace AlignSharp.Tests.Models;

/// <summary>
/// SFT packing (`sft --packing`): sequences packed into one row with their segments and per-sequence positions give
/// each sequence exactly the hidden states it has alone, in every kind of family (learned positions, RoPE, sliding
/// windows and soft caps, NoPE layers, post-norms, LFM2's convolutions, Mamba-2 mixers), with and without gradient
/// checkpointing.
/// </summary>
public sealed class PackedSequencesTests
{
    [Theory]
    [InlineData("gpt2-hub")]
    [InlineData("llama-gqa")]
    [InlineData("gemma2-softcap-window")]
    [InlineData("qwen2-sliding-window")]
    [InlineData("smollm3-nope")]
    [InlineData("olmo2-post-norm")]
    [InlineData("lfm2-hybrid-conv")]        // convolutions that must not reach across a sequence's start
    [InlineData("granite4-hybrid-mamba")]   // Mamba-2 mixers: convolution and scan state restart at each start
    [InlineData("falcon-h1-mup")]           // attention and a mixer side by side
    [InlineData("granitemoe-top3-of-8")]    // experts routed token by token, whatever row a token is packed in
    public void EachPackedSequenceGetsItsOwnHiddenStates(string fixture)
    {
        var model = ModelIO.Load(Fixtures.Dir(fixture));
        int vocab = model.Config.VocabSize;
        int[] Ids(int n, int seed) => Enumerable.Range(0, n).Select(i => (i * 7 + seed * 13 + 3) % vocab).ToArray();
        // Row 0: sequences of 5 and 7 tokens; row 1: one of 9, padded to 12.
        var a = Ids(5, 1); var b = Ids(7, 2); var c = Ids(9, 3);
        SftSequence Seq(params int[][] parts)
        {
            var ids = parts.SelectMany(p => p).ToArray();
            var starts = parts.Select((p, i) => parts.Take(i).Sum(q => q.Length)).ToArray();
            return new SftSequence(ids, ids, starts, parts.Select((_, i) => new RecordSource("mem", i + 1)).ToArray());
        }
        var batch = SftBatch.Create([Seq(a, b), Seq(c)], padId: 0, padToLength: 12);
        foreach (bool checkpointing in new[] { false, true })
        {
            model.GradientCheckpointing = checkpointing;
            var packed = model.Hidden(batch.InputIds, 2, 12, batch.Positions, batch.AttentionMask, segmentStarts: batch.SegmentStarts).ToArray();
            int d = model.Config.HiddenSize;
            foreach (var (ids, row, at) in new[] { (a, 0, 0), (b, 0, 5), (c, 1, 0) })
            {
                var alone = model.Hidden(ids, 1, ids.Length).ToArray();
                for (int i = 0; i < alone.Length; i++)
                {
                    float got = packed[(row * 12 + at) * d + i];
                    Assert.True(Math.Abs(got - alone[i]) <= 1e-4 * (1 + Math.Abs(alone[i])),
                        $"{fixture} (checkpointing {checkpointing}): sequence at row {row}, token {at + i / d}, unit {i % d}: {got} vs {alone[i]}");
                }
            }
        }
    }
}
