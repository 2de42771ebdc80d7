"""What the transformers baselines share: loading the model as a plain HF deployment would,
and refusing the requests they cannot serve."""

from __future__ import annotations

from engine.config import EngineConfig
from engine.engine import _is_token_id, _sampling_problems
from engine.errors import ContextLengthError, InvalidRequestError, ModelLoadError
from engine.types import SamplingParams


def resolve_device_dtype(config: EngineConfig):
    import torch

    device = config.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = config.dtype
    if dtype == "auto":
        dtype = "float32" if device == "cpu" else "bfloat16"
    return torch.device(device), getattr(torch, dtype)


def load_hf_model(config: EngineConfig):
    """AutoModelForCausalLM on the configured device and dtype, in eval mode.

    dummy_weights: random weights of the folder's config.json (seeded by config.seed).
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    device, dtype = resolve_device_dtype(config)
    try:
        if config.dummy_weights:
            torch.manual_seed(config.seed)
            model_config = AutoConfig.from_pretrained(config.model)
            model = AutoModelForCausalLM.from_config(model_config, dtype=dtype)
        else:
            model = AutoModelForCausalLM.from_pretrained(config.model, dtype=dtype)
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"cannot load {config.model}: {error}") from error
    return model.to(device).eval()


def eos_token_ids(model) -> tuple[int, ...]:
    """The model's end-of-sequence ids: generation_config first, else config."""
    eos = getattr(model.generation_config, "eos_token_id", None)
    if eos is None:
        eos = model.config.eos_token_id
    if eos is None:
        return ()
    return tuple(eos) if isinstance(eos, (list, tuple)) else (eos,)


def stop_ids(params: SamplingParams, eos_ids: tuple[int, ...]) -> tuple[int, ...]:
    """Token ids that end this request (the stop token itself is returned, like any token)."""
    stops = set(params.stop_token_ids)
    if not params.ignore_eos:
        stops.update(eos_ids)
    return tuple(sorted(stops))


def validate_request(
    request_id: str,
    prompt: list[int],
    params: SamplingParams,
    *,
    vocab_size: int,
    max_model_len: int,
    in_use: bool,
    backend: str,
    greedy_only: bool = False,
) -> None:
    """Raise InvalidRequestError (ContextLengthError) for what a transformers baseline refuses."""
    if in_use:
        raise InvalidRequestError(f"request id {request_id!r} is already in use")
    if not prompt:
        raise InvalidRequestError("prompt must contain at least one token")
    bad = next((t for t in prompt if not _is_token_id(t, vocab_size)), None)
    if bad is not None:
        raise InvalidRequestError(f"prompt token id {bad!r} is outside the vocabulary [0, {vocab_size})")
    problems = _sampling_problems(params, vocab_size)
    unsupported = {
        "logprobs": params.logprobs is not None,
        "presence_penalty": params.presence_penalty != 0.0,
        "frequency_penalty": params.frequency_penalty != 0.0,
        "sampling (temperature > 0)": greedy_only and not params.greedy,
    }
    problems += [f"the {backend} backend does not support {name}" for name, used in unsupported.items() if used]
    if problems:
        raise InvalidRequestError("; ".join(problems))
    if len(prompt) + params.max_tokens > max_model_len:
        raise ContextLengthError(
            f"this model's maximum context length is {max_model_len} tokens, but the request asks for "
            f"{len(prompt) + params.max_tokens} ({len(prompt)} in the prompt, {params.max_tokens} for the completion)"
        )
