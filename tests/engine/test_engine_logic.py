import random

import pytest

from engine.errors import ContextLengthError, InvalidRequestError
from engine.interface import EngineProtocol
from engine.types import SamplingParams
from tests.engine.fake_runner import FakeRunner, reference_output
from tests.engine.sched_helpers import finish_of, make_engine, run_until_done, tokens_of


def params(**kw):
    return SamplingParams(**{"max_tokens": 4, "temperature": 0.0, **kw})


def test_engine_speaks_the_protocol():
    engine: EngineProtocol = make_engine()
    engine.add_request("r", [1, 2, 3], params())
    outputs = run_until_done(engine)
    assert tokens_of(outputs["r"]) == reference_output([1, 2, 3], 4)
    assert finish_of(outputs["r"]) == "length"
    assert all(out.num_prompt_tokens == 3 for out in outputs["r"])
    assert not engine.has_unfinished()


@pytest.mark.parametrize(
    ("prompt", "kwargs", "message"),
    [
        ([], {}, "at least one token"),
        ([1, 1000], {}, "outside the vocabulary"),
        ([1, -1], {}, "outside the vocabulary"),
        ([1, 2.0], {}, "outside the vocabulary"),
        ([1], {"max_tokens": 0}, "max_tokens"),
        ([1], {"temperature": -0.1}, "temperature"),
        ([1], {"temperature": float("nan")}, "temperature"),
        ([1], {"top_p": 0.0}, "top_p"),
        ([1], {"top_p": 1.5}, "top_p"),
        ([1], {"top_k": -2}, "top_k"),
        ([1], {"presence_penalty": 2.5}, "presence_penalty"),
        ([1], {"frequency_penalty": -3.0}, "frequency_penalty"),
        ([1], {"repetition_penalty": 0.0}, "repetition_penalty"),
        ([1], {"logprobs": 21}, "logprobs"),
        ([1], {"logprobs": -1}, "logprobs"),
        ([1], {"stop_token_ids": (5000,)}, "stop_token_ids"),
    ],
)
def test_bad_requests_are_refused_with_a_clear_message(prompt, kwargs, message):
    engine = make_engine()
    with pytest.raises(InvalidRequestError, match=message):
        engine.add_request("r", prompt, params(**kwargs))
    assert not engine.has_unfinished()


def test_good_edge_values_are_accepted():
    engine = make_engine()
    engine.add_request("r", [0, 999], params(top_p=1.0, top_k=-1, logprobs=20, presence_penalty=-2.0))
    assert engine.has_unfinished()


def test_context_length_is_checked_against_the_model_and_the_pool():
    engine = make_engine(FakeRunner(num_kv_blocks=200, max_model_len=512))
    engine.add_request("fits", list(range(500)), params(max_tokens=12))
    with pytest.raises(ContextLengthError, match="maximum context length is 512"):
        engine.add_request("long", list(range(500)), params(max_tokens=13))
    small_pool = make_engine(FakeRunner(num_kv_blocks=10, max_model_len=512))  # holds 40 tokens
    assert small_pool.stats().max_model_len == 40
    with pytest.raises(ContextLengthError):
        small_pool.add_request("r", list(range(30)), params(max_tokens=11))


def test_duplicate_live_ids_are_refused_but_finished_ids_may_return():
    engine = make_engine()
    engine.add_request("r", [1, 2], params())
    with pytest.raises(InvalidRequestError, match="already in use"):
        engine.add_request("r", [3], params())
    run_until_done(engine)
    engine.add_request("r", [3], params())
    assert engine.has_unfinished()


def test_abort_of_a_waiting_request_is_reported_once():
    engine = make_engine()
    engine.add_request("r", [1, 2, 3], params())
    engine.abort("r")
    engine.abort("r")  # already aborted: no-op
    engine.abort("never-seen")
    first, second = engine.step(), engine.step()
    assert [(o.request_id, o.finish_reason, o.new_token_ids) for o in first] == [("r", "abort", [])]
    assert second == [] and not engine.has_unfinished()
    assert engine.runner.batches == []


def test_abort_of_a_running_request_frees_its_blocks():
    engine = make_engine()
    engine.add_request("r", list(range(20)), params(max_tokens=50))
    engine.add_request("other", [1, 2], params(max_tokens=3))
    first = {out.request_id: out for out in engine.step()}
    assert engine.stats().kv_blocks_used > 0
    engine.abort("r")
    outputs = run_until_done(engine)
    assert finish_of(outputs["r"]) == "abort" and tokens_of(outputs["r"]) == []
    assert first["other"].new_token_ids + tokens_of(outputs["other"]) == reference_output([1, 2], 3)
    engine.abort("other")  # finished: no-op
    assert engine.step() == [] and engine.stats().kv_blocks_used == 0
    assert sorted(engine.runner.released) == ["other", "r"]


