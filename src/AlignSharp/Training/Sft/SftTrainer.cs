using AlignSharp.Text.Jinja;
using AlignSharp.Engine;
using AlignSharp.Models;
using AlignSharp.Models.Checkpoints;
using AlignSharp.Models.Lora;
using AlignSharp.Text;
using AlignSharp.Training.Data;
using AlignSharp.Training.Runs;

namespace AlignSharp.Training.Sft;

/// <summary>Supervised fine-tuning options (defaults close to TRL's SFTConfig, scaled for small CPU models).</summary>
[TrlName("model_name_or_path", nameof(Model))]
[TrlName("max_seq_length", nameof(MaxLength))]
public sealed record SftOptions : TextDataOptions
{
    public SftOptions() => LearningRate = 2e-5f;

    [Option("Model to fine-tune: a Hugging Face directory (config.json + safetensors + tokenizer.json).", Required = true)]
    public string? Model { get; init; }

    [Option("Which tokens carry loss: completion (assistant turns; prompt masked), final_turn, or all.")]
    public string LossOn { get; init; } = "completion";

    [Option("Pack short examples into rows of --max-length tokens; each attends only to itself, its positions counting from 0 (as TRL's padding-free packing).")]
    public bool Packing { get; init; }

    [Option("NEFTune (Jain et al. 2023): uniform noise in ±α/√(L·D) added to the token embeddings of training passes, L the padded length and D the hidden size (TRL's neftune_noise_alpha; 0 = off; the paper uses 5).")]
    public float NeftuneNoiseAlpha { get; init; }

    public override void Validate()
    {
        base.Validate();
        if (string.IsNullOrWhiteSpace(Model)) throw new UserInputException("--model (the model directory to fine-tune) is required.");
        if (LossOn is not ("completion" or "final_turn" or "all")) throw new UserInputException($"--loss-on must be completion, final_turn or all, not '{LossOn}'.");
        if (!(NeftuneNoiseAlpha >= 0) || float.IsInfinity(NeftuneNoiseAlpha)) throw new UserInputException($"--neftune-noise-alpha must be ≥ 0, got {NeftuneNoiseAlpha}.");
    }

    public AlignSharp.Training.Data.LossOn Loss => LossOn switch
    {
        "all" => AlignSharp.Training.Data.LossOn.AllTokens,
        "final_turn" => AlignSharp.Training.Data.LossOn.FinalTurn,
        _ => AlignSharp.Training.Data.LossOn.Completion,
    };
}

/// <summary>
/// Next-token cross-entropy on the tokens that carry labels. A micro-batch's loss is the SUM over its label
/// tokens; the loop divides by the step's total, so every label token weighs the same however the data is
/// split into micro-batches.
/// </summary>
public sealed class SftTask : ISupervisedTask
{
    private readonly TransformerModel _model;
    private readonly ITokenizer _tokenizer;
    private readonly List<SftBatch> _train;
    private readonly List<SftBatch> _eval;

    public SftTask(TransformerModel model, ITokenizer tokenizer, string sourceDir, IReadOnlyList<SftSequence> train, IReadOnlyList<SftSequence> eval, int batchSize, int seed,
        LoraAdapter? adapter = null, bool merge = false)
    {
        _model = model;
        _tokenizer = tokenizer;
        Action<string> extras = dir => { if (Template is not null) ModelChatTemplate.Write(dir, Template.Source); };
        Trainable = Runs.Trainable.For(model, adapter, sourceDir, merge, extras);
        int pad = TokenSequences.PadId(tokenizer);
        var batching = new BatchingOptions { BatchSize = batchSize, Seed = seed };
        _train = SftBatch.Epoch(train, batching, 0, pad).ToList();
        _eval = eval.Count == 0 ? [] : SftBatch.Epoch(eval, batching with { Shuffle = false }, 0, pad).ToList();
    }

    public int MicroBatches => _train.Count;
    public ITrainable Trainable { get; }

    public double Weight(int index) => LabelTokens(_train[index]);

