using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using AlignSharp.Feedback;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;

namespace AlignSharp.Web;

/// <summary>
/// The JSON API under /api/ (documented in docs/annotation.md). Every route needs
/// <c>Authorization: Bearer TOKEN</c> (401 otherwise); /api/admin/ routes need an admin token (403 otherwise).
/// An annotator reaches only their own assignments: every store call is keyed by the caller's id.
/// Errors are <c>{"error": "message"}</c> with 400 (bad request, nothing changed), 401, 403, 404 or 413.
/// </summary>
internal static class ApiEndpoints
{
    private delegate Task Handler(HttpContext context, AnnotationStore store, Annotator caller);

    public static void Map(WebApplication app, AnnotationStore store)
    {
        app.Use(Guard);
        MapAuthorized(app, "GET", "/api/me", Me, store);
        MapAuthorized(app, "GET", "/api/tasks/next", NextTask, store);
        MapAuthorized(app, "GET", "/api/tasks/{id}", GetTask, store);
        MapAuthorized(app, "GET", "/api/rankings", MyRankings, store);
        MapAuthorized(app, "POST", "/api/rankings", Submit, store);
        MapAuthorized(app, "GET", "/api/admin/progress", AdminProgress, store, adminOnly: true);
        MapAuthorized(app, "GET", "/api/admin/agreement", AdminAgreement, store, adminOnly: true);
        MapAuthorized(app, "GET", "/api/admin/export", AdminExport, store, adminOnly: true);
        app.Map("/api/{**rest}", ctx => Error(ctx, StatusCodes.Status404NotFound, $"no API route {ctx.Request.Method} {ctx.Request.Path}; see docs/annotation.md."));
    }

    /// <summary>Security headers on every response; API errors as JSON; unexpected failures logged, never leaked.</summary>
    private static async Task Guard(HttpContext ctx, RequestDelegate next)
    {
        var h = ctx.Response.Headers;
        h["X-Content-Type-Options"] = "nosniff";
        h["Referrer-Policy"] = "no-referrer";
        h["X-Frame-Options"] = "DENY";
        h["Content-Security-Policy"] = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
        h.CacheControl = "no-store";
        try
        {
            await next(ctx);
        }
        catch (BadHttpRequestException e) when (!ctx.Response.HasStarted)
        {
            await Error(ctx, e.StatusCode, e.StatusCode == StatusCodes.Status413PayloadTooLarge ? "request body too large." : e.Message);
        }
        catch (UserInputException e) when (!ctx.Response.HasStarted)
        {
            await Error(ctx, StatusCodes.Status400BadRequest, e.Message);
        }
        catch (JsonException e) when (!ctx.Response.HasStarted)
        {
            await Error(ctx, StatusCodes.Status400BadRequest, $"the request body is not valid JSON ({e.Message}).");
        }
        catch (Exception e) when (e is not OperationCanceledException && !ctx.Response.HasStarted)
        {
            Console.Error.WriteLine($"annotation server: {ctx.Request.Method} {ctx.Request.Path} failed: {e}");
            await Error(ctx, StatusCodes.Status500InternalServerError, "internal error; see the server's log.");
        }
    }

    private static void MapAuthorized(WebApplication app, string method, string pattern, Handler handler, AnnotationStore store, bool adminOnly = false)
    {
        app.MapMethods(pattern, [method], async ctx =>
        {
            var caller = store.Authenticate(BearerToken(ctx.Request));
            if (caller == null)
            {
                ctx.Response.Headers.WWWAuthenticate = "Bearer";
                await Error(ctx, StatusCodes.Status401Unauthorized, "missing or invalid access token: send \"Authorization: Bearer TOKEN\" (alignsharp annotate add-annotator prints one).");
                return;
            }
            if (adminOnly && !caller.IsAdmin)
            {
                await Error(ctx, StatusCodes.Status403Forbidden, "this needs an admin token (alignsharp annotate add-annotator --admin).");
                return;
            }
            await handler(ctx, store, caller);
        });
    }

    private static string? BearerToken(HttpRequest request)
    {
        string? header = request.Headers.Authorization;
        const string scheme = "Bearer ";
        if (header == null || !header.StartsWith(scheme, StringComparison.OrdinalIgnoreCase)) return null;
        return header[scheme.Length..].Trim();
    }

    // ---------------------------------------------------------------- annotator routes

    private static Task Me(HttpContext ctx, AnnotationStore store, Annotator caller)
    {
        var project = store.Project;
        return Json(ctx, 200, new JsonObject
        {
            ["annotator"] = caller.Name,
            ["annotator_id"] = caller.Id,
            ["admin"] = caller.IsAdmin,
            ["project"] = project.Name,
            ["overlap"] = project.Overlap,
            ["progress"] = ProgressJson(store.ProgressOf(caller.Id)),
        });
    }

