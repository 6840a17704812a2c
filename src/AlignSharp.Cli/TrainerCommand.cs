using System.CommandLine;
using System.Globalization;
using System.Reflection;
using System.Text.Json;
using AlignSharp.Training.Runs;
using YamlDotNet.RepresentationModel;

namespace AlignSharp.Cli;

/// <summary>
/// Builds a training command from an options record: every property marked <see cref="OptionAttribute"/>
/// becomes a flag (PascalCase → --kebab-case) whose help is the attribute's text plus the default, and
/// <c>--config FILE</c> (YAML or JSON) may set any of them. Precedence: defaults &lt; config file &lt; flags.
/// </summary>
public static class TrainerCommand
{
    public static Command Create<T>(string name, string description, Func<T, int> run) where T : TrainerOptions, new()
    {
        var cmd = new Command(name, description);
        var configFile = new Option<string?>("--config") { Description = "YAML or JSON file of options (keys as the flags, in snake_case or kebab-case); flags override it." };
        cmd.Options.Add(configFile);
        var defaults = new T();
        var bindings = new List<(PropertyInfo Property, Option Option)>();
        // Every option's own flag in both spellings: a TRL name's kebab form is only added where it names no other option.
        var own = Properties(typeof(T)).SelectMany(p => { var (flag, snake) = Flags(p); return new[] { flag, snake }; }).ToHashSet();
        foreach (var p in Properties(typeof(T)))
        {
            var attribute = p.GetCustomAttribute<OptionAttribute>()!;
            var help = attribute.Required ? "(required) " + attribute.Help : attribute.Help;
            var def = p.GetValue(defaults);
            var (flag, snake) = Flags(p);
            string text = def is null or "" ? help : $"{help} [default: {FormatDefault(def)}]";
            Option option = p.PropertyType switch
            {
                var t when t == typeof(bool) || t == typeof(bool?) => new Option<bool>(flag) { Description = text, Arity = ArgumentArity.ZeroOrOne },
                var t when t == typeof(int) => new Option<int>(flag) { Description = text },
                var t when t == typeof(float) => new Option<float>(flag) { Description = text },
                var t when t == typeof(double) => new Option<double>(flag) { Description = text },
                var t when t == typeof(string) && p.Name == nameof(TrainerOptions.Resume) => new Option<string>(flag) { Description = text, Arity = ArgumentArity.ZeroOrOne },
                var t when t == typeof(string) => new Option<string>(flag) { Description = text },
                var t when t == typeof(string[]) => new Option<string[]>(flag) { Description = text, AllowMultipleArgumentsPerToken = true },
                _ => throw new InvalidOperationException($"Unsupported option type {p.PropertyType} for {p.Name}."),
            };
            // TRL/transformers spellings: every flag in snake_case too (--learning_rate), and the record's TRL names in both
            // spellings, as transformers' HfArgumentParser takes them (--output_dir, --output-dir).
            if (snake != flag) option.Aliases.Add(snake);
            foreach (var trl in TrlNameAttribute.Of(typeof(T)).Where(a => a.Property == p.Name))
                foreach (var alias in new[] { "--" + trl.Name, "--" + trl.Name.Replace('_', '-') })
                    if (alias != flag && !option.Aliases.Contains(alias) && (alias == "--" + trl.Name || !own.Contains(alias)))
                        option.Aliases.Add(alias);
            cmd.Options.Add(option);
            bindings.Add((p, option));
        }
        cmd.SetAction(r => CliErrors.Guard(() =>
        {
            var options = new T();
            if (r.GetValue(configFile) is string file) ApplyFile(options, file);
            foreach (var (p, o) in bindings)
            {
                var result = r.GetResult(o);
                if (result == null || result.Implicit) continue;
                object? value = o switch
                {
                    Option<bool> b => r.GetValue(b),
                    Option<int> i => r.GetValue(i),
                    Option<float> f => r.GetValue(f),
                    Option<double> d => r.GetValue(d),
                    Option<string> s => r.GetValue(s) ?? "",
                    Option<string[]> a => r.GetValue(a),
                    _ => null,
                };
                p.SetValue(options, value);
            }
            options.Validate();
            if (options.MatmulPrecision == "medium" && !Engine.Kernels.Gemm.Bf16BlockedRuns(transA: false))
                Console.Error.WriteLine("note: --matmul-precision medium: this CPU (or process) has no AVX512-BF16 kernel, so the products of the bf16-rounded inputs are computed in float32 (summed in another order), no faster.");
            return run(options);
        }));
        return cmd;
    }

    private static IEnumerable<PropertyInfo> Properties(Type t)
    {
        // Base-class options first, then the trainer's own, each in declaration order.
        var chain = new Stack<Type>();
        for (var x = t; x != null && x != typeof(object); x = x.BaseType) chain.Push(x);
        foreach (var type in chain)
            foreach (var p in type.GetProperties(BindingFlags.Public | BindingFlags.Instance | BindingFlags.DeclaredOnly).OrderBy(p => p.MetadataToken))
                if (OmitOptionsAttribute.IsOption(t, p)) yield return p;
    }

