using System.Globalization;
using System.Text;

namespace AlignSharp.Text.Jinja;

/// <summary>Python's string helpers that templates rely on (whitespace as str.isspace, split, title).</summary>
internal static class JinjaStrings
{
    /// <summary>The characters Python's str.strip() removes by default.</summary>
    public static readonly char[] WhitespaceChars =
        [' ', '\t', '\n', '\v', '\f', '\r', '\x1c', '\x1d', '\x1e', '\x1f', '\x85', '\xa0', '\u1680', '\u2000', '\u2001', '\u2002',
         '\u2003', '\u2004', '\u2005', '\u2006', '\u2007', '\u2008', '\u2009', '\u200a', '\u2028', '\u2029', '\u202f', '\u205f', '\u3000'];

    public static bool IsSpace(char c) => Array.IndexOf(WhitespaceChars, c) >= 0;

    /// <summary>str.split(sep, maxsplit): with no separator, runs of whitespace split and empty pieces are dropped.</summary>
    public static List<object?> Split(string s, string? sep, long maxSplit)
    {
        var parts = new List<object?>();
        if (sep is null)
        {
            int i = 0;
            while (true)
            {
                while (i < s.Length && IsSpace(s[i])) i++;
                if (i >= s.Length) break;
                if (maxSplit >= 0 && parts.Count == maxSplit)
                {
                    parts.Add(s[i..].TrimEnd(WhitespaceChars));
                    break;
                }
                int start = i;
                while (i < s.Length && !IsSpace(s[i])) i++;
                parts.Add(s[start..i]);
            }
            return parts;
        }
        int pos = 0;
        while (maxSplit < 0 || parts.Count < maxSplit)
        {
            int idx = s.IndexOf(sep, pos, StringComparison.Ordinal);
            if (idx < 0) break;
            parts.Add(s[pos..idx]);
            pos = idx + sep.Length;
        }
        parts.Add(s[pos..]);
        return parts;
    }

    /// <summary>str.rsplit(sep, maxsplit).</summary>
    public static List<object?> RSplit(string s, string? sep, long maxSplit)
    {
        if (maxSplit < 0) return Split(s, sep, -1);
        var parts = new List<object?>();
        if (sep is null)
        {
            int i = s.Length;
            while (true)
            {
                while (i > 0 && IsSpace(s[i - 1])) i--;
                if (i <= 0) break;
                if (parts.Count == maxSplit)
                {
                    parts.Add(s[..i].TrimStart(WhitespaceChars));
                    break;
                }
                int end = i;
                while (i > 0 && !IsSpace(s[i - 1])) i--;
                parts.Add(s[i..end]);
            }
        }
        else
        {
            int end = s.Length;
            while (parts.Count < maxSplit)
            {
                int idx = end - sep.Length < 0 ? -1 : s.LastIndexOf(sep, end - 1, end, StringComparison.Ordinal);
                if (idx < 0 || idx + sep.Length > end) break;
                parts.Add(s[(idx + sep.Length)..end]);
                end = idx;
            }
            parts.Add(s[..end]);
        }
        parts.Reverse();
        return parts;
    }

    /// <summary>str.title(): a cased letter after an uncased character is upper-cased, the others lower-cased.</summary>
    public static string PyTitle(string s)
    {
        var sb = new StringBuilder(s.Length);
        bool prevCased = false;
        foreach (char c in s)
        {
            bool cased = char.IsUpper(c) || char.IsLower(c) || char.GetUnicodeCategory(c) == UnicodeCategory.TitlecaseLetter;
            sb.Append(cased ? (prevCased ? char.ToLowerInvariant(c) : char.ToUpperInvariant(c)) : c);
            prevCased = cased;
        }
        return sb.ToString();
    }

    /// <summary>str.capitalize(): first character upper-cased, the rest lower-cased.</summary>
    public static string Capitalize(string s) =>
        s.Length == 0 ? s : char.ToUpperInvariant(s[0]) + s[1..].ToLowerInvariant();

    public static string Upper(string s) => s.ToUpperInvariant();
    public static string Lower(string s) => s.ToLowerInvariant();
}

