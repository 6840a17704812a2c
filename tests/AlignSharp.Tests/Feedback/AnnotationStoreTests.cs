using AlignSharp.Feedback;
using Microsoft.Data.Sqlite;

namespace AlignSharp.Tests.Feedback;

public class AnnotationStoreTests
{
    private static RankingSubmission Rank(long task, params int[] order) =>
        new(task, order.Select(i => (IReadOnlyList<int>)[i]).ToList(), []);

    [Fact]
    public void TokensAreRandomStoredOnlyAsHashesAndAuthenticate()
    {
        using var dir = new TempDir();
        using var store = Projects.Create(dir);
        var (alice, aliceToken) = store.AddAnnotator("alice");
        var (root, rootToken) = store.AddAnnotator("root", isAdmin: true);
        Assert.NotEqual(aliceToken, rootToken);
        Assert.True(aliceToken.Length >= 43, "32 random bytes in base64url");

        Assert.Equal(alice, store.Authenticate(aliceToken));
        Assert.Equal(root, store.Authenticate(rootToken));
        Assert.True(store.Authenticate(rootToken)!.IsAdmin);
        Assert.Null(store.Authenticate(aliceToken + "x"));
        Assert.Null(store.Authenticate(""));
        Assert.Null(store.Authenticate(null));

        // The file holds the SHA-256 of each token, never the token.
        using (var c = new SqliteConnection($"Data Source={store.Path};Mode=ReadOnly;Pooling=False"))
        {
            c.Open();
            var cmd = c.CreateCommand();
            cmd.CommandText = "SELECT token_hash FROM annotators WHERE name = 'alice'";
            Assert.Equal(AccessTokens.Hash(aliceToken), (byte[])cmd.ExecuteScalar()!);
        }
        byte[] file = File.ReadAllBytes(store.Path).Concat(File.Exists(store.Path + "-wal") ? File.ReadAllBytes(store.Path + "-wal") : []).ToArray();
        Assert.DoesNotContain(aliceToken, System.Text.Encoding.Latin1.GetString(file));

        Assert.Throws<UserInputException>(() => store.AddAnnotator("alice"));
    }

    [Fact]
    public void CreateRefusesAnExistingFileAndOpenChecksTheProject()
    {
        using var dir = new TempDir();
        Projects.Create(dir, name: "one").Dispose();
        var e = Assert.Throws<UserInputException>(() => Projects.Create(dir, name: "one"));
        Assert.Contains("already exists", e.Message);
        Assert.Contains("holds project 'one'", Assert.Throws<UserInputException>(() => AnnotationStore.Open(dir.File("one.annotations.db"), "two")).Message);
        Assert.Contains("not found", Assert.Throws<UserInputException>(() => AnnotationStore.Open(dir.File("none.db"))).Message);
        File.WriteAllText(dir.File("junk.db"), "this is not sqlite, just text long enough to fail the header check................");
        Assert.Contains("not an AlignSharp annotation project", Assert.Throws<UserInputException>(() => AnnotationStore.Open(dir.File("junk.db"))).Message);
        Assert.Throws<UserInputException>(() => AnnotationStore.ValidateProjectName("../evil"));
    }

    [Fact]
    public void TaskComesBackUntilAnsweredWithItsShownOrderRecorded()
    {
        using var dir = new TempDir();
        using var store = Projects.Create(dir, prompts: 3, k: 5);
        var (a, _) = store.AddAnnotator("a");
        var first = store.NextTask(a.Id)!;
        Assert.Equal(5, first.Completions.Count);
        Assert.Equal([0, 1, 2, 3, 4], first.Completions.Select(c => c.Id).Order());
        Assert.All(first.Completions, c => Assert.Equal($"p{first.TaskId - 1} c{c.Id}", c.Text));
        var again = store.NextTask(a.Id)!;
        Assert.Equal(first.TaskId, again.TaskId);
        Assert.Equal(first.Completions, again.Completions);

        store.Submit(a.Id, Rank(first.TaskId, 4, 3, 2, 1, 0));
        var export = store.SubmittedRankings().Single();
        Assert.Equal(first.Completions.Select(c => c.Id), export.DisplayOrder);
        Assert.NotEqual(first.TaskId, store.NextTask(a.Id)!.TaskId);
    }

