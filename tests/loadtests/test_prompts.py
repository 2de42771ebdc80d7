import pytest

from loadtests.chat_mix import KINDS
from loadtests.prompts import HFTokenCounter, Length, PromptConfig, RequestFactory, WordTokenCounter, token_counter


def test_length_parses_fixed_and_ranges():
    assert Length.parse("128") == Length(128, 128)
    assert Length.parse("64:512") == Length(64, 512)
    assert str(Length.parse("64:512")) == "64:512"
    for bad in ("0", "10:5", "x", "-3"):
        with pytest.raises(ValueError):
            Length.parse(bad)


def test_fixed_lengths_are_exact():
    counter = WordTokenCounter()
    factory = RequestFactory(PromptConfig(prompt_tokens=Length(200, 200), output_tokens=Length(64, 64)), counter)
    for _ in range(20):
        request = factory.next()
        assert request.max_tokens == 64
        assert [m["role"] for m in request.messages] == ["user"]
        # The word estimate rounds to whole words: within one word of the target.
        assert 200 - 2 <= counter.count(request.messages[0]["content"]) <= 200


def test_uniform_lengths_stay_in_range_and_vary():
    counter = WordTokenCounter()
    factory = RequestFactory(PromptConfig(prompt_tokens=Length(20, 400), output_tokens=Length(10, 90)), counter)
    requests = [factory.next() for _ in range(50)]
    outputs = {r.max_tokens for r in requests}
    prompts = [r.prompt_tokens_estimate for r in requests]
    assert all(10 <= n <= 90 for n in outputs) and len(outputs) > 10
    assert all(18 <= n <= 400 for n in prompts) and max(prompts) - min(prompts) > 150


def test_system_prompts_are_shared_by_all_users_and_requests_differ_per_user():
    config = PromptConfig(system_prompts=2, system_tokens=100, seed=7)
    first, second = RequestFactory(config, user_index=0), RequestFactory(config, user_index=1)
    assert first.system_prompts == second.system_prompts and len(first.system_prompts) == 2
    systems = {first.next().messages[0]["content"] for _ in range(30)}
    assert systems == set(first.system_prompts)
    assert 90 <= WordTokenCounter().count(first.system_prompts[0]) <= 110
    assert first.next().messages[-1] != second.next().messages[-1]


def test_same_seed_repeats_the_same_requests():
    config = PromptConfig(mix="chat", seed=3)
    a, b = RequestFactory(config, user_index=5), RequestFactory(config, user_index=5)
    assert [a.next() for _ in range(10)] == [b.next() for _ in range(10)]


def test_chat_mix_draws_every_kind_within_its_bounds():
    factory = RequestFactory(PromptConfig(mix="chat", system_prompts=1, system_tokens=50))
    by_kind = {}
    for _ in range(300):
        request = factory.next()
        by_kind.setdefault(request.kind, []).append(request)
    assert set(by_kind) == {kind.name for kind in KINDS}
    for kind in KINDS:
        for request in by_kind[kind.name]:
            assert kind.output.low <= request.max_tokens <= kind.output.high
            assert request.messages[0]["role"] == "system" and request.messages[-1]["role"] == "user"
            assert len(request.messages) == 2 + 2 * len([m for m in request.messages if m["role"] == "assistant"])
    assert max(len(r.messages) for r in by_kind["conversation"]) > 2


def test_unknown_mix_is_refused():
    with pytest.raises(ValueError, match="unknown prompt mix"):
        RequestFactory(PromptConfig(mix="poetry")).next()


def test_prompt_lengths_with_the_models_own_tokenizer(model_dir):
    counter = token_counter(model_dir)
    assert isinstance(counter, HFTokenCounter)
    factory = RequestFactory(PromptConfig(prompt_tokens=Length(100, 100), system_prompts=1, system_tokens=60), counter)
    for _ in range(10):
        system, user = factory.next().messages
        # Cut at 100 ids, decoded, then encoded again: a merge at the cut may move it by a token.
        assert abs(counter.count(user["content"]) - 100) <= 1
        assert abs(counter.count(system["content"]) - 60) <= 2
