using System.Text.Json;
using AlignSharp.Tests.Training;

namespace AlignSharp.Tests.Cli;

/// <summary>sft, rm and score as a user runs them: processes, files, config files, bad input.</summary>
public sealed class TrainCommandsTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("alignsharp-cli-train-").FullName;
    public void Dispose() => Directory.Delete(_dir, recursive: true);
    private string P(string name) => Path.Combine(_dir, name);

    [Fact]
    public void ConfigFilesTakeListsForCommaListsAndRefuseAnOptionGivenTwice()
    {
        string model = TinyModels.Create(P("base"), "llama");
        TinyModels.WriteJsonl(P("sft.jsonl"), Enumerable.Range(0, 4).Select(i => (object)new { prompt = $"q{i}", completion = $" a{i}" }));
        string[] sft = ["sft", "--model", model, "--data", P("sft.jsonl"), "--max-steps", "1", "--save-steps", "0"];
        // TRL's lora_target_modules: list[str], in YAML and in JSON.
        File.WriteAllText(P("lora.yaml"), "lora_r: 2\nlora_target_modules: [q_proj, v_proj]\n");
        var yaml = CliRunner.Run([.. sft, "--config", P("lora.yaml"), "--out", P("y")]);
        Assert.True(yaml.ExitCode == 0, yaml.StdErr);
        using (var config = JsonDocument.Parse(File.ReadAllText(P("y/final/adapter_config.json"))))
            Assert.Equal(["q_proj", "v_proj"], config.RootElement.GetProperty("target_modules").EnumerateArray().Select(e => e.GetString()));
        File.WriteAllText(P("lora.json"), "{\"lora_r\": 2, \"lora_target_modules\": [\"k_proj\"]}");
        Assert.Equal(0, CliRunner.Run([.. sft, "--config", P("lora.json"), "--out", P("j")]).ExitCode);

        // Two spellings of one option, or one key twice: which would win is not for us to guess.
        File.WriteAllText(P("twice.yaml"), "batch_size: 2\nper_device_train_batch_size: 4\n");
        var twice = CliRunner.Run([.. sft, "--config", P("twice.yaml"), "--out", P("t")]);
        Assert.NotEqual(0, twice.ExitCode);
        Assert.Contains("twice.yaml:2: key \"per_device_train_batch_size\": sets the same option as key \"batch_size\"", twice.StdErr);
        File.WriteAllText(P("twice.json"), "{\"seed\": 1, \"seed\": 2}");
        Assert.Contains("\"seed\" is given twice", CliRunner.Run([.. sft, "--config", P("twice.json"), "--out", P("t")]).StdErr);
        // A TRL key that is no option here says what does the job, as the flag does.
        File.WriteAllText(P("bf16.yaml"), "bf16: true\n");
        Assert.Contains("trains in float32", CliRunner.Run([.. sft, "--config", P("bf16.yaml"), "--out", P("t")]).StdErr);
        File.WriteAllText(P("strategy.yaml"), "save_strategy: \"no\"\n");
        Assert.Contains("strategy.yaml:1: key \"save_strategy\": not an option of this command (see --help). a checkpoint is written every --save-steps steps", CliRunner.Run([.. sft, "--config", P("strategy.yaml"), "--out", P("t")]).StdErr);
        // A wrong type is named in words, not .NET's.
        File.WriteAllText(P("type.yaml"), "learning_rate: fast\nseed: [1, 2]\n");
        var type = CliRunner.Run([.. sft, "--config", P("type.yaml"), "--out", P("t")]);
        Assert.Contains("fast is not a valid number", type.StdErr);
        File.WriteAllText(P("type.yaml"), "seed: [1, 2]\n");
        Assert.Contains("[1, 2] is not a valid integer", CliRunner.Run([.. sft, "--config", P("type.yaml"), "--out", P("t")]).StdErr);

        // TRL's None: an option whose default is none takes it; elsewhere it is refused naming the key (it was a
        // NullReferenceException for text options).
        File.WriteAllText(P("none.yaml"), "lora_target_modules: null\n");
        var none = CliRunner.Run([.. sft, "--config", P("none.yaml"), "--out", P("t")]);
        Assert.Equal(2, none.ExitCode);
        Assert.Contains("none.yaml:1: key \"lora_target_modules\": needs a value (a None in TRL; leave the key out for the default here, all-linear)", none.StdErr);
        Assert.DoesNotContain("   at ", none.StdErr);
        File.WriteAllText(P("none.yaml"), "use_peft: Null\nresume_from_checkpoint: null\n");
        Assert.Equal(0, CliRunner.Run([.. sft, "--config", P("none.yaml"), "--out", P("n")]).ExitCode);
        // A second YAML document is refused (yaml.safe_load refuses it; it was dropped silently).
        File.WriteAllText(P("two.yaml"), "seed: 1\n---\nlearning_rate: 0.5\n");
        Assert.Contains("two.yaml:3: a second YAML document", CliRunner.Run([.. sft, "--config", P("two.yaml"), "--out", P("t")]).StdErr);
        // transformers' report_to as a list of one tracker; resume_from_checkpoint in Python's spelling.
        string[] saving = ["sft", "--model", model, "--data", P("sft.jsonl"), "--save-steps", "1", "--out", P("l")];
        File.WriteAllText(P("list.yaml"), "report_to:\n- tensorboard\n");
        var listed = CliRunner.Run([.. saving, "--config", P("list.yaml"), "--max-steps", "1"]);
        Assert.True(listed.ExitCode == 0, listed.StdErr);
        Assert.True(Directory.Exists(P("l/runs")));
        File.WriteAllText(P("resume.yaml"), "resume_from_checkpoint: True\n");
        var resumed = CliRunner.Run([.. saving, "--config", P("resume.yaml"), "--max-steps", "2", "--report-to", "tensorboard"]);
        Assert.True(resumed.ExitCode == 0, resumed.StdErr);
        Assert.Contains("at step 1", resumed.StdErr);
    }

    [Fact]
    public void ARewardModelIsSavedWithThePadTokenTransformersBatchesBy()
    {
        string model = TinyModels.Create(P("base"), "llama");
        var config = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(P("base/config.json")))!.AsObject();
        config.Remove("pad_token_id");   // as a Qwen2.5 checkpoint comes
        File.WriteAllText(P("base/config.json"), config.ToJsonString());
        TinyModels.WriteJsonl(P("prefs.jsonl"), Enumerable.Range(0, 4).Select(i => (object)new { prompt = $"q{i}", chosen = $" yes{i}", rejected = $" no{i}" }));
        var rm = CliRunner.Run("rm", "--model", model, "--data", P("prefs.jsonl"), "--out", P("rm"), "--max-steps", "1", "--save-steps", "0");
        Assert.True(rm.ExitCode == 0, rm.StdErr);
        using (var saved = JsonDocument.Parse(File.ReadAllText(P("rm/final/config.json"))))
            Assert.Equal(AlignSharp.Text.ByteTokenizer.PadTokenId, saved.RootElement.GetProperty("pad_token_id").GetInt32());
        // A language model is saved as it came.
        TinyModels.WriteJsonl(P("sft.jsonl"), [new { prompt = "q", completion = " a" }]);
        Assert.Equal(0, CliRunner.Run("sft", "--model", model, "--data", P("sft.jsonl"), "--out", P("sft"), "--max-steps", "1", "--save-steps", "0").ExitCode);
        using (var saved = JsonDocument.Parse(File.ReadAllText(P("sft/final/config.json"))))
            Assert.True(!saved.RootElement.TryGetProperty("pad_token_id", out var pad) || pad.ValueKind == JsonValueKind.Null);
    }

    [Fact]
    public void SftWithAConfigFileThenRmThenScore()
    {
        string model = TinyModels.Create(P("base"));
        TinyModels.WriteJsonl(P("sft.jsonl"), Enumerable.Range(0, 6).Select(i => (object)new { messages = new object[] { new { role = "user", content = $"hi {i}" }, new { role = "assistant", content = $"hello {i}" } } }));
        File.WriteAllText(P("run.yaml"), "max_steps: 4\nlearning-rate: 0.001\nbatch_size: 2\nchat_template: chatml\nlogging_steps: 2\nsave_steps: 2\n");
        var sft = CliRunner.Run("sft", "--model", model, "--data", P("sft.jsonl"), "--config", P("run.yaml"), "--max-steps", "3", "--out", P("sft"));
        Assert.True(sft.ExitCode == 0, sft.StdErr);
        var config = JsonDocument.Parse(File.ReadAllText(P("sft/run_config.json"))).RootElement;
        Assert.Equal(3, config.GetProperty("max_steps").GetInt32());          // the flag beats the file
        Assert.Equal("chatml", config.GetProperty("chat_template").GetString()); // the file beats the default
        Assert.Equal(0.001, config.GetProperty("learning_rate").GetDouble(), 6);
        Assert.True(File.Exists(P("sft/final/config.json")));
        // A run's resolved config is itself a valid --config file.
        var again = CliRunner.Run("sft", "--config", P("sft/run_config.json"), "--out", P("sft2"), "--max-steps", "1");
        Assert.True(again.ExitCode == 0, again.StdErr);
        // What to do with --out this once (--overwrite, --resume) is not recorded: fed back, the file neither deletes the
        // run nor resumes a new one.
        var replaced = CliRunner.Run("sft", "--config", P("sft/run_config.json"), "--out", P("sft2"), "--max-steps", "1", "--overwrite");
        Assert.True(replaced.ExitCode == 0, replaced.StdErr);
        var recorded = JsonDocument.Parse(File.ReadAllText(P("sft2/run_config.json"))).RootElement;
        Assert.False(recorded.TryGetProperty("overwrite", out _));
        Assert.False(recorded.TryGetProperty("resume", out _));
        var fedBack = CliRunner.Run("sft", "--config", P("sft2/run_config.json"), "--max-steps", "2", "--resume");
        Assert.True(fedBack.ExitCode == 0, fedBack.StdErr);
        Assert.Contains("resumed from", fedBack.StdErr);
        Assert.True(Directory.Exists(P("sft/checkpoints/step-000002")));
        var summary = JsonDocument.Parse(File.ReadAllText(P("sft/summary.json"))).RootElement;
        Assert.Equal(3, summary.GetProperty("steps").GetInt32());

        TinyModels.WriteJsonl(P("rank.jsonl"), Enumerable.Range(0, 4).Select(i => (object)new { prompt = $"q{i}", completions = new[] { " good", " bad", " ok" }, ranking = new object[] { 0, new[] { 1, 2 } } }));
        var rm = CliRunner.Run("rm", "--model", P("sft/final"), "--data", P("rank.jsonl"), "--max-steps", "2", "--out", P("rm"), "--batch-size", "4");
        Assert.True(rm.ExitCode == 0, rm.StdErr);
        Assert.True(File.Exists(P("rm/final/reward_model.json")));

        TinyModels.WriteJsonl(P("score.jsonl"), [new { prompt = "q1", completion = " good" }, new { prompt = new[] { new { role = "user", content = "q" } }, completion = " bad" }]);
        var score = CliRunner.Run("score", "--reward-model", P("rm/final"), "--input", P("score.jsonl"));
        Assert.True(score.ExitCode == 0, score.StdErr);
        var lines = score.StdOut.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(2, lines.Length);
        Assert.All(lines, l => Assert.True(double.IsFinite(JsonDocument.Parse(l).RootElement.GetProperty("score").GetDouble())));

        // score reads messages as training does: every field reaches the template (a "name" it prints changes the score),
        // tool turns are read, and an answer of only whitespace is a bad record naming file, line and field.
        File.WriteAllText(P("named.jinja"), "{% for m in messages %}<{{ m.role }}{% if m.name %} {{ m.name }}{% endif %}>{{ m.content or '' }}" +
            "{% if m.tool_calls %}{{ m.tool_calls | tojson }}{% endif %}{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}");
        TinyModels.WriteJsonl(P("named.jsonl"), [
            new { prompt = new object[] { new { role = "user", content = "q", name = "Alice" } }, completion = " good" },
            new { prompt = new object[] { new { role = "user", content = "q" } }, completion = " good" },
            new { prompt = new object[] { new { role = "user", content = "q" }, new { role = "assistant", content = (string?)null, tool_calls = new[] { new { name = "f" } } },
                new { role = "tool", content = "4" } }, completion = " good" },
        ]);
        var named = CliRunner.Run("score", "--reward-model", P("rm/final"), "--input", P("named.jsonl"), "--chat-template", P("named.jinja"));
        Assert.True(named.ExitCode == 0, named.StdErr);
        var scores = named.StdOut.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => JsonDocument.Parse(l).RootElement.GetProperty("score").GetDouble()).ToArray();
        Assert.Equal(3, scores.Length);
        Assert.NotEqual(scores[0], scores[1]);
        TinyModels.WriteJsonl(P("blank.jsonl"), [new { prompt = "q", completion = " good" }, new { prompt = "q", completion = "  " }]);
        InputChecksTests.AssertCleanError(CliRunner.Run("score", "--reward-model", P("rm/final"), "--input", P("blank.jsonl")), 2, "blank.jsonl:2", "completion");
    }

    /// <summary>A reward model trained on text alone (an annotation export: prompts rendered with their generation prompt,
    /// answers as sampled) scores a conversational prompt as it was trained: the prompt rendered the same way, the answer
    /// appended as text, not rendered as a turn (whose end-of-turn tokens it never saw). The template's keyword arguments
    /// of training are recorded and used when it scores.</summary>
    [Fact]
    public void ARewardModelScoresAsItWasTrained()
    {
        string model = TinyModels.Create(P("base"));
        File.WriteAllText(Path.Combine(model, "chat_template.jinja"),
            "{% for m in messages %}<{{ m.role }}{% if flag %}!{% endif %}>{{ m.content }}</s>\n{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}");
        string rendered = "<user!>q</s>\n<assistant>";
        TinyModels.WriteJsonl(P("text.jsonl"), Enumerable.Range(0, 4).Select(i => (object)new { prompt = rendered, chosen = $" good {i}", rejected = $" bad {i}" }));
        var rm = CliRunner.Run("rm", "--model", model, "--data", P("text.jsonl"), "--out", P("rm"), "--max-steps", "2", "--learning-rate", "0.01",
            "--chat-template-kwargs", "{\"flag\": true}");
        Assert.True(rm.ExitCode == 0, rm.StdErr);
        var info = JsonDocument.Parse(File.ReadAllText(P("rm/final/reward_model.json"))).RootElement;
        Assert.True(info.GetProperty("text_answers").GetBoolean());
        Assert.Equal("{\"flag\": true}", info.GetProperty("chat_template_kwargs").GetString());
        TinyModels.WriteJsonl(P("pair.jsonl"), [new { prompt = rendered, completion = " good 1" },
            new { prompt = (object)new[] { new { role = "user", content = "q" } }, completion = " good 1" }]);
        var score = CliRunner.Run("score", "--reward-model", P("rm/final"), "--input", P("pair.jsonl"));
        Assert.True(score.ExitCode == 0, score.StdErr);
        var scores = score.StdOut.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => JsonDocument.Parse(l).RootElement.GetProperty("score").GetDouble()).ToArray();
        Assert.Equal(scores[0], scores[1]);
    }

    [Fact]
    public void BadDataNamesFileLineAndFieldWithoutAStackTrace()
    {
        string model = TinyModels.Create(P("base"));
        File.WriteAllText(P("bad.jsonl"), "{\"prompt\": \"a\", \"completion\": \"b\"}\n{\"prompt\": \"a\", \"completion\": 3}\n");
        var r = CliRunner.Run("sft", "--model", model, "--data", P("bad.jsonl"), "--out", P("run"), "--max-steps", "1");
        Assert.NotEqual(0, r.ExitCode);
        Assert.Contains("bad.jsonl:2", r.StdErr);
        Assert.Contains("completion", r.StdErr);
        Assert.DoesNotContain("   at ", r.StdErr);

        var skip = CliRunner.Run("sft", "--model", model, "--data", P("bad.jsonl"), "--out", P("run2"), "--max-steps", "1", "--skip-bad-records");
        Assert.True(skip.ExitCode == 0, skip.StdErr);
        Assert.Contains("skipped", skip.StdErr);

        File.WriteAllText(P("c.yaml"), "no_such_option: 1\n");
        var cfg = CliRunner.Run("sft", "--model", model, "--data", P("bad.jsonl"), "--out", P("run3"), "--config", P("c.yaml"));
        Assert.NotEqual(0, cfg.ExitCode);
        Assert.Contains("c.yaml:1: key \"no_such_option\"", cfg.StdErr);
    }
}
