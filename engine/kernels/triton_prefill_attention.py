"""Causal attention of prefill chunks against the paged cache, Triton.

FlashAttention-style: one program per (query head, query tile, sequence) keeps a running max and
sum over the context tiles. A chunk's queries are the last q_len positions of its sequence, so the
earlier chunks and prefix-cache blocks are read from the cache like this step's own K/V (written
before the call). The context tiles every row of the query tile sees in full run without masks;
only the tiles on the causal diagonal are masked. Reference: engine/kernels/reference.py
(paged_attention, _chunk_attention). A mixed batch's decodes go to the split-K decode kernel
(engine/kernels/triton_ops.py), so this kernel sees chunks of many queries.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from engine.kernels.triton_split_merge import fold_tile

LOG2E = 1.4426950408889634


@dataclass(frozen=True)
class PrefillTiling:
    """How the kernel is launched. heads_first puts the query heads of one tile next to each other
    in launch order: the GROUP heads that share a KV head read the same K/V tiles at once."""

    block_m: int = 128  # query rows per program
    block_n: int = 32  # context positions per loop iteration
    num_warps: int = 4
    num_stages: int = 3
    heads_first: bool = True


# Short chunks (a few tokens each) waste less of a small query tile.
SHORT_TILING = PrefillTiling(block_m=16, block_n=64, num_warps=4, num_stages=2)
DEFAULT_TILING = PrefillTiling()


def choose_tiling(max_query_len: int) -> PrefillTiling:
    return SHORT_TILING if max_query_len <= 16 else DEFAULT_TILING


@triton.jit
def _attend_tile(
    acc, m_i, l_i, q, table, k_head_ptr, v_head_ptr, tile_start, kv_end, q_pos, dims, dim_mask,
    scale_log2, stride_kb, stride_ks, stride_vb, stride_vs,
    BLOCK_SIZE: tl.constexpr, BLOCK_N: tl.constexpr, MASKED: tl.constexpr, EVEN_D: tl.constexpr,
):
    """One context tile folded into the running (acc, max, sum). MASKED: the tile may hold
    positions past the end of the context or after some row's own position. k_head_ptr, v_head_ptr:
    the caches offset to this program's KV head."""
    pos = tile_start + tl.arange(0, BLOCK_N)
    if MASKED:
        pos_mask = pos < kv_end
        block = tl.load(table + pos // BLOCK_SIZE, mask=pos_mask, other=0).to(tl.int64)
        kv_mask = pos_mask[:, None] & dim_mask[None, :]
    else:
        block = tl.load(table + pos // BLOCK_SIZE).to(tl.int64)
        kv_mask = dim_mask[None, :]
    in_block = (pos % BLOCK_SIZE).to(tl.int64)
    k_ptrs = k_head_ptr + (block * stride_kb + in_block * stride_ks)[:, None] + dims[None, :]
    v_ptrs = v_head_ptr + (block * stride_vb + in_block * stride_vs)[:, None] + dims[None, :]
    if EVEN_D and not MASKED:  # a whole tile: no mask at all
        k = tl.load(k_ptrs)
        v = tl.load(v_ptrs)
    else:
        k = tl.load(k_ptrs, mask=kv_mask, other=0.0)
        v = tl.load(v_ptrs, mask=kv_mask, other=0.0)
    k = k.to(q.dtype)  # [BLOCK_N, BLOCK_D]; an fp8 cache is widened here
    v = v.to(q.dtype)
    scores = tl.dot(q, tl.trans(k)) * scale_log2  # [BLOCK_M, BLOCK_N]
    if MASKED:
        visible = (pos[None, :] <= q_pos[:, None]) & pos_mask[None, :]
        scores = tl.where(visible, scores, float("-inf"))
    # Position 0 is visible to every row, so the running max is finite from the first tile on.
    return fold_tile(scores, v, m_i, l_i, acc)


# Not specialised on value: first_seq (a mixed step's decode count) and the block-table width
# change from step to step, and each new specialisation would compile mid-serving.
@triton.jit(do_not_specialize=["first_seq", "stride_bt"])
def _prefill_kernel(
    q_ptr, k_cache_ptr, v_cache_ptr, out_ptr,
    block_tables_ptr, seq_lens_ptr, query_start_loc_ptr,
    scale_log2, first_seq,
    stride_qt, stride_qh,
    stride_kb, stride_ks, stride_kh,
    stride_vb, stride_vs, stride_vh,
    stride_bt,
    stride_ot, stride_oh,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_SIZE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEADS_FIRST: tl.constexpr, EVEN_D: tl.constexpr,
):
    if HEADS_FIRST:
        head, tile_from_end, seq = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    else:
        tile_from_end, seq, head = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    seq += first_seq
    q_start = tl.load(query_start_loc_ptr + seq)
    q_len = tl.load(query_start_loc_ptr + seq + 1) - q_start
    # The last query tiles see the most context: they are launched first, so the short ones fill
    # the tail of the grid.
    q_tile = tl.cdiv(q_len, BLOCK_M) - 1 - tile_from_end
    if q_tile < 0:
        return
    seq_len = tl.load(seq_lens_ptr + seq)
    context_before = seq_len - q_len  # tokens of earlier chunks / cached prefix
    kv_head = head // GROUP

    rows = q_tile * BLOCK_M + tl.arange(0, BLOCK_M)  # query index within the chunk
    row_mask = rows < q_len
    q_pos = context_before + rows  # [BLOCK_M] absolute positions
    dims = tl.arange(0, BLOCK_D)
    dim_mask = dims < HEAD_DIM
    tokens = (q_start + rows).to(tl.int64)
    q = tl.load(
        q_ptr + tokens[:, None] * stride_qt + head * stride_qh + dims[None, :],
        mask=row_mask[:, None] & dim_mask[None, :], other=0.0,
    )  # [BLOCK_M, BLOCK_D]

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    table = block_tables_ptr + seq.to(tl.int64) * stride_bt
    k_head_ptr = k_cache_ptr + kv_head * stride_kh
    v_head_ptr = v_cache_ptr + kv_head * stride_vh
    # Every row of the tile sees positions 0..its first row's position: whole tiles below that
    # need no mask. The causal diagonal and the context's end are masked.
    first_pos = context_before + q_tile * BLOCK_M
    full_end = (tl.minimum(first_pos + 1, seq_len) // BLOCK_N) * BLOCK_N
    kv_end = tl.minimum(seq_len, first_pos + BLOCK_M)
    for tile_start in range(0, full_end, BLOCK_N):
        acc, m_i, l_i = _attend_tile(
            acc, m_i, l_i, q, table, k_head_ptr, v_head_ptr, tile_start, kv_end, q_pos, dims,
            dim_mask, scale_log2, stride_kb, stride_ks, stride_vb, stride_vs,
            BLOCK_SIZE=BLOCK_SIZE, BLOCK_N=BLOCK_N, MASKED=False, EVEN_D=EVEN_D,
        )
    for tile_start in range(full_end, kv_end, BLOCK_N):
        acc, m_i, l_i = _attend_tile(
            acc, m_i, l_i, q, table, k_head_ptr, v_head_ptr, tile_start, kv_end, q_pos, dims,
            dim_mask, scale_log2, stride_kb, stride_ks, stride_vb, stride_vs,
            BLOCK_SIZE=BLOCK_SIZE, BLOCK_N=BLOCK_N, MASKED=True, EVEN_D=EVEN_D,
        )

    out = acc / l_i[:, None]
    tl.store(
        out_ptr + tokens[:, None] * stride_ot + head * stride_oh + dims[None, :],
        out.to(out_ptr.dtype.element_ty), mask=row_mask[:, None] & dim_mask[None, :],
    )


def prefill_attention(
    q: torch.Tensor,  # [T, Hq, D]
    k_cache: torch.Tensor,  # [N, bs, Hkv, D]
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,  # [B, max_blocks] int32
    seq_lens: torch.Tensor,  # [B] int32
    query_start_loc: torch.Tensor,  # [B + 1] int32: offsets into q's rows (need not start at 0)
    scale: float,
    max_query_len: int,
    out: torch.Tensor | None = None,  # [T, Hq, D] to write into (tests pass a poisoned one)
    tiling: PrefillTiling | None = None,  # None: choose_tiling(max_query_len)
    first_seq: int = 0,  # sequences before it are left out (a mixed step's decodes)
) -> torch.Tensor:
    """Writes the query rows of sequences first_seq.. (query_start_loc's offsets into q); the rows
    of the sequences left out stay as they are in out."""
    num_tokens, num_heads, head_dim = q.shape
    _, block_size, num_kv_heads, _ = k_cache.shape
    num_seqs = seq_lens.shape[0] - first_seq
    out = torch.empty_like(q) if out is None else out
    if num_tokens == 0 or num_seqs == 0:
        return out
    tiling = choose_tiling(max_query_len) if tiling is None else tiling
    q_tiles = triton.cdiv(max_query_len, tiling.block_m)
    grid = (num_heads, q_tiles, num_seqs) if tiling.heads_first else (q_tiles, num_seqs, num_heads)
    _prefill_kernel[grid](
        q, k_cache, v_cache, out,
        block_tables, seq_lens, query_start_loc,
        scale * LOG2E, first_seq,
        q.stride(0), q.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2),
        block_tables.stride(0),
        out.stride(0), out.stride(1),
        GROUP=num_heads // num_kv_heads, HEAD_DIM=head_dim, BLOCK_D=triton.next_power_of_2(head_dim),
        BLOCK_SIZE=block_size, BLOCK_M=tiling.block_m, BLOCK_N=tiling.block_n, HEADS_FIRST=tiling.heads_first,
        EVEN_D=triton.next_power_of_2(head_dim) == head_dim,
        num_warps=tiling.num_warps, num_stages=tiling.num_stages,
    )
    return out
