namespace AlignSharp.Distributed;

/// <summary>
/// The process group this process belongs to: <see cref="SingleProcess"/> unless the CLI was started by an MPI launcher
/// (mpirun, srun), when it is MPI_COMM_WORLD. Process-wide like MPI_COMM_WORLD itself; set once at start-up.
/// </summary>
public static class World
{
    public static ICommunicator Current { get; set; } = SingleProcess.Instance;

    /// <summary>Rank 0, or the only process: the one that writes files and prints.</summary>
    public static bool IsRoot => Current.Rank == 0;
}