    private static Task NextTask(HttpContext ctx, AnnotationStore store, Annotator caller)
    {
        var task = store.NextTask(caller.Id);
        var progress = ProgressJson(store.ProgressOf(caller.Id));
        if (task == null)
            return Json(ctx, 200, new JsonObject { ["task_id"] = null, ["message"] = "No more tasks for you in this project.", ["progress"] = progress });
        var o = TaskJson(task);
        o["progress"] = progress;
        return Json(ctx, 200, o);
    }

    private static Task GetTask(HttpContext ctx, AnnotationStore store, Annotator caller)
    {
        if (!long.TryParse(ctx.Request.RouteValues["id"] as string, out long id))
            return Error(ctx, StatusCodes.Status400BadRequest, "the task id in the path must be an integer.");
        var task = store.GetTask(caller.Id, id);
        return task == null
            ? Error(ctx, StatusCodes.Status404NotFound, $"task {id} is not one of your tasks.")
            : Json(ctx, 200, TaskJson(task));
    }

    private static Task MyRankings(HttpContext ctx, AnnotationStore store, Annotator caller)
    {
        var tasks = store.TasksOf(caller.Id).Where(t => t.Status != AssignmentStatus.Assigned);
        return Json(ctx, 200, new JsonObject
        {
            ["rankings"] = new JsonArray(tasks.Select(t => (JsonNode?)new JsonObject
            {
                ["task_id"] = t.TaskId,
                ["status"] = t.Status,
                ["ranking"] = t.Ranking?.ToJson(),
                ["flags"] = FlagsJson(t.Flags),
                ["revision"] = t.Revision,
            }).ToArray()),
        });
    }

    private static async Task Submit(HttpContext ctx, AnnotationStore store, Annotator caller)
    {
        using var doc = await JsonDocument.ParseAsync(ctx.Request.Body, new JsonDocumentOptions { MaxDepth = 8 }, ctx.RequestAborted);
        if (AlignSharp.Training.Data.JsonRecords.InvalidText(doc.RootElement, out var field) is { } problem)
            throw new InvalidSubmissionException(field == null ? problem : $"\"{field}\": {problem}");
        var submission = ReadSubmission(doc.RootElement);
        var result = store.Submit(caller.Id, submission);
        await Json(ctx, 200, new JsonObject
        {
            ["task_id"] = result.TaskId,
            ["status"] = result.Status,
            ["revision"] = result.Revision,
            ["progress"] = ProgressJson(store.ProgressOf(caller.Id)),
        });
    }

