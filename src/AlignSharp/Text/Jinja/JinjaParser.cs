using System.Globalization;

namespace AlignSharp.Text.Jinja;

/// <summary>
/// Parses template tokens into statements, with Jinja2's grammar and operator precedence (lowest first):
/// <c>x if c else y</c>, <c>or</c>, <c>and</c>, <c>not</c>, comparisons and <c>in</c>/<c>not in</c> (chained),
/// <c>+ -</c>, <c>~</c>, <c>* / // %</c>, <c>**</c>, unary <c>- +</c>, then postfix <c>.attr [key] [a:b:c] (args)</c>
/// followed by filters <c>|f</c> and tests <c>is t</c>. Unknown tags, filters and tests are errors naming the line.
/// </summary>
internal sealed class JinjaParser
{
    readonly List<Token> _t;
    readonly string _name;
    int _i;

    JinjaParser(List<Token> tokens, string name)
    {
        _t = tokens;
        _name = name;
    }

    public static List<Stmt> Parse(string source, string name)
    {
        var p = new JinjaParser(JinjaLexer.Tokenize(source, name), name);
        var body = p.ParseBody([], out _);
        return body;
    }

    Token Cur => _t[_i];
    Token Peek(int n = 1) => _t[Math.Min(_i + n, _t.Count - 1)];
    Token Take() => _t[_i++];

    JinjaException Error(string message, int? line = null) => new($"chat template {_name}, line {line ?? Cur.Line}: {message}");

    Token Expect(TokenKind kind, string? value = null)
    {
        var t = Cur;
        if (t.Kind != kind || (value is not null && t.Value != value))
            throw Error($"expected {(value is not null ? $"'{value}'" : kind switch { TokenKind.Name => "a name", TokenKind.BlockEnd => "'%}'", TokenKind.VariableEnd => "'}}'", _ => kind.ToString() })}, found {t}");
        _i++;
        return t;
    }

    bool SkipOp(string op)
    {
        if (!Cur.IsOp(op)) return false;
        _i++;
        return true;
    }

    bool SkipName(string name)
    {
        if (!Cur.IsName(name)) return false;
        _i++;
        return true;
    }

    /// <summary>Statements until a <c>{% tag %}</c> whose name is in <paramref name="endTags"/> (returned, the tag name consumed).</summary>
    List<Stmt> ParseBody(string[] endTags, out string endTag)
    {
        var body = new List<Stmt>();
        while (true)
        {
            var t = Cur;
            switch (t.Kind)
            {
                case TokenKind.End:
                    if (endTags.Length > 0) throw Error($"unexpected end of template; expected {string.Join(" or ", endTags.Select(e => $"'{{% {e} %}}'"))}", t.Line);
                    endTag = "";
                    return body;
                case TokenKind.Text:
                    _i++;
                    body.Add(new TextStmt(t.Line, t.Value));
                    break;
                case TokenKind.VariableBegin:
                    _i++;
                    var e = ParseTupleOrExpression();
                    Expect(TokenKind.VariableEnd);
                    body.Add(new OutputStmt(t.Line, e));
                    break;
                case TokenKind.BlockBegin:
                    var tag = Peek();
                    if (tag.Kind != TokenKind.Name) throw Error("expected a tag name after '{%'", tag.Line);
                    if (endTags.Contains(tag.Value))
                    {
                        _i += 2;
                        endTag = tag.Value;
                        return body;
                    }
                    _i += 2;
                    body.Add(ParseStatement(tag));
                    break;
                default:
                    throw Error($"unexpected {t}", t.Line);
            }
        }
    }

