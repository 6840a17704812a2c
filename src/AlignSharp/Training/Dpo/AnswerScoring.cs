using AlignSharp.Distributed;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using AlignSharp.Engine;
using AlignSharp.Engine.Kernels;
using AlignSharp.Models;
using AlignSharp.Models.Lora;
using AlignSharp.Models.Checkpoints;
using AlignSharp.Training.Data;

namespace AlignSharp.Training.Dpo;

/// <summary>
/// Each row's answer under a model: Sums [R] = Σ over answer tokens of log π(token | everything before it)
/// (differentiable when gradients are on), Tokens [R] = answer tokens per row, LogitSums [R] = Σ of the raw logits
/// over the answer positions and the whole vocabulary (for TRL's logits/chosen, logits/rejected).
/// </summary>
public sealed record AnswerLogProbs(Tensor Sums, int[] Tokens, double[] LogitSums, int Vocab)
{
    /// <summary>Per-token means: Sums / Tokens [R] (for the length-normalised losses).</summary>
    public Tensor Means() => Ops.Div(Sums, Tensor.FromArray(Tokens.Select(t => (float)Math.Max(1, t)).ToArray(), Tokens.Length));
}

public static class AnswerScoring
{
    /// <summary>
    /// One forward pass over the batch's R rows: hidden states [R, T, D]; position t is scored against Labels[t + 1], and
    /// only answer positions are scored at all (the LM head runs on those rows alone, in chunks: <see cref="TokenScoring"/>),
    /// so prompt and padding get neither loss nor gradient. Sums [R] add each row's answer tokens.
    /// </summary>
    public static AnswerLogProbs Compute(TransformerModel model, DpoBatch batch) => Compute(model, batch, logits: true);

    /// <summary>
    /// <see cref="Compute(TransformerModel, DpoBatch)"/>'s Sums alone (the reference's; LogitSums left at 0): nothing looks
    /// at the raw logits, so without gradients the head goes a vocabulary tile at a time (<see cref="TokenScoring"/>), with
    /// the same bits.
    /// </summary>
    public static AnswerLogProbs Sums(TransformerModel model, DpoBatch batch) => Compute(model, batch, logits: false);

    private static AnswerLogProbs Compute(TransformerModel model, DpoBatch batch, bool logits)
    {
        int rows = batch.Rows, t = batch.SeqLen;
        var hidden = model.Hidden(batch.InputIds, rows, t, keyMask: batch.AttentionMask);
        var positions = new List<int>();
        var targets = new List<int>();
        var tokens = new int[rows];
        var rowOf = new List<int>();
        for (int r = 0; r < rows; r++)
            for (int p = 0; p + 1 < t; p++)
            {
                int label = batch.Labels[r * t + p + 1];
                if (label == SftSequence.IgnoreIndex) continue;
                positions.Add(r * t + p);
                targets.Add(label);
                rowOf.Add(r);
                tokens[r]++;
            }
        var answerRows = Ops.IndexSelect(Ops.Reshape(hidden, rows * t, hidden.Dim(-1)), positions.ToArray());
        int v = model.Config.VocabSize;
        var logitSums = new double[rows];
        var (logProbs, _) = TokenScoring.LogProbs(model, answerRows, targets.ToArray(), visit: !logits ? null : (first, chunk) =>
        {
            for (int i = 0; i < chunk.Length / v; i++)
            {
                double s = 0;
                foreach (float x in chunk.Slice(i * v, v)) s += x;
                logitSums[rowOf[first + i]] += s;
            }
        });
        // Answer tokens of a row are contiguous in the packed order: a 0/1 matrix [R, N] sums them per row.
        var segments = new float[rows * positions.Count];
        for (int i = 0; i < rowOf.Count; i++) segments[rowOf[i] * positions.Count + i] = 1f;
        var sums = Ops.SumLast(Ops.Mul(Ops.Reshape(logProbs, 1, positions.Count), Tensor.FromArray(segments, rows, positions.Count)));
        return new AnswerLogProbs(sums, tokens, logitSums, v);
    }
}

/// <summary>
/// The frozen reference model's answer log-probability sums per batch: computed once up front (and cached in a file
/// keyed by a hash of the reference weights and the batches' tokens, so a resumed or repeated run reuses them), or
/// on the fly from a frozen copy, every time a batch is scored.
/// </summary>
public sealed class ReferenceLogProbs
{
    public const string CacheFileName = "reference_logps.bin";
    private static readonly byte[] Magic = "ASREFLP1"u8.ToArray();

    private readonly TransformerModel? _model;
    private readonly bool _swapAdapter;
    private readonly LoraAdapter? _referenceAdapter;
    private readonly Dictionary<DpoBatch, float[]> _precomputed = new(ReferenceEqualityComparer.Instance);

