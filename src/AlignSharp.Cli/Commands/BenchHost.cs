using System.Runtime.InteropServices;
using AlignSharp.Engine.Kernels;

namespace AlignSharp.Cli.Commands;

/// <summary>
/// What a benchmark's numbers depend on besides the code, for its JSON: the processor, and the bf16 decode kernel's
/// prefetch level chosen for it. One machine kind here has come as AMD Zen 5 (family 0x1A) and as Zen 4 (0x19), whose
/// decoding differed by 1.3–1.5× before the kernel chose its prefetch level by family (docs/performance.md).
/// </summary>
public static class BenchHost
{
    /// <summary>"model name (vendor family 0x.. model 0x..)" from CPUID and /proc/cpuinfo; the architecture elsewhere.</summary>
    public static string Cpu { get; } = Describe();

    /// <summary>"l1" or "l2" where the native bf16 kernel runs (<see cref="Bf16Dot.PrefetchIntoL2"/>), "none" where it does not.</summary>
    public static string Bf16Prefetch => Bf16Dot.IsAvailable ? Bf16Dot.PrefetchIntoL2 ? "l2" : "l1" : "none";

    private static string Describe()
    {
        string name = ModelName() ?? RuntimeInformation.ProcessArchitecture.ToString();
        return CpuId.Vendor == "" ? name : $"{name} ({CpuId.Vendor} family 0x{CpuId.Family:X} model 0x{CpuId.Model:X})";
    }

    private static string? ModelName()
    {
        try
        {
            foreach (var line in File.ReadLines("/proc/cpuinfo"))
                if (line.StartsWith("model name", StringComparison.Ordinal) && line.IndexOf(':') is int colon and > 0)
                    return line[(colon + 1)..].Trim();
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        return null;
    }
}
