"""Decode steps replayed from CUDA graphs captured for a ladder of padded batch sizes.

A decode step launches hundreds of small kernels; at small batch the GPU would wait on the CPU
between them. Capturing the step once per padded batch size and replaying it costs one launch.
Inputs live in persistent buffers the graphs read; a step of n sequences copies its tensors into
the first n rows, fills the rest with harmless padding (slot -1 is skipped by write_kv, seq_len 0
attends to nothing) and replays the graph of the smallest captured size >= n. Block-table rows
and columns past a step's are left as they were: seq_lens bounds every read of them.

The buffers are sections of one device allocation (InputLayout), so a step built on the host in a
pinned copy of that layout (engine/decode_inputs.py) reaches the device in one copy: at batch 1 a
decode step's inputs took eight copies and a kernel before, each a few microseconds of a step that
is ~5 ms long.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

Outputs = torch.Tensor | tuple[torch.Tensor, ...]


def graph_batch_sizes(max_batch: int) -> list[int]:
    """1, 2, 4, 8, then every multiple of 8 up to max_batch (max_batch itself always included)."""
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    sizes = [s for s in (1, 2, 4) if s < max_batch] + list(range(8, max_batch + 1, 8))
    if not sizes or sizes[-1] != max_batch:
        sizes.append(max_batch)
    return sizes


def padded_batch_size(num_seqs: int, sizes: Sequence[int]) -> int | None:
    """The smallest captured size that holds num_seqs, or None (run eagerly) when none does."""
    index = bisect.bisect_left(sizes, num_seqs)
    return sizes[index] if index < len(sizes) else None


@dataclass(frozen=True, slots=True)
class GraphInput:
    """One input of the captured step: a tensor of [batch + extra_rows, *trailing_shape]."""

    name: str
    dtype: torch.dtype
    trailing_shape: tuple[int, ...] = ()
    pad: float = 0  # value of padded rows
    extra_rows: int = 0  # 1 for query_start_loc [B + 1]
    pad_with_row_index: bool = False  # padded rows hold their own row index (query_start_loc)


def decode_inputs(max_blocks_per_seq: int) -> tuple[GraphInput, ...]:
    """The inputs of a paged decode step, padded so that padded rows touch no live sequence. The
    block tables come last: a step's rows of them follow the other inputs in one copy (see
    StagedInputs)."""
    return (
        GraphInput("input_ids", torch.int64),
        GraphInput("positions", torch.int64),
        GraphInput("slot_mapping", torch.int64, pad=-1),
        GraphInput("seq_lens", torch.int32),
        GraphInput("query_start_loc", torch.int32, extra_rows=1, pad_with_row_index=True),
        GraphInput("block_tables", torch.int32, (max_blocks_per_seq,)),
    )


class InputLayout:
    """The inputs of a batch of up to `rows` sequences as sections of one byte buffer, in the
    order given, each 16-byte aligned."""

    def __init__(self, inputs: Sequence[GraphInput], rows: int) -> None:
        self.inputs = tuple(inputs)
        self.rows = rows
        self.offsets: dict[str, int] = {}
        end = 0
        for spec in self.inputs:
            self.offsets[spec.name] = end
            end += -(-self._section_bytes(spec) // 16) * 16
        self.nbytes = end

    def views(self, storage: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each input's [rows + extra_rows, *trailing_shape] view of storage (uint8, nbytes)."""
        views = {}
        for spec in self.inputs:
            offset = self.offsets[spec.name]
            section = storage[offset : offset + self._section_bytes(spec)].view(spec.dtype)
            views[spec.name] = section.view(self.rows + spec.extra_rows, *spec.trailing_shape)
        return views

    def _section_bytes(self, spec: GraphInput) -> int:
        numel = (self.rows + spec.extra_rows) * math.prod(spec.trailing_shape)
        return numel * spec.dtype.itemsize


@dataclass(frozen=True, slots=True)
class StagedInputs:
    """A step's inputs in pinned host memory laid out as the GraphRunner's buffers: rows
    [num_seqs, padded size) padded. The first `front_bytes` go to the device in one copy; `tail`,
    if any, is (the last input's name, its [num_seqs, width] rows) for a second copy into the
    buffer's first columns (block tables of several rows narrower than the buffer)."""

    storage: torch.Tensor
    num_seqs: int
    front_bytes: int
    tail: tuple[str, torch.Tensor] | None = None


