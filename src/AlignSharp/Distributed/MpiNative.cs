using System.Runtime.InteropServices;

namespace AlignSharp.Distributed;

/// <summary>
/// The few MPI calls data-parallel training needs, bound to Open MPI's <c>libmpi.so</c> by P/Invoke.
/// Open MPI's handles (<c>MPI_COMM_WORLD</c>, <c>MPI_FLOAT</c>, <c>MPI_SUM</c>, …) are the addresses of exported
/// globals (<c>ompi_mpi_comm_world</c>, …), so they are looked up once with <see cref="NativeLibrary.GetExport"/>.
/// Every call's return code is checked; Open MPI's default error handler aborts the job on a failed call anyway.
/// </summary>
internal static unsafe class MpiNative
{
    const string Lib = "mpi";

    static nint library;
    public static nint CommWorld { get; private set; }
    public static nint Float { get; private set; }
    public static nint Double { get; private set; }
    public static nint Byte { get; private set; }
    public static nint Int { get; private set; }
    public static nint Sum { get; private set; }
    public static nint Max { get; private set; }
    public static readonly nint InPlace = 1; // MPI_IN_PLACE is ((void*)1) in Open MPI's mpi.h

    static MpiNative()
    {
        NativeLibrary.SetDllImportResolver(typeof(MpiNative).Assembly, (name, assembly, path) =>
            name == Lib ? Load() : 0);
    }

    /// <summary>Loads libmpi and resolves the handles; throws <see cref="DllNotFoundException"/> with a hint when absent.</summary>
    public static nint Load()
    {
        if (library != 0) return library;
        foreach (var candidate in new[] { "libmpi.so.40", "libmpi.so", "libmpi.so.12" })
            if (NativeLibrary.TryLoad(candidate, out library)) break;
        if (library == 0)
            throw new DllNotFoundException("Open MPI's libmpi.so was not found; install it (Debian: apt-get install openmpi-bin libopenmpi-dev).");
        CommWorld = Export("ompi_mpi_comm_world");
        Float = Export("ompi_mpi_float");
        Double = Export("ompi_mpi_double");
        Byte = Export("ompi_mpi_byte");
        Int = Export("ompi_mpi_int");
        Sum = Export("ompi_mpi_op_sum");
        Max = Export("ompi_mpi_op_max");
        return library;
    }

    static nint Export(string name) =>
        NativeLibrary.TryGetExport(library, name, out var address)
            ? address
            : throw new EntryPointNotFoundException($"libmpi does not export '{name}': only Open MPI is supported.");

    public static void Check(int code, string call)
    {
        if (code != 0) throw new InvalidOperationException($"{call} failed with MPI error code {code}.");
    }

    [DllImport(Lib)] public static extern int MPI_Init_thread(int* argc, byte*** argv, int required, int* provided);
    [DllImport(Lib)] public static extern int MPI_Initialized(int* flag);
    [DllImport(Lib)] public static extern int MPI_Finalized(int* flag);
    [DllImport(Lib)] public static extern int MPI_Finalize();
    [DllImport(Lib)] public static extern int MPI_Comm_rank(nint comm, int* rank);
    [DllImport(Lib)] public static extern int MPI_Comm_size(nint comm, int* size);
    [DllImport(Lib)] public static extern int MPI_Allreduce(void* send, void* recv, int count, nint datatype, nint op, nint comm);
    [DllImport(Lib)] public static extern int MPI_Iallreduce(void* send, void* recv, int count, nint datatype, nint op, nint comm, nint* request);
    /// <summary>status may be null: MPI_STATUS_IGNORE is ((MPI_Status*)0) in Open MPI's mpi.h.</summary>
    [DllImport(Lib)] public static extern int MPI_Test(nint* request, int* flag, void* status);
    [DllImport(Lib)] public static extern int MPI_Wait(nint* request, void* status);
    [DllImport(Lib)] public static extern int MPI_Bcast(void* buffer, int count, nint datatype, int root, nint comm);
    [DllImport(Lib)] public static extern int MPI_Allgather(void* send, int sendCount, nint sendType, void* recv, int recvCount, nint recvType, nint comm);
    [DllImport(Lib)] public static extern int MPI_Barrier(nint comm);
    [DllImport(Lib)] public static extern int MPI_Abort(nint comm, int errorCode);
}
