using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;
using AlignSharp.Feedback;
using AlignSharp.Models;
using AlignSharp.Models.Checkpoints;
using AlignSharp.Text;
using AlignSharp.Training.RewardModeling;
using AlignSharp.Training.Rewards;
using AlignSharp.Training.Dpo;
using AlignSharp.Training.Rl;
using AlignSharp.Training.Sft;

namespace AlignSharp.Demo;

/// <summary>A point of the gold-versus-KL curve: a PPO checkpoint evaluated on held-out prompts.</summary>
public sealed record CurvePoint(int Step, double Kl, double Gold, double Proxy);

/// <summary>Everything the experiment measured; written as results.json and rendered into report.html.</summary>
public sealed record DemoResults(
    string Settings,
    int Seed,
    IReadOnlyDictionary<string, PolicyMetrics> Policies,
    RewardModelReport RewardModel,
    IReadOnlyDictionary<string, IReadOnlyList<CurvePoint>> GoldVersusKl,
    IReadOnlyDictionary<string, double> PhaseSeconds,
    int AnnotationRankings,
    IReadOnlyList<string> Unavailable);

/// <summary>
/// The built-in simulated-human RLHF experiment (<c>alignsharp demo</c>), one directory per run:
/// <code>
/// DIR/world/          corpus.jsonl, demonstrations.jsonl, prompts.jsonl (training), heldout_prompts.jsonl
/// DIR/init/           the randomly initialised model and its byte tokenizer
/// DIR/pretrain/       1. language-model pretraining run (SftTrainer on text records)
/// DIR/sft/            1. SFT run on demonstrations of mixed quality
/// DIR/annotation/     2. the annotation project (SQLite, as the web app uses it) and its rankings export
/// DIR/rm/             3. reward-model run trained on the exported rankings
/// DIR/ppo/, DIR/ppo_beta0/, DIR/dpo/   4. policy optimisation runs
/// DIR/results.json    5. evaluation on held-out prompts; DIR/report.html the whole experiment
/// </code>
/// </summary>
public sealed class DemoExperiment(DemoSettings settings, string outDir, int seed, TextWriter console)
{
    public const int PhaseCount = 8;
    private readonly Dictionary<string, double> _seconds = [];
    private readonly List<string> _unavailable = [];
    private int _phase;

    private string PathOf(params string[] parts) => Path.Combine([outDir, .. parts]);

