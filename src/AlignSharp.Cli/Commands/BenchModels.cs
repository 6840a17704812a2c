using AlignSharp.Engine;
using AlignSharp.Models;
using AlignSharp.Models.Checkpoints;

namespace AlignSharp.Cli.Commands;

/// <summary>The model a benchmark runs (a preset with random weights, or a checkpoint) and what one token costs it.</summary>
public static class BenchModels
{
    /// <summary>
    /// A <paramref name="dir"/> checkpoint, or the <paramref name="preset"/> (random weights, seed 0) without one.
    /// <paramref name="weightsDtype"/>: f32, bf16 (matrices stored as frozen bf16), or auto (bf16 when every matrix of
    /// the checkpoint is stored BF16; f32 for presets).
    /// </summary>
    public static (TransformerModel Model, string Name, bool Bf16) Load(string? dir, string preset, string weightsDtype)
    {
        if (dir == null)
        {
            var (cfg, _, _) = ModelPresets.Bench(preset);
            var random = TransformerModel.CreateRandom(cfg, seed: 0);
            bool bf = weightsDtype == "bf16";
            if (bf) random.StoreMatricesAsBf16();
            return (random, preset, bf);
        }
        bool bf16 = weightsDtype switch
        {
            "bf16" => true,
            "f32" => false,
            _ => CheckpointMatricesAreBf16(dir),
        };
        var model = ModelIO.Load(dir, bf16Matrices: bf16);
        return (model, Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(dir))), bf16);
    }

    private static bool CheckpointMatricesAreBf16(string dir)
    {
        using var checkpoint = ModelCheckpoint.Open(dir);
        var matrices = checkpoint.Parameters.Where(p => p.Shape.Length == 2).ToList();
        return matrices.Count > 0 && matrices.All(p => checkpoint.Tensors.GetInfo(p.CheckpointName).Dtype == SafetensorsDtype.BF16);
    }

    /// <summary>Whether parameter <paramref name="name"/> is a table read by lookup (only the rows of the batch's tokens).</summary>
    private static bool IsLookupTable(TransformerModel model, string name) =>
        name == "pos_embed.weight" || (name == "embed.weight" && !(model.Config.TieWordEmbeddings && model.Config.Head == HeadKind.LanguageModel));

    /// <summary>Bytes of weights one decoding step of <paramref name="batch"/> sequences reads: every matrix a Linear
    /// uses once (the tied embedding as the LM head), the looked-up rows of embedding tables, norms and biases, and of a
    /// mixture of experts' stacks the experts some token runs (<see cref="ExpertsRead"/>).</summary>
    public static long DecodeWeightBytes(TransformerModel model, int batch)
    {
        long bytes = 0;
        foreach (var (name, p) in model.NamedParameters)
        {
            long elementBytes = p.IsBf16 ? 2 : 4;
            bytes += IsLookupTable(model, name) ? Math.Min(p.Length, (long)batch * p.Dim(-1)) * elementBytes
                : IsExpertStack(p) ? (long)(p.Length * elementBytes * ExpertsRead(model.Config.Moe!, batch))
                : p.Length * elementBytes;
        }
        return bytes;
    }

    /// <summary>The share of a layer's experts that <paramref name="tokens"/> tokens run between them, each choosing
    /// TopK of the experts: 1 − (1 − TopK/E)^tokens, the expectation where the router spreads tokens evenly (a trained
    /// router is close to that, which its load-balancing loss asks for; the random-weight benchmark checkpoints are too).</summary>
    public static double ExpertsRead(MoeShape moe, int tokens) => 1 - Math.Pow(1 - (double)moe.TopK / moe.Experts, tokens);

    private static bool IsExpertStack(Tensor p) => p.Rank == 3 && p.Name is { } n && n.Contains(".moe.", StringComparison.Ordinal);

    /// <summary>Multiply-adds of the Linear layers (and a tied LM head) per token: the matrices' elements, lookups excluded;
    /// of a mixture of experts' stacks, the TopK experts a token runs.</summary>
    public static long LinearMacsPerToken(TransformerModel model) =>
        model.NamedParameters.Where(p => p.Parameter.Rank == 2 && !IsLookupTable(model, p.Name)).Sum(p => (long)p.Parameter.Length)
        + model.NamedParameters.Where(p => IsExpertStack(p.Parameter)).Sum(p => p.Parameter.Length / model.Config.Moe!.Experts * (long)model.Config.Moe.TopK);
}
