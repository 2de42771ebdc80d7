"""The gateway benchmark's HTTP client: keep-alive HTTP/1.1 connections on asyncio, responses
parsed by httptools (the C parser uvicorn uses), server-sent events split from the de-chunked body.

The client shares the machine's cores with the stack it measures, while the in-process baseline
has no client at all, so whatever CPU the client spends is taken from the stack. httpx (pure-Python
h11 parsing, a pool guarded by anyio locks) spent ~3 ms of CPU per streamed request and ~0.1 ms per
chunk: a herd of 32 streams waited ~100 ms on the client alone before the gateway saw its last
request. This client does the same HTTP for ~0.1 ms per request.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import httptools


class HTTPStatusError(Exception):
    """The server answered something other than 200."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection, one response at a time; httptools calls the on_* methods."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.chunks: asyncio.Queue[bytes | None] = asyncio.Queue()  # body pieces; None ends the response
        self.status = 0
        self.reusable = False
        self.lost = False

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def connection_lost(self, exc) -> None:
        self.lost = True
        self.chunks.put_nowait(None)

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        self.chunks.put_nowait(body)

    def on_message_complete(self) -> None:
        self.reusable = self.parser.should_keep_alive()
        self.chunks.put_nowait(None)


class SSEClient:
    """POSTs to one server and yields the events of each response, reusing idle connections."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname, parts.port or 80
        self._idle: list[_Connection] = []

    async def _connection(self) -> _Connection:
        while self._idle:
            connection = self._idle.pop()
            if not connection.lost:
                return connection
        _, connection = await asyncio.get_running_loop().create_connection(_Connection, self.host, self.port)
        return connection

    async def events(self, path: str, body: bytes, headers: dict[str, str] | None = None) -> AsyncIterator[bytes]:
        """The data of each `data:` event of a 200 response; comments are skipped. Raises
        HTTPStatusError for another status and ConnectionError when the connection drops mid-response."""
        connection = await self._connection()
        extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
        head = (f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n{extra}\r\n")
        connection.transport.write(head.encode() + body)
        pending, error = b"", b""
        complete = False
        try:
            while (chunk := await connection.chunks.get()) is not None:
                if connection.status != 200:
                    error += chunk
                    continue
                pending += chunk
                *events, pending = pending.split(b"\n\n")
                for event in events:
                    if event.startswith(b"data: "):
                        yield event[6:]
            if connection.lost and not connection.reusable:
                raise ConnectionError("the server closed the connection before the response ended")
            complete = True
            if connection.status != 200:
                raise HTTPStatusError(f"HTTP {connection.status}: {error[:500].decode(errors='replace')}")
        finally:
            if complete and connection.reusable and not connection.lost:
                connection.chunks = asyncio.Queue()
                self._idle.append(connection)
            else:
                connection.transport.close()

    def close(self) -> None:
        for connection in self._idle:
            connection.transport.close()
        self._idle.clear()
