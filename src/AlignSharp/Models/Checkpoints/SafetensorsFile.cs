using System.IO.MemoryMappedFiles;
using System.Runtime.InteropServices;
using System.Text.Json;

namespace AlignSharp.Models.Checkpoints;

/// <summary>
/// A read-only, memory-mapped safetensors file. Layout: an 8-byte little-endian header length N, N bytes of
/// UTF-8 JSON (<c>{"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}</c>, offsets
/// relative to the first byte after the header), then the raw little-endian tensor data.
/// <para>Opening parses and validates the whole header (offsets inside the file, sizes equal to dtype×shape,
/// no two tensors overlapping) so that a truncated or corrupt file fails here, naming the file and the tensor,
/// and not halfway through a load. Tensor bytes are never copied into managed memory except into the caller's
/// destination by <see cref="ReadInto"/>, and a tensor's pages leave the process's resident memory once it is read
/// (<see cref="DropPages"/>). Reads may run concurrently; dispose once all reads are done.</para>
/// </summary>
public sealed unsafe class SafetensorsFile : IDisposable
{
    /// <summary>Headers larger than this are rejected as corrupt (the reference implementation uses the same bound).</summary>
    public const long MaxHeaderBytes = 100_000_000;

    private const int ChunkElements = 1 << 16;

    private readonly MemoryMappedFile _map;
    private readonly MemoryMappedViewAccessor _view;
    private byte* _base;
    private readonly long _dataStart;
    private readonly Dictionary<string, Entry> _entries;
    private readonly List<string> _names;

    private readonly record struct Entry(TensorInfo Info, long Begin, long End);

    /// <summary>Path the file was opened with.</summary>
    public string Path { get; }

    /// <summary>Size of the file in bytes.</summary>
    public long Length { get; }

    /// <summary>The <c>__metadata__</c> string map (empty when the header has none).</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>Tensor names in the order their data lies in the file.</summary>
    public IReadOnlyList<string> Names => _names;

    /// <summary>All tensors, in file order.</summary>
    public IEnumerable<TensorInfo> Tensors => _names.Select(n => _entries[n].Info);

    private SafetensorsFile(string path, long length, MemoryMappedFile map, MemoryMappedViewAccessor view, byte* basePointer)
    {
        Path = path;
        Length = length;
        _map = map;
        _view = view;
        _base = basePointer;
        (Metadata, _entries, _names, _dataStart) = ParseHeader();
    }

