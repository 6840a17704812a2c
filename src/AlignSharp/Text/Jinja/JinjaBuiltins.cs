using System.Globalization;
using System.Net;
using System.Text;

namespace AlignSharp.Text.Jinja;

/// <summary>
/// Global functions, filters, tests and the methods of strings, dicts and lists, with Jinja2's semantics as
/// Hugging Face transformers configures it (ImmutableSandboxedEnvironment: lists and dicts cannot be modified;
/// <c>tojson</c> is <c>json.dumps(ensure_ascii=False)</c>; <c>raise_exception</c> and <c>strftime_now</c> globals).
/// </summary>
internal static class JinjaBuiltins
{
    public static readonly Dictionary<string, object?> Globals = new(StringComparer.Ordinal)
    {
        ["range"] = new JinjaCallable("range", Range),
        ["namespace"] = new JinjaCallable("namespace", args =>
        {
            var ns = new JinjaNamespace();
            foreach (var p in args.Positional)
            {
                if (p is not JinjaDict d) throw args.Error("positional arguments must be dicts");
                foreach (var kv in d) ns.Attributes[kv.Key] = kv.Value;
            }
            foreach (var kv in args.Keywords) ns.Attributes[kv.Key] = kv.Value;
            return ns;
        }),
        ["dict"] = new JinjaCallable("dict", args =>
        {
            var d = new JinjaDict();
            foreach (var p in args.Positional)
            {
                if (p is not JinjaDict pd) throw args.Error("positional arguments must be dicts");
                foreach (var kv in pd) d[kv.Key] = kv.Value;
            }
            foreach (var kv in args.Keywords) d[kv.Key] = kv.Value;
            return d;
        }),
        ["raise_exception"] = new JinjaCallable("raise_exception", args =>
            throw new TemplateRaisedException(JinjaOps.Str(args.Get(0, "message", "") ?? "None"))),
    };

    /// <summary><c>strftime_now(format)</c>: the clock's time formatted as Python's datetime.strftime.</summary>
    public static JinjaCallable StrftimeNow(Func<DateTime> clock) => new("strftime_now", args =>
    {
        var format = args.Required(0, "format") as string ?? throw args.Error("the format must be a string");
        args.CheckNoExtra(1);
        return Strftime(clock(), format);
    });

    static object? Range(JinjaArgs args)
    {
        long Int(object? v) => v is long l ? l : v is bool b ? (b ? 1 : 0) : throw args.Error($"'{JinjaOps.TypeName(v)}' object cannot be interpreted as an integer");
        var p = args.Positional;
        if (p.Count is < 1 or > 3 || args.Keywords.Count > 0) throw args.Error("expected 1 to 3 integer arguments");
        long start = p.Count == 1 ? 0 : Int(p[0]), stop = p.Count == 1 ? Int(p[0]) : Int(p[1]), step = p.Count == 3 ? Int(p[2]) : 1;
        if (step == 0) throw args.Error("step must not be zero");
        var list = new List<object?>();
        for (long i = start; step > 0 ? i < stop : i > stop; i += step)
        {
            list.Add(i);
            if (list.Count > 1_000_000) throw args.Error("range too large");
        }
        return list;
    }

    // ---- attribute and item access ----

    static readonly HashSet<string> DictMethods = ["items", "keys", "values", "get", "copy", "pop", "update", "setdefault", "clear", "popitem"];
    static readonly HashSet<string> ListMethods = ["index", "count", "copy", "append", "extend", "insert", "pop", "remove", "reverse", "sort", "clear"];

    /// <summary><c>obj.name</c>: a Python attribute (a method) first, then the item; otherwise undefined.</summary>
    public static object? GetAttr(object? obj, string name, Func<string, JinjaException> error)
    {
        switch (obj)
        {
            case JinjaUndefined u: throw error(u.Hint);
            case JinjaDict d:
                if (DictMethods.Contains(name)) return DictMethod(d, name);
                return d.TryGetValue(name, out var v) ? v : new JinjaUndefined($"'dict object' has no attribute '{name}'");
            case JinjaNamespace ns:
                return ns.Attributes.TryGetValue(name, out var nv) ? nv : new JinjaUndefined($"'Namespace' object has no attribute '{name}'");
            case string s:
                return (object?)StringMethod(s, name) ?? new JinjaUndefined($"'str object' has no attribute '{name}'");
            case List<object?> l:
                if (ListMethods.Contains(name)) return ListMethod(l, name);
                return new JinjaUndefined($"'list object' has no attribute '{name}'");
            case JinjaLoop loop: return LoopAttribute(loop, name);
            default:
                return new JinjaUndefined($"'{JinjaOps.TypeName(obj)} object' has no attribute '{name}'");
        }
    }

    /// <summary><c>obj[key]</c>: the item first, then (for a string key) the attribute; otherwise undefined.</summary>
    public static object? GetItem(object? obj, object? key, Func<string, JinjaException> error)
    {
        switch (obj)
        {
            case JinjaUndefined u: throw error(u.Hint);
            case JinjaDict d:
                if (key is not null && key is not JinjaUndefined && key is not List<object?> && d.TryGetValue(key, out var v)) return v;
                break;
            case List<object?> l when key is long or bool:
            {
                long i = key is long k ? k : (bool)key ? 1 : 0;
                if (i < 0) i += l.Count;
                return i >= 0 && i < l.Count ? l[(int)i] : new JinjaUndefined($"list index {key} out of range");
            }
            case string s when key is long or bool:
            {
                var chars = JinjaOps.TextElements(s);
                long i = key is long k ? k : (bool)key ? 1 : 0;
                if (i < 0) i += chars.Count;
                return i >= 0 && i < chars.Count ? chars[(int)i] : new JinjaUndefined($"string index {key} out of range");
            }
        }
        if (key is string name) return GetAttr(obj, name, error);
        return new JinjaUndefined($"'{JinjaOps.TypeName(obj)} object' has no item {JinjaOps.Repr(key)}");
    }

