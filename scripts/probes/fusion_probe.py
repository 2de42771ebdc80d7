"""Batch-1 decode with this session's changes switched on one by one, in one process (a probe,
not a benchmark). Each variant adds one change to the one before:

  before      rotary + KV write and the split merge as their own kernels, 128-token splits,
              torch's argmax, single-row GEMV configs without PIPE
  +rotary     rotary and the K/V write in the qkv GEMV's epilogue
  +merge      the last split program merges the splits (no reduce kernel), loads before the wait
  +split64    64-token splits
  +argmax     the one-launch Triton argmax
  +pipe       PIPE configs offered to the GEMV autotuner
  +evict      weight loads hinted evict_first

Greedy tokens are compared with the first variant's. Then the GEMV configs each variant's
autotuner kept.

    python scripts/probes/fusion_probe.py [rounds]
"""

import sys

import torch
from decode_variants import batch1_engine, compare_decode, print_rates

from engine import kernels
from engine.kernels import reference, split_k, triton_decode_attention, triton_linear, triton_ops
from engine.kernels.triton_linear import _gemv_kernel
from engine.types import SamplingParams

rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
print(torch.cuda.get_device_name(), flush=True)
engine = batch1_engine()

ORDER = ["rotary", "merge", "split64", "argmax", "pipe", "evict"]
# The autotuner's picks per config set: the PIPE configs change what it may choose.
caches = {False: {}, True: {}}


def variant(upto: int):
    on = set(ORDER[:upto])

    def use() -> None:
        triton_linear.FUSE_ROTARY = "rotary" in on
        triton_decode_attention.FUSE_MERGE = "merge" in on
        split_k.MIN_SPLIT_TOKENS = 64 if "split64" in on else 128
        kernels.argmax = triton_ops.argmax if "argmax" in on else reference.argmax
        triton_linear.PIPELINE_ROWS = "pipe" in on
        _gemv_kernel.cache = caches["pipe" in on]
        triton_linear.WEIGHT_EVICTION = "evict_first" if "evict" in on else ""
    return use


tokens: dict[str, list[int]] = {}


def greedy(name: str, ids: list[int]) -> None:
    if name in tokens:
        return
    engine.add_request("greedy", ids, SamplingParams(max_tokens=64, temperature=0.0, ignore_eos=True))
    out: list[int] = []
    while engine.has_unfinished():
        for step in engine.step():
            out.extend(step.new_token_ids)
    tokens[name] = out


names = ["before"] + ["+" + name for name in ORDER]
rates = compare_decode(engine, {name: variant(i) for i, name in enumerate(names)}, rounds, after=greedy)
print("greedy tokens equal to 'before':", {name: toks == tokens["before"] for name, toks in tokens.items()})
print_rates(rates)
for pipe, cache in caches.items():
    print(f"GEMV configs, PIPE offered: {pipe}")
    for key, config in cache.items():
        if key[3] is True:  # one row
            print(" ", key[:5], config)
