using System.Globalization;

namespace AlignSharp.Training.Runs;

/// <summary>
/// Progress on stderr: a redrawn bar with step, loss, tokens/s and ETA on an interactive terminal, plain
/// periodic log lines when stderr is redirected (logs, CI).
/// </summary>
public sealed class Progress(string task, int totalSteps, int logEvery, TextWriter? output = null)
{
    private readonly TextWriter _out = output ?? Console.Error;
    private readonly bool _interactive = output == null && !Console.IsErrorRedirected;
    private readonly DateTime _start = DateTime.UtcNow;
    private int _firstStep = -1;

    public void Report(int step, IReadOnlyDictionary<string, double> metrics)
    {
        if (_firstStep < 0) _firstStep = step - 1;
        double elapsed = (DateTime.UtcNow - _start).TotalSeconds;
        int done = step - _firstStep;
        double eta = done > 0 ? elapsed / done * (totalSteps - step) : 0;
        string stats = string.Join("  ", metrics.Select(kv => $"{kv.Key} {Format(kv.Value)}"));
        if (_interactive)
        {
            const int width = 24;
            int filled = totalSteps > 0 ? (int)Math.Round(width * (double)step / totalSteps) : 0;
            string bar = new string('█', Math.Clamp(filled, 0, width)) + new string('░', width - Math.Clamp(filled, 0, width));
            _out.Write($"\r{task} {bar} {step}/{totalSteps}  {stats}  ETA {TimeSpan.FromSeconds(Math.Round(eta)):hh\\:mm\\:ss}   ");
            if (step >= totalSteps) _out.WriteLine();
        }
        else if (step % logEvery == 0 || step == totalSteps || step == _firstStep + 1)
        {
            _out.WriteLine($"{task} step {step}/{totalSteps}  {stats}  elapsed {elapsed:F0}s  ETA {eta:F0}s");
        }
    }

    public void Message(string text)
    {
        if (_interactive) _out.WriteLine();
        _out.WriteLine(text);
    }

    private static string Format(double v) => Math.Abs(v) >= 1000 ? v.ToString("F0", CultureInfo.InvariantCulture)
        : Math.Abs(v) >= 1 ? v.ToString("F3", CultureInfo.InvariantCulture) : v.ToString("G4", CultureInfo.InvariantCulture);
}
