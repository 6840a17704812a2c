using System.Text;

namespace AlignSharp.Text.Jinja;

/// <summary>
/// A parsed Jinja template, rendered as Hugging Face transformers renders chat templates: Jinja2 with
/// trim_blocks and lstrip_blocks on, the loopcontrols extension (break/continue), the <c>generation</c> tag, an
/// immutable sandbox, and the <c>tojson</c>, <c>raise_exception</c> and <c>strftime_now</c> additions. Values are
/// Python-like (see <see cref="JinjaUndefined"/>); a parse or render error is a <see cref="JinjaException"/>
/// naming the template and line.
/// </summary>
public sealed class JinjaTemplate
{
    readonly List<Stmt> _body;

    JinjaTemplate(string source, string name, List<Stmt> body)
    {
        Source = source;
        Name = name;
        _body = body;
    }

    /// <summary>The template text as given.</summary>
    public string Source { get; }

    /// <summary>Where the template came from, for error messages (e.g. "models/x/tokenizer_config.json").</summary>
    public string Name { get; }

    /// <summary>Parses <paramref name="source"/>; unknown tags, filters and tests are errors here, before any render.</summary>
    public static JinjaTemplate Parse(string source, string name) => new(source, name, JinjaParser.Parse(source, name));

    /// <summary>
    /// Renders with the given variables (values as described on <see cref="JinjaUndefined"/>).
    /// <paramref name="clock"/> is what <c>strftime_now</c> reads (default: local time, as Python's datetime.now()).
    /// </summary>
    public string Render(IReadOnlyDictionary<string, object?> variables, Func<DateTime>? clock = null)
    {
        var scope = new Scope(null);
        scope.Set("strftime_now", JinjaBuiltins.StrftimeNow(clock ?? (() => DateTime.Now)));
        foreach (var (k, v) in variables) scope.Set(k, v);
        var output = new StringBuilder();
        try
        {
            Stmt.ExecAll(_body, new Scope(scope), new RenderContext(Name), output);
        }
        catch (TemplateRaisedException e)
        {
            throw new JinjaException($"chat template {Name} raised an error: {e.Message}");
        }
        catch (OverflowException)
        {
            throw new JinjaException($"chat template {Name}: integer overflow");
        }
        return output.ToString();
    }
}
