using AlignSharp.Engine;
using AlignSharp.Engine.Kernels;
using AlignSharp.Models.Checkpoints;

namespace AlignSharp.Models.Lora;

/// <summary>
/// One adapted module of the checkpoint (PEFT's unit): A [r, in], B [out, r], and the canonical parameters whose rows
/// it covers. A fused checkpoint tensor (Phi-3's qkv_proj) is one module whose B spans q, k and v; each canonical
/// part uses its block of B's rows with the shared A, which is exactly B·A restricted to those rows.
/// </summary>
public sealed class LoraModule
{
    /// <summary>The module's name in the checkpoint, save_pretrained naming (<c>model.layers.0.self_attn.q_proj</c>).</summary>
    public required string Module { get; init; }
    public required Tensor A { get; init; }
    public required Tensor B { get; init; }
    public required float Scale { get; init; }
    /// <summary>DoRA's magnitude m [out] (PEFT's <c>lora_magnitude_vector</c>), or null for plain LoRA.</summary>
    public Tensor? Magnitude { get; init; }
    /// <summary>Canonical linear prefix (<c>layers.0.attn.q</c>) → its first row in B and row count.</summary>
    public required IReadOnlyList<(string Prefix, int FirstRow, int Rows)> Parts { get; init; }
    public int Rank => A.Dim(0);
}

/// <summary>
/// A LoRA adapter on a <see cref="TransformerModel"/>: each adapted linear layer computes
/// y = x·Wᵀ + b + scale · (dropout(x)·Aᵀ)·Bᵀ; with DoRA (use_dora) y = b + (m / ‖W + scale·B·A‖) ⊙ (x·Wᵀ + scale·(x·Aᵀ)·Bᵀ),
/// see <see cref="DoraLinear"/>. Switching <see cref="Enabled"/> off gives the base model exactly (the
/// reference of DPO and RL needs no second copy). Saved and loaded in PEFT's format: adapter_config.json and
/// adapter_model.safetensors with <c>base_model.model.&lt;module&gt;.lora_A.weight</c> [r, in] and
/// <c>.lora_B.weight</c> [out, r].
/// </summary>
public sealed class LoraAdapter
{
    public const string WeightsFileName = "adapter_model.safetensors";
    const string PeftPrefix = "base_model.model.";

    private readonly Dictionary<string, (LoraModule Module, int FirstRow, int Rows)> _byPrefix = new(StringComparer.Ordinal);

    public LoraConfig Config { get; }
    public IReadOnlyList<LoraModule> Modules { get; }

    /// <summary>Whole model tensors that <see cref="Load"/> copied into the model from the adapter file (modules_to_save: <c>score.weight</c>).</summary>
    public IReadOnlyList<string> SavedModules { get; private init; } = [];

    /// <summary>False: every adapted layer computes the base layer alone.</summary>
    public bool Enabled { get; set; } = true;

    /// <summary>The dropout stream while training; null (evaluation, generation) disables dropout.</summary>
    public Random? DropoutRng { get; set; }

    private LoraAdapter(LoraConfig config, List<LoraModule> modules)
    {
        Config = config;
        Modules = modules;
        foreach (var m in modules)
            foreach (var (prefix, first, rows) in m.Parts) _byPrefix[prefix] = (m, first, rows);
    }

    /// <summary>The trainable tensors with PEFT's names, A and B of each module in model order.</summary>
    public IReadOnlyList<(string Name, Tensor Parameter)> NamedParameters =>
        Modules.SelectMany(m => m.Magnitude is { } magnitude
            ? new[] { (PeftName(m.Module, "lora_A"), m.A), (PeftName(m.Module, "lora_B"), m.B), (MagnitudeName(m.Module), magnitude) }
            : new[] { (PeftName(m.Module, "lora_A"), m.A), (PeftName(m.Module, "lora_B"), m.B) }).ToList();

    static string PeftName(string module, string part) => $"{PeftPrefix}{module}.{part}.weight";

    // PEFT saves DoRA's magnitude without the ".weight" its module has in memory.
    static string MagnitudeName(string module) => $"{PeftPrefix}{module}.{MagnitudeSuffix}";
    const string MagnitudeSuffix = "lora_magnitude_vector";

