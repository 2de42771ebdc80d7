"""The engine running ahead (async_scheduling): step N+1 is planned and launched before step N's
ids are read, fed the ids N sampled through PENDING_TOKEN positions. Against the fake runner,
whose next token is a hash of the context read back through the block table, so a pending id fed
wrong or kept too long changes the outputs."""

from engine.sequence import PENDING_TOKEN
from engine.types import SamplingParams
from tests.engine.fake_runner import FakeRunner, reference_output
from tests.engine.sched_helpers import finish_of, make_engine, run_until_done, tokens_of


def params(**kw):
    return SamplingParams(**{"max_tokens": 4, "temperature": 0.0, **kw})


class CountingRunner(FakeRunner):
    """Records, per step, the requests whose last fed token was still pending on the host."""

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.fed_pending: list[list[str]] = []

    def execute(self, batch):
        self.fed_pending.append([
            c.seq.request_id for c in batch.chunks if c.seq.token_ids[c.start + c.num_tokens - 1] == PENDING_TOKEN
        ])
        return super().execute(batch)


def test_a_step_returns_the_tokens_of_the_step_before_it():
    runner = CountingRunner()
    engine = make_engine(runner, async_scheduling="on")
    engine.add_request("r", [1, 2, 3], params(max_tokens=3))
    assert engine.step() == []  # the prefill is launched, its token not read yet
    second = engine.step()  # launches the first decode, fed the pending id; reads the prefill's
    assert [o.new_token_ids for o in second] == [reference_output([1, 2, 3], 1)]
    assert runner.fed_pending == [[], ["r"]]
    outputs = run_until_done(engine)
    assert tokens_of(second + outputs["r"]) == reference_output([1, 2, 3], 3)
    assert finish_of(outputs["r"]) == "length"


def test_the_last_token_by_length_is_never_run_ahead():
    runner = CountingRunner()
    engine = make_engine(runner, async_scheduling="on")
    engine.add_request("r", [1, 2, 3], params(max_tokens=3))
    run_until_done(engine)
    assert len(runner.batches) == 3  # the prefill and two decodes: no step after the third token


def test_a_stop_token_ends_the_request_and_the_step_run_past_it_is_dropped():
    runner = CountingRunner()
    engine = make_engine(runner, async_scheduling="on")
    runner.forced["r"] = [5, 999, 7, 8, 9]  # 999 is the eos
    engine.add_request("r", [1, 2], params(max_tokens=5))
    outputs = run_until_done(engine)["r"]
    assert tokens_of(outputs) == [5, 999] and finish_of(outputs) == "stop"
    assert len(runner.batches) == 3  # one step past the eos ran before the eos was read
    stats = engine.stats()
    assert stats.generated_tokens == 2 and stats.kv_blocks_used == 0
    assert runner.released == ["r"]


def test_an_abort_while_a_step_is_in_flight_drops_its_token():
    engine = make_engine(async_scheduling="on")
    engine.add_request("r", [1, 2, 3], params(max_tokens=10))
    engine.add_request("other", [4, 5], params(max_tokens=3))
    engine.step()
    engine.step()  # "r" has a token in flight now
    engine.abort("r")
    outputs = run_until_done(engine)
    assert tokens_of(outputs["r"]) == [] and finish_of(outputs["r"]) == "abort"
    assert engine.stats().kv_blocks_used == 0 and not engine.has_unfinished()


def test_a_request_with_penalties_keeps_the_engine_in_step():
    runner = CountingRunner()
    engine = make_engine(runner, async_scheduling="on")
    engine.add_request("plain", [1, 2, 3], params(max_tokens=6))
    engine.add_request("penalised", [4, 5], params(max_tokens=3, presence_penalty=0.5))
    outputs = run_until_done(engine)
    assert tokens_of(outputs["plain"]) == reference_output([1, 2, 3], 6)
    assert tokens_of(outputs["penalised"]) == reference_output([4, 5], 3)
    steps_with_penalised = [i for i, batch in enumerate(runner.batches) if any(c[0] == "penalised" for c in batch)]
    last = steps_with_penalised[-1]
    assert all(not fed for fed in runner.fed_pending[: last + 1])  # nothing ran ahead while it was live
    assert any(runner.fed_pending[last + 1 :])  # and "plain" ran ahead once it was gone


def test_preemption_drops_a_pending_token_and_the_recompute_samples_it_again():
    runner = CountingRunner(num_kv_blocks=6, block_size=4)
    engine = make_engine(runner, async_scheduling="on", max_num_seqs=4)
    prompts = {f"r{i}": [i + 1] * 5 for i in range(3)}
    for rid, prompt in prompts.items():
        engine.add_request(rid, prompt, params(max_tokens=6))
    outputs = run_until_done(engine)
    assert engine.stats().preemptions > 0
    for rid, prompt in prompts.items():
        assert tokens_of(outputs[rid]) == reference_output(prompt, 6), rid
        assert finish_of(outputs[rid]) == "length"
    assert engine.stats().kv_blocks_used == 0


def test_a_step_that_raises_keeps_the_launched_step_for_the_next_one():
    engine = make_engine(async_scheduling="on")
    engine.add_request("r", [1, 2, 3], params(max_tokens=6))
    outputs = engine.step() + engine.step()  # a step is in flight now
    schedule = engine.scheduler.schedule

    def broken():
        engine.scheduler.schedule = schedule
        raise RuntimeError("transient")

    engine.scheduler.schedule = broken
    try:
        engine.step()
    except RuntimeError:
        pass
    outputs += [out for outs in run_until_done(engine).values() for out in outs]
    assert tokens_of(outputs) == reference_output([1, 2, 3], 6)
    assert all(-1 not in block.token_ids for block in engine.scheduler.kv.blocks)
