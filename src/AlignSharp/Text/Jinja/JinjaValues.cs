using System.Globalization;
using System.Text;
using System.Text.Json;

namespace AlignSharp.Text.Jinja;

/// <summary>
/// Template values, as Python types: null (None), <see cref="JinjaUndefined"/>, bool, long (int), double (float),
/// string, <see cref="List{T}"/> of object? (list and tuple), <see cref="JinjaDict"/> (dict, insertion-ordered),
/// <see cref="JinjaNamespace"/>, <see cref="JinjaCallable"/> and the loop object.
/// </summary>
public sealed class JinjaUndefined
{
    /// <summary>What was undefined, for the error when it is used ("'x' is undefined").</summary>
    public string Hint { get; }
    public JinjaUndefined(string hint) => Hint = hint;
    public static readonly JinjaUndefined Plain = new("value is undefined");
}

/// <summary>A Python tuple: a list that prints as <c>(a, b)</c> (what <c>(a, b)</c> literals and <c>items()</c> make).</summary>
public sealed class JinjaTuple : List<object?>
{
    public JinjaTuple() { }
    public JinjaTuple(IEnumerable<object?> items) : base(items) { }
}

/// <summary>A Python dict: insertion-ordered, keys compared with Python equality (1 == 1.0 == True).</summary>
public sealed class JinjaDict : OrderedDictionary<object, object?>
{
    public JinjaDict() : base(PythonKeyComparer.Instance) { }
}

/// <summary>The object <c>namespace(...)</c> returns: attributes that <c>{% set ns.x = ... %}</c> may assign from inside loops.</summary>
public sealed class JinjaNamespace
{
    public JinjaDict Attributes { get; } = new();
}

/// <summary>A function, filter-like method or macro the template can call.</summary>
public sealed class JinjaCallable(string name, Func<JinjaArgs, object?> invoke)
{
    public string Name { get; } = name;
    public object? Invoke(JinjaArgs args) => invoke(args);
}

/// <summary>Positional and keyword arguments of a call, with Python-style binding helpers.</summary>
public sealed class JinjaArgs(List<object?> positional, JinjaDict keywords, string what, Func<string, JinjaException> error)
{
    public List<object?> Positional { get; } = positional;
    public JinjaDict Keywords { get; } = keywords;
    readonly HashSet<string> _used = [];

    public JinjaException Error(string message) => error($"{what}: {message}");

    /// <summary>The argument at <paramref name="index"/> or named <paramref name="name"/>; <paramref name="fallback"/> when absent.</summary>
    public object? Get(int index, string name, object? fallback)
    {
        _used.Add(name);
        if (index >= 0 && index < Positional.Count)
        {
            if (Keywords.ContainsKey(name)) throw Error($"got multiple values for argument '{name}'");
            return Positional[index];
        }
        return Keywords.TryGetValue(name, out var v) ? v : fallback;
    }

    public object? Required(int index, string name)
    {
        var v = Get(index, name, Missing);
        if (ReferenceEquals(v, Missing)) throw Error($"missing required argument '{name}'");
        return v;
    }

    /// <summary>Fails on positional arguments beyond <paramref name="maxPositional"/> and on unknown keywords.</summary>
    public void CheckNoExtra(int maxPositional)
    {
        if (Positional.Count > maxPositional) throw Error($"takes at most {maxPositional} positional argument(s), got {Positional.Count}");
        foreach (var k in Keywords.Keys)
            if (!_used.Contains((string)k)) throw Error($"unexpected keyword argument '{k}'");
    }

    public static readonly object Missing = new();
}

/// <summary>Python equality and hashing for dict keys.</summary>
internal sealed class PythonKeyComparer : IEqualityComparer<object>
{
    public static readonly PythonKeyComparer Instance = new();
    public new bool Equals(object? a, object? b) => JinjaOps.PyEquals(a, b);
    public int GetHashCode(object o) => o switch
    {
        bool b => b ? 1 : 0,
        long l => l.GetHashCode(),
        double d when d == Math.Floor(d) && Math.Abs(d) < 9e18 => ((long)d).GetHashCode(),
        string s => string.GetHashCode(s, StringComparison.Ordinal),
        _ => o.GetHashCode(),
    };
}