    private static int LabelTokens(SftBatch b) => b.Labels.Count(l => l != SftSequence.IgnoreIndex);

    public MicroBatchResult Forward(int index, Random rng)
    {
        // The noise's seed comes first from the micro-batch's stream, and only with NEFTune on (LoRA dropout draws the same masks without it).
        _model.EmbeddingNoise = NeftuneNoiseAlpha > 0 ? new EmbeddingNoise(NeftuneNoiseAlpha, rng.Next()) : null;
        if (_model.Adapter is { } adapter) adapter.DropoutRng = rng;
        try { return LossSum(_train[index]); }
        finally { _model.EmbeddingNoise = null; }
    }

    /// <summary>NEFTune's α for training passes (0 = off).</summary>
    public float NeftuneNoiseAlpha { get; init; }

    /// <summary>
    /// Σ over label tokens of −log p(label | prefix), and (as TRL's SFTTrainer logs mean_token_accuracy) the number
    /// of label tokens that are the logits' argmax (the first maximum on ties); the loop divides both by the label tokens.
    /// </summary>
    private MicroBatchResult LossSum(SftBatch b)
    {
        int n = b.BatchSize * b.SeqLen, v = _model.Config.VocabSize;
        var hidden = _model.Hidden(b.InputIds, b.BatchSize, b.SeqLen, b.Positions, b.AttentionMask, segmentStarts: b.SegmentStarts);
        var shifted = ShiftedTargets(b);
        var positions = new List<int>();
        var targets = new List<int>();
        for (int i = 0; i < n; i++)
            if (shifted[i] != SftSequence.IgnoreIndex) { positions.Add(i); targets.Add(shifted[i]); }
        int count = positions.Count, correct = 0;
        // Only the label positions reach the LM head, in chunks of rows (TokenScoring).
        var labelRows = Ops.IndexSelect(Ops.Reshape(hidden, n, hidden.Dim(-1)), positions.ToArray());
        var (logProbs, _) = TokenScoring.LogProbs(_model, labelRows, targets.ToArray(), visit: (first, logits) =>
        {
            for (int i = 0; i < logits.Length / v; i++)
            {
                var row = logits.Slice(i * v, v);
                int best = 0;
                for (int j = 1; j < v; j++) if (row[j] > row[best]) best = j;
                if (best == targets[first + i]) correct++;
            }
        });
        var mean = count == 0 ? Ops.MulScalar(Ops.Sum(Ops.Reshape(hidden, n * hidden.Dim(-1))), 0f) : Ops.Neg(Ops.Sum(logProbs));
        var metrics = new Dictionary<string, double> { ["mean_token_accuracy"] = correct };
        // output_router_logits (transformers adds coef · the routers' load-balancing loss to each forward's loss): here
        // weighted by the micro-batch's label tokens, as its cross-entropy is, so one micro-batch a step is TRL's loss.
        mean = RouterBalance.AddTo(mean, _model.RouterAuxLoss(), _model, count, metrics);
        long tokens = b.AttentionMask.Count(m => m);
        return new MicroBatchResult(mean, metrics, tokens);
    }

    /// <summary>Labels are aligned with the ids (HF convention): position t predicts Labels[t + 1].</summary>
    private static int[] ShiftedTargets(SftBatch b)
    {
        var targets = new int[b.BatchSize * b.SeqLen];
        for (int r = 0; r < b.BatchSize; r++)
            for (int t = 0; t < b.SeqLen; t++)
                targets[r * b.SeqLen + t] = t + 1 < b.SeqLen ? b.Labels[r * b.SeqLen + t + 1] : SftSequence.IgnoreIndex;
        return targets;
    }

    public Dictionary<string, double>? Evaluate()
    {
        if (_eval.Count == 0) return null;
        if (_model.Adapter is { } adapter) adapter.DropoutRng = null;
        double sum = 0, count = 0, correct = 0;
        foreach (var b in _eval)
        {
            using var scope = TensorScope.Begin();
            var r = LossSum(b);
            sum += r.LossSum.Item();
            correct += r.MetricSums["mean_token_accuracy"];
            count += LabelTokens(b);
        }
        double loss = count > 0 ? sum / count : 0;
        return new Dictionary<string, double> { ["loss"] = loss, ["perplexity"] = Math.Exp(loss), ["tokens"] = count, ["mean_token_accuracy"] = count > 0 ? correct / count : 0 };
    }