    /// <summary>
    /// The low-rank term of linear layer <paramref name="prefix"/> on input x [..., in], or null: u = scale·(dropout(x)·Aᵀ)
    /// [..., r] and B [out, r], so that the layer computes x·Wᵀ + b + u·Bᵀ (<see cref="Ops.LinearLowRank"/>).
    /// </summary>
    public (Tensor U, Tensor B)? LowRank(string prefix, Tensor x)
    {
        if (!Enabled || !_byPrefix.TryGetValue(prefix, out var entry)) return null;
        var (m, first, rows) = entry;
        var h = DropoutRng != null && Config.Dropout > 0 ? Ops.Dropout(x, (float)Config.Dropout, DropoutRng) : x;
        var b = rows == m.B.Dim(0) ? m.B : m.B.SliceRows(first, rows);
        // Scaled at rank r, not at the output width: one [N, out] activation fewer kept for the backward pass.
        return (Ops.MulScalar(Ops.Linear(h, m.A), m.Scale), b);
    }

    /// <summary>
    /// Linear layer <paramref name="prefix"/>'s factors where its term is scale·(x·Aᵀ)·Bᵀ with nothing drawn (no dropout
    /// now), so that a decoding product can make u itself (<see cref="Ops.LinearLayer"/>); null where the layer is not
    /// adapted, the adapter is off, or dropout applies (then <see cref="LowRank"/>).
    /// </summary>
    public (Tensor A, float Scale, Tensor B)? Factors(string prefix)
    {
        if (!Enabled || !_byPrefix.TryGetValue(prefix, out var entry) || (DropoutRng != null && Config.Dropout > 0)) return null;
        var (m, first, rows) = entry;
        return (m.A, m.Scale, rows == m.B.Dim(0) ? m.B : m.B.SliceRows(first, rows));
    }

    public bool Adapts(string prefix) => _byPrefix.ContainsKey(prefix);

    /// <summary>Whether linear layer <paramref name="prefix"/> has a DoRA module (then <see cref="DoraLinear"/> computes it, never a fused product).</summary>
    public bool IsDora(string prefix) => _byPrefix.TryGetValue(prefix, out var entry) && entry.Module.Magnitude != null;

    /// <summary>
    /// A DoRA layer's output (Liu et al. 2024, as PEFT computes it), or null where <paramref name="prefix"/> has no DoRA
    /// module or the adapter is off. With g = m / ‖W + scale·B·A‖ per output row (the norm a constant to autograd, §4.3
    /// of the paper) and h the input after dropout: y = x·Wᵀ + b + (g − 1) ⊙ h·Wᵀ + g ⊙ scale·(h·Aᵀ)·Bᵀ, which without
    /// dropout is b + g ⊙ (x·Wᵀ + scale·(x·Aᵀ)·Bᵀ).
    /// </summary>
    public Tensor? DoraLinear(string prefix, Tensor x, Tensor w, Tensor? bias)
    {
        if (!Enabled || !_byPrefix.TryGetValue(prefix, out var entry) || entry.Module.Magnitude is not { } magnitude) return null;
        var (m, first, rows) = entry;
        var inverseNorms = Tensor.FromArray(InverseRowNorms(prefix, m, first, rows, w), rows);
        var g = Ops.Mul(rows == magnitude.Length ? magnitude : Ops.Slice(magnitude, 0, first, rows), inverseNorms);
        bool dropout = DropoutRng != null && Config.Dropout > 0;
        var h = dropout ? Ops.Dropout(x, (float)Config.Dropout, DropoutRng!) : x;
        var b = rows == m.B.Dim(0) ? m.B : m.B.SliceRows(first, rows);
        var adapted = Ops.Mul(Ops.LinearLowRank(h, w, null, Ops.MulScalar(Ops.Linear(h, m.A), m.Scale), b), g);
        if (!dropout) return bias == null ? adapted : Ops.Add(adapted, bias);
        return Ops.Sub(Ops.Add(Ops.Linear(x, w, bias), adapted), Ops.Linear(h, w));
    }

    // The norms change only when A or B do (a step), but every forward pass and decoding step needs them: they are kept
    // with the A and B they were made from, and remade when those differ.
    private readonly Dictionary<string, (float[] A, float[] B, float[] Inverse)> _norms = new(StringComparer.Ordinal);

