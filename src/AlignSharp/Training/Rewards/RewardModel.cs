using System.Text.Json;
using AlignSharp.Engine;
using AlignSharp.Models;
using AlignSharp.Models.Checkpoints;
using AlignSharp.Text;
using AlignSharp.Training.Data;

namespace AlignSharp.Training.Rewards;

/// <summary>
/// What the reward-model trainer records beside the model (<c>reward_model.json</c>): how texts were formatted,
/// and the mean and standard deviation of its rewards on the training prompts, so that the RL phase can
/// normalise scores to mean 0 and standard deviation 1. <paramref name="ChatTemplateKwargs"/>: the template's keyword
/// arguments in training (JSON, or null). <paramref name="TextAnswers"/>: every training record was text, prompt and
/// answers (an annotation export: the prompt rendered with its generation prompt, the answer as sampled), so a
/// conversational prompt is scored the same way, its answer appended as text rather than rendered as a turn; null in
/// files written before it was recorded.
/// </summary>
public sealed record RewardModelInfo(string ChatTemplate, double RewardMean, double RewardStd, int MaxLength,
    string? ChatTemplateKwargs = null, bool? TextAnswers = null)
{
    public const string FileName = "reward_model.json";

    public void Save(string dir) => AtomicFile.WriteText(Path.Combine(dir, FileName), JsonSerializer.Serialize(this, Json) + "\n");

    public static RewardModelInfo? Load(string dir)
    {
        string path = Path.Combine(dir, FileName);
        if (!File.Exists(path)) return null;
        RewardModelInfo? info;
        try { info = JsonSerializer.Deserialize<RewardModelInfo>(File.ReadAllText(path), Json); }
        catch (JsonException e) { throw new UserInputException($"{path}: unreadable: {e.Message}"); }
        if (info == null) throw new UserInputException($"{path}: empty (expected an object with chat_template, reward_mean, reward_std, max_length).");
        if (info.MaxLength <= 0) throw new UserInputException($"{path}: \"max_length\" must be a positive number of tokens, not {info.MaxLength}.");
        if (!double.IsFinite(info.RewardMean) || !double.IsFinite(info.RewardStd))
            throw new UserInputException($"{path}: \"reward_mean\" and \"reward_std\" must be finite numbers.");
        return info;
    }

    private static readonly JsonSerializerOptions Json = new() { WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };
}

/// <summary>
/// A transformer with a scalar head that scores (prompt, completion) pairs: the score is the head's value at the
/// last real token of prompt + completion + EOS, encoded exactly as the reward-model trainer encodes them.
/// </summary>
public sealed class RewardModel
{
    public TransformerModel Model { get; }
    public ITokenizer Tokenizer { get; }
    public ChatTemplate Template { get; }
    public RewardModelInfo? Info { get; }

    /// <summary>What makes a checkpoint a reward model, for the errors that reject one without a scalar head.</summary>
    public const string ScalarHeadHint = "a *ForSequenceClassification checkpoint with one label (score.weight [1, hidden]), " +
        "as transformers and TRL's RewardTrainer save it, or config.json \"alignsharp\": {\"head\": \"scalar\"}";

    public RewardModel(TransformerModel model, ITokenizer tokenizer, ChatTemplate template, RewardModelInfo? info = null)
    {
        if (model.Config.Head != HeadKind.Scalar) throw new UserInputException($"A reward model needs a scalar head: {ScalarHeadHint}.");
        Model = model;
        Tokenizer = tokenizer;
        Template = template;
        Info = info;
    }

