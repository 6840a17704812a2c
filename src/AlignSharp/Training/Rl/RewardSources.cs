using System.Net;
using System.Text;
using System.Text.Json;
using AlignSharp.Models;
using AlignSharp.Training.Data;
using AlignSharp.Training.Rewards;

namespace AlignSharp.Training.Rl;

/// <summary>
/// What a reward source scores: for each completion, its prompt (as given in the data), the prompt text the policy
/// saw (after the chat template), and the completion text (special tokens removed); from a rollout also the policy's
/// token ids of both.
/// </summary>
public sealed record RewardInputs(IReadOnlyList<ChatContent> Prompts, IReadOnlyList<string> PromptTexts, IReadOnlyList<string> Completions)
{
    public int Count => Completions.Count;

    /// <summary>The prompts' token ids as the policy read them (null when the inputs are texts only).</summary>
    public IReadOnlyList<int[]>? PromptIds { get; init; }

    /// <summary>The completions' token ids as the policy sampled them (EOS included when generated; null for texts only).</summary>
    public IReadOnlyList<int[]>? CompletionIds { get; init; }

    /// <summary>For each completion, its prompt record's other fields as a JSON object (<see cref="PromptExample.ExtraFields"/>;
    /// null entries for records without any; null when the inputs do not come from prompt records).</summary>
    public IReadOnlyList<string?>? ExtraFields { get; init; }
}

/// <summary>One source of scores; it returns one number per completion.</summary>
public interface IRewardSource
{
    /// <summary>Used in metric names (<c>objective/scores/NAME</c>) and error messages.</summary>
    string Name { get; }

    float[] Score(RewardInputs inputs);
}

/// <summary>A reward-model directory: each (prompt, completion) encoded as the reward-model trainer encoded them, scored,
/// then normalised with the mean and standard deviation stored in <c>reward_model.json</c> (when present and asked for).</summary>
public sealed class RewardModelSource(RewardModel model, bool normalize = true, int batchSize = 8) : IRewardSource
{
    public string Name { get; init; } = "reward_model";
    public RewardModel Model => model;

    public float[] Score(RewardInputs inputs)
    {
        var sequences = new int[inputs.Count][];
        for (int i = 0; i < inputs.Count; i++) sequences[i] = model.Encode(inputs.Prompts[i], inputs.Completions[i]);
        var scores = model.ScoreSequences(sequences, batchSize);
        if (normalize) for (int i = 0; i < scores.Length; i++) scores[i] = model.Normalize(scores[i]);
        return scores;
    }
}

/// <summary>
/// A scalar-head model scoring the policy's own tokens, prompt ids then completion ids, with no detokenising and no chat
/// template: for a reward model that shares the policy's tokenizer and reads what it wrote, e.g. benchmarks on checkpoints
/// without tokenizer files (<c>alignsharp bench rl</c>). Raw scores, read at the last token.
/// </summary>
public sealed class TokenRewardModelSource : IRewardSource
{
    private readonly TransformerModel _model;
    private readonly int _batchSize;

    public TokenRewardModelSource(TransformerModel model, int batchSize = 8)
    {
        if (model.Config.Head != HeadKind.Scalar) throw new UserInputException($"A reward model needs a scalar head: {RewardModel.ScalarHeadHint}.");
        if (batchSize < 1) throw new UserInputException($"The reward model's batch size must be ≥ 1, got {batchSize}.");
        _model = model;
        _batchSize = batchSize;
    }

    public string Name { get; init; } = "reward_model";

    public float[] Score(RewardInputs inputs)
    {
        if (inputs.PromptIds is not { } prompts || inputs.CompletionIds is not { } completions)
            throw new InvalidOperationException($"Reward '{Name}' scores token ids, and these inputs carry only texts.");
        var sequences = new int[inputs.Count][];
        for (int i = 0; i < sequences.Length; i++) sequences[i] = [.. prompts[i], .. completions[i]];
        return RewardModel.ScoreSequences(_model, sequences, _batchSize);
    }
}

