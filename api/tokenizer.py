"""A served model's tokenizer: chat template rendering, encoding (tiktoken when exact, else
transformers' fast tokenizer), per-token bytes for logprobs, and the context length.

transformers' tokenizer classes load without torch; api/ must never pull torch in.
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path

from tokenizers import Tokenizer

from api.errors import bad_request
from api.tiktoken_bpe import TiktokenBPE, from_tokenizer_json, vocab_bytes

log = logging.getLogger("llmq.gateway")

DEFAULT_MAX_MODEL_LEN = 2048
# Strings the fast path must encode exactly as transformers before it is trusted.
_SELF_CHECK = ["Hello, world! It's 2024.", "  leading\n\n\ttabs and   runs  ", "héllo wörld — 你好 🤖", "x'll 'VE"]


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def _as_list(value) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, list) else [int(value)]


class ModelTokenizer:
    def __init__(self, folder: Path) -> None:
        from transformers import PreTrainedTokenizerFast  # loads no torch

        self.folder = Path(folder)
        self.name = self.folder.name
        self.hf = PreTrainedTokenizerFast.from_pretrained(str(self.folder))
        self.backend: Tokenizer = self.hf.backend_tokenizer
        config = _read_json(self.folder / "config.json")
        generation = _read_json(self.folder / "generation_config.json")
        self.max_model_len = self._context_length(config)
        self.eos_token_ids = tuple(
            sorted({*_as_list(self.hf.eos_token_id), *_as_list(config.get("eos_token_id")),
                    *_as_list(generation.get("eos_token_id"))})
        )
        self.vocab_size = len(self.hf)
        self._wrap_prefix, self._wrap_suffix = self._special_wrapping()
        self.fast = self._fast_path()
        self._token_bytes = self._bytes_table()

    def _context_length(self, config: dict) -> int:
        for key in ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length"):
            if isinstance(config.get(key), int) and config[key] > 0:
                return config[key]
        limit = self.hf.model_max_length
        return int(limit) if isinstance(limit, int) and 0 < limit < 10_000_000 else DEFAULT_MAX_MODEL_LEN

    def _special_wrapping(self) -> tuple[list[int], list[int]]:
        """Ids the post-processor adds around a single sequence (BOS/EOS), found by comparison."""
        core = self.backend.encode("a", add_special_tokens=False).ids
        full = self.backend.encode("a", add_special_tokens=True).ids
        for start in range(len(full) - len(core) + 1):
            if full[start : start + len(core)] == core:
                return full[:start], full[start + len(core) :]
        return [], []

    def _fast_path(self) -> TiktokenBPE | None:
        spec_path = self.folder / "tokenizer.json"
        if not spec_path.exists():
            return None
        fast = from_tokenizer_json(json.loads(spec_path.read_text()), self.name)
        if fast is None:
            return None
        for text in _SELF_CHECK:
            if fast.encode(text) != self.backend.encode(text, add_special_tokens=False).ids:
                log.warning("tokenizer %s: tiktoken disagrees with transformers, using transformers", self.name)
                return None
        return fast

    def _bytes_table(self) -> list[bytes]:
        table: list[bytes] = []
        special = {t.content for t in self.backend.get_added_tokens_decoder().values()}
        for token_id in range(self.vocab_size):
            token = self.backend.id_to_token(token_id) or ""
            raw = None if token in special else vocab_bytes(token)
            table.append(raw if raw is not None else self.backend.decode([token_id], skip_special_tokens=False).encode())
        return table

    # ---- interface ----------------------------------------------------------------------------

    def render_chat(self, messages: list[dict]) -> str:
        """The prompt text for a chat; template errors (e.g. roles out of order) are a 400."""
        try:
            return self.hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except Exception as exc:  # jinja raises its own exceptions, including raise_exception()
            raise bad_request(f"The chat template rejected these messages: {exc}", param="messages") from None

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        ids = self.fast.encode(text) if self.fast is not None else None
        if ids is None:
            ids = self.backend.encode(text, add_special_tokens=False).ids
        if add_special_tokens:
            return [*self._wrap_prefix, *ids, *self._wrap_suffix]
        return ids

    def token_bytes(self, token_id: int) -> bytes:
        if 0 <= token_id < len(self._token_bytes):
            return self._token_bytes[token_id]
        return b""

    def token_text(self, token_id: int) -> str:
        return self.token_bytes(token_id).decode("utf-8", errors="backslashreplace")

    def decode(self, token_ids: list[int]) -> str:
        return self.backend.decode(token_ids, skip_special_tokens=True)


@functools.lru_cache(maxsize=8)
def load_tokenizer(folder: str) -> ModelTokenizer:
    """Loaded once per process: tests and apps that serve the same folder share it."""
    return ModelTokenizer(Path(folder))
