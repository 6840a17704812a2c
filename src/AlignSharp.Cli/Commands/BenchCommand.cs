using System.CommandLine;

namespace AlignSharp.Cli.Commands;

/// <summary>`alignsharp bench gemm|train|sample|rl|tokenizer`: whole-workload benchmarks printing one JSON object on stdout.</summary>
public static class BenchCommand
{
    public static Command Create()
    {
        var bench = new Command("bench", "Benchmarks that print one JSON object on stdout (for scripts and docs/performance.md).");
        bench.Subcommands.Add(BenchGemmCommand.Create());
        bench.Subcommands.Add(BenchTrainCommand.Create());
        bench.Subcommands.Add(BenchSampleCommand.Create());
        bench.Subcommands.Add(BenchRlCommand.Create());
        bench.Subcommands.Add(BenchTokenizerCommand.Create());
        return bench;
    }
}
