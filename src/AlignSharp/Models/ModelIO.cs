using System.Buffers;
using AlignSharp.Engine;
using AlignSharp.Engine.Kernels;
using AlignSharp.Models.Checkpoints;

namespace AlignSharp.Models;

/// <summary>Loads and saves <see cref="TransformerModel"/>s as Hugging Face checkpoint directories.</summary>
public static class ModelIO
{
    /// <summary>
    /// Reads config.json and the weights (single or sharded safetensors, F32/BF16/F16) from a directory.
    /// With <paramref name="head"/> different from the checkpoint's (e.g. a reward model started from a
    /// language model), the body is loaded and the new head is freshly initialised from <paramref name="seed"/>.
    /// </summary>
    /// <exception cref="UserInputException">A missing file, bad config, or tensors that do not match it.</exception>
    /// <param name="bf16Matrices">Keep every matrix as frozen bf16 (<see cref="TransformerModel.StoreMatricesAsBf16"/>)
    /// without ever holding the whole model in float32: for inference and frozen (reference, base) models.</param>
    public static TransformerModel Load(string directory, HeadKind? head = null, int seed = 0, bool bf16Matrices = false)
    {
        using var checkpoint = ModelCheckpoint.Open(directory);
        var config = checkpoint.Config;
        var wanted = head ?? config.Head;
        var model = new TransformerModel(config with { Head = wanted });
        float[]? scratch = null;   // one buffer for matrices stored in another dtype or layout, dropped after loading
        foreach (var (name, p) in model.NamedParameters.ToArray())
        {
            if (checkpoint.Binding.Parameters.Any(b => b.CanonicalName == name))
            {
                if (bf16Matrices && p.Rank == 2)
                {
                    // The float32 parameter is never touched (its pages stay unmapped); a BF16 tensor is copied bit for bit.
                    var bits = new ushort[p.Length];
                    if (checkpoint.TryReadParameterBf16(name, bits))
                        RequireFinite(directory, name, bits);
                    else
                    {
                        if (scratch == null || scratch.Length < p.Length) scratch = GC.AllocateUninitializedArray<float>(p.Length);
                        var values = scratch.AsSpan(0, p.Length);
                        checkpoint.ReadParameter(name, values);
                        RequireFinite(directory, name, values);
                        Bf16.Narrow(values, bits);
                    }
                    model.StoreAsBf16(name, Tensor.WrapBf16(bits, p.ShapeArray));
                }
                else
                {
                    checkpoint.ReadParameter(name, p.Span);
                    RequireFinite(directory, name, p.Span);
                }
            }
            else
                InitialiseNewHead(model, name, p, seed);
        }
        if (bf16Matrices) model.StoreMatricesAsBf16(); // a freshly initialised head
        return model;
    }

    /// <summary>Whether the checkpoint in <paramref name="directory"/> stores its matrices in bf16.</summary>
    public static bool StoresBf16(string directory)
    {
        using var checkpoint = ModelCheckpoint.Open(directory);
        return checkpoint.StoresBf16;
    }

    private static void RequireFinite(string directory, string name, ReadOnlySpan<ushort> bf16)
    {
        foreach (ushort b in bf16)
            if ((b & 0x7F80) == 0x7F80)
                throw new UserInputException($"{directory}: tensor '{name}' holds NaN or infinite values; the checkpoint is unusable (saved from a diverged run, or corrupt).");
    }

    private static void RequireFinite(string directory, string name, ReadOnlySpan<float> values)
    {
        if (!AllFinite(values))
            throw new UserInputException($"{directory}: tensor '{name}' holds NaN or infinite values; the checkpoint is unusable (saved from a diverged run, or corrupt).");
    }

    /// <summary>True when every value is finite (x − x is 0 exactly for finite x, NaN for NaN and ±∞).</summary>
    public static bool AllFinite(ReadOnlySpan<float> values)
    {
        var vectors = System.Runtime.InteropServices.MemoryMarshal.Cast<float, System.Numerics.Vector<float>>(values);
        foreach (var v in vectors)
            if (!System.Numerics.Vector.EqualsAll(v - v, System.Numerics.Vector<float>.Zero)) return false;
        for (int i = vectors.Length * System.Numerics.Vector<float>.Count; i < values.Length; i++)
            if (!float.IsFinite(values[i])) return false;
        return true;
    }

    private static void InitialiseNewHead(TransformerModel model, string name, Tensor p, int seed)
    {
        // Only heads can be absent when the head kind changes; anything else is a binding bug.
        if (name == "score.weight")
        {
            // A small random projection (std 1/√(D+1), as value heads commonly start) so scores begin near 0.
            var rng = new Random(seed);
            var s = p.Span;
            float std = 1f / MathF.Sqrt(model.Config.HiddenSize + 1);
            for (int i = 0; i < s.Length; i++) s[i] = (float)(rng.NextGaussian() * std);
        }
        else if (name == "lm_head.weight")
        {
            // An untied LM head that the checkpoint lacks starts as a copy of the token embedding.
            model.Parameter("embed.weight").Span.CopyTo(p.Span);
        }
        else throw new InvalidOperationException($"Parameter '{name}' is missing from the checkpoint binding.");
    }

    /// <summary>Writes config.json and model.safetensors (sharded above <paramref name="maxShardBytes"/>) atomically.</summary>
    public static void Save(TransformerModel model, string directory, SafetensorsDtype dtype = SafetensorsDtype.F32,
        long maxShardBytes = SafetensorsWriter.DefaultMaxShardBytes)
        => ModelCheckpoint.Save(directory, model.Config, name =>
        {
            var p = model.Parameter(name);
            return p.IsBf16 ? p.ToArray() : new ReadOnlyMemory<float>(p.Array, p.Offset, p.Length);
        }, dtype, maxShardBytes);
}
