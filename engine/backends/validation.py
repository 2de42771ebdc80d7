"""The checks every backend runs at add_request, with each backend's own list of what it lacks."""

from __future__ import annotations

from engine.engine import _is_token_id, _sampling_problems
from engine.errors import ContextLengthError, InvalidRequestError
from engine.types import SamplingParams


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
    bad = next((t for t in prompt if not _is_token_id(t, vocab_size)), None)
    if bad is not None:
        raise InvalidRequestError(f"prompt token id {bad!r} is outside the vocabulary [0, {vocab_size})")
    problems = _sampling_problems(params, vocab_size)
    problems += [f"the {backend} backend does not support {name}" for name, used in (unsupported or {}).items() if used]
    if problems:
        raise InvalidRequestError("; ".join(problems))
    if len(prompt) + params.max_tokens > max_model_len:
        raise ContextLengthError(
            f"this model's maximum context length is {max_model_len} tokens, but the request asks for "
            f"{len(prompt) + params.max_tokens} ({len(prompt)} in the prompt, {params.max_tokens} for the completion)"
        )
