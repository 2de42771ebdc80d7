"""The gateway's queue entries against Celery's own: the same message a `send_task` would store, so the
workers consume them unchanged."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from datetime import datetime, timezone

import redis
from celery import Celery
from redis.asyncio import Redis

from api.dispatch import Dispatcher
from workers.protocol import GENERATE_TASK, GenerateJob, Sampling, job_from_wire, job_to_wire, queue_name

# Differ per message or per sending process.
PER_MESSAGE = {"delivery_tag", "reply_to", "expiration", "origin"}


def _job() -> GenerateJob:
    return GenerateJob(request_id="r1", model="m", prompt_token_ids=[1, 2, 3], sampling=Sampling(max_tokens=4),
                       deadline=time.time() + 60, attempt=2)


def _celery_entry(redis_url: str, job: GenerateJob) -> dict:
    app = Celery("reference", broker=redis_url, set_as_current=False)
    app.conf.update(task_serializer="json", task_ignore_result=True)
    app.send_task(GENERATE_TASK, args=[job_to_wire(job)], queue=queue_name(job.model), task_id="r1.2",
                  expires=datetime.fromtimestamp(job.deadline, tz=timezone.utc),
                  argsrepr="[GenerateJob r1 attempt 2]", kwargsrepr="{}")
    app.close()
    return json.loads(redis.Redis.from_url(redis_url).rpop(queue_name(job.model)))


def _dispatched(redis_url: str, job: GenerateJob) -> dict:
    async def push() -> None:
        client = Redis.from_url(redis_url)
        async with client.pipeline(transaction=False) as pipe:
            Dispatcher(client).push(pipe, job)
            await pipe.execute()
        await client.aclose()

    asyncio.run(push())
    return json.loads(redis.Redis.from_url(redis_url).rpop(queue_name(job.model)))


def _without(d: dict, keys: set[str]) -> dict:
    return {k: v for k, v in d.items() if k not in keys}


def test_a_dispatched_job_is_the_message_send_task_stores(redis_url):
    job = _job()
    ours = _dispatched(redis_url, job)
    theirs = _celery_entry(redis_url, job)
    assert _without(ours, {"headers", "properties", "body"}) == _without(theirs, {"headers", "properties", "body"})
    assert _without(ours["headers"], PER_MESSAGE) == _without(theirs["headers"], PER_MESSAGE)
    assert _without(ours["properties"], PER_MESSAGE) == _without(theirs["properties"], PER_MESSAGE)
    assert set(ours["properties"]) == set(theirs["properties"])
    body, theirs_body = (json.loads(base64.b64decode(e["body"])) for e in (ours, theirs))
    assert body == theirs_body
    assert job_from_wire(body[0][0]) == job


def test_each_dispatch_has_its_own_delivery_tag(redis_url):
    first, second = (_dispatched(redis_url, _job()) for _ in range(2))
    assert first["properties"]["delivery_tag"] != second["properties"]["delivery_tag"]
