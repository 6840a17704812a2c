using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace AlignSharp.Engine.Kernels;

/// <summary>
/// An MR×NR register-tile micro-kernel over packed panels (see <see cref="Gemm"/>):
/// <code>
///   C[0..MR, 0..NR] (row stride ldc) = (load ? C : 0) + Σ_{p&lt;kc} a[p·MR + r] · b[p·NR + j]
/// </code>
/// one FMA chain per element in increasing p. <c>b</c> must be 64-byte aligned; <c>a</c> and <c>c</c> need not be.
/// Lane layout of the SIMD kernels: row r of the tile is NR/W consecutive vectors of W lanes (W = 16 for
/// Vector512, 8 for Vector256); per k step the B row is loaded once, each A value is broadcast once and
/// feeds one FMA per vector of its row.
/// </summary>
internal unsafe interface IGemmKernel
{
    static abstract int MR { get; }
    static abstract int NR { get; }
    static abstract bool IsSupported { get; }
    static abstract void Run(int kc, float* a, float* b, float* c, nint ldc, bool load);
}

/// <summary>Portable 4×4 tile in scalars (multiply then add, no FMA), for CPUs without AVX2.</summary>
internal readonly unsafe struct ScalarKernel : IGemmKernel
{
    public static int MR => 4;
    public static int NR => 4;
    public static bool IsSupported => true;

    public static void Run(int kc, float* a, float* b, float* c, nint ldc, bool load)
    {
        float* c0 = c, c1 = c + ldc, c2 = c + 2 * ldc, c3 = c + 3 * ldc;
        float c00 = 0, c01 = 0, c02 = 0, c03 = 0, c10 = 0, c11 = 0, c12 = 0, c13 = 0;
        float c20 = 0, c21 = 0, c22 = 0, c23 = 0, c30 = 0, c31 = 0, c32 = 0, c33 = 0;
        if (load)
        {
            c00 = c0[0]; c01 = c0[1]; c02 = c0[2]; c03 = c0[3];
            c10 = c1[0]; c11 = c1[1]; c12 = c1[2]; c13 = c1[3];
            c20 = c2[0]; c21 = c2[1]; c22 = c2[2]; c23 = c2[3];
            c30 = c3[0]; c31 = c3[1]; c32 = c3[2]; c33 = c3[3];
        }
        for (; kc > 0; kc--)
        {
            float b0 = b[0], b1 = b[1], b2 = b[2], b3 = b[3];
            float a0 = a[0]; c00 += a0 * b0; c01 += a0 * b1; c02 += a0 * b2; c03 += a0 * b3;
            float a1 = a[1]; c10 += a1 * b0; c11 += a1 * b1; c12 += a1 * b2; c13 += a1 * b3;
            float a2 = a[2]; c20 += a2 * b0; c21 += a2 * b1; c22 += a2 * b2; c23 += a2 * b3;
            float a3 = a[3]; c30 += a3 * b0; c31 += a3 * b1; c32 += a3 * b2; c33 += a3 * b3;
            a += 4;
            b += 4;
        }
        c0[0] = c00; c0[1] = c01; c0[2] = c02; c0[3] = c03;
        c1[0] = c10; c1[1] = c11; c1[2] = c12; c1[3] = c13;
        c2[0] = c20; c2[1] = c21; c2[2] = c22; c2[3] = c23;
        c3[0] = c30; c3[1] = c31; c3[2] = c32; c3[3] = c33;
    }
}

