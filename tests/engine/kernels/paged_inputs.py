"""Random paged-cache batches for the kernel tests: blocks are scattered over the pool in random
order, block tables are padded with extra columns, and unused pool blocks hold random data too."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class PagedBatch:
    q: torch.Tensor  # [T, Hq, D]
    k_cache: torch.Tensor  # [N, bs, Hkv, D]
    v_cache: torch.Tensor
    block_tables: torch.Tensor  # [B, max_blocks] int32
    seq_lens: torch.Tensor  # [B] int32
    query_start_loc: torch.Tensor  # [B + 1] int32
    max_query_len: int
    scale: float


def make_paged_batch(
    seq_lens: list[int],
    query_lens: list[int],
    num_heads: int,
    num_kv_heads: int,
    head_dim: int,
    block_size: int = 16,
    dtype: torch.dtype = torch.bfloat16,
    device: str = "cuda",
    extra_table_columns: int = 3,
    generator: torch.Generator | None = None,
) -> PagedBatch:
    blocks_per_seq = [-(-n // block_size) for n in seq_lens]
    num_blocks = sum(blocks_per_seq) + 7  # spare blocks full of random data that must never be read
    order = torch.randperm(num_blocks, generator=generator).tolist()
    max_blocks = max(blocks_per_seq) + extra_table_columns
    tables = torch.zeros(len(seq_lens), max_blocks, dtype=torch.int32)
    taken = 0
    for row, count in enumerate(blocks_per_seq):
        tables[row, :count] = torch.tensor(order[taken : taken + count], dtype=torch.int32)
        taken += count

    def randn(*shape):
        return torch.randn(*shape, generator=generator).to(dtype=dtype, device=device)

    cache_shape = (num_blocks, block_size, num_kv_heads, head_dim)
    starts = [0]
    for q_len in query_lens:
        starts.append(starts[-1] + q_len)
    return PagedBatch(
        q=randn(starts[-1], num_heads, head_dim),
        k_cache=randn(*cache_shape),
        v_cache=randn(*cache_shape),
        block_tables=tables.to(device),
        seq_lens=torch.tensor(seq_lens, dtype=torch.int32, device=device),
        query_start_loc=torch.tensor(starts, dtype=torch.int32, device=device),
        max_query_len=max(query_lens),
        scale=head_dim**-0.5,
    )


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    assert torch.isfinite(out).all(), "output has NaN/inf: some element was not written"
    return ((out.double() - ref.double()).norm() / ref.double().norm()).item()


def reference_attention(batch: PagedBatch) -> torch.Tensor:
    """The torch reference run in float32 on the same inputs."""
    from engine.kernels import reference

    return reference.paged_attention(
        batch.q.float(), batch.k_cache.float(), batch.v_cache.float(), batch.block_tables, batch.seq_lens,
        batch.query_start_loc, batch.scale, batch.max_query_len,
    )
