"""Decode-step fusions for small batches (<= MAX_ROWS rows), Triton.

At batch 1 the step is ~7 latency-bound one-row kernels per layer between the weight streams; each
costs a few microseconds however little it does. These fold them into their neighbours:
  rms_norm_linear: the (residual add +) RMSNorm as the prologue of the GEMV that reads its output;
  silu_mul_linear: SwiGLU as the prologue of the down-projection GEMV;
  rotary_write_kv: neox rotary of q and k, and the K/V cache write, in one kernel.
Above MAX_ROWS they fall back to the unfused kernels. References: reference.rms_norm + F.linear,
reference.silu_and_mul + F.linear, reference.rotary + reference.write_kv.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from engine.kernels.triton_cache import write_kv
from engine.kernels.triton_elementwise import rms_norm, rotary, silu_and_mul
from engine.kernels.triton_linear import _CONFIGS, MAX_ROWS


@triton.autotune(configs=_CONFIGS, key=["N", "K"])
@triton.jit
def _norm_gemv_kernel(
    x_ptr, residual_ptr, norm_w_ptr, w_ptr, y_ptr, new_residual_ptr,
    M, N, K, eps,
    stride_xm, stride_rm, stride_wn, stride_ym, stride_nrm,
    HAS_RESIDUAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid = tl.program_id(0)
    cols = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    col_mask = cols < N
    rows = tl.arange(0, BLOCK_M)
    row_mask = rows < M
    # One pass: norm(x) W^T = rstd * ((x * norm_w) W^T), and rstd is a per-row scalar, so the sum
    # of squares accumulates beside the dot and scales the result at the end (no serial prologue).
    w_rows = w_ptr + cols.to(tl.int64)[:, None] * stride_wn
    sum_sq = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    for k_start in range(0, K, BLOCK_K):
        ks = k_start + tl.arange(0, BLOCK_K)
        k_mask = ks < K
        mask = row_mask[:, None] & k_mask[None, :]
        h = tl.load(x_ptr + rows[:, None] * stride_xm + ks[None, :], mask=mask, other=0.0)
        if HAS_RESIDUAL:
            r = tl.load(residual_ptr + rows[:, None] * stride_rm + ks[None, :], mask=mask, other=0.0)
            h = (h.to(tl.float32) + r.to(tl.float32)).to(x_ptr.dtype.element_ty)
            tl.store(new_residual_ptr + rows[:, None] * stride_nrm + ks[None, :], h, mask=mask & (pid == 0))
        h32 = h.to(tl.float32)
        sum_sq += tl.sum(h32 * h32, 1)
        scale = tl.load(norm_w_ptr + ks, mask=k_mask, other=0.0).to(tl.float32)
        a = (h32 * scale[None, :]).to(w_ptr.dtype.element_ty)
        w = tl.load(w_rows + ks[None, :], mask=col_mask[:, None] & k_mask[None, :], other=0.0)
        acc += tl.dot(a, tl.trans(w))
    acc = acc * (1.0 / tl.sqrt(sum_sq / K + eps))[:, None]
    tl.store(
        y_ptr + rows[:, None] * stride_ym + cols[None, :], acc.to(y_ptr.dtype.element_ty),
        mask=row_mask[:, None] & col_mask[None, :],
    )


def rms_norm_linear(
    x: torch.Tensor, norm_weight: torch.Tensor, eps: float, weight: torch.Tensor, residual: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(rms_norm(x [+ residual]) @ weight^T, the new residual): x, residual [T, K], weight [N, K]."""
    num_rows, k = x.shape
    if num_rows > MAX_ROWS or num_rows == 0:
        if residual is None:
            return F.linear(rms_norm(x, norm_weight, eps), weight), x
        normed, new_residual = rms_norm(x, norm_weight, eps, residual)
        return F.linear(normed, weight), new_residual
    x = x if x.stride(-1) == 1 else x.contiguous()
    n = weight.shape[0]
    y = torch.empty(num_rows, n, dtype=x.dtype, device=x.device)
    new_residual = torch.empty_like(x) if residual is not None else x
    grid = lambda meta: (triton.cdiv(n, meta["BLOCK_N"]),)  # noqa: E731
    _norm_gemv_kernel[grid](
        x, residual if residual is not None else x, norm_weight, weight, y, new_residual,
        num_rows, n, k, eps,
        x.stride(0), residual.stride(0) if residual is not None else 0, weight.stride(0), y.stride(0),
        new_residual.stride(0),
        HAS_RESIDUAL=residual is not None, BLOCK_M=16,
    )
    return y, new_residual


