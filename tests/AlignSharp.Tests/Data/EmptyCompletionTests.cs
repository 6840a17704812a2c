using System.Text.Json;
using AlignSharp.Engine;
using AlignSharp.Models;
using AlignSharp.Tests.Training;
using AlignSharp.Text;
using AlignSharp.Training.Data;
using AlignSharp.Training.Dpo;
using AlignSharp.Training.Rewards;

namespace AlignSharp.Tests.Data;

/// <summary>
/// An empty completion (the model answered with EOS at once) is valid data wherever an answer is read (sft, rm, dpo,
/// kto, score): it is one EOS token. An answer of only whitespace stays a bad record (see <see cref="BadRecordTests"/>).
/// </summary>
public sealed class EmptyCompletionTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("alignsharp-empty-").FullName;
    public void Dispose() { try { Directory.Delete(_dir, true); } catch (IOException) { } }
    private string P(string name) => Path.Combine(_dir, name);

    private const int Bos = ByteTokenizer.BosTokenId, Eos = ByteTokenizer.EosTokenId;

    /// <summary>Text used verbatim gets EOS unless it already ends with one, as TRL's endswith(eos_token): an EOS inside
    /// (between two documents) still gets a final one. Same for a text answer of a pair.</summary>
    [Fact]
    public void TextGetsEosUnlessItAlreadyEndsWithOne()
    {
        var tokenizer = Pretrained.Load(TinyModels.Create(P("m"))).Tokenizer!;
        var plain = ChatTemplate.Get("plain");
        string sft = TinyModels.WriteJsonl(P("eos.jsonl"), new object[]
        {
            new { prompt = "q", completion = "a<|eos|>b" },
            new { prompt = "q", completion = "a<|eos|>" },
            new { text = "x<|eos|>y" },
        });
        var seqs = SftEncoder.Encode(DatasetLoader.LoadSft(sft).Records, tokenizer, plain).Records;
        Assert.Equal([Bos, 'q', 'a', Eos, 'b', Eos], seqs[0].Ids);
        Assert.Equal([Bos, 'q', 'a', Eos], seqs[1].Ids);
        Assert.Equal([Bos, 'x', Eos, 'y', Eos], seqs[2].Ids);
        string prefs = TinyModels.WriteJsonl(P("eos-prefs.jsonl"), [new { prompt = "q", chosen = "a<|eos|>b", rejected = "c<|eos|>" }]);
        var pair = PreferenceEncoder.Encode(DatasetLoader.LoadPreferences(prefs).Records, tokenizer, plain).Records.Single();
        Assert.Equal(['a', Eos, 'b', Eos], pair.Chosen);
        Assert.Equal(['c', Eos], pair.Rejected);
    }

    [Fact]
    public void EveryAnswerFieldAcceptsAnEmptyStringAsOneEosToken()
    {
        var tokenizer = Pretrained.Load(TinyModels.Create(P("m"))).Tokenizer!;
        var plain = ChatTemplate.Get("plain");

        // SFT: the completion is EOS alone, and it is the only token with a label.
        string sft = TinyModels.WriteJsonl(P("sft.jsonl"), [new { prompt = "ab", completion = "" }]);
        var seq = SftEncoder.Encode(DatasetLoader.LoadSft(sft).Records, tokenizer, plain).Records.Single();
        Assert.Equal([Bos, 'a', 'b', Eos], seq.Ids);
        Assert.Equal([SftSequence.IgnoreIndex, SftSequence.IgnoreIndex, SftSequence.IgnoreIndex, Eos], seq.Labels);

        // Preferences: a pair, an Anthropic HH transcript whose answer is empty, and a ranking.
        string prefs = TinyModels.WriteJsonl(P("prefs.jsonl"), new object[]
        {
            new { prompt = "ab", chosen = "c", rejected = "" },
            new { chosen = "\n\nHuman: hi\n\nAssistant: yo", rejected = "\n\nHuman: hi\n\nAssistant:" },
        });
        var pairs = PreferenceEncoder.Encode(DatasetLoader.LoadPreferences(prefs).Records, tokenizer, plain).Records;
        Assert.Equal([Bos, 'a', 'b'], pairs[0].Prompt);
        Assert.Equal(['c', Eos], pairs[0].Chosen);
        Assert.Equal([Eos], pairs[0].Rejected);
        Assert.Equal([Eos], pairs[1].Rejected);
        Assert.Equal([' ', 'y', 'o', Eos], pairs[1].Chosen);
        string ranking = TinyModels.WriteJsonl(P("rank.jsonl"), [new { prompt = "p", completions = new[] { "x", "" }, ranking = new[] { 1, 0 } }]);
        Assert.Equal("", DatasetLoader.LoadRankingGroups([ranking], new DataLoadOptions()).Records.Single().Completions[1].Text);

        // Message lists: an empty final assistant turn (sft) and an empty assistant answer (preferences).
        string chat = TinyModels.WriteJsonl(P("chat.jsonl"), [new { messages = new[] { new { role = "user", content = "hi" }, new { role = "assistant", content = "" } } }]);
        var chatSeq = SftEncoder.Encode(DatasetLoader.LoadSft(chat).Records, tokenizer, ChatTemplate.Get("chatml")).Records.Single();
        Assert.Equal(Eos, chatSeq.Labels[^1]);
        string chatPrefs = TinyModels.WriteJsonl(P("chatprefs.jsonl"),
            [new { prompt = new[] { new { role = "user", content = "hi" } }, chosen = new[] { new { role = "assistant", content = "yo" } }, rejected = new[] { new { role = "assistant", content = "" } } }]);
        Assert.Single(DatasetLoader.LoadPreferences(chatPrefs).Records);

        // Unpaired feedback (kto).
        string kto = TinyModels.WriteJsonl(P("kto.jsonl"), [new { prompt = "a", completion = "", label = false }]);
        Assert.Equal("", DatasetLoader.LoadUnpaired([kto], new DataLoadOptions { ExpectedKind = DatasetKind.Unpaired }).Records.Single().Example.Completion.Text);
    }

    [Fact]
    public void DpoScoresAnEmptyAnswerAsTheLogProbabilityOfEosAfterThePrompt()
    {
        var pre = Pretrained.Load(TinyModels.Create(P("m")));
        var pair = new TokenizedPreference([Bos, 'a', 'b'], ['c', Eos], [Eos], 0f, 1f, new RecordSource("x", 1));
        var batch = DpoBatch.FromPairs(PreferenceBatch.Create([pair], ByteTokenizer.PadTokenId));
        var (c, r) = batch.PairRows();
        float[] sums;
        using (Autograd.NoGrad()) sums = AnswerScoring.Compute(pre.Model, batch).Sums.ToArray();

        // By hand: log softmax of the logits after "<bos>ab" at EOS.
        float[] logits;
        using (Autograd.NoGrad()) logits = pre.Model.Forward([Bos, 'a', 'b'], 1, 3).ToArray();
        var row = logits.AsSpan(2 * 259, 259).ToArray();
        double max = row.Max(), lse = max + Math.Log(row.Sum(x => Math.Exp(x - max)));
        Assert.Equal(row[Eos] - lse, sums[r[0]], 4);
        Assert.True(sums[c[0]] < 0);
    }

    [Fact]
    public void RmDpoKtoSftAndScoreRunOnEmptyCompletions()
    {
        string model = TinyModels.Create(P("m"));
        string data = TinyModels.WriteJsonl(P("prefs.jsonl"), Enumerable.Range(0, 4).Select(i => (object)new { prompt = $"q{i}", chosen = " fine", rejected = "" }));
        var rm = CliRunner.Run("rm", "--model", model, "--data", data, "--max-steps", "2", "--batch-size", "2", "--out", P("rm"));
        Assert.True(rm.ExitCode == 0, rm.StdErr);
        var dpo = CliRunner.Run("dpo", "--policy", model, "--data", data, "--max-steps", "2", "--batch-size", "2", "--out", P("dpo"));
        Assert.True(dpo.ExitCode == 0, dpo.StdErr);
        var last = File.ReadLines(P("dpo/metrics.jsonl")).Select(l => JsonDocument.Parse(l).RootElement).Last(l => l.GetProperty("split").GetString() == "train");
        Assert.True(double.IsFinite(last.GetProperty("logps/rejected").GetDouble()));

        string kto = TinyModels.WriteJsonl(P("kto.jsonl"), Enumerable.Range(0, 4).Select(i => (object)new { prompt = $"q{i}", completion = i % 2 == 0 ? " fine" : "", label = i % 2 == 0 }));
        var ktoRun = CliRunner.Run("kto", "--policy", model, "--data", kto, "--max-steps", "2", "--batch-size", "2", "--out", P("kto"));
        Assert.True(ktoRun.ExitCode == 0, ktoRun.StdErr);
        string sft = TinyModels.WriteJsonl(P("sft.jsonl"), Enumerable.Range(0, 4).Select(i => (object)new { prompt = $"q{i}", completion = "" }));
        var sftRun = CliRunner.Run("sft", "--model", model, "--data", sft, "--max-steps", "2", "--batch-size", "2", "--out", P("sft"));
        Assert.True(sftRun.ExitCode == 0, sftRun.StdErr);

        // score: an empty completion is the prompt's tokens and one EOS.
        string input = TinyModels.WriteJsonl(P("score.jsonl"), [new { prompt = "ab", completion = "" }]);
        var score = CliRunner.Run("score", "--reward-model", P("rm/final"), "--input", input);
        Assert.True(score.ExitCode == 0, score.StdErr);
        double s = JsonDocument.Parse(score.StdOut.Trim()).RootElement.GetProperty("score").GetDouble();
        var expected = RewardModel.Load(P("rm/final")).ScoreSequences([[Bos, 'a', 'b', Eos]])[0];
        Assert.Equal(expected, s, 1e-5); // the command prints 6 significant decimals
    }
}
