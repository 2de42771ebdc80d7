"""Paged decode attention with split-K over the context (flash-decoding), Triton.

One program per (sequence, KV head, split): the GROUP query heads that share the KV head are the
rows of one tile, so every K/V element is read from the cache once per sequence. Each split writes
its normalised partial output and its log-sum-exp; a reduce kernel merges the splits. With one
split the first kernel writes the final output directly (the single-block baseline).
Reference: engine/kernels/reference.py (_decode_attention).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from engine.kernels import pdl, triton_pdl
from engine.kernels.split_k import MAX_SPLITS, MIN_SPLIT_TOKENS, choose_num_splits

LOG2E = 1.4426950408889634


@dataclass(frozen=True)
class Tiling:
    """How the split kernel is launched. head_major puts the KV heads of one sequence next to each
    other in launch order, so the programs that read the same cache rows (a row holds every KV
    head of a token) run at the same time."""

    tile: int = 64  # context positions per loop iteration
    num_warps: int = 4
    num_stages: int = 3
    head_major: bool = True  # H100, 256 x 1,000-2,000 tokens: 3.00 TB/s against 2.94 seq-major


DEFAULT_TILING = Tiling()


# Not specialised on value: a mixed step's decodes bring any table width and split count, and each
# new specialisation would compile mid-serving (the decode graphs' sizes compile at capture).
@triton.jit(do_not_specialize=["stride_bt", "num_splits"])
def _decode_split_kernel(
    q_ptr, k_cache_ptr, v_cache_ptr, block_tables_ptr, seq_lens_ptr,
    out_ptr, part_out_ptr, part_lse_ptr,
    scale_log2,
    stride_qt, stride_qh,
    stride_kb, stride_ks, stride_kh,
    stride_vb, stride_vs, stride_vh,
    stride_bt,
    stride_ot, stride_oh,
    num_splits,
    GROUP: tl.constexpr, BLOCK_H: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_SIZE: tl.constexpr, TILE: tl.constexpr, DIRECT: tl.constexpr, MIN_SPLIT: tl.constexpr,
    HEAD_MAJOR: tl.constexpr, PDL: tl.constexpr,
):
    triton_pdl.allow_dependents(PDL)
    triton_pdl.wait_for_inputs(PDL)  # first: every path waits (engine/kernels/pdl.py)
    if HEAD_MAJOR:
        kv_head = tl.program_id(0)
        seq = tl.program_id(1)
    else:
        seq = tl.program_id(0)
        kv_head = tl.program_id(1)
    split = tl.program_id(2)
    num_kv_heads = tl.num_programs(0) if HEAD_MAJOR else tl.num_programs(1)
    seq_len = tl.load(seq_lens_ptr + seq)
    # Same arithmetic as split_k.active_splits / split_length: short sequences use fewer splits.
    num_active = tl.maximum(tl.minimum(num_splits, tl.cdiv(seq_len, MIN_SPLIT)), 1)
    if split >= num_active:
        return
    split_len = tl.cdiv(tl.cdiv(seq_len, num_active), TILE) * TILE
    start = split * split_len
    end = tl.minimum(start + split_len, seq_len)

    rows = tl.arange(0, BLOCK_H)
    heads = kv_head * GROUP + rows  # [BLOCK_H] query heads of this KV head
    row_mask = rows < GROUP
    dims = tl.arange(0, BLOCK_D)
    dim_mask = dims < HEAD_DIM
    q = tl.load(
        q_ptr + seq * stride_qt + heads[:, None] * stride_qh + dims[None, :],
        mask=row_mask[:, None] & dim_mask[None, :], other=0.0,
    )  # [BLOCK_H, BLOCK_D]

    m_i = tl.full([BLOCK_H], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_H], tl.float32)
    acc = tl.zeros([BLOCK_H, BLOCK_D], tl.float32)
    table = block_tables_ptr + seq.to(tl.int64) * stride_bt
    for tile_start in range(start, end, TILE):
        pos = tile_start + tl.arange(0, TILE)
        pos_mask = pos < end
        block = tl.load(table + pos // BLOCK_SIZE, mask=pos_mask, other=0).to(tl.int64)
        in_block = (pos % BLOCK_SIZE).to(tl.int64)
        kv_mask = pos_mask[:, None] & dim_mask[None, :]
        k = tl.load(
            k_cache_ptr + (block * stride_kb + in_block * stride_ks + kv_head * stride_kh)[:, None] + dims[None, :],
            mask=kv_mask, other=0.0,
        ).to(q.dtype)  # [TILE, BLOCK_D]; an fp8 cache is widened here
        v = tl.load(
            v_cache_ptr + (block * stride_vb + in_block * stride_vs + kv_head * stride_vh)[:, None] + dims[None, :],
            mask=kv_mask, other=0.0,
        ).to(q.dtype)
        scores = tl.dot(q, tl.trans(k)) * scale_log2  # [BLOCK_H, TILE], log2 domain
        scores = tl.where(pos_mask[None, :], scores, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(scores, 1))
        p = tl.exp2(scores - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m_i = m_new

    has_any = l_i > 0.0
    out = acc / tl.where(has_any, l_i, 1.0)[:, None]
    store_mask = row_mask[:, None] & dim_mask[None, :]
    if DIRECT:  # one split: the final output
        tl.store(
            out_ptr + seq * stride_ot + heads[:, None] * stride_oh + dims[None, :],
            out.to(out_ptr.dtype.element_ty), mask=store_mask,
        )
    else:
        # part_out [B, Hq, num_splits, D] float32, part_lse [B, Hq, num_splits] float32 (log2 domain).
        part_row = (seq * (GROUP * num_kv_heads) + heads) * num_splits + split
        tl.store(part_out_ptr + part_row[:, None] * HEAD_DIM + dims[None, :], out, mask=store_mask)
        lse = tl.where(has_any, m_i + tl.log2(tl.where(has_any, l_i, 1.0)), float("-inf"))
        tl.store(part_lse_ptr + part_row, lse, mask=row_mask)


@triton.jit(do_not_specialize=["num_splits"])
def _decode_reduce_kernel(
    part_out_ptr, part_lse_ptr, seq_lens_ptr, out_ptr,
    stride_ot, stride_oh,
    num_splits,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_S: tl.constexpr, MIN_SPLIT: tl.constexpr,
    PDL: tl.constexpr,
):
    triton_pdl.allow_dependents(PDL)
    triton_pdl.wait_for_inputs(PDL)  # first: every path waits (engine/kernels/pdl.py)
    seq = tl.program_id(0)
    head = tl.program_id(1)
    seq_len = tl.load(seq_lens_ptr + seq)
    num_active = tl.maximum(tl.minimum(num_splits, tl.cdiv(seq_len, MIN_SPLIT)), 1)
    splits = tl.arange(0, BLOCK_S)
    split_mask = splits < num_active
    row = (seq * tl.num_programs(1) + head) * num_splits
    lse = tl.load(part_lse_ptr + row + splits, mask=split_mask, other=float("-inf"))  # [BLOCK_S]
    m = tl.max(lse, 0)
    m = tl.where(m == float("-inf"), 0.0, m)  # an empty sequence: every weight is zero
    weights = tl.exp2(lse - m)
    dims = tl.arange(0, BLOCK_D)
    dim_mask = dims < HEAD_DIM
    parts = tl.load(
        part_out_ptr + (row + splits)[:, None] * HEAD_DIM + dims[None, :],
        mask=split_mask[:, None] & dim_mask[None, :], other=0.0,
    )  # [BLOCK_S, BLOCK_D]
    parts = tl.where((weights > 0.0)[:, None], parts, 0.0)
    total = tl.sum(weights, 0)
    out = tl.sum(parts * weights[:, None], 0) / tl.where(total > 0.0, total, 1.0)
    tl.store(out_ptr + seq * stride_ot + head * stride_oh + dims, out.to(out_ptr.dtype.element_ty), mask=dim_mask)


@functools.cache
def _num_sms(device: torch.device) -> int:
    if device.type != "cuda":
        return 1  # Triton's interpreter on the CPU
    return torch.cuda.get_device_properties(device).multi_processor_count


def decode_attention(
    q: torch.Tensor,  # [B, Hq, D], one query per sequence at position seq_len - 1
    k_cache: torch.Tensor,  # [N, bs, Hkv, D]
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,  # [B, max_blocks] int32
    seq_lens: torch.Tensor,  # [B] int32
    scale: float,
    num_splits: int | None = None,  # None: choose from the batch, heads and context bound
    out: torch.Tensor | None = None,  # [B, Hq, D] to write into (tests pass a poisoned one)
    tiling: Tiling = DEFAULT_TILING,
) -> torch.Tensor:
    num_seqs, num_heads, head_dim = q.shape
    _, block_size, num_kv_heads, _ = k_cache.shape
    group = num_heads // num_kv_heads
    out = torch.empty_like(q) if out is None else out
    if num_seqs == 0:
        return out
    if num_splits is None:
        max_context = block_tables.shape[1] * block_size
        num_splits = choose_num_splits(num_seqs, num_kv_heads, max_context, _num_sms(q.device))
    num_splits = max(1, min(num_splits, MAX_SPLITS))
    if num_splits > 1:
        part_out = torch.empty(num_seqs, num_heads, num_splits, head_dim, device=q.device, dtype=torch.float32)
        part_lse = torch.empty(num_seqs, num_heads, num_splits, device=q.device, dtype=torch.float32)
    else:
        part_out = part_lse = out  # unused by the kernel
    block_d = triton.next_power_of_2(head_dim)
    grid = (num_kv_heads, num_seqs, num_splits) if tiling.head_major else (num_seqs, num_kv_heads, num_splits)
    _decode_split_kernel[grid](
        q, k_cache, v_cache, block_tables, seq_lens,
        out, part_out, part_lse,
        scale * LOG2E,
        q.stride(0), q.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2),
        block_tables.stride(0),
        out.stride(0), out.stride(1),
        num_splits,
        GROUP=group, BLOCK_H=max(16, triton.next_power_of_2(group)), HEAD_DIM=head_dim, BLOCK_D=block_d,
        BLOCK_SIZE=block_size, TILE=tiling.tile, DIRECT=num_splits == 1, MIN_SPLIT=MIN_SPLIT_TOKENS,
        HEAD_MAJOR=tiling.head_major, num_warps=tiling.num_warps, num_stages=tiling.num_stages,
        **pdl.launch_options(),
    )
    if num_splits > 1:
        _decode_reduce_kernel[(num_seqs, num_heads)](
            part_out, part_lse, seq_lens, out,
            out.stride(0), out.stride(1),
            num_splits,
            HEAD_DIM=head_dim, BLOCK_D=block_d, BLOCK_S=triton.next_power_of_2(num_splits), MIN_SPLIT=MIN_SPLIT_TOKENS,
            num_warps=4, **pdl.launch_options(),
        )
    return out
