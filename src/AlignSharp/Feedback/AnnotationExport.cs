using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace AlignSharp.Feedback;

/// <summary>
/// Writes accepted rankings in the JSONL formats the reward-model and DPO trainers read, one object per line,
/// one line per (task, annotator) for rankings:
/// <c>{"prompt", "completions", "ranking", "annotator", "annotator_id", "project", "task_id", "flags", "display_order", "revision", "submitted_at"}</c>
/// (ranking: indices into completions, best → worst, ties nested), and one line per strictly ordered completion
/// pair for pairs: <c>{"prompt", "chosen", "rejected", "annotator", "annotator_id", "project", "task_id", "chosen_id",
/// "rejected_id", "chosen_flags", "rejected_flags"}</c> (ties give no pair). Skipped tasks are not exported.
/// </summary>
public static class AnnotationExport
{
    public const string Rankings = "rankings";
    public const string Pairs = "pairs";
    public static readonly IReadOnlyList<string> Formats = [Rankings, Pairs];

    private static readonly JsonSerializerOptions LineOptions = new()
    {
        // Files, not HTML: keep non-ASCII text readable.
        Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
        WriteIndented = false,
    };

    /// <summary>Writes <paramref name="format"/> lines to <paramref name="output"/> and returns how many were written.</summary>
    public static int Write(string format, string project, IEnumerable<SubmittedRanking> rankings, TextWriter output) => format switch
    {
        Rankings => WriteRankings(project, rankings, output),
        Pairs => WritePairs(project, rankings, output),
        _ => throw new UserInputException($"unknown export format '{format}'; use one of: {string.Join(", ", Formats)}."),
    };

    public static int WriteRankings(string project, IEnumerable<SubmittedRanking> rankings, TextWriter output)
    {
        int lines = 0;
        foreach (var r in rankings)
        {
            var o = new JsonObject
            {
                ["prompt"] = r.Prompt,
                ["completions"] = new JsonArray(r.Completions.Select(t => (JsonNode?)t).ToArray()),
                ["ranking"] = r.Ranking.ToJson(),
                ["annotator"] = r.AnnotatorName,
                ["annotator_id"] = r.AnnotatorId,
                ["project"] = project,
                ["task_id"] = r.TaskId,
                ["flags"] = new JsonArray(r.Flags.Select(f => (JsonNode?)new JsonObject { ["completion_id"] = f.CompletionId, ["flag"] = f.Flag }).ToArray()),
                ["display_order"] = new JsonArray(r.DisplayOrder.Select(i => (JsonNode?)i).ToArray()),
                ["revision"] = r.Revision,
                ["submitted_at"] = r.SubmittedAt,
            };
            output.WriteLine(o.ToJsonString(LineOptions));
            lines++;
        }
        return lines;
    }

    public static int WritePairs(string project, IEnumerable<SubmittedRanking> rankings, TextWriter output)
    {
        int lines = 0;
        foreach (var r in rankings)
        {
            foreach (var (better, worse) in r.Ranking.StrictPairs())
            {
                var o = new JsonObject
                {
                    ["prompt"] = r.Prompt,
                    ["chosen"] = r.Completions[better],
                    ["rejected"] = r.Completions[worse],
                    ["annotator"] = r.AnnotatorName,
                    ["annotator_id"] = r.AnnotatorId,
                    ["project"] = project,
                    ["task_id"] = r.TaskId,
                    ["chosen_id"] = better,
                    ["rejected_id"] = worse,
                    ["chosen_flags"] = FlagsOf(r, better),
                    ["rejected_flags"] = FlagsOf(r, worse),
                };
                output.WriteLine(o.ToJsonString(LineOptions));
                lines++;
            }
        }
        return lines;
    }

    private static JsonArray FlagsOf(SubmittedRanking r, int completion) =>
        new(r.Flags.Where(f => f.CompletionId == completion).Select(f => (JsonNode?)f.Flag).ToArray());
}
