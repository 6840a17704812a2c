using System.Globalization;
using System.Text;

namespace AlignSharp.Text;

/// <summary>
/// Managed Unicode normalization (NFC, NFD, NFKC, NFKD) from tables embedded in the assembly
/// (UnicodeNormalization.data, written by scripts/gen-unicode-normalization.py). We cannot use
/// <see cref="string.Normalize()"/>: the project runs with InvariantGlobalization, where it leaves non-ASCII text as is.
/// Algorithm (UAX #15): full decomposition (Hangul algorithmically) → canonical ordering of combining marks by
/// combining class → for NFC/NFKC, canonical composition of primary composites.
/// </summary>
internal static class UnicodeNormalization
{
    const int SBase = 0xAC00, LBase = 0x1100, VBase = 0x1161, TBase = 0x11A7, LCount = 19, VCount = 21, TCount = 28;
    const int NCount = VCount * TCount, SCount = LCount * NCount;

    static readonly Lazy<Tables> Data = new(Load);

    sealed class Tables
    {
        public readonly Dictionary<int, byte> CombiningClass = new();
        public readonly Dictionary<int, int[]> Canonical = new();
        public readonly Dictionary<int, int[]> Compatibility = new();
        public readonly Dictionary<long, int> Compose = new();
    }

    static Tables Load()
    {
        var t = new Tables();
        using var stream = typeof(UnicodeNormalization).Assembly.GetManifestResourceStream("AlignSharp.Text.UnicodeNormalization.data")
            ?? throw new InvalidOperationException("embedded UnicodeNormalization.data is missing");
        using var reader = new StreamReader(stream);
        static int Hex(string s) => int.Parse(s, NumberStyles.HexNumber, CultureInfo.InvariantCulture);
        while (reader.ReadLine() is { } line)
        {
            if (line.Length == 0 || line[0] == '#') continue;
            var f = line.Split(' ');
            switch (f[0])
            {
                case "C": t.CombiningClass[Hex(f[1])] = byte.Parse(f[2], CultureInfo.InvariantCulture); break;
                case "D": t.Canonical[Hex(f[1])] = f[2..].Select(Hex).ToArray(); break;
                case "K": t.Compatibility[Hex(f[1])] = f[2..].Select(Hex).ToArray(); break;
                case "P": t.Compose[((long)Hex(f[1]) << 21) | (uint)Hex(f[2])] = Hex(f[3]); break;
            }
        }
        return t;
    }

    public static string Normalize(string text, NormalizationForm form)
    {
        // Fast path: ASCII is invariant under every form.
        if (System.Text.Ascii.IsValid(text)) return text;
        return IsQuickCheckYes(text, form) ? text : NormalizeFull(text, form);
    }

    /// <summary>
    /// Per form, the code points that the quick check must look at: value true when the code point is a non-starter
    /// that is quick-check Yes, false when it is quick-check No or Maybe. Every other code point is a Yes starter.
    /// </summary>
    static readonly Lazy<Dictionary<int, bool>>[] QuickCheckSpecials =
    [
        new(() => BuildQuickCheckSpecials(NormalizationForm.FormC)), new(() => BuildQuickCheckSpecials(NormalizationForm.FormD)),
        new(() => BuildQuickCheckSpecials(NormalizationForm.FormKC)), new(() => BuildQuickCheckSpecials(NormalizationForm.FormKD)),
    ];

    static int FormIndex(NormalizationForm form) => form switch
    {
        NormalizationForm.FormC => 0,
        NormalizationForm.FormD => 1,
        NormalizationForm.FormKC => 2,
        NormalizationForm.FormKD => 3,
        _ => throw new ArgumentOutOfRangeException(nameof(form)),
    };

    /// <summary>
    /// UAX #15 §9 quick check: true when <paramref name="text"/> is certainly already in <paramref name="form"/> (every
    /// code point quick-check Yes and combining classes non-decreasing within each run of non-starters), so
    /// normalizing returns it unchanged. False means "No or Maybe": run <see cref="NormalizeFull"/>.
    /// </summary>
    internal static bool IsQuickCheckYes(string text, NormalizationForm form)
    {
        var specials = QuickCheckSpecials[FormIndex(form)].Value;
        var tables = Data.Value;
        int lastCcc = 0;
        foreach (var rune in text.EnumerateRunes())
        {
            int cp = rune.Value;
            if (cp == 0xFFFD) return false; // perhaps a lone surrogate, which the full path replaces
            if (cp < 0x80 || !specials.TryGetValue(cp, out bool yes))
            {
                lastCcc = 0;
                continue;
            }
            if (!yes) return false;
            int ccc = Ccc(cp, tables);
            if (ccc != 0 && lastCcc > ccc) return false;
            lastCcc = ccc;
        }
        return true;
    }

