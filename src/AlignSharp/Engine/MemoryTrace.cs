using System.Globalization;

namespace AlignSharp.Engine;

/// <summary>
/// Where a run's memory goes, phase by phase: with the environment variable <c>ALIGNSHARP_MEMORY_TRACE=1</c> each
/// <see cref="Mark"/> writes one line to standard error with the process's resident memory now and at its peak so far
/// (Linux /proc/self/status: VmRSS split into anonymous and file-backed pages, VmHWM), the GC heap (live and committed)
/// and the buffer pool (rented and kept). A rise of the peak between two marks points at what ran between them.
/// Without the variable (or off Linux for the /proc figures) a mark costs one cached bool test.
/// </summary>
public static class MemoryTrace
{
    /// <summary>The environment variable that turns tracing on ("1").</summary>
    public const string Variable = "ALIGNSHARP_MEMORY_TRACE";

    /// <summary>Whether <see cref="Mark"/> writes (read once from <see cref="Variable"/>; settable for tests).</summary>
    public static bool Enabled { get; set; } = Environment.GetEnvironmentVariable(Variable) == "1";

    /// <summary>Writes one line about the memory after <paramref name="phase"/> when tracing is on.</summary>
    public static void Mark(string phase)
    {
        if (!Enabled) return;
        Console.Error.WriteLine(Describe(phase));
    }

    /// <summary>The line <see cref="Mark"/> writes.</summary>
    public static string Describe(string phase)
    {
        var status = ProcessStatus();
        var gc = GC.GetGCMemoryInfo();
        return string.Create(CultureInfo.InvariantCulture,
            $"memory: {phase,-28} rss {Gib(status.GetValueOrDefault("VmRSS"))} (anon {Gib(status.GetValueOrDefault("RssAnon"))}, " +
            $"file {Gib(status.GetValueOrDefault("RssFile"))})  peak {Gib(status.GetValueOrDefault("VmHWM"))}  " +
            $"gc heap {Gib(GC.GetTotalMemory(false))} (committed {Gib(gc.TotalCommittedBytes)})  " +
            $"pool rented {Gib(BufferPool.RentedFloats * 4)} kept {Gib(BufferPool.PooledFloats * 4)}");
    }

    /// <summary>The kB figures of /proc/self/status (VmRSS, VmHWM, RssAnon, RssFile, ...) in bytes; empty where there is none.</summary>
    public static Dictionary<string, long> ProcessStatus()
    {
        var result = new Dictionary<string, long>();
        const string file = "/proc/self/status";
        if (!File.Exists(file)) return result;
        foreach (var line in File.ReadLines(file))
        {
            int colon = line.IndexOf(':');
            if (colon < 0 || !line.EndsWith(" kB", StringComparison.Ordinal)) continue;
            if (long.TryParse(line.AsSpan(colon + 1, line.Length - colon - 4).Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out long kb))
                result[line[..colon]] = kb * 1024;
        }
        return result;
    }

    private static string Gib(long bytes) => (bytes / (1024.0 * 1024 * 1024)).ToString("0.00", CultureInfo.InvariantCulture) + " GiB";
}