    private float[] InverseRowNorms(string prefix, LoraModule m, int first, int rows, Tensor w)
    {
        var a = m.A.Span;
        var b = m.B.Span.Slice(first * m.Rank, rows * m.Rank);
        lock (_norms)
        {
            if (_norms.TryGetValue(prefix, out var kept) && a.SequenceEqual(kept.A) && b.SequenceEqual(kept.B)) return kept.Inverse;
            var inverse = new float[rows];
            var row = new float[m.A.Dim(1)];
            for (int o = 0; o < rows; o++)
            {
                DeltaRow(m, w, o, first, row);
                inverse[o] = 1f / MathF.Sqrt(System.Numerics.Tensors.TensorPrimitives.SumOfSquares(row));
            }
            _norms[prefix] = (a.ToArray(), b.ToArray(), inverse);
            return inverse;
        }
    }

    // row = W[o, :] + scale·B[first + o, :]·A: the adapted weight's row o of a part.
    private static void DeltaRow(LoraModule m, Tensor w, int o, int first, Span<float> row)
    {
        WeightRow(w, o, row);
        AddDelta(m, first + o, row);
    }

    // Row o of a weight, a bf16 one widened exactly.
    private static void WeightRow(Tensor w, int o, Span<float> row)
    {
        int inF = row.Length;
        if (w.IsBf16) Bf16.Widen(w.Bf16Span.Slice(o * inF, inF), row);
        else w.Span.Slice(o * inF, inF).CopyTo(row);
    }

    /// <summary>
    /// Runs <paramref name="forward"/> with <paramref name="adapter"/> (null: none, the base) in place of
    /// <paramref name="model"/>'s own adapter, which is put back afterwards: the reference of a LoRA policy without a
    /// second copy of the weights.
    /// </summary>
    public static T Using<T>(TransformerModel model, LoraAdapter? adapter, Func<T> forward)
    {
        var own = model.Adapter;
        model.Adapter = adapter;
        try { return forward(); }
        finally { model.Adapter = own; }
    }

    /// <summary>This adapter (the same tensors) recorded with other settings of <paramref name="config"/>'s kind, e.g. as a reward model's (<see cref="LoraConfig.ForSequenceClassification"/>).</summary>
    public LoraAdapter WithConfig(LoraConfig config) => new(config, [.. Modules]) { SavedModules = SavedModules };

    /// <summary>A frozen copy of this adapter (the same modules, scales and values; no gradients).</summary>
    public LoraAdapter FrozenCopy()
    {
        var modules = Modules.Select(m => new LoraModule
        {
            Module = m.Module,
            A = Tensor.FromArray(m.A.ToArray(), m.A.ShapeArray),
            B = Tensor.FromArray(m.B.ToArray(), m.B.ShapeArray),
            Magnitude = m.Magnitude is { } magnitude ? Tensor.FromArray(magnitude.ToArray(), magnitude.ShapeArray) : null,
            Scale = m.Scale,
            Parts = m.Parts,
        }).ToList();
        return new LoraAdapter(Config, modules);
    }

