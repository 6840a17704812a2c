using System.Runtime.InteropServices;
using System.Runtime.Intrinsics.X86;

namespace AlignSharp.Engine.Kernels;

/// <summary>
/// The x86 processor's vendor, family and model (CPUID leaves 0 and 1), for the kernels tuned per microarchitecture
/// (<see cref="Bf16Dot.PrefetchIntoL2"/>), the bf16 kernel's feature check and benchmark reports; the one place CPUID is
/// read. Empty, 0 and false on other processors or without the runtime's intrinsics.
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

    /// <summary>Whether the processor reports AVX512_BF16 (leaf 7, subleaf 1: EAX bit 5), whatever the runtime's switches
    /// say (the runtime reports AVX-512 F/BW itself; it has no BF16 flag).</summary>
    public static bool HasAvx512Bf16 { get; }

    static CpuId()
    {
        Vendor = "";
        if (!X86Base.IsSupported) return;
        var (maxLeaf, ebx, ecx, edx) = X86Base.CpuId(0, 0);
        Span<int> words = [ebx, edx, ecx];
        Vendor = System.Text.Encoding.ASCII.GetString(MemoryMarshal.AsBytes(words));
        int eax = X86Base.CpuId(1, 0).Eax, baseFamily = (eax >> 8) & 0xF, baseModel = (eax >> 4) & 0xF;
        Family = baseFamily == 0xF ? baseFamily + ((eax >> 20) & 0xFF) : baseFamily;
        Model = baseFamily is 0x6 or 0xF ? baseModel | (((eax >> 16) & 0xF) << 4) : baseModel;
        HasAvx512Bf16 = maxLeaf >= 7 && (X86Base.CpuId(7, 1).Eax & (1 << 5)) != 0;
    }
}
