"""Triton paged attention (split-K decode, chunked prefill) against the torch reference, on CUDA."""

from __future__ import annotations

import pytest
import torch

from tests.engine.kernels.gpu import requires_cuda
from tests.engine.kernels.paged_inputs import make_paged_batch, reference_attention, relative_error

pytestmark = [pytest.mark.gpu, requires_cuda]

TOLERANCE = 1e-2  # bf16 inputs and outputs against a float32 reference

# (num_heads, num_kv_heads, head_dim): MHA, SmolLM2 (GQA 3), Llama-3 8B (GQA 4), GQA 8
HEAD_SHAPES = [(8, 8, 64), (9, 3, 64), (32, 8, 128), (32, 4, 128)]


def _poisoned(like: torch.Tensor) -> torch.Tensor:
    return torch.full_like(like, float("nan"))


@pytest.mark.parametrize("heads", HEAD_SHAPES)
@pytest.mark.parametrize("block_size", [16, 32])
def test_decode_matches_reference_on_ragged_lengths(heads, block_size):
    from engine.kernels.triton_decode_attention import decode_attention

    num_heads, num_kv_heads, head_dim = heads
    gen = torch.Generator().manual_seed(hash((heads, block_size)) % 2**31)
    # Block boundaries (bs-1, bs, bs+1), one token, split boundaries (128, 129) and long ragged ones.
    seq_lens = [1, block_size - 1, block_size, block_size + 1, 128, 129, 1000, 4097]
    batch = make_paged_batch(seq_lens, [1] * len(seq_lens), num_heads, num_kv_heads, head_dim, block_size, generator=gen)
    ref = reference_attention(batch)
    for num_splits in (None, 1, 3, 64):
        out = decode_attention(
            batch.q, batch.k_cache, batch.v_cache, batch.block_tables, batch.seq_lens, batch.scale,
            num_splits=num_splits, out=_poisoned(batch.q),
        )
        assert relative_error(out, ref) <= TOLERANCE, f"num_splits={num_splits}"


@pytest.mark.parametrize("head_major", [False, True])
@pytest.mark.parametrize("tile", [32, 64, 128])
def test_decode_launch_tilings_match_reference(head_major, tile):
    # Launch order and tile are free choices (engine.bench_gpu_attention sweeps them): any must be exact.
    from engine.kernels.triton_decode_attention import Tiling, decode_attention

    gen = torch.Generator().manual_seed(tile + head_major)
    batch = make_paged_batch([1, 17, 300, 2049], [1] * 4, 32, 8, 128, generator=gen)
    ref = reference_attention(batch)
    for num_splits in (1, 4):
        out = decode_attention(
            batch.q, batch.k_cache, batch.v_cache, batch.block_tables, batch.seq_lens, batch.scale,
            num_splits=num_splits, out=_poisoned(batch.q), tiling=Tiling(tile=tile, head_major=head_major),
        )
        assert relative_error(out, ref) <= TOLERANCE, f"num_splits={num_splits}"


@pytest.mark.parametrize("seq_len", [1024, 8192, 32768])
def test_decode_long_context_batch_one(seq_len):
    from engine.kernels.triton_decode_attention import decode_attention

    gen = torch.Generator().manual_seed(seq_len)
    batch = make_paged_batch([seq_len], [1], 32, 8, 128, generator=gen)
    ref = reference_attention(batch)
    for num_splits in (None, 1):
        out = decode_attention(
            batch.q, batch.k_cache, batch.v_cache, batch.block_tables, batch.seq_lens, batch.scale,
            num_splits=num_splits, out=_poisoned(batch.q),
        )
        assert relative_error(out, ref) <= TOLERANCE, f"num_splits={num_splits}"


def test_decode_empty_sequence_writes_zeros():
    # Padded rows of a CUDA-graph batch have seq_len 0: finite zeros, no NaN leaking anywhere.
    from engine.kernels.triton_decode_attention import decode_attention

    batch = make_paged_batch([300, 1], [1, 1], 32, 8, 128)
    batch.seq_lens[1] = 0
    for num_splits in (1, 8):
        out = decode_attention(
            batch.q, batch.k_cache, batch.v_cache, batch.block_tables, batch.seq_lens, batch.scale,
            num_splits=num_splits, out=_poisoned(batch.q),
        )
        assert torch.equal(out[1], torch.zeros_like(out[1]))
        assert torch.isfinite(out[0]).all()


