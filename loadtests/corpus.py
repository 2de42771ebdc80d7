"""Real English text available offline: the Zen of Python and the docstrings of stdlib
modules. Prompts are cut from it so a load test needs no download."""

from __future__ import annotations

import codecs
import contextlib
import functools
import importlib
import inspect
import io
import re
from pathlib import Path

# Modules whose docstrings are mostly prose; importing them is cheap and has no side effects.
_MODULES = (
    "textwrap", "difflib", "argparse", "collections", "json", "logging", "threading",
    "subprocess", "unittest", "email", "http.client", "urllib.request", "functools",
    "itertools", "pathlib", "shutil", "tempfile", "zipfile", "tarfile", "csv", "random",
    "statistics", "decimal", "fractions", "datetime", "calendar", "string", "heapq",
    "bisect", "queue", "socket", "pickle", "copy", "pprint", "inspect", "dataclasses",
    "enum", "contextlib", "abc", "io", "os", "sched", "selectors", "smtplib",
    "ftplib", "imaplib", "mailbox", "configparser", "gettext", "locale", "optparse",
)
_MIN_WORDS = 8


def _zen_of_python() -> str:
    # `import this` prints the Zen on import; its text is kept rot13-encoded in `this.s`.
    with contextlib.redirect_stdout(io.StringIO()):
        this = importlib.import_module("this")
    return codecs.decode(this.s, "rot13")


def _docstrings(module_name: str) -> list[str]:
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return []
    docs = [inspect.getdoc(module) or ""]
    for name, member in vars(module).items():
        if name.startswith("_") or getattr(member, "__module__", None) != module.__name__:
            continue
        if inspect.isclass(member) or inspect.isfunction(member):
            docs.append(inspect.getdoc(member) or "")
    return docs


def _is_prose(paragraph: str) -> bool:
    """Keep paragraphs of plain sentences: no doctest lines, no code-heavy text."""
    if ">>>" in paragraph or "::" in paragraph or paragraph.lstrip().startswith(("-", "*", "|")):
        return False
    words = paragraph.split()
    if len(words) < _MIN_WORDS:
        return False
    letters = sum(ch.isalpha() or ch.isspace() for ch in paragraph)
    return letters / len(paragraph) > 0.9


def _paragraphs(text: str) -> list[str]:
    chunks = re.split(r"\n\s*\n", text)
    return [" ".join(chunk.split()) for chunk in chunks]


@functools.lru_cache(maxsize=1)
def paragraphs() -> tuple[str, ...]:
    """Prose paragraphs, deduplicated, in a fixed order (so seeded runs repeat exactly)."""
    texts = [_zen_of_python()]
    for name in _MODULES:
        texts.extend(_docstrings(name))
    readme = Path(__file__).resolve().parent.parent / "README.md"
    if readme.is_file():
        texts.append(readme.read_text(encoding="utf-8", errors="replace"))
    seen: dict[str, None] = {}
    for text in texts:
        for paragraph in _paragraphs(text):
            if _is_prose(paragraph):
                seen.setdefault(paragraph, None)
    return tuple(seen)


@functools.lru_cache(maxsize=1)
def words() -> tuple[str, ...]:
    return tuple(word for paragraph in paragraphs() for word in paragraph.split())
