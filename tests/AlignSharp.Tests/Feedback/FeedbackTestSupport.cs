using System.Diagnostics;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using AlignSharp.Feedback;
using AlignSharp.Web;

namespace AlignSharp.Tests.Feedback;

/// <summary>A fresh directory under the system temp folder, deleted (best effort) on dispose.</summary>
public sealed class TempDir : IDisposable
{
    public string Path { get; } = Directory.CreateTempSubdirectory("alignsharp-annot-").FullName;
    public string File(string name) => System.IO.Path.Combine(Path, name);
    public void Dispose()
    {
        try { Directory.Delete(Path, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}

public static class Projects
{
    /// <summary>Prompt i has K completions "p{i} c{j}"; the texts say which completion they are.</summary>
    public static List<PromptCompletions> Synthetic(int prompts, int k) =>
        Enumerable.Range(0, prompts).Select(i => new PromptCompletions($"prompt {i}", Enumerable.Range(0, k).Select(j => $"p{i} c{j}").ToList())).ToList();

    public static AnnotationStore Create(TempDir dir, int prompts = 5, int k = 4, int overlap = 1, string name = "t") =>
        AnnotationStore.Create(dir.File($"{name}.annotations.db"), name, overlap, "test", null, Synthetic(prompts, k));
}

/// <summary>The annotation server on a free loopback port over a store, with an HTTP client per token.</summary>
public sealed class RunningServer : IAsyncDisposable
{
    private readonly List<HttpClient> _clients = [];
    public AnnotationServer Server { get; }
    public Uri BaseAddress => Server.BaseAddress;

    private RunningServer(AnnotationServer server) => Server = server;

    public static async Task<RunningServer> StartAsync(AnnotationStore store, long maxBody = 64 * 1024) =>
        new(await AnnotationServer.StartAsync(store, new AnnotationServerOptions { Port = 0, MaxRequestBodyBytes = maxBody }));

    public HttpClient Client(string? token = null)
    {
        var client = new HttpClient { BaseAddress = BaseAddress, Timeout = TimeSpan.FromSeconds(60) };
        if (token != null) client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", token);
        _clients.Add(client);
        return client;
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var c in _clients) c.Dispose();
        await Server.DisposeAsync();
    }
}

public static class Http
{
    public static async Task<(int Status, JsonNode? Body)> Get(HttpClient client, string path)
    {
        using var response = await client.GetAsync(path);
        return ((int)response.StatusCode, await ReadJson(response));
    }

    public static async Task<(int Status, JsonNode? Body)> Post(HttpClient client, string path, string json)
    {
        using var content = new StringContent(json, Encoding.UTF8, "application/json");
        using var response = await client.PostAsync(path, content);
        return ((int)response.StatusCode, await ReadJson(response));
    }

    public static Task<(int Status, JsonNode? Body)> Post(HttpClient client, string path, JsonNode body) => Post(client, path, body.ToJsonString());

    private static async Task<JsonNode?> ReadJson(HttpResponseMessage response)
    {
        string text = await response.Content.ReadAsStringAsync();
        if (text.Length == 0) return null;
        try { return JsonNode.Parse(text); } catch (JsonException) { return JsonValue.Create(text); }
    }

    /// <summary>The completion ids of a task in the order shown.</summary>
    public static int[] ShownIds(JsonNode task) => task["completions"]!.AsArray().Select(c => (int)c!["id"]!).ToArray();
}

/// <summary>The annotate commands run as processes in a project folder (see <see cref="CliRunner"/>).</summary>
public static class FeedbackCli
{
    public static ProcessStartInfo StartInfo(string workingDirectory, IEnumerable<string> args) => CliRunner.StartInfo(args, workingDirectory);

    public static CliRunner.Result Run(string workingDirectory, params string[] args) => CliRunner.Run(args, workingDirectory: workingDirectory, timeoutMs: 60_000);

    /// <summary>The value after "PREFIX " on the first output line starting with it.</summary>
    public static string Field(string output, string prefix) =>
        output.Split('\n').Select(l => l.TrimEnd('\r')).First(l => l.StartsWith(prefix, StringComparison.Ordinal))[prefix.Length..].Trim();
}