    static object? LoopAttribute(JinjaLoop loop, string name)
    {
        int n = loop.Items.Count, i = loop.Index0;
        return name switch
        {
            "index" => (long)(i + 1),
            "index0" => (long)i,
            "revindex" => (long)(n - i),
            "revindex0" => (long)(n - i - 1),
            "first" => i == 0,
            "last" => i == n - 1,
            "length" => (long)n,
            "depth" => (long)loop.Depth,
            "depth0" => (long)(loop.Depth - 1),
            "previtem" => i > 0 ? loop.Items[i - 1] : new JinjaUndefined("there is no previous item"),
            "nextitem" => i < n - 1 ? loop.Items[i + 1] : new JinjaUndefined("there is no next item"),
            "cycle" => new JinjaCallable("cycle", args =>
            {
                if (args.Positional.Count == 0) throw args.Error("no items for cycling given");
                return args.Positional[i % args.Positional.Count];
            }),
            _ => new JinjaUndefined($"'LoopContext' object has no attribute '{name}'"),
        };
    }

    static JinjaCallable DictMethod(JinjaDict d, string name) => new(name, args =>
    {
        switch (name)
        {
            case "items": args.CheckNoExtra(0); return d.Select(kv => (object?)new JinjaTuple { kv.Key, kv.Value }).ToList();
            case "keys": args.CheckNoExtra(0); return d.Keys.ToList<object?>();
            case "values": args.CheckNoExtra(0); return d.Values.ToList();
            case "copy":
                args.CheckNoExtra(0);
                var c = new JinjaDict();
                foreach (var kv in d) c[kv.Key] = kv.Value;
                return c;
            case "get":
            {
                var key = args.Required(0, "key");
                var fallback = args.Get(1, "default", null);
                args.CheckNoExtra(2);
                return key is not null && key is not JinjaUndefined && d.TryGetValue(key, out var v) ? v : fallback;
            }
            default: throw args.Error("dicts cannot be modified in a template (the sandbox is immutable)");
        }
    });

    static JinjaCallable ListMethod(List<object?> l, string name) => new(name, args =>
    {
        switch (name)
        {
            case "index":
            {
                var x = args.Required(0, "value");
                int i = l.FindIndex(v => JinjaOps.PyEquals(v, x));
                return i >= 0 ? (long)i : throw args.Error($"{JinjaOps.Repr(x)} is not in list");
            }
            case "count": { var x = args.Required(0, "value"); return (long)l.Count(v => JinjaOps.PyEquals(v, x)); }
            case "copy": return l.ToList();
            default: throw args.Error("lists cannot be modified in a template (the sandbox is immutable)");
        }
    });

    static string StrArg(JinjaArgs args, int i, string name)
    {
        var v = args.Required(i, name);
        return v as string ?? throw args.Error($"argument '{name}' must be a string, not {JinjaOps.TypeName(v)}");
    }

    static string? OptionalChars(JinjaArgs args)
    {
        var v = args.Get(0, "chars", null);
        args.CheckNoExtra(1);
        return v switch { null => null, string s => s, _ => throw args.Error("strip arg must be None or str") };
    }

    static long IntArg(JinjaArgs args, int i, string name, long fallback)
    {
        var v = args.Get(i, name, fallback);
        return v switch { long l => l, bool b => b ? 1 : 0, null => fallback, _ => throw args.Error($"argument '{name}' must be an integer") };
    }

    static bool MatchesAffix(JinjaArgs args, Func<string, bool> test)
    {
        var v = args.Required(0, "prefix");
        args.CheckNoExtra(1);
        return v switch
        {
            string s => test(s),
            List<object?> l => l.Any(x => x is string s ? test(s) : throw args.Error("tuple items must be strings")),
            _ => throw args.Error($"must be str or a tuple of str, not {JinjaOps.TypeName(v)}"),
        };
    }

    static string Strip(string s, string? chars, bool left, bool right)
    {
        var set = chars?.ToCharArray() ?? JinjaStrings.WhitespaceChars;
        if (left) s = s.TrimStart(set);
        if (right) s = s.TrimEnd(set);
        return s;
    }