@triton.autotune(configs=_CONFIGS, key=["N", "K"])
@triton.jit
def _swiglu_gemv_kernel(
    gate_up_ptr, w_ptr, y_ptr, M, N, K, stride_gm, stride_wn, stride_ym,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    cols = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    col_mask = cols < N
    rows = tl.arange(0, BLOCK_M)
    row_mask = rows < M
    w_rows = w_ptr + cols.to(tl.int64)[:, None] * stride_wn
    acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    for k_start in range(0, K, BLOCK_K):
        ks = k_start + tl.arange(0, BLOCK_K)
        k_mask = ks < K
        mask = row_mask[:, None] & k_mask[None, :]
        gate = tl.load(gate_up_ptr + rows[:, None] * stride_gm + ks[None, :], mask=mask, other=0.0).to(tl.float32)
        up = tl.load(gate_up_ptr + rows[:, None] * stride_gm + K + ks[None, :], mask=mask, other=0.0).to(tl.float32)
        a = (gate * tl.sigmoid(gate) * up).to(w_ptr.dtype.element_ty)
        w = tl.load(w_rows + ks[None, :], mask=col_mask[:, None] & k_mask[None, :], other=0.0)
        acc += tl.dot(a, tl.trans(w))
    tl.store(
        y_ptr + rows[:, None] * stride_ym + cols[None, :], acc.to(y_ptr.dtype.element_ty),
        mask=row_mask[:, None] & col_mask[None, :],
    )


def silu_mul_linear(gate_up: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """silu_and_mul(gate_up [T, 2I]) @ weight^T, weight [N, I] -> [T, N]."""
    num_rows = gate_up.shape[0]
    if num_rows > MAX_ROWS or num_rows == 0:
        return F.linear(silu_and_mul(gate_up), weight)
    gate_up = gate_up if gate_up.stride(-1) == 1 else gate_up.contiguous()
    n, k = weight.shape
    y = torch.empty(num_rows, n, dtype=gate_up.dtype, device=gate_up.device)
    grid = lambda meta: (triton.cdiv(n, meta["BLOCK_N"]),)  # noqa: E731
    _swiglu_gemv_kernel[grid](
        gate_up, weight, y, num_rows, n, k, gate_up.stride(0), weight.stride(0), y.stride(0), BLOCK_M=16
    )
    return y


@triton.jit
def _rotate_rows(src, dst, cos, sin, mask, HALF: tl.constexpr):
    # src, dst: pointers of [heads, D] rows; cos, sin [1, HALF] float32 (neox layout)
    x1 = tl.load(src, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(src + HALF, mask=mask, other=0.0).to(tl.float32)
    tl.store(dst, (x1 * cos - x2 * sin).to(dst.dtype.element_ty), mask=mask)
    tl.store(dst + HALF, (x2 * cos + x1 * sin).to(dst.dtype.element_ty), mask=mask)


@triton.jit
def _rotary_write_kv_kernel(
    q_ptr, k_ptr, v_ptr, q_out_ptr, k_cache_ptr, v_cache_ptr, positions_ptr, cos_sin_ptr, slot_mapping_ptr,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_qot, stride_qoh, stride_cs,
    stride_kcb, stride_kcs, stride_kch, stride_vcb, stride_vcs, stride_vch,
    NUM_Q_HEADS: tl.constexpr, NUM_KV_HEADS: tl.constexpr, HALF: tl.constexpr, BLOCK_SIZE: tl.constexpr,
    BLOCK_HQ: tl.constexpr, BLOCK_HKV: tl.constexpr, BLOCK_HALF: tl.constexpr,
):
    token = tl.program_id(0).to(tl.int64)
    pos = tl.load(positions_ptr + token)
    freqs = tl.arange(0, BLOCK_HALF)
    freq_mask = freqs < HALF
    cos = tl.load(cos_sin_ptr + pos * stride_cs + freqs, mask=freq_mask, other=0.0).to(tl.float32)[None, :]
    sin = tl.load(cos_sin_ptr + pos * stride_cs + HALF + freqs, mask=freq_mask, other=0.0).to(tl.float32)[None, :]
    heads = tl.arange(0, BLOCK_HQ)
    q_src = q_ptr + token * stride_qt + heads[:, None] * stride_qh + freqs[None, :]
    q_dst = q_out_ptr + token * stride_qot + heads[:, None] * stride_qoh + freqs[None, :]
    _rotate_rows(q_src, q_dst, cos, sin, (heads < NUM_Q_HEADS)[:, None] & freq_mask[None, :], HALF)
    slot = tl.load(slot_mapping_ptr + token)
    if slot >= 0:  # padded rows of a CUDA-graph batch write nothing into the cache
        block = slot // BLOCK_SIZE
        in_block = slot % BLOCK_SIZE
        kv_heads = tl.arange(0, BLOCK_HKV)
        mask = (kv_heads < NUM_KV_HEADS)[:, None] & freq_mask[None, :]
        k_src = k_ptr + token * stride_kt + kv_heads[:, None] * stride_kh + freqs[None, :]
        k_dst = k_cache_ptr + block * stride_kcb + in_block * stride_kcs + kv_heads[:, None] * stride_kch + freqs[None, :]
        _rotate_rows(k_src, k_dst, cos, sin, mask, HALF)
        v_src = v_ptr + token * stride_vt + kv_heads[:, None] * stride_vh + freqs[None, :]
        v_dst = v_cache_ptr + block * stride_vcb + in_block * stride_vcs + kv_heads[:, None] * stride_vch + freqs[None, :]
        tl.store(v_dst, tl.load(v_src, mask=mask), mask=mask)
        tl.store(v_dst + HALF, tl.load(v_src + HALF, mask=mask), mask=mask)


def rotary_write_kv(
    q: torch.Tensor,  # [T, Hq, D]
    k: torch.Tensor,  # [T, Hkv, D]
    v: torch.Tensor,
    positions: torch.Tensor,  # [T] int64
    cos_sin_cache: torch.Tensor,  # [P, D]
    k_cache: torch.Tensor,  # [N, bs, Hkv, D]
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,  # [T] int64, -1: skip
) -> torch.Tensor:
    """Rotated q [T, Hq, D]; the rotated k and v go straight into the cache."""
    num_tokens, num_q_heads, head_dim = q.shape
    if num_tokens > MAX_ROWS:
        q, k = rotary(q, k, positions, cos_sin_cache)
        write_kv(k, v, k_cache, v_cache, slot_mapping)
        return q
    num_kv_heads = k.shape[1]
    q_out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    if num_tokens:
        half = head_dim // 2
        _rotary_write_kv_kernel[(num_tokens,)](
            q, k, v, q_out, k_cache, v_cache, positions, cos_sin_cache, slot_mapping,
            q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
            q_out.stride(0), q_out.stride(1), cos_sin_cache.stride(0),
            k_cache.stride(0), k_cache.stride(1), k_cache.stride(2), v_cache.stride(0), v_cache.stride(1), v_cache.stride(2),
            NUM_Q_HEADS=num_q_heads, NUM_KV_HEADS=num_kv_heads, HALF=half, BLOCK_SIZE=k_cache.shape[1],
            BLOCK_HQ=triton.next_power_of_2(num_q_heads), BLOCK_HKV=triton.next_power_of_2(num_kv_heads),
            BLOCK_HALF=triton.next_power_of_2(half), num_warps=4,
        )
    return q_out
