"""Reads the workers' token streams for one request and owns failure detection.

One GenerationRun covers the n choices of a request, each a job with its own request id and
stream llmq:stream:<rid>, all read through the gateway's StreamHub. While the client is connected the
run refreshes llmq:client:<rid>. If a worker's lease lapses after it took a job (a worker leases a job
when it picks it up, before its first step), the run sends a continuation (prompt + tokens already
received, the rest of max_tokens, attempt + 1) and ignores later events of the old attempt. Every
run ends in exactly one terminal event per choice (Finished) or one Failed for the request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import msgspec
from redis.asyncio import Redis

from api.dispatch import Dispatcher
from api.events import Event, Failed, Finished, Idle, Tokens
from api.outbox import Outbox
from api.stream_hub import StreamHub, Subscription
from workers.protocol import (
    ABORT_CHANNEL, CLIENT_TTL_S, EVENT_FIELD, LEASE_TTL_S, GenerateJob, Sampling,
    abort_key, client_key, decode_event, lease_key, stream_key,
)

log = logging.getLogger("llmq.gateway")

READ_BLOCK_S = 1.0  # longest XREAD wait; bounds how late a lease or deadline check can be
LEASE_CHECK_EVERY_S = 1.0
REDIS_OUTAGE_GRACE_S = 3.0  # consecutive Redis failures tolerated mid-stream before giving up
REDIS_RETRY_S = 0.1
# Worker error codes that mean "this worker could not, another may": continued like a lost lease.
RETRYABLE_ERROR_CODES = frozenset({"worker_shutdown"})
# HTTP status the client sees for the other error codes a worker sends.
ERROR_STATUS = {"deadline_exceeded": 504, "invalid_request": 400, "context_length_exceeded": 400,
                "redis_unavailable": 503, "engine_error": 500}


@dataclass
class ChoiceJob:
    index: int
    request_id: str
    prompt_token_ids: list[int]
    sampling: Sampling
    attempt: int = 0
    received: list[int] = field(default_factory=list)
    started: bool = False
    last_event_at: float = 0.0
    finished: bool = False
    num_prompt_tokens: int = 0
    num_cached_tokens: int = 0
    needs_redispatch: bool = False  # its worker said it cannot finish it (shutting down)
    lease_seen: bool = False  # a worker took this attempt (its lease existed): a lapse means it was lost




class GenerationRun:
    def __init__(
        self, redis: Redis, outbox: Outbox, hub: StreamHub, dispatcher: Dispatcher, model: str,
        jobs: list[ChoiceJob], deadline: float, max_attempts: int, block_s: float = READ_BLOCK_S,
    ) -> None:
        self.redis, self.outbox, self.hub, self.dispatcher, self.model = redis, outbox, hub, dispatcher, model
        self.subscription: Subscription | None = None
        self.jobs = jobs
        self._by_stream = {stream_key(j.request_id): j for j in jobs}
        self.deadline = deadline  # unix seconds
        self.max_attempts = max_attempts
        self.block_s = min(block_s, READ_BLOCK_S)
        self.redispatches = 0
        self._client_refreshed_at = 0.0
        self._lease_checked_at = 0.0
        self._redis_failing_since: float | None = None

    def _job(self, index: int) -> ChoiceJob:
        return self.jobs[index]

    def _wire_job(self, job: ChoiceJob, attempt: int) -> GenerateJob:
        left = job.sampling.max_tokens - len(job.received)
        return GenerateJob(
            request_id=job.request_id, model=self.model, prompt_token_ids=job.prompt_token_ids + job.received,
            sampling=msgspec.structs.replace(job.sampling, max_tokens=left), deadline=self.deadline,
            attempt=attempt, enqueued_at=time.time(),
        )

    async def start(self) -> None:
        """Subscribes to the streams, marks the client present and dispatches every choice, all in
        one round trip to Redis (the client key is set before the job can reach a worker). Raises if
        Redis is unreachable."""
        keys = [stream_key(j.request_id) for j in self.jobs]
        self.subscription = self.hub.register(keys)
        reader = self.hub.reader_to_unblock(keys)
        self._client_refreshed_at = time.monotonic()

        def dispatch(pipe) -> None:
            if reader is not None:  # first: the XREAD comes back with these keys while the job travels
                pipe.client_unblock(reader)
            self._set_client_keys(pipe)
            for job in self.jobs:
                self.dispatcher.push(pipe, self._wire_job(job, job.attempt))

        replies = await self.outbox.send(dispatch)
        if reader is not None and not replies[0]:
            await self.hub.wake_for(keys)  # that XREAD was not blocked yet

    def _set_client_keys(self, pipe) -> None:
        ttl_ms = int(CLIENT_TTL_S * 1000)
        for job in self.jobs:
            if not job.finished:
                pipe.set(client_key(job.request_id), b"1", px=ttl_ms)

    async def _refresh_client_keys(self) -> None:
        now = time.monotonic()
        if now - self._client_refreshed_at < CLIENT_TTL_S / 3:
            return
        self._client_refreshed_at = now
        await self.outbox.send(self._set_client_keys)

    async def events(self) -> AsyncIterator[Event]:
        while any(not job.finished for job in self.jobs):
            if time.time() >= self.deadline:
                await self.abort_all()
                yield Failed("The request timed out before generation finished.", status=504, code="timeout")
                return
            try:
                if time.monotonic() - self._client_refreshed_at >= CLIENT_TTL_S / 3:
                    await self._refresh_client_keys()
                batch = await self._read(block=True)
                self._redis_failing_since = None
            except Exception as exc:  # Redis blip: tolerated for a grace period, then an explicit error
                now = time.monotonic()
                self._redis_failing_since = self._redis_failing_since or now
                if now - self._redis_failing_since > REDIS_OUTAGE_GRACE_S:
                    yield Failed(f"Lost the connection to the queue: {exc}", status=503, code="redis_unavailable")
                    return
                yield Idle()
                await asyncio.sleep(REDIS_RETRY_S)  # back off instead of spinning on a refused connection
                continue
            produced = False
            for event in self._apply(batch):
                produced = True
                yield event
                if isinstance(event, Failed):
                    await self.abort_all()
                    return
            if not produced:
                yield Idle()
            if not self._leases_due():
                continue
            try:
                async for event in self._check_leases():
                    yield event
                    if isinstance(event, Failed):
                        await self.abort_all()
                        return
            except Exception as exc:  # Redis blip during a check: the next round checks again
                log.warning("lease check failed: %s", exc)

    async def _read(self, block: bool, jobs: list[ChoiceJob] | None = None) -> list:
        """[(stream key, [(entry id, fields), ...]), ...] as XREAD answers."""
        if block:
            return await self.hub.wait(self.subscription, max(0.001, min(self.block_s, self.deadline - time.time())))
        keys = [stream_key(j.request_id) for j in (jobs or self.jobs) if not j.finished]
        return await self.hub.drain(self.subscription, keys) if keys else []

    def _apply(self, batch: list) -> list[Event]:
        by_stream = self._by_stream
        out: list[Event] = []
        for key, entries in batch:
            job = by_stream[key.decode() if isinstance(key, bytes) else key]
            for _entry_id, fields in entries:
                if job.finished:
                    continue
                raw = fields.get(EVENT_FIELD) or fields.get(EVENT_FIELD.decode())
                try:
                    event = decode_event(raw)
                except (msgspec.DecodeError, TypeError):
                    log.warning("undecodable event on %s", key)
                    continue
                if event.attempt != job.attempt:
                    continue  # an attempt given up on: its tokens were replaced by the continuation
                out.extend(self._on_event(job, event))
        return out

    def _on_event(self, job: ChoiceJob, event) -> list[Event]:
        job.last_event_at = time.monotonic()
        if job.attempt == 0 and event.type in ("start", "done"):
            # Prefix-cache hits of the original prompt, reported with start and/or done.
            job.num_cached_tokens = max(job.num_cached_tokens, event.num_cached_tokens)
        if event.type == "start":
            job.started = True
            return []
        out: list[Event] = []
        if event.token_ids:
            job.started = True
            job.received.extend(event.token_ids)
            if self.subscription is not None:
                self.subscription.awaits_first_token = False
            out.append(Tokens(job.index, list(event.token_ids), event.logprobs))
        if event.type == "done":
            job.finished = True
            if event.finish_reason == "abort":
                out.append(Failed("The worker aborted the request.", status=503, code="aborted"))
            else:
                out.append(Finished(job.index, event.finish_reason or "stop"))
        elif event.type == "error":
            if event.error_code in RETRYABLE_ERROR_CODES:
                job.needs_redispatch = True
            else:
                job.finished = True
                out.append(Failed(event.error or "The worker failed to generate.",
                                  status=ERROR_STATUS.get(event.error_code or "", 500),
                                  code=event.error_code or "worker_error"))
        return out

    def _leases_due(self) -> bool:
        """Whether _check_leases has anything to do (checked per token, so without a coroutine)."""
        return (time.monotonic() - self._lease_checked_at >= LEASE_CHECK_EVERY_S
                or any(job.needs_redispatch for job in self.jobs))

    async def _check_leases(self) -> AsyncIterator[Event]:
        for job in self.jobs:
            if job.needs_redispatch and not job.finished:
                job.needs_redispatch = False
                async for event in self._redispatch(job):
                    yield event
        now = time.monotonic()
        if now - self._lease_checked_at < LEASE_CHECK_EVERY_S:
            return
        self._lease_checked_at = now
        # Not started yet (queued, or taken by a worker that has not stepped it), or quiet for a whole
        # lease period after starting: is a worker still holding it?
        suspects = [j for j in self.jobs
                    if not j.finished and (not j.started or now - j.last_event_at > LEASE_TTL_S)]
        if not suspects:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for job in suspects:
                pipe.exists(lease_key(job.request_id))
            held = await pipe.execute()
        for job, leased in zip(suspects, held):
            if leased:
                job.lease_seen = True
                continue
            if not job.started and not job.lease_seen:
                continue  # still in the queue: no worker has taken it
            drained = self._apply(await self._read(block=False, jobs=[job]))  # events written just before it left
            for event in drained:
                yield event
            if job.finished or any(isinstance(e, Failed) for e in drained):
                continue
            if job.last_event_at > now:
                continue  # it spoke after all; look again next round
            async for event in self._redispatch(job):
                yield event

    async def _redispatch(self, job: ChoiceJob) -> AsyncIterator[Event]:
        if len(job.received) >= job.sampling.max_tokens:
            job.finished = True
            yield Finished(job.index, "length")
            return
        if job.attempt + 1 >= self.max_attempts:
            yield Failed(f"The worker serving this request was lost {self.max_attempts} times; giving up.",
                         status=503, code="worker_lost")
            return
        # Sent before the attempt counts: if sending fails, the next check tries again.
        await self.dispatcher.send(self._wire_job(job, job.attempt + 1))
        job.attempt += 1
        job.started = False
        job.lease_seen = False
        self.redispatches += 1
        log.warning("worker of %s lost; continuing as attempt %d after %d tokens",
                    job.request_id, job.attempt, len(job.received))

    async def abort(self, index: int) -> None:
        """Stops one choice (a stop string matched): the worker frees it, no more events are read."""
        job = self._job(index)
        job.finished = True
        try:
            await self._send_aborts([job])
        except Exception as exc:  # its client key is no longer refreshed: the worker stops when it lapses
            log.warning("could not send abort: %s", exc)

    async def abort_all(self) -> None:
        await self._send_aborts([j for j in self.jobs if not j.finished])
        for job in self.jobs:
            job.finished = True

    async def _send_aborts(self, jobs: list[ChoiceJob]) -> None:
        if not jobs:
            return
        ttl_ms = int(max(10.0, self.deadline - time.time() + 10.0) * 1000)
        async with self.redis.pipeline(transaction=False) as pipe:
            for job in jobs:
                pipe.set(abort_key(job.request_id), b"1", px=ttl_ms)
                pipe.publish(ABORT_CHANNEL, job.request_id)
                pipe.delete(client_key(job.request_id))
            await pipe.execute()

    async def close(self) -> None:
        """On every exit: unfinished choices are aborted (client gone, deadline, failure)."""
        if self.subscription is not None:
            self.hub.unsubscribe(self.subscription)
        if all(job.finished for job in self.jobs):
            return  # their workers are done with them: the client keys lapse unread, no round trip
        try:
            await self.abort_all()  # deletes the client keys too
        except Exception as exc:  # Redis down: the client key lapses by itself and the worker stops
            log.warning("could not send aborts: %s", exc)
