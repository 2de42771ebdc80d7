"""Incremental detokenization equals a full decode; stop strings never leak, however split."""

import random

import pytest

from api.detokenize import ChoiceText, IncrementalDetokenizer, StopStrings

TEXTS = [
    "Hello there! How are you today?",
    "héllo wörld — 你好，世界 🤖👍🏽 e\u0301 ½",
    "  code:\n\tdef f(x):\n\t\treturn x ** 2  # 42\n",
    "👩‍👩‍👧‍👦🇫🇷 emoji families and flags, then digits 0123456789",
]


@pytest.mark.parametrize("text", TEXTS)
def test_incremental_equals_full_decode(tokenizer, text):
    ids = tokenizer.encode(text)
    rng = random.Random(len(text))
    detok = IncrementalDetokenizer(tokenizer.backend)
    pieces, i = [], 0
    while i < len(ids):  # arrive in random batch sizes, as engine steps deliver them
        step = rng.randint(1, 3)
        piece = detok.push(ids[i : i + step])
        pieces.append(piece)
        i += step
    assert "".join(pieces) == tokenizer.decode(ids) == text
    assert all("\ufffd" not in p for p in pieces)  # never a broken character on the way


def test_multibyte_character_is_held_until_complete(tokenizer):
    ids = tokenizer.encode("🤖")
    assert len(ids) > 1  # one emoji is several byte-level tokens
    detok = IncrementalDetokenizer(tokenizer.backend)
    assert [detok.push([i]) for i in ids[:-1]] == [""] * (len(ids) - 1)
    assert detok.push(ids[-1:]) == "🤖"


def test_special_tokens_are_skipped(tokenizer):
    detok = IncrementalDetokenizer(tokenizer.backend)
    assert detok.push(tokenizer.encode("Hi<|im_end|>")) == "Hi"


def feed_in_pieces(stops, text, rng):
    matcher = StopStrings(stops)
    out, i = [], 0
    while i < len(text) and not matcher.stopped:
        step = rng.randint(1, 4)
        out.append(matcher.push(text[i : i + step]))
        i += step
    out.append(matcher.flush())
    return "".join(out), matcher.stopped


@pytest.mark.parametrize("seed", range(20))
def test_stop_string_never_leaks(seed):
    rng = random.Random(seed)
    text = "The answer is 42.\nUser: what now?\nAssistant: done"
    stops = ["\nUser:", "never-there"]
    emitted, stopped = feed_in_pieces(stops, text, rng)
    assert stopped and emitted == "The answer is 42."


@pytest.mark.parametrize("seed", range(10))
def test_text_without_stop_is_emitted_whole(seed):
    rng = random.Random(seed)
    text = "abcab abca ab"  # full of partial matches of the stop string
    emitted, stopped = feed_in_pieces(["abcabc"], text, rng)
    assert not stopped and emitted == text


def test_held_text_is_emitted_once_it_cannot_be_a_stop():
    matcher = StopStrings(["STOP"])
    assert matcher.push("go ST") == "go "
    assert matcher.push("x") == "STx"
    assert matcher.push("ST") == ""
    assert matcher.push("OP and more") == ""
    assert matcher.stopped and matcher.flush() == ""


def test_earliest_of_several_stops_wins():
    matcher = StopStrings(["b", "abc"])
    assert matcher.push("xxabc") == "xx"  # "abc" starts before "b"


def test_stop_split_across_tokens(tokenizer):
    ids = tokenizer.encode("Sure. END of story")
    choice = ChoiceText(tokenizer.backend, ["END"])
    out = "".join(choice.push([i]) for i in ids if not choice.stopped)
    assert choice.stopped and out == "Sure. "
