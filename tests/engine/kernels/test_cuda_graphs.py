"""CUDA-graph decode steps: the batch-size ladder (pure logic, everywhere) and replays (CUDA)."""

from __future__ import annotations

import pytest
import torch

from engine.cuda_graphs import GraphInput, GraphRunner, decode_inputs, graph_batch_sizes, padded_batch_size
from tests.engine.kernels.gpu import requires_cuda
from tests.engine.kernels.paged_inputs import make_paged_batch, reference_attention, relative_error


def test_ladder_is_powers_of_two_then_multiples_of_eight():
    assert graph_batch_sizes(256)[:6] == [1, 2, 4, 8, 16, 24]
    assert graph_batch_sizes(256)[-1] == 256
    assert all(b - a == 8 for a, b in zip(graph_batch_sizes(256)[3:], graph_batch_sizes(256)[4:]))


@pytest.mark.parametrize("max_batch", [1, 3, 8, 20, 100])
def test_ladder_ends_at_max_batch_and_is_increasing(max_batch):
    sizes = graph_batch_sizes(max_batch)
    assert sizes[-1] == max_batch
    assert sizes == sorted(set(sizes))


def test_padded_size_is_the_smallest_that_fits():
    sizes = graph_batch_sizes(40)
    assert [padded_batch_size(n, sizes) for n in (1, 2, 3, 5, 8, 9, 17, 33, 40)] == [1, 2, 4, 8, 8, 16, 24, 40, 40]
    assert padded_batch_size(41, sizes) is None


def test_ladder_rejects_an_empty_batch_bound():
    with pytest.raises(ValueError):
        graph_batch_sizes(0)


@pytest.mark.gpu
@requires_cuda
def test_replays_match_eager_for_every_batch_size():
    weight = torch.randn(16, 16, device="cuda")

    def forward(x, index):
        return (x @ weight) * index[:, None]  # [B, 16]

    runner = GraphRunner(
        forward, max_batch=12,
        inputs=[GraphInput("x", torch.float32, (16,)), GraphInput("index", torch.float32)],
    )
    runner.capture()
    assert sorted(runner.graphs) == [1, 2, 4, 8, 12]
    for num_seqs in (1, 3, 8, 11, 12, 2):
        x, index = torch.randn(num_seqs, 16, device="cuda"), torch.randn(num_seqs, device="cuda")
        out = runner.run(x=x, index=index)
        assert out.shape == (num_seqs, 16)
        torch.testing.assert_close(out, forward(x, index))
    with pytest.raises(ValueError):
        runner.run(x=torch.randn(13, 16, device="cuda"), index=torch.randn(13, device="cuda"))


@pytest.mark.gpu
@requires_cuda
def test_decode_attention_replays_with_padding_and_narrow_block_tables():
    from engine.kernels import triton_ops

    max_blocks = 64  # graph buffers are wider than any batch's block table
    batch = make_paged_batch([5, 300, 17], [1, 1, 1], 32, 8, 128)
    k_cache, v_cache = batch.k_cache, batch.v_cache

    def forward(input_ids, positions, slot_mapping, block_tables, seq_lens, query_start_loc):
        q = torch.nn.functional.embedding(input_ids, table)  # [B, Hq * D]
        return triton_ops.paged_attention(
            q.view(-1, 32, 128), k_cache, v_cache, block_tables, seq_lens, query_start_loc, batch.scale, 1
        )

    table = batch.q.reshape(3, -1)  # row i of the "embedding" is query i
    runner = GraphRunner(forward, max_batch=8, inputs=decode_inputs(max_blocks))
    runner.capture()
    out = runner.run(
        input_ids=torch.arange(3, device="cuda"),
        positions=batch.seq_lens.long() - 1,
        slot_mapping=torch.full((3,), -1, device="cuda"),
        block_tables=batch.block_tables,
        seq_lens=batch.seq_lens,
        query_start_loc=batch.query_start_loc,
    )
    assert relative_error(out, reference_attention(batch)) <= 1e-2