/// <summary>A C# function of (prompt texts, completion texts) → one reward each: the library API's reward.</summary>
public sealed class FunctionRewardSource(string name, Func<IReadOnlyList<string>, IReadOnlyList<string>, float[]> function) : IRewardSource
{
    public string Name => name;

    public float[] Score(RewardInputs inputs)
    {
        var scores = function(inputs.PromptTexts, inputs.Completions)
            ?? throw new InvalidOperationException($"Reward function '{name}' returned null.");
        if (scores.Length != inputs.Count)
            throw new InvalidOperationException($"Reward function '{name}' returned {scores.Length} rewards for {inputs.Count} completions.");
        return scores;
    }
}

/// <summary>How the HTTP reward client waits and retries.</summary>
public sealed record HttpRewardOptions
{
    /// <summary>Seconds to wait for one answer (default 60).</summary>
    public double TimeoutSeconds { get; init; } = 60;

    /// <summary>Further attempts after a timeout, a connection failure or an HTTP 5xx/429 (default 3).</summary>
    public int MaxRetries { get; init; } = 3;

    /// <summary>Wait before the first retry, doubled before each next one (default 1 s).</summary>
    public double BackoffSeconds { get; init; } = 1;

    public void Validate()
    {
        if (!(TimeoutSeconds > 0)) throw new UserInputException("--reward-timeout must be > 0 seconds.");
        if (MaxRetries < 0) throw new UserInputException("--reward-retries must be ≥ 0.");
        if (!(BackoffSeconds >= 0)) throw new UserInputException("--reward-backoff must be ≥ 0 seconds.");
    }
}

/// <summary>
/// A JSON endpoint called with POST (JSON, UTF-8). Timeouts, connection failures and HTTP 5xx/429 are retried with
/// exponential backoff; an HTTP 4xx is an error at once. Errors name <see cref="Flag"/> and the URL. Used by the reward
/// endpoint (<c>--reward-url</c>) and the evaluation judge (<c>--judge-url</c>).
/// </summary>
public sealed class JsonEndpoint : IDisposable
{
    private readonly HttpClient _client;
    private readonly HttpRewardOptions _options;

    public JsonEndpoint(string url, string flag, HttpRewardOptions? options = null)
    {
        Flag = flag;
        _options = options ?? new HttpRewardOptions();
        _options.Validate();
        if (!Uri.TryCreate(url, UriKind.Absolute, out var u) || (u.Scheme != "http" && u.Scheme != "https"))
            throw new UserInputException($"{flag} '{url}' is not an http:// or https:// URL.");
        Url = u;
        _client = new HttpClient { Timeout = TimeSpan.FromSeconds(_options.TimeoutSeconds) };
    }

    /// <summary>The flag the URL came from, for error messages.</summary>
    public string Flag { get; }
    public Uri Url { get; }

    /// <summary>What to raise when attempts run out (the end of the give-up message).</summary>
    public string RetryHint { get; init; } = "allow more time";