# Padding rows (0), one token, block and tile boundaries, sequences too short for every split of the
# launch (the rest of their splits stay inactive), the current token in a split's first tile (520)
# or past it (577), long ones.
MERGE_SEQ_LENS = [0, 1, 15, 16, 17, 63, 64, 65, 127, 128, 129, 520, 577, 0, 1000, 4097]


def _counters_are_zero(device) -> bool:
    from engine.kernels.triton_split_merge import merge_counters

    return not merge_counters(device, 0).any()


@pytest.mark.parametrize("min_split", [64, 128])
@pytest.mark.parametrize("heads", HEAD_SHAPES)
@pytest.mark.parametrize("block_size", [16, 32])
def test_fused_merge_matches_reference_and_reduce_kernel(heads, block_size, min_split, monkeypatch):
    # The last split of a (sequence, KV head) merges the splits in the split kernel; the reduce kernel
    # is the other way. Fresh random inputs each round, so nothing left by one launch can pass for
    # the next one's result; every launch leaves the counters at zero.
    from engine.kernels import split_k, triton_decode_attention
    from engine.kernels.triton_decode_attention import decode_attention

    monkeypatch.setattr(split_k, "MIN_SPLIT_TOKENS", min_split)
    num_heads, num_kv_heads, head_dim = heads
    gen = torch.Generator().manual_seed(hash((heads, block_size, min_split)) % 2**31)
    for num_splits in (None, 2, 5, 64):
        batch = make_paged_batch(
            MERGE_SEQ_LENS, [1] * len(MERGE_SEQ_LENS), num_heads, num_kv_heads, head_dim, block_size, generator=gen,
        )
        live = batch.seq_lens > 0
        outs = {}
        for fused in (True, False):
            monkeypatch.setattr(triton_decode_attention, "FUSE_MERGE", fused)
            outs[fused] = decode_attention(
                batch.q, batch.k_cache, batch.v_cache, batch.block_tables, batch.seq_lens, batch.scale,
                num_splits=num_splits, out=_poisoned(batch.q),
            )
            assert _counters_are_zero(batch.q.device), f"fused={fused}, num_splits={num_splits}"
        ref = reference_attention(batch)
        assert relative_error(outs[True][live], ref[live]) <= TOLERANCE, f"num_splits={num_splits}"
        assert torch.equal(outs[True][~live], torch.zeros_like(outs[True][~live]))
        # The two merges differ only in the order of float32 sums.
        assert relative_error(outs[True], outs[False]) <= 1e-3, f"num_splits={num_splits}"


@pytest.mark.parametrize("min_split", [64, 128])
@pytest.mark.parametrize("tile", [32, 64, 128])
def test_fused_merge_with_splits_shorter_than_a_tile(tile, min_split, monkeypatch):
    # A tile longer than the split length leaves some active splits empty: their -inf log-sum-exp
    # weighs nothing in the merge, and they still count.
    from engine.kernels import split_k
    from engine.kernels.triton_decode_attention import Tiling, decode_attention

    monkeypatch.setattr(split_k, "MIN_SPLIT_TOKENS", min_split)
    gen = torch.Generator().manual_seed(tile)
    batch = make_paged_batch([256, 300, 65, 0, 2049], [1] * 5, 32, 8, 128, generator=gen)
    ref = reference_attention(batch)
    for num_splits in (4, 33):
        out = decode_attention(
            batch.q, batch.k_cache, batch.v_cache, batch.block_tables, batch.seq_lens, batch.scale,
            num_splits=num_splits, out=_poisoned(batch.q), tiling=Tiling(tile=tile),
        )
        assert _counters_are_zero(batch.q.device)
        assert relative_error(out[[0, 1, 2, 4]], ref[[0, 1, 2, 4]]) <= TOLERANCE, f"num_splits={num_splits}"
        assert torch.equal(out[3], torch.zeros_like(out[3]))


# (context already in the cache, new query tokens) per sequence: decodes, fresh prompts, chunks
# continuing a cached prefix, a chunk at the end of a 32k context.
MIXED_BATCHES = [
    [(0, 1), (0, 17), (5, 1), (100, 33), (1000, 300), (256, 64)],
    [(0, 512)],
    [(31744, 1024)],
    [(15, 1), (16, 16), (17, 47), (0, 129)],
]


