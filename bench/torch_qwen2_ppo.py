#!/usr/bin/env python3
"""PyTorch side of `alignsharp bench rl --model DIR`: one PPO step on a Qwen2 (Llama-style) checkpoint, the same
workload and the same time split.

Per step, as AlignSharp's PPO trainer takes it (TRL's PPOTrainer):
1. generation: --batch random prompts of --prompt-len tokens, --max-new-tokens sampled with a KV cache at temperature
   0.7 (no EOS stops a row, so every completion has the same length on both sides);
2. scoring without gradients: the policy's log-probabilities of the completion tokens (π_old, with entropies), the
   reference's (the policy with its LoRA adapter off, or a frozen copy when training every weight), the value model's
   values (a second LoRA adapter and a scalar head on the policy's trunk, or a copy of the policy with a scalar head),
   and the reward model's score at the last token (the --reward-model checkpoint, or the policy's weights with a random
   score head);
3. advantages: per-token reward -β·KL (k1) plus the score at the last token, GAE (γ 1, λ 0.95), whitened;
4. update (--num-ppo-epochs over the whole batch as one micro-batch): the policy's clipped surrogate (ε 0.2, token
   mean) + 0.1 × the clipped value loss, backward, gradient norm clipped at 1, AdamW.

Plain torch written from the published Qwen2 definition (RMSNorm, RoPE, grouped-query attention with q/k/v biases,
SwiGLU MLP, tied or untied LM head); LoRA as PEFT defines it (A Kaiming-uniform, B zero, scale alpha/r, dropout on the
adapter's input), on every linear layer of the blocks ("all-linear"). Weights read from the safetensors without the
transformers package (the model and the reader: bench/qwen2_ref.py, shared with torch_qwen2_sample.py).

    /usr/bin/python3 bench/torch_qwen2_ppo.py --model /tmp/qwen2.5-0.5b --lora-r 16 --batch 4 \\
        --threads 2 --tuned --omp-wait-policy passive

Model FLOPs are counted as `bench rl` counts them (see PpoFlops in src/AlignSharp.Cli/Commands/BenchRlCommand.cs), and
the utilisation is against a float32 1024³ torch.mm timed in the same process.
"""
import argparse
import math
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(1, os.environ.get("TORCH_REF", os.path.join(ROOT, "..", "shared", "bench", "torch_ref")))
sys.path.insert(2, os.path.join(ROOT, "..", "..", "shared", "bench", "torch_ref"))  # from a worktree under wt/
import common  # noqa: E402
from qwen2_ref import load_config, make_forward, read_safetensors  # noqa: E402

