namespace AlignSharp.Training.Data;

/// <summary>
/// A record that cannot be used, with where it is: <c>data.jsonl:17: field "ranking": index 4 is out of range for
/// 3 completions</c>. Thrown by default; with SkipBadRecords the record is skipped and counted instead.
/// </summary>
public sealed class BadRecordException : UserInputException
{
    public BadRecordException(RecordSource source, string? field, string problem)
        : base(field is null ? $"{source}: {problem}" : $"{source}: field \"{field}\": {problem}")
    {
        Record = source;
        Field = field;
        Problem = problem;
    }

    /// <summary>The file and line of the bad record.</summary>
    public RecordSource Record { get; }

    /// <summary>The field at fault (a path such as <c>messages[2].role</c>), or null when the whole record or line is.</summary>
    public string? Field { get; }

    /// <summary>The problem alone, without file, line and field.</summary>
    public string Problem { get; }
}

/// <summary>
/// Records that survived checking, plus how many were skipped as bad (only with SkipBadRecords; otherwise the
/// first bad record throws) and the messages of the first few, for a warning.
/// </summary>
public sealed class RecordSet<T>
{
    public RecordSet(IReadOnlyList<T> records, int skipped, IReadOnlyList<string> skipExamples)
    {
        Records = records;
        Skipped = skipped;
        SkipExamples = skipExamples;
    }

    public IReadOnlyList<T> Records { get; }

    /// <summary>How many records were skipped as bad.</summary>
    public int Skipped { get; }

    /// <summary>The messages of the first skipped records (at most MaxReportedSkips).</summary>
    public IReadOnlyList<string> SkipExamples { get; }

    /// <summary>A one-paragraph warning for the user, or null when nothing was skipped.</summary>
    public string? Warning => Skipped == 0
        ? null
        : $"skipped {Skipped} bad record{(Skipped == 1 ? "" : "s")}"
          + (SkipExamples.Count == 0 ? "." : ", e.g.:\n  " + string.Join("\n  ", SkipExamples));
}

/// <summary>Throws a bad record, or counts it when skipping.</summary>
internal sealed class BadRecordLog(bool skip, int maxExamples)
{
    private readonly List<string> _examples = [];

    public int Count { get; private set; }
    public IReadOnlyList<string> Examples => _examples;

    public void Report(BadRecordException e)
    {
        if (!skip) throw e;
        Count++;
        if (_examples.Count < maxExamples) _examples.Add(e.Message);
    }

    public RecordSet<T> Result<T>(IReadOnlyList<T> records) => new(records, Count, _examples.ToArray());
}
