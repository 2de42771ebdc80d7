"""Pure translation between our types and TensorRT-LLM's LLM API.

Nothing here imports TensorRT-LLM: its classes come in as arguments (`api` is the `tensorrt_llm`
module or anything with the same names), so the mapping is testable on any machine. Versions of
the LLM API differ in field names (`seed` vs `random_seed`, KV cache dtype on KvCacheConfig or on
QuantConfig); the class's own signature decides which one is used.
"""

from __future__ import annotations

import inspect

from engine.config import EngineConfig
from engine.errors import InvalidRequestError, ModelLoadError
from engine.types import SamplingParams, TokenLogprob

# TensorRT-LLM's CompletionOutput.finish_reason -> ours. A timeout is TensorRT-LLM giving up on
# the request, not the client's choice, so it surfaces as an error.
FINISH_REASONS = {"stop": "stop", "length": "length", "cancelled": "abort", "timeout": "error"}

# Our EngineConfig names -> TensorRT-LLM QuantAlgo member names.
WEIGHT_QUANT_ALGOS = {"w8a8": "W8A8_SQ_PER_CHANNEL", "fp8": "FP8"}
KV_CACHE_QUANT_ALGOS = {"int8": "INT8", "fp8": "FP8"}

# Sampling fields that only save work or tidy the output: left out where a version lacks them.
OPTIONAL_SAMPLING_FIELDS = frozenset({"detokenize", "include_stop_str_in_output"})


def accepted_fields(cls) -> frozenset[str] | None:
    """Keyword arguments `cls(...)` takes; None when it takes any (**kwargs)."""
    parameters = inspect.signature(cls).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return frozenset(p.name for p in parameters)


def sampling_kwargs(params: SamplingParams, *, eos_ids: tuple[int, ...], default_seed: int) -> dict:
    """Our SamplingParams as TensorRT-LLM SamplingParams keyword arguments (seed as "seed").

    Only values that differ from TensorRT-LLM's defaults are set, so an older version lacking a
    field refuses only the requests that use it. default_seed: the seed of a request that set
    none (TensorRT-LLM would otherwise seed every request alike).
    """
    kwargs: dict = {
        "max_tokens": params.max_tokens,
        "seed": params.seed if params.seed is not None else default_seed,
        # Our contract returns the stop token like any other; TensorRT-LLM strips it unless asked.
        "include_stop_str_in_output": True,
        "detokenize": False,  # the gateway detokenizes; token ids are all we hand back
    }
    if params.greedy:
        kwargs["top_k"] = 1  # TensorRT-LLM's greedy: top-1, no temperature
    else:
        kwargs["temperature"] = params.temperature
        kwargs["top_p"] = params.top_p
        kwargs["top_k"] = max(params.top_k, 0)  # ours: 0 or -1 off; theirs: 0 off
    if params.presence_penalty:
        kwargs["presence_penalty"] = params.presence_penalty
    if params.frequency_penalty:
        kwargs["frequency_penalty"] = params.frequency_penalty
    if params.repetition_penalty != 1.0:
        kwargs["repetition_penalty"] = params.repetition_penalty
    if params.logprobs is not None:
        # Their logprobs=0 means none; ours means the sampled token's only. Ask for one, trim later.
        kwargs["logprobs"] = max(params.logprobs, 1)
    # A model may have several end ids (e.g. <|eot_id|> beside <|end_of_text|>); TensorRT-LLM
    # knows only the tokenizer's one, so the others travel as stop tokens.
    stops = set(params.stop_token_ids) | (set() if params.ignore_eos else set(eos_ids))
    if stops:
        kwargs["stop_token_ids"] = sorted(stops)
    if params.ignore_eos:
        kwargs["ignore_eos"] = True
    return kwargs


def to_trtllm_sampling(params: SamplingParams, sampling_cls, *, eos_ids: tuple[int, ...] = (), default_seed: int = 0):
    """A `sampling_cls` (TensorRT-LLM's SamplingParams) for this request; InvalidRequestError when
    this version of it lacks a field the request needs."""
    kwargs = sampling_kwargs(params, eos_ids=eos_ids, default_seed=default_seed)
    accepted = accepted_fields(sampling_cls)
    if accepted is not None:
        if "seed" not in accepted and "random_seed" in accepted:
            kwargs["random_seed"] = kwargs.pop("seed")
        for name in OPTIONAL_SAMPLING_FIELDS - accepted:
            kwargs.pop(name, None)
        missing = sorted(name for name in kwargs if name not in accepted)
        if missing:
            raise InvalidRequestError(f"this TensorRT-LLM's SamplingParams has no {', '.join(missing)}")
    try:
        return sampling_cls(**kwargs)
    except (TypeError, ValueError) as error:
        raise InvalidRequestError(f"TensorRT-LLM refused the sampling parameters: {error}") from error


