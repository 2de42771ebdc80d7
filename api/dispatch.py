"""Puts GenerateJobs on the model's Celery queue without a kombu publish per request.

Each job becomes Celery's own protocol-2 message (headers, properties and body from Celery's builder,
`app.amqp.as_task_v2`), wrapped in the envelope that kombu's Redis transport keeps in a queue's list,
and LPUSHed onto that list by the gateway's async Redis client. So a dispatch rides the same pipelined
round trip as the request's other keys, on the event loop, with no thread hop; the workers consume it
unchanged. The gateway never imports the workers' Celery app, only the wire protocol.
"""

from __future__ import annotations

import base64
import time
import uuid
from datetime import datetime, timezone

import msgspec
from celery import Celery
from celery.utils.nodenames import anon_nodename
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from workers.protocol import GENERATE_TASK, GenerateJob, job_to_wire, queue_name

_json = msgspec.json.Encoder()


class Dispatcher:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        # Builds messages only: it never connects to a broker.
        self._amqp = Celery("llmq-gateway", set_as_current=False).amqp
        self._origin = anon_nodename()
        self._reply_to = str(uuid.uuid4())  # unused (results are ignored) but part of a Celery message

    def message(self, job: GenerateJob) -> bytes:
        """The queue entry for one job, as `send_task` would have stored it."""
        # Unique per attempt, so a continuation never collides with the job it replaces.
        task_id = f"{job.request_id}.{job.attempt}"
        headers, properties, body, _ = self._amqp.as_task_v2(
            task_id, GENERATE_TASK, args=[job_to_wire(job)], kwargs={},
            expires=datetime.fromtimestamp(job.deadline, tz=timezone.utc), reply_to=self._reply_to,
            origin=self._origin, ignore_result=None,
            # Celery would otherwise repr the whole prompt for its log headers, per request.
            argsrepr=f"[GenerateJob {job.request_id} attempt {job.attempt}]", kwargsrepr="{}",
        )
        queue = queue_name(job.model)
        properties.update(
            argsrepr=headers["argsrepr"], kwargsrepr="{}", delivery_mode=2, priority=0,
            expiration=str(max(0, int((job.deadline - time.time()) * 1000))),
            body_encoding="base64", delivery_info={"exchange": "", "routing_key": queue},
            delivery_tag=str(uuid.uuid4()),
        )
        return _json.encode({
            "body": base64.b64encode(_json.encode(body)).decode(),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": headers,
            "properties": properties,
        })

    def push(self, pipe: Pipeline, job: GenerateJob) -> None:
        """Adds the job's LPUSH to a pipeline the caller executes."""
        pipe.lpush(queue_name(job.model), self.message(job))

    async def send(self, job: GenerateJob) -> None:
        await self.redis.lpush(queue_name(job.model), self.message(job))
