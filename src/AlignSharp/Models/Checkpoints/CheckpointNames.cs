using System.Text;

namespace AlignSharp.Models.Checkpoints;

/// <summary>One model parameter and where it lives in a checkpoint. <see cref="Shape"/> is the canonical shape
/// (matrices [out, in]); the checkpoint stores <see cref="StoredShape"/>, the transpose when
/// <see cref="Transposed"/> (GPT-2 Conv1D). A fused parameter (<see cref="FusedTotalRows"/> set, Phi-3) is rows
/// [<see cref="FusedFirstRow"/>, + Shape[0]) of a checkpoint tensor with FusedTotalRows rows.</summary>
public sealed record ParameterBinding(string CanonicalName, int[] Shape, string CheckpointName, bool Transposed,
    int FusedFirstRow = 0, int? FusedTotalRows = null)
{
    public int[] StoredShape => FusedTotalRows is int rows ? [rows, .. Shape[1..]] : Transposed ? [Shape[1], Shape[0]] : Shape;

    /// <summary>Elements of one row (the product of every dimension but the first).</summary>
    public long RowLength
    {
        get
        {
            long n = 1;
            foreach (int d in Shape[1..]) n *= d;
            return n;
        }
    }

    public long ElementCount
    {
        get
        {
            long n = 1;
            foreach (int d in Shape) n *= d;
            return n;
        }
    }
}

/// <summary>The result of matching a checkpoint against a config: every canonical parameter with its
/// checkpoint tensor, in model order, plus the checkpoint tensors deliberately skipped (buffers, a tied head).</summary>
public sealed record CheckpointBinding(ModelConfig Config, string BodyPrefix, IReadOnlyList<ParameterBinding> Parameters, IReadOnlyList<string> Ignored)
{
    /// <summary>The binding of canonical parameter <paramref name="canonicalName"/>.</summary>
    /// <exception cref="ArgumentException">The config has no such parameter.</exception>
    public ParameterBinding this[string canonicalName] =>
        Parameters.FirstOrDefault(p => p.CanonicalName == canonicalName)
        ?? throw new ArgumentException($"the {ModelConfig.ModelTypeName(Config.Family)} config has no parameter '{canonicalName}'", nameof(canonicalName));
}

/// <summary>
/// Maps Hugging Face tensor names to AlignSharp's canonical parameter names and back, from one static table per
/// family (see README.md beside this file for the canonical scheme).
/// </summary>
public static class CheckpointNames
{
    private const int MaxListed = 20;

    /// <summary>The canonical parameters of <paramref name="config"/>, in model order, bound to the names
    /// save_pretrained writes (gpt2: <c>transformer.</c> prefix and Conv1D [in, out] storage; Llama family:
    /// <c>model.</c> prefix).</summary>
    public static IReadOnlyList<ParameterBinding> ForSaving(ModelConfig config)
    {
        var table = TableFor(config.Family);
        return Expected(config, table, table.Prefixes[0]);
    }

    /// <summary>The bindings under every naming style the family's checkpoints use (save_pretrained's first), e.g. GPT-2's
    /// <c>transformer.</c>-prefixed and bare hub names.</summary>
    public static IEnumerable<IReadOnlyList<ParameterBinding>> AllNamings(ModelConfig config)
    {
        var table = TableFor(config.Family);
        foreach (var prefix in table.Prefixes) yield return Expected(config, table, prefix);
    }

    /// <summary>Binds the tensors of an open checkpoint (see the other overload).</summary>
    public static CheckpointBinding Bind(ModelConfig config, CheckpointReader checkpoint) =>
        Bind(config, checkpoint.Shapes(), checkpoint.Location, checkpoint.FileOf);

