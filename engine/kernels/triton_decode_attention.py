"""Paged decode attention with split-K over the context (flash-decoding), Triton.

One program per (sequence, KV head, split): the GROUP query heads that share the KV head are the
rows of one tile, so every K/V element is read from the cache once per sequence. With one split
the program writes the final output directly (the single-block baseline). With more, each split
writes its normalised partial output and its log-sum-exp, and the last split of a (sequence, KV
head) to finish merges them (FUSE_MERGE), or a reduce kernel does (the default). Both merges:
engine/kernels/triton_split_merge.py.

Launched early (engine/kernels/pdl.py), a program reads before its wait what earlier steps and the
step's input copies wrote: seq_lens, its block table and its first tile's K/V rows, except the
current token's (position seq_len - 1), which the cache write just ahead writes in this step.
That row, q and everything past the first tile are read after the wait.
Reference: engine/kernels/reference.py (_decode_attention).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from engine.kernels import pdl, split_k, triton_pdl
from engine.kernels.triton_split_merge import fold_tile, merge_chunk, merge_counters, merge_splits, reduce_splits

LOG2E = 1.4426950408889634
# Off: a second kernel merges the splits. Read at each launch, so a probe can compare the two.
# Off by default: with the o projection prefetching its whole matrix behind attention, the reduce
# kernel's batch-1 step is 0.2% faster on an H100 (the fused merge's program holds more registers).
FUSE_MERGE = False


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


@triton.jit
def _blocks(table, pos, pos_mask, BLOCK_SIZE: tl.constexpr):
    """The cache block of each position (through the block table) and the row in it, int64."""
    block = tl.load(table + pos // BLOCK_SIZE, mask=pos_mask, other=0).to(tl.int64)
    return block, (pos % BLOCK_SIZE).to(tl.int64)


@triton.jit
def _attend(q, k, v, pos_mask, m_i, l_i, acc, scale_log2):
    """One tile of online softmax: the running max m_i, sum l_i and output acc, updated."""
    k = k.to(q.dtype)  # [TILE, BLOCK_D]; an fp8 cache is widened here
    v = v.to(q.dtype)
    scores = tl.dot(q, tl.trans(k)) * scale_log2  # [BLOCK_H, TILE], log2 domain
    scores = tl.where(pos_mask[None, :], scores, float("-inf"))
    acc, m_i, l_i = fold_tile(scores, v, m_i, l_i, acc)
    return m_i, l_i, acc


# Not specialised on value: a mixed step's decodes bring any table width and split count, and each
# new specialisation would compile mid-serving (the decode graphs' sizes compile at capture).
@triton.jit(do_not_specialize=["stride_bt", "num_splits"])
def _decode_split_kernel(
    q_ptr, k_cache_ptr, v_cache_ptr, block_tables_ptr, seq_lens_ptr,
    out_ptr, part_out_ptr, part_lse_ptr, counters_ptr,
    scale_log2,
    stride_qt, stride_qh,
    stride_kb, stride_ks, stride_kh,
    stride_vb, stride_vs, stride_vh,
    stride_bt,
    stride_ot, stride_oh,
    num_splits,
    GROUP: tl.constexpr, BLOCK_H: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_SIZE: tl.constexpr, TILE: tl.constexpr, DIRECT: tl.constexpr, MERGE: tl.constexpr,
    BLOCK_GROUP: tl.constexpr, CHUNK_S: tl.constexpr, MIN_SPLIT: tl.constexpr,
    HEAD_MAJOR: tl.constexpr, PRELOAD: tl.constexpr, PDL: tl.constexpr,
):
    triton_pdl.allow_dependents(PDL)
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
    split_len = tl.cdiv(tl.cdiv(seq_len, num_active), TILE) * TILE
    start = split * split_len  # an inactive split starts at or past seq_len: it loads nothing
    end = tl.minimum(start + split_len, seq_len)

    dims = tl.arange(0, BLOCK_D)
    dim_mask = dims < HEAD_DIM
    table = block_tables_ptr + seq.to(tl.int64) * stride_bt
    if PRELOAD:
        # The first tile, before the wait: the rows of earlier tokens (engine/kernels/pdl.py).
        pos = start + tl.arange(0, TILE)
        pos_mask = pos < end
        block, in_block = _blocks(table, pos, pos_mask, BLOCK_SIZE)
        k_rows = k_cache_ptr + (block * stride_kb + in_block * stride_ks + kv_head * stride_kh)[:, None] + dims[None, :]
        v_rows = v_cache_ptr + (block * stride_vb + in_block * stride_vs + kv_head * stride_vh)[:, None] + dims[None, :]
        last = seq_len - 1  # the current token
        earlier = (pos_mask & (pos < last))[:, None] & dim_mask[None, :]
        k = tl.load(k_rows, mask=earlier, other=0.0)  # [TILE, BLOCK_D]
        v = tl.load(v_rows, mask=earlier, other=0.0)
        # The current token's row, if in this tile: its address now, the row itself after the wait.
        last_in_tile = (last >= start) & (last < end) & (last < start + TILE)
        last_block, last_in_block = _blocks(table, last, last_in_tile, BLOCK_SIZE)
        k_last = k_cache_ptr + last_block * stride_kb + last_in_block * stride_ks + kv_head * stride_kh + dims
        v_last = v_cache_ptr + last_block * stride_vb + last_in_block * stride_vs + kv_head * stride_vh + dims
    triton_pdl.wait_for_inputs(PDL)  # every path waits, the inactive splits too
    if split >= num_active:
        return

    rows = tl.arange(0, BLOCK_H)
    heads = kv_head * GROUP + rows  # [BLOCK_H] query heads of this KV head
    row_mask = rows < GROUP
    q = tl.load(
        q_ptr + seq * stride_qt + heads[:, None] * stride_qh + dims[None, :],
        mask=row_mask[:, None] & dim_mask[None, :], other=0.0,
    )  # [BLOCK_H, BLOCK_D]
    m_i = tl.full([BLOCK_H], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_H], tl.float32)
    acc = tl.zeros([BLOCK_H, BLOCK_D], tl.float32)
    loop_start = start
    if PRELOAD:
        if start < end:
            # The current token's row, written by the kernel just ahead, completes the first tile.
            current = (pos == last)[:, None]
            k = tl.where(current, tl.load(k_last, mask=dim_mask & last_in_tile, other=0.0)[None, :], k)
            v = tl.where(current, tl.load(v_last, mask=dim_mask & last_in_tile, other=0.0)[None, :], v)
            m_i, l_i, acc = _attend(q, k, v, pos_mask, m_i, l_i, acc, scale_log2)
        loop_start = start + TILE
    for tile_start in range(loop_start, end, TILE):
        pos = tile_start + tl.arange(0, TILE)
        pos_mask = pos < end
        kv_mask = pos_mask[:, None] & dim_mask[None, :]
        block, in_block = _blocks(table, pos, pos_mask, BLOCK_SIZE)
        k = tl.load(
            k_cache_ptr + (block * stride_kb + in_block * stride_ks + kv_head * stride_kh)[:, None] + dims[None, :],
            mask=kv_mask, other=0.0,
        )
        v = tl.load(
            v_cache_ptr + (block * stride_vb + in_block * stride_vs + kv_head * stride_vh)[:, None] + dims[None, :],
            mask=kv_mask, other=0.0,
        )
        m_i, l_i, acc = _attend(q, k, v, pos_mask, m_i, l_i, acc, scale_log2)

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
        first_row = (seq * (GROUP * num_kv_heads) + kv_head * GROUP) * num_splits
        part_row = first_row + rows * num_splits + split
        tl.store(part_out_ptr + part_row[:, None] * HEAD_DIM + dims[None, :], out, mask=store_mask)
        lse = tl.where(has_any, m_i + tl.log2(tl.where(has_any, l_i, 1.0)), float("-inf"))
        tl.store(part_lse_ptr + part_row, lse, mask=row_mask)
        if MERGE:
            # The barrier: every thread's stores are done before the count. Each split's add
            # releases its stores; the add that makes the count num_active acquires them all, and
            # that split merges.
            tl.debug_barrier()
            counter = counters_ptr + seq * num_kv_heads + kv_head
            if tl.atomic_add(counter, 1, sem="acq_rel") == num_active - 1:
                tl.store(counter, 0)  # for the next launch: no split of this one counts again
                merge_splits(
                    part_out_ptr, part_lse_ptr, out_ptr + seq * stride_ot + kv_head * GROUP * stride_oh,
                    first_row, num_splits, num_active, stride_oh,
                    HEADS=GROUP, BLOCK_HEADS=BLOCK_GROUP, HEAD_DIM=HEAD_DIM, BLOCK_D=BLOCK_D, CHUNK_S=CHUNK_S,
                )


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
        num_splits = split_k.choose_num_splits(num_seqs, num_kv_heads, max_context, _num_sms(q.device))
    num_splits = max(1, min(num_splits, split_k.MAX_SPLITS))
    fused = num_splits > 1 and FUSE_MERGE
    if num_splits > 1:
        part_out = torch.empty(num_seqs, num_heads, num_splits, head_dim, device=q.device, dtype=torch.float32)
        part_lse = torch.empty(num_seqs, num_heads, num_splits, device=q.device, dtype=torch.float32)
    else:
        part_out = part_lse = out  # unused by the kernel
    counters = merge_counters(q.device, num_seqs * num_kv_heads) if fused else seq_lens  # unused unless fused
    grid = (num_kv_heads, num_seqs, num_splits) if tiling.head_major else (num_seqs, num_kv_heads, num_splits)
    _decode_split_kernel[grid](
        q, k_cache, v_cache, block_tables, seq_lens,
        out, part_out, part_lse, counters,
        scale * LOG2E,
        q.stride(0), q.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2),
        block_tables.stride(0),
        out.stride(0), out.stride(1),
        num_splits,
        GROUP=group, BLOCK_H=max(16, triton.next_power_of_2(group)), HEAD_DIM=head_dim,
        BLOCK_D=triton.next_power_of_2(head_dim), BLOCK_SIZE=block_size, TILE=tiling.tile,
        DIRECT=num_splits == 1, MERGE=fused, PRELOAD=num_splits > 1, BLOCK_GROUP=triton.next_power_of_2(group),
        CHUNK_S=merge_chunk(group, num_splits, head_dim), MIN_SPLIT=split_k.MIN_SPLIT_TOKENS,
        HEAD_MAJOR=tiling.head_major, num_warps=tiling.num_warps, num_stages=tiling.num_stages,
        **pdl.launch_options(),
    )
    if num_splits > 1 and not fused:
        reduce_splits(part_out, part_lse, seq_lens, out, split_k.MIN_SPLIT_TOKENS, pdl.launch_options())
    return out