/// <summary>Conversions between JSON and template values.</summary>
public static class JinjaJson
{
    /// <summary>A JSON value as a template value: objects become dicts, integers long, other numbers double.</summary>
    public static object? FromJson(JsonElement e)
    {
        switch (e.ValueKind)
        {
            case JsonValueKind.Object:
                var d = new JinjaDict();
                foreach (var p in e.EnumerateObject()) d[p.Name] = FromJson(p.Value);
                return d;
            case JsonValueKind.Array:
                return e.EnumerateArray().Select(FromJson).ToList();
            case JsonValueKind.String: return e.GetString();
            case JsonValueKind.Number:
                return e.TryGetInt64(out long l) ? (object)l : (object)e.GetDouble();
            case JsonValueKind.True: return true;
            case JsonValueKind.False: return false;
            default: return null;
        }
    }

    /// <summary>
    /// Python's <c>json.dumps(x, ensure_ascii=False, indent=indent, separators=separators, sort_keys=sortKeys)</c>,
    /// the <c>tojson</c> filter as Hugging Face transformers defines it.
    /// </summary>
    public static string Dumps(object? value, int? indent, string? itemSeparator, string? keySeparator, bool sortKeys, Func<string, JinjaException> error)
    {
        itemSeparator ??= indent is null ? ", " : ",";
        keySeparator ??= ": ";
        var sb = new StringBuilder();
        Write(sb, value, 0);
        return sb.ToString();

        void NewLine(int depth)
        {
            sb.Append('\n');
            sb.Append(' ', indent!.Value * depth);
        }

        void Write(StringBuilder sb, object? v, int depth)
        {
            switch (v)
            {
                case null: sb.Append("null"); break;
                case bool b: sb.Append(b ? "true" : "false"); break;
                case long l: sb.Append(l.ToString(CultureInfo.InvariantCulture)); break;
                case double d:
                    sb.Append(double.IsNaN(d) ? "NaN" : double.IsPositiveInfinity(d) ? "Infinity" : double.IsNegativeInfinity(d) ? "-Infinity" : JinjaOps.FloatRepr(d));
                    break;
                case string s: WriteString(sb, s); break;
                case List<object?> list:
                    if (list.Count == 0) { sb.Append("[]"); break; }
                    sb.Append('[');
                    for (int i = 0; i < list.Count; i++)
                    {
                        if (i > 0) sb.Append(itemSeparator);
                        if (indent is not null) NewLine(depth + 1);
                        Write(sb, list[i], depth + 1);
                    }
                    if (indent is not null) NewLine(depth);
                    sb.Append(']');
                    break;
                case JinjaDict dict: WriteDict(sb, dict, depth); break;
                case JinjaNamespace ns: WriteDict(sb, ns.Attributes, depth); break;
                case JinjaUndefined u: throw error($"tojson: {u.Hint}");
                default: throw error($"tojson: object of type {JinjaOps.TypeName(v)} is not JSON serializable");
            }
        }

        void WriteDict(StringBuilder sb, JinjaDict dict, int depth)
        {
            if (dict.Count == 0) { sb.Append("{}"); return; }
            var entries = dict.Select(kv => (Key: JsonKey(kv.Key), kv.Value)).ToList();
            if (sortKeys) entries.Sort((a, b) => string.CompareOrdinal(a.Key, b.Key));
            sb.Append('{');
            for (int i = 0; i < entries.Count; i++)
            {
                if (i > 0) sb.Append(itemSeparator);
                if (indent is not null) NewLine(depth + 1);
                WriteString(sb, entries[i].Key);
                sb.Append(keySeparator);
                Write(sb, entries[i].Value, depth + 1);
            }
            if (indent is not null) NewLine(depth);
            sb.Append('}');
        }

        string JsonKey(object k) => k switch
        {
            string s => s,
            bool b => b ? "true" : "false",
            long l => l.ToString(CultureInfo.InvariantCulture),
            double d => JinjaOps.FloatRepr(d),
            _ => throw error($"tojson: keys must be str, int, float or bool, not {JinjaOps.TypeName(k)}"),
        };
    }

    /// <summary>A JSON string literal with Python's escapes (ensure_ascii off: only quote, backslash and control characters).</summary>
    public static void WriteString(StringBuilder sb, string s)
    {
        sb.Append('"');
        foreach (char c in s)
        {
            switch (c)
            {
                case '"': sb.Append("\\\""); break;
                case '\\': sb.Append("\\\\"); break;
                case '\n': sb.Append("\\n"); break;
                case '\r': sb.Append("\\r"); break;
                case '\t': sb.Append("\\t"); break;
                case '\b': sb.Append("\\b"); break;
                case '\f': sb.Append("\\f"); break;
                default:
                    if (c < 0x20) sb.Append("\\u").Append(((int)c).ToString("x4", CultureInfo.InvariantCulture));
                    else sb.Append(c);
                    break;
            }
        }
        sb.Append('"');
    }
}
