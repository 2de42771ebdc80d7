"""The trtllm backend without TensorRT-LLM: its clear error, its parameter mapping against
stand-ins for TensorRT-LLM's classes, and its stream draining against a stand-in LLM."""

import asyncio
import enum
import json
import math
import sys
import threading
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest

from engine.backends import create_engine
from engine.backends.trtllm import TRTLLMEngine
from engine.backends.trtllm_params import completion_delta, llm_kwargs, to_trtllm_sampling
from engine.config import EngineConfig
from engine.errors import ContextLengthError, InvalidRequestError, ModelLoadError
from engine.types import SamplingParams
from tests.engine.drain import drain

EOS = 2
HANG, FAIL = 900, 901  # first prompt tokens that make the stand-in stream hang or fail


# ---- stand-ins for TensorRT-LLM's classes ---------------------------------------------------------


@dataclass(kw_only=True)
class StandInSamplingParams:
    """The fields of TensorRT-LLM's SamplingParams that the mapping may set."""

    max_tokens: int = 32
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repetition_penalty: float | None = None
    logprobs: int | None = None
    stop_token_ids: list[int] | None = None
    ignore_eos: bool = False
    include_stop_str_in_output: bool = False
    detokenize: bool = True


@dataclass(kw_only=True)
class OlderSamplingParams:
    """An older LLM API: random_seed, no presence penalty, no detokenize switch."""

    max_tokens: int = 32
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    random_seed: int | None = None
    stop_token_ids: list[int] | None = None
    include_stop_str_in_output: bool = False


@dataclass(kw_only=True)
class StandInKvCacheConfig:
    free_gpu_memory_fraction: float | None = None
    enable_block_reuse: bool = False
    max_tokens: int | None = None
    dtype: str = "auto"


@dataclass(kw_only=True)
class OlderKvCacheConfig:
    free_gpu_memory_fraction: float | None = None
    enable_block_reuse: bool = False
    max_tokens: int | None = None


@dataclass(kw_only=True)
class StandInQuantConfig:
    quant_algo: str | None = None
    kv_cache_quant_algo: str | None = None


class StandInQuantAlgo(str, enum.Enum):
    W8A8_SQ_PER_CHANNEL = "W8A8_SQ_PER_CHANNEL"
    FP8 = "FP8"
    INT8 = "INT8"


@dataclass
class Logprob:
    logprob: float
    rank: int


@dataclass
class Completion:
    token_ids: list[int] = field(default_factory=list)
    logprobs: list = field(default_factory=list)
    finish_reason: str | None = None


class StreamingResult:
    """Streams token k = prompt[0] + k + 1, two tokens per snapshot, like a coalescing stream."""

    def __init__(self, prompt, sampling):
        asyncio.get_running_loop()  # TensorRT-LLM needs a running loop here for streaming
        self.prompt, self.sampling = prompt, sampling
        self.outputs = [Completion()]
        self.finished = False
        self.aborted = threading.Event()
        self._iterator = self._snapshots()

    def abort(self):
        self.aborted.set()

    def __aiter__(self):
        return self

    async def __anext__(self):
        return await self._iterator.__anext__()

    async def _snapshots(self):
        completion, sampling = self.outputs[0], self.sampling
        while True:
            for _ in range(2):
                token = self.prompt[0] + len(completion.token_ids) + 1
                completion.token_ids.append(token)
                if sampling.logprobs:
                    completion.logprobs.append({token: Logprob(-0.5, 1), token + 1: Logprob(-1.5, 2)})
                if token in (sampling.stop_token_ids or []):
                    completion.finish_reason = "stop"
                elif len(completion.token_ids) == sampling.max_tokens:
                    completion.finish_reason = "length"
                if completion.finish_reason:
                    break
            self.finished = completion.finish_reason is not None
            yield self
            if self.finished:
                return
            if self.prompt[0] == HANG:
                await asyncio.Event().wait()
            if self.prompt[0] == FAIL:
                raise RuntimeError("CUDA error: out of memory")
            await asyncio.sleep(0)


class StandInLLM:
    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.results = {}

    def generate_async(self, prompt, sampling_params, streaming):
        assert streaming
        result = StreamingResult(prompt, sampling_params)
        self.results[prompt[0]] = result
        return result


API = SimpleNamespace(
    LLM=StandInLLM, SamplingParams=StandInSamplingParams, KvCacheConfig=StandInKvCacheConfig,
    QuantConfig=StandInQuantConfig, QuantAlgo=StandInQuantAlgo,
)


