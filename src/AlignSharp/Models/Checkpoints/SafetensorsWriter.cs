using System.Buffers;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace AlignSharp.Models.Checkpoints;

/// <summary>
/// Writes float32 tensors as safetensors files the way Hugging Face's writer lays them out: tensors sorted by
/// name, data contiguous from offset 0, header JSON padded with spaces to a multiple of 8 bytes, and
/// <c>__metadata__</c> carrying <c>"format": "pt"</c> (transformers refuses archives without it). Every file is
/// written atomically (temporary file in the same directory, flushed, renamed).
/// </summary>
public static partial class SafetensorsWriter
{
    /// <summary>Shard limit used by <see cref="WriteCheckpoint"/> unless told otherwise: 5 GB, as save_pretrained.</summary>
    public const long DefaultMaxShardBytes = 5_000_000_000;

    private const int ChunkElements = 1 << 16;

    /// <summary>
    /// Writes <paramref name="tensors"/> (row-major float32, <c>Data.Length</c> = product of <c>Shape</c>) to
    /// <paramref name="path"/> stored as <paramref name="dtype"/> (F32, BF16 with round-to-nearest-even, or F16).
    /// </summary>
    /// <exception cref="ArgumentException">Duplicate or reserved names, negative dims, data length ≠ shape size.</exception>
    public static void Write(
        string path,
        IEnumerable<(string Name, int[] Shape, ReadOnlyMemory<float> Data)> tensors,
        SafetensorsDtype dtype = SafetensorsDtype.F32,
        IReadOnlyDictionary<string, string>? metadata = null)
    {
        var list = Validate(tensors, dtype);
        WriteFile(path, list, dtype, metadata);
    }

    /// <summary>
    /// Writes a checkpoint directory as save_pretrained does: one <c>model.safetensors</c> when the data fits in
    /// <paramref name="maxShardBytes"/>, else <c>model-0000i-of-0000n.safetensors</c> shards (filled in the order
    /// given, a tensor never split) plus <c>model.safetensors.index.json</c>. Stale files of the other layout
    /// (an old index, old shards, an old single file) are deleted after the new files are in place.
    /// Returns the file names written, index last.
    /// </summary>
    public static IReadOnlyList<string> WriteCheckpoint(
        string directory,
        IEnumerable<(string Name, int[] Shape, ReadOnlyMemory<float> Data)> tensors,
        SafetensorsDtype dtype = SafetensorsDtype.F32,
        IReadOnlyDictionary<string, string>? metadata = null,
        long maxShardBytes = DefaultMaxShardBytes)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(maxShardBytes);
        var list = Validate(tensors, dtype);
        var shards = new List<List<(string Name, int[] Shape, ReadOnlyMemory<float> Data)>> { new() };
        long current = 0, total = 0;
        foreach (var t in list)
        {
            long bytes = (long)t.Data.Length * dtype.ByteSize();
            if (current > 0 && current + bytes > maxShardBytes)
            {
                shards.Add([]);
                current = 0;
            }
            shards[^1].Add(t);
            current += bytes;
            total += bytes;
        }

