using System.Text;

namespace AlignSharp.Text;

/// <summary>
/// Tokenizer for toy models: ids 0–255 are the UTF-8 bytes of the text, then three specials:
/// 256 <c>&lt;|bos|&gt;</c>, 257 <c>&lt;|eos|&gt;</c>, 258 <c>&lt;|pad|&gt;</c>. Byte tokens are named <c>&lt;0xNN&gt;</c>.
/// Special-token strings inside the text are encoded as their ids; <c>Encode(addSpecialTokens: true)</c> prepends BOS.
/// </summary>
public sealed class ByteTokenizer : ITokenizer
{
    public const int BosTokenId = 256;
    public const int EosTokenId = 257;
    public const int PadTokenId = 258;
    static readonly string[] Specials = ["<|bos|>", "<|eos|>", "<|pad|>"];

    public int VocabSize => 259;
    public string? BosToken => Specials[0];
    public string? EosToken => Specials[1];
    public string? PadToken => Specials[2];
    public int? BosId => BosTokenId;
    public int? EosId => EosTokenId;
    public int? PadId => PadTokenId;

    public int[] Encode(string text, bool addSpecialTokens = true)
    {
        ArgumentNullException.ThrowIfNull(text);
        var ids = new List<int>(Encoding.UTF8.GetMaxByteCount(text.Length) / 2 + 1);
        if (addSpecialTokens) ids.Add(BosTokenId);
        var rest = text.AsSpan();
        while (!rest.IsEmpty)
        {
            int at = rest.IndexOf("<|", StringComparison.Ordinal);
            int special = -1;
            while (at >= 0)
            {
                for (int s = 0; s < Specials.Length && special < 0; s++)
                    if (rest[at..].StartsWith(Specials[s], StringComparison.Ordinal)) special = s;
                if (special >= 0) break;
                int next = rest[(at + 2)..].IndexOf("<|", StringComparison.Ordinal);
                at = next < 0 ? -1 : at + 2 + next;
            }
            var plain = at < 0 ? rest : rest[..at];
            AppendBytes(plain, ids);
            if (at < 0) break;
            ids.Add(BosTokenId + special);
            rest = rest[(at + Specials[special].Length)..];
        }
        return ids.ToArray();
    }

    static void AppendBytes(ReadOnlySpan<char> text, List<int> ids)
    {
        if (text.IsEmpty) return;
        var bytes = Encoding.UTF8.GetBytes(text.ToArray());
        foreach (byte b in bytes) ids.Add(b);
    }

    public string Decode(ReadOnlySpan<int> ids, bool skipSpecialTokens = false)
    {
        var sb = new StringBuilder();
        var bytes = new List<byte>();
        void Flush()
        {
            if (bytes.Count == 0) return;
            sb.Append(Encoding.UTF8.GetString(bytes.ToArray()));
            bytes.Clear();
        }
        foreach (int id in ids)
        {
            if ((uint)id < 256) { bytes.Add((byte)id); continue; }
            if ((uint)(id - BosTokenId) >= Specials.Length)
                throw new ArgumentOutOfRangeException(nameof(ids), $"token id {id} is outside the byte vocabulary (0..{VocabSize - 1})");
            Flush();
            if (!skipSpecialTokens) sb.Append(Specials[id - BosTokenId]);
        }
        Flush();
        return sb.ToString();
    }

    public int? TokenToId(string token)
    {
        int s = Array.IndexOf(Specials, token);
        if (s >= 0) return BosTokenId + s;
        if (token.Length == 6 && token.StartsWith("<0x", StringComparison.Ordinal) && token[5] == '>'
            && byte.TryParse(token.AsSpan(3, 2), System.Globalization.NumberStyles.HexNumber, null, out byte b))
            return b;
        return null;
    }

    public string? IdToToken(int id) => id switch
    {
        >= 0 and < 256 => $"<0x{id:X2}>",
        >= BosTokenId and <= PadTokenId => Specials[id - BosTokenId],
        _ => null,
    };

    public bool IsSpecial(int id) => id is >= BosTokenId and <= PadTokenId;
}
