"""Batch-1 decode with one knob changed at a time, in one process (a probe, not a benchmark).
"default" is the engine as configured; each other variant changes one knob:

  after-short N MB   the GEMV behind a short kernel (the o projection, behind attention) may
                     prefetch N MB of its matrix before its wait (pdl.PREFETCH_AFTER_SHORT_KERNEL)
  rows N B           every GEMV prefetches N bytes of each weight row (pdl.PREFETCH_ROW_BYTES)
  split N            attention splits of N tokens (split_k.MIN_SPLIT_TOKENS)
  fused merge        the last split to finish merges the attention splits (no reduce kernel)

    python scripts/probes/knobs_probe.py [rounds] [variant ...]   (all variants when none named)
"""

import sys

import torch
from decode_variants import GreedyTokens, batch1_engine, compare_decode, print_rates

from engine.kernels import pdl, split_k, triton_decode_attention

KNOBS = {  # variant -> (module, attribute, value)
    **{f"after-short {mb} MB": (pdl, "PREFETCH_AFTER_SHORT_KERNEL", mb << 20) for mb in (0, 8, 16)},
    **{f"rows {n} B": (pdl, "PREFETCH_ROW_BYTES", n) for n in (512, 768, 1536)},
    **{f"split {n}": (split_k, "MIN_SPLIT_TOKENS", n) for n in (32, 128)},
    "fused merge": (triton_decode_attention, "FUSE_MERGE", True),
}

rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
chosen = sys.argv[2:] or list(KNOBS)
print(torch.cuda.get_device_name(), flush=True)
engine = batch1_engine()
greedy = GreedyTokens(engine)
defaults = {(module, name): getattr(module, name) for module, name, _ in KNOBS.values()}


def variant(knob: str | None):
    def use() -> None:
        for (module, name), value in defaults.items():
            setattr(module, name, value)
        if knob is not None:
            module, name, value = KNOBS[knob]
            setattr(module, name, value)
    return use


variants = {"default": variant(None)} | {knob: variant(knob) for knob in chosen}
rates = compare_decode(engine, variants, rounds, after=greedy)
print("greedy tokens equal to 'default':", greedy.equal_to("default"))
print_rates(rates)
