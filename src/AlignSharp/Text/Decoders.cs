using System.Text;

namespace AlignSharp.Text;

/// <summary>A tokenizer.json "decoder": turns token strings back into text.</summary>
internal abstract class Decoder
{
    public abstract string Decode(IReadOnlyList<string> tokens);
}

/// <summary>Maps each token's characters back to bytes (<see cref="ByteLevelAlphabet"/>) and decodes the UTF-8, invalid sequences as U+FFFD.</summary>
internal sealed class ByteLevelDecoder : Decoder
{
    public override string Decode(IReadOnlyList<string> tokens)
    {
        var bytes = new List<byte>();
        foreach (var t in tokens) ByteLevelAlphabet.AppendBytes(t, bytes);
        return Encoding.UTF8.GetString(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(bytes));
    }
}

/// <summary>No decoder in tokenizer.json: tokens joined with spaces, as tokenizers does.</summary>
internal sealed class JoinDecoder : Decoder
{
    public override string Decode(IReadOnlyList<string> tokens) => string.Join(' ', tokens);
}
