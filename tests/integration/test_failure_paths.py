"""Failure paths of the real stack with the fast `null` engine: error bodies the SDK understands, work
spread over two workers, a client that leaves, and Redis going away and coming back."""

import concurrent.futures

import openai
import pytest

from llmq.redis_server import RedisServer
from llmq.stack import LocalStack, wait_until_ok
from tests.integration.helpers import (
    client_for, gateway_in_flight, heartbeats, serving_workers, stream_keys, tokenizer_only_copy, wait_for,
)

pytestmark = pytest.mark.integration

MODEL = "SmolLM2-135M-Instruct"
KEY = "sk-integration"
HELLO = [{"role": "user", "content": "hello"}]
MAX_QUEUED = 4  # = the workers' slots (2 x 2): every held stream is running, so its close is seen at once


@pytest.fixture(scope="module")
def stack(model_dir, tmp_path_factory):
    ghost = tokenizer_only_copy(model_dir, tmp_path_factory.mktemp("models") / "ghost-model")  # no worker serves it
    with LocalStack(
        model=str(model_dir), backend="null", workers=2,
        worker_extra=("--engine-option", "tokens_per_s=20", "--concurrency", "2", "--drain-grace", "1"),
        gateway_extra=("--model", str(ghost), "--api-key", KEY, "--max-body-bytes", "65536",
                       "--max-queued-requests", str(MAX_QUEUED)),
        log_dir=tmp_path_factory.mktemp("null-stack"), ready_path="/health",
    ) as running:
        wait_for(lambda: len(heartbeats(running.redis.url)) == 2, 60, "two worker heartbeats")
        yield running


@pytest.fixture(scope="module")
def client(stack):
    return client_for(stack, api_key=KEY, timeout=30)


def _error(call, exc_class):
    with pytest.raises(exc_class) as info:
        call()
    body = info.value.body
    assert isinstance(body, dict) and body["message"] and body["type"], body
    return info.value


def test_error_bodies_parse_as_the_sdk_exceptions(stack, client):
    create = client.chat.completions.create
    _error(lambda: create(model=MODEL, messages=HELLO, temperature=5), openai.BadRequestError)
    _error(lambda: client_for(stack, api_key="sk-wrong").chat.completions.create(model=MODEL, messages=HELLO),
           openai.AuthenticationError)
    _error(lambda: create(model="no-such-model", messages=HELLO), openai.NotFoundError)
    too_big = _error(lambda: create(model=MODEL, messages=[{"role": "user", "content": "x" * 100_000}]),
                     openai.APIStatusError)
    assert too_big.status_code == 413
    unavailable = _error(lambda: create(model="ghost-model", messages=HELLO, max_tokens=4), openai.InternalServerError)
    assert unavailable.status_code == 503 and unavailable.response.headers.get("retry-after")


def test_past_the_queue_bound_the_answer_is_429(stack, client):
    held = [client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=1000, stream=True)
            for _ in range(MAX_QUEUED)]
    try:
        limited = _error(lambda: client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=4),
                         openai.RateLimitError)
        assert limited.response.headers.get("retry-after")
    finally:
        for stream in held:
            stream.close()
    wait_for(lambda: gateway_in_flight(stack) == 0, 10, "the gateway to let go of the held streams")
    wait_for(lambda: sum(b.running for b in heartbeats(stack.redis.url).values()) == 0, 5, "the workers to free them")


def test_two_workers_on_one_queue_both_serve(stack, client):
    # Each worker holds two jobs at most, so four at once must spread over both.
    before = stream_keys(stack.redis.url)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(lambda _: client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=10),
                                range(4)))
    assert all(r.usage.completion_tokens == 10 for r in replies)
    new = stream_keys(stack.redis.url) - before
    assert len(new) == 4
    assert serving_workers(stack.redis.url, new) == {"worker-0", "worker-1"}


def test_a_client_that_leaves_frees_the_worker_within_a_second(stack, client):
    stream = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=1000, stream=True)
    chunks = iter(stream)
    next(chunks), next(chunks)
    wait_for(lambda: sum(b.running for b in heartbeats(stack.redis.url).values()) == 1, 5, "one running request")
    stream.close()
    wait_for(lambda: sum(b.running for b in heartbeats(stack.redis.url).values()) == 0, 1.0,
             "the worker's running count back to zero")


def test_without_redis_requests_fail_fast_with_503_and_service_resumes(stack, client):
    port = stack.redis.port
    stack.redis.process.kill()
    stack.redis.stop()
    quick = client_for(stack, api_key=KEY, timeout=10)  # a hang would end in APITimeoutError, not 503
    failed = _error(lambda: quick.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=4),
                    openai.InternalServerError)
    assert failed.status_code == 503

    stack.redis = RedisServer(port=port, own_session=True).start()

    def answered():
        try:
            return quick.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=4).usage.completion_tokens
        except (openai.InternalServerError, openai.APITimeoutError):
            return None

    assert wait_for(answered, 60, "an answer after Redis came back", interval=0.5) == 4
    wait_until_ok(stack.url + "/health", 5)
