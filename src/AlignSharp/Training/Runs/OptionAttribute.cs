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
}
