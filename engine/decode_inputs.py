"""Inputs of a CUDA-graph decode step, built on the host in time proportional to the batch.

The general builder (engine/attention_metadata.py) turns every sequence's whole block table into
a fresh tensor each step: at 224 sequences of ~1,000 tokens that was the largest share of a
decode step's host time, during which the GPU waits. Here each request keeps a numpy copy of its
block table that only grows by the blocks added since the last step (a preempted request gets a
new list from the KV cache manager and is copied afresh), and the step's vectors, padded to the
graph's batch size, are written into a pinned host copy of the graph runner's input buffers, which
it copies to the GPU asynchronously, at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from engine.attention_metadata import pending_input_id_of
from engine.cuda_graphs import InputLayout, StagedInputs, padded_batch_size
from engine.sequence import PENDING_TOKEN, ScheduledBatch


class _Table:
    __slots__ = ("source", "synced", "row")

    def __init__(self, source: list[int], max_blocks: int) -> None:
        self.source = source  # the Sequence's block_table list: replaced, never shrunk in place
        self.synced = 0
        self.row = np.zeros(max_blocks, dtype=np.int32)


class _Staging:
    """One pinned copy of the graph runner's input layout, with numpy views of its sections."""

    def __init__(self, layout: InputLayout, pin: bool) -> None:
        storage = torch.zeros(layout.nbytes, dtype=torch.uint8)
        self.storage = storage.pin_memory() if pin else storage
        self.views = layout.views(self.storage)
        self.arrays = {name: view.numpy() for name, view in self.views.items()}
        for spec in layout.inputs:  # query_start_loc: of one-token chunks, the row index in every row
            if spec.pad_with_row_index:
                self.arrays[spec.name][:] = np.arange(len(self.arrays[spec.name]))


class DecodeInputs:
    """build(batch, pending_rows) -> the StagedInputs that GraphRunner.run_staged takes for a
    batch of one-token chunks."""

    def __init__(self, layout: InputLayout, batch_sizes: Sequence[int], block_size: int, pin: bool = True) -> None:
        self.layout = layout
        self.batch_sizes = list(batch_sizes)
        self.block_size = block_size
        # Padded with a value (query_start_loc holds its row index throughout: see _Staging)
        self._padding = {
            spec.name: spec for spec in layout.inputs if not spec.trailing_shape and not spec.pad_with_row_index
        }
        # Two sets, used in turn: while the engine runs ahead, the copies out of one step's set
        # may not have run yet when the next step is built (they have when the one after is:
        # the engine has read that step's ids back by then, and the copies ran before it).
        self._sets = (_Staging(layout, pin), _Staging(layout, pin))
        self._turn = 0
        self.max_blocks = self._sets[0].views["block_tables"].shape[1]
        self._tables: dict[str, _Table] = {}

    def build(self, batch: ScheduledBatch, pending_rows: Mapping[str, int]) -> StagedInputs:
        """The step's inputs, valid until the build after next. A chunk whose token is pending
        gets the input id that names its row of the last step's ids (pending_rows: request id ->
        row; kernels.embedding reads it there)."""
        staging = self._sets[self._turn]
        self._turn ^= 1
        arrays = staging.arrays
        chunks = batch.chunks
        count = len(chunks)
        size = self.block_size
        positions = [chunk.start for chunk in chunks]
        tokens = [chunk.seq.token_ids[chunk.start] for chunk in chunks]
        for index, token in enumerate(tokens):
            if token == PENDING_TOKEN:
                tokens[index] = pending_input_id_of(chunks[index].seq.request_id, pending_rows)
        arrays["input_ids"][:count] = tokens
        arrays["positions"][:count] = positions
        arrays["seq_lens"][:count] = [position + 1 for position in positions]
        arrays["slot_mapping"][:count] = [
            chunk.seq.block_table[position // size] * size + position % size
            for chunk, position in zip(chunks, positions)
        ]
        padded = padded_batch_size(count, self.batch_sizes) or count
        for name, spec in self._padding.items():
            arrays[name][count + spec.extra_rows : padded + spec.extra_rows] = spec.pad
        # The step's [count, width] block tables are packed at the start of their section: with one
        # row (or the full width) that is the buffer's own layout and they join the first copy.
        width = max(position // size for position in positions) + 1
        offset = self.layout.offsets["block_tables"]
        tables = staging.views["block_tables"].view(-1)[: count * width].view(count, width)
        rows = tables.numpy()
        for index, chunk in enumerate(chunks):
            rows[index] = self._row(chunk.seq.request_id, chunk.seq.block_table)[:width]
        if count == 1 or width == self.max_blocks:
            return StagedInputs(staging.storage, count, offset + tables.numel() * tables.element_size())
        return StagedInputs(staging.storage, count, offset, ("block_tables", tables))

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