    Stmt ParseStatement(Token tag)
    {
        int line = tag.Line;
        switch (tag.Value)
        {
            case "if": return ParseIf(line);
            case "for": return ParseFor(line);
            case "set": return ParseSet(line);
            case "macro": return ParseMacro(line);
            case "filter":
            {
                var filters = ParseFilterChain(first: true);
                Expect(TokenKind.BlockEnd);
                var body = ParseBody(["endfilter"], out _);
                Expect(TokenKind.BlockEnd);
                return new FilterBlockStmt(line, filters, body);
            }
            case "break" or "continue":
                Expect(TokenKind.BlockEnd);
                return new LoopControlStmt(line, tag.Value == "break" ? Flow.Break : Flow.Continue);
            case "generation":
            {
                // transformers' AssistantTracker extension: marks assistant text; renders its body unchanged.
                Expect(TokenKind.BlockEnd);
                var body = ParseBody(["endgeneration"], out _);
                Expect(TokenKind.BlockEnd);
                return new BlockStmt(line, body);
            }
            case "elif" or "else" or "endif" or "endfor" or "endset" or "endmacro" or "endfilter" or "endgeneration":
                throw Error($"unexpected '{{% {tag.Value} %}}' without its opening tag", line);
            default:
                throw Error($"unsupported template tag '{{% {tag.Value} %}}' (chat templates may use if, for, set, macro, filter, break, continue, generation, raw)", line);
        }
    }

    Stmt ParseIf(int line)
    {
        var branches = new List<(Expr, List<Stmt>)>();
        List<Stmt>? otherwise = null;
        var test = ParseExpression();
        Expect(TokenKind.BlockEnd);
        while (true)
        {
            var body = ParseBody(["elif", "else", "endif"], out var end);
            branches.Add((test, body));
            if (end == "elif")
            {
                test = ParseExpression();
                Expect(TokenKind.BlockEnd);
                continue;
            }
            if (end == "else")
            {
                Expect(TokenKind.BlockEnd);
                otherwise = ParseBody(["endif"], out _);
            }
            Expect(TokenKind.BlockEnd);
            return new IfStmt(line, branches, otherwise);
        }
    }

    Stmt ParseFor(int line)
    {
        var target = ParseAssignTarget(allowAttr: false);
        Expect(TokenKind.Name, "in");
        var iterable = ParseTupleOrExpression(withCondExpr: false);
        Expr? filter = null;
        if (SkipName("if")) filter = ParseExpression();
        if (Cur.IsName("recursive")) throw Error("recursive for loops are not supported");
        Expect(TokenKind.BlockEnd);
        var body = ParseBody(["else", "endfor"], out var end);
        List<Stmt>? otherwise = null;
        if (end == "else")
        {
            Expect(TokenKind.BlockEnd);
            otherwise = ParseBody(["endfor"], out _);
        }
        Expect(TokenKind.BlockEnd);
        return new ForStmt(line, target, iterable, filter, body, otherwise);
    }

    Stmt ParseSet(int line)
    {
        var target = ParseAssignTarget(allowAttr: true);
        if (SkipOp("="))
        {
            var value = ParseTupleOrExpression();
            Expect(TokenKind.BlockEnd);
            return new SetStmt(line, target, value);
        }
        var filters = Cur.IsOp("|") ? ParseFilterChain(first: false) : [];
        Expect(TokenKind.BlockEnd);
        var body = ParseBody(["endset"], out _);
        Expect(TokenKind.BlockEnd);
        return new SetBlockStmt(line, target, body, filters);
    }

    Target ParseAssignTarget(bool allowAttr)
    {
        int line = Cur.Line;
        var items = new List<Target>();
        bool parens = SkipOp("(");
        while (true)
        {
            var name = Expect(TokenKind.Name);
            if (allowAttr && SkipOp("."))
                items.Add(new AttrTarget(name.Line, name.Value, Expect(TokenKind.Name).Value));
            else
                items.Add(new NameTarget(name.Line, name.Value));
            if (!SkipOp(",")) break;
            if (Cur.Kind != TokenKind.Name) break;
        }
        if (parens) Expect(TokenKind.Operator, ")");
        return items.Count == 1 && !parens ? items[0] : new TupleTarget(line, items);
    }

