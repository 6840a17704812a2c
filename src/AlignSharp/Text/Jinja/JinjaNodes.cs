using System.Text;

namespace AlignSharp.Text.Jinja;

/// <summary>Variables visible at a point of the template: a chain of frames (template, for-loop iteration, macro call).</summary>
internal sealed class Scope(Scope? parent)
{
    readonly Dictionary<string, object?> _vars = new(StringComparer.Ordinal);
    public Scope? Parent { get; } = parent;

    public bool TryGet(string name, out object? value)
    {
        for (var s = this; s is not null; s = s.Parent)
            if (s._vars.TryGetValue(name, out value)) return true;
        value = null;
        return false;
    }

    public void Set(string name, object? value) => _vars[name] = value;
}

/// <summary>The state of one render: the template's name for errors.</summary>
internal sealed class RenderContext(string templateName)
{
    public string TemplateName { get; } = templateName;
    public int Depth { get; set; }
    public JinjaException Error(int line, string message) => new($"chat template {TemplateName}, line {line}: {message}");
}

internal enum Flow { Normal, Break, Continue }

internal abstract class Node(int line)
{
    public int Line { get; } = line;
    protected Func<string, JinjaException> Err(RenderContext ctx) => m => ctx.Error(Line, m);
}

internal abstract class Expr(int line) : Node(line)
{
    public abstract object? Eval(Scope scope, RenderContext ctx);
}

internal abstract class Stmt(int line) : Node(line)
{
    public abstract Flow Exec(Scope scope, RenderContext ctx, StringBuilder output);

    public static Flow ExecAll(List<Stmt> body, Scope scope, RenderContext ctx, StringBuilder output)
    {
        foreach (var s in body)
        {
            var f = s.Exec(scope, ctx, output);
            if (f != Flow.Normal) return f;
        }
        return Flow.Normal;
    }
}

// ---- expressions ----

internal sealed class ConstExpr(int line, object? value) : Expr(line)
{
    public object? Value { get; } = value;
    public override object? Eval(Scope scope, RenderContext ctx) => Value;
}

internal sealed class NameExpr(int line, string name) : Expr(line)
{
    public string Name { get; } = name;
    public override object? Eval(Scope scope, RenderContext ctx)
    {
        if (scope.TryGet(Name, out var v)) return v;
        if (JinjaBuiltins.Globals.TryGetValue(Name, out var g)) return g;
        return new JinjaUndefined($"'{Name}' is undefined");
    }
}

internal sealed class ListExpr(int line, List<Expr> items, bool tuple = false) : Expr(line)
{
    public override object? Eval(Scope scope, RenderContext ctx) =>
        tuple ? new JinjaTuple(items.Select(i => i.Eval(scope, ctx))) : items.Select(i => i.Eval(scope, ctx)).ToList();
}

internal sealed class DictExpr(int line, List<(Expr Key, Expr Value)> pairs) : Expr(line)
{
    public override object? Eval(Scope scope, RenderContext ctx)
    {
        var d = new JinjaDict();
        foreach (var (k, v) in pairs)
        {
            var key = k.Eval(scope, ctx);
            if (key is null || key is JinjaUndefined || key is List<object?> || key is JinjaDict)
                throw ctx.Error(Line, $"unhashable dict key of type '{JinjaOps.TypeName(key)}'");
            d[key] = v.Eval(scope, ctx);
        }
        return d;
    }
}

internal sealed class AttrExpr(int line, Expr target, string name) : Expr(line)
{
    public Expr Target { get; } = target;
    public string Name { get; } = name;
    public override object? Eval(Scope scope, RenderContext ctx) => JinjaBuiltins.GetAttr(Target.Eval(scope, ctx), Name, Err(ctx));
}

internal sealed class ItemExpr(int line, Expr target, Expr key) : Expr(line)
{
    public override object? Eval(Scope scope, RenderContext ctx) => JinjaBuiltins.GetItem(target.Eval(scope, ctx), key.Eval(scope, ctx), Err(ctx));
}

internal sealed class SliceExpr(int line, Expr target, Expr? start, Expr? stop, Expr? step) : Expr(line)
{
    public override object? Eval(Scope scope, RenderContext ctx) =>
        JinjaOps.Slice(target.Eval(scope, ctx), start?.Eval(scope, ctx), stop?.Eval(scope, ctx), step?.Eval(scope, ctx), Err(ctx));
}

