"""The server under test, over HTTP only: readiness and the served model's name."""

from __future__ import annotations

import time
from typing import Callable

import httpx
import openai


def server_root(base_url: str) -> str:
    """http://host:port/v1 -> http://host:port (where /ready lives)."""
    root = base_url.rstrip("/")
    return root[: -len("/v1")] if root.endswith("/v1") else root


def wait_ready(base_url: str, timeout_s: float, still_starting: Callable[[], bool] = lambda: True) -> None:
    """Poll GET /ready until it answers 200; `still_starting` returning False ends the wait
    early (the server process died)."""
    url = server_root(base_url) + "/ready"
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        if not still_starting():
            raise RuntimeError(f"the server exited before {url} was ready ({last})")
        try:
            answer = httpx.get(url, timeout=2.0)
            if answer.status_code == 200:
                return
            last = f"HTTP {answer.status_code}: {answer.text[:200]}"
        except httpx.HTTPError as exc:
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(0.5)
    raise TimeoutError(f"{url} not ready after {timeout_s:.0f} s ({last})")


def served_model(base_url: str, api_key: str) -> str:
    """The first model GET /v1/models lists."""
    with openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=30.0) as client:
        models = [model.id for model in client.models.list()]
    if not models:
        raise RuntimeError(f"{base_url}/models lists no model; pass --model")
    return models[0]
