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
    monkeypatch.setattr(pdl, "PREFETCH_AFTER_SHORT_KERNEL", 16 << 20)
    assert pdl.prefetch_bytes(8192, 8192, 4096, after_short_kernel=True) == 4096  # 16 MB over 4096 rows
    assert pdl.prefetch_bytes(8192, 8192, 4096) == 992  # not behind a short kernel
    assert pdl.prefetch_bytes(8192, 8192, 128256, after_short_kernel=True) == 992  # a share below a row's default
    assert pdl.prefetch_bytes(8192, 8192, 1024, after_short_kernel=True) == 8192  # never past the row


def test_launch_options_follow_the_switch(monkeypatch):
    monkeypatch.setattr(pdl, "ENABLED", False)
    assert pdl.launch_options() == {"PDL": False, "launch_pdl": False}
    monkeypatch.setattr(pdl, "ENABLED", True)
    assert pdl.launch_options() == {"PDL": True, "launch_pdl": True}


needs_pdl = pytest.mark.skipif(
    not pdl.ENABLED, reason="needs a card with programmatic dependent launch (compute capability 9.0 or above)"
)


def _weights(*shape):
    return (torch.randn(*shape, device="cuda") * 0.03).bfloat16()


def _current_token_operands(batch, head_dim: int):
    """(positions [B], cache slots [B], cos_sin [P, D]) of each sequence's current token, the last of
    its seq_len, with random rotary angles."""
    block_size = batch.k_cache.shape[1]
    device = batch.seq_lens.device
    positions = batch.seq_lens.long() - 1
    rows = torch.arange(positions.shape[0], device=device)
    slots = batch.block_tables[rows, positions // block_size].long() * block_size + positions % block_size
    angles = torch.rand(int(batch.seq_lens.max()), head_dim // 2, device=device) * 6.3
    return positions, slots, torch.cat([angles.cos(), angles.sin()], dim=-1)


def _assert_replays_equal_in_turn(step, fresh, monkeypatch, replays: int = 5) -> None:
    """Capture step(*fresh()) in a CUDA graph of early-launched kernels, replay it on fresh inputs
    and compare each output with step launched in turn (early launch off), bit for bit."""
    static = fresh()
    step(*static)  # autotunes, compiles and allocates outside the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = step(*static)
    for _ in range(replays):
        inputs = fresh()
        for buffer, value in zip(static, inputs):
            buffer.copy_(value)
        graph.replay()
        with monkeypatch.context() as patch:
            patch.setattr(pdl, "ENABLED", False)
            expected = step(*inputs)
        torch.cuda.synchronize()
        assert torch.equal(static_out, expected)


@pytest.mark.gpu
@requires_cuda
@needs_pdl
@pytest.mark.parametrize("rows", [1, 4])
def test_graph_of_early_launched_kernels_equals_them_launched_in_turn(rows, monkeypatch):
    # Every kernel reads what the one just ahead wrote. If a kernel read before the one ahead had
    # finished, a replay on fresh input would see the last replay's values: the outputs would differ.
    from engine.kernels import triton_ops

    torch.manual_seed(0)
    hidden, inter = 1024, 2816

    layers = [(_weights(hidden) + 1, _weights(2 * inter, hidden), _weights(hidden, inter)) for _ in range(4)]

    def chain(x):
        hidden_states, residual = x, torch.zeros_like(x)
        for norm, up, down in layers:
            hidden_states, residual = triton_ops.rms_norm(hidden_states, norm, 1e-5, residual)
            hidden_states = triton_ops.linear(triton_ops.silu_and_mul(triton_ops.linear(hidden_states, up)), down)
        return triton_ops.rms_norm(hidden_states, layers[0][0], 1e-5)

    _assert_replays_equal_in_turn(chain, lambda: (torch.randn(rows, hidden, device="cuda").bfloat16(),), monkeypatch)


@pytest.mark.gpu
@requires_cuda
@needs_pdl
@pytest.mark.parametrize("fused_merge", [True, False])
@pytest.mark.parametrize("min_split", [64, 128])
def test_graph_of_cache_writes_and_attention_equals_them_launched_in_turn(min_split, fused_merge, monkeypatch):
    # Decode attention reads its first tile of K/V before its wait, all but the current token's row,
    # which the cache write just ahead writes in the same step. Had it read that row before the wait
    # too, a replay on fresh k and v would attend to the last replay's row: the outputs would differ.
    from engine.kernels import split_k, triton_decode_attention
    from engine.kernels.triton_decode_attention import decode_attention
    from engine.kernels.triton_rotary_cache import rotary_write_kv
    from tests.engine.kernels.paged_inputs import make_paged_batch

    monkeypatch.setattr(split_k, "MIN_SPLIT_TOKENS", min_split)
    monkeypatch.setattr(triton_decode_attention, "FUSE_MERGE", fused_merge)
    torch.manual_seed(0)
    num_heads, num_kv_heads, head_dim, num_layers = 32, 8, 128, 4
    # The current token first, last and inside a split's first tile, past it (577 at 128), alone (1).
    seq_lens = [640, 520, 1, 129, 577, 70, 64]
    batch = make_paged_batch(seq_lens, [1] * len(seq_lens), num_heads, num_kv_heads, head_dim)
    positions, slots, cos_sin = _current_token_operands(batch, head_dim)
    caches = [(batch.k_cache.clone(), batch.v_cache.clone()) for _ in range(num_layers)]

    def step(q, kv):  # q [B, Hq, D]; kv [layers, 2, B, Hkv, D], this step's keys and values
        hidden = q
        for (k_cache, v_cache), (k, v) in zip(caches, kv):
            q_rot = rotary_write_kv(hidden, k, v, positions, cos_sin, k_cache, v_cache, slots)
            hidden = decode_attention(q_rot, k_cache, v_cache, batch.block_tables, batch.seq_lens, batch.scale)
        return hidden

    def fresh():
        q = torch.randn_like(batch.q)
        return q, torch.randn(num_layers, 2, len(seq_lens), num_kv_heads, head_dim, device="cuda").bfloat16()

    _assert_replays_equal_in_turn(step, fresh, monkeypatch)


@pytest.mark.gpu
@requires_cuda
@needs_pdl
@pytest.mark.parametrize("seq_len", [300, 64])
def test_graph_of_batch1_layers_equals_them_launched_in_turn(seq_len, monkeypatch):
    # The batch-1 decode path: the qkv GEMV writes this step's K/V from its epilogue, then decode
    # attention reads the earlier rows before its wait and the current one after, then the o GEMV.
    # A replay on fresh hidden states must match the same kernels launched in turn, bit for bit.
    from engine.kernels.triton_decode_attention import decode_attention
    from engine.kernels.triton_linear import linear, rms_norm_qkv_rotary
    from tests.engine.kernels.paged_inputs import make_paged_batch

    torch.manual_seed(0)
    hidden, num_heads, num_kv_heads, head_dim, num_layers = 1024, 8, 2, 128, 3
    batch = make_paged_batch([seq_len], [1], num_heads, num_kv_heads, head_dim)
    positions, slots, cos_sin = _current_token_operands(batch, head_dim)

    qkv_rows = (num_heads + 2 * num_kv_heads) * head_dim
    layers = [(_weights(hidden) + 1, _weights(qkv_rows, hidden), _weights(hidden, num_heads * head_dim),
               batch.k_cache.clone(), batch.v_cache.clone()) for _ in range(num_layers)]

    def step(x):
        states, residual = x, None
        for norm, qkv, o, k_cache, v_cache in layers:
            q, residual = rms_norm_qkv_rotary(states, residual, norm, 1e-5, qkv, None, num_heads, num_kv_heads,
                                              positions, cos_sin, k_cache, v_cache, slots)
            attended = decode_attention(q, k_cache, v_cache, batch.block_tables, batch.seq_lens, batch.scale)
            states = linear(attended.view(1, -1), o)
        return states

    _assert_replays_equal_in_turn(step, lambda: (torch.randn(1, hidden, device="cuda").bfloat16(),), monkeypatch)