/// <summary>12x32 tile: 24 accumulators (12 rows x 2 Vector512 lanes-groups), 2 B loads and 12 broadcasts per k step.</summary>
internal readonly unsafe struct Avx512Kernel : IGemmKernel
{
    public static int MR => 12;
    public static int NR => 32;
    public static bool IsSupported => Avx512F.IsSupported;

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Run(int kc, float* a, float* b, float* c, nint ldc, bool load)
    {
        Vector512<float> c0_0, c0_1, c1_0, c1_1, c2_0, c2_1, c3_0, c3_1, c4_0, c4_1, c5_0, c5_1, c6_0, c6_1, c7_0, c7_1, c8_0, c8_1, c9_0, c9_1, c10_0, c10_1, c11_0, c11_1;
        if (load)
        {
            c0_0 = Vector512.Load(c + 0 * ldc); c0_1 = Vector512.Load(c + 0 * ldc + 16);
            c1_0 = Vector512.Load(c + 1 * ldc); c1_1 = Vector512.Load(c + 1 * ldc + 16);
            c2_0 = Vector512.Load(c + 2 * ldc); c2_1 = Vector512.Load(c + 2 * ldc + 16);
            c3_0 = Vector512.Load(c + 3 * ldc); c3_1 = Vector512.Load(c + 3 * ldc + 16);
            c4_0 = Vector512.Load(c + 4 * ldc); c4_1 = Vector512.Load(c + 4 * ldc + 16);
            c5_0 = Vector512.Load(c + 5 * ldc); c5_1 = Vector512.Load(c + 5 * ldc + 16);
            c6_0 = Vector512.Load(c + 6 * ldc); c6_1 = Vector512.Load(c + 6 * ldc + 16);
            c7_0 = Vector512.Load(c + 7 * ldc); c7_1 = Vector512.Load(c + 7 * ldc + 16);
            c8_0 = Vector512.Load(c + 8 * ldc); c8_1 = Vector512.Load(c + 8 * ldc + 16);
            c9_0 = Vector512.Load(c + 9 * ldc); c9_1 = Vector512.Load(c + 9 * ldc + 16);
            c10_0 = Vector512.Load(c + 10 * ldc); c10_1 = Vector512.Load(c + 10 * ldc + 16);
            c11_0 = Vector512.Load(c + 11 * ldc); c11_1 = Vector512.Load(c + 11 * ldc + 16);
        }
        else
        {
            c0_0 = Vector512<float>.Zero; c0_1 = Vector512<float>.Zero;
            c1_0 = Vector512<float>.Zero; c1_1 = Vector512<float>.Zero;
            c2_0 = Vector512<float>.Zero; c2_1 = Vector512<float>.Zero;
            c3_0 = Vector512<float>.Zero; c3_1 = Vector512<float>.Zero;
            c4_0 = Vector512<float>.Zero; c4_1 = Vector512<float>.Zero;
            c5_0 = Vector512<float>.Zero; c5_1 = Vector512<float>.Zero;
            c6_0 = Vector512<float>.Zero; c6_1 = Vector512<float>.Zero;
            c7_0 = Vector512<float>.Zero; c7_1 = Vector512<float>.Zero;
            c8_0 = Vector512<float>.Zero; c8_1 = Vector512<float>.Zero;
            c9_0 = Vector512<float>.Zero; c9_1 = Vector512<float>.Zero;
            c10_0 = Vector512<float>.Zero; c10_1 = Vector512<float>.Zero;
            c11_0 = Vector512<float>.Zero; c11_1 = Vector512<float>.Zero;
        }
        for (; kc > 0; kc--)
        {
            Vector512<float> b0 = Vector512.Load(b + 0); Vector512<float> b1 = Vector512.Load(b + 16);
            var a0 = Vector512.Create(a[0]); c0_0 = Avx512F.FusedMultiplyAdd(a0, b0, c0_0); c0_1 = Avx512F.FusedMultiplyAdd(a0, b1, c0_1);
            var a1 = Vector512.Create(a[1]); c1_0 = Avx512F.FusedMultiplyAdd(a1, b0, c1_0); c1_1 = Avx512F.FusedMultiplyAdd(a1, b1, c1_1);
            var a2 = Vector512.Create(a[2]); c2_0 = Avx512F.FusedMultiplyAdd(a2, b0, c2_0); c2_1 = Avx512F.FusedMultiplyAdd(a2, b1, c2_1);
            var a3 = Vector512.Create(a[3]); c3_0 = Avx512F.FusedMultiplyAdd(a3, b0, c3_0); c3_1 = Avx512F.FusedMultiplyAdd(a3, b1, c3_1);
            var a4 = Vector512.Create(a[4]); c4_0 = Avx512F.FusedMultiplyAdd(a4, b0, c4_0); c4_1 = Avx512F.FusedMultiplyAdd(a4, b1, c4_1);
            var a5 = Vector512.Create(a[5]); c5_0 = Avx512F.FusedMultiplyAdd(a5, b0, c5_0); c5_1 = Avx512F.FusedMultiplyAdd(a5, b1, c5_1);
            var a6 = Vector512.Create(a[6]); c6_0 = Avx512F.FusedMultiplyAdd(a6, b0, c6_0); c6_1 = Avx512F.FusedMultiplyAdd(a6, b1, c6_1);
            var a7 = Vector512.Create(a[7]); c7_0 = Avx512F.FusedMultiplyAdd(a7, b0, c7_0); c7_1 = Avx512F.FusedMultiplyAdd(a7, b1, c7_1);
            var a8 = Vector512.Create(a[8]); c8_0 = Avx512F.FusedMultiplyAdd(a8, b0, c8_0); c8_1 = Avx512F.FusedMultiplyAdd(a8, b1, c8_1);
            var a9 = Vector512.Create(a[9]); c9_0 = Avx512F.FusedMultiplyAdd(a9, b0, c9_0); c9_1 = Avx512F.FusedMultiplyAdd(a9, b1, c9_1);
            var a10 = Vector512.Create(a[10]); c10_0 = Avx512F.FusedMultiplyAdd(a10, b0, c10_0); c10_1 = Avx512F.FusedMultiplyAdd(a10, b1, c10_1);
            var a11 = Vector512.Create(a[11]); c11_0 = Avx512F.FusedMultiplyAdd(a11, b0, c11_0); c11_1 = Avx512F.FusedMultiplyAdd(a11, b1, c11_1);
            a += 12;
            b += 32;
        }
        Vector512.Store(c0_0, c + 0 * ldc); Vector512.Store(c0_1, c + 0 * ldc + 16);
        Vector512.Store(c1_0, c + 1 * ldc); Vector512.Store(c1_1, c + 1 * ldc + 16);
        Vector512.Store(c2_0, c + 2 * ldc); Vector512.Store(c2_1, c + 2 * ldc + 16);
        Vector512.Store(c3_0, c + 3 * ldc); Vector512.Store(c3_1, c + 3 * ldc + 16);
        Vector512.Store(c4_0, c + 4 * ldc); Vector512.Store(c4_1, c + 4 * ldc + 16);
        Vector512.Store(c5_0, c + 5 * ldc); Vector512.Store(c5_1, c + 5 * ldc + 16);
        Vector512.Store(c6_0, c + 6 * ldc); Vector512.Store(c6_1, c + 6 * ldc + 16);
        Vector512.Store(c7_0, c + 7 * ldc); Vector512.Store(c7_1, c + 7 * ldc + 16);
        Vector512.Store(c8_0, c + 8 * ldc); Vector512.Store(c8_1, c + 8 * ldc + 16);
        Vector512.Store(c9_0, c + 9 * ldc); Vector512.Store(c9_1, c + 9 * ldc + 16);
        Vector512.Store(c10_0, c + 10 * ldc); Vector512.Store(c10_1, c + 10 * ldc + 16);
        Vector512.Store(c11_0, c + 11 * ldc); Vector512.Store(c11_1, c + 11 * ldc + 16);
    }
}

/// <summary>6x16 tile: 12 accumulators (6 rows x 2 Vector256 lanes-groups), 2 B loads and 6 broadcasts per k step.</summary>
internal readonly unsafe struct Avx2Kernel : IGemmKernel
{
    public static int MR => 6;
    public static int NR => 16;
    public static bool IsSupported => Avx2.IsSupported && Fma.IsSupported;

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Run(int kc, float* a, float* b, float* c, nint ldc, bool load)
    {
        Vector256<float> c0_0, c0_1, c1_0, c1_1, c2_0, c2_1, c3_0, c3_1, c4_0, c4_1, c5_0, c5_1;
        if (load)
        {
            c0_0 = Vector256.Load(c + 0 * ldc); c0_1 = Vector256.Load(c + 0 * ldc + 8);
            c1_0 = Vector256.Load(c + 1 * ldc); c1_1 = Vector256.Load(c + 1 * ldc + 8);
            c2_0 = Vector256.Load(c + 2 * ldc); c2_1 = Vector256.Load(c + 2 * ldc + 8);
            c3_0 = Vector256.Load(c + 3 * ldc); c3_1 = Vector256.Load(c + 3 * ldc + 8);
            c4_0 = Vector256.Load(c + 4 * ldc); c4_1 = Vector256.Load(c + 4 * ldc + 8);
            c5_0 = Vector256.Load(c + 5 * ldc); c5_1 = Vector256.Load(c + 5 * ldc + 8);
        }
        else
        {
            c0_0 = Vector256<float>.Zero; c0_1 = Vector256<float>.Zero;
            c1_0 = Vector256<float>.Zero; c1_1 = Vector256<float>.Zero;
            c2_0 = Vector256<float>.Zero; c2_1 = Vector256<float>.Zero;
            c3_0 = Vector256<float>.Zero; c3_1 = Vector256<float>.Zero;
            c4_0 = Vector256<float>.Zero; c4_1 = Vector256<float>.Zero;
            c5_0 = Vector256<float>.Zero; c5_1 = Vector256<float>.Zero;
        }
        for (; kc > 0; kc--)
        {
            Vector256<float> b0 = Vector256.Load(b + 0); Vector256<float> b1 = Vector256.Load(b + 8);
            var a0 = Vector256.Create(a[0]); c0_0 = Fma.MultiplyAdd(a0, b0, c0_0); c0_1 = Fma.MultiplyAdd(a0, b1, c0_1);
            var a1 = Vector256.Create(a[1]); c1_0 = Fma.MultiplyAdd(a1, b0, c1_0); c1_1 = Fma.MultiplyAdd(a1, b1, c1_1);
            var a2 = Vector256.Create(a[2]); c2_0 = Fma.MultiplyAdd(a2, b0, c2_0); c2_1 = Fma.MultiplyAdd(a2, b1, c2_1);
            var a3 = Vector256.Create(a[3]); c3_0 = Fma.MultiplyAdd(a3, b0, c3_0); c3_1 = Fma.MultiplyAdd(a3, b1, c3_1);
            var a4 = Vector256.Create(a[4]); c4_0 = Fma.MultiplyAdd(a4, b0, c4_0); c4_1 = Fma.MultiplyAdd(a4, b1, c4_1);
            var a5 = Vector256.Create(a[5]); c5_0 = Fma.MultiplyAdd(a5, b0, c5_0); c5_1 = Fma.MultiplyAdd(a5, b1, c5_1);
            a += 6;
            b += 16;
        }
        Vector256.Store(c0_0, c + 0 * ldc); Vector256.Store(c0_1, c + 0 * ldc + 8);
        Vector256.Store(c1_0, c + 1 * ldc); Vector256.Store(c1_1, c + 1 * ldc + 8);
        Vector256.Store(c2_0, c + 2 * ldc); Vector256.Store(c2_1, c + 2 * ldc + 8);
        Vector256.Store(c3_0, c + 3 * ldc); Vector256.Store(c3_1, c + 3 * ldc + 8);
        Vector256.Store(c4_0, c + 4 * ldc); Vector256.Store(c4_1, c + 4 * ldc + 8);
        Vector256.Store(c5_0, c + 5 * ldc); Vector256.Store(c5_1, c + 5 * ldc + 8);
    }
}