    /// <summary>Maps <paramref name="path"/> and validates its header.</summary>
    /// <exception cref="UserInputException">The file is missing, truncated or its header is corrupt.</exception>
    public static SafetensorsFile Open(string path)
    {
        var info = new FileInfo(path);
        if (!info.Exists) throw new UserInputException($"safetensors file '{path}' does not exist");
        long length = info.Length;
        if (length < 8)
            throw new UserInputException($"safetensors file '{path}' is {length} bytes long, too short to hold the 8-byte header length (truncated or not a safetensors file)");

        MemoryMappedFile? map = null;
        MemoryMappedViewAccessor? view = null;
        bool acquired = false;
        try
        {
            var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read | FileShare.Delete);
            map = MemoryMappedFile.CreateFromFile(stream, null, 0, MemoryMappedFileAccess.Read, HandleInheritability.None, leaveOpen: false);
            view = map.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
            byte* pointer = null;
            view.SafeMemoryMappedViewHandle.AcquirePointer(ref pointer);
            acquired = true;
            return new SafetensorsFile(path, length, map, view, pointer + view.PointerOffset);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            Release(view, map, acquired);
            throw new UserInputException($"cannot open safetensors file '{path}': {e.Message}", e);
        }
        catch
        {
            Release(view, map, acquired);
            throw;
        }
    }

    /// <summary>Whether the file holds a tensor called <paramref name="name"/>.</summary>
    public bool Contains(string name) => _entries.ContainsKey(name);

    /// <summary>Dtype and shape of <paramref name="name"/>.</summary>
    /// <exception cref="UserInputException">No such tensor.</exception>
    public TensorInfo GetInfo(string name) => Find(name).Info;

    /// <summary>
    /// Converts tensor <paramref name="name"/> to float32 into <paramref name="destination"/>, row-major as stored.
    /// F32 is copied, BF16 and F16 widen exactly, F64 rounds to nearest.
    /// </summary>
    /// <exception cref="ArgumentException"><paramref name="destination"/> length differs from the element count.</exception>
    /// <exception cref="UserInputException">No such tensor, or a dtype that is not a float type.</exception>
    public void ReadInto(string name, Span<float> destination)
    {
        ObjectDisposedException.ThrowIf(_base == null, this);
        var entry = Find(name);
        var info = entry.Info;
        if (destination.Length != info.ElementCount)
            throw new ArgumentException($"tensor '{name}' in '{Path}' has {info.ElementCount} elements {info.ShapeText}, but the destination holds {destination.Length}", nameof(destination));
        if (!info.Dtype.IsReadable())
            throw new UserInputException($"tensor '{name}' in safetensors file '{Path}' has dtype {info.Dtype.HeaderName()}; only F32, BF16, F16 and F64 tensors can be read as float32");

        int size = info.Dtype.ByteSize();
        byte* source = _base + _dataStart + entry.Begin;
        for (int start = 0; start < destination.Length; start += ChunkElements)
        {
            int count = Math.Min(ChunkElements, destination.Length - start);
            var bytes = new ReadOnlySpan<byte>(source + (long)start * size, count * size);
            var target = destination.Slice(start, count);
            switch (info.Dtype)
            {
                case SafetensorsDtype.F32: FloatFormats.F32BytesToFloat(bytes, target); break;
                case SafetensorsDtype.BF16: FloatFormats.Bf16BytesToFloat(bytes, target); break;
                case SafetensorsDtype.F16: FloatFormats.F16BytesToFloat(bytes, target); break;
                default: FloatFormats.F64BytesToFloat(bytes, target); break;
            }
        }
        DropPages(entry);
    }

    /// <summary>
    /// Copies a BF16 tensor's raw bits into <paramref name="destination"/> (no float32 on the way: frozen weights kept in
    /// bf16); false, with nothing written, when the tensor is stored in another dtype.
    /// </summary>
    public bool TryReadBf16Into(string name, Span<ushort> destination)
    {
        ObjectDisposedException.ThrowIf(_base == null, this);
        var entry = Find(name);
        if (entry.Info.Dtype != SafetensorsDtype.BF16 || !BitConverter.IsLittleEndian) return false;
        if (destination.Length != entry.Info.ElementCount)
            throw new ArgumentException($"tensor '{name}' in '{Path}' has {entry.Info.ElementCount} elements {entry.Info.ShapeText}, but the destination holds {destination.Length}", nameof(destination));
        new ReadOnlySpan<ushort>(_base + _dataStart + entry.Begin, destination.Length).CopyTo(destination);
        DropPages(entry);
        return true;
    }

    /// <summary>
    /// Takes a tensor's pages, once read, out of the process's resident memory (Linux: madvise MADV_DONTNEED on the whole
    /// pages inside it; the file stays in the page cache, and the read-only mapping faults them back in if read again).
    /// Otherwise every page read counts as the process's own until the file is closed: loading a 1.5B-parameter bf16
    /// model peaked at its 3 GB copy plus the 3 GB file it was copied from.
    /// </summary>
    private void DropPages(Entry entry)
    {
        if (!OperatingSystem.IsLinux()) return;
        long page = Environment.SystemPageSize;
        long start = (long)(_base + _dataStart + entry.Begin), end = (long)(_base + _dataStart + entry.End);
        long first = (start + page - 1) / page * page, last = end / page * page;
        if (last > first) _ = madvise((nint)first, (nuint)(last - first), MadviseDontNeed); // advice only: a failure changes nothing read
    }

    private const int MadviseDontNeed = 4; // MADV_DONTNEED in Linux's mman-common.h

    [DllImport("libc", SetLastError = true)]
    private static extern int madvise(nint address, nuint length, int advice);

    /// <summary>Reads tensor <paramref name="name"/> into a new float32 array.</summary>
    public float[] Read(string name)
    {
        long count = Find(name).Info.ElementCount;
        if (count > Array.MaxLength)
            throw new UserInputException($"tensor '{name}' in '{Path}' has {count} elements, more than one array can hold; read it in parts");
        var result = new float[count];
        ReadInto(name, result);
        return result;
    }

    public void Dispose()
    {
        if (_base == null) return;
        _base = null;
        Release(_view, _map, acquired: true);
    }

    private static void Release(MemoryMappedViewAccessor? view, MemoryMappedFile? map, bool acquired)
    {
        if (view != null)
        {
            if (acquired) view.SafeMemoryMappedViewHandle.ReleasePointer();
            view.Dispose();
        }
        map?.Dispose();
    }

    private Entry Find(string name) =>
        _entries.TryGetValue(name, out var entry)
            ? entry
            : throw new UserInputException($"tensor '{name}' is not in safetensors file '{Path}'");

    private UserInputException Corrupt(string detail) => new($"safetensors file '{Path}' is corrupt: {detail}");

    private (IReadOnlyDictionary<string, string>, Dictionary<string, Entry>, List<string>, long) ParseHeader()
    {
        ulong headerLength = *(ulong*)_base;
        if (!BitConverter.IsLittleEndian) headerLength = System.Buffers.Binary.BinaryPrimitives.ReverseEndianness(headerLength);
        if (headerLength > MaxHeaderBytes)
            throw Corrupt($"the header length field says {headerLength} bytes (more than {MaxHeaderBytes}); this is not a safetensors file");
        if ((long)headerLength > Length - 8)
            throw Corrupt($"the header length field says {headerLength} bytes but only {Length - 8} follow (truncated file?)");
        long dataStart = 8 + (long)headerLength;
        long dataLength = Length - dataStart;

        var headerBytes = new ReadOnlySpan<byte>(_base + 8, (int)headerLength).ToArray();
        // System.Text.Json only notices invalid UTF-8 inside a string when the string is read (an InvalidOperationException).
        if (!System.Text.Unicode.Utf8.IsValid(headerBytes)) throw Corrupt("the header is not valid UTF-8");
        JsonDocument doc;
        try { doc = JsonDocument.Parse(headerBytes); }
        catch (JsonException e) { throw Corrupt($"the header is not valid JSON ({e.Message})"); }

        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
                throw Corrupt("the header is not a JSON object");
            var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
            var entries = new Dictionary<string, Entry>(StringComparer.Ordinal);
            foreach (var property in doc.RootElement.EnumerateObject())
            {
                if (property.Name == "__metadata__")
                {
                    if (property.Value.ValueKind != JsonValueKind.Object)
                        throw Corrupt("'__metadata__' is not an object of strings");
                    foreach (var item in property.Value.EnumerateObject())
                    {
                        if (item.Value.ValueKind != JsonValueKind.String)
                            throw Corrupt($"'__metadata__' field '{item.Name}' is not a string");
                        metadata[item.Name] = item.Value.GetString()!;
                    }
                    continue;
                }
                var entry = ParseEntry(property.Name, property.Value, dataLength);
                if (!entries.TryAdd(property.Name, entry))
                    throw Corrupt($"tensor '{property.Name}' appears twice in the header");
            }

            var names = entries.Keys.ToList();
            names.Sort((a, b) =>
            {
                int c = entries[a].Begin.CompareTo(entries[b].Begin);
                return c != 0 ? c : string.CompareOrdinal(a, b);
            });
            // As the safetensors library validates a file (and so transformers loads one): the tensors' data tile the
            // data section exactly, no overlap, no gap, nothing after the last. A gap or a tail is a damaged or spliced file.
            string? previous = null;
            long end = 0;
            foreach (var name in names)
            {
                var entry = entries[name];
                if (entry.Begin == entry.End) continue;
                if (previous != null && entries[previous].End > entry.Begin)
                    throw Corrupt($"the data of tensors '{previous}' (bytes {entries[previous].Begin}..{entries[previous].End}) and '{name}' (bytes {entry.Begin}..{entry.End}) overlap");
                if (entry.Begin != end)
                    throw Corrupt($"the data of tensor '{name}' starts at byte {entry.Begin} of the data section, but {(previous == null ? "the section starts at 0" : $"'{previous}' ends at {end}")}: the file has a gap where no tensor lies");
                previous = name;
                end = entry.End;
            }
            if (end != dataLength)
                throw Corrupt($"the tensors' data ends at byte {end} of the data section, but the file holds {dataLength} bytes there: {dataLength - end} bytes belong to no tensor (a damaged or spliced file)");
            return (metadata, entries, names, dataStart);
        }
    }

    private Entry ParseEntry(string name, JsonElement value, long dataLength)
    {
        if (value.ValueKind != JsonValueKind.Object)
            throw Corrupt($"the header entry of tensor '{name}' is not an object");
        if (!value.TryGetProperty("dtype", out var dtypeElement) || dtypeElement.ValueKind != JsonValueKind.String)
            throw Corrupt($"tensor '{name}' has no string field 'dtype'");
        string dtypeName = dtypeElement.GetString()!;
        if (!SafetensorsDtypes.TryParse(dtypeName, out var dtype))
            throw Corrupt($"tensor '{name}' has unknown dtype '{dtypeName}'");

        if (!value.TryGetProperty("shape", out var shapeElement) || shapeElement.ValueKind != JsonValueKind.Array)
            throw Corrupt($"tensor '{name}' has no array field 'shape'");
        var shape = new long[shapeElement.GetArrayLength()];
        long elements = 1;
        int axis = 0;
        foreach (var d in shapeElement.EnumerateArray())
        {
            if (d.ValueKind != JsonValueKind.Number || !d.TryGetInt64(out long dim) || dim < 0)
                throw Corrupt($"tensor '{name}' has shape entry {d} that is not a non-negative integer");
            shape[axis++] = dim;
            try { elements = checked(elements * dim); }
            catch (OverflowException) { throw Corrupt($"tensor '{name}' has shape {TensorInfo.FormatShape(shape)} whose size overflows"); }
        }

        if (!value.TryGetProperty("data_offsets", out var offsets) || offsets.ValueKind != JsonValueKind.Array || offsets.GetArrayLength() != 2)
            throw Corrupt($"tensor '{name}' has no field 'data_offsets' of two integers");
        if (!offsets[0].TryGetInt64(out long begin) || !offsets[1].TryGetInt64(out long end) || begin < 0 || end < begin)
            throw Corrupt($"tensor '{name}' has data_offsets {offsets} that are not integers 0 <= begin <= end");

        long expectedBytes;
        try { expectedBytes = checked(elements * dtype.ByteSize()); }
        catch (OverflowException) { throw Corrupt($"tensor '{name}' has shape {TensorInfo.FormatShape(shape)} whose size overflows"); }
        if (end - begin != expectedBytes)
            throw Corrupt($"tensor '{name}' ({dtypeName} {TensorInfo.FormatShape(shape)}) needs {expectedBytes} bytes but its data_offsets [{begin}, {end}] span {end - begin}");
        if (end > dataLength)
            throw Corrupt($"tensor '{name}' data ends at byte {end} of the data section, but the file holds only {dataLength} data bytes (truncated file?)");
        return new Entry(new TensorInfo(name, dtype, shape), begin, end);
    }
}
