"""The generate task: a Celery thread hands the job to the process's EngineHost and holds it (and its
unacked message) until the request ends, so the threads pool bounds how many jobs a worker takes."""

from __future__ import annotations

import base64
import logging
from datetime import datetime, timezone

import msgspec

from celery import Task
from celery.exceptions import Reject
from celery.signals import task_received, task_revoked

from workers import protocol
from workers.celery_app import app
from workers.host import Draining, EngineHost
from workers.receipt import BatchingTransport

log = logging.getLogger(__name__)

_host: EngineHost | None = None


def bind_host(host: EngineHost | None) -> None:
    """The CLI loads the engine once, before Celery starts, and binds its host here."""
    global _host
    _host = host
    BatchingTransport.on_message = _start_at_arrival if host is not None else None


def current_host() -> EngineHost:
    if _host is None:
        raise RuntimeError("no engine host bound: run workers through `llmq worker`")
    return _host


class GenerateTask(Task):
    name = protocol.GENERATE_TASK
    acks_late = True
    ignore_result = True
    typing = False

    def run(self, wire: dict) -> None:
        job = protocol.job_from_wire(wire)
        try:
            outcome = current_host().run_job(job)
        except Draining:
            # Back to Redis, where another worker takes it; this one is shutting down.
            raise Reject("worker draining", requeue=True) from None
        log.info("request %s attempt %d ended: %s", job.request_id, job.attempt, outcome)


generate = app.register_task(GenerateTask())


@task_received.connect
def _start_at_receipt(sender=None, request=None, **_) -> None:
    """The job goes to the engine as soon as Celery's consumer thread has read its message (expired and
    revoked ones never get here), not when a pool thread starts the task: that hand-off and Celery's
    tracer took ~0.3-0.5 ms per job at one stream, more while a herd of jobs arrives. The task's run()
    then holds the message until the job ends, as before."""
    if _host is None or getattr(request, "name", None) != protocol.GENERATE_TASK:
        return
    try:
        job = protocol.job_from_wire(request.args[0])
    except Exception:  # noqa: BLE001 - the task's own run() reports a malformed job
        return
    _host.start_early(job)


def _start_at_arrival(envelope: dict) -> None:
    """The job goes to the engine as soon as the transport has read its message, before Celery handles
    it (workers/receipt.py); task_received, which follows, then finds it started. An idle engine loop
    gets its first step out before Celery's handling of the message competes with it for the
    interpreter. A message that is not a generate job, or a job this worker will not start now, is
    left to Celery alone."""
    headers = envelope.get("headers", {})
    if _host is None or headers.get("task") != protocol.GENERATE_TASK:
        return
    expires = headers.get("expires")
    if expires and datetime.fromisoformat(expires) <= datetime.now(timezone.utc):
        return  # Celery drops it as expired and _end_expired_job ends its stream
    body = envelope.get("body", "")
    if envelope.get("properties", {}).get("body_encoding") == "base64":
        body = base64.b64decode(body)
    args = msgspec.json.decode(body)[0]
    _host.start_early(protocol.job_from_wire(args[0]), yield_to_idle_loop=True)


@task_revoked.connect
def _end_expired_job(sender=None, request=None, expired=False, **_) -> None:
    """Celery drops a job past its `expires` before running it; the stream still gets its ending."""
    if not expired or getattr(sender, "name", None) != protocol.GENERATE_TASK or _host is None:
        return
    try:
        job = protocol.job_from_wire(request.args[0])
    except Exception:  # noqa: BLE001 - a malformed message has nobody to tell
        log.warning("expired task with an unreadable job dropped")
        return
    _host.end_expired(job)
