"""Batch-1 decode with and without programmatic dependent launch, in one process (a probe, not a
benchmark): the decode graph is captured again for each variant, and the variants alternate.
Greedy tokens are compared with the first variant's: PDL alone computes the same sums, the fused
norm and SwiGLU round differently.

    python scripts/probes/pdl_probe.py [rounds]
"""

import sys

import torch
from decode_variants import batch1_engine, compare_decode, print_rates

from engine.kernels import pdl, triton_linear
from engine.kernels.triton_linear import _gemv_kernel
from engine.types import SamplingParams

rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
print("PDL supported:", pdl.ENABLED, torch.cuda.get_device_name(), flush=True)
engine = batch1_engine()


def knobs(enabled: bool, prefetch: int, fused: bool):
    """PDL on, bytes of each weight row a GEMV program prefetches while it waits, norm and SwiGLU
    inside the GEMVs."""
    def use() -> None:
        pdl.ENABLED, pdl.PREFETCH_ROW_BYTES, triton_linear.FUSE_ONE_ROW = enabled, prefetch, fused
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


variants = {"off": knobs(False, 0, False), "pdl": knobs(True, 1024, False), "pdl fused": knobs(True, 1024, True),
            "fused": knobs(False, 0, True)}
rates = compare_decode(engine, variants, rounds, after=greedy)
print("greedy tokens equal to 'off':", {name: toks == tokens["off"] for name, toks in tokens.items()})
print_rates(rates)
print("GEMV configs (the same in every variant):")
for key, config in _gemv_kernel.cache.items():
    print(" ", key[:4], config)
