"""Request validation: supported fields become engine parameters, anything else is a 400 naming it."""

import msgspec
import pytest
from litestar import post
from litestar.params import JSONBody
from litestar.testing import create_test_client

from api.errors import EXCEPTION_HANDLERS, APIError
from api.plan import plan_chat, plan_completion
from api.schemas import ChatCompletionRequest, CompletionRequest


def chat(**fields) -> ChatCompletionRequest:
    body = {"model": "SmolLM2-135M-Instruct", "messages": [{"role": "user", "content": "Hi"}], **fields}
    return msgspec.convert(body, ChatCompletionRequest)


@pytest.fixture
def models(tokenizer):
    return {tokenizer.name: tokenizer}


def test_fields_become_sampling(models, tokenizer):
    plan = plan_chat(chat(max_tokens=7, temperature=0.5, top_p=0.9, top_k=40, n=3, seed=10, stop="\n",
                          presence_penalty=0.1, frequency_penalty=-0.2, logprobs=True, top_logprobs=2,
                          stream=True, stream_options={"include_usage": True}, user="u1"), models)
    assert [c.sampling.seed for c in plan.choices] == [10, 11, 12]  # one seed per choice
    s = plan.choices[0].sampling
    assert (s.max_tokens, s.temperature, s.top_p, s.top_k, s.logprobs) == (7, 0.5, 0.9, 40, 2)
    assert (s.presence_penalty, s.frequency_penalty) == (0.1, -0.2)
    assert 2 in s.stop_token_ids
    assert plan.stops == ["\n"] and plan.stream and plan.include_usage and plan.top_logprobs == 2
    assert plan.prompts[0] == tokenizer.encode(tokenizer.render_chat([{"role": "user", "content": "Hi"}]))


def test_defaults(models, tokenizer):
    plan = plan_chat(chat(), models)
    s = plan.choices[0].sampling
    assert s.max_tokens == tokenizer.max_model_len - len(plan.prompts[0])  # the rest of the context
    assert (s.temperature, s.top_p, s.top_k, s.seed, s.logprobs) == (1.0, 1.0, 0, None, None)
    assert plan.choices[0].sampling.max_tokens == plan_chat(chat(max_completion_tokens=None), models).choices[
        0].sampling.max_tokens
    assert plan_chat(chat(max_completion_tokens=5, max_tokens=9), models).choices[0].sampling.max_tokens == 5


def test_ignore_eos_and_repetition_penalty_extensions(models, tokenizer):
    s = plan_chat(chat(ignore_eos=True, repetition_penalty=1.3), models).choices[0].sampling
    assert s.ignore_eos and s.stop_token_ids == () and s.repetition_penalty == 1.3
    s = plan_chat(chat(), models).choices[0].sampling
    assert not s.ignore_eos and set(tokenizer.eos_token_ids) <= set(s.stop_token_ids)
    assert s.repetition_penalty == 1.0


def test_explicit_nulls_mean_defaults(models):
    plan = plan_chat(chat(n=None, stop=None, temperature=None, logprobs=None, stream=None, user=None), models)
    assert len(plan.choices) == 1 and plan.stops == [] and not plan.stream and not plan.logprobs


def test_text_parts_and_developer_role(models):
    parts = plan_chat(chat(messages=[{"role": "developer", "content": "Sys"},
                                     {"role": "user", "content": [{"type": "text", "text": "a"},
                                                                  {"type": "text", "text": "b"}]}]), models)
    plain = plan_chat(chat(messages=[{"role": "system", "content": "Sys"}, {"role": "user", "content": "a\nb"}]),
                      models)
    assert parts.prompts == plain.prompts


@pytest.mark.parametrize("fields, param", [
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages[0].content[0].type"),
    ({"stream_options": {"include_usage": True}}, "stream_options"),
    ({"top_logprobs": 3}, "top_logprobs"),
    ({"max_tokens": 9000}, "max_tokens"),
    ({"messages": [{"role": "user", "content": "word " * 9000}]}, "messages"),
])
def test_invalid_requests_name_the_param(models, fields, param):
    with pytest.raises(APIError) as error:
        plan_chat(chat(**fields), models)
    assert error.value.status == 400 and error.value.body.param == param