def llm_kwargs(config: EngineConfig, api, *, max_model_len: int) -> dict:
    """Keyword arguments of `api.LLM(...)` for this engine config. ModelLoadError for what
    TensorRT-LLM cannot do (CPU)."""
    if config.device == "cpu":
        raise ModelLoadError("the trtllm backend runs on NVIDIA GPUs only; use --backend torch on CPU")
    kv_cache: dict = {
        # TensorRT-LLM's fraction is of the memory left free after the weights; ours covers
        # weights too. Both default to 0.9, so the default behaves alike; small values differ.
        "free_gpu_memory_fraction": config.gpu_memory_utilization,
        "enable_block_reuse": config.enable_prefix_caching,
    }
    if config.kv_cache_tokens is not None:
        kv_cache["max_tokens"] = config.kv_cache_tokens
    kv_on_cache_config = config.kv_cache_dtype != "auto" and "dtype" in (accepted_fields(api.KvCacheConfig) or {"dtype"})
    if kv_on_cache_config:
        kv_cache["dtype"] = config.kv_cache_dtype
    kwargs = {
        "model": config.model,
        "tensor_parallel_size": config.tensor_parallel_size,
        "dtype": config.dtype,  # same names: auto | float32 | bfloat16 | float16
        "max_batch_size": config.max_num_seqs,
        "max_num_tokens": config.max_num_batched_tokens,
        "max_seq_len": max_model_len,
        "kv_cache_config": api.KvCacheConfig(**kv_cache),
    }
    if config.dummy_weights:
        kwargs["load_format"] = "dummy"  # random weights of the folder's config (PyTorch flow)
    quant = _quant_config(config, api, kv_on_cache_config)
    if quant is not None:
        kwargs["quant_config"] = quant
    return kwargs


def _quant_config(config: EngineConfig, api, kv_on_cache_config: bool):
    fields = {}
    if config.quantization is not None:
        fields["quant_algo"] = getattr(api.QuantAlgo, WEIGHT_QUANT_ALGOS[config.quantization])
    if config.kv_cache_dtype != "auto" and not kv_on_cache_config:
        fields["kv_cache_quant_algo"] = getattr(api.QuantAlgo, KV_CACHE_QUANT_ALGOS[config.kv_cache_dtype])
    return api.QuantConfig(**fields) if fields else None


def completion_delta(completion, num_sent: int, logprobs: int | None) -> tuple[list[int], list[TokenLogprob] | None]:
    """The tokens (and logprobs) of a streamed CompletionOutput past the first num_sent.

    Slicing the cumulative token_ids, not TensorRT-LLM's token_ids_diff, keeps this right however
    many snapshots the stream coalesced. logprobs: what the request asked for (None: nothing).
    """
    tokens = [int(t) for t in completion.token_ids[num_sent:]]
    if logprobs is None:
        return tokens, None
    entries = list(completion.logprobs or [])[num_sent : num_sent + len(tokens)]
    if len(entries) != len(tokens):
        return tokens, None  # this TensorRT-LLM gave none; say so rather than invent them
    return tokens, [_token_logprob(token, entry, logprobs) for token, entry in zip(tokens, entries)]


def _token_logprob(token: int, entry, k: int) -> TokenLogprob:
    """entry: a float (the sampled token's logprob) or {token_id: Logprob(logprob, rank)}."""
    if isinstance(entry, (int, float)):
        return TokenLogprob(token, float(entry))
    ranked = sorted(entry.items(), key=lambda item: -item[1].logprob)
    sampled = entry[token].logprob if token in entry else float("nan")
    return TokenLogprob(token, float(sampled), [(int(t), float(lp.logprob)) for t, lp in ranked[:k]])


def finish_reason(trtllm_reason: str | None) -> str:
    """Our finish reason for a finished TensorRT-LLM completion."""
    if trtllm_reason is None:
        return "stop"
    return FINISH_REASONS.get(trtllm_reason, "error")