    public DemoResults Run()
    {
        Directory.CreateDirectory(outDir);
        var total = Stopwatch.StartNew();
        console.WriteLine($"AlignSharp demo ({settings.Name} settings, seed {seed}) -> {outDir}");

        var (trainPrompts, heldOut) = World.SplitPrompts(seed);
        Phase("world", () => WriteWorld(trainPrompts, heldOut));
        Phase("pretrain", () => Pretrain());
        Phase("sft", () => Sft());
        int rankings = 0;
        Phase("annotate", () => rankings = Annotate(trainPrompts));
        Phase("reward model", () => TrainRewardModel());

        var pre = Pretrained.Load(PathOf("sft", "final"));
        var tokenizer = pre.RequireTokenizer("the demo");
        var rm = RewardModel.Load(PathOf("rm", "final"));
        RewardModelReport rmReport = null!;
        Phase("reward model check", () => rmReport = CheckRewardModel(pre.Model, rm, tokenizer, heldOut));

        var policyDirs = new Dictionary<string, string?>();
        Phase("policies", () =>
        {
            policyDirs["ppo"] = TrainPpo("ppo", settings.PpoKlCoef);
            policyDirs["ppo_beta0"] = TrainPpo("ppo_beta0", 0f);
            policyDirs["dpo"] = TrainDpo("dpo");
        });

        var policies = new Dictionary<string, PolicyMetrics>();
        var curves = new Dictionary<string, IReadOnlyList<CurvePoint>>();
        Phase("evaluate", () =>
        {
            var evalPrompts = heldOut.SelectMany(p => Enumerable.Repeat(p, settings.EvalSamplesPerPrompt)).ToArray();
            var evaluator = new PolicyEvaluator(pre.Model, rm, tokenizer, evalPrompts, settings.MaxNewTokens, Seeds.Mix(seed, 7), settings.Temperature);
            policies["sft"] = evaluator.Evaluate(pre.Model, isSft: true);
            policies["best_of_n"] = evaluator.EvaluateBestOfN(settings.BestOfN);
            foreach (var name in new[] { "ppo", "dpo", "ppo_beta0" })
                if (policyDirs.GetValueOrDefault(name) is string dir) policies[name] = evaluator.Evaluate(ModelIO.Load(dir));

            var curvePrompts = heldOut.SelectMany(p => Enumerable.Repeat(p, settings.CurveSamplesPerPrompt)).ToArray();
            var curveEvaluator = new PolicyEvaluator(pre.Model, rm, tokenizer, curvePrompts, settings.MaxNewTokens, Seeds.Mix(seed, 8), settings.Temperature);
            curveEvaluator.Evaluate(pre.Model, isSft: true);
            foreach (var name in new[] { "ppo", "ppo_beta0" })
                if (policyDirs.GetValueOrDefault(name) != null) curves[name] = Curve(curveEvaluator, PathOf(name));
        });

        var results = new DemoResults(settings.Name, seed, policies, rmReport, curves, _seconds, rankings, _unavailable);
        WriteResults(results);
        DemoReport.Write(PathOf("report.html"), outDir, results);
        console.WriteLine();
        console.WriteLine(ResultsTable(results));
        console.WriteLine($"reward model: gold agreement {rmReport.GoldAgreement:P1} on {rmReport.Pairs} held-out pairs " +
                          $"(one annotator: {rmReport.AnnotatorGoldAgreement:P1}; ceiling from the annotators' noise and bias: {rmReport.AgreementCeiling:P1})");
        foreach (var u in _unavailable) console.WriteLine($"not run: {u}");
        console.WriteLine($"done in {total.Elapsed.TotalSeconds:F0} s; results: {PathOf("results.json")}; report: {PathOf("report.html")}");
        return results;
    }

    private void Phase(string name, Action work)
    {
        _phase++;
        console.WriteLine($"[{_phase}/{PhaseCount}] {name}");
        var clock = Stopwatch.StartNew();
        work();
        _seconds[name] = Math.Round(clock.Elapsed.TotalSeconds, 2);
        console.WriteLine($"[{_phase}/{PhaseCount}] {name}: {clock.Elapsed.TotalSeconds:F1} s");
    }

    // ---------------------------------------------------------------- phase 0: the world and the model

    private void WriteWorld(IReadOnlyList<WorldPrompt> train, IReadOnlyList<WorldPrompt> heldOut)
    {
        Directory.CreateDirectory(PathOf("world"));
        WriteJsonl(PathOf("world", "corpus.jsonl"), Corpus.Documents(settings.CorpusDocuments, train, Seeds.Mix(seed, 1)).Select(d => new { text = d }));
        var rng = new Random(Seeds.Mix(seed, 2));
        WriteJsonl(PathOf("world", "demonstrations.jsonl"), Enumerable.Range(0, settings.Demonstrations).Select(_ =>
        {
            var p = World.DrawPrompt(rng, train);
            return new { prompt = p.Text, completion = ResponseWriter.Write(p, ResponseStyle.Demonstrations, rng) };
        }).ToList());
        WriteJsonl(PathOf("world", "prompts.jsonl"), train.Select(p => new { prompt = p.Text }));
        WriteJsonl(PathOf("world", "heldout_prompts.jsonl"), heldOut.Select(p => new { prompt = p.Text }));

        var config = ModelPresets.Gpt2(259, settings.HiddenSize, settings.Layers, settings.Heads, settings.MaxPositions) with
        {
            BosTokenId = ByteTokenizer.BosTokenId, EosTokenIds = [ByteTokenizer.EosTokenId], PadTokenId = ByteTokenizer.PadTokenId,
        };
        var model = TransformerModel.CreateRandom(config, Seeds.Mix(seed, 3));
        ModelIO.Save(model, PathOf("init"));
        AtomicFile.WriteText(PathOf("init", "tokenizer.json"), ByteTokenizerJson.TokenizerJson());
        AtomicFile.WriteText(PathOf("init", "tokenizer_config.json"), ByteTokenizerJson.TokenizerConfigJson());
        console.WriteLine($"  {World.AllPrompts.Count} prompts ({train.Count} for training, {heldOut.Count} held out), " +
                          $"{settings.CorpusDocuments} corpus documents, {settings.Demonstrations} demonstrations; model {model.ParameterCount:N0} parameters");
    }

