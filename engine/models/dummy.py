"""Model folders without weights, for `dummy_weights` benchmarks of real architectures.

Speed does not depend on weight values, so a benchmark of Llama-3.1-8B's shapes needs only
its config.json; the tokenizer comes from the default model (its ids fit any larger vocab).
"""

from __future__ import annotations

import json
import shutil
from importlib import resources
from pathlib import Path

from llmq.paths import resolve_model

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def shipped_configs() -> list[str]:
    """Names of the architecture configs shipped in engine/configs (e.g. "llama-3.1-8b")."""
    folder = resources.files("engine") / "configs"
    return sorted(p.name.removesuffix(".json") for p in folder.iterdir() if p.name.endswith(".json"))


def shipped_config(name: str) -> dict:
    path = resources.files("engine") / "configs" / f"{name}.json"
    if not path.is_file():
        raise KeyError(f"no shipped config {name!r}; choose one of {', '.join(shipped_configs())}")
    return json.loads(path.read_text())


def write_dummy_model(name: str, dest: Path, tokenizer_from: Path | None = None) -> Path:
    """Write config.json (+ generation_config.json, tokenizer) of shipped config `name` into `dest`.

    The folder has no weights: use it with EngineConfig(model=dest, dummy_weights=True).
    tokenizer_from: a model folder whose tokenizer to copy (default: the default model, if pulled).
    """
    config = shipped_config(name)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    generation = {key: config[key] for key in ("bos_token_id", "eos_token_id", "pad_token_id") if key in config}
    (dest / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    source = tokenizer_from or resolve_model(None)
    for file_name in TOKENIZER_FILES:
        if (source / file_name).is_file():
            shutil.copyfile(source / file_name, dest / file_name)
    return dest


def resolve_dummy_model(model: str, scratch: Path) -> Path:
    """A folder for `model`: itself when it is a folder with config.json, else a shipped config's dummy folder."""
    path = resolve_model(model)
    if (path / "config.json").is_file():
        return path
    return write_dummy_model(model, scratch / model)
