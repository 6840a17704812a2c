using System.Text;
using AlignSharp.Models;
using AlignSharp.Models.Checkpoints;
using AlignSharp.Tests.Training;
using AlignSharp.Training.Data;
using AlignSharp.Training.Rewards;

namespace AlignSharp.Tests.Cli;

/// <summary>
/// Bad input from issue 14, each reproduced: a clear message naming file, line and field, a non-zero exit, no stack
/// trace, and no silent substitute (U+FFFD, raw scores, a silently cut input).
/// </summary>
public sealed class InputChecksTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("alignsharp-input-").FullName;
    public void Dispose() { try { Directory.Delete(_dir, recursive: true); } catch (IOException) { } }
    private string P(string name) => Path.Combine(_dir, name);

    /// <summary>A command that failed as a user should see it: the exit code, the given words, no stack trace.</summary>
    internal static void AssertCleanError(CliRunner.Result r, int exitCode, params string[] needles)
    {
        Assert.True(r.ExitCode == exitCode, $"exit {r.ExitCode}\n{r.StdErr}");
        foreach (var n in needles) Assert.Contains(n, r.StdErr);
        Assert.DoesNotContain("   at ", r.StdErr);
        Assert.DoesNotContain("Exception", r.StdErr);
    }

    [Fact]
    public void GenerateReadsMessagePromptsAsTrainingDoes()
    {
        string model = TinyModels.Create(P("base"), "llama");
        File.WriteAllText(P("chatml.jinja"), "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}");
        // A prompt that ends with the assistant's words is continued (its echo is the messages as given).
        TinyModels.WriteJsonl(P("prefill.jsonl"), [new { messages = new object[] { new { role = "user", content = "Hi" }, new { role = "assistant", content = "Sure, " } } }]);
        var prefill = CliRunner.Run("generate", "--model", model, "--input", P("prefill.jsonl"), "--chat-template", P("chatml.jinja"), "--max-new-tokens", "2", "--temperature", "0");
        Assert.True(prefill.ExitCode == 0, prefill.StdErr);
        var ids = System.Text.Json.JsonDocument.Parse(prefill.StdOut.Trim()).RootElement.GetProperty("ids").EnumerateArray().Select(e => e.GetInt32()).ToArray();
        Assert.Equal(2, ids.Length);
        var tok = AlignSharp.Text.Tokenizers.Load(model);
        // The same tokens as the continued prompt "…assistant\nSure, " gives, and not the prompt with a new turn.
        var expected = CliRunner.Run("generate", "--model", model, "--input", TinyModels.WriteJsonl(P("ids.jsonl"),
            [new { prompt_ids = tok.Encode("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nSure, ") }]), "--max-new-tokens", "2", "--temperature", "0");
        Assert.Equal(System.Text.Json.JsonDocument.Parse(expected.StdOut.Trim()).RootElement.GetProperty("ids").GetRawText(),
            System.Text.Json.JsonDocument.Parse(prefill.StdOut.Trim()).RootElement.GetProperty("ids").GetRawText());

        TinyModels.WriteJsonl(P("role.jsonl"), [new { prompt = new object[] { new { role = "hacker", content = "Hi" } } }]);
        AssertCleanError(CliRunner.Run("generate", "--model", model, "--input", P("role.jsonl"), "--max-new-tokens", "2"), 2, "role.jsonl:1", "prompt[0].role", "unknown role");
        File.WriteAllText(P("empty.jsonl"), "");
        AssertCleanError(CliRunner.Run("generate", "--model", model, "--input", P("empty.jsonl"), "--max-new-tokens", "2"), 2, "no records");
        TinyModels.WriteJsonl(P("both.jsonl"), [new { ids = new[] { 1, 2 }, text = "ab" }]);
        AssertCleanError(CliRunner.Run("logprobs", "--model", model, "--input", P("both.jsonl")), 2, "both.jsonl:1", "\"text\"");
    }

    [Fact]
    public void AnEosTokenOutsideTheVocabularyIsNamed()
    {
        string model = TinyModels.Create(P("base"), "llama");
        var config = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(model, "tokenizer_config.json")))!.AsObject();
        config["eos_token"] = "<nope>";
        File.WriteAllText(Path.Combine(model, "tokenizer_config.json"), config.ToJsonString());
        string data = TinyModels.WriteJsonl(P("sft.jsonl"), [new { prompt = "q", completion = " a" }]);
        AssertCleanError(CliRunner.Run("sft", "--model", model, "--data", data, "--out", P("run"), "--max-steps", "1"), 2,
            "\"eos_token\" is \"<nope>\", which is not a token");
    }

    [Fact]
    public void DataFromAPipeIsReadOnceAndWhole()
    {
        string model = TinyModels.Create(P("base"), "llama");
        // /dev/stdin cannot seek: JSONL and a JSON array both come through, read once.
        var jsonl = CliRunner.Run(["template", "--model", model, "--input", "/dev/stdin"],
            stdin: "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}]}\n{\"messages\": [{\"role\": \"user\", \"content\": \"Yo\"}]}\n");
        Assert.True(jsonl.ExitCode == 0, jsonl.StdErr);
        Assert.Equal(2, jsonl.StdOut.Split('\n', StringSplitOptions.RemoveEmptyEntries).Length);
        var array = CliRunner.Run(["dpo", "--policy", model, "--data", "/dev/stdin", "--eval-only"],
            stdin: "[{\"prompt\": \"a\", \"chosen\": \" b\", \"rejected\": \" c\"}, {\"prompt\": \"d\", \"chosen\": \" e\", \"rejected\": \" f\"}]");
        Assert.True(array.ExitCode == 0, array.StdErr);
        Assert.Contains("rewards/accuracies", array.StdOut);
        AssertCleanError(CliRunner.Run(["template", "--model", model, "--input", "/dev/stdin"], stdin: "{\"messages\": 5}\n"), 2, "/dev/stdin:1");
    }

    [Fact]
    public void InvalidUtf8AndLoneSurrogatesInDataAreErrorsNamingFileLineAndField()
    {
        string jsonl = P("bad.jsonl");
        var bytes = new List<byte>();
        bytes.AddRange(Encoding.UTF8.GetBytes("{\"prompt\": \"fine\", \"completion\": \"ok\"}\n"));
        bytes.AddRange(Encoding.UTF8.GetBytes("{\"prompt\": \"caf"));
        bytes.Add(0xE9); // Latin-1 é: not UTF-8
        bytes.AddRange(Encoding.UTF8.GetBytes("\", \"completion\": \"x\"}\n"));
        File.WriteAllBytes(jsonl, bytes.ToArray());
        var e = Assert.Throws<BadRecordException>(() => DatasetLoader.LoadSft(jsonl, new DataLoadOptions()));
        Assert.Equal(2, e.Record.Line);
        Assert.Equal("prompt", e.Field);
        Assert.Contains("invalid UTF-8", e.Message);

        File.WriteAllText(P("surrogate.jsonl"), "{\"prompt\": \"a\", \"completion\": \"b\"}\n\n{\"prompt\": \"a\", \"completion\": \"x\\ud800y\"}\n");
        e = Assert.Throws<BadRecordException>(() => DatasetLoader.LoadSft(P("surrogate.jsonl"), new DataLoadOptions()));
        Assert.Equal(3, e.Record.Line);
        Assert.Equal("completion", e.Field);
        Assert.Contains("surrogate", e.Message);

        // The same in a JSON array file, and in a nested field.
        File.WriteAllText(P("array.json"), "[\n {\"messages\": [{\"role\": \"user\", \"content\": \"hi\"},\n   {\"role\": \"assistant\", \"content\": \"\\udc00\"}]}\n]");
        e = Assert.Throws<BadRecordException>(() => DatasetLoader.LoadSft(P("array.json"), new DataLoadOptions()));
        Assert.Equal("messages[1].content", e.Field);

        // With --skip-bad-records the good record is kept and the bad one counted, never turned into U+FFFD.
        var loaded = DatasetLoader.LoadSft(jsonl, new DataLoadOptions { SkipBadRecords = true });
        Assert.Single(loaded.Records);
        Assert.NotNull(loaded.Warning);
    }

    [Fact]
    public void AnErrorTheChatTemplateRaisesIsTheRecordsBadRecord()
    {
        string model = TinyModels.Create(P("base"), "llama");
        // Gemma-style: roles must alternate.
        File.WriteAllText(P("alternate.jinja"), "{% for m in messages %}{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}" +
            "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}<{{ m['role'] }}>{{ m['content'] }}</s>{% endfor %}" +
            "{% if add_generation_prompt %}<assistant>{% endif %}");
        object Turns(params string[] roles) => new { messages = roles.Select((r, i) => new { role = r, content = $"t{i}" }).ToArray() };
        TinyModels.WriteJsonl(P("chat.jsonl"), [Turns("user", "assistant"), Turns("user", "user", "assistant"), Turns("user", "assistant")]);
        string[] sft = ["sft", "--model", model, "--data", P("chat.jsonl"), "--chat-template", P("alternate.jinja"), "--max-steps", "1", "--save-steps", "0"];
        AssertCleanError(CliRunner.Run([.. sft, "--out", P("r1")]), 2, "chat.jsonl:2", "\"messages\"", "roles must alternate");
        var skipped = CliRunner.Run([.. sft, "--out", P("r2"), "--skip-bad-records"]);
        Assert.True(skipped.ExitCode == 0, skipped.StdErr);
        Assert.Contains("chat.jsonl:2", skipped.StdErr);
    }

    [Fact]
    public void KtoShapedDataIsRejectedBySftSayingWhatItIs()
    {
        string data = TinyModels.WriteJsonl(P("kto.jsonl"), [new { prompt = "q", completion = "a", label = false }]);
        var e = Assert.Throws<BadRecordException>(() => DatasetLoader.LoadSft(data, new DataLoadOptions { ExpectedKind = DatasetKind.Sft }));
        Assert.Equal("label", e.Field);
        Assert.Contains("KTO", e.Message);
        Assert.Contains("alignsharp kto", e.Message);

        // As a user meets it: `sft` stops on the first record, naming file, line and field, and points to `kto`.
        var r = CliRunner.Run("sft", "--model", TinyModels.Create(P("m")), "--data", data, "--out", P("o"));
        Assert.NotEqual(0, r.ExitCode);
        Assert.Contains("kto.jsonl:1", r.StdErr);
        Assert.Contains("\"label\"", r.StdErr);
        Assert.Contains("alignsharp kto", r.StdErr);
        Assert.DoesNotContain("   at ", r.StdErr);
    }

    [Fact]
    public void YamlShapesThatAreNotOptionsAreReportedWithoutAStackTrace()
    {
        string model = TinyModels.Create(P("m"));
        string data = TinyModels.WriteJsonl(P("d.jsonl"), [new { prompt = "q", completion = "a" }]);
        File.WriteAllText(P("complex.yaml"), "? [a, b]\n: 1\n");
        AssertCleanError(CliRunner.Run("sft", "--config", P("complex.yaml"), "--model", model, "--data", data, "--out", P("o1")), 2, "complex.yaml:1", "option name");
        File.WriteAllText(P("list.yaml"), "learning_rate:\n  - {a: 1}\n");
        AssertCleanError(CliRunner.Run("sft", "--config", P("list.yaml"), "--model", model, "--data", data, "--out", P("o2")), 2, "list.yaml:2", "learning_rate");
    }

    [Fact]
    public void NonFiniteFloatFlagsAreRejected()
    {
        string model = TinyModels.Create(P("m"));
        string data = TinyModels.WriteJsonl(P("d.jsonl"), [new { prompt = "q", completion = "a" }]);
        AssertCleanError(CliRunner.Run("sft", "--model", model, "--data", data, "--out", P("o"), "--weight-decay", "nan"), 2, "--weight-decay must be a finite number");
        AssertCleanError(CliRunner.Run("sft", "--model", model, "--data", data, "--out", P("o"), "--epochs", "Infinity"), 2, "--epochs must be a finite number");
        File.WriteAllText(P("c.yaml"), "learning_rate: NaN\n");
        AssertCleanError(CliRunner.Run("sft", "--config", P("c.yaml"), "--model", model, "--data", data, "--out", P("o")), 2, "--learning-rate must be a finite number");
        Assert.False(Directory.Exists(P("o/checkpoints")));
    }

    [Fact]
    public void HelpMarksRequiredFlagsListsTrlSpellingsAndRlHasNoEvalSteps()
    {
        var sft = CliRunner.Run("sft", "--help");
        Assert.Contains("(required) Model to fine-tune", sft.StdOut);
        Assert.Contains("(required) Training data", sft.StdOut);
        Assert.Contains("--output_dir", sft.StdOut);
        Assert.Contains("--eval-steps", sft.StdOut);
        var grpo = CliRunner.Run("grpo", "--help");
        Assert.DoesNotContain("--eval-steps", grpo.StdOut);
        Assert.Contains("--max_completion_length", grpo.StdOut);
        Assert.Contains("(required) Policy to train", grpo.StdOut);
    }

    [Fact]
    public void TrlSpellingsWorkAsFlagsAndConfigKeys()
    {
        string model = TinyModels.Create(P("m"));
        string data = TinyModels.WriteJsonl(P("d.jsonl"), Enumerable.Range(0, 4).Select(i => (object)new { prompt = $"q{i}", completion = " a" }));
        File.WriteAllText(P("trl.yaml"), "max_steps: -1\nresume_from_checkpoint: false\nnum_train_epochs: 2\nlearning_rate: 0.001\nwarmup_ratio: 0.5\nlr_scheduler_type: constant_with_warmup\nsave_steps: 0\n");
        var r = CliRunner.Run("sft", "--config", P("trl.yaml"), "--model_name_or_path", model, "--data", data, "--output_dir", P("run"), "--per_device_train_batch_size", "2");
        Assert.True(r.ExitCode == 0, r.StdErr);
        var config = System.Text.Json.JsonDocument.Parse(File.ReadAllText(P("run/run_config.json"))).RootElement;
        Assert.Equal(2, config.GetProperty("epochs").GetDouble());
        Assert.Equal(2, config.GetProperty("batch_size").GetInt32());
        Assert.Equal(0.5, config.GetProperty("warmup_ratio").GetDouble());
        Assert.Equal("constant_with_warmup", config.GetProperty("lr_scheduler").GetString());
        // transformers' constant has no warmup: a warmup beside it is refused, not ignored.
        var constant = CliRunner.Run("sft", "--config", P("trl.yaml"), "--lr-scheduler-type", "constant", "--model_name_or_path", model, "--data", data, "--output_dir", P("run2"));
        Assert.NotEqual(0, constant.ExitCode);
        Assert.Contains("constant_with_warmup", constant.StdErr);
        // 4 examples / batch 2 × 2 epochs = 4 steps (max_steps -1, TRL's default, defers to the epochs; resume_from_checkpoint
        // false, as in transformers, starts a new run).
        Assert.Equal(4, System.Text.Json.JsonDocument.Parse(File.ReadAllText(P("run/summary.json"))).RootElement.GetProperty("steps").GetInt32());
    }

    /// <summary>transformers' HfArgumentParser also takes each field with hyphens (--output-dir), so TRL users type both.</summary>
    [Fact]
    public void TrlSpellingsWorkWithHyphensToo()
    {
        string model = TinyModels.Create(P("m"));
        string data = TinyModels.WriteJsonl(P("d.jsonl"), Enumerable.Range(0, 4).Select(i => (object)new { prompt = $"q{i}", completion = " a" }));
        var r = CliRunner.Run("sft", "--model-name-or-path", model, "--data", data, "--output-dir", P("run"), "--per-device-train-batch-size", "2",
            "--num-train-epochs", "2", "--lr-scheduler-type", "constant", "--save-steps", "0");
        Assert.True(r.ExitCode == 0, r.StdErr);
        AssertCleanError(CliRunner.Run("sft", "--model", model, "--data", data, "--out", P("run3"), "--max-steps", "-2"), 2, "--max-steps must be ≥ 0");
        var config = System.Text.Json.JsonDocument.Parse(File.ReadAllText(P("run/run_config.json"))).RootElement;
        Assert.Equal(2, config.GetProperty("epochs").GetDouble());
        Assert.Equal(2, config.GetProperty("batch_size").GetInt32());
        Assert.Equal("constant", config.GetProperty("lr_scheduler").GetString());
        Assert.Contains("--per-device-train-batch-size", CliRunner.Run("dpo", "--help").StdOut);
        Assert.Contains("--max-completion-length", CliRunner.Run("grpo", "--help").StdOut);
        // TRL's on-policy trainers name the policy sft_model_path and the reward model reward_model_path.
        foreach (var rl in new[] { "ppo", "rloo" })
        {
            var help = CliRunner.Run(rl, "--help").StdOut;
            Assert.Contains("--policy, --sft-model-path, --sft_model_path", help);
            Assert.Contains("--reward-model, --reward-model-path, --reward_model, --reward_model_path", help);
        }
        // transformers'/TRL's flags AlignSharp does not take fail, each with what does the job here.
        var foreign = CliRunner.Run("sft", "--model", model, "--data", data, "--out", P("f"), "--bf16", "--attn_implementation=sdpa", "--load-in-4bit",
            "--assistant_only_loss", "true");
        Assert.NotEqual(0, foreign.ExitCode);
        Assert.Contains("--bf16: AlignSharp trains in float32", foreign.StdErr);
        Assert.Contains("--attn_implementation: attention runs in AlignSharp's own kernels", foreign.StdErr);
        Assert.Contains("--load-in-4bit: quantized (bitsandbytes) base weights are not supported", foreign.StdErr);
        Assert.Contains("--assistant_only_loss: --loss-on says which tokens carry loss", foreign.StdErr);
        Assert.False(Directory.Exists(P("f")));
        // --model names the model a run trains in every trainer, as in sft and rm.
        foreach (var trainer in new[] { "dpo", "kto", "online-dpo", "ppo", "grpo", "rloo" })
            Assert.Matches(@"\n  --model, [^\n]*--policy[^\n]*<policy>", CliRunner.Run(trainer, "--help").StdOut);
        string pairs = TinyModels.WriteJsonl(P("p.jsonl"), Enumerable.Range(0, 4).Select(i => (object)new { prompt = $"q{i}", chosen = " a", rejected = " b" }));
        var dpo = CliRunner.Run("dpo", "--model", model, "--data", pairs, "--out", P("dpo"), "--max-steps", "1", "--save-steps", "0");
        Assert.True(dpo.ExitCode == 0, dpo.StdErr);
        Assert.Equal(model, System.Text.Json.JsonDocument.Parse(File.ReadAllText(P("dpo/run_config.json"))).RootElement.GetProperty("policy").GetString());
    }

    /// <summary>TRL's --use_peft trains an adapter of its default rank 16 (ModelConfig's lora_r); --lora_r still sets the rank.</summary>
    [Fact]
    public void UsePeftTrainsAnAdapterOfTrlsDefaultRank()
    {
        string model = TinyModels.Create(P("m"));
        string data = TinyModels.WriteJsonl(P("d.jsonl"), Enumerable.Range(0, 4).Select(i => (object)new { prompt = $"q{i}", completion = " a" }));
        foreach (var (run, extra, rank) in new[] { ("peft", Array.Empty<string>(), 16), ("peft4", new[] { "--lora_r", "4" }, 4) })
        {
            var r = CliRunner.Run(["sft", "--model_name_or_path", model, "--data", data, "--output_dir", P(run), "--use_peft", "--lora_alpha", "8", "--max-steps", "1", .. extra]);
            Assert.True(r.ExitCode == 0, r.StdErr);
            var adapter = System.Text.Json.JsonDocument.Parse(File.ReadAllText(P(run + "/final/adapter_config.json"))).RootElement;
            Assert.Equal(rank, adapter.GetProperty("r").GetInt32());
            Assert.Equal(8, adapter.GetProperty("lora_alpha").GetDouble());
            Assert.False(File.Exists(P(run + "/final/model.safetensors")));
        }

        // use_peft false is TRL's full fine-tuning whatever lora_r says (a TRL config often keeps lora_r: 16): refused
        // beside --lora-r here, where --lora-r alone trains an adapter, on the command line and in a config file.
        var flag = CliRunner.Run("sft", "--model", model, "--data", data, "--out", P("nope"), "--lora-r", "2", "--use-peft", "false");
        Assert.Equal(2, flag.ExitCode);
        Assert.Contains("--use-peft false trains all weights", flag.StdErr);
        File.WriteAllText(P("trl.yaml"), "use_peft: false\nlora_r: 16\n");
        var file = CliRunner.Run("sft", "--model", model, "--data", data, "--out", P("nope"), "--config", P("trl.yaml"));
        Assert.Equal(2, file.ExitCode);
        Assert.Contains("--lora-r 16 trains an adapter", file.StdErr);
        Assert.False(Directory.Exists(P("nope")));
        var full = CliRunner.Run("sft", "--model", model, "--data", data, "--out", P("full"), "--use-peft", "false", "--max-steps", "1");
        Assert.True(full.ExitCode == 0, full.StdErr);
        Assert.True(File.Exists(P("full/final/model.safetensors")));
    }

    /// <summary>--chat-template-kwargs reach SFT's rendering: a long banner given as a keyword argument makes the record
    /// longer than --max-length, which is then reported; without it the same run trains. Bad kwargs are clean errors.</summary>
    [Fact]
    public void ChatTemplateKwargsReachTheSftRendering()
    {
        string model = TinyModels.Create(P("m"));
        string data = TinyModels.WriteJsonl(P("d.jsonl"), [new { messages = new[] { new { role = "user", content = "hi" }, new { role = "assistant", content = "yo" } } }]);
        File.WriteAllText(P("t.jinja"), "{{ banner | default('') }}{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}");
        string[] common = ["sft", "--model", model, "--data", data, "--chat-template", P("t.jinja"), "--max-length", "30", "--max-steps", "1"];
        var plain = CliRunner.Run([.. common, "--out", P("plain")]);
        Assert.True(plain.ExitCode == 0, plain.StdErr);
        AssertCleanError(CliRunner.Run([.. common, "--out", P("banner"), "--chat-template-kwargs", "{\"banner\": \"a banner far longer than the thirty tokens allowed \"}"]), 2, "longer than the max length of 30");
        AssertCleanError(CliRunner.Run([.. common, "--out", P("bad"), "--chat-template-kwargs", "[1]"]), 2, "--chat-template-kwargs: expected a JSON object");
        // In a YAML config the keyword arguments are a mapping, as TRL's configs write chat_template_kwargs.
        File.WriteAllText(P("kw.yaml"), "chat_template_kwargs:\n  banner: a banner far longer than the thirty tokens allowed\n");
        AssertCleanError(CliRunner.Run([.. common, "--out", P("yaml"), "--config", P("kw.yaml")]), 2, "longer than the max length of 30");
        File.WriteAllText(P("kw.yaml"), "chat_template_kwargs:\n  banner: ''\n  enable_thinking: false\n");
        var yaml = CliRunner.Run([.. common, "--out", P("yaml2"), "--config", P("kw.yaml")]);
        Assert.True(yaml.ExitCode == 0, yaml.StdErr);
        var kwargs = System.Text.Json.JsonDocument.Parse(File.ReadAllText(P("yaml2/run_config.json"))).RootElement.GetProperty("chat_template_kwargs").GetString()!;
        Assert.Equal("{\"banner\":\"\",\"enable_thinking\":false}", kwargs);
    }

    private string RewardModelWithout(string name)
    {
        string dir = P(name);
        ModelIO.Save(ModelIO.Load(TinyModels.Create(P(name + "-base")), HeadKind.Scalar, 3), dir);
        AtomicFile.WriteText(Path.Combine(dir, "tokenizer.json"), AlignSharp.Text.ByteTokenizerJson.TokenizerJson());
        return dir;
    }

    [Fact]
    public void NormalisingWithoutUsableStatisticsIsAnError()
    {
        string rm = RewardModelWithout("rm");
        string input = TinyModels.WriteJsonl(P("in.jsonl"), [new { prompt = "q", completion = "a" }]);
        AssertCleanError(CliRunner.Run("score", "--reward-model", rm, "--input", input, "--normalize"), 2, "--normalize", "reward_model.json");
        Assert.Equal(0, CliRunner.Run("score", "--reward-model", rm, "--input", input).ExitCode);

        new RewardModelInfo("plain", 0.5, 0, 64).Save(rm);
        AssertCleanError(CliRunner.Run("score", "--reward-model", rm, "--input", input, "--normalize"), 2, "reward_std 0");
        string prompts = TinyModels.WriteJsonl(P("prompts.jsonl"), [new { prompt = "q" }]);
        var ppo = CliRunner.Run("ppo", "--policy", P("rm-base"), "--reward-model", rm, "--prompts", prompts, "--out", P("ppo"), "--max-steps", "1");
        AssertCleanError(ppo, 2, "--normalize-reward", "reward_std 0");

        File.WriteAllText(Path.Combine(rm, RewardModelInfo.FileName), "{\"chat_template\": \"plain\", \"reward_mean\": 0, \"reward_std\": 1, \"max_length\": -5}");
        AssertCleanError(CliRunner.Run("score", "--reward-model", rm, "--input", input), 2, "max_length", "-5");
    }

    [Fact]
    public void ScoreReportsInputsLongerThanTheRewardModelTakesUnlessTruncate()
    {
        string rm = RewardModelWithout("rm");
        new RewardModelInfo("plain", 0, 1, 16).Save(rm);
        string input = TinyModels.WriteJsonl(P("in.jsonl"), [new { prompt = "q", completion = "short" }, new { prompt = new string('x', 40), completion = "long" }]);
        AssertCleanError(CliRunner.Run("score", "--reward-model", rm, "--input", input), 2, "in.jsonl:2", "--truncate");
        var ok = CliRunner.Run("score", "--reward-model", rm, "--input", input, "--truncate");
        Assert.True(ok.ExitCode == 0, ok.StdErr);
        Assert.Contains("1 of 2 inputs", ok.StdErr);
    }

    [Fact]
    public void GenerateAndLogprobsCheckPositionsAndRefuseNonFiniteWeights()
    {
        string llama = TinyModels.Create(P("llama"), arch: "llama"); // 128 positions
        string input = TinyModels.WriteJsonl(P("p.jsonl"), [new { prompt = "hi" }]);
        AssertCleanError(CliRunner.Run("generate", "--model", llama, "--input", input, "--max-new-tokens", "100000"), 2, "--max-new-tokens 100000", "128 positions");
        string longPrompt = TinyModels.WriteJsonl(P("long.jsonl"), [new { prompt = new string('a', 50_000) }]);
        AssertCleanError(CliRunner.Run("generate", "--model", llama, "--input", longPrompt, "--max-new-tokens", "4"), 2, "long.jsonl:1", "--truncate");
        var cut = CliRunner.Run("generate", "--model", llama, "--input", longPrompt, "--max-new-tokens", "4", "--truncate", "--temperature", "0");
        Assert.True(cut.ExitCode == 0, cut.StdErr);
        string text = TinyModels.WriteJsonl(P("t.jsonl"), [new { text = new string('b', 1100) }]);
        AssertCleanError(CliRunner.Run("logprobs", "--model", llama, "--input", text), 2, "t.jsonl:1", "128 positions");

        var model = ModelIO.Load(llama);
        model.Parameter("layers.0.attn.q.weight").Span[3] = float.NaN;
        ModelIO.Save(model, P("nan"));
        File.Copy(Path.Combine(llama, "tokenizer.json"), P("nan/tokenizer.json"));
        AssertCleanError(CliRunner.Run("generate", "--model", P("nan"), "--input", input, "--max-new-tokens", "2"), 2, "NaN", "'model.layers.0.self_attn.q_proj.weight'");
        AssertCleanError(CliRunner.Run("logprobs", "--model", P("nan"), "--input", text), 2, "NaN");
    }

    [Fact]
    public void InvalidUtf8InASafetensorsHeaderIsAnError()
    {
        string model = TinyModels.Create(P("m"));
        string file = Path.Combine(model, "model.safetensors");
        var bytes = File.ReadAllBytes(file);
        Assert.Equal((byte)'{', bytes[8]);
        Assert.Equal((byte)'"', bytes[9]);
        bytes[10] = 0xFF; // the first character of the first key
        File.WriteAllBytes(file, bytes);
        var e = Assert.Throws<UserInputException>(() => ModelIO.Load(model));
        Assert.Contains("model.safetensors", e.Message);
    }
}