    private static void WriteJsonl<T>(string path, IEnumerable<T> records) =>
        AtomicFile.WriteText(path, string.Concat(records.Select(r => JsonSerializer.Serialize(r) + "\n")));

    // ---------------------------------------------------------------- phase 1: pretraining and SFT

    private void Pretrain() => SftTrainer.Train(new SftOptions
    {
        Model = PathOf("init"), Data = PathOf("world", "corpus.jsonl"), Out = PathOf("pretrain"), LossOn = "all",
        MaxSteps = settings.PretrainSteps, BatchSize = settings.BatchSize, LearningRate = settings.PretrainLearningRate,
        LrScheduler = "cosine", WarmupSteps = 30, SaveSteps = 0, LoggingSteps = 25, MaxLength = settings.MaxPositions, Truncate = true, Seed = seed,
    }, console);

    private void Sft() => SftTrainer.Train(new SftOptions
    {
        Model = PathOf("pretrain", "final"), Data = PathOf("world", "demonstrations.jsonl"), Out = PathOf("sft"),
        MaxSteps = settings.SftSteps, BatchSize = settings.BatchSize, LearningRate = settings.SftLearningRate,
        LrScheduler = "cosine", WarmupSteps = 10, SaveSteps = 0, LoggingSteps = 20, MaxLength = settings.MaxPositions, Truncate = true, EvalSplit = 0.05, Seed = seed,
    }, console);

    // ---------------------------------------------------------------- phase 2: sample K responses, annotate

    private int Annotate(IReadOnlyList<WorldPrompt> trainPrompts)
    {
        var pre = Pretrained.Load(PathOf("sft", "final"));
        var tokenizer = pre.RequireTokenizer("sampling");
        var rng = new Random(Seeds.Mix(seed, 4));
        var prompts = Enumerable.Range(0, settings.AnnotationTasks).Select(_ => World.DrawPrompt(rng, trainPrompts)).ToArray();
        int k = settings.CompletionsPerTask;
        var slots = prompts.SelectMany(p => Enumerable.Repeat(p, k)).ToArray();
        var sampling = new SamplingOptions { MaxNewTokens = settings.MaxNewTokens, Temperature = settings.Temperature, Seed = Seeds.Mix(seed, 5) };
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var completions = Generator.GenerateInBatches(pre.Model, slots.Select(p => tokenizer.Encode(p.Text, addSpecialTokens: true)).ToArray(), sampling, tokenizer, 64);
        var tasks = prompts.Select((p, i) => new PromptCompletions(p.Text,
            completions.Skip(i * k).Take(k).Select(c => c.Text ?? "").ToArray(),
            completions.Skip(i * k).Take(k).Select(c => (string?)c.FinishReason).ToArray())).ToArray();

        string dir = PathOf("annotation");
        if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
        Directory.CreateDirectory(dir);
        string sampling_ = JsonSerializer.Serialize(new { model = PathOf("sft", "final"), k, temperature = settings.Temperature, max_new_tokens = settings.MaxNewTokens, seed = sampling.Seed });
        double samplingSeconds = clock.Elapsed.TotalSeconds;
        int submitted;
        var pool = SimulatedAnnotator.DefaultPool;
        using (var store = AnnotationStore.Create(Path.Combine(dir, "demo.annotations.db"), "demo", settings.Overlap, "model", sampling_, tasks))
        {
            submitted = SimulatedAnnotation.Run(store, pool, Seeds.Mix(seed, 6));
            using var w = new StreamWriter(Path.Combine(dir, "rankings.jsonl"));
            AnnotationExport.WriteRankings("demo", store.SubmittedRankings(), w);
        }
        console.WriteLine($"  {tasks.Length} tasks × {k} responses; {pool.Count} simulated annotators " +
                          $"({string.Join(", ", pool.Select(a => $"{a.Name} T={a.Temperature}{(a.Bias == AnnotatorBias.None ? "" : " " + a.Bias.ToString().ToLowerInvariant())}"))}) submitted {submitted} rankings " +
                          $"(sampling {samplingSeconds:F1} s, annotation store {clock.Elapsed.TotalSeconds - samplingSeconds:F1} s)");
        return submitted;
    }