    /// <summary>
    /// A new adapter on <paramref name="model"/> initialised as PEFT does: A uniform in ±1/√in (Kaiming-uniform with
    /// a = √5), B zero, and with DoRA the magnitude m = ‖W‖ of each output row, so the adapted model starts equal to the base.
    /// </summary>
    public static LoraAdapter Create(TransformerModel model, LoraConfig config, int seed)
    {
        config.Validate("LoRA");
        var targets = config.TargetModules ?? throw new UserInputException("LoRA: no target modules given (--lora-target-modules).");
        var groups = LinearModules(model.Config, CheckpointNames.ForSaving(model.Config));
        var chosen = new List<(string Module, List<ParameterBinding> Parts)>();
        var matched = new HashSet<string>();
        foreach (var (module, parts) in groups)
        {
            string? hit = targets.FirstOrDefault(t => t == LoraConfig.AllLinear || module == t || module.EndsWith("." + t, StringComparison.Ordinal));
            if (hit == null) continue;
            matched.Add(hit);
            chosen.Add((module, parts));
        }
        var unmatched = targets.Where(t => !matched.Contains(t)).ToList();
        if (unmatched.Count > 0)
        {
            var names = groups.Select(g => g.Module.Split('.')[^1]).Distinct();
            throw new UserInputException($"LoRA target module(s) {string.Join(", ", unmatched.Select(t => $"'{t}'"))} match no linear layer of this " +
                $"{ModelConfig.ModelTypeName(model.Config.Family)} model; its linear layers are {string.Join(", ", names)} (or all-linear).");
        }
        var rng = new Random(seed);
        var modules = new List<LoraModule>();
        foreach (var (module, parts) in chosen)
        {
            int inF = parts[0].Shape[1], outF = parts[0].FusedTotalRows ?? parts[0].Shape[0];
            if ((long)config.R * Math.Max(inF, outF) > int.MaxValue)
                throw new UserInputException($"--lora-r {config.R} is too large for {module} ({outF}×{inF}): its A or B matrix would hold more than 2^31 values " +
                    $"(a rank above min(in, out) = {Math.Min(inF, outF)} adds nothing).");
            var a = Tensor.Parameter([config.R, inF], 0f, PeftName(module, "lora_A"));
            float bound = 1f / MathF.Sqrt(inF);
            var s = a.Span;
            for (int i = 0; i < s.Length; i++) s[i] = (float)((rng.NextDouble() * 2 - 1) * bound);
            var b = Tensor.Parameter([outF, config.R], 0f, PeftName(module, "lora_B"));
            Tensor? magnitude = null;
            if (config.UseDora)
            {
                // B = 0, so ‖W + scale·B·A‖ is ‖W‖.
                magnitude = Tensor.Parameter([outF], 0f, MagnitudeName(module));
                var row = new float[inF];
                foreach (var part in parts)
                {
                    var w = model.Parameter(part.CanonicalName);
                    for (int o = 0; o < part.Shape[0]; o++)
                    {
                        WeightRow(w, o, row);
                        magnitude.Span[part.FusedFirstRow + o] = MathF.Sqrt(System.Numerics.Tensors.TensorPrimitives.SumOfSquares(row));
                    }
                }
            }
            modules.Add(NewModule(module, a, b, magnitude, config, parts));
        }
        return new LoraAdapter(WithFanInFanOut(config, modules.SelectMany(m => m.Parts).Select(p => p.Prefix), model), modules);
    }

    /// <summary>
    /// <paramref name="config"/> with fan_in_fan_out as PEFT sets it on the layers it adapts and then saves: true where they
    /// are Conv1D (GPT-2 stores its weights [in, out]; "fan_in_fan_out is set to False but the target module is `Conv1D`.
    /// Setting fan_in_fan_out to True."), false where they are nn.Linear; an adapter file saying either loads the same.
    /// </summary>
    static LoraConfig WithFanInFanOut(LoraConfig config, IEnumerable<string> prefixes, TransformerModel model)
    {
        var transposed = CheckpointNames.ForSaving(model.Config).Where(p => p.Transposed).Select(p => Prefix(p.CanonicalName)).ToHashSet(StringComparer.Ordinal);
        bool conv1d = prefixes.Any(transposed.Contains);
        return config.FanInFanOut == conv1d ? config : config with { FanInFanOut = conv1d };
    }

    static LoraModule NewModule(string module, Tensor a, Tensor b, Tensor? magnitude, LoraConfig config, List<ParameterBinding> parts) => new()
    {
        Module = module,
        A = a,
        B = b,
        Magnitude = magnitude,
        Scale = (float)config.ScaleFor(module, a.Dim(0)),
        Parts = parts.Select(p => (Prefix(p.CanonicalName), p.FusedFirstRow, p.Shape[0])).ToList(),
    };

    static string Prefix(string canonicalWeight) => canonicalWeight[..^".weight".Length];

