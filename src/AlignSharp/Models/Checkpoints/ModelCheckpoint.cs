using System.Buffers;

namespace AlignSharp.Models.Checkpoints;

/// <summary>
/// A Hugging Face checkpoint directory opened as a model: its <c>config.json</c>, its tensors, and the binding of
/// every canonical parameter to a checkpoint tensor. <see cref="ReadParameter(string, Span{float})"/> returns
/// parameters in canonical layout (matrices [out, in]), transposing GPT-2's Conv1D weights.
/// </summary>
public sealed class ModelCheckpoint : IDisposable
{
    public ModelConfig Config { get; }
    public CheckpointReader Tensors { get; }
    public CheckpointBinding Binding { get; }

    /// <summary>Canonical parameters in model order.</summary>
    public IReadOnlyList<ParameterBinding> Parameters => Binding.Parameters;

    private ModelCheckpoint(ModelConfig config, CheckpointReader tensors, CheckpointBinding binding)
    {
        Config = config;
        Tensors = tensors;
        Binding = binding;
    }

    /// <summary>Loads config.json, opens the safetensors (single or sharded) and binds them.</summary>
    /// <exception cref="UserInputException">Any problem with the config, the files, or their match.</exception>
    public static ModelCheckpoint Open(string directory)
    {
        if (!Directory.Exists(directory)) throw new UserInputException($"checkpoint directory '{directory}' does not exist");
        var config = ModelConfig.Load(directory);
        var tensors = CheckpointReader.Open(directory);
        try
        {
            return new ModelCheckpoint(config, tensors, CheckpointNames.Bind(config, tensors));
        }
        catch
        {
            tensors.Dispose();
            throw;
        }
    }

    /// <summary>Reads canonical parameter <paramref name="canonicalName"/> into <paramref name="destination"/>
    /// (length = element count), in canonical layout.</summary>
    public void ReadParameter(string canonicalName, Span<float> destination)
    {
        var p = Binding[canonicalName];
        if (destination.Length != p.ElementCount)
            throw new ArgumentException($"parameter '{canonicalName}' has {p.ElementCount} elements {TensorInfo.FormatShape(p.Shape)}, the destination {destination.Length}", nameof(destination));
        if (p.FusedTotalRows is int totalRows)
        {
            // Phi-3's fused projections: read the whole tensor, keep this parameter's rows.
            long rowLength = p.RowLength;
            float[] whole = ArrayPool<float>.Shared.Rent(checked((int)(totalRows * rowLength)));
            try
            {
                Tensors.ReadInto(p.CheckpointName, whole.AsSpan(0, (int)(totalRows * rowLength)));
                whole.AsSpan((int)(p.FusedFirstRow * rowLength), destination.Length).CopyTo(destination);
            }
            finally
            {
                ArrayPool<float>.Shared.Return(whole);
            }
            return;
        }
        if (!p.Transposed)
        {
            Tensors.ReadInto(p.CheckpointName, destination);
            return;
        }
        float[] stored = ArrayPool<float>.Shared.Rent(destination.Length);
        try
        {
            Tensors.ReadInto(p.CheckpointName, stored.AsSpan(0, destination.Length));
            Transpose(stored.AsSpan(0, destination.Length), p.StoredShape[0], p.StoredShape[1], destination);
        }
        finally
        {
            ArrayPool<float>.Shared.Return(stored);
        }
    }

    /// <summary>
    /// Canonical parameter <paramref name="canonicalName"/> as raw bf16 bits, straight from a BF16 checkpoint tensor stored
    /// in canonical layout; false (nothing read) when it is stored otherwise (another dtype, transposed, fused).
    /// </summary>
    public bool TryReadParameterBf16(string canonicalName, Span<ushort> destination)
    {
        var p = Binding[canonicalName];
        if (p.FusedTotalRows != null || p.Transposed) return false;
        return Tensors.TryReadBf16Into(p.CheckpointName, destination);
    }

