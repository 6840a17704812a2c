"""The Qwen2 model written in plain torch from the published definition (RMSNorm, RoPE in the rotate-half
convention, grouped-query attention with q/k/v biases, SwiGLU MLP), shared by bench/torch_qwen2_sample.py and
bench/torch_qwen2_ppo.py; weights are read from the checkpoint's safetensors (F32/BF16) without the transformers
package. Activations stay in the weights' dtype, as torch does; norms and softmax run in float32.
"""
import json
import os
import struct
from types import SimpleNamespace


def read_safetensors(path, torch, np):
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(n))
        base = 8 + n
        out = {}
        for name, info in header.items():
            if name == "__metadata__":
                continue
            a, b = info["data_offsets"]
            fh.seek(base + a)
            raw = fh.read(b - a)
            if info["dtype"] == "BF16":
                t = torch.from_numpy(np.frombuffer(raw, dtype="<i2").copy()).view(torch.bfloat16)
            elif info["dtype"] == "F32":
                t = torch.from_numpy(np.frombuffer(raw, dtype="<f4").copy())
            else:
                raise SystemExit(f"{path}: tensor {name} has dtype {info['dtype']}; this script reads F32 and BF16")
            out[name] = t.reshape(info["shape"])
    return out


def load_config(model_dir):
    """config.json of a Llama-style checkpoint as the dimensions the forward pass needs."""
    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    if cfg.get("model_type") not in ("qwen2", "llama", "mistral"):
        raise SystemExit(f"{model_dir}: model_type {cfg.get('model_type')} is not a Llama-style model")
    d, H = cfg["hidden_size"], cfg["num_attention_heads"]
    return SimpleNamespace(d=d, L=cfg["num_hidden_layers"], H=H, KV=cfg.get("num_key_value_heads", H), hd=d // H,
                           V=cfg["vocab_size"], ffn=cfg["intermediate_size"], eps=cfg.get("rms_norm_eps", 1e-6),
                           theta=cfg.get("rope_theta", 10000.0), tied=cfg.get("tie_word_embeddings", False))


def make_forward(torch, c):
    """hidden(w, ids, lin, cache=None, start=0): final-norm hidden states [B, T, d] of ids [B, T], causal, with a
    KV cache (per layer a (keys, values) pair [B, KV, capacity, hd]) filled from position start when given.
    lin(x, name, bias) applies the linear layer `name` (so a caller can add an adapter)."""
    import torch.nn.functional as F
    inv_freq = 1.0 / (c.theta ** (torch.arange(0, c.hd, 2, dtype=torch.float32) / c.hd))

    def rms(x, weight):
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + c.eps)).to(x.dtype) * weight

    def rope(x, pos):  # x [B, h, T, hd]
        ang = pos[:, None].float() * inv_freq[None, :]
        cos, sin = torch.cat([ang.cos(), ang.cos()], -1).to(x.dtype), torch.cat([ang.sin(), ang.sin()], -1).to(x.dtype)
        x1, x2 = x[..., : c.hd // 2], x[..., c.hd // 2:]
        return x * cos + torch.cat([-x2, x1], -1) * sin

    def hidden(w, ids, lin, cache=None, start=0):
        B, T = ids.shape
        H, KV, hd, d = c.H, c.KV, c.hd, c.d
        dt = w["model.embed_tokens.weight"].dtype
        x = F.embedding(ids, w["model.embed_tokens.weight"])
        pos = torch.arange(start, start + T)
        mask = torch.full((T, start + T), float("-inf"), dtype=dt).triu(start + 1) if T > 1 else None
        for i in range(c.L):
            pre = f"model.layers.{i}."
            h = rms(x, w[pre + "input_layernorm.weight"])
            q = lin(h, pre + "self_attn.q_proj").view(B, T, H, hd).transpose(1, 2)
            k = lin(h, pre + "self_attn.k_proj").view(B, T, KV, hd).transpose(1, 2)
            v = lin(h, pre + "self_attn.v_proj").view(B, T, KV, hd).transpose(1, 2)
            q, k = rope(q, pos), rope(k, pos)
            if cache is not None:
                ck, cv = cache[i]
                ck[:, :, start:start + T] = k
                cv[:, :, start:start + T] = v
                k, v = ck[:, :, :start + T], cv[:, :, :start + T]
            keys, vals = k.repeat_interleave(H // KV, 1), v.repeat_interleave(H // KV, 1)
            att = (q @ keys.transpose(-1, -2)) / hd ** 0.5
            if mask is not None:
                att = att + mask
            a = (att.float().softmax(-1).to(dt) @ vals).transpose(1, 2).reshape(B, T, d)
            x = x + lin(a, pre + "self_attn.o_proj", bias=False)
            h = rms(x, w[pre + "post_attention_layernorm.weight"])
            x = x + lin(F.silu(lin(h, pre + "mlp.gate_proj", False)) * lin(h, pre + "mlp.up_proj", False), pre + "mlp.down_proj", False)
        return rms(x, w["model.norm.weight"])

    return hidden