    static JinjaCallable? StringMethod(string s, string name)
    {
        Func<JinjaArgs, object?>? f = name switch
        {
            "strip" => a => Strip(s, OptionalChars(a), true, true),
            "lstrip" => a => Strip(s, OptionalChars(a), true, false),
            "rstrip" => a => Strip(s, OptionalChars(a), false, true),
            "split" => a =>
            {
                var sep = a.Get(0, "sep", null);
                long max = IntArg(a, 1, "maxsplit", -1);
                a.CheckNoExtra(2);
                if (sep is "") throw a.Error("empty separator");
                return JinjaStrings.Split(s, sep is null ? null : sep as string ?? throw a.Error("sep must be a string"), max);
            },
            "rsplit" => a =>
            {
                var sep = a.Get(0, "sep", null);
                long max = IntArg(a, 1, "maxsplit", -1);
                a.CheckNoExtra(2);
                if (sep is "") throw a.Error("empty separator");
                return JinjaStrings.RSplit(s, sep is null ? null : sep as string ?? throw a.Error("sep must be a string"), max);
            },
            "splitlines" => a =>
            {
                bool keep = JinjaOps.Truthy(a.Get(0, "keepends", false));
                a.CheckNoExtra(1);
                var lines = new List<object?>();
                int start = 0;
                for (int i = 0; i < s.Length; i++)
                {
                    char c = s[i];
                    if (c is '\n' or '\r' or '\v' or '\f' or '\x1c' or '\x1d' or '\x1e' or '\x85' or '\u2028' or '\u2029')
                    {
                        int end = i;
                        if (c == '\r' && i + 1 < s.Length && s[i + 1] == '\n') i++;
                        lines.Add(keep ? s[start..(i + 1)] : s[start..end]);
                        start = i + 1;
                    }
                }
                if (start < s.Length) lines.Add(s[start..]);
                return lines;
            },
            "startswith" => a => MatchesAffix(a, p => s.StartsWith(p, StringComparison.Ordinal)),
            "endswith" => a => MatchesAffix(a, p => s.EndsWith(p, StringComparison.Ordinal)),
            "upper" => a => { a.CheckNoExtra(0); return JinjaStrings.Upper(s); },
            "lower" => a => { a.CheckNoExtra(0); return JinjaStrings.Lower(s); },
            "title" => a => { a.CheckNoExtra(0); return JinjaStrings.PyTitle(s); },
            "capitalize" => a => { a.CheckNoExtra(0); return JinjaStrings.Capitalize(s); },
            "swapcase" => a => { a.CheckNoExtra(0); return string.Concat(s.Select(c => char.IsUpper(c) ? char.ToLowerInvariant(c) : char.ToUpperInvariant(c))); },
            "replace" => a =>
            {
                string old = StrArg(a, 0, "old"), @new = StrArg(a, 1, "new");
                long count = IntArg(a, 2, "count", -1);
                a.CheckNoExtra(3);
                return Replace(s, old, @new, count);
            },
            "find" => a => { var sub = StrArg(a, 0, "sub"); a.CheckNoExtra(1); return (long)s.IndexOf(sub, StringComparison.Ordinal); },
            "rfind" => a => { var sub = StrArg(a, 0, "sub"); a.CheckNoExtra(1); return (long)s.LastIndexOf(sub, StringComparison.Ordinal); },
            "index" => a =>
            {
                var sub = StrArg(a, 0, "sub");
                a.CheckNoExtra(1);
                int i = s.IndexOf(sub, StringComparison.Ordinal);
                return i >= 0 ? (long)i : throw a.Error("substring not found");
            },
            "count" => a =>
            {
                var sub = StrArg(a, 0, "sub");
                a.CheckNoExtra(1);
                if (sub.Length == 0) return (long)JinjaOps.TextElements(s).Count + 1;
                long n = 0;
                for (int i = s.IndexOf(sub, StringComparison.Ordinal); i >= 0; i = s.IndexOf(sub, i + sub.Length, StringComparison.Ordinal)) n++;
                return n;
            },
            "join" => a =>
            {
                var items = a.Required(0, "iterable");
                a.CheckNoExtra(1);
                return string.Join(s, JinjaOps.Iterate(items, a.Error).Select(x => x as string ?? throw a.Error($"sequence item: expected str instance, {JinjaOps.TypeName(x)} found")));
            },
            "isdigit" => a => s.Length > 0 && s.All(char.IsDigit),
            "isnumeric" => a => s.Length > 0 && s.All(char.IsNumber),
            "isalpha" => a => s.Length > 0 && s.All(char.IsLetter),
            "isalnum" => a => s.Length > 0 && s.All(char.IsLetterOrDigit),
            "isspace" => a => s.Length > 0 && s.All(JinjaStrings.IsSpace),
            "islower" => a => s.Any(char.IsLetter) && !s.Any(char.IsUpper),
            "isupper" => a => s.Any(char.IsLetter) && !s.Any(char.IsLower),
            "format" => a => PyFormat(s, a),
            _ => null,
        };
        return f is null ? null : new JinjaCallable(name, f);
    }

    static string Replace(string s, string old, string @new, long count)
    {
        if (count < 0) return old.Length == 0 ? InsertBetweenAll(s, @new) : s.Replace(old, @new, StringComparison.Ordinal);
        var sb = new StringBuilder();
        int pos = 0;
        for (long n = 0; n < count; n++)
        {
            int i = s.IndexOf(old, pos, StringComparison.Ordinal);
            if (i < 0 || old.Length == 0) break;
            sb.Append(s, pos, i - pos).Append(@new);
            pos = i + old.Length;
        }
        return sb.Append(s, pos, s.Length - pos).ToString();
    }

    static string InsertBetweenAll(string s, string sep) => sep + string.Concat(JinjaOps.TextElements(s).Select(c => (string)c! + sep));

