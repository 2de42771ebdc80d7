"""Decode-step inputs from per-request block-table copies (engine/decode_inputs.py) equal the
general builder's, as sequences grow across block boundaries, get preempted and come back."""

import random

import torch

from engine.attention_metadata import build_step_inputs
from engine.decode_inputs import DecodeInputs
from engine.sequence import ScheduledBatch, ScheduledChunk, Sequence
from engine.types import SamplingParams

BLOCK = 4


def _expected(batch):
    input_ids, meta = build_step_inputs(batch, BLOCK, torch.device("cpu"))
    return {
        "input_ids": input_ids, "positions": meta.positions, "slot_mapping": meta.slot_mapping,
        "block_tables": meta.block_tables, "seq_lens": meta.seq_lens, "query_start_loc": meta.query_start_loc,
    }


def _assert_same(built, expected):
    # Contiguous host tensors: their copies to the GPU go straight from pinned memory.
    assert all(tensor.is_contiguous() for tensor in built.values())
    for name, want in expected.items():
        got = built[name]
        if name == "block_tables":  # the general builder pads with zeros past each table
            for row, seq_len in enumerate(expected["seq_lens"].tolist()):
                used = -(-seq_len // BLOCK)
                assert got[row, :used].tolist() == want[row, :used].tolist()
        else:
            assert got.tolist() == want.tolist(), name


def test_matches_the_general_builder_through_growth_and_preemption():
    rng = random.Random(0)
    inputs = DecodeInputs(max_seqs=8, max_blocks=64, block_size=BLOCK, pin=False)
    free = list(range(200))
    rng.shuffle(free)
    seqs = [Sequence(f"r{i}", [rng.randrange(100) for _ in range(rng.randrange(1, 9))], SamplingParams(), i)
            for i in range(6)]
    for seq in seqs:
        seq.block_table = [free.pop() for _ in range(-(-seq.num_tokens // BLOCK))]
    for step in range(40):
        live = [seq for seq in seqs if seq.block_table]
        batch = ScheduledBatch([ScheduledChunk(seq, seq.num_tokens - 1, 1) for seq in live])
        _assert_same(inputs.build(batch), _expected(batch))
        for seq in live:  # the step's token, and a new block when it starts one
            seq.token_ids.append(rng.randrange(100))
            if -(-seq.num_tokens // BLOCK) > len(seq.block_table):
                seq.block_table.append(free.pop())
        if step % 7 == 3:  # preempt one: its blocks are replaced by a new list, as the KV manager does
            victim = rng.choice(live)
            free.extend(victim.block_table)
            victim.block_table = []
        for seq in seqs:
            if not seq.block_table and rng.random() < 0.5:
                seq.block_table = [free.pop() for _ in range(-(-seq.num_tokens // BLOCK))]


def test_release_forgets_the_request():
    inputs = DecodeInputs(max_seqs=2, max_blocks=8, block_size=BLOCK, pin=False)
    seq = Sequence("a", [1, 2, 3], SamplingParams(), 0, block_table=[5])
    inputs.build(ScheduledBatch([ScheduledChunk(seq, 2, 1)]))
    inputs.release("a")
    assert inputs._tables == {}
    inputs.release("never-seen")  # a no-op
