"""The /v1 guard: when keys are on, a request needs `Authorization: Bearer <key>` naming a static
key or one created with `llmq keys create` (looked up by its sha256)."""

from __future__ import annotations

from litestar.connection import ASGIConnection
from litestar.handlers import BaseRouteHandler

from api.errors import APIError, unavailable
from api.keys import bearer_token, hash_key, lookup


def _unauthorized(message: str) -> APIError:
    return APIError(401, message, type="invalid_request_error", code="invalid_api_key")


async def require_api_key(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    gateway = connection.app.state.gateway
    if not gateway.settings.keys_enabled:
        return
    token = bearer_token(connection.headers.get("authorization"))
    if token is None:
        raise _unauthorized("You didn't provide an API key: send it as `Authorization: Bearer <key>`.")
    digest = hash_key(token)
    if gateway.static_keys.matches(digest):
        return
    try:
        record = await lookup(gateway.redis, digest)
    except Exception:
        raise unavailable("Cannot check API keys: the key store is unreachable.",
                          gateway.settings.unavailable_retry_after_s, code="queue_unavailable") from None
    if record is None:
        raise _unauthorized("Incorrect API key provided.")
    connection.state.tenant = record.tenant
