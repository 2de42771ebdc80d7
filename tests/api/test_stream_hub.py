"""The shared stream reader against a real Redis: entries reach their subscriber once, in order."""

import asyncio

from redis.asyncio import Redis

from api.stream_hub import StreamHub, Subscription


def test_subscription_keeps_only_entries_past_its_cursor():
    async def check():
        sub = Subscription(["a"])
        sub.push("a", [(b"1-0", {}), (b"2-0", {})])
        sub.push("a", [(b"2-0", {}), (b"3-0", {})])  # the hub and a drain both read 2-0
        assert [e[0] for _, entries in sub.take() for e in entries] == [b"1-0", b"2-0", b"3-0"]
        assert sub.cursor["a"] == "3-0" and not sub.ready.is_set()

    asyncio.run(check())


def test_hub_delivers_each_stream_to_its_subscriber(redis_url):
    async def check():
        reader, commands = Redis.from_url(redis_url), Redis.from_url(redis_url)
        hub = StreamHub(reader, commands)
        hub.start()
        try:
            first = await hub.subscribe(["s1", "s2"])
            await commands.xadd("s1", {"e": "a"})
            await commands.xadd("s2", {"e": "b"})
            got = {}
            while sum(len(v) for v in got.values()) < 2:
                for key, entries in await hub.wait(first, 5.0):
                    got.setdefault(key, []).extend(e[1][b"e"] for e in entries)
            assert got == {"s1": [b"a"], "s2": [b"b"]}
            second = await hub.subscribe(["s3"])  # joins the XREAD already blocked
            await commands.xadd("s3", {"e": "c"})
            assert [(k, [e[1][b"e"] for e in v]) for k, v in await hub.wait(second, 5.0)] == [("s3", [b"c"])]
            await commands.xadd("s1", {"e": "d"})
            assert [e[1][b"e"] for _, v in await hub.drain(first, ["s1"]) for e in v] == [b"d"]
            hub.unsubscribe(first)
            assert set(hub.subscribers) == {"s3"}
        finally:
            await hub.stop()
            await reader.aclose()
            await commands.aclose()

    asyncio.run(check())
