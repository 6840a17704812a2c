using System.Globalization;
using System.Net;
using System.Text;

namespace AlignSharp.Reports;

/// <summary>A named series of (x, y) points of a chart.</summary>
public sealed record ChartSeries(string Name, IReadOnlyList<(double X, double Y)> Points);

/// <summary>
/// Line charts as inline SVG (no scripts, no external assets): axes with round ticks, one coloured polyline with
/// point markers per series, a legend, and optionally the diagonal y = x (for calibration plots).
/// </summary>
public static class SvgChart
{
    private static readonly string[] Palette = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];
    private const int Width = 460, Height = 280, Left = 58, Right = 14, Top = 30, Bottom = 42;

    public static string Line(string title, string xLabel, string yLabel, IReadOnlyList<ChartSeries> series, bool diagonal = false, bool markers = true)
    {
        var finite = series.SelectMany(s => s.Points).Where(p => double.IsFinite(p.X) && double.IsFinite(p.Y)).ToList();
        var sb = new StringBuilder();
        sb.Append(CultureInfo.InvariantCulture, $"<svg class=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{Width}\" height=\"{Height}\" viewBox=\"0 0 {Width} {Height}\" role=\"img\" aria-label=\"{Esc(title)}\">");
        sb.Append(CultureInfo.InvariantCulture, $"<text x=\"{Width / 2}\" y=\"18\" text-anchor=\"middle\" font-size=\"13\" font-weight=\"bold\">{Esc(title)}</text>");
        if (finite.Count == 0)
        {
            sb.Append(CultureInfo.InvariantCulture, $"<text x=\"{Width / 2}\" y=\"{Height / 2}\" text-anchor=\"middle\" font-size=\"12\">no data</text></svg>");
            return sb.ToString();
        }
        double x0 = finite.Min(p => p.X), x1 = finite.Max(p => p.X), y0 = finite.Min(p => p.Y), y1 = finite.Max(p => p.Y);
        if (diagonal) { x0 = y0 = Math.Min(x0, y0); x1 = y1 = Math.Max(x1, y1); }
        (x0, x1) = Pad(x0, x1);
        (y0, y1) = Pad(y0, y1);
        var xt = Ticks(x0, x1);
        var yt = Ticks(y0, y1);
        x0 = Math.Min(x0, xt[0]); x1 = Math.Max(x1, xt[^1]); y0 = Math.Min(y0, yt[0]); y1 = Math.Max(y1, yt[^1]);
        double Px(double x) => Left + (x - x0) / (x1 - x0) * (Width - Left - Right);
        double Py(double y) => Height - Bottom - (y - y0) / (y1 - y0) * (Height - Top - Bottom);

        sb.Append(CultureInfo.InvariantCulture, $"<rect x=\"{Left}\" y=\"{Top}\" width=\"{Width - Left - Right}\" height=\"{Height - Top - Bottom}\" fill=\"none\" stroke=\"#999\"/>");
        foreach (var t in xt)
            sb.Append(CultureInfo.InvariantCulture, $"<line x1=\"{F(Px(t))}\" y1=\"{Top}\" x2=\"{F(Px(t))}\" y2=\"{Height - Bottom}\" stroke=\"#eee\"/><text x=\"{F(Px(t))}\" y=\"{Height - Bottom + 14}\" text-anchor=\"middle\" font-size=\"10\">{Tick(t)}</text>");
        foreach (var t in yt)
            sb.Append(CultureInfo.InvariantCulture, $"<line x1=\"{Left}\" y1=\"{F(Py(t))}\" x2=\"{Width - Right}\" y2=\"{F(Py(t))}\" stroke=\"#eee\"/><text x=\"{Left - 4}\" y=\"{F(Py(t) + 3)}\" text-anchor=\"end\" font-size=\"10\">{Tick(t)}</text>");
        sb.Append(CultureInfo.InvariantCulture, $"<text x=\"{(Left + Width - Right) / 2}\" y=\"{Height - 6}\" text-anchor=\"middle\" font-size=\"11\">{Esc(xLabel)}</text>");
        sb.Append(CultureInfo.InvariantCulture, $"<text transform=\"translate(13 {(Top + Height - Bottom) / 2}) rotate(-90)\" text-anchor=\"middle\" font-size=\"11\">{Esc(yLabel)}</text>");
        if (diagonal)
            sb.Append(CultureInfo.InvariantCulture, $"<line x1=\"{F(Px(x0))}\" y1=\"{F(Py(x0))}\" x2=\"{F(Px(x1))}\" y2=\"{F(Py(x1))}\" stroke=\"#888\" stroke-dasharray=\"4 3\"/>");

        for (int s = 0; s < series.Count; s++)
        {
            string color = Palette[s % Palette.Length];
            var pts = series[s].Points.Where(p => double.IsFinite(p.X) && double.IsFinite(p.Y)).ToList();
            if (pts.Count > 1)
                sb.Append(CultureInfo.InvariantCulture, $"<polyline class=\"series\" fill=\"none\" stroke=\"{color}\" stroke-width=\"1.6\" points=\"{string.Join(" ", pts.Select(p => F(Px(p.X)) + "," + F(Py(p.Y))))}\"/>");
            if (markers || pts.Count == 1)
                foreach (var p in pts)
                    sb.Append(CultureInfo.InvariantCulture, $"<circle cx=\"{F(Px(p.X))}\" cy=\"{F(Py(p.Y))}\" r=\"2.6\" fill=\"{color}\"/>");
            double ly = Top + 12 + 14 * s;
            sb.Append(CultureInfo.InvariantCulture, $"<rect x=\"{Left + 8}\" y=\"{F(ly - 8)}\" width=\"10\" height=\"10\" fill=\"{color}\"/><text x=\"{Left + 22}\" y=\"{F(ly + 1)}\" font-size=\"11\">{Esc(series[s].Name)}</text>");
        }
        sb.Append("</svg>");
        return sb.ToString();
    }

    private static (double, double) Pad(double lo, double hi)
    {
        if (hi - lo < 1e-12) { double d = Math.Abs(lo) > 1e-12 ? Math.Abs(lo) * 0.1 : 1; return (lo - d, hi + d); }
        double m = (hi - lo) * 0.04;
        return (lo - m, hi + m);
    }

    /// <summary>About five round ticks (1, 2 or 5 × 10^k apart) covering [lo, hi].</summary>
    internal static double[] Ticks(double lo, double hi)
    {
        double raw = (hi - lo) / 5, mag = Math.Pow(10, Math.Floor(Math.Log10(raw))), step = mag;
        foreach (var m in new[] { 1.0, 2, 5, 10 }) { step = m * mag; if (step >= raw) break; }
        double first = Math.Floor(lo / step) * step;
        var ticks = new List<double>();
        for (double t = first; t <= hi + step * 0.5 && ticks.Count < 12; t += step) ticks.Add(Math.Round(t / step) * step);
        return ticks.ToArray();
    }

    private static string Tick(double v) => Math.Abs(v) >= 10000 || (Math.Abs(v) < 0.001 && v != 0)
        ? v.ToString("0.#e0", CultureInfo.InvariantCulture)
        : v.ToString("0.###", CultureInfo.InvariantCulture);

    private static string F(double v) => v.ToString("0.#", CultureInfo.InvariantCulture);

    private static string Esc(string s) => WebUtility.HtmlEncode(s);
}
