"""`python -m workers.health`: exit 0 when a worker of this host beats in Redis (a container healthcheck).
The heartbeat hash expires HEARTBEAT_TTL_S after the last beat, so its presence is the whole test."""

from __future__ import annotations

import socket
import sys

import click

from workers import protocol
from workers.settings import DEFAULT_REDIS_URL


@click.command()
@click.option("--redis-url", envvar="LLMQ_REDIS_URL", default=DEFAULT_REDIS_URL, show_default=True)
@click.option("--worker-id", envvar="LLMQ_WORKER_ID", default=None, help="[default: any worker of this host]")
def main(redis_url: str, worker_id: str | None) -> None:
    import redis

    pattern = protocol.worker_key(worker_id) if worker_id else protocol.worker_key(f"{socket.gethostname()}-*")
    try:
        client = redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
        alive = next(iter(client.scan_iter(match=pattern, count=1000)), None)
    except redis.RedisError as exc:
        click.echo(f"unhealthy: {exc}", err=True)
        sys.exit(1)
    if alive is None:
        click.echo("unhealthy: no heartbeat", err=True)
        sys.exit(1)
    click.echo(f"healthy: {alive.decode()}")


if __name__ == "__main__":
    main()
