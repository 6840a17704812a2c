using System.Globalization;

namespace AlignSharp.Training.Runs;

/// <summary>
/// Progress on stderr: on an interactive terminal a bar with step, the last metrics, elapsed time and ETA, redrawn every
/// second and after every step (not only at logging steps); plain log lines at logging steps when stderr is redirected
/// (logs, CI).
/// </summary>
public sealed class Progress : IDisposable
{
    private readonly string _task;
    private readonly int _logEvery;
    private readonly TextWriter _out;
    private readonly bool _interactive;
    private readonly DateTime _start = DateTime.UtcNow;
    private readonly Timer? _timer;
    private readonly Lock _gate = new();
    private int _firstStep = -1, _step;

    /// <summary>Steps in the run (known once the data is loaded).</summary>
    public int TotalSteps { get; set; }
    private string _stats = "";

    public Progress(string task, int totalSteps, int logEvery, TextWriter? output = null)
    {
        _task = task; TotalSteps = totalSteps; _logEvery = logEvery;
        _out = output ?? Console.Error;
        _interactive = ReferenceEquals(_out, Console.Error) && !Console.IsErrorRedirected;
        if (_interactive) _timer = new Timer(_ => Redraw(), null, TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(1));
    }

    /// <summary>A step finished (called after every step): the bar moves on; no log line.</summary>
    public void Advance(int step)
    {
        lock (_gate)
        {
            if (_firstStep < 0) _firstStep = step - 1;
            _step = step;
        }
        if (_interactive) Redraw();
    }

    /// <summary>A logged step with its metrics: redrawn on a terminal, a log line otherwise (every --logging-steps).</summary>
    public void Report(int step, IReadOnlyDictionary<string, double> metrics)
    {
        string stats = string.Join("  ", metrics.Select(kv => $"{kv.Key} {Format(kv.Value)}"));
        lock (_gate)
        {
            if (_firstStep < 0) _firstStep = step - 1;
            _step = step;
            _stats = stats;
        }
        if (_interactive) Redraw();
        else if (step % _logEvery == 0 || step == TotalSteps || step == _firstStep + 1)
        {
            var (elapsed, eta) = Times();
            _out.WriteLine($"{_task} step {step}/{TotalSteps}  {stats}  elapsed {elapsed:F0}s  ETA {eta:F0}s");
        }
    }

    private (double Elapsed, double Eta) Times()
    {
        double elapsed = (DateTime.UtcNow - _start).TotalSeconds;
        int done = _step - _firstStep;
        return (elapsed, done > 0 ? elapsed / done * (TotalSteps - _step) : 0);
    }

    private void Redraw()
    {
        lock (_gate)
        {
            if (_firstStep < 0) return;
            var (elapsed, eta) = Times();
            const int width = 24;
            int filled = TotalSteps > 0 ? Math.Clamp((int)Math.Round(width * (double)_step / TotalSteps), 0, width) : 0;
            string bar = new string('█', filled) + new string('░', width - filled);
            _out.Write($"\r{_task} {bar} {_step}/{TotalSteps}  {_stats}  {Clock(elapsed)} ETA {Clock(eta)}   ");
        }
    }

    private static string Clock(double seconds) => TimeSpan.FromSeconds(Math.Round(seconds)).ToString(@"hh\:mm\:ss", CultureInfo.InvariantCulture);

    public void Message(string text)
    {
        lock (_gate)
        {
            if (_interactive && _firstStep >= 0) _out.WriteLine();
            _out.WriteLine(text);
        }
    }

    public void Dispose()
    {
        _timer?.Dispose();
        lock (_gate)
        {
            if (_interactive && _firstStep >= 0) { _firstStep = -1; _out.WriteLine(); }
        }
    }

    private static string Format(double v) => Math.Abs(v) >= 1000 ? v.ToString("F0", CultureInfo.InvariantCulture)
        : Math.Abs(v) >= 1 ? v.ToString("F3", CultureInfo.InvariantCulture) : v.ToString("G4", CultureInfo.InvariantCulture);
}
