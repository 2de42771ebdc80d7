"""Rebuild a GGUF's byte-level BPE tokenizer as tokenizer.json + tokenizer_config.json."""

from __future__ import annotations

from engine.models.gguf_convert import field_value

_CONTROL = 3  # llama.cpp token type of special (control) tokens
# llama.cpp pre-tokenizer names whose regex splits every digit on its own before the GPT-2 split.
_DIGIT_SPLITTING = {"smollm", "starcoder", "refact", "codeshell", "exaone", "minerva"}


def build_tokenizer(reader):
    """A `tokenizers.Tokenizer` equal to the one the GGUF was made from."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    kind = field_value(reader, "tokenizer.ggml.model")
    if kind != "gpt2":
        raise ValueError(f"only byte-level BPE (gpt2) GGUF tokenizers convert, this one is {kind!r}")
    tokens = field_value(reader, "tokenizer.ggml.tokens")
    types = field_value(reader, "tokenizer.ggml.token_type")
    merges = [tuple(m.split(" ", 1)) for m in field_value(reader, "tokenizer.ggml.merges")]
    bpe = models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges, fuse_unk=False)
    tokenizer = Tokenizer(bpe)
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    if field_value(reader, "tokenizer.ggml.pre") in _DIGIT_SPLITTING:
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    else:
        tokenizer.pre_tokenizer = byte_level
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    specials = [t for t, kind in zip(tokens, types) if kind == _CONTROL]
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    return tokenizer


def tokenizer_config(reader, max_length: int) -> dict:
    tokens = field_value(reader, "tokenizer.ggml.tokens")

    def token(key: str) -> str | None:
        index = field_value(reader, f"tokenizer.ggml.{key}")
        return None if index is None else tokens[int(index)]

    return {
        "tokenizer_class": "GPT2Tokenizer",
        "add_bos_token": bool(field_value(reader, "tokenizer.ggml.add_bos_token", False)),
        "add_prefix_space": False,
        "bos_token": token("bos_token_id"),
        "eos_token": token("eos_token_id"),
        "unk_token": token("unknown_token_id"),
        "pad_token": token("padding_token_id"),
        "clean_up_tokenization_spaces": False,
        "model_max_length": max_length,
        "chat_template": field_value(reader, "tokenizer.chat_template"),
    }
