using AlignSharp.Engine;
using AlignSharp.Engine.Kernels;
using Xunit.Abstractions;
using Case = AlignSharp.Tests.Engine.GemmCase;
using static AlignSharp.Tests.Engine.GemmCase;

namespace AlignSharp.Tests.Engine;

/// <summary>
/// <see cref="Gemm.MultiplyBf16"/> (B stored as bf16) against an independent float64 triple loop over the exactly
/// widened B, on every kernel path the CPU has; the blocked path also bitwise against the float32 GEMM on the
/// widened B. Plus bf16 widening over every length class, and bf16 weights in Linear and Embedding.
/// </summary>
public class GemmBf16Tests(ITestOutputHelper output)
{
    public static TheoryData<string> Paths => new() { "Avx512", "Avx2", "Scalar" };

    /// <summary>Random bf16 values in (-1, 1), with the odd exact zero, ±tiny and large-exponent value.</summary>
    private static ushort[] RandomBf16(Random rng, int count)
    {
        var x = new ushort[count];
        for (int i = 0; i < count; i++)
        {
            float v = rng.Next(50) switch
            {
                0 => 0f,
                1 => 1e-30f,
                2 => -3.5e3f,
                _ => (float)(rng.NextDouble() * 2 - 1),
            };
            x[i] = Bf16.FromFloat(v);
        }
        return x;
    }

    /// <summary>Runs MultiplyBf16 on random data and checks every element of C against float64 (padding untouched).
    /// With <paramref name="bitwiseBlocked"/>, also that it equals the float32 GEMM on the widened B bit for bit.</summary>
    private static void Check(Random rng, Case t, string what, bool bitwiseBlocked)
    {
        var a = Random(rng, Len(t.TransA ? t.K : t.M, t.Lda, t.TransA ? t.M : t.K));
        var b = RandomBf16(rng, Len(t.TransB ? t.N : t.K, t.Ldb, t.TransB ? t.K : t.N));
        var c = Random(rng, Len(t.M, t.Ldc, t.N));
        var before = (float[])c.Clone();
        Gemm.MultiplyBf16(t.TransA, t.TransB, t.M, t.N, t.K, a, t.Lda, b, t.Ldb, c, t.Ldc, t.Accumulate);
        for (int i = 0; i < t.M; i++)
        {
            for (int j = 0; j < t.N; j++)
            {
                double sum = 0, mag = 0;
                for (int p = 0; p < t.K; p++)
                {
                    double av = t.TransA ? a[p * t.Lda + i] : a[i * t.Lda + p];
                    // Widening bf16 is appending 16 zero bits: an independent formula for the exact value.
                    ushort bits = t.TransB ? b[j * t.Ldb + p] : b[p * t.Ldb + j];
                    double bv = BitConverter.Int32BitsToSingle(bits << 16);
                    sum += av * bv;
                    mag += Math.Abs(av * bv);
                }
                t.AssertElement(c, before, i, j, sum, mag, what);
            }
            for (int j = t.N; j < t.Ldc && i < t.M - 1; j++)
                Assert.True(before[i * t.Ldc + j] == c[i * t.Ldc + j], $"{what} {t}: wrote padding C[{i},{j}]");
        }
        if (bitwiseBlocked)
        {
            var wide = new float[b.Length];
            Bf16.Widen(b, wide);
            var c32 = (float[])before.Clone();
            Gemm.Multiply(t.TransA, t.TransB, t.M, t.N, t.K, a, t.Lda, wide, t.Ldb, c32, t.Ldc, t.Accumulate);
            for (int i = 0; i < c.Length; i++)
                if (BitConverter.SingleToInt32Bits(c[i]) != BitConverter.SingleToInt32Bits(c32[i]))
                    Assert.Fail($"{what} {t}: C[{i}] = {c[i]:R} differs from the float32 GEMM on the widened B ({c32[i]:R})");
        }
    }

    private bool OnPath(string path, Action body)
    {
        var p = Enum.Parse<GemmPath>(path);
        if (!Gemm.IsSupported(p))
        {
            output.WriteLine($"GEMM path {path} is not available on this CPU: skipped.");
            return false;
        }
        Gemm.ForcePath = p;
        try { body(); }
        finally { Gemm.ForcePath = GemmPath.Auto; }
        output.WriteLine($"GEMM path {path}: checked.");
        return true;
    }

