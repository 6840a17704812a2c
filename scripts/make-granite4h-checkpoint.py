#!/usr/bin/env python3
"""Writes a Hugging Face checkpoint directory shaped like Granite-4.0-H-350M (approximately: hidden 768, 32 layers of
which every eighth is attention, Mamba-2 mixers of 48 heads x 32 channels with a state of 128, shared MLP 2048,
vocabulary 100352) with random bf16 weights, for benchmarks of the Mamba-2 layers at a real size.

The tensors and the config come from make_fixtures.py's Granite 4.0 functions (the same names and layout as the
test fixtures); weights are make_fixtures' random draws scaled by 0.1.

    /usr/bin/python3 scripts/make-granite4h-checkpoint.py --out /tmp/granite-4.0-h-350m-shape
    alignsharp bench sample --model /tmp/granite-4.0-h-350m-shape --batch 8
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as mf  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    layers = 32
    cfg = mf.granite4_config(vocab_size=100352, hidden_size=768, num_hidden_layers=layers,
                             layer_types=["attention" if i % 8 == 7 else "mamba" for i in range(layers)],
                             num_attention_heads=12, num_key_value_heads=4, mamba_n_heads=48, mamba_d_head=32,
                             mamba_d_state=128, mamba_n_groups=1, mamba_chunk_size=256, shared_intermediate_size=2048,
                             max_position_embeddings=32768)
    w = {k: v * 0.1 for k, v in mf.granite4_weights(torch.Generator().manual_seed(args.seed), cfg).items()}
    os.makedirs(args.out, exist_ok=True)
    mf.write_safetensors(os.path.join(args.out, "model.safetensors"), w, "BF16", {"format": "pt"})
    mf.write_config(args.out, cfg)
    print(f"{sum(t.numel() for t in w.values()) / 1e6:.1f}M parameters written to {args.out}")


if __name__ == "__main__":
    main()