/// <summary>8x48 tile: 24 accumulators (8 rows x 3 Vector512 lanes-groups), 3 B loads and 8 broadcasts per k step.</summary>
internal readonly unsafe struct Avx512Kernel8x48 : IGemmKernel
{
    public static int MR => 8;
    public static int NR => 48;
    public static bool IsSupported => Avx512F.IsSupported;

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Run(int kc, float* a, float* b, float* c, nint ldc, bool load)
    {
        Vector512<float> c0_0, c0_1, c0_2, c1_0, c1_1, c1_2, c2_0, c2_1, c2_2, c3_0, c3_1, c3_2, c4_0, c4_1, c4_2, c5_0, c5_1, c5_2, c6_0, c6_1, c6_2, c7_0, c7_1, c7_2;
        if (load)
        {
            c0_0 = Vector512.Load(c + 0 * ldc); c0_1 = Vector512.Load(c + 0 * ldc + 16); c0_2 = Vector512.Load(c + 0 * ldc + 32);
            c1_0 = Vector512.Load(c + 1 * ldc); c1_1 = Vector512.Load(c + 1 * ldc + 16); c1_2 = Vector512.Load(c + 1 * ldc + 32);
            c2_0 = Vector512.Load(c + 2 * ldc); c2_1 = Vector512.Load(c + 2 * ldc + 16); c2_2 = Vector512.Load(c + 2 * ldc + 32);
            c3_0 = Vector512.Load(c + 3 * ldc); c3_1 = Vector512.Load(c + 3 * ldc + 16); c3_2 = Vector512.Load(c + 3 * ldc + 32);
            c4_0 = Vector512.Load(c + 4 * ldc); c4_1 = Vector512.Load(c + 4 * ldc + 16); c4_2 = Vector512.Load(c + 4 * ldc + 32);
            c5_0 = Vector512.Load(c + 5 * ldc); c5_1 = Vector512.Load(c + 5 * ldc + 16); c5_2 = Vector512.Load(c + 5 * ldc + 32);
            c6_0 = Vector512.Load(c + 6 * ldc); c6_1 = Vector512.Load(c + 6 * ldc + 16); c6_2 = Vector512.Load(c + 6 * ldc + 32);
            c7_0 = Vector512.Load(c + 7 * ldc); c7_1 = Vector512.Load(c + 7 * ldc + 16); c7_2 = Vector512.Load(c + 7 * ldc + 32);
        }
        else
        {
            c0_0 = Vector512<float>.Zero; c0_1 = Vector512<float>.Zero; c0_2 = Vector512<float>.Zero;
            c1_0 = Vector512<float>.Zero; c1_1 = Vector512<float>.Zero; c1_2 = Vector512<float>.Zero;
            c2_0 = Vector512<float>.Zero; c2_1 = Vector512<float>.Zero; c2_2 = Vector512<float>.Zero;
            c3_0 = Vector512<float>.Zero; c3_1 = Vector512<float>.Zero; c3_2 = Vector512<float>.Zero;
            c4_0 = Vector512<float>.Zero; c4_1 = Vector512<float>.Zero; c4_2 = Vector512<float>.Zero;
            c5_0 = Vector512<float>.Zero; c5_1 = Vector512<float>.Zero; c5_2 = Vector512<float>.Zero;
            c6_0 = Vector512<float>.Zero; c6_1 = Vector512<float>.Zero; c6_2 = Vector512<float>.Zero;
            c7_0 = Vector512<float>.Zero; c7_1 = Vector512<float>.Zero; c7_2 = Vector512<float>.Zero;
        }
        for (; kc > 0; kc--)
        {
            Vector512<float> b0 = Vector512.Load(b + 0); Vector512<float> b1 = Vector512.Load(b + 16); Vector512<float> b2 = Vector512.Load(b + 32);
            var a0 = Vector512.Create(a[0]); c0_0 = Avx512F.FusedMultiplyAdd(a0, b0, c0_0); c0_1 = Avx512F.FusedMultiplyAdd(a0, b1, c0_1); c0_2 = Avx512F.FusedMultiplyAdd(a0, b2, c0_2);
            var a1 = Vector512.Create(a[1]); c1_0 = Avx512F.FusedMultiplyAdd(a1, b0, c1_0); c1_1 = Avx512F.FusedMultiplyAdd(a1, b1, c1_1); c1_2 = Avx512F.FusedMultiplyAdd(a1, b2, c1_2);
            var a2 = Vector512.Create(a[2]); c2_0 = Avx512F.FusedMultiplyAdd(a2, b0, c2_0); c2_1 = Avx512F.FusedMultiplyAdd(a2, b1, c2_1); c2_2 = Avx512F.FusedMultiplyAdd(a2, b2, c2_2);
            var a3 = Vector512.Create(a[3]); c3_0 = Avx512F.FusedMultiplyAdd(a3, b0, c3_0); c3_1 = Avx512F.FusedMultiplyAdd(a3, b1, c3_1); c3_2 = Avx512F.FusedMultiplyAdd(a3, b2, c3_2);
            var a4 = Vector512.Create(a[4]); c4_0 = Avx512F.FusedMultiplyAdd(a4, b0, c4_0); c4_1 = Avx512F.FusedMultiplyAdd(a4, b1, c4_1); c4_2 = Avx512F.FusedMultiplyAdd(a4, b2, c4_2);
            var a5 = Vector512.Create(a[5]); c5_0 = Avx512F.FusedMultiplyAdd(a5, b0, c5_0); c5_1 = Avx512F.FusedMultiplyAdd(a5, b1, c5_1); c5_2 = Avx512F.FusedMultiplyAdd(a5, b2, c5_2);
            var a6 = Vector512.Create(a[6]); c6_0 = Avx512F.FusedMultiplyAdd(a6, b0, c6_0); c6_1 = Avx512F.FusedMultiplyAdd(a6, b1, c6_1); c6_2 = Avx512F.FusedMultiplyAdd(a6, b2, c6_2);
            var a7 = Vector512.Create(a[7]); c7_0 = Avx512F.FusedMultiplyAdd(a7, b0, c7_0); c7_1 = Avx512F.FusedMultiplyAdd(a7, b1, c7_1); c7_2 = Avx512F.FusedMultiplyAdd(a7, b2, c7_2);
            a += 8;
            b += 48;
        }
        Vector512.Store(c0_0, c + 0 * ldc); Vector512.Store(c0_1, c + 0 * ldc + 16); Vector512.Store(c0_2, c + 0 * ldc + 32);
        Vector512.Store(c1_0, c + 1 * ldc); Vector512.Store(c1_1, c + 1 * ldc + 16); Vector512.Store(c1_2, c + 1 * ldc + 32);
        Vector512.Store(c2_0, c + 2 * ldc); Vector512.Store(c2_1, c + 2 * ldc + 16); Vector512.Store(c2_2, c + 2 * ldc + 32);
        Vector512.Store(c3_0, c + 3 * ldc); Vector512.Store(c3_1, c + 3 * ldc + 16); Vector512.Store(c3_2, c + 3 * ldc + 32);
        Vector512.Store(c4_0, c + 4 * ldc); Vector512.Store(c4_1, c + 4 * ldc + 16); Vector512.Store(c4_2, c + 4 * ldc + 32);
        Vector512.Store(c5_0, c + 5 * ldc); Vector512.Store(c5_1, c + 5 * ldc + 16); Vector512.Store(c5_2, c + 5 * ldc + 32);
        Vector512.Store(c6_0, c + 6 * ldc); Vector512.Store(c6_1, c + 6 * ldc + 16); Vector512.Store(c6_2, c + 6 * ldc + 32);
        Vector512.Store(c7_0, c + 7 * ldc); Vector512.Store(c7_1, c + 7 * ldc + 16); Vector512.Store(c7_2, c + 7 * ldc + 32);
    }
}

