using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace AlignSharp.Engine.Kernels;

/// <summary>
/// An MR×NR register-tile micro-kernel over packed panels (see <see cref="Gemm"/>):
/// <code>
///   C[0..MR, 0..NR] (row stride ldc) = (load ? C : 0) + Σ_{p&lt;kc} A(r, p) · b[p·NR + j]
///   Run:     A(r, p) = a[p·aStep + r]   (a packed micro-panel, aStep = MR; or an unpacked Aᵀ, aStep = lda)
///   RunRowA: A(r, p) = a[r·lda + p]     (unpacked row-major A: used when a packed A would be reused too little)
/// </code>
/// one FMA chain per element in increasing p, so both entry points give bitwise the same C. All MR rows of A
/// are read: callers pass only full-height tiles to the unpacked forms. <c>b</c> is a packed NR-wide micro-panel.
/// Lane layout of the SIMD kernels: row r of the tile is NR/W consecutive vectors of W lanes (W = 16 for
/// Vector512, 8 for Vector256); per k step the B row is loaded once, each A value is broadcast once and
/// feeds one FMA per vector of its row.
/// </summary>
internal unsafe interface IGemmKernel
{
    static abstract int MR { get; }
    static abstract int NR { get; }
    static abstract bool IsSupported { get; }
    static abstract void Run(int kc, float* a, nint aStep, float* b, float* c, nint ldc, bool load);
    static abstract void RunRowA(int kc, float* a, nint lda, float* b, float* c, nint ldc, bool load);
}