    /// <summary>str.format with <c>{}</c>, <c>{0}</c> and <c>{name}</c> fields (no format specs).</summary>
    static string PyFormat(string fmt, JinjaArgs args)
    {
        var sb = new StringBuilder();
        int auto = 0;
        for (int i = 0; i < fmt.Length; i++)
        {
            char c = fmt[i];
            if (c == '{' && i + 1 < fmt.Length && fmt[i + 1] == '{') { sb.Append('{'); i++; continue; }
            if (c == '}' && i + 1 < fmt.Length && fmt[i + 1] == '}') { sb.Append('}'); i++; continue; }
            if (c != '{') { sb.Append(c); continue; }
            int end = fmt.IndexOf('}', i);
            if (end < 0) throw args.Error("single '{' encountered in format string");
            string field = fmt[(i + 1)..end];
            if (field.Contains(':') || field.Contains('!')) throw args.Error("format specifications are not supported");
            object? v;
            if (field.Length == 0) v = auto < args.Positional.Count ? args.Positional[auto++] : throw args.Error("not enough arguments for format string");
            else if (int.TryParse(field, out int idx)) v = idx < args.Positional.Count ? args.Positional[idx] : throw args.Error($"format index {idx} out of range");
            else v = args.Keywords.TryGetValue(field, out var kv) ? kv : throw args.Error($"missing format argument '{field}'");
            sb.Append(JinjaOps.Str(v));
            i = end;
        }
        return sb.ToString();
    }

    // ---- filters ----

    static readonly HashSet<string> Filters =
    [
        "abs", "attr", "batch", "capitalize", "center", "count", "d", "default", "dictsort", "e", "escape", "first", "float",
        "forceescape", "format", "groupby", "indent", "int", "items", "join", "last", "length", "list", "lower", "map", "max",
        "min", "reject", "rejectattr", "replace", "reverse", "round", "safe", "select", "selectattr", "sort", "string",
        "striptags", "sum", "title", "tojson", "trim", "truncate", "unique", "upper", "wordcount",
    ];

    public static bool HasFilter(string name) => Filters.Contains(name);

