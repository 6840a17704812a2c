namespace AlignSharp.Engine;

/// <summary>
/// Size-classed pool of float arrays. Classes are powers of two split into four steps (1, 1.25, 1.5, 1.75),
/// so a rented array wastes at most a quarter of its length. A training step rents and returns the same
/// sizes every time, so after the first step it allocates nothing on the GC heap.
/// </summary>
public static class BufferPool
{
    private const int MinLength = 16;
    private static readonly Stack<float[]>[] Classes = CreateClasses();
    private static readonly object Gate = new();
    private static long _rentedFloats;

    /// <summary>Floats currently rented out (diagnostics).</summary>
    public static long RentedFloats => Interlocked.Read(ref _rentedFloats);

    /// <summary>Floats kept in the pool for reuse (diagnostics).</summary>
    public static long PooledFloats
    {
        get
        {
            long n = 0;
            lock (Gate)
                foreach (var s in Classes)
                    foreach (var a in s) n += a.Length;
            return n;
        }
    }

    private static Stack<float[]>[] CreateClasses()
    {
        var c = new Stack<float[]>[4 * 32];
        for (int i = 0; i < c.Length; i++) c[i] = new Stack<float[]>();
        return c;
    }

    internal static int ClassOf(int length, out int classLength)
    {
        length = Math.Max(length, MinLength);
        int exp = 31 - int.LeadingZeroCount(length);   // 2^exp <= length < 2^(exp+1)
        long baseLen = 1L << exp;
        for (int step = 0; step < 4; step++)
        {
            long cap = baseLen + (baseLen >> 2) * step;
            if (cap >= length)
            {
                classLength = (int)Math.Min(cap, Array.MaxLength);
                return exp * 4 + step;
            }
        }
        classLength = (int)Math.Min(baseLen << 1, Array.MaxLength);
        return (exp + 1) * 4;
    }

    /// <summary>An array of at least <paramref name="length"/> floats with unspecified contents.</summary>
    public static float[] Rent(int length)
    {
        int cls = ClassOf(length, out int classLength);
        float[]? array = null;
        lock (Gate)
        {
            var stack = Classes[cls];
            if (stack.Count > 0) array = stack.Pop();
        }
        array ??= GC.AllocateUninitializedArray<float>(classLength, pinned: false);
        Interlocked.Add(ref _rentedFloats, array.Length);
        return array;
    }

    public static void Return(float[] array)
    {
        int cls = ClassOf(array.Length, out int classLength);
        if (classLength != array.Length) return; // not one of ours
        Interlocked.Add(ref _rentedFloats, -array.Length);
        lock (Gate) Classes[cls].Push(array);
    }

    /// <summary>Drops every pooled array (e.g. after switching to a model of another size).</summary>
    public static void Trim()
    {
        lock (Gate)
            foreach (var s in Classes) s.Clear();
    }

    /// <summary>Pooled arrays set aside by <see cref="Park"/>: kept alive, lent to no one until <see cref="Unpark"/>.</summary>
    public sealed class Parked
    {
        internal readonly List<float[]> Arrays = [];

        /// <summary>Floats held (diagnostics).</summary>
        public long Floats => Arrays.Sum(a => (long)a.Length);
    }

    /// <summary>
    /// Takes every pooled array out of the pool and keeps it aside: a phase that recurs (an RL step's update) gets its own
    /// arrays back with <see cref="Unpark"/> next time, already touched, instead of fresh memory the kernel must clear
    /// page by page; the phases in between neither use them nor see them dropped by <see cref="EndPhase"/>.
    /// </summary>
    public static Parked Park()
    {
        var parked = new Parked();
        lock (Gate)
            foreach (var s in Classes)
            {
                parked.Arrays.AddRange(s);
                s.Clear();
            }
        return parked;
    }

    /// <summary>Puts the arrays of <paramref name="parked"/> back into the pool (once; the set is empty afterwards).</summary>
    public static void Unpark(Parked parked)
    {
        lock (Gate)
            foreach (var a in parked.Arrays) Classes[ClassOf(a.Length, out _)].Push(a);
        parked.Arrays.Clear();
    }

    /// <summary>
    /// Ends a phase whose shapes the next phase does not share (an RL step's generation, scoring and update): the pool
    /// would otherwise keep every phase's peak at once, since arrays of one size class never serve another. Drops the
    /// pooled arrays and collects them now, so the next phase reuses that memory instead of adding to it.
    /// </summary>
    public static void EndPhase()
    {
        Trim();
        GC.Collect();
    }
}

/// <summary>
/// The memory behind one or more tensors (a tensor and its views share one). Pooled storage goes back
/// to <see cref="BufferPool"/> when the <see cref="TensorScope"/> that created it ends; using a tensor after
/// that throws instead of reading recycled memory.
/// </summary>
public sealed class Storage
{
    private float[]? _array;
    private ushort[]? _bf16;
    internal readonly bool Pooled;

    /// <summary>Set while a node's backward has handed this gradient buffer on to an input (<see cref="Tensor.AddGradOf"/>):
    /// the input owns it now, so the backward pass must not release it with the node.</summary>
    internal bool HandedOn;

    internal Storage(float[] array, bool pooled)
    {
        _array = array;
        Pooled = pooled;
    }

    /// <summary>bf16 storage (frozen weights): never pooled, read only through the kernels that widen it.</summary>
    internal Storage(ushort[] bf16)
    {
        _bf16 = bf16;
    }

    internal bool IsBf16 => _bf16 != null;

    public float[] Array => _array ?? throw (_bf16 != null
        ? new InvalidOperationException(
            "This tensor stores bf16 (a frozen weight); only Linear, Embedding and ToArray() read it. " +
            "Keep the weight float32 to train it or to use it in other ops.")
        : new ObjectDisposedException(
            "tensor", "This tensor's memory was returned to the pool when its TensorScope ended. " +
                      "Keep it with TensorScope.Keep(tensor) or copy the values out before the scope ends."));

    internal ushort[] Bf16Array => _bf16 ?? throw new InvalidOperationException("This tensor stores float32, not bf16.");

    public bool IsReleased => _array == null && _bf16 == null;

    internal void Release()
    {
        var a = _array;
        if (a == null) return;
        _array = null;
        if (Pooled) BufferPool.Return(a);
    }
}

/// <summary>
/// Tensors created while a scope is active borrow pooled memory that is handed back when the scope is
/// disposed: wrap one training or inference step in a scope and steady-state steps allocate no arrays.
/// Scopes nest; tensors created outside any scope (parameters, user data) are ordinary GC memory.
/// </summary>
public sealed class TensorScope : IDisposable
{
    [ThreadStatic] private static TensorScope? _current;
    private readonly TensorScope? _parent;
    private readonly List<Storage> _owned = new(256);
    private bool _disposed;

    private TensorScope()
    {
        _parent = _current;
        _current = this;
    }

    public static TensorScope Begin() => new();

    internal static TensorScope? Current => _current;

    internal void Track(Storage s) => _owned.Add(s);

    /// <summary>Moves a tensor's memory out of the current scope into the parent scope (or the GC heap).</summary>
    public static Tensor Keep(Tensor t)
    {
        var scope = _current;
        if (scope == null) return t;
        if (scope._owned.Remove(t.Storage))
        {
            // With no parent the memory simply becomes garbage-collected memory.
            scope._parent?._owned.Add(t.Storage);
        }
        return t;
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        if (_current != this) throw new InvalidOperationException("TensorScopes must be disposed in reverse order of creation.");
        _current = _parent;
        foreach (var s in _owned) s.Release();
        _owned.Clear();
    }
}