/// <summary>Operators and conversions with Python's semantics.</summary>
internal static class JinjaOps
{
    public static bool IsNumber(object? v) => v is long or double or bool;

    public static bool Truthy(object? v) => v switch
    {
        null or JinjaUndefined => false,
        bool b => b,
        long l => l != 0,
        double d => d != 0,
        string s => s.Length > 0,
        List<object?> l => l.Count > 0,
        JinjaDict d => d.Count > 0,
        _ => true,
    };

    public static string TypeName(object? v) => v switch
    {
        null => "NoneType",
        JinjaUndefined => "Undefined",
        bool => "bool",
        long => "int",
        double => "float",
        string => "str",
        List<object?> => "list",
        JinjaDict => "dict",
        JinjaNamespace => "Namespace",
        JinjaCallable => "function",
        _ => "object",
    };

    /// <summary>Python's str(): what <c>{{ x }}</c> prints.</summary>
    public static string Str(object? v) => v switch
    {
        string s => s,
        JinjaUndefined => "",
        _ => Repr(v),
    };

    /// <summary>Python's repr(), used for the items of printed lists and dicts.</summary>
    public static string Repr(object? v)
    {
        switch (v)
        {
            case null: return "None";
            case JinjaUndefined: return "";
            case bool b: return b ? "True" : "False";
            case long l: return l.ToString(CultureInfo.InvariantCulture);
            case double d: return FloatRepr(d);
            case string s: return StringRepr(s);
            case JinjaTuple tuple: return "(" + string.Join(", ", tuple.Select(Repr)) + (tuple.Count == 1 ? ",)" : ")");
            case List<object?> list: return "[" + string.Join(", ", list.Select(Repr)) + "]";
            case JinjaDict dict: return "{" + string.Join(", ", dict.Select(kv => Repr(kv.Key) + ": " + Repr(kv.Value))) + "}";
            case JinjaNamespace ns: return "<Namespace " + Repr(ns.Attributes) + ">";
            case JinjaCallable c: return $"<function {c.Name}>";
            default: return v.ToString() ?? "";
        }
    }

    static string StringRepr(string s)
    {
        char quote = s.Contains('\'') && !s.Contains('"') ? '"' : '\'';
        var sb = new StringBuilder().Append(quote);
        foreach (char c in s)
        {
            if (c == quote || c == '\\') sb.Append('\\').Append(c);
            else if (c == '\n') sb.Append("\\n");
            else if (c == '\r') sb.Append("\\r");
            else if (c == '\t') sb.Append("\\t");
            else if (c < 0x20 || c == 0x7f) sb.Append("\\x").Append(((int)c).ToString("x2", CultureInfo.InvariantCulture));
            else sb.Append(c);
        }
        return sb.Append(quote).ToString();
    }

    /// <summary>Python's float repr: shortest round-trip digits, positional for exponents −4..15, else 1e+16 style.</summary>
    public static string FloatRepr(double d)
    {
        if (double.IsNaN(d)) return "nan";
        if (double.IsInfinity(d)) return d > 0 ? "inf" : "-inf";
        if (d == 0) return double.IsNegative(d) ? "-0.0" : "0.0";
        // Shortest round-trip digits: .NET's "R" gives them; take its mantissa digits and compute the exponent ourselves.
        string shortest = d.ToString("R", CultureInfo.InvariantCulture);
        bool negative = shortest.StartsWith('-');
        if (negative) shortest = shortest[1..];
        int ePos = shortest.IndexOfAny(['E', 'e']);
        string mant = ePos >= 0 ? shortest[..ePos] : shortest;
        int exp10 = ePos >= 0 ? int.Parse(shortest[(ePos + 1)..], CultureInfo.InvariantCulture) : 0;
        int dot = mant.IndexOf('.');
        string intPart = dot >= 0 ? mant[..dot] : mant;
        string frac = dot >= 0 ? mant[(dot + 1)..] : "";
        string digits = (intPart + frac).TrimStart('0');
        int leadingZeros = (intPart + frac).Length - digits.Length;
        // value = 0.digits × 10^(pointPos) where pointPos counts digits before the decimal point
        int pointPos = intPart.Length - leadingZeros + exp10;
        digits = digits.TrimEnd('0');
        if (digits.Length == 0) digits = "0";
        int sciExp = pointPos - 1;
        var sb = new StringBuilder();
        if (negative) sb.Append('-');
        if (sciExp >= -4 && sciExp < 16)
        {
            if (pointPos <= 0) sb.Append("0.").Append('0', -pointPos).Append(digits);
            else if (pointPos >= digits.Length) sb.Append(digits).Append('0', pointPos - digits.Length).Append(".0");
            else sb.Append(digits, 0, pointPos).Append('.').Append(digits, pointPos, digits.Length - pointPos);
        }
        else
        {
            sb.Append(digits[0]);
            if (digits.Length > 1) sb.Append('.').Append(digits, 1, digits.Length - 1);
            sb.Append('e').Append(sciExp < 0 ? '-' : '+').Append(Math.Abs(sciExp).ToString("00", CultureInfo.InvariantCulture));
        }
        return sb.ToString();
    }