    /// <summary>An option's flag (--kebab-case) and its snake_case spelling (--snake_case).</summary>
    private static (string Flag, string Snake) Flags(PropertyInfo p) => ("--" + Kebab(p.Name), "--" + Kebab(p.Name).Replace('-', '_'));

    public static string Kebab(string pascal) => OptionAttribute.FlagName(pascal)[2..];

    private static string Normalize(string key) => key.Replace("-", "").Replace("_", "").ToLowerInvariant();

    private static string FormatDefault(object v) => v switch
    {
        float f => f.ToString("G", CultureInfo.InvariantCulture),
        double d => d.ToString("G", CultureInfo.InvariantCulture),
        bool b => b ? "true" : "false",
        string[] a => string.Join(",", a),
        _ => System.Convert.ToString(v, CultureInfo.InvariantCulture) ?? "",
    };

    /// <summary>Applies a YAML or JSON mapping of option names to values; unknown keys are errors.</summary>
    public static void ApplyFile(object options, string file)
    {
        if (!File.Exists(file)) throw new UserInputException($"--config: {file} does not exist.");
        var props = Properties(options.GetType()).ToDictionary(p => Normalize(p.Name));
        foreach (var trl in TrlNameAttribute.Of(options.GetType()))
            if (props.TryGetValue(Normalize(trl.Property), out var target)) props.TryAdd(Normalize(trl.Name), target);
        var values = new Dictionary<string, (object? Value, string Where)>();
        if (file.EndsWith(".json", StringComparison.OrdinalIgnoreCase))
        {
            JsonDocument doc;
            try { doc = JsonDocument.Parse(File.ReadAllText(file)); }
            catch (JsonException e) { throw new UserInputException($"{file}: malformed JSON: {e.Message}"); }
            using (doc)
            {
                if (doc.RootElement.ValueKind != JsonValueKind.Object) throw new UserInputException($"{file}: expected an object of options.");
                foreach (var prop in doc.RootElement.EnumerateObject())
                    if (values.ContainsKey(prop.Name)) throw new UserInputException($"{file}: key \"{prop.Name}\" is given twice.");
                    else values[prop.Name] = (prop.Value.ValueKind switch
                    {
                        JsonValueKind.Array => prop.Value.EnumerateArray().Select(e => e.ValueKind == JsonValueKind.String ? e.GetString()! : e.GetRawText()).ToArray(),
                        JsonValueKind.String => prop.Value.GetString(),
                        JsonValueKind.Null => null,
                        _ => prop.Value.GetRawText(),
                    }, $"{file}: key \"{prop.Name}\"");
            }
        }
        else
        {
            var yaml = new YamlStream();
            try { using var reader = new StreamReader(file); yaml.Load(reader); }
            catch (YamlDotNet.Core.YamlException e) { throw new UserInputException($"{file}:{e.Start.Line}: malformed YAML: {e.Message}"); }
            if (yaml.Documents.Count == 0) return;
            // One mapping of options, as yaml.safe_load (TRL's parser) reads it: a second document would be dropped.
            if (yaml.Documents.Count > 1)
                throw new UserInputException($"{file}:{yaml.Documents[1].RootNode.Start.Line}: a second YAML document (after ---); a config file holds one mapping of options.");
            if (yaml.Documents[0].RootNode is not YamlMappingNode map) throw new UserInputException($"{file}: expected a mapping of options.");
            foreach (var (k, v) in map.Children)
            {
                if (k is not YamlScalarNode keyNode) throw new UserInputException($"{file}:{k.Start.Line}: a key must be an option name, not a list or mapping.");
                string key = keyNode.Value ?? "";
                object? value = v switch
                {
                    YamlScalarNode s => s.Style == YamlDotNet.Core.ScalarStyle.Plain && s.Value is "~" or "null" or "Null" or "NULL" or "" ? null : s.Value,
                    YamlSequenceNode seq => seq.Children.Select(c => c is YamlScalarNode cs ? cs.Value ?? ""
                        : throw new UserInputException($"{file}:{c.Start.Line}: key \"{key}\": a list of options holds plain values, not lists or mappings.")).ToArray(),
                    // A mapping is an option's JSON object (--chat-template-kwargs), as a JSON config file gives it.
                    YamlMappingNode m => JsonText(m),
                    _ => throw new UserInputException($"{file}:{v.Start.Line}: key \"{key}\": expected a value, a list or a mapping."),
                };
                values[key] = (value, $"{file}:{k.Start.Line}: key \"{key}\"");
            }
        }
        var setBy = new Dictionary<PropertyInfo, string>();
        foreach (var (key, (raw, where)) in values)
        {
            if (key == "trainer") continue; // written by run_config.json, so a run's resolved config can be fed back

            if (!props.TryGetValue(Normalize(key), out var p))
                throw new UserInputException($"{where}: not an option of this command (see --help)." + (ForeignFlags.HintForKey(key) is { } hint ? " " + hint : ""));
            // Two spellings of one option (batch_size and per_device_train_batch_size) would leave one silently unused.
            if (setBy.TryGetValue(p, out var first))
                throw new UserInputException($"{where}: sets the same option as key \"{first}\"; give it once.");
            setBy[p] = key;
            object? value = raw is string[] list && p.PropertyType == typeof(string)
                ? p.GetCustomAttribute<OptionAttribute>() is { CommaList: true } ? string.Join(",", list)
                : list.Length == 1 ? list[0]   // transformers' report_to: [tensorboard]
                : raw
                : raw;
            // A null (TRL's None) sets an option whose default is none; elsewhere its meaning differs by option, so it is
            // refused rather than read as this project's default.
            if (value == null && !Nullable(p))
                throw new UserInputException($"{where}: needs a value (a None in TRL; leave the key out for the default here, {FormatDefault(p.GetValue(options)!)}).");
            p.SetValue(options, Convert(value, p.PropertyType, where));
        }
    }

