#!/usr/bin/env python3
"""Writes a Hugging Face checkpoint directory shaped like granite-3.1-1b-a400m (hidden 1024, 24 layers, 16 heads over
8 key/value heads, 32 experts of width 512 with 8 per token, vocabulary 49155, tied head; 1.33B parameters, about 400M
of them active per token) with random bf16 weights, for benchmarks of the mixture-of-experts layers at a real size.

The tensors and the config come from make_fixtures.py's Granite MoE functions (the same names and layout as the test
fixtures); weights are make_fixtures' random draws scaled by 0.1.

    /usr/bin/python3 scripts/make-granitemoe-checkpoint.py --out /tmp/granite-3.1-1b-a400m-shape
    alignsharp bench sample --model /tmp/granite-3.1-1b-a400m-shape --batch 8
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as mf  # noqa: E402


def make(g):
    cfg = mf.granitemoe_config(vocab_size=49155, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                               num_key_value_heads=8, intermediate_size=512, num_local_experts=32, num_experts_per_tok=8,
                               attention_multiplier=0.015625, max_position_embeddings=131072)
    # bf16 as they are drawn: 1.3 B float32 values would be 5.3 GB held twice over.
    return cfg, {k: (v * 0.1).to(torch.bfloat16) for k, v in mf.granitemoe_weights(g, cfg).items()}


if __name__ == "__main__":
    mf.write_bench_checkpoint(__doc__.splitlines()[0], make)
