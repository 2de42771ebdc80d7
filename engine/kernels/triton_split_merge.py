"""Merging the splits of decode attention (engine/kernels/triton_decode_attention.py), Triton.

Each split leaves its normalised partial output and log-sum-exp; the merge weighs the partials by
their exp-sums. The device function is shared by the two ways the splits are merged: the last
split of a (sequence, KV head) to finish, counted on a per-device buffer of counters, or a reduce
kernel launched after the split kernel.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from engine.kernels import triton_pdl
from engine.kernels.persistent import PersistentBuffer

# Counters of the fused merge, one per (sequence, KV head): enough for any batch the engine runs.
MIN_MERGE_COUNTERS = 1 << 16
# Partial-output elements a merging program loads at once: 64 floats a thread at 4 warps.
MERGE_CHUNK_ELEMENTS = 8192


@triton.jit
def fold_tile(scores, v, m_i, l_i, acc):
    """One tile of online softmax (flash attention): scores [rows, tile] in the log2 domain, hidden
    entries -inf, and v [tile, D] folded into each row's running max m_i, exp-sum l_i and output
    acc. Returns (acc, m_i, l_i). The decode and prefill kernels share it."""
    m_new = tl.maximum(m_i, tl.max(scores, 1))
    p = tl.exp2(scores - m_new[:, None])
    alpha = tl.exp2(m_i - m_new)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
    return acc, m_new, l_i


@triton.jit
def merge_splits(
    part_out_ptr, part_lse_ptr, out_ptr, first_row, num_splits, num_active, stride_oh,
    HEADS: tl.constexpr, BLOCK_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    CHUNK_S: tl.constexpr,
):
    """Merge the num_active splits of HEADS consecutive query heads, whose partial rows start at
    first_row (num_splits rows a head), into out_ptr (stride_oh between two heads' outputs).
    The loads bypass L1 (.cg): other programs of the same launch may have written the partials."""
    heads = tl.arange(0, BLOCK_HEADS)
    head_mask = heads < HEADS
    rows = first_row + heads * num_splits  # [BLOCK_HEADS]
    dims = tl.arange(0, BLOCK_D)
    dim_mask = dims < HEAD_DIM
    m_i = tl.full([BLOCK_HEADS], float("-inf"), tl.float32)
    total = tl.zeros([BLOCK_HEADS], tl.float32)
    acc = tl.zeros([BLOCK_HEADS, BLOCK_D], tl.float32)
    for first in range(0, num_active, CHUNK_S):  # one pass unless the splits outnumber CHUNK_S
        splits = first + tl.arange(0, CHUNK_S)
        mask = head_mask[:, None] & (splits < num_active)[None, :]  # [BLOCK_HEADS, CHUNK_S]
        lse = tl.load(
            part_lse_ptr + rows[:, None] + splits[None, :], mask=mask, other=float("-inf"), cache_modifier=".cg",
        )
        parts = tl.load(
            part_out_ptr + ((rows[:, None] + splits[None, :]) * HEAD_DIM)[:, :, None] + dims[None, None, :],
            mask=mask[:, :, None] & dim_mask[None, None, :], other=0.0, cache_modifier=".cg",
        )  # [BLOCK_HEADS, CHUNK_S, BLOCK_D]
        m_new = tl.maximum(m_i, tl.max(lse, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # no split with a token so far
        alpha = tl.exp2(m_i - m_safe)
        weights = tl.exp2(lse - m_safe[:, None])
        parts = tl.where((weights > 0.0)[:, :, None], parts, 0.0)
        total = total * alpha + tl.sum(weights, 1)
        acc = acc * alpha[:, None] + tl.sum(parts * weights[:, :, None], 1)
        m_i = m_new
    out = acc / tl.where(total > 0.0, total, 1.0)[:, None]  # an empty sequence: zeros
    tl.store(
        out_ptr + heads[:, None] * stride_oh + dims[None, :], out.to(out_ptr.dtype.element_ty),
        mask=head_mask[:, None] & dim_mask[None, :],
    )


@triton.jit(do_not_specialize=["num_splits"])
def _reduce_kernel(
    part_out_ptr, part_lse_ptr, seq_lens_ptr, out_ptr,
    stride_ot, stride_oh,
    num_splits,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, CHUNK_S: tl.constexpr, MIN_SPLIT: tl.constexpr,
    PDL: tl.constexpr,
):
    triton_pdl.allow_dependents(PDL)
    triton_pdl.wait_for_inputs(PDL)  # first: every path waits (engine/kernels/pdl.py)
    seq = tl.program_id(0)
    head = tl.program_id(1)
    seq_len = tl.load(seq_lens_ptr + seq)
    num_active = tl.maximum(tl.minimum(num_splits, tl.cdiv(seq_len, MIN_SPLIT)), 1)
    merge_splits(
        part_out_ptr, part_lse_ptr, out_ptr + seq * stride_ot + head * stride_oh,
        (seq * tl.num_programs(1) + head) * num_splits, num_splits, num_active, stride_oh,
        HEADS=1, BLOCK_HEADS=1, HEAD_DIM=HEAD_DIM, BLOCK_D=BLOCK_D, CHUNK_S=CHUNK_S,
    )


def reduce_splits(
    part_out: torch.Tensor,  # [B, Hq, num_splits, D] float32
    part_lse: torch.Tensor,  # [B, Hq, num_splits] float32, log2 domain
    seq_lens: torch.Tensor,  # [B] int32
    out: torch.Tensor,  # [B, Hq, D]
    min_split: int,
    launch_options: dict,
) -> None:
    """The reduce kernel: one program per (sequence, query head)."""
    num_seqs, num_heads, num_splits, head_dim = part_out.shape
    _reduce_kernel[(num_seqs, num_heads)](
        part_out, part_lse, seq_lens, out,
        out.stride(0), out.stride(1),
        num_splits,
        HEAD_DIM=head_dim, BLOCK_D=triton.next_power_of_2(head_dim), CHUNK_S=merge_chunk(1, num_splits, head_dim),
        MIN_SPLIT=min_split, num_warps=4, **launch_options,
    )


def merge_chunk(heads: int, num_splits: int, head_dim: int) -> int:
    """Splits a merging program loads at once for heads query heads: all of them, unless that
    passes MERGE_CHUNK_ELEMENTS partial-output elements (a power of two, at least 1)."""
    per_split = triton.next_power_of_2(heads) * triton.next_power_of_2(head_dim)
    fits = max(1, MERGE_CHUNK_ELEMENTS // per_split)
    return min(triton.next_power_of_2(num_splits), 1 << (fits.bit_length() - 1))


# One per (sequence, KV head) of a fused launch.
_MERGE_COUNTERS = PersistentBuffer("decode attention's merge counters", torch.int32, 0, MIN_MERGE_COUNTERS)


def merge_counters(device: torch.device, count: int) -> torch.Tensor:
    """At least count zeroed int32 counters on device; every fused launch leaves them at zero
    (engine/kernels/persistent.py: not grown during a CUDA-graph capture)."""
    return _MERGE_COUNTERS.get(device, count)
