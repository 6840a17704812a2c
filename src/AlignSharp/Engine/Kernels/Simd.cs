using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace AlignSharp.Engine.Kernels;

/// <summary>f(x), lane-wise. Implement every width; the driver picks the widest the CPU runs.</summary>
public interface IUnaryOp
{
    static abstract float Apply(float x);
    static abstract Vector128<float> Apply(Vector128<float> x);
    static abstract Vector256<float> Apply(Vector256<float> x);
    static abstract Vector512<float> Apply(Vector512<float> x);
}

/// <summary>f(a, b), lane-wise.</summary>
public interface IBinaryOp
{
    static abstract float Apply(float a, float b);
    static abstract Vector128<float> Apply(Vector128<float> a, Vector128<float> b);
    static abstract Vector256<float> Apply(Vector256<float> a, Vector256<float> b);
    static abstract Vector512<float> Apply(Vector512<float> a, Vector512<float> b);
}

/// <summary>
/// The SIMD mechanics, written once: each driver walks 512-bit lanes (16 floats), then 256-bit (8), then 128-bit (4),
/// then a scalar tail, so every length works and every op is a small operator struct. A path runs only where the
/// hardware accelerates it (x64: AVX-512F, AVX2, SSE; ARM64: AdvSimd gives the 128-bit path) and the calling thread's
/// <see cref="UseWidth"/> scope allows it, so tests can force each path on one machine.
/// </summary>
public static class Simd
{
    [ThreadStatic] private static int t_maxBits; // a UseWidth scope on this thread, as bits + 1; 0 = none

