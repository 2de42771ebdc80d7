"""Batch-1 decode with other prefetch sizes of the GEMVs' early launch, in one process (a probe,
not a benchmark). "default" is the engine as configured; the others change one size:

  after-short N MB   the GEMV behind a short kernel (the o projection, behind attention) may
                     prefetch N MB of its matrix before its wait (pdl.PREFETCH_AFTER_SHORT_KERNEL)
  rows N B           every GEMV prefetches N bytes of each weight row (pdl.PREFETCH_ROW_BYTES)

    python scripts/probes/prefetch_probe.py [rounds]
"""

import sys

import torch
from decode_variants import GreedyTokens, batch1_engine, compare_decode, print_rates

from engine.kernels import pdl

rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
print(torch.cuda.get_device_name(), flush=True)
engine = batch1_engine()
greedy = GreedyTokens(engine)
defaults = pdl.PREFETCH_ROW_BYTES, pdl.PREFETCH_AFTER_SHORT_KERNEL


def sizes(row_bytes: int, after_short: int):
    def use() -> None:
        pdl.PREFETCH_ROW_BYTES, pdl.PREFETCH_AFTER_SHORT_KERNEL = row_bytes, after_short
    return use


variants = {"default": sizes(*defaults)}
variants |= {f"after-short {mb} MB": sizes(defaults[0], mb << 20) for mb in (8, 16, 32)}
variants |= {f"rows {n} B": sizes(n, defaults[1]) for n in (768, 1536)}
rates = compare_decode(engine, variants, rounds, after=greedy)
print("greedy tokens equal to 'default':", greedy.equal_to("default"))
print_rates(rates)
