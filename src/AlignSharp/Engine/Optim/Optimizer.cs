using System.Numerics.Tensors;
using System.Runtime.InteropServices;
using System.Text;

namespace AlignSharp.Engine.Optim;

/// <summary>
/// What <see cref="AdamW"/> and <see cref="Sgd"/> share: the flattened parameter list with each parameter's resolved
/// group settings, the per-parameter state buffers, and the state file format.
/// </summary>
public abstract class Optimizer : IOptimizer
{
    private const string Magic = "ALIGNSHARP-OPTIM";
    private const int FormatVersion = 1;
    private const int Trailer = 0x4D54504F; // "OPTM", marks a complete record

    private protected readonly Tensor[] Params;
    /// <summary>Per parameter: its group's weight decay and learning-rate scale, resolved against the options.</summary>
    private protected readonly float[] WeightDecayOf, LrScaleOf;
    /// <summary>Per parameter: how many updates it has received (it is skipped while its gradient is null).</summary>
    private protected readonly int[] ParamSteps;
    /// <summary>Per parameter: its state buffers, each the parameter's length, zero-initialised.</summary>
    private protected readonly float[][][] State;
    private float _lr;

    private protected Optimizer(IEnumerable<ParamGroup> groups, float lr, float defaultWeightDecay, int buffersPerParam)
    {
        ArgumentNullException.ThrowIfNull(groups);
        Lr = lr;
        var ps = new List<Tensor>();
        var wd = new List<float>();
        var scale = new List<float>();
        var seen = new HashSet<Tensor>(ReferenceEqualityComparer.Instance);
        int groupIndex = 0;
        foreach (var group in groups)
        {
            ArgumentNullException.ThrowIfNull(group, nameof(groups));
            foreach (var p in group.Parameters)
            {
                string where = $"parameter {ps.Count} (group {groupIndex}{(p?.Name is { } n ? $", '{n}'" : "")})";
                if (p == null) throw new ArgumentException($"{where} is null.", nameof(groups));
                if (!p.IsLeaf)
                    throw new ArgumentException($"{where} is not a leaf tensor: optimise the tensors made by Tensor.Parameter, not results of ops.", nameof(groups));
                if (!seen.Add(p))
                    throw new ArgumentException($"{where} appears twice: list each tensor once (tied weights included).", nameof(groups));
                ps.Add(p);
                wd.Add(group.WeightDecay ?? defaultWeightDecay);
                scale.Add(group.LrScale ?? 1f);
            }
            groupIndex++;
        }
        Params = [.. ps];
        WeightDecayOf = [.. wd];
        LrScaleOf = [.. scale];
        ParamSteps = new int[Params.Length];
        State = new float[Params.Length][][];
        for (int i = 0; i < Params.Length; i++)
        {
            State[i] = new float[buffersPerParam][];
            for (int b = 0; b < buffersPerParam; b++) State[i][b] = new float[Params[i].Length];
        }
    }

    /// <inheritdoc/>
    public float Lr
    {
        get => _lr;
        set => _lr = OptionChecks.NonNegative(value, nameof(Lr));
    }

    /// <inheritdoc/>
    public int StepCount { get; private protected set; }

    /// <inheritdoc/>
    public IReadOnlyList<Tensor> Parameters => Params;

    /// <summary>Written into state files so a file from another optimizer kind is refused.</summary>
    private protected abstract string Kind { get; }

    /// <inheritdoc/>
    public abstract void Step();

    private readonly int[] _nonFiniteFlag = new int[1];

    /// <inheritdoc/>
    public bool TryStep()
    {
        if (!UpdateStaysFinite(_nonFiniteFlag)) return false;
        Step();
        return true;
    }

    /// <summary>Whether <see cref="Step"/> would leave every parameter and state buffer finite (computed on copies).</summary>
    private protected abstract bool UpdateStaysFinite(int[] flag);

    /// <inheritdoc/>
    public void ZeroGrad()
    {
        foreach (var p in Params) p.ZeroGrad();
    }

    /// <summary>The gradient to use for parameter <paramref name="i"/>, or null to skip it.</summary>
    private protected Tensor? GradOf(int i)
    {
        var g = Params[i].Grad;
        if (g != null && g.Length != Params[i].Length)
            throw new InvalidOperationException($"Gradient of parameter {i} has shape {ShapeUtil.Format(g.Shape)}, the parameter {ShapeUtil.Format(Params[i].Shape)}.");
        return g;
    }

    // ---- state file ------------------------------------------------------------------------------------------
    // Little-endian. Header: magic string, int32 version, string kind, int32 step count, float32 lr, int32 parameter
    // count. Per parameter in order: int32 rank, int32 dims[rank], int32 updates received, int32 buffer count,
    // then each buffer's float32 values. Trailer: int32 0x4D54504F.

    /// <inheritdoc/>
    public void SaveState(Stream stream)
    {
        ArgumentNullException.ThrowIfNull(stream);
        using var w = new BinaryWriter(stream, Encoding.UTF8, leaveOpen: true);
        w.Write(Magic);
        w.Write(FormatVersion);
        w.Write(Kind);
        w.Write(StepCount);
        w.Write(_lr);
        w.Write(Params.Length);
        for (int i = 0; i < Params.Length; i++)
        {
            var shape = Params[i].Shape;
            w.Write(shape.Length);
            foreach (var d in shape) w.Write(d);
            w.Write(ParamSteps[i]);
            w.Write(State[i].Length);
            foreach (var buffer in State[i]) WriteFloats(w, buffer);
        }
        w.Write(Trailer);
    }