    /// <summary>The chat template the data was formatted with, written into saved models (their tokenizer_config.json and chat_template.jinja).</summary>
    public ChatTemplate? Template { get; init; }
}

/// <summary>`alignsharp sft`: load data and model, build the task, run the shared loop.</summary>
public static class SftTrainer
{
    public static Dictionary<string, object?> Train(SftOptions o, TextWriter? log = null)
    {
        log ??= Console.Error;
        var pre = o.LoadTrained(o.Model!, addsRouterAuxLoss: true);
        o = o with { MaxLength = o.MaxLengthFor(pre.Model.Config.MaxPositions, log) };
        var tokenizer = pre.RequireTokenizer("SFT");
        var template = ChatTemplate.Resolve(o.ChatTemplate, o.Model, o.ChatTemplateKwargs);
        var load = new DataLoadOptions { ExpectedKind = DatasetKind.Sft, SkipBadRecords = o.SkipBadRecords };
        var data = DatasetLoader.LoadSft(o.Data!, load);
        if (data.Warning != null) log.WriteLine($"warning: {data.Warning}");
        if (template.FallbackWarning(data.Records.Any(r => r.Prompt?.IsConversational == true || r.Completion.IsConversational)) is { } fallback) log.WriteLine($"warning: {fallback}");
        IReadOnlyList<SftExample> train = data.Records, eval = [];
        if (o.EvalData != null)
        {
            var e = DatasetLoader.LoadSft(o.EvalData, load);
            if (e.Warning != null) log.WriteLine($"warning: {e.Warning}");
            eval = e.Records;
        }
        else if (o.EvalSplit > 0) (train, eval) = TrainEvalSplit.Split(train, o.EvalSplit, o.Seed);

        var encoding = new SftEncodingOptions { Truncation = o.Truncation, Loss = o.Loss, SkipBadRecords = o.SkipBadRecords };
        var trainSeqs = SftEncoder.Encode(train, tokenizer, template, encoding);
        if (trainSeqs.Warning != null) log.WriteLine($"warning: {trainSeqs.Warning}");
        if (trainSeqs.Records.Where(s => s.MaskedEarlierTurns > 0).ToList() is { Count: > 0 } masked)
            log.WriteLine($"note: {masked.Count} conversation{(masked.Count == 1 ? "" : "s")} (e.g. {masked[0].Sources[0]}) keep {masked.Sum(s => s.MaskedEarlierTurns)} earlier assistant turn(s) " +
                "without loss: the chat template renders them differently once the conversation goes on (Qwen3 drops earlier turns' reasoning; a template that " +
                "ends the conversation with EOS only without a generation prompt, as Phi-3's), so their tokens in context are unknown. Only the final turn of those " +
                "is trained (docs/data-formats.md); {% generation %} tags are not read.");
        var evalSeqs = SftEncoder.Encode(eval, tokenizer, template, encoding);
        IReadOnlyList<SftSequence> rows = o.Packing ? SftPacking.Pack(trainSeqs.Records, o.MaxLength) : trainSeqs.Records;
        if (rows.Count == 0) throw new UserInputException($"{o.Data}: no usable training examples.");
        log.WriteLine($"sft: {rows.Count} training rows, {evalSeqs.Records.Count} eval examples, model {pre.Model.ParameterCount:N0} parameters");

        var task = new SftTask(pre.Model, tokenizer, o.Model!, rows, evalSeqs.Records, o.BatchSize, o.Seed, o.StartingAdapter(pre.Model, o.Model), o.Merge)
        {
            Template = template,
            NeftuneNoiseAlpha = o.NeftuneNoiseAlpha,
        };
        return new TrainingLoop(o, task, "sft", log).Run();
    }
}