    Stmt ParseMacro(int line)
    {
        var name = Expect(TokenKind.Name).Value;
        Expect(TokenKind.Operator, "(");
        var parameters = new List<(string, Expr?)>();
        while (!Cur.IsOp(")"))
        {
            if (parameters.Count > 0) Expect(TokenKind.Operator, ",");
            if (Cur.IsOp(")")) break;
            var p = Expect(TokenKind.Name).Value;
            Expr? def = SkipOp("=") ? ParseExpression() : null;
            if (def is null && parameters.Any(x => x.Item2 is not null)) throw Error($"macro '{name}': non-default argument '{p}' follows default argument");
            parameters.Add((p, def));
        }
        _i++;
        Expect(TokenKind.BlockEnd);
        var body = ParseBody(["endmacro"], out _);
        if (Cur.Kind == TokenKind.Name) _i++; // {% endmacro name %}
        Expect(TokenKind.BlockEnd);
        return new MacroStmt(line, name, parameters, body);
    }

    List<(string, CallArguments)> ParseFilterChain(bool first)
    {
        var filters = new List<(string, CallArguments)>();
        while (first || SkipOp("|"))
        {
            first = false;
            var (name, args) = ParseFilterNameAndArgs();
            filters.Add((name, args));
        }
        return filters;
    }

    (string Name, CallArguments Args) ParseFilterNameAndArgs()
    {
        var nameTok = Expect(TokenKind.Name);
        var name = nameTok.Value;
        while (Cur.IsOp(".") && Peek().Kind == TokenKind.Name) { _i++; name += "." + Take().Value; }
        if (!JinjaBuiltins.HasFilter(name)) throw Error($"unknown filter '{name}'", nameTok.Line);
        var args = Cur.IsOp("(") ? ParseCallArguments() : CallArguments.None;
        return (name, args);
    }

    // ---- expressions ----

    Expr ParseTupleOrExpression(bool withCondExpr = true)
    {
        int line = Cur.Line;
        var first = withCondExpr ? ParseExpression() : ParseOr();
        if (!Cur.IsOp(",")) return first;
        var items = new List<Expr> { first };
        while (SkipOp(","))
        {
            if (Cur.Kind is TokenKind.BlockEnd or TokenKind.VariableEnd || Cur.IsName("if")) break;
            items.Add(withCondExpr ? ParseExpression() : ParseOr());
        }
        return new ListExpr(line, items, tuple: true);
    }

    Expr ParseExpression()
    {
        var e = ParseOr();
        while (Cur.IsName("if"))
        {
            int line = Take().Line;
            var test = ParseOr();
            Expr? otherwise = SkipName("else") ? ParseExpression() : null;
            e = new CondExpr(line, test, e, otherwise);
        }
        return e;
    }

    Expr ParseOr()
    {
        var e = ParseAnd();
        while (Cur.IsName("or")) { int line = Take().Line; e = new AndOrExpr(line, e, ParseAnd(), isAnd: false); }
        return e;
    }

    Expr ParseAnd()
    {
        var e = ParseNot();
        while (Cur.IsName("and")) { int line = Take().Line; e = new AndOrExpr(line, e, ParseNot(), isAnd: true); }
        return e;
    }

    Expr ParseNot()
    {
        if (Cur.IsName("not")) { int line = Take().Line; return new NotExpr(line, ParseNot()); }
        return ParseCompare();
    }

    Expr ParseCompare()
    {
        int line = Cur.Line;
        var e = ParseMath1();
        var rest = new List<(string, Expr)>();
        while (true)
        {
            var t = Cur;
            if (t.Kind == TokenKind.Operator && t.Value is "==" or "!=" or "<" or "<=" or ">" or ">=") { _i++; rest.Add((t.Value, ParseMath1())); }
            else if (t.IsName("in")) { _i++; rest.Add(("in", ParseMath1())); }
            else if (t.IsName("not") && Peek().IsName("in")) { _i += 2; rest.Add(("notin", ParseMath1())); }
            else break;
        }
        return rest.Count == 0 ? e : new CompareExpr(line, e, rest);
    }