    /// <summary>
    /// Matches checkpoint tensor names and shapes against <paramref name="config"/>: detects the naming style
    /// (body prefix), returns the canonical parameter list, and fails with one message listing every missing,
    /// unexpected and wrongly shaped tensor.
    /// </summary>
    /// <param name="checkpointShapes">Checkpoint tensor name → stored shape.</param>
    /// <param name="source">The checkpoint, as named in errors.</param>
    /// <param name="fileOf">The file holding a tensor, for errors (default: <paramref name="source"/>).</param>
    /// <exception cref="UserInputException">The checkpoint does not match the config.</exception>
    public static CheckpointBinding Bind(ModelConfig config, IReadOnlyDictionary<string, long[]> checkpointShapes,
        string source, Func<string, string>? fileOf = null)
    {
        config.Validate(source);
        fileOf ??= _ => source;
        var table = TableFor(config.Family);
        // The first prefix some body tensor carries; heads are unprefixed, so they do not vote.
        string prefix = table.Prefixes.First(p => p.Length == 0 || checkpointShapes.Keys.Any(n => n.StartsWith(p, StringComparison.Ordinal)));
        var expected = Expected(config, table, prefix);

        var missing = new List<string>();
        var wrongShape = new List<string>();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var p in expected)
        {
            if (!seen.Add(p.CheckpointName)) continue;   // the later parts of a fused tensor
            if (!checkpointShapes.TryGetValue(p.CheckpointName, out var shape))
            {
                missing.Add($"missing tensor '{p.CheckpointName}' (parameter {p.CanonicalName}, shape {TensorInfo.FormatShape(p.StoredShape)})");
                continue;
            }
            if (!shape.SequenceEqual(p.StoredShape.Select(d => (long)d)))
                wrongShape.Add($"tensor '{p.CheckpointName}' in '{fileOf(p.CheckpointName)}' has shape {TensorInfo.FormatShape(shape)}, but the config needs {TensorInfo.FormatShape(p.StoredShape)}{(p.Transposed ? " (stored [in, out])" : "")}");
        }

        var expectedNames = expected.Select(p => p.CheckpointName).ToHashSet(StringComparer.Ordinal);
        var ignorable = new HashSet<string>(StringComparer.Ordinal);
        for (int i = 0; i < config.NumLayers; i++)
            foreach (var pattern in table.IgnoredPerLayer) ignorable.Add(prefix + pattern.Replace("{i}", i.ToString()));
        if (config.Head == HeadKind.LanguageModel && config.TieWordEmbeddings) ignorable.Add(table.LmHead);

        var ignored = new List<string>();
        var unexpected = new List<string>();
        foreach (var name in checkpointShapes.Keys.OrderBy(n => n, StringComparer.Ordinal))
        {
            if (expectedNames.Contains(name)) continue;
            if (ignorable.Contains(name)) ignored.Add(name);
            else unexpected.Add($"unexpected tensor '{name}' in '{fileOf(name)}'");
        }

        if (missing.Count + wrongShape.Count + unexpected.Count > 0)
        {
            var message = new StringBuilder();
            message.Append($"checkpoint '{source}' does not match its {ModelConfig.ModelTypeName(config.Family)} config ")
                .Append($"({config.NumLayers} layers, hidden {config.HiddenSize}, vocab {config.VocabSize}; tensor prefix '{prefix}'):");
            foreach (var list in new[] { missing, unexpected, wrongShape })
            {
                foreach (var line in list.Take(MaxListed)) message.Append("\n  ").Append(line);
                if (list.Count > MaxListed) message.Append($"\n  ... and {list.Count - MaxListed} more like it");
            }
            throw new UserInputException(message.ToString());
        }
        return new CheckpointBinding(config, prefix, expected, ignored);
    }

    private static NameTable TableFor(ModelFamily family) => FamilyTables.Of(family).Names;

    private static List<ParameterBinding> Expected(ModelConfig config, NameTable table, string prefix)
    {
        var result = new List<ParameterBinding>();
        void Add(NameRule rule, int layer)
        {
            if (rule.InLayer != null && !rule.InLayer(config, layer)) return;
            var shape = rule.Shape(config);
            if (shape is null) return;
            string layerText = layer.ToString();
            var fused = rule.Fused?.Invoke(config);
            result.Add(new ParameterBinding(
                rule.Canonical.Replace("{i}", layerText),
                shape,
                (rule.Unprefixed ? "" : prefix) + rule.Checkpoint.Replace("{i}", layerText),
                rule.Transposed,
                fused?.FirstRow ?? 0,
                fused?.TotalRows));
        }
        // Model order: embeddings, layers, final norm, head.
        foreach (var rule in table.Global.Where(r => !r.Canonical.StartsWith("final_norm", StringComparison.Ordinal))) Add(rule, -1);
        for (int i = 0; i < config.NumLayers; i++)
            foreach (var rule in table.PerLayer) Add(rule, i);
        foreach (var rule in table.Global.Where(r => r.Canonical.StartsWith("final_norm", StringComparison.Ordinal))) Add(rule, -1);
        foreach (var rule in table.Heads) Add(rule, -1);
        return result;
    }
}