    // ---------------------------------------------------------------- phase 3: reward model

    private void TrainRewardModel() => RewardModelTrainer.Train(new RewardModelOptions
    {
        Model = PathOf("sft", "final"), Data = PathOf("annotation", "rankings.jsonl"), Out = PathOf("rm"),
        Epochs = settings.RewardModelEpochs, BatchSize = 16, LearningRate = settings.RewardModelLearningRate,
        LrScheduler = "linear", WarmupSteps = 10, SaveSteps = 0, LoggingSteps = 20, MaxLength = settings.MaxPositions,
        EvalSplit = 0.05, CenterRewardsCoefficient = 0.01f, SkipBadRecords = true, Seed = seed,
    }, console);

    private RewardModelReport CheckRewardModel(TransformerModel sft, RewardModel rm, ITokenizer tokenizer, IReadOnlyList<WorldPrompt> heldOut)
    {
        int k = settings.CompletionsPerTask;
        var groupPrompts = heldOut.SelectMany(p => Enumerable.Repeat(p, settings.RewardModelEvalGroupsPerPrompt)).ToArray();
        var slots = groupPrompts.SelectMany(p => Enumerable.Repeat(p, k)).ToArray();
        var evaluator = new PolicyEvaluator(sft, rm, tokenizer, slots, settings.MaxNewTokens, Seeds.Mix(seed, 9), settings.Temperature);
        var completions = evaluator.Sample(sft, slots, Seeds.Mix(seed, 9));
        var texts = completions.Select(c => c.Text ?? "").ToArray();
        var scores = rm.ScoreSequences(texts.Select((t, i) => rm.Encode(Training.Data.ChatContent.FromText(slots[i].Text), t)).ToList(), 32);
        var groups = groupPrompts.Select((p, g) => (p, (IReadOnlyList<string>)texts.Skip(g * k).Take(k).ToArray(),
            (IReadOnlyList<double>)scores.Skip(g * k).Take(k).Select(s => (double)s).ToArray())).ToList();
        var report = RewardModelAnalysis.Analyse(groups, SimulatedAnnotator.DefaultPool);
        console.WriteLine($"  held-out gold agreement {report.GoldAgreement:P1} on {report.Pairs} pairs; one annotator {report.AnnotatorGoldAgreement:P1}; ceiling {report.AgreementCeiling:P1}");
        return report;
    }

    // ---------------------------------------------------------------- phase 4: policies

