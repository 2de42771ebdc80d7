import threading
import time

import pytest
import redis

from tests.workers.fakes import ScriptedEngine
from workers import protocol
from workers.host import EngineHost
from workers.publisher import Publisher


def stream_events(client: redis.Redis, request_id: str) -> list[protocol.StreamEvent]:
    entries = client.xrange(protocol.stream_key(request_id))
    return [protocol.decode_event(fields[protocol.EVENT_FIELD]) for _, fields in entries]


def make_job(request_id: str, max_tokens: int = 4, deadline_in: float = 60.0, attempt: int = 0,
             prompt=(1, 2, 3)) -> protocol.GenerateJob:
    return protocol.GenerateJob(
        request_id=request_id, model="tiny", prompt_token_ids=list(prompt),
        sampling=protocol.Sampling(max_tokens=max_tokens, temperature=0.0),
        deadline=time.time() + deadline_in, attempt=attempt,
    )


@pytest.fixture
def client(redis_url):
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


@pytest.fixture
def engine():
    return ScriptedEngine()


@pytest.fixture
def host(client, engine):
    h = EngineHost(engine, Publisher(client, "w1"), model="tiny", backend="scripted")
    h.start()
    yield h
    h.stop()


def run_in_thread(host, job):
    """Like a Celery task thread: run_job blocks until the request ends."""
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("outcome", host.run_job(job)), daemon=True)
    thread.start()
    return thread, result