@pytest.mark.parametrize("chunks", MIXED_BATCHES)
@pytest.mark.parametrize("heads", [(9, 3, 64), (32, 8, 128)])
def test_prefill_matches_reference_on_mixed_batches(chunks, heads):
    from engine.kernels.triton_prefill_attention import prefill_attention

    num_heads, num_kv_heads, head_dim = heads
    gen = torch.Generator().manual_seed(hash((tuple(chunks), heads)) % 2**31)
    seq_lens = [before + new for before, new in chunks]
    batch = make_paged_batch(seq_lens, [new for _, new in chunks], num_heads, num_kv_heads, head_dim, generator=gen)
    ref = reference_attention(batch)
    out = prefill_attention(
        batch.q, batch.k_cache, batch.v_cache, batch.block_tables, batch.seq_lens, batch.query_start_loc,
        batch.scale, batch.max_query_len, out=_poisoned(batch.q),
    )
    assert relative_error(out, ref) <= TOLERANCE


@pytest.mark.parametrize("heads_first", [False, True])
@pytest.mark.parametrize("block_m,block_n,num_warps", [(16, 64, 4), (64, 32, 4), (128, 32, 4), (128, 128, 8)])
def test_prefill_launch_tilings_match_reference(block_m, block_n, num_warps, heads_first):
    # Tiles and launch order are free choices (engine.bench_gpu_prefill_attention sweeps them): any
    # must be exact, with chunks that start and end off the tile and block boundaries.
    from engine.kernels.triton_prefill_attention import PrefillTiling, prefill_attention

    chunks = [(0, 300), (17, 129), (1000, 64), (5, 2)]
    gen = torch.Generator().manual_seed(block_m + block_n + heads_first)
    batch = make_paged_batch([b + n for b, n in chunks], [n for _, n in chunks], 32, 8, 128, generator=gen)
    tiling = PrefillTiling(block_m, block_n, num_warps, num_stages=2, heads_first=heads_first)
    out = prefill_attention(
        batch.q, batch.k_cache, batch.v_cache, batch.block_tables, batch.seq_lens, batch.query_start_loc,
        batch.scale, batch.max_query_len, out=_poisoned(batch.q), tiling=tiling,
    )
    assert relative_error(out, reference_attention(batch)) <= TOLERANCE


def test_prefill_from_a_first_sequence_leaves_the_rows_before_it():
    from engine.kernels.triton_prefill_attention import prefill_attention

    chunks = [(40, 1), (7, 1), (0, 100), (30, 20)]
    batch = make_paged_batch([b + n for b, n in chunks], [n for _, n in chunks], 32, 8, 128)
    out = prefill_attention(
        batch.q, batch.k_cache, batch.v_cache, batch.block_tables, batch.seq_lens, batch.query_start_loc,
        batch.scale, batch.max_query_len, out=_poisoned(batch.q), first_seq=2,
    )
    assert out[:2].isnan().all()
    assert relative_error(out[2:], reference_attention(batch)[2:]) <= TOLERANCE


def test_mixed_batch_decodes_go_to_the_decode_kernel():
    # A mixed step's leading decodes (num_decodes) are computed by the split-K decode kernel, bit for
    # bit what a decode-only step gives them; the chunks by the prefill kernel.
    from engine.kernels import triton_ops
    from engine.kernels.triton_decode_attention import decode_attention

    chunks = [(1000 + i, 1) for i in range(5)] + [(0, 200), (64, 33)]
    batch = make_paged_batch([b + n for b, n in chunks], [n for _, n in chunks], 32, 8, 128)
    out = _poisoned(batch.q)
    result = triton_ops.paged_attention(
        batch.q, batch.k_cache, batch.v_cache, batch.block_tables, batch.seq_lens, batch.query_start_loc,
        batch.scale, batch.max_query_len, num_decodes=5, out=out,
    )
    assert result.data_ptr() == out.data_ptr()
    assert relative_error(out, reference_attention(batch)) <= TOLERANCE
    alone = decode_attention(batch.q[:5], batch.k_cache, batch.v_cache, batch.block_tables[:5], batch.seq_lens[:5], batch.scale)
    assert torch.equal(out[:5], alone)


def test_entry_point_dispatches_decode_and_mixed_batches():
    from engine.kernels import triton_ops

    for chunks in ([(40, 1), (7, 1)], [(40, 1), (0, 20)]):
        seq_lens = [before + new for before, new in chunks]
        batch = make_paged_batch(seq_lens, [new for _, new in chunks], 32, 8, 128)
        out = triton_ops.paged_attention(
            batch.q, batch.k_cache, batch.v_cache, batch.block_tables, batch.seq_lens, batch.query_start_loc,
            batch.scale, batch.max_query_len,
        )
        assert relative_error(out, reference_attention(batch)) <= TOLERANCE
