"""The split-K choice of decode attention: pure logic, runs everywhere."""

from __future__ import annotations

import pytest

from engine.kernels import split_k
from engine.kernels.split_k import MAX_SPLITS, active_splits, choose_num_splits, split_length

H100_SMS = 132


@pytest.fixture(params=[64, 128], ids=lambda tokens: f"min_split={tokens}")
def min_split(request, monkeypatch):
    # The split length is a knob read at each call (and each kernel launch); both values must hold.
    monkeypatch.setattr(split_k, "MIN_SPLIT_TOKENS", request.param)
    return request.param


def test_batch_one_long_context_fills_the_sms(min_split):
    splits = choose_num_splits(num_seqs=1, num_kv_heads=8, max_context=32768, num_sms=H100_SMS)
    assert 8 * splits >= H100_SMS
    assert splits <= MAX_SPLITS


def test_big_batches_and_short_contexts_use_one_split(min_split):
    assert choose_num_splits(num_seqs=256, num_kv_heads=8, max_context=32768, num_sms=H100_SMS) == 1
    assert choose_num_splits(num_seqs=1, num_kv_heads=8, max_context=min_split, num_sms=H100_SMS) == 1


def test_splits_never_outnumber_useful_chunks_of_the_context(min_split):
    splits = choose_num_splits(num_seqs=1, num_kv_heads=1, max_context=3 * min_split, num_sms=H100_SMS)
    assert splits == 3


def test_the_split_length_is_read_at_each_call(monkeypatch):
    # Batch 1, 640 tokens: five splits of two 64-token tiles, or ten of one.
    monkeypatch.setattr(split_k, "MIN_SPLIT_TOKENS", 128)
    assert active_splits(640, 33) == 5 and split_length(640, 33, 64) == 128
    monkeypatch.setattr(split_k, "MIN_SPLIT_TOKENS", 64)
    assert active_splits(640, 33) == 10 and split_length(640, 33, 64) == 64


def test_more_sequences_means_no_more_splits(min_split):
    counts = [choose_num_splits(b, 8, 8192, H100_SMS) for b in (1, 2, 4, 8, 16, 32, 64)]
    assert counts == sorted(counts, reverse=True)


@pytest.mark.parametrize("seq_len", [0, 1, 63, 64, 65, 127, 128, 129, 1000, 4097, 32768])
@pytest.mark.parametrize("num_splits", [1, 2, 7, 33, 64])
@pytest.mark.parametrize("tile", [32, 64, 128])
def test_active_splits_cut_the_sequence_into_whole_tiles(seq_len, num_splits, tile, min_split):
    # The kernel's programs: split s reads [s * length, min((s + 1) * length, seq_len)); the active
    # ones cover the sequence once, the others start at or past its end and read nothing.
    active = active_splits(seq_len, num_splits)
    length = split_length(seq_len, num_splits, tile)
    assert 1 <= active <= num_splits
    assert length % tile == 0
    covered = [p for s in range(active) for p in range(s * length, min((s + 1) * length, seq_len))]
    assert covered == list(range(seq_len))
    assert all(s * length >= seq_len for s in range(active, num_splits))
