using System.Text.Json;
using AlignSharp.Engine;
using AlignSharp.Models;
using AlignSharp.Text;

namespace AlignSharp.Tests.Cli;

/// <summary>init, generate and logprobs run as a user runs them: as processes, on files.</summary>
public sealed class ModelCommandsTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("alignsharp-cli-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string Init(string arch, params string[] extra)
    {
        string model = Path.Combine(_dir, arch);
        var args = new List<string> { "init", "--arch", arch, "--vocab-size", "300", "--d-model", "32", "--layers", "2", "--heads", "4", "--tokenizer", "byte", "--out", model, "--seed", "3" };
        args.AddRange(extra);
        var r = CliRunner.Run(args);
        Assert.True(r.ExitCode == 0, r.StdErr);
        return model;
    }

    private string File(string name, string content)
    {
        var path = Path.Combine(_dir, name);
        System.IO.File.WriteAllText(path, content);
        return path;
    }

    [Fact]
    public void InitWritesAHuggingFaceLayoutThatLoadsBack()
    {
        string model = Init("llama", "--kv-heads", "2");
        foreach (var f in new[] { "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json" })
            Assert.True(System.IO.File.Exists(Path.Combine(model, f)), f);
        var config = JsonDocument.Parse(System.IO.File.ReadAllText(Path.Combine(model, "config.json"))).RootElement;
        Assert.Equal("llama", config.GetProperty("model_type").GetString());
        Assert.Equal(2, config.GetProperty("num_key_value_heads").GetInt32());
        var pre = Pretrained.Load(model);
        Assert.Equal(300, pre.Model.Config.VocabSize);
        // The byte tokenizer written as tokenizer.json gives the byte tokenizer's ids.
        var text = "héllo <|eos|> wörld 🙂";
        Assert.Equal(new ByteTokenizer().Encode(text), pre.Tokenizer!.Encode(text));
        Assert.Equal(text, pre.Tokenizer.Decode(pre.Tokenizer.Encode(text, addSpecialTokens: false)));
    }

    [Fact]
    public void SentencePieceTokenizerModelDirectoryWorksEndToEnd()
    {
        // A Llama model directory with a Llama-2-style tokenizer.json (byte fallback, ▁ normalizer, BOS template).
        string tokenizer = Text.TokenizerFixtures.Small("llama2-small");
        var r = CliRunner.Run("init", "--arch", "llama", "--vocab-size", "5000", "--d-model", "32", "--layers", "1", "--heads", "4",
            "--tokenizer", tokenizer, "--out", Path.Combine(_dir, "spm"), "--seed", "3");
        Assert.True(r.ExitCode == 0, r.StdErr);
        string model = Path.Combine(_dir, "spm");
        var pre = Pretrained.Load(model);
        var reference = Text.TokenizerFixtures.Reference("llama2-small").Single(c => c.Text == "Hello world");
        Assert.Equal(reference.Ids, pre.Tokenizer!.Encode("Hello world"));
        Assert.Equal(1, pre.Tokenizer.BosId);
        string input = File("spm.jsonl", "{\"prompt\": \"Hello world 😀\"}\n");
        var g = CliRunner.Run("generate", "--model", model, "--input", input, "--max-new-tokens", "4", "--temperature", "0");
        Assert.True(g.ExitCode == 0, g.StdErr);
        var o = JsonDocument.Parse(g.StdOut).RootElement;
        var ids = o.GetProperty("ids").EnumerateArray().Select(e => e.GetInt32()).ToArray();
        Assert.InRange(ids.Length, 1, 4);
        Assert.Equal(pre.Tokenizer.Decode(ids), o.GetProperty("text").GetString());
    }

    [Fact]
    public void GenerateAnswersEveryLineInOrderAndIsSeeded()
    {
        string model = Init("gpt2");
        string input = File("prompts.jsonl", "{\"prompt\": \"Hello\"}\n{\"prompt_ids\": [256, 72, 105]}\n\n{\"prompt\": \"x\"}\n");
        var a = CliRunner.Run("generate", "--model", model, "--input", input, "--max-new-tokens", "6", "--seed", "5", "--top-k", "20");
        Assert.True(a.ExitCode == 0, a.StdErr);
        var lines = a.StdOut.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(3, lines.Length);
        foreach (var line in lines)
        {
            var o = JsonDocument.Parse(line).RootElement;
            int n = o.GetProperty("ids").GetArrayLength();
            Assert.InRange(n, 1, 6);
            Assert.Equal(n, o.GetProperty("logprobs").GetArrayLength());
            Assert.Equal(JsonValueKind.String, o.GetProperty("text").ValueKind);
        }
        // Same seed, other batching: same tokens (log-probabilities may differ in the last float bit).
        string output = Path.Combine(_dir, "out.jsonl");
        var b = CliRunner.Run("generate", "--model", model, "--input", input, "--max-new-tokens", "6", "--seed", "5", "--top-k", "20", "--batch-size", "1", "--output", output);
        Assert.True(b.ExitCode == 0, b.StdErr);
        var again = System.IO.File.ReadAllLines(output);
        Assert.Equal(lines.Length, again.Length);
        for (int i = 0; i < lines.Length; i++)
        {
            var x = JsonDocument.Parse(lines[i]).RootElement; var y = JsonDocument.Parse(again[i]).RootElement;
            Assert.Equal(x.GetProperty("ids").GetRawText(), y.GetProperty("ids").GetRawText());
            Assert.Equal(x.GetProperty("text").GetString(), y.GetProperty("text").GetString());
            var lx = x.GetProperty("logprobs").EnumerateArray().Select(e => e.GetDouble()).ToArray();
            var ly = y.GetProperty("logprobs").EnumerateArray().Select(e => e.GetDouble()).ToArray();
            for (int j = 0; j < lx.Length; j++) Assert.Equal(lx[j], ly[j], 4);
        }
    }

    [Theory]
    [InlineData("0")]
    [InlineData("-2")]
    public void ABatchSizeBelowOneIsAnErrorNotOne(string size)
    {
        string model = Init("llama");
        string input = File("b.jsonl", "{\"prompt_ids\": [256, 10]}\n");
        var r = CliRunner.Run("generate", "--model", model, "--input", input, "--max-new-tokens", "2", "--batch-size", size);
        Assert.NotEqual(0, r.ExitCode);
        Assert.Contains($"--batch-size must be >= 1, not {size}", r.StdErr);
        Assert.DoesNotContain("   at ", r.StdErr);
        Assert.Empty(r.StdOut);
    }

    [Fact]
    public void GreedyGenerationIsTheArgmaxOfTheModel()
    {
        string model = Init("llama");
        string input = File("p.jsonl", "{\"prompt_ids\": [256, 10, 20]}\n");
        var r = CliRunner.Run("generate", "--model", model, "--input", input, "--max-new-tokens", "3", "--temperature", "0");
        Assert.True(r.ExitCode == 0, r.StdErr);
        Assert.DoesNotContain("warning", r.StdErr);
        // A filter given with greedy decoding changes nothing, and says so.
        var filtered = CliRunner.Run("generate", "--model", model, "--input", input, "--max-new-tokens", "3", "--temperature", "0", "--top-k", "5");
        Assert.True(filtered.ExitCode == 0, filtered.StdErr);
        Assert.Contains("warning: --temperature 0 decodes greedily", filtered.StdErr);
        Assert.Equal(r.StdOut, filtered.StdOut);
        var ids = JsonDocument.Parse(r.StdOut).RootElement.GetProperty("ids").EnumerateArray().Select(e => e.GetInt32()).ToArray();
        var m = ModelIO.Load(model);
        var seq = new List<int> { 256, 10, 20 };
        using var noGrad = Autograd.NoGrad();
        foreach (var id in ids)
        {
            var logits = m.Forward(seq.ToArray(), 1, seq.Count).ToArray();
            int best = 0;
            for (int v = 1; v < 259; v++) if (logits[(seq.Count - 1) * 300 + v] > logits[(seq.Count - 1) * 300 + best]) best = v;
            Assert.Equal(best, id);
            seq.Add(id);
        }
    }

    [Fact]
    public void LogprobsMatchTheModelAndStartWithNull()
    {
        string model = Init("gpt2");
        string input = File("seqs.jsonl", "{\"ids\": [256, 1, 2, 3]}\n{\"text\": \"ab\"}\n");
        var r = CliRunner.Run("logprobs", "--model", model, "--input", input);
        Assert.True(r.ExitCode == 0, r.StdErr);
        var lines = r.StdOut.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => JsonDocument.Parse(l).RootElement.GetProperty("logprobs")).ToArray();
        Assert.Equal(2, lines.Length);
        Assert.Equal(JsonValueKind.Null, lines[0][0].ValueKind);
        Assert.Equal(4, lines[0].GetArrayLength());
        Assert.Equal(3, lines[1].GetArrayLength()); // BOS a b
        var m = ModelIO.Load(model);
        using var noGrad = Autograd.NoGrad();
        var logits = m.Forward([256, 1, 2, 3], 1, 4).ToArray();
        for (int t = 1; t < 4; t++)
        {
            var row = logits.AsSpan((t - 1) * 300, 300);
            double max = row.ToArray().Max(), lse = max + Math.Log(row.ToArray().Sum(x => Math.Exp(x - max)));
            Assert.Equal(row[new[] { 256, 1, 2, 3 }[t]] - lse, lines[0][t].GetDouble(), 4);
        }
    }

    [Fact]
    public void GenerateRendersMessagePromptsEchoesThemAndUsesGenerationConfig()
    {
        string model = Init("gpt2");
        // A model template (chat_template.jinja) and greedy decoding from generation_config.json (do_sample false).
        System.IO.File.WriteAllText(Path.Combine(model, "chat_template.jinja"),
            "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}");
        System.IO.File.WriteAllText(Path.Combine(model, "generation_config.json"), "{\"do_sample\": false, \"eos_token_id\": [257]}");
        string input = File("chat.jsonl",
            "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}\n" +
            "{\"prompt\": [{\"role\": \"user\", \"content\": \"hi\"}]}\n" +
            "{\"prompt\": \"user: hi\\nassistant:\"}\n");
        var a = CliRunner.Run("generate", "--model", model, "--input", input, "--max-new-tokens", "4", "--seed", "1");
        var b = CliRunner.Run("generate", "--model", model, "--input", input, "--max-new-tokens", "4", "--seed", "2");
        Assert.True(a.ExitCode == 0, a.StdErr);
        Assert.Equal(a.StdOut, b.StdOut); // greedy: the seed does not matter
        var lines = a.StdOut.TrimEnd('\n').Split('\n').Select(l => System.Text.Json.JsonDocument.Parse(l).RootElement).ToList();
        Assert.Equal(3, lines.Count);
        Assert.Equal(System.Text.Json.JsonValueKind.Array, lines[0].GetProperty("prompt").ValueKind);
        Assert.Equal("hi", lines[1].GetProperty("prompt")[0].GetProperty("content").GetString());
        Assert.Equal("user: hi\nassistant:", lines[2].GetProperty("prompt").GetString());
        // The rendered message prompt is the text prompt, so all three continue identically.
        Assert.All(lines, l => Assert.Equal(lines[2].GetProperty("ids").GetRawText(), l.GetProperty("ids").GetRawText()));
        Assert.All(lines, l => Assert.Equal(l.GetProperty("text").GetString(), l.GetProperty("completion").GetString()));
        // An explicit --temperature wins over generation_config.json: sampling now depends on the seed.
        var c = CliRunner.Run("generate", "--model", model, "--input", input, "--max-new-tokens", "8", "--seed", "1", "--temperature", "1.5");
        var d = CliRunner.Run("generate", "--model", model, "--input", input, "--max-new-tokens", "8", "--seed", "2", "--temperature", "1.5");
        Assert.True(c.ExitCode == 0, c.StdErr);
        Assert.NotEqual(c.StdOut, d.StdOut);
    }

    /// <summary>generation_config.json's values are checked naming the file and field; what it sets that the sampler does not
    /// apply is named in a note; without it config.json's eos_token_id list stops generation, as transformers builds its
    /// generation config from the model's; prompt_ids are echoed as text (so the line pipes into score).</summary>
    [Fact]
    public void GenerationConfigIsCheckedAndWhatItCannotApplyIsNamed()
    {
        string model = Init("gpt2");
        string input = File("ids.jsonl", "{\"prompt_ids\": [256, 104, 105]}\n");
        string gc = Path.Combine(model, "generation_config.json");
        foreach (var (json, expected) in new[]
                 {
                     ("{\"top_k\": \"5\"}", "field \"top_k\" must be an integer"),
                     ("{\"eos_token_id\": [2, \"x\"]}", "field \"eos_token_id\" must be an integer or a list of integers"),
                     ("{\"top_p\": 1.5}", "field \"top_p\" must be in (0, 1]"),
                     ("{\"do_sample\": \"false\"}", "field \"do_sample\" must be true or false"),
                 })
        {
            System.IO.File.WriteAllText(gc, json);
            var bad = CliRunner.Run("generate", "--model", model, "--input", input, "--max-new-tokens", "2");
            Assert.NotEqual(0, bad.ExitCode);
            Assert.Contains("generation_config.json: " + expected, bad.StdErr);
            Assert.DoesNotContain("   at ", bad.StdErr);
        }
        System.IO.File.WriteAllText(gc, "{\"do_sample\": false, \"repetition_penalty\": 1.05, \"no_repeat_ngram_size\": 3, \"min_p\": null, \"min_new_tokens\": 0}");
        var r = CliRunner.Run("generate", "--model", model, "--input", input, "--max-new-tokens", "3");
        Assert.True(r.ExitCode == 0, r.StdErr);
        Assert.Contains("note: generation_config.json sets no_repeat_ngram_size 3, which this sampler does not apply", r.StdErr);
        Assert.DoesNotContain("repetition_penalty 1.05", r.StdErr);   // applied, as the flag's default
        Assert.DoesNotContain("min_new_tokens", r.StdErr);
        Assert.EndsWith("hi", System.Text.Json.JsonDocument.Parse(r.StdOut).RootElement.GetProperty("prompt").GetString());

        // No generation_config.json: config.json's eos_token_id (here every id) ends the completion at its first token.
        System.IO.File.Delete(gc);
        var config = System.Text.Json.Nodes.JsonNode.Parse(System.IO.File.ReadAllText(Path.Combine(model, "config.json")))!.AsObject();
        config["eos_token_id"] = new System.Text.Json.Nodes.JsonArray(Enumerable.Range(0, 300).Select(i => (System.Text.Json.Nodes.JsonNode?)i).ToArray());
        System.IO.File.WriteAllText(Path.Combine(model, "config.json"), config.ToJsonString());
        var stops = CliRunner.Run("generate", "--model", model, "--input", input, "--max-new-tokens", "5", "--temperature", "0");
        Assert.True(stops.ExitCode == 0, stops.StdErr);
        var line = System.Text.Json.JsonDocument.Parse(stops.StdOut).RootElement;
        Assert.Equal("eos", line.GetProperty("finish_reason").GetString());
        Assert.Equal(1, line.GetProperty("ids").GetArrayLength());

        Assert.Contains("a stop string is empty", CliRunner.Run("generate", "--model", model, "--input", input, "--max-new-tokens", "2", "--stop", "").StdErr);
        Assert.Contains("too small to divide by", CliRunner.Run("generate", "--model", model, "--input", input, "--max-new-tokens", "2", "--temperature", "1e-45").StdErr);
    }

    [Theory]
    [InlineData("{\"prompt\": 5}\n", "prompts.jsonl:1: field \"prompt\": must be a string")]
    [InlineData("{\"prompt\": \"ok\"}\n{not json\n", "prompts.jsonl:2: malformed JSON")]
    [InlineData("{\"prompt_ids\": [1, 999]}\n", "prompts.jsonl:1: field \"prompt_ids\": token id 999 is outside the vocabulary")]
    [InlineData("{\"other\": 1}\n", "prompts.jsonl:1: needs a field \"prompt\", \"messages\" or \"prompt_ids\"")]
    public void BadGenerateInputNamesFileLineAndField(string content, string expected)
    {
        string model = Init("gpt2");
        string input = File("prompts.jsonl", content);
        string output = Path.Combine(_dir, "never.jsonl");
        var r = CliRunner.Run("generate", "--model", model, "--input", input, "--max-new-tokens", "2", "--output", output);
        Assert.NotEqual(0, r.ExitCode);
        Assert.Contains(expected, r.StdErr);
        Assert.DoesNotContain("   at ", r.StdErr);
        Assert.False(System.IO.File.Exists(output));
    }

    [Fact]
    public void MissingModelDirectoryIsAClearError()
    {
        var r = CliRunner.Run("logprobs", "--model", Path.Combine(_dir, "nope"), "--input", File("x.jsonl", "{\"ids\": [1]}\n"));
        Assert.NotEqual(0, r.ExitCode);
        Assert.Contains("does not exist", r.StdErr);
        Assert.DoesNotContain("   at ", r.StdErr);
    }
}