def test_a_failing_model_step_fails_its_batch_and_the_engine_goes_on():
    runner = FakeRunner()
    engine = make_engine(runner, max_num_seqs=2)
    for rid in ("a", "b", "c"):
        engine.add_request(rid, [1, 2, 3], params(max_tokens=3))
    runner.fail_if = lambda batch: any(c.seq.request_id == "b" for c in batch.chunks)
    outputs = engine.step()
    assert {(o.request_id, o.finish_reason) for o in outputs} == {("a", "error"), ("b", "error")}
    assert all("simulated device failure" in o.error for o in outputs)
    assert engine.stats().kv_blocks_used == 0

    runner.fail_if = None
    engine.add_request("d", [4, 5], params(max_tokens=2))
    later = run_until_done(engine)
    assert tokens_of(later["c"]) == reference_output([1, 2, 3], 3)
    assert tokens_of(later["d"]) == reference_output([4, 5], 2)
    assert set(runner.released) == {"a", "b", "c", "d"}


def test_a_runner_returning_the_wrong_number_of_tokens_fails_the_batch():
    runner = FakeRunner()
    engine = make_engine(runner)
    engine.add_request("r", [1, 2], params())
    runner.execute = lambda batch: []
    [out] = engine.step()
    assert out.finish_reason == "error" and "returned 0 tokens" in out.error


def test_no_block_leaks_after_a_thousand_short_requests_with_aborts():
    rng = random.Random(0)
    runner = FakeRunner(num_kv_blocks=48, block_size=4)
    engine = make_engine(runner, max_num_batched_tokens=64, max_num_seqs=16)
    system = [3] * 12
    live, added, finished = [], 0, set()
    while added < 1000 or engine.has_unfinished():
        for _ in range(rng.randint(0, 4)):
            if added < 1000:
                prompt = (system if rng.random() < 0.5 else []) + [rng.randrange(1000) for _ in range(rng.randint(1, 8))]
                engine.add_request(f"r{added}", prompt, params(max_tokens=rng.randint(1, 6)))
                live.append(f"r{added}")
                added += 1
        if live and rng.random() < 0.2:
            engine.abort(live.pop(rng.randrange(len(live))))
        for out in engine.step():
            if out.finish_reason is not None:
                assert out.request_id not in finished
                finished.add(out.request_id)
    stats = engine.stats()
    assert len(finished) == 1000
    assert stats.kv_blocks_used == 0 and stats.running == stats.waiting == 0
    kv = engine.scheduler.kv
    assert all(b.ref_count == 0 for b in kv.blocks) and kv.num_free_blocks == kv.num_blocks
    assert stats.prefix_cache_hits > 0


def test_a_shared_system_prompt_is_served_from_the_prefix_cache():
    engine = make_engine(FakeRunner(num_kv_blocks=400, block_size=16, max_model_len=2048), block_size=16)
    system = [(i * 37) % 1000 for i in range(300)]
    engine.add_request("first", system + [1, 2, 3], params())
    first = run_until_done(engine)["first"]
    engine.add_request("second", system + [4, 5], params())
    second = run_until_done(engine)["second"]

    assert first[0].num_cached_tokens == 0
    assert second[0].num_cached_tokens == 288  # 18 full blocks of the 300 shared tokens
    assert tokens_of(second) == reference_output(system + [4, 5], 4)
    stats = engine.stats()
    assert stats.prefix_cache_hits == 288 and stats.prefix_cache_queries == 303 + 302
    assert stats.prompt_tokens == 303 + (302 - 288)


def test_logprobs_come_with_their_tokens_only_when_asked_for():
    engine = make_engine()
    engine.add_request("with", [1, 2], params(logprobs=2))
    engine.add_request("without", [1, 2], params())
    outputs = run_until_done(engine)
    for out in outputs["with"]:
        assert [lp.token_id for lp in out.logprobs] == out.new_token_ids and len(out.logprobs[0].top) == 2
    assert all(out.logprobs is None for out in outputs["without"])


def test_stats_count_the_work():
    engine = make_engine()
    for i in range(3):
        engine.add_request(f"r{i}", [1, 2, 3, 4, 5], params(max_tokens=4))
    busy = engine.step()
    stats = engine.stats()
    assert len(busy) == 3 and stats.running == 3 and stats.waiting == 0 and stats.kv_blocks_used > 0
    run_until_done(engine)
    stats = engine.stats()
    assert stats.generated_tokens == 12 and stats.steps == 4
    assert stats.kv_blocks_total == 64 and stats.kv_block_size == 4
    assert stats.kv_cache_bytes == engine.runner.kv_cache_bytes and stats.max_model_len == 256
