"""What a running gateway holds, opened in the app's lifespan and kept on app.state.gateway."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from redis.asyncio import BlockingConnectionPool, Redis

from api.admission import Admission
from api.dispatch import Dispatcher
from api.keys import StaticKeys
from api.liveness import WorkerWatch
from api.metrics import GatewayMetrics
from api.outbox import Outbox
from api.settings import GatewaySettings
from api.stream_hub import BLOCK_MS, StreamHub
from api.tokenizer import ModelTokenizer, load_tokenizer

log = logging.getLogger("llmq.gateway")


@dataclass
class Gateway:
    settings: GatewaySettings
    models: dict[str, ModelTokenizer]
    redis: Redis  # short timeouts: every command but the blocking stream read
    outbox: Outbox  # the requests' dispatches and client keys, batched
    hub: StreamHub  # the one blocking XREAD over all request streams
    dispatcher: Dispatcher
    admission: Admission
    watch: WorkerWatch
    metrics: GatewayMetrics
    static_keys: StaticKeys


def load_models(settings: GatewaySettings) -> dict[str, ModelTokenizer]:
    models = {}
    for path in settings.model_paths:
        tokenizer = load_tokenizer(str(path))
        if tokenizer.name in models:
            raise ValueError(f"two model folders are both named {tokenizer.name!r}")
        models[tokenizer.name] = tokenizer
        log.info("serving %s (context %d, tokenizer %s)", tokenizer.name, tokenizer.max_model_len,
                 "tiktoken" if tokenizer.fast else "transformers")
    return models


COMMAND_CONNECTIONS = 64  # short commands: a herd of requests waits briefly for one of these
POOL_WAIT_S = 10.0


def _redis(url: str, connections: int, socket_timeout: float, connect_timeout: float) -> Redis:
    # A blocking pool: past its size a caller waits for a connection instead of failing.
    pool = BlockingConnectionPool.from_url(url, max_connections=connections, timeout=POOL_WAIT_S,
                                           socket_timeout=socket_timeout, socket_connect_timeout=connect_timeout)
    return Redis.from_pool(pool)


@contextlib.asynccontextmanager
async def open_gateway(settings: GatewaySettings) -> AsyncIterator[Gateway]:
    timeout = settings.redis_timeout_s
    models = load_models(settings)
    redis = _redis(settings.redis_url, COMMAND_CONNECTIONS, timeout, timeout)
    # XREAD BLOCK needs a socket timeout longer than the block.
    stream_reader = _redis(settings.redis_url, 1, BLOCK_MS / 1000 + timeout, timeout)
    hub = StreamHub(stream_reader, redis)
    dispatcher = Dispatcher(redis)
    watch = WorkerWatch(redis, settings.heartbeat_poll_s)
    gateway = Gateway(
        settings=settings,
        models=models,
        redis=redis,
        outbox=Outbox(redis),
        hub=hub,
        dispatcher=dispatcher,
        admission=Admission(settings.max_queued_requests, settings.max_tokens_in_flight, settings.retry_after_s),
        watch=watch,
        metrics=GatewayMetrics(),
        static_keys=StaticKeys(settings.api_keys),
    )
    await watch.poll()
    watcher = asyncio.create_task(watch.run(), name="llmq-worker-watch")
    hub.start()
    gateway.outbox.start()
    try:
        yield gateway
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await hub.stop()
        await gateway.outbox.stop()
        await redis.aclose()
        await stream_reader.aclose()
