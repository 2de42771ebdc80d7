"""How decode attention's splits are merged: the chunk a merging program loads, and the counters of
the fused merge. Pure logic on the CPU; the kernels are tested in test_triton_attention.py."""

from __future__ import annotations

import pytest
import torch

triton = pytest.importorskip("triton")

from engine.kernels import triton_split_merge  # noqa: E402
from engine.kernels.triton_split_merge import MERGE_CHUNK_ELEMENTS, merge_chunk, merge_counters  # noqa: E402


@pytest.mark.parametrize(
    "heads,num_splits,head_dim,chunk",
    [
        (4, 10, 128, 16),  # batch 1, Llama-3 8B: every split in one pass
        (4, 33, 128, 16),  # a long context: three passes
        (1, 64, 128, 64),  # the reduce kernel, one head: always one pass
        (8, 64, 128, 8),
        (3, 3, 64, 4),
        (64, 2, 256, 1),  # more than fits: one split a pass
    ],
)
def test_merge_chunk_is_every_split_unless_too_many(heads, num_splits, head_dim, chunk):
    assert merge_chunk(heads, num_splits, head_dim) == chunk


@pytest.mark.parametrize("heads", [1, 3, 4, 8, 16])
@pytest.mark.parametrize("num_splits", [2, 5, 16, 33, 64])
def test_merge_chunk_is_a_power_of_two_within_the_budget(heads, num_splits):
    chunk = merge_chunk(heads, num_splits, 128)
    assert chunk & (chunk - 1) == 0
    assert chunk == 1 or chunk * triton.next_power_of_2(heads) * 128 <= MERGE_CHUNK_ELEMENTS


def test_counters_are_zeroed_once_and_kept(monkeypatch):
    monkeypatch.setattr(triton_split_merge._MERGE_COUNTERS, "buffers", {})
    cpu = torch.device("cpu")
    first = merge_counters(cpu, 8)
    assert first.dtype == torch.int32 and first.numel() >= triton_split_merge.MIN_MERGE_COUNTERS
    assert not first.any()
    assert merge_counters(cpu, first.numel()) is first
    larger = merge_counters(cpu, first.numel() + 1)
    assert larger.numel() > first.numel() and not larger.any()
    # The smaller one stays alive: a graph captured with it still uses its address.
    assert triton_split_merge._MERGE_COUNTERS.buffers[cpu] == [first, larger]


def test_no_counters_are_allocated_during_a_capture(monkeypatch):
    monkeypatch.setattr(triton_split_merge._MERGE_COUNTERS, "buffers", {})
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: True)
    with pytest.raises(RuntimeError, match="before capturing"):
        merge_counters(torch.device("cuda", 0), 8)
