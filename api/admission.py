"""Admission control per served model, in-process (one gateway is one process).

A request takes a slot for each of its choices and prompt + max_tokens tokens per choice;
past either bound the answer is 429 at once, with Retry-After. A request larger than the whole
token bound is still let in when its model has nothing in flight, so it is never refused forever.
"""

from __future__ import annotations

from dataclasses import dataclass

from api.errors import rate_limited


@dataclass
class ModelLoad:
    requests: int = 0
    tokens: int = 0


class Ticket:
    """A held slot; release() is idempotent so every exit path may call it."""

    def __init__(self, admission: "Admission", model: str, requests: int, tokens: int) -> None:
        self._admission, self.model, self.requests, self.tokens = admission, model, requests, tokens
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._admission._give_back(self)


class Admission:
    def __init__(self, max_requests: int, max_tokens: int, retry_after_s: int = 1) -> None:
        self.max_requests = max_requests
        self.max_tokens = max_tokens
        self.retry_after_s = retry_after_s
        self.load: dict[str, ModelLoad] = {}

    def admit(self, model: str, requests: int, tokens: int) -> Ticket:
        load = self.load.setdefault(model, ModelLoad())
        if load.requests + requests > self.max_requests:
            raise rate_limited(
                f"Too many requests queued for model `{model}` ({load.requests} of {self.max_requests}); retry later.",
                self.retry_after_s,
            )
        if load.requests > 0 and load.tokens + tokens > self.max_tokens:
            raise rate_limited(
                f"Too many tokens in flight for model `{model}` ({load.tokens} + {tokens} > {self.max_tokens}); "
                "retry later.",
                self.retry_after_s,
            )
        load.requests += requests
        load.tokens += tokens
        return Ticket(self, model, requests, tokens)

    def _give_back(self, ticket: Ticket) -> None:
        load = self.load[ticket.model]
        load.requests -= ticket.requests
        load.tokens -= ticket.tokens
