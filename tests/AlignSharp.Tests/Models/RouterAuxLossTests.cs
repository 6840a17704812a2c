using System.Text.Json;
using AlignSharp.Engine;
using AlignSharp.Models;
using AlignSharp.Tests.Rl;

namespace AlignSharp.Tests.Models;

/// <summary>
/// The routers' load-balancing loss that output_router_logits asks for (transformers' load_balancing_loss_func, as
/// GraniteMoeForCausalLM adds it): its value against the fixture's independent PyTorch computation over a right-padded
/// batch, a hand-computed case, its gradient by finite differences and through gradient checkpointing, and the trainers
/// that add it (sft, dpo, kto) or refuse the config (the others).
/// </summary>
public sealed class RouterAuxLossTests : IDisposable
{
    private readonly RlTestKit _kit = new();
    public void Dispose() => _kit.Dispose();

    /// <summary>The fixture's two cases as one batch, the shorter right-padded: ids, key mask, width.</summary>
    private static (int[] Ids, bool[] Mask, int Seq, double Expected) Batch()
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(Fixtures.Dir("granitemoe-router-aux"), "reference.json")));
        var aux = doc.RootElement.GetProperty("router_aux");
        var rows = aux.GetProperty("rows").EnumerateArray().Select(r => r.EnumerateArray().Select(e => e.GetInt32()).ToArray()).ToArray();
        int seq = rows.Max(r => r.Length);
        var ids = rows.SelectMany(r => r.Concat(Enumerable.Repeat(0, seq - r.Length))).ToArray();
        var mask = rows.SelectMany(r => Enumerable.Range(0, seq).Select(t => t < r.Length)).ToArray();
        return (ids, mask, seq, aux.GetProperty("aux_loss").GetDouble());
    }

    [Fact]
    public void MatchesThePyTorchReferenceOverAPaddedBatch()
    {
        var model = ModelIO.Load(Fixtures.Dir("granitemoe-router-aux"));
        Assert.Equal(0.02, model.Config.Moe!.RouterAuxLossCoef);
        var (ids, mask, seq, expected) = Batch();
        model.Hidden(ids, 2, seq, keyMask: mask);
        var aux = model.RouterAuxLoss()!;
        Assert.Equal(expected, aux.Item(), 1e-4);
        // Over the first row only (KTO's completions beside its KL rows): the loss of a pass over that row alone.
        float firstRow = model.RouterAuxLoss(firstRows: 1)!.Item();
        model.Hidden(ids[..seq], 1, seq, keyMask: mask[..seq]);
        Assert.Equal(model.RouterAuxLoss()!.Item(), firstRow, 1e-5f);
        Assert.NotEqual(aux.Item(), firstRow);
        // A pass without gradients (a reference's, an evaluation's) keeps no logits: no loss to add.
        using (Autograd.NoGrad()) model.Hidden(ids, 2, seq, keyMask: mask);
        Assert.Null(model.RouterAuxLoss());
        // Without output_router_logits nothing is kept either.
        var plain = ModelIO.Load(Fixtures.Dir("granitemoe-top3-of-8"));
        plain.Hidden([1, 2, 3], 1, 3);
        Assert.Null(plain.RouterAuxLoss());
    }

    /// <summary>By hand: 2 experts, top 1, one layer, 2 tokens with logits (0, ln 3) and (ln 3, 0): p = (¼, ¾) and (¾, ¼),
    /// each token picks its larger, so c = (1, 1), M = 2: 2 · (½ · ½ + ½ · ½) = 1. Skewed, (0, ln 3) twice: p = (¼, ¾) both,
    /// c = (0, 2): 2 · (0 · ¼ + 1 · ¾) = 1.5.</summary>
    [Fact]
    public void AHandComputedCase()
    {
        var config = ModelConfig.Parse("""
            {"model_type":"granitemoe","vocab_size":8,"hidden_size":2,"num_hidden_layers":1,"num_attention_heads":1,"intermediate_size":2,
             "num_local_experts":2,"num_experts_per_tok":1,"output_router_logits":true,"rms_norm_eps":1e-6}
            """);
        var model = new TransformerModel(config);
        float l3 = MathF.Log(3);
        // Every other weight 0 (attention and experts add nothing); the MLP's RMSNorm (weight 1) maps the embeddings (1, 0)
        // and (0, 1) to (√2, 0) and (0, √2), which the router rows below turn into the logits above.
        foreach (var (name, p) in model.NamedParameters) p.Span.Clear();
        model.Parameter("layers.0.mlp_norm.weight").Span.Fill(1);
        model.Parameter("final_norm.weight").Span.Fill(1);
        model.Parameter("embed.weight").Span[0] = 1;   // token 0: (1, 0)
        model.Parameter("embed.weight").Span[3] = 1;   // token 1: (0, 1)
        var router = model.Parameter("layers.0.moe.router.weight").Span;   // [2 experts, 2]: logit_e = w_e · x
        router[2] = l3 / MathF.Sqrt(2);   // expert 1 reads x₀
        router[1] = l3 / MathF.Sqrt(2);   // expert 0 reads x₁
        model.Hidden([0, 1], 1, 2);
        Assert.Equal(1.0, model.RouterAuxLoss()!.Item(), 1e-5);
        model.Hidden([0, 0], 1, 2);
        Assert.Equal(1.5, model.RouterAuxLoss()!.Item(), 1e-5);
    }

    [Fact]
    public void ItsGradientMatchesFiniteDifferencesWithAndWithoutCheckpointing()
    {
        var model = ModelIO.Load(Fixtures.Dir("granitemoe-router-aux"));
        var (ids, mask, seq, _) = Batch();
        var routers = new[] { model.Parameter("layers.0.moe.router.weight"), model.Parameter("layers.1.moe.router.weight") };
        Tensor Aux() { model.Hidden(ids, 2, seq, keyMask: mask); return model.RouterAuxLoss()!; }
        // Central differences by hand (the loss exists only in passes with gradients, which GradCheck's evaluations are not):
        // every router element of both layers, a step small beside the fixture's routing margins (≥ 0.04).
        foreach (var p in model.Parameters) p.ClearGrad();
        Aux().Backward();
        foreach (var router in routers)
        {
            var analytic = router.Grad!.ToArray();
            var w = router.Span;
            for (int i = 0; i < w.Length; i++)
            {
                float orig = w[i];
                w[i] = orig + 1e-3f; double plus = Aux().Item();
                w[i] = orig - 1e-3f; double minus = Aux().Item();
                w[i] = orig;
                double numeric = (plus - minus) / 2e-3;
                Assert.True(Math.Abs(numeric - analytic[i]) <= 1e-3 + 2e-2 * Math.Abs(numeric), $"router element {i}: analytic {analytic[i]} vs numeric {numeric}");
            }
        }

        // The same gradients when each block is recomputed in the backward pass (the logits leave the segment as outputs).
        float[][] Grads(bool checkpointing)
        {
            model.GradientCheckpointing = checkpointing;
            foreach (var p in model.Parameters) p.ClearGrad();
            Aux().Backward();
            return [.. routers.Select(r => r.Grad!.ToArray())];
        }
        var plain = Grads(false);
        var recomputed = Grads(true);
        model.GradientCheckpointing = false;
        for (int i = 0; i < plain.Length; i++)
        {
            Assert.Contains(plain[i], g => g != 0);
            Assert.Equal(plain[i], recomputed[i]);
        }
    }

    /// <summary>sft, dpo and kto add coef · the loss to their objective and log it (aux_loss): the first step's logged loss
    /// exceeds the same run's at coefficient 0 by 0.02 · aux_loss. A trainer that does not add it refuses the config by name
    /// rather than train without what it asks for.</summary>
    [Fact]
    public void TrainersAddItOrRefuseTheConfig()
    {
        string Copy(string name, double coef)
        {
            string dir = _kit.Path(name);
            Directory.CreateDirectory(dir);
            foreach (var f in Directory.GetFiles(Fixtures.Dir("granitemoe-router-aux")))
                File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
            var config = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "config.json")))!;
            config["router_aux_loss_coef"] = coef;
            File.WriteAllText(Path.Combine(dir, "config.json"), config.ToJsonString());
            RlTestKit.WriteTokenizer(dir);
            return dir;
        }
        string model = Copy("moe", 0.02), zero = Copy("moe0", 0);
        string sft = _kit.File("sft.jsonl", string.Join("\n", Enumerable.Range(0, 4).Select(i => $"{{\"prompt\": \"q{i}\", \"completion\": \" a{i}\"}}")));
        string prefs = _kit.File("prefs.jsonl", string.Join("\n", Enumerable.Range(0, 4).Select(i => $"{{\"prompt\": \"q{i}\", \"chosen\": \" a{i}\", \"rejected\": \" b{i}\"}}")));
        string kto = _kit.File("kto.jsonl", string.Join("\n", Enumerable.Range(0, 4).Select(i => $"{{\"prompt\": \"q{i}\", \"completion\": \" a{i}\", \"label\": true}}")));
        string[] common = ["--max-steps", "1", "--logging-steps", "1", "--batch-size", "2"];
        JsonElement FirstStep(string name, string[] args)
        {
            string run = _kit.Path("run-" + name);
            var r = CliRunner.Run([.. args, .. common, "--out", run]);
            Assert.True(r.ExitCode == 0, $"{name}: {r.StdErr}");
            return JsonDocument.Parse(File.ReadLines(Path.Combine(run, "metrics.jsonl")).First(l => l.Contains("\"aux_loss\""))).RootElement;
        }
        foreach (var (name, flag, data) in new[] { ("sft", "--model", sft), ("dpo", "--policy", prefs), ("kto", "--policy", kto) })
        {
            var with = FirstStep(name, [name, flag, model, "--data", data]);
            var without = FirstStep(name + "-0", [name, flag, zero, "--data", data]);
            double aux = with.GetProperty("aux_loss").GetDouble();
            Assert.True(aux > 0, $"{name}: {with}");
            Assert.Equal(aux, without.GetProperty("aux_loss").GetDouble(), 1e-6);
            Assert.Equal(without.GetProperty("loss").GetDouble() + 0.02 * aux, with.GetProperty("loss").GetDouble(), 1e-5);
        }
        var refused = CliRunner.Run(["rm", "--model", model, "--data", prefs, .. common, "--out", _kit.Path("run-rm")]);
        Assert.NotEqual(0, refused.ExitCode);
        Assert.Contains("field 'output_router_logits' is true", refused.StdErr);
        Assert.DoesNotContain("   at ", refused.StdErr);
    }
}
