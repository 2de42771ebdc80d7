"""Programmatic dependent launch (engine/kernels/pdl.py): the prefetch size rule everywhere; on a
Hopper card, a CUDA graph of early-launched kernels against the same kernels launched in turn."""

from __future__ import annotations

import pytest
import torch

from engine.kernels import pdl
from tests.engine.kernels.gpu import requires_cuda


def test_prefetch_is_off_without_pdl_and_bounded_by_the_row(monkeypatch):
    monkeypatch.setattr(pdl, "ENABLED", False)
    assert pdl.prefetch_bytes(8192, 8192) == 0
    monkeypatch.setattr(pdl, "ENABLED", True)
    monkeypatch.setattr(pdl, "PREFETCH_ROW_BYTES", 1024)
    assert pdl.prefetch_bytes(8192, 8192) == 1024
    assert pdl.prefetch_bytes(512, 8192) == 512  # never past the row
    assert pdl.prefetch_bytes(2200, 2200) == 0  # a row that is not 16-byte aligned: no bulk prefetch
    monkeypatch.setattr(pdl, "PREFETCH_ROW_BYTES", 1000)
    assert pdl.prefetch_bytes(8192, 8192) == 992  # rounded down to 16 bytes


def test_launch_options_follow_the_switch(monkeypatch):
    monkeypatch.setattr(pdl, "ENABLED", False)
    assert pdl.launch_options() == {"PDL": False, "launch_pdl": False}
    monkeypatch.setattr(pdl, "ENABLED", True)
    assert pdl.launch_options() == {"PDL": True, "launch_pdl": True}


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("rows", [1, 4])
def test_graph_of_early_launched_kernels_equals_them_launched_in_turn(rows, monkeypatch):
    # Every kernel reads what the one just ahead wrote. If a kernel read before the one ahead had
    # finished, a replay on fresh input would see the last replay's values: the outputs would differ.
    if not pdl.ENABLED:
        pytest.skip("needs a card with programmatic dependent launch (compute capability 9.0 or above)")
    from engine.kernels import triton_ops

    torch.manual_seed(0)
    hidden, inter = 1024, 2816

    def weights(*shape):
        return (torch.randn(*shape, device="cuda") * 0.03).bfloat16()

    layers = [(weights(hidden) + 1, weights(2 * inter, hidden), weights(hidden, inter)) for _ in range(4)]

    def chain(x):
        hidden_states, residual = x, torch.zeros_like(x)
        for norm, up, down in layers:
            hidden_states, residual = triton_ops.rms_norm(hidden_states, norm, 1e-5, residual)
            hidden_states = triton_ops.linear(triton_ops.silu_and_mul(triton_ops.linear(hidden_states, up)), down)
        return triton_ops.rms_norm(hidden_states, layers[0][0], 1e-5)

    static_x = torch.randn(rows, hidden, device="cuda").bfloat16()
    chain(static_x)  # autotunes and compiles outside the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = chain(static_x)
    for _ in range(5):
        x = torch.randn(rows, hidden, device="cuda").bfloat16()
        static_x.copy_(x)
        graph.replay()
        with monkeypatch.context() as patch:
            patch.setattr(pdl, "ENABLED", False)
            expected = chain(x)
        torch.cuda.synchronize()
        assert torch.equal(static_out, expected)
