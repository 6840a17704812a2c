using AlignSharp.Text;

namespace AlignSharp.Tests.Text;

public class ByteTokenizerTests
{
    readonly ITokenizer _tok = Tokenizers.Load("byte");

    [Fact]
    public void IdsAreUtf8BytesThenSpecials()
    {
        Assert.Equal(259, _tok.VocabSize);
        Assert.Equal((256, 257, 258), (_tok.BosId!.Value, _tok.EosId!.Value, _tok.PadId!.Value));
        Assert.Equal(("<|bos|>", "<|eos|>", "<|pad|>"), (_tok.BosToken, _tok.EosToken, _tok.PadToken));
        Assert.Equal(new[] { 256, 104, 195, 169 }, _tok.Encode("hé"));
        Assert.Equal(new[] { 104, 195, 169 }, _tok.Encode("hé", addSpecialTokens: false));
        Assert.Equal(new[] { 97, 257, 98, 60, 124 }, _tok.Encode("a<|eos|>b<|", addSpecialTokens: false));
        Assert.Equal("<0x41>", _tok.IdToToken(65));
        Assert.Equal(65, _tok.TokenToId("<0x41>"));
        Assert.Equal(258, _tok.TokenToId("<|pad|>"));
        Assert.True(_tok.IsSpecial(257));
        Assert.False(_tok.IsSpecial(65));
    }

    [Fact]
    public void RoundTripsAndSkipsSpecials()
    {
        string text = "emoji 👨‍👩‍👧 日本 cafe\u0301 <|pad|>\r\n";
        Assert.Equal(text, _tok.Decode(_tok.Encode(text, addSpecialTokens: false)));
        Assert.Equal("<|bos|>" + text, _tok.Decode(_tok.Encode(text)));
        Assert.Equal("emoji 👨‍👩‍👧 日本 cafe\u0301 \r\n", _tok.Decode(_tok.Encode(text), skipSpecialTokens: true));
        Assert.Throws<ArgumentOutOfRangeException>(() => _tok.Decode([300]));
    }
}
