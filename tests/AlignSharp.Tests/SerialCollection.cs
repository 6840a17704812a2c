namespace AlignSharp.Tests;

/// <summary>Tests that change process-wide engine settings (thread count, SIMD paths) run alone, after the rest.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class SerialCollection
{
    public const string Name = "serial";
}
