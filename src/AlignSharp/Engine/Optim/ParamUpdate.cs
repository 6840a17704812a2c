using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using AlignSharp.Engine.Kernels;

namespace AlignSharp.Engine.Optim;

/// <summary>
/// The lane math of one optimizer: updates parameter <c>p</c> in place from gradient <c>g</c> and up to two state
/// buffers <c>s1</c>, <c>s2</c> (each the parameter's length; an optimizer that needs fewer never touches the
/// others). The 512-, 256- and 128-bit methods handle the 16, 8 or 4 elements starting at index <c>i</c>; <see cref="Lane"/>
/// handles one. Implementations must perform the same IEEE operations (FMA, sqrt, divide) in the same order at
/// every width, so an element's result does not depend on which path or thread processed it.
/// </summary>
internal interface IParamUpdate
{
    void Lanes512(ref float p, ref float g, ref float s1, ref float s2, nuint i);
    void Lanes256(ref float p, ref float g, ref float s1, ref float s2, nuint i);
    void Lanes128(ref float p, ref float g, ref float s1, ref float s2, nuint i);
    void Lane(ref float p, ref float g, ref float s1, ref float s2);
}

/// <summary>Runs an <see cref="IParamUpdate"/> over a whole parameter: SIMD, fixed parallel splits, no allocation.</summary>
internal static class ParamUpdate
{
    /// <summary>Elements per thread below which a parameter is updated on the caller's thread alone.</summary>
    public const int MinPerThread = 1 << 15;

    // p, g: (N) contiguous; s1, s2: (N) or empty. Shares are ParallelFor's fixed contiguous ranges; since the update
    // is element-wise and width-independent, the result is bitwise the same for any thread count.
    public static void Run<TOp>(in TOp op, Tensor p, Tensor g, float[] s1, float[] s2) where TOp : struct, IParamUpdate
        => ParallelFor.Run(p.Length, MinPerThread, new Work<TOp>(op, p.Array, p.Offset, g.Array, g.Offset, s1, s2));

    private readonly struct Work<TOp>(TOp op, float[] p, int pOffset, float[] g, int gOffset, float[] s1, float[] s2) : IRangeWork
        where TOp : struct, IParamUpdate
    {
        public void Run(int start, int end)
        {
            int n = end - start;
            Lanes(op, p.AsSpan(pOffset + start, n), g.AsSpan(gOffset + start, n),
                s1.Length == 0 ? default : s1.AsSpan(start, n), s2.Length == 0 ? default : s2.AsSpan(start, n));
        }
    }

    /// <summary>Elements per block of <see cref="RunAll"/>'s concatenated range (share boundaries fall on blocks).</summary>
    private const int FlatBlock = 4096;

    /// <summary>
    /// Runs the updates of many parameters in one parallel region: parameter i's update is <paramref name="ops"/>[i]
    /// with gradient <paramref name="gs"/>[i] (null: skipped), the parameters laid end to end in list order and the
    /// whole range split into fixed shares, so a model of many small tensors uses every thread with one fork-join
    /// instead of one per tensor. <paramref name="ends"/> is scratch of the parameters' count. Same results, bit for
    /// bit, as <see cref="Run"/> per parameter (the lane math is element-wise and width-independent).
    /// </summary>
    public static void RunAll<TOp>(TOp[] ops, Tensor[] ps, Tensor?[] gs, float[][][] state, long[] ends) where TOp : struct, IParamUpdate
    {
        long total = 0;
        for (int i = 0; i < ps.Length; i++)
        {
            if (gs[i] != null) total += ps[i].Length;
            ends[i] = total;
        }
        if (total == 0) return;
        int blocks = (int)((total + FlatBlock - 1) / FlatBlock);
        ParallelFor.Run(blocks, MinPerThread / FlatBlock, new FlatWork<TOp>(ops, ps, gs, state, ends, total));
    }

