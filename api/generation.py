"""One accepted request from dispatch to its terminal event: token events of the run become
text deltas per choice (detokenized, stop strings applied) and the usage is counted exactly."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from api.detokenize import ChoiceText
from api.plan import Plan
from api.schemas import PromptTokensDetails, Usage
from api.events import Failed, Finished, Idle, Tokens
from api.stream import GenerationRun
from workers.protocol import TokenLogprobWire


@dataclass
class Delta:
    index: int
    text: str
    logprobs: list[TokenLogprobWire] = field(default_factory=list)
    finish_reason: str | None = None


class Generation:
    def __init__(self, plan: Plan, run: GenerationRun) -> None:
        self.plan = plan
        self.run = run
        backend = plan.model.backend
        self.texts = {c.index: ChoiceText(backend, plan.stops) for c in plan.choices}
        self.completion_tokens = {c.index: 0 for c in plan.choices}
        self.finished: dict[int, str] = {}
        self.first_token_seen = False

    async def deltas(self) -> AsyncIterator[Delta | Failed | Idle]:
        """Yields deltas, Idle while waiting, and ends after every choice finished or one Failed."""
        async for event in self.run.events():
            if isinstance(event, Tokens):
                delta = await self._on_tokens(event)
                if delta is not None:
                    yield delta
            elif isinstance(event, Finished):
                if event.index not in self.finished:
                    self.finished[event.index] = event.finish_reason
                    yield Delta(event.index, self.texts[event.index].flush(), finish_reason=event.finish_reason)
            else:
                yield event
                if isinstance(event, Failed):
                    return

    async def _on_tokens(self, event: Tokens) -> Delta | None:
        index = event.index
        if index in self.finished:
            return None
        self.first_token_seen = True
        self.completion_tokens[index] += len(event.token_ids)
        text = self.texts[index]
        piece = text.push(event.token_ids)
        logprobs = list(event.logprobs or []) if self.plan.logprobs else []
        if text.stopped:
            self.finished[index] = "stop"
            await self.run.abort(index)  # the worker stops generating what nobody will read
            return Delta(index, piece, logprobs, finish_reason="stop")
        if not piece and not logprobs:
            return None
        return Delta(index, piece, logprobs)

    def usage(self) -> Usage:
        prompt_tokens = sum(len(p) for p in self.plan.prompts)
        completion_tokens = sum(self.completion_tokens.values())
        # Cached prompt tokens as the worker of each prompt's first choice reported them.
        firsts = {}
        for job in self.run.jobs:
            firsts.setdefault(self.plan.choices[job.index].prompt_index, job.num_cached_tokens)
        return Usage(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
            prompt_tokens_details=PromptTokensDetails(cached_tokens=sum(firsts.values())),
        )
