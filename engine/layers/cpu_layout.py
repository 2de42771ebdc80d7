"""Where the weights sit in memory for CPU decode, which streams every one of them once a token.

A batch-1 decode step on the CPU is memory-bound: SmolLM2-135M reads ~540 MB of float32 weights
per token. Two placements make that stream faster without changing a single value (same dtype,
same numbers, only their addresses):

- Linear and LM-head weights [out, in] are stored transposed, as [in, out] rows, the parameter
  being a transposed view. With one token, `F.linear(x, W)` then runs x @ W^T as a plain
  non-transposed GEMM that reads long rows of W^T; with W row-major, MKL's M=1 path is slower.
  Measured on 2 cores, all 120 layer matmuls: 17.2 -> 16.4 ms; the tied 49152 x 576 head:
  4.1 -> 3.5 ms. The embedding, when tied, gathers its rows from that layout (7 us a token).
- Every parameter moves into one buffer backed by transparent huge pages (madvise), so the
  stream crosses ~270 pages of 2 MiB instead of ~130k of 4 KiB: the 120 layer matmuls alone
  16.2 -> 15.3 ms; in the engine, decode about 1.5% faster than with the transposed layout alone.

Only for the CPU: on CUDA the Triton GEMV expects row-major weights.
"""

from __future__ import annotations

import mmap

import torch
from torch import nn

from engine.layers.embedding import LMHead
from engine.layers.linear import Linear

HUGE_PAGE = 2 << 20
_ALIGN = 64  # bytes: every parameter starts on a cache line


def place_for_cpu_decode(model: nn.Module) -> None:
    """Re-place `model`'s parameters (all on the CPU) as the module docstring says; values unchanged."""
    params = list(model.parameters())  # a tied parameter once
    if any(p.device.type != "cpu" for p in params):
        raise ValueError("place_for_cpu_decode is for models on the CPU")
    transposed = {id(m.weight) for m in model.modules() if isinstance(m, (Linear, LMHead)) and m.weight.dim() == 2}
    sizes = [-(-p.numel() * p.element_size() // _ALIGN) * _ALIGN for p in params]
    arena = _huge_page_bytes(sum(sizes))
    offset = 0
    with torch.no_grad():
        for param, size in zip(params, sizes):
            chunk = arena[offset : offset + param.numel() * param.element_size()].view(param.dtype)
            offset += size
            if id(param) in transposed:
                rows, cols = param.shape
                chunk = chunk.view(cols, rows)  # [in, out]
                chunk.copy_(param.data.t())
                param.data = chunk.t()  # [out, in] again, column-major
            else:
                chunk = chunk.view(param.shape)
                chunk.copy_(param.data)
                param.data = chunk


def _huge_page_bytes(num_bytes: int) -> torch.Tensor:
    """A uint8 tensor of num_bytes starting on a 2 MiB boundary, backed by huge pages where the
    kernel grants them (plain pages otherwise: same speed as before, nothing breaks)."""
    advice = getattr(mmap, "MADV_HUGEPAGE", None)
    if advice is None or not hasattr(mmap, "MAP_ANONYMOUS"):  # not Linux
        return torch.empty(num_bytes, dtype=torch.uint8)
    region = mmap.mmap(-1, num_bytes + HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        region.madvise(advice)
    except OSError:  # transparent huge pages off: plain pages
        pass
    whole = torch.frombuffer(region, dtype=torch.uint8)  # keeps the mapping alive
    start = -whole.data_ptr() % HUGE_PAGE
    return whole[start : start + num_bytes]