    Expr ParseMath1()
    {
        var e = ParseConcat();
        while (Cur.Kind == TokenKind.Operator && Cur.Value is "+" or "-")
        {
            var t = Take();
            e = new BinaryExpr(t.Line, t.Value, e, ParseConcat());
        }
        return e;
    }

    Expr ParseConcat()
    {
        var e = ParseMath2();
        while (Cur.IsOp("~"))
        {
            var t = Take();
            e = new BinaryExpr(t.Line, "~", e, ParseMath2());
        }
        return e;
    }

    Expr ParseMath2()
    {
        var e = ParsePow();
        while (Cur.Kind == TokenKind.Operator && Cur.Value is "*" or "/" or "//" or "%")
        {
            var t = Take();
            e = new BinaryExpr(t.Line, t.Value, e, ParsePow());
        }
        return e;
    }

    Expr ParsePow()
    {
        var e = ParseUnary(withFilter: true);
        while (Cur.IsOp("**"))
        {
            var t = Take();
            e = new BinaryExpr(t.Line, "**", e, ParseUnary(withFilter: true));
        }
        return e;
    }

    Expr ParseUnary(bool withFilter)
    {
        var t = Cur;
        Expr e;
        if (t.IsOp("-") || t.IsOp("+"))
        {
            _i++;
            e = new NegExpr(t.Line, ParseUnary(withFilter: false), negate: t.Value == "-");
        }
        else e = ParsePrimary();
        e = ParsePostfix(e);
        if (withFilter) e = ParseFilterAndTests(e);
        return e;
    }

    Expr ParsePrimary()
    {
        var t = Take();
        switch (t.Kind)
        {
            case TokenKind.Name:
                return t.Value switch
                {
                    "true" or "True" => new ConstExpr(t.Line, true),
                    "false" or "False" => new ConstExpr(t.Line, false),
                    "none" or "None" => new ConstExpr(t.Line, null),
                    _ => new NameExpr(t.Line, t.Value),
                };
            case TokenKind.String:
                var s = t.Value;
                while (Cur.Kind == TokenKind.String) s += Take().Value;
                return new ConstExpr(t.Line, s);
            case TokenKind.Integer:
                if (!long.TryParse(t.Value, NumberStyles.None, CultureInfo.InvariantCulture, out long l)) throw Error($"integer literal {t.Value} is too large", t.Line);
                return new ConstExpr(t.Line, l);
            case TokenKind.Float:
                return new ConstExpr(t.Line, double.Parse(t.Value, NumberStyles.Float, CultureInfo.InvariantCulture));
            case TokenKind.Operator when t.Value == "(":
            {
                if (SkipOp(")")) return new ListExpr(t.Line, [], tuple: true);
                var first = ParseExpression();
                if (SkipOp(")")) return first;
                var items = new List<Expr> { first };
                while (SkipOp(","))
                {
                    if (Cur.IsOp(")")) break;
                    items.Add(ParseExpression());
                }
                Expect(TokenKind.Operator, ")");
                return new ListExpr(t.Line, items, tuple: true);
            }
            case TokenKind.Operator when t.Value == "[":
            {
                var items = new List<Expr>();
                while (!Cur.IsOp("]"))
                {
                    if (items.Count > 0) Expect(TokenKind.Operator, ",");
                    if (Cur.IsOp("]")) break;
                    items.Add(ParseExpression());
                }
                _i++;
                return new ListExpr(t.Line, items);
            }
            case TokenKind.Operator when t.Value == "{":
            {
                var pairs = new List<(Expr, Expr)>();
                while (!Cur.IsOp("}"))
                {
                    if (pairs.Count > 0) Expect(TokenKind.Operator, ",");
                    if (Cur.IsOp("}")) break;
                    var k = ParseExpression();
                    Expect(TokenKind.Operator, ":");
                    pairs.Add((k, ParseExpression()));
                }
                _i++;
                return new DictExpr(t.Line, pairs);
            }
            default:
                throw Error($"unexpected {t}", t.Line);
        }
    }

