"""Where llmq keeps things on a user's machine. Plain stdlib, safe to import from anywhere."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_MODEL = "SmolLM2-135M-Instruct"


def home() -> Path:
    root = os.environ.get("LLMQ_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "llmq"
    )
    return Path(root)


def models_dir() -> Path:
    return home() / "models"


def resolve_model(name_or_path: str | None) -> Path:
    """A folder path as given, or a bare name looked up in the models cache."""
    name = name_or_path or DEFAULT_MODEL
    path = Path(name).expanduser()
    if path.is_dir() or os.sep in name or name.startswith("."):
        return path
    return models_dir() / name
