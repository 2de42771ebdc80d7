"""The gateway benchmark's lean HTTP client against a real gateway: the events of a stream, one
connection reused across requests, and an error status raised."""

import asyncio

import msgspec
import pytest

from llmq.bench_client import HTTPStatusError, SSEClient

MESSAGES = [{"role": "user", "content": "Tell me something"}]
REPLY = "Hello there! How are you today?"


def _body(model: str) -> bytes:
    return msgspec.json.encode({"model": model, "messages": MESSAGES, "stream": True})


async def _collect(client: SSEClient, body: bytes) -> list[bytes]:
    return [data async for data in client.events("/v1/chat/completions", body)]


def test_streams_the_events_and_reuses_its_connection(gateway, start_worker, tokenizer):
    start_worker(lambda job, w: w.generate(job, tokenizer.encode(REPLY), per_event=2))

    async def run():
        client = SSEClient(gateway.url)
        try:
            first = await _collect(client, _body(tokenizer.name))
            connection = client._idle[0]
            second = await _collect(client, _body(tokenizer.name))
            return first, second, connection is client._idle[0] and len(client._idle) == 1
        finally:
            client.close()

    first, second, reused = asyncio.run(run())
    for events in (first, second):
        assert events[-1] == b"[DONE]"
        chunks = [msgspec.json.decode(e) for e in events[:-1]]
        assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == REPLY
    assert reused


def test_an_error_status_raises(gateway, tokenizer):
    async def run():
        client = SSEClient(gateway.url)
        try:
            await _collect(client, _body("no-such-model"))
        finally:
            client.close()

    with pytest.raises(HTTPStatusError, match="404.*no-such-model"):
        asyncio.run(run())