    /// <summary>Whether the checkpoint stores its matrices in bf16 (what frozen weights follow by default).</summary>
    public bool StoresBf16 => Parameters.Where(p => p.Shape.Length == 2).All(p => Tensors.GetInfo(p.CheckpointName).Dtype == SafetensorsDtype.BF16);

    /// <summary>Reads canonical parameter <paramref name="canonicalName"/> into a new array.</summary>
    public float[] ReadParameter(string canonicalName)
    {
        var result = new float[Binding[canonicalName].ElementCount];
        ReadParameter(canonicalName, result);
        return result;
    }

    /// <summary>
    /// Saves a model as save_pretrained would: <c>config.json</c> and safetensors (sharded above
    /// <paramref name="maxShardBytes"/>) with HF names. <paramref name="parameter"/> returns each canonical
    /// parameter in canonical layout; GPT-2 matrices are transposed to Conv1D [in, out] on the way out.
    /// config.json gets <c>torch_dtype</c> set to the storage dtype. Returns the safetensors file names written.
    /// </summary>
    public static IReadOnlyList<string> Save(string directory, ModelConfig config, Func<string, ReadOnlyMemory<float>> parameter,
        SafetensorsDtype dtype = SafetensorsDtype.F32, long maxShardBytes = SafetensorsWriter.DefaultMaxShardBytes)
    {
        var tensors = new List<(string, int[], ReadOnlyMemory<float>)>();
        var fusedTensors = new Dictionary<string, float[]>(StringComparer.Ordinal);
        foreach (var p in CheckpointNames.ForSaving(config))
        {
            var data = parameter(p.CanonicalName);
            if (data.Length != p.ElementCount)
                throw new ArgumentException($"parameter '{p.CanonicalName}' should have {p.ElementCount} elements {TensorInfo.FormatShape(p.Shape)}, got {data.Length}", nameof(parameter));
            if (p.FusedTotalRows is int totalRows)
            {
                // Phi-3: the parts of one stored tensor are written into it at their rows, the tensor listed once.
                if (!fusedTensors.TryGetValue(p.CheckpointName, out var whole))
                {
                    whole = new float[totalRows * p.RowLength];
                    fusedTensors[p.CheckpointName] = whole;
                    tensors.Add((p.CheckpointName, p.StoredShape, whole));
                }
                data.Span.CopyTo(whole.AsSpan((int)(p.FusedFirstRow * p.RowLength)));
                continue;
            }
            if (p.Transposed)
            {
                var stored = new float[data.Length];
                Transpose(data.Span, p.Shape[0], p.Shape[1], stored);
                data = stored;
            }
            tensors.Add((p.CheckpointName, p.StoredShape, data));
        }
        Directory.CreateDirectory(directory);
        var written = SafetensorsWriter.WriteCheckpoint(directory, tensors, dtype, null, maxShardBytes);
        // save_pretrained records the dtype the weights were stored in.
        var json = config.ToJsonObject();
        string dtypeName = dtype switch
        {
            SafetensorsDtype.BF16 => "bfloat16",
            SafetensorsDtype.F16 => "float16",
            _ => "float32",
        };
        json["torch_dtype"] = dtypeName;
        // transformers 5 writes the same as "dtype"; a config read from it keeps that key, and it must not go stale.
        if (json.ContainsKey("dtype")) json["dtype"] = dtypeName;
        AtomicFile.WriteText(Path.Combine(directory, "config.json"), json.ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true }) + "\n");
        return written;
    }

    public void Dispose() => Tensors.Dispose();

    /// <summary>source [rows, cols] → destination [cols, rows].</summary>
    internal static void Transpose(ReadOnlySpan<float> source, int rows, int cols, Span<float> destination)
    {
        const int Block = 32; // keeps both the read and the write side within a few cache lines per tile
        for (int r0 = 0; r0 < rows; r0 += Block)
        for (int c0 = 0; c0 < cols; c0 += Block)
        {
            int r1 = Math.Min(r0 + Block, rows), c1 = Math.Min(c0 + Block, cols);
            for (int r = r0; r < r1; r++)
            for (int c = c0; c < c1; c++)
                destination[c * rows + r] = source[r * cols + c];
        }
    }
}
