"""y = x W^T for the few rows of a small decode batch (GEMV), Triton.

At batch 1..64 a linear layer is a stream over its weight matrix: the time is the weight bytes
over memory bandwidth. One program owns BLOCK_N output features and walks the whole K dimension,
so every weight element is read exactly once, with 16-byte loads along K. The block shape is
autotuned per (N, K, row block) on first use (outside CUDA-graph capture: warm up first). A single
row uses a multiply-add form on the CUDA cores (ROW configs), which keeps no tensor-core tile
padded to 16 rows. On Hopper each program is launched before the kernel ahead of it ends and
pulls its first weight bytes into L2 while it waits (engine/kernels/pdl.py).
Reference: torch.nn.functional.linear.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from engine.kernels import pdl

# Up to this many rows the GEMV streams the weights at least as fast as cuBLAS (H100, Llama-3.1-8B's
# layers, `python -m engine.bench_gpu_micro 1,16,32,64`: 5.41 / 5.52 / 5.54 / 5.65 ms a step
# against cuBLAS's 5.58 / 5.68 / 5.69 / 5.80); larger batches go to cuBLAS, whose tiles then pay off.
MAX_ROWS = 64

_CONFIGS = [
    triton.Config({"BLOCK_N": bn, "BLOCK_K": bk}, num_warps=w, num_stages=s)
    for bn, bk, w, s in [
        (16, 256, 4, 4), (32, 256, 4, 4), (64, 128, 4, 4), (16, 512, 4, 3),
        (32, 128, 4, 5), (64, 256, 8, 3), (128, 128, 8, 4), (8, 512, 4, 4),
        # More, narrower programs with deeper pipelines: the 4096-wide layers (qkv, o) of an 8B
        # model give the wide blocks too few programs to keep every SM's loads in flight.
        (8, 1024, 4, 3), (16, 1024, 8, 3), (8, 256, 2, 6), (16, 128, 4, 8),
    ]
]
# Single-row configs: a [BLOCK_N, BLOCK_K] float32 accumulator, at most 64 registers a thread.
_ROW_CONFIGS = [
    triton.Config({"BLOCK_N": bn, "BLOCK_K": bk, "ROW": True}, num_warps=w, num_stages=s)
    for bn, bk, w, s in [
        (4, 1024, 4, 4), (8, 512, 4, 4), (8, 1024, 4, 3), (16, 512, 4, 3), (16, 256, 4, 4),
        (32, 256, 8, 4), (8, 512, 8, 4), (4, 512, 2, 4), (16, 1024, 8, 3), (32, 512, 8, 3),
    ]
]


def _prune(configs, named_args, **kwargs):
    """A single row tries only the ROW configs, more rows only the others (tl.dot). A tl.dot config
    was once picked for one row in a timing tie, and the decode step ran 5% slower in its graph."""
    one_row = kwargs.get("ONE_ROW", named_args.get("ONE_ROW"))
    return [c for c in configs if bool(one_row) == c.kwargs.get("ROW", False)]


@triton.autotune(
    configs=[triton.Config({**c.kwargs, "ROW": False}, num_warps=c.num_warps, num_stages=c.num_stages)
             for c in _CONFIGS] + _ROW_CONFIGS,
    key=["N", "K", "BLOCK_M", "ONE_ROW"],
    prune_configs_by={"early_config_prune": _prune},
)
@triton.jit
def _gemv_kernel(
    x_ptr, w_ptr, bias_ptr, y_ptr,
    M, N, K,
    stride_xm, stride_wn, stride_ym,
    HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, ONE_ROW: tl.constexpr, PDL: tl.constexpr,
    PREFETCH_BYTES: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, ROW: tl.constexpr,
):
    first_col = tl.program_id(0) * BLOCK_N
    cols = first_col + tl.arange(0, BLOCK_N)  # output features
    col_mask = cols < N
    # Launched early (engine/kernels/pdl.py): the weights are no kernel's output, so this program's
    # first weight bytes stream into L2 while the kernel ahead finishes; x only after the wait.
    pdl.prefetch_rows_l2(w_ptr + first_col.to(tl.int64) * stride_wn,
                         stride_wn * (w_ptr.dtype.element_ty.primitive_bitwidth // 8),
                         tl.minimum(N - first_col, BLOCK_N), PREFETCH_BYTES)
    pdl.allow_dependents(PDL)
    pdl.wait_for_inputs(PDL)
    if ROW:  # M == 1
        w_row_ptrs = w_ptr + cols.to(tl.int64)[:, None] * stride_wn
        partial = tl.zeros([BLOCK_N, BLOCK_K], tl.float32)
        for k_start in range(0, K, BLOCK_K):
            ks = k_start + tl.arange(0, BLOCK_K)
            k_mask = ks < K
            w = tl.load(w_row_ptrs + ks[None, :], mask=col_mask[:, None] & k_mask[None, :], other=0.0)
            x = tl.load(x_ptr + ks, mask=k_mask, other=0.0)  # [BLOCK_K]
            partial += w.to(tl.float32) * x.to(tl.float32)[None, :]
        y = tl.sum(partial, axis=1)  # [BLOCK_N]
        if HAS_BIAS:
            y += tl.load(bias_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)
        tl.store(y_ptr + cols, y.to(y_ptr.dtype.element_ty), mask=col_mask)
        return
    rows = tl.arange(0, BLOCK_M)  # batch rows, padded to the dot's minimum
    row_mask = rows < M
    w_rows = w_ptr + cols.to(tl.int64)[:, None] * stride_wn
    acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    for k_start in range(0, K, BLOCK_K):
        ks = k_start + tl.arange(0, BLOCK_K)
        k_mask = ks < K
        w = tl.load(w_rows + ks[None, :], mask=col_mask[:, None] & k_mask[None, :], other=0.0)  # [BLOCK_N, BLOCK_K]
        x = tl.load(x_ptr + rows[:, None] * stride_xm + ks[None, :], mask=row_mask[:, None] & k_mask[None, :], other=0.0)
        acc += tl.dot(x, tl.trans(w))  # [BLOCK_M, BLOCK_N]
    if HAS_BIAS:
        acc += tl.load(bias_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)[None, :]
    tl.store(
        y_ptr + rows[:, None] * stride_ym + cols[None, :], acc.to(y_ptr.dtype.element_ty),
        mask=row_mask[:, None] & col_mask[None, :],
    )


def linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, out: torch.Tensor | None = None
) -> torch.Tensor:
    """x [T, K], weight [N, K], bias [N] | None -> [T, N]; GEMV for T <= MAX_ROWS, cuBLAS above.
    out: [T, N] to write into (tests pass a poisoned one)."""
    num_rows = x.shape[0]
    # float32 stays on cuBLAS: tl.dot would round its inputs to tf32.
    half = x.dtype in (torch.bfloat16, torch.float16) and weight.dtype == x.dtype
    if num_rows > MAX_ROWS or num_rows == 0 or x.dim() != 2 or not x.is_cuda or not half or weight.stride(-1) != 1:
        y = F.linear(x, weight, bias)
        return y if out is None else out.copy_(y)
    x = x if x.stride(-1) == 1 else x.contiguous()
    n, k = weight.shape
    y = torch.empty(num_rows, n, dtype=x.dtype, device=x.device) if out is None else out
    grid = lambda meta: (triton.cdiv(n, meta["BLOCK_N"]),)  # noqa: E731
    _gemv_kernel[grid](
        x, weight, bias if bias is not None else weight, y,
        num_rows, n, k,
        x.stride(0), weight.stride(0), y.stride(0),
        HAS_BIAS=bias is not None, BLOCK_M=max(16, triton.next_power_of_2(num_rows)), ONE_ROW=num_rows == 1,
        PREFETCH_BYTES=pdl.prefetch_bytes(k * weight.element_size(), weight.stride(0) * weight.element_size()),
        **pdl.launch_options(),
    )
    return y