@pytest.fixture
def folder(tmp_path):
    config = {"model_type": "llama", "vocab_size": 1000, "max_position_embeddings": 64, "eos_token_id": EOS}
    (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path


@pytest.fixture
def engine(folder):
    engine = TRTLLMEngine(EngineConfig(model=str(folder)), api=API)
    yield engine
    engine.close()


# ---- without TensorRT-LLM -----------------------------------------------------------------------


def test_missing_tensorrt_llm_is_a_clear_model_load_error(folder, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt_llm", None)  # import fails even where it is installed
    with pytest.raises(ModelLoadError, match=r"needs TensorRT-LLM.*NVIDIA's container.*--backend torch"):
        create_engine("trtllm", EngineConfig(model=str(folder)))


def test_a_tensorrt_llm_that_cannot_load_the_model_is_a_model_load_error(folder):
    def refuses(**_kwargs):
        raise RuntimeError("unsupported architecture")

    with pytest.raises(ModelLoadError, match="could not load.*unsupported architecture"):
        TRTLLMEngine(EngineConfig(model=str(folder)), api=SimpleNamespace(**{**vars(API), "LLM": refuses}))


# ---- parameter mapping --------------------------------------------------------------------------


def test_sampling_maps_every_field():
    params = SamplingParams(
        max_tokens=7, temperature=0.7, top_p=0.9, top_k=-1, seed=11, presence_penalty=0.5,
        frequency_penalty=-0.25, repetition_penalty=1.1, logprobs=0, stop_token_ids=(5,),
    )
    mapped = to_trtllm_sampling(params, StandInSamplingParams, eos_ids=(EOS, 3))
    assert mapped == StandInSamplingParams(
        max_tokens=7, temperature=0.7, top_p=0.9, top_k=0, seed=11, presence_penalty=0.5,
        frequency_penalty=-0.25, repetition_penalty=1.1, logprobs=1, stop_token_ids=[EOS, 3, 5],
        include_stop_str_in_output=True, detokenize=False,
    )


def test_greedy_is_top_1_and_ignore_eos_drops_the_end_ids():
    params = SamplingParams(temperature=0.0, ignore_eos=True)
    mapped = to_trtllm_sampling(params, StandInSamplingParams, eos_ids=(EOS,), default_seed=42)
    assert (mapped.top_k, mapped.temperature, mapped.top_p) == (1, None, None)
    assert mapped.ignore_eos and mapped.stop_token_ids is None and mapped.seed == 42


def test_older_api_gets_random_seed_and_refuses_what_it_lacks():
    mapped = to_trtllm_sampling(SamplingParams(seed=3), OlderSamplingParams)
    assert mapped.random_seed == 3
    with pytest.raises(InvalidRequestError, match="presence_penalty"):
        to_trtllm_sampling(SamplingParams(presence_penalty=1.0), OlderSamplingParams)


def test_llm_kwargs_carry_the_engine_config():
    config = EngineConfig(
        model="/m", tensor_parallel_size=2, gpu_memory_utilization=0.8, enable_prefix_caching=False,
        max_num_seqs=64, max_num_batched_tokens=4096, quantization="w8a8", kv_cache_dtype="int8",
    )
    kwargs = llm_kwargs(config, API, max_model_len=2048)
    expected_kv = StandInKvCacheConfig(free_gpu_memory_fraction=0.8, enable_block_reuse=False, dtype="int8")
    assert kwargs["kv_cache_config"] == expected_kv
    assert kwargs["quant_config"] == StandInQuantConfig(quant_algo=StandInQuantAlgo.W8A8_SQ_PER_CHANNEL)
    assert (kwargs["model"], kwargs["tensor_parallel_size"], kwargs["max_seq_len"]) == ("/m", 2, 2048)
    assert (kwargs["max_batch_size"], kwargs["max_num_tokens"]) == (64, 4096)


def test_kv_cache_dtype_falls_back_to_quant_config_on_older_apis():
    api = SimpleNamespace(**{**vars(API), "KvCacheConfig": OlderKvCacheConfig})
    kwargs = llm_kwargs(EngineConfig(model="/m", quantization="fp8", kv_cache_dtype="fp8"), api, max_model_len=64)
    fp8 = StandInQuantAlgo.FP8
    assert kwargs["quant_config"] == StandInQuantConfig(quant_algo=fp8, kv_cache_quant_algo=fp8)


def test_cpu_device_is_refused():
    with pytest.raises(ModelLoadError, match="GPUs only"):
        llm_kwargs(EngineConfig(model="/m", device="cpu"), API, max_model_len=64)


def test_completion_delta_slices_tokens_and_ranks_logprobs():
    completion = Completion([7, 8, 9], [{7: Logprob(-0.1, 1)}, {8: Logprob(-2.0, 2), 4: Logprob(-0.3, 1)}, -0.7])
    tokens, logprobs = completion_delta(completion, 1, logprobs=1)
    assert tokens == [8, 9]
    assert (logprobs[0].token_id, logprobs[0].logprob, logprobs[0].top) == (8, -2.0, [(4, -0.3)])
    assert (logprobs[1].token_id, logprobs[1].logprob, logprobs[1].top) == (9, -0.7, [])
    assert completion_delta(completion, 0, logprobs=None) == ([7, 8, 9], None)


# ---- stream draining ----------------------------------------------------------------------------


def test_streams_drain_into_request_outputs(engine):
    engine.add_request("a", [10, 11], SamplingParams(max_tokens=5))
    engine.add_request("b", [20], SamplingParams(max_tokens=9, stop_token_ids=(24,)))
    tokens, reasons = drain(engine)
    assert tokens == {"a": [11, 12, 13, 14, 15], "b": [21, 22, 23, 24]}
    assert reasons == {"a": "length", "b": "stop"}
    assert engine.stats().generated_tokens == 9 and engine.stats().prompt_tokens == 3
    assert not engine.has_unfinished()


def test_logprobs_come_with_each_token(engine):
    engine.add_request("a", [10], SamplingParams(max_tokens=3, logprobs=2))
    outputs = []
    while engine.has_unfinished():
        outputs += engine.step()
    logprobs = [lp for out in outputs for lp in out.logprobs]
    assert [lp.token_id for lp in logprobs] == [11, 12, 13]
    assert logprobs[0].top == [(11, -0.5), (12, -1.5)]


def test_abort_reports_once_and_aborts_the_tensorrt_llm_request(engine):
    engine.add_request("hangs", [HANG], SamplingParams(max_tokens=50))
    first = []
    while not first:
        first = engine.step()
    assert first[0].new_token_ids == [HANG + 1, HANG + 2] and first[0].finish_reason is None
    engine.abort("hangs")
    engine.abort("hangs")
    assert [(o.request_id, o.finish_reason) for o in engine.step()] == [("hangs", "abort")]
    assert engine._llm.results[HANG].aborted.wait(timeout=10)
    assert not engine.has_unfinished() and engine.step() == []


def test_close_aborts_what_still_runs(engine):
    engine.add_request("hangs", [HANG], SamplingParams(max_tokens=50))
    while not engine.step():
        pass
    engine.close()
    assert engine._llm.results[HANG].aborted.is_set() and not engine.has_unfinished()


def test_a_failing_stream_ends_its_request_with_an_error(engine):
    engine.add_request("fails", [FAIL], SamplingParams(max_tokens=50))
    engine.add_request("fine", [30], SamplingParams(max_tokens=2))
    outputs = []
    while engine.has_unfinished():
        outputs += engine.step()
    final = {o.request_id: o for o in outputs if o.finish_reason}
    assert final["fails"].finish_reason == "error" and "out of memory" in final["fails"].error
    assert final["fine"].finish_reason == "length"


@pytest.mark.parametrize(
    "prompt, params, error",
    [
        ([], SamplingParams(), InvalidRequestError),
        ([1000], SamplingParams(), InvalidRequestError),
        ([10], SamplingParams(priority=1), InvalidRequestError),
        ([10], SamplingParams(max_tokens=64), ContextLengthError),
    ],
)
def test_bad_requests_are_refused(engine, prompt, params, error):
    with pytest.raises(error):
        engine.add_request("a", prompt, params)
    assert not engine.has_unfinished()


def test_duplicate_request_id_is_refused(engine):
    engine.add_request("a", [HANG], SamplingParams(max_tokens=50))
    with pytest.raises(InvalidRequestError, match="already in use"):
        engine.add_request("a", [10], SamplingParams())


def test_engine_hands_its_config_to_the_llm(engine):
    kwargs = engine._llm.kwargs
    assert kwargs["max_seq_len"] == 64 and kwargs["kv_cache_config"].enable_block_reuse
    assert engine.eos_ids == (EOS,) and math.isclose(kwargs["kv_cache_config"].free_gpu_memory_fraction, 0.9)
