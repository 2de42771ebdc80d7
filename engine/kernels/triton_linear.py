"""y = x W^T for the few rows of a small decode batch (GEMV), Triton.

At batch 1..64 a linear layer is a stream over its weight matrix: the time is the weight bytes
over memory bandwidth. One program owns BLOCK_N output features and walks the whole K dimension,
so every weight element is read exactly once, with 16-byte loads along K. The block shape is
autotuned per (N, K, row block) on first use (outside CUDA-graph capture: warm up first). A single
row uses a multiply-add form on the CUDA cores (ROW configs), which keeps no tensor-core tile
padded to 16 rows. A single row can also take in the kernels around its GEMV: RMSNorm (with the
residual add) or SwiGLU before it, and after the qkv projection the rotary embedding and the K/V
cache write (rms_norm_qkv_rotary). On Hopper each program is launched before the kernel ahead of
it ends and pulls its first weight bytes into L2 while it waits (engine/kernels/pdl.py).
Reference: torch.nn.functional.linear.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from engine.kernels import pdl, reference, triton_pdl
from engine.kernels.triton_cache import _fp8_max
from engine.kernels.triton_rotary_cache import rotary_epilogue

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
    configs = [c for c in configs if bool(one_row) == c.kwargs.get("ROW", False)]
    if kwargs.get("ROTARY", named_args.get("ROTARY")):  # a program holds whole rotary pairs of one head
        half = kwargs.get("HEAD_DIM", named_args.get("HEAD_DIM")) // 2
        configs = [c for c in configs if half % (c.kwargs["BLOCK_N"] // 2) == 0]
    return configs


# What the single-row GEMV computes from its input first (one row only; see rms_norm_linear and
# silu_and_mul_linear): each saves the small kernel that would run between two GEMVs.
PLAIN: tl.constexpr = tl.constexpr(0)
NORM: tl.constexpr = tl.constexpr(1)
ADD_NORM: tl.constexpr = tl.constexpr(2)
SILU_MUL: tl.constexpr = tl.constexpr(3)


@triton.jit
def _prologue(x_ptr, residual_ptr, norm_weight_ptr, new_residual_ptr, ks, k_mask, K, PROLOGUE: tl.constexpr):
    """The float32 input of the GEMV at columns ks. ADD_NORM: x + residual, rounded to the
    activation dtype as the residual stream keeps it, and stored as the new residual by program 0
    (norm and weight are applied by the caller). SILU_MUL: x is [gate | up] of width 2K."""
    if PROLOGUE == SILU_MUL:
        gate = tl.load(x_ptr + ks, mask=k_mask, other=0.0).to(tl.float32)
        up = tl.load(x_ptr + K + ks, mask=k_mask, other=0.0).to(tl.float32)
        # rounded as the separate silu_and_mul kernel stores it
        return (gate * tl.sigmoid(gate) * up).to(x_ptr.dtype.element_ty).to(tl.float32)
    x = tl.load(x_ptr + ks, mask=k_mask, other=0.0)
    if PROLOGUE == ADD_NORM:
        x = (x.to(tl.float32) + tl.load(residual_ptr + ks, mask=k_mask, other=0.0).to(tl.float32)).to(x.dtype)
        tl.store(new_residual_ptr + ks, x, mask=k_mask & (tl.program_id(0) == 0))
    return x.to(tl.float32)


@triton.autotune(
    configs=[triton.Config({**c.kwargs, "ROW": False}, num_warps=c.num_warps, num_stages=c.num_stages)
             for c in _CONFIGS] + _ROW_CONFIGS,
    key=["N", "K", "BLOCK_M", "ONE_ROW", "PROLOGUE", "ROTARY", "HEAD_DIM"],
    prune_configs_by={"early_config_prune": _prune},
)
@triton.jit
def _gemv_kernel(
    x_ptr, w_ptr, bias_ptr, y_ptr,
    M, N, K,
    stride_xm, stride_wn, stride_ym,
    residual_ptr, norm_weight_ptr, new_residual_ptr, eps,
    positions_ptr, cos_sin_ptr, slot_mapping_ptr, k_cache_ptr, v_cache_ptr,
    stride_cs, stride_kcb, stride_kcs, stride_kch, stride_vcb, stride_vcs, stride_vch,
    HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, ONE_ROW: tl.constexpr, PDL: tl.constexpr,
    PREFETCH_BYTES: tl.constexpr, PROLOGUE: tl.constexpr,
    ROTARY: tl.constexpr, NUM_Q_HEADS: tl.constexpr, NUM_KV_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr,
    CACHE_BLOCK: tl.constexpr, FP8_MAX: tl.constexpr, WEIGHT_EVICTION: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, ROW: tl.constexpr,
):
    row_bytes = stride_wn * (w_ptr.dtype.element_ty.primitive_bitwidth // 8)
    if ROTARY:
        # Output features of one head in rotary pairs: lane 2i is feature f + i, lane 2i + 1 its
        # partner f + i + HEAD_DIM / 2, so the epilogue rotates without leaving the program.
        per_head: tl.constexpr = HEAD_DIM // BLOCK_N
        first_col = (tl.program_id(0) // per_head) * HEAD_DIM + (tl.program_id(0) % per_head) * (BLOCK_N // 2)
        lanes = tl.arange(0, BLOCK_N)
        cols = first_col + lanes // 2 + (lanes % 2) * (HEAD_DIM // 2)
    else:
        first_col = tl.program_id(0) * BLOCK_N
        cols = first_col + tl.arange(0, BLOCK_N)  # output features
    col_mask = cols < N
    w_row_ptrs = w_ptr + cols.to(tl.int64)[:, None] * stride_wn
    # Launched early (engine/kernels/pdl.py): the weights are no kernel's output, so this program's
    # first weight bytes stream into L2 while the kernel ahead finishes; x only after the wait.
    if ROTARY:
        for half in tl.static_range(2):
            triton_pdl.prefetch_rows_l2(w_ptr + (first_col + half * (HEAD_DIM // 2)).to(tl.int64) * stride_wn,
                                        row_bytes, BLOCK_N // 2, PREFETCH_BYTES)
    else:
        triton_pdl.prefetch_rows_l2(w_ptr + first_col.to(tl.int64) * stride_wn, row_bytes,
                                    tl.minimum(N - first_col, BLOCK_N), PREFETCH_BYTES)
    triton_pdl.allow_dependents(PDL)
    triton_pdl.wait_for_inputs(PDL)
    if ROW:  # M == 1
        partial = tl.zeros([BLOCK_N, BLOCK_K], tl.float32)
        squares = tl.zeros([BLOCK_K], tl.float32)  # RMSNorm prologues: the sum of x^2 along the way
        for k_start in range(0, K, BLOCK_K):
            ks = k_start + tl.arange(0, BLOCK_K)
            k_mask = ks < K
            w = tl.load(w_row_ptrs + ks[None, :], mask=col_mask[:, None] & k_mask[None, :], other=0.0,
                        eviction_policy=WEIGHT_EVICTION)
            x = _prologue(x_ptr, residual_ptr, norm_weight_ptr, new_residual_ptr, ks, k_mask, K, PROLOGUE)
            if PROLOGUE == NORM or PROLOGUE == ADD_NORM:
                squares += x * x
                x *= tl.load(norm_weight_ptr + ks, mask=k_mask, other=0.0).to(tl.float32)
            partial += w.to(tl.float32) * x[None, :]
        y = tl.sum(partial, axis=1)  # [BLOCK_N]
        if PROLOGUE == NORM or PROLOGUE == ADD_NORM:  # norm(x) = x * rstd * weight: rstd is one scalar
            y *= 1.0 / tl.sqrt(tl.sum(squares, 0) / K + eps)
        if HAS_BIAS:
            y += tl.load(bias_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)
        if ROTARY:
            rotary_epilogue(y.to(x_ptr.dtype.element_ty).to(tl.float32), first_col, y_ptr, positions_ptr, cos_sin_ptr,
                            slot_mapping_ptr, k_cache_ptr, v_cache_ptr, stride_cs, stride_kcb, stride_kcs,
                            stride_kch, stride_vcb, stride_vcs, stride_vch, NUM_Q_HEADS, NUM_KV_HEADS, HEAD_DIM,
                            CACHE_BLOCK, FP8_MAX, BLOCK_N)
        else:
            tl.store(y_ptr + cols, y.to(y_ptr.dtype.element_ty), mask=col_mask)
        return
    rows = tl.arange(0, BLOCK_M)  # batch rows, padded to the dot's minimum
    row_mask = rows < M
    acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    for k_start in range(0, K, BLOCK_K):
        ks = k_start + tl.arange(0, BLOCK_K)
        k_mask = ks < K
        w = tl.load(w_row_ptrs + ks[None, :], mask=col_mask[:, None] & k_mask[None, :], other=0.0,
                    eviction_policy=WEIGHT_EVICTION)  # [BLOCK_N, BLOCK_K]
        x = tl.load(x_ptr + rows[:, None] * stride_xm + ks[None, :], mask=row_mask[:, None] & k_mask[None, :], other=0.0)
        acc += tl.dot(x, tl.trans(w))  # [BLOCK_M, BLOCK_N]
    if HAS_BIAS:
        acc += tl.load(bias_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)[None, :]
    tl.store(
        y_ptr + rows[:, None] * stride_ym + cols[None, :], acc.to(y_ptr.dtype.element_ty),
        mask=row_mask[:, None] & col_mask[None, :],
    )


def _gemv_fits(x: torch.Tensor, weight: torch.Tensor) -> bool:
    # float32 stays on cuBLAS: tl.dot would round its inputs to tf32.
    half = x.dtype in (torch.bfloat16, torch.float16) and weight.dtype == x.dtype
    return 0 < x.shape[0] <= MAX_ROWS and x.dim() == 2 and x.is_cuda and half and weight.stride(-1) == 1


# L2 eviction hint of the weight loads: every weight byte is read once a step, so "evict_first"
# leaves L2 to what is read again (activations, the KV cache, the next GEMV's prefetched rows).
# H100, batch-1 decode of the 8B shape: +1.3% over no hint (BENCHMARKS.md run 47). "": no hint.
WEIGHT_EVICTION = "evict_first"


@dataclass(frozen=True)
class _Rotary:
    """The rotary + KV write epilogue's operands (rms_norm_qkv_rotary)."""

    num_heads: int
    num_kv_heads: int
    positions: torch.Tensor
    cos_sin_cache: torch.Tensor
    k_cache: torch.Tensor
    v_cache: torch.Tensor
    slot_mapping: torch.Tensor


