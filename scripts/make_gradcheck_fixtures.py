#!/usr/bin/python3
"""Generate the whole-model training-step fixtures under tests/fixtures/gradcheck/ (in the manner of llm.c's
test_gpt2: one small model, one batch, the loss, every parameter's gradient, and the parameters after a few
optimizer steps, all from an independent PyTorch run).

Run (from the repository root, with Debian's Python; nothing from PyPI is needed):

    /usr/bin/python3 scripts/make_gradcheck_fixtures.py

The forward passes are make_fixtures.py's (written from transformers' modeling_gpt2.py / modeling_llama.py, see
its docstring for the formulas); here PyTorch's autograd differentiates them in float64, starting from float32
weights, and torch.optim.AdamW takes the steps. Per fixture directory:

  config.json, model.safetensors   a Hugging Face style checkpoint (the weights before any step)
  reference.safetensors            float32 tensors: "logits" [B, T, V] of the first forward,
                                   "grad.<checkpoint name>" the loss gradient of every stored tensor, in its stored
                                   layout (GPT-2 Conv1D weights [in, out]), and "step<N>.<checkpoint name>" every
                                   stored tensor after N AdamW steps
  reference.json                   input_ids and targets [B][T] (-100 = ignored), the loss before each step
                                   (losses[0] is the loss of the first forward), the optimizer's hyper-parameters
                                   and the number of steps, the tolerances

Tolerances: a float32 implementation matches the float64 logits, loss and gradients to ~1e-6 relative to each
tensor's scale. The parameters after the steps match as closely except where Adam amplifies float32 noise: it
divides each element's gradient by that element's own running magnitude, so an element whose gradient is at the
noise floor moves by up to lr per step in a direction the noise decides (GPT-2's key bias, whose gradient is zero
in exact arithmetic because softmax ignores a per-query constant, is the standing case). Elements whose first
gradient is below params.small_grad times their tensor's largest are therefore allowed steps * lr.

Loss: mean over counted positions of -log softmax(logits)[target] (torch.nn.functional.cross_entropy with
ignore_index=-100), the whole batch pooled. Optimizer: torch.optim.AdamW with its defaults (lr 1e-3, betas
(0.9, 0.999), eps 1e-8, weight_decay 1e-2, bias correction on, no amsgrad), every tensor in one group, each step a
fresh forward and backward on the same batch. PyTorch's AdamW: p *= 1 - lr*wd; m = b1 m + (1-b1) g;
v = b2 v + (1-b2) g^2; p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps).

Deterministic: fixed torch seeds; rerunning rewrites identical files.
"""

import json
import os
import shutil
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as mf  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "gradcheck")
STEPS = 3


def batch_logits(forward, w, cfg, ids):
    return torch.stack([forward(w, cfg, torch.tensor(row)) for row in ids])


def loss_of(logits, targets):
    v = logits.shape[-1]
    return F.cross_entropy(logits.reshape(-1, v), torch.tensor(targets).reshape(-1), ignore_index=-100)


def make_batch(g, vocab, batch, seq):
    """Random ids; targets are the next id, the last position of each row and one middle position ignored."""
    ids = torch.randint(0, vocab, (batch, seq), generator=g).tolist()
    targets = [row[1:] + [-100] for row in ids]
    targets[0][seq // 2] = -100
    return ids, targets


def write_fixture(name, description, cfg, weights, forward, g, batch=2, seq=9):
    d = os.path.join(ROOT, name)
    if os.path.isdir(d):
        shutil.rmtree(d)
    os.makedirs(d)
    mf.write_safetensors(os.path.join(d, "model.safetensors"), weights, "F32", {"format": "pt"})
    mf.write_config(d, cfg)
    ids, targets = make_batch(g, cfg["vocab_size"], batch, seq)

    names = sorted(weights)
    params = {n: weights[n].double().clone().requires_grad_(True) for n in names}
    opt = torch.optim.AdamW([params[n] for n in names])
    defaults = {k: opt.defaults[k] for k in ("lr", "betas", "eps", "weight_decay", "amsgrad")}
    assert defaults == {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 1e-2, "amsgrad": False}, defaults

    reference = {}
    losses = []
    for step in range(STEPS):
        opt.zero_grad()
        logits = batch_logits(forward, params, cfg, ids)
        loss = loss_of(logits, targets)
        loss.backward()
        losses.append(loss.item())
        if step == 0:
            reference["logits"] = logits.detach()
            for n in names:
                reference["grad." + n] = params[n].grad.detach().clone()
        opt.step()
    for n in names:
        reference[f"step{STEPS}.{n}"] = params[n].detach().clone()
    mf.write_safetensors(os.path.join(d, "reference.safetensors"), reference, "F32")

    with open(os.path.join(d, "reference.json"), "w") as f:
        json.dump({
            "description": description,
            "input_ids": ids,
            "targets": targets,
            "losses": losses,
            "optimizer": {"name": "AdamW", "lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8,
                          "weight_decay": 1e-2, "steps": STEPS},
            "tolerance": {"logits": {"abs": 1e-4, "rel": 1e-4}, "loss": {"abs": 1e-5},
                          "grad": {"abs": 1e-5, "rel": 1e-3}, "params": {"abs": 5e-6, "rel": 1e-5, "small_grad": 1e-4}},
        }, f, indent=1)
        f.write("\n")


def fixture_gpt2():
    g = torch.Generator().manual_seed(2001)
    cfg = mf.gpt2_config(vocab_size=48, n_positions=16, n_ctx=16, bos_token_id=0, eos_token_id=0)
    write_fixture("gpt2", "gpt2 (hub naming, tied head, learned positions, LayerNorm, gelu_new), 2 layers, "
                  "D 32, 4 heads, V 48; batch 2 x 9", cfg, mf.gpt2_weights(g, cfg), mf.gpt2_forward, g)


def fixture_llama():
    g = torch.Generator().manual_seed(2002)
    cfg = mf.llama_family_config("llama", "LlamaForCausalLM", attention_bias=False, mlp_bias=False,
                                 pretraining_tp=1, head_dim=8, vocab_size=48, rms_norm_eps=1e-5)
    write_fixture("llama", "llama (heads 4 / kv 2 GQA, RoPE, RMSNorm, SwiGLU, untied lm_head), 2 layers, D 32, "
                  "I 64, V 48; batch 2 x 9", cfg, mf.llama_weights(g, cfg), mf.llama_forward, g)


def main():
    os.makedirs(ROOT, exist_ok=True)
    fixture_gpt2()
    fixture_llama()


if __name__ == "__main__":
    main()