    /// <summary>The linear layers inside the transformer blocks, and OPT's embedding projections (PEFT's all-linear takes
    /// every linear layer but the LM head), grouped by checkpoint module (fused parts together).</summary>
    static List<(string Module, List<ParameterBinding> Parts)> LinearModules(ModelConfig config, IReadOnlyList<ParameterBinding> bindings)
    {
        var result = new List<(string, List<ParameterBinding>)>();
        var index = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var p in bindings)
        {
            bool linear = p.CanonicalName.StartsWith("layers.", StringComparison.Ordinal) || p.CanonicalName is "project_in.weight" or "project_out.weight";
            if (!linear || p.Shape.Length != 2 || !p.CheckpointName.EndsWith(".weight", StringComparison.Ordinal)) continue;
            string module = p.CheckpointName[..^".weight".Length];
            if (!index.TryGetValue(module, out int i)) { index[module] = i = result.Count; result.Add((module, [])); }
            result[i].Item2.Add(p);
        }
        return result;
    }

    /// <summary>
    /// Reads a PEFT LoRA adapter (adapter_config.json + adapter_model.safetensors) for <paramref name="model"/>. The
    /// tensors decide which modules are adapted and their ranks; every tensor must fit a linear layer of the model.
    /// A modules_to_save score head (a reward model's) is copied into the model.
    /// </summary>
    public static LoraAdapter Load(string directory, TransformerModel model)
    {
        var config = LoraConfig.Load(directory);
        string path = Path.Combine(directory, WeightsFileName);
        if (!File.Exists(path))
            throw new UserInputException(File.Exists(Path.Combine(directory, "adapter_model.bin"))
                ? $"{directory}: adapter_model.bin (a pickle) cannot be read; save the adapter with safe_serialization (adapter_model.safetensors)."
                : $"{directory}: no {WeightsFileName}.");
        using var file = SafetensorsFile.Open(path);

        // Module name → its parts, under every naming style of the family (e.g. GPT-2 with and without "transformer.").
        var known = new Dictionary<string, (string Saving, List<ParameterBinding> Parts)>(StringComparer.Ordinal);
        var saving = LinearModules(model.Config, CheckpointNames.ForSaving(model.Config));
        foreach (var naming in CheckpointNames.AllNamings(model.Config))
        {
            var groups = LinearModules(model.Config, naming);
            for (int i = 0; i < groups.Count && i < saving.Count; i++) known.TryAdd(groups[i].Module, (saving[i].Module, saving[i].Parts));
        }

        var a = new Dictionary<string, string>(StringComparer.Ordinal);
        var b = new Dictionary<string, string>(StringComparer.Ordinal);
        var magnitudes = new Dictionary<string, string>(StringComparer.Ordinal);
        var saved = new List<string>();
        var problems = new List<string>();
        foreach (var name in file.Names)
        {
            string rest = name.StartsWith(PeftPrefix, StringComparison.Ordinal) ? name[PeftPrefix.Length..] : name;
            if (rest.EndsWith("." + MagnitudeSuffix, StringComparison.Ordinal))
            {
                string dora = rest[..^(MagnitudeSuffix.Length + 1)];
                if (!config.UseDora) problems.Add($"tensor '{name}' is a DoRA magnitude, but adapter_config.json does not say use_dora: true");
                else if (!known.ContainsKey(dora)) problems.Add($"tensor '{name}': the model has no linear layer '{dora}'");
                else magnitudes[dora] = name;
                continue;
            }
            string? module = null, part = null;
            foreach (var p in new[] { "lora_A", "lora_B" })
                foreach (var suffix in new[] { $".{p}.weight", $".{p}.default.weight" })
                    if (rest.EndsWith(suffix, StringComparison.Ordinal)) { module = rest[..^suffix.Length]; part = p; }
            if (module == null)
            {
                if (TryLoadSavedModule(model, rest, file, name)) saved.Add(rest);
                else problems.Add($"tensor '{name}' is neither a LoRA A/B matrix nor a supported modules_to_save head" +
                    (rest == "score.weight" ? " (a score head needs a reward-model base: task_type SEQ_CLS)" : ""));
                continue;
            }
            if (!known.ContainsKey(module)) { problems.Add($"tensor '{name}': the model has no linear layer '{module}'"); continue; }
            if (!config.Targets(module) && !config.Targets(known[module].Saving))
            {
                problems.Add(config.LayersToTransform is { } layers
                    ? $"tensor '{name}': module '{module}' is not among adapter_config.json's target_modules in its layers_to_transform [{string.Join(", ", layers)}]" +
                      (config.LayerIndex(known[module].Saving) is int index ? $" (it is in layer {index})" : " (PEFT finds no layer index in its name)")
                    : $"tensor '{name}': module '{module}' is not among adapter_config.json's target_modules");
                continue;
            }
            (part == "lora_A" ? a : b)[module] = name;
        }
        foreach (var m in a.Keys.Except(b.Keys)) problems.Add($"module '{m}' has lora_A but no lora_B");
        foreach (var m in b.Keys.Except(a.Keys)) problems.Add($"module '{m}' has lora_B but no lora_A");
        if (config.UseDora)
            foreach (var m in a.Keys.Except(magnitudes.Keys)) problems.Add($"module '{m}' has no {MagnitudeSuffix} (use_dora: true)");
        if (problems.Count > 0) throw new UserInputException($"{path} does not fit the model:\n  " + string.Join("\n  ", problems.Take(20)));
        if (a.Count == 0) throw new UserInputException($"{path} holds no LoRA matrices.");
        if (config.TaskType == LoraConfig.SequenceClassification && model.Config.Head == HeadKind.Scalar && !saved.Contains("score.weight"))
            throw new UserInputException($"{Path.Combine(directory, LoraConfig.FileName)}: field \"task_type\" is SEQ_CLS but {path} holds no score head " +
                $"({PeftPrefix}score.weight, saved by modules_to_save); without it the model's scores would be random.");

        var modules = new List<LoraModule>();
        foreach (var (module, (savingName, parts)) in known.Where(k => a.ContainsKey(k.Key)).OrderBy(k => saving.FindIndex(s => s.Module == k.Value.Saving)))
        {
            var ia = file.GetInfo(a[module]); var ib = file.GetInfo(b[module]);
            int inF = parts[0].Shape[1], outF = parts[0].FusedTotalRows ?? parts[0].Shape[0];
            if (ia.Shape.Length != 2 || ia.Shape[1] != inF || ib.Shape.Length != 2 || ib.Shape[0] != outF || ib.Shape[1] != ia.Shape[0])
                throw new UserInputException($"{path}: module '{module}': lora_A {TensorInfo.FormatShape(ia.Shape)} and lora_B {TensorInfo.FormatShape(ib.Shape)} " +
                    $"do not fit the layer [out {outF}, in {inF}] (expected [r, {inF}] and [{outF}, r]).");
            int r = (int)ia.Shape[0];
            // PEFT sizes each layer from r (or rank_pattern) and scales it by alpha / r: tensors of another rank would
            // not load there, and saved again they would carry the contradiction on.
            if (r != config.RankFor(module))
                throw new UserInputException($"{Path.Combine(directory, LoraConfig.FileName)}: field \"{(config.RankPatternKey(module) is { } key ? $"rank_pattern.{key}" : "r")}\" " +
                    $"gives module '{module}' rank {config.RankFor(module)}, but {path} holds rank {r} (lora_A {TensorInfo.FormatShape(ia.Shape)}).");
            var ta = Tensor.Parameter([r, inF], 0f, PeftName(savingName, "lora_A"));
            var tb = Tensor.Parameter([outF, r], 0f, PeftName(savingName, "lora_B"));
            file.ReadInto(a[module], ta.Span);
            file.ReadInto(b[module], tb.Span);
            ModelIO.RequireFinite(path, a[module], ta.Span);
            ModelIO.RequireFinite(path, b[module], tb.Span);
            Tensor? tm = null;
            if (magnitudes.TryGetValue(module, out var magnitudeName))
            {
                var im = file.GetInfo(magnitudeName);
                if (im.Shape.Length != 1 || im.Shape[0] != outF)
                    throw new UserInputException($"{path}: module '{module}': {MagnitudeSuffix} {TensorInfo.FormatShape(im.Shape)} does not fit the layer's {outF} outputs (expected [{outF}]).");
                tm = Tensor.Parameter([outF], 0f, MagnitudeName(savingName));
                file.ReadInto(magnitudeName, tm.Span);
                ModelIO.RequireFinite(path, magnitudeName, tm.Span);
            }
            modules.Add(NewModule(savingName, ta, tb, tm, config, parts));
        }
        return new LoraAdapter(WithFanInFanOut(config, modules.SelectMany(m => m.Parts).Select(p => p.Prefix), model), modules) { SavedModules = saved };
    }

    /// <summary>A whole module saved beside the adapter (PEFT's modules_to_save): only a scalar score head is supported.</summary>
    static bool TryLoadSavedModule(TransformerModel model, string rest, SafetensorsFile file, string name)
    {
        if (rest != "score.weight" || !model.HasParameter("score.weight")) return false;
        var p = model.Parameter("score.weight");
        var info = file.GetInfo(name);
        if (!info.Shape.SequenceEqual(p.Shape.ToArray().Select(d => (long)d)))
            throw new UserInputException($"{file.Path}: '{name}' has shape {TensorInfo.FormatShape(info.Shape)}; the model's score head is {ShapeUtil.Format(p.Shape)}.");
        file.ReadInto(name, p.Span); // a score head is never bf16 (TransformerModel.KeptInBf16)
        ModelIO.RequireFinite(file.Path, name, p.Span);
        return true;
    }

    /// <summary>
    /// Writes adapter_config.json and adapter_model.safetensors (<paramref name="dtype"/>, F32 by default) atomically;
    /// <paramref name="savedModules"/> adds whole tensors under PEFT's modules_to_save names (a reward model's <c>score.weight</c>).
    /// </summary>
    public void Save(string directory, IReadOnlyList<(string Name, Tensor Tensor)>? savedModules = null, SafetensorsDtype dtype = SafetensorsDtype.F32)
    {
        Directory.CreateDirectory(directory);
        var tensors = new List<(string, int[], ReadOnlyMemory<float>)>();
        foreach (var (name, t) in NamedParameters) tensors.Add((name, t.Shape.ToArray(), t.ToArray()));
        foreach (var (name, t) in savedModules ?? []) tensors.Add((PeftPrefix + name, t.Shape.ToArray(), t.ToArray()));
        SafetensorsWriter.Write(Path.Combine(directory, WeightsFileName), tensors, dtype, new Dictionary<string, string> { ["format"] = "pt" });
        AtomicFile.WriteText(Path.Combine(directory, LoraConfig.FileName), Config.ToJson());
    }

    /// <summary>
    /// Adds scale·B·A into each adapted weight of <paramref name="model"/> (merging; the adapter should then be detached);
    /// a DoRA module's rows are then scaled to their magnitudes, W' = m ⊙ (W + scale·B·A) / ‖W + scale·B·A‖ (as PEFT merges).
    /// A frozen bf16 weight is merged row by row in float32 (widened exactly, the same additions, rounded once to nearest):
    /// the values merging a float32 copy and then narrowing it would give, without a float32 copy of the matrix.
    /// </summary>
    public void MergeInto(TransformerModel model)
    {
        foreach (var m in Modules)
        {
            int r = m.Rank, inF = m.A.Dim(1);
            foreach (var (prefix, first, rows) in m.Parts)
            {
                var w = model.Parameter(prefix + ".weight");
                if (!w.IsBf16)
                {
                    for (int o = 0; o < rows; o++) MergeRow(m, first + o, w.Span.Slice(o * inF, inF));
                    continue;
                }
                var row = new float[inF];
                var stored = w.Bf16Destination;
                for (int o = 0; o < rows; o++)
                {
                    var bits = stored.Slice(o * inF, inF);
                    Bf16.Widen(bits, row);
                    MergeRow(m, first + o, row);
                    Bf16.Narrow(row, bits);
                }
            }
        }
    }

    private static void MergeRow(LoraModule m, int o, Span<float> wRow)
    {
        AddDelta(m, o, wRow);
        if (m.Magnitude is { } magnitude)
            System.Numerics.Tensors.TensorPrimitives.Multiply(wRow, magnitude.Span[o] / MathF.Sqrt(System.Numerics.Tensors.TensorPrimitives.SumOfSquares(wRow)), wRow);
    }

    // wRow += scale·Σ_k B[o, k]·A[k, :], k in order (zero coefficients skipped).
    private static void AddDelta(LoraModule m, int o, Span<float> wRow)
    {
        int r = m.Rank, inF = m.A.Dim(1);
        var a = m.A.Span;
        var bRow = m.B.Span.Slice(o * r, r);
        for (int k = 0; k < r; k++)
        {
            float coef = m.Scale * bRow[k];
            if (coef == 0) continue;
            var aRow = a.Slice(k * inF, inF);
            for (int i = 0; i < inF; i++) wRow[i] += coef * aRow[i];
        }
    }
}