/// <summary>12x32 tile: 24 accumulators (12 rows x 2 Vector512 lanes-groups), 2 B loads and 12 broadcasts per k step.</summary>
internal readonly unsafe struct Avx512Kernel12x32U2 : IGemmKernel
{
    public static int MR => 12;
    public static int NR => 32;
    public static bool IsSupported => Avx512F.IsSupported;

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Run(int kc, float* a, float* b, float* c, nint ldc, bool load)
    {
        Vector512<float> c0_0, c0_1, c1_0, c1_1, c2_0, c2_1, c3_0, c3_1, c4_0, c4_1, c5_0, c5_1, c6_0, c6_1, c7_0, c7_1, c8_0, c8_1, c9_0, c9_1, c10_0, c10_1, c11_0, c11_1;
        if (load)
        {
            c0_0 = Vector512.Load(c + 0 * ldc); c0_1 = Vector512.Load(c + 0 * ldc + 16);
            c1_0 = Vector512.Load(c + 1 * ldc); c1_1 = Vector512.Load(c + 1 * ldc + 16);
            c2_0 = Vector512.Load(c + 2 * ldc); c2_1 = Vector512.Load(c + 2 * ldc + 16);
            c3_0 = Vector512.Load(c + 3 * ldc); c3_1 = Vector512.Load(c + 3 * ldc + 16);
            c4_0 = Vector512.Load(c + 4 * ldc); c4_1 = Vector512.Load(c + 4 * ldc + 16);
            c5_0 = Vector512.Load(c + 5 * ldc); c5_1 = Vector512.Load(c + 5 * ldc + 16);
            c6_0 = Vector512.Load(c + 6 * ldc); c6_1 = Vector512.Load(c + 6 * ldc + 16);
            c7_0 = Vector512.Load(c + 7 * ldc); c7_1 = Vector512.Load(c + 7 * ldc + 16);
            c8_0 = Vector512.Load(c + 8 * ldc); c8_1 = Vector512.Load(c + 8 * ldc + 16);
            c9_0 = Vector512.Load(c + 9 * ldc); c9_1 = Vector512.Load(c + 9 * ldc + 16);
            c10_0 = Vector512.Load(c + 10 * ldc); c10_1 = Vector512.Load(c + 10 * ldc + 16);
            c11_0 = Vector512.Load(c + 11 * ldc); c11_1 = Vector512.Load(c + 11 * ldc + 16);
        }
        else
        {
            c0_0 = Vector512<float>.Zero; c0_1 = Vector512<float>.Zero;
            c1_0 = Vector512<float>.Zero; c1_1 = Vector512<float>.Zero;
            c2_0 = Vector512<float>.Zero; c2_1 = Vector512<float>.Zero;
            c3_0 = Vector512<float>.Zero; c3_1 = Vector512<float>.Zero;
            c4_0 = Vector512<float>.Zero; c4_1 = Vector512<float>.Zero;
            c5_0 = Vector512<float>.Zero; c5_1 = Vector512<float>.Zero;
            c6_0 = Vector512<float>.Zero; c6_1 = Vector512<float>.Zero;
            c7_0 = Vector512<float>.Zero; c7_1 = Vector512<float>.Zero;
            c8_0 = Vector512<float>.Zero; c8_1 = Vector512<float>.Zero;
            c9_0 = Vector512<float>.Zero; c9_1 = Vector512<float>.Zero;
            c10_0 = Vector512<float>.Zero; c10_1 = Vector512<float>.Zero;
            c11_0 = Vector512<float>.Zero; c11_1 = Vector512<float>.Zero;
        }
        for (; kc >= 2; kc -= 2)
        {
            Vector512<float> b0 = Vector512.Load(b + 0); Vector512<float> b1 = Vector512.Load(b + 16);
            var a0 = Vector512.Create(a[0]); c0_0 = Avx512F.FusedMultiplyAdd(a0, b0, c0_0); c0_1 = Avx512F.FusedMultiplyAdd(a0, b1, c0_1);
            var a1 = Vector512.Create(a[1]); c1_0 = Avx512F.FusedMultiplyAdd(a1, b0, c1_0); c1_1 = Avx512F.FusedMultiplyAdd(a1, b1, c1_1);
            var a2 = Vector512.Create(a[2]); c2_0 = Avx512F.FusedMultiplyAdd(a2, b0, c2_0); c2_1 = Avx512F.FusedMultiplyAdd(a2, b1, c2_1);
            var a3 = Vector512.Create(a[3]); c3_0 = Avx512F.FusedMultiplyAdd(a3, b0, c3_0); c3_1 = Avx512F.FusedMultiplyAdd(a3, b1, c3_1);
            var a4 = Vector512.Create(a[4]); c4_0 = Avx512F.FusedMultiplyAdd(a4, b0, c4_0); c4_1 = Avx512F.FusedMultiplyAdd(a4, b1, c4_1);
            var a5 = Vector512.Create(a[5]); c5_0 = Avx512F.FusedMultiplyAdd(a5, b0, c5_0); c5_1 = Avx512F.FusedMultiplyAdd(a5, b1, c5_1);
            var a6 = Vector512.Create(a[6]); c6_0 = Avx512F.FusedMultiplyAdd(a6, b0, c6_0); c6_1 = Avx512F.FusedMultiplyAdd(a6, b1, c6_1);
            var a7 = Vector512.Create(a[7]); c7_0 = Avx512F.FusedMultiplyAdd(a7, b0, c7_0); c7_1 = Avx512F.FusedMultiplyAdd(a7, b1, c7_1);
            var a8 = Vector512.Create(a[8]); c8_0 = Avx512F.FusedMultiplyAdd(a8, b0, c8_0); c8_1 = Avx512F.FusedMultiplyAdd(a8, b1, c8_1);
            var a9 = Vector512.Create(a[9]); c9_0 = Avx512F.FusedMultiplyAdd(a9, b0, c9_0); c9_1 = Avx512F.FusedMultiplyAdd(a9, b1, c9_1);
            var a10 = Vector512.Create(a[10]); c10_0 = Avx512F.FusedMultiplyAdd(a10, b0, c10_0); c10_1 = Avx512F.FusedMultiplyAdd(a10, b1, c10_1);
            var a11 = Vector512.Create(a[11]); c11_0 = Avx512F.FusedMultiplyAdd(a11, b0, c11_0); c11_1 = Avx512F.FusedMultiplyAdd(a11, b1, c11_1);
            b0 = Vector512.Load(b + 32); b1 = Vector512.Load(b + 48);
            a0 = Vector512.Create(a[12]); c0_0 = Avx512F.FusedMultiplyAdd(a0, b0, c0_0); c0_1 = Avx512F.FusedMultiplyAdd(a0, b1, c0_1);
            a1 = Vector512.Create(a[13]); c1_0 = Avx512F.FusedMultiplyAdd(a1, b0, c1_0); c1_1 = Avx512F.FusedMultiplyAdd(a1, b1, c1_1);
            a2 = Vector512.Create(a[14]); c2_0 = Avx512F.FusedMultiplyAdd(a2, b0, c2_0); c2_1 = Avx512F.FusedMultiplyAdd(a2, b1, c2_1);
            a3 = Vector512.Create(a[15]); c3_0 = Avx512F.FusedMultiplyAdd(a3, b0, c3_0); c3_1 = Avx512F.FusedMultiplyAdd(a3, b1, c3_1);
            a4 = Vector512.Create(a[16]); c4_0 = Avx512F.FusedMultiplyAdd(a4, b0, c4_0); c4_1 = Avx512F.FusedMultiplyAdd(a4, b1, c4_1);
            a5 = Vector512.Create(a[17]); c5_0 = Avx512F.FusedMultiplyAdd(a5, b0, c5_0); c5_1 = Avx512F.FusedMultiplyAdd(a5, b1, c5_1);
            a6 = Vector512.Create(a[18]); c6_0 = Avx512F.FusedMultiplyAdd(a6, b0, c6_0); c6_1 = Avx512F.FusedMultiplyAdd(a6, b1, c6_1);
            a7 = Vector512.Create(a[19]); c7_0 = Avx512F.FusedMultiplyAdd(a7, b0, c7_0); c7_1 = Avx512F.FusedMultiplyAdd(a7, b1, c7_1);
            a8 = Vector512.Create(a[20]); c8_0 = Avx512F.FusedMultiplyAdd(a8, b0, c8_0); c8_1 = Avx512F.FusedMultiplyAdd(a8, b1, c8_1);
            a9 = Vector512.Create(a[21]); c9_0 = Avx512F.FusedMultiplyAdd(a9, b0, c9_0); c9_1 = Avx512F.FusedMultiplyAdd(a9, b1, c9_1);
            a10 = Vector512.Create(a[22]); c10_0 = Avx512F.FusedMultiplyAdd(a10, b0, c10_0); c10_1 = Avx512F.FusedMultiplyAdd(a10, b1, c10_1);
            a11 = Vector512.Create(a[23]); c11_0 = Avx512F.FusedMultiplyAdd(a11, b0, c11_0); c11_1 = Avx512F.FusedMultiplyAdd(a11, b1, c11_1);
            a += 24;
            b += 64;
        }
        if (kc > 0)
        {
            Vector512<float> b0 = Vector512.Load(b + 0); Vector512<float> b1 = Vector512.Load(b + 16);
            var a0 = Vector512.Create(a[0]); c0_0 = Avx512F.FusedMultiplyAdd(a0, b0, c0_0); c0_1 = Avx512F.FusedMultiplyAdd(a0, b1, c0_1);
            var a1 = Vector512.Create(a[1]); c1_0 = Avx512F.FusedMultiplyAdd(a1, b0, c1_0); c1_1 = Avx512F.FusedMultiplyAdd(a1, b1, c1_1);
            var a2 = Vector512.Create(a[2]); c2_0 = Avx512F.FusedMultiplyAdd(a2, b0, c2_0); c2_1 = Avx512F.FusedMultiplyAdd(a2, b1, c2_1);
            var a3 = Vector512.Create(a[3]); c3_0 = Avx512F.FusedMultiplyAdd(a3, b0, c3_0); c3_1 = Avx512F.FusedMultiplyAdd(a3, b1, c3_1);
            var a4 = Vector512.Create(a[4]); c4_0 = Avx512F.FusedMultiplyAdd(a4, b0, c4_0); c4_1 = Avx512F.FusedMultiplyAdd(a4, b1, c4_1);
            var a5 = Vector512.Create(a[5]); c5_0 = Avx512F.FusedMultiplyAdd(a5, b0, c5_0); c5_1 = Avx512F.FusedMultiplyAdd(a5, b1, c5_1);
            var a6 = Vector512.Create(a[6]); c6_0 = Avx512F.FusedMultiplyAdd(a6, b0, c6_0); c6_1 = Avx512F.FusedMultiplyAdd(a6, b1, c6_1);
            var a7 = Vector512.Create(a[7]); c7_0 = Avx512F.FusedMultiplyAdd(a7, b0, c7_0); c7_1 = Avx512F.FusedMultiplyAdd(a7, b1, c7_1);
            var a8 = Vector512.Create(a[8]); c8_0 = Avx512F.FusedMultiplyAdd(a8, b0, c8_0); c8_1 = Avx512F.FusedMultiplyAdd(a8, b1, c8_1);
            var a9 = Vector512.Create(a[9]); c9_0 = Avx512F.FusedMultiplyAdd(a9, b0, c9_0); c9_1 = Avx512F.FusedMultiplyAdd(a9, b1, c9_1);
            var a10 = Vector512.Create(a[10]); c10_0 = Avx512F.FusedMultiplyAdd(a10, b0, c10_0); c10_1 = Avx512F.FusedMultiplyAdd(a10, b1, c10_1);
            var a11 = Vector512.Create(a[11]); c11_0 = Avx512F.FusedMultiplyAdd(a11, b0, c11_0); c11_1 = Avx512F.FusedMultiplyAdd(a11, b1, c11_1);
        }
        Vector512.Store(c0_0, c + 0 * ldc); Vector512.Store(c0_1, c + 0 * ldc + 16);
        Vector512.Store(c1_0, c + 1 * ldc); Vector512.Store(c1_1, c + 1 * ldc + 16);
        Vector512.Store(c2_0, c + 2 * ldc); Vector512.Store(c2_1, c + 2 * ldc + 16);
        Vector512.Store(c3_0, c + 3 * ldc); Vector512.Store(c3_1, c + 3 * ldc + 16);
        Vector512.Store(c4_0, c + 4 * ldc); Vector512.Store(c4_1, c + 4 * ldc + 16);
        Vector512.Store(c5_0, c + 5 * ldc); Vector512.Store(c5_1, c + 5 * ldc + 16);
        Vector512.Store(c6_0, c + 6 * ldc); Vector512.Store(c6_1, c + 6 * ldc + 16);
        Vector512.Store(c7_0, c + 7 * ldc); Vector512.Store(c7_1, c + 7 * ldc + 16);
        Vector512.Store(c8_0, c + 8 * ldc); Vector512.Store(c8_1, c + 8 * ldc + 16);
        Vector512.Store(c9_0, c + 9 * ldc); Vector512.Store(c9_1, c + 9 * ldc + 16);
        Vector512.Store(c10_0, c + 10 * ldc); Vector512.Store(c10_1, c + 10 * ldc + 16);
        Vector512.Store(c11_0, c + 11 * ldc); Vector512.Store(c11_1, c + 11 * ldc + 16);
    }
}

