using System.Globalization;
using System.Security.Cryptography;
using System.Text.Json;
using System.Text.RegularExpressions;
using Microsoft.Data.Sqlite;

namespace AlignSharp.Feedback;

/// <summary>
/// An annotation project in one SQLite file: prompts and their completions, annotators (hashed tokens), and one
/// assignment per (prompt, annotator) holding the order shown and the submitted ranking.
///
/// Durability and concurrency: the file is in WAL mode with synchronous=FULL, and every write (an import, a new
/// annotator, an assignment, a submission) is one IMMEDIATE transaction, so a killed process loses at most the
/// write in flight and never leaves a half-written one. Writers in this process take a lock so they queue
/// instead of spinning on SQLite's busy handler; writers in other processes (the CLI adding an annotator while
/// the server runs) wait on the busy timeout. Reads run concurrently against WAL snapshots. Safe to share one
/// instance across threads.
/// </summary>
public sealed partial class AnnotationStore : IDisposable
{
    private const int SchemaVersion = 1;

    /// <summary>Largest K the store accepts (the page has number keys 1..9, the mouse and touch go further).</summary>
    public const int MaxCompletionsPerPrompt = 16;

    private readonly string _connectionString;
    private readonly object _writeLock = new();

    public string Path { get; }

    private AnnotationStore(string path, SqliteOpenMode mode)
    {
        Path = System.IO.Path.GetFullPath(path);
        _connectionString = new SqliteConnectionStringBuilder
        {
            DataSource = Path,
            Mode = mode,
            Pooling = true,
            ForeignKeys = true,
            DefaultTimeout = 30,
        }.ToString();
    }

    /// <summary>The default file of project <paramref name="project"/>: <c>NAME.annotations.db</c> in the current directory.</summary>
    public static string DefaultPath(string project) => $"{project}.annotations.db";

