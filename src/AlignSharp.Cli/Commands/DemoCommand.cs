using System.CommandLine;
using AlignSharp.Demo;

namespace AlignSharp.Cli.Commands;

/// <summary>`alignsharp demo`: the built-in simulated-human RLHF experiment, end to end.</summary>
public static class DemoCommand
{
    public static Command Create()
    {
        var output = new Option<string>("--out") { Description = "Run directory to write (results.json, report.html, every phase's run).", DefaultValueFactory = _ => "demo-run" };
        var seed = new Option<int>("--seed") { Description = "Random seed of the whole experiment (world, models, annotators, sampling). [default: 0]" };
        var quick = new Option<bool>("--quick") { Description = "Smaller settings that finish in about a minute (for CI and first contact); they show the effects with smaller margins." };
        var cmd = new Command("demo",
            "Simulated-human RLHF on a synthetic language: pretrain, SFT, simulated annotators rank samples, reward model, PPO (with and without KL), DPO, best-of-N; evaluated on held-out prompts by the hidden gold reward.")
        { output, seed, quick };
        cmd.SetAction(r => CliErrors.Guard(() =>
        {
            string dir = r.GetValue(output)!;
            if (string.IsNullOrWhiteSpace(dir)) throw new CliException("--out must name a directory.");
            if (File.Exists(dir)) throw new CliException($"--out: {dir} is a file; name a directory for the run.");
            var settings = r.GetValue(quick) ? DemoSettings.Quick : DemoSettings.Default;
            new DemoExperiment(settings, dir, r.GetValue(seed), Console.Out).Run();
            return 0;
        }));
        return cmd;
    }
}
