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

/// <summary>
/// Runs the built CLI as a process, as a user does: <c>dotnet alignsharp.dll ...</c> from the CLI project's output
/// in the tests' configuration (the test project builds it through a non-referencing ProjectReference).
/// </summary>
public static class FeedbackCli
{
    public sealed record Result(int ExitCode, string StdOut, string StdErr);

    public static string CliDll
    {
        get
        {
#if DEBUG
            const string configuration = "Debug";
#else
            const string configuration = "Release";
#endif
            for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir != null; dir = dir.Parent)
            {
                if (!System.IO.File.Exists(Path.Combine(dir.FullName, "AlignSharp.slnx"))) continue;
                string bin = Path.Combine(dir.FullName, "src", "AlignSharp.Cli", "bin", configuration, "net10.0");
                foreach (var name in new[] { "alignsharp.dll", "AlignSharp.Cli.dll" })
                    if (System.IO.File.Exists(Path.Combine(bin, name))) return Path.Combine(bin, name);
                throw new FileNotFoundException($"CLI not built in {bin}");
            }
            throw new InvalidOperationException($"no AlignSharp.slnx above {AppContext.BaseDirectory}");
        }
    }

    public static ProcessStartInfo StartInfo(string workingDirectory, IEnumerable<string> args)
    {
        var psi = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = workingDirectory,
            StandardOutputEncoding = Encoding.UTF8,
            StandardErrorEncoding = Encoding.UTF8,
        };
        psi.ArgumentList.Add(CliDll);
        foreach (var a in args) psi.ArgumentList.Add(a);
        return psi;
    }

    public static Result Run(string workingDirectory, params string[] args)
    {
        using var process = Process.Start(StartInfo(workingDirectory, args))!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(60_000))
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"alignsharp {string.Join(' ', args)} ran longer than 60 s");
        }
        return new Result(process.ExitCode, stdout.Result, stderr.Result);
    }

    /// <summary>The value after "PREFIX " on the first output line starting with it.</summary>
    public static string Field(string output, string prefix) =>
        output.Split('\n').Select(l => l.TrimEnd('\r')).First(l => l.StartsWith(prefix, StringComparison.Ordinal))[prefix.Length..].Trim();
}
