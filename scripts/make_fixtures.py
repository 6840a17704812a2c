#!/usr/bin/python3
"""Generate the small Hugging Face style checkpoint fixtures under tests/fixtures/models/.

Run (from the repository root, with Debian's Python; nothing from PyPI is needed):

    apt-get update && apt-get install -y python3-torch python3-numpy
    /usr/bin/python3 scripts/make_fixtures.py

Each fixture is a directory holding what `save_pretrained` (or the hub) would hold: `config.json`,
one `model.safetensors` (or shards plus `model.safetensors.index.json`), and `reference.json` with
two input sequences and the logits expected for every position of each.

The reference forward passes below are written from the Hugging Face definitions (transformers'
modeling_gpt2.py / modeling_llama.py / modeling_qwen2.py / modeling_mistral.py / modeling_qwen3.py /
modeling_smollm3.py / modeling_olmo2.py / modeling_gemma2.py / modeling_gemma3.py / modeling_phi3.py /
modeling_gpt_neox.py / modeling_stablelm.py / modeling_phi.py / modeling_opt.py / modeling_exaone4.py /
modular_ernie4_5.py / modular_hunyuan_v1_dense.py / modeling_bloom.py / modular_lfm2.py / modular_glm.py,
modular_starcoder2.py / modeling_gpt_bigcode.py / modeling_gpt_neo.py / modular_helium.py, modeling_rope_utils.py); Debian ships neither
`transformers` nor `safetensors`, so both the forward and the safetensors writer are plain Python here,
independent of AlignSharp. The forward runs in float64 on the float32 (or bf16-rounded) weights and the
logits are stored rounded to float32, so a correct float32 implementation matches to ~1e-5; tests should
use abs/rel tolerance 1e-4 (stored in each reference.json).

Formulas (T = sequence length, D = hidden, H heads, KV kv heads, hd head dim, V vocab):
  GPT-2:  h = wte[ids] + wpe[0..T); per layer
            a = LN(h; ln_1); [q|k|v] = a @ c_attn.W + c_attn.b  (Conv1D: W stored [in, out])
            h += Attn(q, k, v) @ attn.c_proj.W + b
            h += gelu_new(LN(h; ln_2) @ c_fc.W + b) @ mlp.c_proj.W + b
          logits = LN(h; ln_f) @ wte^T (tied).  LN(x) = (x - mean) / sqrt(var_biased + eps) * w + b.
          gelu_new(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
  Llama / Qwen2 / Mistral:  h = embed_tokens[ids]; per layer
            x = RMS(h; input_layernorm);  q = x Wq^T (+bq), k = x Wk^T (+bk), v = x Wv^T (+bv)
            q, k = rope(q), rope(k);  h += Attn(q, k, v) Wo^T (+bo)
            x = RMS(h; post_attention_layernorm);  h += down(silu(gate(x)) * up(x))
          logits = RMS(h; norm) @ lm_head^T  (or embed_tokens^T when tied).
          RMS(x) = w * x / sqrt(mean(x^2) + eps).
          rope: inv_freq[j] = 1 / theta^(2j / hd) (float32, as HF; llama3 scaling adjusts it),
                angle[p, j] = p * inv_freq[j] for j < hd/2, repeated for j + hd/2 (cat(freqs, freqs)),
                rope(x) = x * cos(angle) + rotate_half(x) * sin(angle), rotate_half([a, b]) = [-b, a]
                (halves, NOT interleaved pairs).
          GQA: query head i uses kv head i // (H / KV).
  Qwen3: as Llama, and q, k = RMS(q; q_norm), RMS(k; k_norm) per head over hd, before rope.
  Gemma-2 / Gemma-3 text:  h = embed_tokens[ids] * float32(sqrt(D)); per layer
            x = G(h; input_layernorm);  q, k, v = x Wq^T, x Wk^T, x Wv^T
            (Gemma-3: q, k = G(q; q_norm), G(k; k_norm) per head)
            q, k = rope(q), rope(k)   (Gemma-3: sliding layers use rope_local_base_freq and no rope_scaling)
            a = Attn(q, k, v) with scale query_pre_attn_scalar^-0.5, scores soft-capped when
                attn_logit_softcapping c is set (s -> c tanh(s / c), before the mask), sliding window on
                the layers layer_types marks sliding_attention (default: Gemma-2 every even layer,
                Gemma-3 all but every sliding_window_pattern-th)
            h += G(a Wo^T; post_attention_layernorm)
            x = G(h; pre_feedforward_layernorm);  h += G(down(gelu_tanh(gate(x)) * up(x)); post_feedforward_layernorm)
          logits = G(h; norm) @ embed_tokens^T, then c tanh(logits / c) with final_logit_softcapping c.
          G(x; w) = x / sqrt(mean(x^2) + eps) * (1 + w).
  Phi-3:  as Llama, but [q|k|v] = x Wqkv^T (rows q: H*hd, k: KV*hd, v: KV*hd) and [gate|up] = x Wgate_up^T
          (rows gate: I, up: I). LongRoPE (rope_scaling type longrope/su): inv_freq[j] = 1 / (f[j] * theta^(2j/hd))
          with f = long_factor when max(position) + 1 > original_max_position_embeddings, else short_factor
          (per forward call); cos and sin are multiplied by attention_factor, default
          sqrt(1 + ln(s) / ln(original)) for s = max_position_embeddings / original > 1.
  GPT-NeoX:  h = embed_in[ids]; per layer, qkv = LN(h; input_layernorm) Wqkv^T + b viewed [T, heads, 3 hd]: per
          head q, k, v in turn; rope on the first rot = int(hd * rotary_pct) channels of q and k (inv_freq over rot,
          rotate_half within them), a = Attn(q, k, v) Wdense^T + b; use_parallel_residual:
          h = mlp(LN(h; post_attention_layernorm)) + a + h, else h = a + h, h = mlp(LN(h; post_attention_layernorm)) + h;
          mlp(x) = act(x W_h_to_4h^T + b) W_4h_to_h^T + b; logits = LN(h; final_layer_norm) @ embed_out^T (untied).
  StableLM: as Llama, with LN (weight and bias) in place of RMS, q/k/v biases when use_qkv_bias, and rope on the
          first int(hd * partial_rotary_factor) channels of q and k (default 0.25).
  Phi-1/1.5/2: x = LN(h; input_layernorm) feeds attention (q/k/v/dense with biases, rope on the first
          int(hd * partial_rotary_factor) channels) and the MLP (fc1 -> gelu_new -> fc2); h = attn + mlp + h;
          logits = LN(h; final_layernorm) @ lm_head^T + lm_head.bias.
  OPT:  h = embed_tokens[ids] (@ project_in^T when word_embed_proj_dim != hidden) + embed_positions[2 + 0..T);
          pre-LN as GPT-2 with separate q/k/v/out_proj and fc1 -> relu -> fc2, final_layer_norm at the end; or (opt-350m,
          do_layer_norm_before false) h = LN(h + attn(h)), h = LN(h + mlp(h)), no final norm; then project_out;
          logits = h @ embed_tokens^T (tied). LayerNorm eps 1e-5.
  ERNIE 4.5: as Llama (biases with use_bias), rope on interleaved pairs: channels 2i and 2i + 1 turn by pos * inv_freq[i].
  Hunyuan dense: as Llama, q and k RMS-normed per head after rope; NTK-alpha base theta * alpha^(hd / (hd - 2)).
  OLMo 1: as Llama with LN(x) = (x - mean) / sqrt(var + 1e-5) (no weight, no bias) in place of every RMS.
  Granite 3.x MoE: as Granite, with a sparse mixture of experts in the MLP's place: router logits r = x Wr^T, the
          num_experts_per_tok largest per token, gates softmax over those; expert e: [g|u] = x W_in[e]^T,
          silu(g) * u @ W_out[e]^T; each token's outputs summed with its gates.
  Attn: per head softmax(q k^T / sqrt(hd) + causal mask) v, heads concatenated in head order.
          Mistral with sliding_window W also masks key j for query i when i - j >= W (a query sees at most
          W keys, itself included; indices are sequence positions, as transformers' sliding_window_overlay);
          Qwen2/Qwen3 the same on their sliding layers when use_sliding_window is true.

Deterministic: every fixture has its own fixed torch seed; rerunning rewrites identical files.
"""

import json
import math
import os
import shutil
import struct

import numpy as np
import torch

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "models")
TOLERANCE = {"abs": 1e-4, "rel": 1e-4}

# ----------------------------------------------------------------------------------------------
# safetensors writer (format: u64 LE header length N, N bytes of JSON padded with spaces to a
# multiple of 8, then the raw little-endian tensor data; data_offsets are relative to the data start)
# ----------------------------------------------------------------------------------------------


def tensor_bytes(t, dtype):
    t = t.detach().contiguous()
    if dtype == "F32":
        return t.to(torch.float32).numpy().astype("<f4").tobytes()
    if dtype == "BF16":
        return t.to(torch.float32).to(torch.bfloat16).view(torch.int16).numpy().astype("<i2").tobytes()
    if dtype == "F16":
        return t.to(torch.float32).numpy().astype("<f2").tobytes()
    raise ValueError(dtype)


def write_safetensors(path, tensors, dtype="F32", metadata=None):
    """tensors: dict name -> torch tensor. Written sorted by name, contiguous, like HF does."""
    header = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    blobs = []
    offset = 0
    for name in sorted(tensors):
        data = tensor_bytes(tensors[name], dtype)
        header[name] = {"dtype": dtype, "shape": list(tensors[name].shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)
    return offset


# ----------------------------------------------------------------------------------------------
# reference forward passes (float64)
# ----------------------------------------------------------------------------------------------


def layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * w + b


def rms_norm(x, w, eps):
    return w * (x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps))


