from engine.config import EngineConfig
from engine.scheduler import Scheduler
from engine.sequence import Sequence
from engine.types import RequestStatus, SamplingParams
from tests.engine.fake_runner import FakeRunner, reference_output
from tests.engine.sched_helpers import finish_of, make_engine, run_batch, run_until_done, tokens_of

GREEDY = SamplingParams(max_tokens=8, temperature=0.0)


def params(**kw):
    return SamplingParams(**{"max_tokens": 8, "temperature": 0.0, **kw})


def test_chunked_prefill_respects_the_budget_and_decodes_go_first():
    engine = make_engine(max_num_batched_tokens=8, max_num_seqs=4)
    runner = engine.runner
    for rid in ("a", "b"):
        engine.add_request(rid, [1, 2, 3], params(max_tokens=30))
    first_outputs = engine.step()  # both prompts in one step
    engine.add_request("long", list(range(40)), params(max_tokens=2))
    first_step = len(runner.batches)
    outputs = run_until_done(engine)
    for out in reversed(first_outputs):
        outputs[out.request_id].insert(0, out)

    long_steps = [b for b in runner.batches[first_step:] if any(rid == "long" for rid, _, _ in b)]
    assert len(long_steps) >= 40 // 6  # the prompt was spread over several steps
    for batch in runner.batches:
        assert sum(n for _, _, n in batch) <= 8
    for batch in long_steps[:-2]:  # while "long" prefills, "a" and "b" still decode, first
        assert [(rid, n) for rid, _, n in batch[:2]] == [("a", 1), ("b", 1)]
        assert batch[2][0] == "long" and batch[2][2] == 6
    for rid in ("a", "b"):
        assert tokens_of(outputs[rid]) == reference_output([1, 2, 3], 30)
    assert tokens_of(outputs["long"]) == reference_output(list(range(40)), 2)


def test_priority_first_then_arrival_order():
    engine = make_engine(max_num_seqs=1)
    for rid, priority in [("late-low", 1), ("hi-1", 0), ("low", 1), ("hi-2", 0), ("urgent", -5)]:
        engine.add_request(rid, [5, 6, 7], params(max_tokens=2, priority=priority))
    run_until_done(engine)
    order = []
    for batch in engine.runner.batches:
        for rid, _, _ in batch:
            if rid not in order:
                order.append(rid)
    assert order == ["urgent", "hi-1", "hi-2", "late-low", "low"]


def test_running_requests_never_exceed_max_num_seqs():
    engine = make_engine(max_num_seqs=3)
    for i in range(7):
        engine.add_request(f"r{i}", [i + 1, 2, 3], params(max_tokens=5))
    peak = 0
    while engine.has_unfinished():
        engine.step()
        peak = max(peak, engine.stats().running)
    assert peak == 3
    assert all(len(batch) <= 3 for batch in engine.runner.batches)


def test_preemption_under_a_tiny_pool_keeps_every_output_identical():
    runner = FakeRunner(num_kv_blocks=14, block_size=4)  # 56 tokens for six requests of 30
    engine = make_engine(runner, max_num_batched_tokens=16)
    system = [7, 7, 7, 7, 8, 8, 8, 8]  # a shared prefix, so recomputes can hit the cache
    prompts = {f"r{i}": system + [i, i + 1] for i in range(6)}
    for rid, prompt in prompts.items():
        engine.add_request(rid, prompt, params(max_tokens=20))
    outputs = run_until_done(engine)

    stats = engine.stats()
    assert stats.preemptions > 0
    for rid, prompt in prompts.items():
        assert tokens_of(outputs[rid]) == reference_output(prompt, 20), rid
        assert finish_of(outputs[rid]) == "length"
    assert stats.kv_blocks_used == 0 and stats.running == stats.waiting == 0


def drive(scheduler: Scheduler, runner: FakeRunner, steps: int = 200) -> list[Sequence]:
    finished = []
    for _ in range(steps):
        batch = scheduler.schedule()
        if batch.chunks:
            finished += run_batch(scheduler, runner, batch)
        if not scheduler.has_unfinished():
            break
        finished += scheduler.take_failed()
    return finished


def test_a_prompt_larger_than_the_pool_fails_and_others_go_on():
    config = EngineConfig(model="fake-model", block_size=4)
    scheduler = Scheduler(config, num_blocks=3, max_model_len=1000)
    runner = FakeRunner(num_kv_blocks=3, block_size=4)
    huge = Sequence("huge", list(range(13)), params(max_tokens=1), arrival=0)
    small = Sequence("small", [1, 2], params(max_tokens=3), arrival=1)
    scheduler.add(huge)
    scheduler.add(small)
    done = drive(scheduler, runner)

    assert huge.status == RequestStatus.FINISHED_ERROR and "KV cache" in huge.error
    assert small.status == RequestStatus.FINISHED_LENGTH and small.num_output_tokens == 3
    assert {s.request_id for s in done} == {"huge", "small"}
    assert scheduler.kv.num_used_blocks == 0