    /// <summary>Reads <c>{"task_id", "ranking", "flags", "skip", "edit"}</c>; throws <see cref="InvalidSubmissionException"/> on a wrong shape.</summary>
    internal static RankingSubmission ReadSubmission(JsonElement body)
    {
        if (body.ValueKind != JsonValueKind.Object)
            throw new InvalidSubmissionException("the body must be a JSON object: {\"task_id\", \"ranking\", \"flags\", \"skip\", \"edit\"}.");
        // A misspelt optional key ("flgas") would otherwise be dropped without a word.
        if (body.EnumerateObject().Select(p => p.Name).FirstOrDefault(n => n is not ("task_id" or "ranking" or "flags" or "skip" or "edit")) is { } unknown)
            throw new InvalidSubmissionException($"unknown field \"{unknown}\"; a submission has \"task_id\", \"ranking\", \"flags\", \"skip\" and \"edit\".");
        if (!body.TryGetProperty("task_id", out var idElement) || idElement.ValueKind != JsonValueKind.Number || !idElement.TryGetInt64(out long taskId))
            throw new InvalidSubmissionException("\"task_id\" is missing or not an integer.");
        bool skip = ReadBool(body, "skip");
        bool edit = ReadBool(body, "edit");
        IReadOnlyList<IReadOnlyList<int>>? ranking = null;
        if (body.TryGetProperty("ranking", out var r) && r.ValueKind != JsonValueKind.Null) ranking = RankingOrder.ParseGroups(r);
        var flags = new List<CompletionFlag>();
        if (body.TryGetProperty("flags", out var f) && f.ValueKind != JsonValueKind.Null)
        {
            if (f.ValueKind != JsonValueKind.Array)
                throw new InvalidSubmissionException("\"flags\" must be a list of {\"completion_id\", \"flag\"} objects.");
            foreach (var item in f.EnumerateArray())
            {
                if (item.ValueKind != JsonValueKind.Object || item.EnumerateObject().Any(p => p.Name is not ("completion_id" or "flag"))
                    || !item.TryGetProperty("completion_id", out var cid) || cid.ValueKind != JsonValueKind.Number || !cid.TryGetInt32(out int completionId)
                    || !item.TryGetProperty("flag", out var kind) || kind.ValueKind != JsonValueKind.String)
                    throw new InvalidSubmissionException($"each flag must be {{\"completion_id\": integer, \"flag\": \"{string.Join("\" | \"", FlagKinds.All)}\"}}, got {item.GetRawText()}.");
                flags.Add(new CompletionFlag(completionId, kind.GetString()!));
            }
        }
        return new RankingSubmission(taskId, ranking, flags, skip, edit);
    }

    private static bool ReadBool(JsonElement body, string name)
    {
        if (!body.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null) return false;
        if (v.ValueKind is JsonValueKind.True or JsonValueKind.False) return v.GetBoolean();
        throw new InvalidSubmissionException($"\"{name}\" must be true or false.");
    }

    // ---------------------------------------------------------------- admin routes

    private static Task AdminProgress(HttpContext ctx, AnnotationStore store, Annotator caller) =>
        Json(ctx, 200, ProgressReport(store.Progress()));

    internal static JsonObject ProgressReport(ProjectProgress p) => new()
    {
        ["project"] = p.Project,
        ["overlap"] = p.Overlap,
        ["prompts"] = p.Prompts,
        ["ranked"] = p.Ranked,
        ["target"] = p.Target,
        ["prompts_complete"] = p.PromptsComplete,
        ["annotators"] = new JsonArray(p.Annotators.Select(a => (JsonNode?)new JsonObject
        {
            ["id"] = a.Id,
            ["name"] = a.Name,
            ["admin"] = a.IsAdmin,
            ["submitted"] = a.Submitted,
            ["skipped"] = a.Skipped,
            ["pending"] = a.Pending,
            ["flagged"] = a.Flagged,
        }).ToArray()),
    };

    private static Task AdminAgreement(HttpContext ctx, AnnotationStore store, Annotator caller) =>
        Json(ctx, 200, AgreementReportJson(Agreement.Compute(store.SubmittedRankings())));

    internal static JsonObject AgreementReportJson(AgreementReport report) => new()
    {
        ["overall"] = FiguresJson(report.Overall),
        ["pairs"] = new JsonArray(report.Pairs.Select(p =>
        {
            var o = FiguresJson(p.Figures);
            o["annotators"] = new JsonArray(
                new JsonObject { ["id"] = p.FirstId, ["name"] = p.FirstName },
                new JsonObject { ["id"] = p.SecondId, ["name"] = p.SecondName });
            return (JsonNode?)o;
        }).ToArray()),
    };

    private static JsonObject FiguresJson(AgreementFigures f) => new()
    {
        ["tasks"] = f.Tasks,
        ["completion_pairs"] = f.CompletionPairs,
        ["pairwise_agreement"] = f.PairwiseAgreement,
        ["kendall_tau_b"] = f.KendallTauB,
    };

    private static async Task AdminExport(HttpContext ctx, AnnotationStore store, Annotator caller)
    {
        string format = ctx.Request.Query["format"].FirstOrDefault() ?? AnnotationExport.Rankings;
        if (!AnnotationExport.Formats.Contains(format))
        {
            await Error(ctx, StatusCodes.Status400BadRequest, $"unknown export format '{format}'; use one of: {string.Join(", ", AnnotationExport.Formats)}.");
            return;
        }
        var writer = new StringWriter { NewLine = "\n" };
        var project = store.Project.Name;
        AnnotationExport.Write(format, project, store.SubmittedRankings(), writer);
        ctx.Response.StatusCode = 200;
        ctx.Response.ContentType = "application/x-ndjson; charset=utf-8";
        ctx.Response.Headers.ContentDisposition = $"attachment; filename=\"{project}.{format}.jsonl\"";
        await ctx.Response.WriteAsync(writer.ToString(), Encoding.UTF8, ctx.RequestAborted);
    }

    // ---------------------------------------------------------------- JSON shapes

    private static JsonObject TaskJson(AnnotationTask t) => new()
    {
        ["task_id"] = t.TaskId,
        ["prompt"] = t.Prompt,
        ["completions"] = new JsonArray(t.Completions.Select(c => (JsonNode?)new JsonObject { ["id"] = c.Id, ["text"] = c.Text }).ToArray()),
        ["status"] = t.Status,
        ["ranking"] = t.Ranking?.ToJson(),
        ["flags"] = FlagsJson(t.Flags),
        ["revision"] = t.Revision,
    };

    private static JsonArray FlagsJson(IReadOnlyList<CompletionFlag> flags) =>
        new(flags.Select(f => (JsonNode?)new JsonObject { ["completion_id"] = f.CompletionId, ["flag"] = f.Flag }).ToArray());

    private static JsonObject ProgressJson(AnnotatorProgress p) => new()
    {
        ["done"] = p.Done,
        ["total"] = p.Total,
        ["submitted"] = p.Submitted,
        ["skipped"] = p.Skipped,
        ["pending"] = p.Pending,
    };

    private static Task Json(HttpContext ctx, int status, JsonNode body)
    {
        ctx.Response.StatusCode = status;
        ctx.Response.ContentType = "application/json; charset=utf-8";
        // Default escaping writes <, >, & and quotes as \u escapes: the JSON is safe even if mis-served as HTML.
        return ctx.Response.WriteAsync(body.ToJsonString(), Encoding.UTF8, ctx.RequestAborted);
    }

    private static Task Error(HttpContext ctx, int status, string message) =>
        Json(ctx, status, new JsonObject { ["error"] = message });
}