internal sealed record CallArguments(List<Expr> Positional, List<(string Name, Expr Value)> Keywords)
{
    public static readonly CallArguments None = new([], []);

    public JinjaArgs Eval(Scope scope, RenderContext ctx, string what, int line, List<object?>? leading = null)
    {
        var pos = leading ?? [];
        foreach (var p in Positional) pos.Add(p.Eval(scope, ctx));
        var kw = new JinjaDict();
        foreach (var (n, v) in Keywords) kw[n] = v.Eval(scope, ctx);
        return new JinjaArgs(pos, kw, what, m => ctx.Error(line, m));
    }
}

internal sealed class CallExpr(int line, Expr callee, CallArguments args) : Expr(line)
{
    public override object? Eval(Scope scope, RenderContext ctx)
    {
        var f = callee.Eval(scope, ctx);
        string name = callee switch { NameExpr n => n.Name, AttrExpr a => a.Name, _ => "expression" };
        if (f is JinjaUndefined u) throw ctx.Error(Line, u.Hint);
        if (f is not JinjaCallable c) throw ctx.Error(Line, $"'{JinjaOps.TypeName(f)}' object is not callable");
        if (++ctx.Depth > 200) throw ctx.Error(Line, "calls nested too deeply (recursion?)");
        try { return c.Invoke(args.Eval(scope, ctx, name, Line)); }
        finally { ctx.Depth--; }
    }
}

internal sealed class FilterExpr(int line, Expr value, string name, CallArguments args) : Expr(line)
{
    public override object? Eval(Scope scope, RenderContext ctx) =>
        JinjaBuiltins.ApplyFilter(name, value.Eval(scope, ctx), args.Eval(scope, ctx, $"filter '{name}'", Line), ctx, Line);
}

internal sealed class TestExpr(int line, Expr value, string name, CallArguments args, bool negated) : Expr(line)
{
    public override object? Eval(Scope scope, RenderContext ctx)
    {
        bool r = JinjaBuiltins.ApplyTest(name, value.Eval(scope, ctx), args.Eval(scope, ctx, $"test '{name}'", Line), ctx, Line);
        return negated ? !r : r;
    }
}

internal sealed class NotExpr(int line, Expr operand) : Expr(line)
{
    public override object? Eval(Scope scope, RenderContext ctx) => !JinjaOps.Truthy(operand.Eval(scope, ctx));
}

internal sealed class NegExpr(int line, Expr operand, bool negate) : Expr(line)
{
    public override object? Eval(Scope scope, RenderContext ctx)
    {
        var v = operand.Eval(scope, ctx);
        if (negate) return JinjaOps.Negate(v, Err(ctx));
        if (!JinjaOps.IsNumber(v)) throw ctx.Error(Line, $"bad operand type for unary +: '{JinjaOps.TypeName(v)}'");
        return v is bool b ? (b ? 1L : 0L) : v;
    }
}

internal sealed class AndOrExpr(int line, Expr left, Expr right, bool isAnd) : Expr(line)
{
    public override object? Eval(Scope scope, RenderContext ctx)
    {
        var l = left.Eval(scope, ctx);
        return JinjaOps.Truthy(l) == isAnd ? right.Eval(scope, ctx) : l;
    }
}

internal sealed class BinaryExpr(int line, string op, Expr left, Expr right) : Expr(line)
{
    public override object? Eval(Scope scope, RenderContext ctx)
    {
        var l = left.Eval(scope, ctx);
        var r = right.Eval(scope, ctx);
        if (op == "~") return JinjaOps.Str(l) + JinjaOps.Str(r);
        return JinjaOps.Binary(op, l, r, Err(ctx));
    }
}

