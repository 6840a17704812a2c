using BenchmarkDotNet.Running;

namespace AlignSharp.Bench;

/// <summary>BenchmarkDotNet kernel benchmarks: `dotnet run -c Release --project bench/AlignSharp.Bench -- --filter '*'`;
/// the decoding probes (see <see cref="DecodeProbes"/>) with `-- decode-ab ...`, `-- decode-shapes ...` or `-- decode-attention`.</summary>
public static class Program
{
    public static int Main(string[] args)
    {
        if (args.Length > 0 && args[0].StartsWith("decode-", StringComparison.Ordinal)) return DecodeProbes.Run(args);
        BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
        return 0;
    }
}
