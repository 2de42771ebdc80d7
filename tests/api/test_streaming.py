"""The stream path end to end on the wire protocol: SSE shapes, stop strings, n choices, logprobs,
deadlines, worker errors, and continuation after a worker is lost."""

import json
import threading

import httpx
import openai
import pytest
import redis

from tests.api.harness import client_for, wait_for
from workers.protocol import TokenLogprobWire, lease_key

MESSAGES = [{"role": "user", "content": "Tell me something"}]
REPLY = "Hello there! 🤖 How are you today?"


def test_stream_chunks_in_openai_order(gateway, start_worker, tokenizer):
    reply = tokenizer.encode(REPLY)
    start_worker(lambda job, w: w.generate(job, reply, per_event=2))
    stream = client_for(gateway).chat.completions.create(
        model=tokenizer.name, messages=MESSAGES, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == REPLY
    finish = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finish) == 1 and finish[0].choices[0].finish_reason == "stop"
    assert finish[0].choices[0].delta.content is None  # the closing chunk carries no text
    usage = chunks[-1]
    assert usage.choices == [] and usage.usage.completion_tokens == len(reply)
    prompt = tokenizer.encode(tokenizer.render_chat(MESSAGES))
    assert usage.usage.prompt_tokens == len(prompt)
    assert all(c.usage is None for c in chunks[:-1])


def test_raw_sse_has_keepalives_and_done(gateway, start_worker, tokenizer):
    release = threading.Event()

    def slow(job, worker):
        worker.hold_lease(job)
        worker.emit(job, "start", num_prompt_tokens=len(job.prompt_token_ids))
        release.wait(10)
        worker.generate(job, tokenizer.encode("late"))

    start_worker(slow)
    body = {"model": tokenizer.name, "messages": MESSAGES, "stream": True}
    lines = []
    try:
        with httpx.stream("POST", gateway.url + "/v1/chat/completions", json=body, timeout=20) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            for line in response.iter_lines():
                lines.append(line)
                if line == ": keep-alive":
                    release.set()
    finally:
        release.set()
    assert ": keep-alive" in lines
    events = [line[len("data: "):] for line in lines if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and "usage" not in c for c in chunks)
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "late"


def test_stop_string_split_across_tokens_aborts_the_job(gateway, start_worker, tokenizer):
    text = "First line.\nUser: should never be seen"
    worker = start_worker(lambda job, w: w.generate(job, tokenizer.encode(text), per_event=1, finish="length"))
    for stream in (False, True):
        result = client_for(gateway).chat.completions.create(
            model=tokenizer.name, messages=MESSAGES, stop=["\nUser:"], stream=stream)
        if stream:
            chunks = list(result)
            content = "".join(c.choices[0].delta.content or "" for c in chunks)
            reason = chunks[-1].choices[0].finish_reason
        else:
            content, reason = result.choices[0].message.content, result.choices[0].finish_reason
        assert content == "First line." and reason == "stop"
        wait_for(lambda: worker.aborted(worker.jobs[-1]), what="abort of the stopped job")


def test_n_choices_with_seeds_and_logprobs(gateway, start_worker, tokenizer):
    words = ["zero", "one", "two"]

    def by_seed(job, worker):  # each choice answers the word of its seed
        worker.generate(job, tokenizer.encode(words[job.sampling.seed - 7]), logprobs=True)

    worker = start_worker(by_seed)
    reply = client_for(gateway).chat.completions.create(
        model=tokenizer.name, messages=MESSAGES, n=3, seed=7, logprobs=True, top_logprobs=2)
    assert sorted(j.sampling.seed for j in worker.jobs) == [7, 8, 9]
    assert [(c.index, c.message.content) for c in reply.choices] == list(enumerate(words))
    first = reply.choices[1].logprobs.content[0]
    token_id = tokenizer.encode("one")[0]
    assert first.token == tokenizer.token_text(token_id) and first.bytes == list(tokenizer.token_bytes(token_id))
    assert first.logprob == -0.5 and len(first.top_logprobs) == 2
    assert reply.usage.completion_tokens == sum(len(tokenizer.encode(w)) for w in words)