    /// <summary>
    /// PPO from the SFT model against the reward model (normalised scores), KL coefficient β against the SFT model;
    /// checkpoints every <see cref="DemoSettings.PpoCheckpointEvery"/> steps for the gold-versus-KL curve. Returns the
    /// final policy's directory.
    /// </summary>
    private string? TrainPpo(string name, float beta)
    {
        string dir = PathOf(name);
        if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
        var options = new PpoOptions
        {
            Policy = PathOf("sft", "final"), Prompts = PathOf("world", "prompts.jsonl"), RewardModel = PathOf("rm", "final"), Out = dir,
            KlCoef = beta, MaxSteps = settings.PpoSteps, BatchSize = settings.PpoBatchSize / settings.PpoMiniBatches,
            NumMiniBatches = settings.PpoMiniBatches, NumPpoEpochs = settings.PpoEpochs, LearningRate = settings.PpoLearningRate,
            LrScheduler = "constant", Temperature = settings.Temperature, MaxNewTokens = settings.MaxNewTokens, MaxPromptLength = 80,
            GenerationBatchSize = settings.PpoBatchSize, SaveSteps = settings.PpoCheckpointEvery, SaveTotalLimit = 0,
            SampleSteps = 5, LoggingSteps = 1, Seed = seed,
        };
        RlTrainer.Create(options).Run();
        return Path.Combine(dir, "final");
    }

    /// <summary>DPO (sigmoid loss with cDPO label smoothing, reference = the SFT model) on the annotators' exported rankings; returns the final policy's directory.</summary>
    private string? TrainDpo(string name)
    {
        string dir = PathOf(name);
        if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
        DpoTrainer.Train(new DpoOptions
        {
            Policy = PathOf("sft", "final"), Data = PathOf("annotation", "rankings.jsonl"), Out = dir, Beta = settings.DpoBeta, LabelSmoothing = settings.DpoLabelSmoothing,
            Epochs = settings.DpoEpochs, BatchSize = 16, LearningRate = settings.DpoLearningRate, LrScheduler = "linear", WarmupSteps = 10,
            SaveSteps = 0, LoggingSteps = 20, MaxLength = settings.MaxPositions, Truncate = true, SkipBadRecords = true, EvalSplit = 0.05, Seed = seed,
        }, console);
        return Path.Combine(dir, "final");
    }

    /// <summary>The gold-versus-KL curve of a PPO run: SFT (KL 0), then every checkpoint, then the final policy.</summary>
    private IReadOnlyList<CurvePoint> Curve(PolicyEvaluator evaluator, string runDir)
    {
        var points = new List<CurvePoint>();
        var sft = evaluator.Evaluate(ModelIO.Load(PathOf("sft", "final")), isSft: true);
        points.Add(new CurvePoint(0, 0, sft.GoldRewardMean, sft.ProxyScoreMean));
        var checkpoints = Directory.Exists(Path.Combine(runDir, "checkpoints"))
            ? Directory.GetDirectories(Path.Combine(runDir, "checkpoints"), "step-*").OrderBy(d => d, StringComparer.Ordinal).ToArray()
            : [];
        foreach (var dir in checkpoints)
        {
            int step = int.Parse(Path.GetFileName(dir)["step-".Length..], System.Globalization.CultureInfo.InvariantCulture);
            var m = evaluator.Evaluate(ModelIO.Load(Path.Combine(dir, "policy")));
            points.Add(new CurvePoint(step, m.KlFromSft, m.GoldRewardMean, m.ProxyScoreMean));
        }
        return points;
    }

    // ---------------------------------------------------------------- results

    public static readonly IReadOnlyList<string> PolicyOrder = ["sft", "best_of_n", "ppo", "dpo", "ppo_beta0"];

