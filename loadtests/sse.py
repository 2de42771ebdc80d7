"""Chat-completion chunks from a streamed response's lines, read the way the `openai` client's
own Stream reads them ([DONE] ends the stream, an `error` object raises openai.APIError), but
as plain dicts: building its pydantic chunk objects cost ~75 us of the load generator's CPU
per token, against ~3 us for json.loads (measured on a mocked stream of 3000 chunks)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator

import openai

try:  # the HTTP library the openai client is built on: httpx2 in recent releases, httpx before
    from httpx2 import HTTPError as TransportError
except ImportError:
    from httpx import HTTPError as TransportError

STREAM_ERROR = "An error occurred during streaming"  # openai's message when the error has none


def sse_data(lines: Iterable[str]) -> Iterator[str]:
    """The data of each server-sent event: its `data:` lines joined by newlines; a blank line ends
    an event; comments (`:`) and other fields are skipped."""
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield "\n".join(data)
                data = []
            continue
        field, _, value = line.partition(":")
        if field == "data":
            data.append(value[1:] if value.startswith(" ") else value)
    if data:
        yield "\n".join(data)


def chat_chunks(lines: Iterable[str], request=None) -> Iterator[dict]:
    """Each chunk of a chat-completions stream as a dict, until [DONE] (the rest is read, not
    yielded). Raises openai.APIError
    for an error event (as the openai client does) and ValueError for data that is not JSON."""
    events = sse_data(lines)
    for data in events:
        if data.startswith("[DONE]"):
            # Read the stream to its end (the server closes it right after [DONE]): a response
            # closed with bytes unread closes its connection too, and every request would open one.
            for _ in events:
                pass
            return
        chunk = json.loads(data)
        if isinstance(chunk, dict) and chunk.get("error"):
            error = chunk["error"]
            message = error.get("message") if isinstance(error, dict) else None
            raise openai.APIError(message if isinstance(message, str) and message else STREAM_ERROR,
                                  request=request, body=error)
        yield chunk
