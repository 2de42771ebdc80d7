"""The outbox batches the commands of concurrent senders and hands each its own replies."""

import asyncio

import redis
from redis.asyncio import Redis

from api.outbox import Outbox


def _with_outbox(url: str, body):
    async def run():
        client = Redis.from_url(url)
        outbox = Outbox(client)
        outbox.start()
        try:
            return await body(outbox, client)
        finally:
            await outbox.stop()
            await client.aclose()

    return asyncio.run(run())


def test_concurrent_senders_each_get_their_own_replies(redis_url):
    async def body(outbox, client):
        def sender(i):
            return lambda pipe: (pipe.set(f"outbox:{i}", i), pipe.incrby("outbox:total", i))

        replies = await asyncio.gather(*(outbox.send(sender(i)) for i in range(1, 6)))
        return replies, int(await client.get("outbox:total")), int(await client.get("outbox:3"))

    replies, total, three = _with_outbox(redis_url, body)
    assert [r[0] for r in replies] == [True] * 5
    assert sorted(r[1] for r in replies)[-1] == 15 and total == 15 and three == 3


def test_a_command_error_is_raised_to_its_sender_only(redis_url):
    async def body(outbox, client):
        await client.set("outbox:text", "not a number")
        bad = outbox.send(lambda pipe: pipe.incr("outbox:text"))
        good = outbox.send(lambda pipe: pipe.set("outbox:ok", 1))
        return await asyncio.gather(bad, good, return_exceptions=True)

    bad, good = _with_outbox(redis_url, body)
    assert isinstance(bad, Exception) and "not an integer" in str(bad)
    assert good == [True]


def test_an_unreachable_redis_fails_every_sender():
    async def body(outbox, client):
        return await asyncio.gather(*(outbox.send(lambda pipe: pipe.set("k", 1)) for _ in range(3)),
                                    return_exceptions=True)

    results = _with_outbox("redis://127.0.0.1:1/0", body)
    assert len(results) == 3 and all(isinstance(r, redis.ConnectionError) for r in results)
