"""The path shared by /v1/chat/completions and /v1/completions once a request is planned:
admission, dispatch, then a streamed (SSE) or whole answer. Every accepted request ends in exactly
one terminal event for the client, and its choices are aborted in the workers on every exit."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid

import anyio
import msgspec
from litestar import Request, Response
from litestar.background_tasks import BackgroundTask
from litestar.response import Stream

from api.errors import APIError, bad_request, unavailable
from api.generation import Delta, Generation
from api.plan import Plan
from api.resources import Gateway
from api.responses import ChunkMaker, WholeResponse
from api.events import Failed, Idle
from api.stream import ChoiceJob, GenerationRun

TIMEOUT_HEADER = "x-request-timeout"
EVENT_STREAM = "text/event-stream"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def request_timeout(request: Request, gateway: Gateway) -> float:
    """Seconds until the deadline: the X-Request-Timeout header when given, else the setting."""
    raw = request.headers.get(TIMEOUT_HEADER)
    if raw is None:
        return gateway.settings.request_timeout_s
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value <= gateway.settings.max_request_timeout_s:
        raise bad_request(f"X-Request-Timeout must be a number of seconds in (0, "
                          f"{gateway.settings.max_request_timeout_s:g}].", param="X-Request-Timeout")
    return value


async def _check_available(gateway: Gateway, model: str) -> None:
    retry = gateway.settings.unavailable_retry_after_s
    if not await gateway.watch.has_worker(model):
        reason = "no_worker" if gateway.watch.redis_ok else "redis_unavailable"
        gateway.metrics.rejected.labels(model, reason).inc()
        if not gateway.watch.redis_ok:
            raise unavailable("The request queue is unreachable; retry later.", retry, code="queue_unavailable")
        raise unavailable(f"No worker is serving model `{model}` right now; retry later.", retry,
                          code="no_worker")


async def serve(plan: Plan, request: Request, gateway: Gateway, route: str) -> Response | Stream:
    model = plan.model.name
    timeout = request_timeout(request, gateway)
    await _check_available(gateway, model)
    try:
        ticket = gateway.admission.admit(model, len(plan.choices), plan.tokens_reserved)
    except APIError:
        gateway.metrics.rejected.labels(model, "busy").inc()
        raise
    rid = uuid.uuid4().hex
    jobs = [ChoiceJob(c.index, f"{rid}-{c.index}", plan.prompts[c.prompt_index], c.sampling) for c in plan.choices]
    run = GenerationRun(gateway.redis, gateway.outbox, gateway.hub, gateway.dispatcher, model, jobs,
                        deadline=time.time() + timeout, max_attempts=gateway.settings.max_attempts,
                        block_s=gateway.settings.keepalive_s)
    try:
        await run.start()
    except BaseException as exc:  # including a cancelled request: the slot and the jobs are given back
        ticket.release()
        with anyio.CancelScope(shield=True):
            await run.close()
        if not isinstance(exc, Exception):
            raise
        gateway.metrics.rejected.labels(model, "redis_unavailable").inc()
        raise unavailable(f"The request queue is unreachable ({exc}); retry later.",
                          gateway.settings.unavailable_retry_after_s, code="queue_unavailable") from None
    gateway.metrics.in_flight.labels(model).inc()
    gateway.metrics.prompt_tokens.labels(model).inc(sum(len(p) for p in plan.prompts))
    accepted = Accepted(plan, gateway, Generation(plan, run), ticket, route,
                        ("chatcmpl-" if plan.kind == "chat" else "cmpl-") + rid)
    if plan.stream:
        # The background task also covers a client gone before the stream's first chunk was pulled.
        return EventStream(accepted.sse(), media_type=EVENT_STREAM, headers=SSE_HEADERS,
                           background=BackgroundTask(accepted.finish, "disconnected"))
    return await accepted.whole(request)


class EventStream(Stream):
    """A Stream that keeps its SSE media type: Litestar would otherwise apply the handler's (JSON)."""

    def to_asgi_response(self, *args, **kwargs):
        kwargs["media_type"] = EVENT_STREAM
        return super().to_asgi_response(*args, **kwargs)


