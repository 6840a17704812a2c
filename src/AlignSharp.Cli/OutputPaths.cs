namespace AlignSharp.Cli;

/// <summary>
/// An output file never replaces what its command reads: `generate --input p.jsonl --output p.jsonl` would leave the
/// generations where the prompts were, and `annotate export --out NAME.annotations.db` an empty file where the
/// rankings were. Refused before anything is read or written.
/// </summary>
internal static class OutputPaths
{
    /// <summary>
    /// Throws when <paramref name="output"/> is one of <paramref name="inputs"/> (files or directories), or an existing
    /// file inside an input directory (a model's config.json, a run's metrics.jsonl). A null output (stdout) or input
    /// (not given) passes.
    /// </summary>
    public static void RefuseInput(string outputFlag, string? output, params (string Flag, string? Path)[] inputs)
    {
        if (string.IsNullOrEmpty(output)) return;
        string o = Full(output);
        foreach (var (flag, path) in inputs)
        {
            if (string.IsNullOrEmpty(path)) continue;
            string i = Full(path);
            if (o == i)
                throw new CliException($"{outputFlag} {output} is also {flag}, which this command reads; write the output elsewhere.");
            if (Directory.Exists(i) && File.Exists(o) && o.StartsWith(i + Path.DirectorySeparatorChar, StringComparison.Ordinal))
                throw new CliException($"{outputFlag} {output} would replace a file in {flag} {path}; write the output elsewhere.");
        }
    }

    /// <summary>A path as compared here: absolute, without a trailing separator.</summary>
    public static string Full(string path) => Path.TrimEndingDirectorySeparator(Path.GetFullPath(path));
}
