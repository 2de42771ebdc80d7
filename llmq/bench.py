"""`llmq bench ...`: each benchmark's module is imported only when it runs."""

from __future__ import annotations

import importlib

import click

BENCHES = {
    "engine": "engine.bench:engine_bench",
    "gateway": "llmq.bench_gateway:gateway_bench",
}


class _LazyBenches(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(BENCHES)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in BENCHES:
            return None
        module_name, attr = BENCHES[name].split(":")
        return getattr(importlib.import_module(module_name), attr)


@click.group(cls=_LazyBenches)
def bench() -> None:
    """Benchmarks that print a table and, last, one JSON line."""