    /// <inheritdoc/>
    public void LoadState(Stream stream)
    {
        ArgumentNullException.ThrowIfNull(stream);
        using var r = new BinaryReader(stream, Encoding.UTF8, leaveOpen: true);
        try
        {
            // Read and check everything before touching this optimizer, so a bad file changes nothing.
            string magic = ReadBoundedString(r, 64);
            if (magic != Magic) throw new InvalidDataException("Not an AlignSharp optimizer state (bad header).");
            int version = r.ReadInt32();
            if (version != FormatVersion)
                throw new InvalidDataException($"Optimizer state format version {version} is not supported (this build reads version {FormatVersion}).");
            string kind = ReadBoundedString(r, 64);
            if (kind != Kind) throw new InvalidDataException($"The state was saved by {kind}; it cannot be loaded into {Kind}.");
            int stepCount = r.ReadInt32();
            float lr = r.ReadSingle();
            if (stepCount < 0 || !float.IsFinite(lr) || lr < 0) throw new InvalidDataException("Corrupt optimizer state (step count or learning rate).");
            int count = r.ReadInt32();
            if (count != Params.Length)
                throw new InvalidDataException($"The state holds {count} parameters; this optimizer has {Params.Length}. Build it over the same parameters in the same order.");
            var steps = new int[count];
            var buffers = new float[count][][];
            for (int i = 0; i < count; i++)
            {
                int rank = r.ReadInt32();
                if (rank < 0 || rank > 32) throw new InvalidDataException($"Corrupt optimizer state (rank {rank} for parameter {i}).");
                var shape = new int[rank];
                for (int d = 0; d < rank; d++) shape[d] = r.ReadInt32();
                if (!ShapeUtil.SameShape(shape, Params[i].Shape))
                    throw new InvalidDataException($"Parameter {i}{(Params[i].Name is { } n ? $" ('{n}')" : "")} has shape {ShapeUtil.Format(Params[i].Shape)} but the state was saved for shape {ShapeUtil.Format(shape)}. Build the optimizer over the same parameters in the same order.");
                steps[i] = r.ReadInt32();
                int nBuffers = r.ReadInt32();
                if (nBuffers != State[i].Length)
                    throw new InvalidDataException($"Parameter {i} has {nBuffers} state buffers in the file but {State[i].Length} here (e.g. momentum on in one run and off in the other).");
                if (steps[i] < 0) throw new InvalidDataException($"Corrupt optimizer state (step count of parameter {i}).");
                buffers[i] = new float[nBuffers][];
                for (int b = 0; b < nBuffers; b++)
                {
                    buffers[i][b] = new float[Params[i].Length];
                    ReadFloats(r, buffers[i][b]);
                    // Never saved so (a non-finite update is never applied): a damaged file, which would train on silently.
                    if (!TensorPrimitives.IsFiniteAll(buffers[i][b]))
                        throw new InvalidDataException($"Corrupt optimizer state: state buffer {b} of parameter {i}{(Params[i].Name is { } pn ? $" ('{pn}')" : "")} holds a non-finite value.");
                }
            }
            if (r.ReadInt32() != Trailer) throw new InvalidDataException("Corrupt optimizer state (missing trailer).");

            StepCount = stepCount;
            _lr = lr;
            for (int i = 0; i < count; i++)
            {
                ParamSteps[i] = steps[i];
                for (int b = 0; b < buffers[i].Length; b++) buffers[i][b].CopyTo(State[i][b], 0);
            }
        }
        catch (EndOfStreamException e)
        {
            throw new InvalidDataException("The optimizer state ends early (truncated file?).", e);
        }
    }

    private static string ReadBoundedString(BinaryReader r, int maxBytes)
    {
        // BinaryReader's string prefix is a 7-bit varint; peek it so a foreign file cannot ask for a huge allocation.
        int length = r.Read7BitEncodedInt();
        if (length < 0 || length > maxBytes) throw new InvalidDataException("Not an AlignSharp optimizer state (bad header).");
        var bytes = r.ReadBytes(length);
        if (bytes.Length != length) throw new EndOfStreamException();
        return Encoding.UTF8.GetString(bytes);
    }

    private static void WriteFloats(BinaryWriter w, float[] values)
    {
        if (BitConverter.IsLittleEndian) w.Write(MemoryMarshal.AsBytes(values.AsSpan()));
        else foreach (var v in values) w.Write(v);
    }

    private static void ReadFloats(BinaryReader r, float[] values)
    {
        if (BitConverter.IsLittleEndian)
        {
            var bytes = MemoryMarshal.AsBytes(values.AsSpan());
            while (bytes.Length > 0)
            {
                int read = r.Read(bytes);
                if (read == 0) throw new EndOfStreamException();
                bytes = bytes[read..];
            }
        }
        else
        {
            for (int i = 0; i < values.Length; i++) values[i] = r.ReadSingle();
        }
    }
}
