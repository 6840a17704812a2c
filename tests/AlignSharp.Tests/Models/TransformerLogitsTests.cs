using System.Text.Json;
using AlignSharp.Engine;
using AlignSharp.Models;
using AlignSharp.Models.Checkpoints;

namespace AlignSharp.Tests.Models;

/// <summary>
/// The engine's TransformerModel against logits that an independent PyTorch forward produced for each fixture
/// checkpoint (GPT-2 both naming styles, Llama GQA, Qwen2 biases, sharded, BF16, Mistral with and without a
/// sliding window shorter than the inputs, llama3 RoPE scaling, Qwen3 q/k norms, Gemma-2 soft caps and alternating
/// windows, Gemma-3 local/global layers, Phi-3 fused projections and LongRoPE).
/// </summary>
public sealed class TransformerLogitsTests
{
    public static TheoryData<string> FixtureNames => new(Fixtures.All);

    private static (int[] Ids, double[][] Logits)[] Cases(string fixture, out double absTol, out double relTol)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(Fixtures.Dir(fixture), "reference.json")));
        absTol = doc.RootElement.GetProperty("tolerance").GetProperty("abs").GetDouble();
        relTol = doc.RootElement.GetProperty("tolerance").GetProperty("rel").GetDouble();
        return doc.RootElement.GetProperty("cases").EnumerateArray().Select(c => (
            c.GetProperty("input_ids").EnumerateArray().Select(e => e.GetInt32()).ToArray(),
            c.GetProperty("logits").EnumerateArray().Select(r => r.EnumerateArray().Select(e => e.GetDouble()).ToArray()).ToArray())).ToArray();
    }

    private static void AssertClose(string what, float[] actual, int offset, double[] expected, double absTol, double relTol)
    {
        for (int v = 0; v < expected.Length; v++)
            Assert.True(Math.Abs(actual[offset + v] - expected[v]) <= absTol + relTol * Math.Abs(expected[v]),
                $"{what} v={v}: {actual[offset + v]} vs {expected[v]}");
    }

    [Theory]
    [MemberData(nameof(FixtureNames))]
    public void LogitsMatchThePyTorchReference(string fixture)
    {
        var model = ModelIO.Load(Fixtures.Dir(fixture));
        int vocab = model.Config.VocabSize;
        using var noGrad = Autograd.NoGrad();
        foreach (var (ids, expected) in Cases(fixture, out var absTol, out var relTol))
        {
            var logits = model.Forward(ids, 1, ids.Length).ToArray();
            for (int t = 0; t < ids.Length; t++) AssertClose($"{fixture} t={t}", logits, t * vocab, expected[t], absTol, relTol);
        }
    }

    /// <summary>Dynamic NTK RoPE is the default one up to max_position_embeddings: the same logits as the model without
    /// rope_scaling, the config written back as read; a position past it (where transformers rescales with the history of
    /// calls) is a clear error.</summary>
    [Fact]
    public void DynamicRopeIsTheDefaultWithinMaxPositionsAndRefusedPastThem()
    {
        string dir = Path.Combine(Path.GetTempPath(), "alignsharp-dynamic-" + Guid.NewGuid().ToString("N"));
        try
        {
            Directory.CreateDirectory(dir);
            foreach (var file in Directory.GetFiles(Fixtures.Dir("llama-gqa"))) File.Copy(file, Path.Combine(dir, Path.GetFileName(file)));
            var json = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "config.json")))!.AsObject();
            json["rope_scaling"] = new System.Text.Json.Nodes.JsonObject { ["rope_type"] = "dynamic", ["factor"] = 2.0 };
            File.WriteAllText(Path.Combine(dir, "config.json"), json.ToJsonString());
            var dynamic = ModelIO.Load(dir);
            var plain = ModelIO.Load(Fixtures.Dir("llama-gqa"));
            Assert.Equal("dynamic", dynamic.Config.RopeScaling!.Type);
            Assert.Equal(dynamic.Config, ModelConfig.Parse(dynamic.Config.ToJson()));
            int max = dynamic.Config.MaxPositions;
            var ids = Enumerable.Range(0, max).Select(i => i % dynamic.Config.VocabSize).ToArray();
            using var noGrad = Autograd.NoGrad();
            Assert.Equal(plain.Forward(ids, 1, max).ToArray(), dynamic.Forward(ids, 1, max).ToArray());
            var e = Assert.Throws<UserInputException>(() => dynamic.Forward([.. ids, 1], 1, max + 1));
            Assert.Contains($"Position {max} is beyond max_position_embeddings {max}", e.Message);
        }
        finally { Directory.Delete(dir, true); }
    }

    /// <summary>Granite divides the LM head's logits by logits_scaling but scores a scalar head's hidden states as they
    /// are (transformers' sequence classification): a score head holding lm_head's row v gives the reference logit of v
    /// times logits_scaling (8).</summary>
    [Fact]
    public void GraniteScalesTheLanguageModelsLogitsOnly()
    {
        string dir = Fixtures.Dir("granite-multipliers");
        var lm = ModelIO.Load(dir);
        var scorer = ModelIO.Load(dir, HeadKind.Scalar);
        int d = lm.Config.HiddenSize;
        const int v = 5;
        lm.NamedParameters.Single(p => p.Name == "lm_head.weight").Parameter.Span.Slice(v * d, d)
            .CopyTo(scorer.NamedParameters.Single(p => p.Name == "score.weight").Parameter.Span);
        Assert.Equal(8.0, lm.Config.LogitsScaling);
        using var noGrad = Autograd.NoGrad();
        foreach (var (ids, expected) in Cases("granite-multipliers", out var absTol, out var relTol))
        {
            var scores = scorer.Forward(ids, 1, ids.Length).ToArray();
            for (int t = 0; t < ids.Length; t++)
                Assert.True(Math.Abs(scores[t] - 8 * expected[t][v]) <= 8 * (absTol + relTol * Math.Abs(expected[t][v])), $"t={t}: {scores[t]} vs 8 × {expected[t][v]}");
        }
    }

    /// <summary>The cases in right-padded batches: padding must not change the real positions' logits. Phi-3's
    /// LongRoPE picks its factors per call from the longest row (as transformers does), so cases are batched with
    /// the others on their side of original_max_position_embeddings, each batch one pad column longer than its
    /// longest case where that keeps it there.</summary>
    [Theory]
    [MemberData(nameof(FixtureNames))]
    public void PaddedBatchMatchesTheReference(string fixture)
    {
        var model = ModelIO.Load(Fixtures.Dir(fixture));
        var config = model.Config;
        int vocab = config.VocabSize;
        var all = Cases(fixture, out var absTol, out var relTol);
        foreach (var cases in all.GroupBy(c => config.UsesLongRopeFactors(c.Ids.Length - 1)).Select(g => g.ToArray()))
        {
            int b = cases.Length, longest = cases.Max(c => c.Ids.Length);
            int t = config.UsesLongRopeFactors(longest) == config.UsesLongRopeFactors(longest - 1) ? longest + 1 : longest;
            var ids = new int[b * t];
            var mask = new bool[b * t];
            for (int i = 0; i < b; i++)
                for (int j = 0; j < cases[i].Ids.Length; j++) { ids[i * t + j] = cases[i].Ids[j]; mask[i * t + j] = true; }
            using var noGrad = Autograd.NoGrad();
            var logits = model.Forward(ids, b, t, keyMask: mask).ToArray();
            for (int i = 0; i < b; i++)
                for (int j = 0; j < cases[i].Ids.Length; j++)
                    AssertClose($"{fixture} row {i} t={j}", logits, (i * t + j) * vocab, cases[i].Logits[j], absTol, relTol);
        }
    }

    [Theory]
    [MemberData(nameof(FixtureNames))]
    public void ParametersAreExactlyTheCheckpointsCanonicalSet(string fixture)
    {
        using var checkpoint = ModelCheckpoint.Open(Fixtures.Dir(fixture));
        var model = new TransformerModel(checkpoint.Config);
        Assert.Equal(checkpoint.Parameters.Select(p => (p.CanonicalName, string.Join(",", p.Shape))),
                     model.NamedParameters.Select(p => (p.Name, string.Join(",", p.Parameter.Shape.ToArray()))));
    }

    [Fact]
    public void SavedModelLoadsBackWithIdenticalLogits()
    {
        var dir = Path.Combine(Path.GetTempPath(), "alignsharp-save-" + Guid.NewGuid().ToString("N"));
        try
        {
            foreach (var config in new[] { ModelPresets.Gpt2(50, 32, 2, 4, 64), ModelPresets.Llama(50, 32, 2, 4, 2, 64) })
            {
                var model = TransformerModel.CreateRandom(config, seed: 4, std: 0.2f);
                ModelIO.Save(model, dir);
                var loaded = ModelIO.Load(dir);
                int[] ids = [1, 5, 9, 13, 2];
                using var noGrad = Autograd.NoGrad();
                Assert.Equal(model.Forward(ids, 1, 5).ToArray(), loaded.Forward(ids, 1, 5).ToArray());
            }
        }
        finally { Directory.Delete(dir, recursive: true); }
    }

    [Fact]
    public void ScalarHeadFromALanguageModelCheckpointKeepsTheBody()
    {
        var dir = Fixtures.Dir("llama-gqa");
        var lm = ModelIO.Load(dir);
        var rm = ModelIO.Load(dir, HeadKind.Scalar, seed: 1);
        Assert.Equal(HeadKind.Scalar, rm.Config.Head);
        Assert.Equal(lm.Parameter("layers.0.attn.q.weight").ToArray(), rm.Parameter("layers.0.attn.q.weight").ToArray());
        using var noGrad = Autograd.NoGrad();
        var scores = rm.Forward([1, 2, 3], 1, 3);
        Assert.Equal([1, 3], scores.Shape.ToArray());
    }
}