    /// <summary>Posts <paramref name="body"/> and returns the answer's root (an object; a non-JSON or non-object answer is an error).</summary>
    public JsonDocument Post(string body)
    {
        string? lastError = null;
        for (int attempt = 0; attempt <= _options.MaxRetries; attempt++)
        {
            if (attempt > 0) Thread.Sleep(TimeSpan.FromSeconds(_options.BackoffSeconds * Math.Pow(2, attempt - 1)));
            string answer;
            try
            {
                using var request = new HttpRequestMessage(HttpMethod.Post, Url) { Content = new StringContent(body, Encoding.UTF8, "application/json") };
                using var response = _client.Send(request);
                answer = new StreamReader(response.Content.ReadAsStream(), Encoding.UTF8).ReadToEnd();
                if ((int)response.StatusCode >= 500 || response.StatusCode == HttpStatusCode.TooManyRequests)
                {
                    lastError = $"HTTP {(int)response.StatusCode} {Snippet(answer)}";
                    continue;
                }
                if (!response.IsSuccessStatusCode)
                    throw new UserInputException($"{Flag} {Url}: HTTP {(int)response.StatusCode} {Snippet(answer)}");
            }
            catch (Exception e) when (e is TaskCanceledException or TimeoutException)
            {
                lastError = $"no answer within {_options.TimeoutSeconds:G} s";
                continue;
            }
            catch (HttpRequestException e)
            {
                lastError = e.Message;
                continue;
            }
            JsonDocument doc;
            try { doc = JsonDocument.Parse(answer); }
            catch (JsonException e)
            {
                // Python's json.dumps writes NaN, Infinity and -Infinity bare (not JSON): read them as the strings that
                // Numbers knows, so a reward function's NaN reaches the run as a non-finite score, not a parse error.
                try { doc = JsonDocument.Parse(PythonJson.QuoteLiterals(answer)); }
                catch (JsonException) { throw Bad($"the answer is not JSON ({e.Message}): {Snippet(answer)}"); }
            }
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
            {
                doc.Dispose();
                throw Bad($"the answer is not a JSON object: {Snippet(answer)}");
            }
            return doc;
        }
        throw new UserInputException($"{Flag} {Url}: gave up after {_options.MaxRetries + 1} attempts; last: {lastError}. " +
            $"Check that the server is up, or {RetryHint}.");
    }

    /// <summary>The list of <paramref name="expected"/> numbers in field <paramref name="field"/> of an answer; NaN and
    /// ±Infinity (bare, as Python writes them, or as strings) only where <paramref name="allowNonFinite"/>.</summary>
    public double[] Numbers(JsonElement answer, string field, int expected, string unit, bool allowNonFinite = false)
    {
        if (!answer.TryGetProperty(field, out var list))
            throw Bad($"the answer has no \"{field}\" field: {Snippet(answer.GetRawText())}");
        if (list.ValueKind != JsonValueKind.Array) throw Bad($"\"{field}\" is a {list.ValueKind.ToString().ToLowerInvariant()}, not a list of numbers.");
        int n = list.GetArrayLength();
        if (n != expected) throw Bad($"the answer has {n} {field} for {expected} {unit} (one number per {unit.TrimEnd('s')}, in order).");
        var result = new double[n];
        int i = 0;
        foreach (var r in list.EnumerateArray())
        {
            if (r.ValueKind == JsonValueKind.String && PythonJson.NonFinite(r.GetString()) is double nonFinite)
            {
                if (!allowNonFinite) throw Bad($"{field}[{i}] is {r.GetString()}, not a finite number.");
                result[i++] = nonFinite;
                continue;
            }
            if (r.ValueKind != JsonValueKind.Number) throw Bad($"{field}[{i}] is {(r.ValueKind == JsonValueKind.String ? $"the string \"{r.GetString()}\"" : r.ValueKind.ToString().ToLowerInvariant())}, not a number.");
            result[i++] = r.GetDouble();
        }
        return result;
    }

    public UserInputException Bad(string problem) => new($"{Flag} {Url}: {problem}");

    private static string Snippet(string s) => s.Length <= 200 ? s : s[..200] + "…";

    public void Dispose() => _client.Dispose();
}

/// <summary>
/// A reward endpoint: POST <c>{"prompts": [...], "completions": [...]}</c> (JSON, UTF-8), answer <c>{"rewards": [...]}</c>
/// with one number per completion. Timeouts, connection failures and HTTP 5xx/429 are retried with exponential backoff;
/// an answer of the wrong shape (not JSON, no "rewards", wrong count, a non-number) or an HTTP 4xx is an error at once.
/// </summary>
public sealed class HttpRewardSource : IRewardSource, IDisposable
{
    private readonly JsonEndpoint _endpoint;

    public HttpRewardSource(string url, HttpRewardOptions? options = null, string flag = "--reward-url")
        => _endpoint = new JsonEndpoint(url, flag, options) { RetryHint = "raise --reward-timeout / --reward-retries" };

