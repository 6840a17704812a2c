#!/usr/bin/env python3
"""Writes a Hugging Face checkpoint directory shaped like Granite-4.0-H-350M (approximately: hidden 768, 32 layers of
which every eighth is attention, Mamba-2 mixers of 48 heads x 32 channels with a state of 128, shared MLP 2048,
vocabulary 100352) with random bf16 weights, for benchmarks of the Mamba-2 layers at a real size.

The tensors and the config come from make_fixtures.py's Granite 4.0 functions (the same names and layout as the
test fixtures); weights are make_fixtures' random draws scaled by 0.1.

    /usr/bin/python3 scripts/make-granite4h-checkpoint.py --out /tmp/granite-4.0-h-350m-shape
    alignsharp bench sample --model /tmp/granite-4.0-h-350m-shape --batch 8
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as mf  # noqa: E402


def make(g):
    layers = 32
    cfg = mf.granite4_config(vocab_size=100352, hidden_size=768, num_hidden_layers=layers,
                             layer_types=["attention" if i % 8 == 7 else "mamba" for i in range(layers)],
                             num_attention_heads=12, num_key_value_heads=4, mamba_n_heads=48, mamba_d_head=32,
                             mamba_d_state=128, mamba_n_groups=1, mamba_chunk_size=256, shared_intermediate_size=2048,
                             max_position_embeddings=32768)
    return cfg, {k: v * 0.1 for k, v in mf.granite4_weights(g, cfg).items()}


if __name__ == "__main__":
    mf.write_bench_checkpoint(__doc__.splitlines()[0], make)
