using System.Diagnostics;
using System.Text.Json;
using AlignSharp.Training.Runs;

namespace AlignSharp.Tests.Training;

/// <summary>TensorBoard event files read back by an independent Python reader (tests/.../read_tfevents.py: its own CRC-32C and protobuf decoding).</summary>
public sealed class TensorBoardTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("alignsharp-tb-").FullName;
    public void Dispose() => Directory.Delete(_dir, recursive: true);
    private string P(string name) => Path.Combine(_dir, name);

    private static List<JsonElement> ReadEvents(string file)
    {
        const string python = "/usr/bin/python3";
        Assert.True(File.Exists(python), $"{python} is needed to read the event files independently");
        var psi = new ProcessStartInfo(python) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(Path.Combine(CliRunner.RepoRoot, "tests", "AlignSharp.Tests", "Training", "read_tfevents.py"));
        psi.ArgumentList.Add(file);
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        string stderr = p.StandardError.ReadToEnd();
        p.WaitForExit();
        Assert.True(p.ExitCode == 0, stderr);
        return stdout.Result.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => JsonDocument.Parse(l).RootElement).ToList();
    }

    private static Dictionary<string, double> Values(JsonElement e) =>
        e.GetProperty("values").EnumerateArray().ToDictionary(v => v[0].GetString()!, v => v[1].GetDouble());

    [Fact]
    public void Crc32CHasItsCheckValue() => Assert.Equal(0xE3069283u, TensorBoardWriter.Crc32C("123456789"u8));

    [Fact]
    public void EventsCarryTheVersionStepsTagsAndValues()
    {
        string file;
        using (var w = new TensorBoardWriter(P("runs")))
        {
            file = w.FilePath;
            w.Write(1, "train", [new("loss", 2.5), new("objective/kl", 0.125)]);
            w.Write(1, "eval", [new("loss", 3)]);
            w.Write(300, "train", [new("loss", -0.001)]);
        }
        Assert.StartsWith("events.out.tfevents.", Path.GetFileName(file));
        var events = ReadEvents(file);
        Assert.Equal(4, events.Count);
        Assert.Equal("brain.Event:2", events[0].GetProperty("file_version").GetString());
        Assert.True(Math.Abs(events[0].GetProperty("wall_time").GetDouble() - DateTimeOffset.UtcNow.ToUnixTimeSeconds()) < 600);
        Assert.Equal(1, events[1].GetProperty("step").GetInt64());
        Assert.Equal(new Dictionary<string, double> { ["loss"] = 2.5, ["objective/kl"] = 0.125 }, Values(events[1]));
        Assert.Equal(new Dictionary<string, double> { ["eval/loss"] = 3 }, Values(events[2]));
        Assert.Equal(300, events[3].GetProperty("step").GetInt64());   // a two-byte varint
        Assert.Equal(-0.001, Values(events[3])["loss"], 6);

        // A resumed run: a new file whose second event is SessionLog START at the first new step.
        using (var w = new TensorBoardWriter(P("runs"), resumeStep: 5)) file = w.FilePath;
        var resumed = ReadEvents(file);
        Assert.Equal(6, resumed[1].GetProperty("step").GetInt64());
        Assert.Equal(1, resumed[1].GetProperty("session_log").GetProperty("1").GetInt32());
    }

    [Fact]
    public void ReportToTensorBoardWritesTheMetricsOfMetricsJsonl()
    {
        string model = TinyModels.Create(P("base"));
        TinyModels.WriteJsonl(P("sft.jsonl"), Enumerable.Range(0, 12).Select(i => (object)new { prompt = $"q{i}", completion = $" answer {i}" }));
        var r = CliRunner.Run("sft", "--model", model, "--data", P("sft.jsonl"), "--out", P("run"), "--max-steps", "4", "--batch-size", "2",
            "--logging-steps", "2", "--eval-split", "0.25", "--eval-steps", "2", "--save-steps", "0", "--report-to", "tensorboard");
        Assert.True(r.ExitCode == 0, r.StdErr);
        var files = Directory.GetFiles(P("run/runs"), "events.out.tfevents.*");
        var events = ReadEvents(Assert.Single(files));
        Assert.Equal("brain.Event:2", events[0].GetProperty("file_version").GetString());

        var lines = File.ReadAllLines(P("run/metrics.jsonl")).Select(l => JsonDocument.Parse(l).RootElement).ToList();
        Assert.Contains(lines, l => l.GetProperty("split").GetString() == "eval");
        Assert.Equal(lines.Count, events.Count - 1);
        for (int i = 0; i < lines.Count; i++)
        {
            var line = lines[i];
            string split = line.GetProperty("split").GetString()!;
            Assert.Equal(line.GetProperty("step").GetInt64(), events[i + 1].GetProperty("step").GetInt64());
            var values = Values(events[i + 1]);
            var expected = line.EnumerateObject().Where(p => p.Name is not ("step" or "time" or "split")).ToList();
            Assert.Equal(expected.Count, values.Count);
            foreach (var p in expected)
            {
                double v = p.Value.GetDouble();
                Assert.Equal((double)(float)v, values[split == "train" ? p.Name : $"{split}/{p.Name}"]);
            }
        }

        var bad = CliRunner.Run("sft", "--model", model, "--data", P("sft.jsonl"), "--out", P("run2"), "--max-steps", "1", "--report-to", "wandb");
        Assert.NotEqual(0, bad.ExitCode);
        Assert.Contains("--report-to must be jsonl, tensorboard, none", bad.StdErr);
        var plain = CliRunner.Run("sft", "--model", model, "--data", P("sft.jsonl"), "--out", P("run3"), "--max-steps", "1");
        Assert.True(plain.ExitCode == 0, plain.StdErr);
        Assert.False(Directory.Exists(P("run3/runs")));

        // --overwrite deletes the old run's event files with its metrics: TensorBoard shows only the new run.
        var again = CliRunner.Run("sft", "--model", model, "--data", P("sft.jsonl"), "--out", P("run"), "--max-steps", "1", "--save-steps", "0",
            "--report-to", "tensorboard", "--overwrite");
        Assert.True(again.ExitCode == 0, again.StdErr);
        var fresh = ReadEvents(Assert.Single(Directory.GetFiles(P("run/runs"), "events.out.tfevents.*")));
        Assert.Equal([1L], fresh.Skip(1).Select(e => e.GetProperty("step").GetInt64()).Distinct());
    }
}