def test_a_request_that_outgrows_the_pool_alone_fails_instead_of_spinning():
    config = EngineConfig(model="fake-model", block_size=4)
    scheduler = Scheduler(config, num_blocks=2, max_model_len=1000)
    seq = Sequence("grows", [1, 2, 3], params(max_tokens=50), arrival=0)
    scheduler.add(seq)
    drive(scheduler, FakeRunner(num_kv_blocks=2, block_size=4))
    assert seq.status == RequestStatus.FINISHED_ERROR
    assert seq.num_tokens == 9  # filled all 8 slots, sampled one more, then had nowhere to put it
    assert not scheduler.has_unfinished() and scheduler.kv.num_used_blocks == 0


def test_a_head_that_does_not_fit_is_not_overtaken():
    config = EngineConfig(model="fake-model", block_size=4)
    scheduler = Scheduler(config, num_blocks=4, max_model_len=1000)
    runner = FakeRunner(num_kv_blocks=4, block_size=4)
    running = Sequence("running", [1] * 8, params(max_tokens=4), arrival=0)
    scheduler.add(running)
    run_batch(scheduler, runner, scheduler.schedule())
    big = Sequence("big", [2] * 9, params(max_tokens=1), arrival=1)
    small = Sequence("small", [3], params(max_tokens=1), arrival=2)
    scheduler.add(big)
    scheduler.add(small)
    batch = scheduler.schedule()  # 3 blocks for "big" but only 1 free (running holds 3 once it decodes)
    assert [c.seq.request_id for c in batch.chunks] == ["running"]
    drive(scheduler, runner)
    assert big.status == small.status == RequestStatus.FINISHED_LENGTH


def test_stop_conditions():
    runner = FakeRunner(num_kv_blocks=200, eos_token_ids=(999,))
    engine = make_engine(runner, max_num_seqs=8)
    runner.forced = {"eos": [5, 999, 6], "ignored": [5, 999, 6], "stop-id": [5, 42, 6], "short": [5, 6, 7]}
    engine.add_request("eos", [1], params(max_tokens=3))
    engine.add_request("ignored", [1], params(max_tokens=3, ignore_eos=True))
    engine.add_request("stop-id", [1], params(max_tokens=3, stop_token_ids=(42,)))
    engine.add_request("short", [1], params(max_tokens=2))
    engine.add_request("context", list(range(500)), params(max_tokens=12))  # 512 = the model's limit
    outputs = run_until_done(engine)
    assert tokens_of(outputs["eos"]) == [5, 999] and finish_of(outputs["eos"]) == "stop"
    assert tokens_of(outputs["ignored"]) == [5, 999, 6] and finish_of(outputs["ignored"]) == "length"
    assert tokens_of(outputs["stop-id"]) == [5, 42] and finish_of(outputs["stop-id"]) == "stop"
    assert tokens_of(outputs["short"]) == [5, 6] and finish_of(outputs["short"]) == "length"
    assert len(tokens_of(outputs["context"])) == 12 and finish_of(outputs["context"]) == "length"


def test_max_model_len_stops_a_request_even_below_max_tokens():
    config = EngineConfig(model="fake-model", block_size=4)
    scheduler = Scheduler(config, num_blocks=16, max_model_len=10)
    seq = Sequence("s", [1, 2, 3, 4, 5, 6], params(max_tokens=100), arrival=0)
    scheduler.add(seq)
    drive(scheduler, FakeRunner(num_kv_blocks=16, block_size=4))
    assert seq.status == RequestStatus.FINISHED_LENGTH and seq.num_tokens == 10


def test_cached_tokens_are_those_of_the_first_admission_even_after_a_recompute():
    runner = FakeRunner(num_kv_blocks=8, block_size=4)  # 32 tokens: two requests of 24 cannot coexist
    engine = make_engine(runner, max_num_batched_tokens=16)
    engine.add_request("old", list(range(8)), params(max_tokens=16))
    engine.add_request("new", list(range(100, 108)), params(max_tokens=16))
    outputs = run_until_done(engine)
    assert engine.stats().preemptions > 0
    assert all(out.num_cached_tokens == 0 for rid in outputs for out in outputs[rid])
    assert engine.stats().prefix_cache_hits > 0  # the recompute did reuse its own blocks
    assert tokens_of(outputs["new"]) == reference_output(list(range(100, 108)), 16)


def test_single_token_chunks_come_first_even_for_a_new_admission():
    engine = make_engine(max_num_batched_tokens=64)
    engine.add_request("first", list(range(9)), params(max_tokens=1))
    run_until_done(engine)  # caches two blocks of 4
    engine.add_request("long", list(range(100, 130)), params(max_tokens=1))
    engine.add_request("hit", list(range(9)), params(max_tokens=1))  # 8 cached, one token to compute
    engine.step()
    assert [(rid, n) for rid, _, n in engine.runner.batches[-1]] == [("hit", 1), ("long", 30)]