/// <summary>14x32 tile: 28 accumulators (14 rows x 2 Vector512 lanes-groups), 2 B loads and 14 broadcasts per k step.</summary>
internal readonly unsafe struct Avx512Kernel14x32 : IGemmKernel
{
    public static int MR => 14;
    public static int NR => 32;
    public static bool IsSupported => Avx512F.IsSupported;

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Run(int kc, float* a, float* b, float* c, nint ldc, bool load)
    {
        Vector512<float> c0_0, c0_1, c1_0, c1_1, c2_0, c2_1, c3_0, c3_1, c4_0, c4_1, c5_0, c5_1, c6_0, c6_1, c7_0, c7_1, c8_0, c8_1, c9_0, c9_1, c10_0, c10_1, c11_0, c11_1, c12_0, c12_1, c13_0, c13_1;
        if (load)
        {
            c0_0 = Vector512.Load(c + 0 * ldc); c0_1 = Vector512.Load(c + 0 * ldc + 16);
            c1_0 = Vector512.Load(c + 1 * ldc); c1_1 = Vector512.Load(c + 1 * ldc + 16);
            c2_0 = Vector512.Load(c + 2 * ldc); c2_1 = Vector512.Load(c + 2 * ldc + 16);
            c3_0 = Vector512.Load(c + 3 * ldc); c3_1 = Vector512.Load(c + 3 * ldc + 16);
            c4_0 = Vector512.Load(c + 4 * ldc); c4_1 = Vector512.Load(c + 4 * ldc + 16);
            c5_0 = Vector512.Load(c + 5 * ldc); c5_1 = Vector512.Load(c + 5 * ldc + 16);
            c6_0 = Vector512.Load(c + 6 * ldc); c6_1 = Vector512.Load(c + 6 * ldc + 16);
            c7_0 = Vector512.Load(c + 7 * ldc); c7_1 = Vector512.Load(c + 7 * ldc + 16);
            c8_0 = Vector512.Load(c + 8 * ldc); c8_1 = Vector512.Load(c + 8 * ldc + 16);
            c9_0 = Vector512.Load(c + 9 * ldc); c9_1 = Vector512.Load(c + 9 * ldc + 16);
            c10_0 = Vector512.Load(c + 10 * ldc); c10_1 = Vector512.Load(c + 10 * ldc + 16);
            c11_0 = Vector512.Load(c + 11 * ldc); c11_1 = Vector512.Load(c + 11 * ldc + 16);
            c12_0 = Vector512.Load(c + 12 * ldc); c12_1 = Vector512.Load(c + 12 * ldc + 16);
            c13_0 = Vector512.Load(c + 13 * ldc); c13_1 = Vector512.Load(c + 13 * ldc + 16);
        }
        else
        {
            c0_0 = Vector512<float>.Zero; c0_1 = Vector512<float>.Zero;
            c1_0 = Vector512<float>.Zero; c1_1 = Vector512<float>.Zero;
            c2_0 = Vector512<float>.Zero; c2_1 = Vector512<float>.Zero;
            c3_0 = Vector512<float>.Zero; c3_1 = Vector512<float>.Zero;
            c4_0 = Vector512<float>.Zero; c4_1 = Vector512<float>.Zero;
            c5_0 = Vector512<float>.Zero; c5_1 = Vector512<float>.Zero;
            c6_0 = Vector512<float>.Zero; c6_1 = Vector512<float>.Zero;
            c7_0 = Vector512<float>.Zero; c7_1 = Vector512<float>.Zero;
            c8_0 = Vector512<float>.Zero; c8_1 = Vector512<float>.Zero;
            c9_0 = Vector512<float>.Zero; c9_1 = Vector512<float>.Zero;
            c10_0 = Vector512<float>.Zero; c10_1 = Vector512<float>.Zero;
            c11_0 = Vector512<float>.Zero; c11_1 = Vector512<float>.Zero;
            c12_0 = Vector512<float>.Zero; c12_1 = Vector512<float>.Zero;
            c13_0 = Vector512<float>.Zero; c13_1 = Vector512<float>.Zero;
        }
        for (; kc > 0; kc--)
        {
            Vector512<float> b0 = Vector512.Load(b + 0); Vector512<float> b1 = Vector512.Load(b + 16);
            var a0 = Vector512.Create(a[0]); c0_0 = Avx512F.FusedMultiplyAdd(a0, b0, c0_0); c0_1 = Avx512F.FusedMultiplyAdd(a0, b1, c0_1);
            var a1 = Vector512.Create(a[1]); c1_0 = Avx512F.FusedMultiplyAdd(a1, b0, c1_0); c1_1 = Avx512F.FusedMultiplyAdd(a1, b1, c1_1);
            var a2 = Vector512.Create(a[2]); c2_0 = Avx512F.FusedMultiplyAdd(a2, b0, c2_0); c2_1 = Avx512F.FusedMultiplyAdd(a2, b1, c2_1);
            var a3 = Vector512.Create(a[3]); c3_0 = Avx512F.FusedMultiplyAdd(a3, b0, c3_0); c3_1 = Avx512F.FusedMultiplyAdd(a3, b1, c3_1);
            var a4 = Vector512.Create(a[4]); c4_0 = Avx512F.FusedMultiplyAdd(a4, b0, c4_0); c4_1 = Avx512F.FusedMultiplyAdd(a4, b1, c4_1);
            var a5 = Vector512.Create(a[5]); c5_0 = Avx512F.FusedMultiplyAdd(a5, b0, c5_0); c5_1 = Avx512F.FusedMultiplyAdd(a5, b1, c5_1);
            var a6 = Vector512.Create(a[6]); c6_0 = Avx512F.FusedMultiplyAdd(a6, b0, c6_0); c6_1 = Avx512F.FusedMultiplyAdd(a6, b1, c6_1);
            var a7 = Vector512.Create(a[7]); c7_0 = Avx512F.FusedMultiplyAdd(a7, b0, c7_0); c7_1 = Avx512F.FusedMultiplyAdd(a7, b1, c7_1);
            var a8 = Vector512.Create(a[8]); c8_0 = Avx512F.FusedMultiplyAdd(a8, b0, c8_0); c8_1 = Avx512F.FusedMultiplyAdd(a8, b1, c8_1);
            var a9 = Vector512.Create(a[9]); c9_0 = Avx512F.FusedMultiplyAdd(a9, b0, c9_0); c9_1 = Avx512F.FusedMultiplyAdd(a9, b1, c9_1);
            var a10 = Vector512.Create(a[10]); c10_0 = Avx512F.FusedMultiplyAdd(a10, b0, c10_0); c10_1 = Avx512F.FusedMultiplyAdd(a10, b1, c10_1);
            var a11 = Vector512.Create(a[11]); c11_0 = Avx512F.FusedMultiplyAdd(a11, b0, c11_0); c11_1 = Avx512F.FusedMultiplyAdd(a11, b1, c11_1);
            var a12 = Vector512.Create(a[12]); c12_0 = Avx512F.FusedMultiplyAdd(a12, b0, c12_0); c12_1 = Avx512F.FusedMultiplyAdd(a12, b1, c12_1);
            var a13 = Vector512.Create(a[13]); c13_0 = Avx512F.FusedMultiplyAdd(a13, b0, c13_0); c13_1 = Avx512F.FusedMultiplyAdd(a13, b1, c13_1);
            a += 14;
            b += 32;
        }
        Vector512.Store(c0_0, c + 0 * ldc); Vector512.Store(c0_1, c + 0 * ldc + 16);
        Vector512.Store(c1_0, c + 1 * ldc); Vector512.Store(c1_1, c + 1 * ldc + 16);
        Vector512.Store(c2_0, c + 2 * ldc); Vector512.Store(c2_1, c + 2 * ldc + 16);
        Vector512.Store(c3_0, c + 3 * ldc); Vector512.Store(c3_1, c + 3 * ldc + 16);
        Vector512.Store(c4_0, c + 4 * ldc); Vector512.Store(c4_1, c + 4 * ldc + 16);
        Vector512.Store(c5_0, c + 5 * ldc); Vector512.Store(c5_1, c + 5 * ldc + 16);
        Vector512.Store(c6_0, c + 6 * ldc); Vector512.Store(c6_1, c + 6 * ldc + 16);
        Vector512.Store(c7_0, c + 7 * ldc); Vector512.Store(c7_1, c + 7 * ldc + 16);
        Vector512.Store(c8_0, c + 8 * ldc); Vector512.Store(c8_1, c + 8 * ldc + 16);
        Vector512.Store(c9_0, c + 9 * ldc); Vector512.Store(c9_1, c + 9 * ldc + 16);
        Vector512.Store(c10_0, c + 10 * ldc); Vector512.Store(c10_1, c + 10 * ldc + 16);
        Vector512.Store(c11_0, c + 11 * ldc); Vector512.Store(c11_1, c + 11 * ldc + 16);
        Vector512.Store(c12_0, c + 12 * ldc); Vector512.Store(c12_1, c + 12 * ldc + 16);
        Vector512.Store(c13_0, c + 13 * ldc); Vector512.Store(c13_1, c + 13 * ldc + 16);
    }
}

