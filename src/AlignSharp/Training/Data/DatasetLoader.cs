namespace AlignSharp.Training.Data;

/// <summary>How data files are read.</summary>
public sealed record DataLoadOptions
{
    /// <summary>
    /// The kind every record must be; null (default) takes the kind of the file's first readable record, and a
    /// later record of another kind is a bad record. With <see cref="DatasetKind.Prompt"/>, the prompt of any
    /// record that has one is taken (so SFT and preference files also serve as RL prompts).
    /// </summary>
    public DatasetKind? ExpectedKind { get; init; }

    /// <summary>Skip and count bad records instead of stopping at the first one (default false; <c>--skip-bad-records</c>).</summary>
    public bool SkipBadRecords { get; init; }

    /// <summary>How many skipped records' messages to keep for the warning (default 5).</summary>
    public int MaxReportedSkips { get; init; } = 5;

    public void Validate()
    {
        if (MaxReportedSkips < 0) throw new UserInputException($"the number of reported skipped records must be ≥ 0, got {MaxReportedSkips}.");
    }
}

/// <summary>The records of one or more files, of the kind they hold; exactly one of the three lists is set.</summary>
public sealed class LoadedDataset
{
    internal LoadedDataset(DatasetKind kind, RecordSet<SftExample>? sft, RecordSet<PreferencePair>? preferences, RecordSet<PromptExample>? prompts)
    {
        Kind = kind;
        Sft = sft;
        Preferences = preferences;
        Prompts = prompts;
    }

    public DatasetKind Kind { get; }
    public RecordSet<SftExample>? Sft { get; }
    public RecordSet<PreferencePair>? Preferences { get; }
    public RecordSet<PromptExample>? Prompts { get; }

    public int Count => Sft?.Records.Count ?? Preferences?.Records.Count ?? Prompts!.Records.Count;
    public int Skipped => Sft?.Skipped ?? Preferences?.Skipped ?? Prompts!.Skipped;
    public string? Warning => Sft?.Warning ?? Preferences?.Warning ?? Prompts?.Warning;
}

/// <summary>
/// Reads data files (JSONL, streamed, or a JSON array; see the issue's formats) into typed records. Every record
/// is checked; a bad one throws a <see cref="BadRecordException"/> (<c>file:line: field "x": problem</c>) unless
/// <see cref="DataLoadOptions.SkipBadRecords"/> is set, in which case it is skipped and counted. A file with no
/// usable record is an error either way.
/// </summary>
public static class DatasetLoader
{
    /// <summary>The kind of the file's first readable record (reads only up to it).</summary>
    public static DatasetKind DetectKind(string path)
    {
        foreach (var raw in JsonRecordReader.Read(path))
        {
            if (raw.Error is not null) continue;
            try { return RecordParser.KindOf(RecordParser.DetectFormat(raw.Element, raw.Source)); }
            catch (BadRecordException) { }
        }
        throw new UserInputException($"{path}: no readable records; a data file holds JSON objects, one per line (JSONL) or in a JSON array.");
    }

    /// <summary>Reads one file of any kind (or the expected kind).</summary>
    public static LoadedDataset Load(string path, DataLoadOptions? options = null) => Load([path], options);

    /// <summary>
    /// Reads files that must all hold the same kind (preference weights are computed over all of them together).
    /// </summary>
    public static LoadedDataset Load(IReadOnlyList<string> paths, DataLoadOptions? options = null)
    {
        options ??= new DataLoadOptions();
        options.Validate();
        if (paths.Count == 0) throw new UserInputException("no data files given.");
        var kind = options.ExpectedKind ?? DetectKind(paths[0]);
        var o = options with { ExpectedKind = kind };
        return kind switch
        {
            DatasetKind.Sft => new LoadedDataset(kind, LoadSft(paths, o), null, null),
            DatasetKind.Preference => new LoadedDataset(kind, null, LoadPreferences(paths, o), null),
            DatasetKind.Unpaired => throw new UserInputException($"{paths[0]}: holds unpaired feedback records ({RecordParser.UnpairedShapes}); train on them with `alignsharp kto`."),
            _ => new LoadedDataset(kind, null, null, LoadPrompts(paths, o)),
        };
    }

