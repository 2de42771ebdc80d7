import json

import pytest

from engine.backends import create_engine
from engine.backends.null import NullEngine, null_token
from engine.config import EngineConfig
from engine.errors import ContextLengthError, InvalidRequestError
from engine.types import SamplingParams
from tests.engine.drain import drain

PROMPT = [5, 6, 7]


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"vocab_size": 100, "max_position_embeddings": 64, "eos_token_id": 2}))
    return tmp_path


def test_tokens_are_deterministic_and_respect_the_config(folder):
    engine = create_engine("null", EngineConfig(model=str(folder)))
    engine.add_request("a", PROMPT, SamplingParams(max_tokens=10))
    tokens, reasons = drain(engine)
    eos = frozenset({2})
    assert tokens["a"] == [null_token(PROMPT, k, 100, eos) for k in range(10)]
    assert reasons == {"a": "length"}
    assert all(32 <= t < 100 for t in tokens["a"])
    assert engine.stats().generated_tokens == 10 and engine.stats().prompt_tokens == 3


def test_defaults_without_a_config(tmp_path):
    engine = NullEngine(EngineConfig(model=str(tmp_path / "missing")))
    assert engine.vocab_size == 49152 and engine.max_model_len == 8192


def test_stop_token_ends_the_request_and_is_returned(folder):
    engine = NullEngine(EngineConfig(model=str(folder)))
    third = null_token(PROMPT, 2, 100, frozenset({2}))
    engine.add_request("a", PROMPT, SamplingParams(max_tokens=10, stop_token_ids=(third,)))
    tokens, reasons = drain(engine)
    assert tokens["a"][-1] == third and len(tokens["a"]) == 3 and reasons["a"] == "stop"


def test_eos_after_stops_unless_ignore_eos(folder):
    engine = NullEngine(EngineConfig(model=str(folder)), eos_after=4)
    engine.add_request("stops", PROMPT, SamplingParams(max_tokens=10))
    engine.add_request("ignores", PROMPT, SamplingParams(max_tokens=10, ignore_eos=True))
    tokens, reasons = drain(engine)
    assert tokens["stops"][-1] == 2 and len(tokens["stops"]) == 4 and reasons["stops"] == "stop"
    assert len(tokens["ignores"]) == 10 and reasons["ignores"] == "length"


def test_batches_up_to_max_num_seqs_in_priority_order(folder):
    engine = NullEngine(EngineConfig(model=str(folder), max_num_seqs=2))
    for name, priority in [("low", 5), ("first", 0), ("second", 0)]:
        engine.add_request(name, PROMPT, SamplingParams(max_tokens=3, priority=priority))
    first = {out.request_id for out in engine.step()}
    assert first == {"first", "second"}
    assert engine.stats().running == 2 and engine.stats().waiting == 1
    _, reasons = drain(engine)
    assert set(reasons) == {"first", "second", "low"}


def test_abort_reports_once_for_running_and_waiting(folder):
    engine = NullEngine(EngineConfig(model=str(folder), max_num_seqs=1))
    engine.add_request("running", PROMPT, SamplingParams(max_tokens=50))
    engine.add_request("waiting", PROMPT, SamplingParams(max_tokens=50))
    engine.step()
    engine.abort("running")
    engine.abort("waiting")
    engine.abort("unknown")
    outputs = engine.step()
    assert sorted((o.request_id, o.finish_reason, o.new_token_ids) for o in outputs) == [
        ("running", "abort", []), ("waiting", "abort", [])
    ]
    assert not engine.has_unfinished()


def test_logprobs_come_with_each_token(folder):
    engine = NullEngine(EngineConfig(model=str(folder)))
    engine.add_request("a", PROMPT, SamplingParams(max_tokens=2, logprobs=3))
    out = engine.step()[0]
    assert out.logprobs[0].token_id == out.new_token_ids[0] and len(out.logprobs[0].top) == 3


@pytest.mark.parametrize(
    "prompt, params, error",
    [
        ([], SamplingParams(), InvalidRequestError),
        ([100], SamplingParams(), InvalidRequestError),
        (PROMPT, SamplingParams(top_p=0.0), InvalidRequestError),
        (PROMPT, SamplingParams(max_tokens=62), ContextLengthError),
    ],
)
def test_bad_requests_are_refused(folder, prompt, params, error):
    engine = NullEngine(EngineConfig(model=str(folder)))
    with pytest.raises(error):
        engine.add_request("a", prompt, params)
    assert not engine.has_unfinished()


def test_duplicate_request_id_is_refused(folder):
    engine = NullEngine(EngineConfig(model=str(folder)))
    engine.add_request("a", PROMPT, SamplingParams())
    with pytest.raises(InvalidRequestError, match="already in use"):
        engine.add_request("a", PROMPT, SamplingParams())
