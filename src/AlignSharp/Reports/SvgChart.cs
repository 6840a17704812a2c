using System.Globalization;
using System.Net;
using System.Text;

namespace AlignSharp.Reports;

/// <summary>A named series of (x, y) points of a chart.</summary>
public sealed record ChartSeries(string Name, IReadOnlyList<(double X, double Y)> Points);

/// <summary>
/// Line charts as inline SVG (no scripts, no external assets). The x axis spans exactly the data (a chart over steps
/// starts at the first logged step); the y axis spans the data with a small margin; ticks are round numbers (1, 2 or
/// 5 × 10^k apart) inside those ranges, labelled with as many decimals as their spacing needs. One coloured polyline
/// (with point markers when asked) per series; the legend sits to the right of the plot, never over the lines.
/// Optionally the diagonal y = x (calibration plots).
/// </summary>
public static class SvgChart
{
    private static readonly string[] Palette = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];
    public const int Height = 280, Left = 62, Right = 14, Top = 30, Bottom = 42, PlotWidth = 380, LegendWidth = 130;
    private const int LegendChars = 20;

    public static string Line(string title, string xLabel, string yLabel, IReadOnlyList<ChartSeries> series, bool diagonal = false, bool markers = true)
    {
        var finite = series.SelectMany(s => s.Points).Where(p => double.IsFinite(p.X) && double.IsFinite(p.Y)).ToList();
        bool legend = series.Count > 1 || (series.Count == 1 && series[0].Name.Length > 0);
        int width = Left + PlotWidth + Right + (legend ? LegendWidth : 0);
        int plotRight = Left + PlotWidth;
        var sb = new StringBuilder();
        sb.Append(CultureInfo.InvariantCulture, $"<svg class=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{Height}\" viewBox=\"0 0 {width} {Height}\" role=\"img\" aria-label=\"{Esc(title)}\">");
        sb.Append(CultureInfo.InvariantCulture, $"<text x=\"{(Left + plotRight) / 2}\" y=\"18\" text-anchor=\"middle\" font-size=\"13\" font-weight=\"bold\">{Esc(title)}</text>");
        if (finite.Count == 0)
        {
            sb.Append(CultureInfo.InvariantCulture, $"<text x=\"{(Left + plotRight) / 2}\" y=\"{Height / 2}\" text-anchor=\"middle\" font-size=\"12\">no data</text></svg>");
            return sb.ToString();
        }
        double x0 = finite.Min(p => p.X), x1 = finite.Max(p => p.X), y0 = finite.Min(p => p.Y), y1 = finite.Max(p => p.Y);
        if (diagonal) { x0 = y0 = Math.Min(x0, y0); x1 = y1 = Math.Max(x1, y1); }
        (x0, x1) = Widen(x0, x1, 0);
        (y0, y1) = Widen(y0, y1, diagonal ? 0 : 0.05);
        var (xt, xStep) = Ticks(x0, x1);
        var (yt, yStep) = Ticks(y0, y1);
        double Px(double x) => Left + (x - x0) / (x1 - x0) * PlotWidth;
        double Py(double y) => Height - Bottom - (y - y0) / (y1 - y0) * (Height - Top - Bottom);

        sb.Append(CultureInfo.InvariantCulture, $"<rect class=\"plot\" x=\"{Left}\" y=\"{Top}\" width=\"{PlotWidth}\" height=\"{Height - Top - Bottom}\" fill=\"none\" stroke=\"#999\"/>");
        foreach (var t in xt)
            sb.Append(CultureInfo.InvariantCulture, $"<line x1=\"{F(Px(t))}\" y1=\"{Top}\" x2=\"{F(Px(t))}\" y2=\"{Height - Bottom}\" stroke=\"#eee\"/><text class=\"xtick\" x=\"{F(Px(t))}\" y=\"{Height - Bottom + 14}\" text-anchor=\"middle\" font-size=\"10\">{TickLabel(t, xStep)}</text>");
        foreach (var t in yt)
            sb.Append(CultureInfo.InvariantCulture, $"<line x1=\"{Left}\" y1=\"{F(Py(t))}\" x2=\"{plotRight}\" y2=\"{F(Py(t))}\" stroke=\"#eee\"/><text class=\"ytick\" x=\"{Left - 4}\" y=\"{F(Py(t) + 3)}\" text-anchor=\"end\" font-size=\"10\">{TickLabel(t, yStep)}</text>");
        sb.Append(CultureInfo.InvariantCulture, $"<text x=\"{(Left + plotRight) / 2}\" y=\"{Height - 6}\" text-anchor=\"middle\" font-size=\"11\">{Esc(xLabel)}</text>");
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
            if (legend)
            {
                string name = series[s].Name.Length > LegendChars ? series[s].Name[..(LegendChars - 1)] + "…" : series[s].Name;
                int lx = plotRight + Right, ly = Top + 8 + 16 * s;
                sb.Append(CultureInfo.InvariantCulture, $"<rect x=\"{lx}\" y=\"{ly - 8}\" width=\"10\" height=\"10\" fill=\"{color}\"/><text class=\"legend\" x=\"{lx + 14}\" y=\"{ly + 1}\" font-size=\"11\"><title>{Esc(series[s].Name)}</title>{Esc(name)}</text>");
            }
        }
        sb.Append("</svg>");
        return sb.ToString();
    }

    /// <summary>[lo, hi] widened by <paramref name="margin"/> of its span on each side; a single value gets ±10% of itself (±1 at 0).</summary>
    private static (double, double) Widen(double lo, double hi, double margin)
    {
        if (hi - lo <= 1e-12 * Math.Max(1, Math.Abs(hi))) { double d = Math.Abs(lo) > 1e-12 ? Math.Abs(lo) * 0.1 : 1; return (lo - d, hi + d); }
        double m = (hi - lo) * margin;
        return (lo - m, hi + m);
    }

    /// <summary>Round ticks (1, 2 or 5 × 10^k apart, about five) inside [lo, hi], and their spacing.</summary>
    internal static (double[] Ticks, double Step) Ticks(double lo, double hi)
    {
        double raw = (hi - lo) / 5, mag = Math.Pow(10, Math.Floor(Math.Log10(raw))), step = mag;
        foreach (var m in new[] { 1.0, 2, 5, 10 }) { step = m * mag; if (step >= raw) break; }
        var ticks = new List<double>();
        for (double k = Math.Ceiling(lo / step - 1e-9); k * step <= hi + step * 1e-9 && ticks.Count < 12; k++) ticks.Add(k * step);
        return (ticks.ToArray(), step);
    }

    /// <summary>A tick value with the decimals its spacing needs (spacing 0.02 → two), in scientific notation when very large or small.</summary>
    internal static string TickLabel(double v, double step)
    {
        if (Math.Abs(v) < step * 1e-6) v = 0;
        if (Math.Abs(v) >= 1e6 || step < 1e-4) return v.ToString(v == 0 ? "0" : "0.##e0", CultureInfo.InvariantCulture);
        int decimals = Math.Max(0, (int)Math.Ceiling(-Math.Log10(step) - 1e-9));
        return v.ToString("F" + decimals, CultureInfo.InvariantCulture);
    }

    private static string F(double v) => v.ToString("0.#", CultureInfo.InvariantCulture);

    private static string Esc(string s) => WebUtility.HtmlEncode(s);
}
