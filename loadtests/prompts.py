"""Request shapes: what each simulated user sends. Prompt and output lengths are fixed,
uniform in a range, or drawn from a realistic chat mix; requests may share system prompts
so a server with prefix caching can reuse their KV cache."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from loadtests import corpus

# Without the target's tokenizer, English prose runs about 4 tokens per 3 words.
TOKENS_PER_WORD = 4 / 3


class TokenCounter(Protocol):
    def count(self, text: str) -> int: ...
    def truncate(self, text: str, num_tokens: int) -> str: ...


class WordTokenCounter:
    """An estimate for when the server's tokenizer is not at hand."""

    def count(self, text: str) -> int:
        return math.ceil(len(text.split()) * TOKENS_PER_WORD)

    def truncate(self, text: str, num_tokens: int) -> str:
        return " ".join(text.split()[: max(1, int(num_tokens / TOKENS_PER_WORD))])


class HFTokenCounter:
    """Exact counts with the model's own tokenizer.json (the `tokenizers` library only)."""

    def __init__(self, tokenizer_json: Path):
        from tokenizers import Tokenizer

        self._tokenizer = Tokenizer.from_file(str(tokenizer_json))

    def count(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=False).ids)

    def truncate(self, text: str, num_tokens: int) -> str:
        ids = self._tokenizer.encode(text, add_special_tokens=False).ids
        return self._tokenizer.decode(ids[:num_tokens])


def token_counter(tokenizer_dir: str | Path | None) -> TokenCounter:
    if tokenizer_dir is not None and (Path(tokenizer_dir) / "tokenizer.json").is_file():
        return HFTokenCounter(Path(tokenizer_dir) / "tokenizer.json")
    return WordTokenCounter()


@dataclass(frozen=True)
class Length:
    """A token count: fixed (low == high) or uniform in [low, high]."""

    low: int
    high: int

    @classmethod
    def parse(cls, text: str) -> "Length":
        """"128" is fixed, "64:512" is uniform between the two, both inclusive."""
        low, _, high = str(text).partition(":")
        length = cls(int(low), int(high or low))
        if length.low < 1 or length.high < length.low:
            raise ValueError(f"bad length {text!r}: want N or LOW:HIGH with 1 <= LOW <= HIGH")
        return length

    def draw(self, rng: random.Random) -> int:
        return rng.randint(self.low, self.high)

    def __str__(self) -> str:
        return str(self.low) if self.low == self.high else f"{self.low}:{self.high}"


@dataclass(frozen=True)
class ChatRequest:
    messages: list[dict[str, str]]
    max_tokens: int
    kind: str  # which shape made it: "fixed", "qa", "summarize", ...
    prompt_tokens_estimate: int


@dataclass(frozen=True)
class PromptConfig:
    mix: str = "fixed"  # "fixed" (prompt/output lengths as given, fixed or a range) or "chat"
    prompt_tokens: Length = Length(128, 128)
    output_tokens: Length = Length(128, 128)
    system_prompts: int = 0  # distinct shared system prompts; 0 = none
    system_tokens: int = 256
    seed: int = 0


class TextSource:
    """Cuts token-sized passages out of the corpus at random places."""

    def __init__(self, counter: TokenCounter, rng: random.Random):
        self.counter = counter
        self.rng = rng
        self._words = corpus.words()

    def passage(self, num_tokens: int) -> str:
        # Take a generous run of words, then trim to the exact count with the counter.
        want_words = int(num_tokens / TOKENS_PER_WORD * 1.5) + 8
        start = self.rng.randrange(len(self._words))
        picked = [self._words[(start + i) % len(self._words)] for i in range(want_words)]
        return self.counter.truncate(" ".join(picked), num_tokens)


@dataclass
class RequestFactory:
    """Makes the requests of one simulated user; seeded per user so runs repeat."""

    config: PromptConfig
    counter: TokenCounter = field(default_factory=WordTokenCounter)
    user_index: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.config.seed * 1_000_003 + self.user_index)
        # System prompts are drawn from a seed shared by all users, so all users share them.
        shared = TextSource(self.counter, random.Random(self.config.seed))
        header = "You are a helpful assistant. Use the reference text when it helps.\n\n"
        body_tokens = max(1, self.config.system_tokens - self.counter.count(header))
        self.system_prompts = [header + shared.passage(body_tokens) for _ in range(self.config.system_prompts)]
        self.text = TextSource(self.counter, self.rng)

    def next(self) -> ChatRequest:
        if self.config.mix == "chat":
            from loadtests.chat_mix import chat_request

            return chat_request(self)
        if self.config.mix != "fixed":
            raise ValueError(f"unknown prompt mix {self.config.mix!r}; choose fixed or chat")
        prompt_tokens = self.config.prompt_tokens.draw(self.rng)
        messages = self.system_messages() + [{"role": "user", "content": self.text.passage(prompt_tokens)}]
        return self.finish(messages, self.config.output_tokens.draw(self.rng), "fixed")

    def system_messages(self) -> list[dict[str, str]]:
        if not self.system_prompts:
            return []
        return [{"role": "system", "content": self.rng.choice(self.system_prompts)}]

    def finish(self, messages: list[dict[str, str]], max_tokens: int, kind: str) -> ChatRequest:
        estimate = sum(self.counter.count(m["content"]) for m in messages)
        return ChatRequest(messages=messages, max_tokens=max_tokens, kind=kind, prompt_tokens_estimate=estimate)