    /// <summary>The widest lanes the calling thread may use (512, 256, 128, or 0 for scalar only).</summary>
    // Inlined, as are the three below: every driver asks up to three times per call, and a small model's training step
    // makes tens of thousands of calls (the getter was 1% of it, called).
    public static int MaxBits
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => t_maxBits == 0 ? 512 : t_maxBits - 1;
    }

    public static bool UseAvx512
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => Vector512.IsHardwareAccelerated && MaxBits >= 512;
    }

    public static bool UseAvx2
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => Vector256.IsHardwareAccelerated && MaxBits >= 256;
    }

    public static bool UseVector128
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => Vector128.IsHardwareAccelerated && MaxBits >= 128;
    }

    /// <summary>
    /// Kernels called from the calling thread (and the ParallelFor shares it starts) use lanes at most
    /// <paramref name="bits"/> wide (512, 256, 128, or 0 for the scalar loops alone) until the scope is disposed;
    /// other threads keep theirs. It can only narrow what the hardware runs.
    /// </summary>
    public static WidthScope UseWidth(int bits)
    {
        if (bits is not (0 or 128 or 256 or 512)) throw new ArgumentOutOfRangeException(nameof(bits), bits, "Lane width must be 0, 128, 256 or 512 bits.");
        var scope = new WidthScope(t_maxBits);
        t_maxBits = bits + 1;
        return scope;
    }

    /// <summary>Restores the calling thread's previous lane width when disposed (see <see cref="UseWidth"/>).</summary>
    public readonly struct WidthScope : IDisposable
    {
        private readonly int _previous;
        internal WidthScope(int previous) => _previous = previous;
        public void Dispose() => t_maxBits = _previous;
    }

    /// <summary>The calling thread's scope as stored (0 = none), for ParallelFor to hand to its workers.</summary>
    internal static int ThreadScope { get => t_maxBits; set => t_maxBits = value; }

    /// <summary>y[i] = f(x[i]). x and y may be the same span.</summary>
    public static void Map<TOp>(ReadOnlySpan<float> x, Span<float> y) where TOp : IUnaryOp
    {
        if (y.Length < x.Length) throw new ArgumentException("Destination too short.");
        ref float xs = ref MemoryMarshal.GetReference(x);
        ref float ys = ref MemoryMarshal.GetReference(y);
        int n = x.Length, i = 0;
        if (UseAvx512)
            for (; i <= n - 16; i += 16)
                TOp.Apply(Vector512.LoadUnsafe(ref xs, (nuint)i)).StoreUnsafe(ref ys, (nuint)i);
        if (UseAvx2)
            for (; i <= n - 8; i += 8)
                TOp.Apply(Vector256.LoadUnsafe(ref xs, (nuint)i)).StoreUnsafe(ref ys, (nuint)i);
        if (UseVector128)
            for (; i <= n - 4; i += 4)
                TOp.Apply(Vector128.LoadUnsafe(ref xs, (nuint)i)).StoreUnsafe(ref ys, (nuint)i);
        for (; i < n; i++) Unsafe.Add(ref ys, i) = TOp.Apply(Unsafe.Add(ref xs, i));
    }

    /// <summary>y[i] = f(a[i], b[i]).</summary>
    public static void Zip<TOp>(ReadOnlySpan<float> a, ReadOnlySpan<float> b, Span<float> y) where TOp : IBinaryOp
    {
        if (b.Length < a.Length || y.Length < a.Length) throw new ArgumentException("Span lengths differ.");
        ref float ar = ref MemoryMarshal.GetReference(a);
        ref float br = ref MemoryMarshal.GetReference(b);
        ref float yr = ref MemoryMarshal.GetReference(y);
        int n = a.Length, i = 0;
        if (UseAvx512)
            for (; i <= n - 16; i += 16)
                TOp.Apply(Vector512.LoadUnsafe(ref ar, (nuint)i), Vector512.LoadUnsafe(ref br, (nuint)i)).StoreUnsafe(ref yr, (nuint)i);
        if (UseAvx2)
            for (; i <= n - 8; i += 8)
                TOp.Apply(Vector256.LoadUnsafe(ref ar, (nuint)i), Vector256.LoadUnsafe(ref br, (nuint)i)).StoreUnsafe(ref yr, (nuint)i);
        if (UseVector128)
            for (; i <= n - 4; i += 4)
                TOp.Apply(Vector128.LoadUnsafe(ref ar, (nuint)i), Vector128.LoadUnsafe(ref br, (nuint)i)).StoreUnsafe(ref yr, (nuint)i);
        for (; i < n; i++) Unsafe.Add(ref yr, i) = TOp.Apply(Unsafe.Add(ref ar, i), Unsafe.Add(ref br, i));
    }

    /// <summary>y[i] = f(a[i], s).</summary>
    public static void ZipScalarRight<TOp>(ReadOnlySpan<float> a, float s, Span<float> y) where TOp : IBinaryOp
    {
        ref float ar = ref MemoryMarshal.GetReference(a);
        ref float yr = ref MemoryMarshal.GetReference(y);
        int n = a.Length, i = 0;
        if (UseAvx512)
        {
            var sv = Vector512.Create(s);
            for (; i <= n - 16; i += 16) TOp.Apply(Vector512.LoadUnsafe(ref ar, (nuint)i), sv).StoreUnsafe(ref yr, (nuint)i);
        }
        if (UseAvx2)
        {
            var sv = Vector256.Create(s);
            for (; i <= n - 8; i += 8) TOp.Apply(Vector256.LoadUnsafe(ref ar, (nuint)i), sv).StoreUnsafe(ref yr, (nuint)i);
        }
        if (UseVector128)
        {
            var sv = Vector128.Create(s);
            for (; i <= n - 4; i += 4) TOp.Apply(Vector128.LoadUnsafe(ref ar, (nuint)i), sv).StoreUnsafe(ref yr, (nuint)i);
        }
        for (; i < n; i++) Unsafe.Add(ref yr, i) = TOp.Apply(Unsafe.Add(ref ar, i), s);
    }

    /// <summary>y[i] = f(s, b[i]).</summary>
    public static void ZipScalarLeft<TOp>(float s, ReadOnlySpan<float> b, Span<float> y) where TOp : IBinaryOp
    {
        ref float br = ref MemoryMarshal.GetReference(b);
        ref float yr = ref MemoryMarshal.GetReference(y);
        int n = b.Length, i = 0;
        if (UseAvx512)
        {
            var sv = Vector512.Create(s);
            for (; i <= n - 16; i += 16) TOp.Apply(sv, Vector512.LoadUnsafe(ref br, (nuint)i)).StoreUnsafe(ref yr, (nuint)i);
        }
        if (UseAvx2)
        {
            var sv = Vector256.Create(s);
            for (; i <= n - 8; i += 8) TOp.Apply(sv, Vector256.LoadUnsafe(ref br, (nuint)i)).StoreUnsafe(ref yr, (nuint)i);
        }
        if (UseVector128)
        {
            var sv = Vector128.Create(s);
            for (; i <= n - 4; i += 4) TOp.Apply(sv, Vector128.LoadUnsafe(ref br, (nuint)i)).StoreUnsafe(ref yr, (nuint)i);
        }
        for (; i < n; i++) Unsafe.Add(ref yr, i) = TOp.Apply(s, Unsafe.Add(ref br, i));
    }

    /// <summary>acc[i] += f(a[i], b[i]): the shape of most backward passes (gradient accumulation).</summary>
    public static void ZipAccumulate<TOp>(ReadOnlySpan<float> a, ReadOnlySpan<float> b, Span<float> acc) where TOp : IBinaryOp
    {
        if (b.Length < a.Length || acc.Length < a.Length) throw new ArgumentException("Span lengths differ.");
        ref float ar = ref MemoryMarshal.GetReference(a);
        ref float br = ref MemoryMarshal.GetReference(b);
        ref float yr = ref MemoryMarshal.GetReference(acc);
        int n = a.Length, i = 0;
        if (UseAvx512)
            for (; i <= n - 16; i += 16)
                (Vector512.LoadUnsafe(ref yr, (nuint)i) + TOp.Apply(Vector512.LoadUnsafe(ref ar, (nuint)i), Vector512.LoadUnsafe(ref br, (nuint)i))).StoreUnsafe(ref yr, (nuint)i);
        if (UseAvx2)
            for (; i <= n - 8; i += 8)
                (Vector256.LoadUnsafe(ref yr, (nuint)i) + TOp.Apply(Vector256.LoadUnsafe(ref ar, (nuint)i), Vector256.LoadUnsafe(ref br, (nuint)i))).StoreUnsafe(ref yr, (nuint)i);
        if (UseVector128)
            for (; i <= n - 4; i += 4)
                (Vector128.LoadUnsafe(ref yr, (nuint)i) + TOp.Apply(Vector128.LoadUnsafe(ref ar, (nuint)i), Vector128.LoadUnsafe(ref br, (nuint)i))).StoreUnsafe(ref yr, (nuint)i);
        for (; i < n; i++) Unsafe.Add(ref yr, i) += TOp.Apply(Unsafe.Add(ref ar, i), Unsafe.Add(ref br, i));
    }

    /// <summary>acc[i] += x[i].</summary>
    public static void AddInto(ReadOnlySpan<float> x, Span<float> acc) => ZipAccumulateUnary<Identity>(x, acc);

    /// <summary>acc[i] += f(x[i]).</summary>
    public static void ZipAccumulateUnary<TOp>(ReadOnlySpan<float> x, Span<float> acc) where TOp : IUnaryOp
    {
        if (acc.Length < x.Length) throw new ArgumentException("Span lengths differ.");
        ref float xr = ref MemoryMarshal.GetReference(x);
        ref float yr = ref MemoryMarshal.GetReference(acc);
        int n = x.Length, i = 0;
        if (UseAvx512)
            for (; i <= n - 16; i += 16)
                (Vector512.LoadUnsafe(ref yr, (nuint)i) + TOp.Apply(Vector512.LoadUnsafe(ref xr, (nuint)i))).StoreUnsafe(ref yr, (nuint)i);
        if (UseAvx2)
            for (; i <= n - 8; i += 8)
                (Vector256.LoadUnsafe(ref yr, (nuint)i) + TOp.Apply(Vector256.LoadUnsafe(ref xr, (nuint)i))).StoreUnsafe(ref yr, (nuint)i);
        if (UseVector128)
            for (; i <= n - 4; i += 4)
                (Vector128.LoadUnsafe(ref yr, (nuint)i) + TOp.Apply(Vector128.LoadUnsafe(ref xr, (nuint)i))).StoreUnsafe(ref yr, (nuint)i);
        for (; i < n; i++) Unsafe.Add(ref yr, i) += TOp.Apply(Unsafe.Add(ref xr, i));
    }

    /// <summary>acc[i] += s * x[i].</summary>
    public static void ScaleAddInto(ReadOnlySpan<float> x, float s, Span<float> acc)
    {
        if (acc.Length < x.Length) throw new ArgumentException("Span lengths differ.");
        ref float xr = ref MemoryMarshal.GetReference(x);
        ref float yr = ref MemoryMarshal.GetReference(acc);
        int n = x.Length, i = 0;
        if (UseAvx512)
        {
            var sv = Vector512.Create(s);
            for (; i <= n - 16; i += 16)
                Vector512.FusedMultiplyAdd(Vector512.LoadUnsafe(ref xr, (nuint)i), sv, Vector512.LoadUnsafe(ref yr, (nuint)i)).StoreUnsafe(ref yr, (nuint)i);
        }
        if (UseAvx2)
        {
            var sv = Vector256.Create(s);
            for (; i <= n - 8; i += 8)
                Vector256.FusedMultiplyAdd(Vector256.LoadUnsafe(ref xr, (nuint)i), sv, Vector256.LoadUnsafe(ref yr, (nuint)i)).StoreUnsafe(ref yr, (nuint)i);
        }
        if (UseVector128)
        {
            var sv = Vector128.Create(s);
            for (; i <= n - 4; i += 4)
                Vector128.FusedMultiplyAdd(Vector128.LoadUnsafe(ref xr, (nuint)i), sv, Vector128.LoadUnsafe(ref yr, (nuint)i)).StoreUnsafe(ref yr, (nuint)i);
        }
        for (; i < n; i++) Unsafe.Add(ref yr, i) = MathF.FusedMultiplyAdd(Unsafe.Add(ref xr, i), s, Unsafe.Add(ref yr, i));
    }

    /// <summary>Sum of x, accumulated in lanes then combined in a fixed order (deterministic).</summary>
    public static float Sum(ReadOnlySpan<float> x)
    {
        ref float xr = ref MemoryMarshal.GetReference(x);
        int n = x.Length, i = 0;
        float total = 0;
        if (UseAvx512 && n >= 16)
        {
            var acc = Vector512<float>.Zero;
            for (; i <= n - 16; i += 16) acc += Vector512.LoadUnsafe(ref xr, (nuint)i);
            total = Vector512.Sum(acc);
        }
        else if (UseAvx2 && n >= 8)
        {
            var acc = Vector256<float>.Zero;
            for (; i <= n - 8; i += 8) acc += Vector256.LoadUnsafe(ref xr, (nuint)i);
            total = Vector256.Sum(acc);
        }
        else if (UseVector128 && n >= 4)
        {
            var acc = Vector128<float>.Zero;
            for (; i <= n - 4; i += 4) acc += Vector128.LoadUnsafe(ref xr, (nuint)i);
            total = Vector128.Sum(acc);
        }
        for (; i < n; i++) total += Unsafe.Add(ref xr, i);
        return total;
    }

    /// <summary>Σ a[i]·b[i], deterministic like <see cref="Sum"/>.</summary>
    public static float Dot(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        ref float ar = ref MemoryMarshal.GetReference(a);
        ref float br = ref MemoryMarshal.GetReference(b);
        int n = a.Length, i = 0;
        float total = 0;
        if (UseAvx512 && n >= 16)
        {
            var acc = Vector512<float>.Zero;
            for (; i <= n - 16; i += 16) acc = Vector512.FusedMultiplyAdd(Vector512.LoadUnsafe(ref ar, (nuint)i), Vector512.LoadUnsafe(ref br, (nuint)i), acc);
            total = Vector512.Sum(acc);
        }
        else if (UseAvx2 && n >= 8)
        {
            var acc = Vector256<float>.Zero;
            for (; i <= n - 8; i += 8) acc = Vector256.FusedMultiplyAdd(Vector256.LoadUnsafe(ref ar, (nuint)i), Vector256.LoadUnsafe(ref br, (nuint)i), acc);
            total = Vector256.Sum(acc);
        }
        else if (UseVector128 && n >= 4)
        {
            var acc = Vector128<float>.Zero;
            for (; i <= n - 4; i += 4) acc = Vector128.FusedMultiplyAdd(Vector128.LoadUnsafe(ref ar, (nuint)i), Vector128.LoadUnsafe(ref br, (nuint)i), acc);
            total = Vector128.Sum(acc);
        }
        for (; i < n; i++) total += Unsafe.Add(ref ar, i) * Unsafe.Add(ref br, i);
        return total;
    }

    /// <summary>
    /// Σ exp(x[i] − shift) in one pass that stores nothing, with the bits of <see cref="ZipScalarRight{TOp}"/> (SubOp),
    /// <see cref="Map{TOp}"/> (ExpOp) and <see cref="Sum"/> run over x in turn. With <paramref name="blockSums"/> not
    /// empty it also writes the sum of each block of <paramref name="block"/> elements (a multiple of 16, so blocks end
    /// where vectors do; the last one may be short): the block's vectors added in order, their lanes summed, then its
    /// tail's elements.
    /// </summary>
    public static float SumExp(ReadOnlySpan<float> x, float shift, Span<float> blockSums = default, int block = 64)
    {
        bool blocks = !blockSums.IsEmpty;
        if (blocks && (block <= 0 || block % 16 != 0 || blockSums.Length < (x.Length + block - 1) / block))
            throw new ArgumentException($"Blocks of {block} over {x.Length} elements need a positive multiple of 16 and {(x.Length + block - 1) / Math.Max(block, 1)} sums.", nameof(blockSums));
        ref float xr = ref MemoryMarshal.GetReference(x);
        int n = x.Length, i = 0;
        float total = 0, pending = 0; // pending: the current block's sum so far
        if (UseAvx512 && n >= 16)
        {
            var sv = Vector512.Create(shift);
            var (acc, part) = (Vector512<float>.Zero, Vector512<float>.Zero);
            for (; i <= n - 16; i += 16)
            {
                var e = FastMath.Exp(Vector512.LoadUnsafe(ref xr, (nuint)i) - sv);
                acc += e;
                if (!blocks) continue;
                part += e;
                if ((i + 16) % block == 0) (blockSums[i / block], part) = (Vector512.Sum(part), Vector512<float>.Zero);
            }
            total = Vector512.Sum(acc);
            pending = Vector512.Sum(part);
        }
        else if (UseAvx2 && n >= 8)
        {
            var sv = Vector256.Create(shift);
            var (acc, part) = (Vector256<float>.Zero, Vector256<float>.Zero);
            for (; i <= n - 8; i += 8)
            {
                var e = FastMath.Exp(Vector256.LoadUnsafe(ref xr, (nuint)i) - sv);
                acc += e;
                if (!blocks) continue;
                part += e;
                if ((i + 8) % block == 0) (blockSums[i / block], part) = (Vector256.Sum(part), Vector256<float>.Zero);
            }
            total = Vector256.Sum(acc);
            pending = Vector256.Sum(part);
        }
        else if (UseVector128 && n >= 4)
        {
            var sv = Vector128.Create(shift);
            var (acc, part) = (Vector128<float>.Zero, Vector128<float>.Zero);
            for (; i <= n - 4; i += 4)
            {
                var e = FastMath.Exp(Vector128.LoadUnsafe(ref xr, (nuint)i) - sv);
                acc += e;
                if (!blocks) continue;
                part += e;
                if ((i + 4) % block == 0) (blockSums[i / block], part) = (Vector128.Sum(part), Vector128<float>.Zero);
            }
            total = Vector128.Sum(acc);
            pending = Vector128.Sum(part);
        }
        // The rest (fewer than 16 unless no vector path runs) as Map makes it, the narrower widths in turn, then added
        // one by one as Sum adds its tail.
        Span<float> rest = stackalloc float[16];
        while (i < n)
        {
            int count = Math.Min(16, n - i);
            for (int j = 0; j < count; j++) rest[j] = Unsafe.Add(ref xr, i + j) - shift;
            Map<ExpOp>(rest[..count], rest);
            for (int j = 0; j < count; j++, i++)
            {
                total += rest[j];
                if (!blocks) continue;
                pending += rest[j];
                if ((i + 1) % block == 0) (blockSums[i / block], pending) = (pending, 0);
            }
        }
        if (blocks && n % block != 0) blockSums[n / block] = pending;
        return total;
    }

    /// <summary>
    /// The largest element, as <see cref="MathF.Max(float, float)"/> folded over x gives it: NaN if any element is NaN,
    /// +0 over −0, −∞ when x is empty. The vector loops use the processor's own max (<c>vmaxps</c>: one instruction,
    /// where IEEE maximum, <c>Vector512.Max</c>, takes several) on two accumulators and reduce the lanes by halves. Where
    /// that could differ from the fold it is not used: a NaN or an infinity (seen as a NaN in Σ x·0, one FMA a vector)
    /// or a zero maximum (the processor's max may keep −0 over +0) are answered by the plain fold instead.
    /// </summary>
    public static float Max(ReadOnlySpan<float> x)
    {
        ref float xr = ref MemoryMarshal.GetReference(x);
        int n = x.Length, i = 0;
        float m = float.NegativeInfinity;
        if (UseAvx512 && n >= 16)
        {
            var (a, b) = (Vector512.Create(float.NegativeInfinity), Vector512.Create(float.NegativeInfinity));
            var probe = Vector512<float>.Zero;
            for (; i <= n - 32; i += 32)
            {
                var u = Vector512.LoadUnsafe(ref xr, (nuint)i);
                var v = Vector512.LoadUnsafe(ref xr, (nuint)(i + 16));
                a = Vector512.MaxNative(a, u);
                b = Vector512.MaxNative(b, v);
                probe = Vector512.FusedMultiplyAdd(u + v, Vector512<float>.Zero, probe);
            }
            if (i <= n - 16)
            {
                var u = Vector512.LoadUnsafe(ref xr, (nuint)i);
                a = Vector512.MaxNative(a, u);
                probe = Vector512.FusedMultiplyAdd(u, Vector512<float>.Zero, probe);
                i += 16;
            }
            if (!Vector512.EqualsAll(probe, probe)) return MaxExact(x);
            a = Vector512.MaxNative(a, b);
            var h = Vector256.MaxNative(a.GetLower(), a.GetUpper());
            var q = Vector128.MaxNative(h.GetLower(), h.GetUpper());
            for (int l = 0; l < 4; l++) m = MathF.Max(m, q[l]);
        }
        else if (UseAvx2 && n >= 8)
        {
            var (a, b) = (Vector256.Create(float.NegativeInfinity), Vector256.Create(float.NegativeInfinity));
            var probe = Vector256<float>.Zero;
            for (; i <= n - 16; i += 16)
            {
                var u = Vector256.LoadUnsafe(ref xr, (nuint)i);
                var v = Vector256.LoadUnsafe(ref xr, (nuint)(i + 8));
                a = Vector256.MaxNative(a, u);
                b = Vector256.MaxNative(b, v);
                probe = Vector256.FusedMultiplyAdd(u + v, Vector256<float>.Zero, probe);
            }
            if (i <= n - 8)
            {
                var u = Vector256.LoadUnsafe(ref xr, (nuint)i);
                a = Vector256.MaxNative(a, u);
                probe = Vector256.FusedMultiplyAdd(u, Vector256<float>.Zero, probe);
                i += 8;
            }
            if (!Vector256.EqualsAll(probe, probe)) return MaxExact(x);
            a = Vector256.MaxNative(a, b);
            var q = Vector128.MaxNative(a.GetLower(), a.GetUpper());
            for (int l = 0; l < 4; l++) m = MathF.Max(m, q[l]);
        }
        else if (UseVector128 && n >= 4)
        {
            var a = Vector128.Create(float.NegativeInfinity);
            var probe = Vector128<float>.Zero;
            for (; i <= n - 4; i += 4)
            {
                var u = Vector128.LoadUnsafe(ref xr, (nuint)i);
                a = Vector128.MaxNative(a, u);
                probe = Vector128.FusedMultiplyAdd(u, Vector128<float>.Zero, probe);
            }
            if (!Vector128.EqualsAll(probe, probe)) return MaxExact(x);
            for (int l = 0; l < 4; l++) m = MathF.Max(m, a[l]);
        }
        for (; i < n; i++) m = MathF.Max(m, Unsafe.Add(ref xr, i));
        return m == 0 ? MaxExact(x) : m;
    }

    /// <summary><see cref="Max"/> as the plain fold of <see cref="MathF.Max(float, float)"/> (its exact answer for a zero maximum).</summary>
    private static float MaxExact(ReadOnlySpan<float> x)
    {
        float m = float.NegativeInfinity;
        foreach (float v in x) m = MathF.Max(m, v);
        return m;
    }

    public readonly struct Identity : IUnaryOp
    {
        public static float Apply(float x) => x;
        public static Vector128<float> Apply(Vector128<float> x) => x;
        public static Vector256<float> Apply(Vector256<float> x) => x;
        public static Vector512<float> Apply(Vector512<float> x) => x;
    }
}
