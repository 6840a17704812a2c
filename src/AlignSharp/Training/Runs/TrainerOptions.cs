using AlignSharp.Engine;
using AlignSharp.Engine.Optim;
using AlignSharp.Models;
using AlignSharp.Models.Checkpoints;
using AlignSharp.Models.Lora;
using AlignSharp.Text;

namespace AlignSharp.Training.Runs;

/// <summary>
/// Options every trainer shares: the run directory, the length of training, the optimiser and schedule,
/// logging, evaluation and checkpoints. Defaults follow Hugging Face TRL/transformers where they make
/// sense on a CPU. Trainers derive their own records from this one.
/// </summary>
[TrlName("output_dir", nameof(Out))]
[TrlName("per_device_train_batch_size", nameof(BatchSize))]
[TrlName("num_train_epochs", nameof(Epochs))]
[TrlName("lr_scheduler_type", nameof(LrScheduler))]
[TrlName("resume_from_checkpoint", nameof(Resume))]
[TrlName("overwrite_output_dir", nameof(Overwrite))]
public abstract record TrainerOptions
{
    [Option("Run directory: resolved config, metrics.jsonl, checkpoints, summary.json, and the final model in DIR/final.", Required = true, SafeToChangeOnResume = true)]
    public string? Out { get; init; }

    [Option("Stop after this many steps: optimizer steps, or for ppo/grpo/rloo rollout steps (0, or -1 as in TRL, = run --epochs over the data). May grow when resuming.", SafeToChangeOnResume = true)]
    public int MaxSteps { get; init; }

    [Option("Passes over the training data when --max-steps is 0.")]
    public double Epochs { get; init; } = 1;

    [Option("Random seed: data order, dropout, initialisation of new heads, sampling.")]
    public int Seed { get; init; }

    [Option("Peak learning rate (AdamW).")]
    public float LearningRate { get; init; } = 5e-5f;

    [Option("Learning-rate schedule, as transformers names them: constant (no warmup), constant_with_warmup, linear or cosine (after the warmup).")]
    public string LrScheduler { get; init; } = "linear";

    [Option("Steps of linear warmup from 0 to the peak learning rate.")]
    public int WarmupSteps { get; init; }

    [Option("Warmup as a fraction of the optimizer steps (used when --warmup-steps is 0; TRL's warmup_ratio).")]
    public double WarmupRatio { get; init; }

    /// <summary>The warmup length of a run of <paramref name="totalUpdates"/> optimizer steps: --warmup-steps, else --warmup-ratio.</summary>
    public int WarmupFor(int totalUpdates) => WarmupSteps > 0 ? WarmupSteps : (int)Math.Ceiling(WarmupRatio * totalUpdates);

    [Option("Decoupled weight decay (AdamW); biases and norm weights are never decayed.")]
    public float WeightDecay { get; init; }

    [Option("AdamW β1.")]
    public float AdamBeta1 { get; init; } = 0.9f;

    [Option("AdamW β2.")]
    public float AdamBeta2 { get; init; } = 0.999f;

    [Option("AdamW ε.")]
    public float AdamEpsilon { get; init; } = 1e-8f;

    [Option("Clip the global gradient norm to this value (0 = no clipping).")]
    public float MaxGradNorm { get; init; } = 1f;

    [Option("Examples per micro-batch.")]
    public int BatchSize { get; init; } = 8;

    [Option("Micro-batches whose gradients are summed before each optimizer step.")]
    public int GradientAccumulationSteps { get; init; } = 1;

    [Option("Write metrics every N optimizer steps.", SafeToChangeOnResume = true)]
    public int LoggingSteps { get; init; } = 10;

    [Option("Save a checkpoint every N optimizer steps (0 = only the final model, or a checkpoint when interrupted).", SafeToChangeOnResume = true)]
    public int SaveSteps { get; init; } = 500;

    [Option("Keep at most this many checkpoints (oldest deleted first; 0 = keep all).", SafeToChangeOnResume = true)]
    public int SaveTotalLimit { get; init; } = DefaultSaveTotalLimit;
    private const int DefaultSaveTotalLimit = 2;

    [Option("Resume from the newest checkpoint in --out (or from the checkpoint directory given); training continues bit for bit. Options that change the training must match the checkpoint's.", SafeToChangeOnResume = true)]
    public string? Resume { get; init => field = string.Equals(value, "false", StringComparison.OrdinalIgnoreCase) ? null : value; }   // resume_from_checkpoint: false (or Python's False), as in transformers

