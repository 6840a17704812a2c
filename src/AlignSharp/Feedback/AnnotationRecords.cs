namespace AlignSharp.Feedback;

/// <summary>One prompt and the completions to rank (from an import file or sampled from a model).</summary>
public sealed record PromptCompletions(string Prompt, IReadOnlyList<string> Completions, IReadOnlyList<string?>? FinishReasons = null);

/// <summary>A person with an access token. Admins also see the admin view and its API.</summary>
public sealed record Annotator(long Id, string Name, bool IsAdmin);

/// <summary>What a project is: its name, how many annotators should rank each prompt, and where its completions came from.</summary>
public sealed record ProjectInfo(string Name, int Overlap, int Prompts, string Source, string? SamplingJson, string CreatedAt);

/// <summary>A completion as an annotator sees it. Id is its index in the prompt's completion list (0..K−1),
/// the index that the exported ranking refers to.</summary>
public sealed record ShownCompletion(int Id, string Text);

/// <summary>Flag values an annotator can put on a completion.</summary>
public static class FlagKinds
{
    public const string Unsafe = "unsafe";
    public const string Broken = "broken";
    public static readonly IReadOnlyList<string> All = [Unsafe, Broken];
}

public sealed record CompletionFlag(int CompletionId, string Flag);

/// <summary>Where an assignment stands.</summary>
public static class AssignmentStatus
{
    public const string Assigned = "assigned";
    public const string Submitted = "submitted";
    public const string Skipped = "skipped";
}

/// <summary>
/// A prompt assigned to one annotator. TaskId is the prompt's id (the same prompt is the same task for every
/// annotator it goes to); Completions are in the random order this annotator was shown, which is recorded.
/// </summary>
public sealed record AnnotationTask(
    long TaskId,
    string Prompt,
    IReadOnlyList<ShownCompletion> Completions,
    string Status,
    RankingOrder? Ranking,
    IReadOnlyList<CompletionFlag> Flags,
    int Revision);

/// <summary>
/// An annotator's answer for a task: a ranking of every shown completion id (ties as groups), or Skip; flags
/// either way. Edit must be set to change a task that was already submitted or skipped.
/// </summary>
public sealed record RankingSubmission(
    long TaskId,
    IReadOnlyList<IReadOnlyList<int>>? Ranking,
    IReadOnlyList<CompletionFlag> Flags,
    bool Skip = false,
    bool Edit = false);

public sealed record SubmissionResult(long TaskId, string Status, int Revision);

/// <summary>
/// One annotator's progress. Done = submitted + skipped; Total = Done + Pending + the prompts still open to
/// them (not yet seen by them and below the overlap), so Total can shrink as others take prompts.
/// </summary>
public sealed record AnnotatorProgress(int Done, int Total, int Submitted, int Skipped, int Pending);

/// <summary>Per-annotator counts for the admin view.</summary>
public sealed record AnnotatorSummary(long Id, string Name, bool IsAdmin, int Submitted, int Skipped, int Pending, int Flagged);

/// <summary>Project-wide progress: Ranked counts submitted rankings up to the overlap per prompt; Target = prompts × overlap.</summary>
public sealed record ProjectProgress(string Project, int Overlap, int Prompts, int Ranked, int Target, int PromptsComplete, IReadOnlyList<AnnotatorSummary> Annotators);

/// <summary>An accepted ranking with everything the exports need.</summary>
public sealed record SubmittedRanking(
    long TaskId,
    string Prompt,
    IReadOnlyList<string> Completions,
    RankingOrder Ranking,
    IReadOnlyList<CompletionFlag> Flags,
    long AnnotatorId,
    string AnnotatorName,
    IReadOnlyList<int> DisplayOrder,
    int Revision,
    string SubmittedAt);
