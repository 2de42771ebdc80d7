"""One record per request, as the load generator saw it; kept raw (JSON lines) so every
summary number can be recomputed from them."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class RequestRecord:
    kind: str  # the request shape that made it ("fixed", "qa", ...)
    start: float  # unix seconds when the request was sent
    users: int  # simulated users running when it was sent
    max_tokens: int
    ignore_eos: bool  # whether the request asked to ignore EOS
    ok: bool = False
    error: str | None = None
    status: int | None = None  # HTTP status of a failed request, when there was one
    retry_after_s: float | None = None  # the Retry-After a refusal came with
    ttft_s: float | None = None  # first content chunk, seconds after start
    e2e_s: float | None = None  # last byte of the stream, seconds after start
    prompt_tokens: int | None = None  # from the usage chunk
    completion_tokens: int | None = None  # from the usage chunk
    content_chunks: int = 0
    finish_reason: str | None = None
    itl_s: list[float] = field(default_factory=list)  # gaps between consecutive content chunks
    # Tokens came (usage, finish_reason) but none had visible text: special tokens, which random
    # weights under greedy decoding can settle on. A success with no TTFT or inter-token gaps.
    empty_text: bool = False

    @property
    def first_token_at(self) -> float | None:
        return None if self.ttft_s is None else self.start + self.ttft_s

    @property
    def end_at(self) -> float | None:
        return None if self.e2e_s is None else self.start + self.e2e_s

    @property
    def decode_tokens_per_s(self) -> float | None:
        """Tokens per second after the first token: what a reader of the stream sees."""
        if not self.ok or self.ttft_s is None or not self.completion_tokens or self.completion_tokens < 2:
            return None
        decode_s = self.e2e_s - self.ttft_s
        return (self.completion_tokens - 1) / decode_s if decode_s > 0 else None


def check_stream(record: RequestRecord) -> RequestRecord:
    """Set ok/error of a stream that ended without a transport error, from what it carried."""
    if record.ttft_s is None and record.completion_tokens and record.finish_reason:
        record.empty_text = True  # every token was a special one: nothing to show, nothing lost
    elif record.ttft_s is None:
        record.error = "stream ended without content"
    elif record.completion_tokens is None:
        record.error = "stream ended without a usage chunk (stream_options.include_usage)"
    elif record.finish_reason is None:
        record.error = "stream ended without a finish_reason"
    record.ok = record.error is None
    return record


def write_records(path: Path, records: list[RequestRecord]) -> None:
    with open(path, "w", encoding="utf-8") as out:
        for record in records:
            out.write(json.dumps(asdict(record)) + "\n")


def read_records(path: Path) -> list[RequestRecord]:
    with open(path, encoding="utf-8") as src:
        return [RequestRecord(**json.loads(line)) for line in src if line.strip()]
