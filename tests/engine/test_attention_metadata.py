"""What the per-step attention metadata tells the kernels (pure logic, no model)."""

import torch

from engine.attention_metadata import build_step_inputs
from engine.sequence import ScheduledBatch, ScheduledChunk, Sequence
from engine.types import SamplingParams

CPU = torch.device("cpu")


def sequence(request_id, num_tokens, block_table):
    return Sequence(request_id, list(range(1, num_tokens + 1)), SamplingParams(), 0, block_table=block_table)


def test_a_lone_decode_over_consecutive_blocks_reads_a_slot_range():
    seq = sequence("a", 20, [3, 4])
    _, meta = build_step_inputs(ScheduledBatch([ScheduledChunk(seq, 19, 1)]), 16, CPU)
    assert meta.lone_kv_slots == range(48, 68)
    assert meta.slot_mapping.tolist() == [67]


def test_a_lone_decode_over_scattered_blocks_lists_every_slot():
    seq = sequence("a", 20, [4, 1])
    _, meta = build_step_inputs(ScheduledBatch([ScheduledChunk(seq, 19, 1)]), 16, CPU)
    assert meta.lone_kv_slots.tolist() == list(range(64, 80)) + list(range(16, 20))


def test_prefills_and_batches_keep_the_block_tables():
    scattered = sequence("a", 20, [4, 3])
    consecutive = sequence("b", 20, [0, 1])
    batches = [
        [ScheduledChunk(consecutive, 0, 20)],
        [ScheduledChunk(consecutive, 19, 1), ScheduledChunk(scattered, 19, 1)],
    ]
    for chunks in batches:
        _, meta = build_step_inputs(ScheduledBatch(chunks), 16, CPU)
        assert meta.lone_kv_slots is None


def test_a_mixed_step_counts_its_leading_decodes():
    # Decodes come first (the batch contract); the count sends them to the decode kernel.
    decoding = [sequence(name, 20, [2 * i, 2 * i + 1]) for i, name in enumerate("abc")]
    prompt = sequence("p", 40, [6, 7, 8])
    one_token_prompt = sequence("q", 1, [9])
    cases = [
        ([ScheduledChunk(seq, 19, 1) for seq in decoding] + [ScheduledChunk(prompt, 0, 40)], 3),
        ([ScheduledChunk(prompt, 0, 40)], 0),
        ([ScheduledChunk(decoding[0], 19, 1), ScheduledChunk(prompt, 0, 40), ScheduledChunk(one_token_prompt, 0, 1)], 1),
    ]
    for chunks, expected in cases:
        _, meta = build_step_inputs(ScheduledBatch(chunks), 16, CPU)
        assert meta.num_decodes == expected
