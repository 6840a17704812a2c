#!/usr/bin/python3
"""Write PEFT-format LoRA adapters for some model fixtures, and the logits of the merged model, independently of
AlignSharp: the adapter is laid out as PEFT's save_pretrained writes it (adapter_config.json; adapter_model.safetensors
with base_model.model.<module>.lora_A.weight [r, in] and .lora_B.weight [out, r]), and the reference logits come from
the float64 reference forward of make_fixtures.py run on W + scale * B @ A (transposed for GPT-2's Conv1D, as PEFT's
fan_in_fan_out merge does), scale = alpha / r, or alpha / sqrt(r) with rsLoRA.

A sequence-classification adapter (task_type SEQ_CLS, a reward model trained with LoRA) also holds its score head, saved
whole as PEFT's modules_to_save saves it: base_model.model.score.weight [1, hidden] (PeftModelForSequenceClassification
records modules_to_save ["classifier", "score"]); its reference is the score at every position, the merged model's
final hidden state times that head.

A DoRA adapter (use_dora, Liu et al. 2024) also holds base_model.model.<module>.lora_magnitude_vector [out] (PEFT saves
it without ".weight"). Without dropout PEFT's DoRA layer computes b + (m / ||W + scale B A||) * (x (W + scale B A)^T),
the row norms over the input dimension, so its reference is the same forward on W' = m / ||W + dW|| * (W + dW) row by
row; the magnitudes are drawn near those norms so that every row's factor differs from 1.

    /usr/bin/python3 scripts/make_lora_fixtures.py      # writes tests/fixtures/adapters/<name>/
"""
import json
import math
import os
import struct
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as mf  # noqa: E402

MODELS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "models")
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "adapters")


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "F32", (path, name, info["dtype"])
        a, b = info["data_offsets"]
        out[name] = torch.frombuffer(bytearray(data[a:b]), dtype=torch.float32).reshape(info["shape"]).clone()
    return out