    /// <summary>
    /// Loads a reward-model directory written by <c>alignsharp rm</c> (or any checkpoint with a scalar head; a LoRA rm's
    /// final/ is its base with the adapter, see <see cref="ModelIO.Load"/>). With <paramref name="adapter"/>, that LoRA
    /// adapter is applied to the model (a SEQ_CLS adapter brings its score head, so <paramref name="dir"/> may be a language
    /// model); reward_model.json and the chat template are then read from the adapter directory when it has them.
    /// <paramref name="bf16Matrices"/>: the frozen matrices kept in bf16.
    /// </summary>
    public static RewardModel Load(string dir, string? adapter = null, bool bf16Matrices = false)
    {
        if (adapter != null && !System.IO.Directory.Exists(adapter)) throw new UserInputException($"--adapter: directory '{adapter}' does not exist");
        HeadKind? head = adapter != null && Models.Lora.LoraConfig.Load(adapter).TaskType == Models.Lora.LoraConfig.SequenceClassification ? HeadKind.Scalar : null;
        var pre = Pretrained.Load(dir, head, bf16Matrices: bf16Matrices).WithAdapter(adapter);
        string infoDir = adapter != null && File.Exists(Path.Combine(adapter, RewardModelInfo.FileName)) ? adapter : dir;
        var info = RewardModelInfo.Load(infoDir);
        return new RewardModel(pre.Model, pre.RequireTokenizer("scoring text"), RewardModelTemplate(info, infoDir), info) { Directory = infoDir };
    }

    /// <summary>The template a reward model was trained with, with the keyword arguments it was trained with: a built-in
    /// name as recorded, else the template saved in its directory.</summary>
    static ChatTemplate RewardModelTemplate(RewardModelInfo? info, string dir) =>
        info?.ChatTemplate is { } recorded && ChatTemplate.Names.Contains(recorded)
            ? ChatTemplate.Resolve(recorded, null, info.ChatTemplateKwargs)
            : ChatTemplate.Resolve("auto", dir, info?.ChatTemplateKwargs);

    /// <summary>
    /// prompt + completion as the trainer tokenizes them: the rendered prompt (with added special tokens), then the
    /// completion and EOS; longer than <see cref="MaxTokens"/> keeps the end (the score is read at the last token).
    /// </summary>
    public int[] Encode(ChatContent prompt, string completion) => Encode(prompt, completion, out _);

    /// <summary><see cref="Encode(ChatContent, string)"/>, saying whether the start was cut off.</summary>
    public int[] Encode(ChatContent prompt, string completion, out bool truncated) => Encode(prompt, ChatContent.FromText(completion), out truncated);

    /// <summary><see cref="Encode(ChatContent, string)"/> of a completion given as text or assistant messages.</summary>
    public int[] Encode(ChatContent prompt, ChatContent completion, out bool truncated)
    {
        var (p, c) = RenderAsTrained(prompt, completion);
        var promptIds = Tokenizer.Encode(p, addSpecialTokens: true);
        var completionIds = Tokenizer.Encode(c, addSpecialTokens: false);
        var ids = new List<int>(promptIds.Length + completionIds.Length + 1);
        ids.AddRange(promptIds);
        if (Tokenizer.BosId is int bos && ids.Count >= 2 && ids[0] == bos && ids[1] == bos) ids.RemoveAt(0);
        ids.AddRange(completionIds);
        if (Tokenizer.EosId is int eos && !completionIds.Contains(eos)) ids.Add(eos);
        int max = MaxTokens;
        truncated = ids.Count > max;
        if (truncated) ids.RemoveRange(0, ids.Count - max); // keep the end: the score is read at the last token
        return ids.ToArray();
    }

    /// <summary>Prompt and answer text as this model's training rendered such a pair.</summary>
    private (string Prompt, string Completion) RenderAsTrained(ChatContent prompt, ChatContent completion)
    {
        if (completion.IsConversational) return Template.RenderPromptAndCompletion(prompt, completion);
        // A model trained on text alone (its prompts rendered with the generation prompt, its answers as sampled) reads a
        // conversational prompt's answer as text after that rendering, as it was trained, not as a templated turn.
        if (Info?.TextAnswers == true) return (Template.RenderPrompt(prompt), completion.Text!);
        // A prompt ending with the assistant's own first words (a prefill the policy continued): the answer is that
        // message with the completion after it, as TRL's GRPO hands it to a reward model, so the template renders one
        // final assistant turn (Qwen3's think block goes before it, not between the two halves).
        if (prompt.Messages is [.., { Role: ChatRole.Assistant } prefill] messages)
            return Template.RenderPromptAndCompletion(ChatContent.FromMessages(messages.Take(messages.Count - 1).ToArray()),
                ChatContent.FromMessages(prefill with { Content = prefill.Content + completion.Text }));
        return Template.RenderPromptAndCompletion(prompt, completion);
    }

