"""A click group whose subcommands are imported only when they run."""

from __future__ import annotations

import importlib

import click


class LazyGroup(click.Group):
    """`commands` maps a name to "module:attr" of a click command, and `help` a name to its line."""

    def __init__(self, *args, lazy: dict[str, str], summaries: dict[str, str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy = lazy
        self.summaries = summaries or {}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.lazy)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.lazy:
            return None
        module_name, attr = self.lazy[name].split(":")
        return getattr(importlib.import_module(module_name), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        if self.summaries:
            with formatter.section("Commands"):
                formatter.write_dl([(name, self.summaries.get(name, "")) for name in self.lazy])
