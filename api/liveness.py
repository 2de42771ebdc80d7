"""Which workers are alive, per served model, from their heartbeat hashes (llmq:worker:<wid>).

Read in the background every heartbeat_poll_s, and again whenever a request finds no worker,
so admission answers from memory and a worker that has just started is seen at once.
"""

from __future__ import annotations

import asyncio
import logging
import time

import msgspec
from redis.asyncio import Redis

from workers.protocol import HEARTBEAT_FIELD, WORKER_KEY_PATTERN, WorkerHeartbeat, decode_heartbeat

log = logging.getLogger("llmq.gateway")

class WorkerWatch:
    def __init__(self, redis: Redis, poll_s: float) -> None:
        self.redis = redis
        self.poll_s = poll_s
        self.workers: dict[str, list[WorkerHeartbeat]] = {}
        self.redis_ok = False
        self.polled_at = 0.0

    async def poll(self) -> None:
        self.polled_at = time.monotonic()
        try:
            keys = [key async for key in self.redis.scan_iter(match=WORKER_KEY_PATTERN, count=200)]
            async with self.redis.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.hget(key, HEARTBEAT_FIELD)
                raws = await pipe.execute() if keys else []
        except Exception as exc:  # Redis down or slow: every model is unavailable until it answers
            if self.redis_ok:
                log.warning("redis unreachable: %s", exc)
            self.redis_ok = False
            self.workers = {}
            return
        self.redis_ok = True
        workers: dict[str, list[WorkerHeartbeat]] = {}
        for raw in raws:
            if not raw:
                continue
            try:
                beat = decode_heartbeat(raw)
            except msgspec.DecodeError:
                continue
            if beat.accepting:
                workers.setdefault(beat.model, []).append(beat)
        self.workers = workers

    async def run(self) -> None:
        while True:
            await self.poll()
            await asyncio.sleep(self.poll_s)

    async def has_worker(self, model: str) -> bool:
        if not self.workers.get(model):
            await self.poll()
        return bool(self.workers.get(model))

    def context_limits(self) -> dict[str, int]:
        """Per model, the smallest context length its live workers report (workers may cap it
        below the model's own)."""
        limits: dict[str, int] = {}
        for model, beats in self.workers.items():
            reported = [b.max_model_len for b in beats if b.max_model_len > 0]
            if reported:
                limits[model] = min(reported)
        return limits