    private ReferenceLogProbs(TransformerModel? model, bool swapAdapter = false, LoraAdapter? referenceAdapter = null)
        => (_model, _swapAdapter, _referenceAdapter) = (model, swapAdapter, referenceAdapter);

    /// <summary>
    /// The reference of a trainer that holds the policy to a frozen one (dpo, kto): precomputed once into
    /// <paramref name="runDirectory"/>'s cache (from --reference, or the policy as it starts: with --adapter, the base with
    /// that adapter; a new adapter is attached only afterwards), or on the fly: a LoRA policy's own frozen base with a
    /// frozen copy of the starting adapter (or none; no second copy of the weights), else a frozen copy of --reference
    /// or of the starting policy.
    /// </summary>
    public static ReferenceLogProbs ForPolicy(ReferencedPolicyOptions options, TransformerModel policy, LoraAdapter? adapter, IReadOnlyList<DpoBatch> batches,
        string runDirectory, Action<string> log)
    {
        if (options.PrecomputeReference)
        {
            // Before training starts (and before a resume loads its checkpoint), the policy holds the reference weights.
            policy.Adapter = options.Adapter != null ? adapter : null;
            var model = options.Reference != null ? DpoTrainer.LoadReference(options, policy) : policy;
            return Precompute(model, batches, Path.Combine(runDirectory, CacheFileName), log, World.Current);
        }
        if (adapter != null && options.Reference == null)
            return WithAdapter(policy, options.Adapter != null ? adapter.FrozenCopy() : null);
        return OnTheFly(DpoTrainer.LoadReference(options, policy));
    }

    /// <summary>Runs <paramref name="model"/> (frozen, no gradient) whenever a batch needs its reference.</summary>
    public static ReferenceLogProbs OnTheFly(TransformerModel model) => new(model);

    /// <summary>
    /// The reference of a LoRA policy: <paramref name="policy"/> itself with <paramref name="adapter"/> (frozen; null:
    /// no adapter, the base) in place of the trained adapter while a batch is scored. No second copy of the weights.
    /// </summary>
    public static ReferenceLogProbs WithAdapter(TransformerModel policy, LoraAdapter? adapter) => new(policy, swapAdapter: true, adapter);

    /// <summary>
    /// Scores every batch once with <paramref name="model"/>; with a <paramref name="cacheFile"/>, reads the values
    /// from it when its key matches, else computes and writes them there. Data-parallel (<paramref name="world"/> of
    /// several ranks): rank r scores batches r, r + N, …, the values are shared by all-reduce, and only rank 0 reads and
    /// writes the cache (its values reach the others the same way).
    /// </summary>
    public static ReferenceLogProbs Precompute(TransformerModel model, IReadOnlyList<DpoBatch> batches, string? cacheFile, Action<string>? log = null,
        ICommunicator? world = null)
    {
        world ??= SingleProcess.Instance;
        var result = new ReferenceLogProbs(null);
        byte[] key = cacheFile == null || !world.IsRoot ? [] : Key(model, batches);
        var all = cacheFile != null && world.IsRoot ? TryRead(cacheFile, key, batches) : null;
        var cachedOnRoot = new[] { all != null ? 1.0 : 0.0 };
        world.AllReduceMax(cachedOnRoot);
        if (cachedOnRoot[0] != 0)
        {
            log?.Invoke($"reference log-probabilities read from {cacheFile}");
            if (world.Size > 1) all = Share(world, batches.Count, i => world.IsRoot ? all![i] : null);
        }
        else
        {
            log?.Invoke($"computing reference log-probabilities for {batches.Count} batches" + (world.Size > 1 ? $" ({world.Size} ranks)" : ""));
            all = world.Size == 1
                ? batches.Select(b => Score(model, b)).ToArray()
                : Share(world, batches.Count, i => i % world.Size == world.Rank ? Score(model, batches[i]) : null);
            if (cacheFile != null && world.IsRoot) Write(cacheFile, key, all);
        }
        for (int i = 0; i < batches.Count; i++) result._precomputed[batches[i]] = all![i];
        return result;
    }

    /// <summary>Every rank's share of per-batch values (null where a rank has none) on every rank: lengths first, then the values.</summary>
    private static float[][] Share(ICommunicator world, int count, Func<int, float[]?> mine)
    {
        var own = Enumerable.Range(0, count).Select(mine).ToArray();
        var lengths = own.Select(v => (double)(v?.Length ?? 0)).ToArray();
        world.AllReduceSum(lengths);
        var offsets = new int[count + 1];
        for (int i = 0; i < count; i++) offsets[i + 1] = offsets[i] + (int)lengths[i];
        var flat = new float[offsets[count]];
        for (int i = 0; i < count; i++) own[i]?.CopyTo(flat, offsets[i]);
        world.AllReduceSum(flat);
        return Enumerable.Range(0, count).Select(i => flat[offsets[i]..offsets[i + 1]]).ToArray();
    }

