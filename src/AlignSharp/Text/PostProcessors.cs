namespace AlignSharp.Text;

/// <summary>A tokenizer.json "post_processor": adds special tokens around an encoded single sequence.</summary>
internal abstract class PostProcessor
{
    /// <summary>Returns the final ids for <paramref name="ids"/> (the encoded text).</summary>
    public abstract List<int> Process(List<int> ids, bool addSpecialTokens);
}

/// <summary>ByteLevel's post-processing only trims offsets, which we do not report: ids pass through.</summary>
internal sealed class IdentityPostProcessor : PostProcessor
{
    public override List<int> Process(List<int> ids, bool addSpecialTokens) => ids;
}

/// <summary>
/// TemplateProcessing (single-sequence template), BertProcessing ([CLS] A [SEP]) and RobertaProcessing (&lt;s&gt; A
/// &lt;/s&gt;) reduce to a list of prefix ids, the text, and a list of suffix ids.
/// </summary>
internal sealed class TemplatePostProcessor(int[] prefix, int[] suffix) : PostProcessor
{
    public override List<int> Process(List<int> ids, bool addSpecialTokens)
    {
        if (!addSpecialTokens) return ids;
        var result = new List<int>(prefix.Length + ids.Count + suffix.Length);
        result.AddRange(prefix);
        result.AddRange(ids);
        result.AddRange(suffix);
        return result;
    }

    /// <summary>The first prefix id is the BOS a template adds, if any.</summary>
    public IReadOnlyList<int> Prefix => prefix;
}

internal sealed class SequencePostProcessor(IReadOnlyList<PostProcessor> steps) : PostProcessor
{
    public override List<int> Process(List<int> ids, bool addSpecialTokens)
    {
        foreach (var step in steps) ids = step.Process(ids, addSpecialTokens);
        return ids;
    }
}
