"""The tiktoken fast path encodes exactly as transformers' tokenizer, on real text."""

import inspect
import json
import random
import subprocess
import sys
import textwrap

import pytest

from api.tiktoken_bpe import from_tokenizer_json

STDLIB_MODULES = ["json", "textwrap", "inspect", "argparse", "collections", "pathlib", "email.message",
                  "http.client", "unicodedata", "decimal"]


def stdlib_corpus() -> list[str]:
    """Python's own source and docs: real English prose, code, indentation and numbers."""
    import importlib

    texts = []
    for name in STDLIB_MODULES:
        module = importlib.import_module(name)
        texts.append(inspect.getdoc(module) or "")
        try:
            source = inspect.getsource(module)
        except (OSError, TypeError):
            continue
        texts.extend(source[i : i + 2000] for i in range(0, min(len(source), 40_000), 2000))
    return [t for t in texts if t]


UNICODE_SAMPLES = [
    "naïve café déjà vu — “quoted” ‘single’ … ½ ² ³ № ∞",
    "Привет, мир! Γειά σου Κόσμε. שלום עולם. مرحبا بالعالم ١٢٣٤٥",
    "日本語のテキスト、中文文本，한국어 텍스트。",
    "emoji 🤖👍🏽👩‍👩‍👧‍👦 🇫🇷 and ZWJ\u200dstuff, combining e\u0301 a\u0308",
    "math 𝔸𝕓𝒸 𝟙𝟚𝟛 and ① ② Ⅻ ⅷ",
    "tabs\t\tand\u00a0nbsp\u2003em space\u3000ideographic",
    "\r\n\r\nwindows\rlines\x0b\x0cfeeds",
    "     leading runs", "trailing runs     ", "  \n  \n\n\t  mixed  \t\n",
    "digits 0123456789 12,345.678 1e-10 0x1F 3.14159 -42 ' 7 '  8",
    "it's they're we've I'm he'll she'd IT'S 'quoted' ''double'' 's",
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
    "text<|endoftext|>more<|im_end|><|im_start|>",
    "",
]


def random_strings(count: int = 300) -> list[str]:
    rng = random.Random(1234)
    pool = list("abcXYZ019 \t\n'.,!?-_()[]{}<>|") + ["é", "ß", "中", "🤖", "\u0301", "١", "²", "  ", "'s", "<|im_end|>"]
    return ["".join(rng.choice(pool) for _ in range(rng.randint(1, 60))) for _ in range(count)]


def test_fast_path_is_taken_for_the_default_model(tokenizer):
    assert tokenizer.fast is not None


@pytest.mark.parametrize("corpus", ["stdlib", "unicode", "random"])
def test_tiktoken_matches_transformers(tokenizer, corpus):
    texts = {"stdlib": stdlib_corpus, "unicode": lambda: UNICODE_SAMPLES, "random": random_strings}[corpus]()
    assert len(texts) > 10 or corpus == "unicode"
    compared = 0
    for text in texts:
        expected = tokenizer.backend.encode(text, add_special_tokens=False).ids
        fast = tokenizer.fast.encode(text)
        if fast is not None:
            assert fast == expected, f"tiktoken differs on {text[:80]!r}"
            compared += 1
        assert tokenizer.encode(text) == expected
    assert compared >= len(texts) - 2  # the fast path declines only texts with bytes the vocab lacks


def test_bytes_missing_from_the_vocab_fall_back_to_transformers(tokenizer):
    # \x04 is not in SmolLM2's byte alphabet: tiktoken would invent a token, so the fast path declines.
    text = "before\x04after"
    assert tokenizer.fast.encode(text) is None
    assert tokenizer.encode(text) == tokenizer.backend.encode(text, add_special_tokens=False).ids


def test_conversion_declines_what_it_cannot_express(model_dir):
    spec = json.loads((model_dir / "tokenizer.json").read_text())
    assert from_tokenizer_json(spec) is not None
    for change in (
        {"normalizer": {"type": "NFC"}},
        {"pre_tokenizer": {"type": "Metaspace", "replacement": "▁"}},
        {"model": {**spec["model"], "byte_fallback": True}},
    ):
        assert from_tokenizer_json({**spec, **change}) is None
    merges = list(spec["model"]["merges"])
    merges[10], merges[11] = merges[11], merges[10]  # ids no longer in merge order
    assert from_tokenizer_json({**spec, "model": {**spec["model"], "merges": merges}}) is None


def test_chat_template_and_context_length(tokenizer):
    text = tokenizer.render_chat([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>\n")
    assert text.endswith("<|im_start|>assistant\n")
    ids = tokenizer.encode(text)
    assert ids[0] == 1 and tokenizer.decode(ids) == text.replace("<|im_start|>", "").replace("<|im_end|>", "")
    assert tokenizer.max_model_len == 8192
    assert 2 in tokenizer.eos_token_ids


def test_token_bytes_reassemble_text(tokenizer):
    text = "héllo 🤖 world"
    ids = tokenizer.encode(text)
    assert b"".join(tokenizer.token_bytes(i) for i in ids).decode() == text


def test_gateway_imports_no_torch(model_dir):
    code = textwrap.dedent(f"""
        import sys
        from api.app import create_app
        from api.tokenizer import load_tokenizer
        tok = load_tokenizer({str(model_dir)!r})
        tok.encode(tok.render_chat([{{"role": "user", "content": "hi"}}]))
        bad = sorted(m for m in sys.modules if m == "torch" or m.startswith(("torch.", "engine")))
        assert not bad, bad
    """)
    subprocess.run([sys.executable, "-c", code], check=True)