    /// <summary>The reference sums [R] of a batch's rows.</summary>
    public float[] For(DpoBatch batch)
        => _precomputed.TryGetValue(batch, out var v) ? v
           : _model != null ? (_swapAdapter ? ScoreWithAdapter(_model, _referenceAdapter, batch) : Score(_model, batch))
           : throw new InvalidOperationException("no reference log-probabilities were computed for this batch.");

    public static float[] Score(TransformerModel model, DpoBatch batch)
    {
        using var noGrad = Autograd.NoGrad();
        using var scope = TensorScope.Begin();
        return AnswerScoring.Sums(model, batch).Sums.ToArray();
    }

    private static float[] ScoreWithAdapter(TransformerModel model, LoraAdapter? adapter, DpoBatch batch)
        => LoraAdapter.Using(model, adapter, () => Score(model, batch));

    /// <summary>
    /// SHA-256 over a version tag, the reference's configuration (config.json as loaded, and its adapter's
    /// adapter_config.json: a changed rope_theta, norm epsilon or lora_alpha scores differently with the same
    /// weights), its parameters (names and values), how its bf16 products take their inputs (--matmul-precision; with
    /// bf16 inputs the kernel and its float32 fallback sum in different orders) and every batch's rows.
    /// </summary>
    private static byte[] Key(TransformerModel model, IReadOnlyList<DpoBatch> batches)
    {
        using var h = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        h.AppendData("alignsharp dpo reference v3"u8);
        h.AppendData(!Ops.RoundsBf16Products ? "exact products"u8
            : Gemm.Bf16BlockedRuns(transA: false) ? "bf16 products, vdpbf16ps"u8 : "bf16 products, float32"u8);
        h.AppendData(System.Text.Encoding.UTF8.GetBytes(model.Config.ToJson()));
        if (model.Adapter is { Enabled: true } enabled) h.AppendData(System.Text.Encoding.UTF8.GetBytes(enabled.Config.ToJson()));
        var adapter = model.Adapter is { Enabled: true } a ? a.NamedParameters : [];
        foreach (var (name, p) in model.NamedParameters.Concat(adapter))
        {
            h.AppendData(System.Text.Encoding.UTF8.GetBytes(name));
            h.AppendData(p.IsBf16 ? MemoryMarshal.AsBytes(p.Bf16Span) : MemoryMarshal.AsBytes(p.Span));
        }
        foreach (var b in batches)
        {
            h.AppendData(BitConverter.GetBytes(b.Rows));
            h.AppendData(BitConverter.GetBytes(b.SeqLen));
            h.AppendData(MemoryMarshal.AsBytes(b.InputIds.AsSpan()));
            h.AppendData(MemoryMarshal.AsBytes(b.Labels.AsSpan()));
            h.AppendData(MemoryMarshal.AsBytes(b.AttentionMask.AsSpan()));
        }
        return h.GetHashAndReset();
    }

    // Layout: magic (8 bytes), key (32), batch count (int32), then per batch its row count (int32) and R floats.
    private static void Write(string path, byte[] key, float[][] values) => AtomicFile.Write(path, s =>
    {
        using var w = new BinaryWriter(s, System.Text.Encoding.UTF8, leaveOpen: true);
        w.Write(Magic);
        w.Write(key);
        w.Write(values.Length);
        foreach (var v in values)
        {
            w.Write(v.Length);
            w.Write(MemoryMarshal.AsBytes(v.AsSpan()));
        }
    });

    private static float[][]? TryRead(string path, byte[] key, IReadOnlyList<DpoBatch> batches)
    {
        if (!File.Exists(path)) return null;
        try
        {
            using var r = new BinaryReader(File.OpenRead(path));
            if (!r.ReadBytes(Magic.Length).AsSpan().SequenceEqual(Magic) || !r.ReadBytes(key.Length).AsSpan().SequenceEqual(key)) return null;
            if (r.ReadInt32() != batches.Count) return null;
            var result = new float[batches.Count][];
            for (int i = 0; i < batches.Count; i++)
            {
                int n = r.ReadInt32();
                if (n != batches[i].Rows) return null;
                result[i] = new float[n];
                if (r.Read(MemoryMarshal.AsBytes(result[i].AsSpan())) != n * sizeof(float)) return null;
                // Sums of log-probabilities are never NaN or +∞: such a file was damaged after it was written.
                if (result[i].Any(v => float.IsNaN(v) || float.IsPositiveInfinity(v))) return null;
            }
            return result;
        }
        catch (EndOfStreamException)
        {
            return null;
        }
    }
}