class GraphRunner:
    """Replays forward(**inputs) from CUDA graphs. forward must only read its inputs and return
    tensors with the batch as first dimension (new ones, or views of a buffer it owns that every
    size shares); run() returns views of the graph's outputs, valid until the next run()."""

    def __init__(
        self,
        forward: Callable[..., Outputs],
        max_batch: int,
        inputs: Sequence[GraphInput],
        device: torch.device | str = "cuda",
        batch_sizes: Sequence[int] | None = None,
    ) -> None:
        self.forward = forward
        self.inputs = tuple(inputs)
        self.device = torch.device(device)
        self.batch_sizes = sorted(batch_sizes) if batch_sizes is not None else graph_batch_sizes(max_batch)
        largest = self.batch_sizes[-1]
        self.layout = InputLayout(self.inputs, largest)
        self._storage = torch.zeros(self.layout.nbytes, dtype=torch.uint8, device=self.device)
        self.buffers = self.layout.views(self._storage)
        self._row_index = torch.arange(largest + 1, device=self.device)
        for spec in self.inputs:
            self._pad_rows(spec, 0, largest)
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.outputs: dict[int, Outputs] = {}
        self.pool = None

    @torch.inference_mode()
    def capture(self, warmup_steps: int = 2) -> None:
        """Capture every size, largest first so the smaller graphs reuse its memory pool."""
        # One warm-up stream for every size: each stream gets its own cuBLAS workspace and its own
        # cache of freed blocks, which a stream per size would multiply.
        stream = torch.cuda.Stream(self.device)
        for size in reversed(self.batch_sizes):
            views = self._views(size)
            stream.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(stream):  # compile and autotune outside the capture
                for _ in range(warmup_steps):
                    self.forward(**views)
            torch.cuda.current_stream(self.device).wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self.pool):
                self.outputs[size] = self.forward(**views)
            self.pool = graph.pool()
            self.graphs[size] = graph
        torch.cuda.synchronize(self.device)

    def can_run(self, num_seqs: int) -> bool:
        return padded_batch_size(num_seqs, self.batch_sizes) is not None

    @torch.inference_mode()
    def run(self, **tensors: torch.Tensor) -> Outputs:
        """Copy the step's tensors (batch first) into the buffers, replay, and return the first
        num_seqs rows of the outputs."""
        num_seqs = tensors[self.inputs[0].name].shape[0] - self.inputs[0].extra_rows
        size = self._size(num_seqs)
        for spec in self.inputs:
            source = tensors[spec.name]
            target = self.buffers[spec.name]
            # Trailing dims may be narrower than the buffer (block tables of short sequences):
            # the columns past them are never read, since seq_lens bounds every read.
            target[tuple(slice(0, n) for n in source.shape)].copy_(source, non_blocking=True)
            self._pad_rows(spec, num_seqs, size)
        return self._replay(size, num_seqs)

    @torch.inference_mode()
    def run_staged(self, staged: StagedInputs) -> Outputs:
        """run() of inputs staged on the host in this runner's layout (padded there)."""
        size = self._size(staged.num_seqs)
        self.load(staged)
        return self._replay(size, staged.num_seqs)

    def load(self, staged: StagedInputs) -> None:
        """Copy a staged step into the buffers: one copy, or two with a tail."""
        front = staged.front_bytes
        self._storage[:front].copy_(staged.storage[:front], non_blocking=True)
        if staged.tail is not None:
            name, rows = staged.tail
            self.buffers[name][: rows.shape[0], : rows.shape[1]].copy_(rows, non_blocking=True)

    def _size(self, num_seqs: int) -> int:
        size = padded_batch_size(num_seqs, self.batch_sizes)
        if size is None:
            raise ValueError(f"batch of {num_seqs} exceeds the largest captured graph ({self.batch_sizes[-1]})")
        if size not in self.graphs:
            raise RuntimeError("capture() must run before run()")
        return size

    def _replay(self, size: int, num_seqs: int) -> Outputs:
        self.graphs[size].replay()
        outputs = self.outputs[size]
        if isinstance(outputs, torch.Tensor):
            return outputs[:num_seqs]
        return tuple(out[:num_seqs] for out in outputs)

    def _views(self, size: int) -> dict[str, torch.Tensor]:
        return {spec.name: self.buffers[spec.name][: size + spec.extra_rows] for spec in self.inputs}

    def _pad_rows(self, spec: GraphInput, num_seqs: int, size: int) -> None:
        first, end = num_seqs + spec.extra_rows, size + spec.extra_rows
        if first >= end:
            return
        rows = self.buffers[spec.name][first:end]
        if spec.pad_with_row_index:
            rows.copy_(self._row_index[first:end].view(-1, *([1] * len(spec.trailing_shape))))
        else:
            rows.fill_(spec.pad)
