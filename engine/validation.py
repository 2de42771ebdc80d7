"""The checks every backend runs at add_request, with each backend's own list of what it lacks."""

from __future__ import annotations

import operator

from engine.errors import ContextLengthError, InvalidRequestError
from engine.types import SamplingParams

MAX_LOGPROBS = 20


def validate_request(
    prompt: list[int],
    params: SamplingParams,
    *,
    vocab_size: int,
    max_model_len: int,
    id_in_use: str | None = None,
    unsupported: dict[str, bool] | None = None,
    backend: str = "this",
) -> None:
    """Raise InvalidRequestError (ContextLengthError when it does not fit) for a request to refuse.

    id_in_use: the request id when it is already taken. unsupported: {feature: used by this request}.
    """
    if id_in_use is not None:
        raise InvalidRequestError(f"request id {id_in_use!r} is already in use")
    if not prompt:
        raise InvalidRequestError("prompt must contain at least one token")
    bad = next((t for t in prompt if not is_token_id(t, vocab_size)), None)
    if bad is not None:
        raise InvalidRequestError(f"prompt token id {bad!r} is outside the vocabulary [0, {vocab_size})")
    problems = sampling_problems(params, vocab_size)
    problems += [f"the {backend} backend does not support {name}" for name, used in (unsupported or {}).items() if used]
    if problems:
        raise InvalidRequestError("; ".join(problems))
    if len(prompt) + params.max_tokens > max_model_len:
        raise ContextLengthError(
            f"this model's maximum context length is {max_model_len} tokens, but the request asks for "
            f"{len(prompt) + params.max_tokens} ({len(prompt)} in the prompt, {params.max_tokens} for the "
            "completion); shorten the prompt or lower max_tokens"
        )


def is_token_id(value, vocab_size: int) -> bool:
    try:
        return 0 <= operator.index(value) < vocab_size  # ints and numpy ints, not floats
    except TypeError:
        return False


def sampling_problems(params: SamplingParams, vocab_size: int) -> list[str]:
    # Written as `not (a <= x <= b)` so that NaN is refused too.
    checks = [
        (isinstance(params.max_tokens, int) and params.max_tokens >= 1, f"max_tokens must be >= 1, got {params.max_tokens}"),
        (params.temperature >= 0, f"temperature must be >= 0, got {params.temperature}"),
        (0 < params.top_p <= 1, f"top_p must be in (0, 1], got {params.top_p}"),
        (params.top_k >= -1, f"top_k must be -1, 0 (off) or positive, got {params.top_k}"),
        (-2 <= params.presence_penalty <= 2, f"presence_penalty must be in [-2, 2], got {params.presence_penalty}"),
        (-2 <= params.frequency_penalty <= 2, f"frequency_penalty must be in [-2, 2], got {params.frequency_penalty}"),
        (params.repetition_penalty > 0, f"repetition_penalty must be > 0, got {params.repetition_penalty}"),
        (
            params.logprobs is None or 0 <= params.logprobs <= MAX_LOGPROBS,
            f"logprobs must be in [0, {MAX_LOGPROBS}], got {params.logprobs}",
        ),
        (
            all(is_token_id(t, vocab_size) for t in params.stop_token_ids),
            f"stop_token_ids must be token ids in [0, {vocab_size})",
        ),
    ]
    return [message for ok, message in checks if not ok]
