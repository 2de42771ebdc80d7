"""Redis commands of concurrent requests sent together: one pipelined round trip per turn of the
event loop instead of one pipeline per request.

A request's own pipeline reached Redis only after several awaits (a pooled connection, its lock and
condition), each one a turn of the event loop; under a herd of requests every turn also runs every
other request's parsing, so the first dispatches left ~20 ms after their requests were read. Here a
request adds its commands to the next batch and the one sender task writes the batch at its next
turn; while a batch is in flight the following one fills up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

log = logging.getLogger("llmq.gateway")


class Outbox:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._batch: list[tuple[Callable[[Pipeline], None], asyncio.Future]] = []
        self._ready = asyncio.Event()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="llmq-outbox")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for _, future in self._batch:
            if not future.done():
                future.set_exception(ConnectionError("the gateway is stopping"))

    async def send(self, add_commands: Callable[[Pipeline], None]) -> list:
        """Runs add_commands(pipe) on the next batch's pipeline and returns the replies of the commands
        it added. Raises the first command error, or the connection error if Redis was unreachable."""
        future = asyncio.get_running_loop().create_future()
        self._batch.append((add_commands, future))
        self._ready.set()
        replies = await future
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies

    async def _run(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            batch, self._batch = self._batch, []
            try:
                await self._send(batch)
            except Exception as exc:  # noqa: BLE001 - a bug here must not leave later senders waiting
                log.exception("outbox batch failed")
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)

    async def _send(self, batch: list[tuple[Callable[[Pipeline], None], asyncio.Future]]) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            spans = []  # (first, end) of each sender's commands in the pipeline
            for add_commands, future in batch:
                first = len(pipe.command_stack)
                try:
                    add_commands(pipe)
                except Exception as exc:  # noqa: BLE001 - that sender's error, not the batch's
                    del pipe.command_stack[first:]
                    future.set_exception(exc)
                spans.append((first, len(pipe.command_stack)))
            try:
                replies = await pipe.execute(raise_on_error=False) if pipe.command_stack else []
            except Exception as exc:  # noqa: BLE001 - Redis unreachable: every sender of the batch is told
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                return
        for (first, end), (_, future) in zip(spans, batch):
            if not future.done():  # its sender may have been cancelled meanwhile
                future.set_result(replies[first:end])