def gelu_new(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


def gpt2_activation(cfg):
    """activation_function: gelu_new (the default; tanh) or gelu (PyTorch's exact x * Phi(x), transformers' "gelu")."""
    return torch.nn.functional.gelu if cfg.get("activation_function", "gelu_new") == "gelu" else gelu_new


def causal_attention(q, k, v, window=None, scale=None, softcap=None):
    """q [H, T, hd], k/v [H, T, hd] (kv already repeated) -> [T, H*hd]; window: keys j <= i - window masked."""
    h, t, hd = q.shape
    s = q @ k.transpose(-1, -2) * (scale if scale is not None else 1.0 / math.sqrt(hd))
    if softcap is not None:
        s = torch.tanh(s / softcap) * softcap
    mask = torch.triu(torch.ones(t, t, dtype=torch.bool), diagonal=1)
    if window is not None:
        mask |= torch.tril(torch.ones(t, t, dtype=torch.bool), diagonal=-window)
    s = s.masked_fill(mask, float("-inf"))
    p = torch.softmax(s, dim=-1)
    return (p @ v).transpose(0, 1).reshape(t, h * hd)


def gpt2_forward(w, cfg, ids):
    """w: HF names without the 'transformer.' prefix, float64."""
    t = len(ids)
    d, nh = cfg["n_embd"], cfg["n_head"]
    hd = d // nh
    eps = cfg["layer_norm_epsilon"]
    h = w["wte.weight"][ids] + w["wpe.weight"][torch.arange(t)]
    for i in range(cfg["n_layer"]):
        p = f"h.{i}."
        a = layer_norm(h, w[p + "ln_1.weight"], w[p + "ln_1.bias"], eps)
        qkv = a @ w[p + "attn.c_attn.weight"] + w[p + "attn.c_attn.bias"]
        q, k, v = qkv.split(d, dim=-1)
        q, k, v = (x.reshape(t, nh, hd).transpose(0, 1) for x in (q, k, v))
        y = causal_attention(q, k, v)
        h = h + y @ w[p + "attn.c_proj.weight"] + w[p + "attn.c_proj.bias"]
        m = layer_norm(h, w[p + "ln_2.weight"], w[p + "ln_2.bias"], eps)
        m = gpt2_activation(cfg)(m @ w[p + "mlp.c_fc.weight"] + w[p + "mlp.c_fc.bias"])
        h = h + m @ w[p + "mlp.c_proj.weight"] + w[p + "mlp.c_proj.bias"]
    h = layer_norm(h, w["ln_f.weight"], w["ln_f.bias"], eps)
    return h @ w["wte.weight"].T


def rope_settings(cfg, local=False):
    """(base, scaling dict or None) of the global or (Gemma-3) local layers, from either config format: rope_theta /
    rope_scaling / rope_local_base_freq (transformers 4), or rope_parameters (transformers 5: one dict holding
    rope_type, rope_theta and the scaling fields, or one per layer type)."""
    params = cfg.get("rope_parameters")
    if params is None:
        return (cfg["rope_local_base_freq"], None) if local else (cfg.get("rope_theta", 10000.0), cfg.get("rope_scaling"))
    if set(params) <= {"full_attention", "sliding_attention"}:
        params = params["sliding_attention" if local else "full_attention"]
    elif local:
        return cfg["rope_local_base_freq"], None
    kind = params.get("rope_type", params.get("type", "default"))
    return params.get("rope_theta", cfg.get("rope_theta", 10000.0)), (None if kind == "default" else params)


def rope_inv_freq(cfg, hd, local=False):
    """As transformers' _compute_default_rope_parameters / _compute_linear_scaling_rope_parameters /
    _compute_llama3_parameters / _compute_yarn_parameters (float32). local: Gemma-3's sliding layers (their own base,
    no scaling)."""
    base, rs = rope_settings(cfg, local)
    inv_freq = 1.0 / (base ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
    if rs is None:
        return inv_freq
    kind = rs.get("rope_type", rs.get("type"))
    if kind == "linear":
        return inv_freq / rs["factor"]
    if kind == "yarn":
        return yarn_inv_freq(cfg, rs, base, hd)
    assert kind == "llama3"
    factor, low, high = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
    old_ctx = rs["original_max_position_embeddings"]
    low_freq_wavelen = old_ctx / low
    high_freq_wavelen = old_ctx / high
    wavelen = 2 * math.pi / inv_freq
    inv_freq_llama = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_ctx / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * inv_freq_llama / factor + smooth * inv_freq_llama
    is_medium = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
    return torch.where(is_medium, smoothed, inv_freq_llama)


def yarn_original_length(cfg, rs):
    """transformers 5: a top-level original_max_position_embeddings first, then the RoPE dict's, then
    max_position_embeddings."""
    return cfg.get("original_max_position_embeddings") or rs.get("original_max_position_embeddings") or cfg["max_position_embeddings"]


def yarn_inv_freq(cfg, rs, base, hd):
    """YaRN (arXiv 2309.00071) as transformers 5 computes it, in float32: pairs that turn more than beta_fast times over
    the pre-training length keep their frequency, pairs that turn fewer than beta_slow times are divided by factor,
    and a linear ramp over the dimensions between blends the two."""
    original = yarn_original_length(cfg, rs)
    factor = rs.get("factor") or cfg["max_position_embeddings"] / original
    beta_fast, beta_slow = rs.get("beta_fast") or 32, rs.get("beta_slow") or 1

    def correction_dim(rotations):
        return hd * math.log(original / (rotations * 2 * math.pi)) / (2 * math.log(base))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if rs.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, hd - 1)
    if low == high:
        high += 0.001
    pos_freqs = base ** (torch.arange(0, hd, 2).float() / hd)
    ramp = torch.clamp((torch.arange(hd // 2, dtype=torch.float32) - low) / (high - low), 0, 1)
    keep = 1 - ramp
    return (1.0 / (factor * pos_freqs)) * (1 - keep) + (1.0 / pos_freqs) * keep


def rope_attention_scaling(cfg, local=False):
    """What transformers multiplies cos and sin by: YaRN's attention_factor, else 0.1 ln(factor) + 1 (DeepSeek's
    mscale / mscale_all_dim ratio when both are set); 1 otherwise (LongRoPE: see phi3_rope)."""
    _, rs = rope_settings(cfg, local)
    if rs is None or rs.get("rope_type", rs.get("type")) != "yarn":
        return 1.0
    if rs.get("attention_factor") is not None:
        return rs["attention_factor"]
    factor = rs.get("factor") or cfg["max_position_embeddings"] / yarn_original_length(cfg, rs)

    def mscale(scale, m=1.0):
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    if rs.get("mscale") and rs.get("mscale_all_dim"):
        return mscale(factor, rs["mscale"]) / mscale(factor, rs["mscale_all_dim"])
    return mscale(factor)


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def attention_window(cfg, layer):
    """Mistral applies sliding_window (when not null) in every layer; Llama has none. Qwen2/Qwen3 apply it only with
    use_sliding_window, on the layers layer_types marks sliding_attention, else on layers >= max_window_layers."""
    if cfg["model_type"] == "mistral":
        return cfg.get("sliding_window")
    if cfg["model_type"] in ("qwen2", "qwen3") and cfg.get("use_sliding_window", False):
        types = cfg.get("layer_types")
        sliding = types[layer] == "sliding_attention" if types is not None else layer >= cfg.get("max_window_layers", 28)
        return cfg.get("sliding_window", 4096) if sliding else None
    return None


def rope_cos_sin(cfg, hd, t, local=False):
    """cos and sin [t, hd] of positions 0..t-1 (angles formed in float32, like HF), times the attention scaling."""
    freqs = torch.arange(t, dtype=torch.float32)[:, None] * rope_inv_freq(cfg, hd, local)[None, :]
    emb = torch.cat((freqs, freqs), dim=-1).double()
    scaling = rope_attention_scaling(cfg, local)
    return emb.cos() * scaling, emb.sin() * scaling


def llama_shapes(cfg):
    """(query heads, kv heads, head_dim, rms_norm_eps) of a Llama-style config (head_dim defaults to hidden / heads)."""
    nh = cfg["num_attention_heads"]
    return nh, cfg.get("num_key_value_heads") or nh, cfg.get("head_dim") or cfg["hidden_size"] // nh, cfg.get("rms_norm_eps", 1e-5)


def linear(w):
    """x @ W.T (+ b) by HF module name, for the float64 weights w."""
    def lin(x, name):
        y = x @ w[name + ".weight"].T
        if name + ".bias" in w:
            y = y + w[name + ".bias"]
        return y
    return lin


def llama_forward(w, cfg, ids, rotate=None, mlp=None):
    """Llama / Qwen2 / Mistral / Qwen3 / SmolLM3 / Granite. w: HF names, float64. Granite (modeling_granite.py) has four
    multipliers, absent (1) elsewhere: embeddings times embedding_multiplier, attention_multiplier as the score scale
    (in place of hd^-1/2), each attention and MLP output times residual_multiplier before its residual add, and the
    logits divided by logits_scaling."""
    t = len(ids)
    nh, nkv, hd, eps = llama_shapes(cfg)
    cos, sin = rope_cos_sin(cfg, hd, t) if rotate is None else (None, None)
    lin = linear(w)
    residual = cfg.get("residual_multiplier", 1.0)
    # Gemma 1 (modeling_gemma.py): (1 + w) RMSNorm, embeddings times sqrt(hidden) formed in the weights' dtype, GeGLU.
    gemma1 = cfg["model_type"] == "gemma"
    norm_offset = 1.0 if gemma1 else 0.0
    act = gemma1_activation(cfg) if gemma1 else (lambda g: g * torch.sigmoid(g))
    olmo = cfg["model_type"] == "olmo"

    def norm(x, name):
        if olmo:  # modeling_olmo.py: LayerNorm without weight or bias, eps 1e-5
            return layer_norm(x, 1.0, 0.0, 1e-5)
        return rms_norm(x, norm_offset + w[name + ".weight"], eps)

    h = w["model.embed_tokens.weight"][ids] * cfg.get("embedding_multiplier", 1.0)
    if gemma1:
        h = h * torch.tensor(cfg["hidden_size"] ** 0.5, dtype=torch.float32).double()
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        x = norm(h, p + "input_layernorm")
        q = lin(x, p + "self_attn.q_proj").reshape(t, nh, hd).transpose(0, 1)
        k = lin(x, p + "self_attn.k_proj").reshape(t, nkv, hd).transpose(0, 1)
        v = lin(x, p + "self_attn.v_proj").reshape(t, nkv, hd).transpose(0, 1)
        if cfg["model_type"] == "qwen3":  # per-head RMSNorm over hd, before rope
            q = rms_norm(q, w[p + "self_attn.q_norm.weight"], eps)
            k = rms_norm(k, w[p + "self_attn.k_norm.weight"], eps)
        # rotate(q, k, prefix): a family's own position step (ERNIE's interleaved pairs, Hunyuan's norms after RoPE).
        if rotate is not None:
            q, k = rotate(q, k, p)
        # SmolLM3 (modeling_smollm3.py): use_rope = config.no_rope_layers[layer]; a 0 leaves q and k unrotated (NoPE).
        elif cfg["model_type"] != "smollm3" or cfg["no_rope_layers"][i]:
            q = q * cos + rotate_half(q) * sin
            k = k * cos + rotate_half(k) * sin
        rep = nh // nkv
        k = k.repeat_interleave(rep, dim=0)  # == HF repeat_kv: head i uses kv head i // rep
        v = v.repeat_interleave(rep, dim=0)
        a = causal_attention(q, k, v, attention_window(cfg, i), cfg.get("attention_multiplier"))
        h = h + lin(a, p + "self_attn.o_proj") * residual
        x = norm(h, p + "post_attention_layernorm")
        # mlp(x, prefix): a family's own MLP (Granite MoE's experts).
        out = lin(act(lin(x, p + "mlp.gate_proj")) * lin(x, p + "mlp.up_proj"), p + "mlp.down_proj") if mlp is None else mlp(x, p)
        h = h + out * residual
    h = norm(h, "model.norm")
    head = w["model.embed_tokens.weight"] if cfg.get("tie_word_embeddings", False) else w["lm_head.weight"]
    return h @ head.T / cfg.get("logits_scaling", 1.0)


def gemma1_activation(cfg):
    """hidden_activation where given (Gemma 1.1), else hidden_act: the tanh GELU, or PyTorch's exact one for "gelu"."""
    name = cfg.get("hidden_activation") or cfg.get("hidden_act", "gelu_pytorch_tanh")
    return torch.nn.functional.gelu if name == "gelu" else gelu_new


def olmo2_forward(w, cfg, ids):
    """OLMo-2 (modeling_olmo2.py): q_norm / k_norm over the whole q and k projections before the split into heads and
    RoPE; no norm before attention or MLP; h = h + post_attention_layernorm(attn(h)), then
    h = h + post_feedforward_layernorm(mlp(h)). w: HF names, float64."""
    t = len(ids)
    nh, nkv, hd, eps = llama_shapes(cfg)
    cos, sin = rope_cos_sin(cfg, hd, t)
    lin = linear(w)

    h = w["model.embed_tokens.weight"][ids]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        q = rms_norm(lin(h, p + "self_attn.q_proj"), w[p + "self_attn.q_norm.weight"], eps).reshape(t, nh, hd).transpose(0, 1)
        k = rms_norm(lin(h, p + "self_attn.k_proj"), w[p + "self_attn.k_norm.weight"], eps).reshape(t, nkv, hd).transpose(0, 1)
        v = lin(h, p + "self_attn.v_proj").reshape(t, nkv, hd).transpose(0, 1)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        rep = nh // nkv
        k = k.repeat_interleave(rep, dim=0)
        v = v.repeat_interleave(rep, dim=0)
        a = lin(causal_attention(q, k, v), p + "self_attn.o_proj")
        h = h + rms_norm(a, w[p + "post_attention_layernorm.weight"], eps)
        g = lin(h, p + "mlp.gate_proj")
        m = lin(g * torch.sigmoid(g) * lin(h, p + "mlp.up_proj"), p + "mlp.down_proj")
        h = h + rms_norm(m, w[p + "post_feedforward_layernorm.weight"], eps)
    h = rms_norm(h, w["model.norm.weight"], eps)
    head = w["model.embed_tokens.weight"] if cfg.get("tie_word_embeddings", False) else w["lm_head.weight"]
    return h @ head.T


def gemma_rms_norm(x, w, eps):
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * (1.0 + w)


def gemma_layer_types(cfg):
    """layer_types, else Gemma-2: even layers sliding; Gemma-3: all but every sliding_window_pattern-th layer."""
    if cfg.get("layer_types") is not None:
        return cfg["layer_types"]
    pattern = 2 if cfg["model_type"] == "gemma2" else cfg.get("sliding_window_pattern", 6)
    return ["sliding_attention" if (i + 1) % pattern else "full_attention" for i in range(cfg["num_hidden_layers"])]


def gemma_forward(w, cfg, ids):
    """Gemma-2 and Gemma-3 text. w: HF names, float64."""
    t = len(ids)
    d = cfg["hidden_size"]
    nh = cfg["num_attention_heads"]
    nkv = cfg["num_key_value_heads"]
    hd = cfg["head_dim"]
    eps = cfg["rms_norm_eps"]
    gemma3 = cfg["model_type"] == "gemma3_text"
    scale = cfg["query_pre_attn_scalar"] ** -0.5
    types = gemma_layer_types(cfg)

    tables = {False: rope_cos_sin(cfg, hd, t), True: rope_cos_sin(cfg, hd, t, local=True) if gemma3 else None}
    normalizer = torch.tensor(d ** 0.5, dtype=torch.float32).double()  # HF forms it in the embedding dtype
    h = w["model.embed_tokens.weight"][ids] * normalizer
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        sliding = types[i] == "sliding_attention"
        x = gemma_rms_norm(h, w[p + "input_layernorm.weight"], eps)
        q = (x @ w[p + "self_attn.q_proj.weight"].T).reshape(t, nh, hd).transpose(0, 1)
        k = (x @ w[p + "self_attn.k_proj.weight"].T).reshape(t, nkv, hd).transpose(0, 1)
        v = (x @ w[p + "self_attn.v_proj.weight"].T).reshape(t, nkv, hd).transpose(0, 1)
        if gemma3:
            q = gemma_rms_norm(q, w[p + "self_attn.q_norm.weight"], eps)
            k = gemma_rms_norm(k, w[p + "self_attn.k_norm.weight"], eps)
        cos, sin = tables[sliding and gemma3]
        # SmolLM3 (modeling_smollm3.py): use_rope = config.no_rope_layers[layer]; a 0 leaves q and k unrotated (NoPE).
        if cfg["model_type"] != "smollm3" or cfg["no_rope_layers"][i]:
            q = q * cos + rotate_half(q) * sin
            k = k * cos + rotate_half(k) * sin
        rep = nh // nkv
        k = k.repeat_interleave(rep, dim=0)
        v = v.repeat_interleave(rep, dim=0)
        a = causal_attention(q, k, v, cfg["sliding_window"] if sliding else None, scale, cfg.get("attn_logit_softcapping"))
        h = h + gemma_rms_norm(a @ w[p + "self_attn.o_proj.weight"].T, w[p + "post_attention_layernorm.weight"], eps)
        x = gemma_rms_norm(h, w[p + "pre_feedforward_layernorm.weight"], eps)
        m = gelu_new(x @ w[p + "mlp.gate_proj.weight"].T) * (x @ w[p + "mlp.up_proj.weight"].T)
        m = m @ w[p + "mlp.down_proj.weight"].T
        h = h + gemma_rms_norm(m, w[p + "post_feedforward_layernorm.weight"], eps)
    h = gemma_rms_norm(h, w["model.norm.weight"], eps)
    logits = h @ w["model.embed_tokens.weight"].T
    cap = cfg.get("final_logit_softcapping")
    if cap is not None:
        logits = torch.tanh(logits / cap) * cap
    return logits


def phi3_rope(cfg, hd, t):
    """(inv_freq, attention scaling) of transformers' longrope for a call whose positions are 0..t-1."""
    base = cfg.get("rope_theta", 10000.0)
    rs = cfg.get("rope_scaling")
    shape = torch.arange(0, hd, 2, dtype=torch.int64).float() / hd
    if rs is None:
        return 1.0 / (base ** shape), 1.0
    # Phi3Config's own attribute (default 4096), never rope_scaling's: transformers 4 reads config.original_max_position_
    # embeddings, and transformers 5's standardize_rope_params copies that attribute over the rope_parameters' value.
    original = cfg.get("original_max_position_embeddings", 4096)
    factor = cfg["max_position_embeddings"] / original
    attention_factor = rs.get("attention_factor")
    if attention_factor is None:
        attention_factor = math.sqrt(1 + math.log(factor) / math.log(original)) if factor > 1.0 else 1.0
    ext = torch.tensor(rs["long_factor"] if t > original else rs["short_factor"], dtype=torch.float32)
    return 1.0 / (ext * base ** shape), attention_factor


def phi3_forward(w, cfg, ids):
    """Phi-3 / Phi-4-mini (modeling_phi3.py): RoPE turns the first rot = int(hd * partial_rotary_factor) channels of
    each head (rotate_half within them) and passes the rest; the head is tied when tie_word_embeddings."""
    t = len(ids)
    d, nh = cfg["hidden_size"], cfg["num_attention_heads"]
    nkv = cfg.get("num_key_value_heads") or nh
    hd = d // nh
    rot = int(hd * cfg.get("partial_rotary_factor", 1.0))
    inter = cfg["intermediate_size"]
    eps = cfg["rms_norm_eps"]
    inv_freq, attention_factor = phi3_rope(cfg, rot, t)
    freqs = torch.arange(t, dtype=torch.float32)[:, None] * inv_freq[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    cos = (emb.cos() * attention_factor).double()  # float32 tables scaled in float32, as HF
    sin = (emb.sin() * attention_factor).double()
    h = w["model.embed_tokens.weight"][ids]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        x = rms_norm(h, w[p + "input_layernorm.weight"], eps)
        qkv = x @ w[p + "self_attn.qkv_proj.weight"].T
        q = qkv[:, : nh * hd].reshape(t, nh, hd).transpose(0, 1)
        k = qkv[:, nh * hd: nh * hd + nkv * hd].reshape(t, nkv, hd).transpose(0, 1)
        v = qkv[:, nh * hd + nkv * hd:].reshape(t, nkv, hd).transpose(0, 1)
        q = torch.cat((q[..., :rot] * cos + rotate_half(q[..., :rot]) * sin, q[..., rot:]), dim=-1)
        k = torch.cat((k[..., :rot] * cos + rotate_half(k[..., :rot]) * sin, k[..., rot:]), dim=-1)
        rep = nh // nkv
        k = k.repeat_interleave(rep, dim=0)
        v = v.repeat_interleave(rep, dim=0)
        h = h + causal_attention(q, k, v, cfg.get("sliding_window")) @ w[p + "self_attn.o_proj.weight"].T
        x = rms_norm(h, w[p + "post_attention_layernorm.weight"], eps)
        gate_up = x @ w[p + "mlp.gate_up_proj.weight"].T
        gate, up = gate_up[:, :inter], gate_up[:, inter:]
        h = h + (up * (gate * torch.sigmoid(gate))) @ w[p + "mlp.down_proj.weight"].T
    h = rms_norm(h, w["model.norm.weight"], eps)
    head = w["model.embed_tokens.weight"] if cfg.get("tie_word_embeddings", False) else w["lm_head.weight"]
    return h @ head.T


# ----------------------------------------------------------------------------------------------
# random weights
# ----------------------------------------------------------------------------------------------


def randn(g, *shape, std):
    return torch.randn(*shape, generator=g, dtype=torch.float32) * std


def norm_weight(g, n):
    return 1.0 + randn(g, n, std=0.1)


def gpt2_weights(g, cfg):
    """HF names without prefix; Conv1D weights [in, out]."""
    d, v, pos = cfg["n_embd"], cfg["vocab_size"], cfg["n_positions"]
    inner = cfg.get("n_inner") or 4 * d
    w = {"wte.weight": randn(g, v, d, std=0.5), "wpe.weight": randn(g, pos, d, std=0.2)}
    for i in range(cfg["n_layer"]):
        p = f"h.{i}."
        w[p + "ln_1.weight"] = norm_weight(g, d)
        w[p + "ln_1.bias"] = randn(g, d, std=0.1)
        w[p + "attn.c_attn.weight"] = randn(g, d, 3 * d, std=0.2)
        w[p + "attn.c_attn.bias"] = randn(g, 3 * d, std=0.1)
        w[p + "attn.c_proj.weight"] = randn(g, d, d, std=0.2)
        w[p + "attn.c_proj.bias"] = randn(g, d, std=0.1)
        w[p + "ln_2.weight"] = norm_weight(g, d)
        w[p + "ln_2.bias"] = randn(g, d, std=0.1)
        w[p + "mlp.c_fc.weight"] = randn(g, d, inner, std=0.2)
        w[p + "mlp.c_fc.bias"] = randn(g, inner, std=0.1)
        w[p + "mlp.c_proj.weight"] = randn(g, inner, d, std=0.1)
        w[p + "mlp.c_proj.bias"] = randn(g, d, std=0.1)
    w["ln_f.weight"] = norm_weight(g, d)
    w["ln_f.bias"] = randn(g, d, std=0.1)
    return w


def llama_weights(g, cfg, qkv_bias=False, o_bias=False, mlp_bias=False):
    d, v = cfg["hidden_size"], cfg["vocab_size"]
    nh = cfg["num_attention_heads"]
    nkv = cfg.get("num_key_value_heads") or nh
    hd = cfg.get("head_dim") or d // nh
    inter = cfg["intermediate_size"]
    w = {"model.embed_tokens.weight": randn(g, v, d, std=0.5)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = norm_weight(g, d)
        w[p + "self_attn.q_proj.weight"] = randn(g, nh * hd, d, std=0.2)
        w[p + "self_attn.k_proj.weight"] = randn(g, nkv * hd, d, std=0.2)
        w[p + "self_attn.v_proj.weight"] = randn(g, nkv * hd, d, std=0.2)
        w[p + "self_attn.o_proj.weight"] = randn(g, d, nh * hd, std=0.2)
        if qkv_bias:
            w[p + "self_attn.q_proj.bias"] = randn(g, nh * hd, std=0.1)
            w[p + "self_attn.k_proj.bias"] = randn(g, nkv * hd, std=0.1)
            w[p + "self_attn.v_proj.bias"] = randn(g, nkv * hd, std=0.1)
        if o_bias:
            w[p + "self_attn.o_proj.bias"] = randn(g, d, std=0.1)
        w[p + "post_attention_layernorm.weight"] = norm_weight(g, d)
        w[p + "mlp.gate_proj.weight"] = randn(g, inter, d, std=0.2)
        w[p + "mlp.up_proj.weight"] = randn(g, inter, d, std=0.2)
        w[p + "mlp.down_proj.weight"] = randn(g, d, inter, std=0.15)
        if mlp_bias:
            w[p + "mlp.gate_proj.bias"] = randn(g, inter, std=0.1)
            w[p + "mlp.up_proj.bias"] = randn(g, inter, std=0.1)
            w[p + "mlp.down_proj.bias"] = randn(g, d, std=0.1)
    w["model.norm.weight"] = norm_weight(g, d)
    if not cfg.get("tie_word_embeddings", False):
        w["lm_head.weight"] = randn(g, v, d, std=0.2)
    return w


def qk_norm_weights(g, w, cfg, offset):
    hd = cfg["head_dim"]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}.self_attn."
        w[p + "q_norm.weight"] = offset + randn(g, hd, std=0.1)
        w[p + "k_norm.weight"] = offset + randn(g, hd, std=0.1)


def gemma_weights(g, cfg):
    """Norm weights are stored as w with the model scaling by (1 + w): small random values around 0."""
    d, v = cfg["hidden_size"], cfg["vocab_size"]
    nh, nkv, hd = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    inter = cfg["intermediate_size"]
    w = {"model.embed_tokens.weight": randn(g, v, d, std=0.1)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = randn(g, d, std=0.1)
        w[p + "self_attn.q_proj.weight"] = randn(g, nh * hd, d, std=0.2)
        w[p + "self_attn.k_proj.weight"] = randn(g, nkv * hd, d, std=0.2)
        w[p + "self_attn.v_proj.weight"] = randn(g, nkv * hd, d, std=0.2)
        w[p + "self_attn.o_proj.weight"] = randn(g, d, nh * hd, std=0.2)
        w[p + "post_attention_layernorm.weight"] = randn(g, d, std=0.1)
        w[p + "pre_feedforward_layernorm.weight"] = randn(g, d, std=0.1)
        w[p + "mlp.gate_proj.weight"] = randn(g, inter, d, std=0.2)
        w[p + "mlp.up_proj.weight"] = randn(g, inter, d, std=0.2)
        w[p + "mlp.down_proj.weight"] = randn(g, d, inter, std=0.15)
        w[p + "post_feedforward_layernorm.weight"] = randn(g, d, std=0.1)
    if cfg["model_type"] == "gemma3_text":
        qk_norm_weights(g, w, cfg, 0.0)
    w["model.norm.weight"] = randn(g, d, std=0.1)
    return w


def bf16_round(w):
    return {k: t.to(torch.bfloat16).to(torch.float32) for k, t in w.items()}


# ----------------------------------------------------------------------------------------------
# fixture writing
# ----------------------------------------------------------------------------------------------


def write_bench_checkpoint(description, make):
    """The main() of the scripts that write a real-size benchmark checkpoint: --out DIR and --seed N; make(generator)
    returns (config, weights); the weights are written as bf16 with the config beside them."""
    import argparse
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    cfg, w = make(torch.Generator().manual_seed(args.seed))
    os.makedirs(args.out, exist_ok=True)
    write_safetensors(os.path.join(args.out, "model.safetensors"), w, "BF16", {"format": "pt"})
    write_config(args.out, cfg)
    print(f"{sum(t.numel() for t in w.values()) / 1e6:.1f}M parameters written to {args.out}")


def fmt(x):
    return float("%.9g" % float(x))  # round-trips float32


def write_reference(dirname, description, cases, forward, weights, cfg, inv_freq=None, extra=None):
    w64 = {k: t.double() for k, t in weights.items()}
    out = {"description": description, "tolerance": TOLERANCE, "cases": []}
    for ids in cases:
        logits = forward(w64, cfg, torch.tensor(ids)).to(torch.float32)
        out["cases"].append({"input_ids": ids, "logits": [[fmt(x) for x in row] for row in logits.tolist()]})
    if inv_freq is not None:
        out["inv_freq"] = [fmt(x) for x in inv_freq.tolist()]
    out.update(extra or {})
    with open(os.path.join(dirname, "reference.json"), "w") as f:
        json.dump(out, f, separators=(",", ":"))
        f.write("\n")


def write_config(dirname, cfg):
    with open(os.path.join(dirname, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")


def make_cases(g, vocab):
    return [torch.randint(0, vocab, (n,), generator=g).tolist() for n in (16, 7)]


def fresh_dir(name):
    d = os.path.join(ROOT, name)
    if os.path.isdir(d):
        shutil.rmtree(d)
    os.makedirs(d)
    return d


def gpt2_config(**over):
    cfg = {
        "activation_function": "gelu_new",
        "architectures": ["GPT2LMHeadModel"],
        "attn_pdrop": 0.1,
        "bos_token_id": 79,
        "embd_pdrop": 0.1,
        "eos_token_id": 79,
        "initializer_range": 0.02,
        "layer_norm_epsilon": 1e-05,
        "model_type": "gpt2",
        "n_ctx": 32,
        "n_embd": 32,
        "n_head": 4,
        "n_layer": 2,
        "n_positions": 32,
        "resid_pdrop": 0.1,
        "summary_activation": None,
        "summary_first_dropout": 0.1,
        "summary_proj_to_labels": True,
        "summary_type": "cls_index",
        "summary_use_proj": True,
        "task_specific_params": {"text-generation": {"do_sample": True, "max_length": 50}},
        "vocab_size": 80,
    }
    cfg.update(over)
    return cfg


def llama_family_config(model_type, arch, **over):
    cfg = {
        "architectures": [arch],
        "attention_dropout": 0.0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "hidden_act": "silu",
        "hidden_size": 32,
        "initializer_range": 0.02,
        "intermediate_size": 64,
        "max_position_embeddings": 64,
        "model_type": model_type,
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
        "num_key_value_heads": 2,
        "rms_norm_eps": 1e-06,
        "rope_scaling": None,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "transformers_version": "4.46.0",
        "use_cache": True,
        "vocab_size": 96,
    }
    cfg.update(over)
    return cfg


def fixture_gpt2_hub():
    g = torch.Generator().manual_seed(1001)
    cfg = gpt2_config()
    w = gpt2_weights(g, cfg)
    d = fresh_dir("gpt2-hub")
    stored = dict(w)
    pos = cfg["n_positions"]
    for i in range(cfg["n_layer"]):  # buffers present in the original hub files; loaders ignore them
        stored[f"h.{i}.attn.bias"] = torch.tril(torch.ones(pos, pos)).reshape(1, 1, pos, pos)
        stored[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    write_safetensors(os.path.join(d, "model.safetensors"), stored, "F32", {"format": "pt"})
    write_config(d, cfg)
    write_reference(d, "gpt2, original hub naming (h.N..., wte, no prefix), attn.bias/masked_bias buffers, "
                    "n_inner absent (=4*n_embd), tied head", make_cases(g, cfg["vocab_size"]), gpt2_forward, w, cfg)


def fixture_gpt2_save_pretrained():
    g = torch.Generator().manual_seed(1002)
    cfg = gpt2_config(n_inner=96, layer_norm_epsilon=1e-5, tie_word_embeddings=True, torch_dtype="float32",
                      transformers_version="4.46.0", vocab_size=72, bos_token_id=0, eos_token_id=0, n_positions=24,
                      n_ctx=24)
    w = gpt2_weights(g, cfg)
    d = fresh_dir("gpt2-save-pretrained")
    stored = {"transformer." + k: t for k, t in w.items()}
    stored["lm_head.weight"] = w["wte.weight"].clone()  # a tied copy, as older save_pretrained wrote
    write_safetensors(os.path.join(d, "model.safetensors"), stored, "F32", {"format": "pt"})
    write_config(d, cfg)
    write_reference(d, "gpt2, save_pretrained naming (transformer. prefix), lm_head.weight present but tied, "
                    "explicit n_inner=96", make_cases(g, cfg["vocab_size"]), gpt2_forward, w, cfg)


def fixture_gpt2_exact_gelu():
    g = torch.Generator().manual_seed(1021)
    cfg = gpt2_config(activation_function="gelu", n_inner=80, vocab_size=76, n_positions=32, n_ctx=32,
                      transformers_version="4.46.0")
    w = gpt2_weights(g, cfg)
    d = fresh_dir("gpt2-exact-gelu")
    write_safetensors(os.path.join(d, "model.safetensors"), w, "F32", {"format": "pt"})
    write_config(d, cfg)
    write_reference(d, "gpt2 with activation_function gelu (PyTorch's exact erf GELU), n_inner 80, tied head",
                    make_cases(g, cfg["vocab_size"]), gpt2_forward, w, cfg)


def fixture_gemma1():
    g = torch.Generator().manual_seed(1022)
    # As the Gemma 1.1 releases: hidden_act "gelu" beside hidden_activation "gelu_pytorch_tanh" (which wins), grouped
    # queries (heads 4 / kv 1 like the 2B's single kv head), head_dim 16 != hidden / heads, tied embeddings.
    cfg = llama_family_config("gemma", "GemmaForCausalLM", hidden_act="gelu", hidden_activation="gelu_pytorch_tanh",
                              num_key_value_heads=1, head_dim=16, tie_word_embeddings=True, attention_bias=False,
                              vocab_size=82, bos_token_id=2, eos_token_id=1, pad_token_id=0, max_position_embeddings=64,
                              transformers_version="4.40.0")
    w = llama_weights(g, cfg)
    d = fresh_dir("gemma1-geglu")
    write_safetensors(os.path.join(d, "model.safetensors"), w, "F32", {"format": "pt"})
    write_config(d, cfg)
    write_reference(d, "gemma (1.1): (1 + w) RMSNorm, embeddings x sqrt(32), GeGLU with hidden_activation "
                    "gelu_pytorch_tanh over hidden_act gelu, heads 4 / kv 1, head_dim 16, tied",
                    make_cases(g, cfg["vocab_size"]), llama_forward, w, cfg, rope_inv_freq(cfg, 16))


def fixture_llama_gqa():
    g = torch.Generator().manual_seed(1003)
    cfg = llama_family_config("llama", "LlamaForCausalLM", attention_bias=False, mlp_bias=False,
                              pretraining_tp=1, head_dim=8)
    w = llama_weights(g, cfg)
    d = fresh_dir("llama-gqa")
    write_safetensors(os.path.join(d, "model.safetensors"), w, "F32", {"format": "pt"})
    write_config(d, cfg)
    write_reference(d, "llama, heads 4 / kv 2 (GQA), untied lm_head, rope_theta 1e4, no biases",
                    make_cases(g, cfg["vocab_size"]), llama_forward, w, cfg, rope_inv_freq(cfg, 8))


def fixture_qwen2():
    g = torch.Generator().manual_seed(1004)
    cfg = llama_family_config("qwen2", "Qwen2ForCausalLM", num_key_value_heads=1, rope_theta=1000000.0,
                              tie_word_embeddings=True, max_window_layers=2, sliding_window=64,
                              use_sliding_window=False, vocab_size=88, bos_token_id=86, eos_token_id=87)
    w = llama_weights(g, cfg, qkv_bias=True)
    d = fresh_dir("qwen2-tied-bias")
    write_safetensors(os.path.join(d, "model.safetensors"), w, "F32", {"format": "pt"})
    write_config(d, cfg)
    write_reference(d, "qwen2, q/k/v biases (no o bias), heads 4 / kv 1, tied embeddings, rope_theta 1e6",
                    make_cases(g, cfg["vocab_size"]), llama_forward, w, cfg, rope_inv_freq(cfg, 8))


def fixture_llama_sharded():
    g = torch.Generator().manual_seed(1005)
    cfg = llama_family_config("llama", "LlamaForCausalLM", attention_bias=True, mlp_bias=True,
                              num_key_value_heads=4, pad_token_id=0)
    w = llama_weights(g, cfg, qkv_bias=True, o_bias=True, mlp_bias=True)
    d = fresh_dir("llama-sharded")
    first = {k: t for k, t in w.items() if k.startswith("model.embed_tokens") or k.startswith("model.layers.0.")}
    second = {k: t for k, t in w.items() if k not in first}
    names = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    total = 0
    weight_map = {}
    for shard, part in zip(names, (first, second)):
        total += write_safetensors(os.path.join(d, shard), part, "F32", {"format": "pt"})
        for k in part:
            weight_map[k] = shard
    with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}, f, indent=2)
        f.write("\n")
    write_config(d, cfg)
    write_reference(d, "llama in 2 shards + index.json; attention_bias (q,k,v,o) and mlp_bias true; "
                    "heads 4 / kv 4; pad_token_id 0", make_cases(g, cfg["vocab_size"]), llama_forward, w, cfg)


def fixture_llama_bf16():
    g = torch.Generator().manual_seed(1006)
    cfg = llama_family_config("llama", "LlamaForCausalLM", torch_dtype="bfloat16")
    w = bf16_round(llama_weights(g, cfg))
    d = fresh_dir("llama-bf16")
    write_safetensors(os.path.join(d, "model.safetensors"), w, "BF16", {"format": "pt"})
    write_config(d, cfg)
    write_reference(d, "llama stored as BF16; reference logits from the bf16 weights upcast to float32",
                    make_cases(g, cfg["vocab_size"]), llama_forward, w, cfg)


def fixture_mistral():
    g = torch.Generator().manual_seed(1007)
    cfg = llama_family_config("mistral", "MistralForCausalLM", hidden_size=48, head_dim=16, intermediate_size=80,
                              sliding_window=4096, vocab_size=64)
    w = llama_weights(g, cfg)
    d = fresh_dir("mistral-gqa")
    write_safetensors(os.path.join(d, "model.safetensors"), w, "F32", {"format": "pt"})
    write_config(d, cfg)
    write_reference(d, "mistral, no biases, heads 4 / kv 2, explicit head_dim 16 != hidden/heads (12), untied",
                    make_cases(g, cfg["vocab_size"]), llama_forward, w, cfg, rope_inv_freq(cfg, 16))


def fixture_mistral_sliding_window():
    g = torch.Generator().manual_seed(1009)
    cfg = llama_family_config("mistral", "MistralForCausalLM", sliding_window=5, vocab_size=72)
    w = llama_weights(g, cfg)
    d = fresh_dir("mistral-sliding-window")
    write_safetensors(os.path.join(d, "model.safetensors"), w, "F32", {"format": "pt"})
    write_config(d, cfg)
    write_reference(d, "mistral, sliding_window 5 with inputs of 16 and 7 tokens (positions >= 5 lose their oldest keys), "
                    "heads 4 / kv 2", make_cases(g, cfg["vocab_size"]), llama_forward, w, cfg)


def fixture_llama3_rope():
    g = torch.Generator().manual_seed(1008)
    cfg = llama_family_config("llama", "LlamaForCausalLM", head_dim=16, num_key_value_heads=2, hidden_size=32,
                              num_attention_heads=2, tie_word_embeddings=True, rope_theta=500000.0,
                              bos_token_id=90, eos_token_id=[91, 92],
                              rope_scaling={"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                            "original_max_position_embeddings": 64, "rope_type": "llama3"})
    w = llama_weights(g, cfg)
    d = fresh_dir("llama3-rope-scaling")
    write_safetensors(os.path.join(d, "model.safetensors"), w, "F32", {"format": "pt"})
    write_config(d, cfg)
    write_reference(d, "llama with llama3 rope_scaling (factor 8, original context 64), rope_theta 5e5, "
                    "tied embeddings, eos_token_id list", make_cases(g, cfg["vocab_size"]), llama_forward, w, cfg,
                    rope_inv_freq(cfg, 16))


def fixture_qwen2_sliding_window():
    g = torch.Generator().manual_seed(1014)
    cfg = llama_family_config("qwen2", "Qwen2ForCausalLM", num_hidden_layers=3, use_sliding_window=True,
                              sliding_window=5, max_window_layers=1, vocab_size=72)
    w = llama_weights(g, cfg, qkv_bias=True)
    d = fresh_dir("qwen2-sliding-window")
    write_safetensors(os.path.join(d, "model.safetensors"), w, "F32", {"format": "pt"})
    write_config(d, cfg)
    write_reference(d, "qwen2, use_sliding_window with window 5 on layers 1 and 2 (max_window_layers 1, no layer_types), "
                    "q/k/v biases", make_cases(g, cfg["vocab_size"]), llama_forward, w, cfg)


def fixture_qwen3():
    g = torch.Generator().manual_seed(1010)
    cfg = llama_family_config("qwen3", "Qwen3ForCausalLM", head_dim=16, tie_word_embeddings=True, attention_bias=False,
                              rope_theta=1000000.0, max_window_layers=2, sliding_window=None, use_sliding_window=False,
                              vocab_size=88, bos_token_id=None, eos_token_id=86, transformers_version="4.51.0")
    w = llama_weights(g, cfg)
    qk_norm_weights(g, w, cfg, 1.0)
    d = fresh_dir("qwen3-qk-norm")
    write_safetensors(os.path.join(d, "model.safetensors"), w, "F32", {"format": "pt"})
    write_config(d, cfg)
    write_reference(d, "qwen3, per-head q_norm/k_norm, explicit head_dim 16 != hidden/heads (8), heads 4 / kv 2, "
                    "tied embeddings, rope_theta 1e6", make_cases(g, cfg["vocab_size"]), llama_forward, w, cfg,
                    rope_inv_freq(cfg, 16))


def fixture_smollm3():
    g = torch.Generator().manual_seed(1015)
    # An explicit no_rope_layers that differs from what no_rope_layer_interval 4 would give ([1, 1, 1, 0]): the list wins.
    cfg = llama_family_config("smollm3", "SmolLM3ForCausalLM", num_hidden_layers=4, no_rope_layers=[1, 1, 0, 1],
                              no_rope_layer_interval=4, use_sliding_window=False, sliding_window=None,
                              layer_types=["full_attention"] * 4, attention_bias=False, mlp_bias=False,
                              tie_word_embeddings=True, rope_theta=2000000.0, vocab_size=90, bos_token_id=None,
                              eos_token_id=88, pad_token_id=89, transformers_version="4.53.0")
    w = llama_weights(g, cfg)
    d = fresh_dir("smollm3-nope")
    write_safetensors(os.path.join(d, "model.safetensors"), w, "F32", {"format": "pt"})
    write_config(d, cfg)
    write_reference(d, "smollm3, no_rope_layers [1, 1, 0, 1] (layer 2 without RoPE), heads 4 / kv 2, tied embeddings, "
                    "rope_theta 2e6", make_cases(g, cfg["vocab_size"]), llama_forward, w, cfg, rope_inv_freq(cfg, 8))


def fixture_olmo2():
    g = torch.Generator().manual_seed(1016)
    cfg = llama_family_config("olmo2", "Olmo2ForCausalLM", num_hidden_layers=3, attention_bias=False, rms_norm_eps=1e-05,
                              rope_theta=500000.0, vocab_size=94, bos_token_id=None, eos_token_id=92, pad_token_id=93,
                              transformers_version="4.48.0")
    w = llama_weights(g, cfg)
    nh, nkv, hd = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["hidden_size"] // cfg["num_attention_heads"]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        del w[p + "input_layernorm.weight"]   # OLMo-2 normalises the sublayers' outputs, not their inputs
        w[p + "post_feedforward_layernorm.weight"] = norm_weight(g, cfg["hidden_size"])
        w[p + "self_attn.q_norm.weight"] = norm_weight(g, nh * hd)
        w[p + "self_attn.k_norm.weight"] = norm_weight(g, nkv * hd)
    d = fresh_dir("olmo2-post-norm")
    write_safetensors(os.path.join(d, "model.safetensors"), w, "F32", {"format": "pt"})
    write_config(d, cfg)
    write_reference(d, "olmo2, norms on the attention and MLP outputs only, q/k RMSNorm over the whole projection "
                    "(heads 4 / kv 2), untied head, rope_theta 5e5", make_cases(g, cfg["vocab_size"]), olmo2_forward, w, cfg,
                    rope_inv_freq(cfg, hd))


def gemma_config(model_type, arch, **over):
    cfg = {
        "architectures": [arch],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 2,
        "eos_token_id": 1,
        "pad_token_id": 0,
        "head_dim": 16,
        "hidden_activation": "gelu_pytorch_tanh",
        "hidden_size": 32,
        "initializer_range": 0.02,
        "intermediate_size": 64,
        "max_position_embeddings": 64,
        "model_type": model_type,
        "num_attention_heads": 4,
        "num_hidden_layers": 3,
        "num_key_value_heads": 2,
        "query_pre_attn_scalar": 24,
        "rms_norm_eps": 1e-06,
        "rope_theta": 10000.0,
        "torch_dtype": "float32",
        "transformers_version": "4.46.0",
        "use_cache": True,
        "vocab_size": 80,
    }
    cfg.update(over)
    return cfg


def fixture_gemma2():
    g = torch.Generator().manual_seed(1011)
    # No layer_types (configs before transformers 4.53): layers 0 and 2 slide. Small caps so both matter.
    cfg = gemma_config("gemma2", "Gemma2ForCausalLM", sliding_window=5, attn_logit_softcapping=2.0,
                       final_logit_softcapping=3.0, cache_implementation="hybrid")
    w = gemma_weights(g, cfg)
    d = fresh_dir("gemma2-softcap-window")
    write_safetensors(os.path.join(d, "model.safetensors"), w, "F32", {"format": "pt"})
    write_config(d, cfg)
    write_reference(d, "gemma2, 3 layers (0 and 2 sliding, window 5, no layer_types), attention soft cap 2, final "
                    "soft cap 3, query_pre_attn_scalar 24, head_dim 16, (1+w) norms, tied", make_cases(g, cfg["vocab_size"]),
                    gemma_forward, w, cfg)


def fixture_gemma3():
    g = torch.Generator().manual_seed(1012)
    cfg = gemma_config("gemma3_text", "Gemma3ForCausalLM", sliding_window=4, sliding_window_pattern=2,
                       layer_types=["sliding_attention", "full_attention", "sliding_attention"],
                       rope_theta=1000000.0, rope_local_base_freq=10000.0, query_pre_attn_scalar=16,
                       rope_scaling={"factor": 8.0, "rope_type": "linear"}, final_logit_softcapping=None,
                       attn_logit_softcapping=None, transformers_version="4.53.0")
    w = gemma_weights(g, cfg)
    d = fresh_dir("gemma3-local-global")
    write_safetensors(os.path.join(d, "model.safetensors"), w, "F32", {"format": "pt"})
    write_config(d, cfg)
    write_reference(d, "gemma3_text, layer_types sliding/full/sliding (window 4), q/k norms, local rope base 1e4, "
                    "global rope_theta 1e6 with linear scaling 8, query_pre_attn_scalar 16, tied",
                    make_cases(g, cfg["vocab_size"]), gemma_forward, w, cfg, rope_inv_freq(cfg, 16))


def phi3_config(short_factor, long_factor, **over):
    """Phi-3 with LongRoPE over a pre-training length of 8 (max 64): the 16-token case crosses it, the 7-token one not."""
    return llama_family_config("phi3", "Phi3ForCausalLM", rms_norm_eps=1e-05, original_max_position_embeddings=8,
                               max_position_embeddings=64, sliding_window=None, resid_pdrop=0.0, embd_pdrop=0.0,
                               rope_scaling={"type": "longrope", "short_factor": short_factor, "long_factor": long_factor},
                               **over)


def phi3_fixture(name, g, cfg):
    """Phi-3's weights (q|k|v and gate|up fused as it stores them), written to a fresh fixture directory."""
    w = llama_weights(g, cfg)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        w[p + "self_attn.qkv_proj.weight"] = torch.cat([w.pop(p + f"self_attn.{n}_proj.weight") for n in "qkv"], 0)
        w[p + "mlp.gate_up_proj.weight"] = torch.cat([w.pop(p + "mlp.gate_proj.weight"), w.pop(p + "mlp.up_proj.weight")], 0)
    d = fresh_dir(name)
    write_safetensors(os.path.join(d, "model.safetensors"), w, "F32", {"format": "pt"})
    write_config(d, cfg)
    return d, w


def fixture_phi3():
    g = torch.Generator().manual_seed(1013)
    cfg = phi3_config([1.0, 1.3, 2.1, 3.7], [1.5, 2.9, 6.0, 11.0], bos_token_id=1, eos_token_id=94, pad_token_id=95,
                      transformers_version="4.46.0")
    d, w = phi3_fixture("phi3-longrope", g, cfg)
    write_reference(d, "phi3, fused qkv_proj (heads 4 / kv 2) and gate_up_proj, longrope with original context 8 and "
                    "max 64 (attention factor sqrt(2)): the 16-token case uses the long factors, the 7-token case the "
                    "short ones", make_cases(g, cfg["vocab_size"]), phi3_forward, w, cfg)


def fixture_phi3_yarn_type():
    g = torch.Generator().manual_seed(1041)
    # Phi3Config renames rope_scaling type "su" and "yarn" to "longrope" (the early Phi-3 128k configs said so); its
    # factor is not read: LongRoPE's factor is max_position_embeddings / original_max_position_embeddings.
    cfg = phi3_config([1.0, 1.2, 1.5, 2.0], [1.5, 3.0, 6.0, 12.0], bos_token_id=1, eos_token_id=94, pad_token_id=95,
                      transformers_version="4.40.0")
    cfg["rope_scaling"] = {"type": "yarn", "factor": 2.0, "short_factor": cfg["rope_scaling"]["short_factor"],
                           "long_factor": cfg["rope_scaling"]["long_factor"]}
    d, w = phi3_fixture("phi3-yarn-type-longrope", g, cfg)
    write_reference(d, "phi3 with rope_scaling type yarn, which Phi3Config reads as longrope: original context 8, max 64, "
                    "the 16-token case uses the long factors", make_cases(g, cfg["vocab_size"]), phi3_forward, w, cfg)


def fixture_phi3_inner_original():
    g = torch.Generator().manual_seed(1042)
    # original_max_position_embeddings only inside rope_scaling: Phi3Config's top-level default 4096 is what
    # transformers uses (the inner 8 is overwritten by transformers 5, never read by 4), so max 64 < 4096: the short
    # factors and attention factor 1 in both cases.
    cfg = phi3_config([1.0, 1.2, 1.5, 2.0], [1.5, 3.0, 6.0, 12.0], bos_token_id=1, eos_token_id=94, pad_token_id=95,
                      transformers_version="4.46.0")
    del cfg["original_max_position_embeddings"]
    cfg["rope_scaling"]["original_max_position_embeddings"] = 8
    d, w = phi3_fixture("phi3-longrope-inner-original", g, cfg)
    write_reference(d, "phi3 longrope with original_max_position_embeddings 8 only inside rope_scaling: transformers "
                    "uses Phi3Config's default 4096, so the short factors and attention factor 1 throughout",
                    make_cases(g, cfg["vocab_size"]), phi3_forward, w, cfg)


def fixture_llama_pretraining_tp():
    g = torch.Generator().manual_seed(1043)
    # Llama-2-13b/70b say pretraining_tp 2 / 8. transformers <= 4.44 then split q/k/v/o, gate/up/down and lm_head's
    # weights into that many slices and summed or concatenated F.linear over them (no biases: F.linear(x, slice)), one
    # matmul in exact arithmetic; transformers 4.45+ ignores the field. The reference is the plain forward.
    cfg = llama_family_config("llama", "LlamaForCausalLM", attention_bias=False, mlp_bias=False, pretraining_tp=2)
    w = llama_weights(g, cfg)
    d = fresh_dir("llama-pretraining-tp2")
    write_safetensors(os.path.join(d, "model.safetensors"), w, "F32", {"format": "pt"})
    write_config(d, cfg)
    write_reference(d, "llama with pretraining_tp 2 and no biases: the sliced projections of old transformers equal the "
                    "unsliced ones", make_cases(g, cfg["vocab_size"]), llama_forward, w, cfg)


def fixture_phi4_mini():
    g = torch.Generator().manual_seed(1020)
    # Phi-4-mini's shape in small: partial_rotary_factor 0.75 (12 of head_dim 16 turned, 4 passed through), LongRoPE
    # factors over the 6 rotary pairs, grouped queries (heads 2 / kv 1), tied embeddings.
    cfg = phi3_config([1.0, 1.1, 1.9, 2.5, 4.0, 7.0], [1.2, 2.0, 3.1, 5.5, 9.0, 17.0], num_attention_heads=2,
                      num_key_value_heads=1, partial_rotary_factor=0.75, tie_word_embeddings=True, vocab_size=90,
                      bos_token_id=1, eos_token_id=88, pad_token_id=89, transformers_version="4.49.0")
    d, w = phi3_fixture("phi4-mini-partial-rotary", g, cfg)
    write_reference(d, "phi3 as Phi-4-mini: partial_rotary_factor 0.75 (RoPE on 12 of head_dim 16), longrope with "
                    "original context 8 and max 64 (the 16-token case uses the long factors), heads 2 / kv 1, tied",
                    make_cases(g, cfg["vocab_size"]), phi3_forward, w, cfg)


def fixture_granite():
    g = torch.Generator().manual_seed(1019)
    # Granite 3's multipliers, of the size the released 2B uses (embeddings x12, residuals x0.22, logits / 8), and an
    # attention scale unlike hd^-1/2 (1/8 against 1/sqrt(8)); attention biases on q, k, v and o.
    cfg = llama_family_config("granite", "GraniteForCausalLM", attention_bias=True, mlp_bias=False, vocab_size=86,
                              embedding_multiplier=12.0, attention_multiplier=0.125, residual_multiplier=0.22,
                              logits_scaling=8.0, bos_token_id=0, eos_token_id=0, pad_token_id=85,
                              transformers_version="4.46.0")
    w = llama_weights(g, cfg, qkv_bias=True, o_bias=True)
    d = fresh_dir("granite-multipliers")
    write_safetensors(os.path.join(d, "model.safetensors"), w, "F32", {"format": "pt"})
    write_config(d, cfg)
    write_reference(d, "granite, embedding_multiplier 12, attention_multiplier 1/8, residual_multiplier 0.22, "
                    "logits_scaling 8, attention biases (q/k/v/o), heads 4 / kv 2, untied head",
                    make_cases(g, cfg["vocab_size"]), llama_forward, w, cfg)


ROPE_KEYS = ("rope_theta", "rope_scaling", "rope_local_base_freq", "rope_parameters", "original_max_position_embeddings")


def transformers5_config(cfg, rope_parameters):
    """cfg as transformers 5 saves it: the RoPE settings inside rope_parameters, dtype instead of torch_dtype."""
    cfg = {k: v for k, v in cfg.items() if k not in ROPE_KEYS}
    cfg["dtype"] = cfg.pop("torch_dtype", "float32")
    cfg["rope_parameters"] = rope_parameters
    cfg["transformers_version"] = "5.0.0"
    return cfg


def rope_variants(cfg, hd, variants):
    """Each variant's RoPE keys in place of cfg's, with transformers' inverse frequencies and attention scaling."""
    out = []
    for keys in variants:
        v = {k: x for k, x in cfg.items() if k not in ROPE_KEYS}
        v.update(keys)
        out.append({"keys": keys, "inv_freq": [fmt(x) for x in rope_inv_freq(v, hd).tolist()],
                    "attention_scaling": fmt(rope_attention_scaling(v))})
    return out


def fixture_qwen3_yarn_v5():
    g = torch.Generator().manual_seed(1017)
    base = llama_family_config("qwen3", "Qwen3ForCausalLM", head_dim=16, attention_bias=False, max_position_embeddings=128,
                               max_window_layers=2, sliding_window=None, use_sliding_window=False, vocab_size=84,
                               eos_token_id=83)
    # Pre-training length 32 over head_dim 16 and base 1e4: pair 0 keeps its frequency, pair 1 is half divided by 4,
    # pairs 2-7 are divided by 4; cos and sin are scaled by 0.1 ln 4 + 1.
    cfg = transformers5_config(base, {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
                                      "original_max_position_embeddings": 32})
    w = llama_weights(g, cfg)
    qk_norm_weights(g, w, cfg, 1.0)
    d = fresh_dir("qwen3-yarn-v5")
    write_safetensors(os.path.join(d, "model.safetensors"), w, "F32", {"format": "pt"})
    write_config(d, cfg)
    variants = [
        {"rope_parameters": {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
                             "original_max_position_embeddings": 32, "truncate": False}},
        {"rope_parameters": {"rope_type": "yarn", "rope_theta": 500000.0, "factor": 8.0, "original_max_position_embeddings": 64,
                             "beta_fast": 16, "beta_slow": 2, "mscale": 0.707, "mscale_all_dim": 1.0}},
        {"rope_parameters": {"rope_type": "yarn", "rope_theta": 1000000.0, "factor": None,
                             "original_max_position_embeddings": 16, "attention_factor": 1.25}},
        {"rope_theta": 10000.0, "original_max_position_embeddings": 24,
         "rope_scaling": {"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 100}},
        {"rope_theta": 2000.0, "rope_scaling": {"type": "yarn", "factor": 3.0, "beta_fast": 4, "beta_slow": 0.5}},
        {"rope_parameters": {"rope_type": "linear", "factor": 2.0}, "rope_theta": 50000.0},
        {"rope_parameters": {"full_attention": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                                                "high_freq_factor": 4.0, "original_max_position_embeddings": 64}}},
    ]
    write_reference(d, "qwen3 saved by transformers 5 (rope_parameters, dtype): YaRN factor 4 over a pre-training "
                    "length of 32, base 1e4, q/k norms, untied head; rope_variants: other RoPE keys with transformers' "
                    "frequencies and cos/sin scaling", make_cases(g, cfg["vocab_size"]), llama_forward, w, cfg,
                    rope_inv_freq(cfg, 16), {"rope_variants": rope_variants(cfg, 16, variants)})


def fixture_gemma3_v5():
    g = torch.Generator().manual_seed(1018)
    base = gemma_config("gemma3_text", "Gemma3ForCausalLM", sliding_window=4, max_position_embeddings=128,
                        layer_types=["sliding_attention", "full_attention", "sliding_attention"], query_pre_attn_scalar=16,
                        final_logit_softcapping=None, attn_logit_softcapping=None)
    cfg = transformers5_config(base, {
        "full_attention": {"rope_type": "yarn", "rope_theta": 1000000.0, "factor": 4.0, "original_max_position_embeddings": 32},
        "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
    })
    w = gemma_weights(g, cfg)
    d = fresh_dir("gemma3-v5-rope-per-layer-type")
    write_safetensors(os.path.join(d, "model.safetensors"), w, "F32", {"format": "pt"})
    write_config(d, cfg)
    write_reference(d, "gemma3_text saved by transformers 5: rope_parameters per layer type, YaRN (factor 4, "
                    "pre-training length 32, base 1e6) on the full-attention layer only, base 1e4 unscaled on the "
                    "sliding layers (window 4), q/k norms, tied", make_cases(g, cfg["vocab_size"]), gemma_forward, w, cfg,
                    rope_inv_freq(cfg, 16))


def neox_rope(cfg):
    """(rotary dims, base) of a GPT-NeoX config in either format: rotary_pct / rotary_emb_base (transformers 4) or
    rope_parameters' partial_rotary_factor / rope_theta (transformers 5); defaults 0.25 and 10000."""
    params = cfg.get("rope_parameters") or {}
    hd = cfg["hidden_size"] // cfg["num_attention_heads"]
    pct = params.get("partial_rotary_factor", cfg.get("rotary_pct", 0.25))
    return int(hd * pct), params.get("rope_theta", cfg.get("rotary_emb_base", 10000.0))


def partial_inv_freq(rot, base):
    """inv_freq over the rot rotary channels (float32, as transformers computes it for a partial rotary factor)."""
    return 1.0 / (base ** (torch.arange(0, rot, 2, dtype=torch.int64).float() / rot))


def partial_rope(t, rot, base):
    """RoPE of positions 0..t-1 on the first rot channels of the last axis (rotate_half within them), the rest passed
    through: GPT-NeoX, StableLM and Phi."""
    freqs = torch.arange(t, dtype=torch.float32)[:, None] * partial_inv_freq(rot, base)[None, :]
    emb = torch.cat((freqs, freqs), dim=-1).double()
    cos, sin = emb.cos(), emb.sin()

    def rope(x):
        r = x[..., :rot]
        return torch.cat((r * cos + rotate_half(r) * sin, x[..., rot:]), dim=-1)

    return rope


def neox_inv_freq(cfg):
    return partial_inv_freq(*neox_rope(cfg))


def neox_forward(w, cfg, ids):
    """GPT-NeoX as modeling_gpt_neox.py: w has HF names without the 'gpt_neox.' prefix (embed_out as is).
    query_key_value's output is viewed [T, heads, 3 * hd]: per head q, k, v; RoPE (rotate_half) on the first
    rotary dims of q and k only, over inv_freq of those dims; parallel residual h + attn(LN1(h)) + mlp(LN2(h)),
    else h += attn(LN1(h)); h += mlp(LN2(h))."""
    t = len(ids)
    d, nh = cfg["hidden_size"], cfg["num_attention_heads"]
    hd, eps = d // nh, cfg["layer_norm_eps"]
    rope = partial_rope(t, *neox_rope(cfg))
    act = torch.nn.functional.gelu if cfg["hidden_act"] == "gelu" else gelu_new
    lin = linear(w)
    h = w["embed_in.weight"][ids]
    for i in range(cfg["num_hidden_layers"]):
        p = f"layers.{i}."
        a = layer_norm(h, w[p + "input_layernorm.weight"], w[p + "input_layernorm.bias"], eps)
        qkv = lin(a, p + "attention.query_key_value").reshape(t, nh, 3 * hd).transpose(0, 1)
        q, k, v = rope(qkv[..., :hd]), rope(qkv[..., hd:2 * hd]), qkv[..., 2 * hd:]
        attn = lin(causal_attention(q, k, v), p + "attention.dense")

        def mlp(x):
            m = layer_norm(x, w[p + "post_attention_layernorm.weight"], w[p + "post_attention_layernorm.bias"], eps)
            return lin(act(lin(m, p + "mlp.dense_h_to_4h")), p + "mlp.dense_4h_to_h")

        if cfg.get("use_parallel_residual", True):
            h = mlp(h) + attn + h
        else:
            h = attn + h
            h = mlp(h) + h
    h = layer_norm(h, w["final_layer_norm.weight"], w["final_layer_norm.bias"], eps)
    return h @ w["embed_out.weight"].T


def layernorm_block_weights(g, w, p, d, inner, norms, attention, mlp):
    """One block's weights under prefix p, drawn in this order: the two LayerNorms' weight and bias, the attention's
    tensors (name, shape, std) as listed, then the MLP's fc and proj with biases (GPT-NeoX, BLOOM, GPTBigCode, GPT-Neo)."""
    for n in norms:
        w[p + n + ".weight"] = norm_weight(g, d)
        w[p + n + ".bias"] = randn(g, d, std=0.1)
    for name, shape, std in attention:
        w[p + name] = randn(g, *shape, std=std)
    fc, proj = mlp
    w[p + fc + ".weight"] = randn(g, inner, d, std=0.2)
    w[p + fc + ".bias"] = randn(g, inner, std=0.1)
    w[p + proj + ".weight"] = randn(g, d, inner, std=0.1)
    w[p + proj + ".bias"] = randn(g, d, std=0.1)


def fused_attention_specs(qkv, out, d, rows, bias=True):
    """A fused q/k/v projection qkv of rows rows and its output projection out (with biases when bias), as
    layernorm_block_weights draws them."""
    specs = [(qkv + ".weight", (rows, d), 0.2)] + ([(qkv + ".bias", (rows,), 0.1)] if bias else [])
    return specs + [(out + ".weight", (d, d), 0.2)] + ([(out + ".bias", (d,), 0.1)] if bias else [])


def neox_style_attention(prefix, d, bias=True):
    """GPT-NeoX's and BLOOM's query_key_value [3D, D] and dense."""
    return fused_attention_specs(prefix + "query_key_value", prefix + "dense", d, 3 * d, bias)


def neox_weights(g, cfg):
    """HF names without the 'gpt_neox.' prefix; biases on query_key_value and dense when attention_bias."""
    d, v, inner = cfg["hidden_size"], cfg["vocab_size"], cfg["intermediate_size"]
    bias = cfg.get("attention_bias", True)
    w = {"embed_in.weight": randn(g, v, d, std=0.5)}
    for i in range(cfg["num_hidden_layers"]):
        layernorm_block_weights(g, w, f"layers.{i}.", d, inner, ("input_layernorm", "post_attention_layernorm"),
                                neox_style_attention("attention.", d, bias), ("mlp.dense_h_to_4h", "mlp.dense_4h_to_h"))
    w["final_layer_norm.weight"] = norm_weight(g, d)
    w["final_layer_norm.bias"] = randn(g, d, std=0.1)
    w["embed_out.weight"] = randn(g, v, d, std=0.5)
    return w


def neox_config(**over):
    """A small GPTNeoXConfig as the Pythia releases save it (transformers 4)."""
    cfg = {
        "architectures": ["GPTNeoXForCausalLM"],
        "attention_dropout": 0.0,
        "bos_token_id": 0,
        "classifier_dropout": 0.1,
        "eos_token_id": 0,
        "hidden_act": "gelu",
        "hidden_dropout": 0.0,
        "hidden_size": 48,
        "initializer_range": 0.02,
        "intermediate_size": 192,
        "layer_norm_eps": 1e-05,
        "max_position_embeddings": 64,
        "model_type": "gpt_neox",
        "num_attention_heads": 3,
        "num_hidden_layers": 2,
        "rope_scaling": None,
        "rotary_emb_base": 10000,
        "rotary_pct": 0.25,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "transformers_version": "4.46.0",
        "use_cache": True,
        "use_parallel_residual": True,
        "vocab_size": 88,
    }
    cfg.update(over)
    return cfg


def fixture_neox_pythia():
    g = torch.Generator().manual_seed(1023)
    cfg = neox_config()
    w = neox_weights(g, cfg)
    d = fresh_dir("gpt-neox-pythia")
    stored = {("" if k == "embed_out.weight" else "gpt_neox.") + k: t for k, t in w.items()}
    pos, hd = cfg["max_position_embeddings"], cfg["hidden_size"] // cfg["num_attention_heads"]
    for i in range(cfg["num_hidden_layers"]):  # buffers the Pythia hub files carry; loaders ignore them
        stored[f"gpt_neox.layers.{i}.attention.bias"] = torch.tril(torch.ones(pos, pos)).reshape(1, 1, pos, pos)
        stored[f"gpt_neox.layers.{i}.attention.masked_bias"] = torch.tensor(-1e9)
        stored[f"gpt_neox.layers.{i}.attention.rotary_emb.inv_freq"] = neox_inv_freq(cfg)
    write_safetensors(os.path.join(d, "model.safetensors"), stored, "F32", {"format": "pt"})
    write_config(d, cfg)
    write_reference(d, "gpt_neox as Pythia: q/k/v fused head by head (heads 3, head size 16), rotary_pct 0.25 (RoPE on "
                    "4 of 16 channels), parallel residual, exact GELU, LayerNorms with biases, untied embed_out, the "
                    "attention's mask and rotary buffers stored", make_cases(g, cfg["vocab_size"]), neox_forward, w, cfg,
                    neox_inv_freq(cfg))


def fixture_neox_v5_sequential():
    g = torch.Generator().manual_seed(1024)
    base = neox_config(use_parallel_residual=False, attention_bias=False, hidden_act="gelu_new", hidden_size=64,
                       num_attention_heads=4, intermediate_size=96, vocab_size=90, eos_token_id=2)
    cfg = transformers5_config({k: v for k, v in base.items() if k not in ("rotary_emb_base", "rotary_pct")},
                               {"rope_type": "default", "rope_theta": 5000.0, "partial_rotary_factor": 0.5})
    w = neox_weights(g, cfg)
    d = fresh_dir("gpt-neox-v5-sequential")
    stored = {("" if k == "embed_out.weight" else "gpt_neox.") + k: t for k, t in w.items()}
    write_safetensors(os.path.join(d, "model.safetensors"), stored, "F32", {"format": "pt"})
    write_config(d, cfg)
    write_reference(d, "gpt_neox saved by transformers 5 (rope_parameters: base 5000, partial_rotary_factor 0.5, so 8 "
                    "of 16 channels turn), use_parallel_residual false, attention_bias false, gelu_new, untied embed_out",
                    make_cases(g, cfg["vocab_size"]), neox_forward, w, cfg, neox_inv_freq(cfg))


def layernorm_block_forward(w, cfg, ids, eps, rot, mlp, window=None):
    """Llama's projections (with the biases the file holds) under LayerNorms with biases (input_layernorm,
    post_attention_layernorm, model.norm): RoPE on the first rot channels of each head, grouped queries, causal attention
    (within window), h += mlp(ln(h), prefix); head tied or lm_head. StableLM and Starcoder2."""
    t = len(ids)
    nh, nkv = cfg["num_attention_heads"], cfg.get("num_key_value_heads") or cfg["num_attention_heads"]
    hd = cfg["hidden_size"] // nh
    rope = partial_rope(t, rot, cfg.get("rope_theta", 10000.0))
    lin = linear(w)

    def ln(x, name):
        return layer_norm(x, w[name + ".weight"], w[name + ".bias"], eps)

    h = w["model.embed_tokens.weight"][ids]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        x = ln(h, p + "input_layernorm")
        q = rope(lin(x, p + "self_attn.q_proj").reshape(t, nh, hd).transpose(0, 1))
        k = rope(lin(x, p + "self_attn.k_proj").reshape(t, nkv, hd).transpose(0, 1))
        v = lin(x, p + "self_attn.v_proj").reshape(t, nkv, hd).transpose(0, 1)
        k, v = k.repeat_interleave(nh // nkv, dim=0), v.repeat_interleave(nh // nkv, dim=0)
        h = h + lin(causal_attention(q, k, v, window), p + "self_attn.o_proj")
        h = h + mlp(lin, ln(h, p + "post_attention_layernorm"), p)
    head = w["model.embed_tokens.weight"] if cfg.get("tie_word_embeddings", False) else w["lm_head.weight"]
    return ln(h, "model.norm") @ head.T


def stablelm_forward(w, cfg, ids):
    """StableLM as modeling_stablelm.py: Llama's projections (q/k/v biases with use_qkv_bias, no o or MLP biases), LayerNorms
    with biases instead of RMSNorm, RoPE on the first int(hd * partial_rotary_factor) channels (default 0.25), grouped
    queries, gated SiLU MLP, untied lm_head."""
    hd = cfg["hidden_size"] // cfg["num_attention_heads"]

    def mlp(lin, x, p):
        g = lin(x, p + "mlp.gate_proj")
        return lin(g * torch.sigmoid(g) * lin(x, p + "mlp.up_proj"), p + "mlp.down_proj")

    return layernorm_block_forward(w, cfg, ids, cfg["layer_norm_eps"], int(hd * cfg.get("partial_rotary_factor", 0.25)), mlp)


def fixture_stablelm2():
    g = torch.Generator().manual_seed(1025)
    # As stablelm-2-1_6b's config, in small: q/k/v biases, LayerNorm eps 1e-5, partial_rotary_factor absent (the
    # default 0.25: RoPE on 4 of head_dim 16), grouped queries (heads 4 / kv 2), untied head.
    cfg = llama_family_config("stablelm", "StableLmForCausalLM", use_qkv_bias=True, qk_layernorm=False,
                              use_parallel_residual=False, layer_norm_eps=1e-05, hidden_size=64, vocab_size=92,
                              bos_token_id=0, eos_token_id=0, hidden_dropout=0.0)
    cfg.pop("rms_norm_eps")
    w = llama_weights(g, cfg, qkv_bias=True)
    d_model = cfg["hidden_size"]
    for name in [k for k in w if k.endswith("layernorm.weight")] + ["model.norm.weight"]:
        w[name[: -len(".weight")] + ".bias"] = randn(g, d_model, std=0.1)
    d = fresh_dir("stablelm2-qkv-bias")
    write_safetensors(os.path.join(d, "model.safetensors"), w, "F32", {"format": "pt"})
    write_config(d, cfg)
    write_reference(d, "stablelm (StableLM-2): LayerNorms with biases, use_qkv_bias, partial_rotary_factor absent (the "
                    "default 0.25: 4 of head_dim 16 turn), heads 4 / kv 2, SwiGLU, untied head",
                    make_cases(g, cfg["vocab_size"]), stablelm_forward, w, cfg)


def phi_forward(w, cfg, ids):
    """Phi-1/1.5/2 as modeling_phi.py: x = LN(h; input_layernorm) feeds both attention (q/k/v with biases, RoPE on the first
    int(hd * partial_rotary_factor) channels, dense with bias) and the MLP (fc1 -> gelu_new -> fc2, biases), and
    h = attn + mlp + h; logits = LN(h; final_layernorm) @ lm_head^T + lm_head.bias."""
    t = len(ids)
    nh, nkv = cfg["num_attention_heads"], cfg.get("num_key_value_heads") or cfg["num_attention_heads"]
    hd, eps = cfg["hidden_size"] // nh, cfg["layer_norm_eps"]
    rope = partial_rope(t, int(hd * cfg.get("partial_rotary_factor", 0.5)), cfg.get("rope_theta", 10000.0))
    act = torch.nn.functional.gelu if cfg["hidden_act"] == "gelu" else gelu_new
    lin = linear(w)
    h = w["model.embed_tokens.weight"][ids]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        x = layer_norm(h, w[p + "input_layernorm.weight"], w[p + "input_layernorm.bias"], eps)
        q = rope(lin(x, p + "self_attn.q_proj").reshape(t, nh, hd).transpose(0, 1))
        k = rope(lin(x, p + "self_attn.k_proj").reshape(t, nkv, hd).transpose(0, 1))
        v = lin(x, p + "self_attn.v_proj").reshape(t, nkv, hd).transpose(0, 1)
        k, v = k.repeat_interleave(nh // nkv, dim=0), v.repeat_interleave(nh // nkv, dim=0)
        attn = lin(causal_attention(q, k, v), p + "self_attn.dense")
        mlp = lin(act(lin(x, p + "mlp.fc1")), p + "mlp.fc2")
        h = attn + mlp + h
    h = layer_norm(h, w["model.final_layernorm.weight"], w["model.final_layernorm.bias"], eps)
    return lin(h, "lm_head")


def fixture_phi2():
    g = torch.Generator().manual_seed(1026)
    # As phi-2's config, in small: partial_rotary_factor 0.4 (head_dim 20: 8 channels turn), gelu_new, biases everywhere,
    # an untied head with a bias.
    cfg = {
        "architectures": ["PhiForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 50, "embd_pdrop": 0.0,
        "eos_token_id": 50, "hidden_act": "gelu_new", "hidden_size": 60, "initializer_range": 0.02,
        "intermediate_size": 120, "layer_norm_eps": 1e-05, "max_position_embeddings": 64, "model_type": "phi",
        "num_attention_heads": 3, "num_hidden_layers": 2, "num_key_value_heads": 3, "partial_rotary_factor": 0.4,
        "qk_layernorm": False, "resid_pdrop": 0.1, "rope_scaling": None, "rope_theta": 10000.0,
        "tie_word_embeddings": False, "torch_dtype": "float32", "transformers_version": "4.46.0", "use_cache": True,
        "vocab_size": 94,
    }
    d_model, inner, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    w = {"model.embed_tokens.weight": randn(g, v, d_model, std=0.5)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = norm_weight(g, d_model)
        w[p + "input_layernorm.bias"] = randn(g, d_model, std=0.1)
        for n in ("q_proj", "k_proj", "v_proj", "dense"):
            w[p + f"self_attn.{n}.weight"] = randn(g, d_model, d_model, std=0.2)
            w[p + f"self_attn.{n}.bias"] = randn(g, d_model, std=0.1)
        w[p + "mlp.fc1.weight"] = randn(g, inner, d_model, std=0.2)
        w[p + "mlp.fc1.bias"] = randn(g, inner, std=0.1)
        w[p + "mlp.fc2.weight"] = randn(g, d_model, inner, std=0.1)
        w[p + "mlp.fc2.bias"] = randn(g, d_model, std=0.1)
    w["model.final_layernorm.weight"] = norm_weight(g, d_model)
    w["model.final_layernorm.bias"] = randn(g, d_model, std=0.1)
    w["lm_head.weight"] = randn(g, v, d_model, std=0.3)
    w["lm_head.bias"] = randn(g, v, std=0.5)
    d = fresh_dir("phi2-parallel-head-bias")
    write_safetensors(os.path.join(d, "model.safetensors"), w, "F32", {"format": "pt"})
    write_config(d, cfg)
    write_reference(d, "phi (Phi-2): one LayerNorm feeding attention and MLP side by side, partial_rotary_factor 0.4 (8 of "
                    "head_dim 20 turn), gelu_new, biases on q/k/v/dense/fc1/fc2, untied lm_head with a bias",
                    make_cases(g, cfg["vocab_size"]), phi_forward, w, cfg)


def opt_forward(w, cfg, ids):
    """OPT as modeling_opt.py (w: HF names without 'model.decoder.', lm_head as is). Positions of an unpadded sequence are
    0..T-1, read from embed_positions two rows in; embeddings through project_in where word_embed_proj_dim differs;
    do_layer_norm_before: h += attn(LN(h)); h += fc2(act(fc1(LN(h)))); then final_layer_norm; else (opt-350m)
    h = LN(h + attn(h)); h = LN(h + mlp(h)) and no final norm; then project_out; logits = h @ embed_tokens^T (tied).
    Every LayerNorm has eps 1e-5 (nn.LayerNorm's default; OPT's config has no key for it)."""
    t = len(ids)
    d, nh = cfg["hidden_size"], cfg["num_attention_heads"]
    hd = d // nh
    before = cfg.get("do_layer_norm_before", True)
    act = {"relu": torch.relu, "gelu": torch.nn.functional.gelu, "gelu_new": gelu_new}[cfg["activation_function"]]
    lin = linear(w)

    def ln(x, name):
        return layer_norm(x, w[name + ".weight"], w[name + ".bias"], 1e-5)

    h = w["embed_tokens.weight"][ids]
    if "project_in.weight" in w:
        h = lin(h, "project_in")
    h = h + w["embed_positions.weight"][torch.arange(t) + 2]
    for i in range(cfg["num_hidden_layers"]):
        p = f"layers.{i}."
        x = ln(h, p + "self_attn_layer_norm") if before else h
        q, k, v = (lin(x, p + f"self_attn.{n}_proj").reshape(t, nh, hd).transpose(0, 1) for n in "qkv")
        h = h + lin(causal_attention(q, k, v), p + "self_attn.out_proj")
        if not before:
            h = ln(h, p + "self_attn_layer_norm")
        x = ln(h, p + "final_layer_norm") if before else h
        h = h + lin(act(lin(x, p + "fc1")), p + "fc2")
        if not before:
            h = ln(h, p + "final_layer_norm")
    if before:
        h = ln(h, "final_layer_norm")
    if "project_out.weight" in w:
        h = lin(h, "project_out")
    return h @ w["embed_tokens.weight"].T


def opt_fixture(name, seed, description, **over):
    g = torch.Generator().manual_seed(seed)
    cfg = {
        "_remove_final_layer_norm": False, "activation_dropout": 0.0, "activation_function": "relu",
        "architectures": ["OPTForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 2, "do_layer_norm_before": True,
        "dropout": 0.1, "enable_bias": True, "eos_token_id": 2, "ffn_dim": 128, "hidden_size": 32, "init_std": 0.02,
        "layer_norm_elementwise_affine": True, "layerdrop": 0.0, "max_position_embeddings": 40, "model_type": "opt",
        "num_attention_heads": 4, "num_hidden_layers": 2, "pad_token_id": 1, "prefix": "</s>", "torch_dtype": "float32",
        "transformers_version": "4.46.0", "use_cache": True, "vocab_size": 96, "word_embed_proj_dim": 32,
    }
    cfg.update(over)
    d_model, e, inner, v = cfg["hidden_size"], cfg["word_embed_proj_dim"], cfg["ffn_dim"], cfg["vocab_size"]
    w = {"embed_tokens.weight": randn(g, v, e, std=0.5),
         "embed_positions.weight": randn(g, cfg["max_position_embeddings"] + 2, d_model, std=0.2)}
    if e != d_model:
        w["project_in.weight"] = randn(g, d_model, e, std=0.3)
        w["project_out.weight"] = randn(g, e, d_model, std=0.3)
    for i in range(cfg["num_hidden_layers"]):
        p = f"layers.{i}."
        for n in ("self_attn_layer_norm", "final_layer_norm"):
            w[p + n + ".weight"] = norm_weight(g, d_model)
            w[p + n + ".bias"] = randn(g, d_model, std=0.1)
        for n in "qkv":
            w[p + f"self_attn.{n}_proj.weight"] = randn(g, d_model, d_model, std=0.2)
            w[p + f"self_attn.{n}_proj.bias"] = randn(g, d_model, std=0.1)
        w[p + "self_attn.out_proj.weight"] = randn(g, d_model, d_model, std=0.2)
        w[p + "self_attn.out_proj.bias"] = randn(g, d_model, std=0.1)
        w[p + "fc1.weight"] = randn(g, inner, d_model, std=0.2)
        w[p + "fc1.bias"] = randn(g, inner, std=0.1)
        w[p + "fc2.weight"] = randn(g, d_model, inner, std=0.1)
        w[p + "fc2.bias"] = randn(g, d_model, std=0.1)
    if cfg["do_layer_norm_before"]:
        w["final_layer_norm.weight"] = norm_weight(g, d_model)
        w["final_layer_norm.bias"] = randn(g, d_model, std=0.1)
    d = fresh_dir(name)
    stored = {"model.decoder." + k: t for k, t in w.items()}
    stored["lm_head.weight"] = w["embed_tokens.weight"].clone()  # tied; the hub's safetensors files carry it
    write_safetensors(os.path.join(d, "model.safetensors"), stored, "F32", {"format": "pt"})
    write_config(d, cfg)
    write_reference(d, description, make_cases(g, cfg["vocab_size"]), opt_forward, w, cfg)


def fixture_opt():
    opt_fixture("opt-125m-shape", 1027, "opt as opt-125m (in small): learned positions two rows in, LayerNorm before "
                "attention and MLP and at the end, ReLU, biases everywhere, tied head (lm_head.weight stored too)")
    opt_fixture("opt-350m-shape", 1028, "opt as opt-350m (in small): LayerNorm after each residual add and none at the "
                "end (do_layer_norm_before false), embeddings of width 16 projected in and out of hidden 32, ReLU, "
                "tied head", do_layer_norm_before=False, word_embed_proj_dim=16, vocab_size=90)


def exaone4_forward(w, cfg, ids):
    """EXAONE 4 as modeling_exaone4.py: no norm before attention or MLP; q and k RMS-normed per head over hd, then
    rotated only where sliding_window is None or the layer is sliding (the full layers of a windowed model use no
    position encoding); h += RMS(attn(h); post_attention_layernorm); h += RMS(mlp(h); post_feedforward_layernorm);
    logits = RMS(h; norm) @ embed_tokens^T (tied). A sliding layer's query sees at most sliding_window keys."""
    t = len(ids)
    nh, nkv, hd, eps = llama_shapes(cfg)
    cos, sin = rope_cos_sin(cfg, hd, t)
    lin = linear(w)
    window = cfg.get("sliding_window")
    h = w["model.embed_tokens.weight"][ids]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        sliding = cfg["layer_types"][i] == "sliding_attention" if "layer_types" in cfg else (i + 1) % cfg.get("sliding_window_pattern", 4) != 0
        q = rms_norm(lin(h, p + "self_attn.q_proj").reshape(t, nh, hd).transpose(0, 1), w[p + "self_attn.q_norm.weight"], eps)
        k = rms_norm(lin(h, p + "self_attn.k_proj").reshape(t, nkv, hd).transpose(0, 1), w[p + "self_attn.k_norm.weight"], eps)
        v = lin(h, p + "self_attn.v_proj").reshape(t, nkv, hd).transpose(0, 1)
        if window is None or sliding:
            q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        k, v = k.repeat_interleave(nh // nkv, dim=0), v.repeat_interleave(nh // nkv, dim=0)
        a = causal_attention(q, k, v, window if sliding else None)
        h = h + rms_norm(lin(a, p + "self_attn.o_proj"), w[p + "post_attention_layernorm.weight"], eps)
        g = lin(h, p + "mlp.gate_proj")
        m = lin(g * torch.sigmoid(g) * lin(h, p + "mlp.up_proj"), p + "mlp.down_proj")
        h = h + rms_norm(m, w[p + "post_feedforward_layernorm.weight"], eps)
    h = rms_norm(h, w["model.norm.weight"], eps)
    return h @ w["model.embed_tokens.weight"].T


def fixture_exaone4():
    g = torch.Generator().manual_seed(1029)
    # EXAONE 4.0's hybrid attention in small: four layers, layer_types absent so sliding_window_pattern 4 gives three
    # sliding layers (window 4) and a full one without RoPE; llama3 RoPE scaling as the releases use; tied head.
    cfg = llama_family_config("exaone4", "Exaone4ForCausalLM", num_hidden_layers=4, head_dim=16, sliding_window=4,
                              sliding_window_pattern=4, rms_norm_eps=1e-05, tie_word_embeddings=True, vocab_size=98,
                              max_position_embeddings=64, bos_token_id=1, eos_token_id=97,
                              rope_scaling={"rope_type": "llama3", "factor": 2.0, "low_freq_factor": 1.0,
                                            "high_freq_factor": 4.0, "original_max_position_embeddings": 16})
    w = llama_weights(g, cfg)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        del w[p + "input_layernorm.weight"]  # no norm before attention; post_attention_layernorm follows it
        w[p + "post_feedforward_layernorm.weight"] = norm_weight(g, cfg["hidden_size"])
        w[p + "self_attn.q_norm.weight"] = norm_weight(g, 16)
        w[p + "self_attn.k_norm.weight"] = norm_weight(g, 16)
    d = fresh_dir("exaone4-hybrid-nope")
    write_safetensors(os.path.join(d, "model.safetensors"), w, "F32", {"format": "pt"})
    write_config(d, cfg)
    write_reference(d, "exaone4: per-head q/k RMSNorm, norms after attention and MLP only, layers 0-2 sliding (window 4) "
                    "with llama3-scaled RoPE, layer 3 full attention without RoPE (sliding_window_pattern 4), heads 4 / "
                    "kv 2, head_dim 16, tied", make_cases(g, cfg["vocab_size"]), exaone4_forward, w, cfg,
                    rope_inv_freq(cfg, 16))


def rotate_interleaved(x):
    """GLM's rotate_half (transformers' glm / ernie4_5): pairs of adjacent channels, (x0, x1) -> (-x1, x0)."""
    return torch.stack((-x[..., 1::2], x[..., 0::2]), dim=-1).flatten(-2)


def ernie45_forward(w, cfg, ids):
    """ERNIE 4.5 dense as modular_ernie4_5.py: Llama's block (biases on every projection with use_bias), RoPE with cos
    and sin of the hd/2 angles repeated pairwise and GLM's rotate_half, so channels 2i and 2i + 1 turn together; tied."""
    _, _, hd, _ = llama_shapes(cfg)
    freqs = torch.arange(len(ids), dtype=torch.float32)[:, None] * rope_inv_freq(cfg, hd)[None, :]
    cos, sin = (f(freqs.double()).repeat_interleave(2, dim=-1) for f in (torch.cos, torch.sin))
    return llama_forward(w, cfg, ids, lambda q, k, p: (q * cos + rotate_interleaved(q) * sin,
                                                       k * cos + rotate_interleaved(k) * sin))


def fixture_ernie45():
    g = torch.Generator().manual_seed(1030)
    # ERNIE-4.5-0.3B's config in small: interleaved RoPE at base 500000, grouped queries (heads 4 / kv 2), head_dim 16,
    # tied head; use_bias true here so that every projection's bias is read (the release has none).
    cfg = llama_family_config("ernie4_5", "Ernie4_5ForCausalLM", use_bias=True, head_dim=16, rope_theta=500000.0,
                              rms_norm_eps=1e-05, tie_word_embeddings=True, vocab_size=100, bos_token_id=1,
                              eos_token_id=2, pad_token_id=0)
    w = llama_weights(g, cfg, qkv_bias=True, o_bias=True, mlp_bias=True)
    d = fresh_dir("ernie45-interleaved-rope")
    write_safetensors(os.path.join(d, "model.safetensors"), w, "F32", {"format": "pt"})
    write_config(d, cfg)
    write_reference(d, "ernie4_5: RoPE on interleaved channel pairs (base 500000), biases on every projection "
                    "(use_bias), heads 4 / kv 2, head_dim 16, tied", make_cases(g, cfg["vocab_size"]), ernie45_forward, w,
                    cfg, rope_inv_freq(cfg, 16))


def hunyuan_inv_freq(cfg, hd):
    """Hunyuan's NTK-alpha RoPE (modeling_hunyuan_v1_dense.py): base = rope_theta * alpha^(hd / (hd - 2)) in Python floats,
    then 1 / base^(arange(0, hd, 2) / hd) in float32."""
    base = cfg.get("rope_theta", 10000.0) * cfg["rope_scaling"]["alpha"] ** (hd / (hd - 2))
    return 1.0 / (base ** (torch.arange(0, hd, 2).float() / hd))


def hunyuan_forward(w, cfg, ids):
    """Hunyuan dense: Llama's block (attention_bias on q/k/v/o), q and k rotated with the NTK-alpha frequencies and then
    RMS-normed per head over hd (query_layernorm / key_layernorm), SwiGLU, tied or untied head."""
    _, _, hd, eps = llama_shapes(cfg)
    freqs = torch.arange(len(ids), dtype=torch.float32)[:, None] * hunyuan_inv_freq(cfg, hd)[None, :]
    emb = torch.cat((freqs, freqs), dim=-1).double()
    cos, sin = emb.cos(), emb.sin()

    def rotate(q, k, p):
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        return rms_norm(q, w[p + "self_attn.query_layernorm.weight"], eps), rms_norm(k, w[p + "self_attn.key_layernorm.weight"], eps)

    return llama_forward(w, cfg, ids, rotate)


def fixture_hunyuan():
    g = torch.Generator().manual_seed(1031)
    # Hunyuan-0.5B's features in small: NTK-alpha RoPE (alpha 1000: base 1e4 * 1000^(16/14)), q/k RMSNorm after RoPE,
    # grouped queries (heads 4 / kv 2), head_dim 16, tied head, attention_bias false.
    cfg = llama_family_config("hunyuan_v1_dense", "HunYuanDenseV1ForCausalLM", head_dim=16, attention_bias=False,
                              rms_norm_eps=1e-05, tie_word_embeddings=True, vocab_size=102, bos_token_id=1,
                              eos_token_id=2, pad_token_id=0, rope_scaling={"alpha": 1000.0, "type": "dynamic"})
    w = llama_weights(g, cfg)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        w[p + "self_attn.query_layernorm.weight"] = norm_weight(g, 16)
        w[p + "self_attn.key_layernorm.weight"] = norm_weight(g, 16)
    d = fresh_dir("hunyuan-qk-norm-after-rope")
    write_safetensors(os.path.join(d, "model.safetensors"), w, "F32", {"format": "pt"})
    write_config(d, cfg)
    write_reference(d, "hunyuan_v1_dense: NTK-alpha RoPE (alpha 1000), per-head q/k RMSNorm after RoPE, heads 4 / kv 2, "
                    "head_dim 16, tied", make_cases(g, cfg["vocab_size"]), hunyuan_forward, w, cfg, hunyuan_inv_freq(cfg, 16))


def fixture_olmo():
    g = torch.Generator().manual_seed(1032)
    # OLMo-1B-hf's shape in small: LayerNorms without weight or bias (no eps key), attention_bias false, clip_qkv null,
    # multi-head attention, tied head.
    cfg = llama_family_config("olmo", "OlmoForCausalLM", num_key_value_heads=4, attention_bias=False, clip_qkv=None,
                              tie_word_embeddings=True, vocab_size=104, bos_token_id=None, eos_token_id=103, pad_token_id=1)
    cfg.pop("rms_norm_eps")
    w = {k: t for k, t in llama_weights(g, cfg).items() if "norm" not in k}
    d = fresh_dir("olmo1-nonparametric-norm")
    write_safetensors(os.path.join(d, "model.safetensors"), w, "F32", {"format": "pt"})
    write_config(d, cfg)
    write_reference(d, "olmo (1): LayerNorms without weight or bias, heads 4 / kv 4, tied",
                    make_cases(g, cfg["vocab_size"]), llama_forward, w, cfg, rope_inv_freq(cfg, 8))


def bloom_shape(cfg):
    """(hidden, heads, layers) under either spelling BLOOM configs use (hidden_size or n_embed, n_head or
    num_attention_heads, n_layer or num_hidden_layers)."""
    d = cfg.get("hidden_size", cfg.get("n_embed"))
    nh = cfg.get("n_head", cfg.get("num_attention_heads"))
    return d, nh, cfg.get("n_layer", cfg.get("num_hidden_layers"))


def bloom_alibi_slopes(nh):
    """build_alibi_tensor's slopes: powers of 2^(-8/n) for the largest power of two n <= heads, then every other power
    of 2^(-4/n) for the heads past it; float32 as transformers forms them."""
    closest = 2 ** math.floor(math.log2(nh))
    base = torch.tensor(2 ** (-(2 ** -(math.log2(closest) - 3))), dtype=torch.float32)
    slopes = torch.pow(base, torch.arange(1, 1 + closest, dtype=torch.int32))
    if closest != nh:
        extra = torch.tensor(2 ** (-(2 ** -(math.log2(2 * closest) - 3))), dtype=torch.float32)
        rest = min(closest, nh - closest)
        slopes = torch.cat([slopes, torch.pow(extra, torch.arange(1, 1 + 2 * rest, 2, dtype=torch.int32))])
    return slopes


def bloom_gelu(x):
    """modeling_bloom.py's bloom_gelu_forward, its constant as written there."""
    return x * 0.5 * (1.0 + torch.tanh(0.79788456 * x * (1 + 0.044715 * x * x)))


def bloom_forward(w, cfg, ids, mask=None):
    """BLOOM as modeling_bloom.py, one sequence; w has HF names without the 'transformer.' prefix. mask [T] (1 real,
    0 padding; default all real). h = LN(word_embeddings[ids]; word_embeddings_layernorm); per block
    a = LN(h; input_layernorm), query_key_value's output viewed [T, heads, 3 * hd] (per head q, k, v), scores
    alibi + q k^T / sqrt(hd) with alibi = slope_h * (running count of real keys - 1) * mask per key (transformers'
    build_alibi_tensor), causal and padding masks at the float32 minimum (as transformers masks), softmax,
    h += dense(P v); h += dense_4h_to_h(bloom_gelu(dense_h_to_4h(LN(h; post_attention_layernorm)))); logits =
    LN(h; ln_f) @ word_embeddings^T (tied)."""
    t = len(ids)
    d, nh, layers = bloom_shape(cfg)
    hd, eps = d // nh, cfg["layer_norm_epsilon"]
    m = torch.ones(t, dtype=torch.float64) if mask is None else torch.tensor(mask, dtype=torch.float64)
    alibi = bloom_alibi_slopes(nh).double()[:, None, None] * ((m.cumsum(-1) - 1) * m)[None, None, :]
    blocked = torch.triu(torch.ones(t, t, dtype=torch.bool), diagonal=1) | (m == 0)[None, :]
    lin = linear(w)
    h = layer_norm(w["word_embeddings.weight"][ids], w["word_embeddings_layernorm.weight"], w["word_embeddings_layernorm.bias"], eps)
    for i in range(layers):
        p = f"h.{i}."
        a = layer_norm(h, w[p + "input_layernorm.weight"], w[p + "input_layernorm.bias"], eps)
        qkv = lin(a, p + "self_attention.query_key_value").reshape(t, nh, 3 * hd).transpose(0, 1)
        q, k, v = qkv[..., :hd], qkv[..., hd:2 * hd], qkv[..., 2 * hd:]
        s = (alibi + q @ k.transpose(-1, -2) / math.sqrt(hd)).masked_fill(blocked, torch.finfo(torch.float32).min)
        ctx = (torch.softmax(s, dim=-1) @ v).transpose(0, 1).reshape(t, d)
        h = h + lin(ctx, p + "self_attention.dense")
        x = layer_norm(h, w[p + "post_attention_layernorm.weight"], w[p + "post_attention_layernorm.bias"], eps)
        h = h + lin(bloom_gelu(lin(x, p + "mlp.dense_h_to_4h")), p + "mlp.dense_4h_to_h")
    h = layer_norm(h, w["ln_f.weight"], w["ln_f.bias"], eps)
    return h @ w["word_embeddings.weight"].T


def bloom_weights(g, cfg):
    """HF names without the 'transformer.' prefix: LayerNorms with biases, biases on every projection, tied head."""
    d, _, layers = bloom_shape(cfg)
    v, inner = cfg["vocab_size"], 4 * d
    w = {"word_embeddings.weight": randn(g, v, d, std=0.5)}
    for n in ("word_embeddings_layernorm", "ln_f"):
        w[n + ".weight"] = norm_weight(g, d)
        w[n + ".bias"] = randn(g, d, std=0.1)
    for i in range(layers):
        layernorm_block_weights(g, w, f"h.{i}.", d, inner, ("input_layernorm", "post_attention_layernorm"),
                                neox_style_attention("self_attention.", d), ("mlp.dense_h_to_4h", "mlp.dense_4h_to_h"))
    return w


def bloom_config(**over):
    """A small BloomConfig as bloom-560m's hub config.json spells it (transformers 4.2x)."""
    cfg = {
        "apply_residual_connection_post_layernorm": False,
        "architectures": ["BloomForCausalLM"],
        "attention_dropout": 0.0,
        "attention_softmax_in_fp32": True,
        "bias_dropout_fusion": True,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "hidden_dropout": 0.0,
        "hidden_size": 64,
        "initializer_range": 0.02,
        "layer_norm_epsilon": 1e-05,
        "masked_softmax_fusion": True,
        "model_type": "bloom",
        "n_head": 4,
        "n_inner": None,
        "n_layer": 2,
        "offset_alibi": 100,
        "pad_token_id": 3,
        "pretraining_tp": 1,
        "skip_bias_add": True,
        "skip_bias_add_qkv": False,
        "slow_but_exact": False,
        "transformers_version": "4.26.0",
        "unk_token_id": 0,
        "use_cache": True,
        "vocab_size": 92,
    }
    cfg.update(over)
    return cfg


def bloom_fixture(name, seed, cfg, prefix, description):
    """Weights under prefix, the reference cases, and a left-padded case: the 7-token case after 3 padding tokens, whose
    real positions' logits transformers' running-count ALiBi gives (alibi_slopes: the heads' slopes)."""
    g = torch.Generator().manual_seed(seed)
    w = bloom_weights(g, cfg)
    d = fresh_dir(name)
    write_safetensors(os.path.join(d, "model.safetensors"), {prefix + k: t for k, t in w.items()}, "F32", {"format": "pt"})
    write_config(d, cfg)
    cases = make_cases(g, cfg["vocab_size"])
    pad = cfg["pad_token_id"]
    padded_ids, padded_mask = [pad] * 3 + cases[1], [0] * 3 + [1] * len(cases[1])
    w64 = {k: t.double() for k, t in w.items()}
    padded = bloom_forward(w64, cfg, torch.tensor(padded_ids), padded_mask).to(torch.float32)[3:]
    write_reference(d, description, cases, bloom_forward, w, cfg, extra={
        "alibi_slopes": [fmt(x) for x in bloom_alibi_slopes(bloom_shape(cfg)[1]).tolist()],
        "alibi_slopes_by_heads": {str(n): [fmt(x) for x in bloom_alibi_slopes(n).tolist()] for n in range(1, 41)},
        "left_padded": {"input_ids": padded_ids, "attention_mask": padded_mask,
                        "logits": [[fmt(x) for x in row] for row in padded.tolist()]}})


def fixture_bloom():
    # bloom-560m's hub files in small: n_embed / num_attention_heads spelling, no 'transformer.' prefix (saved from
    # BloomModel), six heads (the slopes' non-power-of-two branch), head size 8.
    cfg = bloom_config(num_attention_heads=6, n_embed=48, vocab_size=94)
    del cfg["hidden_size"], cfg["n_head"]
    bloom_fixture("bloom-hub-n-embed", 1033, cfg, "", "bloom as the bloom-560m hub files: n_embed / num_attention_heads, "
                  "unprefixed names, heads 6 (ALiBi slopes past the largest power of two), head size 8, tied")
    # save_pretrained of BloomForCausalLM (bloomz): 'transformer.' prefix, hidden_size / n_head, head size 16.
    bloom_fixture("bloomz-save-pretrained", 1034, bloom_config(), "transformer.", "bloom as save_pretrained writes "
                  "BloomForCausalLM: transformer. prefix, hidden_size / n_head, heads 4, head size 16, tied")


def lfm2_mlp_width(cfg):
    """Lfm2MLP's width: block_ff_dim (else intermediate_size), int(2 * size / 3) when block_auto_adjust_ff_dim, then
    int(block_ffn_dim_multiplier * size) rounded up to block_multiple_of when the multiplier is not None."""
    size = cfg.get("block_ff_dim", cfg.get("intermediate_size", 12288))
    if cfg.get("block_auto_adjust_ff_dim", True):
        size = int(2 * size / 3)
        if cfg.get("block_ffn_dim_multiplier", 1.0) is not None:
            size = int(cfg.get("block_ffn_dim_multiplier", 1.0) * size)
            m = cfg.get("block_multiple_of", 256)
            size = m * ((size + m - 1) // m)
    return size


def lfm2_layer_types(cfg):
    if "layer_types" in cfg:
        return cfg["layer_types"]
    idxs = cfg.get("full_attn_idxs", list(range(cfg["num_hidden_layers"])))
    return ["full_attention" if i in idxs else "conv" for i in range(cfg["num_hidden_layers"])]


def lfm2_forward(w, cfg, ids, mask=None):
    """LFM2 as modular_lfm2.py, one sequence, mask [T] (1 real, 0 padding; default all real). Per layer
    r = h; x = RMS(h; operator_norm); an attention layer: q, k per-head RMS-normed (q_layernorm, k_layernorm), RoPE
    (theta rope_theta, positions = running count of real tokens - 1), causal attention over real keys, out_proj; a
    conv layer: [B|C|x] = in_proj(x), B * x zeroed at padding (what modular_lfm2.py's apply_mask_to_padding_states is
    for; it zeroes x before in_proj, which leaves bias * bias at the padding when conv_bias gives in_proj a bias, and
    transformers hands it the 4-D causal mask, which it leaves unapplied, so there padding reaches the next K - 1 steps),
    y = C * conv1d(B * x) with the [D, 1, K] depthwise kernel, left-padded by K - 1 and cut to T, out_proj(y);
    h = r + that; h += w2(silu(w1(RMS(h; ffn_norm))) * w3(...)); logits = RMS(h; embedding_norm) @ head^T."""
    t = len(ids)
    nh, nkv, hd, _ = llama_shapes(cfg)
    d, eps, k_width = cfg["hidden_size"], cfg.get("norm_eps", 1e-5), cfg.get("conv_L_cache", 3)
    m = torch.ones(t, dtype=torch.float64) if mask is None else torch.tensor(mask, dtype=torch.float64)
    positions = ((m.cumsum(-1) - 1) * m).to(torch.float32)
    inv = 1.0 / (cfg.get("rope_theta", 1e6) ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
    freqs = positions[:, None] * inv[None, :]
    emb = torch.cat((freqs, freqs), dim=-1).double()
    cos, sin = emb.cos(), emb.sin()
    blocked = torch.triu(torch.ones(t, t, dtype=torch.bool), diagonal=1) | (m == 0)[None, :]
    lin = linear(w)
    h = w["model.embed_tokens.weight"][ids]
    for i, kind in enumerate(lfm2_layer_types(cfg)):
        p = f"model.layers.{i}."
        x = rms_norm(h, w[p + "operator_norm.weight"], eps)
        if kind == "full_attention":
            q = rms_norm(lin(x, p + "self_attn.q_proj").reshape(t, nh, hd).transpose(0, 1), w[p + "self_attn.q_layernorm.weight"], eps)
            k = rms_norm(lin(x, p + "self_attn.k_proj").reshape(t, nkv, hd).transpose(0, 1), w[p + "self_attn.k_layernorm.weight"], eps)
            v = lin(x, p + "self_attn.v_proj").reshape(t, nkv, hd).transpose(0, 1)
            q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
            k, v = k.repeat_interleave(nh // nkv, dim=0), v.repeat_interleave(nh // nkv, dim=0)
            s = (q @ k.transpose(-1, -2) / math.sqrt(hd)).masked_fill(blocked, torch.finfo(torch.float32).min)
            out = lin((torch.softmax(s, dim=-1) @ v).transpose(0, 1).reshape(t, nh * hd), p + "self_attn.out_proj")
        else:
            bcx = lin(x, p + "conv.in_proj").T  # [3D, T]
            b, c, xx = bcx.chunk(3, dim=0)
            conv_bias = w.get(p + "conv.conv.bias")
            conv = torch.nn.functional.conv1d((b * xx * m[None, :])[None], w[p + "conv.conv.weight"], conv_bias, padding=k_width - 1, groups=d)[0, :, :t]
            out = lin((c * conv).T, p + "conv.out_proj")
        h = h + out
        x = rms_norm(h, w[p + "ffn_norm.weight"], eps)
        g = lin(x, p + "feed_forward.w1")
        h = h + lin(g * torch.sigmoid(g) * lin(x, p + "feed_forward.w3"), p + "feed_forward.w2")
    h = rms_norm(h, w["model.embedding_norm.weight"], eps)
    head = w["model.embed_tokens.weight"] if cfg.get("tie_word_embeddings", True) else w["lm_head.weight"]
    return h @ head.T


def lfm2_weights(g, cfg):
    nh, nkv, hd, _ = llama_shapes(cfg)
    d, v, inner, k_width = cfg["hidden_size"], cfg["vocab_size"], lfm2_mlp_width(cfg), cfg.get("conv_L_cache", 3)
    bias = cfg.get("conv_bias", False)
    w = {"model.embed_tokens.weight": randn(g, v, d, std=0.5), "model.embedding_norm.weight": norm_weight(g, d)}
    for i, kind in enumerate(lfm2_layer_types(cfg)):
        p = f"model.layers.{i}."
        w[p + "operator_norm.weight"] = norm_weight(g, d)
        w[p + "ffn_norm.weight"] = norm_weight(g, d)
        if kind == "full_attention":
            w[p + "self_attn.q_proj.weight"] = randn(g, nh * hd, d, std=0.2)
            w[p + "self_attn.k_proj.weight"] = randn(g, nkv * hd, d, std=0.2)
            w[p + "self_attn.v_proj.weight"] = randn(g, nkv * hd, d, std=0.2)
            w[p + "self_attn.out_proj.weight"] = randn(g, d, nh * hd, std=0.2)
            w[p + "self_attn.q_layernorm.weight"] = norm_weight(g, hd)
            w[p + "self_attn.k_layernorm.weight"] = norm_weight(g, hd)
        else:
            w[p + "conv.in_proj.weight"] = randn(g, 3 * d, d, std=0.2)
            w[p + "conv.conv.weight"] = randn(g, d, 1, k_width, std=0.5)
            w[p + "conv.out_proj.weight"] = randn(g, d, d, std=0.2)
            if bias:
                w[p + "conv.in_proj.bias"] = randn(g, 3 * d, std=0.1)
                w[p + "conv.conv.bias"] = randn(g, d, std=0.1)
                w[p + "conv.out_proj.bias"] = randn(g, d, std=0.1)
        w[p + "feed_forward.w1.weight"] = randn(g, inner, d, std=0.2)
        w[p + "feed_forward.w3.weight"] = randn(g, inner, d, std=0.2)
        w[p + "feed_forward.w2.weight"] = randn(g, d, inner, std=0.15)
    if not cfg.get("tie_word_embeddings", True):
        w["lm_head.weight"] = randn(g, v, d, std=0.5)
    return w


def lfm2_config(**over):
    """A small Lfm2Config as LFM2-350M's hub config.json spells it (the original block_* keys beside transformers')."""
    cfg = {
        "architectures": ["Lfm2ForCausalLM"],
        "block_auto_adjust_ff_dim": True,
        "block_dim": 64,
        "block_ff_dim": 200,
        "block_ffn_dim_multiplier": 1.0,
        "block_mlp_init_scale": 1.0,
        "block_multiple_of": 32,
        "block_norm_eps": 1e-05,
        "block_out_init_scale": 1.0,
        "block_use_swiglu": True,
        "block_use_xavier_init": True,
        "bos_token_id": 1,
        "conv_L_cache": 3,
        "conv_bias": False,
        "conv_dim": 64,
        "conv_dim_out": 64,
        "conv_use_xavier_init": True,
        "eos_token_id": 7,
        "hidden_size": 64,
        "initializer_range": 0.02,
        "intermediate_size": 200,
        "layer_types": ["conv", "conv", "full_attention", "conv", "full_attention"],
        "max_position_embeddings": 128000,
        "model_type": "lfm2",
        "norm_eps": 1e-05,
        "num_attention_heads": 4,
        "num_heads": 4,
        "num_hidden_layers": 5,
        "num_key_value_heads": 2,
        "pad_token_id": 0,
        "rope_theta": 1000000.0,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.54.0.dev0",
        "use_cache": True,
        "use_pos_enc": True,
        "vocab_size": 96,
    }
    cfg.update(over)
    return cfg


def padded_fixture(name, seed, cfg, description, weights, forward, pad_id, extra=None):
    """Weights, the reference cases, and a left-padded case: the 7-token case after 3 padding tokens (pad_id), positions
    counted from the first real token, padding masked as keys and zeroed in recurrent layers, so that its logits are the
    unpadded case's."""
    g = torch.Generator().manual_seed(seed)
    w = weights(g, cfg)
    d = fresh_dir(name)
    write_safetensors(os.path.join(d, "model.safetensors"), w, "F32", {"format": "pt"})
    write_config(d, cfg)
    cases = make_cases(g, cfg["vocab_size"])
    padded_ids, padded_mask = [pad_id] * 3 + cases[1], [0] * 3 + [1] * len(cases[1])
    w64 = {k: t.double() for k, t in w.items()}
    padded = forward(w64, cfg, torch.tensor(padded_ids), padded_mask).to(torch.float32)[3:]
    write_reference(d, description, cases, forward, w, cfg, extra={
        **(extra or {}),
        "left_padded": {"input_ids": padded_ids, "attention_mask": padded_mask,
                        "logits": [[fmt(x) for x in row] for row in padded.tolist()]}})


def lfm2_fixture(name, seed, cfg, description):
    """The padded fixture of an LFM2 config: its padding is zeroed before each convolution."""
    padded_fixture(name, seed, cfg, description, lfm2_weights, lfm2_forward, cfg["pad_token_id"], {"mlp_width": lfm2_mlp_width(cfg)})


def fixture_lfm2():
    # LFM2-350M's layout in small: three convolution and two attention layers (heads 4 / kv 2, head size 16), the hub's
    # block_ff_dim 200 → int(2 * 200 / 3) = 133 → 160 (multiple of 32), tied head.
    lfm2_fixture("lfm2-hybrid-conv", 1035, lfm2_config(), "lfm2: conv, conv, attention, conv, attention layers; gated "
                 "short convolutions of width 3; q/k RMSNorm; MLP 200 adjusted to 160; tied")
    # The older full_attn_idxs, conv biases, a null multiplier (no rounding: int(2 * 100 / 3) = 66, where rounding up to
    # block_multiple_of would give 96), an untied head.
    cfg = lfm2_config(full_attn_idxs=[1], num_hidden_layers=3, conv_bias=True, block_ffn_dim_multiplier=None,
                      intermediate_size=100, block_ff_dim=100, tie_word_embeddings=False, vocab_size=90)
    del cfg["layer_types"]
    lfm2_fixture("lfm2-conv-bias-attn-idxs", 1036, cfg, "lfm2: full_attn_idxs [1] (conv, attention, conv), conv_bias, "
                 "block_ffn_dim_multiplier null (MLP 100 adjusted to 66, unrounded), untied head")


def glm_forward(w, cfg, ids):
    """GLM as modular_glm.py: Llama's block with q/k/v biases (none on o_proj), gate and up as the two halves of
    gate_up_proj's output (chunk(2): gate first), and RoPE over the first rot = int(hd * partial_rotary_factor) channels
    of each head, pairs (2i, 2i + 1) turned by angle i of inv_freq over rot (cos and sin repeated pairwise, GLM's
    rotate_half), the rest passed through."""
    _, _, hd, _ = llama_shapes(cfg)
    rot = int(hd * cfg.get("partial_rotary_factor", 0.5))
    freqs = torch.arange(len(ids), dtype=torch.float32)[:, None] * partial_inv_freq(rot, cfg.get("rope_theta", 10000.0))[None, :]
    cos, sin = (f(freqs.double()).repeat_interleave(2, dim=-1) for f in (torch.cos, torch.sin))

    def rope(x):
        x_rot, x_pass = x[..., :rot], x[..., rot:]
        return torch.cat([x_rot * cos + rotate_interleaved(x_rot) * sin, x_pass], dim=-1)

    split = dict(w)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}.mlp."
        split[p + "gate_proj.weight"], split[p + "up_proj.weight"] = w[p + "gate_up_proj.weight"].chunk(2, dim=0)
    return llama_forward(split, cfg, ids, lambda q, k, p: (rope(q), rope(k)))


def fixture_glm():
    g = torch.Generator().manual_seed(1037)
    # GLM-Edge-1.5B-chat's config in small: attention_bias (q/k/v), head_dim 16 of which RoPE turns the first 8 as
    # interleaved pairs (partial_rotary_factor 0.5), grouped queries (heads 4 / kv 2), fused gate_up_proj, eos list, untied.
    cfg = llama_family_config("glm", "GlmForCausalLM", attention_bias=True, head_dim=16, partial_rotary_factor=0.5,
                              rms_norm_eps=1e-05, intermediate_size=96, max_position_embeddings=8192, vocab_size=98,
                              eos_token_id=[2, 5, 7], pad_token_id=2, bos_token_id=None)
    w = llama_weights(g, cfg, qkv_bias=True)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}.mlp."
        w[p + "gate_up_proj.weight"] = torch.cat([w.pop(p + "gate_proj.weight"), w.pop(p + "up_proj.weight")], dim=0)
    d = fresh_dir("glm-edge-partial-interleaved")
    write_safetensors(os.path.join(d, "model.safetensors"), w, "F32", {"format": "pt"})
    write_config(d, cfg)
    write_reference(d, "glm: q/k/v biases, RoPE on interleaved pairs of the first 8 of 16 channels (partial_rotary_factor "
                    "0.5), heads 4 / kv 2, gate_up_proj fused, untied", make_cases(g, cfg["vocab_size"]), glm_forward, w,
                    cfg, partial_inv_freq(8, 10000.0))


def starcoder2_forward(w, cfg, ids):
    """Starcoder2 as modular_starcoder2.py: LayerNorms with biases (eps norm_epsilon), q/k/v/o with biases (use_bias), RoPE
    (rotate_half) on every channel, causal attention within sliding_window, c_proj(gelu_tanh(c_fc(x))); tied head."""
    hd = cfg["hidden_size"] // cfg["num_attention_heads"]
    return layernorm_block_forward(w, cfg, ids, cfg["norm_epsilon"], hd,
                                   lambda lin, x, p: lin(gelu_new(lin(x, p + "mlp.c_fc")), p + "mlp.c_proj"),
                                   cfg.get("sliding_window"))


def fixture_starcoder2():
    g = torch.Generator().manual_seed(1038)
    # starcoder2-3b's config in small: grouped queries (heads 4 / kv 2), a sliding window of 5 (shorter than the 16-token
    # case), LayerNorms and biases everywhere, gelu_pytorch_tanh, its odd rope_theta, tied head.
    cfg = llama_family_config("starcoder2", "Starcoder2ForCausalLM", hidden_act="gelu_pytorch_tanh", norm_epsilon=1e-05,
                              rope_theta=999999.4420358813, sliding_window=5, use_bias=True, tie_word_embeddings=True,
                              residual_dropout=0.1, embedding_dropout=0.1, attention_dropout=0.1, vocab_size=94,
                              bos_token_id=0, eos_token_id=0, max_position_embeddings=16384)
    del cfg["rms_norm_eps"]
    w = llama_weights(g, cfg, qkv_bias=True, o_bias=True)
    d_model, inter = cfg["hidden_size"], cfg["intermediate_size"]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        for n in ("input_layernorm", "post_attention_layernorm"):
            w[p + n + ".bias"] = randn(g, d_model, std=0.1)
        for n in ("gate_proj", "up_proj", "down_proj"):
            del w[p + "mlp." + n + ".weight"]
        w[p + "mlp.c_fc.weight"] = randn(g, inter, d_model, std=0.2)
        w[p + "mlp.c_fc.bias"] = randn(g, inter, std=0.1)
        w[p + "mlp.c_proj.weight"] = randn(g, d_model, inter, std=0.15)
        w[p + "mlp.c_proj.bias"] = randn(g, d_model, std=0.1)
    w["model.norm.bias"] = randn(g, d_model, std=0.1)
    d = fresh_dir("starcoder2-window-bias")
    write_safetensors(os.path.join(d, "model.safetensors"), w, "F32", {"format": "pt"})
    write_config(d, cfg)
    write_reference(d, "starcoder2: LayerNorms with biases, biases on every projection (use_bias), sliding window 5, heads "
                    "4 / kv 2, c_fc -> gelu_pytorch_tanh -> c_proj, tied", make_cases(g, cfg["vocab_size"]),
                    starcoder2_forward, w, cfg, rope_inv_freq(cfg, 8))


def bigcode_forward(w, cfg, ids):
    """GPTBigCode as modeling_gpt_bigcode.py; w has HF names without the 'transformer.' prefix, nn.Linear weights
    [out, in]. h = wte[ids] + wpe[0..T); per block a = LN(h; ln_1), c_attn(a) split into q (D) and key_value: with
    multi_query one head's k (hd) and v (hd) shared by every query head, else viewed [T, heads, 3 * hd] (per head q, k,
    v); scores q k^T / sqrt(hd), causal; h += c_proj(attention); h += c_proj(act(c_fc(LN(h; ln_2)))); logits =
    LN(h; ln_f) @ wte^T."""
    t = len(ids)
    d, nh, eps = cfg["n_embd"], cfg["n_head"], cfg["layer_norm_epsilon"]
    hd = d // nh
    act = torch.nn.functional.gelu if cfg.get("activation_function") == "gelu" else gelu_new
    lin = linear(w)
    h = w["wte.weight"][ids] + w["wpe.weight"][:t]
    for i in range(cfg["n_layer"]):
        p = f"h.{i}."
        a = layer_norm(h, w[p + "ln_1.weight"], w[p + "ln_1.bias"], eps)
        qkv = lin(a, p + "attn.c_attn")
        if cfg.get("multi_query", True):
            q = qkv[:, :d].reshape(t, nh, hd).transpose(0, 1)
            k = qkv[:, d:d + hd][None].expand(nh, t, hd)
            v = qkv[:, d + hd:][None].expand(nh, t, hd)
        else:
            per_head = qkv.reshape(t, nh, 3 * hd).transpose(0, 1)
            q, k, v = per_head[..., :hd], per_head[..., hd:2 * hd], per_head[..., 2 * hd:]
        h = h + lin(causal_attention(q, k, v), p + "attn.c_proj")
        m = layer_norm(h, w[p + "ln_2.weight"], w[p + "ln_2.bias"], eps)
        h = h + lin(act(lin(m, p + "mlp.c_fc")), p + "mlp.c_proj")
    h = layer_norm(h, w["ln_f.weight"], w["ln_f.bias"], eps)
    return h @ w["wte.weight"].T


def bigcode_weights(g, cfg):
    d, nh, v, pos = cfg["n_embd"], cfg["n_head"], cfg["vocab_size"], cfg["n_positions"]
    hd, inner = d // nh, cfg.get("n_inner") or 4 * d
    qkv_rows = d + 2 * hd if cfg.get("multi_query", True) else 3 * d
    w = {"wte.weight": randn(g, v, d, std=0.5), "wpe.weight": randn(g, pos, d, std=0.1)}
    for i in range(cfg["n_layer"]):
        layernorm_block_weights(g, w, f"h.{i}.", d, inner, ("ln_1", "ln_2"),
                                fused_attention_specs("attn.c_attn", "attn.c_proj", d, qkv_rows), ("mlp.c_fc", "mlp.c_proj"))
    w["ln_f.weight"] = norm_weight(g, d)
    w["ln_f.bias"] = randn(g, d, std=0.1)
    return w


def bigcode_config(**over):
    """A small GPTBigCodeConfig as starcoderbase-1b's config.json spells it."""
    cfg = {
        "activation_function": "gelu_pytorch_tanh",
        "architectures": ["GPTBigCodeForCausalLM"],
        "attention_softmax_in_fp32": True,
        "attn_pdrop": 0.1,
        "bos_token_id": 0,
        "embd_pdrop": 0.1,
        "eos_token_id": 0,
        "inference_runner": 0,
        "initializer_range": 0.02,
        "layer_norm_epsilon": 1e-05,
        "max_batch_size": None,
        "max_sequence_length": None,
        "model_type": "gpt_bigcode",
        "multi_query": True,
        "n_embd": 64,
        "n_head": 4,
        "n_inner": 128,
        "n_layer": 2,
        "n_positions": 64,
        "pad_key_length": True,
        "pre_allocate_kv_cache": False,
        "resid_pdrop": 0.1,
        "scale_attention_softmax_in_fp32": True,
        "scale_attn_weights": True,
        "summary_activation": None,
        "summary_first_dropout": 0.1,
        "summary_proj_to_labels": True,
        "summary_type": "cls_index",
        "summary_use_proj": True,
        "torch_dtype": "float32",
        "transformers_version": "4.28.1",
        "use_cache": True,
        "validate_runner_input": True,
        "vocab_size": 96,
    }
    cfg.update(over)
    return cfg


def bigcode_fixture(name, seed, cfg, description):
    g = torch.Generator().manual_seed(seed)
    w = bigcode_weights(g, cfg)
    d = fresh_dir(name)
    write_safetensors(os.path.join(d, "model.safetensors"), {"transformer." + k: t for k, t in w.items()}, "F32", {"format": "pt"})
    write_config(d, cfg)
    write_reference(d, description, make_cases(g, cfg["vocab_size"]), bigcode_forward, w, cfg)


def fixture_bigcode():
    bigcode_fixture("gpt-bigcode-multi-query", 1039, bigcode_config(), "gpt_bigcode as starcoderbase-1b: multi-query "
                    "attention (one key/value head after q in c_attn), heads 4, learned positions, gelu_pytorch_tanh, tied")
    bigcode_fixture("gpt-bigcode-multi-head", 1040, bigcode_config(multi_query=False, n_inner=None, activation_function="gelu",
                                                                   vocab_size=90),
                    "gpt_bigcode with multi_query false: c_attn head by head (q, k, v of each), n_inner null (4 * n_embd), "
                    "exact gelu, tied")


def gpt_neo_forward(w, cfg, ids):
    """GPT-Neo as modeling_gpt_neo.py; w has HF names without the 'transformer.' prefix, nn.Linear weights [out, in].
    h = wte[ids] + wpe[0..T); per block a = LN(h; ln_1), q/k/v without biases, scores q k^T NOT scaled by 1/sqrt(hd),
    causal, on local layers (attention_types) only the last window_size keys; h += out_proj(attention) (with bias);
    h += c_proj(act(c_fc(LN(h; ln_2)))); logits = LN(h; ln_f) @ wte^T."""
    t = len(ids)
    d, nh, eps = cfg["hidden_size"], cfg["num_heads"], cfg["layer_norm_epsilon"]
    hd = d // nh
    kinds = [k for kinds, n in cfg["attention_types"] for _ in range(n) for k in kinds]
    act = torch.nn.functional.gelu if cfg.get("activation_function") == "gelu" else gelu_new
    lin = linear(w)
    h = w["wte.weight"][ids] + w["wpe.weight"][:t]
    for i in range(cfg["num_layers"]):
        p = f"h.{i}."
        a = layer_norm(h, w[p + "ln_1.weight"], w[p + "ln_1.bias"], eps)
        q, k, v = (lin(a, p + f"attn.attention.{n}_proj").reshape(t, nh, hd).transpose(0, 1) for n in "qkv")
        window = cfg["window_size"] if kinds[i] == "local" else None
        h = h + lin(causal_attention(q, k, v, window, scale=1.0), p + "attn.attention.out_proj")
        m = layer_norm(h, w[p + "ln_2.weight"], w[p + "ln_2.bias"], eps)
        h = h + lin(act(lin(m, p + "mlp.c_fc")), p + "mlp.c_proj")
    h = layer_norm(h, w["ln_f.weight"], w["ln_f.bias"], eps)
    return h @ w["wte.weight"].T


def fixture_gpt_neo():
    g = torch.Generator().manual_seed(1041)
    # gpt-neo-125m's config in small: global and local layers alternating (attention_types), a window of 5 under the
    # 16-token case, intermediate_size null (4 * hidden), gelu_new, the hub files' attention mask buffers, tied head.
    cfg = {
        "activation_function": "gelu_new",
        "architectures": ["GPTNeoForCausalLM"],
        "attention_dropout": 0,
        "attention_layers": ["global", "local", "global", "local"],
        "attention_types": [[["global", "local"], 2]],
        "bos_token_id": 50256,
        "embed_dropout": 0,
        "eos_token_id": 50256,
        "gradient_checkpointing": False,
        "hidden_size": 48,
        "initializer_range": 0.02,
        "intermediate_size": None,
        "layer_norm_epsilon": 1e-05,
        "max_position_embeddings": 64,
        "model_type": "gpt_neo",
        "num_heads": 4,
        "num_layers": 4,
        "resid_dropout": 0,
        "summary_activation": None,
        "summary_first_dropout": 0.1,
        "summary_proj_to_labels": True,
        "summary_type": "cls_index",
        "summary_use_proj": True,
        "transformers_version": "4.9.0.dev0",
        "use_cache": True,
        "vocab_size": 92,
        "window_size": 5,
    }
    d_model, pos, v = cfg["hidden_size"], cfg["max_position_embeddings"], cfg["vocab_size"]
    w = {"wte.weight": randn(g, v, d_model, std=0.5), "wpe.weight": randn(g, pos, d_model, std=0.1)}
    attention = [(f"attn.attention.{n}_proj.weight", (d_model, d_model), 0.1) for n in "qkv"] + [
        ("attn.attention.out_proj.weight", (d_model, d_model), 0.2), ("attn.attention.out_proj.bias", (d_model,), 0.1)]
    for i in range(cfg["num_layers"]):
        layernorm_block_weights(g, w, f"h.{i}.", d_model, 4 * d_model, ("ln_1", "ln_2"), attention, ("mlp.c_fc", "mlp.c_proj"))
    w["ln_f.weight"] = norm_weight(g, d_model)
    w["ln_f.bias"] = randn(g, d_model, std=0.1)
    d = fresh_dir("gpt-neo-local-global")
    stored = {"transformer." + k: t for k, t in w.items()}
    for i in range(cfg["num_layers"]):  # buffers the hub files carry; loaders skip them
        stored[f"transformer.h.{i}.attn.attention.bias"] = torch.tril(torch.ones(pos, pos)).reshape(1, 1, pos, pos)
        stored[f"transformer.h.{i}.attn.attention.masked_bias"] = torch.tensor(-1e9)
    write_safetensors(os.path.join(d, "model.safetensors"), stored, "F32", {"format": "pt"})
    write_config(d, cfg)
    write_reference(d, "gpt_neo as gpt-neo-125m: global and local (window 5) layers alternating, unscaled attention "
                    "scores, q/k/v without biases, learned positions, gelu_new, the attention's mask buffers stored, tied",
                    make_cases(g, cfg["vocab_size"]), gpt_neo_forward, w, cfg)


def fixture_helium():
    g = torch.Generator().manual_seed(1042)
    # helium-1-2b's config in small: RoPE on interleaved pairs over whole heads (modular_helium.py's rotate_half and
    # apply_rotary_pos_emb, ERNIE 4.5's forward), base 100000, eps 1e-8, head_dim 16; attention_bias and mlp_bias true
    # here so that q/k/v and MLP biases are read (o_proj never has one), untied.
    cfg = llama_family_config("helium", "HeliumForCausalLM", num_key_value_heads=4, head_dim=16, rope_theta=100000.0,
                              rms_norm_eps=1e-08, attention_bias=True, mlp_bias=True, vocab_size=97, pad_token_id=3)
    w = llama_weights(g, cfg, qkv_bias=True, mlp_bias=True)
    d = fresh_dir("helium-interleaved-rope")
    write_safetensors(os.path.join(d, "model.safetensors"), w, "F32", {"format": "pt"})
    write_config(d, cfg)
    write_reference(d, "helium: RoPE on interleaved pairs (base 100000), q/k/v and MLP biases, none on o_proj, heads 4, "
                    "head_dim 16, untied", make_cases(g, cfg["vocab_size"]), ernie45_forward, w, cfg, rope_inv_freq(cfg, 16))


def granite4_layer_types(cfg):
    """transformers' layers_block_type: layer_types, else every layer a Mamba-2 mixer."""
    return cfg.get("layer_types") or ["mamba"] * cfg["num_hidden_layers"]


def granite4_mamba_shape(cfg):
    """(heads, head size, state size, groups, conv width, inner) from the mamba_* keys with transformers' defaults."""
    inner = cfg.get("mamba_expand", 2) * cfg["hidden_size"]
    heads = cfg.get("mamba_n_heads", 128)
    head = cfg.get("mamba_d_head", "auto")
    return heads, inner // heads if head == "auto" else head, cfg.get("mamba_d_state", 256), cfg.get("mamba_n_groups", 1), cfg.get("mamba_d_conv", 4), inner


def segment_sums(a):
    """a [..., L] -> [..., L, L]: entry (i, j) is a[j+1] + ... + a[i] for j <= i (0 on the diagonal), -inf above it."""
    n = a.shape[-1]
    c = torch.cumsum(a, dim=-1)
    out = c[..., :, None] - c[..., None, :]
    return out.masked_fill(~torch.tril(torch.ones(n, n, dtype=torch.bool)), float("-inf"))


def ssd_chunked(x, dt, a, b, c, chunk):
    """Mamba-2's state-space dual form (arXiv 2405.21060, section 6: the chunked algorithm transformers' torch_forward
    runs), one sequence: x [T, H, P], dt [T, H] (after softplus), a [H] (negative), b and c [T, H, N] -> y [T, H, P]
    without the D term. Within a chunk of `chunk` steps, y_l = sum_{s <= l} (C_l . B_s) exp(sum_{s < r <= l} dt_r a) dt_s x_s;
    across chunks, the state entering each chunk (decayed sums of the earlier chunks' B x) is read out through C."""
    t = x.shape[0]
    pad = (-t) % chunk
    def chunks(v):
        return torch.nn.functional.pad(v, (0, 0) * (v.dim() - 1) + (0, pad)).reshape(-1, chunk, *v.shape[1:])
    xs, adt, bs, cs = chunks(x * dt[..., None]), chunks(dt * a), chunks(b), chunks(c)   # [k, L, ...]
    adt = adt.permute(2, 0, 1)                                        # [H, k, L]
    cum = torch.cumsum(adt, dim=-1)
    decay = torch.exp(segment_sums(adt))                              # [H, k, L, L]
    y_diag = torch.einsum("klhn,kshn,hkls,kshp->klhp", cs, bs, decay, xs)
    to_end = torch.exp(cum[..., -1:] - cum)                           # [H, k, L]
    states = torch.einsum("klhn,hkl,klhp->khpn", bs, to_end, xs)      # each chunk's own contribution at its end
    states = torch.cat([torch.zeros_like(states[:1]), states], dim=0)
    across = torch.exp(segment_sums(torch.nn.functional.pad(cum[..., -1], (1, 0))))   # [H, k+1, k+1]
    entering = torch.einsum("hzk,khpn->zhpn", across, states)[:-1]   # the state entering each chunk
    y_off = torch.einsum("klhn,khpn,hkl->klhp", cs, entering, torch.exp(cum))
    return (y_diag + y_off).reshape(-1, *x.shape[1:])[:t]


def granite4_mamba(w, cfg, p, x, m, shape=None, scale_in=1.0, mup=None, norm="after", norm_groups=1):
    """One Mamba-2 mixer (modeling_bamba.py's BambaMixer, torch_forward without a cache) on x [T, D], mask m [T]:
    x zeroed at padding; in_proj to gate z [I], xBC [I + 2GN], dt [H]; xBC through the depthwise conv1d (bias, left
    padded by K - 1) and SiLU, zeroed at padding, split into x, B, C; dt = softplus(dt + dt_bias); A = -exp(A_log); the
    scan (ssd_chunked, chunks of mamba_chunk_size) plus D x; y * silu(z) RMS-normed over all I channels (the gated norm,
    eps rms_norm_eps) times its weight; out_proj. Falcon-H1 (modular_falcon_h1.py's FalconH1Mixer) passes its shape, the
    input's multiplier, the µP vector over in_proj's output, and its norm: None (y * silu(z)), "before" (RMS per group of
    y, times the weight, then * silu(z)) or "after" per group."""
    heads, hd, n, groups, k_width, inner = shape or granite4_mamba_shape(cfg)
    t = x.shape[0]
    lin = linear(w)
    proj = lin(x * m[:, None] * scale_in, p + "in_proj")
    if mup is not None:
        proj = proj * mup
    z, xbc, dt = proj.split([inner, inner + 2 * groups * n, heads], dim=-1)
    # The convolution's input zeroed at padding: a no-op unless in_proj has a bias (mamba_proj_bias), which transformers
    # lets through there; AlignSharp gives a left-padded row its unpadded result, which this reference states.
    xbc = xbc * m[:, None]
    conv = torch.nn.functional.conv1d(xbc.T[None], w[p + "conv1d.weight"], w.get(p + "conv1d.bias"), padding=k_width - 1, groups=xbc.shape[1])[0, :, :t].T
    conv = conv * torch.sigmoid(conv) * m[:, None]
    xx, b, c = conv.split([inner, groups * n, groups * n], dim=-1)
    dt = torch.nn.functional.softplus(dt + w[p + "dt_bias"])
    a = -torch.exp(w[p + "A_log"])
    rep = heads // groups
    b = b.reshape(t, groups, n).repeat_interleave(rep, dim=1)
    c = c.reshape(t, groups, n).repeat_interleave(rep, dim=1)
    xx = xx.reshape(t, heads, hd)
    y = ssd_chunked(xx, dt, a, b, c, cfg.get("mamba_chunk_size", 256)) + w[p + "D"][:, None] * xx
    y = y.reshape(t, inner)
    gate = z * torch.sigmoid(z)
    eps = cfg.get("rms_norm_eps", 1e-6)

    def grouped_norm(v):
        g = v.reshape(t, norm_groups, inner // norm_groups)
        g = g * torch.rsqrt(g.pow(2).mean(-1, keepdim=True) + eps)
        return g.reshape(t, inner) * w[p + "norm.weight"]
    if norm is None:
        y = y * gate
    elif norm == "before":
        y = grouped_norm(y) * gate
    else:
        y = grouped_norm(y * gate)
    return lin(y, p + "out_proj")


def granite4_forward(w, cfg, ids, mask=None):
    """Granite 4.0 as modular_granitemoehybrid.py without experts, one sequence, mask [T] (1 real, 0 padding): embeddings
    times embedding_multiplier; per layer, RMS(input_layernorm), then a Mamba-2 mixer (granite4_mamba) or attention
    (q/k/v/o, RoPE over positions counted from the first real token when position_embedding_type is "rope", none
    otherwise, attention_multiplier as the score scale, padding keys masked), times residual_multiplier onto the
    residual; RMS(post_attention_layernorm), the shared MLP (input_linear's two halves: silu(first) * second,
    output_linear), with num_local_experts > 0 plus the experts (granitemoe_experts), times residual_multiplier onto it;
    RMS(norm); logits / logits_scaling."""
    t = len(ids)
    nh, nkv, hd, _ = llama_shapes(cfg)
    eps = cfg.get("rms_norm_eps", 1e-6)
    m = torch.ones(t, dtype=torch.float64) if mask is None else torch.tensor(mask, dtype=torch.float64)
    rope = cfg.get("position_embedding_type") == "rope"
    positions = ((m.cumsum(-1) - 1) * m).to(torch.float32)
    inv = 1.0 / (cfg.get("rope_theta", 10000.0) ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
    emb = torch.cat((positions[:, None] * inv[None, :],) * 2, dim=-1).double()
    cos, sin = emb.cos(), emb.sin()
    blocked = torch.triu(torch.ones(t, t, dtype=torch.bool), diagonal=1) | (m == 0)[None, :]
    lin = linear(w)
    residual = cfg.get("residual_multiplier", 1.0)
    h = w["model.embed_tokens.weight"][ids] * cfg.get("embedding_multiplier", 1.0)
    for i, kind in enumerate(granite4_layer_types(cfg)):
        p = f"model.layers.{i}."
        x = rms_norm(h, w[p + "input_layernorm.weight"], eps)
        if kind == "mamba":
            out = granite4_mamba(w, cfg, p + "mamba.", x, m)
        else:
            q = lin(x, p + "self_attn.q_proj").reshape(t, nh, hd).transpose(0, 1)
            k = lin(x, p + "self_attn.k_proj").reshape(t, nkv, hd).transpose(0, 1)
            v = lin(x, p + "self_attn.v_proj").reshape(t, nkv, hd).transpose(0, 1)
            if rope:
                q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
            k, v = k.repeat_interleave(nh // nkv, dim=0), v.repeat_interleave(nh // nkv, dim=0)
            s = (q @ k.transpose(-1, -2) * cfg.get("attention_multiplier", 1.0)).masked_fill(blocked, torch.finfo(torch.float32).min)
            out = lin((torch.softmax(s, dim=-1) @ v).transpose(0, 1).reshape(t, nh * hd), p + "self_attn.o_proj")
        h = h + out * residual
        x = rms_norm(h, w[p + "post_attention_layernorm.weight"], eps)
        gate, up = lin(x, p + "shared_mlp.input_linear").chunk(2, dim=-1)
        out = lin(gate * torch.sigmoid(gate) * up, p + "shared_mlp.output_linear")
        if cfg.get("num_local_experts", 8) > 0:  # the experts' sum, then the shared MLP's, as the decoder layer adds them
            out = granitemoe_experts(w, cfg)(x, p) + out
        h = h + out * residual
    h = rms_norm(h, w["model.norm.weight"], eps)
    head = w["model.embed_tokens.weight"] if cfg.get("tie_word_embeddings", False) else w["lm_head.weight"]
    return h @ head.T / cfg.get("logits_scaling", 1.0)


def attention_weights(g, w, p, cfg, bias):
    """Llama's q/k/v/o projections under prefix p (biases on all four with bias), drawn in that order."""
    nh, nkv, hd, _ = llama_shapes(cfg)
    d = cfg["hidden_size"]
    for name, rows in (("q_proj", nh * hd), ("k_proj", nkv * hd), ("v_proj", nkv * hd)):
        w[p + f"{name}.weight"] = randn(g, rows, d, std=0.2)
        if bias:
            w[p + f"{name}.bias"] = randn(g, rows, std=0.1)
    w[p + "o_proj.weight"] = randn(g, d, nh * hd, std=0.2)
    if bias:
        w[p + "o_proj.bias"] = randn(g, d, std=0.1)


def mamba_weights(g, w, p, cfg, shape, d, in_bias, out_bias, norm):
    """A Mamba-2 mixer's tensors under prefix p, drawn in this order: in_proj, conv1d (and its bias with mamba_conv_bias),
    the projections' biases where given, dt_bias, A_log (around log 1..H, transformers' initialisation), D, the gated
    norm's weight where the mixer has one, out_proj."""
    heads, _, n, groups, k_width, inner = shape
    conv_dim = inner + 2 * groups * n
    w[p + "in_proj.weight"] = randn(g, inner + conv_dim + heads, d, std=0.2)
    w[p + "conv1d.weight"] = randn(g, conv_dim, 1, k_width, std=0.5)
    if cfg.get("mamba_conv_bias", True):
        w[p + "conv1d.bias"] = randn(g, conv_dim, std=0.1)
    if in_bias:
        w[p + "in_proj.bias"] = randn(g, inner + conv_dim + heads, std=0.1)
    if out_bias:
        w[p + "out_proj.bias"] = randn(g, d, std=0.1)
    w[p + "dt_bias"] = randn(g, heads, std=0.5)
    w[p + "A_log"] = torch.log(torch.arange(1, heads + 1, dtype=torch.float32)) + randn(g, heads, std=0.3)
    w[p + "D"] = 1.0 + randn(g, heads, std=0.3)
    if norm:
        w[p + "norm.weight"] = norm_weight(g, inner)
    w[p + "out_proj.weight"] = randn(g, d, inner, std=0.2)


def granite4_weights(g, cfg):
    d, v, inner_mlp = cfg["hidden_size"], cfg["vocab_size"], cfg.get("shared_intermediate_size", 1024)
    bias = cfg.get("attention_bias", False)
    w = {"model.embed_tokens.weight": randn(g, v, d, std=0.5), "model.norm.weight": norm_weight(g, d)}
    for i, kind in enumerate(granite4_layer_types(cfg)):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = norm_weight(g, d)
        w[p + "post_attention_layernorm.weight"] = norm_weight(g, d)
        if kind == "mamba":
            proj_bias = cfg.get("mamba_proj_bias", False)
            mamba_weights(g, w, p + "mamba.", cfg, granite4_mamba_shape(cfg), d, proj_bias, proj_bias, norm=True)
        else:
            attention_weights(g, w, p + "self_attn.", cfg, bias)
        w[p + "shared_mlp.input_linear.weight"] = randn(g, 2 * inner_mlp, d, std=0.2)
        w[p + "shared_mlp.output_linear.weight"] = randn(g, d, inner_mlp, std=0.15)
        if cfg.get("num_local_experts", 8) > 0:
            expert_weights(g, w, p + "block_sparse_moe.", cfg)
    if not cfg.get("tie_word_embeddings", False):
        w["lm_head.weight"] = randn(g, v, d, std=0.5)
    return w


def granite4_config(**over):
    """A small GraniteMoeHybridConfig as granite-4.0-h-350m's config.json spells it (multipliers of the released size)."""
    cfg = {
        "architectures": ["GraniteMoeHybridForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "attention_multiplier": 0.0625,
        "bos_token_id": 100257,
        "embedding_multiplier": 12,
        "eos_token_id": 100257,
        "hidden_act": "silu",
        "hidden_size": 32,
        "initializer_range": 0.1,
        "intermediate_size": 48,
        "layer_types": ["mamba", "attention", "mamba", "mamba"],
        "logits_scaling": 4,
        "mamba_chunk_size": 4,
        "mamba_conv_bias": True,
        "mamba_d_conv": 4,
        "mamba_d_head": 16,
        "mamba_d_state": 8,
        "mamba_expand": 2,
        "mamba_n_groups": 2,
        "mamba_n_heads": 4,
        "mamba_proj_bias": False,
        "max_position_embeddings": 32768,
        "model_type": "granitemoehybrid",
        "normalization_function": "rmsnorm",
        "num_attention_heads": 4,
        "num_experts_per_tok": 0,
        "num_hidden_layers": 4,
        "num_key_value_heads": 2,
        "num_local_experts": 0,
        "output_router_logits": False,
        "pad_token_id": 100256,
        "position_embedding_type": "nope",
        "residual_multiplier": 0.246,
        "rms_norm_eps": 1e-05,
        "rope_scaling": None,
        "rope_theta": 10000,
        "router_aux_loss_coef": 0.01,
        "shared_intermediate_size": 48,
        "tie_word_embeddings": True,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.56.0",
        "use_cache": True,
        "vocab_size": 92,
    }
    cfg.update(over)
    return cfg


def granite4_fixture(name, seed, cfg, description):
    padded_fixture(name, seed, cfg, description, granite4_weights, granite4_forward, cfg["vocab_size"] - 1)


def fixture_granite4():
    # granite-4.0-h-350m's layout in small: Mamba-2 mixers around one attention layer without position encoding, the
    # mixers 4 heads of 16 in 2 groups with a state of 8, chunks of 4 (the 16-token case spans four, the 7-token one
    # ends in a partial one), conv biases, tied head; Granite's multipliers.
    granite4_fixture("granite4-hybrid-mamba", 1043, granite4_config(), "granitemoehybrid: mamba, attention, mamba, mamba; "
                     "Mamba-2 mixers of 4 heads x 16 channels, 2 groups, state 8, conv 4, chunks of 4; NoPE attention; "
                     "multipliers 12 / 0.0625 / 0.246 / 4; tied")
    # granite-4.0-1b's dense layout: attention everywhere with RoPE, attention biases, one group, an untied head; the
    # mamba keys are present but unused.
    granite4_fixture("granite4-dense-rope", 1044, granite4_config(layer_types=["attention"] * 3, num_hidden_layers=3,
                     position_embedding_type="rope", attention_bias=True, tie_word_embeddings=False, mamba_d_head="auto",
                     mamba_n_groups=1, shared_intermediate_size=40, vocab_size=88),
                     "granitemoehybrid: three attention layers with RoPE (base 10000), q/k/v/o biases, shared MLP 40, untied")


MOE_MARGINS = []
ROUTER_LOGITS = []  # each MoE layer's router logits [T, E], appended by granitemoe_experts's forwards


def granitemoe_experts(w, cfg):
    """block_sparse_moe as modeling_granitemoe.py defines it, token by token: router logits x Wr^T, the k largest
    (GraniteMoeTopKGating), gates softmax over them; expert e runs input_linear[e] -> chunk(2) -> silu(first) * second
    -> output_linear[e]; the token's outputs are summed with its gates. Each token's gap between its k-th and (k+1)-th
    logit goes to MOE_MARGINS: a fixture whose routing a float32 rounding could flip is refused."""
    k = cfg.get("num_experts_per_tok", 2)

    def mlp(x, p):
        p = p + "block_sparse_moe."
        logits = x @ w[p + "router.layer.weight"].T
        ROUTER_LOGITS.append(logits)
        ranked = logits.sort(dim=-1, descending=True).values
        if ranked.shape[-1] > k:
            MOE_MARGINS.append(float((ranked[:, k - 1] - ranked[:, k]).min()))
        top, chosen = logits.topk(k, dim=-1)
        gates = torch.softmax(top, dim=-1)
        out = torch.zeros_like(x)
        for t in range(x.shape[0]):
            for j in range(k):
                e = int(chosen[t, j])
                gate, up = (x[t] @ w[p + "input_linear.weight"][e].T).chunk(2, dim=-1)
                out[t] += gates[t, j] * ((gate * torch.sigmoid(gate) * up) @ w[p + "output_linear.weight"][e].T)
        return out
    return mlp


def expert_weights(g, w, p, cfg):
    """Granite MoE's router and expert stacks under prefix p (its block_sparse_moe.), drawn in that order, with
    GraniteMoe(Hybrid)Config's defaults (8 experts, intermediate_size 11008)."""
    d, experts, inter = cfg["hidden_size"], cfg.get("num_local_experts", 8), cfg.get("intermediate_size", 11008)
    w[p + "router.layer.weight"] = randn(g, experts, d, std=0.5)
    w[p + "input_linear.weight"] = randn(g, experts, 2 * inter, d, std=0.2)
    w[p + "output_linear.weight"] = randn(g, experts, d, inter, std=0.15)


def granitemoe_forward(w, cfg, ids):
    return llama_forward(w, cfg, ids, mlp=granitemoe_experts(w, cfg))


def granitemoe_weights(g, cfg):
    d, v = cfg["hidden_size"], cfg["vocab_size"]
    w = {"model.embed_tokens.weight": randn(g, v, d, std=0.5)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = norm_weight(g, d)
        attention_weights(g, w, p + "self_attn.", cfg, cfg.get("attention_bias", False))
        w[p + "post_attention_layernorm.weight"] = norm_weight(g, d)
        expert_weights(g, w, p + "block_sparse_moe.", cfg)
    w["model.norm.weight"] = norm_weight(g, d)
    if not cfg.get("tie_word_embeddings", False):
        w["lm_head.weight"] = randn(g, v, d, std=0.2)
    return w


def granitemoe_config(**over):
    """A small GraniteMoeConfig spelled as granite-3.1-1b-a400m-instruct's config.json (multipliers of the released size)."""
    cfg = {
        "architectures": ["GraniteMoeForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.1,
        "attention_multiplier": 0.125,
        "bos_token_id": 0,
        "embedding_multiplier": 12.0,
        "eos_token_id": 0,
        "hidden_act": "silu",
        "hidden_size": 32,
        "initializer_range": 0.02,
        "intermediate_size": 16,
        "logits_scaling": 6.0,
        "max_position_embeddings": 4096,
        "model_type": "granitemoe",
        "num_attention_heads": 4,
        "num_experts_per_tok": 3,
        "num_hidden_layers": 2,
        "num_key_value_heads": 2,
        "num_local_experts": 8,
        "output_router_logits": False,
        "pad_token_id": 0,
        "residual_multiplier": 0.22,
        "rms_norm_eps": 1e-06,
        "rope_scaling": None,
        "rope_theta": 10000000.0,
        "router_aux_loss_coef": 0.0,
        "tie_word_embeddings": True,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.46.0",
        "use_cache": True,
        "vocab_size": 90,
    }
    cfg.update(over)
    return {k: v for k, v in cfg.items() if v is not None or k == "rope_scaling"}


def granitemoe_fixture(name, seed, cfg, description):
    g = torch.Generator().manual_seed(seed)
    w = granitemoe_weights(g, cfg)
    d = fresh_dir(name)
    write_safetensors(os.path.join(d, "model.safetensors"), w, "F32", {"format": "pt"})
    write_config(d, cfg)
    MOE_MARGINS.clear()
    write_reference(d, description, make_cases(g, cfg["vocab_size"]), granitemoe_forward, w, cfg)
    # The routing must not hinge on rounding: every token's k-th logit clear of the next one.
    assert min(MOE_MARGINS) > 1e-3, f"{name}: a routing margin of {min(MOE_MARGINS)}; pick another seed"


def load_balancing_loss(logits, experts, k):
    """transformers' load_balancing_loss_func (Switch Transformer's equations 4-6 as GraniteMoe adds them), written from
    its definition: the layers' router logits of the real tokens together [M, E]; p = softmax; each token's k largest;
    tokens_per_expert[j, e] = share of tokens whose j-th choice is e; router_prob[e] = mean p_e;
    loss = E * sum(tokens_per_expert * router_prob)."""
    p = torch.softmax(torch.cat(logits, dim=0), dim=-1)
    chosen = p.topk(k, dim=-1).indices
    tokens_per_expert = torch.nn.functional.one_hot(chosen, experts).double().mean(dim=0)
    return float((tokens_per_expert * p.mean(dim=0)[None, :]).sum() * experts)


def fixture_granitemoe_router_aux():
    # output_router_logits true: the reference's load-balancing loss over a batch of the two cases (the 7-token one
    # right-padded to 16; padding tokens leave the loss, so only the real tokens' logits are gathered).
    # A vocabulary of 259 (AlignSharp's byte tokenizer fits it: the trainers' tests run on it).
    cfg = granitemoe_config(output_router_logits=True, router_aux_loss_coef=0.02, num_local_experts=6, num_experts_per_tok=2,
                            vocab_size=259)
    g = torch.Generator().manual_seed(1050)
    w = granitemoe_weights(g, cfg)
    d = fresh_dir("granitemoe-router-aux")
    write_safetensors(os.path.join(d, "model.safetensors"), w, "F32", {"format": "pt"})
    write_config(d, cfg)
    cases = make_cases(g, cfg["vocab_size"])
    MOE_MARGINS.clear()
    w64 = {k: t.double() for k, t in w.items()}
    ROUTER_LOGITS.clear()
    for ids in cases:
        granitemoe_forward(w64, cfg, torch.tensor(ids))
    aux = load_balancing_loss(ROUTER_LOGITS, cfg["num_local_experts"], cfg["num_experts_per_tok"])
    write_reference(d, "granitemoe, output_router_logits true (coef 0.02): 6 experts, 2 per token; the routers' "
                    "load-balancing loss of the two cases as one right-padded batch", cases, granitemoe_forward, w, cfg,
                    extra={"router_aux": {"rows": cases, "aux_loss": fmt(aux)}})
    assert min(MOE_MARGINS) > 1e-3, f"granitemoe-router-aux: a routing margin of {min(MOE_MARGINS)}; pick another seed"


def fixture_granitemoe():
    # granite-3.1-1b-a400m's layout in small: 8 experts, 3 per token, tied head, Granite's multipliers, RoPE base 1e7.
    granitemoe_fixture("granitemoe-top3-of-8", 1047, granitemoe_config(), "granitemoe: 8 experts of width 16, 3 per token; "
                       "multipliers 12 / 0.125 / 0.22 / 6; heads 4 / kv 2; tied")
    # The experts' keys absent (transformers' defaults: 8 experts, 2 per token), attention biases, an untied head.
    granitemoe_fixture("granitemoe-defaults-bias", 1048, granitemoe_config(num_local_experts=None, num_experts_per_tok=None,
                       attention_bias=True, tie_word_embeddings=False, vocab_size=84, intermediate_size=12),
                       "granitemoe: num_local_experts and num_experts_per_tok absent (8 and 2), q/k/v/o biases, untied")


def fixture_granite4_experts():
    # granite-4.0-h-tiny's layout in small: Mamba-2 mixers and a NoPE attention layer, each with the shared MLP and 6
    # experts of width 12, 2 per token, added to it.
    MOE_MARGINS.clear()
    granite4_fixture("granite4-hybrid-experts", 1049, granite4_config(layer_types=["mamba", "attention", "mamba"], num_hidden_layers=3,
                     num_local_experts=6, num_experts_per_tok=2, intermediate_size=12, shared_intermediate_size=20, vocab_size=86),
                     "granitemoehybrid with experts: mamba, attention, mamba; 6 experts of width 12, 2 per token, beside a "
                     "shared MLP of 20; multipliers 12 / 0.0625 / 0.246 / 4; tied")
    assert min(MOE_MARGINS) > 1e-3, f"granite4-hybrid-experts: a routing margin of {min(MOE_MARGINS)}; pick another seed"


def falcon_h1_shape(cfg):
    """(heads, head size, state, groups, conv width, channels) of Falcon-H1's mixer with FalconH1Config's defaults."""
    inner = cfg.get("mamba_d_ssm", 1024)
    if inner is None:
        inner = cfg.get("mamba_expand", 2) * cfg["hidden_size"]
    heads = cfg.get("mamba_n_heads", 128)
    head = cfg.get("mamba_d_head", "auto")
    return heads, inner // heads if head == "auto" else head, cfg.get("mamba_d_state", 256), cfg.get("mamba_n_groups", 1), cfg.get("mamba_d_conv", 4), inner


def falcon_h1_forward(w, cfg, ids, mask=None):
    """Falcon-H1 as modular_falcon_h1.py, one sequence, mask [T]: embeddings * embedding_multiplier; per layer
    x = RMS(h; input_layernorm), the mixer (granite4_mamba with x * ssm_in_multiplier, in_proj's output times the µP
    vector of ssm_multipliers [z, x, B, C, dt] by part, the gated norm per mamba_n_groups only with mamba_rms_norm,
    before the gate with mamba_norm_before_gate) times ssm_out_multiplier, plus attention on x * attention_in_multiplier
    (k times key_multiplier, RoPE over positions counted from the first real token, hd^-1/2, padding keys masked) times
    attention_out_multiplier, added to h; then h += down(up(y) * silu(gate(y) * mlp_multipliers[0])) * mlp_multipliers[1]
    with y = RMS(h; pre_ff_layernorm); logits = RMS(h; final_layernorm) @ head^T * lm_head_multiplier."""
    t = len(ids)
    nh, nkv, hd, eps = llama_shapes(cfg)
    m = torch.ones(t, dtype=torch.float64) if mask is None else torch.tensor(mask, dtype=torch.float64)
    positions = ((m.cumsum(-1) - 1) * m).to(torch.float32)
    inv = 1.0 / (cfg.get("rope_theta", 10000.0) ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
    emb = torch.cat((positions[:, None] * inv[None, :],) * 2, dim=-1).double()
    cos, sin = emb.cos(), emb.sin()
    blocked = torch.triu(torch.ones(t, t, dtype=torch.bool), diagonal=1) | (m == 0)[None, :]
    lin = linear(w)
    shape = falcon_h1_shape(cfg)
    heads, _, n, groups, _, inner = shape
    zm, xm, bm, cm, dtm = cfg.get("ssm_multipliers") or [1.0] * 5
    mup = torch.cat([torch.full((inner,), zm), torch.full((inner,), xm), torch.full((groups * n,), bm), torch.full((groups * n,), cm),
                     torch.full((heads,), dtm)]).double()
    norm = ("before" if cfg.get("mamba_norm_before_gate", True) else "after") if cfg.get("mamba_rms_norm", False) else None
    gate_m, down_m = cfg.get("mlp_multipliers") or [1.0, 1.0]
    h = w["model.embed_tokens.weight"][ids] * cfg.get("embedding_multiplier", 1.0)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        x = rms_norm(h, w[p + "input_layernorm.weight"], eps)
        mixer = granite4_mamba(w, cfg, p + "mamba.", x, m, shape=shape, scale_in=cfg.get("ssm_in_multiplier", 1.0), mup=mup,
                               norm=norm, norm_groups=groups) * cfg.get("ssm_out_multiplier", 1.0)
        xa = x * cfg.get("attention_in_multiplier", 1.0)
        q = lin(xa, p + "self_attn.q_proj").reshape(t, nh, hd).transpose(0, 1)
        k = lin(xa, p + "self_attn.k_proj").reshape(t, nkv, hd).transpose(0, 1) * cfg.get("key_multiplier", 1.0)
        v = lin(xa, p + "self_attn.v_proj").reshape(t, nkv, hd).transpose(0, 1)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        k, v = k.repeat_interleave(nh // nkv, dim=0), v.repeat_interleave(nh // nkv, dim=0)
        s = (q @ k.transpose(-1, -2) / math.sqrt(hd)).masked_fill(blocked, torch.finfo(torch.float32).min)
        attn = lin((torch.softmax(s, dim=-1) @ v).transpose(0, 1).reshape(t, nh * hd), p + "self_attn.o_proj")
        h = h + (mixer + attn * cfg.get("attention_out_multiplier", 1.0))
        y = rms_norm(h, w[p + "pre_ff_layernorm.weight"], eps)
        g = lin(y, p + "feed_forward.gate_proj") * gate_m
        h = h + lin(lin(y, p + "feed_forward.up_proj") * (g * torch.sigmoid(g)), p + "feed_forward.down_proj") * down_m
    h = rms_norm(h, w["model.final_layernorm.weight"], eps)
    head = w["model.embed_tokens.weight"] if cfg.get("tie_word_embeddings", False) else w["lm_head.weight"]
    return h @ head.T * cfg.get("lm_head_multiplier", 1.0)


def falcon_h1_weights(g, cfg):
    d, v, mlp = cfg["hidden_size"], cfg["vocab_size"], cfg["intermediate_size"]
    attn_bias, mlp_bias = cfg.get("attention_bias", False), cfg.get("mlp_bias", False)
    w = {"model.embed_tokens.weight": randn(g, v, d, std=0.5), "model.final_layernorm.weight": norm_weight(g, d)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = norm_weight(g, d)
        w[p + "pre_ff_layernorm.weight"] = norm_weight(g, d)
        attention_weights(g, w, p + "self_attn.", cfg, attn_bias)
        mamba_weights(g, w, p + "mamba.", cfg, falcon_h1_shape(cfg), d, cfg.get("mamba_proj_bias", False),
                      cfg.get("projectors_bias", False), norm=cfg.get("mamba_rms_norm", False))
        for name, shape in (("gate_proj", (mlp, d)), ("up_proj", (mlp, d)), ("down_proj", (d, mlp))):
            w[p + f"feed_forward.{name}.weight"] = randn(g, *shape, std=0.2)
            if mlp_bias:
                w[p + f"feed_forward.{name}.bias"] = randn(g, shape[0], std=0.1)
    if not cfg.get("tie_word_embeddings", False):
        w["lm_head.weight"] = randn(g, v, d, std=0.5)
    return w


def falcon_h1_config(**over):
    """A small FalconH1Config as Falcon-H1-0.5B-Instruct's config.json spells it (µP multipliers of the released kind)."""
    cfg = {
        "architectures": ["FalconH1ForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "attention_in_multiplier": 1.0,
        "attention_out_multiplier": 0.9375,
        "bos_token_id": 1,
        "embedding_multiplier": 5.656854249492381,
        "eos_token_id": 11,
        "head_dim": 16,
        "hidden_act": "silu",
        "hidden_size": 32,
        "initializer_range": 0.02,
        "intermediate_size": 48,
        "key_multiplier": 0.390625,
        "lm_head_multiplier": 0.0390625,
        "mamba_chunk_size": 4,
        "mamba_conv_bias": True,
        "mamba_d_conv": 4,
        "mamba_d_head": 8,
        "mamba_d_ssm": 48,
        "mamba_d_state": 8,
        "mamba_expand": 2,
        "mamba_n_groups": 2,
        "mamba_n_heads": 6,
        "mamba_norm_before_gate": True,
        "mamba_proj_bias": False,
        "mamba_rms_norm": True,
        "max_position_embeddings": 16384,
        "mlp_bias": False,
        "mlp_multipliers": [0.8838834764831844, 0.5859375],
        "model_type": "falcon_h1",
        "num_attention_heads": 4,
        "num_hidden_layers": 3,
        "num_key_value_heads": 2,
        "pad_token_id": 0,
        "projectors_bias": False,
        "rms_norm_eps": 1e-05,
        "rope_scaling": None,
        "rope_theta": 100000000000.0,
        "ssm_in_multiplier": 1.25,
        "ssm_multipliers": [0.3535533905932738, 0.25, 0.3535533905932738, 0.5, 0.3535533905932738],
        "ssm_out_multiplier": 0.23570226039551587,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.52.0.dev0",
        "use_cache": True,
        "vocab_size": 94,
    }
    cfg.update(over)
    return cfg


def falcon_h1_fixture(name, seed, cfg, description):
    padded_fixture(name, seed, cfg, description, falcon_h1_weights, falcon_h1_forward, cfg["pad_token_id"])


def fixture_falcon_h1():
    # Falcon-H1-0.5B's layout in small: attention (heads 4 / kv 2 of 16) and a mixer (48 channels, not expand x hidden:
    # mamba_d_ssm; 6 heads of 8 in 2 groups, state 8) in every layer, the gated norm per group before the gate, µP
    # multipliers of the released kind everywhere, chunks of 4, untied.
    falcon_h1_fixture("falcon-h1-mup", 1045, falcon_h1_config(), "falcon_h1: attention and a Mamba-2 mixer in each of 3 "
                      "layers; mamba_d_ssm 48 (6 heads x 8, 2 groups, state 8); gated norm per group before the gate; "
                      "multipliers on embeddings, keys, attention out, ssm in/out, in_proj parts, MLP gate/down, logits")
    # The defaults' other branches: no gated norm (y * silu(z)), biases on attention, MLP, in_proj and out_proj, one
    # group, tied, d_head auto.
    falcon_h1_fixture("falcon-h1-no-norm-bias", 1046, falcon_h1_config(mamba_rms_norm=False, attention_bias=True, mlp_bias=True,
                      mamba_proj_bias=True, projectors_bias=True, mamba_n_groups=1, mamba_d_head="auto", tie_word_embeddings=True,
                      num_hidden_layers=2, vocab_size=90),
                      "falcon_h1: no gated norm (y * silu(z)), biases on q/k/v/o, the MLP, in_proj and out_proj, one group, tied")


def main():
    os.makedirs(ROOT, exist_ok=True)
    fixture_gpt2_hub()
    fixture_gpt2_save_pretrained()
    fixture_llama_gqa()
    fixture_qwen2()
    fixture_llama_sharded()
    fixture_llama_bf16()
    fixture_mistral()
    fixture_llama3_rope()
    fixture_mistral_sliding_window()
    fixture_qwen3()
    fixture_gemma2()
    fixture_gemma3()
    fixture_phi3()
    fixture_qwen2_sliding_window()
    fixture_smollm3()
    fixture_olmo2()
    fixture_qwen3_yarn_v5()
    fixture_gemma3_v5()
    fixture_granite()
    fixture_phi4_mini()
    fixture_gpt2_exact_gelu()
    fixture_gemma1()
    fixture_neox_pythia()
    fixture_neox_v5_sequential()
    fixture_stablelm2()
    fixture_phi2()
    fixture_opt()
    fixture_exaone4()
    fixture_ernie45()
    fixture_hunyuan()
    fixture_olmo()
    fixture_bloom()
    fixture_lfm2()
    fixture_glm()
    fixture_starcoder2()
    fixture_bigcode()
    fixture_gpt_neo()
    fixture_helium()
    fixture_granite4()
    fixture_falcon_h1()
    fixture_granitemoe()
    fixture_granite4_experts()
    fixture_granitemoe_router_aux()
    fixture_phi3_yarn_type()
    fixture_phi3_inner_original()
    fixture_llama_pretraining_tp()


if __name__ == "__main__":
    main()
