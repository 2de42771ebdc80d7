"""The publisher against a real Redis: what a reader blocked on a stream gets from one flush."""

import threading

import redis

from engine.types import RequestOutput
from tests.integration.helpers import wait_for
from tests.workers.conftest import make_job
from workers import protocol
from workers.live import LiveRequest
from workers.publisher import Outgoing, Publisher


def _blocked_readers(client: redis.Redis) -> int:
    return sum(1 for c in client.client_list() if c.get("cmd") == "xread" and "b" in c.get("flags", ""))


def test_a_blocked_reader_gets_the_start_and_the_first_tokens_in_one_reply(redis_url):
    client, reader = redis.Redis.from_url(redis_url), redis.Redis.from_url(redis_url)
    request = LiveRequest(make_job("f1"), "w1")
    replies = []
    thread = threading.Thread(daemon=True, target=lambda: replies.append(
        reader.xread({protocol.stream_key("f1"): "0-0"}, block=10_000)))
    try:
        thread.start()
        wait_for(lambda: _blocked_readers(client) == 1, what="the XREAD blocked")
        # A new request's first step: its start event and its first tokens go out in one flush.
        events = [("f1", request.start_event()), ("f1", request.tokens_event(RequestOutput("f1", [40])))]
        Publisher(client, "w1").flush(Outgoing(events=events))
        thread.join(10)
        [(key, entries)] = replies[0]
        assert [protocol.decode_event(fields[protocol.EVENT_FIELD]).type for _, fields in entries] == ["start", "tokens"]
    finally:
        client.close()
        reader.close()
