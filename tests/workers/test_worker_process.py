"""A real `llmq worker` process (null engine) fed through Celery the way the gateway feeds it."""

import signal
from datetime import datetime, timedelta, timezone

import pytest
from celery import Celery

from llmq.stack import spawn, worker_args
from tests.workers.conftest import make_job, stream_events, wait_for
from workers import protocol

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


@pytest.fixture
def worker(redis_url, tmp_path, client):
    child = spawn("w", worker_args(str(tmp_path / MODEL), "null", redis_url, "wp",
                                   "--engine-option", "tokens_per_s=50", "--concurrency", "2", "--drain-grace", "0.5"),
                  log_dir=tmp_path)
    wait_for(lambda: client.exists(protocol.worker_key("wp")) or not child.alive, 60, "heartbeat")
    assert child.alive, child.log_tail()
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
    wait_for(lambda: not protocol.decode_heartbeat(
        client.hget(protocol.worker_key("wp"), protocol.HEARTBEAT_FIELD)).accepting, 5, "draining heartbeat")
    sender(make_job("p5"))  # arrives while draining: stays queued for another worker
    assert worker.process.wait(20) == 0
    assert ended(client, "p3")[-1].finish_reason == "length"
    assert ended(client, "p4")[-1].error_code == "worker_shutdown"
    assert not client.exists(protocol.stream_key("p5"))
    assert client.llen(protocol.queue_name(MODEL)) == 1
    assert not client.exists(protocol.worker_key("wp"))
