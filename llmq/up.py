"""`llmq up`: the whole stack on this machine (a private Redis, workers, the gateway) until Ctrl-C.
Workers run on the CPU unless --device says otherwise; on cuda each worker gets its own GPU."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import click

from llmq.paths import DEFAULT_MODEL, resolve_model


class StopRequested(Exception):
    """SIGINT/SIGTERM arrived before the stack was up."""


def _say(line: str) -> None:
    click.echo(line, err=True)


def ensure_model(name: str | None) -> Path:
    """The model folder, pulled first when it is a known name not yet in the cache."""
    folder = resolve_model(name)
    if (folder / "config.json").exists():
        return folder
    from engine.models.pull import SOURCES, pull

    model_name = name or DEFAULT_MODEL
    if model_name not in SOURCES:
        raise click.ClickException(f"model folder {folder} not found")
    _say(f"pulling {model_name} (once) ...")
    try:
        return pull(model_name, folder, progress=lambda line: _say("  " + line))
    except (FileExistsError, RuntimeError, ValueError) as exc:
        raise click.ClickException(f"could not pull {model_name}: {exc}") from None


@click.command()
@click.option("--model", envvar="LLMQ_MODEL", default=None, help="Model folder or cached name. [default: the default model]")
@click.option("--backend", envvar="LLMQ_BACKEND", default="torch", show_default=True, help="torch | hf | null")
@click.option("--port", envvar="LLMQ_PORT", type=int, default=8000, show_default=True, help="Gateway port on 127.0.0.1.")
@click.option("--workers", "num_workers", envvar="LLMQ_UP_WORKERS", type=click.IntRange(1), default=1, show_default=True)
@click.option("--device", envvar="LLMQ_DEVICE", default="cpu", show_default=True,
              help="cpu | cuda (one GPU per worker) | auto (cuda when there is one).")
@click.option("--dtype", envvar="LLMQ_DTYPE", default=None, help="auto | bfloat16 | float16 | float32. [default: the worker's]")
@click.option("--dummy-weights", envvar="LLMQ_DUMMY_WEIGHTS", is_flag=True,
              help="Random weights of the folder's config (benchmarks; the folder needs no weights).")
@click.option("--max-num-seqs", envvar="LLMQ_MAX_NUM_SEQS", type=click.IntRange(1), default=None,
              help="Sequences a worker's engine runs at once. [default: the worker's]")
@click.option("--max-num-batched-tokens", envvar="LLMQ_MAX_NUM_BATCHED_TOKENS", type=click.IntRange(1), default=None,
              help="Tokens per engine step. [default: the worker's]")
def up(model: str | None, backend: str, port: int, num_workers: int, device: str, dtype: str | None,
       dummy_weights: bool, max_num_seqs: int | None, max_num_batched_tokens: int | None) -> None:
    """Run Redis, workers and the gateway here, until Ctrl-C."""
    from llmq.stack import EngineOptions, LocalStack

    folder = ensure_model(model)
    # On the CPU the workers share the cores, not each all of them.
    threads = None if device.startswith("cuda") else max(1, (os.cpu_count() or 1) // num_workers)
    engine = EngineOptions(device=device, dtype=dtype, dummy_weights=dummy_weights, max_num_seqs=max_num_seqs,
                           max_num_batched_tokens=max_num_batched_tokens, num_threads=threads)
    try:
        worker_envs = engine.worker_envs(num_workers)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    stack = LocalStack(model=str(folder), backend=backend, workers=num_workers, port=port, engine=engine,
                       worker_envs=worker_envs, worker_extra=("--drain-grace", "5", "--log-level", "warning"),
                       gateway_extra=("--log-level", "warning"))
    stopping = False
    serving = False

    def request_stop(signum, _frame) -> None:
        nonlocal stopping
        if stopping:
            return
        stopping = True
        if not serving:
            # Still starting (a worker may load for minutes): abort the start, which stops
            # everything started so far, instead of waiting out the readiness timeout.
            raise StopRequested(f"signal {signum} while starting")

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    _say(f"starting redis, {num_workers} {backend} worker(s) on {device} for {folder.name} and the gateway ...")
    try:
        stack.start(timeout=300, progress=_say)
        serving = True
        url = f"{stack.url}/v1"
        click.echo(f"\nllmq is up: {url}   (Ctrl-C stops it)")
        click.echo(f"curl {url}/chat/completions -H 'Content-Type: application/json' "
                   f"-d '{{\"model\": \"{folder.name}\", \"messages\": [{{\"role\": \"user\", \"content\": \"Say hi\"}}]}}'")
        while not stopping:
            dead = [child for child in stack.children if not child.alive]
            if dead:
                raise click.ClickException(f"{dead[0].name} exited with code {dead[0].process.returncode}")
            time.sleep(0.2)  # supervising: nothing to wake us but a signal or a child's exit
    except (RuntimeError, TimeoutError) as exc:
        raise click.ClickException(str(exc)) from None
    except StopRequested:
        _say("stopped while starting")
    finally:
        _say("stopping ...")
        stack.stop()
        _say("stopped")
