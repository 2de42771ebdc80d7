"""The `trtllm` backend: TensorRT-LLM's LLM API behind the engine interface.

For hosts that have TensorRT-LLM (NVIDIA's container); it is not installable from PyPI, so this
adapter is UNTESTED AGAINST A REAL TensorRT-LLM here: its tests run the mapping and the stream
draining against stand-ins. TensorRT-LLM brings its own in-flight batching and paged KV cache,
so this file only translates: an asyncio loop in a background thread runs one
`generate_async(streaming=True)` per request and puts each streamed delta on a thread-safe queue;
`step()` drains that queue into our RequestOutputs. Parameter mapping: trtllm_params.py.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import random
import threading
from dataclasses import dataclass, field
from types import SimpleNamespace

from engine.backends.hf_model import eos_token_ids
from engine.backends.queues import drain
from engine.backends.trtllm_params import completion_delta, finish_reason, llm_kwargs, to_trtllm_sampling
from engine.validation import validate_request
from engine.config import EngineConfig
from engine.errors import ModelLoadError
from engine.types import EngineStats, RequestOutput, SamplingParams, TokenLogprob

# How long one step() waits for the first streamed delta before returning nothing.
STEP_WAIT_S = 1.0
# How long close() waits for the cancelled streams to abort their TensorRT-LLM requests.
CLOSE_WAIT_S = 30.0

MISSING_MESSAGE = (
    "the trtllm backend needs TensorRT-LLM, available in NVIDIA's container "
    "(nvcr.io/nvidia/tensorrt-llm/release) and not installable from PyPI here; use --backend torch"
)


@dataclass(eq=False)
class _Live:
    request_id: str
    prompt: list[int]
    params: SamplingParams
    future: concurrent.futures.Future | None = None  # the asyncio task that streams it


@dataclass
class _Delta:
    live: _Live  # identity, not the id: a reused id must not receive a dead request's tokens
    token_ids: list[int]
    logprobs: list[TokenLogprob] | None = None
    finish_reason: str | None = None
    error: str | None = None


class TRTLLMEngine:
    """TensorRT-LLM's LLM, driven one streaming request at a time from a background event loop.
    options: api (the `tensorrt_llm` module or a stand-in with LLM, SamplingParams,
    KvCacheConfig, QuantConfig, QuantAlgo). Like the other backends, one thread drives
    add_request/abort/step."""

    def __init__(self, config: EngineConfig, api=None) -> None:
        self.api = api if api is not None else _import_tensorrt_llm()
        self.config = config
        self.vocab_size, self.max_model_len, self.eos_ids = _model_facts(config)
        kwargs = llm_kwargs(config, self.api, max_model_len=self.max_model_len)
        try:
            self._llm = self.api.LLM(**kwargs)
        except Exception as error:  # noqa: BLE001 - its build and load errors have no common type
            raise ModelLoadError(f"TensorRT-LLM could not load {config.model}: {type(error).__name__}: {error}") from error
        self._seeds = random.Random()  # per-request seeds when the request set none
        self._live: dict[str, _Live] = {}
        self._reports: list[RequestOutput] = []  # aborts to report at the next step
        self._deltas: queue.Queue[_Delta] = queue.Queue()
        self._steps = self._generated = self._prompt_tokens = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="trtllm-loop", daemon=True)
        self._thread.start()

    def add_request(self, request_id: str, prompt_token_ids: list[int], params: SamplingParams) -> None:
        in_use = request_id in self._live or any(r.request_id == request_id for r in self._reports)
        validate_request(
            prompt_token_ids, params, vocab_size=self.vocab_size, max_model_len=self.max_model_len,
            id_in_use=request_id if in_use else None, unsupported={"priority": params.priority != 0},
            backend="trtllm",
        )
        sampling = to_trtllm_sampling(
            params, self.api.SamplingParams, eos_ids=self.eos_ids, default_seed=self._seeds.getrandbits(31)
        )
        live = _Live(request_id, [int(t) for t in prompt_token_ids], params)
        self._live[request_id] = live
        self._prompt_tokens += len(live.prompt)
        live.future = asyncio.run_coroutine_threadsafe(self._stream(live, sampling), self._loop)

    def abort(self, request_id: str) -> None:
        live = self._live.pop(request_id, None)
        if live is None:
            return
        live.future.cancel()  # cancels the task; _stream then aborts the TensorRT-LLM request
        self._reports.append(RequestOutput(request_id, [], finish_reason="abort", num_prompt_tokens=len(live.prompt)))

    def has_unfinished(self) -> bool:
        return bool(self._live or self._reports)

    def step(self) -> list[RequestOutput]:
        outputs, self._reports = self._reports, []
        if not self._live:
            return outputs
        self._steps += 1
        merged: dict[str, RequestOutput] = {}
        for delta in drain(self._deltas, STEP_WAIT_S if not outputs else None):
            if self._live.get(delta.live.request_id) is not delta.live:
                continue  # aborted: abort() already reported it
            output = merged.setdefault(delta.live.request_id, _empty_output(delta.live))
            output.new_token_ids.extend(delta.token_ids)
            if delta.logprobs is not None:
                output.logprobs = (output.logprobs or []) + delta.logprobs
            self._generated += len(delta.token_ids)
            if delta.finish_reason is not None:
                output.finish_reason, output.error = delta.finish_reason, delta.error
                del self._live[delta.live.request_id]
        return outputs + list(merged.values())

    def stats(self) -> EngineStats:
        # TensorRT-LLM schedules and holds its KV cache itself: what it admitted is not visible
        # here, so every live request counts as running.
        return EngineStats(
            running=len(self._live), generated_tokens=self._generated, prompt_tokens=self._prompt_tokens,
            steps=self._steps, max_model_len=self.max_model_len,
        )

    def close(self) -> None:
        """Abort what still runs, stop the event loop, shut TensorRT-LLM down. Idempotent."""
        if self._loop.is_closed():
            return
        for request_id in list(self._live):
            self.abort(request_id)
        self._reports.clear()
        asyncio.run_coroutine_threadsafe(_settle_tasks(), self._loop).result(timeout=CLOSE_WAIT_S)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()
        shutdown = getattr(self._llm, "shutdown", None)
        if shutdown is not None:
            shutdown()

    # ---- internals ------------------------------------------------------------------------------

    async def _stream(self, live: _Live, sampling) -> None:
        """Runs on the event loop: one streaming generate_async, each snapshot's new tokens queued.
        generate_async is called here, inside the loop, so its result gets an asyncio queue."""
        result, sent = None, 0
        try:
            result = self._llm.generate_async(live.prompt, sampling_params=sampling, streaming=True)
            async for snapshot in result:
                completion = snapshot.outputs[0]
                tokens, logprobs = completion_delta(completion, sent, live.params.logprobs)
                sent += len(tokens)
                reason = finish_reason(completion.finish_reason) if snapshot.finished else None
                error = f"TensorRT-LLM ended the request: {completion.finish_reason}" if reason == "error" else None
                if tokens or reason is not None:
                    self._deltas.put(_Delta(live, tokens, logprobs, reason, error))
            if not result.finished:
                self._deltas.put(_Delta(live, [], finish_reason="error", error="TensorRT-LLM's stream ended early"))
        except asyncio.CancelledError:
            if result is not None:
                result.abort()  # frees its batch slot and KV blocks in TensorRT-LLM
            raise
        except Exception as error:  # noqa: BLE001 - reported as this request's error, the engine goes on
            message = f"TensorRT-LLM failed: {type(error).__name__}: {error}"
            self._deltas.put(_Delta(live, [], finish_reason="error", error=message))


async def _settle_tasks() -> None:
    """Let every cancelled stream run its abort before the loop stops."""
    others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    await asyncio.gather(*others, return_exceptions=True)


def _empty_output(live: _Live) -> RequestOutput:
    return RequestOutput(live.request_id, [], num_prompt_tokens=len(live.prompt))


def _import_tensorrt_llm():
    try:
        import tensorrt_llm
        from tensorrt_llm.llmapi import KvCacheConfig, QuantAlgo, QuantConfig
    except ImportError as error:
        raise ModelLoadError(f"{MISSING_MESSAGE} ({error})") from error

    return SimpleNamespace(
        LLM=tensorrt_llm.LLM, SamplingParams=tensorrt_llm.SamplingParams, KvCacheConfig=KvCacheConfig,
        QuantConfig=QuantConfig, QuantAlgo=QuantAlgo,
    )


def _model_facts(config: EngineConfig) -> tuple[int, int, tuple[int, ...]]:
    """(vocab size, max model length, end ids) of the HF folder, for the checks at add_request."""
    from transformers import AutoConfig, GenerationConfig

    try:
        model_config = AutoConfig.from_pretrained(config.model)
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"cannot read the model config of {config.model}: {error}") from error
    try:
        generation_config = GenerationConfig.from_pretrained(config.model)
    except OSError:
        generation_config = SimpleNamespace()  # no generation_config.json: the config's eos counts
    model_config = getattr(model_config, "text_config", None) or model_config
    eos_ids = eos_token_ids(SimpleNamespace(generation_config=generation_config, config=model_config))
    max_model_len = config.max_model_len or model_config.max_position_embeddings
    return model_config.vocab_size, max_model_len, eos_ids
