using System.Text.Json;
using AlignSharp.Models;
using AlignSharp.Models.Checkpoints;

namespace AlignSharp.Tests.Models;

/// <summary>
/// End-to-end check of the fixtures and of the canonical layout: a deliberately naive double-precision forward
/// pass, written only against canonical parameter names (matrices [out, in]), must reproduce the logits the
/// independent PyTorch script stored in each reference.json. This is the scalar oracle a real model
/// implementation can be compared with; it is not meant to be fast.
/// </summary>
public sealed class CheckpointReferenceLogitsTests
{
    public static TheoryData<string> FixtureNames => new(Fixtures.All);

    [Theory]
    [MemberData(nameof(FixtureNames))]
    public void NaiveCanonicalForwardMatchesReferenceLogits(string fixture)
    {
        using var checkpoint = ModelCheckpoint.Open(Fixtures.Dir(fixture));
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(Fixtures.Dir(fixture), "reference.json")));
        double absTol = doc.RootElement.GetProperty("tolerance").GetProperty("abs").GetDouble();
        double relTol = doc.RootElement.GetProperty("tolerance").GetProperty("rel").GetDouble();
        var model = new NaiveModel(checkpoint);
        foreach (var c in doc.RootElement.GetProperty("cases").EnumerateArray())
        {
            int[] ids = c.GetProperty("input_ids").EnumerateArray().Select(e => e.GetInt32()).ToArray();
            var expected = c.GetProperty("logits").EnumerateArray().Select(r => r.EnumerateArray().Select(e => e.GetDouble()).ToArray()).ToArray();
            var logits = model.Forward(ids);
            Assert.Equal(ids.Length, expected.Length);
            for (int t = 0; t < ids.Length; t++)
            {
                Assert.Equal(checkpoint.Config.VocabSize, expected[t].Length);
                for (int v = 0; v < expected[t].Length; v++)
                    Assert.True(Math.Abs(logits[t][v] - expected[t][v]) <= absTol + relTol * Math.Abs(expected[t][v]),
                        $"{fixture} t={t} v={v}: {logits[t][v]} vs {expected[t][v]}");
            }
        }
    }

    /// <summary>ids (T) → logits (T, V); D hidden, H heads, KV kv heads, hd head dim.</summary>
    private sealed class NaiveModel(ModelCheckpoint checkpoint)
    {
        private readonly ModelConfig _c = checkpoint.Config;
        private readonly Dictionary<string, float[]> _p = checkpoint.Parameters.ToDictionary(p => p.CanonicalName, p => checkpoint.ReadParameter(p.CanonicalName));

        private float[]? Optional(string name) => _p.GetValueOrDefault(name);

        public double[][] Forward(int[] ids)
        {
            int T = ids.Length, D = _c.HiddenSize, E = _c.EmbedDim;
            var embed = _p["embed.weight"];
            var h = ids.Select(id => Enumerable.Range(0, E).Select(e => embed[id * E + e] * (_c.ScaledEmbedding ? (float)Math.Sqrt(D) : 1.0) * (_c.EmbeddingMultiplier ?? _c.Falcon?.Embedding ?? 1.0)).ToArray()).ToArray();
            var falcon = _c.Falcon;
            if (E != D) h = Linear(h, "project_in");   // OPT's opt-350m: embeddings narrower than the blocks
            if (_c.Family == ModelFamily.Bloom) h = Norm(h, "embed_norm");
            // OPT reads its position table two rows in.
            int offset = _c.Family == ModelFamily.Opt ? 2 : 0;
            if (_c.LearnedPositions)
                for (int t = 0; t < T; t++)
                    for (int d = 0; d < D; d++) h[t][d] += _p["pos_embed.weight"][(t + offset) * D + d];
            for (int l = 0; l < _c.NumLayers; l++)
            {
                string p = $"layers.{l}.";
                var x = _c.InputNorms && !_c.PostNorm ? Norm(h, p + "attn_norm") : h;   // OLMo-2 has none, opt-350m norms after the adds
                double[][] attnOut;
                if (_c.IsConvLayer(l)) attnOut = Linear(ShortConv(x, p), p + "conv.out");   // LFM2's convolution layers
                else if (_c.IsMambaLayer(l) && falcon == null) attnOut = Linear(Mamba(x, p + "mamba."), p + "mamba.out");   // Granite 4.0's Mamba-2 mixers
                else
                {
                    // Falcon-H1: attention on x · attention_in_multiplier beside the mixer on x.
                    var mixerIn = x;
                    if (falcon != null) x = Scale(x, falcon.AttentionIn);
                    double[][] q, k, v;
                    if (_c.QkvLayout == QkvLayout.Concatenated)
                    {
                        // GPT-2: all of q, then k, then v; GPTBigCode's multi-query: k and v of one head after q.
                        var qkv = Linear(x, p + "attn.qkv");
                        int Q = _c.QueryDim, K = _c.KvDim;
                        q = qkv.Select(r => r[..Q]).ToArray();
                        k = qkv.Select(r => r[Q..(Q + K)]).ToArray();
                        v = qkv.Select(r => r[(Q + K)..]).ToArray();
                    }
                    else if (_c.QkvLayout == QkvLayout.PerHead)
                    {
                        // Rows head by head: head j's q, k and v are rows 3·hd·j + [0, hd), [hd, 2hd), [2hd, 3hd).
                        var qkv = Linear(x, p + "attn.qkv");
                        int hd = _c.HeadDim;
                        double[][] Part(int which) => qkv.Select(r => Enumerable.Range(0, _c.NumHeads)
                            .SelectMany(j => r[(3 * hd * j + which * hd)..(3 * hd * j + (which + 1) * hd)]).ToArray()).ToArray();
                        // BLOOM (ALiBi, in Attention) and GPTBigCode (learned positions) have no RoPE.
                        (q, k, v) = !_c.Table.HasRope ? (Part(0), Part(1), Part(2)) : (Rope(Part(0), false), Rope(Part(1), false), Part(2));
                    }
                    else
                    {
                        q = Linear(x, p + "attn.q");
                        k = Linear(x, p + "attn.k");
                        if (falcon != null) k = Scale(k, falcon.Key);
                        bool normAfterRope = _c.Family == ModelFamily.HunyuanDense;
                        if (_c.QkNorm && !normAfterRope)
                        {
                            // OLMo-2 over the whole projection, the others per head.
                            q = _c.FullWidthQkNorm ? Norm(q, p + "attn.q_norm") : HeadNorm(q, p + "attn.q_norm");
                            k = _c.FullWidthQkNorm ? Norm(k, p + "attn.k_norm") : HeadNorm(k, p + "attn.k_norm");
                        }
                        bool local = _c.IsSlidingLayer(l) && _c.LocalRopeTheta != null;
                        if (_c.UsesRope(l) && !_c.LearnedPositions)   // SmolLM3's NoPE layers (and OPT) leave q and k as they are
                        {
                            q = Rope(q, local);
                            k = Rope(k, local);
                        }
                        if (_c.QkNorm && normAfterRope)
                        {
                            // Hunyuan: per head, after RoPE.
                            q = HeadNorm(q, p + "attn.q_norm");
                            k = HeadNorm(k, p + "attn.k_norm");
                        }
                        v = Linear(x, p + "attn.v");
                    }
                    attnOut = Linear(Attention(q, k, v, _c.WindowOf(l)), p + "attn.o");
                    if (falcon != null)
                    {
                        var mixer = Scale(Linear(Mamba(mixerIn, p + "mamba."), p + "mamba.out"), falcon.SsmOut);
                        attnOut = attnOut.Select((r, t) => r.Select((e, i) => mixer[t][i] + e * falcon.AttentionOut).ToArray()).ToArray();
                    }
                }
                // GPT-NeoX's parallel residual: the MLP reads the block's input, both outputs are added to it.
                var blockInput = h.Select(r => r.ToArray()).ToArray();
                Add(h, _c.SandwichNorms ? Norm(attnOut, p + "attn_out_norm") : attnOut, _c.ResidualMultiplier ?? 1.0);
                if (_c.PostNorm) h = Norm(h, p + "attn_norm");
                // Phi's one norm feeds attention and MLP alike.
                x = _c.Family == ModelFamily.Phi ? x : _c.InputNorms && !_c.PostNorm ? Norm(_c.ParallelResidual == true ? blockInput : h, p + "mlp_norm") : h;
                double[][] m;
                if (_c.Table.ExpertMlp) m = Experts(x, p + "moe.");   // Granite MoE
                else if (!_c.Table.GatedMlp)   // fc → activation → proj (GPT-2, GPT-NeoX, Phi, OPT, BLOOM, Starcoder2)
                {
                    m = Linear(x, p + "mlp.fc");
                    foreach (var r in m)
                        for (int i = 0; i < r.Length; i++)
                            r[i] = _c.Activation switch
                            {
                                HiddenActivation.Gelu => r[i] * AlignSharp.Tests.Engine.NormalCdf.Phi(r[i]),
                                HiddenActivation.Relu => Math.Max(r[i], 0),
                                _ => GeluTanh(r[i]),
                            };
                    m = Linear(m, p + "mlp.proj");
                }
                else
                {
                    var gate = Scale(Linear(x, p + "mlp.gate"), falcon?.MlpGate ?? 1.0);
                    var up = Linear(x, p + "mlp.up");
                    for (int t = 0; t < T; t++)
                        for (int i = 0; i < gate[t].Length; i++)
                            gate[t][i] = _c.Activation switch
                            {
                                HiddenActivation.Silu => gate[t][i] / (1 + Math.Exp(-gate[t][i])),
                                HiddenActivation.GeluTanh => GeluTanh(gate[t][i]),
                                _ => gate[t][i] * AlignSharp.Tests.Engine.NormalCdf.Phi(gate[t][i]),
                            } * up[t][i];
                    m = Scale(Linear(gate, p + "mlp.down"), falcon?.MlpDown ?? 1.0);
                    if (_c.Moe != null) Add(m, Experts(x, p + "moe."), 1.0);   // Granite 4.0: experts beside the shared MLP
                    if (_c.SandwichNorms) m = Norm(m, p + "mlp_out_norm");
                }
                Add(h, m, _c.ResidualMultiplier ?? 1.0);
                if (_c.PostNorm) h = Norm(h, p + "mlp_norm");
            }
            var final = _c.PostNorm ? h : Norm(h, "final_norm");
            if (E != D) final = Linear(final, "project_out");
            var head = Optional("lm_head.weight") ?? embed;
            var logits = MatMulT(final, head, Optional("lm_head.bias"), _c.VocabSize);   // Phi's head has a bias
            foreach (var r in logits)
                for (int i = 0; i < r.Length; i++) r[i] = r[i] / (_c.LogitsScaling ?? 1.0) * (falcon?.LmHead ?? 1.0);
            if (_c.FinalLogitSoftcap is double cap)
                foreach (var r in logits)
                    for (int i = 0; i < r.Length; i++) r[i] = cap * Math.Tanh(r[i] / cap);
            return logits;
        }

        private static double GeluTanh(double x) => 0.5 * x * (1 + Math.Tanh(Math.Sqrt(2 / Math.PI) * (x + 0.044715 * x * x * x)));

        /// <summary>RMS norm of every head_dim slice of x (T, heads·hd) with one [hd] weight (Qwen3 / Gemma-3 q/k norm).</summary>
        /// <summary>A sparse mixture of experts token by token: the TopK largest router logits, gates the softmax over
        /// them, each chosen expert's SiLU-gated MLP (stack rows: gate, then up; then down) times its gate.</summary>
        private double[][] Experts(double[][] x, string p)
        {
            var moe = _c.Moe!;
            int D = _c.HiddenSize, I = moe.ExpertSize;
            var router = Linear(x, p + "router");
            float[] input = _p[p + "input.weight"], output = _p[p + "output.weight"];
            return x.Select((r, t) =>
            {
                var chosen = Enumerable.Range(0, moe.Experts).OrderByDescending(e => router[t][e]).Take(moe.TopK).ToArray();
                double top = chosen.Max(e => router[t][e]);
                var weights = chosen.Select(e => Math.Exp(router[t][e] - top)).ToArray();
                double sum = weights.Sum();
                var y = new double[D];
                for (int j = 0; j < chosen.Length; j++)
                {
                    int e = chosen[j];
                    var hidden = new double[I];
                    for (int i = 0; i < I; i++)
                    {
                        double g = 0, u = 0;
                        for (int c = 0; c < D; c++)
                        {
                            g += input[((long)e * 2 * I + i) * D + c] * r[c];
                            u += input[((long)e * 2 * I + I + i) * D + c] * r[c];
                        }
                        hidden[i] = g / (1 + Math.Exp(-g)) * u;
                    }
                    for (int o = 0; o < D; o++)
                    {
                        double acc = 0;
                        for (int i = 0; i < I; i++) acc += output[((long)e * D + o) * I + i] * hidden[i];
                        y[o] += weights[j] / sum * acc;
                    }
                }
                return y;
            }).ToArray();
        }

        private double[][] HeadNorm(double[][] x, string name)
        {
            int hd = _c.HeadDim;
            return x.Select(r => Enumerable.Range(0, r.Length / hd).SelectMany(head => RmsRow(r[(head * hd)..((head + 1) * hd)], _p[name + ".weight"])).ToArray()).ToArray();
        }

        private double[] RmsRow(double[] r, float[] w)
        {
            double ms = r.Select(e => e * e).Average();
            return r.Select((e, i) => (_c.NormWeightOffset + w[i]) * (e / Math.Sqrt(ms + _c.NormEps))).ToArray();
        }

        private double[][] Norm(double[][] x, string name)
        {
            // OLMo 1's LayerNorms have no weight or bias: scale 1, shift 0.
            var w = _c.Table.NormParameters ? _p[name + ".weight"] : Enumerable.Repeat(1f, x[0].Length).ToArray();
            var b = _c.Table.NormParameters ? Optional(name + ".bias") : new float[x[0].Length];
            return x.Select(r =>
            {
                int n = r.Length;
                if (_c.Norm == NormKind.LayerNorm)
                {
                    double mean = r.Average();
                    double var = r.Select(e => (e - mean) * (e - mean)).Average();
                    return r.Select((e, i) => (e - mean) / Math.Sqrt(var + _c.NormEps) * w[i] + b![i]).ToArray();
                }
                return RmsRow(r, w);
            }).ToArray();
        }

        private double[][] Linear(double[][] x, string name)
        {
            var w = _p[name + ".weight"];
            return MatMulT(x, w, Optional(name + ".bias"), w.Length / x[0].Length);
        }

        /// <summary>x (T, in) · W^T with W (out, in) [+ b] → (T, out).</summary>
        private static double[][] MatMulT(double[][] x, float[] w, float[]? b, int outDim)
        {
            int inDim = x[0].Length;
            return x.Select(r =>
            {
                var y = new double[outDim];
                for (int o = 0; o < outDim; o++)
                {
                    double s = b?[o] ?? 0;
                    for (int i = 0; i < inDim; i++) s += r[i] * w[o * inDim + i];
                    y[o] = s;
                }
                return y;
            }).ToArray();
        }

        /// <summary>rotate_half RoPE on each head of x (T, heads·hd); angle computed in float32 as transformers does.
        /// local: Gemma-3's sliding layers.</summary>
        private double[][] Rope(double[][] x, bool local)
        {
            // Phi-4-mini's partial rotary turns the first RotaryDim channels of each head; the rest stay.
            int hd = _c.HeadDim, half = _c.RotaryDim / 2;
            // LongRoPE (Phi-3): long factors when the call reaches original_max_position_embeddings; cos and sin scaled
            // (LongRoPE, YaRN) on the global layers only.
            var inv = _c.RopeFrequencies(local, _c.UsesLongRopeFactors(x.Length - 1));
            double factor = local ? 1 : _c.RopeAttentionFactor;
            for (int t = 0; t < x.Length; t++)
                for (int head = 0; head < x[t].Length / hd; head++)
                {
                    int o = head * hd;
                    for (int j = 0; j < half; j++)
                    {
                        double angle = (float)t * inv[j];
                        double cos = Math.Cos(angle) * factor, sin = Math.Sin(angle) * factor;
                        // ERNIE 4.5 and GLM pair channels 2j and 2j + 1; the others j and j + half.
                        bool interleaved = _c.Family is ModelFamily.Ernie45 or ModelFamily.Glm or ModelFamily.Helium;
                        int first = interleaved ? o + 2 * j : o + j;
                        int second = interleaved ? first + 1 : o + j + half;
                        double a = x[t][first], b = x[t][second];
                        x[t][first] = a * cos - b * sin;
                        x[t][second] = b * cos + a * sin;
                    }
                }
            return x;
        }

        /// <summary>Causal attention, keys s in (t − window, t]; query head i reads kv head i / (H / KV); scores
        /// scaled by the config's scale and soft-capped when it says so. → (T, H·hd).</summary>
        private double[][] Attention(double[][] q, double[][] k, double[][] v, int? window)
        {
            // GPT-Neo scores q·k unscaled.
            double scale = _c.Family == ModelFamily.GptNeo ? 1 : _c.AttentionMultiplier ?? 1 / Math.Sqrt(_c.QueryPreAttnScalar ?? _c.HeadDim);
            int T = q.Length, hd = _c.HeadDim, group = _c.NumHeads / _c.NumKvHeads;
            var y = new double[T][];
            for (int t = 0; t < T; t++)
            {
                y[t] = new double[_c.NumHeads * hd];
                for (int head = 0; head < _c.NumHeads; head++)
                {
                    int qo = head * hd, ko = head / group * hd;
                    int first = window is int w ? Math.Max(0, t - w + 1) : 0;
                    var scores = new double[t + 1 - first];
                    for (int s = first; s <= t; s++)
                    {
                        double dot = 0;
                        for (int i = 0; i < hd; i++) dot += q[t][qo + i] * k[s][ko + i];
                        scores[s - first] = _c.AttnLogitSoftcap is double cap ? cap * Math.Tanh(dot * scale / cap) : dot * scale;
                        if (_c.Family == ModelFamily.Bloom) scores[s - first] -= AlibiSlope(head) * (t - s);
                    }
                    double max = scores.Max(), sum = scores.Sum(e => Math.Exp(e - max));
                    for (int s = first; s <= t; s++)
                    {
                        double p = Math.Exp(scores[s - first] - max) / sum;
                        for (int i = 0; i < hd; i++) y[t][qo + i] += p * v[s][ko + i];
                    }
                }
            }
            return y;
        }

        /// <summary>LFM2's gated short convolution of x (T, D): [B | C | u] = conv.in(x), y_t = C_t ⊙ Σ_j w[·, j]·(B ⊙ u)_{t−K+1+j}
        /// (zero before the start), per channel.</summary>
        private double[][] ShortConv(double[][] x, string p)
        {
            int D = _c.HiddenSize;
            var bcx = Linear(x, p + "conv.in");
            var conv = DepthwiseConv(bcx.Select(r => Enumerable.Range(0, D).Select(c => r[c] * r[2 * D + c]).ToArray()).ToArray(), p + "conv.kernel");
            return conv.Select((r, t) => r.Select((e, c) => bcx[t][D + c] * e).ToArray()).ToArray();
        }

        /// <summary>y_t[c] = bias[c] + Σ_j w[c, j]·u_{t−K+1+j}[c], zeros before the start (the kernel [C, 1, K] under
        /// <paramref name="name"/>.weight, its bias where the checkpoint has one).</summary>
        private double[][] DepthwiseConv(double[][] u, string name)
        {
            var w = _p[name + ".weight"];
            var bias = Optional(name + ".bias");
            int T = u.Length, C = u.Length == 0 ? 0 : u[0].Length, K = w.Length / Math.Max(1, C);
            var y = new double[T][];
            for (int t = 0; t < T; t++)
            {
                y[t] = new double[C];
                for (int c = 0; c < C; c++)
                {
                    double sum = bias?[c] ?? 0;
                    for (int j = 0; j < K; j++)
                        if (t - K + 1 + j >= 0) sum += w[c * K + j] * u[t - K + 1 + j][c];
                    y[t][c] = sum;
                }
            }
            return y;
        }

        /// <summary>A Mamba-2 mixer step by step: [z | xBC | dt] = in_proj(x); xBC through the depthwise convolution (zeros
        /// before the start) and SiLU, split into x, B, C; per head, δ = softplus(dt + dt_bias), S ← exp(δ·A)·S + δ·x ⊗ B with
        /// A = −exp(A_log), y = S·C + D·x (B and C of the head's group); RMSNorm(y ⊙ SiLU(z)) over all channels.</summary>
        private double[][] Mamba(double[][] x, string p)
        {
            var m = _c.Mamba!;
            var f = _c.Falcon;
            int T = x.Length, I = m.Inner, C = m.ConvDim, H = m.Heads, P = m.HeadDim, N = m.StateSize, G = m.Groups;
            static double Silu(double v) => v / (1 + Math.Exp(-v));
            var proj = Linear(f == null ? x : Scale(x, f.SsmIn), p + "in");
            if (f != null)   // Falcon-H1's µP vector over in_proj's parts z, x, B, C, dt
                foreach (var r in proj)
                    for (int i = 0; i < r.Length; i++)
                        r[i] *= i < I ? f.SsmZ : i < 2 * I ? f.SsmX : i < 2 * I + G * N ? f.SsmB : i < 2 * I + 2 * G * N ? f.SsmC : f.SsmDt;
            var conv = DepthwiseConv(proj.Select(r => r[I..(I + C)]).ToArray(), p + "conv").Select(r => r.Select(Silu).ToArray()).ToArray();
            var y = Enumerable.Range(0, T).Select(_ => new double[I]).ToArray();
            for (int h = 0; h < H; h++)
            {
                double a = -Math.Exp(_p[p + "a_log"][h]);
                int g = h / (H / G);
                var state = new double[P * N];
                for (int t = 0; t < T; t++)
                {
                    double raw = proj[t][I + C + h] + _p[p + "dt_bias"][h];
                    double delta = raw > 20 ? raw : Math.Log(1 + Math.Exp(raw)), decay = Math.Exp(delta * a);
                    for (int i = 0; i < P; i++)
                    {
                        double xv = conv[t][h * P + i], acc = 0;
                        for (int n = 0; n < N; n++)
                        {
                            state[i * N + n] = decay * state[i * N + n] + delta * xv * conv[t][I + g * N + n];
                            acc += state[i * N + n] * conv[t][I + G * N + g * N + n];
                        }
                        y[t][h * P + i] = acc + _p[p + "d"][h] * xv;
                    }
                }
            }
            // The gated norm: none (y ⊙ SiLU(z)), per group before the gate, or after it (Granite: one group).
            double[] Gated(double[] r, int t) => r.Select((e, i) => e * Silu(proj[t][i])).ToArray();
            double[] GroupNorm(double[] r) => Enumerable.Range(0, m.NormGroups)
                .SelectMany(g => RmsRow(r[(g * I / m.NormGroups)..((g + 1) * I / m.NormGroups)], _p[p + "norm.weight"][(g * I / m.NormGroups)..((g + 1) * I / m.NormGroups)])).ToArray();
            return y.Select((r, t) => m.NormGroups == 0 ? Gated(r, t) : m.NormBeforeGate ? Gated(GroupNorm(r), t) : GroupNorm(Gated(r, t))).ToArray();
        }

        private static double[][] Scale(double[][] x, double s) => x.Select(r => r.Select(e => e * s).ToArray()).ToArray();

        /// <summary>The ALiBi paper's slope of head h for H heads: with n the largest power of two ≤ H, 2^(−8(h + 1)/n) for
        /// h &lt; n, then the odd-numbered slopes of 2n heads, 2^(−8(2(h − n) + 1)/(2n)).</summary>
        private double AlibiSlope(int head)
        {
            int n = 1 << (int)Math.Floor(Math.Log2(_c.NumHeads));
            return head < n ? Math.Pow(2, -8.0 * (head + 1) / n) : Math.Pow(2, -8.0 * (2 * (head - n) + 1) / (2 * n));
        }

        private static void Add(double[][] h, double[][] delta, double scale)
        {
            for (int t = 0; t < h.Length; t++)
                for (int i = 0; i < h[t].Length; i++) h[t][i] += delta[t][i] * scale;
        }
    }
}