def test_completions_stream_and_whole(gateway, start_worker, tokenizer):
    start_worker(lambda job, w: w.generate(job, tokenizer.encode(" world and more"), per_event=2))
    client = client_for(gateway)
    whole = client.completions.create(model=tokenizer.name, prompt="Hello", max_tokens=2)
    assert whole.object == "text_completion" and whole.choices[0].finish_reason == "length"
    assert whole.choices[0].text == tokenizer.decode(tokenizer.encode(" world and more")[:2])
    chunks = list(client.completions.create(model=tokenizer.name, prompt="Hello", stream=True, logprobs=1))
    assert "".join(c.choices[0].text for c in chunks) == " world and more"
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_deadline_from_header_aborts_queued_job(gateway, start_worker, tokenizer):
    worker = start_worker(lambda job, w: None)  # takes the job, never starts it
    with pytest.raises(openai.APIStatusError) as error:
        client_for(gateway).chat.completions.create(
            model=tokenizer.name, messages=MESSAGES, extra_headers={"X-Request-Timeout": "0.5"})
    assert error.value.status_code == 504 and error.value.code == "timeout"
    assert worker.aborted(worker.jobs[0])
    with pytest.raises(openai.BadRequestError) as error:
        client_for(gateway).chat.completions.create(
            model=tokenizer.name, messages=MESSAGES, extra_headers={"X-Request-Timeout": "soon"})
    assert error.value.param == "X-Request-Timeout"


def test_worker_error_is_explicit_without_traceback(gateway, start_worker, tokenizer):
    def failing(job, worker):
        worker.emit(job, "start", num_prompt_tokens=len(job.prompt_token_ids))
        worker.emit(job, "error", error="engine exploded", error_code="engine_error")

    start_worker(failing)
    client = client_for(gateway)
    with pytest.raises(openai.InternalServerError) as error:
        client.chat.completions.create(model=tokenizer.name, messages=MESSAGES)
    assert error.value.status_code == 500 and error.value.message.endswith("engine exploded")
    assert "Traceback" not in error.value.response.text
    with pytest.raises(openai.APIError) as error:  # mid-stream: a data event with the error envelope
        list(client.chat.completions.create(model=tokenizer.name, messages=MESSAGES, stream=True))
    assert "engine exploded" in str(error.value)


