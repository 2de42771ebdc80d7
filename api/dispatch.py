"""Sends GenerateJobs to the model's Celery queue. A client-only Celery app: the gateway never
imports the workers' Celery app, only the wire protocol."""

from __future__ import annotations

from datetime import datetime, timezone

import anyio.to_thread
from celery import Celery

from workers.protocol import GENERATE_TASK, GenerateJob, job_to_wire, queue_name


def celery_client(redis_url: str, timeout_s: float) -> Celery:
    app = Celery("llmq-gateway", broker=redis_url, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        # Fail fast when Redis is down: the caller answers 503 instead of the request hanging.
        task_publish_retry=False,
        broker_connection_retry=False,
        broker_connection_retry_on_startup=False,
        broker_connection_max_retries=0,
        broker_connection_timeout=timeout_s,
        broker_transport_options={"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s},
    )
    return app


class Dispatcher:
    def __init__(self, redis_url: str, timeout_s: float) -> None:
        self.celery = celery_client(redis_url, timeout_s)

    def send_now(self, job: GenerateJob) -> None:
        self.celery.send_task(
            GENERATE_TASK,
            args=[job_to_wire(job)],
            queue=queue_name(job.model),
            # Unique per attempt, so a continuation never collides with the job it replaces.
            task_id=f"{job.request_id}.{job.attempt}",
            expires=datetime.fromtimestamp(job.deadline, tz=timezone.utc),
            # Celery would otherwise repr the whole prompt for its log headers, per request.
            argsrepr=f"[GenerateJob {job.request_id} attempt {job.attempt}]",
            kwargsrepr="{}",
        )

    async def send(self, job: GenerateJob) -> None:
        # kombu's publish is blocking socket I/O: keep it off the event loop.
        await anyio.to_thread.run_sync(self.send_now, job)

    def close(self) -> None:
        self.celery.close()
