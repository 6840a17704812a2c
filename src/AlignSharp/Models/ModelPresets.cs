namespace AlignSharp.Models;

/// <summary>Configs for fresh models: the GPT-2 and Llama shapes used by experiments, tests and benchmarks.</summary>
public static class ModelPresets
{
    /// <summary>GPT-2 family: LayerNorm, learned positions, 4·D GELU MLP, biases, tied head.</summary>
    public static ModelConfig Gpt2(int vocabSize, int hiddenSize, int layers, int heads, int maxPositions = 1024) => new()
    {
        Family = ModelFamily.Gpt2,
        VocabSize = vocabSize,
        HiddenSize = hiddenSize,
        NumLayers = layers,
        NumHeads = heads,
        NumKvHeads = heads,
        HeadDim = hiddenSize / heads,
        IntermediateSize = 4 * hiddenSize,
        MaxPositions = maxPositions,
        NormEps = 1e-5,
        TieWordEmbeddings = true,
        AttentionQkvBias = true,
        AttentionOutputBias = true,
        MlpBias = true,
        Activation = HiddenActivation.GeluTanh,
    };

    /// <summary>Llama family: RMSNorm, RoPE, SwiGLU, grouped-query attention, no biases, untied head.</summary>
    public static ModelConfig Llama(int vocabSize, int hiddenSize, int layers, int heads, int kvHeads,
        int? intermediateSize = null, int maxPositions = 2048, double ropeTheta = 10000, bool tied = false) => new()
    {
        Family = ModelFamily.Llama,
        VocabSize = vocabSize,
        HiddenSize = hiddenSize,
        NumLayers = layers,
        NumHeads = heads,
        NumKvHeads = kvHeads,
        HeadDim = hiddenSize / heads,
        IntermediateSize = intermediateSize ?? (8 * hiddenSize / 3 + 63) / 64 * 64,
        MaxPositions = maxPositions,
        NormEps = 1e-6,
        RopeTheta = ropeTheta,
        TieWordEmbeddings = tied,
        AttentionQkvBias = false,
        AttentionOutputBias = false,
        MlpBias = false,
        Activation = HiddenActivation.Silu,
    };

    /// <summary>The benchmark shapes shared with the PyTorch reference scripts (tiny, small, gpt2).</summary>
    public static (ModelConfig Config, int Batch, int Seq) Bench(string name) => name switch
    {
        "tiny" => (Gpt2(256, 128, 4, 4, 128), 8, 128),
        "small" => (Gpt2(8192, 256, 6, 8, 256), 8, 256),
        "gpt2" => (Gpt2(50257, 768, 12, 12, 1024), 4, 256),
        _ => throw new UserInputException($"Unknown benchmark config '{name}': use tiny, small or gpt2."),
    };
}
