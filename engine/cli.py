"""`llmq models ...`: fetch, convert and list models. Imports no torch."""

from __future__ import annotations

from pathlib import Path

import click

from llmq.paths import DEFAULT_MODEL, models_dir, resolve_model


def _progress(line: str) -> None:
    click.echo(line, err=True)


@click.group()
def models() -> None:
    """Fetch and convert models into the local cache."""


@models.command()
@click.argument("name", default=DEFAULT_MODEL, envvar="LLMQ_MODEL")
@click.option("--dest", type=click.Path(file_okay=False, path_type=Path), envvar="LLMQ_PULL_DEST",
              help="Folder to write (default: the models cache).")
@click.option("--gguf", "gguf_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              envvar="LLMQ_PULL_GGUF", help="Convert this local GGUF file instead of downloading.")
def pull(name: str, dest: Path | None, gguf_path: Path | None) -> None:
    """Download NAME (default: the default model) and convert it once to a Hugging Face folder."""
    from engine.models.pull import pull as pull_model

    target = dest or resolve_model(name)
    try:
        folder = pull_model(name, target, gguf_path=gguf_path, progress=_progress)
    except (KeyError, FileExistsError, RuntimeError, ValueError) as error:
        raise click.ClickException(str(error.args[0] if isinstance(error, KeyError) else error)) from None
    click.echo(str(folder))


@models.command("list")
def list_models() -> None:
    """Show the models in the cache."""
    from engine.models.pull import cached_models

    found = cached_models()
    if not found:
        click.echo(f"no models in {models_dir()}; run `llmq models pull`", err=True)
        return
    for name, folder, size in found:
        click.echo(f"{name:<32} {size / 2**20:8.0f} MiB  {folder}")
