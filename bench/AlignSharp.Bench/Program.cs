using BenchmarkDotNet.Running;

namespace AlignSharp.Bench;

/// <summary>BenchmarkDotNet kernel benchmarks: `dotnet run -c Release --project bench/AlignSharp.Bench -- --filter '*'`.</summary>
public static class Program
{
    public static void Main(string[] args) => BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
}
