"""OpenAI response objects from deltas: streaming chunks and whole (non-streaming) bodies."""

from __future__ import annotations

from msgspec import UNSET

from api.generation import Delta
from api.schemas import (
    AssistantMessage, ChatChoice, ChatChunkChoice, ChatCompletion, ChatCompletionChunk, ChatDelta, ChatLogprobs,
    Completion, CompletionChoice, CompletionLogprobs, TokenLogprob, TopLogprob, Usage,
)
from api.tokenizer import ModelTokenizer
from workers.protocol import TokenLogprobWire


def chat_logprobs(model: ModelTokenizer, entries: list[TokenLogprobWire], top_n: int) -> ChatLogprobs:
    def top(token_id: int, logprob: float) -> TopLogprob:
        return TopLogprob(model.token_text(token_id), logprob, list(model.token_bytes(token_id)))

    return ChatLogprobs(
        content=[
            TokenLogprob(
                token=model.token_text(e.token_id), logprob=e.logprob, bytes=list(model.token_bytes(e.token_id)),
                top_logprobs=[top(t, lp) for t, lp in e.top[:top_n]],
            )
            for e in entries
        ]
    )


class CompletionLogprobsBuilder:
    """Completion logprobs carry text offsets, so they are built with the choice's running length."""

    def __init__(self, model: ModelTokenizer, top_n: int) -> None:
        self.model, self.top_n = model, top_n
        self.offset = 0

    def build(self, entries: list[TokenLogprobWire]) -> CompletionLogprobs:
        tokens, offsets = [], []
        for e in entries:
            token = self.model.token_text(e.token_id)
            tokens.append(token)
            offsets.append(self.offset)
            self.offset += len(token)
        return CompletionLogprobs(
            tokens=tokens,
            token_logprobs=[e.logprob for e in entries],
            top_logprobs=[{self.model.token_text(t): lp for t, lp in e.top[: self.top_n]} for e in entries],
            text_offset=offsets,
        )


class ChunkMaker:
    """Streaming chunks of one request, in OpenAI's shapes for chat and completions."""

    def __init__(self, kind: str, response_id: str, created: int, model: ModelTokenizer, top_n: int,
                 include_usage: bool) -> None:
        self.kind, self.id, self.created, self.model = kind, response_id, created, model
        self.top_n, self.include_usage = top_n, include_usage
        self._completion_logprobs: dict[int, CompletionLogprobsBuilder] = {}
        self._usage = None if include_usage else UNSET

    def _usage_field(self):
        return self._usage

    def role(self, index: int):
        """Chat streams open each choice with the assistant role (completions have no such chunk)."""
        choice = ChatChunkChoice(index, ChatDelta(role="assistant", content=""))
        return ChatCompletionChunk(self.id, self.created, self.model.name, [choice], usage=self._usage_field())

    def delta(self, delta: Delta):
        if self.kind == "chat":
            logprobs = chat_logprobs(self.model, delta.logprobs, self.top_n) if delta.logprobs else None
            content = ChatDelta(content=delta.text) if delta.text or delta.finish_reason is None else ChatDelta()
            choice = ChatChunkChoice(delta.index, content, logprobs, delta.finish_reason)
            return ChatCompletionChunk(self.id, self.created, self.model.name, [choice], usage=self._usage_field())
        builder = self._completion_logprobs.setdefault(delta.index, CompletionLogprobsBuilder(self.model, self.top_n))
        logprobs = builder.build(delta.logprobs) if delta.logprobs else None
        choice = CompletionChoice(delta.index, delta.text, logprobs, delta.finish_reason)
        return Completion(self.id, self.created, self.model.name, [choice], usage=self._usage_field())

    def usage(self, usage: Usage):
        if self.kind == "chat":
            return ChatCompletionChunk(self.id, self.created, self.model.name, [], usage=usage)
        return Completion(self.id, self.created, self.model.name, [], usage=usage)


class WholeResponse:
    """Accumulates deltas into the non-streaming body."""

    def __init__(self, kind: str, indices: list[int]) -> None:
        self.kind = kind
        self.text = {i: [] for i in indices}
        self.logprobs: dict[int, list[TokenLogprobWire]] = {i: [] for i in indices}
        self.finish_reason: dict[int, str] = {}

    def add(self, delta: Delta) -> None:
        self.text[delta.index].append(delta.text)
        self.logprobs[delta.index].extend(delta.logprobs)
        if delta.finish_reason:
            self.finish_reason[delta.index] = delta.finish_reason

    def build(self, response_id: str, created: int, model: ModelTokenizer, with_logprobs: bool, top_n: int,
              usage: Usage):
        indices = sorted(self.text)
        if self.kind == "chat":
            choices = [
                ChatChoice(
                    index=i, message=AssistantMessage(content="".join(self.text[i])),
                    finish_reason=self.finish_reason.get(i, "stop"),
                    logprobs=chat_logprobs(model, self.logprobs[i], top_n) if with_logprobs else None,
                )
                for i in indices
            ]
            return ChatCompletion(response_id, created, model.name, choices, usage)
        choices = [
            CompletionChoice(
                index=i, text="".join(self.text[i]), finish_reason=self.finish_reason.get(i, "stop"),
                logprobs=CompletionLogprobsBuilder(model, top_n).build(self.logprobs[i]) if with_logprobs else None,
            )
            for i in indices
        ]
        return Completion(response_id, created, model.name, choices, usage=usage)
