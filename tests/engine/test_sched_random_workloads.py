"""Random workloads against the scheduler's invariants and the fake model's reference outputs."""

import random
from collections import Counter

import pytest

from engine.types import RequestStatus, SamplingParams
from tests.engine.fake_runner import FakeRunner, reference_output
from tests.engine.sched_helpers import finish_of, make_engine, tokens_of


def check_invariants(engine, batch_log, budget, max_num_seqs):
    scheduler, kv = engine.scheduler, engine.scheduler.kv
    if batch_log:
        chunks = batch_log[-1]
        assert sum(n for _, _, n in chunks) <= budget
        assert len({rid for rid, _, _ in chunks}) == len(chunks), "a request twice in one step"
        single = [n == 1 for _, _, n in chunks]
        assert single == sorted(single, reverse=True), "single-token chunks must come first"
    assert len(scheduler.running) <= max_num_seqs
    holders = Counter(b for seq in scheduler.running for b in seq.block_table)
    assert all(not seq.block_table for seq in scheduler.waiting)
    for block in kv.blocks:
        assert block.ref_count == holders[block.block_id], f"block {block.block_id} ref count drifted"
    assert kv.num_used_blocks == len(holders)
    for seq in scheduler.running:
        assert seq.status == RequestStatus.RUNNING
        assert len(seq.block_table) * kv.block_size >= seq.num_computed_tokens


@pytest.mark.parametrize("async_scheduling", ["off", "on"])
@pytest.mark.parametrize("seed", range(12))
def test_random_workload_keeps_invariants_and_outputs(seed, async_scheduling):
    rng = random.Random(seed)
    block_size = rng.choice([1, 2, 4, 8])
    runner = FakeRunner(num_kv_blocks=rng.randint(64, 160) // block_size, block_size=block_size)
    capacity = runner.num_kv_blocks * block_size
    budget, max_num_seqs = rng.randint(4, 48), rng.randint(1, 12)
    engine = make_engine(runner, block_size=block_size, max_num_batched_tokens=budget, max_num_seqs=max_num_seqs,
                         async_scheduling=async_scheduling)
    prefixes = [[rng.randrange(1000) for _ in range(rng.randint(1, 20))] for _ in range(3)]

    expected, aborted, outputs = {}, set(), {}
    for step in range(3000):
        if step < 60 and rng.random() < 0.5:
            rid = f"r{len(expected)}"
            prompt = rng.choice(prefixes + [[]]) + [rng.randrange(1000) for _ in range(rng.randint(1, 12))]
            max_tokens = rng.randint(1, min(24, capacity - len(prompt)))
            params = SamplingParams(max_tokens=max_tokens, temperature=0.0, priority=rng.choice([0, 0, 1]))
            engine.add_request(rid, prompt, params)
            expected[rid] = reference_output(prompt, max_tokens)
        if expected and rng.random() < 0.03:
            rid = rng.choice(sorted(expected))
            engine.abort(rid)
            aborted.add(rid)
        for out in engine.step():
            outputs.setdefault(out.request_id, []).append(out)
        check_invariants(engine, runner.batches, budget, engine.scheduler.max_num_seqs)
        if step >= 60 and not engine.has_unfinished():
            break
    assert not engine.has_unfinished()

    assert set(outputs) == set(expected)
    for rid, want in expected.items():
        reason = finish_of(outputs[rid])
        got = tokens_of(outputs[rid])
        if reason == "abort":
            assert rid in aborted and got == want[: len(got)]
        else:
            assert (reason, got) == ("length", want), rid
    assert engine.stats().kv_blocks_used == 0
