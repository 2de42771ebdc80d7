"""`llmq worker`: load one engine, then run a Celery worker (threads pool) on the model's queue."""

from __future__ import annotations

import functools
import gc
import json
import logging
import sys
import threading
import time

import click

from llmq.paths import resolve_model
from workers.settings import DEFAULT_REDIS_URL, WorkerSettings, default_worker_id


option = functools.partial(click.option, show_envvar=True)


def _engine_options(pairs: tuple[str, ...]) -> tuple[tuple[str, object], ...]:
    options = []
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="--engine-option")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        options.append((key.replace("-", "_"), value))
    return tuple(options)


@click.command()
@option("--model", envvar="LLMQ_MODEL", help="Model folder or a name in the models cache. [default: the default model]")
@option("--served-model-name", envvar="LLMQ_SERVED_MODEL_NAME", default="", help="Name clients use. [default: the folder's name]")
@option("--backend", envvar="LLMQ_BACKEND", default="torch", show_default=True, help="torch | hf | hf-batched | null | trtllm")
@option("--redis-url", envvar="LLMQ_REDIS_URL", default=DEFAULT_REDIS_URL, show_default=True)
@option("--worker-id", envvar="LLMQ_WORKER_ID", default=None, help="[default: host-pid]")
@option("--concurrency", envvar="LLMQ_WORKER_CONCURRENCY", type=int, default=64, show_default=True, help="Jobs held at once.")
@option("--drain-grace", "drain_grace_s", envvar="LLMQ_DRAIN_GRACE_S", type=float, default=30.0, show_default=True, help="Seconds running requests get on SIGTERM.")
@option("--device", envvar="LLMQ_DEVICE", default="auto", show_default=True)
@option("--dtype", envvar="LLMQ_DTYPE", default="auto", show_default=True)
@option("--max-num-seqs", envvar="LLMQ_MAX_NUM_SEQS", type=int, default=None, help="[default: concurrency]")
@option("--max-num-batched-tokens", envvar="LLMQ_MAX_NUM_BATCHED_TOKENS", type=int, default=2048, show_default=True)
@option("--max-model-len", envvar="LLMQ_MAX_MODEL_LEN", type=int, default=None)
@option("--kv-cache-tokens", envvar="LLMQ_KV_CACHE_TOKENS", type=int, default=None)
@option("--kv-cache-dtype", envvar="LLMQ_KV_CACHE_DTYPE", default="auto", show_default=True)
@option("--quantization", envvar="LLMQ_QUANTIZATION", default=None)
@option("--tensor-parallel-size", envvar="LLMQ_TENSOR_PARALLEL_SIZE", type=int, default=1, show_default=True)
@option("--cuda-graphs/--no-cuda-graphs", envvar="LLMQ_CUDA_GRAPHS", default=True, show_default=True)
@option("--async-scheduling", envvar="LLMQ_ASYNC_SCHEDULING", type=click.Choice(["auto", "on", "off"]), default="auto",
        show_default=True, help="Launch each engine step before reading the last one's tokens (auto: on CUDA).")
@option("--num-threads", envvar="LLMQ_NUM_THREADS", type=int, default=None, help="torch threads on CPU.")
@option("--dummy-weights", envvar="LLMQ_DUMMY_WEIGHTS", is_flag=True, help="Random weights (benchmarks).")
@option("--seed", envvar="LLMQ_SEED", type=int, default=0, show_default=True)
@option("--engine-option", "engine_option", envvar="LLMQ_ENGINE_OPTIONS", multiple=True, metavar="KEY=VALUE",
              help="Backend keyword argument (JSON value), repeatable.")
@option("--log-level", envvar="LLMQ_LOG_LEVEL", default="warning", show_default=True,
              help="info logs every request.")
def worker(model, engine_option, worker_id, **options) -> None:
    """Run a Celery worker that holds one inference engine."""
    try:
        settings = WorkerSettings(
            model=str(resolve_model(model)),
            worker_id=worker_id or default_worker_id(),
            engine_options=_engine_options(engine_option),
            **options,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.exit(run_worker(settings))


def _load_engine(settings: WorkerSettings):
    from engine.backends import create_engine

    what = f"loading {settings.backend} engine for {settings.served_model_name} from {settings.model}"
    click.echo(what + " ...", err=True)
    started = time.monotonic()
    done = threading.Event()

    def tick() -> None:  # a line every few seconds so a slow load is visibly alive
        while not done.wait(5.0):
            click.echo(f"  still {what}: {time.monotonic() - started:.0f} s", err=True)

    threading.Thread(target=tick, daemon=True).start()
    try:
        engine = create_engine(settings.backend, settings.engine_config(), **dict(settings.engine_options))
    finally:
        done.set()
    click.echo(f"engine ready in {time.monotonic() - started:.1f} s", err=True)
    return engine


def run_worker(settings: WorkerSettings) -> int:
    import redis
    from celery.signals import worker_ready, worker_shutting_down

    from workers import protocol, tasks
    from workers.celery_app import configure
    from workers.host import EngineHost
    from workers.intake import Intake
    from workers.publisher import Publisher
    from workers.threads import start_all_threads

    try:
        engine = _load_engine(settings)
    except Exception as exc:  # noqa: BLE001 - say why and exit non-zero
        click.echo(f"error: could not load the engine: {exc}", err=True)
        return 1
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=5, health_check_interval=10)
    intake = Intake(settings.concurrency)
    host = EngineHost(engine, Publisher(client, settings.worker_id),
                      model=settings.served_model_name, backend=settings.backend, on_load=intake.on_engine_load)
    host.start()
    tasks.bind_host(host)
    # The engine and its libraries (torch, Celery) live as long as the process: out of the garbage
    # collector's sight, a full collection no longer walks them (~40 ms a time, measured, during which
    # the engine loop publishes nothing).
    gc.collect()
    gc.freeze()

    def drain(**_) -> None:
        host.drain(settings.drain_grace_s)

    def attach(sender=None, **_) -> None:
        intake.attach(sender)
        pool = getattr(sender, "pool", None)  # Celery's threads pool: its ThreadPoolExecutor
        if getattr(pool, "executor", None) is not None:
            start_all_threads(pool.executor, pool.limit)

    worker_shutting_down.connect(drain, weak=False)
    worker_ready.connect(attach, weak=False)
    queue = protocol.queue_name(settings.served_model_name)
    click.echo(f"worker {settings.worker_id} consuming {queue} at {_redacted(settings.redis_url)}", err=True)
    app = configure(settings.redis_url)
    celery_worker = app.Worker(
        hostname=f"{settings.worker_id}@llmq",
        pool="threads",
        concurrency=settings.concurrency,
        queues=[queue],
        loglevel=settings.log_level.upper(),
        without_mingle=True,
        without_gossip=True,
        without_heartbeat=True,
        quiet=True,
    )
    try:
        celery_worker.start()
    finally:
        host.stop()
        tasks.bind_host(None)
    return celery_worker.exitcode or 0


def _redacted(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if "@" not in rest:
        return url
    return f"{scheme}{sep}***@{rest.split('@', 1)[1]}"
