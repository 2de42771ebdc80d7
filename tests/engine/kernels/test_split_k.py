"""The split-K choice of decode attention: pure logic, runs everywhere."""

from __future__ import annotations

import pytest

from engine.kernels.split_k import MAX_SPLITS, MIN_SPLIT_TOKENS, active_splits, choose_num_splits, split_length

H100_SMS = 132


def test_batch_one_long_context_fills_the_sms():
    splits = choose_num_splits(num_seqs=1, num_kv_heads=8, max_context=32768, num_sms=H100_SMS)
    assert 8 * splits >= H100_SMS
    assert splits <= MAX_SPLITS


def test_big_batches_and_short_contexts_use_one_split():
    assert choose_num_splits(num_seqs=256, num_kv_heads=8, max_context=32768, num_sms=H100_SMS) == 1
    assert choose_num_splits(num_seqs=1, num_kv_heads=8, max_context=MIN_SPLIT_TOKENS, num_sms=H100_SMS) == 1


def test_splits_never_outnumber_useful_chunks_of_the_context():
    splits = choose_num_splits(num_seqs=1, num_kv_heads=1, max_context=3 * MIN_SPLIT_TOKENS, num_sms=H100_SMS)
    assert splits == 3


def test_more_sequences_means_no_more_splits():
    counts = [choose_num_splits(b, 8, 8192, H100_SMS) for b in (1, 2, 4, 8, 16, 32, 64)]
    assert counts == sorted(counts, reverse=True)


@pytest.mark.parametrize("seq_len", [0, 1, 63, 64, 127, 128, 129, 1000, 4097, 32768])
@pytest.mark.parametrize("num_splits", [1, 2, 7, 33, 64])
def test_active_splits_cover_the_sequence(seq_len, num_splits):
    tile = 64
    active = active_splits(seq_len, num_splits)
    length = split_length(seq_len, num_splits, tile)
    assert 1 <= active <= num_splits
    assert length % tile == 0
    assert active * length >= seq_len