    // The shares of RunAll: block range [start, end) is the element range [start·FlatBlock, end·FlatBlock) of the
    // concatenation, cut at parameter boundaries.
    private readonly struct FlatWork<TOp>(TOp[] ops, Tensor[] ps, Tensor?[] gs, float[][][] state, long[] ends, long total) : IRangeWork
        where TOp : struct, IParamUpdate
    {
        public void Run(int start, int end)
        {
            long from = (long)start * FlatBlock, to = Math.Min(total, (long)end * FlatBlock);
            int i = Array.BinarySearch(ends, from);
            i = i < 0 ? ~i : i + 1;   // the first parameter whose range reaches past `from`
            for (; i < ps.Length && from < to; i++)
            {
                if (gs[i] is not { } g) continue;
                long begin = ends[i] - ps[i].Length;
                int a = (int)(Math.Max(from, begin) - begin), b = (int)(Math.Min(to, ends[i]) - begin);
                if (b <= a) continue;
                var p = ps[i];
                float[] s1 = state[i].Length > 0 ? state[i][0] : [], s2 = state[i].Length > 1 ? state[i][1] : [];
                Lanes(ops[i], p.Array.AsSpan(p.Offset + a, b - a), g.Array.AsSpan(g.Offset + a, b - a),
                    s1.Length == 0 ? default : s1.AsSpan(a, b - a), s2.Length == 0 ? default : s2.AsSpan(a, b - a));
                from = ends[i];
            }
        }
    }

    /// <summary>
    /// Whether the update would leave every element of p (and of the state buffers that are given) finite. It runs the
    /// same lane math on copies, 16 elements at a time, and writes nothing; since the math is width-independent the
    /// copies hold exactly what <see cref="Run"/> would store. Costs about one extra read of p, g and the state.
    /// </summary>
    public static bool StaysFinite<TOp>(in TOp op, Tensor p, Tensor g, float[] s1, float[] s2, int[] flag) where TOp : struct, IParamUpdate
    {
        flag[0] = 0;
        ParallelFor.Run(p.Length, MinPerThread, new CheckWork<TOp>(op, p.Array, p.Offset, g.Array, g.Offset, s1, s2, flag));
        return Volatile.Read(ref flag[0]) == 0;
    }

    private readonly struct CheckWork<TOp>(TOp op, float[] p, int pOffset, float[] g, int gOffset, float[] s1, float[] s2, int[] flag) : IRangeWork
        where TOp : struct, IParamUpdate
    {
        public void Run(int start, int end)
        {
            const int Chunk = 16;
            Span<float> pc = stackalloc float[Chunk], gc = stackalloc float[Chunk], ac = stackalloc float[Chunk], bc = stackalloc float[Chunk];
            for (int at = start; at < end; at += Chunk)
            {
                if (Volatile.Read(ref flag[0]) != 0) return;
                int n = Math.Min(Chunk, end - at);
                p.AsSpan(pOffset + at, n).CopyTo(pc);
                g.AsSpan(gOffset + at, n).CopyTo(gc);
                if (s1.Length != 0) s1.AsSpan(at, n).CopyTo(ac); else ac.Clear();
                if (s2.Length != 0) s2.AsSpan(at, n).CopyTo(bc); else bc.Clear();
                Lanes(op, pc[..n], gc[..n], ac[..n], bc[..n]);
                for (int k = 0; k < n; k++)
                    if (!float.IsFinite(pc[k]) || !float.IsFinite(ac[k]) || !float.IsFinite(bc[k]))
                    {
                        Volatile.Write(ref flag[0], 1);
                        return;
                    }
            }
        }
    }

    /// <summary>16-lane blocks (AVX-512), then 8-lane (AVX2), then 4-lane (SSE / AdvSimd), then a scalar remainder of at most 3 elements.</summary>
    public static void Lanes<TOp>(in TOp op, Span<float> p, ReadOnlySpan<float> g, Span<float> s1, Span<float> s2) where TOp : struct, IParamUpdate
    {
        int n = p.Length, i = 0;
        if (g.Length != n || (s1.Length != 0 && s1.Length != n) || (s2.Length != 0 && s2.Length != n))
            throw new ArgumentException("Parameter, gradient and state lengths differ.");
        ref float pr = ref MemoryMarshal.GetReference(p);
        ref float gr = ref MemoryMarshal.GetReference(g);
        ref float ar = ref MemoryMarshal.GetReference(s1);
        ref float br = ref MemoryMarshal.GetReference(s2);
        if (Simd.UseAvx512)
            for (; i <= n - 16; i += 16) op.Lanes512(ref pr, ref gr, ref ar, ref br, (nuint)i);
        if (Simd.UseAvx2)
            for (; i <= n - 8; i += 8) op.Lanes256(ref pr, ref gr, ref ar, ref br, (nuint)i);
        if (Simd.UseVector128)
            for (; i <= n - 4; i += 4) op.Lanes128(ref pr, ref gr, ref ar, ref br, (nuint)i);
        for (; i < n; i++)
            op.Lane(ref Unsafe.Add(ref pr, i), ref Unsafe.Add(ref gr, i), ref Unsafe.Add(ref ar, i), ref Unsafe.Add(ref br, i));
    }
}