def test_continuation_after_worker_lost(gateway, start_worker, tokenizer, redis_url):
    reply = tokenizer.encode(REPLY)
    cut = 4

    def dies_once(job, worker):
        if job.attempt == 0:  # starts, streams a few tokens, then vanishes with its lease
            worker.hold_lease(job)
            worker.emit(job, "start", num_prompt_tokens=len(job.prompt_token_ids))
            worker.emit(job, "tokens", token_ids=reply[:cut])
            redis.Redis.from_url(redis_url).delete(lease_key(job.request_id))
            return
        worker.emit(type("Old", (), {"request_id": job.request_id, "attempt": 0})(), "tokens",
                    token_ids=[13, 13, 13])  # a late event of the lost attempt: must be ignored
        worker.generate(job, reply[cut:])

    worker = start_worker(dies_once)
    chunks = list(client_for(gateway).chat.completions.create(
        model=tokenizer.name, messages=MESSAGES, max_tokens=50, stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == REPLY
    first, second = worker.jobs
    assert second.attempt == 1 and second.request_id == first.request_id
    assert second.prompt_token_ids == first.prompt_token_ids + reply[:cut]
    assert second.sampling.max_tokens == first.sampling.max_tokens - cut
    assert chunks[-1].usage.completion_tokens == len(reply)


def test_continuation_after_worker_lost_before_its_first_event(gateway, start_worker, tokenizer):
    def dies_at_pickup(job, worker):
        if job.attempt == 0:  # takes the job (its lease), then vanishes before any event
            worker.hold_lease(job)
            return
        worker.generate(job, tokenizer.encode(REPLY))

    worker = start_worker(dies_at_pickup)
    answer = client_for(gateway).chat.completions.create(model=tokenizer.name, messages=MESSAGES, max_tokens=50)
    assert answer.choices[0].message.content == REPLY
    first, second = worker.jobs
    assert (first.attempt, second.attempt) == (0, 1)
    assert second.prompt_token_ids == first.prompt_token_ids


def test_gives_up_after_max_attempts(start_gateway, start_worker, tokenizer):
    server = start_gateway(max_attempts=1)

    def shuts_down(job, worker):  # the worker says it cannot finish (draining past its grace)
        worker.emit(job, "start", num_prompt_tokens=len(job.prompt_token_ids))
        worker.emit(job, "tokens", token_ids=tokenizer.encode("partial"))
        worker.emit(job, "error", error="worker shutting down", error_code="worker_shutdown")

    worker = start_worker(shuts_down)
    with pytest.raises(openai.APIError) as error:
        list(client_for(server).chat.completions.create(model=tokenizer.name, messages=MESSAGES, stream=True))
    assert "giving up" in str(error.value)
    assert len(worker.jobs) == 1


def test_worker_shutdown_is_continued_elsewhere(gateway, start_worker, tokenizer):
    reply = tokenizer.encode(REPLY)

    def shuts_down_first(job, worker):
        if job.attempt == 0:
            worker.emit(job, "start", num_prompt_tokens=len(job.prompt_token_ids))
            worker.emit(job, "tokens", token_ids=reply[:2],
                        logprobs=[TokenLogprobWire(t, -1.0, []) for t in reply[:2]])
            worker.emit(job, "error", error="draining", error_code="worker_shutdown")
        else:
            worker.generate(job, reply[2:])

    worker = start_worker(shuts_down_first)
    answer = client_for(gateway).chat.completions.create(model=tokenizer.name, messages=MESSAGES)
    assert answer.choices[0].message.content == REPLY and len(worker.jobs) == 2


def test_redis_lost_mid_stream_ends_in_an_error_event(start_gateway, tokenizer):
    from llmq.redis_server import RedisServer
    from tests.api.harness import FakeWorker

    def starts_then_waits(job, worker):
        worker.hold_lease(job)
        worker.emit(job, "start", num_prompt_tokens=len(job.prompt_token_ids))
        worker.emit(job, "tokens", token_ids=tokenizer.encode("partial"))

    with RedisServer() as private:
        server = start_gateway(redis_url=private.url)
        with FakeWorker(private.url, tokenizer.name, starts_then_waits):
            stream = client_for(server).chat.completions.create(model=tokenizer.name, messages=MESSAGES,
                                                                stream=True)
            chunks = iter(stream)
            assert next(chunks).choices[0].delta.role == "assistant"
            assert next(chunks).choices[0].delta.content == "partial"
            private.stop()
            with pytest.raises(openai.APIError) as error:
                list(chunks)
    assert "connection to the queue" in str(error.value)


def test_n_choices_streamed(gateway, start_worker, tokenizer):
    words = {5: "left", 6: "right"}
    start_worker(lambda job, w: w.generate(job, tokenizer.encode(words[job.sampling.seed]), per_event=1))
    chunks = list(client_for(gateway).chat.completions.create(
        model=tokenizer.name, messages=MESSAGES, n=2, seed=5, stream=True))
    text = {0: "", 1: ""}
    finish = {}
    for chunk in chunks:
        (choice,) = chunk.choices
        text[choice.index] += choice.delta.content or ""
        if choice.finish_reason:
            finish[choice.index] = choice.finish_reason
    assert text == {0: "left", 1: "right"} and finish == {0: "stop", 1: "stop"}
    assert [c.choices[0].delta.role for c in chunks[:2]] == ["assistant", "assistant"]