    public static RecordSet<SftExample> LoadSft(string path, DataLoadOptions? options = null) => LoadSft([path], options);

    /// <summary>SFT records: {"prompt","completion"}, {"text"}, {"messages"} (mixed freely).</summary>
    public static RecordSet<SftExample> LoadSft(IReadOnlyList<string> paths, DataLoadOptions? options = null)
    {
        options ??= new DataLoadOptions();
        options.Validate();
        var log = new BadRecordLog(options.SkipBadRecords, options.MaxReportedSkips);
        var records = new List<SftExample>();
        foreach (var path in paths)
        {
            int before = records.Count, skippedBefore = log.Count;
            foreach (var (raw, format) in Records(path, DatasetKind.Sft, log))
                Try(log, () => records.Add(RecordParser.ParseSft(raw.Element, format, raw.Source)));
            RequireSome(path, records.Count - before, log.Count - skippedBefore, log);
        }
        return log.Result<SftExample>(records);
    }

    public static RecordSet<PreferencePair> LoadPreferences(string path, DataLoadOptions? options = null) => LoadPreferences([path], options);

    /// <summary>
    /// Preference pairs from pair, HH-transcript and ranking records (mixed freely), with the weights of
    /// <see cref="RankingRecord"/>: w = N / (G · P_g) over all files together, so the mean weight is 1.
    /// A ranking whose completions are all tied gives no pairs and is left out (it is not an error).
    /// </summary>
    public static RecordSet<PreferencePair> LoadPreferences(IReadOnlyList<string> paths, DataLoadOptions? options = null)
    {
        options ??= new DataLoadOptions();
        options.Validate();
        var log = new BadRecordLog(options.SkipBadRecords, options.MaxReportedSkips);
        // Each group: a plain pair, or the pairs of one ranking (weights are filled in once all are read).
        var groups = new List<List<PreferencePair>>();
        int parsed = 0;
        foreach (var path in paths)
        {
            int before = parsed, skippedBefore = log.Count;
            foreach (var (raw, format) in Records(path, DatasetKind.Preference, log))
            {
                Try(log, () =>
                {
                    if (format == RecordFormat.Ranking)
                    {
                        var pairs = RecordParser.ParseRanking(raw.Element, raw.Source).ToPairs(1f).ToList();
                        if (pairs.Count > 0) groups.Add(pairs);
                    }
                    else
                    {
                        groups.Add([RecordParser.ParsePair(raw.Element, format, raw.Source)]);
                    }
                    parsed++;
                });
            }
            RequireSome(path, parsed - before, log.Count - skippedBefore, log);
        }
        if (groups.Count == 0)
            throw new UserInputException($"{string.Join(", ", paths)}: no preference pairs; every ranking ties all its completions.");
        long total = groups.Sum(g => (long)g.Count);
        var result = new List<PreferencePair>((int)total);
        foreach (var g in groups)
        {
            float w = PreferenceWeights.Weight(g.Count, total, groups.Count);
            foreach (var p in g) result.Add(p with { Weight = w });
        }
        return log.Result<PreferencePair>(result);
    }

    /// <summary>The raw rankings of a file (for inspection; training uses <see cref="LoadPreferences(string, DataLoadOptions?)"/>).</summary>
    public static RecordSet<RankingRecord> LoadRankings(string path, DataLoadOptions? options = null)
    {
        options ??= new DataLoadOptions();
        options.Validate();
        var log = new BadRecordLog(options.SkipBadRecords, options.MaxReportedSkips);
        var records = new List<RankingRecord>();
        foreach (var (raw, format) in Records(path, DatasetKind.Preference, log))
        {
            Try(log, () =>
            {
                if (format != RecordFormat.Ranking)
                    throw new BadRecordException(raw.Source, null, "expected a ranking record {\"prompt\",\"completions\",\"ranking\"}.");
                records.Add(RecordParser.ParseRanking(raw.Element, raw.Source));
            });
        }
        RequireSome(path, records.Count, log.Count, log);
        return log.Result<RankingRecord>(records);
    }

