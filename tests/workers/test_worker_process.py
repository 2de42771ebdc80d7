"""A real `llmq worker` process (null engine) fed through Celery the way the gateway feeds it."""

import signal
from datetime import datetime, timedelta, timezone

import pytest
from celery import Celery

from llmq.stack import spawn, worker_args
from tests.integration.helpers import wait_for
from tests.workers.conftest import make_job, stream_events
from workers import protocol

pytestmark = pytest.mark.integration

MODEL = "tiny"


@pytest.fixture
def sender(redis_url):
    app = Celery("test-sender", broker=redis_url, set_as_current=False)
    app.conf.task_ignore_result = True

    def send(job, expires=None):
        job = protocol.GenerateJob(**{**{f: getattr(job, f) for f in job.__struct_fields__}, "model": MODEL})
        app.send_task(protocol.GENERATE_TASK, args=[protocol.job_to_wire(job)], queue=protocol.queue_name(MODEL),
                      task_id=f"{job.request_id}.{job.attempt}",
                      expires=expires or datetime.fromtimestamp(job.deadline, tz=timezone.utc))

    yield send
    app.close()


def start_worker(redis_url, tmp_path, client, worker_id, *extra):
    child = spawn(worker_id, worker_args(str(tmp_path / MODEL), "null", redis_url, worker_id,
                                         "--engine-option", "tokens_per_s=50", *extra), log_dir=tmp_path)
    wait_for(lambda: client.exists(protocol.worker_key(worker_id)) or not child.alive, 60, "heartbeat")
    assert child.alive, child.log_tail()
    return child


def beat(client, worker_id):
    raw = client.hget(protocol.worker_key(worker_id), protocol.HEARTBEAT_FIELD)
    return protocol.decode_heartbeat(raw) if raw else None


@pytest.fixture
def worker(redis_url, tmp_path, client):
    child = start_worker(redis_url, tmp_path, client, "wp", "--concurrency", "2", "--drain-grace", "0.5")
    yield child
    child.stop()


def ended(client, rid):
    events = stream_events(client, rid)
    return events if events and events[-1].type in ("done", "error") else None


def test_worker_serves_a_job_and_drops_an_expired_one_with_an_error(worker, sender, client):
    sender(make_job("p1", max_tokens=5))
    events = wait_for(lambda: ended(client, "p1"), 10, "p1 to end")
    assert [e.type for e in events] == ["start"] + ["tokens"] * 5 + ["done"]
    sender(make_job("p2"), expires=datetime.now(timezone.utc) - timedelta(seconds=1))
    [event] = wait_for(lambda: ended(client, "p2"), 10, "p2 to end")
    assert event.error_code == "deadline_exceeded"


def test_sigterm_drains_and_leaves_waiting_jobs_in_redis(worker, sender, client):
    sender(make_job("p3", max_tokens=3))  # ends within the grace period
    sender(make_job("p4", max_tokens=5000))  # does not (100 s at 50 tokens/s)
    wait_for(lambda: len(stream_events(client, "p4")) > 1 and stream_events(client, "p3"), 10, "both running")
    worker.signal(signal.SIGTERM)
    wait_for(lambda: not beat(client, "wp").accepting, 5, "draining heartbeat")
    sender(make_job("p5"))  # arrives while draining: stays queued for another worker
    assert worker.process.wait(20) == 0
    assert ended(client, "p3")[-1].finish_reason == "length"
    assert ended(client, "p4")[-1].error_code == "worker_shutdown"
    assert not client.exists(protocol.stream_key("p5"))
    assert client.llen(protocol.queue_name(MODEL)) == 1
    assert not client.exists(protocol.worker_key("wp"))


def test_a_saturated_worker_leaves_new_jobs_in_redis_for_another(redis_url, tmp_path, client, sender):
    # The engine runs one request at a time, Celery could hold four.
    busy = start_worker(redis_url, tmp_path, client, "busy", "--max-num-seqs", "1", "--concurrency", "4")
    second = None
    try:
        sender(make_job("a", max_tokens=5000))
        wait_for(lambda: (beat(client, "busy") or None) and beat(client, "busy").running == 1, 10, "a running")
        sender(make_job("b", max_tokens=5000))
        wait_for(lambda: beat(client, "busy").waiting == 1, 10, "b waiting in the engine")
        sender(make_job("c", max_tokens=5))  # may still meet a fetch already under way
        sender(make_job("d", max_tokens=5))
        second = start_worker(redis_url, tmp_path, client, "second", "--concurrency", "4")
        events = wait_for(lambda: ended(client, "d"), 30, "d to be served")
        assert events[0].worker_id == "second"
        assert beat(client, "busy").running + beat(client, "busy").waiting <= 3
    finally:
        for rid in "abcd":
            client.publish(protocol.ABORT_CHANNEL, rid)
        busy.stop()
        if second is not None:
            second.stop()