    Expr ParsePostfix(Expr e)
    {
        while (true)
        {
            var t = Cur;
            if (t.IsOp("."))
            {
                _i++;
                var n = Take();
                if (n.Kind == TokenKind.Name) e = new AttrExpr(t.Line, e, n.Value);
                else if (n.Kind == TokenKind.Integer) e = new ItemExpr(t.Line, e, new ConstExpr(n.Line, long.Parse(n.Value, CultureInfo.InvariantCulture)));
                else throw Error($"expected an attribute name after '.', found {n}", n.Line);
            }
            else if (t.IsOp("["))
            {
                _i++;
                e = ParseSubscript(e, t.Line);
            }
            else if (t.IsOp("("))
            {
                e = new CallExpr(t.Line, e, ParseCallArguments());
            }
            else return e;
        }
    }

    Expr ParseSubscript(Expr target, int line)
    {
        Expr? start = null, stop = null, step = null;
        if (!Cur.IsOp(":")) start = ParseExpression();
        if (!SkipOp(":"))
        {
            Expect(TokenKind.Operator, "]");
            return new ItemExpr(line, target, start!);
        }
        if (!Cur.IsOp(":") && !Cur.IsOp("]")) stop = ParseExpression();
        if (SkipOp(":") && !Cur.IsOp("]")) step = ParseExpression();
        Expect(TokenKind.Operator, "]");
        return new SliceExpr(line, target, start, stop, step);
    }

    CallArguments ParseCallArguments()
    {
        Expect(TokenKind.Operator, "(");
        var positional = new List<Expr>();
        var keywords = new List<(string, Expr)>();
        while (!Cur.IsOp(")"))
        {
            if (positional.Count + keywords.Count > 0) Expect(TokenKind.Operator, ",");
            if (Cur.IsOp(")")) break;
            if (Cur.IsOp("*")) throw Error("*args and **kwargs in calls are not supported");
            if (Cur.Kind == TokenKind.Name && Peek().IsOp("="))
            {
                var n = Take().Value;
                _i++;
                keywords.Add((n, ParseExpression()));
            }
            else
            {
                if (keywords.Count > 0) throw Error("positional argument follows keyword argument");
                positional.Add(ParseExpression());
            }
        }
        _i++;
        return new CallArguments(positional, keywords);
    }

    Expr ParseFilterAndTests(Expr e)
    {
        while (true)
        {
            var t = Cur;
            if (t.IsOp("|"))
            {
                _i++;
                var (name, args) = ParseFilterNameAndArgs();
                e = new FilterExpr(t.Line, e, name, args);
            }
            else if (t.IsName("is"))
            {
                _i++;
                bool negated = SkipName("not");
                var nameTok = Expect(TokenKind.Name);
                var name = nameTok.Value;
                while (Cur.IsOp(".") && Peek().Kind == TokenKind.Name) { _i++; name += "." + Take().Value; }
                if (!JinjaBuiltins.HasTest(name)) throw Error($"unknown test '{name}'", nameTok.Line);
                CallArguments args;
                if (Cur.IsOp("(")) args = ParseCallArguments();
                else if ((Cur.Kind is TokenKind.Name or TokenKind.String or TokenKind.Integer or TokenKind.Float || Cur.IsOp("[") || Cur.IsOp("{") || Cur.IsOp("-"))
                         && !(Cur.IsName("else") || Cur.IsName("or") || Cur.IsName("and") || Cur.IsName("if") || Cur.IsName("is") || Cur.IsName("in") || Cur.IsName("not")))
                {
                    if (Cur.IsOp("-")) throw Error("a test argument must be in parentheses");
                    args = new CallArguments([ParsePostfix(ParsePrimary())], []);
                }
                else args = CallArguments.None;
                e = new TestExpr(t.Line, e, name, args, negated);
            }
            else if (t.IsOp("("))
            {
                e = new CallExpr(t.Line, e, ParseCallArguments());
            }
            else return e;
        }
    }
}