    /// <summary>A YAML node as JSON text: plain scalars that read as true, false, null or a number are those, others strings.</summary>
    private static string JsonText(YamlNode node)
    {
        using var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer)) Write(json, node);
        return System.Text.Encoding.UTF8.GetString(buffer.ToArray());

        static void Write(Utf8JsonWriter json, YamlNode node)
        {
            switch (node)
            {
                case YamlMappingNode map:
                    json.WriteStartObject();
                    foreach (var (k, v) in map.Children)
                    {
                        json.WritePropertyName(((YamlScalarNode)k).Value ?? "");
                        Write(json, v);
                    }
                    json.WriteEndObject();
                    break;
                case YamlSequenceNode seq:
                    json.WriteStartArray();
                    foreach (var c in seq.Children) Write(json, c);
                    json.WriteEndArray();
                    break;
                case YamlScalarNode { Style: YamlDotNet.Core.ScalarStyle.Plain, Value: var v }:
                    if (v is null or "~" or "null" or "Null" or "NULL") json.WriteNullValue();
                    else if (v is "true" or "True" or "TRUE") json.WriteBooleanValue(true);
                    else if (v is "false" or "False" or "FALSE") json.WriteBooleanValue(false);
                    else if (long.TryParse(v, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out long l)) json.WriteNumberValue(l);
                    else if (double.TryParse(v, NumberStyles.Float, CultureInfo.InvariantCulture, out double d) && double.IsFinite(d)) json.WriteNumberValue(d);
                    else json.WriteStringValue(v);
                    break;
                case YamlScalarNode quoted:
                    json.WriteStringValue(quoted.Value ?? "");
                    break;
            }
        }
    }

    private static readonly NullabilityInfoContext Nullability = new();

    /// <summary>Whether the option may be set to none: a Nullable value type, or a reference type annotated nullable.</summary>
    private static bool Nullable(PropertyInfo p) =>
        System.Nullable.GetUnderlyingType(p.PropertyType) != null || !p.PropertyType.IsValueType && Nullability.Create(p).WriteState == NullabilityState.Nullable;

    private static object? Convert(object? raw, Type type, string where)
    {
        if (raw == null) return null;
        type = System.Nullable.GetUnderlyingType(type) ?? type;
        try
        {
            if (type == typeof(string[])) return raw as string[] ?? [(string)raw];
            var s = raw as string ?? throw new FormatException("a list is not allowed here");
            if (type == typeof(string)) return s;
            if (type == typeof(int)) return int.Parse(s, CultureInfo.InvariantCulture);
            if (type == typeof(float)) return float.Parse(s, CultureInfo.InvariantCulture);
            if (type == typeof(double)) return double.Parse(s, CultureInfo.InvariantCulture);
            if (type == typeof(bool)) return s.ToLowerInvariant() switch { "true" or "yes" or "on" or "1" => true, "false" or "no" or "off" or "0" => false, _ => throw new FormatException() };
        }
        catch (FormatException e)
        {
            string shown = raw is string[] items ? "[" + string.Join(", ", items) + "]" : raw.ToString()!;
            string kind = type == typeof(int) ? "integer" : type == typeof(bool) ? "boolean (true or false)" : type == typeof(string) ? "string" : "number";
            throw new UserInputException($"{where}: {shown} is not a valid {kind}{(e.Message.Contains("list") ? " (" + e.Message + ")" : "")}.");
        }
        catch (OverflowException)
        {
            throw new UserInputException($"{where}: '{raw}' is out of range.");
        }
        throw new InvalidOperationException($"Unsupported option type {type}.");
    }
}
