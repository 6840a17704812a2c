namespace AlignSharp.Training.Runs;

/// <summary>
/// Documents a trainer option where it is declared. The same text is the CLI's <c>--help</c>; the flag is the
/// property name in kebab case (LearningRate → <c>--learning-rate</c>) and the config-file key is the same name
/// in snake case or kebab case (<c>learning_rate</c>, <c>learning-rate</c>).
/// </summary>
[AttributeUsage(AttributeTargets.Property)]
public sealed class OptionAttribute(string help) : Attribute
{
    public string Help { get; } = help;

    /// <summary>
    /// True for options that do not change the training math (logging, checkpoint schedule, threads, paths of outputs):
    /// they may differ when a run is resumed. Every other option must match the checkpoint's run_config.json.
    /// </summary>
    public bool SafeToChangeOnResume { get; init; }

    /// <summary>True for options a command cannot run without; --help marks them "(required)".</summary>
    public bool Required { get; init; }

    /// <summary>True for a string option that holds a comma-separated list: a config file may give it as a list (TRL's
    /// <c>lora_target_modules: [q_proj, v_proj]</c>).</summary>
    public bool CommaList { get; init; }

    /// <summary>The flag of a property: PascalCase → --kebab-case (LearningRate → --learning-rate).</summary>
    public static string FlagName(string property)
    {
        var sb = new System.Text.StringBuilder("--");
        for (int i = 0; i < property.Length; i++)
        {
            char c = property[i];
            if (char.IsUpper(c) && i > 0 && !(char.IsUpper(property[i - 1]) && (i + 1 == property.Length || char.IsUpper(property[i + 1])))) sb.Append('-');
            sb.Append(char.ToLowerInvariant(c));
        }
        return sb.ToString();
    }
}

/// <summary>
/// Another name for an option, as Hugging Face TRL/transformers spell it (<c>output_dir</c> for --out): accepted as a
/// config-file key and as a flag (<c>--output_dir</c>). Declared on the options record it applies to, so GRPO's
/// <c>beta</c> (its KL coefficient) does not clash with DPO's <c>--beta</c>.
/// </summary>
[AttributeUsage(AttributeTargets.Class, AllowMultiple = true, Inherited = true)]
public sealed class TrlNameAttribute(string name, string property) : Attribute
{
    /// <summary>The TRL spelling (snake_case).</summary>
    public string Name { get; } = name;

    /// <summary>The option property it sets.</summary>
    public string Property { get; } = property;

    /// <summary>Every TRL name declared on <paramref name="type"/> and its base records.</summary>
    public static IEnumerable<TrlNameAttribute> Of(Type type)
    {
        for (var t = type; t != null && t != typeof(object); t = t.BaseType)
            foreach (var a in t.GetCustomAttributes(typeof(TrlNameAttribute), false).Cast<TrlNameAttribute>()) yield return a;
    }
}

/// <summary>
/// Options a trainer's record inherits but has no use for (online DPO samples its answers, so it reads no --data):
/// they get no flag and no config-file key, are not written to run_config.json, and are not validated. Declared on
/// the record that drops them, by property name.
/// </summary>
[AttributeUsage(AttributeTargets.Class, Inherited = true)]
public sealed class OmitOptionsAttribute(params string[] properties) : Attribute
{
    public IReadOnlyList<string> Properties { get; } = properties;

    /// <summary>True when <paramref name="type"/> (or a record it derives from) drops option <paramref name="property"/>.</summary>
    public static bool Omits(Type type, string property)
        => type.GetCustomAttributes(typeof(OmitOptionsAttribute), true).Cast<OmitOptionsAttribute>().Any(a => a.Properties.Contains(property));

    /// <summary>True when <paramref name="property"/> is an option of <paramref name="type"/>: declared with <see cref="OptionAttribute"/> and not omitted.</summary>
    public static bool IsOption(Type type, System.Reflection.PropertyInfo property)
        => property.GetCustomAttributes(typeof(OptionAttribute), true).Length > 0 && !Omits(type, property.Name);
}