def _rotary_operands(x: torch.Tensor, rotary: _Rotary | None) -> tuple[list, dict]:
    """The kernel's rotary arguments and constexprs (unused placeholders without the epilogue)."""
    if rotary is None:
        meta = dict(ROTARY=False, NUM_Q_HEADS=0, NUM_KV_HEADS=0, HEAD_DIM=0, CACHE_BLOCK=0, FP8_MAX=0.0)
        return [x] * 5 + [0] * 7, meta
    k_cache, v_cache = rotary.k_cache, rotary.v_cache
    args = [rotary.positions, rotary.cos_sin_cache, rotary.slot_mapping, k_cache, v_cache,
            rotary.cos_sin_cache.stride(0), *k_cache.stride()[:3], *v_cache.stride()[:3]]
    meta = dict(ROTARY=True, NUM_Q_HEADS=rotary.num_heads, NUM_KV_HEADS=rotary.num_kv_heads,
                HEAD_DIM=rotary.cos_sin_cache.shape[-1], CACHE_BLOCK=k_cache.shape[1], FP8_MAX=_fp8_max(k_cache.dtype))
    return args, meta


def _gemv(x, weight, bias, y, prologue=PLAIN, residual=None, norm_weight=None, new_residual=None, eps=0.0,
          rotary: _Rotary | None = None):
    n, k = weight.shape
    grid = lambda meta: (triton.cdiv(n, meta["BLOCK_N"]),)  # noqa: E731
    rotary_args, rotary_meta = _rotary_operands(x, rotary)
    _gemv_kernel[grid](
        x, weight, bias if bias is not None else weight, y,
        x.shape[0], n, k,
        x.stride(0), weight.stride(0), y.stride(0),
        x if residual is None else residual, x if norm_weight is None else norm_weight,
        x if new_residual is None else new_residual, eps,
        *rotary_args,
        HAS_BIAS=bias is not None, BLOCK_M=max(16, triton.next_power_of_2(x.shape[0])), ONE_ROW=x.shape[0] == 1,
        # A single row with no prologue follows a short kernel (attention, a norm): see pdl.py
        PREFETCH_BYTES=pdl.prefetch_bytes(k * weight.element_size(), weight.stride(0) * weight.element_size(), n,
                                          after_short_kernel=prologue == PLAIN and x.shape[0] == 1),
        PROLOGUE=prologue, **rotary_meta, WEIGHT_EVICTION=WEIGHT_EVICTION, **pdl.launch_options(),
    )
    return y


def linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, out: torch.Tensor | None = None
) -> torch.Tensor:
    """x [T, K], weight [N, K], bias [N] | None -> [T, N]; GEMV for T <= MAX_ROWS, cuBLAS above.
    out: [T, N] to write into, unit stride along N; it may be wider than x (float32 logits: the GEMV
    stores its float32 sums there, cuBLAS's result is widened)."""
    if not _gemv_fits(x, weight):  # cuBLAS, widened into out as the reference does
        return reference.linear(x, weight, bias, out)
    x = x if x.stride(-1) == 1 else x.contiguous()
    y = torch.empty(x.shape[0], weight.shape[0], dtype=x.dtype, device=x.device) if out is None else out
    return _gemv(x, weight, bias, y)


FUSE_ONE_ROW = True  # off: the fused entry points run the two kernels (scripts/probes/pdl_probe.py)
FUSE_ROTARY = True  # off: rms_norm_qkv_rotary runs the GEMV, then the rotary + KV write kernel (probes)


def _one_fused_row(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return FUSE_ONE_ROW and x.shape[0] == 1 and x.stride(-1) == 1 and _gemv_fits(x, weight)


def rms_norm_linear(
    x: torch.Tensor,
    residual: torch.Tensor | None,
    norm_weight: torch.Tensor,
    eps: float,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """linear(rms_norm(x [+ residual])) and the residual stream after the add (x itself without a
    residual), as kernels.rms_norm then kernels.linear give them. One row: the GEMV computes the
    norm on the fly (the normed row is not rounded to the activation dtype before the dot)."""
    if not _one_fused_row(x, weight) or (residual is not None and residual.stride(-1) != 1):
        from engine.kernels.reference import rms_norm_then_linear
        from engine.kernels.triton_elementwise import rms_norm

        return rms_norm_then_linear(x, residual, norm_weight, eps, weight, bias, norm=rms_norm, linear=linear)
    y = torch.empty(1, weight.shape[0], dtype=x.dtype, device=x.device)
    return _norm_gemv(x, residual, norm_weight, eps, weight, bias, y)


def _norm_gemv(x, residual, norm_weight, eps, weight, bias, y, rotary: _Rotary | None = None):
    """The single-row GEMV of rms_norm(x [+ residual]) into y: (y, the residual stream after the add)."""
    if residual is None:
        return _gemv(x, weight, bias, y, NORM, norm_weight=norm_weight, eps=eps, rotary=rotary), x
    new_residual = torch.empty_like(x)
    _gemv(x, weight, bias, y, ADD_NORM, residual, norm_weight, new_residual, eps, rotary=rotary)
    return y, new_residual


def silu_and_mul_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """linear(silu(gate) * up) of x = [gate | up] [T, 2I], weight [N, I]. One row: in the GEMV."""
    inter = x.shape[-1] // 2
    if not _one_fused_row(x, weight) or weight.shape[1] != inter:
        from engine.kernels.triton_elementwise import silu_and_mul

        return linear(silu_and_mul(x), weight, bias)
    y = torch.empty(1, weight.shape[0], dtype=x.dtype, device=x.device)
    return _gemv(x, weight, bias, y, SILU_MUL)


def rms_norm_qkv_rotary(
    x: torch.Tensor,
    residual: torch.Tensor | None,
    norm_weight: torch.Tensor,
    eps: float,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    num_heads: int,
    num_kv_heads: int,
    positions: torch.Tensor,
    cos_sin_cache: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """rms_norm_linear into the qkv projection, then rotary_write_kv of its q, k and v heads:
    (q rotated [T, Hq, D], the residual stream after the add). One row: a single GEMV whose
    programs each hold rotary pairs of one head, rotate them, and store q, or k and v into the
    cache, themselves; the projection is never stored."""
    head_dim = cos_sin_cache.shape[-1]
    # head_dim % 8: the configs of BLOCK_N 4 and 8 always hold whole pairs of one head (_prune)
    fits = FUSE_ROTARY and _one_fused_row(x, weight) and positions.shape[0] == 1 and head_dim % 8 == 0
    fits = fits and weight.shape[0] == (num_heads + 2 * num_kv_heads) * head_dim
    if fits and (residual is None or residual.stride(-1) == 1):
        q = torch.empty(1, num_heads, head_dim, dtype=x.dtype, device=x.device)
        rotary = _Rotary(num_heads, num_kv_heads, positions, cos_sin_cache, k_cache, v_cache, slot_mapping)
        return _norm_gemv(x, residual, norm_weight, eps, weight, bias, q, rotary)
    from engine.kernels.reference import rms_norm_qkv_then_rotary
    from engine.kernels.triton_rotary_cache import rotary_write_kv

    return rms_norm_qkv_then_rotary(x, residual, norm_weight, eps, weight, bias, num_heads, num_kv_heads, positions,
                                    cos_sin_cache, k_cache, v_cache, slot_mapping, norm_linear=rms_norm_linear,
                                    rotary_write_kv=rotary_write_kv)