internal sealed class CompareExpr(int line, Expr first, List<(string Op, Expr Right)> rest) : Expr(line)
{
    public override object? Eval(Scope scope, RenderContext ctx)
    {
        var left = first.Eval(scope, ctx);
        foreach (var (op, rightExpr) in rest)
        {
            var right = rightExpr.Eval(scope, ctx);
            bool ok = op switch
            {
                "==" => JinjaOps.PyEquals(left, right),
                "!=" => !JinjaOps.PyEquals(left, right),
                "<" => JinjaOps.Compare(left, right, Err(ctx)) < 0,
                "<=" => JinjaOps.Compare(left, right, Err(ctx)) <= 0,
                ">" => JinjaOps.Compare(left, right, Err(ctx)) > 0,
                ">=" => JinjaOps.Compare(left, right, Err(ctx)) >= 0,
                "in" => JinjaOps.Contains(right, left, Err(ctx)),
                "notin" => !JinjaOps.Contains(right, left, Err(ctx)),
                _ => throw ctx.Error(Line, $"unknown operator {op}"),
            };
            if (!ok) return false;
            left = right;
        }
        return true;
    }
}

internal sealed class CondExpr(int line, Expr test, Expr then, Expr? otherwise) : Expr(line)
{
    public override object? Eval(Scope scope, RenderContext ctx) =>
        JinjaOps.Truthy(test.Eval(scope, ctx)) ? then.Eval(scope, ctx)
        : otherwise is null ? new JinjaUndefined("the inline if expression evaluated to false and no else section was defined")
        : otherwise.Eval(scope, ctx);
}

// ---- statements ----

internal sealed class TextStmt(int line, string text) : Stmt(line)
{
    public override Flow Exec(Scope scope, RenderContext ctx, StringBuilder output)
    {
        output.Append(text);
        return Flow.Normal;
    }
}

internal sealed class OutputStmt(int line, Expr expr) : Stmt(line)
{
    public override Flow Exec(Scope scope, RenderContext ctx, StringBuilder output)
    {
        output.Append(JinjaOps.Str(expr.Eval(scope, ctx)));
        return Flow.Normal;
    }
}

internal sealed class IfStmt(int line, List<(Expr Test, List<Stmt> Body)> branches, List<Stmt>? otherwise) : Stmt(line)
{
    public override Flow Exec(Scope scope, RenderContext ctx, StringBuilder output)
    {
        foreach (var (test, body) in branches)
            if (JinjaOps.Truthy(test.Eval(scope, ctx))) return ExecAll(body, scope, ctx, output);
        return otherwise is null ? Flow.Normal : ExecAll(otherwise, scope, ctx, output);
    }
}

/// <summary>An assignment target: a name, <c>ns.attr</c>, or a tuple of names.</summary>
internal abstract record Target(int Line)
{
    public abstract void Assign(Scope scope, RenderContext ctx, object? value);
}

internal sealed record NameTarget(int Line, string Name) : Target(Line)
{
    public override void Assign(Scope scope, RenderContext ctx, object? value) => scope.Set(Name, value);
}

internal sealed record AttrTarget(int Line, string Object, string Attr) : Target(Line)
{
    public override void Assign(Scope scope, RenderContext ctx, object? value)
    {
        if (!scope.TryGet(Object, out var o) || o is not JinjaNamespace ns)
            throw ctx.Error(Line, $"cannot assign attribute on non-namespace object '{Object}'");
        ns.Attributes[Attr] = value;
    }
}

internal sealed record TupleTarget(int Line, List<Target> Items) : Target(Line)
{
    public override void Assign(Scope scope, RenderContext ctx, object? value)
    {
        var values = JinjaOps.Iterate(value, m => ctx.Error(Line, m));
        if (values.Count != Items.Count)
            throw ctx.Error(Line, values.Count > Items.Count ? $"too many values to unpack (expected {Items.Count})" : $"not enough values to unpack (expected {Items.Count}, got {values.Count})");
        for (int i = 0; i < Items.Count; i++) Items[i].Assign(scope, ctx, values[i]);
    }
}

internal sealed class SetStmt(int line, Target target, Expr value) : Stmt(line)
{
    public override Flow Exec(Scope scope, RenderContext ctx, StringBuilder output)
    {
        target.Assign(scope, ctx, value.Eval(scope, ctx));
        return Flow.Normal;
    }
}

internal sealed class SetBlockStmt(int line, Target target, List<Stmt> body, List<(string Name, CallArguments Args)> filters) : Stmt(line)
{
    public override Flow Exec(Scope scope, RenderContext ctx, StringBuilder output)
    {
        var sb = new StringBuilder();
        ExecAll(body, scope, ctx, sb);
        object? v = sb.ToString();
        foreach (var (name, args) in filters) v = JinjaBuiltins.ApplyFilter(name, v, args.Eval(scope, ctx, $"filter '{name}'", Line), ctx, Line);
        target.Assign(scope, ctx, v);
        return Flow.Normal;
    }
}