/// <summary>Portable 4×4 tile in scalars (multiply then add, no FMA), for CPUs without AVX2.</summary>
internal readonly unsafe struct ScalarKernel : IGemmKernel
{
    public static int MR => 4;
    public static int NR => 4;
    public static bool IsSupported => true;

    public static void RunRowA(int kc, float* a, nint lda, float* b, float* c, nint ldc, bool load)
    {
        for (int r = 0; r < 4; r++)
        {
            for (int j = 0; j < 4; j++)
            {
                float sum = load ? c[r * ldc + j] : 0f;
                for (int p = 0; p < kc; p++) sum += a[r * lda + p] * b[p * 4 + j];
                c[r * ldc + j] = sum;
            }
        }
    }

    public static void Run(int kc, float* a, nint aStep, float* b, float* c, nint ldc, bool load)
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
            a += aStep;
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
    public static void Run(int kc, float* a, nint aStep, float* b, float* c, nint ldc, bool load)
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
            a += aStep;
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

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void RunRowA(int kc, float* a, nint lda, float* b, float* c, nint ldc, bool load)
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
        nint l2 = 2 * lda, l3 = 3 * lda;
        float* a0 = a + 0 * lda; float* a4 = a + 4 * lda; float* a8 = a + 8 * lda;
        for (; kc > 0; kc--)
        {
            Vector512<float> b0 = Vector512.Load(b + 0); Vector512<float> b1 = Vector512.Load(b + 16);
            var x0 = Vector512.Create(a0[0]); c0_0 = Avx512F.FusedMultiplyAdd(x0, b0, c0_0); c0_1 = Avx512F.FusedMultiplyAdd(x0, b1, c0_1);
            var x1 = Vector512.Create(a0[lda]); c1_0 = Avx512F.FusedMultiplyAdd(x1, b0, c1_0); c1_1 = Avx512F.FusedMultiplyAdd(x1, b1, c1_1);
            var x2 = Vector512.Create(a0[l2]); c2_0 = Avx512F.FusedMultiplyAdd(x2, b0, c2_0); c2_1 = Avx512F.FusedMultiplyAdd(x2, b1, c2_1);
            var x3 = Vector512.Create(a0[l3]); c3_0 = Avx512F.FusedMultiplyAdd(x3, b0, c3_0); c3_1 = Avx512F.FusedMultiplyAdd(x3, b1, c3_1);
            var x4 = Vector512.Create(a4[0]); c4_0 = Avx512F.FusedMultiplyAdd(x4, b0, c4_0); c4_1 = Avx512F.FusedMultiplyAdd(x4, b1, c4_1);
            var x5 = Vector512.Create(a4[lda]); c5_0 = Avx512F.FusedMultiplyAdd(x5, b0, c5_0); c5_1 = Avx512F.FusedMultiplyAdd(x5, b1, c5_1);
            var x6 = Vector512.Create(a4[l2]); c6_0 = Avx512F.FusedMultiplyAdd(x6, b0, c6_0); c6_1 = Avx512F.FusedMultiplyAdd(x6, b1, c6_1);
            var x7 = Vector512.Create(a4[l3]); c7_0 = Avx512F.FusedMultiplyAdd(x7, b0, c7_0); c7_1 = Avx512F.FusedMultiplyAdd(x7, b1, c7_1);
            var x8 = Vector512.Create(a8[0]); c8_0 = Avx512F.FusedMultiplyAdd(x8, b0, c8_0); c8_1 = Avx512F.FusedMultiplyAdd(x8, b1, c8_1);
            var x9 = Vector512.Create(a8[lda]); c9_0 = Avx512F.FusedMultiplyAdd(x9, b0, c9_0); c9_1 = Avx512F.FusedMultiplyAdd(x9, b1, c9_1);
            var x10 = Vector512.Create(a8[l2]); c10_0 = Avx512F.FusedMultiplyAdd(x10, b0, c10_0); c10_1 = Avx512F.FusedMultiplyAdd(x10, b1, c10_1);
            var x11 = Vector512.Create(a8[l3]); c11_0 = Avx512F.FusedMultiplyAdd(x11, b0, c11_0); c11_1 = Avx512F.FusedMultiplyAdd(x11, b1, c11_1);
            a0++; a4++; a8++;
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
    public static void Run(int kc, float* a, nint aStep, float* b, float* c, nint ldc, bool load)
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
            a += aStep;
            b += 16;
        }
        Vector256.Store(c0_0, c + 0 * ldc); Vector256.Store(c0_1, c + 0 * ldc + 8);
        Vector256.Store(c1_0, c + 1 * ldc); Vector256.Store(c1_1, c + 1 * ldc + 8);
        Vector256.Store(c2_0, c + 2 * ldc); Vector256.Store(c2_1, c + 2 * ldc + 8);
        Vector256.Store(c3_0, c + 3 * ldc); Vector256.Store(c3_1, c + 3 * ldc + 8);
        Vector256.Store(c4_0, c + 4 * ldc); Vector256.Store(c4_1, c + 4 * ldc + 8);
        Vector256.Store(c5_0, c + 5 * ldc); Vector256.Store(c5_1, c + 5 * ldc + 8);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void RunRowA(int kc, float* a, nint lda, float* b, float* c, nint ldc, bool load)
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
        nint l2 = 2 * lda, l3 = 3 * lda;
        float* a0 = a + 0 * lda; float* a4 = a + 4 * lda;
        for (; kc > 0; kc--)
        {
            Vector256<float> b0 = Vector256.Load(b + 0); Vector256<float> b1 = Vector256.Load(b + 8);
            var x0 = Vector256.Create(a0[0]); c0_0 = Fma.MultiplyAdd(x0, b0, c0_0); c0_1 = Fma.MultiplyAdd(x0, b1, c0_1);
            var x1 = Vector256.Create(a0[lda]); c1_0 = Fma.MultiplyAdd(x1, b0, c1_0); c1_1 = Fma.MultiplyAdd(x1, b1, c1_1);
            var x2 = Vector256.Create(a0[l2]); c2_0 = Fma.MultiplyAdd(x2, b0, c2_0); c2_1 = Fma.MultiplyAdd(x2, b1, c2_1);
            var x3 = Vector256.Create(a0[l3]); c3_0 = Fma.MultiplyAdd(x3, b0, c3_0); c3_1 = Fma.MultiplyAdd(x3, b1, c3_1);
            var x4 = Vector256.Create(a4[0]); c4_0 = Fma.MultiplyAdd(x4, b0, c4_0); c4_1 = Fma.MultiplyAdd(x4, b1, c4_1);
            var x5 = Vector256.Create(a4[lda]); c5_0 = Fma.MultiplyAdd(x5, b0, c5_0); c5_1 = Fma.MultiplyAdd(x5, b1, c5_1);
            a0++; a4++;
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
