"""Inputs of a CUDA-graph decode step, built on the host in time proportional to the batch.

The general builder (engine/attention_metadata.py) turns every sequence's whole block table into
a fresh tensor each step: at 224 sequences of ~1,000 tokens that was the largest share of a
decode step's host time, during which the GPU waits. Here each request keeps a numpy copy of its
block table that only grows by the blocks added since the last step (a preempted request gets a
new list from the KV cache manager and is copied afresh), and the step's vectors are written into
pinned host buffers that the graph runner copies to the GPU asynchronously.
"""

from __future__ import annotations

import numpy as np
import torch

from engine.sequence import ScheduledBatch


class _Table:
    __slots__ = ("source", "synced", "row")

    def __init__(self, source: list[int], max_blocks: int) -> None:
        self.source = source  # the Sequence's block_table list: replaced, never shrunk in place
        self.synced = 0
        self.row = np.zeros(max_blocks, dtype=np.int32)


class _Buffers:
    """One set of the step's host vectors, each [max_seqs (+1)] (block tables [max_seqs, max_blocks])."""

    def __init__(self, max_seqs: int, max_blocks: int, pin: bool) -> None:
        def buffer(*shape, dtype):
            tensor = torch.zeros(shape, dtype=dtype)
            return tensor.pin_memory() if pin else tensor

        self.input_ids = buffer(max_seqs, dtype=torch.int64)
        self.positions = buffer(max_seqs, dtype=torch.int64)
        self.slot_mapping = buffer(max_seqs, dtype=torch.int64)
        self.seq_lens = buffer(max_seqs, dtype=torch.int32)
        # Flat: a step's [count, width] tables are packed at its start, so the copy to the device
        # reads contiguous pinned memory (a strided view of a pinned tensor would be staged through
        # pageable memory, and such a copy may wait for the device).
        self.block_tables = buffer(max_seqs * max_blocks, dtype=torch.int32)
        self.query_start_loc = buffer(max_seqs + 1, dtype=torch.int32)
        self.query_start_loc.copy_(torch.arange(max_seqs + 1, dtype=torch.int32))


class DecodeInputs:
    """build(batch) -> the tensors GraphRunner.run takes for a batch of one-token chunks."""

    def __init__(self, max_seqs: int, max_blocks: int, block_size: int, pin: bool = True) -> None:
        self.block_size = block_size
        self.max_blocks = max_blocks
        # Two sets, used in turn: while the engine runs ahead, the copies out of one step's set
        # may not have run yet when the next step is built (they have when the one after is:
        # the engine has read that step's ids back by then, and the copies ran before it).
        self._sets = (_Buffers(max_seqs, max_blocks, pin), _Buffers(max_seqs, max_blocks, pin))
        self._turn = 0
        self._tables: dict[str, _Table] = {}

    def build(self, batch: ScheduledBatch) -> dict[str, torch.Tensor]:
        """Views of pinned buffers, valid until the build after next."""
        buffers = self._sets[self._turn]
        self._turn ^= 1
        chunks = batch.chunks
        count = len(chunks)
        size = self.block_size
        positions = [chunk.start for chunk in chunks]
        buffers.input_ids.numpy()[:count] = [chunk.seq.token_ids[chunk.start] for chunk in chunks]
        buffers.positions.numpy()[:count] = positions
        buffers.seq_lens.numpy()[:count] = [position + 1 for position in positions]
        buffers.slot_mapping.numpy()[:count] = [
            chunk.seq.block_table[position // size] * size + position % size
            for chunk, position in zip(chunks, positions)
        ]
        width = max(position // size for position in positions) + 1
        block_tables = buffers.block_tables[: count * width].view(count, width)
        tables = block_tables.numpy()
        for index, chunk in enumerate(chunks):
            tables[index] = self._row(chunk.seq.request_id, chunk.seq.block_table)[:width]
        return {
            "input_ids": buffers.input_ids[:count],
            "positions": buffers.positions[:count],
            "slot_mapping": buffers.slot_mapping[:count],
            "block_tables": block_tables,
            "seq_lens": buffers.seq_lens[:count],
            "query_start_loc": buffers.query_start_loc[: count + 1],
        }

    def release(self, request_id: str) -> None:
        self._tables.pop(request_id, None)

    def _row(self, request_id: str, block_table: list[int]) -> np.ndarray:
        table = self._tables.get(request_id)
        if table is None or table.source is not block_table:
            table = self._tables[request_id] = _Table(block_table, self.max_blocks)
        if table.synced < len(block_table):
            table.row[table.synced : len(block_table)] = block_table[table.synced :]
            table.synced = len(block_table)
        return table.row
