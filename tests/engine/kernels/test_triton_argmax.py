"""The Triton greedy argmax against torch.max(dim).indices (reference.argmax), on CUDA."""

from __future__ import annotations

import pytest
import torch

from engine.kernels import reference
from tests.engine.kernels.gpu import requires_cuda

pytestmark = [pytest.mark.gpu, requires_cuda]


def poisoned_out(rows: int, device="cuda") -> torch.Tensor:
    return torch.full((rows,), -7, dtype=torch.int64, device=device)


def assert_matches_reference(logits: torch.Tensor) -> None:
    from engine.kernels import triton_argmax

    out = poisoned_out(logits.shape[0], logits.device)
    assert triton_argmax.argmax(logits, out=out) is out
    assert out.tolist() == reference.argmax(logits.cpu()).tolist()
    assert_buffers_reset(logits.device)


def assert_buffers_reset(device) -> None:
    from engine.kernels import triton_argmax

    keys, counters = triton_argmax.row_buffers(0, device)
    assert not counters.any(), "a row's counter was left non-zero"
    assert keys.eq(triton_argmax._EMPTY_KEY).all(), "a row's key was left set"


@pytest.mark.parametrize("rows", [1, 3, 300])  # 300: more rows than the first buffers hold
@pytest.mark.parametrize("vocab", [1, 1025, 49152, 70001, 128256])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_random_rows_match_the_reference(rows, vocab, dtype):
    gen = torch.Generator(device="cuda").manual_seed(rows * 100003 + vocab)
    for _ in range(3):  # fresh rows each call: nothing of the last call may leak into this one
        assert_matches_reference((torch.randn(rows, vocab, device="cuda", generator=gen) * 4).to(dtype))


@pytest.mark.parametrize("vocab", [1000, 49152, 128256])
def test_ties_go_to_the_first_index_within_and_across_chunks(vocab):
    from engine.kernels.triton_argmax import chunk_size

    chunk = chunk_size(vocab)
    logits = torch.randn(6, vocab, device="cuda")
    logits[0, [vocab - 1, 3]] = 50.0  # first and last chunk
    logits[1, [chunk + 7, chunk + 2]] = 50.0  # one chunk
    logits[2, [vocab - 1, vocab // 2]] = 50.0  # a middle chunk and the partial last one
    logits[3] = 1.5  # every entry ties
    logits[4, [2 * chunk % vocab, chunk - 1, 0]] = 50.0  # three chunks, the first holds the winner
    logits[5, [vocab - 2, vocab - 1]] = 50.0  # both in the last chunk
    assert_matches_reference(logits)
    assert logits.max(dim=-1).indices.cpu()[:4].tolist() == [3, chunk + 2, vocab // 2, 0]


@pytest.mark.parametrize("vocab", [1000, 128256])
def test_masked_entries_and_nan(vocab):
    logits = torch.randn(7, vocab, device="cuda")
    logits[0, : vocab // 2] = float("-inf")  # half masked, the maximum in the other half
    logits[1] = float("-inf")  # all masked: index 0, as torch
    logits[2] = float("-inf")
    logits[2, vocab - 1] = -1e30  # one finite entry, in the last chunk
    logits[3, [vocab - 1, vocab // 3]] = float("nan")  # NaN wins: the first NaN, as torch.max(dim)
    logits[4, 0] = float("inf")
    logits[4, vocab - 1] = -float("nan")  # a NaN of either sign is above +inf
    logits[5] = -1.0
    logits[5, [vocab - 1, vocab // 2]] = torch.tensor([0.0, -0.0], device="cuda")  # -0.0 ties with 0.0
    logits[6] = -torch.rand(vocab, device="cuda") - 1  # every entry negative
    logits[6, [vocab - 1, vocab // 4]] = -0.5
    assert_matches_reference(logits)


def test_strided_rows():
    logits = torch.randn(5, 3000, device="cuda")
    assert_matches_reference(logits[:, :2000])  # rows further apart than their length
    assert_matches_reference(logits[::2])


def test_an_empty_batch_launches_nothing():
    from engine.kernels.triton_argmax import argmax

    assert argmax(torch.empty(0, 100, device="cuda")).shape == (0,)


@pytest.mark.parametrize("rows", [1, 4])
def test_replays_of_a_captured_graph_on_fresh_logits(rows):
    from engine.kernels.triton_argmax import argmax

    static_logits = torch.randn(rows, 128256, device="cuda")
    static_out = poisoned_out(rows)
    argmax(static_logits, out=static_out)  # compiles and sizes the buffers outside the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        argmax(static_logits, out=static_out)
    for step in range(5):
        logits = torch.randn(rows, 128256, device="cuda")
        logits[0, [5000 + step, 100000]] = 20.0  # a tie across chunks, the winner moving each step
        static_logits.copy_(logits)
        static_out.fill_(-7)
        graph.replay()
        torch.cuda.synchronize()
        assert static_out.tolist() == reference.argmax(logits.cpu()).tolist()
        assert static_out[0].item() == 5000 + step
        assert_buffers_reset(static_logits.device)


@pytest.mark.parametrize("rows", [1, 3])
def test_lm_head_then_argmax_in_a_graph_sees_this_replays_logits(rows):
    # The decode step's tail: the GEMV writes float32 logits, the argmax reads them (early-launched
    # under programmatic dependent launch on Hopper: it must wait for the GEMV's last store).
    from engine.kernels import triton_ops

    hidden, vocab = 1024, 49152
    weight = (torch.randn(vocab, hidden, device="cuda") * 0.05).bfloat16()
    static_x = torch.randn(rows, hidden, device="cuda").bfloat16()
    logits = torch.empty(rows, vocab, device="cuda")
    ids = poisoned_out(rows)

    def tail():
        triton_ops.argmax(triton_ops.linear(static_x, weight, None, out=logits), out=ids)

    tail()  # autotunes and compiles outside the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        tail()
    for _ in range(5):
        static_x.copy_(torch.randn(rows, hidden, device="cuda").bfloat16())
        graph.replay()
        torch.cuda.synchronize()
        assert ids.tolist() == reference.argmax(logits.cpu()).tolist()
        expected = torch.nn.functional.linear(static_x.float(), weight.float())
        assert ((logits - expected).norm() / expected.norm()).item() <= 1e-2


def test_growing_the_buffers_inside_a_capture_is_refused(monkeypatch):
    from engine.kernels import triton_argmax

    monkeypatch.setattr(triton_argmax._KEYS, "buffers", {})
    monkeypatch.setattr(triton_argmax._COUNTERS, "buffers", {})
    logits = torch.randn(2, 1000, device="cuda")
    graph = torch.cuda.CUDAGraph()
    with pytest.raises(RuntimeError, match="before capturing"):
        with torch.cuda.graph(graph):
            triton_argmax.argmax(logits)

