using System.Text.Json;
using System.Text.Json.Nodes;
using AlignSharp.Engine;
using AlignSharp.Models;
using AlignSharp.Models.Checkpoints;
using AlignSharp.Models.Lora;
using AlignSharp.Tests.Models;
using AlignSharp.Text;
using AlignSharp.Training.Data;
using AlignSharp.Training.RewardModeling;
using AlignSharp.Training.Runs;
using AlignSharp.Training.Rewards;

namespace AlignSharp.Tests.Training;

/// <summary>
/// Reward models with LoRA (task_type SEQ_CLS): the score head trains whole and is saved as PEFT's modules_to_save; an
/// adapter directory loads as its base model with the adapter (one rule for every command), PEFT-written ones included.
/// </summary>
public sealed class RewardModelLoraTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("alignsharp-rm-lora-").FullName;
    public void Dispose() => Directory.Delete(_dir, recursive: true);
    private string P(string name) => Path.Combine(_dir, name);

    static readonly string AdapterRoot = Path.Combine(Path.GetDirectoryName(Fixtures.Root)!, "adapters");

    private string PreferenceData()
    {
        var words = new[] { "cat", "dog", "sun", "sea", "red", "owl", "fig", "ant" };
        return TinyModels.WriteJsonl(P("prefs.jsonl"), words.Select(w => (object)new { prompt = $"{w}?", chosen = $" {w}#", rejected = $" {w}" }));
    }

    private RewardModelOptions Opts(string model, string run, int steps) => new()
    {
        Model = model, Data = PreferenceData(), Out = P(run), MaxSteps = steps, LearningRate = 1e-2f, BatchSize = 2, SaveSteps = 2,
        LoggingSteps = 1, LoraR = 4, LoraTargetModules = "q_proj,v_proj", LoraDropout = 0.1,
    };

    private static float[] Scores(RewardModel rm) => rm.ScoreSequences([[256, 'c', 'a', 't', '?', ' ', '#', 257], [256, 'o', 'w', 'l', 257]]);

    /// <summary>A prompt ending with an assistant prefill is scored as TRL's GRPO hands it to a reward model: the prefill and
    /// the completion as one final assistant turn. Under a template that renders the last assistant turn differently
    /// (Qwen3's think block), two assistant turns made the prompt no prefix of the conversation: an error after sampling.</summary>
    [Fact]
    public void APrefilledPromptIsScoredWithItsCompletionAsOneTurn()
    {
        string model = TinyModels.Create(P("base"), "llama");
        string jinja = P("think.jinja");
        File.WriteAllText(jinja, "{% for m in messages %}<{{ m.role }}>{% if loop.last and m.role == 'assistant' %}<think></think>{% endif %}{{ m.content }}" +
            "</s>{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}");
        var pre = Pretrained.Load(model, HeadKind.Scalar, seed: 3);
        var rm = new RewardModel(pre.Model, pre.Tokenizer!, ChatTemplate.Resolve(jinja, null));
        var prefilled = ChatContent.FromMessages(ChatMessage.User("q"), ChatMessage.Assistant("The sky is"));
        var whole = rm.Encode(ChatContent.FromMessages(ChatMessage.User("q")), ChatContent.FromMessages(ChatMessage.Assistant("The sky is blue")), out _);
        Assert.Equal(whole, rm.Encode(prefilled, " blue"));
        Assert.Contains("<think></think>The sky is blue", pre.Tokenizer!.Decode(whole));
    }

    [Fact]
    public void AFreshAdapterOnAScalarModelScoresAsTheBaseExactly()
    {
        string model = TinyModels.Create(P("base"), "llama");
        var pre = Pretrained.Load(model, HeadKind.Scalar, seed: 3);
        var rm = new RewardModel(pre.Model, pre.Tokenizer!, ChatTemplate.Plain);
        var before = Scores(rm);
        var options = new RewardModelOptions { Out = "x", LoraR = 4 };
        var trainable = new TrainableAdapter(pre.Model, LoraAdapter.Create(pre.Model, options.LoraConfigFor(model, LoraConfig.SequenceClassification)!, 1), null, merge: false);
        trainable.Adapter.DropoutRng = new Random(2);
        Assert.Equal(before, Scores(rm));
        // The trained tensors: every A and B, then the score head (PEFT's name for it).
        Assert.Equal("base_model.model.score.weight", trainable.Parameters[^1].Name);
        Assert.Same(pre.Model.Parameter("score.weight"), trainable.Parameters[^1].Parameter);
        Assert.True(trainable.Parameters.All(p => p.Parameter.RequiresGrad));
        Assert.False(pre.Model.Parameter("layers.0.attn.q.weight").RequiresGrad);
    }

    [Fact]
    public void RmWithLoraSavesThePeftSequenceClassificationFormatAndItsFinalDirectoryReproducesTheScores()
    {
        string model = TinyModels.Create(P("base"), "llama");
        RewardModelTrainer.Train(Opts(model, "rm", 4), TextWriter.Null);

        // adapter_config.json: task SEQ_CLS and PEFT's modules_to_save; the safetensors: A, B and the whole score head.
        var config = JsonNode.Parse(File.ReadAllText(P("rm/final/adapter_config.json")))!.AsObject();
        Assert.Equal("SEQ_CLS", config["task_type"]!.GetValue<string>());
        Assert.Equal(["classifier", "score"], config["modules_to_save"]!.AsArray().Select(x => x!.GetValue<string>()));
        Assert.Equal(model, config["base_model_name_or_path"]!.GetValue<string>());
        using (var file = SafetensorsFile.Open(P("rm/final/adapter_model.safetensors")))
        {
            Assert.Contains("base_model.model.score.weight", file.Names);
            Assert.Contains("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", file.Names);
            Assert.Contains("base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight", file.Names);
            Assert.Equal([1L, 32L], file.GetInfo("base_model.model.score.weight").Shape);
            Assert.Equal(2 * 2 * 2 + 1, file.Names.Count());
        }
        Assert.True(File.Exists(P("rm/final/reward_model.json")) && File.Exists(P("rm/final/tokenizer.json")));
        Assert.False(File.Exists(P("rm/final/model.safetensors")));
        // Checkpoints hold the adapter and the head only.
        Assert.True(File.Exists(P("rm/checkpoints/step-000002/adapter/adapter_model.safetensors")));
        Assert.False(Directory.Exists(P("rm/checkpoints/step-000002/model")));

        // The directory is a reward model for every command: base (an LM) + fresh scalar head replaced by the saved one + adapter.
        var loaded = RewardModel.Load(P("rm/final"));
        Assert.NotNull(loaded.Info);
        var scores = Scores(loaded);
        // The same through --adapter on the base language model, and through the merged model (rm --merge).
        Assert.Equal(scores, Scores(RewardModel.Load(model, P("rm/final"))));
        RewardModelTrainer.Train(Opts(model, "merged", 4) with { Merge = true, SaveSteps = 0 }, TextWriter.Null);
        var merged = Scores(RewardModel.Load(P("merged/final")));
        for (int i = 0; i < scores.Length; i++) Assert.True(Math.Abs(scores[i] - merged[i]) < 1e-4, $"score {i}: adapter {scores[i]}, merged {merged[i]}");
        // Training moved the head and the scores away from the base's.
        var start = Pretrained.Load(model, HeadKind.Scalar, seed: 0);
        Assert.NotEqual(Scores(new RewardModel(start.Model, start.Tokenizer!, ChatTemplate.Plain)), scores);
    }

    [Fact]
    public void ResumingAnRmLoraRunIsBitForBit()
    {
        string model = TinyModels.Create(P("base"), "llama");
        RewardModelTrainer.Train(Opts(model, "full", 4), TextWriter.Null);
        RewardModelTrainer.Train(Opts(model, "part", 4), TextWriter.Null);
        Directory.Delete(P("part/final"), true);
        Directory.Delete(P("part/checkpoints/step-000004"), true);
        RewardModelTrainer.Train(Opts(model, "part", 4) with { Resume = "" }, TextWriter.Null);
        Assert.Equal(File.ReadAllBytes(P("full/final/adapter_model.safetensors")), File.ReadAllBytes(P("part/final/adapter_model.safetensors")));
    }

    [Fact]
    public void AnRmOnTopOfAnSftAdapterSavesItAsASequenceClassificationAdapter()
    {
        string model = TinyModels.Create(P("base"), "llama");
        var lm = ModelIO.Load(model);
        var sft = LoraAdapter.Create(lm, new LoraConfig(4, 8, 0, ["q_proj", "v_proj"], BaseModel: model), 7);
        foreach (var m in sft.Modules) m.B.Span.Fill(0.05f);
        sft.Save(P("sft"));
        RewardModelTrainer.Train(Opts(model, "rm", 2) with { LoraR = 0, Adapter = P("sft"), SaveSteps = 0 }, TextWriter.Null);
        var config = JsonNode.Parse(File.ReadAllText(P("rm/final/adapter_config.json")))!.AsObject();
        Assert.Equal("SEQ_CLS", config["task_type"]!.GetValue<string>());
        Assert.Equal(4, config["r"]!.GetValue<int>());
        var rm = RewardModel.Load(P("rm/final"));
        Assert.Equal(HeadKind.Scalar, rm.Model.Config.Head);
        Assert.Contains("score.weight", rm.Model.Adapter!.SavedModules);
    }

    [Fact]
    public void APeftWrittenSequenceClassificationAdapterReproducesTheReferenceScores()
    {
        // Written by scripts/make_lora_fixtures.py (PyTorch); base_model_name_or_path is relative to the adapter directory.
        string dir = Path.Combine(AdapterRoot, "llama-gqa-seqcls");
        var model = ModelIO.Load(dir);
        Assert.Equal(HeadKind.Scalar, model.Config.Head);
        Assert.NotNull(model.Adapter);
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "reference.json")));
        using var scope = TensorScope.Begin();
        foreach (var c in doc.RootElement.GetProperty("cases").EnumerateArray())
        {
            var ids = c.GetProperty("input_ids").EnumerateArray().Select(e => e.GetInt32()).ToArray();
            var expected = c.GetProperty("scores").EnumerateArray().Select(e => e.GetSingle()).ToArray();
            var scores = model.Forward(ids, 1, ids.Length).ToArray();
            for (int t = 0; t < ids.Length; t++)
                Assert.True(Math.Abs(scores[t] - expected[t]) <= 1e-4 * (1 + Math.Abs(expected[t])), $"t={t}: {scores[t]} vs {expected[t]}");
        }
    }

    [Fact]
    public void BadAdapterDirectoriesNameTheFileAndTheField()
    {
        string dir = Path.Combine(AdapterRoot, "llama-gqa-seqcls");
        string Copy(string name, Action<JsonObject> edit, bool withoutScore = false)
        {
            string to = P(name);
            Directory.CreateDirectory(to);
            var config = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "adapter_config.json")))!.AsObject();
            config["base_model_name_or_path"] = Path.GetFullPath(Path.Combine(Fixtures.Root, "llama-gqa"));
            edit(config);
            File.WriteAllText(Path.Combine(to, "adapter_config.json"), config.ToJsonString());
            if (!withoutScore) File.Copy(Path.Combine(dir, "adapter_model.safetensors"), Path.Combine(to, "adapter_model.safetensors"));
            else
            {
                using var f = SafetensorsFile.Open(Path.Combine(dir, "adapter_model.safetensors"));
                var tensors = f.Names.Where(n => !n.Contains("score")).Select(n =>
                {
                    var info = f.GetInfo(n);
                    var values = new float[info.Shape.Aggregate(1L, (a, b) => a * b)];
                    f.ReadInto(n, values);
                    return (n, info.Shape.Select(d => (int)d).ToArray(), (ReadOnlyMemory<float>)values);
                }).ToList();
                SafetensorsWriter.Write(Path.Combine(to, "adapter_model.safetensors"), tensors, SafetensorsDtype.F32, new Dictionary<string, string>());
            }
            return to;
        }
        Assert.NotNull(ModelIO.Load(Copy("ok", _ => { })).Adapter);

        var noBase = Assert.Throws<UserInputException>(() => ModelIO.Load(Copy("nobase", c => c.Remove("base_model_name_or_path"))));
        Assert.Contains("adapter_config.json", noBase.Message);
        Assert.Contains("base_model_name_or_path", noBase.Message);
        var missingBase = Assert.Throws<UserInputException>(() => ModelIO.Load(Copy("missing", c => c["base_model_name_or_path"] = "no/such/model")));
        Assert.Contains("base_model_name_or_path", missingBase.Message);
        Assert.Contains("no/such/model", missingBase.Message);
        var noScore = Assert.Throws<UserInputException>(() => ModelIO.Load(Copy("noscore", _ => { }, withoutScore: true)));
        Assert.Contains("task_type", noScore.Message);
        Assert.Contains("score.weight", noScore.Message);
        var badRank = Assert.Throws<UserInputException>(() => ModelIO.Load(Copy("badr", c => c["r"] = "four")));
        Assert.Contains("adapter_config.json", badRank.Message);
        Assert.Contains("\"r\"", badRank.Message);
    }
}