/// <summary>6x64 tile: 24 accumulators (6 rows x 4 Vector512 lanes-groups), 4 B loads and 6 broadcasts per k step.</summary>
internal readonly unsafe struct Avx512Kernel6x64 : IGemmKernel
{
    public static int MR => 6;
    public static int NR => 64;
    public static bool IsSupported => Avx512F.IsSupported;

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Run(int kc, float* a, float* b, float* c, nint ldc, bool load)
    {
        Vector512<float> c0_0, c0_1, c0_2, c0_3, c1_0, c1_1, c1_2, c1_3, c2_0, c2_1, c2_2, c2_3, c3_0, c3_1, c3_2, c3_3, c4_0, c4_1, c4_2, c4_3, c5_0, c5_1, c5_2, c5_3;
        if (load)
        {
            c0_0 = Vector512.Load(c + 0 * ldc); c0_1 = Vector512.Load(c + 0 * ldc + 16); c0_2 = Vector512.Load(c + 0 * ldc + 32); c0_3 = Vector512.Load(c + 0 * ldc + 48);
            c1_0 = Vector512.Load(c + 1 * ldc); c1_1 = Vector512.Load(c + 1 * ldc + 16); c1_2 = Vector512.Load(c + 1 * ldc + 32); c1_3 = Vector512.Load(c + 1 * ldc + 48);
            c2_0 = Vector512.Load(c + 2 * ldc); c2_1 = Vector512.Load(c + 2 * ldc + 16); c2_2 = Vector512.Load(c + 2 * ldc + 32); c2_3 = Vector512.Load(c + 2 * ldc + 48);
            c3_0 = Vector512.Load(c + 3 * ldc); c3_1 = Vector512.Load(c + 3 * ldc + 16); c3_2 = Vector512.Load(c + 3 * ldc + 32); c3_3 = Vector512.Load(c + 3 * ldc + 48);
            c4_0 = Vector512.Load(c + 4 * ldc); c4_1 = Vector512.Load(c + 4 * ldc + 16); c4_2 = Vector512.Load(c + 4 * ldc + 32); c4_3 = Vector512.Load(c + 4 * ldc + 48);
            c5_0 = Vector512.Load(c + 5 * ldc); c5_1 = Vector512.Load(c + 5 * ldc + 16); c5_2 = Vector512.Load(c + 5 * ldc + 32); c5_3 = Vector512.Load(c + 5 * ldc + 48);
        }
        else
        {
            c0_0 = Vector512<float>.Zero; c0_1 = Vector512<float>.Zero; c0_2 = Vector512<float>.Zero; c0_3 = Vector512<float>.Zero;
            c1_0 = Vector512<float>.Zero; c1_1 = Vector512<float>.Zero; c1_2 = Vector512<float>.Zero; c1_3 = Vector512<float>.Zero;
            c2_0 = Vector512<float>.Zero; c2_1 = Vector512<float>.Zero; c2_2 = Vector512<float>.Zero; c2_3 = Vector512<float>.Zero;
            c3_0 = Vector512<float>.Zero; c3_1 = Vector512<float>.Zero; c3_2 = Vector512<float>.Zero; c3_3 = Vector512<float>.Zero;
            c4_0 = Vector512<float>.Zero; c4_1 = Vector512<float>.Zero; c4_2 = Vector512<float>.Zero; c4_3 = Vector512<float>.Zero;
            c5_0 = Vector512<float>.Zero; c5_1 = Vector512<float>.Zero; c5_2 = Vector512<float>.Zero; c5_3 = Vector512<float>.Zero;
        }
        for (; kc > 0; kc--)
        {
            Vector512<float> b0 = Vector512.Load(b + 0); Vector512<float> b1 = Vector512.Load(b + 16); Vector512<float> b2 = Vector512.Load(b + 32); Vector512<float> b3 = Vector512.Load(b + 48);
            var a0 = Vector512.Create(a[0]); c0_0 = Avx512F.FusedMultiplyAdd(a0, b0, c0_0); c0_1 = Avx512F.FusedMultiplyAdd(a0, b1, c0_1); c0_2 = Avx512F.FusedMultiplyAdd(a0, b2, c0_2); c0_3 = Avx512F.FusedMultiplyAdd(a0, b3, c0_3);
            var a1 = Vector512.Create(a[1]); c1_0 = Avx512F.FusedMultiplyAdd(a1, b0, c1_0); c1_1 = Avx512F.FusedMultiplyAdd(a1, b1, c1_1); c1_2 = Avx512F.FusedMultiplyAdd(a1, b2, c1_2); c1_3 = Avx512F.FusedMultiplyAdd(a1, b3, c1_3);
            var a2 = Vector512.Create(a[2]); c2_0 = Avx512F.FusedMultiplyAdd(a2, b0, c2_0); c2_1 = Avx512F.FusedMultiplyAdd(a2, b1, c2_1); c2_2 = Avx512F.FusedMultiplyAdd(a2, b2, c2_2); c2_3 = Avx512F.FusedMultiplyAdd(a2, b3, c2_3);
            var a3 = Vector512.Create(a[3]); c3_0 = Avx512F.FusedMultiplyAdd(a3, b0, c3_0); c3_1 = Avx512F.FusedMultiplyAdd(a3, b1, c3_1); c3_2 = Avx512F.FusedMultiplyAdd(a3, b2, c3_2); c3_3 = Avx512F.FusedMultiplyAdd(a3, b3, c3_3);
            var a4 = Vector512.Create(a[4]); c4_0 = Avx512F.FusedMultiplyAdd(a4, b0, c4_0); c4_1 = Avx512F.FusedMultiplyAdd(a4, b1, c4_1); c4_2 = Avx512F.FusedMultiplyAdd(a4, b2, c4_2); c4_3 = Avx512F.FusedMultiplyAdd(a4, b3, c4_3);
            var a5 = Vector512.Create(a[5]); c5_0 = Avx512F.FusedMultiplyAdd(a5, b0, c5_0); c5_1 = Avx512F.FusedMultiplyAdd(a5, b1, c5_1); c5_2 = Avx512F.FusedMultiplyAdd(a5, b2, c5_2); c5_3 = Avx512F.FusedMultiplyAdd(a5, b3, c5_3);
            a += 6;
            b += 64;
        }
        Vector512.Store(c0_0, c + 0 * ldc); Vector512.Store(c0_1, c + 0 * ldc + 16); Vector512.Store(c0_2, c + 0 * ldc + 32); Vector512.Store(c0_3, c + 0 * ldc + 48);
        Vector512.Store(c1_0, c + 1 * ldc); Vector512.Store(c1_1, c + 1 * ldc + 16); Vector512.Store(c1_2, c + 1 * ldc + 32); Vector512.Store(c1_3, c + 1 * ldc + 48);
        Vector512.Store(c2_0, c + 2 * ldc); Vector512.Store(c2_1, c + 2 * ldc + 16); Vector512.Store(c2_2, c + 2 * ldc + 32); Vector512.Store(c2_3, c + 2 * ldc + 48);
        Vector512.Store(c3_0, c + 3 * ldc); Vector512.Store(c3_1, c + 3 * ldc + 16); Vector512.Store(c3_2, c + 3 * ldc + 32); Vector512.Store(c3_3, c + 3 * ldc + 48);
        Vector512.Store(c4_0, c + 4 * ldc); Vector512.Store(c4_1, c + 4 * ldc + 16); Vector512.Store(c4_2, c + 4 * ldc + 32); Vector512.Store(c4_3, c + 4 * ldc + 48);
        Vector512.Store(c5_0, c + 5 * ldc); Vector512.Store(c5_1, c + 5 * ldc + 16); Vector512.Store(c5_2, c + 5 * ldc + 32); Vector512.Store(c5_3, c + 5 * ldc + 48);
    }
}
