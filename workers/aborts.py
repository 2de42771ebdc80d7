"""Listens on the abort channel in its own thread and hands each request id to a callback."""

from __future__ import annotations

import logging
import threading
from typing import Callable

import redis

from workers import protocol

log = logging.getLogger(__name__)


class AbortListener:
    def __init__(self, client: redis.Redis, on_abort: Callable[[str], None]) -> None:
        self.client = client
        self.on_abort = on_abort
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="llmq-aborts", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(protocol.ABORT_CHANNEL)
                while not self._stop.is_set():
                    # Short waits keep stop() prompt and stay under redis-py's socket timeout.
                    message = pubsub.get_message(timeout=0.2)
                    if message and message["type"] == "message":
                        data = message["data"]
                        self.on_abort(data.decode() if isinstance(data, bytes) else str(data))
            except (redis.RedisError, OSError) as exc:
                # Aborts missed meanwhile are caught by the engine loop's abort-key checks.
                log.warning("abort channel lost (%s); resubscribing", exc)
                self._stop.wait(0.5)
            finally:
                try:
                    pubsub.close()
                except (redis.RedisError, OSError):
                    pass
