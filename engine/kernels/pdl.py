"""Programmatic dependent launch (Hopper and later) for the decode path's Triton kernels.

A batch-1 decode step is ~330 kernels, and between two of them the GPU's memory sits idle: the
next kernel is launched only once the last program of the one ahead has exited, and its loads
start a few microseconds after that. With programmatic dependent launch (CUDA's programmatic
stream serialization; PTX `griddepcontrol`) a kernel is launched while the one ahead still runs:

- each kernel lets its dependents launch as soon as it starts (`allow_dependents`);
- each kernel waits (`wait_for_inputs`) before it touches anything the kernels ahead of it write,
  and before it writes anything at all;
- before the wait it reads only what was written by work launched without early launch (copies,
  ordinary kernels: the step's inputs) or by earlier steps. Such work has completed when the next
  early-launched kernel starts (that one waits for it as any stream successor does), and each
  early-launched kernel starts only after the one ahead of it has started, so after it too.
  Whatever an early-launched kernel of the step writes (q, the current token's K/V row,
  activations) is read only after the wait. So the GEMV starts pulling its first weight rows into
  L2 (`prefetch_rows_l2`), and the weights stream on while the small kernels between two GEMVs
  (norm, rotary, attention) run; decode attention loads seq_lens, its block table and the K/V rows
  of the earlier tokens in its first tile.

Every kernel that is launched this way calls `wait_for_inputs` on every path, even one that exits
early: a kernel's wait covers only the kernel just ahead of it, and that kernel completes only
after its own wait, so the chain reaches back through the whole step. The launches keep their
order in a captured CUDA graph (the capture records programmatic edges).

Measured on an H100 (BENCHMARKS.md runs 34-44, batch-1 decode of the 8B shape): early launch
without the prefetch is slower than none (~169 against ~172 tok/s), and so is the prefetch without
early launch; together, with 1 KB a row, they are faster (~179 with the fused norm and SwiGLU).
Larger prefetches, prefetches ahead of the loads inside the loop, and a GEMV that lets its
dependents launch only after its loads were all slower.

This module is the switch and the sizes, pure Python; the device functions are in
engine/kernels/triton_pdl.py. `ENABLED` is read at each launch: it is on for CUDA cards of compute
capability 9.0 and above, unless LLMQ_PDL=0. PREFETCH_ROW_BYTES is what a GEMV prefetches of each
weight row, PREFETCH_AFTER_SHORT_KERNEL what a single-row GEMV with no prologue (at batch 1: the
o projection, behind attention) may prefetch of its whole matrix; both are read at each launch
(scripts/probes/knobs_probe.py changes them).
"""

from __future__ import annotations

import os


def _supported() -> bool:
    if os.environ.get("LLMQ_PDL", "1") == "0":
        return False
    try:
        import torch

        return torch.cuda.is_available() and torch.cuda.get_device_capability()[0] >= 9
    except Exception:  # no CUDA runtime: the references run, nothing is launched
        return False


ENABLED = _supported()
# Bytes of each weight row a GEMV program pulls into L2 before its wait (0: none). A multiple of 16.
# 768 B: +0.1% over 1 KB on an H100 in two probes (BENCHMARKS.md runs 52-53); 512 B was no better,
# 1.5 KB slower.
PREFETCH_ROW_BYTES = 768
# A GEMV behind a short, latency-bound kernel (the o projection behind decode attention) has the
# memory to itself while it waits: it may prefetch up to this many bytes of its whole matrix, more
# than PREFETCH_ROW_BYTES a row where the matrix is small (the 8B shape's o projection: all of it,
# 32 MB, +0.6% a batch-1 step on an H100 over 1 KB a row; 16 MB +0.3%, 8 MB +0.2%: run 52). 0: rows
# only.
PREFETCH_AFTER_SHORT_KERNEL = 32 << 20


def launch_options() -> dict:
    """Keyword arguments for a Triton launch of a kernel that takes a PDL constexpr."""
    return {"PDL": ENABLED, "launch_pdl": ENABLED}


def prefetch_bytes(row_bytes: int, row_stride_bytes: int, rows: int = 0, after_short_kernel: bool = False) -> int:
    """What a GEMV program prefetches of each of its weight rows (of `rows`): the first
    PREFETCH_ROW_BYTES, or behind a short kernel up to a 1/rows share of PREFETCH_AFTER_SHORT_KERNEL
    if that is more; at most the row. 0 when PDL is off or the rows are not 16-byte aligned (the
    bulk prefetch needs both)."""
    if not ENABLED or row_bytes % 16 or row_stride_bytes % 16:
        return 0
    wanted = PREFETCH_ROW_BYTES
    if after_short_kernel and rows > 0:
        wanted = max(wanted, PREFETCH_AFTER_SHORT_KERNEL // rows)
    return min(wanted - wanted % 16, row_bytes)
