using System.Buffers.Binary;
using System.Numerics;
using System.Text;

namespace AlignSharp.Training.Runs;

/// <summary>Where a run's metrics go besides metrics.jsonl (which is always written).</summary>
public interface IMetricsSink : IDisposable
{
    /// <summary>One logged step: the same step, split and metrics as the metrics.jsonl line.</summary>
    void Write(int step, string split, IEnumerable<KeyValuePair<string, double>> metrics);
}

/// <summary>The trackers of <c>--report-to</c>.</summary>
public static class MetricsSinks
{
    /// <summary>The values of <c>--report-to</c>: jsonl (metrics.jsonl only, the default), tensorboard (also DIR/runs/), none (no tracker; metrics.jsonl is still written).</summary>
    public static readonly IReadOnlyList<string> Names = ["jsonl", "tensorboard", "none"];

    public static void Validate(string? reportTo)
    {
        if (!Names.Contains(reportTo ?? "")) throw new UserInputException($"--report-to must be {string.Join(", ", Names)}, not '{reportTo}'.");
    }

    /// <summary>The sink for <paramref name="reportTo"/> in run directory <paramref name="runDir"/>, or null for none; resuming at <paramref name="resumeStep"/> (≥ 0) says so to the tracker.</summary>
    public static IMetricsSink? Create(string? reportTo, string runDir, int resumeStep = -1)
    {
        Validate(reportTo);
        return reportTo == "tensorboard" ? new TensorBoardWriter(Path.Combine(runDir, "runs"), resumeStep) : null;
    }
}

/// <summary>
/// TensorBoard scalars: one event file <c>events.out.tfevents.TIME.HOST.PID.N</c> per run (or resumed run) in a log
/// directory, written with our own minimal protobuf encoder. The file is a sequence of TFRecords (u64 length, masked
/// CRC32C of the length, data, masked CRC32C of the data; all little-endian); each record is an <c>Event</c>
/// (wall_time = 1 double, step = 2 int64, file_version = 3 string, summary = 5, session_log = 7). The first is
/// file_version "brain.Event:2"; each logged step is one Event whose Summary holds a Value (tag = 1 string,
/// simple_value = 2 float) per metric. Tags are the metrics.jsonl keys; metrics of a split other than "train" are
/// tagged "SPLIT/key" (e.g. eval/loss). A resumed run starts with SessionLog START at the first new step, which makes
/// TensorBoard drop the interrupted run's events from that step on. Each record is flushed as written.
/// </summary>
public sealed class TensorBoardWriter : IMetricsSink
{
    private static int _files;
    private readonly FileStream _file;

    public string FilePath { get; }

    public TensorBoardWriter(string logDir, int resumeStep = -1)
    {
        Directory.CreateDirectory(logDir);
        long now = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        string host = new(Environment.MachineName.Select(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' ? c : '_').ToArray());
        FilePath = Path.Combine(logDir, $"events.out.tfevents.{now}.{host}.{Environment.ProcessId}.{Interlocked.Increment(ref _files)}");
        _file = new FileStream(FilePath, FileMode.CreateNew, FileAccess.Write, FileShare.Read);
        var first = new ProtoWriter();
        first.Double(1, WallTime());
        first.String(3, "brain.Event:2");
        WriteRecord(first.ToArray());
        if (resumeStep >= 0)
        {
            var start = new ProtoWriter();
            start.Double(1, WallTime());
            start.Int64(2, resumeStep + 1);
            start.Message(7, new ProtoWriter().Int64(1, 1).ToArray());   // SessionLog { status: START }
            WriteRecord(start.ToArray());
        }
    }

    private static double WallTime() => DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() / 1000.0;

    public void Write(int step, string split, IEnumerable<KeyValuePair<string, double>> metrics)
    {
        var summary = new ProtoWriter();
        foreach (var (key, value) in metrics)
            summary.Message(1, new ProtoWriter().String(1, split == "train" ? key : $"{split}/{key}").Float(2, (float)value).ToArray());
        var e = new ProtoWriter();
        e.Double(1, WallTime());
        e.Int64(2, step);
        e.Message(5, summary.ToArray());
        WriteRecord(e.ToArray());
    }

    /// <summary>One TFRecord: u64 length, masked CRC32C of those 8 bytes, the data, masked CRC32C of the data.</summary>
    private void WriteRecord(byte[] data)
    {
        Span<byte> header = stackalloc byte[12];
        BinaryPrimitives.WriteUInt64LittleEndian(header, (ulong)data.Length);
        BinaryPrimitives.WriteUInt32LittleEndian(header[8..], MaskedCrc32C(header[..8]));
        Span<byte> footer = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(footer, MaskedCrc32C(data));
        _file.Write(header);
        _file.Write(data);
        _file.Write(footer);
        _file.Flush();
    }

    /// <summary>CRC-32C (Castagnoli; reflected polynomial 0x82F63B78, initial and final XOR 0xFFFFFFFF).</summary>
    public static uint Crc32C(ReadOnlySpan<byte> data)
    {
        uint crc = 0xFFFFFFFF;
        foreach (var b in data) crc = BitOperations.Crc32C(crc, b);
        return ~crc;
    }

    /// <summary>TFRecord's masking of a CRC: rotate right by 15 bits, add 0xA282EAD8.</summary>
    public static uint MaskedCrc32C(ReadOnlySpan<byte> data)
    {
        uint crc = Crc32C(data);
        return unchecked(((crc >> 15) | (crc << 17)) + 0xA282EAD8u);
    }

    public void Dispose() => _file.Dispose();

    /// <summary>The protobuf wire format, as much as events need: varint (wire type 0), fixed64 (1), length-delimited (2), fixed32 (5).</summary>
    private sealed class ProtoWriter
    {
        private readonly MemoryStream _buffer = new();

        private void Varint(ulong v)
        {
            while (v >= 0x80) { _buffer.WriteByte((byte)(v | 0x80)); v >>= 7; }
            _buffer.WriteByte((byte)v);
        }

        private void Key(int field, int wireType) => Varint((ulong)(field << 3 | wireType));

        public ProtoWriter Int64(int field, long v) { Key(field, 0); Varint((ulong)v); return this; }

        public ProtoWriter Double(int field, double v)
        {
            Key(field, 1);
            Span<byte> b = stackalloc byte[8];
            BinaryPrimitives.WriteDoubleLittleEndian(b, v);
            _buffer.Write(b);
            return this;
        }

        public ProtoWriter Float(int field, float v)
        {
            Key(field, 5);
            Span<byte> b = stackalloc byte[4];
            BinaryPrimitives.WriteSingleLittleEndian(b, v);
            _buffer.Write(b);
            return this;
        }

        public ProtoWriter Message(int field, byte[] bytes)
        {
            Key(field, 2);
            Varint((ulong)bytes.Length);
            _buffer.Write(bytes);
            return this;
        }

        public ProtoWriter String(int field, string s) => Message(field, Encoding.UTF8.GetBytes(s));

        public byte[] ToArray() => _buffer.ToArray();
    }
}
