import contextlib

import pytest

from api.settings import GatewaySettings
from api.tokenizer import load_tokenizer
from tests.api.harness import FakeWorker, GatewayServer


@pytest.fixture(scope="session")
def tokenizer(model_dir):
    """The default model's tokenizer as the gateway loads it."""
    return load_tokenizer(str(model_dir))


def settings_for(redis_url: str, model_dir, **overrides) -> GatewaySettings:
    defaults = dict(redis_url=redis_url, models=(str(model_dir),), keepalive_s=0.2, max_body_bytes=64 * 1024,
                    redis_timeout_s=0.5)
    return GatewaySettings(**{**defaults, **overrides})


@pytest.fixture(scope="module")
def gateway(redis_server, model_dir):
    """One gateway for a test module, on the session's Redis."""
    with GatewayServer(settings_for(redis_server.url, model_dir)) as server:
        yield server


@pytest.fixture
def start_gateway(redis_server, model_dir):
    """Starts a gateway with other settings; stopped at the end of the test."""
    with contextlib.ExitStack() as stack:
        yield lambda **overrides: stack.enter_context(
            GatewayServer(settings_for(overrides.pop("redis_url", redis_server.url), model_dir, **overrides)))


@pytest.fixture
def start_worker(redis_url, tokenizer):
    """Starts a scripted worker for the default model: behaviour(job, worker) answers each job."""
    with contextlib.ExitStack() as stack:
        yield lambda behaviour: stack.enter_context(FakeWorker(redis_url, tokenizer.name, behaviour))

