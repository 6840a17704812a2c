using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Text;

namespace AlignSharp.Engine;

/// <summary>
/// A float32 tensor: a shape over contiguous row-major memory (or, for frozen weights, bf16 memory; see
/// <see cref="ToBf16"/>). Reshape and slicing along the first axis are
/// free views; every other op materialises its result. Leaves with <see cref="RequiresGrad"/> (parameters)
/// accumulate gradients in <see cref="Grad"/>; results of ops on them carry the autograd graph.
/// </summary>
public sealed class Tensor
{
    private readonly int[] _shape;
    internal readonly Storage Storage;
    internal readonly int Offset;
    internal Node? Node;
    internal Tensor? GradTensor;
    internal int VisitMark;

    public int Length { get; }
    public string? Name { get; set; }

    /// <summary>True for a parameter (set by the user) or for a result computed from one while grad is enabled.</summary>
    public bool RequiresGrad { get; set; }

    public bool IsLeaf => Node == null;

    internal Tensor(int[] shape, Storage storage, int offset)
    {
        _shape = shape;
        Length = ShapeUtil.Count(shape);
        Storage = storage;
        Offset = offset;
    }

    public ReadOnlySpan<int> Shape => _shape;
    public int Rank => _shape.Length;
    public int Dim(int axis) => _shape[axis < 0 ? _shape.Length + axis : axis];
    internal int[] ShapeArray => _shape;

    /// <summary>The gradient accumulated by backward passes (null until one reaches this tensor).</summary>
    public Tensor? Grad => GradTensor;

    public Span<float> Span => Storage.Array.AsSpan(Offset, Length);
    internal float[] Array => Storage.Array;

    /// <summary>True when the values are stored as bf16 (a frozen weight): <see cref="Span"/> throws, the kernels widen.</summary>
    public bool IsBf16 => Storage.IsBf16;

    /// <summary>The bf16 bit patterns of a bf16 tensor.</summary>
    internal ReadOnlySpan<ushort> Bf16Span => Storage.Bf16Array.AsSpan(Offset, Length);

    /// <summary>The bf16 bits of a bf16 tensor, writable: for a loader filling a frozen weight before anything reads it.</summary>
    internal Span<ushort> Bf16Destination => Storage.Bf16Array.AsSpan(Offset, Length);

    // ---- creation ----------------------------------------------------------------------------------------

    /// <summary>Uninitialised memory; pooled when a <see cref="TensorScope"/> is active.</summary>
    public static Tensor Empty(params int[] shape) => Allocate((int[])shape.Clone(), zero: false);

    public static Tensor Zeros(params int[] shape) => Allocate((int[])shape.Clone(), zero: true);

    internal static Tensor EmptyOwned(int[] shape) => Allocate(shape, zero: false);
    internal static Tensor ZerosOwned(int[] shape) => Allocate(shape, zero: true);

    private static Tensor Allocate(int[] shape, bool zero)
    {
        int n = ShapeUtil.Count(shape);
        var scope = TensorScope.Current;
        Storage storage;
        if (scope != null)
        {
            var a = BufferPool.Rent(n);
            if (zero) System.Array.Clear(a, 0, n);
            storage = new Storage(a, pooled: true);
            scope.Track(storage);
        }
        else
        {
            storage = new Storage(new float[n], pooled: false);
        }
        return new Tensor(shape, storage, 0);
    }

    public static Tensor Full(int[] shape, float value)
    {
        var t = Empty(shape);
        t.Span.Fill(value);
        return t;
    }

    public static Tensor Scalar(float value) => Full([], value);

    /// <summary>Copies <paramref name="data"/> into a new tensor of the given shape.</summary>
    public static Tensor FromArray(ReadOnlySpan<float> data, params int[] shape)
    {
        if (ShapeUtil.Count(shape) != data.Length)
            throw new ArgumentException($"{data.Length} values do not fill shape {ShapeUtil.Format(shape)}.");
        var t = Empty(shape);
        data.CopyTo(t.Span);
        return t;
    }

    /// <summary>Wraps an existing array without copying (the tensor aliases it; never pooled).</summary>
    public static Tensor Wrap(float[] data, params int[] shape)
    {
        if (ShapeUtil.Count(shape) != data.Length)
            throw new ArgumentException($"{data.Length} values do not fill shape {ShapeUtil.Format(shape)}.");
        return new Tensor((int[])shape.Clone(), new Storage(data, pooled: false), 0);
    }

