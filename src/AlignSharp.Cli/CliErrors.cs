namespace AlignSharp.Cli;

/// <summary>
/// A user-facing failure: the message is printed as is (no stack trace) and the process exits non-zero.
/// Library code throws <see cref="AlignSharp.UserInputException"/> for bad input, which is treated the same, and so
/// are file-system errors (their messages name the path).
/// </summary>
public sealed class CliException(string message, int exitCode = 1) : Exception(message)
{
    public int ExitCode { get; } = exitCode;
}

public static class CliErrors
{
    public static int Guard(Func<int> run)
    {
        try
        {
            return run();
        }
        catch (CliException e)
        {
            Console.Error.WriteLine($"error: {e.Message}");
            return e.ExitCode;
        }
        catch (AlignSharp.Training.Runs.RunInterruptedException e)
        {
            Console.Error.WriteLine(e.Message);
            return e.ExitCode;
        }
        catch (UserInputException e)
        {
            Console.Error.WriteLine($"error: {e.Message}");
            return 2;
        }
        catch (Exception e) when (OutOfMemory(e))
        {
            // A model (or batch) too large for this machine: a clear message and the ways to need less, not a stack.
            Console.Error.WriteLine("error: out of memory. To train a large model on this machine, train a LoRA adapter (--lora-r) on frozen " +
                "bf16 weights (--frozen-dtype bf16) with --gradient-checkpointing, or use a smaller --batch-size or --max-length " +
                "(docs/training-runs.md, \"Memory\").");
            return 1;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // A path that cannot be written or read (permissions, a file where a directory belongs, a full disk):
            // the runtime's message names the path, which is what the user needs; the stack is not.
            Console.Error.WriteLine($"error: {e.Message}");
            return 1;
        }
    }

    /// <summary>Whether <paramref name="e"/> is running out of memory, itself or inside a parallel kernel's failure.</summary>
    private static bool OutOfMemory(Exception e) => e is OutOfMemoryException || e.InnerException is { } inner && OutOfMemory(inner)
        || e is AggregateException a && a.InnerExceptions.Any(OutOfMemory);
}