    /// <summary>Whether a call of this shape takes the bf16 streaming path (so it is not bitwise the blocked result).</summary>
    private static bool Streams(Case t) => Gemm.ActivePath == GemmPath.Avx512 && GemmSkinnyBf16.Applies(t.TransA, t.TransB, t.M);

    [Theory]
    [MemberData(nameof(Paths))]
    public void OddSizesAllTransposesMatchFloat64(string path)
    {
        OnPath(path, () =>
        {
            var rng = new Random(42);
            int[] sizes = [1, 2, 3, 5, 7, 8, 9, 12, 13, 16, 17, 31, 32, 33, 47, 63, 64, 65, 70];
            for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++)
            foreach (int s in sizes)
            {
                int o1 = sizes[rng.Next(sizes.Length)], o2 = sizes[rng.Next(sizes.Length)];
                foreach (var (m, n, k) in new[] { (s, o1, o2), (o1, s, o2), (o1, o2, s) })
                {
                    var t = GemmCase.Make(rng, ta == 1, tb == 1, m, n, k, padded: rng.Next(2) == 0, accumulate: rng.Next(2) == 0);
                    Check(rng, t, path, bitwiseBlocked: !Streams(t));
                }
            }
        });
    }

    [Theory]
    [MemberData(nameof(Paths))]
    public void BlockCrossingSizesMatchFloat64(string path)
    {
        OnPath(path, () =>
        {
            var rng = new Random(7);
            for (int tb = 0; tb < 2; tb++)
            {
                // 203×517×401 crosses the MC, KC and tile edges; 9×4100×7 crosses the NC column block.
                Check(rng, GemmCase.Make(rng, false, tb == 1, 203, 517, 401, padded: true, accumulate: tb == 1), path, bitwiseBlocked: true);
                Check(rng, GemmCase.Make(rng, tb == 1, tb == 1, 9, 4100, 7, padded: true, accumulate: tb == 0), path, bitwiseBlocked: true);
            }
        });
    }

    [Theory]
    [MemberData(nameof(Paths))]
    public void DecodeShapesMatchFloat64(string path)
    {
        // m <= 8, B [n,k] (a Linear weight): the bf16 streaming path on AVX-512. Every row count of the three tiles
        // (1×8, 4×4, 8×2), every column remainder, and k below, at and around the 32-wide step.
        OnPath(path, () =>
        {
            var rng = new Random(13);
            foreach (int m in new[] { 1, 2, 3, 4, 5, 6, 7, 8 })
            foreach (int n in new[] { 1, 2, 3, 4, 5, 6, 7, 8, 9, 15, 33, 130 })
            foreach (int k in new[] { 1, 17, 31, 32, 33, 64, 95, 200 })
                Check(rng, GemmCase.Make(rng, false, true, m, n, k, padded: rng.Next(2) == 0, accumulate: rng.Next(2) == 0), path, bitwiseBlocked: path != "Avx512");
            // A decode-sized product (Qwen2.5-0.5B's MLP width), run on both threads.
            Check(rng, GemmCase.Make(rng, false, true, 3, 600, 896, padded: false, accumulate: false), path, bitwiseBlocked: path != "Avx512");
            Check(rng, GemmCase.Make(rng, false, true, 8, 300, 896, padded: true, accumulate: true), path, bitwiseBlocked: path != "Avx512");
            // Few MACs but ≥ Gemm.StreamSplitBytes of B (a k/v projection, with a partial last tile): split by its bytes.
            Check(rng, GemmCase.Make(rng, false, true, 1, 130, 896, padded: false, accumulate: true), path, bitwiseBlocked: path != "Avx512");
        });
    }

    [Fact]
    public void ZeroKZeroesOrKeepsCAndBadArgumentsThrow()
    {
        var c = new float[] { 1, 2, 3, 4 };
        Gemm.MultiplyBf16(false, true, 2, 2, 0, [], 0, [], 0, c, 2, accumulate: true);
        Assert.Equal([1f, 2, 3, 4], c);
        Gemm.MultiplyBf16(false, true, 2, 2, 0, [], 0, [], 0, c, 2, accumulate: false);
        Assert.Equal([0f, 0, 0, 0], c);
        var ex = Assert.Throws<ArgumentException>(() => Gemm.MultiplyBf16(false, true, 2, 2, 3, new float[6], 3, new ushort[5], 3, c, 2, false));
        Assert.Contains("Span b has 5 elements", ex.Message);
    }

    [Theory]
    [InlineData(512)]
    [InlineData(256)]
    [InlineData(128)]
    [InlineData(0)]
    public void WidenMatchesBitShiftForEveryLength(int width)
    {
        using var lanes = Simd.UseWidth(width);
        var rng = new Random(3);
        for (int n = 0; n <= 300; n++)
        {
            var bits = new ushort[n + 3];
            for (int i = 0; i < bits.Length; i++) bits[i] = (ushort)rng.Next(65536);
            var dst = new float[n + 3];
            dst[n] = 123f;
            Bf16.Widen(bits.AsSpan(0, n), dst);
            for (int i = 0; i < n; i++)
                Assert.True(BitConverter.SingleToUInt32Bits(dst[i]) == (uint)bits[i] << 16, $"length {n}, element {i}");
            Assert.Equal(123f, dst[n]);
        }
    }

    [Theory]
    [InlineData(512)]
    [InlineData(256)]
    [InlineData(128)]
    [InlineData(0)]
    public void NarrowRoundsEveryElementLikeTheScalarConversion(int width)
    {
        using var lanes = Simd.UseWidth(width);
        var rng = new Random(4);
        for (int n = 0; n <= 300; n++)
        {
            var x = new float[n];
            for (int i = 0; i < n; i++)
                x[i] = (i % 7) switch
                {
                    // Ties and near-ties in the dropped half, NaNs, infinities and the largest finite values.
                    0 => BitConverter.UInt32BitsToSingle(((uint)rng.Next(1 << 16) << 16) | 0x8000u),
                    1 => BitConverter.UInt32BitsToSingle(((uint)rng.Next(1 << 16) << 16) | 0x7FFFu),
                    2 => (i / 7 % 4) switch { 0 => float.NaN, 1 => float.PositiveInfinity, 2 => -float.MaxValue, _ => float.MaxValue },
                    _ => BitConverter.UInt32BitsToSingle((uint)rng.NextInt64(0, 1L << 32)),
                };
            var bits = new ushort[n + 1];
            bits[n] = 0xABCD;
            Bf16.Narrow(x, bits);
            Assert.Equal(0xABCD, bits[n]);
            CheckNarrowed(x, bits, n);
        }
    }

    private static void CheckNarrowed(float[] x, ushort[] bits, int n)
    {
        for (int i = 0; i < n; i++)
        {
            // Round half to even on the dropped 16 bits, written out independently of the kernel's bias trick.
            uint u = BitConverter.SingleToUInt32Bits(x[i]);
            uint keep = u >> 16, dropped = u & 0xFFFF;
            uint expected = float.IsNaN(x[i]) ? 0x7FC0 : dropped > 0x8000 || (dropped == 0x8000 && (keep & 1) == 1) ? keep + 1 : keep;
            Assert.Equal((ushort)expected, bits[i]);
        }
    }

    // ------------------------------------------------------------------ tensors and ops

    private static Tensor RandomTensor(Random rng, params int[] shape)
    {
        var t = Tensor.Zeros(shape);
        var s = t.Span;
        for (int i = 0; i < s.Length; i++) s[i] = (float)(rng.NextDouble() * 2 - 1);
        return t;
    }

    [Theory]
    [InlineData(1)]
    [InlineData(5)]
    [InlineData(37)]
    public void LinearWithBf16WeightMatchesTheWidenedFloat32Weight(int rows)
    {
        var rng = new Random(rows);
        var w32 = RandomTensor(rng, 70, 45);
        var bias = RandomTensor(rng, 70);
        var wb = w32.ToBf16();
        Assert.True(wb.IsBf16);
        Assert.False(wb.RequiresGrad);
        var wide = Tensor.FromArray(wb.ToArray(), 70, 45);
        for (int i = 0; i < wide.Length; i++) Assert.Equal(Bf16.ToFloat(Bf16.FromFloat(w32.Span[i])), wide.Span[i]);

        var x1 = RandomTensor(rng, rows, 45);
        x1.RequiresGrad = true;
        var x2 = Tensor.FromArray(x1.Span, rows, 45);
        x2.RequiresGrad = true;
        var y1 = Ops.Linear(x1, wb, bias);
        var y2 = Ops.Linear(x2, wide, bias);
        for (int i = 0; i < y1.Length; i++) Assert.True(Math.Abs(y1.Span[i] - y2.Span[i]) <= 1e-5f * (1 + Math.Abs(y2.Span[i])), $"y[{i}]");
        // d(Σ y·r)/dx through the bf16 weight equals the float32 one.
        var r = RandomTensor(rng, rows, 70);
        Ops.Sum(Ops.Mul(y1, r)).Backward();
        Ops.Sum(Ops.Mul(y2, r)).Backward();
        for (int i = 0; i < x1.Length; i++) Assert.True(Math.Abs(x1.Grad!.Span[i] - x2.Grad!.Span[i]) <= 1e-5f * (1 + Math.Abs(x2.Grad!.Span[i])), $"dx[{i}]");
    }

    [Fact]
    public void Bf16TensorsAreFrozenAndSayHowTheyCanBeRead()
    {
        var rng = new Random(1);
        var w = RandomTensor(rng, 6, 4).ToBf16();
        var ex = Assert.Throws<InvalidOperationException>(() => w.Span[0]);
        Assert.Contains("bf16", ex.Message);
        w.RequiresGrad = true;
        Assert.Throws<InvalidOperationException>(() => Ops.Linear(RandomTensor(rng, 2, 4), w));
        Assert.True(w.CloneUnpooled().IsBf16);
        Assert.Equal(w.ToArray(), w.Clone().ToArray());
        Assert.Equal(w.ToArray()[5], w.Get(1, 1));
    }

    /// <summary>Every way a bf16 weight comes to be (rounded from float32, copied, made empty for a loader, a model built
    /// with bf16 matrices) starts on a 64-byte boundary, so decoding's vector loads never straddle cache lines.</summary>
    [Fact]
    public unsafe void Bf16StorageStartsOnACacheLine()
    {
        static void Aligned(Tensor t, string what)
        {
            fixed (ushort* p = t.Bf16Span) Assert.True(((nint)p & 63) == 0, $"{what}: bf16 data at {(nint)p:x}, not 64-byte aligned");
        }
        var rng = new Random(4);
        for (int n = 1; n <= 40; n++)
        {
            var source = RandomTensor(rng, n, 3);
            var w = source.ToBf16();
            Aligned(w, $"ToBf16 of [{n}, 3]");
            Assert.Equal(source.ToArray().Select(v => Bf16.ToFloat(Bf16.FromFloat(v))), w.ToArray());
            var copy = w.CloneUnpooled();
            Aligned(copy, $"CloneUnpooled of [{n}, 3]");
            Assert.Equal(w.ToArray(), copy.ToArray());
            var empty = Tensor.EmptyBf16([n, 3], zero: true);
            Aligned(empty, $"EmptyBf16 [{n}, 3]");
            Assert.All(empty.ToArray(), v => Assert.Equal(0f, v));
        }
        var model = AlignSharp.Models.TransformerModel.WithBf16Matrices(AlignSharp.Models.ModelPresets.Llama(64, 32, 2, 4, 2, 64, 64));
        foreach (var (name, p) in model.NamedParameters)
            if (p.IsBf16) Aligned(p, name);
    }

    [Fact]
    public void EmbeddingFromBf16TableWidensRows()
    {
        var rng = new Random(2);
        var table = RandomTensor(rng, 11, 9);
        var bf = table.ToBf16();
        var ids = new[] { 3, 0, 10, 3 };
        var y = Ops.Embedding(bf, ids, 2, 2);
        Assert.Equal([2, 2, 9], y.Shape.ToArray());
        for (int r = 0; r < ids.Length; r++)
            for (int j = 0; j < 9; j++)
                Assert.Equal(Bf16.ToFloat(Bf16.FromFloat(table.Span[ids[r] * 9 + j])), y.Span[r * 9 + j]);
    }
}
