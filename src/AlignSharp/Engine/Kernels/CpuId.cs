using System.Runtime.InteropServices;
using System.Runtime.Intrinsics.X86;

namespace AlignSharp.Engine.Kernels;

/// <summary>
/// The x86 processor's vendor, family and model (CPUID leaves 0 and 1), for the kernels tuned per microarchitecture
/// (<see cref="Bf16Dot.PrefetchIntoL2"/>) and for benchmark reports. Empty and 0 on other processors.
/// </summary>
internal static class CpuId
{
    /// <summary>"AuthenticAMD", "GenuineIntel", … (leaf 0: EBX, EDX, ECX).</summary>
    public static string Vendor { get; }

    /// <summary>The displayed family: the base family, plus the extended family when the base is 0xF.</summary>
    public static int Family { get; }

    /// <summary>The displayed model: the base model, with the extended model above it for families 0x6 and 0xF.</summary>
    public static int Model { get; }

    public static bool IsAmd => Vendor == "AuthenticAMD";

    static CpuId()
    {
        Vendor = "";
        if (!X86Base.IsSupported) return;
        var (_, ebx, ecx, edx) = X86Base.CpuId(0, 0);
        Span<int> words = [ebx, edx, ecx];
        Vendor = System.Text.Encoding.ASCII.GetString(MemoryMarshal.AsBytes(words));
        int eax = X86Base.CpuId(1, 0).Eax, baseFamily = (eax >> 8) & 0xF, baseModel = (eax >> 4) & 0xF;
        Family = baseFamily == 0xF ? baseFamily + ((eax >> 20) & 0xFF) : baseFamily;
        Model = baseFamily is 0x6 or 0xF ? baseModel | (((eax >> 16) & 0xF) << 4) : baseModel;
    }
}
