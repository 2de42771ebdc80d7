"""Greedy argmax of logit rows, Triton: many programs a row, one launch.

torch's max(dim) walks a row in a single block: a 128256-entry float32 row (0.5 MB) takes ~28 us on
an H100, on the critical path of every decode step. Here each program reads one chunk of a row, so
the whole GPU streams it, and folds its chunk's best entry into one 64-bit key per row with an
atomic max. The last program of a row to arrive (a per-row counter tells) turns the key into the
index and puts the key and the counter back for the next call, all in the same launch.

A key orders as torch.max(dim) picks: the larger value, then the smaller index; every NaN above
every number (so the first NaN wins, as torch's NaN propagation); -0.0 and 0.0 tie. High 32 bits:
the float's bits, turned into an int32 that orders as the float; low 32 bits: 2^31 - 1 - index.
Reference: engine/kernels/reference.py argmax.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from engine.kernels import pdl, triton_pdl
from engine.kernels.persistent import PersistentBuffer

MAX_CHUNKS = 128  # programs a row at most: about one wave of an H100's 132 SMs for one row
MIN_CHUNK = 512  # entries a program reads at least: small vocabularies take few programs
_EMPTY_KEY = -(2**63)  # below every entry's key: the row's key between calls
_MIN_ROWS = 256  # rows the first buffers hold (12 bytes a row)


@triton.jit
def _entry_keys(values, cols):
    x = values.to(tl.float32)
    bits = tl.where(x == 0.0, 0, x.to(tl.int32, bitcast=True))  # -0.0 ties with 0.0
    ordered = tl.where(bits < 0, bits ^ 0x7FFFFFFF, bits)  # negatives: larger magnitude, smaller int
    ordered = tl.where(x != x, 0x7FFFFFFF, ordered)  # NaN of either sign above +inf
    return (ordered.to(tl.int64) << 32) | (0x7FFFFFFF - cols).to(tl.int64)


@triton.jit
def _argmax_kernel(
    logits_ptr, out_ptr, keys_ptr, counters_ptr,
    vocab, stride_row, stride_out,
    BLOCK: tl.constexpr, PDL: tl.constexpr, EMPTY_KEY: tl.constexpr,
):
    triton_pdl.allow_dependents(PDL)
    # First: every path waits (engine/kernels/pdl.py). It also orders this call's use of the key
    # and counter after the last call's reset of them.
    triton_pdl.wait_for_inputs(PDL)
    row = tl.program_id(1)
    cols = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < vocab
    values = tl.load(logits_ptr + row.to(tl.int64) * stride_row + cols, mask=mask, other=float("-inf"))
    best = tl.max(tl.where(mask, _entry_keys(values, cols), EMPTY_KEY), 0)
    tl.atomic_max(keys_ptr + row, best, sem="acq_rel")
    tl.debug_barrier()  # the key is in before the count, whichever thread issues each atomic
    arrived = tl.atomic_add(counters_ptr + row, 1, sem="acq_rel")
    if arrived == tl.num_programs(0) - 1:  # the row's last program: every other key is in
        key = tl.atomic_xchg(keys_ptr + row, EMPTY_KEY, sem="acq_rel")
        tl.store(out_ptr + row * stride_out, 0x7FFFFFFF - (key & 0x7FFFFFFF))
        tl.store(counters_ptr + row, 0)


def chunk_size(vocab: int) -> int:
    """Entries of a row that one program reads: a power of two, at least MIN_CHUNK, so that a row
    takes at most MAX_CHUNKS programs (128256 entries: 126 programs of 1024)."""
    return max(MIN_CHUNK, triton.next_power_of_2(triton.cdiv(vocab, MAX_CHUNKS)))


# Per row: its key (_EMPTY_KEY between calls) and its counter (0 between calls).
_KEYS = PersistentBuffer("argmax's row keys", torch.int64, _EMPTY_KEY, _MIN_ROWS)
_COUNTERS = PersistentBuffer("argmax's row counters", torch.int32, 0, _MIN_ROWS)


def row_buffers(rows: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(keys, counters) of at least `rows` rows on `device`; the first call with more rows than
    before allocates, so it must come before a capture (a warm-up with the largest batch)."""
    return _KEYS.get(device, rows), _COUNTERS.get(device, rows)


def argmax(logits: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """logits [S, V] (float32, bfloat16 or float16) -> [S] int64: each row's first index of its
    maximum, NaN above every number, as torch.max(dim).indices. out: [S] int64 to write into
    (tests pass a poisoned one). Calls on one device must not overlap (one stream): they share the
    per-row keys and counters."""
    if not logits.is_cuda:  # the entry points are swapped process-wide; CPU logits keep torch's
        from engine.kernels.reference import argmax as reference_argmax

        return reference_argmax(logits, out)
    return launch(logits, out)


def launch(logits: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """argmax's kernel launch, on whatever device the tensors are (Triton's interpreter: the CPU)."""
    rows, vocab = logits.shape
    if vocab == 0:
        raise ValueError("argmax of an empty row")
    out = torch.empty(rows, dtype=torch.int64, device=logits.device) if out is None else out
    if rows == 0:
        return out
    logits = logits if logits.stride(-1) == 1 else logits.contiguous()
    keys, counters = row_buffers(rows, logits.device)
    block = chunk_size(vocab)
    _argmax_kernel[(triton.cdiv(vocab, block), rows)](
        logits, out, keys, counters,
        vocab, logits.stride(0), out.stride(0),
        BLOCK=block, EMPTY_KEY=_EMPTY_KEY, num_warps=min(16, max(4, block // 512)), **pdl.launch_options(),
    )
    return out
