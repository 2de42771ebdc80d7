import pytest

from engine.backends import create_engine
from engine.config import EngineConfig
from engine.errors import ContextLengthError, InvalidRequestError
from engine.types import SamplingParams
from tests.engine.drain import drain

# "<|im_start|>user\nWhat is 12+345?<|im_end|>\n<|im_start|>assistant\n" and a plain-text prompt
CHAT_PROMPT = [1, 4093, 198, 1780, 314, 216, 33, 34, 27, 35, 36, 37, 47, 2, 198, 1, 520, 9531, 198]
TEXT_PROMPT = [504, 3458, 282, 4649, 314]
GREEDY = SamplingParams(max_tokens=12, temperature=0.0)


def reference_greedy(model, prompt, max_tokens):
    """transformers' generate, called the plain way."""
    import torch

    ids = torch.tensor([prompt])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_tokens, do_sample=False)
    return out[0, len(prompt):].tolist()


@pytest.fixture(scope="module")
def hf_engine(model_dir):
    engine = create_engine("hf", EngineConfig(model=str(model_dir), device="cpu"))
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def hf_batched_engine(model_dir):
    engine = create_engine("hf-batched", EngineConfig(model=str(model_dir), device="cpu", kv_cache_tokens=1024))
    yield engine
    engine.close()


def test_greedy_equals_transformers_generate(hf_engine):
    hf_engine.add_request("chat", CHAT_PROMPT, GREEDY)
    hf_engine.add_request("text", TEXT_PROMPT, GREEDY)
    tokens, reasons = drain(hf_engine)
    assert tokens["chat"] == reference_greedy(hf_engine.model, CHAT_PROMPT, 12)
    assert tokens["text"] == reference_greedy(hf_engine.model, TEXT_PROMPT, 12)
    assert set(reasons.values()) <= {"stop", "length"}


def test_eos_stops_and_ignore_eos_runs_to_length(hf_engine):
    # This prompt is answered in 9 tokens, the last one <|im_end|> (id 2).
    hf_engine.add_request("stops", CHAT_PROMPT, SamplingParams(max_tokens=30, temperature=0.0))
    hf_engine.add_request("ignores", CHAT_PROMPT, SamplingParams(max_tokens=30, temperature=0.0, ignore_eos=True))
    tokens, reasons = drain(hf_engine)
    assert tokens["stops"][-1] == 2 and reasons["stops"] == "stop" and len(tokens["stops"]) < 30
    assert len(tokens["ignores"]) == 30 and reasons["ignores"] == "length"
    assert tokens["ignores"][: len(tokens["stops"])] == tokens["stops"]


def test_stop_token_ids_end_the_request(hf_engine):
    expected = reference_greedy(hf_engine.model, TEXT_PROMPT, 6)
    hf_engine.add_request("a", TEXT_PROMPT, SamplingParams(max_tokens=12, temperature=0.0, stop_token_ids=(expected[3],)))
    tokens, reasons = drain(hf_engine)
    assert tokens["a"] == expected[: expected.index(expected[3]) + 1] and reasons["a"] == "stop"


def test_seeded_sampling_repeats(hf_engine):
    params = SamplingParams(max_tokens=8, temperature=0.9, top_p=0.9, top_k=50, seed=7, repetition_penalty=1.1)
    hf_engine.add_request("one", TEXT_PROMPT, params)
    hf_engine.add_request("two", TEXT_PROMPT, params)
    tokens, _ = drain(hf_engine)
    assert tokens["one"] == tokens["two"] and len(tokens["one"]) == 8


def test_abort_running_and_waiting(hf_engine):
    hf_engine.add_request("running", TEXT_PROMPT, SamplingParams(max_tokens=200, temperature=0.0, ignore_eos=True))
    hf_engine.add_request("waiting", TEXT_PROMPT, SamplingParams(max_tokens=200, temperature=0.0))
    hf_engine.add_request("after", TEXT_PROMPT, SamplingParams(max_tokens=3, temperature=0.0))
    while not hf_engine.step():  # until the first token of "running"
        pass
    hf_engine.abort("running")
    hf_engine.abort("waiting")
    tokens, reasons = drain(hf_engine)
    assert reasons == {"running": "abort", "waiting": "abort", "after": "length"}
    assert tokens["waiting"] == [] and len(tokens["after"]) == 3


