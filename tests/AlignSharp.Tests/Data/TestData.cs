using System.Text;
using AlignSharp.Text;

namespace AlignSharp.Tests.Data;

/// <summary>
/// A test-only tokenizer: one id per UTF-16 char (16 + char code), with special tokens recognised inside text.
/// PAD 0, BOS 1, EOS 2, then the chat template markers (BeginOfText 5). Encode adds BOS when asked (if addsBos);
/// <c>bos</c> picks which special is the BOS (e.g. BeginOfText, as Llama 3 tokenizers do).
/// </summary>
internal sealed class CharTokenizer(bool addsBos = true, bool hasEos = true, int bos = CharTokenizer.Bos) : ITokenizer
{
    public const int Pad = 0, Bos = 1, Eos = 2, ImStart = 3, ImEnd = 4, BeginOfText = 5, Offset = 16;

    private static readonly string[] Specials =
        ["<pad>", "<bos>", "<eos>", "<|im_start|>", "<|im_end|>", "<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"];

    public int VocabSize => Offset + 65536;

    public int[] Encode(string text, bool addSpecialTokens = true)
    {
        var ids = new List<int>();
        if (addSpecialTokens && addsBos) ids.Add(bos);
        for (int i = 0; i < text.Length;)
        {
            int special = Array.FindIndex(Specials, s => string.CompareOrdinal(text, i, s, 0, s.Length) == 0);
            if (special >= 0) { ids.Add(special); i += Specials[special].Length; }
            else ids.Add(Offset + text[i++]);
        }
        return ids.ToArray();
    }

    public string Decode(ReadOnlySpan<int> ids, bool skipSpecialTokens = false)
    {
        var sb = new StringBuilder();
        foreach (int id in ids)
        {
            if (id < Offset) { if (!skipSpecialTokens) sb.Append(Specials[id]); }
            else sb.Append((char)(id - Offset));
        }
        return sb.ToString();
    }

    public int? TokenToId(string token) => Array.IndexOf(Specials, token) is >= 0 and var i ? i : token.Length == 1 ? Offset + token[0] : null;
    public string? IdToToken(int id) => id < Specials.Length ? Specials[id] : id >= Offset ? ((char)(id - Offset)).ToString() : null;
    public bool IsSpecial(int id) => id < Offset;
    public string? BosToken => Specials[bos];
    public string? EosToken => hasEos ? "<eos>" : null;
    public string? PadToken => "<pad>";
    public int? BosId => bos;
    public int? EosId => hasEos ? Eos : null;
    public int? PadId => Pad;

    /// <summary>The ids of plain text (no specials added).</summary>
    public static int[] Ids(string text) => new CharTokenizer().Encode(text, addSpecialTokens: false);
}

/// <summary>Writes test data files into a fresh temporary folder.</summary>
public sealed class TempFiles : IDisposable
{
    public string Dir { get; } = Directory.CreateTempSubdirectory("alignsharp-data-").FullName;

    public string Write(string name, string content, bool bom = false)
    {
        var path = Path.Combine(Dir, name);
        File.WriteAllText(path, content, new UTF8Encoding(bom));
        return path;
    }

    public string Lines(string name, params string[] lines) => Write(name, string.Join("\n", lines) + "\n");

    public void Dispose()
    {
        try { Directory.Delete(Dir, recursive: true); } catch (IOException) { }
    }
}
