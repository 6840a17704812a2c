using System.CommandLine;
using AlignSharp.Cli.Commands;
using AlignSharp.Distributed;

namespace AlignSharp.Cli;

public static class Program
{
    public static int Main(string[] args)
    {
        AlignSharp.Training.Runs.RunSession.CommandLine = args;
        var root = BuildRoot();
        // Under mpirun or srun: one rank of a data-parallel job (see DataParallel).
        if (MpiCommunicator.LaunchedAsJob()) return DataParallel.Run(() => CliErrors.Guard(() => Invoke(root, args)));
        return CliErrors.Guard(() => Invoke(root, args));
    }

    private static int Invoke(RootCommand root, string[] args)
    {
        var parsed = root.Parse(args);
        foreach (var hint in ForeignFlags.HintsFor(parsed.UnmatchedTokens)) Console.Error.WriteLine(hint);
        return parsed.Invoke();
    }

    /// <summary>Every command registers here; each lives in its own file under Commands/.</summary>
    public static RootCommand BuildRoot()
    {
        var root = new RootCommand("AlignSharp: reinforcement learning from human feedback for language models, in .NET.");
        root.Subcommands.Add(BenchCommand.Create());
        root.Subcommands.Add(InitCommand.Create());
        root.Subcommands.Add(TokenizeCommand.Create());
        root.Subcommands.Add(TemplateCommand.Create());
        root.Subcommands.Add(LogprobsCommand.Create());
        root.Subcommands.Add(GenerateCommand.Create());
        root.Subcommands.Add(MergeCommand.Create());
        root.Subcommands.Add(TrainCommands.Sft());
        root.Subcommands.Add(TrainCommands.RewardModel());
        root.Subcommands.Add(ScoreCommand.Create());
        root.Subcommands.Add(AnnotateCommand.Create());
        root.Subcommands.Add(PpoCommand.Create());
        root.Subcommands.Add(GrpoCommand.Create());
        root.Subcommands.Add(RlooCommand.Create());
        root.Subcommands.Add(DpoCommand.Create());
        root.Subcommands.Add(OnlineDpoCommand.Create());
        root.Subcommands.Add(KtoCommand.Create());
        root.Subcommands.Add(EvalCommand.Create());
        root.Subcommands.Add(DemoCommand.Create());
        root.Subcommands.Add(ReportCommand.Create());
        return root;
    }
}
