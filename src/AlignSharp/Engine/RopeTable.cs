using AlignSharp.Engine.Kernels;

namespace AlignSharp.Engine;

/// <summary>
/// The cos/sin tables of rotary embedding for one list of positions: [rows, D/2] each, rows = the number of positions,
/// cos(pos·invFreq[i])·scale and sin(pos·invFreq[i])·scale. The angle is the float32 product pos·invFreq[i], exactly as
/// Hugging Face forms it (its rounding dominates at long positions: ulp(1000) ≈ 6e-5), and cos/sin of that angle are
/// evaluated in double and rounded once, so values match HF's float32 tables to ~1e-7. Immutable once built, so every
/// layer of a model (and a backward pass recorded long before) can share one.
/// </summary>
public sealed class RopeTable
{
    private readonly int[] _positions;
    internal readonly float[] Cos, Sin;

    /// <summary>D/2 frequency pairs per row.</summary>
    public int Pairs { get; }

    /// <summary>One row per position.</summary>
    public int Rows => _positions.Length;

    internal ReadOnlySpan<int> Positions => _positions;

    private RopeTable(int[] positions, int pairs, float[] cos, float[] sin)
    {
        _positions = positions;
        Pairs = pairs;
        Cos = cos;
        Sin = sin;
    }

    /// <summary>Tables for <paramref name="positions"/> and the inverse frequencies <paramref name="invFreq"/> [D/2]
    /// (see <see cref="Ops.RopeInverseFrequencies"/>); <paramref name="scale"/> multiplies both (LongRoPE's attention factor).</summary>
    public static RopeTable Build(ReadOnlySpan<int> positions, ReadOnlySpan<float> invFreq, float scale = 1f)
    {
        int half = invFreq.Length, rows = positions.Length;
        var cos = new float[rows * half];
        var sin = new float[rows * half];
        RopeKernels.Tables(positions, invFreq, scale, cos, sin);
        return new RopeTable(positions.ToArray(), half, cos, sin);
    }
}

/// <summary>
/// The tables a model needs, built once per distinct list of positions and shared by every layer and call: a training
/// step whose positions repeat builds none, a decoding step one (its single new position), not one per layer. Keeps the
/// few most recent lists. Thread-safe.
/// </summary>
public sealed class RopeTableCache(float[] invFreq, float scale = 1f)
{
    private readonly RopeTable?[] _recent = new RopeTable?[4];
    private int _next;

    /// <summary>Inverse frequencies the tables are built from, D/2 of them.</summary>
    public ReadOnlySpan<float> InverseFrequencies => invFreq;

    /// <summary>The table for <paramref name="positions"/> (a cached one when an equal list was asked for recently).</summary>
    public RopeTable For(ReadOnlySpan<int> positions)
    {
        lock (_recent)
        {
            foreach (var table in _recent)
                if (table != null && table.Positions.SequenceEqual(positions)) return table;
            var built = RopeTable.Build(positions, invFreq, scale);
            _recent[_next] = built;
            _next = (_next + 1) % _recent.Length;
            return built;
        }
    }
}