        Directory.CreateDirectory(directory);
        var written = new List<string>();
        if (shards.Count == 1)
        {
            WriteFile(Path.Combine(directory, CheckpointReader.SingleFileName), list, dtype, metadata);
            written.Add(CheckpointReader.SingleFileName);
        }
        else
        {
            var weightMap = new SortedDictionary<string, string>(StringComparer.Ordinal);
            for (int i = 0; i < shards.Count; i++)
            {
                string file = $"model-{i + 1:D5}-of-{shards.Count:D5}.safetensors";
                WriteFile(Path.Combine(directory, file), shards[i], dtype, metadata);
                foreach (var t in shards[i]) weightMap[t.Name] = file;
                written.Add(file);
            }
            AtomicFile.Write(Path.Combine(directory, CheckpointReader.IndexFileName), stream =>
            {
                using var json = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true });
                json.WriteStartObject();
                json.WriteStartObject("metadata");
                json.WriteNumber("total_size", total);
                json.WriteEndObject();
                json.WriteStartObject("weight_map");
                foreach (var (name, file) in weightMap) json.WriteString(name, file);
                json.WriteEndObject();
                json.WriteEndObject();
            });
            written.Add(CheckpointReader.IndexFileName);
        }

        foreach (var stale in Directory.EnumerateFiles(directory))
        {
            string name = Path.GetFileName(stale);
            bool ours = name == CheckpointReader.SingleFileName || name == CheckpointReader.IndexFileName || ShardName().IsMatch(name);
            if (ours && !written.Contains(name)) File.Delete(stale);
        }
        return written;
    }

    [GeneratedRegex(@"^model-\d{5}-of-\d{5}\.safetensors$")]
    private static partial Regex ShardName();

    private static List<(string Name, int[] Shape, ReadOnlyMemory<float> Data)> Validate(
        IEnumerable<(string Name, int[] Shape, ReadOnlyMemory<float> Data)> tensors, SafetensorsDtype dtype)
    {
        if (!dtype.IsWritable())
            throw new ArgumentException($"cannot write float data as {dtype.HeaderName()}; use F32, BF16 or F16", nameof(dtype));
        var list = tensors.ToList();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var (name, shape, data) in list)
        {
            if (string.IsNullOrEmpty(name) || name == "__metadata__")
                throw new ArgumentException($"'{name}' cannot be a tensor name", nameof(tensors));
            if (!seen.Add(name))
                throw new ArgumentException($"tensor '{name}' is given twice", nameof(tensors));
            long count = 1;
            foreach (int d in shape)
            {
                if (d < 0) throw new ArgumentException($"tensor '{name}' has negative dimension in shape {TensorInfo.FormatShape(shape)}", nameof(tensors));
                count *= d;
            }
            if (count != data.Length)
                throw new ArgumentException($"tensor '{name}' has shape {TensorInfo.FormatShape(shape)} ({count} elements) but {data.Length} values", nameof(tensors));
        }
        return list;
    }

    private static void WriteFile(string path, List<(string Name, int[] Shape, ReadOnlyMemory<float> Data)> tensors,
        SafetensorsDtype dtype, IReadOnlyDictionary<string, string>? metadata)
    {
        var ordered = tensors.OrderBy(t => t.Name, StringComparer.Ordinal).ToList();
        byte[] header = BuildHeader(ordered, dtype, metadata);
        AtomicFile.Write(path, stream =>
        {
            Span<byte> length = stackalloc byte[8];
            System.Buffers.Binary.BinaryPrimitives.WriteUInt64LittleEndian(length, (ulong)header.Length);
            stream.Write(length);
            stream.Write(header);
            int size = dtype.ByteSize();
            byte[] buffer = ArrayPool<byte>.Shared.Rent(ChunkElements * size);
            try
            {
                foreach (var (_, _, data) in ordered)
                {
                    for (int start = 0; start < data.Length; start += ChunkElements)
                    {
                        int count = Math.Min(ChunkElements, data.Length - start);
                        var bytes = buffer.AsSpan(0, count * size);
                        FloatFormats.FloatToBytes(data.Span.Slice(start, count), dtype, bytes);
                        stream.Write(bytes);
                    }
                }
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(buffer);
            }
        });
    }

    /// <summary>Header JSON, padded with spaces to a multiple of 8 bytes as the reference writer does.</summary>
    private static byte[] BuildHeader(List<(string Name, int[] Shape, ReadOnlyMemory<float> Data)> ordered,
        SafetensorsDtype dtype, IReadOnlyDictionary<string, string>? metadata)
    {
        var meta = new SortedDictionary<string, string>(StringComparer.Ordinal);
        if (metadata != null) foreach (var (k, v) in metadata) meta[k] = v;
        meta.TryAdd("format", "pt");

        using var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer))
        {
            json.WriteStartObject();
            json.WriteStartObject("__metadata__");
            foreach (var (k, v) in meta) json.WriteString(k, v);
            json.WriteEndObject();
            long offset = 0;
            foreach (var (name, shape, data) in ordered)
            {
                long bytes = (long)data.Length * dtype.ByteSize();
                json.WriteStartObject(name);
                json.WriteString("dtype", dtype.HeaderName());
                json.WriteStartArray("shape");
                foreach (int d in shape) json.WriteNumberValue(d);
                json.WriteEndArray();
                json.WriteStartArray("data_offsets");
                json.WriteNumberValue(offset);
                json.WriteNumberValue(offset + bytes);
                json.WriteEndArray();
                json.WriteEndObject();
                offset += bytes;
            }
            json.WriteEndObject();
        }
        int padding = (int)((8 - buffer.Length % 8) % 8);
        for (int i = 0; i < padding; i++) buffer.WriteByte((byte)' ');
        return buffer.ToArray();
    }
}
