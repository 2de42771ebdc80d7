"""`llmq gateway` and `llmq keys ...`: the only place the gateway reads the environment
(each option has an LLMQ_ variable)."""

from __future__ import annotations

import sys

import click

from api.settings import GatewaySettings

REDIS_URL = click.option("--redis-url", envvar="LLMQ_REDIS_URL", default=GatewaySettings.redis_url,
                         show_default=True, help="Redis holding the queues, streams and keys.")


@click.command()
@REDIS_URL
@click.option("--host", envvar="LLMQ_HOST", default=GatewaySettings.host, show_default=True)
@click.option("--port", envvar="LLMQ_PORT", type=int, default=GatewaySettings.port, show_default=True)
@click.option("--model", "models", envvar="LLMQ_MODELS", multiple=True,
              help="Model folder or name in the models cache; repeat for several (env: space-separated). "
                   "Default: the default model.")
@click.option("--require-keys/--no-require-keys", envvar="LLMQ_REQUIRE_KEYS", default=False, show_default=True,
              help="Demand an API key created with `llmq keys create`.")
@click.option("--api-key", "api_keys", envvar="LLMQ_API_KEYS", multiple=True,
              help="A static API key (repeatable; env: space-separated). Any key turns auth on.")
@click.option("--max-body-bytes", envvar="LLMQ_MAX_BODY_BYTES", type=int, default=GatewaySettings.max_body_bytes,
              show_default=True)
@click.option("--max-queued-requests", envvar="LLMQ_MAX_QUEUED_REQUESTS", type=int,
              default=GatewaySettings.max_queued_requests, show_default=True,
              help="Per model: unfinished requests (choices) admitted before answering 429.")
@click.option("--max-tokens-in-flight", envvar="LLMQ_MAX_TOKENS_IN_FLIGHT", type=int,
              default=GatewaySettings.max_tokens_in_flight, show_default=True,
              help="Per model: prompt + max_tokens summed over admitted requests before answering 429.")
@click.option("--request-timeout", "request_timeout_s", envvar="LLMQ_REQUEST_TIMEOUT", type=float,
              default=GatewaySettings.request_timeout_s, show_default=True,
              help="Seconds a request may take; a request may ask otherwise with the X-Request-Timeout header.")
@click.option("--max-request-timeout", "max_request_timeout_s", envvar="LLMQ_MAX_REQUEST_TIMEOUT", type=float,
              default=GatewaySettings.max_request_timeout_s, show_default=True)
@click.option("--max-attempts", envvar="LLMQ_MAX_ATTEMPTS", type=int, default=GatewaySettings.max_attempts,
              show_default=True, help="Dispatches of one request, counting continuations after a worker is lost.")
@click.option("--keepalive", "keepalive_s", envvar="LLMQ_KEEPALIVE", type=float,
              default=GatewaySettings.keepalive_s, show_default=True,
              help="Seconds without a chunk before an SSE keep-alive comment.")
@click.option("--redis-timeout", "redis_timeout_s", envvar="LLMQ_REDIS_TIMEOUT", type=float,
              default=GatewaySettings.redis_timeout_s, show_default=True)
@click.option("--log-level", envvar="LLMQ_LOG_LEVEL", default=GatewaySettings.log_level, show_default=True)
def gateway(**options) -> None:
    """Run the OpenAI-compatible HTTP gateway."""
    import logging

    import uvicorn

    from api.app import create_app

    settings = settings_from_options(**options)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for path in settings.model_paths:
        if not path.is_dir():
            raise click.ClickException(f"model folder {path} not found (try `llmq models pull`)")
    click.echo(f"llmq gateway on http://{settings.host}:{settings.port} "
               f"(models: {', '.join(p.name for p in settings.model_paths)}; "
               f"keys {'on' if settings.keys_enabled else 'off'})", err=True)
    uvicorn.run(create_app(settings, freeze_heap=True), host=settings.host, port=settings.port, log_level=settings.log_level,
                timeout_graceful_shutdown=5)


def _split(values: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(part for value in values for part in value.split())


def settings_from_options(models: tuple[str, ...], api_keys: tuple[str, ...], **options) -> GatewaySettings:
    from llmq.paths import resolve_model

    folders = _split(models) or (None,)  # None: the default model in the models cache
    return GatewaySettings(models=tuple(str(resolve_model(m)) for m in folders), api_keys=_split(api_keys),
                           **options)


@click.group()
def keys() -> None:
    """Create, list and revoke API keys (stored hashed in Redis)."""


def _redis(url: str):
    import redis

    return redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)


@keys.command("create")
@REDIS_URL
@click.option("--tenant", required=True, help="Who the key belongs to.")
def create(redis_url: str, tenant: str) -> None:
    """Create a key and print it once: only its hash is stored."""
    from api.keys import create_key, hash_key

    key, _ = create_key(_redis(redis_url), tenant)
    click.echo(key)
    click.echo(f"tenant {tenant}, id {hash_key(key)[:12]} (shown once; store it now)", err=True)


@keys.command("list")
@REDIS_URL
def list_(redis_url: str) -> None:
    """Keys by id (a sha256 prefix), tenant and creation time."""
    import datetime

    from api.keys import list_keys

    for digest, record in list_keys(_redis(redis_url)):
        created = datetime.datetime.fromtimestamp(record.created_at, datetime.timezone.utc).isoformat(timespec="seconds")
        click.echo(f"{digest[:12]}  {record.tenant}  {record.hint}...  {created}")


@keys.command("revoke")
@REDIS_URL
@click.argument("key_or_id")
def revoke(redis_url: str, key_or_id: str) -> None:
    """Revoke a key, given the key itself or its id from `llmq keys list`."""
    from api.keys import revoke_key

    try:
        revoked = revoke_key(_redis(redis_url), key_or_id)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    if not revoked:
        click.echo(f"no key matches {key_or_id!r}", err=True)
        sys.exit(1)
    click.echo(f"revoked {', '.join(d[:12] for d in revoked)}")
