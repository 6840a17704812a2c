using System.Globalization;
using System.Text;

namespace AlignSharp.Text.Jinja;

/// <summary>
/// A template that cannot be parsed or rendered. The message names the template and line; front ends print it
/// without a stack trace.
/// </summary>
public sealed class JinjaException(string message) : UserInputException(message);

internal enum TokenKind { Text, VariableBegin, VariableEnd, BlockBegin, BlockEnd, Name, String, Integer, Float, Operator, End }

internal readonly record struct Token(TokenKind Kind, string Value, int Line)
{
    public bool Is(TokenKind kind, string value) => Kind == kind && Value == value;
    public bool IsName(string value) => Kind == TokenKind.Name && Value == value;
    public bool IsOp(string value) => Kind == TokenKind.Operator && Value == value;
    public override string ToString() => Kind switch
    {
        TokenKind.End => "end of template",
        TokenKind.VariableEnd => "'}}'",
        TokenKind.BlockEnd => "'%}'",
        TokenKind.Text => "text",
        TokenKind.String => $"string '{Value}'",
        _ => $"'{Value}'",
    };
}

/// <summary>
/// Splits a template into text and tag tokens, with Jinja2's whitespace control as Hugging Face configures it:
/// <c>{%-</c>/<c>-%}</c> (and <c>{{-</c>, <c>{#-</c>) strip all whitespace on that side; trim_blocks removes the
/// first newline after a block or comment tag; lstrip_blocks removes spaces and tabs between a line start and a
/// block or comment tag (<c>{%+</c> / <c>+%}</c> opt out); a single trailing newline of the template is dropped
/// (keep_trailing_newline off); line endings are normalised to <c>\n</c>.
/// </summary>
internal sealed class JinjaLexer
{
    static readonly string[] Operators =
        ["//", "**", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "~", "(", ")", "[", "]", "{", "}", ",", ".", ":", "|", "<", ">", "=", ";"];

    readonly string _src;
    readonly string _name;
    readonly List<Token> _tokens = [];
    int _pos;
    int _line = 1;

    JinjaLexer(string source, string name)
    {
        source = source.Replace("\r\n", "\n").Replace('\r', '\n');
        if (source.EndsWith('\n')) source = source[..^1];
        _src = source;
        _name = name;
    }

    public static List<Token> Tokenize(string source, string name) => new JinjaLexer(source, name).Run();

    JinjaException Error(string message, int line) => new($"chat template {_name}, line {line}: {message}");

    List<Token> Run()
    {
        bool lineStarting = true; // the text that follows starts a line (template start, or a newline eaten by trim_blocks)
        bool stripNextText = false; // the previous tag ended with '-'
        while (_pos < _src.Length)
        {
            int tag = FindTag(_pos);
            int textEnd = tag < 0 ? _src.Length : tag;
            string text = _src[_pos..textEnd];
            int textLine = _line;
            if (stripNextText) text = text.TrimStart(JinjaStrings.WhitespaceChars);
            if (tag >= 0)
            {
                char kind = _src[tag + 1];
                char sign = tag + 2 < _src.Length ? _src[tag + 2] : '\0';
                if (sign == '-')
                    text = text.TrimEnd(JinjaStrings.WhitespaceChars);
                else if (sign != '+' && kind != '{')
                {
                    int lineStart = text.LastIndexOf('\n') + 1;
                    if ((lineStart > 0 || lineStarting) && text.AsSpan(lineStart).IndexOfAnyExcept(" \t\f\v") < 0)
                        text = text[..lineStart];
                }
            }
            if (text.Length > 0) _tokens.Add(new Token(TokenKind.Text, text, textLine));
            Advance(textEnd);
            if (tag < 0) break;
            char k = _src[tag + 1];
            int start = tag + 2;
            if (start < _src.Length && (_src[start] == '-' || _src[start] == '+')) start++;
            bool rightStrip, keep;
            if (k == '#')
            {
                int end = _src.IndexOf("#}", start, StringComparison.Ordinal);
                if (end < 0) throw Error("unclosed comment '{#'", _line);
                rightStrip = _src[end - 1] == '-' && end - 1 >= start;
                keep = _src[end - 1] == '+' && end - 1 >= start;
                Advance(end + 2);
            }
            else if (k == '%' && IsRawBlock(start, out int rawBodyStart))
            {
                (rightStrip, keep) = LexRaw(tag, rawBodyStart);
            }
            else
            {
                _tokens.Add(new Token(k == '{' ? TokenKind.VariableBegin : TokenKind.BlockBegin, k == '{' ? "{{" : "{%", _line));
                Advance(start);
                (rightStrip, keep) = LexExpression(k == '{' ? '}' : '%');
            }
            stripNextText = rightStrip;
            lineStarting = false;
            if (!rightStrip && !keep && k != '{' && _pos < _src.Length && _src[_pos] == '\n')
            {
                Advance(_pos + 1);
                lineStarting = true;
            }
        }
        _tokens.Add(new Token(TokenKind.End, "", _line));
        return _tokens;
    }