    [Fact]
    public void OverlapIsReachedWithoutGivingAnyoneAPromptTwice()
    {
        using var dir = new TempDir();
        using var store = Projects.Create(dir, prompts: 4, k: 2, overlap: 3);
        var annotators = Enumerable.Range(0, 5).Select(i => store.AddAnnotator($"a{i}").Annotator).ToList();
        var seen = annotators.ToDictionary(a => a.Id, _ => new HashSet<long>());
        bool any = true;
        while (any)
        {
            any = false;
            foreach (var a in annotators)
            {
                var task = store.NextTask(a.Id);
                if (task == null) continue;
                any = true;
                Assert.True(seen[a.Id].Add(task.TaskId), $"{a.Name} got task {task.TaskId} twice");
                store.Submit(a.Id, Rank(task.TaskId, 0, 1));
            }
        }
        var rankings = store.SubmittedRankings();
        Assert.Equal(4 * 3, rankings.Count);
        Assert.All(rankings.GroupBy(r => r.TaskId), g => Assert.Equal(3, g.Count()));
        var progress = store.Progress();
        Assert.Equal(12, progress.Ranked);
        Assert.Equal(12, progress.Target);
        Assert.Equal(4, progress.PromptsComplete);
        Assert.All(annotators, a => Assert.Equal(store.ProgressOf(a.Id).Done, store.ProgressOf(a.Id).Total));
    }

    [Fact]
    public void ASkipFreesThePlaceForAnotherAnnotator()
    {
        using var dir = new TempDir();
        using var store = Projects.Create(dir, prompts: 1, k: 3, overlap: 1);
        var (a, _) = store.AddAnnotator("a");
        var (b, _) = store.AddAnnotator("b");
        var task = store.NextTask(a.Id)!;
        Assert.Null(store.NextTask(b.Id));
        Assert.Equal(new AnnotatorProgress(0, 0, 0, 0, 0), store.ProgressOf(b.Id));
        var result = store.Submit(a.Id, new RankingSubmission(task.TaskId, null, [new CompletionFlag(2, "broken")], Skip: true));
        Assert.Equal(AssignmentStatus.Skipped, result.Status);
        Assert.Null(store.NextTask(a.Id));
        Assert.Equal(task.TaskId, store.NextTask(b.Id)!.TaskId);
        Assert.Empty(store.SubmittedRankings());
        Assert.Equal(new AnnotatorProgress(1, 1, 0, 1, 0), store.ProgressOf(a.Id));

        // Once b has ranked it, a cannot turn the skip into a ranking after all: the prompt has its one ranking.
        store.Submit(b.Id, new RankingSubmission(task.TaskId, [[0], [1], [2]], []));
        var e = Assert.Throws<InvalidSubmissionException>(() => store.Submit(a.Id, new RankingSubmission(task.TaskId, [[2], [1], [0]], [], Edit: true)));
        Assert.Contains("has since gone to others", e.Message);
        Assert.Single(store.SubmittedRankings());
    }

    [Fact]
    public void ASkipCanBeRankedAfterAllWhileThePromptHasRoom()
    {
        using var dir = new TempDir();
        using var store = Projects.Create(dir, prompts: 1, k: 3, overlap: 1);
        var (a, _) = store.AddAnnotator("a");
        var task = store.NextTask(a.Id)!;
        store.Submit(a.Id, new RankingSubmission(task.TaskId, null, [], Skip: true));
        Assert.Equal(AssignmentStatus.Submitted, store.Submit(a.Id, new RankingSubmission(task.TaskId, [[2], [1], [0]], [], Edit: true)).Status);
        Assert.Single(store.SubmittedRankings());
    }

