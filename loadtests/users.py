"""The Locust user: a real `openai` client that streams chat completions (chunks read as
dicts, loadtests/sse.py) and reports, per request, TTFT, end-to-end latency, output tokens,
tokens/s after the first token and inter-token gaps. Imports locust, so only the driver process imports this module.

Locust rows (the CSV's Type column holds the unit):
  ms    ttft   time to the first content chunk
  ms    e2e    whole request; its content size is the output tokens (usage chunk)
  ms    itl    one entry per gap between consecutive content chunks
  tok/s decode tokens per second after the first token (the "response time" is tok/s)
"""

from __future__ import annotations

import itertools
import time

import openai
from locust import User, constant, task

from loadtests.prompts import ChatRequest, PromptConfig, RequestFactory, TokenCounter, WordTokenCounter
from loadtests.records import RequestRecord, check_stream
from loadtests.sse import TransportError, chat_chunks


FAILURE_PAUSE_S = 1.0  # after a failed request, unless the server said Retry-After
MAX_FAILURE_PAUSE_S = 10.0


def _retry_after(header: str | None) -> float | None:
    try:
        return float(header) if header else None
    except ValueError:  # an HTTP date: not worth parsing for a pause
        return None


class ChatUser(User):
    wait_time = constant(0)
    # Set by the driver before the run starts (one run per process).
    model: str = ""
    api_key: str = "none"
    prompt_config: PromptConfig = PromptConfig()
    counter: TokenCounter = WordTokenCounter()
    ignore_eos: bool = True
    temperature: float = 0.0
    request_timeout_s: float = 600.0
    records: list[RequestRecord] = []
    notes: list[str] = []
    chunks_received = 0  # content chunks of all users, for the progress line
    _user_numbers = itertools.count()

    def on_start(self) -> None:
        self.client = openai.OpenAI(
            base_url=self.host, api_key=self.api_key, max_retries=0, timeout=self.request_timeout_s
        )
        self.factory = RequestFactory(self.prompt_config, self.counter, user_index=next(self._user_numbers))

    def on_stop(self) -> None:
        self.client.close()

    @task
    def chat(self) -> None:
        request = self.factory.next()
        record = self._stream(request, ignore_eos=ChatUser.ignore_eos)
        if record.status == 400 and record.ignore_eos and "ignore_eos" in (record.error or ""):
            # The server refuses the extension: fall back to max_tokens alone, once for all users.
            if ChatUser.ignore_eos:
                ChatUser.ignore_eos = False
                ChatUser.notes.append("server refused ignore_eos (HTTP 400): outputs may end before max_tokens")
            record = self._stream(request, ignore_eos=False)
        self.records.append(record)
        self._report(record)
        if not record.ok:
            # A refusing or absent server would otherwise be hammered in a tight loop.
            time.sleep(min(record.retry_after_s or FAILURE_PAUSE_S, MAX_FAILURE_PAUSE_S))

    def _stream(self, request: ChatRequest, ignore_eos: bool) -> RequestRecord:
        record = RequestRecord(
            kind=request.kind, start=time.time(), users=self.environment.runner.user_count,
            max_tokens=request.max_tokens, ignore_eos=ignore_eos,
        )
        started = time.perf_counter()
        last_chunk_at = None
        try:
            # The openai client makes the request and raises its errors (status, connection); the
            # stream's chunks are read as dicts (loadtests/sse.py), light enough that one Locust
            # process keeps up with thousands of tokens per second without delaying their timestamps.
            with self.client.chat.completions.with_streaming_response.create(
                model=self.model,
                messages=request.messages,
                max_tokens=request.max_tokens,
                temperature=self.temperature,
                stream=True,
                stream_options={"include_usage": True},
                extra_body={"ignore_eos": True} if ignore_eos else None,
            ) as response:
                for chunk in chat_chunks(response.iter_lines(), response.http_response.request):
                    now = time.perf_counter()
                    usage = chunk.get("usage")
                    if usage:
                        record.prompt_tokens = usage.get("prompt_tokens")
                        record.completion_tokens = usage.get("completion_tokens")
                    for choice in chunk.get("choices") or ():
                        if choice.get("finish_reason"):
                            record.finish_reason = choice["finish_reason"]
                        if not (choice.get("delta") or {}).get("content"):
                            continue
                        if last_chunk_at is None:
                            record.ttft_s = now - started
                        else:
                            record.itl_s.append(now - last_chunk_at)
                        last_chunk_at = now
                        record.content_chunks += 1
                        ChatUser.chunks_received += 1
            record.e2e_s = time.perf_counter() - started
        except openai.APIStatusError as exc:
            record.status = exc.status_code
            record.retry_after_s = _retry_after(exc.response.headers.get("retry-after"))
            record.error = f"HTTP {exc.status_code}: {exc.message}"
            return record
        except (openai.APIError, OSError, ValueError) as exc:
            record.error = f"{type(exc).__name__}: {exc}"
            return record
        except TransportError as exc:  # the connection broke mid-stream (openai's Stream says APIConnectionError)
            record.error = f"APIConnectionError: {type(exc).__name__}: {exc}"
            return record
        return check_stream(record)

    def _report(self, record: RequestRecord) -> None:
        fire = self.environment.events.request.fire
        if not record.ok:
            fire(request_type="ms", name="e2e", response_time=(record.e2e_s or 0) * 1000,
                 response_length=0, exception=RuntimeError(record.error), context={})
            return
        if record.ttft_s is not None:
            fire(request_type="ms", name="ttft", response_time=record.ttft_s * 1000, response_length=0,
                 exception=None, context={})
        fire(request_type="ms", name="e2e", response_time=record.e2e_s * 1000,
             response_length=record.completion_tokens, exception=None, context={})
        for gap in record.itl_s:
            fire(request_type="ms", name="itl", response_time=gap * 1000, response_length=0,
                 exception=None, context={})
        if record.decode_tokens_per_s is not None:
            fire(request_type="tok/s", name="decode", response_time=record.decode_tokens_per_s,
                 response_length=record.completion_tokens, exception=None, context={})
