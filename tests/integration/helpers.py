"""Shared by the integration tests: a stack per module, the openai client, and what Redis says."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import openai
import redis

from workers import protocol


def wait_for(condition, timeout: float = 5.0, what: str = "a condition", interval: float = 0.005):
    """Poll until condition() is truthy and return it; fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def client_for(stack, api_key: str = "sk-unused", timeout: float = 60.0) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.url + "/v1", api_key=api_key, max_retries=0, timeout=timeout)


def heartbeats(redis_url: str) -> dict[str, protocol.WorkerHeartbeat]:
    client = redis.Redis.from_url(redis_url)
    try:
        beats = {}
        for key in client.scan_iter(match=protocol.WORKER_KEY_PATTERN):
            raw = client.hget(key, protocol.HEARTBEAT_FIELD)
            if raw:
                beat = protocol.decode_heartbeat(raw)
                beats[beat.worker_id] = beat
        return beats
    finally:
        client.close()


def stream_keys(redis_url: str) -> set[bytes]:
    client = redis.Redis.from_url(redis_url)
    try:
        return set(client.scan_iter(match=protocol.stream_key("*")))
    finally:
        client.close()


def serving_workers(redis_url: str, keys: set[bytes]) -> set[str]:
    """Worker ids in the start events of these request streams."""
    client = redis.Redis.from_url(redis_url)
    try:
        ids = set()
        for key in keys:
            for _, fields in client.xrange(key, count=1):
                ids.add(protocol.decode_event(fields[protocol.EVENT_FIELD]).worker_id)
        return ids
    finally:
        client.close()


def leases(redis_url: str) -> dict[str, str]:
    """request id -> worker id of every live lease."""
    client = redis.Redis.from_url(redis_url)
    try:
        prefix = protocol.lease_key("")
        return {key.decode()[len(prefix):]: (client.get(key) or b"").decode()
                for key in client.scan_iter(match=protocol.lease_key("*"))}
    finally:
        client.close()


def tokenizer_only_copy(model_dir: Path, dest: Path) -> Path:
    """A model folder with everything but the weights: enough for the gateway to serve its name."""
    dest.mkdir(parents=True)
    for item in model_dir.iterdir():
        if item.is_file() and item.suffix != ".safetensors":
            shutil.copy(item, dest / item.name)
    return dest


def gateway_in_flight(stack) -> float:
    """Accepted requests the gateway has not finished, from its Prometheus metrics."""
    import urllib.request

    with urllib.request.urlopen(stack.url + "/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("llmq_gateway_requests_in_flight"))
