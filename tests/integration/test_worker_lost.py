"""A real worker killed after it took a job but before the job's first event: the gateway sees the
lease the worker took at pickup lapse and continues the job on another worker, well before its
deadline."""

import concurrent.futures
import signal

import pytest
import redis

from llmq.stack import LocalStack
from tests.integration.helpers import client_for, heartbeats, leases, wait_for
from workers import protocol

pytestmark = pytest.mark.integration

MODEL = "SmolLM2-135M-Instruct"
HELLO = [{"role": "user", "content": "hello"}]
SLOW_STEP = ("--engine-option", "tokens_per_s=0.5")  # a 2 s step: a job taken mid-step waits for its end
DEADLINE_S = "60"  # without the continuation the request would fail only here


def _no_events_yet(redis_url: str, request_id: str) -> bool:
    client = redis.Redis.from_url(redis_url)
    try:
        return client.xlen(protocol.stream_key(request_id)) == 0
    finally:
        client.close()


def test_a_worker_killed_after_pickup_before_any_event_is_continued_elsewhere(model_dir, tmp_path):
    with LocalStack(model=str(model_dir), backend="null", workers=1, worker_extra=SLOW_STEP,
                    log_dir=tmp_path, ready_path="/health") as stack:
        wait_for(lambda: heartbeats(stack.redis.url), 60, "the worker's heartbeat")
        client = client_for(stack, timeout=90)

        def ask(max_tokens: int):
            return client.with_options(default_headers={"X-Request-Timeout": DEADLINE_S}).chat.completions.create(
                model=MODEL, messages=HELLO, max_tokens=max_tokens, temperature=0)

        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            # The first job keeps the worker's engine in its 2 s steps; the second is taken mid-step.
            first = pool.submit(ask, 3)
            [first_id] = wait_for(lambda: list(leases(stack.redis.url)), 30, "the first job's lease")
            wait_for(lambda: not _no_events_yet(stack.redis.url, first_id), 30, "the first job's start")
            second = pool.submit(ask, 2)
            [second_id] = wait_for(lambda: [r for r in leases(stack.redis.url) if r != first_id], 30,
                                   "the second job's lease, taken at pickup")
            victim = next(c for c in stack.children if c.name == "worker-0")
            victim.signal(signal.SIGKILL)
            victim.process.wait()
            assert _no_events_yet(stack.redis.url, second_id), "the worker stepped the job before it was killed"
            stack.start_worker("worker-1", "--engine-option", "tokens_per_s=50")
            answers = [first.result(timeout=90), second.result(timeout=90)]
        assert [a.usage.completion_tokens for a in answers] == [3, 2]
        assert all(a.choices[0].finish_reason == "length" for a in answers)