    void Advance(int to)
    {
        for (int i = _pos; i < to; i++) if (_src[i] == '\n') _line++;
        _pos = to;
    }

    int FindTag(int from)
    {
        for (int i = _src.IndexOf('{', from); i >= 0 && i + 1 < _src.Length; i = _src.IndexOf('{', i + 1))
        {
            char c = _src[i + 1];
            if (c == '{' || c == '%' || c == '#') return i;
        }
        return -1;
    }

    bool IsRawBlock(int start, out int bodyStart)
    {
        bodyStart = 0;
        int i = start;
        while (i < _src.Length && char.IsWhiteSpace(_src[i])) i++;
        if (string.CompareOrdinal(_src, i, "raw", 0, 3) != 0) return false;
        i += 3;
        while (i < _src.Length && char.IsWhiteSpace(_src[i])) i++;
        if (i < _src.Length && (_src[i] == '-' || _src[i] == '+')) i++;
        if (string.CompareOrdinal(_src, i, "%}", 0, 2) != 0) return false;
        bodyStart = i + 2;
        return true;
    }

    (bool RightStrip, bool Keep) LexRaw(int tag, int bodyStart)
    {
        bool openRightStrip = _src[bodyStart - 3] == '-';
        int search = bodyStart;
        while (true)
        {
            int end = _src.IndexOf("{%", search, StringComparison.Ordinal);
            if (end < 0) throw Error("unclosed '{% raw %}'", _line);
            int i = end + 2;
            bool leftStrip = i < _src.Length && _src[i] == '-';
            if (i < _src.Length && (_src[i] == '-' || _src[i] == '+')) i++;
            while (i < _src.Length && char.IsWhiteSpace(_src[i])) i++;
            if (string.CompareOrdinal(_src, i, "endraw", 0, 6) == 0)
            {
                int j = i + 6;
                while (j < _src.Length && char.IsWhiteSpace(_src[j])) j++;
                bool rs = false, keep = false;
                if (j < _src.Length && _src[j] == '-') { rs = true; j++; }
                else if (j < _src.Length && _src[j] == '+') { keep = true; j++; }
                if (string.CompareOrdinal(_src, j, "%}", 0, 2) != 0) throw Error("malformed '{% endraw %}'", _line);
                string body = _src[bodyStart..end];
                if (openRightStrip) body = body.TrimStart(JinjaStrings.WhitespaceChars);
                if (leftStrip) body = body.TrimEnd(JinjaStrings.WhitespaceChars);
                if (body.Length > 0) _tokens.Add(new Token(TokenKind.Text, body, _line));
                Advance(j + 2);
                return (rs, keep);
            }
            search = end + 2;
        }
    }

    (bool RightStrip, bool Keep) LexExpression(char close)
    {
        int depth = 0;
        while (true)
        {
            while (_pos < _src.Length && char.IsWhiteSpace(_src[_pos])) Advance(_pos + 1);
            if (_pos >= _src.Length) throw Error(close == '}' ? "unclosed '{{'" : "unclosed '{%'", _line);
            char c = _src[_pos];
            if (depth == 0)
            {
                if ((c == '-' || c == '+') && Next(1) == close && Next(2) == '}')
                {
                    _tokens.Add(new Token(close == '}' ? TokenKind.VariableEnd : TokenKind.BlockEnd, "", _line));
                    Advance(_pos + 3);
                    return (c == '-', c == '+');
                }
                if (c == close && Next(1) == '}')
                {
                    _tokens.Add(new Token(close == '}' ? TokenKind.VariableEnd : TokenKind.BlockEnd, "", _line));
                    Advance(_pos + 2);
                    return (false, false);
                }
            }
            if (char.IsLetter(c) || c == '_')
            {
                int s = _pos;
                while (_pos < _src.Length && (char.IsLetterOrDigit(_src[_pos]) || _src[_pos] == '_')) _pos++;
                _tokens.Add(new Token(TokenKind.Name, _src[s.._pos], _line));
            }
            else if (char.IsAsciiDigit(c)) LexNumber();
            else if (c == '\'' || c == '"') LexString(c);
            else
            {
                string? op = null;
                foreach (var o in Operators)
                    if (string.CompareOrdinal(_src, _pos, o, 0, o.Length) == 0) { op = o; break; }
                if (op is null) throw Error($"unexpected character '{c}'", _line);
                if (op is "(" or "[" or "{") depth++;
                else if (op is ")" or "]" or "}")
                {
                    if (depth == 0) throw Error($"unexpected '{op}'", _line);
                    depth--;
                }
                _tokens.Add(new Token(TokenKind.Operator, op, _line));
                _pos += op.Length;
            }
        }
    }

