"""`llmq bench ...`: each benchmark's module is imported only when it runs."""

from __future__ import annotations

import click

from llmq.lazy import LazyGroup

BENCHES = {
    "engine": "engine.bench:engine_bench",
    "gateway": "llmq.bench_gateway:gateway_bench",
}


@click.group(cls=LazyGroup, lazy=BENCHES)
def bench() -> None:
    """Benchmarks that print a table and, last, one JSON line."""
