using AlignSharp.Engine;

namespace AlignSharp.Models;

/// <summary>
/// NEFTune (Jain et al. 2023): while training, the token embeddings [B, T, D] get uniform noise in [−m, m] with
/// m = α / √(T·D), T the padded length, as transformers' NEFTune hook adds it to the embedding layer's output (before
/// Gemma's √D scaling and GPT-2's position embeddings). The noise is a function of <see cref="Seed"/>, so a resumed run
/// draws what the uninterrupted one drew.
/// </summary>
public sealed record EmbeddingNoise(float Alpha, int Seed)
{
    /// <summary>The bound m = α / √(T·D).</summary>
    public float Magnitude(int seq, int hidden) => (float)(Alpha / Math.Sqrt((double)seq * hidden));

    /// <summary>The noise for embeddings [batch, seq, hidden] (a constant: no gradient).</summary>
    public Tensor Draw(int batch, int seq, int hidden)
    {
        float m = Magnitude(seq, hidden);
        var rng = new Random(Seed);
        var values = new float[batch * seq * hidden];
        for (int i = 0; i < values.Length; i++) values[i] = (float)((rng.NextDouble() * 2 - 1) * m);
        return Tensor.FromArray(values, batch, seq, hidden);
    }
}
