"""The `hf-batched` baseline: transformers' own continuous batching (`init_continuous_batching`).

Its manager runs its own loop in a background thread, with a paged KV cache; `step()` collects
the tokens it streamed since the last call. Sampling is chosen for the whole manager in
transformers, so this baseline serves greedy requests only.
"""

from __future__ import annotations

from engine.backends.hf_model import HFBaseline, stop_ids
from engine.config import EngineConfig
from engine.errors import EngineError
from engine.types import EngineStats, RequestOutput, SamplingParams

STEP_WAIT_S = 1.0  # how long one step() waits for the manager's first result
CPU_KV_CACHE_TOKENS = 8192  # transformers sizes the cache from GPU memory; on CPU we choose


class HFBatchedEngine(HFBaseline):
    """transformers' continuous batching manager behind the engine interface; greedy only.
    Not thread-safe: one thread drives add_request/abort/step."""

    backend = "hf-batched"

    def __init__(self, config: EngineConfig, **_options) -> None:
        from transformers import GenerationConfig
        from transformers.generation.configuration_utils import ContinuousBatchingConfig

        super().__init__(config)
        kv_tokens = config.kv_cache_tokens or (CPU_KV_CACHE_TOKENS if self.model.device.type == "cpu" else None)
        batching = ContinuousBatchingConfig(
            page_size=config.block_size,
            num_blocks=kv_tokens // config.block_size if kv_tokens else None,
            max_batch_tokens=config.max_num_batched_tokens,
            max_memory_percent=config.gpu_memory_utilization,
        )
        generation = GenerationConfig(do_sample=False, max_new_tokens=16, eos_token_id=list(self.eos_ids) or -1)
        self.manager = self.model.init_continuous_batching(generation_config=generation, continuous_batching_config=batching)
        self.manager.start()
        self._live: dict[str, tuple[int, tuple[int, ...]]] = {}  # request id -> (tokens reported, stop ids)
        self._prompt_lengths: dict[str, int] = {}
        self._reports: list[RequestOutput] = []
        self._steps = self._generated = self._prompt_tokens = 0

    def add_request(self, request_id: str, prompt_token_ids: list[int], params: SamplingParams) -> None:
        in_use = request_id in self._live or any(r.request_id == request_id for r in self._reports)
        # transformers picks greedy or sampling for the whole manager, and has no batched repetition penalty.
        self._validate(
            request_id, prompt_token_ids, params, in_use,
            **{"sampling (temperature > 0)": not params.greedy, "repetition_penalty": params.repetition_penalty != 1.0},
        )
        stops = stop_ids(params, self.eos_ids)
        prompt = [int(t) for t in prompt_token_ids]
        accepted = self.manager.add_request(
            prompt, request_id=request_id, max_new_tokens=params.max_tokens, streaming=True,
            eos_token_id=list(stops) or -1,
        )
        if accepted is None:  # the manager is stopping or failed; it would drop the request silently
            raise EngineError("transformers' batching manager is not accepting requests")
        self._live[request_id] = (0, stops)
        self._prompt_lengths[request_id] = len(prompt)
        self._prompt_tokens += len(prompt)

    def abort(self, request_id: str) -> None:
        if request_id in self._live:
            self.manager.cancel_request(request_id)
            del self._live[request_id]
            self._reports.append(self._output(request_id, [], "abort"))
            self._prompt_lengths.pop(request_id, None)

    def has_unfinished(self) -> bool:
        return bool(self._live or self._reports)

    def step(self) -> list[RequestOutput]:
        outputs, self._reports = self._reports, []
        if not self._live:
            return outputs
        self._steps += 1
        if not self.manager.is_running():
            return outputs + [self._fail(rid, "transformers' batching loop stopped") for rid in list(self._live)]
        merged: dict[str, RequestOutput] = {}
        result = self.manager.get_result(timeout=STEP_WAIT_S)
        while result is not None:
            self._merge(merged, result)
            result = self.manager.get_result(timeout=0)
        return outputs + list(merged.values())

    def stats(self) -> EngineStats:
        return EngineStats(
            running=len(self._live), generated_tokens=self._generated, prompt_tokens=self._prompt_tokens,
            steps=self._steps, max_model_len=self.max_model_len,
        )

    def close(self) -> None:
        self.manager.stop(block=True)

    # ---- internals ------------------------------------------------------------------------------

    def _merge(self, merged: dict[str, RequestOutput], result) -> None:
        """Fold one streamed result (all tokens so far) into this step's output of its request."""
        rid = result.request_id
        if rid not in self._live:
            return  # aborted (already reported) or not ours
        reported, stops = self._live[rid]
        new_tokens = list(result.generated_tokens[reported:])
        self._generated += len(new_tokens)
        output = merged.setdefault(rid, self._output(rid, [], None))
        output.new_token_ids += new_tokens
        self._live[rid] = (reported + len(new_tokens), stops)
        if result.error:
            output.finish_reason, output.error = "error", result.error
        elif result.is_finished():
            last = result.generated_tokens[-1] if result.generated_tokens else None
            output.finish_reason = "stop" if last in stops else "length"
        if output.finish_reason is not None:
            del self._live[rid]
            self._prompt_lengths.pop(rid, None)  # this step's output already carries it

    def _fail(self, request_id: str, error: str) -> RequestOutput:
        del self._live[request_id]
        output = self._output(request_id, [], "error")
        output.error = error
        self._prompt_lengths.pop(request_id, None)
        return output

    def _output(self, request_id: str, tokens: list[int], reason: str | None) -> RequestOutput:
        return RequestOutput(request_id, tokens, finish_reason=reason, num_prompt_tokens=self._prompt_lengths.get(request_id, 0))
