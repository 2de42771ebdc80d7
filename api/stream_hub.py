"""One blocking XREAD for all the request streams a gateway is reading.

Workers append to every running request's stream once per engine step, so a single XREAD over all
streams returns a whole step's events in one round trip, where one XREAD per request would cost a
round trip per request per step. A request subscribes its streams once; the hub keeps each
stream's cursor and hands new entries to the subscriber's buffer. A new subscription wakes the
blocked XREAD (CLIENT UNBLOCK) so its first token is not late.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from redis.asyncio import Redis

log = logging.getLogger("llmq.gateway")

BLOCK_MS = 1000
RETRY_S = 0.1
STOP_WAIT_S = 2.0


def _id(entry_id: bytes | str) -> tuple[int, int]:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


class Subscription:
    def __init__(self, keys: list[str]) -> None:
        self.cursor = {key: "0-0" for key in keys}
        self.awaits_first_token = True  # cleared by the reader; the hub serves these first
        self.buffer: dict[str, list] = {}
        self.ready = asyncio.Event()

    def push(self, key: str, entries: list) -> None:
        """Keeps entries past the cursor only: the hub and a direct drain may read the same ones."""
        last = _id(self.cursor[key])
        fresh = [e for e in entries if _id(e[0]) > last]
        if fresh:
            self.cursor[key] = fresh[-1][0].decode() if isinstance(fresh[-1][0], bytes) else fresh[-1][0]
            self.buffer.setdefault(key, []).extend(fresh)
            self.ready.set()

    def take(self) -> list:
        batch, self.buffer = list(self.buffer.items()), {}
        self.ready.clear()
        return batch


class StreamHub:
    def __init__(self, reader: Redis, commands: Redis) -> None:
        self.reader = reader  # one connection, blocked in XREAD most of the time
        self.commands = commands  # for CLIENT UNBLOCK and direct drains
        self.subscribers: dict[str, Subscription] = {}
        self.failing_since: float | None = None
        self._changed = asyncio.Event()
        self._reader_id: int | None = None
        self._reading: set[str] = set()  # keys of the XREAD now blocked
        self._waking = False  # a request is unblocking that XREAD: others need not
        self._task: asyncio.Task | None = None
        self._stopping = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="llmq-stream-hub")

    async def stop(self) -> None:
        """Ends the loop by unblocking its XREAD: cancelling a task blocked in redis-py's read can
        wait on the socket well past the block."""
        if self._task is None:
            return
        self._stopping = True
        self._changed.set()
        if self._reader_id is not None:
            with contextlib.suppress(Exception):
                await self.commands.client_unblock(self._reader_id)
        await asyncio.wait({self._task}, timeout=STOP_WAIT_S)
        if not self._task.done():
            self._task.cancel()

    async def subscribe(self, keys: list[str]) -> Subscription:
        subscription = self.register(keys)
        await self.wake_for(keys)
        return subscription

    def register(self, keys: list[str]) -> Subscription:
        """Subscribes without waking the blocked XREAD: the caller sends reader_to_unblock()'s
        CLIENT UNBLOCK in its own pipeline, then calls wake_for() if that found nothing blocked."""
        subscription = Subscription(keys)
        for key in keys:
            self.subscribers[key] = subscription
        self._changed.set()
        return subscription

    def _lacks(self, keys: list[str]) -> bool:
        return self._reader_id is not None and bool(self._reading) and not set(keys) <= self._reading

    def reader_to_unblock(self, keys: list[str]) -> int | None:
        """The client id of the blocked XREAD if it lacks these keys and nobody is unblocking it yet
        (the next XREAD reads every key subscribed by then): a herd of requests sends one CLIENT
        UNBLOCK, not one each, and the XREAD is not sent again per request."""
        if self._waking or not self._lacks(keys):
            return None
        self._waking = True
        return self._reader_id

    async def wake_for(self, keys: list[str]) -> None:
        """Ends a blocked XREAD that lacks these keys, so the next one includes them. The XREAD may
        be on its way to Redis and not yet blocked: then unblocking finds nothing, so try again."""
        for _ in range(50):
            if not self._lacks(keys):
                return
            try:
                if await self.commands.client_unblock(self._reader_id):
                    return
            except Exception:
                return  # at worst the new keys wait one block
            await asyncio.sleep(0.001)

    def unsubscribe(self, subscription: Subscription) -> None:
        for key in subscription.cursor:
            if self.subscribers.get(key) is subscription:
                del self.subscribers[key]

    async def wait(self, subscription: Subscription, timeout_s: float) -> list:
        """Entries that arrived for the subscription, waiting up to timeout_s for some. Raises while
        Redis is failing, so the caller's outage handling applies."""
        if self.failing_since is not None and not subscription.buffer:
            raise ConnectionError("the stream reader cannot reach Redis")
        if not subscription.buffer:
            # asyncio.timeout rather than wait_for: no task per wait, so a push wakes the reader in
            # the loop's next turn.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await subscription.ready.wait()
        return subscription.take()

    async def drain(self, subscription: Subscription, keys: list[str]) -> list:
        """Reads the keys directly, without waiting: what the hub may not have fetched yet."""
        reply = await self.commands.xread({k: subscription.cursor[k] for k in keys}) or []
        for key, entries in reply:
            subscription.push(key.decode() if isinstance(key, bytes) else key, entries)
        return subscription.take()

    async def _run(self) -> None:
        while not self._stopping:
            if not self.subscribers:
                self._changed.clear()
                await self._changed.wait()
                continue
            streams = {key: sub.cursor[key] for key, sub in self.subscribers.items()}
            try:
                if self._reader_id is None:
                    self._reader_id = await self.reader.client_id()
                self._reading = set(streams)
                self._waking = False
                reply = await self.reader.xread(streams, block=BLOCK_MS) or []
                self.failing_since = None
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.failing_since is None:
                    log.warning("stream reader: %s", exc)
                    self.failing_since = time.monotonic()
                self._reader_id = None  # a new connection has a new client id
                await asyncio.sleep(RETRY_S)
                continue
            finally:
                self._reading = set()
            arrivals = []
            for key, entries in reply:
                name = key.decode() if isinstance(key, bytes) else key
                subscription = self.subscribers.get(name)
                if subscription is not None:
                    arrivals.append((not subscription.awaits_first_token, name, subscription, entries))
            # Readers are woken in push order and write in that order: requests still waiting for
            # their first token (what their clients wait on) go before the next tokens of running
            # ones (~75 us of gateway CPU each), so under 32 streams a first token no longer waits
            # behind a whole step's tokens of the others.
            arrivals.sort(key=lambda arrival: arrival[0])
            for _, name, subscription, entries in arrivals:
                subscription.push(name, entries)
            if reply:
                # The woken readers write their tokens to their clients before the next XREAD is sent:
                # what arrives meanwhile waits in the streams, the tokens just read do not wait for it.
                await asyncio.sleep(0)
