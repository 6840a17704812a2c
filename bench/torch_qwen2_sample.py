#!/usr/bin/env python3
"""PyTorch side of `alignsharp bench sample --model DIR` for Qwen2 checkpoints: the same workload (random prompt,
KV-cached sampling, multinomial at temperature 1, prefill included, only the last position's logits computed).

Plain torch written from the published Qwen2 definition (RMSNorm, RoPE, grouped-query attention with q/k/v
biases, SwiGLU MLP, tied or untied LM head); weights read from the checkpoint's safetensors (F32/BF16) without
the transformers package (bench/qwen2_ref.py, shared with torch_qwen2_ppo.py). --dtype bfloat16 keeps the weights (and activations, as torch does) in bf16.

    /usr/bin/python3 bench/torch_qwen2_sample.py --model /tmp/qwen2.5-0.5b-random --batch 1 \\
        --threads 2 --tuned --omp-wait-policy passive

Uses ../shared/bench/torch_ref/common.py (or $TORCH_REF) for the thread and BLAS settings.
"""
import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(1, os.environ.get("TORCH_REF", os.path.join(ROOT, "..", "shared", "bench", "torch_ref")))
sys.path.insert(2, os.path.join(ROOT, "..", "..", "shared", "bench", "torch_ref"))  # from a worktree under wt/
import common  # noqa: E402
from qwen2_ref import load_config, make_forward, read_safetensors  # noqa: E402


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

    c = load_config(args.model)
    dt = getattr(torch, args.dtype)
    w = {k: v.to(dt) for k, v in read_safetensors(os.path.join(args.model, "model.safetensors"), torch, np).items()}
    L, KV, hd = c.L, c.KV, c.hd
    head = w["model.embed_tokens.weight"] if c.tied else w["lm_head.weight"]
    hidden = make_forward(torch, c)

    def lin(x, name, bias=True):
        return F.linear(x, w[name + ".weight"], w.get(name + ".bias") if bias else None)

    def forward(ids, cache, start):
        return F.linear(hidden(w, ids, lin, cache, start)[:, -1:], head).float()

    g = torch.Generator().manual_seed(args.seed)
    B, P, N = args.batch, args.prompt_len, args.new_tokens
    prompt = torch.randint(0, c.V, (B, P), generator=g)

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
