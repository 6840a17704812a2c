using System.Text.Json;
using System.Text.Json.Nodes;
using AlignSharp.Models.Checkpoints;

namespace AlignSharp.Models.Lora;

/// <summary>
/// A LoRA adapter's settings, as PEFT's <c>adapter_config.json</c> holds them (peft_type "LORA"). Each adapted linear
/// layer W [out, in] gains ΔW = scale · B·A with A [r, in], B [out, r] and scale = alpha / r (alpha / √r with rsLoRA).
/// </summary>
/// <param name="R">Rank of every adapted layer (PEFT's rank_pattern can give a layer another; the tensors say which).</param>
/// <param name="Alpha">lora_alpha.</param>
/// <param name="Dropout">lora_dropout: dropout on the adapter's input while training.</param>
/// <param name="TargetModules">The checkpoint's module names (suffixes such as q_proj, c_attn), or "all-linear".</param>
/// <param name="UseRslora">Scale by alpha / √r instead of alpha / r.</param>
/// <param name="FanInFanOut">The base stores weights [in, out] (GPT-2's Conv1D). PEFT sets it from the adapted layers
/// whatever the file says (true on Conv1D, false on nn.Linear) and saves that; the math is the same either way.</param>
/// <param name="BaseModel">base_model_name_or_path.</param>
/// <param name="TaskType">CAUSAL_LM (policies) or SEQ_CLS (reward and value models).</param>
/// <param name="ModulesToSave">Modules trained and saved whole beside the adapter (a reward model's score head).</param>
/// <param name="AlphaPattern">Per-module alpha overrides (PEFT's alpha_pattern), keyed by module-name suffix.</param>
public sealed record LoraConfig(
    int R,
    double Alpha,
    double Dropout = 0,
    IReadOnlyList<string>? TargetModules = null,
    bool UseRslora = false,
    bool FanInFanOut = false,
    string? BaseModel = null,
    string TaskType = "CAUSAL_LM",
    IReadOnlyList<string>? ModulesToSave = null,
    IReadOnlyDictionary<string, double>? AlphaPattern = null)
{
    public const string FileName = "adapter_config.json";
    public const string AllLinear = "all-linear";

    /// <summary>target_modules as adapter_config.json gave it when it was one string other than all-linear (PEFT then
    /// full-matches it as a regular expression against module names), so that a continued adapter is saved with the
    /// same string: written back as a list, PEFT would read it as a module name and find nothing.</summary>
    public string? TargetModulesString { get; init; }

    /// <summary>PEFT's rank_pattern (module-name pattern → rank), kept as read and written back unchanged: the tensors
    /// give each layer's rank here, but PEFT sizes the layers from this map when it loads the adapter again.</summary>
    public IReadOnlyDictionary<string, int>? RankPattern { get; init; }

    /// <summary>PEFT's <c>use_dora</c>: weight-decomposed LoRA (a magnitude per output row beside A and B).</summary>
    public bool UseDora { get; init; }

    /// <summary>init_lora_weights as adapter_config.json gave it (a bool or a string), written back unchanged when the
    /// adapter is continued; null (a new adapter) is written as true, PEFT's default. Only values that initialise A and B
    /// alone are ever read (<see cref="CheckInitLoraWeights"/>).</summary>
    public object? InitLoraWeights { get; init; }

    /// <summary>PEFT's layers_to_transform: the layer indices whose target modules are adapted (null or empty: every
    /// layer). Read and checked against the tensors (<see cref="Targets"/>); written back as read.</summary>
    public IReadOnlyList<int>? LayersToTransform { get; init; }

    /// <summary>PEFT's layers_pattern: the names of the layer lists whose index layers_to_transform gives (null: PEFT's
    /// default, the component before the first numbered one).</summary>
    public IReadOnlyList<string>? LayersPattern { get; init; }

    /// <summary>The factor of B·A for a layer of rank <paramref name="rank"/> whose module is <paramref name="module"/>.</summary>
    public double ScaleFor(string module, int rank)
    {
        double alpha = PatternKey(AlphaPattern?.Keys, module) is { } key ? AlphaPattern![key] : Alpha;
        return UseRslora ? alpha / Math.Sqrt(rank) : alpha / rank;
    }

    /// <summary>The rank PEFT gives <paramref name="module"/>'s layer: its rank_pattern entry, else r.</summary>
    public int RankFor(string module) => RankPatternKey(module) is { } key ? RankPattern![key] : R;

    /// <summary>The rank_pattern key that applies to <paramref name="module"/>, or null.</summary>
    public string? RankPatternKey(string module) => PatternKey(RankPattern?.Keys, module);

    /// <summary>
    /// The first key of a PEFT pattern map (rank_pattern, alpha_pattern) that names <paramref name="module"/>: the whole
    /// name, a dotted suffix of it, or a regular expression over such a suffix, as PEFT matches them.
    /// </summary>
    static string? PatternKey(IEnumerable<string>? keys, string module)
        => keys?.FirstOrDefault(key => module == key || module.EndsWith("." + key, StringComparison.Ordinal) || RegexMatches($"(.*\\.)?(?:{key})", module));

    /// <summary>
    /// Whether target_modules names <paramref name="module"/> as PEFT reads it (tuners_utils.check_target_module_exists):
    /// no list any layer, another single string than all-linear a regular expression over the whole name, a list entry
    /// the whole name, else a dotted suffix (all-linear: any) in a layer of layers_to_transform when that is given.
    /// </summary>
    public bool Targets(string module)
    {
        if (TargetModules == null) return true;
        if (TargetModulesString is { } pattern && RegexMatches(pattern, module)) return true;
        if (TargetModules.Contains(module)) return true;
        bool found = TargetModules.Any(t => t == AllLinear || module.EndsWith("." + t, StringComparison.Ordinal));
        return found && (LayersToTransform is not { Count: > 0 } layers || LayerIndex(module) is int i && layers.Contains(i));
    }

    /// <summary>The layer index PEFT reads from a module name for layers_to_transform: the first number after one of
    /// layers_pattern (by default after any component), or null.</summary>
    public int? LayerIndex(string module)
    {
        var patterns = LayersPattern is { Count: > 0 } given ? given : [@"[^.]*"];
        foreach (var p in patterns)
        {
            System.Text.RegularExpressions.Match match;
            try { match = System.Text.RegularExpressions.Regex.Match(module, $@"^.*?\.{p}\.(\d+)\.", System.Text.RegularExpressions.RegexOptions.None, TimeSpan.FromSeconds(1)); }
            catch (ArgumentException) { continue; }
            if (match.Success && int.TryParse(match.Groups[1].Value, out int index)) return index;
        }
        return null;
    }

    /// <summary>A full match of <paramref name="pattern"/> (Python's re.fullmatch); an invalid pattern matches nothing.</summary>
    static bool RegexMatches(string pattern, string text)
    {
        try { return System.Text.RegularExpressions.Regex.IsMatch(text, $"^(?:{pattern})$", System.Text.RegularExpressions.RegexOptions.None, TimeSpan.FromSeconds(1)); }
        catch (ArgumentException) { return false; }
    }

    /// <summary>PEFT's task type of a reward or value model: the score head is trained whole and saved beside the adapter.</summary>
    public const string SequenceClassification = "SEQ_CLS";

    /// <summary>
    /// These settings for a sequence-classification model (a reward or value model): task_type SEQ_CLS and, as PEFT's
    /// PeftModelForSequenceClassification records, modules_to_save "classifier" and "score".
    /// </summary>
    public LoraConfig ForSequenceClassification() => this with
    {
        TaskType = SequenceClassification,
        ModulesToSave = (ModulesToSave ?? []).Union(["classifier", "score"]).ToList(),
    };

    public void Validate(string source)
    {
        if (R <= 0) throw new UserInputException($"{source}: LoRA rank r must be positive, not {R}.");
        if (!double.IsFinite(Alpha) || Alpha <= 0) throw new UserInputException($"{source}: lora_alpha must be a positive number, not {Alpha}.");
        if (!double.IsFinite(Dropout) || Dropout < 0 || Dropout >= 1) throw new UserInputException($"{source}: lora_dropout must be in [0, 1), not {Dropout}.");
        if (TargetModules is { Count: 0 }) throw new UserInputException($"{source}: target_modules is empty.");
    }

    /// <summary>adapter_config.json as PEFT writes it (the keys PEFT needs to load the adapter).</summary>
    public string ToJson()
    {
        var o = new JsonObject
        {
            ["peft_type"] = "LORA",
            ["task_type"] = TaskType,
            ["r"] = R,
            ["lora_alpha"] = Alpha,
            ["lora_dropout"] = Dropout,
            ["target_modules"] = TargetModulesString is { } pattern ? pattern
                : TargetModules is { Count: 1 } && TargetModules[0] == AllLinear ? AllLinear
                : new JsonArray((TargetModules ?? []).Select(t => (JsonNode)t).ToArray()),
            ["use_rslora"] = UseRslora,
            ["fan_in_fan_out"] = FanInFanOut,
            ["base_model_name_or_path"] = BaseModel,
            ["bias"] = "none",
            ["modules_to_save"] = ModulesToSave is { Count: > 0 } ? new JsonArray(ModulesToSave.Select(m => (JsonNode)m).ToArray()) : null,
            ["init_lora_weights"] = InitLoraWeights switch { string text => text, bool flag => flag, _ => true },
            ["inference_mode"] = true,
            ["layers_to_transform"] = LayersToTransform is { Count: > 0 } layers ? new JsonArray(layers.Select(i => (JsonNode)i).ToArray()) : null,
            ["layers_pattern"] = LayersPattern is { Count: > 0 } patterns ? new JsonArray(patterns.Select(p => (JsonNode)p).ToArray()) : null,
            ["rank_pattern"] = RankPattern is { Count: > 0 } ? new JsonObject(RankPattern.Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)kv.Value))) : new JsonObject(),
            ["alpha_pattern"] = AlphaPattern is { Count: > 0 } ? new JsonObject(AlphaPattern.Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)kv.Value))) : new JsonObject(),
            ["use_dora"] = UseDora,
            ["revision"] = null,
        };
        return o.ToJsonString(new JsonSerializerOptions { WriteIndented = true });
    }

    /// <summary>Reads adapter_config.json; settings that change the math and that we do not implement are errors.</summary>
    public static LoraConfig Load(string directory)
    {
        string path = Path.Combine(directory, FileName);
        if (!File.Exists(path)) throw new UserInputException($"{directory}: no {FileName}; is this a PEFT adapter directory?");
        JsonObject o;
        try { o = PythonJson.Parse(File.ReadAllText(path)) as JsonObject ?? throw new JsonException("not a JSON object"); }
        catch (JsonException e) { throw new UserInputException($"{path}: not valid JSON: {e.Message}"); }

        string peftType = Str(o, "peft_type", path) ?? "LORA";
        if (peftType != "LORA") throw new UserInputException($"{path}: peft_type \"{peftType}\" is not supported; only LORA adapters are.");
        if (Str(o, "bias", path) is string bias && bias != "none")
            throw new UserInputException($"{path}: bias \"{bias}\": adapters that train biases are not supported (only \"none\").");
        var initLoraWeights = CheckInitLoraWeights(o["init_lora_weights"], path);
        // PEFT: null or [] is every layer (len(layer_indexes) != 0), one integer or a list of them the layers adapted.
        var layersToTransform = o["layers_to_transform"] switch
        {
            null => null,
            JsonValue v when v.GetValueKind() == JsonValueKind.Null => null,
            JsonValue v when v.GetValueKind() == JsonValueKind.Number => [LayerNumber(v, path)],
            JsonArray list => list.Select(x => LayerNumber(x, path)).ToList(),
            _ => throw Bad(path, "layers_to_transform", "null, a layer index or a list of them"),
        };
        var layersPattern = o["layers_pattern"] switch
        {
            null => null,
            JsonValue v when v.GetValueKind() == JsonValueKind.Null => null,
            JsonValue v when v.GetValueKind() == JsonValueKind.String => [v.GetValue<string>()],
            JsonArray list => list.Select(x => x?.GetValueKind() == JsonValueKind.String ? x.GetValue<string>() : throw Bad(path, "layers_pattern", "a string or a list of strings")).ToList(),
            _ => throw Bad(path, "layers_pattern", "a string or a list of strings"),
        };
        // PEFT settings that change what the adapter computes, which a plain LoRA would silently get wrong.
        foreach (var (field, what) in new[]
                 {
                     ("alora_invocation_tokens", "an activated LoRA (applied only from its invocation tokens on)"),
                     ("layer_replication", "layer replication (PEFT rebuilds the layer stack)"),
                     ("use_qalora", "QA-LoRA (pooled inputs)"),
                     ("lora_bias", "a bias on lora_B"),
                     ("target_parameters", "LoRA on parameters rather than linear modules"),
                 })
            if (o[field] is JsonNode v && v.GetValueKind() is not (JsonValueKind.Null or JsonValueKind.False)
                && !(v is JsonArray { Count: 0 }))
                throw new UserInputException($"{path}: {field} asks for {what}, which is not supported; only plain LoRA and DoRA adapters are.");

        var targets = o["target_modules"] switch
        {
            null => null,
            JsonArray list => list.Select(x => x?.GetValueKind() == JsonValueKind.String ? x.GetValue<string>() : throw Bad(path, "target_modules", "a list of strings")).ToList(),
            // PEFT compares the one-string shorthand case-insensitively (tuners_utils: target_modules.lower() == "all-linear").
            JsonValue v when v.GetValueKind() == JsonValueKind.String => [IsAllLinear(v.GetValue<string>()) ? AllLinear : v.GetValue<string>()],
            JsonValue v when v.GetValueKind() == JsonValueKind.Null => null,
            _ => throw Bad(path, "target_modules", "a list of module names or a string"),
        };
        var alphaPattern = new Dictionary<string, double>();
        if (o["alpha_pattern"] is JsonObject ap)
            foreach (var (k, v) in ap) alphaPattern[k] = Num(v, path, $"alpha_pattern.{k}");
        var rankPattern = new Dictionary<string, int>();
        if (o["rank_pattern"] is JsonObject rp)
            foreach (var (k, v) in rp)
            {
                double rank = Num(v, path, $"rank_pattern.{k}");
                if (rank != Math.Floor(rank) || rank < 1) throw Bad(path, $"rank_pattern.{k}", "a positive integer");
                rankPattern[k] = (int)rank;
            }
        var modulesToSave = o["modules_to_save"] is JsonArray ms
            ? ms.Select(x => x?.GetValueKind() == JsonValueKind.String ? x.GetValue<string>() : throw Bad(path, "modules_to_save", "a list of strings")).ToList()
            : null;
        var config = new LoraConfig(
            R: (int)Num(o["r"] ?? throw Bad(path, "r", "present"), path, "r"),
            Alpha: o["lora_alpha"] is JsonNode a ? Num(a, path, "lora_alpha") : 8,
            Dropout: o["lora_dropout"] is JsonNode d && d.GetValueKind() != JsonValueKind.Null ? Num(d, path, "lora_dropout") : 0,
            TargetModules: targets,
            UseRslora: o["use_rslora"]?.GetValueKind() == JsonValueKind.True,
            FanInFanOut: o["fan_in_fan_out"]?.GetValueKind() == JsonValueKind.True,
            BaseModel: Str(o, "base_model_name_or_path", path),
            TaskType: Str(o, "task_type", path) ?? "CAUSAL_LM",
            ModulesToSave: modulesToSave,
            AlphaPattern: alphaPattern.Count > 0 ? alphaPattern : null)
        {
            TargetModulesString = o["target_modules"] is JsonValue t && t.GetValueKind() == JsonValueKind.String && !IsAllLinear(t.GetValue<string>()) ? t.GetValue<string>() : null,
            RankPattern = rankPattern.Count > 0 ? rankPattern : null,
            UseDora = o["use_dora"]?.GetValueKind() == JsonValueKind.True,
            InitLoraWeights = initLoraWeights,
            LayersToTransform = layersToTransform is { Count: > 0 } ? layersToTransform : null,
            LayersPattern = layersPattern is { Count: > 0 } ? layersPattern : null,
        };
        config.Validate(path);
        return config;
    }

    static bool IsAllLinear(string target) => string.Equals(target, AllLinear, StringComparison.OrdinalIgnoreCase);

    static int LayerNumber(JsonNode? n, string path)
    {
        double x = Num(n, path, "layers_to_transform");
        return x == Math.Floor(x) && x >= 0 && x <= int.MaxValue ? (int)x : throw Bad(path, "layers_to_transform", "null, a layer index or a list of them");
    }

    /// <summary>
    /// init_lora_weights as read (true when absent), or an error for the values with which PEFT changes the base
    /// model's weights when it loads the adapter (LoraLayer.update_layer: "pissa", "pissa_niter_N" and "corda" subtract
    /// the initial scale·B·A from W, "olora" too, "lora_ga" likewise, "loftq" replaces W by its quantised form): the
    /// adapter's tensors fit only that changed base, so adding them to the unchanged one computes something else.
    /// true, false, "gaussian", "eva", "orthogonal" and "mica" only initialise A and B, which the file's tensors replace.
    /// </summary>
    static object CheckInitLoraWeights(JsonNode? n, string path)
    {
        if (n == null || n.GetValueKind() == JsonValueKind.True) return true;
        if (n.GetValueKind() == JsonValueKind.False) return false;
        if (n.GetValueKind() != JsonValueKind.String) throw Bad(path, "init_lora_weights", "true, false or the name of an initialisation");
        string value = n.GetValue<string>();
        string lower = value.ToLowerInvariant();
        if (lower is "gaussian" or "mica" || value is "eva" or "orthogonal") return value;
        const string convert = "Have PEFT convert it to a plain LoRA adapter first: save the trained model with " +
            "PeftModel.save_pretrained(DIR, path_initial_model_for_weight_conversion=INIT), INIT being the adapter as saved right after " +
            "initialisation, before training, with its init_lora_weights set to true (PEFT's examples/pissa_finetuning, --convert_pissa_to_lora); " +
            "that writes the change as a plain LoRA adapter (init_lora_weights true) for the original base model. Or merge it with PEFT (merge_and_unload) and use the merged model.";
        if (value.StartsWith("pissa", StringComparison.Ordinal) || value.StartsWith("corda", StringComparison.Ordinal) || lower == "olora" || value == "lora_ga")
            throw new UserInputException($"{path}: field \"init_lora_weights\" is \"{value}\": when PEFT loads this adapter it first subtracts the " +
                $"adapter's initial scale·B·A from the base model's weights, and the trained adapter is meant for that residual base; loaded here " +
                $"on the unchanged base it would compute other log-probabilities, so it is refused. {convert}");
        if (value == "loftq")
            throw new UserInputException($"{path}: field \"init_lora_weights\" is \"loftq\": when PEFT loads this adapter it replaces the base " +
                "model's weights by their quantised form (LoftQ), and the adapter is meant for that base; loaded here on the unchanged base it " +
                "would compute other log-probabilities, so it is refused. Merge it with PEFT (merge_and_unload) and use the merged model.");
        throw new UserInputException($"{path}: field \"init_lora_weights\" is \"{value}\", which PEFT does not know (it takes true, false, " +
            "\"gaussian\", \"eva\", \"orthogonal\", \"mica\", or the base-changing \"pissa\", \"pissa_niter_N\", \"corda\", \"olora\", \"lora_ga\", \"loftq\", which are not supported here).");
    }

    static string? Str(JsonObject o, string key, string path) => o[key] switch
    {
        null => null,
        JsonValue v when v.GetValueKind() == JsonValueKind.String => v.GetValue<string>(),
        JsonValue v when v.GetValueKind() == JsonValueKind.Null => null,
        _ => throw Bad(path, key, "a string"),
    };

    static double Num(JsonNode? n, string path, string key) =>
        n is JsonValue v && v.GetValueKind() == JsonValueKind.Number ? v.GetValue<double>() : throw Bad(path, key, "a number");

    static UserInputException Bad(string path, string key, string what) => new($"{path}: field \"{key}\" must be {what}.");
}