class Accepted:
    """An admitted, dispatched request; finish() runs exactly once on whichever exit it takes."""

    def __init__(self, plan: Plan, gateway: Gateway, generation: Generation, ticket, route: str, response_id: str):
        self.plan, self.gateway, self.generation, self.ticket = plan, gateway, generation, ticket
        self.route, self.response_id = route, response_id
        self.created = int(time.time())
        self.accepted_at = time.monotonic()
        self._first_token_observed = False
        self._finished = False

    def _observe(self, item) -> None:
        if isinstance(item, Delta) and not self._first_token_observed and self.generation.first_token_seen:
            self._first_token_observed = True
            self.gateway.metrics.time_to_first_token.labels(self.plan.model.name).observe(
                time.monotonic() - self.accepted_at)

    async def finish(self, status: str) -> None:
        if self._finished:
            return
        self._finished = True
        with anyio.CancelScope(shield=True):  # runs even when the client's disconnect cancelled us
            await self.generation.run.close()
        self.ticket.release()
        m, model = self.gateway.metrics, self.plan.model.name
        m.in_flight.labels(model).dec()
        m.latency.labels(model).observe(time.monotonic() - self.accepted_at)
        m.completion_tokens.labels(model).inc(sum(self.generation.completion_tokens.values()))
        m.redispatches.labels(model).inc(self.generation.run.redispatches)
        m.requests.labels(self.route, model, status).inc()

    async def sse(self):
        chunks = ChunkMaker(self.plan.kind, self.response_id, self.created, self.plan.model,
                            self.plan.top_logprobs, self.plan.include_usage)
        keepalive = self.gateway.settings.keepalive_s
        status = "disconnected"
        try:
            if self.plan.kind == "chat":
                for choice in self.plan.choices:
                    yield _data(chunks.role(choice.index))
            last_sent = time.monotonic()
            async for item in self.generation.deltas():
                self._observe(item)
                if isinstance(item, Idle):
                    if time.monotonic() - last_sent >= keepalive:
                        last_sent = time.monotonic()
                        yield b": keep-alive\n\n"
                    continue
                if isinstance(item, Failed):
                    status = str(item.status)
                    self.gateway.metrics.failures.labels(self.plan.model.name, item.code).inc()
                    yield _data(_error_envelope(item))
                    return
                if item.text and item.finish_reason:  # OpenAI ends a choice with an empty delta
                    yield _data(chunks.delta(Delta(item.index, item.text, item.logprobs)))
                    item = Delta(item.index, "", [], item.finish_reason)
                yield _data(chunks.delta(item))
                last_sent = time.monotonic()
            if self.plan.include_usage:
                yield _data(chunks.usage(self.generation.usage()))
            yield b"data: [DONE]\n\n"
            status = "200"
        finally:
            await self.finish(status)

    async def _collect(self) -> WholeResponse | Failed:
        whole = WholeResponse(self.plan.kind, [c.index for c in self.plan.choices])
        async for item in self.generation.deltas():
            self._observe(item)
            if isinstance(item, Failed):
                return item
            if isinstance(item, Delta):
                whole.add(item)
        return whole

    async def whole(self, request: Request) -> Response:
        collect = asyncio.ensure_future(self._collect())
        gone = asyncio.ensure_future(_client_gone(request))
        status = "disconnected"
        try:
            await asyncio.wait({collect, gone}, return_when=asyncio.FIRST_COMPLETED)
            if not collect.done():
                collect.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await collect
                raise APIError(499, "Client closed the request.")
            result = collect.result()
            if isinstance(result, Failed):
                status = str(result.status)
                self.gateway.metrics.failures.labels(self.plan.model.name, result.code).inc()
                retry = self.gateway.settings.unavailable_retry_after_s if result.status == 503 else None
                raise APIError(result.status, result.message, type=_error_type(result.status), code=result.code,
                               retry_after=retry)
            status = "200"
            body = result.build(self.response_id, self.created, self.plan.model, self.plan.logprobs,
                                self.plan.top_logprobs, self.generation.usage())
            return Response(body)
        finally:
            gone.cancel()
            await self.finish(status)


async def _client_gone(request: Request) -> None:
    """Returns when the client disconnects (the body was read already, so only that can arrive)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


_encoder = msgspec.json.Encoder()


def _data(obj) -> bytes:
    return b"data: " + _encoder.encode(obj) + b"\n\n"


def _error_type(status: int) -> str:
    return "invalid_request_error" if status < 500 else "timeout" if status == 504 else "server_error"


def _error_envelope(failed: Failed) -> dict:
    return {"error": {"message": failed.message, "type": _error_type(failed.status), "param": None,
                      "code": failed.code}}