    static double AsDouble(object v) => v switch { long l => l, double d => d, bool b => b ? 1 : 0, _ => double.NaN };
    static long AsLong(object v) => v switch { long l => l, bool b => b ? 1 : 0, _ => 0 };

    public static bool PyEquals(object? a, object? b)
    {
        if (a is null || b is null) return a is null && b is null;
        if (a is JinjaUndefined || b is JinjaUndefined) return a is JinjaUndefined && b is JinjaUndefined;
        if (IsNumber(a) && IsNumber(b))
            return a is double || b is double ? AsDouble(a) == AsDouble(b) : AsLong(a) == AsLong(b);
        if (a is string sa && b is string sb) return string.Equals(sa, sb, StringComparison.Ordinal);
        if (a is List<object?> la && b is List<object?> lb)
        {
            if (la.Count != lb.Count) return false;
            for (int i = 0; i < la.Count; i++) if (!PyEquals(la[i], lb[i])) return false;
            return true;
        }
        if (a is JinjaDict da && b is JinjaDict db)
        {
            if (da.Count != db.Count) return false;
            foreach (var kv in da)
                if (!db.TryGetValue(kv.Key, out var v) || !PyEquals(kv.Value, v)) return false;
            return true;
        }
        return ReferenceEquals(a, b);
    }

    /// <summary>Python ordering of numbers, strings (by code point) and lists; other types are an error.</summary>
    public static int Compare(object? a, object? b, Func<string, JinjaException> error)
    {
        if (a is not null && b is not null && IsNumber(a) && IsNumber(b))
            return a is double || b is double ? AsDouble(a).CompareTo(AsDouble(b)) : AsLong(a).CompareTo(AsLong(b));
        if (a is string sa && b is string sb) return string.CompareOrdinal(sa, sb) switch { < 0 => -1, > 0 => 1, _ => 0 };
        if (a is List<object?> la && b is List<object?> lb)
        {
            for (int i = 0; i < Math.Min(la.Count, lb.Count); i++)
            {
                if (PyEquals(la[i], lb[i])) continue;
                return Compare(la[i], lb[i], error);
            }
            return la.Count.CompareTo(lb.Count);
        }
        if (a is JinjaUndefined ua) throw error(ua.Hint);
        if (b is JinjaUndefined ub) throw error(ub.Hint);
        throw error($"'<' not supported between instances of '{TypeName(a)}' and '{TypeName(b)}'");
    }

    static void CheckDefined(object? a, object? b, Func<string, JinjaException> error)
    {
        if (a is JinjaUndefined ua) throw error(ua.Hint);
        if (b is JinjaUndefined ub) throw error(ub.Hint);
    }

