import pytest

from tests.integration.helpers import wait_for
from tests.workers.conftest import make_job, run_in_thread, stream_events
from workers import protocol
from workers.host import Draining


def test_a_job_streams_start_tokens_done_in_order(host, client):
    outcome = host.run_job(make_job("r1", max_tokens=4, attempt=2))
    events = stream_events(client, "r1")
    assert outcome == "length"
    assert [e.type for e in events][0] == "start" and events[-1].type == "done"
    assert [e.seq for e in events] == list(range(len(events)))
    assert {e.attempt for e in events} == {2} and {e.worker_id for e in events} == {"w1"}
    tokens = [t for e in events if e.type == "tokens" for t in e.token_ids]
    assert tokens == [1000, 1001, 1002, 1003]
    assert events[-1].finish_reason == "length" and events[-1].num_prompt_tokens == 3
    assert not client.exists(protocol.lease_key("r1"))
    assert 0 < client.ttl(protocol.stream_key("r1")) <= protocol.STREAM_EXPIRE_S


def test_lease_is_held_while_the_request_runs(host, client, engine):
    engine.step_s = 0.005
    thread, _ = run_in_thread(host, make_job("r2", max_tokens=10_000))
    wait_for(lambda: client.get(protocol.lease_key("r2")) == b"w1", what="lease")
    assert 0 < client.pttl(protocol.lease_key("r2")) <= protocol.LEASE_TTL_S * 1000
    host.abort("r2")
    thread.join(5)
    assert not thread.is_alive()


def test_abort_on_the_channel_ends_a_running_request(host, client, engine):
    engine.step_s = 0.005
    thread, result = run_in_thread(host, make_job("r3", max_tokens=10_000))
    wait_for(lambda: any(e.type == "tokens" for e in stream_events(client, "r3")), what="first tokens")
    wait_for(lambda: client.publish(protocol.ABORT_CHANNEL, "r3") and not thread.is_alive(), what="abort")
    events = stream_events(client, "r3")
    assert events[-1].type == "done" and events[-1].finish_reason == "abort"
    assert engine.aborted == ["r3"] and result["outcome"] == "abort"
    assert sum(e.type in ("done", "error") for e in events) == 1


def test_abort_key_at_pickup_does_no_work(host, client, engine):
    client.set(protocol.abort_key("r4"), 1)
    assert host.run_job(make_job("r4")) == "abort"
    assert engine.added == []
    [event] = stream_events(client, "r4")
    assert event.type == "done" and event.finish_reason == "abort"


def test_jobs_picked_up_together_run_but_the_one_aborted_before_pickup(host, client, engine):
    client.set(protocol.abort_key("r4b"), 1)
    runs = [run_in_thread(host, make_job(rid, max_tokens=2)) for rid in ("r4a", "r4b", "r4c")]
    for thread, _ in runs:
        thread.join(5)
    assert [result["outcome"] for _, result in runs] == ["length", "abort", "length"]
    assert sorted(engine.added) == ["r4a", "r4c"]
    assert [e.type for e in stream_events(client, "r4b")] == ["done"]
    assert [e.type for e in stream_events(client, "r4a")][0] == "start"


def test_expired_job_at_pickup_gets_an_error_event(host, client, engine):
    assert host.run_job(make_job("r5", deadline_in=-1)) == "deadline_exceeded"
    assert engine.added == []
    [event] = stream_events(client, "r5")
    assert event.type == "error" and event.error_code == "deadline_exceeded"


def test_abort_that_arrives_before_the_job_is_remembered(host, client, engine):
    host.abort("r6")
    assert host.run_job(make_job("r6")) == "abort"
    assert "r6" not in engine.requests


def test_client_key_lapse_aborts(host, client, engine):
    engine.step_s = 0.005
    client.set(protocol.client_key("r7"), 1, px=10_000)
    thread, result = run_in_thread(host, make_job("r7", max_tokens=10_000))
    wait_for(lambda: any(e.type == "tokens" for e in stream_events(client, "r7")), what="first tokens")
    wait_for(lambda: "r7" in host._live and host._live["r7"].client_seen, what="client seen")
    client.delete(protocol.client_key("r7"))
    thread.join(5)
    assert result["outcome"] == "abort" and engine.aborted == ["r7"]


