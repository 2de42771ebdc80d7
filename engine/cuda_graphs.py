"""Decode steps replayed from CUDA graphs captured for a ladder of padded batch sizes.

A decode step launches hundreds of small kernels; at small batch the GPU would wait on the CPU
between them. Capturing the step once per padded batch size and replaying it costs one launch.
Inputs live in persistent buffers the graphs read; a step of n sequences copies its tensors into
the first n rows, fills the rest with harmless padding (slot -1 is skipped by write_kv, seq_len 0
attends to nothing) and replays the graph of the smallest captured size >= n.
"""

from __future__ import annotations

import bisect
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
    """The inputs of a paged decode step, padded so that padded rows touch no live sequence."""
    return (
        GraphInput("input_ids", torch.int64),
        GraphInput("positions", torch.int64),
        GraphInput("slot_mapping", torch.int64, pad=-1),
        GraphInput("block_tables", torch.int32, (max_blocks_per_seq,)),
        GraphInput("seq_lens", torch.int32),
        GraphInput("query_start_loc", torch.int32, extra_rows=1, pad_with_row_index=True),
    )


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
        self.buffers = {
            spec.name: torch.zeros((largest + spec.extra_rows, *spec.trailing_shape), dtype=spec.dtype, device=self.device)
            for spec in self.inputs
        }
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
        size = padded_batch_size(num_seqs, self.batch_sizes)
        if size is None:
            raise ValueError(f"batch of {num_seqs} exceeds the largest captured graph ({self.batch_sizes[-1]})")
        if size not in self.graphs:
            raise RuntimeError("capture() must run before run()")
        for spec in self.inputs:
            source = tensors[spec.name]
            target = self.buffers[spec.name]
            # Trailing dims may be narrower than the buffer (block tables of short sequences):
            # the columns past them are never read, since seq_lens bounds every read.
            target[tuple(slice(0, n) for n in source.shape)].copy_(source, non_blocking=True)
            self._pad_rows(spec, num_seqs, size)
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
