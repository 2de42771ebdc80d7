"""Per-step tensors every attention layer reads, built once per step by the runner and passed
explicitly down the model (no module-global forward context)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from engine.sequence import PENDING_TOKEN, ScheduledBatch
from engine.transfers import to_device


@dataclass(frozen=True, slots=True)
class AttentionMetadata:
    positions: torch.Tensor  # [T] int64: absolute position of each token of the step
    slot_mapping: torch.Tensor  # [T] int64: cache slot (block * block_size + offset) of each token
    block_tables: torch.Tensor  # [B, max_blocks] int32, padded with block 0 (masked by seq_lens)
    seq_lens: torch.Tensor  # [B] int32: tokens in the cache once this step's K/V are written
    query_start_loc: torch.Tensor  # [B + 1] int32: offsets of each chunk's tokens in the step
    max_query_len: int
    max_seq_len: int
    sample_indices: torch.Tensor  # [S] int64: the last token of each chunk that samples, in chunk order
    # Leading sequences with one query each (the batch contract puts decodes first): a mixed
    # step's attention sends them to the decode kernel. 0 where a caller does not count them.
    num_decodes: int = 0
    # CPU decode of one sequence: the cache slots of its K/V, position by position, found once
    # per step rather than by every layer from the block table. A range when its blocks are
    # consecutive (read as a view of the pool), else a [seq_len] int64 tensor (gathered).
    lone_kv_slots: range | torch.Tensor | None = None

    @property
    def num_tokens(self) -> int:
        return self.positions.shape[0]


def pending_input_id(row: int) -> int:
    """The input id that stands for the id sampled into `row` of the last step's ids, which are
    still on the device when the engine runs ahead: kernels.embedding reads it there."""
    return -1 - row


def pending_input_id_of(request_id: str, pending_rows: Mapping[str, int] | None) -> int:
    """pending_input_id of the row where the last step sampled request_id's pending token."""
    if pending_rows is None or request_id not in pending_rows:
        raise RuntimeError(f"request {request_id}'s last token is pending; no row of the last ids given")
    return pending_input_id(pending_rows[request_id])


def build_step_inputs(
    batch: ScheduledBatch, block_size: int, device: torch.device, pending_rows: Mapping[str, int] | None = None
) -> tuple[torch.Tensor, AttentionMetadata]:
    """The input ids [T] and the metadata of one scheduled batch (built on the host, copied once).
    A chunk whose last token is pending gets pending_input_id_of(its request id, pending_rows)."""
    input_ids: list[int] = []
    positions: list[int] = []
    slots: list[int] = []
    seq_lens: list[int] = []
    query_start_loc = [0]
    tables: list[list[int]] = []
    sample_indices: list[int] = []
    for chunk in batch.chunks:
        seq, start, end = chunk.seq, chunk.start, chunk.start + chunk.num_tokens
        table = seq.block_table[: -(-end // block_size)]
        if len(table) * block_size < end:
            raise RuntimeError(f"request {seq.request_id} has {len(table)} KV blocks for {end} tokens")
        input_ids.extend(seq.token_ids[start:end])
        if input_ids[-1] == PENDING_TOKEN:
            input_ids[-1] = pending_input_id_of(seq.request_id, pending_rows)
        positions.extend(range(start, end))
        slots.extend(table[pos // block_size] * block_size + pos % block_size for pos in range(start, end))
        seq_lens.append(end)
        query_start_loc.append(query_start_loc[-1] + chunk.num_tokens)
        tables.append(table)
        if chunk.samples:
            sample_indices.append(query_start_loc[-1] - 1)
    max_blocks = max(len(t) for t in tables)
    padded = [t + [0] * (max_blocks - len(t)) for t in tables]
    metadata = AttentionMetadata(
        positions=to_device(positions, torch.int64, device),
        slot_mapping=to_device(slots, torch.int64, device),
        block_tables=to_device(padded, torch.int32, device),
        seq_lens=to_device(seq_lens, torch.int32, device),
        query_start_loc=to_device(query_start_loc, torch.int32, device),
        max_query_len=max(c.num_tokens for c in batch.chunks),
        max_seq_len=max(seq_lens),
        sample_indices=to_device(sample_indices, torch.int64, device),
        num_decodes=_leading_decodes(batch),
        lone_kv_slots=_lone_kv_slots(batch, tables, seq_lens, block_size, device),
    )
    return to_device(input_ids, torch.int64, device), metadata


def _leading_decodes(batch: ScheduledBatch) -> int:
    count = 0
    for chunk in batch.chunks:
        if chunk.num_tokens != 1:
            break
        count += 1
    return count


def _lone_kv_slots(
    batch: ScheduledBatch, tables: list[list[int]], seq_lens: list[int], block_size: int, device
) -> range | torch.Tensor | None:
    # Only the CPU reference reads it; a CUDA step keeps its block tables (and its graphs).
    if device.type != "cpu" or len(tables) != 1 or batch.chunks[0].num_tokens != 1:
        return None
    table, seq_len = tables[0], seq_lens[0]
    if table == list(range(table[0], table[0] + len(table))):
        return range(table[0] * block_size, table[0] * block_size + seq_len)
    # Blocks reused from finished requests sit anywhere in the pool: slot of every position.
    blocks = torch.tensor(table, dtype=torch.int64)[:, None] * block_size  # [nb, 1]
    return (blocks + torch.arange(block_size)).view(-1)[:seq_len]