    public static object? ApplyFilter(string name, object? value, JinjaArgs args, RenderContext ctx, int line)
    {
        Func<string, JinjaException> error = m => ctx.Error(line, $"filter '{name}': {m}");
        switch (name)
        {
            case "abs":
                args.CheckNoExtra(0);
                return value switch { long l => (object)Math.Abs(l), double d => (object)Math.Abs(d), bool b => (object)(b ? 1L : 0L), _ => throw error($"bad operand type for abs(): '{JinjaOps.TypeName(value)}'") };
            case "attr":
            {
                var n = StrArg(args, 0, "name");
                args.CheckNoExtra(1);
                return GetAttr(value, n, error);
            }
            case "batch":
            {
                long size = IntArg(args, 0, "linecount", 1);
                var fill = args.Get(1, "fill_with", JinjaArgs.Missing);
                args.CheckNoExtra(2);
                if (size < 1) throw error("linecount must be positive");
                var items = JinjaOps.Iterate(value, error);
                var result = new List<object?>();
                for (int i = 0; i < items.Count; i += (int)size)
                {
                    var chunk = items.Skip(i).Take((int)size).ToList();
                    if (!ReferenceEquals(fill, JinjaArgs.Missing)) while (chunk.Count < size) chunk.Add(fill);
                    result.Add(chunk);
                }
                return result;
            }
            case "capitalize": args.CheckNoExtra(0); return JinjaStrings.Capitalize(JinjaOps.Str(value));
            case "center":
            {
                long width = IntArg(args, 0, "width", 80);
                args.CheckNoExtra(1);
                var s = JinjaOps.Str(value);
                if (width <= s.Length) return s;
                long total = width - s.Length, left = total / 2 + (total & width & 1);
                return new string(' ', (int)left) + s + new string(' ', (int)(total - left));
            }
            case "count" or "length": args.CheckNoExtra(0); return JinjaOps.Length(value, error);
            case "d" or "default":
            {
                var fallback = args.Get(0, "default_value", "");
                bool boolean = JinjaOps.Truthy(args.Get(1, "boolean", false));
                args.CheckNoExtra(2);
                return value is JinjaUndefined || (boolean && !JinjaOps.Truthy(value)) ? fallback : value;
            }
            case "dictsort":
            {
                bool caseSensitive = JinjaOps.Truthy(args.Get(0, "case_sensitive", false));
                var by = args.Get(1, "by", "key") as string;
                bool reverse = JinjaOps.Truthy(args.Get(2, "reverse", false));
                args.CheckNoExtra(3);
                if (value is not JinjaDict d) throw error("dictsort expects a dict");
                int pos = by switch { "key" => 0, "value" => 1, _ => throw error("by must be 'key' or 'value'") };
                var items = d.Select(kv => (List<object?>)new JinjaTuple { kv.Key, kv.Value }).ToList();
                var sorted = SortBy(items, x => x[pos], caseSensitive, reverse, error);
                return sorted.Cast<object?>().ToList();
            }
            case "e" or "escape" or "forceescape":
                args.CheckNoExtra(0);
                return JinjaOps.Str(value).Replace("&", "&amp;").Replace("<", "&lt;").Replace(">", "&gt;").Replace("\"", "&#34;").Replace("'", "&#39;");
            case "first":
            {
                args.CheckNoExtra(0);
                var items = JinjaOps.Iterate(value, error);
                return items.Count > 0 ? items[0] : new JinjaUndefined("No first item, sequence was empty.");
            }
            case "last":
            {
                args.CheckNoExtra(0);
                var items = value is string s ? JinjaOps.TextElements(s) : value is List<object?> l ? l : JinjaOps.Iterate(value, error);
                return items.Count > 0 ? items[^1] : new JinjaUndefined("No last item, sequence was empty.");
            }
            case "float":
            {
                var fallback = args.Get(0, "default", 0.0);
                args.CheckNoExtra(1);
                return value switch
                {
                    double d => d,
                    long l => (double)l,
                    bool b => b ? 1.0 : 0.0,
                    string s when double.TryParse(s.Trim(JinjaStrings.WhitespaceChars), NumberStyles.Float, CultureInfo.InvariantCulture, out var d) => d,
                    _ => fallback,
                };
            }
            case "int":
            {
                var fallback = args.Get(0, "default", 0L);
                long numberBase = IntArg(args, 1, "base", 10);
                args.CheckNoExtra(2);
                return value switch
                {
                    long l => l,
                    double d when !double.IsNaN(d) && !double.IsInfinity(d) => (long)Math.Truncate(d),
                    bool b => b ? 1L : 0L,
                    string s => ParseInt(s, numberBase) ?? (double.TryParse(s.Trim(JinjaStrings.WhitespaceChars), NumberStyles.Float, CultureInfo.InvariantCulture, out var d) && numberBase == 10 && !double.IsInfinity(d) && !double.IsNaN(d) ? (long)Math.Truncate(d) : fallback),
                    _ => fallback,
                };
            }
            case "format":
            {
                var fmt = value as string ?? throw error("the value to format must be a string");
                if (args.Keywords.Count > 0) throw error("keyword arguments are not supported");
                return JinjaOps.Binary("%", fmt, args.Positional, error);
            }
            case "groupby":
            {
                var attribute = args.Required(0, "attribute");
                var fallback = args.Get(1, "default", null);
                bool caseSensitive = JinjaOps.Truthy(args.Get(2, "case_sensitive", false));
                args.CheckNoExtra(3);
                var items = JinjaOps.Iterate(value, error);
                var sorted = SortBy(items, x => Attribute(x, attribute, fallback, error), caseSensitive, false, error);
                var groups = new List<object?>();
                foreach (var item in sorted)
                {
                    var key = Attribute(item, attribute, fallback, error);
                    var cmpKey = caseSensitive || key is not string ks ? key : JinjaStrings.Lower(ks);
                    if (groups.Count > 0 && groups[^1] is List<object?> last && JinjaOps.PyEquals(last[2], cmpKey)) ((List<object?>)last[1]!).Add(item);
                    else groups.Add(new List<object?> { key, new List<object?> { item }, cmpKey });
                }
                return groups.Select(g => (object?)new JinjaTuple { ((List<object?>)g!)[0], ((List<object?>)g!)[1] }).ToList();
            }
            case "indent":
            {
                var width = args.Get(0, "width", 4L);
                bool first = JinjaOps.Truthy(args.Get(1, "first", false));
                bool blank = JinjaOps.Truthy(args.Get(2, "blank", false));
                args.CheckNoExtra(3);
                string pad = width is string ws ? ws : width is long wl ? new string(' ', (int)Math.Max(0, wl)) : throw error("width must be an integer or string");
                var s = JinjaOps.Str(value);
                var lines = s.Split('\n');
                var sb = new StringBuilder();
                for (int i = 0; i < lines.Length; i++)
                {
                    if (i > 0) sb.Append('\n');
                    if (i == 0 ? first : blank || lines[i].Length > 0) sb.Append(pad);
                    sb.Append(lines[i]);
                }
                return sb.ToString();
            }
            case "items":
                args.CheckNoExtra(0);
                if (value is JinjaUndefined) return new List<object?>();
                if (value is not JinjaDict dict) throw error($"can only get item pairs from a mapping, not {JinjaOps.TypeName(value)}");
                return dict.Select(kv => (object?)new JinjaTuple { kv.Key, kv.Value }).ToList();
            case "join":
            {
                var sep = JinjaOps.Str(args.Get(0, "d", ""));
                var attribute = args.Get(1, "attribute", null);
                args.CheckNoExtra(2);
                var items = JinjaOps.Iterate(value, error);
                if (attribute is not null) items = items.Select(x => Attribute(x, attribute, null, error)).ToList();
                return string.Join(sep, items.Select(JinjaOps.Str));
            }
            case "list": args.CheckNoExtra(0); return JinjaOps.Iterate(value, error).ToList();
            case "lower": args.CheckNoExtra(0); return JinjaStrings.Lower(JinjaOps.Str(value));
            case "upper": args.CheckNoExtra(0); return JinjaStrings.Upper(JinjaOps.Str(value));
            case "title": args.CheckNoExtra(0); return JinjaTitle(JinjaOps.Str(value));
            case "map":
            {
                var items = JinjaOps.Iterate(value, error);
                if (args.Keywords.ContainsKey("attribute"))
                {
                    var attribute = args.Keywords["attribute"];
                    var fallback = args.Keywords.TryGetValue("default", out var dv) ? dv : JinjaArgs.Missing;
                    if (args.Positional.Count > 0 || args.Keywords.Keys.Any(k => (string)k is not ("attribute" or "default"))) throw error("map(attribute=...) takes no other arguments");
                    return items.Select(x => Attribute(x, attribute, fallback, error)).ToList();
                }
                if (args.Positional.Count == 0 || args.Positional[0] is not string filter) throw error("map needs a filter name or attribute=");
                if (!HasFilter(filter)) throw error($"unknown filter '{filter}'");
                var rest = new JinjaArgs(args.Positional.Skip(1).ToList(), args.Keywords, $"filter '{filter}'", m => ctx.Error(line, m));
                return items.Select(x => ApplyFilter(filter, x, Fresh(rest), ctx, line)).ToList();
            }
            case "select" or "reject":
            {
                var items = JinjaOps.Iterate(value, error);
                bool want = name == "select";
                if (args.Positional.Count == 0) return items.Where(x => JinjaOps.Truthy(x) == want).ToList();
                if (args.Positional[0] is not string test || !HasTest(test)) throw error($"unknown test '{args.Positional[0]}'");
                var rest = new JinjaArgs(args.Positional.Skip(1).ToList(), args.Keywords, $"test '{test}'", m => ctx.Error(line, m));
                return items.Where(x => ApplyTest(test, x, Fresh(rest), ctx, line) == want).ToList();
            }
            case "selectattr" or "rejectattr":
            {
                var items = JinjaOps.Iterate(value, error);
                bool want = name == "selectattr";
                if (args.Positional.Count == 0) throw error("missing attribute name");
                var attribute = args.Positional[0];
                if (args.Positional.Count == 1) return items.Where(x => JinjaOps.Truthy(Attribute(x, attribute, JinjaArgs.Missing, error)) == want).ToList();
                if (args.Positional[1] is not string test || !HasTest(test)) throw error($"unknown test '{args.Positional[1]}'");
                var rest = new JinjaArgs(args.Positional.Skip(2).ToList(), args.Keywords, $"test '{test}'", m => ctx.Error(line, m));
                return items.Where(x => ApplyTest(test, Attribute(x, attribute, JinjaArgs.Missing, error), Fresh(rest), ctx, line) == want).ToList();
            }
            case "max" or "min":
            {
                bool caseSensitive = JinjaOps.Truthy(args.Get(0, "case_sensitive", false));
                var attribute = args.Get(1, "attribute", null);
                args.CheckNoExtra(2);
                var items = JinjaOps.Iterate(value, error);
                if (items.Count == 0) return new JinjaUndefined($"No aggregated item, sequence was empty.");
                var sorted = SortBy(items, x => attribute is null ? x : Attribute(x, attribute, null, error), caseSensitive, false, error);
                return name == "min" ? sorted[0] : MaxFirst(sorted, attribute, caseSensitive, error);
            }
            case "replace":
            {
                string s = JinjaOps.Str(value), old = JinjaOps.Str(args.Required(0, "old")), @new = JinjaOps.Str(args.Required(1, "new"));
                long count = IntArg(args, 2, "count", -1);
                args.CheckNoExtra(3);
                return Replace(s, old, @new, count);
            }
            case "reverse":
                args.CheckNoExtra(0);
                if (value is string rs) return string.Concat(JinjaOps.TextElements(rs).Cast<string>().Reverse());
                return JinjaOps.Iterate(value, error).AsEnumerable().Reverse().ToList();
            case "round":
            {
                long precision = IntArg(args, 0, "precision", 0);
                var method = args.Get(1, "method", "common") as string;
                args.CheckNoExtra(2);
                double x = value switch { long l => l, double d => d, bool b => b ? 1 : 0, _ => throw error("round expects a number") };
                double scale = Math.Pow(10, precision);
                double r = method switch
                {
                    "common" => precision is >= 0 and <= 15 ? Math.Round(x, (int)precision, MidpointRounding.ToEven) : Math.Round(x * scale, MidpointRounding.ToEven) / scale,
                    "ceil" => Math.Ceiling(x * scale) / scale,
                    "floor" => Math.Floor(x * scale) / scale,
                    _ => throw error("method must be common, ceil or floor"),
                };
                return r;
            }
            case "safe": args.CheckNoExtra(0); return value;
            case "sort":
            {
                bool reverse = JinjaOps.Truthy(args.Get(0, "reverse", false));
                bool caseSensitive = JinjaOps.Truthy(args.Get(1, "case_sensitive", false));
                var attribute = args.Get(2, "attribute", null);
                args.CheckNoExtra(3);
                var items = JinjaOps.Iterate(value, error);
                return SortBy(items, x => attribute is null ? x : Attribute(x, attribute, null, error), caseSensitive, reverse, error);
            }
            case "string": args.CheckNoExtra(0); return JinjaOps.Str(value);
            case "striptags":
            {
                args.CheckNoExtra(0);
                var s = System.Text.RegularExpressions.Regex.Replace(JinjaOps.Str(value), "<!--.*?-->|<[^>]*>", "", System.Text.RegularExpressions.RegexOptions.Singleline);
                return string.Join(" ", JinjaStrings.Split(WebUtility.HtmlDecode(s), null, -1).Cast<string>());
            }
            case "sum":
            {
                var attribute = args.Get(0, "attribute", null);
                object? total = args.Get(1, "start", 0L);
                args.CheckNoExtra(2);
                foreach (var x in JinjaOps.Iterate(value, error))
                    total = JinjaOps.Binary("+", total, attribute is null ? x : Attribute(x, attribute, null, error), error);
                return total;
            }
            case "tojson":
            {
                var indent = args.Get(0, "indent", null);
                var ensureAscii = args.Get(-1, "ensure_ascii", false);
                var separators = args.Get(-1, "separators", null);
                bool sortKeys = JinjaOps.Truthy(args.Get(-1, "sort_keys", false));
                args.CheckNoExtra(1);
                if (JinjaOps.Truthy(ensureAscii)) throw error("ensure_ascii=true is not supported");
                int? ind = indent switch { null => null, long l => (int)Math.Max(0, l), _ => throw error("indent must be an integer") };
                string? itemSep = null, keySep = null;
                if (separators is List<object?> { Count: 2 } sep && sep[0] is string a && sep[1] is string b) (itemSep, keySep) = (a, b);
                else if (separators is not null) throw error("separators must be a pair of strings");
                return JinjaJson.Dumps(value, ind, itemSep, keySep, sortKeys, error);
            }
            case "trim":
            {
                var chars = args.Get(0, "chars", null);
                args.CheckNoExtra(1);
                return Strip(JinjaOps.Str(value), chars as string, true, true);
            }
            case "truncate":
            {
                long length = IntArg(args, 0, "length", 255);
                bool killwords = JinjaOps.Truthy(args.Get(1, "killwords", false));
                string end = JinjaOps.Str(args.Get(2, "end", "..."));
                long leeway = IntArg(args, 3, "leeway", 5);
                args.CheckNoExtra(4);
                var s = JinjaOps.Str(value);
                if (s.Length <= length + leeway) return s;
                if (killwords) return s[..(int)Math.Max(0, length - end.Length)] + end;
                var cut = s[..(int)Math.Max(0, length - end.Length)];
                int sp = cut.LastIndexOf(' ');
                return (sp >= 0 ? cut[..sp] : cut) + end;
            }
            case "unique":
            {
                bool caseSensitive = JinjaOps.Truthy(args.Get(0, "case_sensitive", false));
                var attribute = args.Get(1, "attribute", null);
                args.CheckNoExtra(2);
                var seen = new List<object?>();
                var result = new List<object?>();
                foreach (var x in JinjaOps.Iterate(value, error))
                {
                    var key = SortKey(attribute is null ? x : Attribute(x, attribute, null, error), caseSensitive);
                    if (seen.Any(k => JinjaOps.PyEquals(k, key))) continue;
                    seen.Add(key);
                    result.Add(x);
                }
                return result;
            }
            case "wordcount": args.CheckNoExtra(0); return (long)System.Text.RegularExpressions.Regex.Matches(JinjaOps.Str(value), @"\w+").Count;
            default: throw error("unknown filter");
        }
    }