def make(name, base, module_prefix, targets, r, alpha, rslora, forward, seed, fan_in_fan_out=False, body_prefix="",
         score_head=False, dora=False):
    """module_prefix: how the HF model names modules (e.g. 'model.', 'transformer.'); body_prefix: how the fixture's
    file names the same tensors ('' for GPT-2's hub naming)."""
    g = torch.Generator().manual_seed(seed)
    base_dir = os.path.join(MODELS, base)
    w = read_safetensors(os.path.join(base_dir, "model.safetensors"))
    with open(os.path.join(base_dir, "config.json")) as f:
        cfg = json.load(f)
    with open(os.path.join(base_dir, "reference.json")) as f:
        cases = [c["input_ids"] for c in json.load(f)["cases"]]

    scale = alpha / math.sqrt(r) if rslora else alpha / r
    adapter = {}
    merged = dict(w)
    dora_modules = []
    for key in sorted(w):
        # OPT's project_in / project_out are linear layers outside the blocks that PEFT's all-linear adapts too.
        in_block = ".layers." in "." + key or ".h." in "." + key or key.endswith(("project_in.weight", "project_out.weight"))
        if not key.endswith(".weight") or w[key].dim() != 2 or not in_block:
            continue
        module_in_file = key[: -len(".weight")]
        if not any(module_in_file == t or module_in_file.endswith("." + t) for t in targets):
            continue
        module = module_prefix + module_in_file[len(body_prefix):]
        stored = w[key]
        out_f, in_f = (stored.shape[1], stored.shape[0]) if fan_in_fan_out else (stored.shape[0], stored.shape[1])
        a = torch.randn(r, in_f, generator=g) * 0.3
        b = torch.randn(out_f, r, generator=g) * 0.3
        adapter[f"base_model.model.{module}.lora_A.weight"] = a
        adapter[f"base_model.model.{module}.lora_B.weight"] = b
        delta = scale * (b.double() @ a.double())
        adapted = stored.double() + (delta.T if fan_in_fan_out else delta)
        if dora:
            rows = adapted.T if fan_in_fan_out else adapted            # [out, in]
            norms = rows.norm(dim=1)
            magnitude = (norms * (0.7 + 0.6 * torch.rand(out_f, generator=g, dtype=torch.float64))).float()
            adapter[f"base_model.model.{module}.lora_magnitude_vector"] = magnitude
            dora_modules.append((key, module))
            factor = magnitude.double() / norms
            adapted = adapted * factor[None, :] if fan_in_fan_out else adapted * factor[:, None]
        merged[key] = adapted.float()
    assert adapter, f"{name}: no module matched {targets}"
    if score_head:
        # The score head replaces the LM head: the reference forward then yields one score per position.
        score = torch.randn(1, cfg["hidden_size"], generator=g) * 0.3
        adapter["base_model.model.score.weight"] = score
        merged["lm_head.weight"] = score

    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    mf.write_safetensors(os.path.join(d, "adapter_model.safetensors"), adapter, "F32", {"format": "pt"})
    config = {
        "alpha_pattern": {}, "auto_mapping": None, "base_model_name_or_path": f"../../models/{base}", "bias": "none",
        "fan_in_fan_out": fan_in_fan_out, "inference_mode": True, "init_lora_weights": True,
        "layers_pattern": None, "layers_to_transform": None, "lora_alpha": alpha, "lora_dropout": 0.05,
        "modules_to_save": None, "peft_type": "LORA", "r": r, "rank_pattern": {}, "revision": None,
        "target_modules": targets, "task_type": "SEQ_CLS" if score_head else "CAUSAL_LM", "use_dora": dora,
        "use_rslora": rslora,
    }
    if score_head:
        config["modules_to_save"] = ["classifier", "score"]
    with open(os.path.join(d, "adapter_config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")
    w64 = {k: t.double() for k, t in merged.items()}
    what = "scores (score head) of the merged model at every position" if score_head else "logits of the merged model"
    kind = "DoRA" if dora else "LoRA"
    out = {"description": f"{kind} r={r} alpha={alpha} rslora={rslora} on {base} ({', '.join(targets)}): {what}",
           "base": base, "tolerance": 1e-4, "cases": []}
    for ids in cases:
        logits = forward(w64, cfg, torch.tensor(ids)).to(torch.float32)
        if score_head:
            out["cases"].append({"input_ids": ids, "scores": [mf.fmt(row[0]) for row in logits.tolist()]})
        else:
            out["cases"].append({"input_ids": ids, "logits": [[mf.fmt(x) for x in row] for row in logits.tolist()]})
    if dora:
        out["grads"] = dora_grads(w, adapter, dora_modules, scale, fan_in_fan_out, forward, cfg, cases[0])
    with open(os.path.join(d, "reference.json"), "w") as f:
        json.dump(out, f, separators=(",", ":"))
        f.write("\n")


def dora_grads(w, adapter, modules, scale, fan_in_fan_out, forward, cfg, ids):
    """Gradients of the mean next-token cross entropy of one case with respect to every A, B and magnitude, through
    W' = m / ||W + scale B A|| * (W + scale B A) with the norm detached (DoRA section 4.3, as PEFT computes it)."""
    w64 = {k: t.double() for k, t in w.items()}
    leaves = {}
    for key, module in modules:
        a, b, m = (adapter[f"base_model.model.{module}.{part}"].double().requires_grad_()
                   for part in ("lora_A.weight", "lora_B.weight", "lora_magnitude_vector"))
        leaves.update({f"base_model.model.{module}.lora_A.weight": a, f"base_model.model.{module}.lora_B.weight": b,
                       f"base_model.model.{module}.lora_magnitude_vector": m})
        delta = scale * (b @ a)
        adapted = w64[key] + (delta.T if fan_in_fan_out else delta)
        norms = (adapted.T if fan_in_fan_out else adapted).norm(dim=1).detach()
        factor = m / norms
        w64[key] = adapted * factor[None, :] if fan_in_fan_out else adapted * factor[:, None]
    ids = torch.tensor(ids)
    loss = torch.nn.functional.cross_entropy(forward(w64, cfg, ids)[:-1], ids[1:])
    loss.backward()
    return {"loss": mf.fmt(loss.item()), "input_ids": ids.tolist(),
            "tensors": {name: [mf.fmt(x) for x in t.grad.flatten().tolist()] for name, t in leaves.items()}}


def neox_forward(w, cfg, ids):
    """make_fixtures' GPT-NeoX forward on the file's names (gpt_neox. prefix, embed_out unprefixed)."""
    return mf.neox_forward({k[len("gpt_neox."):] if k.startswith("gpt_neox.") else k: t for k, t in w.items()}, cfg, ids)


def opt_forward(w, cfg, ids):
    """make_fixtures' OPT forward on the file's names (model.decoder. prefix, lm_head unprefixed)."""
    return mf.opt_forward({k[len("model.decoder."):] if k.startswith("model.decoder.") else k: t for k, t in w.items()}, cfg, ids)


def main():
    make("llama-gqa-qv", "llama-gqa", "model.", ["q_proj", "v_proj"], 4, 8, False, mf.llama_forward, 2001,
         body_prefix="model.")
    make("llama-gqa-all-rslora", "llama-gqa", "model.",
         ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], 8, 16, True, mf.llama_forward,
         2002, body_prefix="model.")
    make("gpt2-hub-c_attn", "gpt2-hub", "transformer.", ["c_attn", "c_proj"], 4, 16, False, mf.gpt2_forward, 2003,
         fan_in_fan_out=True)
    make("phi3-qkv", "phi3-longrope", "model.", ["qkv_proj", "gate_up_proj"], 2, 4, False, mf.phi3_forward, 2004,
         body_prefix="model.")
    make("llama-gqa-dora", "llama-gqa", "model.",
         ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], 4, 8, False, mf.llama_forward,
         2006, body_prefix="model.", dora=True)
    make("phi3-qkv-dora", "phi3-longrope", "model.", ["qkv_proj", "gate_up_proj"], 2, 4, False, mf.phi3_forward, 2007,
         body_prefix="model.", dora=True)
    make("gpt2-hub-dora", "gpt2-hub", "transformer.", ["c_attn", "c_fc"], 4, 16, False, mf.gpt2_forward, 2008,
         fan_in_fan_out=True, dora=True)
    # GPT-NeoX (Pythia): PEFT's default target query_key_value (rows head by head) and the other three linear layers;
    # the fixture's file also holds the attention's mask and rotary buffers, which are not modules.
    make("gpt-neox-pythia-all", "gpt-neox-pythia", "gpt_neox.", ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
         4, 16, False, neox_forward, 2009, body_prefix="gpt_neox.")
    # opt-350m's shape: PEFT's all-linear there includes the embedding projections outside the blocks.
    make("opt-350m-all-linear", "opt-350m-shape", "model.decoder.",
         ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2", "project_in", "project_out"], 4, 8, False, opt_forward, 2010,
         body_prefix="model.decoder.")
    # BLOOM as the hub files name it (no transformer. prefix; PEFT's module names have it): PEFT's default target
    # query_key_value (rows head by head) and the MLP's output layer.
    make("bloom-hub-qkv-mlp", "bloom-hub-n-embed", "transformer.", ["query_key_value", "dense_4h_to_h"], 4, 8, False,
         mf.bloom_forward, 2011)
    # LFM2: out_proj names both the convolution layers' and the attention layers' output projections; in_proj is the
    # convolution's input projection (B, C and x in one tensor).
    make("lfm2-in-out-w1", "lfm2-hybrid-conv", "model.", ["in_proj", "out_proj", "w1"], 4, 8, False, mf.lfm2_forward, 2012,
         body_prefix="model.")
    # Granite 4.0's hybrid: in_proj and out_proj of the Mamba-2 mixers (out_proj only there: the attention's is o_proj),
    # q_proj of its attention layer, and the shared MLP's fused input_linear (gate rows, then up).
    make("granite4-mamba-in-out", "granite4-hybrid-mamba", "model.", ["in_proj", "out_proj", "q_proj", "input_linear"], 4, 8, False,
         mf.granite4_forward, 2013, body_prefix="model.")
    # Falcon-H1: the mixer's in_proj and out_proj beside the attention's q_proj and o_proj, and the MLP's gate_proj.
    make("falcon-h1-mixer-attn", "falcon-h1-mup", "model.", ["in_proj", "out_proj", "q_proj", "o_proj", "gate_proj"], 4, 8, False,
         mf.falcon_h1_forward, 2014, body_prefix="model.")
    # Granite MoE: the attention's q, v and o and the router (PEFT's module block_sparse_moe.router.layer, an nn.Linear;
    # the expert stacks are not linear modules, so no target reaches them). The adapted router still routes clear of
    # rounding: its margins are checked as the base fixture's are.
    mf.MOE_MARGINS.clear()
    make("granitemoe-attn-router", "granitemoe-top3-of-8", "model.", ["q_proj", "v_proj", "o_proj", "layer"], 4, 8, False,
         mf.granitemoe_forward, 2015, body_prefix="model.")
    assert min(mf.MOE_MARGINS) > 1e-3, f"granitemoe-attn-router: a routing margin of {min(mf.MOE_MARGINS)}"
    make("llama-gqa-seqcls", "llama-gqa", "model.", ["q_proj", "v_proj", "down_proj"], 4, 8, False, mf.llama_forward, 2005,
         body_prefix="model.", score_head=True)


if __name__ == "__main__":
    main()
