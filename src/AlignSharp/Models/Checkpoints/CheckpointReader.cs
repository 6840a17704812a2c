using System.Text.Json;

namespace AlignSharp.Models.Checkpoints;

/// <summary>
/// One tensor set over a Hugging Face checkpoint: a single <c>model.safetensors</c>, or shards listed by
/// <c>model.safetensors.index.json</c> (<c>{"weight_map": {tensor name: shard file}}</c>). As in transformers,
/// the index decides which tensors exist; a tensor a shard holds but the index does not list is ignored.
/// Every shard is opened (and its header validated) up front.
/// </summary>
public sealed class CheckpointReader : IDisposable
{
    /// <summary>File name of an unsharded checkpoint.</summary>
    public const string SingleFileName = "model.safetensors";

    /// <summary>File name of the shard index of a sharded checkpoint.</summary>
    public const string IndexFileName = "model.safetensors.index.json";

    private readonly List<SafetensorsFile> _files;
    private readonly Dictionary<string, SafetensorsFile> _fileOf;
    private readonly List<string> _names;

    /// <summary>The directory or file the checkpoint was opened from.</summary>
    public string Location { get; }

    /// <summary>The safetensors files backing the checkpoint (one, or the shards in index order).</summary>
    public IReadOnlyList<SafetensorsFile> Files => _files;

    /// <summary>Tensor names, sorted ordinally.</summary>
    public IReadOnlyList<string> Names => _names;

    private CheckpointReader(string location, List<SafetensorsFile> files, Dictionary<string, SafetensorsFile> fileOf)
    {
        Location = location;
        _files = files;
        _fileOf = fileOf;
        _names = fileOf.Keys.OrderBy(n => n, StringComparer.Ordinal).ToList();
    }

    /// <summary>
    /// Opens a checkpoint directory (<c>model.safetensors</c> when it has one, else the shards its
    /// <c>model.safetensors.index.json</c> lists: transformers' from_pretrained looks for SAFE_WEIGHTS_NAME before
    /// SAFE_WEIGHTS_INDEX_NAME, so a directory holding both loads the single file), or a single <c>.safetensors</c>
    /// file given directly.
    /// </summary>
    /// <exception cref="UserInputException">Nothing to open, a bad index, a missing shard, a tensor the index
    /// places in a shard that lacks it, or a corrupt file; the message names the file and the tensor.</exception>
    public static CheckpointReader Open(string path)
    {
        if (File.Exists(path)) return OpenSingle(path, path);
        if (!Directory.Exists(path))
            throw new UserInputException($"checkpoint '{path}' does not exist");

        string single = Path.Combine(path, SingleFileName);
        if (File.Exists(single)) return OpenSingle(path, single);
        string index = Path.Combine(path, IndexFileName);
        if (File.Exists(index)) return OpenSharded(path, index);

        string hint = File.Exists(Path.Combine(path, "pytorch_model.bin")) || File.Exists(Path.Combine(path, "pytorch_model.bin.index.json"))
            ? " (it has a PyTorch .bin checkpoint, which AlignSharp does not read: convert it to safetensors)"
            : "";
        throw new UserInputException($"checkpoint directory '{path}' has neither {SingleFileName} nor {IndexFileName}{hint}");
    }

    private static CheckpointReader OpenSingle(string location, string filePath)
    {
        var file = SafetensorsFile.Open(filePath);
        return new CheckpointReader(location, [file], file.Names.ToDictionary(n => n, _ => file, StringComparer.Ordinal));
    }

    private static CheckpointReader OpenSharded(string directory, string index)
    {
        Dictionary<string, string> weightMap = ReadWeightMap(index);
        var byShard = weightMap.GroupBy(kv => kv.Value, StringComparer.Ordinal).ToList();
        var files = new List<SafetensorsFile>();
        var fileOf = new Dictionary<string, SafetensorsFile>(StringComparer.Ordinal);
        try
        {
            foreach (var group in byShard)
            {
                string shard = group.Key;
                string shardPath = Path.Combine(directory, shard);
                if (!File.Exists(shardPath))
                {
                    string first = group.Select(kv => kv.Key).Min(StringComparer.Ordinal)!;
                    int others = group.Count() - 1;
                    throw new UserInputException($"shard '{shard}' listed in '{index}' does not exist (the index places tensor '{first}'{(others > 0 ? $" and {others} others" : "")} in it)");
                }
                var file = SafetensorsFile.Open(shardPath);
                files.Add(file);
                foreach (var (name, _) in group.OrderBy(kv => kv.Key, StringComparer.Ordinal))
                {
                    if (!file.Contains(name))
                        throw new UserInputException($"'{index}' places tensor '{name}' in shard '{shardPath}', but that shard has no such tensor");
                    fileOf[name] = file;
                }
            }
        }
        catch
        {
            foreach (var f in files) f.Dispose();
            throw;
        }
        return new CheckpointReader(directory, files, fileOf);
    }