    static JinjaArgs Fresh(JinjaArgs a) => new(a.Positional, a.Keywords, "", m => a.Error(m));

    static object? MaxFirst(List<object?> sorted, object? attribute, bool caseSensitive, Func<string, JinjaException> error)
    {
        // Python's max() returns the first maximal item; the stable ascending sort puts it first among equals.
        object? Key(object? x) => SortKey(attribute is null ? x : Attribute(x, attribute, null, error), caseSensitive);
        var top = Key(sorted[^1]);
        return sorted.First(x => JinjaOps.PyEquals(Key(x), top));
    }

    static long? ParseInt(string s, long numberBase)
    {
        s = s.Trim(JinjaStrings.WhitespaceChars).Replace("_", "");
        if (numberBase == 10) return long.TryParse(s, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var v) ? v : null;
        try { return Convert.ToInt64(s, (int)numberBase); } catch (Exception e) when (e is FormatException or ArgumentException or OverflowException) { return null; }
    }

    /// <summary>Jinja's <c>title</c> filter: words begin after whitespace, '-', and opening brackets.</summary>
    static string JinjaTitle(string s)
    {
        var sb = new StringBuilder(s.Length);
        bool wordStart = true;
        foreach (char c in s)
        {
            bool boundary = JinjaStrings.IsSpace(c) || c is '-' or '(' or '{' or '[' or '<';
            if (boundary) { sb.Append(c); wordStart = true; continue; }
            sb.Append(wordStart ? char.ToUpperInvariant(c) : char.ToLowerInvariant(c));
            wordStart = false;
        }
        return sb.ToString();
    }