def test_context_length_code(models):
    with pytest.raises(APIError) as error:
        plan_chat(chat(max_tokens=8190), models)
    assert error.value.body.code == "context_length_exceeded"
    assert "maximum context length is 8192" in error.value.body.message


def test_unknown_model_is_404(models):
    with pytest.raises(APIError) as error:
        plan_chat(chat(model="gpt-4"), models)
    assert error.value.status == 404 and error.value.body.code == "model_not_found"


def test_completion_prompts(models, tokenizer):
    def completion(**fields):
        return plan_completion(msgspec.convert({"model": tokenizer.name, **fields}, CompletionRequest), models)

    assert completion(prompt="Hello").prompts == [tokenizer.encode("Hello", add_special_tokens=True)]
    assert completion(prompt=[1, 2, 3]).prompts == [[1, 2, 3]]
    batch = completion(prompt=["a", "b"], n=2, max_tokens=4)
    assert [(c.index, c.prompt_index) for c in batch.choices] == [(0, 0), (1, 0), (2, 1), (3, 1)]
    for fields, param in (({"prompt": [1, "a"]}, "prompt"), ({"prompt": [10**9]}, "prompt"),
                          ({"prompt": "x", "echo": True}, "echo")):
        with pytest.raises(APIError) as error:
            completion(**fields)
        assert error.value.body.param == param


# Schema-level checks run in Litestar's body decoding: see them through a tiny app with our handlers.
@post("/chat", sync_to_thread=False)
def echo_chat(data: JSONBody[ChatCompletionRequest]) -> dict:
    return {"ok": True}


@pytest.mark.parametrize("body, param, code", [
    ({"tools": [{"type": "function"}]}, "tools", "unsupported_parameter"),
    ({"response_format": {"type": "json_object"}}, "response_format", "unsupported_parameter"),
    ({"logit_bias": {"1": 5}}, "logit_bias", "unsupported_parameter"),
    ({"functions": []}, "functions", "unsupported_parameter"),
    ({"messages": [{"role": "user", "content": "x", "tool_calls": []}]}, "messages[0].tool_calls",
     "unsupported_parameter"),
    ({"temperature": 3}, "temperature", None),
    ({"n": 0}, "n", None),
    ({"max_tokens": "ten"}, "max_tokens", None),
    ({"messages": []}, "messages", None),
])
def test_schema_errors_are_400_with_param(body, param, code):
    full = {"model": "m", "messages": [{"role": "user", "content": "x"}], **body}
    with create_test_client([echo_chat], exception_handlers=EXCEPTION_HANDLERS) as client:
        response = client.post("/chat", json=full)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == param and error["code"] == code and error["type"] == "invalid_request_error"
    assert error["message"]


def test_malformed_json_is_400():
    with create_test_client([echo_chat], exception_handlers=EXCEPTION_HANDLERS) as client:
        response = client.post("/chat", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 400 and "message" in response.json()["error"]


def test_worker_reported_context_limit_wins_when_lower(models, tokenizer):
    with pytest.raises(APIError) as error:
        plan_chat(chat(max_tokens=3000), models, {tokenizer.name: 2048})
    assert "maximum context length is 2048" in error.value.body.message
    plan = plan_chat(chat(), models, {tokenizer.name: 2048})
    assert len(plan.prompts[0]) + plan.choices[0].sampling.max_tokens == 2048
    assert plan_chat(chat(max_tokens=3000), models, {tokenizer.name: 100_000}).choices[0].sampling.max_tokens == 3000


@post("/boom", sync_to_thread=False)
def boom() -> dict:
    raise RuntimeError("secret internals")


def test_unexpected_error_is_500_without_traceback():
    with create_test_client([boom], exception_handlers=EXCEPTION_HANDLERS) as client:
        response = client.post("/boom")
    assert response.status_code == 500
    assert response.json()["error"]["type"] == "server_error"
    assert "secret" not in response.text and "Traceback" not in response.text