    /// <summary>A frozen bf16 tensor holding <paramref name="data"/> rounded to bf16 (nearest, ties to even).</summary>
    public static Tensor FromArrayBf16(ReadOnlySpan<float> data, params int[] shape)
    {
        if (ShapeUtil.Count(shape) != data.Length)
            throw new ArgumentException($"{data.Length} values do not fill shape {ShapeUtil.Format(shape)}.");
        var t = EmptyBf16(shape, zero: false);
        Kernels.Bf16.Narrow(data, t.Bf16Destination);
        return t;
    }

    /// <summary>
    /// A frozen bf16 tensor for a loader to fill (<see cref="Bf16Destination"/>), zeroed or not. Its first element is
    /// 64-byte aligned, in memory the GC never moves: decoding streams these weights through 64-byte vector loads, and
    /// a row that straddles cache lines read 7–20% slower (measured with the vdpbf16ps kernel on two cores). With
    /// shapes whose rows are whole lines (bf16 rows of a multiple of 32 values), every row is aligned.
    /// </summary>
    internal static Tensor EmptyBf16(int[] shape, bool zero)
    {
        int n = ShapeUtil.Count(shape);
        const int Slack = 64 / sizeof(ushort) - 1;
        var bits = zero ? GC.AllocateArray<ushort>(n + Slack, pinned: true) : GC.AllocateUninitializedArray<ushort>(n + Slack, pinned: true);
        int offset;
        unsafe
        {
            nint address = (nint)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(bits));
            offset = (int)((64 - (address & 63)) & 63) / sizeof(ushort);
        }
        return new Tensor((int[])shape.Clone(), new Storage(bits), offset);
    }

    /// <summary>A trainable leaf: normal(0, std) values from <paramref name="rng"/>, RequiresGrad set.</summary>
    public static Tensor Parameter(int[] shape, Random rng, float std, string? name = null)
    {
        var t = new Tensor((int[])shape.Clone(), new Storage(new float[ShapeUtil.Count(shape)], pooled: false), 0)
        {
            RequiresGrad = true,
            Name = name,
        };
        var s = t.Span;
        for (int i = 0; i < s.Length; i++) s[i] = (float)(rng.NextGaussian() * std);
        return t;
    }

    /// <summary>A trainable leaf filled with a constant (e.g. norm weights of 1, biases of 0).</summary>
    public static Tensor Parameter(int[] shape, float value, string? name = null)
    {
        var t = new Tensor((int[])shape.Clone(), new Storage(new float[ShapeUtil.Count(shape)], pooled: false), 0)
        {
            RequiresGrad = true,
            Name = name,
        };
        if (value != 0f) t.Span.Fill(value); // new arrays are zero; not touching them keeps untouched pages out of RSS
        return t;
    }

    /// <summary>
    /// A frozen copy stored as bf16 (each value rounded to nearest, ties to even): half the memory, read by
    /// <see cref="Ops.Linear"/> and <see cref="Ops.Embedding"/>, which widen it to float32 inside their kernels.
    /// It takes no gradient (RequiresGrad false); a bf16 tensor returns itself.
    /// </summary>
    public Tensor ToBf16()
    {
        if (IsBf16) return this;
        var t = FromArrayBf16(Span, _shape);
        t.Name = Name;
        return t;
    }

    // ---- values ------------------------------------------------------------------------------------------

    /// <summary>The values as float32 (bf16 storage widened exactly).</summary>
    public float[] ToArray()
    {
        if (!IsBf16) return Span.ToArray();
        var values = new float[Length];
        Kernels.Bf16.Widen(Bf16Span, values);
        return values;
    }

    public float Item()
    {
        if (Length != 1) throw new InvalidOperationException($"Item() needs a single element, not shape {ShapeUtil.Format(_shape)}.");
        return IsBf16 ? Kernels.Bf16.ToFloat(Bf16Span[0]) : Storage.Array[Offset];
    }

    public float Get(params int[] index)
    {
        int flat = ShapeUtil.FlatIndex(_shape, index);
        return IsBf16 ? Kernels.Bf16.ToFloat(Bf16Span[flat]) : Storage.Array[Offset + flat];
    }

    public void Set(float value, params int[] index) => Storage.Array[Offset + ShapeUtil.FlatIndex(_shape, index)] = value;

    /// <summary>Same values, cut from the graph (shares memory).</summary>
    public Tensor Detach() => new(_shape, Storage, Offset);

    /// <summary>A copy in fresh memory, cut from the graph (bf16 storage stays bf16).</summary>
    public Tensor Clone()
    {
        if (IsBf16) return CloneUnpooled();
        var t = EmptyOwned((int[])_shape.Clone());
        Span.CopyTo(t.Span);
        return t;
    }

    /// <summary>A copy on the GC heap that outlives any scope (bf16 storage stays bf16).</summary>
    public Tensor CloneUnpooled()
    {
        if (IsBf16)
        {
            var copy = EmptyBf16(_shape, zero: false);
            Bf16Span.CopyTo(copy.Bf16Destination);
            return copy;
        }
        var t = new Tensor((int[])_shape.Clone(), new Storage(new float[Length], pooled: false), 0);
        Span.CopyTo(t.Span);
        return t;
    }

    // ---- gradients ---------------------------------------------------------------------------------------

    public void ZeroGrad()
    {
        if (GradTensor != null) GradTensor.Span.Clear();
    }

    /// <summary>Drops the gradient buffer entirely.</summary>
    public void ClearGrad() => GradTensor = null;

    /// <summary>
    /// Runs reverse-mode differentiation from this scalar, adding d(this)/d(leaf) into every leaf that
    /// requires grad. The graph is released afterwards (a second call needs a new forward pass).
    /// </summary>
    public void Backward() => Autograd.Backward(this);

    /// <summary>The gradient buffer for accumulation, created zeroed on first use.</summary>
    internal Span<float> GradForAccumulate()
    {
        if (GradTensor == null)
        {
            // Leaf gradients persist across steps, so they live on the GC heap (or where PlaceGrad put them);
            // intermediates borrow from the pool.
            if (IsLeaf && _gradHome != null)
            {
                GradTensor = new Tensor(_shape, new Storage(_gradHome, pooled: false), _gradHomeOffset);
                GradTensor.Span.Clear();
            }
            else
            {
                GradTensor = IsLeaf
                    ? new Tensor(_shape, new Storage(new float[Length], pooled: false), 0)
                    : ZerosOwned(_shape);
            }
        }
        return GradTensor.Span;
    }

    /// <summary>
    /// The gradient buffer for a contribution that can write it: a non-leaf's first contribution gets a buffer that is not
    /// zeroed and <paramref name="accumulate"/> false (the caller writes every element), any later one the buffer to add
    /// into. Zeroing each intermediate gradient only for its first contribution to be added to it cost a small model's
    /// step ~5% (a serial memset while the other core waited). Leaves always accumulate (their gradients persist).
    /// </summary>
    internal Span<float> GradForWrite(out bool accumulate)
    {
        accumulate = GradTensor != null || IsLeaf;
        if (!accumulate) GradTensor = EmptyOwned(_shape);
        return GradForAccumulate();
    }

    /// <summary>
    /// Adds <paramref name="g"/> — the gradient that the backward pass gave the node being run, with this tensor's
    /// element count — into this tensor's gradient. A non-leaf without a gradient yet takes g's buffer instead of a
    /// zeroed copy to add into; the pass then leaves the buffer to this tensor (<see cref="Storage.HandedOn"/>), and any
    /// other input of the same node gets a copy (or adds into the gradient it has). Identity gradients (reshapes,
    /// residual adds) cost nothing then.
    /// </summary>
    internal void AddGradOf(Tensor g)
    {
        if (GradTensor == null && !IsLeaf && !g.Storage.HandedOn && g.Length == Length)
        {
            g.Storage.HandedOn = true;
            GradTensor = new Tensor(_shape, g.Storage, g.Offset);
            return;
        }
        var dst = GradForWrite(out bool accumulate);
        if (accumulate) Kernels.Simd.AddInto(g.Span, dst);
        else g.Span.CopyTo(dst);
    }

    private float[]? _gradHome;
    private int _gradHomeOffset;

    /// <summary>
    /// Makes this parameter's gradient live in <paramref name="buffer"/> from <paramref name="offset"/> on (Length floats),
    /// e.g. a data-parallel all-reduce bucket, so that the gradients are reduced where the backward pass writes them. A
    /// gradient it has already is copied there; a cleared one is made there (zeroed) when the next backward reaches it.
    /// </summary>
    internal void PlaceGrad(float[] buffer, int offset)
    {
        if (!IsLeaf) throw new InvalidOperationException("Only a leaf's gradient can be placed.");
        if ((uint)offset > (uint)buffer.Length || buffer.Length - offset < Length)
            throw new ArgumentException($"PlaceGrad: {Length} floats do not fit at {offset} in a buffer of {buffer.Length}.");
        var old = GradTensor;
        _gradHome = buffer;
        _gradHomeOffset = offset;
        if (old == null) return;
        GradTensor = new Tensor(_shape, new Storage(buffer, pooled: false), offset);
        old.Span.CopyTo(GradTensor.Span);
    }

    internal void SetGradStorage(Tensor g) => GradTensor = g;

    // ---- views -------------------------------------------------------------------------------------------

    /// <summary>A view with another shape over the same memory (one dimension may be -1).</summary>
    public Tensor Reshape(params int[] shape) => Ops.Reshape(this, shape);

    /// <summary>Rows [start, start+length) along the first axis, as a view.</summary>
    public Tensor SliceRows(int start, int length) => Ops.SliceRows(this, start, length);

    internal Tensor ViewAs(int[] shape, int offsetDelta = 0) => new(shape, Storage, Offset + offsetDelta);

    // ---- operators ---------------------------------------------------------------------------------------

    public static Tensor operator +(Tensor a, Tensor b) => Ops.Add(a, b);
    public static Tensor operator -(Tensor a, Tensor b) => Ops.Sub(a, b);
    public static Tensor operator *(Tensor a, Tensor b) => Ops.Mul(a, b);
    public static Tensor operator /(Tensor a, Tensor b) => Ops.Div(a, b);
    public static Tensor operator -(Tensor a) => Ops.Neg(a);
    public static Tensor operator +(Tensor a, float s) => Ops.AddScalar(a, s);
    public static Tensor operator -(Tensor a, float s) => Ops.AddScalar(a, -s);
    public static Tensor operator *(Tensor a, float s) => Ops.MulScalar(a, s);
    public static Tensor operator *(float s, Tensor a) => Ops.MulScalar(a, s);
    public static Tensor operator /(Tensor a, float s) => Ops.MulScalar(a, 1f / s);

    public override string ToString()
    {
        var sb = new StringBuilder();
        sb.Append("Tensor").Append(ShapeUtil.Format(_shape));
        if (Name != null) sb.Append(' ').Append(Name);
        if (IsBf16) sb.Append(" bf16");
        if (!Storage.IsReleased && Length <= 16)
        {
            sb.Append(" [");
            var s = ToArray();
            for (int i = 0; i < s.Length; i++) sb.Append(i > 0 ? ", " : "").Append(s[i].ToString("G6"));
            sb.Append(']');
        }
        return sb.ToString();
    }
}

