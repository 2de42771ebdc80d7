"""Batch-1 decode with the single-row GEMV configs the autotuner picked against one config pinned
for every layer (a probe, not a benchmark): the decode graph is captured again for each variant,
and the variants alternate.

    python scripts/probes/gemv_pin_probe.py [rounds]
"""

import random
import sys

import torch
import triton
from decode_variants import batch1_engine, compare_decode, print_rates

from engine.bench_gpu_engine import _drive, _prompt
from engine.kernels.triton_linear import _gemv_kernel

rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 2
engine = batch1_engine()
_drive(engine, [_prompt(random.Random(2), 64, engine.vocab_size)], 8)  # autotunes every shape
tuned = {key: config for key, config in _gemv_kernel.cache.items() if key[3] is True}
print("autotuned single-row configs:", torch.cuda.get_device_name())
for key, config in tuned.items():
    print(" ", key[:5], config)


def pinned(configs: dict):
    return lambda: _gemv_kernel.cache.update(configs)


def one_config(block_n, block_k, warps, stages):
    config = triton.Config({"BLOCK_N": block_n, "BLOCK_K": block_k, "ROW": True}, num_warps=warps, num_stages=stages)
    return pinned({key: config for key in tuned})


variants = {
    "autotuned": pinned(tuned),
    "8x1024 w4 s3": one_config(8, 1024, 4, 3),
    "8x512 w4 s4": one_config(8, 512, 4, 4),
    "4x1024 w4 s4": one_config(4, 1024, 4, 4),
    "16x512 w4 s3": one_config(16, 512, 4, 3),
}
print_rates(compare_decode(engine, variants, rounds))