    [GeneratedRegex("^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
    private static partial Regex ProjectNamePattern();

    public static void ValidateProjectName(string project)
    {
        if (!ProjectNamePattern().IsMatch(project))
            throw new UserInputException($"project name '{project}' is not usable: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit.");
    }

    /// <summary>
    /// Creates the project file with its prompts and completions (all in one transaction; on failure the file is
    /// removed). <paramref name="source"/> says where completions came from; <paramref name="samplingJson"/>
    /// records the sampling settings when they were generated.
    /// </summary>
    public static AnnotationStore Create(string path, string project, int overlap, string source, string? samplingJson, IReadOnlyList<PromptCompletions> prompts)
    {
        ValidateProjectName(project);
        if (overlap < 1) throw new UserInputException($"overlap must be ≥ 1, got {overlap}.");
        if (prompts.Count == 0) throw new UserInputException("the project has no prompts.");
        for (int i = 0; i < prompts.Count; i++) ValidatePrompt(prompts[i], $"prompt {i + 1}");
        string full = System.IO.Path.GetFullPath(path);
        if (File.Exists(full))
            throw new UserInputException($"{path} already exists; choose another --db or project name, or delete the file to start over.");
        string? directory = System.IO.Path.GetDirectoryName(full);
        if (directory != null && !Directory.Exists(directory)) throw new UserInputException($"directory {directory} does not exist.");

        var store = new AnnotationStore(full, SqliteOpenMode.ReadWriteCreate);
        try
        {
            using var c = store.Connect();
            Execute(c, "PRAGMA journal_mode = WAL;");
            using var tx = c.BeginTransaction();
            Execute(c, """
                CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
                CREATE TABLE prompts (id INTEGER PRIMARY KEY, text TEXT NOT NULL);
                CREATE TABLE completions (
                    prompt_id INTEGER NOT NULL REFERENCES prompts(id),
                    idx INTEGER NOT NULL,
                    text TEXT NOT NULL,
                    finish_reason TEXT,
                    PRIMARY KEY (prompt_id, idx)) WITHOUT ROWID;
                CREATE TABLE annotators (
                    id INTEGER PRIMARY KEY,
                    name TEXT NOT NULL UNIQUE,
                    token_hash BLOB NOT NULL UNIQUE,
                    is_admin INTEGER NOT NULL,
                    created_at TEXT NOT NULL);
                CREATE TABLE assignments (
                    prompt_id INTEGER NOT NULL REFERENCES prompts(id),
                    annotator_id INTEGER NOT NULL REFERENCES annotators(id),
                    display_order TEXT NOT NULL,
                    status TEXT NOT NULL CHECK (status IN ('assigned', 'submitted', 'skipped')),
                    ranking TEXT,
                    flags TEXT NOT NULL DEFAULT '[]',
                    revision INTEGER NOT NULL DEFAULT 0,
                    assigned_at TEXT NOT NULL,
                    submitted_at TEXT,
                    PRIMARY KEY (prompt_id, annotator_id)) WITHOUT ROWID;
                CREATE INDEX assignments_by_annotator ON assignments (annotator_id, status);
                """, tx);
            SetMeta(c, tx, "schema_version", SchemaVersion.ToString(CultureInfo.InvariantCulture));
            SetMeta(c, tx, "project", project);
            SetMeta(c, tx, "overlap", overlap.ToString(CultureInfo.InvariantCulture));
            SetMeta(c, tx, "source", source);
            if (samplingJson != null) SetMeta(c, tx, "sampling", samplingJson);
            SetMeta(c, tx, "created_at", Now());

            using var insertPrompt = Command(c, "INSERT INTO prompts (id, text) VALUES ($id, $text)", tx);
            using var insertCompletion = Command(c, "INSERT INTO completions (prompt_id, idx, text, finish_reason) VALUES ($p, $i, $text, $finish)", tx);
            for (int p = 0; p < prompts.Count; p++)
            {
                long id = p + 1;
                insertPrompt.Parameters.AddWithValue("$id", id);
                insertPrompt.Parameters.AddWithValue("$text", prompts[p].Prompt);
                insertPrompt.ExecuteNonQuery();
                insertPrompt.Parameters.Clear();
                for (int i = 0; i < prompts[p].Completions.Count; i++)
                {
                    insertCompletion.Parameters.AddWithValue("$p", id);
                    insertCompletion.Parameters.AddWithValue("$i", i);
                    insertCompletion.Parameters.AddWithValue("$text", prompts[p].Completions[i]);
                    insertCompletion.Parameters.AddWithValue("$finish", (object?)prompts[p].FinishReasons?[i] ?? DBNull.Value);
                    insertCompletion.ExecuteNonQuery();
                    insertCompletion.Parameters.Clear();
                }
            }
            tx.Commit();
        }
        catch
        {
            store.Dispose();
            foreach (var suffix in new[] { "", "-wal", "-shm", "-journal" })
                try { File.Delete(full + suffix); } catch (IOException) { }
            throw;
        }
        return store;
    }

    private static void ValidatePrompt(PromptCompletions p, string where)
    {
        if (string.IsNullOrWhiteSpace(p.Prompt)) throw new UserInputException($"{where}: the prompt is empty.");
        if (p.Completions.Count < 2) throw new UserInputException($"{where}: needs at least 2 completions to rank, has {p.Completions.Count}.");
        if (p.Completions.Count > MaxCompletionsPerPrompt)
            throw new UserInputException($"{where}: has {p.Completions.Count} completions; at most {MaxCompletionsPerPrompt} can be ranked at once.");
        if (p.FinishReasons != null && p.FinishReasons.Count != p.Completions.Count)
            throw new UserInputException($"{where}: {p.FinishReasons.Count} finish reasons for {p.Completions.Count} completions.");
    }

    /// <summary>Opens an existing project file; with <paramref name="expectedProject"/>, checks that it is that project.</summary>
    public static AnnotationStore Open(string path, string? expectedProject = null)
    {
        string full = System.IO.Path.GetFullPath(path);
        if (!File.Exists(full))
            throw new UserInputException($"{path} not found: create the project first with `alignsharp annotate create`, or point --db at its file.");
        var store = new AnnotationStore(full, SqliteOpenMode.ReadWrite);
        try
        {
            using var c = store.Connect();
            string? version;
            try { version = GetMeta(c, "schema_version"); }
            catch (SqliteException e) { throw new UserInputException($"{path} is not an AlignSharp annotation project ({e.Message}).", e); }
            if (version != SchemaVersion.ToString(CultureInfo.InvariantCulture))
                throw new UserInputException($"{path} has annotation schema version {version ?? "(none)"}; this AlignSharp reads version {SchemaVersion}.");
            string name = GetMeta(c, "project")!;
            if (expectedProject != null && name != expectedProject)
                throw new UserInputException($"{path} holds project '{name}', not '{expectedProject}'.");
        }
        catch
        {
            store.Dispose();
            throw;
        }
        return store;
    }

    public ProjectInfo Project
    {
        get
        {
            using var c = Connect();
            long prompts = (long)Scalar(c, "SELECT COUNT(*) FROM prompts")!;
            return new ProjectInfo(
                GetMeta(c, "project")!,
                int.Parse(GetMeta(c, "overlap")!, CultureInfo.InvariantCulture),
                (int)prompts,
                GetMeta(c, "source") ?? "",
                GetMeta(c, "sampling"),
                GetMeta(c, "created_at") ?? "");
        }
    }

    public void SetOverlap(int overlap)
    {
        if (overlap < 1) throw new UserInputException($"overlap must be ≥ 1, got {overlap}.");
        Write(c =>
        {
            using var tx = c.BeginTransaction();
            SetMeta(c, tx, "overlap", overlap.ToString(CultureInfo.InvariantCulture));
            tx.Commit();
            return 0;
        });
    }

    // ---------------------------------------------------------------- annotators and tokens

    /// <summary>Adds an annotator and returns the access token (shown once: only its hash is stored).</summary>
    public (Annotator Annotator, string Token) AddAnnotator(string name, bool isAdmin = false)
    {
        name = name.Trim();
        if (name.Length == 0 || name.Length > 64 || name.Any(char.IsControl))
            throw new UserInputException($"annotator name '{name}' is not usable: use 1-64 printable characters.");
        string token = AccessTokens.NewToken();
        long id = Write(c =>
        {
            using var tx = c.BeginTransaction();
            if (Scalar(c, "SELECT 1 FROM annotators WHERE name = $n", tx, ("$n", name)) != null)
                throw new UserInputException($"annotator '{name}' already exists in this project; pick another name.");
            long newId = (long)Scalar(c, "INSERT INTO annotators (name, token_hash, is_admin, created_at) VALUES ($n, $h, $a, $t) RETURNING id", tx,
                ("$n", name), ("$h", AccessTokens.Hash(token)), ("$a", isAdmin ? 1 : 0), ("$t", Now()))!;
            tx.Commit();
            return newId;
        });
        return (new Annotator(id, name, isAdmin), token);
    }

    /// <summary>
    /// The annotator holding <paramref name="token"/>, or null. The token's hash is compared with every stored
    /// hash in constant time, without stopping at a match, so timing reveals neither whether nor where it matched.
    /// Reads the table on every call, so annotators added by another process are seen at once.
    /// </summary>
    public Annotator? Authenticate(string? token)
    {
        if (string.IsNullOrEmpty(token) || token.Length > 256) return null;
        byte[] presented = AccessTokens.Hash(token);
        using var c = Connect();
        using var cmd = Command(c, "SELECT id, name, is_admin, token_hash FROM annotators");
        using var r = cmd.ExecuteReader();
        Annotator? found = null;
        while (r.Read())
        {
            var stored = (byte[])r.GetValue(3);
            if (CryptographicOperations.FixedTimeEquals(presented, stored) && found == null)
                found = new Annotator(r.GetInt64(0), r.GetString(1), r.GetInt64(2) != 0);
        }
        return found;
    }

    public IReadOnlyList<Annotator> Annotators()
    {
        using var c = Connect();
        using var cmd = Command(c, "SELECT id, name, is_admin FROM annotators ORDER BY id");
        using var r = cmd.ExecuteReader();
        var list = new List<Annotator>();
        while (r.Read()) list.Add(new Annotator(r.GetInt64(0), r.GetString(1), r.GetInt64(2) != 0));
        return list;
    }

    // ---------------------------------------------------------------- assignment

    /// <summary>
    /// The caller's next task. An unfinished assignment comes back first (same order as shown before). Otherwise
    /// the caller gets a prompt they have never been given whose active assignments (assigned or submitted; a
    /// skip frees the place) are below the overlap, preferring prompts closest to the overlap so that overlapping
    /// rankings, and agreement figures, arrive early. The check and the insert are one transaction under the write
    /// lock, so concurrent callers never push a prompt past the overlap; the (prompt, annotator) key makes a
    /// repeat impossible. Null when nothing is left for the caller.
    /// </summary>
    public AnnotationTask? NextTask(long annotatorId)
    {
        long? taskId = Write<long?>(c =>
        {
            using var tx = c.BeginTransaction();
            var pending = Scalar(c, """
                SELECT prompt_id FROM assignments WHERE annotator_id = $a AND status = 'assigned'
                ORDER BY assigned_at, prompt_id LIMIT 1
                """, tx, ("$a", annotatorId));
            if (pending != null) return (long)pending;

            int overlap = int.Parse(GetMeta(c, "overlap", tx)!, CultureInfo.InvariantCulture);
            var open = Scalar(c, """
                SELECT p.id FROM prompts p
                LEFT JOIN (SELECT prompt_id, COUNT(*) AS n FROM assignments WHERE status IN ('assigned', 'submitted') GROUP BY prompt_id) x
                  ON x.prompt_id = p.id
                WHERE COALESCE(x.n, 0) < $o
                  AND NOT EXISTS (SELECT 1 FROM assignments a WHERE a.prompt_id = p.id AND a.annotator_id = $a)
                ORDER BY COALESCE(x.n, 0) DESC, p.id
                LIMIT 1
                """, tx, ("$o", overlap), ("$a", annotatorId));
            if (open == null) return null;
            long promptId = (long)open;
            int k = (int)(long)Scalar(c, "SELECT COUNT(*) FROM completions WHERE prompt_id = $p", tx, ("$p", promptId))!;
            var order = Enumerable.Range(0, k).ToArray();
            RandomNumberGenerator.Shuffle(order.AsSpan());
            Execute(c, """
                INSERT INTO assignments (prompt_id, annotator_id, display_order, status, assigned_at)
                VALUES ($p, $a, $order, 'assigned', $t)
                """, tx, ("$p", promptId), ("$a", annotatorId), ("$order", JsonSerializer.Serialize(order)), ("$t", Now()));
            tx.Commit();
            return promptId;
        });
        return taskId is long id ? GetTask(annotatorId, id) : null;
    }

    /// <summary>The caller's own assignment for <paramref name="taskId"/>, or null when it is not theirs.</summary>
    public AnnotationTask? GetTask(long annotatorId, long taskId)
    {
        using var c = Connect();
        return ReadTask(c, null, annotatorId, taskId);
    }

    /// <summary>Every task the annotator has been given, in the order they got them.</summary>
    public IReadOnlyList<AnnotationTask> TasksOf(long annotatorId)
    {
        using var c = Connect();
        using var tx = c.BeginTransaction(deferred: true);
        var ids = new List<long>();
        using (var cmd = Command(c, "SELECT prompt_id FROM assignments WHERE annotator_id = $a ORDER BY assigned_at, prompt_id", tx, ("$a", annotatorId)))
        using (var r = cmd.ExecuteReader())
            while (r.Read()) ids.Add(r.GetInt64(0));
        return ids.Select(id => ReadTask(c, tx, annotatorId, id)!).ToList();
    }

    private static AnnotationTask? ReadTask(SqliteConnection c, SqliteTransaction? tx, long annotatorId, long taskId)
    {
        string prompt, displayOrder, status, flags;
        string? ranking;
        int revision;
        using (var cmd = Command(c, """
            SELECT p.text, a.display_order, a.status, a.ranking, a.flags, a.revision
            FROM assignments a JOIN prompts p ON p.id = a.prompt_id
            WHERE a.prompt_id = $p AND a.annotator_id = $a
            """, tx, ("$p", taskId), ("$a", annotatorId)))
        using (var r = cmd.ExecuteReader())
        {
            if (!r.Read()) return null;
            prompt = r.GetString(0);
            displayOrder = r.GetString(1);
            status = r.GetString(2);
            ranking = r.IsDBNull(3) ? null : r.GetString(3);
            flags = r.GetString(4);
            revision = r.GetInt32(5);
        }
        var texts = CompletionTexts(c, tx, taskId);
        var order = JsonSerializer.Deserialize<int[]>(displayOrder)!;
        return new AnnotationTask(
            taskId,
            prompt,
            order.Select(i => new ShownCompletion(i, texts[i])).ToList(),
            status,
            ranking == null ? null : RankingOrder.Parse(ranking, texts.Count),
            ParseFlags(flags),
            revision);
    }

    private static List<string> CompletionTexts(SqliteConnection c, SqliteTransaction? tx, long promptId)
    {
        var texts = new List<string>();
        using var cmd = Command(c, "SELECT text FROM completions WHERE prompt_id = $p ORDER BY idx", tx, ("$p", promptId));
        using var r = cmd.ExecuteReader();
        while (r.Read()) texts.Add(r.GetString(0));
        return texts;
    }

    // ---------------------------------------------------------------- submissions

    /// <summary>
    /// Records a ranking or a skip for one of the caller's tasks, in one transaction. Throws
    /// <see cref="InvalidSubmissionException"/> (and changes nothing) when the task is not the caller's, when it
    /// was already submitted or skipped and <see cref="RankingSubmission.Edit"/> is not set, when the ranking is
    /// not a permutation of the task's completion ids, or when a flag is unknown.
    /// </summary>
    public SubmissionResult Submit(long annotatorId, RankingSubmission s)
    {
        return Write(c =>
        {
            using var tx = c.BeginTransaction();
            string status;
            int revision;
            using (var cmd = Command(c, "SELECT status, revision FROM assignments WHERE prompt_id = $p AND annotator_id = $a", tx,
                       ("$p", s.TaskId), ("$a", annotatorId)))
            using (var r = cmd.ExecuteReader())
            {
                if (!r.Read())
                    throw new InvalidSubmissionException($"unknown task {s.TaskId}: it is not one of your tasks (get one from GET /api/tasks/next).");
                status = r.GetString(0);
                revision = r.GetInt32(1);
            }
            if (status != AssignmentStatus.Assigned && !s.Edit)
                throw new InvalidSubmissionException($"task {s.TaskId} was already {status}; send \"edit\": true to change your answer.");
            // A skip freed the place for another annotator; ranking it after all must not push the prompt past the overlap.
            if (status == AssignmentStatus.Skipped && !s.Skip)
            {
                int overlap = int.Parse(GetMeta(c, "overlap", tx)!, CultureInfo.InvariantCulture);
                long held = (long)Scalar(c, "SELECT COUNT(*) FROM assignments WHERE prompt_id = $p AND status IN ('assigned', 'submitted')", tx, ("$p", s.TaskId))!;
                if (held >= overlap)
                    throw new InvalidSubmissionException($"task {s.TaskId} was skipped and has since gone to others: it already has the {overlap} ranking(s) it needs.");
            }
            int k = (int)(long)Scalar(c, "SELECT COUNT(*) FROM completions WHERE prompt_id = $p", tx, ("$p", s.TaskId))!;

            string? rankingJson = null;
            if (s.Skip)
            {
                if (s.Ranking is { Count: > 0 }) throw new InvalidSubmissionException("send either a ranking or \"skip\": true, not both.");
            }
            else
            {
                if (s.Ranking == null || s.Ranking.Count == 0)
                    throw new InvalidSubmissionException("\"ranking\" is missing: list every completion id best → worst (ties as nested lists), or send \"skip\": true.");
                rankingJson = RankingOrder.FromGroups(s.Ranking, k).ToString();
            }
            var flags = NormalizeFlags(s.Flags, k);

            string newStatus = s.Skip ? AssignmentStatus.Skipped : AssignmentStatus.Submitted;
            Execute(c, """
                UPDATE assignments SET status = $s, ranking = $r, flags = $f, revision = revision + 1, submitted_at = $t
                WHERE prompt_id = $p AND annotator_id = $a
                """, tx, ("$s", newStatus), ("$r", (object?)rankingJson ?? DBNull.Value), ("$f", JsonSerializer.Serialize(flags, FlagJson.Options)),
                ("$t", Now()), ("$p", s.TaskId), ("$a", annotatorId));
            tx.Commit();
            return new SubmissionResult(s.TaskId, newStatus, revision + 1);
        });
    }

    private static List<CompletionFlag> NormalizeFlags(IReadOnlyList<CompletionFlag>? flags, int k)
    {
        var result = new SortedSet<(int, string)>();
        foreach (var f in flags ?? [])
        {
            if (f.CompletionId < 0 || f.CompletionId >= k)
                throw new InvalidSubmissionException($"a flag names completion {f.CompletionId}, but this task's completion ids are 0..{k - 1}.");
            if (!FlagKinds.All.Contains(f.Flag))
                throw new InvalidSubmissionException($"unknown flag '{f.Flag}'; use one of: {string.Join(", ", FlagKinds.All)}.");
            result.Add((f.CompletionId, f.Flag));
        }
        return result.Select(t => new CompletionFlag(t.Item1, t.Item2)).ToList();
    }

    private static IReadOnlyList<CompletionFlag> ParseFlags(string json) =>
        JsonSerializer.Deserialize<List<CompletionFlag>>(json, FlagJson.Options) ?? [];

    private static class FlagJson
    {
        public static readonly JsonSerializerOptions Options = new() { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };
    }

    // ---------------------------------------------------------------- progress and results

    public AnnotatorProgress ProgressOf(long annotatorId)
    {
        using var c = Connect();
        using var tx = c.BeginTransaction(deferred: true);
        int submitted = 0, skipped = 0, pending = 0;
        using (var cmd = Command(c, "SELECT status, COUNT(*) FROM assignments WHERE annotator_id = $a GROUP BY status", tx, ("$a", annotatorId)))
        using (var r = cmd.ExecuteReader())
            while (r.Read())
            {
                int n = r.GetInt32(1);
                switch (r.GetString(0))
                {
                    case AssignmentStatus.Submitted: submitted = n; break;
                    case AssignmentStatus.Skipped: skipped = n; break;
                    default: pending = n; break;
                }
            }
        int overlap = int.Parse(GetMeta(c, "overlap", tx)!, CultureInfo.InvariantCulture);
        int open = (int)(long)Scalar(c, """
            SELECT COUNT(*) FROM prompts p
            WHERE (SELECT COUNT(*) FROM assignments x WHERE x.prompt_id = p.id AND x.status IN ('assigned', 'submitted')) < $o
              AND NOT EXISTS (SELECT 1 FROM assignments a WHERE a.prompt_id = p.id AND a.annotator_id = $a)
            """, tx, ("$o", overlap), ("$a", annotatorId))!;
        int done = submitted + skipped;
        return new AnnotatorProgress(done, done + pending + open, submitted, skipped, pending);
    }

    public ProjectProgress Progress()
    {
        using var c = Connect();
        using var tx = c.BeginTransaction(deferred: true);
        string project = GetMeta(c, "project", tx)!;
        int overlap = int.Parse(GetMeta(c, "overlap", tx)!, CultureInfo.InvariantCulture);
        int prompts = (int)(long)Scalar(c, "SELECT COUNT(*) FROM prompts", tx)!;
        int ranked = 0, complete = 0;
        using (var cmd = Command(c, "SELECT COUNT(*) FROM assignments WHERE status = 'submitted' GROUP BY prompt_id", tx))
        using (var r = cmd.ExecuteReader())
            while (r.Read())
            {
                int n = r.GetInt32(0);
                ranked += Math.Min(n, overlap);
                if (n >= overlap) complete++;
            }
        var annotators = new List<AnnotatorSummary>();
        using (var cmd = Command(c, """
            SELECT n.id, n.name, n.is_admin,
                   COALESCE(SUM(a.status = 'submitted'), 0), COALESCE(SUM(a.status = 'skipped'), 0),
                   COALESCE(SUM(a.status = 'assigned'), 0), COALESCE(SUM(a.flags <> '[]'), 0)
            FROM annotators n LEFT JOIN assignments a ON a.annotator_id = n.id
            GROUP BY n.id ORDER BY n.id
            """, tx))
        using (var r = cmd.ExecuteReader())
            while (r.Read())
                annotators.Add(new AnnotatorSummary(r.GetInt64(0), r.GetString(1), r.GetInt64(2) != 0,
                    r.GetInt32(3), r.GetInt32(4), r.GetInt32(5), r.GetInt32(6)));
        return new ProjectProgress(project, overlap, prompts, ranked, prompts * overlap, complete, annotators);
    }

    /// <summary>Every submitted ranking (skips left out), by task then annotator.</summary>
    public IReadOnlyList<SubmittedRanking> SubmittedRankings()
    {
        using var c = Connect();
        using var tx = c.BeginTransaction(deferred: true);
        var rows = new List<(long Task, string Prompt, string Order, string Ranking, string Flags, long Annotator, string Name, int Revision, string At)>();
        using (var cmd = Command(c, """
            SELECT a.prompt_id, p.text, a.display_order, a.ranking, a.flags, a.annotator_id, n.name, a.revision, a.submitted_at
            FROM assignments a JOIN prompts p ON p.id = a.prompt_id JOIN annotators n ON n.id = a.annotator_id
            WHERE a.status = 'submitted'
            ORDER BY a.prompt_id, a.annotator_id
            """, tx))
        using (var r = cmd.ExecuteReader())
            while (r.Read())
                rows.Add((r.GetInt64(0), r.GetString(1), r.GetString(2), r.GetString(3), r.GetString(4), r.GetInt64(5), r.GetString(6), r.GetInt32(7), r.GetString(8)));

        var completions = new Dictionary<long, List<string>>();
        var result = new List<SubmittedRanking>(rows.Count);
        foreach (var row in rows)
        {
            if (!completions.TryGetValue(row.Task, out var texts)) completions[row.Task] = texts = CompletionTexts(c, tx, row.Task);
            result.Add(new SubmittedRanking(row.Task, row.Prompt, texts, RankingOrder.Parse(row.Ranking, texts.Count), ParseFlags(row.Flags),
                row.Annotator, row.Name, JsonSerializer.Deserialize<int[]>(row.Order)!, row.Revision, row.At));
        }
        return result;
    }

    /// <summary>SQLite's own consistency check of the file: "ok" when sound.</summary>
    public string IntegrityCheck()
    {
        using var c = Connect();
        return (string)Scalar(c, "PRAGMA integrity_check")!;
    }

    // ---------------------------------------------------------------- SQLite plumbing

    private SqliteConnection Connect()
    {
        var c = new SqliteConnection(_connectionString);
        c.Open();
        Execute(c, "PRAGMA busy_timeout = 30000; PRAGMA synchronous = FULL;");
        return c;
    }

    private T Write<T>(Func<SqliteConnection, T> work)
    {
        lock (_writeLock)
        {
            using var c = Connect();
            return work(c);
        }
    }

    private static SqliteCommand Command(SqliteConnection c, string sql, SqliteTransaction? tx = null, params (string Name, object Value)[] args)
    {
        var cmd = c.CreateCommand();
        cmd.CommandText = sql;
        cmd.Transaction = tx;
        foreach (var (name, value) in args) cmd.Parameters.AddWithValue(name, value);
        return cmd;
    }

    private static void Execute(SqliteConnection c, string sql, SqliteTransaction? tx = null, params (string Name, object Value)[] args)
    {
        using var cmd = Command(c, sql, tx, args);
        cmd.ExecuteNonQuery();
    }

    private static object? Scalar(SqliteConnection c, string sql, SqliteTransaction? tx = null, params (string Name, object Value)[] args)
    {
        using var cmd = Command(c, sql, tx, args);
        var v = cmd.ExecuteScalar();
        return v is DBNull ? null : v;
    }

    private static string? GetMeta(SqliteConnection c, string key, SqliteTransaction? tx = null) =>
        (string?)Scalar(c, "SELECT value FROM meta WHERE key = $k", tx, ("$k", key));

    private static void SetMeta(SqliteConnection c, SqliteTransaction tx, string key, string value) =>
        Execute(c, "INSERT INTO meta (key, value) VALUES ($k, $v) ON CONFLICT (key) DO UPDATE SET value = excluded.value", tx, ("$k", key), ("$v", value));

    private static string Now() => DateTime.UtcNow.ToString("yyyy-MM-ddTHH:mm:ss.fffZ", CultureInfo.InvariantCulture);

    /// <summary>Closes this file's pooled connections (the data is already on disk).</summary>
    public void Dispose() => SqliteConnection.ClearPool(new SqliteConnection(_connectionString));
}
