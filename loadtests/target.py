"""The server under test, over HTTP only."""

from __future__ import annotations

import openai


def server_root(base_url: str) -> str:
    """http://host:port/v1 -> http://host:port (where /ready lives)."""
    root = base_url.rstrip("/")
    return root[: -len("/v1")] if root.endswith("/v1") else root


def served_model(base_url: str, api_key: str) -> str:
    """The first model GET /v1/models lists."""
    with openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=30.0) as client:
        try:
            models = [model.id for model in client.models.list()]
        except openai.APIConnectionError as exc:
            raise RuntimeError(f"cannot reach {base_url}: {exc}") from None
    if not models:
        raise RuntimeError(f"{base_url}/models lists no model; pass --model")
    return models[0]