    /// <summary>
    /// Quick-check values derived from our own tables: a code point is No when normalizing it alone changes it, Maybe
    /// (composing forms) when it can be the second of a composition pair (including Hangul V and T jamo).
    /// </summary>
    static Dictionary<int, bool> BuildQuickCheckSpecials(NormalizationForm form)
    {
        var t = Data.Value;
        bool compose = form is NormalizationForm.FormC or NormalizationForm.FormKC;
        var specials = new Dictionary<int, bool>();
        foreach (var (cp, ccc) in t.CombiningClass)
            if (ccc != 0) specials[cp] = true;
        var candidates = t.Canonical.Keys.Concat(t.Compatibility.Keys);
        if (form is NormalizationForm.FormD or NormalizationForm.FormKD) candidates = candidates.Concat(Enumerable.Range(SBase, SCount));
        foreach (int cp in candidates)
        {
            string s = char.ConvertFromUtf32(cp);
            if (NormalizeFull(s, form) != s) specials[cp] = false;
        }
        if (compose)
        {
            foreach (long pair in t.Compose.Keys) specials[(int)(pair & ((1 << 21) - 1))] = false;
            for (int cp = VBase; cp < VBase + VCount; cp++) specials[cp] = false;
            for (int cp = TBase + 1; cp < TBase + TCount; cp++) specials[cp] = false;
        }
        return specials;
    }

    /// <summary>The full algorithm, without the quick check; the reference <see cref="Normalize"/> is tested against.</summary>
    internal static string NormalizeFull(string text, NormalizationForm form)
    {
        var tables = Data.Value;
        bool compat = form is NormalizationForm.FormKC or NormalizationForm.FormKD;
        bool compose = form is NormalizationForm.FormC or NormalizationForm.FormKC;

        var cps = new List<int>(text.Length);
        foreach (var rune in text.EnumerateRunes()) Decompose(rune.Value, compat, tables, cps);
        ReorderMarks(cps, tables);
        if (compose) Compose(cps, tables);

        var sb = new StringBuilder(text.Length);
        foreach (int cp in cps) sb.Append(char.ConvertFromUtf32(cp));
        return sb.ToString();
    }

    static void Decompose(int cp, bool compat, Tables t, List<int> output)
    {
        if (cp is >= SBase and < SBase + SCount)
        {
            int s = cp - SBase;
            output.Add(LBase + s / NCount);
            output.Add(VBase + s % NCount / TCount);
            if (s % TCount != 0) output.Add(TBase + s % TCount);
            return;
        }
        if (t.Canonical.TryGetValue(cp, out var d) || (compat && t.Compatibility.TryGetValue(cp, out d)))
        {
            foreach (int part in d) Decompose(part, compat, t, output);
            return;
        }
        output.Add(cp);
    }

    static int Ccc(int cp, Tables t) => t.CombiningClass.TryGetValue(cp, out byte c) ? c : 0;

    /// <summary>Stable sort of each run of non-starters by combining class (insertion sort: runs are short).</summary>
    static void ReorderMarks(List<int> cps, Tables t)
    {
        for (int i = 1; i < cps.Count; i++)
        {
            int c = Ccc(cps[i], t);
            if (c == 0) continue;
            int j = i;
            while (j > 0 && Ccc(cps[j - 1], t) > c)
            {
                (cps[j - 1], cps[j]) = (cps[j], cps[j - 1]);
                j--;
            }
        }
    }

    static void Compose(List<int> cps, Tables t)
    {
        if (cps.Count < 2) return;
        int starter = -1; // index of the last starter in the output
        int lastCcc = 0;
        int w = 0;
        for (int i = 0; i < cps.Count; i++)
        {
            int cp = cps[i];
            int ccc = Ccc(cp, t);
            if (starter >= 0 && (lastCcc < ccc || (lastCcc == 0 && w == starter + 1)))
            {
                int composed = ComposePair(cps[starter], cp, t);
                if (composed >= 0)
                {
                    cps[starter] = composed;
                    continue;
                }
            }
            if (ccc == 0) { starter = w; lastCcc = 0; }
            else lastCcc = ccc;
            cps[w++] = cp;
        }
        cps.RemoveRange(w, cps.Count - w);
    }

    static int ComposePair(int a, int b, Tables t)
    {
        if (a is >= LBase and < LBase + LCount && b is >= VBase and < VBase + VCount)
            return SBase + ((a - LBase) * VCount + (b - VBase)) * TCount;
        if (a is >= SBase and < SBase + SCount && (a - SBase) % TCount == 0 && b is > TBase and < TBase + TCount)
            return a + (b - TBase);
        return t.Compose.TryGetValue(((long)a << 21) | (uint)b, out int c) ? c : -1;
    }
}