    [Option("Kernel threads (0 = all cores).", SafeToChangeOnResume = true)]
    public int Threads { get; init; }

    [Option("Data-parallel runs (mpirun, srun): gradients are all-reduced in buckets of this many MiB, each started as soon as the backward pass has finished its gradients, overlapping the rest of the pass; 0 = one blocking all-reduce after the backward pass. Nothing to reduce in a single process.", SafeToChangeOnResume = true)]
    public double AllreduceBucketMb { get; init; } = DataParallelReducer.DefaultBucketMb;

    [Option("Storage dtype of the final model(s): f32 or bf16 (checkpoints are always f32, so resuming is exact).", SafeToChangeOnResume = true)]
    public string SaveDtype { get; init; } = "f32";

    [Option("Tracker besides metrics.jsonl, which is always written: jsonl (no other), tensorboard (event files in DIR/runs/) or none (no other).")]
    public string ReportTo { get; init; } = "jsonl";

    [Option("Replace a run already in --out (its checkpoints, metrics, final model and summary are deleted first).", SafeToChangeOnResume = true)]
    public bool Overwrite { get; init; }

    [Option("TRL's switch for LoRA (use_peft): true trains a new adapter of rank 16, TRL's default lora_r, unless --lora-r gives the rank (or continue --adapter); false trains all weights, so it refuses --lora-r and --adapter (a TRL config's lora_r beside use_peft false is unused there). Unset: --lora-r alone decides.")]
    public bool? UsePeft { get; init; }

    /// <summary>TRL's default lora_r, the rank --use-peft starts a new adapter with.</summary>
    public const int TrlLoraR = 16;

    [Option("LoRA rank: train low-rank adapters on the frozen model instead of all its weights (0 = off, full-parameter training).")]
    public int LoraR
    {
        get => _loraR == 0 && UsePeft == true && Adapter == null ? TrlLoraR : _loraR;
        init => _loraR = value;
    }

    private readonly int _loraR;

    [Option("LoRA alpha: adapters are scaled by alpha/r (alpha/√r with --use-rslora); 0 = 2×r (TRL's example ratio, lora_alpha 32 for r 16).")]
    public double LoraAlpha { get; init; }

    [Option("Dropout on the LoRA adapters' input while training (TRL's default 0.05).")]
    public double LoraDropout { get; init; } = DefaultLoraDropout;

    private const double DefaultLoraDropout = 0.05;

    [Option("Modules to adapt: comma-separated checkpoint module names (q_proj,v_proj; GPT-2's c_attn) or all-linear (every linear layer of the blocks).", CommaList = true)]
    public string LoraTargetModules { get; init; } = LoraConfig.AllLinear;

    [Option("Scale LoRA adapters by alpha/√r (rank-stabilised LoRA) instead of alpha/r.")]
    public bool UseRslora { get; init; }

    [Option("DoRA (Liu et al. 2024, PEFT's use_dora): each adapted layer also learns a magnitude per output row, m ⊙ (W + ΔW) / ‖W + ΔW‖.")]
    public bool UseDora { get; init; }

    [Option("Continue training this LoRA adapter (a PEFT directory, e.g. an sft run's final/): its adapter_config.json sets r, alpha, dropout and target modules, so --lora-r stays 0.")]
    public string? Adapter { get; init; }

    [Option("With --lora-r or --adapter: write the merged model (base + adapters) to DIR/final instead of the adapter.")]
    public bool Merge { get; init; }

    [Option("Recompute each transformer block in the backward pass instead of keeping its activations: much less memory for about one more forward pass; the gradients are unchanged.", SafeToChangeOnResume = true)]
    public bool GradientCheckpointing { get; init; }

    [Option("Storage of the frozen weights (a LoRA run's base model, the DPO/KTO/RL reference, the reward model): bf16 or fp32. Default: as the checkpoint stores them (a bf16 checkpoint stays bf16). Trainable weights, gradients and optimizer state are always fp32.")]
    public string? FrozenDtype { get; init; }

    [Option("Precision of the products with frozen bf16 weights (a LoRA run's base, the DPO/KTO/RL reference, the reward model), named as PyTorch names float32 matmul precision: highest (their float32 inputs used exactly) or medium (rounded to bf16, products accumulated in float32: forward, backward and scoring alike; 1.6-2x the throughput of those products on CPUs with AVX512-BF16, vdpbf16ps; elsewhere the same rounded inputs multiplied in float32, summed in another order, no faster). medium needs a LoRA run (--lora-r or --adapter) and keeps the frozen weights in bf16 whatever the checkpoint stores; trainable weights, gradients and optimizer state stay float32.")]
    public string MatmulPrecision { get; init; } = "highest";