    private void WriteResults(DemoResults r)
    {
        var policies = new JsonObject();
        foreach (var name in PolicyOrder.Where(r.Policies.ContainsKey))
        {
            var m = r.Policies[name];
            policies[name] = new JsonObject
            {
                ["gold_reward_mean"] = Round(m.GoldRewardMean),
                ["gold_reward_ci95"] = Round(m.GoldRewardCi95),
                ["gold_win_rate_vs_sft"] = Round(m.GoldWinRateVsSft),
                ["proxy_score_mean"] = Round(m.ProxyScoreMean),
                ["kl_from_sft"] = Round(m.KlFromSft),
                ["fluency"] = Round(m.Fluency),
                ["distinct_2"] = Round(m.Distinct2),
            };
        }
        var root = new JsonObject
        {
            ["policies"] = policies,
            ["reward_model_gold_agreement"] = Round(r.RewardModel.GoldAgreement),
            ["reward_model_agreement_ceiling"] = Round(r.RewardModel.AgreementCeiling),
            ["annotator_gold_agreement"] = Round(r.RewardModel.AnnotatorGoldAgreement),
            ["reward_model_eval_pairs"] = r.RewardModel.Pairs,
            ["reward_model_calibration"] = new JsonArray(r.RewardModel.Calibration.Select(b => (JsonNode)new JsonObject
            {
                ["low"] = b.Low, ["high"] = b.High, ["pairs"] = b.Pairs, ["mean_predicted"] = Round(b.MeanPredicted),
                ["gold_agreement"] = Round(b.GoldAgreement), ["annotator_preference"] = Round(b.AnnotatorPreference),
            }).ToArray()),
            ["gold_vs_kl"] = new JsonObject(r.GoldVersusKl.Select(kv => new KeyValuePair<string, JsonNode?>(kv.Key,
                new JsonArray(kv.Value.Select(p => (JsonNode)new JsonObject { ["step"] = p.Step, ["kl"] = Round(p.Kl), ["gold"] = Round(p.Gold), ["proxy"] = Round(p.Proxy) }).ToArray())))),
            ["annotation_rankings"] = r.AnnotationRankings,
            ["settings"] = r.Settings,
            ["seed"] = r.Seed,
            ["phase_seconds"] = new JsonObject(r.PhaseSeconds.Select(kv => new KeyValuePair<string, JsonNode?>(kv.Key, kv.Value))),
            ["not_run"] = new JsonArray(r.Unavailable.Select(u => (JsonNode)u).ToArray()),
        };
        AtomicFile.WriteText(PathOf("results.json"), root.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");

        // Sample responses per policy, for the report and for reading.
        var samples = new JsonObject();
        foreach (var name in PolicyOrder.Where(r.Policies.ContainsKey))
            samples[name] = new JsonArray(r.Policies[name].Responses.Select(x => (JsonNode)new JsonObject
            {
                ["prompt"] = x.Prompt.Question, ["response"] = x.Text, ["gold"] = Round(x.Gold), ["proxy"] = Round(x.Proxy), ["kl"] = Round(x.Kl), ["grammatical"] = x.Grammatical,
            }).ToArray());
        AtomicFile.WriteText(PathOf("samples.json"), samples.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
    }

    private static JsonNode? Round(double x) => double.IsFinite(x) ? JsonValue.Create(Math.Round(x, 4)) : null;

    public static string ResultsTable(DemoResults r)
    {
        var sb = new System.Text.StringBuilder();
        sb.AppendLine($"{"policy",-10} {"gold",7} {"±95%",6} {"win vs sft",10} {"proxy",7} {"KL",7} {"fluency",8} {"distinct-2",10}");
        foreach (var name in PolicyOrder.Where(r.Policies.ContainsKey))
        {
            var m = r.Policies[name];
            sb.AppendLine(string.Create(System.Globalization.CultureInfo.InvariantCulture,
                $"{name,-10} {m.GoldRewardMean,7:F3} {m.GoldRewardCi95,6:F3} {m.GoldWinRateVsSft,10:P1} {m.ProxyScoreMean,7:F3} {m.KlFromSft,7:F3} {m.Fluency,8:P1} {m.Distinct2,10:F3}"));
        }
        return sb.ToString().TrimEnd();
    }
}