    public static object? Binary(string op, object? a, object? b, Func<string, JinjaException> error)
    {
        CheckDefined(a, b, error);
        if (a is not null && b is not null && IsNumber(a) && IsNumber(b))
        {
            bool isFloat = a is double || b is double;
            switch (op)
            {
                case "+": return isFloat ? (object)(AsDouble(a) + AsDouble(b)) : (object)(AsLong(a) + AsLong(b));
                case "-": return isFloat ? (object)(AsDouble(a) - AsDouble(b)) : (object)(AsLong(a) - AsLong(b));
                case "*": return isFloat ? (object)(AsDouble(a) * AsDouble(b)) : (object)(AsLong(a) * AsLong(b));
                case "/":
                    if (AsDouble(b) == 0) throw error("division by zero");
                    return AsDouble(a) / AsDouble(b);
                case "//":
                    if (AsDouble(b) == 0) throw error("integer division or modulo by zero");
                    if (isFloat) return Math.Floor(AsDouble(a) / AsDouble(b));
                    return FloorDiv(AsLong(a), AsLong(b));
                case "%":
                    if (AsDouble(b) == 0) throw error("integer division or modulo by zero");
                    if (isFloat)
                    {
                        double x = AsDouble(a), y = AsDouble(b), m = x % y;
                        return m != 0 && (m < 0) != (y < 0) ? m + y : m;
                    }
                    return AsLong(a) - AsLong(b) * FloorDiv(AsLong(a), AsLong(b));
                case "**":
                    if (!isFloat && AsLong(b) >= 0)
                    {
                        long r = 1, x = AsLong(a);
                        for (long i = 0; i < AsLong(b); i++) r = checked(r * x);
                        return r;
                    }
                    return Math.Pow(AsDouble(a), AsDouble(b));
            }
        }
        switch (op)
        {
            case "+" when a is string sa && b is string sb: return sa + sb;
            case "+" when a is List<object?> la && b is List<object?> lb: return new List<object?>([.. la, .. lb]);
            case "*" when a is string s && b is long or bool && s is not null: return Repeat(s, AsLong(b!));
            case "*" when b is string s && a is long or bool && s is not null: return Repeat(s, AsLong(a!));
            case "*" when a is List<object?> l && b is long n: return Enumerable.Repeat(l, (int)Math.Max(0, n)).SelectMany(x => x).ToList();
            case "%" when a is string fmt: return PercentFormat(fmt, b, error);
        }
        if (op == "+" && a is string) throw error($"can only concatenate str (not \"{TypeName(b)}\") to str");
        throw error($"unsupported operand type(s) for {op}: '{TypeName(a)}' and '{TypeName(b)}'");
    }

    static string Repeat(string s, long n) => n <= 0 ? "" : new StringBuilder(s.Length * (int)n).Insert(0, s, (int)n).ToString();

    static long FloorDiv(long a, long b)
    {
        long q = a / b;
        if ((a % b != 0) && ((a < 0) != (b < 0))) q--;
        return q;
    }

    /// <summary>printf-style <c>"%s" % x</c> with %s, %r, %d, %i, %f and %%.</summary>
    static string PercentFormat(string fmt, object? args, Func<string, JinjaException> error)
    {
        var values = args is List<object?> l ? l : [args];
        var sb = new StringBuilder();
        int next = 0;
        for (int i = 0; i < fmt.Length; i++)
        {
            if (fmt[i] != '%') { sb.Append(fmt[i]); continue; }
            if (++i >= fmt.Length) throw error("incomplete format");
            int precision = -1;
            if (fmt[i] == '.')
            {
                int s = ++i;
                while (i < fmt.Length && char.IsAsciiDigit(fmt[i])) i++;
                precision = int.Parse(fmt.AsSpan(s, i - s), CultureInfo.InvariantCulture);
                if (i >= fmt.Length) throw error("incomplete format");
            }
            char c = fmt[i];
            if (c == '%') { sb.Append('%'); continue; }
            if (next >= values.Count) throw error("not enough arguments for format string");
            var v = values[next++];
            switch (c)
            {
                case 's': sb.Append(Str(v)); break;
                case 'r': sb.Append(Repr(v)); break;
                case 'd' or 'i' when IsNumber(v): sb.Append(((long)Math.Truncate(AsDouble(v!))).ToString(CultureInfo.InvariantCulture)); break;
                case 'f' when IsNumber(v): sb.Append(AsDouble(v!).ToString("F" + (precision < 0 ? 6 : precision), CultureInfo.InvariantCulture)); break;
                default: throw error($"unsupported format character '{c}' for {TypeName(v)}");
            }
        }
        if (next < values.Count && args is List<object?>) throw error("not all arguments converted during string formatting");
        return sb.ToString();
    }

