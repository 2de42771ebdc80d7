"""Batch-1 decode with each of this session's changes left out in turn, in one process (a probe,
not a benchmark): "all" is the engine of BENCHMARKS.md runs 47-48, with the last split merging the
attention splits (the reduce kernel does by default since run 54); each other variant switches one
change off.

  -rotary     rotary + KV write as its own kernel after the qkv GEMV
  -merge      a reduce kernel merges the attention splits
  -split64    128-token attention splits
  -argmax     torch's argmax
  -evict      weight loads without the evict_first hint

Greedy tokens are compared with the first variant's (the GEMV configs and the rounding differ
between variants, so random weights may flip a near tie).

    python scripts/probes/fusion_probe.py [rounds]
"""

import sys

import torch
from decode_variants import GreedyTokens, batch1_engine, compare_decode, print_rates

from engine import kernels
from engine.kernels import reference, split_k, triton_decode_attention, triton_linear, triton_ops

rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
print(torch.cuda.get_device_name(), flush=True)
engine = batch1_engine()
greedy = GreedyTokens(engine)


def variant(off: str):
    def use() -> None:
        triton_linear.FUSE_ROTARY = off != "rotary"
        triton_decode_attention.FUSE_MERGE = off != "merge"
        split_k.MIN_SPLIT_TOKENS = 128 if off == "split64" else 64
        kernels.argmax = reference.argmax if off == "argmax" else triton_ops.argmax
        triton_linear.WEIGHT_EVICTION = "" if off == "evict" else "evict_first"
    return use


variants = {"all": variant("")} | {f"-{name}": variant(name) for name in ("rotary", "merge", "split64", "argmax", "evict")}
rates = compare_decode(engine, variants, rounds, after=greedy)
print("greedy tokens equal to 'all':", greedy.equal_to("all"))
print_rates(rates)
