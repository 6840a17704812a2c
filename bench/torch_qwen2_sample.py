#!/usr/bin/env python3
"""PyTorch side of `alignsharp bench sample --model DIR` for Qwen2 checkpoints: the same workload (random prompt,
KV-cached sampling, multinomial at temperature 1, prefill included, only the last position's logits computed).

Plain torch written from the published Qwen2 definition (RMSNorm, RoPE, grouped-query attention with q/k/v
biases, SwiGLU MLP, tied or untied LM head); weights read from the checkpoint's safetensors (F32/BF16) without
the transformers package. --dtype bfloat16 keeps the weights (and activations, as torch does) in bf16.

    /usr/bin/python3 bench/torch_qwen2_sample.py --model /tmp/qwen2.5-0.5b-random --batch 1 \\
        --threads 2 --tuned --omp-wait-policy passive

Uses ../shared/bench/torch_ref/common.py (or $TORCH_REF) for the thread and BLAS settings.
"""
import argparse
import json
import os
import struct
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.environ.get("TORCH_REF", os.path.join(ROOT, "..", "shared", "bench", "torch_ref")))
sys.path.insert(1, os.path.join(ROOT, "..", "..", "shared", "bench", "torch_ref"))  # from a worktree under wt/
import common  # noqa: E402


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


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_common_args(p)
    p.add_argument("--model", required=True, help="checkpoint directory (config.json + model.safetensors)")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--prompt-len", type=int, default=16)
    p.add_argument("--new-tokens", type=int, default=112)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    torch = common.init(args)
    import numpy as np
    import torch.nn.functional as F

    cfg = json.load(open(os.path.join(args.model, "config.json")))
    if cfg.get("model_type") not in ("qwen2", "llama", "mistral"):
        raise SystemExit(f"{args.model}: model_type {cfg.get('model_type')} is not a Llama-style model")
    dt = getattr(torch, args.dtype)
    w = {k: v.to(dt) for k, v in read_safetensors(os.path.join(args.model, "model.safetensors"), torch, np).items()}
    d, L = cfg["hidden_size"], cfg["num_hidden_layers"]
    H, KV = cfg["num_attention_heads"], cfg.get("num_key_value_heads", cfg["num_attention_heads"])
    hd = d // H
    eps, theta = cfg.get("rms_norm_eps", 1e-6), cfg.get("rope_theta", 10000.0)
    head = w["model.embed_tokens.weight"] if cfg.get("tie_word_embeddings", False) else w["lm_head.weight"]
    inv_freq = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))

    def rms(x, weight):
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(dt) * weight

    def rope(x, pos):  # x [B, h, T, hd], rotate-half convention
        ang = pos[:, None].float() * inv_freq[None, :]
        cos, sin = torch.cat([ang.cos(), ang.cos()], -1).to(dt), torch.cat([ang.sin(), ang.sin()], -1).to(dt)
        x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
        return x * cos + torch.cat([-x2, x1], -1) * sin

    def lin(x, name, bias=True):
        b = w.get(name + ".bias") if bias else None
        return F.linear(x, w[name + ".weight"], b)

    def forward(ids, cache, start):
        B, T = ids.shape
        x = F.embedding(ids, w["model.embed_tokens.weight"])
        pos = torch.arange(start, start + T)
        mask = None
        if T > 1:
            mask = torch.full((T, start + T), float("-inf"), dtype=dt).triu(start + 1)
        for i in range(L):
            pre = f"model.layers.{i}."
            h = rms(x, w[pre + "input_layernorm.weight"])
            q = lin(h, pre + "self_attn.q_proj").view(B, T, H, hd).transpose(1, 2)
            k = lin(h, pre + "self_attn.k_proj").view(B, T, KV, hd).transpose(1, 2)
            v = lin(h, pre + "self_attn.v_proj").view(B, T, KV, hd).transpose(1, 2)
            q, k = rope(q, pos), rope(k, pos)
            ck, cv = cache[i]
            ck[:, :, start:start + T] = k
            cv[:, :, start:start + T] = v
            keys = ck[:, :, :start + T].repeat_interleave(H // KV, 1)
            vals = cv[:, :, :start + T].repeat_interleave(H // KV, 1)
            att = (q @ keys.transpose(-1, -2)) / hd ** 0.5
            if mask is not None:
                att = att + mask
            a = (att.float().softmax(-1).to(dt) @ vals).transpose(1, 2).reshape(B, T, d)
            x = x + lin(a, pre + "self_attn.o_proj", bias=False)
            h = rms(x, w[pre + "post_attention_layernorm.weight"])
            x = x + lin(F.silu(lin(h, pre + "mlp.gate_proj", False)) * lin(h, pre + "mlp.up_proj", False), pre + "mlp.down_proj", False)
        x = rms(x[:, -1:], w["model.norm.weight"])
        return F.linear(x, head).float()

    g = torch.Generator().manual_seed(args.seed)
    B, P, N = args.batch, args.prompt_len, args.new_tokens
    prompt = torch.randint(0, cfg["vocab_size"], (B, P), generator=g)

    def generate():
        cache = [(torch.zeros(B, KV, P + N, hd, dtype=dt), torch.zeros(B, KV, P + N, hd, dtype=dt)) for _ in range(L)]
        out = torch.empty(B, P + N, dtype=torch.long)
        out[:, :P] = prompt
        logits = forward(prompt, cache, 0)
        for t in range(N):
            nxt = torch.multinomial(F.softmax(logits[:, -1, :], dim=-1), 1, generator=g)
            out[:, P + t:P + t + 1] = nxt
            if t + 1 < N:
                logits = forward(nxt, cache, P + t)
        return out

    env = common.env_info(torch)
    print(f"# model={args.model} dtype={args.dtype} B={B} prompt={P} new={N} threads={args.threads} tuned={args.tuned}")
    with torch.no_grad():
        for _ in range(args.warmup):
            generate()
        times = []
        for i in range(args.repeats):
            t0 = time.perf_counter()
            generate()
            times.append(time.perf_counter() - t0)
            print(f"rep {i}: {times[-1]:.3f}s  {B * N / times[-1]:.2f} tok/s", flush=True)
    tps = common.summarize([B * N / t for t in times])
    print(f"RESULT sample {os.path.basename(os.path.normpath(args.model))} {args.dtype} B={B}: median {tps['median']:.2f} tok/s; "
          f"{common.summarize(times)['median'] / N * 1e3:.1f} ms per step; peak RSS {common.peak_rss_mib():.0f} MiB")
    common.emit(args, dict(bench="sample_qwen2", model=args.model, dtype=args.dtype, B=B, prompt_len=P, new_tokens=N,
                           tokens_per_s=tps, gen_s=common.summarize(times), peak_rss_mib=common.peak_rss_mib(), env=env))


if __name__ == "__main__":
    main()