def test_engine_step_failure_ends_running_requests_and_the_loop_goes_on(host, client, engine):
    engine.step_s = 0.005
    thread, result = run_in_thread(host, make_job("r8", max_tokens=10_000))
    wait_for(lambda: any(e.type == "tokens" for e in stream_events(client, "r8")), what="first tokens")
    engine.fail_next_step = True
    thread.join(5)
    assert result["outcome"] == "engine_error"
    last = stream_events(client, "r8")[-1]
    assert last.type == "error" and "kernel exploded" in last.error
    assert host.run_job(make_job("r9", max_tokens=2)) == "length"


def test_invalid_request_gets_an_error_event(host, client):
    assert host.run_job(make_job("r10", prompt=())) == "invalid_request"
    [start_or_error] = stream_events(client, "r10")
    assert start_or_error.type == "error" and start_or_error.error == "empty prompt"


def test_heartbeat_reports_running_then_zero(host, client, engine):
    engine.step_s = 0.005
    thread, _ = run_in_thread(host, make_job("r11", max_tokens=10_000))

    def beat():
        raw = client.hget(protocol.worker_key("w1"), protocol.HEARTBEAT_FIELD)
        return raw and protocol.decode_heartbeat(raw)

    wait_for(lambda: (beat() or None) and beat().running == 1, what="running 1")
    assert 0 < client.pttl(protocol.worker_key("w1")) <= protocol.HEARTBEAT_TTL_S * 1000
    hb = beat()
    assert (hb.model, hb.backend, hb.max_model_len, hb.accepting) == ("tiny", "scripted", 2048, True)
    host.abort("r11")
    wait_for(lambda: beat().running == 0, timeout=1.0, what="running 0")
    thread.join(5)


def test_drain_lets_short_requests_finish_and_ends_the_rest(host, client, engine):
    engine.step_s = 0.005
    short, short_result = run_in_thread(host, make_job("r12", max_tokens=5))
    long, long_result = run_in_thread(host, make_job("r13", max_tokens=100_000))
    wait_for(lambda: len(engine.added) == 2, what="both running")
    host.drain(0.5)
    with pytest.raises(Draining):
        host.run_job(make_job("r14"))
    short.join(5)
    long.join(5)
    assert short_result["outcome"] == "length"
    assert long_result["outcome"] == "worker_shutdown"
    assert stream_events(client, "r13")[-1].error_code == "worker_shutdown"
    hb = protocol.decode_heartbeat(client.hget(protocol.worker_key("w1"), protocol.HEARTBEAT_FIELD))
    assert hb.accepting is False


def test_a_job_started_at_receipt_runs_once_and_its_task_waits_for_it(host, client, engine):
    engine.step_s = 0.005
    job = make_job("r15", max_tokens=3)
    host.start_early(job)
    wait_for(lambda: engine.added == ["r15"], what="started before its task ran")
    assert host.run_job(job) == "length"
    assert engine.added == ["r15"]
    assert [e.type for e in stream_events(client, "r15")] == ["start", "tokens", "tokens", "tokens", "done"]


def test_no_job_starts_at_receipt_while_draining_or_past_its_deadline(host, client, engine):
    host.start_early(make_job("r16", deadline_in=-1))
    assert host.run_job(make_job("r16", deadline_in=-1)) == "deadline_exceeded"
    host.drain(0.5)
    host.start_early(make_job("r17"))
    with pytest.raises(Draining):
        host.run_job(make_job("r17"))
    assert engine.added == []


def test_start_event_carries_the_first_steps_cache_hits(host, client, engine):
    engine.cached_tokens = 2
    host.run_job(make_job("r15", max_tokens=3))
    events = stream_events(client, "r15")
    assert events[0].type == "start" and events[0].num_cached_tokens == 2
    assert events[-1].num_cached_tokens == 2