    /// <summary>
    /// Every preference record as a ranking, for objectives that use a ranking whole (Plackett–Luce DPO): a ranking
    /// record as it is, a pair record (plain or HH) as the two-completion ranking [chosen, rejected] whose
    /// <see cref="RankingRecord.CompletionFields"/> are "chosen" and "rejected". Margins are not kept.
    /// </summary>
    public static RecordSet<RankingRecord> LoadRankingGroups(IReadOnlyList<string> paths, DataLoadOptions? options = null)
    {
        options ??= new DataLoadOptions();
        options.Validate();
        if (paths.Count == 0) throw new UserInputException("no data files given.");
        var log = new BadRecordLog(options.SkipBadRecords, options.MaxReportedSkips);
        var records = new List<RankingRecord>();
        foreach (var path in paths)
        {
            int before = records.Count, skippedBefore = log.Count;
            foreach (var (raw, format) in Records(path, DatasetKind.Preference, log))
            {
                Try(log, () =>
                {
                    if (format == RecordFormat.Ranking)
                    {
                        records.Add(RecordParser.ParseRanking(raw.Element, raw.Source));
                        return;
                    }
                    var pair = RecordParser.ParsePair(raw.Element, format, raw.Source);
                    records.Add(new RankingRecord(pair.Prompt, [pair.Chosen, pair.Rejected], [[0], [1]], pair.Source)
                    {
                        CompletionFields = [pair.ChosenField, pair.RejectedField],
                        PromptField = pair.PromptField,
                    });
                });
            }
            RequireSome(path, records.Count - before, log.Count - skippedBefore, log);
        }
        return log.Result<RankingRecord>(records);
    }

    /// <summary>Unpaired feedback for KTO: {"prompt","completion","label"} or {"messages","label"} (mixed freely), or
    /// preference pairs, unpaired.</summary>
    public static RecordSet<UnpairedExample> LoadUnpaired(IReadOnlyList<string> paths, DataLoadOptions? options = null)
    {
        options ??= new DataLoadOptions();
        options.Validate();
        if (paths.Count == 0) throw new UserInputException("no data files given.");
        var log = new BadRecordLog(options.SkipBadRecords, options.MaxReportedSkips);
        var records = new List<UnpairedExample>();
        foreach (var path in paths)
        {
            int before = records.Count, skippedBefore = log.Count;
            // TRL's KTOTrainer unpairs a preference dataset (maybe_unpair_preference_dataset): each pair is its chosen
            // answer, desirable, and its rejected one, undesirable. A file holds one kind, fixed by its first record.
            DatasetKind? kind = null;
            foreach (var (raw, format) in Records(path, DatasetKind.Unpaired, log))
                Try(log, () =>
                {
                    var found = RecordParser.KindOf(format);
                    if ((kind ??= found) != found)
                        throw new BadRecordException(raw.Source, null,
                            $"this is {RecordParser.Describe(found)}, but the file's first record is {RecordParser.Describe(kind.Value)}; one data file holds one kind of record.");
                    if (found == DatasetKind.Unpaired) records.Add(RecordParser.ParseUnpaired(raw.Element, raw.Source));
                    else records.AddRange(Unpair(RecordParser.ParsePair(raw.Element, format, raw.Source)));
                });
            RequireSome(path, records.Count - before, log.Count - skippedBefore, log);
        }
        return log.Result<UnpairedExample>(records);
    }

