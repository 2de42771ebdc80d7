"""Decode-step inputs from per-request block-table copies (engine/decode_inputs.py), staged on the
host in the graph runner's layout and loaded into its buffers as a replay would, equal the general
builder's, as sequences grow across block boundaries, get preempted and come back."""

import random

import pytest
import torch

from engine.attention_metadata import build_step_inputs, pending_input_id
from engine.cuda_graphs import GraphRunner, decode_inputs
from engine.decode_inputs import DecodeInputs
from engine.sequence import PENDING_TOKEN, ScheduledBatch, ScheduledChunk, Sequence
from engine.types import SamplingParams

BLOCK = 4


def _runner(max_seqs: int, max_blocks: int) -> GraphRunner:
    """The buffers a replay reads, on the CPU (nothing is captured: load() only)."""
    return GraphRunner(lambda **inputs: None, max_seqs, decode_inputs(max_blocks), device="cpu")


def _expected(batch, pending_rows):
    input_ids, meta = build_step_inputs(batch, BLOCK, torch.device("cpu"), pending_rows)
    return {
        "input_ids": input_ids, "positions": meta.positions, "slot_mapping": meta.slot_mapping,
        "block_tables": meta.block_tables, "seq_lens": meta.seq_lens, "query_start_loc": meta.query_start_loc,
    }


def _assert_loaded(runner, inputs, batch, pending_rows):
    """Stage, load, and compare the buffers' rows with the general builder's; padded rows too."""
    count = len(batch.chunks)
    staged = inputs.build(batch, pending_rows)
    assert staged.num_seqs == count
    for buffer in runner.buffers.values():  # poison: every row checked below must have been loaded
        buffer.fill_(-7)
    runner.load(staged)
    buffers = runner.buffers
    expected = _expected(batch, pending_rows)
    for name, want in expected.items():
        got = buffers[name][: want.shape[0]]
        if name == "block_tables":  # the general builder pads with zeros past each table
            for row, seq_len in enumerate(expected["seq_lens"].tolist()):
                used = -(-seq_len // BLOCK)
                assert got[row, :used].tolist() == want[row, :used].tolist()
        else:
            assert got.tolist() == want.tolist(), name
    size = next(s for s in runner.batch_sizes if s >= count)
    assert buffers["slot_mapping"][count:size].tolist() == [-1] * (size - count)  # padded rows write nothing
    assert buffers["seq_lens"][count:size].tolist() == [0] * (size - count)  # and read nothing
    assert buffers["query_start_loc"][: size + 1].tolist() == list(range(size + 1))
    return staged


def test_matches_the_general_builder_through_growth_and_preemption():
    rng = random.Random(0)
    runner = _runner(max_seqs=8, max_blocks=64)
    inputs = DecodeInputs(runner.layout, runner.batch_sizes, BLOCK, pin=False)
    free = list(range(200))
    rng.shuffle(free)
    seqs = [Sequence(f"r{i}", [rng.randrange(100) for _ in range(rng.randrange(1, 9))], SamplingParams(), i)
            for i in range(6)]
    for seq in seqs:
        seq.block_table = [free.pop() for _ in range(-(-seq.num_tokens // BLOCK))]
    tails = 0
    for step in range(40):
        live = [seq for seq in seqs if seq.block_table]
        batch = ScheduledBatch([ScheduledChunk(seq, seq.num_tokens - 1, 1) for seq in live])
        tails += _assert_loaded(runner, inputs, batch, {}).tail is not None
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
    assert tails  # several rows narrower than the buffer took the second copy


def test_one_row_is_one_copy_and_pending_tokens_name_their_row():
    runner = _runner(max_seqs=4, max_blocks=16)
    inputs = DecodeInputs(runner.layout, runner.batch_sizes, BLOCK, pin=False)
    seq = Sequence("a", [5, 6, 7, 8, 9, PENDING_TOKEN], SamplingParams(), 0, block_table=[3, 11])
    staged = _assert_loaded(runner, inputs, ScheduledBatch([ScheduledChunk(seq, 5, 1)]), {"a": 2})
    assert staged.tail is None
    assert runner.buffers["input_ids"][0].item() == pending_input_id(2) == -3
    # the front copy ends with the row's used block-table entries
    assert staged.front_bytes == runner.layout.offsets["block_tables"] + 2 * 4
    other = Sequence("b", [1, 2, 3], SamplingParams(), 1, block_table=[4])
    batch = ScheduledBatch([ScheduledChunk(seq, 5, 1), ScheduledChunk(other, 2, 1)])
    _assert_loaded(runner, inputs, batch, {"a": 0})
    assert runner.buffers["input_ids"][:2].tolist() == [-1, 3]


def test_a_pending_token_without_its_row_is_refused_by_both_builders():
    seq = Sequence("a", [5, PENDING_TOKEN], SamplingParams(), 0, block_table=[3])
    batch = ScheduledBatch([ScheduledChunk(seq, 1, 1)])
    with pytest.raises(RuntimeError, match="pending"):
        build_step_inputs(batch, BLOCK, torch.device("cpu"))
    runner = _runner(max_seqs=2, max_blocks=8)
    with pytest.raises(RuntimeError, match="pending"):
        DecodeInputs(runner.layout, runner.batch_sizes, BLOCK, pin=False).build(batch, {"other": 0})


def test_release_forgets_the_request():
    runner = _runner(max_seqs=2, max_blocks=8)
    inputs = DecodeInputs(runner.layout, runner.batch_sizes, BLOCK, pin=False)
    seq = Sequence("a", [1, 2, 3], SamplingParams(), 0, block_table=[5])
    inputs.build(ScheduledBatch([ScheduledChunk(seq, 2, 1)]), {})
    inputs.release("a")
    assert inputs._tables == {}
    inputs.release("never-seen")  # a no-op