TARGETS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
TEMPERATURE, KL_COEF, GAMMA, LAM, CLIP, CLIP_VALUE, VF_COEF, LR, MAX_GRAD_NORM = 0.7, 0.05, 1.0, 0.95, 0.2, 0.2, 0.1, 5e-5, 1.0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_common_args(p)
    p.add_argument("--model", required=True, help="policy checkpoint directory (config.json + model.safetensors)")
    p.add_argument("--reward-model", default=None, help="scalar-head checkpoint (score.weight); default: the policy's weights with a random score head")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--prompt-len", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--num-ppo-epochs", type=int, default=1)
    p.add_argument("--lora-r", type=int, default=0, help="LoRA rank (0 = train every weight of policy and value model)")
    p.add_argument("--lora-alpha", type=float, default=0, help="0 = 2×r")
    p.add_argument("--lora-dropout", type=float, default=0.05)
    p.add_argument("--frozen-dtype", choices=["float32", "bfloat16"], default="float32",
                   help="storage of the frozen weights (reference, reward model, a LoRA run's base)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--steps", type=int, default=3)
    args = p.parse_args()
    torch = common.init(args)
    import numpy as np
    import torch.nn.functional as F

    c = load_config(args.model)
    d, L, H, KV, hd, V, tied = c.d, c.L, c.H, c.KV, c.hd, c.V, c.tied
    lora = args.lora_r > 0
    frozen_dt = getattr(torch, args.frozen_dtype)
    g = torch.Generator().manual_seed(args.seed)

    def load(path, dtype, trainable):
        w = {k: v.to(dtype) for k, v in read_safetensors(os.path.join(path, "model.safetensors"), torch, np).items()}
        for t in w.values():
            t.requires_grad_(trainable)
        return w

    def score_head(w, seed):
        if "score.weight" in w:
            return w["score.weight"].float()
        gen = torch.Generator().manual_seed(seed)
        return torch.randn(1, d, generator=gen) * 0.02

    def new_adapter(seed):
        """PEFT's LoRA init: A Kaiming-uniform (a = √5), B zero; one (A, B) per adapted linear layer."""
        gen = torch.Generator().manual_seed(seed)
        shapes = {"self_attn.q_proj": (H * hd, d), "self_attn.k_proj": (KV * hd, d), "self_attn.v_proj": (KV * hd, d),
                  "self_attn.o_proj": (d, H * hd), "mlp.gate_proj": (c.ffn, d),
                  "mlp.up_proj": (c.ffn, d), "mlp.down_proj": (d, c.ffn)}
        ad = {}
        for i in range(L):
            for t in TARGETS:
                out, inp = shapes[t]
                bound = 1 / math.sqrt(inp)  # kaiming_uniform_(a=√5) on [r, in]
                a = (torch.rand(args.lora_r, inp, generator=gen) * 2 - 1) * bound
                ad[f"model.layers.{i}.{t}"] = (a.requires_grad_(), torch.zeros(out, args.lora_r, requires_grad=True))
        return ad

    alpha = args.lora_alpha if args.lora_alpha > 0 else 2.0 * args.lora_r
    scale = alpha / args.lora_r if lora else 0.0

    # The models. LoRA: one frozen trunk; the policy and the value model each add an adapter, the reference has none.
    # Full-parameter: the policy and the value model train their own copies; the reference is a frozen copy.
    if lora:
        base = load(args.model, frozen_dt, False)
        policy = (base, new_adapter(1))
        reference = (base, None)
        value = (base, new_adapter(2))
        trainable = [t for ab in policy[1].values() for t in ab] + [t for ab in value[1].values() for t in ab]
    else:
        policy = (load(args.model, torch.float32, True), None)
        reference = (load(args.model, frozen_dt, False), None)
        value = (load(args.model, torch.float32, True), None)
        trainable = list(policy[0].values()) + list(value[0].values())
    value_head = (torch.randn(1, d, generator=torch.Generator().manual_seed(3)) * 0.02).requires_grad_()
    trainable.append(value_head)
    reward_w = load(args.reward_model or args.model, frozen_dt, False)
    reward_head = score_head(reward_w, 17).to(frozen_dt)
    opt = torch.optim.AdamW(trainable, lr=LR, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)

    forward = make_forward(torch, c)

    def hidden(model, ids, cache=None, start=0, dropout=0.0):
        """Final-norm hidden states [B, T, d] of ids [B, T] (causal; with a KV cache from position start)."""
        w, ad = model

        def lin(x, name, bias=True):
            y = F.linear(x, w[name + ".weight"], w.get(name + ".bias") if bias else None)
            if ad is not None:
                a, b = ad[name]
                xa = F.dropout(x, dropout) if dropout > 0 else x
                y = y + F.linear(F.linear(xa.to(a.dtype), a), b).to(y.dtype) * scale
            return y

        return forward(w, ids, lin, cache, start)

    def lm_head(model):
        w = model[0]
        return w["model.embed_tokens.weight"] if tied else w["lm_head.weight"]

    B, P, N = args.batch, args.prompt_len, args.max_new_tokens
    prompt = torch.randint(0, V, (B, P), generator=g)

    def generate():
        dt = policy[0]["model.embed_tokens.weight"].dtype
        cache = [(torch.zeros(B, KV, P + N, hd, dtype=dt), torch.zeros(B, KV, P + N, hd, dtype=dt)) for _ in range(L)]
        out = torch.empty(B, P + N, dtype=torch.long)
        out[:, :P] = prompt
        logits = F.linear(hidden(policy, prompt, cache, 0)[:, -1:], lm_head(policy)).float()
        for t in range(N):
            nxt = torch.multinomial(F.softmax(logits[:, -1, :] / TEMPERATURE, dim=-1), 1, generator=g)
            out[:, P + t:P + t + 1] = nxt
            if t + 1 < N:
                logits = F.linear(hidden(policy, nxt, cache, P + t), lm_head(policy)).float()
        return out

    def token_logprobs(model, seq, dropout=0.0):
        """Log-probabilities and entropies [B, N] of the completion tokens at the temperature (LM head at those positions)."""
        h = hidden(model, seq, dropout=dropout)[:, P - 1:P + N - 1]
        logits = F.linear(h, lm_head(model)).float() / TEMPERATURE
        logp = logits.log_softmax(-1)
        entropy = -(logp.exp() * logp).sum(-1)
        return logp.gather(-1, seq[:, P:].unsqueeze(-1)).squeeze(-1), entropy

    def values(seq, dropout=0.0):
        h = hidden(value, seq, dropout=dropout)[:, P - 1:P + N - 1]
        return F.linear(h.float(), value_head).squeeze(-1)

    def whiten(x):
        return (x - x.mean()) / (x.var(unbiased=True) + 1e-8).sqrt()

    def step():
        t = {}
        t0 = time.perf_counter()
        with torch.no_grad():
            seq = generate()
            t1 = time.perf_counter()
            score = F.linear(hidden((reward_w, None), seq)[:, -1].float(), reward_head.float()).squeeze(-1)
            t2 = time.perf_counter()
            logp, _ = token_logprobs(policy, seq)
            t3 = time.perf_counter()
            ref_logp, _ = token_logprobs(reference, seq)
            t4 = time.perf_counter()
            vals = values(seq)
            t5 = time.perf_counter()
            # 3. advantages: r_t = -β·KL_t, + score at the last token; GAE; whitened.
            kl = logp - ref_logp
            rewards = -KL_COEF * kl
            rewards[:, -1] += score
            adv = torch.zeros_like(rewards)
            last = torch.zeros(B)
            for j in reversed(range(N)):
                nxt = vals[:, j + 1] if j + 1 < N else torch.zeros(B)
                delta = rewards[:, j] + GAMMA * nxt - vals[:, j]
                last = delta + GAMMA * LAM * last
                adv[:, j] = last
            returns = adv + vals
            adv = whiten(adv)
        t.update(generation_s=t1 - t0, reward_s=t2 - t1, policy_s=t3 - t2, reference_s=t4 - t3, value_s=t5 - t4, scoring_s=t5 - t1)
        t6 = time.perf_counter()
        for _ in range(args.num_ppo_epochs):
            new_logp, _ = token_logprobs(policy, seq, dropout=args.lora_dropout if lora else 0.0)
            ratio = (new_logp - logp).exp()
            pg = torch.max(-adv * ratio, -adv * ratio.clamp(1 - CLIP, 1 + CLIP)).mean()
            vpred = values(seq, dropout=args.lora_dropout if lora else 0.0)
            vclipped = vals + (vpred - vals).clamp(-CLIP_VALUE, CLIP_VALUE)
            vf = 0.5 * torch.max((vpred - returns) ** 2, (vclipped - returns) ** 2).mean()
            loss = pg + VF_COEF * vf
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, MAX_GRAD_NORM)
            opt.step()
        t7 = time.perf_counter()
        t.update(update_s=t7 - t6, total_s=t7 - t0, loss=float(loss))
        return t

    # Model FLOPs, as PpoFlops in BenchRlCommand.cs counts them: the blocks' matrices (and a score head) per token, the LM
    # head only at the completion positions, attention over the full square.
    def linear_macs(w):
        return sum(t.numel() for k, t in w.items() if t.dim() == 2 and k not in ("model.embed_tokens.weight", "lm_head.weight"))

    def attention(m, T):  # forward QKᵀ and AV of one row of T tokens
        return 4.0 * m.L * m.d * T * T

    rcfg = load_config(args.reward_model or args.model)
    head_macs, T = V * d, P + N
    policy_trunk = B * (2 * linear_macs(policy[0]) * T + attention(c, T))
    reward_trunk = B * (2 * linear_macs(reward_w) * T + attention(rcfg, T)) + 2 * d * T * B * (0 if "score.weight" in reward_w else 1)
    scoring_flops = 3 * policy_trunk + 2 * (2 * head_macs * N * B) + reward_trunk
    per_weight = 4 if lora else 6
    update_flops = args.num_ppo_epochs * (2 * (per_weight * linear_macs(policy[0]) * T * B + 3 * B * attention(c, T)) + per_weight * head_macs * N * B)

    def gemm_peak():
        a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
        for _ in range(5):
            torch.mm(a, b)
        ts = []
        for _ in range(9):
            t0 = time.perf_counter()
            for _ in range(5):
                torch.mm(a, b)
            ts.append((time.perf_counter() - t0) / 5)
        return 2 * 1024 ** 3 / statistics.median(ts) / 1e9

    env = common.env_info(torch)
    print(f"# model={args.model} lora_r={args.lora_r} frozen={args.frozen_dtype} B={B} prompt={P} new={N} epochs={args.num_ppo_epochs} threads={args.threads} tuned={args.tuned}")
    runs = []
    for i in range(args.warmup + args.steps):
        r = step()
        print(("warmup " if i < args.warmup else "step ") + " ".join(f"{k} {v:.3f}" for k, v in r.items()), flush=True)
        if i >= args.warmup:
            runs.append(r)
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0] if k != "loss"}
    peak = gemm_peak()
    result = dict(bench="ppo_qwen2", model=os.path.basename(os.path.normpath(args.model)),
                  reward_model=os.path.basename(os.path.normpath(args.reward_model)) if args.reward_model else "(policy weights, random score head)",
                  training=f"lora r{args.lora_r}" if lora else "full-parameter", frozen_dtype=args.frozen_dtype,
                  batch=B, prompt_len=P, max_new_tokens=N, num_ppo_epochs=args.num_ppo_epochs, threads=args.threads,
                  steps=args.steps, tokens=B * T, completion_tokens=B * N,
                  **{k: round(v, 3) for k, v in med.items()},
                  generation_tokens_per_s=round(B * N / med["generation_s"], 2),
                  scoring_flops=scoring_flops, update_flops=update_flops,
                  scoring_gflops=round(scoring_flops / med["scoring_s"] / 1e9, 1),
                  update_gflops=round(update_flops / med["update_s"] / 1e9, 1), gemm_peak_gflops=round(peak, 1),
                  mfu_scoring=round(scoring_flops / med["scoring_s"] / 1e9 / peak, 3),
                  mfu_update=round(update_flops / med["update_s"] / 1e9 / peak, 3),
                  peak_rss_mib=round(common.peak_rss_mib()), env=env)
    print(f"RESULT ppo {result['model']} {result['training']} B={B}: total {med['total_s']:.2f} s (generation {med['generation_s']:.2f}, "
          f"scoring {med['scoring_s']:.2f}, update {med['update_s']:.2f}); MFU scoring {result['mfu_scoring']:.2f} update "
          f"{result['mfu_update']:.2f} of {peak:.0f} GFLOP/s; peak RSS {result['peak_rss_mib']} MiB")
    common.emit(args, result)


if __name__ == "__main__":
    main()