    /// <summary>An item's attribute for map/selectattr/sort/join: a dotted path ("a.b") or an integer index.</summary>
    static object? Attribute(object? item, object? attribute, object? fallback, Func<string, JinjaException> error)
    {
        object? v = item;
        var parts = attribute is string s ? s.Split('.') : [JinjaOps.Str(attribute)];
        foreach (var part in parts)
        {
            object? key = long.TryParse(part, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var n) && v is List<object?> or string ? n : part;
            v = GetItem(v, key, error);
            if (v is JinjaUndefined && !ReferenceEquals(fallback, JinjaArgs.Missing)) return fallback;
            if (v is JinjaUndefined) return v;
        }
        return v;
    }

    static object? SortKey(object? v, bool caseSensitive) => !caseSensitive && v is string s ? JinjaStrings.Lower(s) : v;

    static List<object?> SortBy<T>(List<T> items, Func<T, object?> key, bool caseSensitive, bool reverse, Func<string, JinjaException> error)
    {
        var keyed = items.Select((x, i) => (Item: x, Key: SortKey(key(x), caseSensitive), Index: i)).ToList();
        keyed.Sort((a, b) =>
        {
            int c = JinjaOps.Compare(a.Key, b.Key, error);
            if (reverse) c = -c;
            return c != 0 ? c : a.Index.CompareTo(b.Index);
        });
        return keyed.Select(k => (object?)k.Item).ToList();
    }

    // ---- tests ----

    static readonly HashSet<string> Tests =
    [
        "boolean", "callable", "defined", "divisibleby", "eq", "equalto", "==", "escaped", "even", "false", "filter", "float",
        "ge", ">=", "gt", "greaterthan", ">", "in", "integer", "iterable", "le", "<=", "lower", "lt", "lessthan", "<", "mapping",
        "ne", "!=", "none", "number", "odd", "sameas", "sequence", "string", "test", "true", "undefined", "upper",
    ];

    public static bool HasTest(string name) => Tests.Contains(name);