    /// <summary>The scope --matmul-precision asks for (<see cref="Ops.Bf16Products"/> for medium; nothing for highest): every
    /// trainer's entry opens it, with its threads, for the whole run on the thread that trains, so that precomputed
    /// reference log-probabilities, scoring, generation and the update all see it. A caller of a trainer's parts (bench
    /// rl: <c>RolloutCollector</c> and <c>RlTrainer.TrainOn</c>) opens it around all of them, never around some.</summary>
    public Ops.ActivationRounding OpenMatmulPrecision() => MatmulPrecision == "medium" ? Ops.Bf16Products() : default;

    /// <summary>Whether the run holds frozen weights that --frozen-dtype applies to; trainers with a reference or reward model override this.</summary>
    protected virtual bool HasFrozenWeights => TrainsAdapter;

    /// <summary>Whether the frozen weights loaded from <paramref name="modelDirectory"/> are kept in bf16: --frozen-dtype, else
    /// with --matmul-precision medium (whose products take bf16 weights), else as stored.</summary>
    public bool FrozenInBf16(string modelDirectory) => FrozenDtype switch
    {
        "bf16" => true,
        "fp32" => false,
        _ => MatmulPrecision == "medium" || ModelIO.StoresBf16(modelDirectory),
    };

    /// <summary>Loads a model whose weights stay frozen (reference, reward model), in the storage <see cref="FrozenInBf16"/> says.</summary>
    public TransformerModel LoadFrozen(string modelDirectory, HeadKind? head = null, int seed = 0)
        => ModelIO.Load(modelDirectory, head, seed, bf16Matrices: FrozenInBf16(modelDirectory));

    /// <summary>
    /// Loads the model a run trains (an adapter directory merged, <see cref="Pretrained.LoadForTraining"/>): with LoRA its
    /// base is frozen, in the storage --frozen-dtype says; --gradient-checkpointing applies to it. A mixture-of-experts
    /// config that asks for the routers' load-balancing loss (output_router_logits) is refused unless the trainer adds it
    /// (<paramref name="addsRouterAuxLoss"/>: sft, the DPO family and kto, as TRL's trainers do).
    /// </summary>
    public Pretrained LoadTrained(string modelDirectory, HeadKind? head = null, bool addsRouterAuxLoss = false)
    {
        var pre = Pretrained.LoadForTraining(modelDirectory, head, Seed, bf16Matrices: TrainsAdapter && FrozenInBf16(modelDirectory));
        if (pre.Model.Config.Moe?.RouterAuxLossCoef != null && !addsRouterAuxLoss)
            throw new UserInputException($"model config '{Path.Combine(modelDirectory, "config.json")}': field 'output_router_logits' is true, asking for the routers' " +
                "load-balancing loss, which this trainer does not add (sft, dpo, online-dpo and kto do); set it to false to train without it");
        pre.Model.GradientCheckpointing = GradientCheckpointing;
        return pre;
    }

    /// <summary>True when the run trains a LoRA adapter (--lora-r or --adapter).</summary>
    public bool TrainsAdapter => LoraR > 0 || Adapter != null;

    /// <summary>
    /// The adapter a LoRA run starts from: --adapter loaded for <paramref name="model"/>, or a new one of --lora-*
    /// (PEFT initialisation from --seed); null for full-parameter training.
    /// </summary>
    public LoraAdapter? StartingAdapter(TransformerModel model, string? baseModel, string taskType = "CAUSAL_LM")
    {
        if (Adapter != null)
        {
            if (!Directory.Exists(Adapter)) throw new UserInputException($"--adapter: directory '{Adapter}' does not exist.");
            var adapter = LoraAdapter.Load(Adapter, model);
            // PEFT's MiCA computes as plain LoRA but trains lora_A alone (MiCALinearVariant freezes lora_B).
            if (adapter.Config.InitLoraWeights is string init && init.Equals("mica", StringComparison.OrdinalIgnoreCase))
                throw new UserInputException($"--adapter: {Path.Combine(Adapter, LoraConfig.FileName)}: field \"init_lora_weights\" is \"{init}\": PEFT trains " +
                    "only lora_A of a MiCA adapter (lora_B stays frozen), which training here does not do, so it cannot be continued; it loads for " +
                    "inference (logprobs, generate, score, eval, merge).");
            return adapter;
        }
        return LoraConfigFor(baseModel, taskType) is { } config ? LoraAdapter.Create(model, config, Seed) : null;
    }

