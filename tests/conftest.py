import os

import pytest

from llmq.paths import resolve_model
from llmq.redis_server import RedisServer


@pytest.fixture(scope="session")
def redis_server():
    """A real redis-server process for the whole test session."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_url(redis_server):
    import redis

    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture(scope="session")
def model_dir():
    """The default model, converted by `llmq models pull` (the Makefile runs it before the tests)."""
    path = resolve_model(os.environ.get("LLMQ_TEST_MODEL"))
    if not (path / "config.json").exists():
        pytest.fail(f"default model not found at {path}: run `llmq models pull` first")
    return path