    [Fact]
    public void InvalidSubmissionsChangeNothing()
    {
        using var dir = new TempDir();
        using var store = Projects.Create(dir, prompts: 2, k: 3);
        var (a, _) = store.AddAnnotator("a");
        var (b, _) = store.AddAnnotator("b");
        var task = store.NextTask(a.Id)!;

        void Rejected(long who, RankingSubmission s, string message) =>
            Assert.Contains(message, Assert.Throws<InvalidSubmissionException>(() => store.Submit(who, s)).Message);

        Rejected(a.Id, Rank(task.TaskId, 0, 1), "missing 2");
        Rejected(a.Id, Rank(task.TaskId, 0, 1, 1), "more than once");
        Rejected(a.Id, Rank(task.TaskId, 0, 1, 3), "completion ids are 0..2");
        Rejected(a.Id, Rank(999, 0, 1, 2), "unknown task 999");
        Rejected(b.Id, Rank(task.TaskId, 0, 1, 2), "unknown task");          // not b's task
        Rejected(a.Id, new RankingSubmission(task.TaskId, null, []), "\"ranking\" is missing");
        Rejected(a.Id, new RankingSubmission(task.TaskId, [[0], [1], [2]], [], Skip: true), "either a ranking or");
        Rejected(a.Id, new RankingSubmission(task.TaskId, [[0], [1], [2]], [new CompletionFlag(0, "boring")]), "unknown flag");
        Rejected(a.Id, new RankingSubmission(task.TaskId, [[0], [1], [2]], [new CompletionFlag(7, "unsafe")]), "a flag names completion 7");
        Assert.Equal(AssignmentStatus.Assigned, store.GetTask(a.Id, task.TaskId)!.Status);
        Assert.Empty(store.SubmittedRankings());

        store.Submit(a.Id, new RankingSubmission(task.TaskId, [[2, 0], [1]], [new CompletionFlag(1, "unsafe"), new CompletionFlag(1, "unsafe")]));
        Rejected(a.Id, Rank(task.TaskId, 0, 1, 2), "already submitted");
        var kept = store.GetTask(a.Id, task.TaskId)!;
        Assert.Equal("[[0,2],1]", kept.Ranking!.ToString());
        Assert.Equal([new CompletionFlag(1, "unsafe")], kept.Flags);
        Assert.Equal(1, kept.Revision);
        Assert.Null(store.GetTask(b.Id, task.TaskId));
    }

    [Fact]
    public void AnEditReplacesTheAnswer()
    {
        using var dir = new TempDir();
        using var store = Projects.Create(dir, prompts: 1, k: 3);
        var (a, _) = store.AddAnnotator("a");
        var task = store.NextTask(a.Id)!;
        store.Submit(a.Id, Rank(task.TaskId, 0, 1, 2));
        var result = store.Submit(a.Id, Rank(task.TaskId, 2, 1, 0) with { Edit = true });
        Assert.Equal(2, result.Revision);
        var only = Assert.Single(store.SubmittedRankings());
        Assert.Equal("[2,1,0]", only.Ranking.ToString());
        Assert.Equal(2, only.Revision);
    }

    [Fact]
    public void ConcurrentCallersNeitherOverAssignNorLoseWork()
    {
        using var dir = new TempDir();
        using var store = Projects.Create(dir, prompts: 12, k: 3, overlap: 2);
        var annotators = Enumerable.Range(0, 8).Select(i => store.AddAnnotator($"a{i}").Annotator).ToList();
        var submitted = new System.Collections.Concurrent.ConcurrentBag<(long Task, long Annotator)>();
        Parallel.ForEach(annotators, new ParallelOptions { MaxDegreeOfParallelism = 8 }, a =>
        {
            while (store.NextTask(a.Id) is { } task)
            {
                store.Submit(a.Id, Rank(task.TaskId, 2, 0, 1));
                submitted.Add((task.TaskId, a.Id));
            }
        });
        var rankings = store.SubmittedRankings();
        Assert.Equal(24, submitted.Count);
        Assert.Equal(submitted.OrderBy(x => x).ToList(), rankings.Select(r => (r.TaskId, r.AnnotatorId)).OrderBy(x => x).ToList());
        Assert.All(rankings.GroupBy(r => r.TaskId), g => Assert.Equal(2, g.Count()));
        Assert.Equal("ok", store.IntegrityCheck());
    }
}
