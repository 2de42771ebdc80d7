"""When jobs reach the engine: a job handed over twice (by the transport, then by Celery's
task_received) runs once, and one that arrives while the loop is picking others up joins their step."""

import threading
import time

from tests.integration.helpers import wait_for
from tests.workers.conftest import make_job, stream_events
from tests.workers.fakes import ScriptedEngine
from workers import host as host_module
from workers.host import EngineHost
from workers.publisher import Publisher


def test_a_job_handed_over_twice_runs_once(host, client, engine):
    job = make_job("p1", max_tokens=2)
    host.start_early(job)
    host.start_early(job)  # Celery's task_received after the transport's hook
    assert host.run_job(job) == "length"
    assert engine.added == ["p1"]
    assert [e.type for e in stream_events(client, "p1")] == ["start", "tokens", "tokens", "done"]


class _StepRecorder(ScriptedEngine):
    def __init__(self) -> None:
        super().__init__()
        self.added_before_step: dict[str, int] = {}

    def add_request(self, request_id, prompt_token_ids, params) -> None:
        super().add_request(request_id, prompt_token_ids, params)
        self.added_before_step[request_id] = self.steps


class _ArrivalDuringPickup(Publisher):
    """The first pickup's round trip is where a second job arrives."""

    def __init__(self, client, host_ref: list, late_job) -> None:
        super().__init__(client, "w1")
        self.host_ref, self.late_job = host_ref, late_job

    def pick_up(self, request_ids):
        if self.late_job is not None:
            late, self.late_job = self.late_job, None
            self.host_ref[0].start_early(late)
        return super().pick_up(request_ids)


def test_a_job_arriving_during_a_pickup_joins_the_same_step(client):
    engine = _StepRecorder()
    host_ref = []
    host = EngineHost(engine, _ArrivalDuringPickup(client, host_ref, make_job("late", max_tokens=2)),
                      model="tiny", backend="scripted")
    host_ref.append(host)
    host.start()
    try:
        host.start_early(make_job("first", max_tokens=2))
        wait_for(lambda: len(engine.added_before_step) == 2, what="both jobs in the engine")
        assert engine.added_before_step == {"first": 0, "late": 0}
    finally:
        host.stop()


class _SlowAfterTheFirstStep(ScriptedEngine):
    def step(self):
        if self.steps:
            time.sleep(0.2)  # later steps take long: until the second ends, the stream holds the first step
        return super().step()


def test_a_job_handed_to_an_idle_loop_has_its_first_step_out_when_the_hand_over_returns(client):
    host = EngineHost(_SlowAfterTheFirstStep(), Publisher(client, "w1"), model="tiny", backend="scripted")
    host.start()
    try:
        wait_for(lambda: host._idle, what="the loop waiting for work")
        host.start_early(make_job("idle1", max_tokens=3), yield_to_idle_loop=True)
        assert [e.type for e in stream_events(client, "idle1")] == ["start", "tokens"]
        assert host.run_job(make_job("idle1", max_tokens=3)) == "length"
    finally:
        host.stop()


def test_a_job_handed_over_without_yielding_does_not_wait_for_its_first_step(client):
    engine = ScriptedEngine(step_s=0.2)
    host = EngineHost(engine, Publisher(client, "w1"), model="tiny", backend="scripted")
    host.start()
    try:
        wait_for(lambda: host._idle, what="the loop waiting for work")
        host.start_early(make_job("busy1", max_tokens=1))
        assert [e.type for e in stream_events(client, "busy1")] == []
        assert host.run_job(make_job("busy1", max_tokens=1)) == "length"
    finally:
        host.stop()


class _RunningAhead(ScriptedEngine):
    """Like the GPU engine that runs ahead: a step launches and returns the step before's tokens, so
    a new job's first tokens come out a step later. Here the second step waits for `release`."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def step(self):
        if self.steps == 0:
            self.steps += 1
            return []  # launched; nothing to read back yet
        self.release.wait(10)
        return super().step()


def test_a_hand_over_to_an_idle_loop_ends_with_the_loops_turn_not_the_first_tokens(client, monkeypatch):
    # Jobs queued behind this one in Redis wait while the hand-over lasts: it must not last a forward pass.
    monkeypatch.setattr(host_module, "IDLE_HANDOVER_WAIT_S", 30.0)
    engine = _RunningAhead()
    host = EngineHost(engine, Publisher(client, "w1"), model="tiny", backend="scripted")
    host.start()
    try:
        wait_for(lambda: host._idle, what="the loop waiting for work")
        handed = threading.Thread(target=host.start_early, args=(make_job("ahead1", max_tokens=2),),
                                  kwargs={"yield_to_idle_loop": True})
        handed.start()
        wait_for(lambda: not handed.is_alive(), what="the hand-over to return before the first tokens")
        assert not engine.release.is_set()
        engine.release.set()
        assert host.run_job(make_job("ahead1", max_tokens=2)) == "length"
    finally:
        engine.release.set()
        host.stop()