    /// <summary>Raw scores of token sequences (no gradient), batched with right padding.</summary>
    public float[] ScoreSequences(IReadOnlyList<int[]> sequences, int batchSize = 8) => ScoreSequences(Model, sequences, batchSize);

    /// <summary>Raw scores of token sequences by a scalar-head <paramref name="model"/> (no gradient), batched with right padding.</summary>
    public static float[] ScoreSequences(TransformerModel model, IReadOnlyList<int[]> sequences, int batchSize = 8)
    {
        var scores = new float[sequences.Count];
        using var noGrad = Autograd.NoGrad();
        for (int start = 0; start < sequences.Count; start += batchSize)
        {
            int b = Math.Min(batchSize, sequences.Count - start);
            var rows = Enumerable.Range(start, b).Select(i => sequences[i]).ToArray();
            using var scope = TensorScope.Begin();
            var s = ForwardLast(model, rows).Span;
            for (int i = 0; i < b; i++) scores[start + i] = s[i];
        }
        return scores;
    }

    /// <summary>The directory this model was loaded from (for messages), or null.</summary>
    public string? Directory { get; init; }

    /// <summary>
    /// Fails unless reward_model.json holds usable statistics (present, std &gt; 0): normalising with anything else would
    /// silently report raw scores. <paramref name="flag"/> names the option that asked for normalisation.
    /// </summary>
    public void RequireNormalization(string flag)
    {
        string where = Directory ?? "the reward model";
        if (Info == null)
            throw new UserInputException($"{flag}: {where} has no {RewardModelInfo.FileName} (the reward mean and std recorded by alignsharp rm), so scores cannot be normalised; turn {flag} off or use a model trained by alignsharp rm.");
        if (!(Info.RewardStd > 0))
            throw new UserInputException($"{flag}: {where}/{RewardModelInfo.FileName} has reward_std {Info.RewardStd}; normalising needs a std > 0. Turn {flag} off or retrain the reward model.");
    }

    /// <summary>Scores normalised with the training statistics: (r − mean) / std (see <see cref="RequireNormalization"/>).</summary>
    public float Normalize(float raw)
    {
        RequireNormalization("normalisation");
        return (float)((raw - Info!.RewardMean) / Info.RewardStd);
    }

    /// <summary>The most tokens a scored sequence keeps: reward_model.json's max_length, and never more than the model's positions.</summary>
    public int MaxTokens => Math.Min(Info?.MaxLength ?? int.MaxValue, Model.Config.MaxPositions);

    /// <summary>
    /// The scalar head at each row's last real token. rows: token sequences (right-padded here) → [B].
    /// Differentiable when gradients are enabled (used by the trainer).
    /// </summary>
    public static Tensor ForwardLast(TransformerModel model, IReadOnlyList<int[]> rows)
    {
        int b = rows.Count, t = rows.Max(r => r.Length);
        var ids = new int[b * t];
        var mask = new bool[b * t];
        var last = new int[b];
        for (int i = 0; i < b; i++)
        {
            if (rows[i].Length == 0) throw new ArgumentException("An empty sequence cannot be scored.");
            Array.Copy(rows[i], 0, ids, i * t, rows[i].Length);
            for (int j = 0; j < rows[i].Length; j++) mask[i * t + j] = true;
            last[i] = i * t + rows[i].Length - 1;
        }
        var values = Ops.Reshape(model.Forward(ids, b, t, keyMask: mask), b * t, 1);
        return Ops.Reshape(Ops.IndexSelect(values, last), b);
    }
}