    public static bool ApplyTest(string name, object? value, JinjaArgs args, RenderContext ctx, int line)
    {
        Func<string, JinjaException> error = m => ctx.Error(line, $"test '{name}': {m}");
        object? Arg() { var a = args.Required(0, "other"); args.CheckNoExtra(1); return a; }
        switch (name)
        {
            case "boolean": return value is bool;
            case "callable": return value is JinjaCallable or JinjaUndefined;
            case "defined": return value is not JinjaUndefined;
            case "undefined": return value is JinjaUndefined;
            case "none": return value is null;
            case "true": return value is true;
            case "false": return value is false;
            case "string": return value is string;
            case "mapping": return value is JinjaDict;
            case "number": return value is long or double or bool;
            case "integer": return value is long;
            case "float": return value is double;
            case "iterable": return value is string or List<object?> or JinjaDict or JinjaUndefined;
            case "sequence": return value is string or List<object?> or JinjaDict;
            case "lower": return value is string ls && JinjaStrings.Lower(ls) == ls;
            case "upper": return value is string us && JinjaStrings.Upper(us) == us;
            case "escaped": return false;
            case "odd" or "even":
                if (value is not long and not bool) throw error($"expects an integer, got {JinjaOps.TypeName(value)}");
                return (JinjaOps.Binary("%", value, 2L, error) is long r && r == 1) == (name == "odd");
            case "divisibleby":
                return JinjaOps.PyEquals(JinjaOps.Binary("%", value, Arg(), error), 0L);
            case "eq" or "equalto" or "==": return JinjaOps.PyEquals(value, Arg());
            case "ne" or "!=": return !JinjaOps.PyEquals(value, Arg());
            case "lt" or "lessthan" or "<": return JinjaOps.Compare(value, Arg(), error) < 0;
            case "le" or "<=": return JinjaOps.Compare(value, Arg(), error) <= 0;
            case "gt" or "greaterthan" or ">": return JinjaOps.Compare(value, Arg(), error) > 0;
            case "ge" or ">=": return JinjaOps.Compare(value, Arg(), error) >= 0;
            case "in": return JinjaOps.Contains(Arg(), value, error);
            case "sameas":
            {
                var other = Arg();
                if (value is null || other is null) return value is null && other is null;
                if (value is bool vb && other is bool ob) return vb == ob;
                return ReferenceEquals(value, other) || (value is long or string && JinjaOps.PyEquals(value, other) && value.GetType() == other.GetType());
            }
            case "filter": return value is string f && HasFilter(f);
            case "test": return value is string t && HasTest(t);
            default: throw error("unknown test");
        }
    }

    // ---- strftime ----

    static readonly string[] Days = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];
    static readonly string[] Months = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"];

    /// <summary>C strftime (as glibc, C locale) for the directives chat templates use.</summary>
    public static string Strftime(DateTime t, string format)
    {
        var sb = new StringBuilder();
        for (int i = 0; i < format.Length; i++)
        {
            char c = format[i];
            if (c != '%' || i + 1 >= format.Length) { sb.Append(c); continue; }
            char d = format[++i];
            bool noPad = false;
            if (d == '-' && i + 1 < format.Length) { noPad = true; d = format[++i]; }
            string Num(int v, int width) => noPad ? v.ToString(CultureInfo.InvariantCulture) : v.ToString(new string('0', width), CultureInfo.InvariantCulture);
            sb.Append(d switch
            {
                'a' => Days[(int)t.DayOfWeek][..3],
                'A' => Days[(int)t.DayOfWeek],
                'b' or 'h' => Months[t.Month - 1][..3],
                'B' => Months[t.Month - 1],
                'd' => Num(t.Day, 2),
                'e' => noPad ? t.Day.ToString(CultureInfo.InvariantCulture) : t.Day.ToString(CultureInfo.InvariantCulture).PadLeft(2),
                'm' => Num(t.Month, 2),
                'y' => Num(t.Year % 100, 2),
                'Y' => t.Year.ToString(CultureInfo.InvariantCulture),
                'H' => Num(t.Hour, 2),
                'I' => Num(t.Hour % 12 == 0 ? 12 : t.Hour % 12, 2),
                'M' => Num(t.Minute, 2),
                'S' => Num(t.Second, 2),
                'p' => t.Hour < 12 ? "AM" : "PM",
                'j' => Num(t.DayOfYear, 3),
                'f' => (t.Ticks % TimeSpan.TicksPerSecond / 10).ToString("000000", CultureInfo.InvariantCulture),
                'u' => (t.DayOfWeek == DayOfWeek.Sunday ? 7 : (int)t.DayOfWeek).ToString(CultureInfo.InvariantCulture),
                'w' => ((int)t.DayOfWeek).ToString(CultureInfo.InvariantCulture),
                'F' => t.ToString("yyyy-MM-dd", CultureInfo.InvariantCulture),
                'D' => t.ToString("MM/dd/yy", CultureInfo.InvariantCulture),
                'T' => t.ToString("HH:mm:ss", CultureInfo.InvariantCulture),
                'R' => t.ToString("HH:mm", CultureInfo.InvariantCulture),
                'c' => Days[(int)t.DayOfWeek][..3] + " " + Months[t.Month - 1][..3] + " " + t.Day.ToString(CultureInfo.InvariantCulture).PadLeft(2) + " " + t.ToString("HH:mm:ss yyyy", CultureInfo.InvariantCulture),
                'x' => t.ToString("MM/dd/yy", CultureInfo.InvariantCulture),
                'X' => t.ToString("HH:mm:ss", CultureInfo.InvariantCulture),
                'n' => "\n",
                't' => "\t",
                '%' => "%",
                _ => "%" + d,
            });
        }
        return sb.ToString();
    }
}

/// <summary>A template called <c>raise_exception(message)</c>: the conversation is not one the template accepts.</summary>
internal sealed class TemplateRaisedException(string message) : Exception(message);
