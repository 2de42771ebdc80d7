"""Rotary embedding and the K/V cache write in one kernel, Triton.

At batch 1 a decode step runs two tiny kernels a layer here (rotary, then the cache write), each
mostly launch latency. One program per token rotates q into q_out, rotates k and stores it
straight into its cache slot, and stores v there too. A negative slot (a padded CUDA-graph row)
still gets its q rotated but writes nothing to the cache. An fp8 cache saturates at +-448 as in
engine/kernels/triton_cache.py.
Reference: engine/kernels/__init__.py (_rotary_write_kv_reference: rotary, then write_kv).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from engine.kernels import pdl, triton_pdl
from engine.kernels.triton_cache import _fp8_max
from engine.kernels.triton_elementwise import _rotate_neox, rotate_pair


@triton.jit
def _store_cache_row(cache_ptr, block, in_block, stride_b, stride_s, stride_h, heads, dims, x1, x2, mask,
                     HALF: tl.constexpr, FP8_MAX: tl.constexpr):
    """Store the halves x1 (dims) and x2 (dims + HALF) of heads' rows at (block, in_block): an fp8
    cache saturates them to its range first."""
    if FP8_MAX > 0:
        x1 = tl.minimum(tl.maximum(x1, -FP8_MAX), FP8_MAX)
        x2 = tl.minimum(tl.maximum(x2, -FP8_MAX), FP8_MAX)
    dst = cache_ptr + block * stride_b + in_block * stride_s + heads * stride_h + dims
    tl.store(dst, x1.to(cache_ptr.dtype.element_ty), mask=mask)
    tl.store(dst + HALF, x2.to(cache_ptr.dtype.element_ty), mask=mask)


@triton.jit
def rotary_epilogue(
    y, first_col, q_out_ptr, positions_ptr, cos_sin_ptr, slot_mapping_ptr, k_cache_ptr, v_cache_ptr,
    stride_cs, stride_kcb, stride_kcs, stride_kch, stride_vcb, stride_vcs, stride_vch,
    NUM_Q_HEADS: tl.constexpr, NUM_KV_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr, CACHE_BLOCK: tl.constexpr,
    FP8_MAX: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """The kernel below, for one row's qkv projection inside its GEMV (engine/kernels/triton_linear.py):
    this program's BLOCK_N / 2 rotary pairs of one head (y [BLOCK_N] float32, rounded as the
    projection is stored, in pair order). A q head is rotated into q_out [Hq * D]; a k head is
    rotated and a v head copied into the cache at slot_mapping[0] (none for a negative slot)."""
    HALF: tl.constexpr = HEAD_DIM // 2
    first, second = tl.split(tl.reshape(y, [BLOCK_N // 2, 2]))  # feature f + i and its partner f + i + D / 2
    head = first_col // HEAD_DIM
    dims = first_col % HEAD_DIM + tl.arange(0, BLOCK_N // 2)
    pos = tl.load(positions_ptr)
    cos = tl.load(cos_sin_ptr + pos * stride_cs + dims).to(tl.float32)
    sin = tl.load(cos_sin_ptr + pos * stride_cs + HALF + dims).to(tl.float32)
    if head < NUM_Q_HEADS + NUM_KV_HEADS:
        first, second = rotate_pair(first, second, cos, sin)
    if head < NUM_Q_HEADS:
        tl.store(q_out_ptr + head * HEAD_DIM + dims, first.to(q_out_ptr.dtype.element_ty))
        tl.store(q_out_ptr + head * HEAD_DIM + HALF + dims, second.to(q_out_ptr.dtype.element_ty))
        return
    slot = tl.load(slot_mapping_ptr)
    if slot < 0:
        return
    block = slot // CACHE_BLOCK
    in_block = slot % CACHE_BLOCK
    # Rounded to the activation dtype as the kernel below rounds k (v already is).
    first = first.to(q_out_ptr.dtype.element_ty).to(tl.float32)
    second = second.to(q_out_ptr.dtype.element_ty).to(tl.float32)
    if head < NUM_Q_HEADS + NUM_KV_HEADS:
        _store_cache_row(k_cache_ptr, block, in_block, stride_kcb, stride_kcs, stride_kch, head - NUM_Q_HEADS, dims,
                         first, second, None, HALF, FP8_MAX)
    else:
        _store_cache_row(v_cache_ptr, block, in_block, stride_vcb, stride_vcs, stride_vch,
                         head - NUM_Q_HEADS - NUM_KV_HEADS, dims, first, second, None, HALF, FP8_MAX)


@triton.jit
def _rotary_write_kv_kernel(
    q_ptr, k_ptr, v_ptr, q_out_ptr, k_cache_ptr, v_cache_ptr, positions_ptr, cos_sin_ptr, slot_mapping_ptr,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_qot, stride_qoh, stride_cs,
    stride_kcb, stride_kcs, stride_kch, stride_vcb, stride_vcs, stride_vch,
    NUM_Q_HEADS: tl.constexpr, NUM_KV_HEADS: tl.constexpr, HALF: tl.constexpr, BLOCK_HQ: tl.constexpr,
    BLOCK_HKV: tl.constexpr, BLOCK_HALF: tl.constexpr, BLOCK_SIZE: tl.constexpr, FP8_MAX: tl.constexpr,
    PDL: tl.constexpr,
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

    slot = tl.load(slot_mapping_ptr + token)
    if slot < 0:
        return
    block = slot // BLOCK_SIZE
    in_block = slot % BLOCK_SIZE
    heads = tl.arange(0, BLOCK_HKV)
    mask = (heads < NUM_KV_HEADS)[:, None] & freq_mask[None, :]
    src = k_ptr + token * stride_kt + heads[:, None] * stride_kh + freqs[None, :]
    k1, k2 = _rotate_neox(src, mask, cos, sin, HALF)
    src = v_ptr + token * stride_vt + heads[:, None] * stride_vh + freqs[None, :]
    v1 = tl.load(src, mask=mask, other=0.0).to(tl.float32)
    v2 = tl.load(src + HALF, mask=mask, other=0.0).to(tl.float32)
    # k rounded to bf16 like q (and k in the unfused path) first; v already is.
    k1 = k1.to(q_out_ptr.dtype.element_ty).to(tl.float32)
    k2 = k2.to(q_out_ptr.dtype.element_ty).to(tl.float32)
    _store_cache_row(k_cache_ptr, block, in_block, stride_kcb, stride_kcs, stride_kch, heads[:, None], freqs[None, :],
                     k1, k2, mask, HALF, FP8_MAX)
    _store_cache_row(v_cache_ptr, block, in_block, stride_vcb, stride_vcs, stride_vch, heads[:, None], freqs[None, :],
                     v1, v2, mask, HALF, FP8_MAX)


def rotary_write_kv(
    q: torch.Tensor,  # [T, Hq, D]
    k: torch.Tensor,  # [T, Hkv, D]
    v: torch.Tensor,  # [T, Hkv, D]
    positions: torch.Tensor,  # [T] int64
    cos_sin_cache: torch.Tensor,  # [P, D]
    k_cache: torch.Tensor,  # [N, bs, Hkv, D]
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,  # [T] int64, -1: no cache write
    out: torch.Tensor | None = None,  # [T, Hq, D] for the rotated q
) -> torch.Tensor:
    """The rotated q; k (rotated) and v written to the cache at slot_mapping."""
    q = q if q.stride(-1) == 1 else q.contiguous()
    k = k if k.stride(-1) == 1 else k.contiguous()
    v = v if v.stride(-1) == 1 else v.contiguous()
    num_tokens, num_q_heads, head_dim = q.shape
    num_kv_heads = k.shape[1]
    q_out = torch.empty_like(q) if out is None else out
    if num_tokens:
        half = head_dim // 2
        _rotary_write_kv_kernel[(num_tokens,)](
            q, k, v, q_out, k_cache, v_cache, positions, cos_sin_cache, slot_mapping,
            q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
            q_out.stride(0), q_out.stride(1), cos_sin_cache.stride(0),
            k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
            v_cache.stride(0), v_cache.stride(1), v_cache.stride(2),
            NUM_Q_HEADS=num_q_heads, NUM_KV_HEADS=num_kv_heads, HALF=half,
            BLOCK_HQ=triton.next_power_of_2(num_q_heads), BLOCK_HKV=triton.next_power_of_2(num_kv_heads),
            BLOCK_HALF=triton.next_power_of_2(half), BLOCK_SIZE=k_cache.shape[1], FP8_MAX=_fp8_max(k_cache.dtype),
            num_warps=4, **pdl.launch_options(),
        )
    return q_out
