using System.Diagnostics;
using System.Text;
using System.Text.Json;

namespace AlignSharp.Training.Runs;

/// <summary>
/// Appends one JSON object per logged step to metrics.jsonl: <c>step</c>, <c>time</c> (seconds since the run
/// started, resumed runs continuing the clock), <c>split</c> ("train" or "eval"), then the metrics in the order
/// given. Each line is flushed as written, so the file is complete up to the last finished step. The same numbers also go
/// to the tracker of <c>--report-to</c> (<see cref="MetricsSinks"/>), in the run directory that holds the file.
/// </summary>
public sealed class MetricsLog : IDisposable
{
    private readonly StreamWriter _writer;
    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private readonly double _timeOffset;
    private readonly IMetricsSink? _sink;

    /// <summary>Opens the log; when resuming at <paramref name="resumeStep"/>, lines from later steps (written after that
    /// checkpoint by the interrupted run) are dropped so the log reads as one uninterrupted run.</summary>
    public MetricsLog(string path, int resumeStep = -1, string? reportTo = null)
    {
        _sink = MetricsSinks.Create(reportTo ?? "jsonl", Path.GetDirectoryName(Path.GetFullPath(path))!, resumeStep);
        _timeOffset = 0;
        if (resumeStep >= 0 && File.Exists(path))
        {
            var kept = new List<string>();
            int read = 0;
            foreach (var line in File.ReadLines(path))
            {
                read++;
                try
                {
                    using var doc = JsonDocument.Parse(line);
                    int step = doc.RootElement.GetProperty("step").GetInt32();
                    if (step > resumeStep) continue;
                    if (doc.RootElement.TryGetProperty("time", out var t)) _timeOffset = Math.Max(_timeOffset, t.GetDouble());
                    kept.Add(line);
                }
                catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException) { }
            }
            // Swapped in whole (a kill while the lines are written must not leave a cut log); only when lines were dropped
            // or the last one lacks its newline (the next line would be appended to it).
            if (kept.Count != read || !EndsWithNewline(path))
                Models.Checkpoints.AtomicFile.Write(path, stream =>
                {
                    using var w = new StreamWriter(stream, new UTF8Encoding(false), leaveOpen: true);
                    foreach (var line in kept) w.Write(line + "\n");
                });
            _writer = new StreamWriter(path, append: true, new UTF8Encoding(false));
        }
        else
        {
            _writer = new StreamWriter(path, append: false, new UTF8Encoding(false));
        }
    }

    private static bool EndsWithNewline(string path)
    {
        using var f = File.OpenRead(path);
        if (f.Length == 0) return true;
        f.Seek(-1, SeekOrigin.End);
        return f.ReadByte() == '\n';
    }

    public double Elapsed => _timeOffset + _clock.Elapsed.TotalSeconds;

    public void Write(int step, string split, IEnumerable<KeyValuePair<string, double>> metrics)
    {
        metrics = metrics as IReadOnlyCollection<KeyValuePair<string, double>> ?? metrics.ToList();
        var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer))
        {
            w.WriteStartObject();
            w.WriteNumber("step", step);
            w.WriteNumber("time", Math.Round(Elapsed, 3));
            w.WriteString("split", split);
            foreach (var (k, v) in metrics)
            {
                if (double.IsFinite(v)) w.WriteNumber(k, v);
                else w.WriteString(k, v.ToString(System.Globalization.CultureInfo.InvariantCulture));
            }
            w.WriteEndObject();
        }
        _writer.WriteLine(Encoding.UTF8.GetString(buffer.ToArray()));
        _writer.Flush();
        _sink?.Write(step, split, metrics);
    }

    /// <summary>Any JSON-serialisable record (e.g. sample completions) on its own line.</summary>
    public void WriteRecord(object record)
    {
        _writer.WriteLine(JsonSerializer.Serialize(record, RunDirectory.Json).Replace("\n", "").Replace("  ", ""));
        _writer.Flush();
    }

    public void Dispose()
    {
        _writer.Dispose();
        _sink?.Dispose();
    }
}