    char Next(int offset) => _pos + offset < _src.Length ? _src[_pos + offset] : '\0';

    void LexNumber()
    {
        int s = _pos;
        bool isFloat = false;
        while (_pos < _src.Length && (char.IsAsciiDigit(_src[_pos]) || _src[_pos] == '_')) _pos++;
        if (_pos + 1 < _src.Length && _src[_pos] == '.' && char.IsAsciiDigit(_src[_pos + 1]))
        {
            isFloat = true;
            _pos++;
            while (_pos < _src.Length && (char.IsAsciiDigit(_src[_pos]) || _src[_pos] == '_')) _pos++;
        }
        if (_pos < _src.Length && (_src[_pos] == 'e' || _src[_pos] == 'E'))
        {
            int e = _pos + 1;
            if (e < _src.Length && (_src[e] == '+' || _src[e] == '-')) e++;
            if (e < _src.Length && char.IsAsciiDigit(_src[e]))
            {
                isFloat = true;
                _pos = e;
                while (_pos < _src.Length && char.IsAsciiDigit(_src[_pos])) _pos++;
            }
        }
        string text = _src[s.._pos].Replace("_", "");
        _tokens.Add(new Token(isFloat ? TokenKind.Float : TokenKind.Integer, text, _line));
    }

    /// <summary>A string literal with Python's escapes (\n, \t, \\, \', \", \xNN, \uNNNN, \UNNNNNNNN, octal).</summary>
    void LexString(char quote)
    {
        int line = _line;
        var sb = new StringBuilder();
        int i = _pos + 1;
        while (true)
        {
            if (i >= _src.Length) throw Error("unterminated string literal", line);
            char c = _src[i];
            if (c == quote) break;
            if (c != '\\') { sb.Append(c); i++; continue; }
            if (i + 1 >= _src.Length) throw Error("unterminated string literal", line);
            char e = _src[i + 1];
            i += 2;
            switch (e)
            {
                case 'n': sb.Append('\n'); break;
                case 't': sb.Append('\t'); break;
                case 'r': sb.Append('\r'); break;
                case '\\': sb.Append('\\'); break;
                case '\'': sb.Append('\''); break;
                case '"': sb.Append('"'); break;
                case 'a': sb.Append('\a'); break;
                case 'b': sb.Append('\b'); break;
                case 'f': sb.Append('\f'); break;
                case 'v': sb.Append('\v'); break;
                case '\n': break;
                case 'x': sb.Append((char)Hex(ref i, 2, line)); break;
                case 'u': sb.Append((char)Hex(ref i, 4, line)); break;
                case 'U': sb.Append(char.ConvertFromUtf32(Hex(ref i, 8, line))); break;
                case >= '0' and <= '7':
                {
                    int v = e - '0';
                    for (int n = 0; n < 2 && i < _src.Length && _src[i] is >= '0' and <= '7'; n++, i++) v = v * 8 + (_src[i] - '0');
                    sb.Append((char)v);
                    break;
                }
                default: sb.Append('\\').Append(e); break;
            }
        }
        _tokens.Add(new Token(TokenKind.String, sb.ToString(), line));
        Advance(i + 1);
    }

    int Hex(ref int i, int digits, int line)
    {
        if (i + digits > _src.Length || !int.TryParse(_src.AsSpan(i, digits), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out int v))
            throw Error("bad escape in string literal", line);
        i += digits;
        return v;
    }
}
