using System.Diagnostics;

namespace AlignSharp.Tests;

/// <summary>
/// Runs the built CLI (src/AlignSharp.Cli/bin/&lt;Configuration&gt;/net10.0/alignsharp.dll) as a process with
/// <c>dotnet</c>, as a user would. The test project builds the CLI (a non-referencing ProjectReference), so the file
/// exists after <c>dotnet test</c>'s build.
/// </summary>
public static class CliRunner
{
    public sealed record Result(int ExitCode, string StdOut, string StdErr);

    /// <summary>The repository root: the nearest ancestor of the test assembly holding AlignSharp.slnx.</summary>
    public static string RepoRoot { get; } = FindRepoRoot();

    static string FindRepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "AlignSharp.slnx"))) return dir.FullName;
        throw new InvalidOperationException($"no AlignSharp.slnx above {AppContext.BaseDirectory}");
    }

    /// <summary>Path of the CLI assembly built in the same configuration as the tests.</summary>
    public static string CliDll
    {
        get
        {
#if DEBUG
            const string configuration = "Debug";
#else
            const string configuration = "Release";
#endif
            string dir = Path.Combine(RepoRoot, "src", "AlignSharp.Cli", "bin", configuration, "net10.0");
            string dll = Path.Combine(dir, "alignsharp.dll");
            return File.Exists(dll) ? dll : throw new FileNotFoundException($"CLI not built: {dll}");
        }
    }

    /// <summary>Runs <c>dotnet alignsharp.dll args...</c> in <paramref name="workingDirectory"/> (default: repo root);
    /// <paramref name="environment"/> sets (or, with a null value, removes) variables of the child's environment.</summary>
    public static Result Run(IEnumerable<string> args, string? stdin = null, string? workingDirectory = null, int timeoutMs = 120_000,
        IReadOnlyDictionary<string, string?>? environment = null)
    {
        var psi = StartInfo(args, workingDirectory);
        foreach (var (name, value) in environment ?? new Dictionary<string, string?>())
            if (value == null) psi.Environment.Remove(name);
            else psi.Environment[name] = value;
        psi.RedirectStandardInput = stdin is not null;
        using var process = Process.Start(psi)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        if (stdin is not null)
        {
            process.StandardInput.Write(stdin);
            process.StandardInput.Close();
        }
        if (!process.WaitForExit(timeoutMs))
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"alignsharp {string.Join(' ', args)} ran longer than {timeoutMs} ms");
        }
        return new Result(process.ExitCode, stdout.Result, stderr.Result);
    }

    public static Result Run(params string[] args) => Run((IEnumerable<string>)args);

    /// <summary>The process start info for <c>dotnet alignsharp.dll args...</c> with stdout and stderr redirected.</summary>
    public static ProcessStartInfo StartInfo(IEnumerable<string> args, string? workingDirectory = null)
    {
        var psi = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = workingDirectory ?? RepoRoot,
            StandardOutputEncoding = System.Text.Encoding.UTF8,
            StandardErrorEncoding = System.Text.Encoding.UTF8,
        };
        psi.ArgumentList.Add(CliDll);
        foreach (var a in args) psi.ArgumentList.Add(a);
        return psi;
    }
}
