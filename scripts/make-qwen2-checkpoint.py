#!/usr/bin/env python3
"""Writes a Hugging Face checkpoint directory shaped like Qwen2.5-0.5B or Qwen2.5-1.5B with random bf16 weights.

For benchmarks and memory checks at real model scale without downloading weights: config.json (Qwen2ForCausalLM,
the published shapes) and one model.safetensors with every tensor in bfloat16, HF tensor names
(model.embed_tokens.weight, model.layers.{i}.self_attn.q_proj.weight, ...; tied embeddings, so no lm_head).
Weights are normal(0, 0.02), norm weights 1, biases 0.02·normal; a fixed --seed gives the same file.
Tensors are generated and written one at a time, so memory stays near the largest tensor.

    /usr/bin/python3 scripts/make-qwen2-checkpoint.py --size 0.5b --out /tmp/qwen2.5-0.5b-random
    alignsharp bench sample --model /tmp/qwen2.5-0.5b-random --batch 1
    /usr/bin/python3 scripts/make-qwen2-checkpoint.py --size 0.5b --reward-head --out /tmp/qwen2.5-0.5b-rm   # a reward model

Needs only numpy (python3-numpy); torch is not used.
"""
import argparse
import json
import os
import struct
import sys

import numpy as np

# Shapes of the published configs (Qwen/Qwen2.5-0.5B and Qwen/Qwen2.5-1.5B config.json).
SIZES = {
    "0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                 num_key_value_heads=2, max_window_layers=24),
    "1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                 num_key_value_heads=2, max_window_layers=28),
}


def config_for(size, vocab):
    s = SIZES[size]
    return {
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "hidden_act": "silu",
        "hidden_size": s["hidden_size"],
        "intermediate_size": s["intermediate_size"],
        "num_hidden_layers": s["num_hidden_layers"],
        "num_attention_heads": s["num_attention_heads"],
        "num_key_value_heads": s["num_key_value_heads"],
        "max_position_embeddings": 32768,
        "max_window_layers": s["max_window_layers"],
        "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0,
        "sliding_window": 32768,
        "use_sliding_window": False,
        "tie_word_embeddings": True,
        "vocab_size": vocab,
        "bos_token_id": 151643,
        "eos_token_id": 151643,
        "torch_dtype": "bfloat16",
    }


def tensor_shapes(cfg):
    d, f = cfg["hidden_size"], cfg["intermediate_size"]
    head_dim = d // cfg["num_attention_heads"]
    kv = cfg["num_key_value_heads"] * head_dim
    yield "model.embed_tokens.weight", (cfg["vocab_size"], d)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        yield p + "input_layernorm.weight", (d,)
        yield p + "self_attn.q_proj.weight", (d, d)
        yield p + "self_attn.q_proj.bias", (d,)
        yield p + "self_attn.k_proj.weight", (kv, d)
        yield p + "self_attn.k_proj.bias", (kv,)
        yield p + "self_attn.v_proj.weight", (kv, d)
        yield p + "self_attn.v_proj.bias", (kv,)
        yield p + "self_attn.o_proj.weight", (d, d)
        yield p + "post_attention_layernorm.weight", (d,)
        yield p + "mlp.gate_proj.weight", (f, d)
        yield p + "mlp.up_proj.weight", (f, d)
        yield p + "mlp.down_proj.weight", (d, f)
    yield "model.norm.weight", (d,)
    if cfg["architectures"] == ["Qwen2ForSequenceClassification"]:
        yield "score.weight", (1, d)


def to_bf16_bytes(x):
    """float32 array -> little-endian bf16 bytes, rounding to nearest, ties to even (as torch does)."""
    bits = x.astype(np.float32).view(np.uint32)
    rounded = (bits + (0x7FFF + ((bits >> 16) & 1))) >> 16
    return rounded.astype("<u2").tobytes()


def values(name, shape, rng):
    if name.endswith("norm.weight"):
        return np.ones(shape, np.float32)
    x = rng.standard_normal(shape, dtype=np.float32) * 0.02
    return x


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=sorted(SIZES), default="0.5b", help="which published shape (default 0.5b)")
    ap.add_argument("--out", required=True, help="directory to write (created; existing files are replaced)")
    ap.add_argument("--vocab", type=int, default=151936, help="vocabulary size (default 151936, Qwen2.5's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reward-head", action="store_true",
                    help="a reward model: Qwen2ForSequenceClassification with one label (score.weight [1, hidden]) instead of the LM head")
    args = ap.parse_args()
    if args.vocab < 1:
        sys.exit("--vocab must be >= 1")

    cfg = config_for(args.size, args.vocab)
    if args.reward_head:
        cfg["architectures"] = ["Qwen2ForSequenceClassification"]
        cfg["num_labels"] = 1
        cfg["pad_token_id"] = 151643
    shapes = list(tensor_shapes(cfg))
    header, offset = {}, 0
    for name, shape in shapes:
        n = int(np.prod(shape)) * 2
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    header["__metadata__"] = {"format": "pt"}
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * ((8 - len(blob) % 8) % 8)  # keep the data 8-byte aligned, as the reference writer does

    os.makedirs(args.out, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    target = os.path.join(args.out, "model.safetensors")
    tmp = target + ".tmp"
    with open(tmp, "wb") as fh:
        fh.write(struct.pack("<Q", len(blob)))
        fh.write(blob)
        for name, shape in shapes:
            fh.write(to_bf16_bytes(values(name, shape, rng)))
    os.replace(tmp, target)
    cfg_tmp = os.path.join(args.out, "config.json.tmp")
    with open(cfg_tmp, "w") as fh:
        json.dump(cfg, fh, indent=2)
        fh.write("\n")
    os.replace(cfg_tmp, os.path.join(args.out, "config.json"))
    params = sum(int(np.prod(s)) for _, s in shapes)
    print(f"wrote {args.out}: Qwen2.5-{args.size} shape, {params / 1e6:.1f}M parameters, {offset / 1e9:.2f} GB bf16")


if __name__ == "__main__":
    main()
