namespace AlignSharp.Distributed;

/// <summary>
/// <see cref="ICommunicator"/> over MPI_COMM_WORLD. Large buffers go in chunks of at most 2^28 elements, since MPI
/// counts are 32-bit.
/// </summary>
public sealed unsafe class MpiCommunicator : ICommunicator, IDisposable
{
    const int MaxChunk = 1 << 28;
    const int ThreadFunneled = 1; // MPI_THREAD_FUNNELED: only the thread that initialised MPI calls it

    public int Rank { get; }
    public int Size { get; }
    bool disposed;

    MpiCommunicator(int rank, int size) { Rank = rank; Size = size; }

    /// <summary>The environment variables by which mpirun (Open MPI), srun (Slurm, PMIx) and other launchers announce the job.</summary>
    static readonly string[] LauncherSizeVariables = ["OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "PMI_SIZE", "SLURM_NTASKS"];

    /// <summary>True when this process was started by an MPI launcher as one of several ranks.</summary>
    public static bool LaunchedAsJob()
    {
        foreach (var name in LauncherSizeVariables)
            if (int.TryParse(Environment.GetEnvironmentVariable(name), out int size) && size > 1
                && (name != "SLURM_NTASKS" || Environment.GetEnvironmentVariable("PMIX_RANK") != null
                    || Environment.GetEnvironmentVariable("PMI_RANK") != null))
                return true;
        return false;
    }

    /// <summary>Initialises MPI (once per process) and returns the world communicator.</summary>
    public static MpiCommunicator Initialize()
    {
        MpiNative.Load();
        int flag, provided, rank, size;
        MpiNative.Check(MpiNative.MPI_Initialized(&flag), "MPI_Initialized");
        if (flag == 0)
            MpiNative.Check(MpiNative.MPI_Init_thread(null, null, ThreadFunneled, &provided), "MPI_Init_thread");
        MpiNative.Check(MpiNative.MPI_Comm_rank(MpiNative.CommWorld, &rank), "MPI_Comm_rank");
        MpiNative.Check(MpiNative.MPI_Comm_size(MpiNative.CommWorld, &size), "MPI_Comm_size");
        return new MpiCommunicator(rank, size);
    }

    public void AllReduceSum(Span<float> values) => AllReduce(values, MpiNative.Float, MpiNative.Sum);
    public void AllReduceSum(Span<double> values) => AllReduce(values, MpiNative.Double, MpiNative.Sum);
    public void AllReduceMax(Span<double> values) => AllReduce(values, MpiNative.Double, MpiNative.Max);

    static void AllReduce<T>(Span<T> values, nint type, nint op) where T : unmanaged
    {
        for (int start = 0; start < values.Length; start += MaxChunk)
        {
            var chunk = values.Slice(start, Math.Min(MaxChunk, values.Length - start));
            fixed (T* p = chunk)
                MpiNative.Check(MpiNative.MPI_Allreduce((void*)MpiNative.InPlace, p, chunk.Length, type, op, MpiNative.CommWorld), "MPI_Allreduce");
        }
    }

    /// <summary>MPI_Iallreduce over the pinned values, in chunks of at most 2^28 elements (one request each).</summary>
    public IReduction StartAllReduceSum(Memory<float> values) => new MpiReduction(values);

    /// <summary>Outstanding MPI_Iallreduce requests over pinned memory; the pin is released when all have completed.</summary>
    sealed class MpiReduction : IReduction
    {
        readonly nint[] _requests;
        System.Buffers.MemoryHandle _pin;
        int _done;

        public MpiReduction(Memory<float> values)
        {
            _requests = new nint[(values.Length + MaxChunk - 1) / MaxChunk];
            _pin = values.Pin();
            float* p = (float*)_pin.Pointer;
            for (int i = 0; i < _requests.Length; i++)
            {
                int start = i * MaxChunk, count = Math.Min(MaxChunk, values.Length - start);
                fixed (nint* r = &_requests[i])
                    MpiNative.Check(MpiNative.MPI_Iallreduce((void*)MpiNative.InPlace, p + start, count, MpiNative.Float, MpiNative.Sum, MpiNative.CommWorld, r), "MPI_Iallreduce");
            }
            if (_requests.Length == 0) _pin.Dispose();
        }

        public bool Test()
        {
            while (_done < _requests.Length)
            {
                int flag;
                fixed (nint* r = &_requests[_done])
                    MpiNative.Check(MpiNative.MPI_Test(r, &flag, null), "MPI_Test");
                if (flag == 0) return false;
                if (++_done == _requests.Length) _pin.Dispose();
            }
            return true;
        }

        public void Wait()
        {
            while (_done < _requests.Length)
            {
                fixed (nint* r = &_requests[_done])
                    MpiNative.Check(MpiNative.MPI_Wait(r, null), "MPI_Wait");
                if (++_done == _requests.Length) _pin.Dispose();
            }
        }
    }

    public void Broadcast(Span<byte> data, int root = 0)
    {
        for (int start = 0; start < data.Length; start += MaxChunk)
        {
            var chunk = data.Slice(start, Math.Min(MaxChunk, data.Length - start));
            fixed (byte* p = chunk)
                MpiNative.Check(MpiNative.MPI_Bcast(p, chunk.Length, MpiNative.Byte, root, MpiNative.CommWorld), "MPI_Bcast");
        }
    }

    public void AllGather(ReadOnlySpan<double> local, Span<double> all)
    {
        if (all.Length != local.Length * Size) throw new ArgumentException("AllGather: the output must hold Size × local elements.");
        fixed (double* s = local)
        fixed (double* r = all)
            MpiNative.Check(MpiNative.MPI_Allgather(s, local.Length, MpiNative.Double, r, local.Length, MpiNative.Double, MpiNative.CommWorld), "MPI_Allgather");
    }

    public void Barrier() => MpiNative.Check(MpiNative.MPI_Barrier(MpiNative.CommWorld), "MPI_Barrier");

    public void Abort(int exitCode)
    {
        Console.Out.Flush();
        Console.Error.Flush();
        MpiNative.MPI_Abort(MpiNative.CommWorld, exitCode);
        Environment.Exit(exitCode); // not reached: MPI_Abort ends the process
    }

    public void Dispose()
    {
        if (disposed) return;
        disposed = true;
        int finalized;
        MpiNative.MPI_Finalized(&finalized);
        if (finalized == 0) MpiNative.MPI_Finalize();
    }
}