internal sealed class FilterBlockStmt(int line, List<(string Name, CallArguments Args)> filters, List<Stmt> body) : Stmt(line)
{
    public override Flow Exec(Scope scope, RenderContext ctx, StringBuilder output)
    {
        var sb = new StringBuilder();
        var flow = ExecAll(body, new Scope(scope), ctx, sb);
        object? v = sb.ToString();
        foreach (var (name, args) in filters) v = JinjaBuiltins.ApplyFilter(name, v, args.Eval(scope, ctx, $"filter '{name}'", Line), ctx, Line);
        output.Append(JinjaOps.Str(v));
        return flow;
    }
}

internal sealed class BlockStmt(int line, List<Stmt> body) : Stmt(line)
{
    public override Flow Exec(Scope scope, RenderContext ctx, StringBuilder output) => ExecAll(body, scope, ctx, output);
}

internal sealed class LoopControlStmt(int line, Flow flow) : Stmt(line)
{
    public override Flow Exec(Scope scope, RenderContext ctx, StringBuilder output) => flow;
}

/// <summary>The <c>loop</c> variable of a for loop.</summary>
internal sealed class JinjaLoop(List<object?> items, int depth)
{
    public List<object?> Items { get; } = items;
    public int Index0 { get; set; }
    public int Depth { get; } = depth;
}

internal sealed class ForStmt(int line, Target target, Expr iterable, Expr? filter, List<Stmt> body, List<Stmt>? otherwise) : Stmt(line)
{
    public override Flow Exec(Scope scope, RenderContext ctx, StringBuilder output)
    {
        var all = JinjaOps.Iterate(iterable.Eval(scope, ctx), Err(ctx));
        List<object?> items;
        if (filter is null) items = all;
        else
        {
            items = [];
            foreach (var item in all)
            {
                var s = new Scope(scope);
                target.Assign(s, ctx, item);
                if (JinjaOps.Truthy(filter.Eval(s, ctx))) items.Add(item);
            }
        }
        int depth = scope.TryGet("loop", out var outer) && outer is JinjaLoop o ? o.Depth + 1 : 1;
        var loop = new JinjaLoop(items, depth);
        for (int i = 0; i < items.Count; i++)
        {
            loop.Index0 = i;
            var s = new Scope(scope);
            s.Set("loop", loop);
            target.Assign(s, ctx, items[i]);
            if (ExecAll(body, s, ctx, output) == Flow.Break) break;
        }
        if (items.Count == 0 && otherwise is not null) return ExecAll(otherwise, new Scope(scope), ctx, output);
        return Flow.Normal;
    }
}

internal sealed class MacroStmt(int line, string name, List<(string Name, Expr? Default)> parameters, List<Stmt> body) : Stmt(line)
{
    public override Flow Exec(Scope scope, RenderContext ctx, StringBuilder output)
    {
        scope.Set(name, new JinjaCallable(name, args => Call(scope, ctx, args)));
        return Flow.Normal;
    }

    object? Call(Scope definition, RenderContext ctx, JinjaArgs args)
    {
        var s = new Scope(definition);
        for (int i = 0; i < parameters.Count; i++)
        {
            var (p, def) = parameters[i];
            object? v;
            if (i < args.Positional.Count) v = args.Positional[i];
            else if (args.Keywords.TryGetValue(p, out var kv)) v = kv;
            else v = def is null ? new JinjaUndefined($"'{p}' is undefined (no argument given to macro '{name}')") : def.Eval(s, ctx);
            s.Set(p, v);
        }
        s.Set("varargs", new JinjaTuple(args.Positional.Skip(parameters.Count)));
        var kwargs = new JinjaDict();
        foreach (var kv in args.Keywords)
            if (!parameters.Any(p => p.Name == (string)kv.Key)) kwargs[kv.Key] = kv.Value;
        s.Set("kwargs", kwargs);
        var sb = new StringBuilder();
        ExecAll(body, s, ctx, sb);
        return sb.ToString();
    }
}