    private static IEnumerable<UnpairedExample> Unpair(PreferencePair pair)
    {
        foreach (var (answer, field, desirable) in new[] { (pair.Chosen, pair.ChosenField, true), (pair.Rejected, pair.RejectedField, false) })
            yield return new UnpairedExample(new SftExample(pair.Prompt, answer, pair.Source)
            {
                PromptField = pair.PromptField,
                CompletionField = field,
                TemplateKwargs = pair.TemplateKwargs,
            }, desirable);
    }

    public static RecordSet<PromptExample> LoadPrompts(string path, DataLoadOptions? options = null) => LoadPrompts([path], options);

    /// <summary>Prompts for RL: {"prompt"} records, or the prompt of any SFT or preference record.</summary>
    public static RecordSet<PromptExample> LoadPrompts(IReadOnlyList<string> paths, DataLoadOptions? options = null)
    {
        options ??= new DataLoadOptions();
        options.Validate();
        var log = new BadRecordLog(options.SkipBadRecords, options.MaxReportedSkips);
        var records = new List<PromptExample>();
        foreach (var path in paths)
        {
            int before = records.Count, skippedBefore = log.Count;
            foreach (var (raw, format) in Records(path, DatasetKind.Prompt, log))
                Try(log, () => records.Add(RecordParser.ParsePrompt(raw.Element, format, raw.Source)));
            RequireSome(path, records.Count - before, log.Count - skippedBefore, log);
        }
        return log.Result<PromptExample>(records);
    }

    /// <summary>
    /// The readable records of a file with their formats, in order; unreadable ones and ones of another kind go to
    /// the log. <paramref name="kind"/> Prompt accepts every format but {"text"} (checked by the parser).
    /// </summary>
    private static IEnumerable<(RawRecord Raw, RecordFormat Format)> Records(string path, DatasetKind kind, BadRecordLog log)
    {
        foreach (var raw in JsonRecordReader.Read(path))
        {
            if (raw.Error is not null) { log.Report(raw.Error); continue; }
            RecordFormat format;
            try
            {
                format = RecordParser.DetectFormat(raw.Element, raw.Source);
                var found = RecordParser.KindOf(format);
                if (kind == DatasetKind.Sft && found == DatasetKind.Unpaired)
                    throw new BadRecordException(raw.Source, "label",
                        "this is an unpaired feedback record ({prompt, completion, label}, as TRL's KTOTrainer reads it); sft would train on every completion whatever its label. " +
                        "Train on it with `alignsharp kto`, or for sft keep the desirable completions without \"label\".");
                if (kind == DatasetKind.Unpaired && format == RecordFormat.Ranking)
                    throw new BadRecordException(raw.Source, "ranking",
                        "kto reads unpaired feedback, or preference pairs (each pair's chosen answer desirable, its rejected one undesirable, as TRL's KTOTrainer unpairs them); " +
                        "a ranking has no such reading. Label its answers, or train on it with `alignsharp dpo` or `alignsharp rm`.");
                if (kind != DatasetKind.Prompt && found != kind && !(kind == DatasetKind.Unpaired && found == DatasetKind.Preference))
                    throw new BadRecordException(raw.Source, null,
                        $"expected {RecordParser.Describe(kind)}, but this record has fields {FieldList(raw)}, which make it {RecordParser.Describe(found)}; one data file holds one kind of record.");
            }
            catch (BadRecordException e) { log.Report(e); continue; }
            yield return (raw, format);
        }
    }

    private static string FieldList(RawRecord raw) => string.Join(", ", raw.Element.EnumerateObject().Select(p => $"\"{p.Name}\""));

    private static void Try(BadRecordLog log, Action parse)
    {
        try { parse(); }
        catch (BadRecordException e) { log.Report(e); }
    }

    private static void RequireSome(string path, int read, int skipped, BadRecordLog log)
    {
        if (read > 0) return;
        if (skipped == 0) throw new UserInputException($"{path}: holds no records.");
        throw new UserInputException($"{path}: no usable records; all {skipped} were bad, e.g. {log.Examples.FirstOrDefault() ?? "(none kept)"}");
    }
}