    private static Dictionary<string, string> ReadWeightMap(string index)
    {
        JsonDocument doc;
        try { doc = JsonDocument.Parse(File.ReadAllBytes(index)); }
        catch (JsonException e) { throw new UserInputException($"shard index '{index}' is not valid JSON: {e.Message}", e); }
        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object
                || !doc.RootElement.TryGetProperty("weight_map", out var map)
                || map.ValueKind != JsonValueKind.Object)
                throw new UserInputException($"shard index '{index}' has no object field 'weight_map'");
            var result = new Dictionary<string, string>(StringComparer.Ordinal);
            foreach (var entry in map.EnumerateObject())
            {
                if (entry.Value.ValueKind != JsonValueKind.String)
                    throw new UserInputException($"shard index '{index}': 'weight_map' entry for tensor '{entry.Name}' is not a file name");
                string shard = entry.Value.GetString()!;
                // Shards live beside the index: refuse paths so that an index cannot point outside the checkpoint.
                if (shard.Length == 0 || Path.GetFileName(shard) != shard || shard is "." or "..")
                    throw new UserInputException($"shard index '{index}': tensor '{entry.Name}' maps to '{shard}', which is not a plain file name in the checkpoint directory");
                if (!result.TryAdd(entry.Name, shard))
                    throw new UserInputException($"shard index '{index}': tensor '{entry.Name}' appears twice in 'weight_map'");
            }
            if (result.Count == 0)
                throw new UserInputException($"shard index '{index}' has an empty 'weight_map'");
            return result;
        }
    }

    /// <summary>Whether the checkpoint has a tensor called <paramref name="name"/>.</summary>
    public bool Contains(string name) => _fileOf.ContainsKey(name);

    /// <summary>Dtype and shape of <paramref name="name"/>.</summary>
    /// <exception cref="UserInputException">No such tensor.</exception>
    public TensorInfo GetInfo(string name) => FileFor(name).GetInfo(name);

    /// <summary>Path of the file holding <paramref name="name"/> (for error messages).</summary>
    public string FileOf(string name) => FileFor(name).Path;

    /// <summary>Converts tensor <paramref name="name"/> to float32 into <paramref name="destination"/> (see
    /// <see cref="SafetensorsFile.ReadInto"/>).</summary>
    public void ReadInto(string name, Span<float> destination) => FileFor(name).ReadInto(name, destination);

    /// <summary>Reads tensor <paramref name="name"/> into a new float32 array.</summary>
    public float[] Read(string name) => FileFor(name).Read(name);

    /// <summary>A BF16 tensor's raw bits (see <see cref="SafetensorsFile.TryReadBf16Into"/>); false when stored otherwise.</summary>
    public bool TryReadBf16Into(string name, Span<ushort> destination) => FileFor(name).TryReadBf16Into(name, destination);

    /// <summary>Every tensor's shape, keyed by name (the input of <see cref="CheckpointNames.Bind(AlignSharp.Models.ModelConfig, IReadOnlyDictionary{string, long[]}, string, Func{string, string}?)"/>).</summary>
    public IReadOnlyDictionary<string, long[]> Shapes() => _names.ToDictionary(n => n, n => GetInfo(n).Shape, StringComparer.Ordinal);

    private SafetensorsFile FileFor(string name) =>
        _fileOf.TryGetValue(name, out var file)
            ? file
            : throw new UserInputException($"tensor '{name}' is not in checkpoint '{Location}'");

    public void Dispose()
    {
        foreach (var f in _files) f.Dispose();
    }
}