    /// <summary>The adapter settings of --lora-*, or null when --lora-r is 0.</summary>
    public LoraConfig? LoraConfigFor(string? baseModel, string taskType = "CAUSAL_LM")
    {
        if (LoraR <= 0) return null;
        var config = new LoraConfig(
            R: LoraR,
            Alpha: LoraAlpha > 0 ? LoraAlpha : 2.0 * LoraR,
            Dropout: LoraDropout,
            TargetModules: LoraTargetModules.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries),
            UseRslora: UseRslora,
            BaseModel: baseModel) { UseDora = UseDora };
        return taskType == LoraConfig.SequenceClassification ? config.ForSequenceClassification() : config;
    }

    public SafetensorsDtype SaveDtypeValue => SaveDtype == "bf16" ? SafetensorsDtype.BF16 : SafetensorsDtype.F32;


    /// <summary>Checks every option; throws <see cref="UserInputException"/> naming the flag.</summary>
    public virtual void Validate()
    {
        RejectNonFinite(this);
        if (string.IsNullOrWhiteSpace(Out)) throw new UserInputException("--out (the run directory) is required.");
        if (Resume != null && Overwrite) throw new UserInputException("--resume and --overwrite contradict each other: --resume continues the run in --out, --overwrite replaces it.");
        if (MaxSteps < -1) throw new UserInputException("--max-steps must be ≥ 0 (0 or -1, TRL's default, run --epochs over the data).");
        if (!(Epochs > 0)) throw new UserInputException("--epochs must be > 0.");
        if (!(LearningRate >= 0)) throw new UserInputException("--learning-rate must be ≥ 0.");
        if (!LrSchedules.Names.Contains(LrScheduler)) throw new UserInputException($"--lr-scheduler must be {string.Join(", ", LrSchedules.Names)}, not '{LrScheduler}'.");
        if (LrScheduler == "constant" && (WarmupSteps > 0 || WarmupRatio > 0))
            throw new UserInputException("--lr-scheduler constant has no warmup (transformers' constant schedule ignores --warmup-steps and --warmup-ratio); use constant_with_warmup to warm up.");
        if (WarmupSteps < 0) throw new UserInputException("--warmup-steps must be ≥ 0.");
        if (!(WarmupRatio >= 0 && WarmupRatio <= 1)) throw new UserInputException("--warmup-ratio must be in [0, 1].");
        if (WeightDecay < 0) throw new UserInputException("--weight-decay must be ≥ 0.");
        if (!(AdamBeta1 >= 0 && AdamBeta1 < 1)) throw new UserInputException("--adam-beta1 must be in [0, 1).");
        if (!(AdamBeta2 >= 0 && AdamBeta2 < 1)) throw new UserInputException("--adam-beta2 must be in [0, 1).");
        if (!(AdamEpsilon > 0)) throw new UserInputException("--adam-epsilon must be > 0.");
        if (MaxGradNorm < 0) throw new UserInputException("--max-grad-norm must be ≥ 0.");
        if (BatchSize < 1) throw new UserInputException("--batch-size must be ≥ 1.");
        if (GradientAccumulationSteps < 1) throw new UserInputException("--gradient-accumulation-steps must be ≥ 1.");
        if (LoggingSteps < 1) throw new UserInputException("--logging-steps must be ≥ 1.");
        if (SaveSteps < 0 || SaveTotalLimit < 0) throw new UserInputException("--save-steps and --save-total-limit must be ≥ 0.");
        if (SaveSteps == 0 && SaveTotalLimit != DefaultSaveTotalLimit)
            throw new UserInputException("--save-total-limit keeps the newest checkpoints, but --save-steps 0 writes none.");
        if (Threads < 0) throw new UserInputException("--threads must be ≥ 0.");
        if (!(AllreduceBucketMb >= 0 && AllreduceBucketMb <= DataParallelReducer.MaxBucketFloats * 4.0 / (1 << 20)))
            throw new UserInputException($"--allreduce-bucket-mb must be in [0, {DataParallelReducer.MaxBucketFloats * 4L >> 20}] (0 = one blocking all-reduce after the backward pass).");
        MetricsSinks.Validate(ReportTo);
        if (SaveDtype is not ("f32" or "bf16")) throw new UserInputException($"--save-dtype must be f32 or bf16, not '{SaveDtype}'.");
        ValidateLora();
        if (FrozenDtype is not (null or "bf16" or "fp32")) throw new UserInputException($"--frozen-dtype must be bf16 or fp32, not '{FrozenDtype}'.");
        if (FrozenDtype != null && !HasFrozenWeights)
            throw new UserInputException("--frozen-dtype: this run has no frozen weights (full-parameter training of a model without a reference); it applies to a LoRA run's base and to references and reward models.");
        ValidateMatmulPrecision();
    }

    /// <summary>--matmul-precision: its value, and medium only where every product of the policy's frozen weights and of
    /// its copies takes the same inputs. A full-parameter policy trains float32 weights (exact products) while its frozen
    /// copy, the reference, would round its inputs: the two would differ at step 0 (a KL or reward that is not zero).</summary>
    protected void ValidateMatmulPrecision()
    {
        if (MatmulPrecision is not ("highest" or "medium")) throw new UserInputException($"--matmul-precision must be highest or medium, not '{MatmulPrecision}'.");
        if (MatmulPrecision == "medium" && !TrainsAdapter)
            throw new UserInputException("--matmul-precision medium rounds the inputs of the products with a LoRA run's frozen bf16 base (and its reference and reward model); " +
                "this run trains every weight (no --lora-r or --adapter), so its float32 policy would score differently from its frozen copies at step 0. Train an adapter, or keep highest.");
        if (MatmulPrecision == "medium" && FrozenDtype == "fp32")
            throw new UserInputException("--matmul-precision medium multiplies by bf16 frozen weights, but --frozen-dtype fp32 keeps them in float32: drop one of the two.");
    }

    private void ValidateLora()
    {
        if (LoraR < 0) throw new UserInputException("--lora-r must be ≥ 0 (0 = no LoRA).");
        if (LoraAlpha < 0) throw new UserInputException("--lora-alpha must be ≥ 0 (0 = 2×r).");
        if (!(LoraDropout >= 0 && LoraDropout < 1)) throw new UserInputException("--lora-dropout must be in [0, 1).");
        if (LoraTargetModules.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Length == 0)
            throw new UserInputException("--lora-target-modules is empty; give module names (q_proj,v_proj) or all-linear.");
        if (Adapter != null && LoraR > 0) throw new UserInputException("--adapter and --lora-r contradict each other: the adapter's own adapter_config.json sets its rank.");
        // TRL trains all weights under use_peft false whatever lora_r says; here --lora-r alone would train an adapter.
        if (UsePeft == false && (LoraR > 0 || Adapter != null))
            throw new UserInputException($"--use-peft false trains all weights (as TRL's use_peft false), but {(Adapter != null ? "--adapter" : $"--lora-r {LoraR}")} trains an adapter; drop one of them.");
        // The adapter's settings take effect only with a new adapter (--lora-r): without one they would be ignored.
        var shaping = new List<string>();
        if (LoraAlpha != 0) shaping.Add("--lora-alpha");
        if (LoraDropout != DefaultLoraDropout) shaping.Add("--lora-dropout");
        if (LoraTargetModules != LoraConfig.AllLinear) shaping.Add("--lora-target-modules");
        if (UseRslora) shaping.Add("--use-rslora");
        if (UseDora) shaping.Add("--use-dora");
        if (shaping.Count > 0 && LoraR == 0)
        {
            bool one = shaping.Count == 1;
            throw new UserInputException(Adapter != null
                ? $"{string.Join(", ", shaping)}: --adapter continues a saved adapter, whose adapter_config.json sets {(one ? "this" : "these")}; drop {(one ? "it" : "them")}, or start a new adapter with --lora-r."
                : $"{string.Join(", ", shaping)} {(one ? "needs" : "need")} --lora-r (the LoRA rank); without it the run trains every weight and would ignore {(one ? "it" : "them")}.");
        }
        if (!TrainsAdapter && Merge) throw new UserInputException("--merge needs --lora-r or --adapter (it merges the trained adapter into the model).");
    }

    /// <summary>Every float option must be a finite number (NaN and ±Infinity parse as floats but mean nothing here).</summary>
    public static void RejectNonFinite(object options)
    {
        foreach (var p in options.GetType().GetProperties())
        {
            if (p.GetCustomAttributes(typeof(OptionAttribute), true).Length == 0) continue;
            double? v = p.GetValue(options) switch { float f => f, double d => d, _ => null };
            if (v is { } x && !double.IsFinite(x))
                throw new UserInputException($"{OptionAttribute.FlagName(p.Name)} must be a finite number, not {x.ToString(System.Globalization.CultureInfo.InvariantCulture)}.");
        }
    }
}
