"""Row-wise kernels, Triton: RMSNorm fused with the residual add, neox rotary, SwiGLU, and the
token embedding that looks up pending ids.

Each reads its inputs once and writes its outputs once (the torch references make several passes).
Arithmetic is float32 whatever the activation dtype. Reference: engine/kernels/reference.py.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from engine.kernels import pdl, triton_pdl


@triton.jit
def _rms_norm_kernel(
    x_ptr, residual_ptr, weight_ptr, out_ptr, new_residual_ptr,
    stride_x, stride_r, stride_o, stride_nr,
    hidden, eps,
    HAS_RESIDUAL: tl.constexpr, BLOCK: tl.constexpr, PDL: tl.constexpr,
):
    triton_pdl.allow_dependents(PDL)
    triton_pdl.wait_for_inputs(PDL)  # first: every path waits (engine/kernels/pdl.py)
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < hidden
    x = tl.load(x_ptr + row * stride_x + cols, mask=mask, other=0.0)
    if HAS_RESIDUAL:
        summed = (x.to(tl.float32) + tl.load(residual_ptr + row * stride_r + cols, mask=mask, other=0.0).to(tl.float32))
        x = summed.to(x_ptr.dtype.element_ty)  # the residual stream keeps the activation dtype
        tl.store(new_residual_ptr + row * stride_nr + cols, x, mask=mask)
    x32 = x.to(tl.float32)
    rstd = 1.0 / tl.sqrt(tl.sum(x32 * x32, 0) / hidden + eps)
    w = tl.load(weight_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + row * stride_o + cols, (x32 * rstd * w).to(out_ptr.dtype.element_ty), mask=mask)


def rms_norm(
    x: torch.Tensor,
    weight: torch.Tensor,
    eps: float,
    residual: torch.Tensor | None = None,
    out: torch.Tensor | None = None,  # outputs to write into (tests pass poisoned ones)
    new_residual: torch.Tensor | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    # x [T, H], weight [H], residual [T, H] | None
    x = x if x.stride(-1) == 1 else x.contiguous()
    num_rows, hidden = x.shape
    out = torch.empty_like(x) if out is None else out
    if residual is None:
        new_residual = out  # unused by the kernel
    elif new_residual is None:
        new_residual = torch.empty_like(x)
    if residual is not None and residual.stride(-1) != 1:
        residual = residual.contiguous()
    if num_rows:
        block = triton.next_power_of_2(hidden)
        _rms_norm_kernel[(num_rows,)](
            x, residual if residual is not None else x, weight, out, new_residual,
            x.stride(0), residual.stride(0) if residual is not None else 0, out.stride(0), new_residual.stride(0),
            hidden, eps,
            HAS_RESIDUAL=residual is not None, BLOCK=block, num_warps=min(16, max(1, block // 512)),
            **pdl.launch_options(),
        )
    return out if residual is None else (out, new_residual)


@triton.jit
def rotate_pair(x1, x2, cos, sin):
    """Neox rotary of element i (x1) with its partner i + D/2 (x2), float32: both rotated."""
    return x1 * cos - x2 * sin, x2 * cos + x1 * sin


@triton.jit
def _rotate_neox(src, mask, cos, sin, HALF: tl.constexpr):
    # src [heads, D/2]: pointers to the first half of each head's row; cos, sin [1, D/2] float32.
    # Returns both rotated halves, float32, for the caller to store (the fused kernel rounds and
    # writes k into the cache instead).
    x1 = tl.load(src, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(src + HALF, mask=mask, other=0.0).to(tl.float32)
    return rotate_pair(x1, x2, cos, sin)


@triton.jit
def _rotary_kernel(
    q_ptr, k_ptr, q_out_ptr, k_out_ptr, positions_ptr, cos_sin_ptr,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_qot, stride_qoh, stride_kot, stride_koh, stride_cs,
    NUM_Q_HEADS: tl.constexpr, NUM_KV_HEADS: tl.constexpr, HALF: tl.constexpr,
    BLOCK_HQ: tl.constexpr, BLOCK_HKV: tl.constexpr, BLOCK_HALF: tl.constexpr, PDL: tl.constexpr,
):
    triton_pdl.allow_dependents(PDL)
    triton_pdl.wait_for_inputs(PDL)  # first: every path waits (engine/kernels/pdl.py)
    token = tl.program_id(0).to(tl.int64)
    pos = tl.load(positions_ptr + token)
    freqs = tl.arange(0, BLOCK_HALF)
    freq_mask = freqs < HALF
    # cos_sin cache row [D]: cos of the D/2 frequencies, then their sin.
    cos = tl.load(cos_sin_ptr + pos * stride_cs + freqs, mask=freq_mask, other=0.0).to(tl.float32)[None, :]
    sin = tl.load(cos_sin_ptr + pos * stride_cs + HALF + freqs, mask=freq_mask, other=0.0).to(tl.float32)[None, :]

    heads = tl.arange(0, BLOCK_HQ)
    mask = (heads < NUM_Q_HEADS)[:, None] & freq_mask[None, :]
    src = q_ptr + token * stride_qt + heads[:, None] * stride_qh + freqs[None, :]
    dst = q_out_ptr + token * stride_qot + heads[:, None] * stride_qoh + freqs[None, :]
    q1, q2 = _rotate_neox(src, mask, cos, sin, HALF)
    tl.store(dst, q1.to(q_out_ptr.dtype.element_ty), mask=mask)
    tl.store(dst + HALF, q2.to(q_out_ptr.dtype.element_ty), mask=mask)

    heads = tl.arange(0, BLOCK_HKV)
    mask = (heads < NUM_KV_HEADS)[:, None] & freq_mask[None, :]
    src = k_ptr + token * stride_kt + heads[:, None] * stride_kh + freqs[None, :]
    dst = k_out_ptr + token * stride_kot + heads[:, None] * stride_koh + freqs[None, :]
    k1, k2 = _rotate_neox(src, mask, cos, sin, HALF)
    tl.store(dst, k1.to(k_out_ptr.dtype.element_ty), mask=mask)
    tl.store(dst + HALF, k2.to(k_out_ptr.dtype.element_ty), mask=mask)


def rotary(
    q: torch.Tensor,
    k: torch.Tensor,
    positions: torch.Tensor,
    cos_sin_cache: torch.Tensor,
    out: tuple[torch.Tensor, torch.Tensor] | None = None,  # (q_out, k_out) to write into
) -> tuple[torch.Tensor, torch.Tensor]:
    # q [T, Hq, D], k [T, Hkv, D], positions [T] int64, cos_sin_cache [P, D]
    q = q if q.stride(-1) == 1 else q.contiguous()
    k = k if k.stride(-1) == 1 else k.contiguous()
    num_tokens, num_q_heads, head_dim = q.shape
    num_kv_heads = k.shape[1]
    if out is None:
        out = torch.empty(q.shape, dtype=q.dtype, device=q.device), torch.empty(k.shape, dtype=k.dtype, device=k.device)
    q_out, k_out = out
    if num_tokens:
        half = head_dim // 2
        _rotary_kernel[(num_tokens,)](
            q, k, q_out, k_out, positions, cos_sin_cache,
            q.stride(0), q.stride(1), k.stride(0), k.stride(1),
            q_out.stride(0), q_out.stride(1), k_out.stride(0), k_out.stride(1), cos_sin_cache.stride(0),
            NUM_Q_HEADS=num_q_heads, NUM_KV_HEADS=num_kv_heads, HALF=half,
            BLOCK_HQ=triton.next_power_of_2(num_q_heads), BLOCK_HKV=triton.next_power_of_2(num_kv_heads),
            BLOCK_HALF=triton.next_power_of_2(half), num_warps=4, **pdl.launch_options(),
        )
    return q_out, k_out


@triton.jit
def _silu_and_mul_kernel(x_ptr, out_ptr, stride_x, stride_o, inter, BLOCK: tl.constexpr, PDL: tl.constexpr):
    triton_pdl.allow_dependents(PDL)
    triton_pdl.wait_for_inputs(PDL)  # first: every path waits (engine/kernels/pdl.py)
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < inter
    gate = tl.load(x_ptr + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
    up = tl.load(x_ptr + row * stride_x + inter + cols, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + row * stride_o + cols, (gate * tl.sigmoid(gate) * up).to(out_ptr.dtype.element_ty), mask=mask)


def silu_and_mul(x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    # x [T, 2I] (gate, then up) -> [T, I]; out: [T, I] to write into
    x = x if x.stride(-1) == 1 else x.contiguous()
    num_rows, inter = x.shape[0], x.shape[1] // 2
    out = torch.empty(num_rows, inter, dtype=x.dtype, device=x.device) if out is None else out
    if num_rows:
        block = min(1024, triton.next_power_of_2(inter))
        _silu_and_mul_kernel[(num_rows, triton.cdiv(inter, block))](
            x, out, x.stride(0), out.stride(0), inter, BLOCK=block, num_warps=4, **pdl.launch_options()
        )
    return out


@triton.jit
def _embedding_kernel(
    ids_ptr, pending_ptr, weight_ptr, out_ptr,
    hidden, stride_w, stride_o,
    HAS_PENDING: tl.constexpr, BLOCK: tl.constexpr, PDL: tl.constexpr,
):
    # The first kernel of a step: its dependents (the first GEMV) launch at once and prefetch their
    # weights while it runs. It waits before it reads: the pending ids are the step ahead's output.
    triton_pdl.allow_dependents(PDL)
    triton_pdl.wait_for_inputs(PDL)
    row = tl.program_id(0)
    token = tl.load(ids_ptr + row)
    if HAS_PENDING:
        if token < 0:
            token = tl.load(pending_ptr + (-1 - token))
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < hidden
    values = tl.load(weight_ptr + token.to(tl.int64) * stride_w + cols, mask=mask)
    tl.store(out_ptr + row.to(tl.int64) * stride_o + cols, values, mask=mask)


def embedding(input_ids: torch.Tensor, weight: torch.Tensor, pending_ids: torch.Tensor | None = None) -> torch.Tensor:
    """reference.embedding: rows of weight for input_ids [T], an id < 0 read from pending_ids."""
    tokens, hidden = input_ids.shape[0], weight.shape[1]
    weight = weight if weight.stride(-1) == 1 else weight.contiguous()  # rows read with unit stride
    out = torch.empty(tokens, hidden, dtype=weight.dtype, device=weight.device)
    if tokens == 0:
        return out
    block = min(triton.next_power_of_2(hidden), 1024)
    _embedding_kernel[(tokens, triton.cdiv(hidden, block))](
        input_ids, input_ids if pending_ids is None else pending_ids, weight, out,
        hidden, weight.stride(0), out.stride(0),
        HAS_PENDING=pending_ids is not None, BLOCK=block, num_warps=4, **pdl.launch_options(),
    )
    return out
