namespace AlignSharp.Models.Checkpoints;

/// <summary>One tensor as a safetensors header describes it. <see cref="Shape"/> is row-major, outermost first;
/// a scalar has an empty shape and one element.</summary>
public sealed record TensorInfo(string Name, SafetensorsDtype Dtype, long[] Shape)
{
    /// <summary>Product of <see cref="Shape"/> (1 for a scalar).</summary>
    public long ElementCount
    {
        get
        {
            long n = 1;
            foreach (long d in Shape) n *= d;
            return n;
        }
    }

    /// <summary>The shape as the checkpoint tools print it: <c>[32, 96]</c>.</summary>
    public string ShapeText => FormatShape(Shape);

    internal static string FormatShape(IEnumerable<long> shape) => "[" + string.Join(", ", shape) + "]";
    internal static string FormatShape(IEnumerable<int> shape) => "[" + string.Join(", ", shape) + "]";
}