internal static class ShapeUtil
{
    public static int Count(ReadOnlySpan<int> shape)
    {
        long n = 1;
        foreach (var d in shape)
        {
            if (d < 0) throw new ArgumentException($"Negative dimension in shape {Format(shape)}.");
            n *= d;
        }
        if (n > int.MaxValue) throw new ArgumentException($"Shape {Format(shape)} has more than 2^31 elements.");
        return (int)n;
    }

    public static string Format(ReadOnlySpan<int> shape) => "[" + string.Join(", ", shape.ToArray()) + "]";

    public static int FlatIndex(ReadOnlySpan<int> shape, ReadOnlySpan<int> index)
    {
        if (index.Length != shape.Length)
            throw new ArgumentException($"Index of rank {index.Length} for shape {Format(shape)}.");
        int flat = 0;
        for (int i = 0; i < shape.Length; i++)
        {
            if ((uint)index[i] >= (uint)shape[i]) throw new IndexOutOfRangeException($"Index {index[i]} out of range for axis {i} of shape {Format(shape)}.");
            flat = flat * shape[i] + index[i];
        }
        return flat;
    }

    /// <summary>Product of the dimensions before the last one (rows of the tensor viewed as a matrix).</summary>
    public static int Rows(ReadOnlySpan<int> shape) => shape.Length == 0 ? 1 : Count(shape[..^1]);

    public static bool SameShape(ReadOnlySpan<int> a, ReadOnlySpan<int> b) => a.SequenceEqual(b);

    public static int[] WithLast(ReadOnlySpan<int> shape, int last)
    {
        var s = shape.ToArray();
        if (s.Length == 0) return [last];
        s[^1] = last;
        return s;
    }
}

public static class RandomExtensions
{
    /// <summary>Standard normal sample (Box–Muller); deterministic for a seeded Random.</summary>
    public static double NextGaussian(this Random rng)
    {
        double u1 = 1.0 - rng.NextDouble();
        double u2 = rng.NextDouble();
        return Math.Sqrt(-2.0 * Math.Log(u1)) * Math.Cos(2.0 * Math.PI * u2);
    }
}
