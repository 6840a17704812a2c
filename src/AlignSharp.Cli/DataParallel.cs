using AlignSharp.Distributed;
using AlignSharp.Training.Runs;

namespace AlignSharp.Cli;

/// <summary>
/// The CLI as one rank of an MPI job (started by mpirun or srun): MPI is initialised, rank 0 alone prints, and a rank
/// that fails ends the whole job within seconds rather than leaving the others waiting in a collective.
/// </summary>
public static class DataParallel
{
    /// <summary>How long a failed rank other than 0 waits before ending the job, so that an error every rank hits
    /// (bad input) is reported once, by rank 0, whose abort then ends this rank first.</summary>
    static readonly TimeSpan FollowerGrace = TimeSpan.FromSeconds(3);

    public static int Run(Func<int> command)
    {
        var world = MpiCommunicator.Initialize();
        World.Current = world;
        var stderr = Console.Error;
        // Held here: Console.SetError wraps the writer it is given, so Console.Error is never this object.
        var capture = world.Rank != 0 ? new FailureCapture() : null;
        if (capture != null)
        {
            Console.SetOut(TextWriter.Null);
            Console.SetError(capture);
        }
        int code;
        try { code = command(); }
        catch (Exception e)
        {
            // An unexpected failure: still end every rank, with the trace on this rank's stderr.
            stderr.WriteLine($"error (rank {world.Rank}): {e}");
            code = 70;
        }
        // Stopped by a signal, every rank after the same step (the request is all-reduced) and rank 0 with its
        // checkpoint written: an orderly end, which mpirun reports with the code, rather than an abort.
        if (code == 0 || RunSession.IsStopExitCode(code))
        {
            world.Dispose();
            return code;
        }
        if (world.Rank != 0)
        {
            Thread.Sleep(FollowerGrace);
            if (capture is { Text.Length: > 0 }) stderr.Write($"[rank {world.Rank}] {capture.Text}");
        }
        world.Abort(code);
        return code;
    }

    /// <summary>Keeps what a follower rank would print, to show it only if rank 0 did not end the job first.</summary>
    sealed class FailureCapture : StringWriter
    {
        public string Text => ToString();
    }
}
