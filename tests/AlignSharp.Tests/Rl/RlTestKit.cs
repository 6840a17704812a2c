using System.Text.Json;
using AlignSharp.Models;
using AlignSharp.Models.Checkpoints;
using AlignSharp.Text;
using AlignSharp.Training.Rewards;
using AlignSharp.Training.Rl;

namespace AlignSharp.Tests.Rl;

/// <summary>Tiny models and files for RL tests: a byte-vocabulary GPT-2 (d 32, 2 layers) with tokenizer.json.</summary>
public sealed class RlTestKit : IDisposable
{
    public string Dir { get; } = Directory.CreateTempSubdirectory("alignsharp-rl-").FullName;

    public void Dispose()
    {
        try { Directory.Delete(Dir, recursive: true); } catch (IOException) { }
    }

    public string Path(string name) => System.IO.Path.Combine(Dir, name);

    /// <summary>A random tiny policy directory (byte tokenizer: EOS 257).</summary>
    public string Policy(int seed = 1, string name = "policy")
    {
        string dir = Path(name);
        if (Directory.Exists(dir)) return dir;
        var config = ModelPresets.Gpt2(259, 32, 2, 4, 64) with { BosTokenId = ByteTokenizer.BosTokenId, EosTokenIds = [ByteTokenizer.EosTokenId], PadTokenId = ByteTokenizer.PadTokenId };
        ModelIO.Save(TransformerModel.CreateRandom(config, seed), dir);
        WriteTokenizer(dir);
        return dir;
    }

    /// <summary>A reward-model directory: the policy's body with a scalar head, and reward_model.json with normalisation.</summary>
    public string RewardModelDir(double mean = 0, double std = 1)
    {
        string dir = Path("rm");
        var model = ModelIO.Load(Policy(), HeadKind.Scalar, seed: 9);
        ModelIO.Save(model, dir);
        WriteTokenizer(dir);
        new RewardModelInfo("plain", mean, std, 64).Save(dir);
        return dir;
    }

    internal static void WriteTokenizer(string dir)
    {
        AtomicFile.WriteText(System.IO.Path.Combine(dir, "tokenizer.json"), ByteTokenizerJson.TokenizerJson());
        AtomicFile.WriteText(System.IO.Path.Combine(dir, "tokenizer_config.json"), ByteTokenizerJson.TokenizerConfigJson());
    }

    public string Prompts(string name = "prompts.jsonl", int count = 8)
    {
        string path = Path(name);
        System.IO.File.WriteAllLines(path, Enumerable.Range(0, count).Select(i => JsonSerializer.Serialize(new { prompt = $"Q{i}:" })));
        return path;
    }

    public string File(string name, string content)
    {
        string path = Path(name);
        System.IO.File.WriteAllText(path, content);
        return path;
    }

    /// <summary>
    /// <paramref name="o"/> set up for a test run of <paramref name="steps"/> rollout steps on the kit's policy and prompts in
    /// run directory <paramref name="run"/>: constant learning rate, temperature 1, accumulation 2, no checkpoints, 2 threads.
    /// </summary>
    public T Options<T>(T o, string run, int steps, int seed, float learningRate, int maxNewTokens, int batchSize) where T : RlOptions => o with
    {
        Policy = Policy(),
        Prompts = Prompts(),
        Out = Path(run),
        MaxSteps = steps,
        Seed = seed,
        LearningRate = learningRate,
        LrScheduler = "constant",
        MaxNewTokens = maxNewTokens,
        Temperature = 1f,
        BatchSize = batchSize,
        GradientAccumulationSteps = 2,
        SaveSteps = 0,
        Threads = 2,
    };

    /// <summary>The sanity task's reward: occurrences of <paramref name="token"/> in the completion.</summary>
    public static FunctionRewardSource CountOf(char token) =>
        new("count", (_, completions) => completions.Select(c => (float)c.Count(ch => ch == token)).ToArray());

    /// <summary>metrics.jsonl lines of split "train".</summary>
    public static List<JsonElement> TrainMetrics(string runDir) =>
        System.IO.File.ReadAllLines(System.IO.Path.Combine(runDir, "metrics.jsonl"))
            .Select(l => JsonDocument.Parse(l).RootElement)
            .Where(e => e.GetProperty("split").GetString() == "train").ToList();
}
