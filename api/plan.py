"""A validated OpenAI request turned into what the gateway dispatches: prompt token ids per
choice, engine sampling parameters, stop strings, and how to answer (stream, usage, logprobs)."""

from __future__ import annotations

from dataclasses import dataclass

from api.errors import bad_request, model_not_found
from api.schemas import ChatCompletionRequest, CompletionRequest, SamplingFields
from api.tokenizer import ModelTokenizer
from workers.protocol import Sampling

CHAT_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
MAX_TOP_LOGPROBS = 20


@dataclass(frozen=True)
class Choice:
    index: int
    prompt_index: int
    sampling: Sampling


@dataclass(frozen=True)
class Plan:
    kind: str  # "chat" | "completion"
    model: ModelTokenizer
    prompts: list[list[int]]
    choices: list[Choice]
    stops: list[str]
    stream: bool
    include_usage: bool
    logprobs: bool
    top_logprobs: int

    @property
    def tokens_reserved(self) -> int:
        return sum(len(self.prompts[c.prompt_index]) + c.sampling.max_tokens for c in self.choices)


def find_model(models: dict[str, ModelTokenizer], name: str) -> ModelTokenizer:
    model = models.get(name)
    if model is None:
        raise model_not_found(name)
    return model


def chat_messages(request: ChatCompletionRequest) -> list[dict]:
    rendered = []
    for i, message in enumerate(request.messages):
        role = CHAT_ROLES.get(message.role)
        if role is None:
            raise bad_request(
                f"Role `{message.role}` is not supported; use system, user or assistant.",
                param=f"messages[{i}].role", code="unsupported_parameter",
            )
        content = message.content
        if isinstance(content, list):
            for j, part in enumerate(content):
                if part.type != "text" or part.text is None:
                    raise bad_request(
                        f"Content part type `{part.type}` is not supported; only text parts are.",
                        param=f"messages[{i}].content[{j}].type", code="unsupported_parameter",
                    )
            content = "\n".join(part.text for part in content)
        rendered.append({"role": role, "content": content or ""})
    return rendered


def _stops(stop: str | list[str] | None) -> list[str]:
    if stop is None:
        return []
    return [stop] if isinstance(stop, str) else list(stop)


def _check_stream_options(request: SamplingFields) -> None:
    if request.stream_options is not None and not request.stream:
        raise bad_request("`stream_options` is only allowed when `stream` is true.", param="stream_options")


def _max_tokens(limit: int, prompt_len: int, requested: int | None, param: str, prompt_param: str) -> int:
    room = limit - prompt_len
    if room < 1 or (requested is not None and requested > room):
        asked = requested if requested is not None else 1
        raise bad_request(
            f"This model's maximum context length is {limit} tokens. However, you requested "
            f"{prompt_len + asked} tokens ({prompt_len} in the prompt, {asked} for the completion). "
            "Please reduce the length of the prompt or the completion.",
            param=param if room >= 1 else prompt_param,
            code="context_length_exceeded",
        )
    return requested if requested is not None else room


def _sampling(request: SamplingFields, model: ModelTokenizer, max_tokens: int, choice: int, logprobs: int | None):
    return Sampling(
        max_tokens=max_tokens,
        temperature=1.0 if request.temperature is None else request.temperature,
        top_p=1.0 if request.top_p is None else request.top_p,
        top_k=max(0, request.top_k or 0),
        seed=None if request.seed is None else request.seed + choice,
        presence_penalty=request.presence_penalty or 0.0,
        frequency_penalty=request.frequency_penalty or 0.0,
        repetition_penalty=request.repetition_penalty or 1.0,
        logprobs=logprobs,
        stop_token_ids=() if request.ignore_eos else model.eos_token_ids,
        ignore_eos=bool(request.ignore_eos),
    )


def _context_limit(model: ModelTokenizer, limits: dict[str, int] | None) -> int:
    reported = (limits or {}).get(model.name)
    return min(model.max_model_len, reported) if reported else model.max_model_len


def plan_chat(request: ChatCompletionRequest, models: dict[str, ModelTokenizer],
              limits: dict[str, int] | None = None) -> Plan:
    """limits: context lengths the workers report, where lower than the model's config."""
    model = find_model(models, request.model)
    _check_stream_options(request)
    if request.top_logprobs and not request.logprobs:
        raise bad_request("`top_logprobs` needs `logprobs` set to true.", param="top_logprobs")
    prompt = model.encode(model.render_chat(chat_messages(request)))
    requested = request.max_completion_tokens if request.max_completion_tokens is not None else request.max_tokens
    param = "max_completion_tokens" if request.max_completion_tokens is not None else "max_tokens"
    max_tokens = _max_tokens(_context_limit(model, limits), len(prompt), requested, param, "messages")
    logprobs = (request.top_logprobs or 0) if request.logprobs else None
    choices = [Choice(i, 0, _sampling(request, model, max_tokens, i, logprobs)) for i in range(request.n or 1)]
    return Plan("chat", model, [prompt], choices, _stops(request.stop), bool(request.stream),
                bool(request.stream_options and request.stream_options.include_usage),
                logprobs is not None, request.top_logprobs or 0)


def _completion_prompts(request: CompletionRequest, model: ModelTokenizer) -> list[list[int]]:
    prompt = request.prompt
    if isinstance(prompt, str):
        return [model.encode(prompt, add_special_tokens=True)]
    if all(isinstance(p, int) for p in prompt):
        if any(not 0 <= p < model.vocab_size for p in prompt):
            raise bad_request(f"Token ids must be in [0, {model.vocab_size}).", param="prompt")
        return [list(prompt)]
    if all(isinstance(p, str) for p in prompt):
        return [model.encode(p, add_special_tokens=True) for p in prompt]
    raise bad_request("`prompt` must be a string, a list of strings or a list of token ids.", param="prompt")


def plan_completion(request: CompletionRequest, models: dict[str, ModelTokenizer],
                    limits: dict[str, int] | None = None) -> Plan:
    model = find_model(models, request.model)
    _check_stream_options(request)
    if request.echo:
        raise bad_request("`echo` is not supported by this server.", param="echo", code="unsupported_parameter")
    prompts = _completion_prompts(request, model)
    limit = _context_limit(model, limits)
    logprobs = request.logprobs
    choices = []
    for p, prompt in enumerate(prompts):
        max_tokens = _max_tokens(limit, len(prompt), request.max_tokens, "max_tokens", "prompt")
        n = request.n or 1
        for i in range(n):
            choices.append(Choice(p * n + i, p, _sampling(request, model, max_tokens, i, logprobs)))
    return Plan("completion", model, prompts, choices, _stops(request.stop), bool(request.stream),
                bool(request.stream_options and request.stream_options.include_usage),
                logprobs is not None, logprobs or 0)
