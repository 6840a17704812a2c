using System.Globalization;
using System.Net;
using System.Text;

namespace AlignSharp.Reports;

/// <summary>A named series of (x, y) points of a chart.</summary>
public sealed record ChartSeries(string Name, IReadOnlyList<(double X, double Y)> Points);

/// <summary>
/// Line charts as inline SVG (no scripts, no external assets). The x axis spans exactly the data (a chart over steps
/// starts at the first logged step); the y axis spans the finite data with a small margin; ticks are round numbers (1, 2
/// or 5 × 10^k apart) inside those ranges, labelled with as many decimals as their spacing needs. Ranges are computed
/// without overflow, so values up to ±double.MaxValue are placed. One coloured polyline per series, broken where a value
/// is not finite (NaN, ±∞): such a point is a dashed vertical line in the series' colour labelled "NaN", "+∞" or "−∞"
/// (with a tooltip naming series and x), and the series' legend entry notes it ("NaN at step 3"); a series without a finite
/// value still has its legend entry ("NaN at every step"). Points are drawn in the order given (callers sort them); a point
/// between two breaks gets a marker. The legend sits to the right of the plot, never over the lines; names too long for it
/// are shortened so that distinct names stay distinct (<see cref="LegendNames"/>). Optionally the diagonal y = x
/// (calibration plots).
/// </summary>
public static class SvgChart
{
    private static readonly string[] Palette = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];
    public const int Height = 280, Left = 62, Right = 14, Top = 30, Bottom = 42, PlotWidth = 380, LegendWidth = 130;
    internal const int LegendChars = 20;
    private const int LegendLine = 13;

    public static string Line(string title, string xLabel, string yLabel, IReadOnlyList<ChartSeries> series, bool diagonal = false, bool markers = true)
    {
        var located = series.SelectMany(s => s.Points).Where(p => double.IsFinite(p.X)).ToList();
        var finite = located.Where(p => double.IsFinite(p.Y)).ToList();
        bool legend = series.Count > 1 || (series.Count == 1 && series[0].Name.Length > 0);
        int width = Left + PlotWidth + Right + (legend ? LegendWidth : 0);
        int plotRight = Left + PlotWidth;

        // The legend first: its entries (name lines, then the note of non-finite values) may need more than the plot's height.
        var names = LegendNames(series.Select(s => s.Name).ToList(), LegendChars);
        var entries = series.Select((s, i) => (Lines: names[i], Note: NonFiniteNote(s.Points, xLabel))).ToList();
        int legendBottom = Top + entries.Sum(e => LegendLine * (e.Lines.Count + (e.Note == null ? 0 : 1)) + 4);
        int height = legend ? Math.Max(Height, legendBottom + 6) : Height;

        var sb = new StringBuilder();
        sb.Append(CultureInfo.InvariantCulture, $"<svg class=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"{Esc(title)}\">");
        sb.Append(CultureInfo.InvariantCulture, $"<text x=\"{(Left + plotRight) / 2}\" y=\"18\" text-anchor=\"middle\" font-size=\"13\" font-weight=\"bold\">{Esc(title)}</text>");
        if (legend)
        {
            int ly = Top + 8;
            for (int s = 0; s < series.Count; s++)
            {
                int lx = plotRight + Right;
                sb.Append(CultureInfo.InvariantCulture, $"<rect x=\"{lx}\" y=\"{ly - 8}\" width=\"10\" height=\"10\" fill=\"{Palette[s % Palette.Length]}\"/><text class=\"legend\" x=\"{lx + 14}\" y=\"{ly + 1}\" font-size=\"11\"><title>{Esc(series[s].Name)}</title>");
                for (int l = 0; l < entries[s].Lines.Count; l++)
                    sb.Append(l == 0 ? "" : string.Create(CultureInfo.InvariantCulture, $"<tspan x=\"{lx + 14}\" dy=\"{LegendLine}\">")).Append(Esc(entries[s].Lines[l])).Append(l == 0 ? "" : "</tspan>");
                sb.Append("</text>");
                ly += LegendLine * entries[s].Lines.Count;
                if (entries[s].Note is { } note)
                {
                    sb.Append(CultureInfo.InvariantCulture, $"<text class=\"legend-note\" x=\"{lx + 14}\" y=\"{ly + 1}\" font-size=\"10\" fill=\"#b00\">{Esc(note)}</text>");
                    ly += LegendLine;
                }
                ly += 4;
            }
        }
        if (located.Count == 0)
        {
            sb.Append(CultureInfo.InvariantCulture, $"<text x=\"{(Left + plotRight) / 2}\" y=\"{Height / 2}\" text-anchor=\"middle\" font-size=\"12\">no data</text></svg>");
            return sb.ToString();
        }
        double x0 = located.Min(p => p.X), x1 = located.Max(p => p.X);
        double y0 = finite.Count > 0 ? finite.Min(p => p.Y) : 0, y1 = finite.Count > 0 ? finite.Max(p => p.Y) : 0;
        if (diagonal && finite.Count > 0) { x0 = y0 = Math.Min(x0, y0); x1 = y1 = Math.Max(x1, y1); }
        (x0, x1) = Widen(x0, x1, 0);
        (y0, y1) = Widen(y0, y1, diagonal ? 0 : 0.05);
        var (xt, xStep) = Ticks(x0, x1);
        var (yt, yStep) = finite.Count > 0 ? Ticks(y0, y1) : ([], 1);
        double Px(double x) => Left + Fraction(x, x0, x1) * PlotWidth;
        double Py(double y) => Height - Bottom - Fraction(y, y0, y1) * (Height - Top - Bottom);

        sb.Append(CultureInfo.InvariantCulture, $"<rect class=\"plot\" x=\"{Left}\" y=\"{Top}\" width=\"{PlotWidth}\" height=\"{Height - Top - Bottom}\" fill=\"none\" stroke=\"#999\"/>");
        foreach (var t in xt)
            sb.Append(CultureInfo.InvariantCulture, $"<line x1=\"{F(Px(t))}\" y1=\"{Top}\" x2=\"{F(Px(t))}\" y2=\"{Height - Bottom}\" stroke=\"#eee\"/><text class=\"xtick\" x=\"{F(Px(t))}\" y=\"{Height - Bottom + 14}\" text-anchor=\"middle\" font-size=\"10\">{TickLabel(t, xStep)}</text>");
        foreach (var t in yt)
            sb.Append(CultureInfo.InvariantCulture, $"<line x1=\"{Left}\" y1=\"{F(Py(t))}\" x2=\"{plotRight}\" y2=\"{F(Py(t))}\" stroke=\"#eee\"/><text class=\"ytick\" x=\"{Left - 4}\" y=\"{F(Py(t) + 3)}\" text-anchor=\"end\" font-size=\"10\">{TickLabel(t, yStep)}</text>");
        if (finite.Count == 0)
            sb.Append(CultureInfo.InvariantCulture, $"<text x=\"{(Left + plotRight) / 2}\" y=\"{(Top + Height - Bottom) / 2}\" text-anchor=\"middle\" font-size=\"12\">no finite value</text>");
        sb.Append(CultureInfo.InvariantCulture, $"<text x=\"{(Left + plotRight) / 2}\" y=\"{Height - 6}\" text-anchor=\"middle\" font-size=\"11\">{Esc(xLabel)}</text>");
        sb.Append(CultureInfo.InvariantCulture, $"<text transform=\"translate(13 {(Top + Height - Bottom) / 2}) rotate(-90)\" text-anchor=\"middle\" font-size=\"11\">{Esc(yLabel)}</text>");
        if (diagonal && finite.Count > 0)
            sb.Append(CultureInfo.InvariantCulture, $"<line x1=\"{F(Px(x0))}\" y1=\"{F(Py(x0))}\" x2=\"{F(Px(x1))}\" y2=\"{F(Py(x1))}\" stroke=\"#888\" stroke-dasharray=\"4 3\"/>");

        for (int s = 0; s < series.Count; s++)
        {
            string color = Palette[s % Palette.Length];
            var pts = series[s].Points.Where(p => double.IsFinite(p.X)).ToList();
            // Runs of finite points between non-finite ones: each its own polyline, so the line breaks where the value is lost.
            var segments = new List<List<(double X, double Y)>> { new() };
            foreach (var p in pts)
                if (double.IsFinite(p.Y)) segments[^1].Add(p);
                else if (segments[^1].Count > 0) segments.Add([]);
            foreach (var seg in segments.Where(g => g.Count > 1))
                sb.Append(CultureInfo.InvariantCulture, $"<polyline class=\"series\" fill=\"none\" stroke=\"{color}\" stroke-width=\"1.6\" points=\"{string.Join(" ", seg.Select(p => F(Px(p.X)) + "," + F(Py(p.Y))))}\"/>");
            foreach (var seg in segments.Where(g => markers || g.Count == 1))
                foreach (var p in seg)
                    sb.Append(CultureInfo.InvariantCulture, $"<circle cx=\"{F(Px(p.X))}\" cy=\"{F(Py(p.Y))}\" r=\"2.6\" fill=\"{color}\"/>");
            // Non-finite points: a dashed line across the plot at their x; the first of consecutive ones labelled.
            for (int i = 0; i < pts.Count; i++)
            {
                if (double.IsFinite(pts[i].Y)) continue;
                string kind = Kind(pts[i].Y), x = F(Px(pts[i].X));
                string tip = $"{(series[s].Name.Length > 0 ? series[s].Name + ": " : "")}{kind} at {xLabel} {Html.FormatNumber(pts[i].X)}";
                sb.Append(CultureInfo.InvariantCulture, $"<g class=\"nonfinite\"><title>{Esc(tip)}</title><line x1=\"{x}\" y1=\"{Top}\" x2=\"{x}\" y2=\"{Height - Bottom}\" stroke=\"{color}\" stroke-dasharray=\"3 3\"/>");
                if (i == 0 || double.IsFinite(pts[i - 1].Y) || Kind(pts[i - 1].Y) != kind)
                {
                    int ty = double.IsNegativeInfinity(pts[i].Y) ? Height - Bottom - 4 : Top + 11 + 11 * (s % 4);
                    sb.Append(CultureInfo.InvariantCulture, $"<text x=\"{x}\" y=\"{ty}\" dx=\"2\" font-size=\"10\" fill=\"{color}\">{Esc(kind)}</text>");
                }
                sb.Append("</g>");
            }
        }
        sb.Append("</svg>");
        return sb.ToString();
    }

    /// <summary>How a non-finite value is labelled: NaN, +∞ or −∞.</summary>
    private static string Kind(double y) => double.IsNaN(y) ? "NaN" : y > 0 ? "+∞" : "−∞";

    /// <summary>
    /// The legend's note on a series' non-finite values, null when it has none: "NaN at step 3", "NaN at steps 3, 7",
    /// "NaN at 12 steps from 3", "NaN at every step"; several kinds are listed ("NaN, +∞ at steps 3, 4").
    /// </summary>
    internal static string? NonFiniteNote(IReadOnlyList<(double X, double Y)> points, string xLabel)
    {
        var pts = points.Where(p => double.IsFinite(p.X)).ToList();
        var bad = pts.Where(p => !double.IsFinite(p.Y)).ToList();
        if (bad.Count == 0) return null;
        string kinds = string.Join(", ", bad.Select(p => Kind(p.Y)).Distinct());
        if (bad.Count == pts.Count && pts.Count > 1) return $"{kinds} at every {xLabel}";
        return bad.Count switch
        {
            1 => $"{kinds} at {xLabel} {Html.FormatNumber(bad[0].X)}",
            2 => $"{kinds} at {xLabel}s {Html.FormatNumber(bad[0].X)}, {Html.FormatNumber(bad[1].X)}",
            _ => $"{kinds} at {bad.Count} {xLabel}s from {Html.FormatNumber(bad[0].X)}",
        };
    }

    /// <summary>
    /// The legend's lines for each name: the name itself when it fits in <paramref name="max"/> characters; else its start
    /// and end around an ellipsis ("runA-with…name-seed0", which keeps the seed or step suffix that usually tells runs
    /// apart). When two distinct names would still read the same, each shows the stretch where it differs from the
    /// others ("…lr1e-4-very-long…"); if even that collides, the whole name is wrapped over several lines.
    /// </summary>
    internal static List<List<string>> LegendNames(IReadOnlyList<string> names, int max)
    {
        var shown = names.Select(n => Middle(n, max)).ToList();
        foreach (var group in Collisions(names, shown))
            foreach (int i in group)
            {
                // Where this name parts from the most similar of the names it collides with.
                int at = group.Where(j => names[j] != names[i]).Max(j => CommonPrefix(names[i], names[j]));
                int take = max - 2, start = Math.Clamp(at - take / 2, 0, Math.Max(0, names[i].Length - take));
                string part = names[i].Substring(start, Math.Min(take, names[i].Length - start));
                shown[i] = (start > 0 ? "…" : "") + part + (start + part.Length < names[i].Length ? "…" : "");
            }
        var lines = shown.Select(s => new List<string> { s }).ToList();
        foreach (var group in Collisions(names, shown))
            foreach (int i in group)
                lines[i] = names[i].Chunk(max).Select(c => new string(c)).ToList();
        return lines;
    }

    private static string Middle(string name, int max)
    {
        if (name.Length <= max) return name;
        int head = (max - 1) / 2, tail = max - 1 - head;
        return name[..head] + "…" + name[^tail..];
    }

    /// <summary>Groups of indices whose shown texts are equal while their names are not.</summary>
    private static IEnumerable<List<int>> Collisions(IReadOnlyList<string> names, IReadOnlyList<string> shown)
        => Enumerable.Range(0, names.Count).GroupBy(i => shown[i]).Select(g => g.ToList())
            .Where(g => g.Select(i => names[i]).Distinct().Count() > 1).ToList();

    private static int CommonPrefix(string a, string b)
    {
        int n = 0;
        while (n < a.Length && n < b.Length && a[n] == b[n]) n++;
        return n;
    }

    /// <summary>Where <paramref name="v"/> lies in [lo, hi], as a fraction; halved first, so spans up to 2 × double.MaxValue do not overflow.</summary>
    private static double Fraction(double v, double lo, double hi) => (v / 2 - lo / 2) / (hi / 2 - lo / 2);

    /// <summary>[lo, hi] widened by <paramref name="margin"/> of its span on each side; a single value gets ±10% of itself (±1 at 0).
    /// Computed on halves and kept within ±double.MaxValue, so the extremes of double stay finite.</summary>
    private static (double, double) Widen(double lo, double hi, double margin)
    {
        double half = hi / 2 - lo / 2;
        if (half <= 0.5e-12 * Math.Max(1, Math.Abs(hi))) { double d = Math.Abs(lo) > 1e-12 ? Math.Abs(lo) * 0.1 : 1; return (Clamp(lo - d), Clamp(hi + d)); }
        double m = half * (2 * margin);
        return (Clamp(lo - m), Clamp(hi + m));
    }

    private static double Clamp(double v) => Math.Clamp(v, -double.MaxValue, double.MaxValue);

    /// <summary>Round ticks (1, 2 or 5 × 10^k apart, about five) inside [lo, hi], and their spacing.</summary>
    internal static (double[] Ticks, double Step) Ticks(double lo, double hi)
    {
        double raw = hi / 5 - lo / 5, mag = Math.Pow(10, Math.Floor(Math.Log10(raw))), step = mag;
        foreach (var m in new[] { 1.0, 2, 5, 10 }) { step = m * mag; if (step >= raw) break; }
        var ticks = new List<double>();
        // Compared as a difference: hi + tolerance overflows to ∞ near double.MaxValue.
        for (double k = Math.Ceiling(lo / step - 1e-9); double.IsFinite(k * step) && k * step - hi <= step * 1e-9 && ticks.Count < 12; k++) ticks.Add(k * step);
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
