"""The gateway's routes and every error path, through the real OpenAI client against a real
uvicorn and a real redis-server. A scripted worker plays the worker's side of the wire."""

import time

import httpx
import openai
import pytest
import redis

from api.keys import create_key, revoke_key
from llmq.redis_server import free_port
from tests.api.harness import client_for, wait_for

MESSAGES = [{"role": "user", "content": "Say hi"}]


def quiet_worker(job, worker):
    """Takes jobs and never answers: requests stay in flight."""


def test_health_models_docs_metrics(gateway, redis_url, tokenizer):
    assert httpx.get(gateway.url + "/health").json() == {"status": "ok"}
    models = client_for(gateway).models.list()
    assert [m.id for m in models.data] == [tokenizer.name]
    assert client_for(gateway).models.retrieve(tokenizer.name).id == tokenizer.name
    with pytest.raises(openai.NotFoundError):
        client_for(gateway).models.retrieve("gpt-4o")
    docs = httpx.get(gateway.url + "/docs")
    assert docs.status_code == 200 and "html" in docs.headers["content-type"]
    schema = httpx.get(gateway.url + "/docs/openapi.json").json()
    operations = {op["operationId"] for path in schema["paths"].values() for op in path.values()}
    assert {"createChatCompletion", "createCompletion", "listModels", "ready", "metrics"} <= operations
    metrics = httpx.get(gateway.url + "/metrics")
    assert metrics.status_code == 200 and "llmq_gateway_requests_in_flight" in metrics.text


def test_ready_needs_a_live_worker(gateway, redis_url, start_worker):
    not_ready = httpx.get(gateway.url + "/ready")
    assert not_ready.status_code == 503 and not_ready.json()["redis"] is True
    start_worker(quiet_worker)
    assert httpx.get(gateway.url + "/ready").status_code == 200


def test_unsupported_field_is_400_naming_it(gateway, redis_url, tokenizer):
    client = client_for(gateway)
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(model=tokenizer.name, messages=MESSAGES,
                                       tools=[{"type": "function", "function": {"name": "f"}}])
    assert error.value.param == "tools" and error.value.code == "unsupported_parameter"
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(model=tokenizer.name, messages=MESSAGES, max_tokens=9000)
    assert error.value.code == "context_length_exceeded" and error.value.param == "max_tokens"


def test_unknown_model_route_and_method(gateway, redis_url):
    with pytest.raises(openai.NotFoundError) as error:
        client_for(gateway).chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert error.value.code == "model_not_found"
    for method, path, status in (("POST", "/v1/nowhere", 404), ("GET", "/v1/chat/completions", 405),
                                 ("DELETE", "/health", 405)):
        response = httpx.request(method, gateway.url + path)
        assert response.status_code == status
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_body_over_the_limit_is_413(gateway, redis_url, tokenizer):
    with pytest.raises(openai.APIStatusError) as error:
        client_for(gateway).chat.completions.create(
            model=tokenizer.name, messages=[{"role": "user", "content": "x" * 100_000}])
    assert error.value.status_code == 413 and error.value.body["message"]


def test_no_worker_is_503_with_retry_after(gateway, redis_url, tokenizer):
    # /ready re-reads heartbeats: the worker of an earlier test is gone from the gateway's view too.
    wait_for(lambda: httpx.get(gateway.url + "/ready").status_code == 503, what="no live worker")
    with pytest.raises(openai.InternalServerError) as error:
        client_for(gateway).chat.completions.create(model=tokenizer.name, messages=MESSAGES)
    assert error.value.status_code == 503 and error.value.code == "no_worker"
    assert int(error.value.response.headers["retry-after"]) > 0


def test_redis_down_is_503_fast(start_gateway):
    dead = start_gateway(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as error:
        client_for(dead).chat.completions.create(model="SmolLM2-135M-Instruct", messages=MESSAGES)
    assert error.value.status_code == 503 and error.value.response.headers["retry-after"]
    assert httpx.get(dead.url + "/ready").status_code == 503
    print(f"503 with Redis down answered in {time.monotonic() - started:.3f} s")


def test_queue_bound_is_429_and_frees_on_disconnect(start_gateway, redis_url, start_worker, tokenizer):
    server = start_gateway(max_queued_requests=1)
    worker = start_worker(quiet_worker)
    client = client_for(server)
    held = client.chat.completions.create(model=tokenizer.name, messages=MESSAGES, stream=True)
    first = next(iter(held))
    assert first.choices[0].delta.role == "assistant"
    with pytest.raises(openai.RateLimitError) as error:
        client.chat.completions.create(model=tokenizer.name, messages=MESSAGES)
    assert int(error.value.response.headers["retry-after"]) >= 1
    held.close()  # the client leaves: its slot comes back and its job is aborted
    wait_for(lambda: worker.jobs and worker.aborted(worker.jobs[0]), what="abort after disconnect")
    r = redis.Redis.from_url(redis_url)
    assert not r.exists(f"llmq:client:{worker.jobs[0].request_id}")
    again = client.chat.completions.create(model=tokenizer.name, messages=MESSAGES, stream=True)
    assert next(iter(again)).choices[0].delta.role == "assistant"
    again.close()


def test_keys(start_gateway, redis_url, start_worker, tokenizer):
    server = start_gateway(require_keys=True, api_keys=("sk-static-test",))
    start_worker(lambda job, w: w.generate(job, tokenizer.encode("ok")))
    for key in (None, "sk-wrong"):
        bad = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0,
                            default_headers={"Authorization": f"Bearer {key}"} if key else {"Authorization": ""})
        with pytest.raises(openai.AuthenticationError) as error:
            bad.chat.completions.create(model=tokenizer.name, messages=MESSAGES)
        assert error.value.code == "invalid_api_key"
    assert client_for(server, api_key="sk-static-test").models.list().data
    admin = redis.Redis.from_url(redis_url)
    key, record = create_key(admin, "acme")
    reply = client_for(server, api_key=key).chat.completions.create(model=tokenizer.name, messages=MESSAGES)
    assert reply.choices[0].message.content == "ok"
    assert admin.keys("llmq:key:*") and key.encode() not in b"".join(admin.get(k) for k in admin.keys("llmq:key:*"))
    assert revoke_key(admin, key)
    with pytest.raises(openai.AuthenticationError):
        client_for(server, api_key=key).models.list()


def test_client_leaving_a_whole_request_aborts_it(gateway, start_worker, tokenizer):
    worker = start_worker(quiet_worker)
    body = {"model": tokenizer.name, "messages": MESSAGES}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(gateway.url + "/v1/chat/completions", json=body, timeout=httpx.Timeout(10, read=0.5))
    wait_for(lambda: worker.jobs and worker.aborted(worker.jobs[0]), what="abort after the client left")
    wait_for(lambda: 'llmq_gateway_requests_in_flight{model="SmolLM2-135M-Instruct"} 0.0'
             in httpx.get(gateway.url + "/metrics").text, what="request no longer in flight")