    public static object? Negate(object? v, Func<string, JinjaException> error) => v switch
    {
        long l => (object)(-l),
        double d => (object)(-d),
        bool b => b ? -1L : 0L,
        JinjaUndefined u => throw error(u.Hint),
        _ => throw error($"bad operand type for unary -: '{TypeName(v)}'"),
    };

    /// <summary>Python's <c>needle in haystack</c>.</summary>
    public static bool Contains(object? haystack, object? needle, Func<string, JinjaException> error) => haystack switch
    {
        string s when needle is string n => s.Contains(n, StringComparison.Ordinal),
        string => throw error($"'in <string>' requires string as left operand, not {TypeName(needle)}"),
        List<object?> l => l.Any(x => PyEquals(x, needle)),
        JinjaDict d => needle is not null && needle is not JinjaUndefined && d.ContainsKey(needle),
        JinjaNamespace ns => needle is string n && ns.Attributes.ContainsKey(n),
        JinjaUndefined => false,
        _ => throw error($"argument of type '{TypeName(haystack)}' is not iterable"),
    };

    /// <summary>The items a for loop visits: list items, dict keys, string characters; an undefined value is empty.</summary>
    public static List<object?> Iterate(object? v, Func<string, JinjaException> error) => v switch
    {
        List<object?> l => l,
        JinjaDict d => d.Keys.ToList<object?>(),
        string s => TextElements(s),
        JinjaUndefined => [],
        _ => throw error($"'{TypeName(v)}' object is not iterable"),
    };

    /// <summary>The characters of a string as Python sees them (code points: a surrogate pair is one item).</summary>
    public static List<object?> TextElements(string s)
    {
        var list = new List<object?>(s.Length);
        for (int i = 0; i < s.Length; i++)
        {
            if (char.IsHighSurrogate(s[i]) && i + 1 < s.Length && char.IsLowSurrogate(s[i + 1])) { list.Add(s.Substring(i, 2)); i++; }
            else list.Add(s[i].ToString());
        }
        return list;
    }

    /// <summary>Python's len().</summary>
    public static long Length(object? v, Func<string, JinjaException> error) => v switch
    {
        string s => TextElements(s).Count,
        List<object?> l => l.Count,
        JinjaDict d => d.Count,
        JinjaUndefined => 0,
        _ => throw error($"object of type '{TypeName(v)}' has no len()"),
    };

    /// <summary>Python slicing <c>x[start:stop:step]</c> of a list or string.</summary>
    public static object? Slice(object? v, object? start, object? stop, object? step, Func<string, JinjaException> error)
    {
        long? Index(object? x, string what) => x switch
        {
            null or JinjaUndefined => null,
            long l => l,
            bool b => b ? 1 : 0,
            _ => throw error($"slice {what} must be an integer or none, not {TypeName(x)}"),
        };
        bool isString = v is string;
        List<object?> items = v switch
        {
            string s => TextElements(s),
            List<object?> l => l,
            JinjaUndefined u => throw error(u.Hint),
            _ => throw error($"'{TypeName(v)}' object is not subscriptable"),
        };
        long n = items.Count;
        long st = Index(step, "step") ?? 1;
        if (st == 0) throw error("slice step cannot be zero");
        long? a = Index(start, "start"), b = Index(stop, "stop");
        long lo, hi;
        if (st > 0)
        {
            lo = a is null ? 0 : a < 0 ? Math.Max(0, a.Value + n) : Math.Min(a.Value, n);
            hi = b is null ? n : b < 0 ? Math.Max(0, b.Value + n) : Math.Min(b.Value, n);
        }
        else
        {
            lo = a is null ? n - 1 : a < 0 ? Math.Max(-1, a.Value + n) : Math.Min(a.Value, n - 1);
            hi = b is null ? -1 : b < 0 ? Math.Max(-1, b.Value + n) : Math.Min(b.Value, n - 1);
        }
        var result = new List<object?>();
        if (st > 0) for (long i = lo; i < hi; i += st) result.Add(items[(int)i]);
        else for (long i = lo; i > hi; i += st) result.Add(items[(int)i]);
        return isString ? string.Concat(result.Cast<string>()) : result;
    }
}