    public string Name { get; init; } = "reward_url";

    /// <summary>
    /// The request body for (prompt text, completion) pairs: "prompts" and "completions", then, as TRL passes a dataset's
    /// extra columns to reward functions, one list per other field of the prompt records (in the order first met), each
    /// completion's prompt record's value or null where that record lacks it. A field named "prompts" or "completions"
    /// would collide with the request's own and is refused.
    /// </summary>
    public static string Request(IReadOnlyList<string> prompts, IReadOnlyList<string> completions, IReadOnlyList<string?>? extraFields = null)
    {
        var rows = (extraFields ?? []).Select(f => f == null ? null : JsonDocument.Parse(f)).ToArray();
        try
        {
            var names = rows.Where(r => r != null).SelectMany(r => r!.RootElement.EnumerateObject().Select(p => p.Name)).Distinct().ToList();
            if (names.FirstOrDefault(n => n is "prompts" or "completions") is { } clash)
                throw new UserInputException($"--reward-url: the prompt records' field \"{clash}\" would be sent beside the request's own \"{clash}\" list; rename it.");
            var buffer = new System.Buffers.ArrayBufferWriter<byte>();
            using (var w = new Utf8JsonWriter(buffer))
            {
                w.WriteStartObject();
                w.WriteStartArray("prompts");
                foreach (var p in prompts) w.WriteStringValue(p);
                w.WriteEndArray();
                w.WriteStartArray("completions");
                foreach (var c in completions) w.WriteStringValue(c);
                w.WriteEndArray();
                foreach (var name in names)
                {
                    w.WriteStartArray(name);
                    foreach (var row in rows)
                        if (row != null && row.RootElement.TryGetProperty(name, out var value)) value.WriteTo(w);
                        else w.WriteNullValue();
                    w.WriteEndArray();
                }
                w.WriteEndObject();
            }
            return Encoding.UTF8.GetString(buffer.WrittenSpan);
        }
        finally
        {
            foreach (var r in rows) r?.Dispose();
        }
    }

    public float[] Score(RewardInputs inputs)
    {
        using var answer = _endpoint.Post(Request(inputs.PromptTexts, inputs.Completions, inputs.ExtraFields));
        // A non-finite reward skips the step (RlTrainer), as one from any other source does.
        return _endpoint.Numbers(answer.RootElement, "rewards", inputs.Count, "completions", allowNonFinite: true).Select(x => (float)x).ToArray();
    }

    public void Dispose() => _endpoint.Dispose();
}

/// <summary>
/// The score of a completion: Σ_i weight_i · source_i, each source's raw scores kept for metrics.
/// </summary>
public sealed class RewardFunction
{
    public IReadOnlyList<(IRewardSource Source, double Weight)> Sources { get; }

    public RewardFunction(IEnumerable<(IRewardSource Source, double Weight)> sources)
    {
        Sources = sources.ToArray();
        if (Sources.Count == 0) throw new UserInputException("No reward source: give --reward-model DIR and/or --reward-url URL (or a reward function in the library API).");
        foreach (var (s, w) in Sources)
            if (!double.IsFinite(w)) throw new UserInputException($"The weight of reward '{s.Name}' must be a finite number.");
        if (Sources.Select(s => s.Source.Name).Distinct().Count() != Sources.Count)
            throw new UserInputException("Two reward sources have the same name; give each its own.");
    }

    public RewardFunction(IRewardSource source) : this([(source, 1.0)]) { }

    public (float[] Total, IReadOnlyDictionary<string, float[]> Parts) Score(RewardInputs inputs)
    {
        var total = new double[inputs.Count];
        var parts = new Dictionary<string, float[]>();
        foreach (var (source, weight) in Sources)
        {
            var s = source.Score(inputs);
            parts[source.Name] = s;
            for (int i = 0; i < total.Length; i++) total[i] += weight * s[i];
        }
        return (total.Select(x => (float)x).ToArray(), parts);
    }
}
