"""Fast path for tokenization: a byte-level BPE tokenizer.json converted to a tiktoken Encoding.

The conversion is taken only where it is exact: the BPE model has no byte fallback, dropout,
normalizer or subword affixes; the pre-tokenizer is one regex we can write down; every vocab
token is one byte or the result of a merge; and merge results have ids in merge order, so the
token id can serve as tiktoken's rank. Bytes missing from the vocab get ranks past the vocab, and
any text that produces one is handed back to the caller (None) to tokenize the slow way.
"""

from __future__ import annotations

import functools
import logging

import tiktoken

log = logging.getLogger("llmq.gateway")

# Hugging Face's ByteLevel pre-tokenizer regex (GPT-2's), as tiktoken writes it.
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def _digits_then_gpt2(individual: bool) -> str:
    """Digits (numeric characters split off, one by one or in runs) followed by the GPT-2 regex.

    Inside a digit-free piece the GPT-2 alternatives never reach a digit, so one regex over the
    whole text gives the same pieces if (a) digits match on their own, without a leading space,
    and (b) a whitespace run stops before a non-space character *other than a digit*, because a
    digit ends the piece the run lies in.
    """
    digits = r"\p{N}" if individual else r"\p{N}+"
    return (r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+|""" + digits
            + r"""| ?[^\s\p{L}\p{N}]+|\s+(?![^\s\p{N}])|\s+""")


@functools.cache
def byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters, which byte-level vocabs use."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping = {b: chr(b) for b in printable}
    shifted = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + shifted)
            shifted += 1
    return mapping


@functools.cache
def unicode_to_byte() -> dict[str, int]:
    return {c: b for b, c in byte_to_unicode().items()}


def vocab_bytes(token: str) -> bytes | None:
    """The bytes a byte-level vocab entry stands for; None when it is not byte-level text."""
    inverse = unicode_to_byte()
    try:
        return bytes(inverse[c] for c in token)
    except KeyError:
        return None


def _pattern(pre_tokenizer: dict | None) -> str | None:
    if not pre_tokenizer:
        return None
    kind = pre_tokenizer.get("type")
    if kind == "ByteLevel":
        if pre_tokenizer.get("add_prefix_space") or not pre_tokenizer.get("use_regex", True):
            return None
        return GPT2_PATTERN
    if kind == "Sequence":
        steps = pre_tokenizer.get("pretokenizers", [])
        if len(steps) != 2:
            return None
        split, byte_level = steps
        if split.get("type") == "Digits" and byte_level.get("type") == "ByteLevel":
            if byte_level.get("add_prefix_space") or not byte_level.get("use_regex", True):
                return None
            return _digits_then_gpt2(bool(split.get("individual_digits")))
        if (
            split.get("type") == "Split"
            and split.get("behavior") == "Isolated"
            and not split.get("invert")
            and "Regex" in split.get("pattern", {})
            and byte_level.get("type") == "ByteLevel"
            and not byte_level.get("add_prefix_space")
            and not byte_level.get("use_regex", True)
        ):
            return split["pattern"]["Regex"]
    return None


def _why_not(spec: dict) -> str | None:
    model = spec.get("model", {})
    if model.get("type") != "BPE":
        return "not a BPE model"
    if model.get("byte_fallback") or model.get("dropout") or model.get("continuing_subword_prefix") or model.get(
        "end_of_word_suffix"
    ):
        return "BPE options tiktoken lacks"
    if spec.get("normalizer"):
        return "has a normalizer"
    if _pattern(spec.get("pre_tokenizer")) is None:
        return "pre-tokenizer is not one regex"
    for added in spec.get("added_tokens", []):
        if added.get("lstrip") or added.get("rstrip") or added.get("single_word"):
            return f"added token {added['content']!r} strips or matches whole words"
    return None


class TiktokenBPE:
    """Encodes exactly as the tokenizer.json it was built from, or answers None."""

    def __init__(self, encoding: tiktoken.Encoding, vocab_size: int) -> None:
        self.encoding = encoding
        self.vocab_size = vocab_size

    def encode(self, text: str) -> list[int] | None:
        ids = self.encoding.encode(text, allowed_special="all")
        if ids and max(ids) >= self.vocab_size:
            return None  # a byte the vocab lacks: the slow path decides what happens to it
        return ids


def from_tokenizer_json(spec: dict, name: str = "llmq") -> TiktokenBPE | None:
    reason = _why_not(spec)
    if reason:
        log.info("tokenizer %s: no tiktoken fast path (%s)", name, reason)
        return None
    model = spec["model"]
    vocab: dict[str, int] = model["vocab"]
    added = {t["content"]: t["id"] for t in spec.get("added_tokens", [])}
    added_ids = set(added.values())
    ranks: dict[bytes, int] = {}
    for token, token_id in vocab.items():
        if token_id in added_ids:
            continue
        raw = vocab_bytes(token)
        if raw is None or raw in ranks:
            log.info("tokenizer %s: no tiktoken fast path (vocab entry %r)", name, token)
            return None
        ranks[raw] = token_id
    # Merge results must be ranked in merge order, and every multi-byte token must come from a merge.
    merged: set[bytes] = set()
    last_rank = -1
    for merge in model.get("merges", []):
        left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
        result = (vocab_bytes(left) or b"") + (vocab_bytes(right) or b"")
        rank = ranks.get(result)
        if rank is None or rank <= last_rank:
            log.info("tokenizer %s: no tiktoken fast path (merge order differs from ids)", name)
            return None
        last_rank = rank
        merged.add(result)
    if any(len(raw) > 1 and raw not in merged for raw in ranks):
        log.info("tokenizer %s: no tiktoken fast path (tokens that no merge makes)", name)
        return None
    vocab_size = max([*vocab.values(), *added.values()]) + 1
    next_rank = vocab_size
    for b in range(256):
        if bytes([b]) not in ranks:
            ranks[bytes([b])] = next_rank
            next_rank += 1
    encoding = tiktoken.Encoding(
        name=f"llmq-{name}", pat_str=_pattern(spec["pre_tokenizer"]), mergeable_ranks=ranks, special_tokens=added
    )
    return TiktokenBPE(encoding, vocab_size)
