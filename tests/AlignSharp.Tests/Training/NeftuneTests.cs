using AlignSharp.Engine;
using AlignSharp.Models;
using AlignSharp.Training.Sft;

namespace AlignSharp.Tests.Training;

/// <summary>NEFTune (--neftune-noise-alpha): the noise's law, where it enters the model, and that a run with it still
/// resumes bit for bit.</summary>
public sealed class NeftuneTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("alignsharp-neftune-").FullName;
    public void Dispose() => Directory.Delete(_dir, recursive: true);
    private string P(string name) => Path.Combine(_dir, name);

    [Fact]
    public void TheNoiseIsUniformWithinAlphaOverTheRootOfLengthTimesWidth()
    {
        // α = 5, T = 4, D = 25: m = 5 / √100 = 0.5.
        var noise = new EmbeddingNoise(5f, Seed: 11);
        Assert.Equal(0.5f, noise.Magnitude(4, 25), 6);
        var values = noise.Draw(4, 4, 25).ToArray();
        Assert.Equal(400, values.Length);
        Assert.All(values, v => Assert.InRange(v, -0.5f, 0.5f));
        Assert.True(values.Max() > 0.45f && values.Min() < -0.45f, $"range [{values.Min()}, {values.Max()}]");
        Assert.InRange(values.Average(), -0.06, 0.06);                                        // σ of the mean ≈ 0.014
        Assert.InRange(values.Select(v => (double)v * v).Average(), 0.25 / 3 - 0.02, 0.25 / 3 + 0.02); // E[v²] = m²/3
        Assert.Equal(values, noise.Draw(4, 4, 25).ToArray());
        Assert.NotEqual(values, new EmbeddingNoise(5f, 12).Draw(4, 4, 25).ToArray());
    }

    [Fact]
    public void TheNoiseIsAddedToTheTokenEmbeddingsOfTrainingPassesOnly()
    {
        var model = ModelIO.Load(TinyModels.Create(P("m")));
        int[] ids = [5, 9, 17, 33];   // distinct: noise at position t is the same as noise on embedding row ids[t]
        var noise = new EmbeddingNoise(5f, 3);
        int d = model.Config.HiddenSize;
        var clean = model.Hidden(ids, 1, 4).ToArray();
        model.EmbeddingNoise = noise;
        var noisy = model.Hidden(ids, 1, 4).ToArray();
        float[] inference;
        using (Autograd.NoGrad()) inference = model.Hidden(ids, 1, 4).ToArray();
        model.EmbeddingNoise = null;
        Assert.NotEqual(clean, noisy);
        Assert.Equal(clean, inference);

        // The same model with the noise rows added to the embedding table gives the noisy pass bit for bit.
        var shifted = ModelIO.Load(P("m"));
        var table = shifted.Parameter("embed.weight").Span;
        var n = noise.Draw(1, 4, d).ToArray();
        for (int t = 0; t < 4; t++)
            for (int j = 0; j < d; j++) table[ids[t] * d + j] += n[t * d + j];
        Assert.Equal(noisy, shifted.Hidden(ids, 1, 4).ToArray());
    }

    [Fact]
    public void AnSftRunWithNeftuneChangesTheUpdateAndResumesExactly()
    {
        var model = TinyModels.Create(P("base"));
        var data = TinyModels.WriteJsonl(P("sft.jsonl"), Enumerable.Range(0, 8).Select(i => (object)new { prompt = $"q{i}?", completion = $" a{i % 3}!" }));
        SftOptions Options(string run, float alpha, int steps) => new()
        {
            Model = model, Data = data, Out = P(run), MaxSteps = steps, LearningRate = 1e-2f, LrScheduler = "constant", BatchSize = 4, SaveSteps = 1, LoggingSteps = 1,
            NeftuneNoiseAlpha = alpha,
        };
        SftTrainer.Train(Options("plain", 0, 3), TextWriter.Null);
        SftTrainer.Train(Options("noisy", 5, 3), TextWriter.Null);
        byte[] Final(string run) => File.ReadAllBytes(P(run + "/final/model.safetensors"));
        Assert.NotEqual(Final("plain"), Final("noisy"));

        SftTrainer.Train(Options("resumed", 5, 2), TextWriter.Null);
        SftTrainer.Train(Options("resumed", 5, 3) with { Resume = "" }, TextWriter.Null);
        Assert.Equal(Final("noisy"), Final("resumed"));

        var bad = CliRunner.Run("sft", "--model", model, "--data", data, "--out", P("bad"), "--neftune_noise_alpha", "-1");
        Assert.Equal(2, bad.ExitCode);
        Assert.Contains("--neftune-noise-alpha must be ≥ 0", bad.StdErr);
    }
}
