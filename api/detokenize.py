"""Token ids -> text for one choice, as the tokens arrive.

IncrementalDetokenizer never emits broken UTF-8: tokenizers' DecodeStream holds a token back
until the bytes it ends with form whole characters. StopStrings holds back any tail of the text
that could still become a stop string, so a stop string never leaks out, even split across tokens.
"""

from __future__ import annotations

from tokenizers import Tokenizer
from tokenizers.decoders import DecodeStream


class IncrementalDetokenizer:
    def __init__(self, tokenizer: Tokenizer, skip_special_tokens: bool = True) -> None:
        self._tokenizer = tokenizer
        self._stream = DecodeStream(skip_special_tokens=skip_special_tokens)

    def push(self, token_ids: list[int]) -> str:
        parts = []
        for token_id in token_ids:
            try:
                piece = self._stream.step(self._tokenizer, token_id)
            except Exception:  # an id outside the vocab decodes to nothing rather than killing the stream
                continue
            if piece:
                parts.append(piece)
        return "".join(parts)


class StopStrings:
    def __init__(self, stops: list[str]) -> None:
        self.stops = [s for s in stops if s]
        self._held = ""
        self.stopped = False

    def _held_tail_start(self, text: str) -> int:
        """Start of the longest tail of text that is a proper prefix of some stop string."""
        longest = max((len(s) for s in self.stops), default=1) - 1
        for start in range(max(0, len(text) - longest), len(text)):
            tail = text[start:]
            if any(stop.startswith(tail) for stop in self.stops):
                return start
        return len(text)

    def push(self, text: str) -> str:
        """The text now safe to emit. After a stop string, sets `stopped` and emits nothing more."""
        if self.stopped or not text:
            return ""
        if not self.stops:
            return text
        pending = self._held + text
        cut = min((i for i in (pending.find(stop) for stop in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            self._held = ""
            return pending[:cut]
        keep_from = self._held_tail_start(pending)
        self._held = pending[keep_from:]
        return pending[:keep_from]

    def flush(self) -> str:
        """At the end of generation, text held back for a stop string that never came."""
        held, self._held = ("" if self.stopped else self._held), ""
        return held


class ChoiceText:
    """Detokenizer and stop strings of one choice together."""

    def __init__(self, tokenizer: Tokenizer, stops: list[str]) -> None:
        self.detokenizer = IncrementalDetokenizer(tokenizer)
        self.stop_strings = StopStrings(stops)

    @property
    def stopped(self) -> bool:
        return self.stop_strings.stopped

    def push(self, token_ids: list[int]) -> str:
        return self.stop_strings.push(self.detokenizer.push(token_ids))

    def flush(self) -> str:
        return self.stop_strings.flush()
