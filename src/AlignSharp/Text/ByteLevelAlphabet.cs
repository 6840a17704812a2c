namespace AlignSharp.Text;

/// <summary>
/// GPT-2's reversible byte ↔ printable-character map used by byte-level BPE: the printable Latin-1 bytes map to
/// themselves and the remaining 68 bytes (controls, space, soft hyphen, ...) map to U+0100 onwards, in byte order.
/// </summary>
internal static class ByteLevelAlphabet
{
    /// <summary>ByteToChar[b] is the character standing for byte b.</summary>
    public static readonly char[] ByteToChar = BuildByteToChar();

    /// <summary>CharToByte[c] is the byte for character c, or -1; indexed by chars below U+0200.</summary>
    public static readonly short[] CharToByte = BuildCharToByte();

    static bool IsPrintable(int b) => b is >= '!' and <= '~' or >= 0xA1 and <= 0xAC or >= 0xAE and <= 0xFF;

    static char[] BuildByteToChar()
    {
        var map = new char[256];
        int next = 256;
        for (int b = 0; b < 256; b++)
            map[b] = IsPrintable(b) ? (char)b : (char)next++;
        return map;
    }

    static short[] BuildCharToByte()
    {
        var map = new short[0x200];
        Array.Fill(map, (short)-1);
        for (int b = 0; b < 256; b++)
            map[ByteToChar[b]] = (short)b;
        return map;
    }

    /// <summary>The byte-level string for UTF-8 <paramref name="bytes"/>: one character per byte.</summary>
    public static string Encode(ReadOnlySpan<byte> bytes)
    {
        return string.Create(bytes.Length, bytes, static (dst, src) =>
        {
            for (int i = 0; i < src.Length; i++) dst[i] = ByteToChar[src[i]];
        });
    }

    /// <summary>
    /// Appends the bytes of a byte-level token to <paramref name="output"/>. A token with a character outside the
    /// alphabet (an added token such as "&lt;|im_start|&gt;" with non-Latin text) contributes its UTF-8 bytes as is.
    /// </summary>
    public static void AppendBytes(string token, List<byte> output)
    {
        foreach (char c in token)
        {
            if (c >= 0x200 || CharToByte[c] < 0)
            {
                output.AddRange(System.Text.Encoding.UTF8.GetBytes(token));
                return;
            }
        }
        foreach (char c in token) output.Add((byte)CharToByte[c]);
    }
}
