"""Batch-1 decode with and without programmatic dependent launch, in one process (a probe, not a
benchmark): the decode graph is captured again for each variant, and the variants alternate.
Greedy tokens are compared with the first variant's: PDL alone computes the same sums, the fused
norm and SwiGLU round differently.

    python scripts/probes/pdl_probe.py [rounds]
"""

import sys

import torch
from decode_variants import GreedyTokens, batch1_engine, compare_decode, print_rates

from engine.kernels import pdl, triton_linear
from engine.kernels.triton_linear import _gemv_kernel

rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
print("PDL supported:", pdl.ENABLED, torch.cuda.get_device_name(), flush=True)
engine = batch1_engine()
greedy = GreedyTokens(engine)


def knobs(enabled: bool, prefetch: int, fused: bool):
    """PDL on, bytes of each weight row a GEMV program prefetches while it waits, norm and SwiGLU
    inside the GEMVs."""
    def use() -> None:
        pdl.ENABLED, pdl.PREFETCH_ROW_BYTES, triton_linear.FUSE_ONE_ROW = enabled, prefetch, fused
    return use


variants = {"off": knobs(False, 0, False), "pdl": knobs(True, 1024, False), "pdl fused": knobs(True, 1024, True),
            "fused": knobs(False, 0, True)}
rates = compare_decode(engine, variants, rounds, after=greedy)
print("greedy tokens equal to 'off':", greedy.equal_to("off"))
print_rates(rates)
print("GEMV configs (the same in every variant):")
for key, config in _gemv_kernel.cache.items():
    print(" ", key[:4], config)