@pytest.mark.parametrize(
    "params, error",
    [
        (SamplingParams(logprobs=2), InvalidRequestError),
        (SamplingParams(presence_penalty=0.5), InvalidRequestError),
        (SamplingParams(top_p=1.5), InvalidRequestError),
        (SamplingParams(max_tokens=9000), ContextLengthError),
    ],
)
def test_unsupported_or_bad_params_are_refused(hf_engine, params, error):
    with pytest.raises(error):
        hf_engine.add_request("bad", TEXT_PROMPT, params)
    assert not hf_engine.has_unfinished()


def test_batched_greedy_equals_transformers_generate(hf_batched_engine):
    hf_batched_engine.add_request("chat", CHAT_PROMPT, SamplingParams(max_tokens=30, temperature=0.0))
    hf_batched_engine.add_request("text", TEXT_PROMPT, GREEDY)
    hf_batched_engine.add_request("ignores", CHAT_PROMPT, SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True))
    tokens, reasons = drain(hf_batched_engine)
    model = hf_batched_engine.model
    assert tokens["chat"] == reference_greedy(model, CHAT_PROMPT, 30)
    assert tokens["text"] == reference_greedy(model, TEXT_PROMPT, 12)
    assert len(tokens["ignores"]) == 12 and reasons["ignores"] == "length"
    assert reasons["chat"] == "stop" and tokens["chat"][-1] == 2


def test_batched_refuses_sampling(hf_batched_engine):
    with pytest.raises(InvalidRequestError, match="hf-batched"):
        hf_batched_engine.add_request("sampled", TEXT_PROMPT, SamplingParams(temperature=0.8))


def test_dummy_weights_are_seeded_and_filled_like_our_engines(model_dir):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from engine.models.dummy import dummy_std

    config = EngineConfig(model=str(model_dir), device="cpu", dummy_weights=True, seed=3)
    one, two = create_engine("hf", config), create_engine("hf", config)
    try:
        model = one.model
        assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), two.model.state_dict().values()))
        assert model.lm_head.weight is model.model.embed_tokens.weight  # SmolLM2 ties them
        assert torch.equal(model.model.norm.weight, torch.ones_like(model.model.norm.weight))
        up = model.model.layers[0].mlp.up_proj.weight  # [1536, 576]: std 1 / sqrt(3 * 576), as our engine's
        assert abs(up.std().item() - dummy_std("up_proj.weight", tuple(up.shape))) < 0.001
        # The rotary frequencies are those of transformers' usual construction.
        usual = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir))
        assert torch.equal(model.model.rotary_emb.inv_freq, usual.model.rotary_emb.inv_freq)
        one.add_request("a", TEXT_PROMPT, SamplingParams(max_tokens=4, temperature=0.0, ignore_eos=True))
        tokens, _ = drain(one)
        assert len(tokens["a"]) == 4
    finally:
        one.close()
        two.close()


def test_dummy_model_is_built_on_the_target_device(tmp_path):
    """An 8B config on the meta device: nothing is allocated on the CPU first (that took minutes)."""
    import torch
    from transformers import AutoConfig

    from engine.backends.hf_model import dummy_hf_model
    from engine.models.dummy import write_dummy_model

    folder = write_dummy_model("llama-3.1-8b", tmp_path / "llama", tokenizer_from=tmp_path)
    model = dummy_hf_model(AutoConfig.from_pretrained(folder), torch.device("meta"), torch.bfloat16, seed=0)
    params = list(model.parameters())
    assert {p.device.type for p in params} == {"meta"} and {p.dtype for p in params} == {torch.bfloat16}
    assert sum(p.numel() for p in params) > 8e9
