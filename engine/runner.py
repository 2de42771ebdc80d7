"""The model runner: owns the weights and the KV pool, turns a scheduled batch into sampled tokens."""

from __future__ import annotations

import logging
import os

import torch

from engine import kernels
from engine.attention_metadata import AttentionMetadata, build_step_inputs
from engine.config import EngineConfig
from engine.cuda_graphs import GraphRunner, decode_inputs
from engine.decode_inputs import DecodeInputs
from engine.loader import load_model
from engine.models.spec import ModelSpec
from engine.piecewise_graphs import PiecewiseGraphs
from engine.sampler import Sampled, Sampler
from engine.sequence import ReadyTokens, SampledToken, ScheduledBatch
from llmq.paths import resolve_model

log = logging.getLogger(__name__)

CPU_DEFAULT_KV_TOKENS = 65536
CPU_MAX_KV_BYTES = 1 << 30  # and at most an eighth of the machine's memory
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelRunner:
    """What the Engine drives: `launch(batch)` queues one forward pass and its sampling on the
    device and returns at once (on CUDA); `execute(batch)` also waits for the ids.

    Attributes the scheduler sizes itself by: num_kv_blocks, block_size, max_model_len,
    vocab_size, eos_token_ids; and kv_cache_bytes, device, dtype for stats."""

    def __init__(self, config: EngineConfig) -> None:
        _refuse_unimplemented(config)
        self.config = config
        self.device = _resolve_device(config.device)
        self.dtype = _resolve_dtype(config.dtype, self.device)
        if config.num_threads and self.device.type == "cpu":
            torch.set_num_threads(config.num_threads)
        # Process-wide; the torch references stay where Triton is missing.
        triton = self.device.type == "cuda" and kernels.use_triton()
        self.kv_dtype = _resolve_kv_dtype(config.kv_cache_dtype, self.dtype, triton)
        folder = resolve_model(config.model)
        self.model, spec = load_model(
            folder,
            self.device,
            self.dtype,
            max_positions=config.max_model_len,
            dummy_weights=config.dummy_weights,
            seed=config.seed,
        )
        if self.device.type == "cpu":
            from engine.layers.cpu_layout import place_for_cpu_decode

            # The weights' layout for the memory-bound CPU decode (engine/layers/cpu_layout.py).
            place_for_cpu_decode(self.model)
        self.spec = spec
        # Stage -> bytes the CUDA allocator holds after it (a startup report: what the KV pool
        # sizing accounts for, and what the graphs take after it).
        self.memory: dict[str, int] = {}
        self._note_memory("weights")
        self.block_size = config.block_size
        self.max_model_len = config.max_model_len or spec.max_position_embeddings
        if spec.sliding_window and not config.max_model_len:
            # Attention here is always full: stay inside the window the model was trained with.
            self.max_model_len = min(self.max_model_len, spec.sliding_window)
        self.vocab_size = spec.vocab_size
        self.eos_token_ids = spec.eos_token_ids
        self.num_kv_blocks = self._plan_kv_blocks(spec)
        self._allocate_kv_pool(spec)
        self._note_memory("kv_pool")
        self.sampler = Sampler(self.device, config.seed)
        # Every launch samples into this buffer; the next launch's pending tokens are looked up
        # there by the embedding (inside the captured graphs too: the buffer never moves).
        self._sampled_ids = torch.zeros(config.max_num_seqs, dtype=torch.int64, device=self.device)
        self.model.model.embed_tokens.pending_ids = self._sampled_ids
        self._last_rows: dict[str, int] = {}  # request id -> its row in _sampled_ids
        # Decode steps replay CUDA graphs; they need the Triton kernels (padded rows write slot -1).
        self.graphs = self._capture_decode_graphs() if triton and config.cuda_graphs else None
        self._note_memory("decode_graphs")
        self.decode_inputs = (
            DecodeInputs(self.graphs.layout, self.graphs.batch_sizes, self.block_size) if self.graphs else None
        )
        # Steps with prefill chunks replay graphs of everything between the attention calls.
        self.piecewise = self._capture_piecewise_graphs() if triton and config.cuda_graphs else None
        self._note_memory("piecewise_graphs")
        if self.memory:
            log.info(memory_report(self.memory, self.num_kv_blocks * self.block_size))

    def _note_memory(self, stage: str) -> None:
        if self.device.type == "cuda":
            self.memory[stage] = torch.cuda.memory_allocated(self.device)

    @property
    def asynchronous(self) -> bool:
        """Whether launch() returns before the device has run the step."""
        return self.device.type == "cuda"

    def execute(self, batch: ScheduledBatch) -> list[SampledToken]:
        """One SampledToken per chunk whose `.samples` is true, in chunk order."""
        return self.launch(batch).result()

    @torch.inference_mode()
    def launch(self, batch: ScheduledBatch) -> Sampled | ReadyTokens:
        """Queue the step; result() of the returned handle gives execute's list. A chunk whose last
        token is a PENDING_TOKEN is fed the id that the previous launch sampled for its request: the
        embedding looks it up in the buffer that launch sampled into (no copy, no host wait)."""
        if not batch.chunks:
            return ReadyTokens([])
        if self.graphs is not None and self.graphs.can_run(len(batch.chunks)) and _samples_one_token_each(batch):
            staged = self.decode_inputs.build(batch, self._last_rows)
            logits = self.graphs.run_staged(staged)  # [B, V], rows of the logits buffer the graphs share
            sampling = [chunk.seq for chunk in batch.chunks]
        else:
            input_ids, meta = build_step_inputs(batch, self.block_size, self.device, self._last_rows)
            sampling = [chunk.seq for chunk in batch.chunks if chunk.samples]
            if self.piecewise is not None and self.piecewise.can_run(meta.num_tokens):
                hidden = self.piecewise.run(input_ids, meta)  # [T, H], valid until the next step
            else:
                hidden = self.model(input_ids, meta)  # [T, H]
            if not sampling:
                return ReadyTokens([])
            logits = self.model.compute_logits(hidden.index_select(0, meta.sample_indices))  # [S, V]
        sampled = self.sampler.launch(logits, sampling, out=self._sampled_ids[: len(sampling)])
        self._last_rows = {seq.request_id: row for row, seq in enumerate(sampling)}
        return sampled

    def _max_blocks_per_seq(self) -> int:
        return -(-self.max_model_len // self.block_size)

    def _capture_decode_graphs(self) -> GraphRunner:
        max_blocks = self._max_blocks_per_seq()
        # Every captured size writes its logits here: a graph's own output would stay allocated for
        # as long as the graph lives (Llama-3.1-8B, 256 rows: ~2 GiB of float32 over the sizes).
        self._graph_logits = torch.empty(self.config.max_num_seqs, self.vocab_size, device=self.device)
        self._note_memory("decode_logits")
        graphs = GraphRunner(self._decode_logits, self.config.max_num_seqs, decode_inputs(max_blocks), self.device)
        graphs.capture()
        return graphs

    def _capture_piecewise_graphs(self) -> PiecewiseGraphs:
        max_tokens = min(self.config.max_num_batched_tokens, self.max_model_len * self.config.max_num_seqs)
        graphs = PiecewiseGraphs(self.model, max_tokens, self.device)
        graphs.capture()
        return graphs

    def _decode_logits(self, input_ids, positions, slot_mapping, block_tables, seq_lens, query_start_loc):
        """The captured decode step: [B] tokens -> logits [B, V]."""
        meta = AttentionMetadata(
            positions=positions,
            slot_mapping=slot_mapping,
            block_tables=block_tables,
            seq_lens=seq_lens,
            query_start_loc=query_start_loc,
            max_query_len=1,
            max_seq_len=self.max_model_len,
            sample_indices=positions,  # unused: every row of a decode step samples
        )
        return self.model.compute_logits(self.model(input_ids, meta), out=self._graph_logits[: input_ids.shape[0]])

    def release(self, request_id: str) -> None:
        """Drop the copy of the request's block table kept for decode steps."""
        if self.decode_inputs is not None:
            self.decode_inputs.release(request_id)

    # -- KV pool ----------------------------------------------------------------------------

    def kv_bytes_per_block(self, spec: ModelSpec) -> int:
        element = self.kv_dtype.itemsize
        return 2 * spec.num_layers * self.block_size * spec.num_kv_heads * spec.head_dim * element

    def _plan_kv_blocks(self, spec: ModelSpec) -> int:
        per_block = self.kv_bytes_per_block(spec)
        if self.config.kv_cache_tokens is not None:
            blocks = self.config.kv_cache_tokens // self.block_size
        elif self.config.kv_cache_memory is not None:
            blocks = self.config.kv_cache_memory // per_block
        elif self.device.type == "cuda":
            blocks = self._free_gpu_memory(spec) // per_block
        else:
            budget = min(CPU_MAX_KV_BYTES, _system_memory() // 8)
            blocks = min(CPU_DEFAULT_KV_TOKENS // self.block_size, budget // per_block)
        if blocks < 1:
            raise ValueError(f"the KV cache budget does not hold one block of {per_block} bytes")
        return int(blocks)

    def _allocate_kv_pool(self, spec: ModelSpec) -> None:
        # Allocated once, never grown. Zeroed: masked pad slots must stay finite (0 * NaN is NaN).
        shape = (2, spec.num_layers, self.num_kv_blocks, self.block_size, spec.num_kv_heads, spec.head_dim)
        self.kv_pool = torch.zeros(shape, dtype=self.kv_dtype, device=self.device)
        self.kv_cache_bytes = self.kv_pool.numel() * self.kv_pool.element_size()
        for i, attention in enumerate(self.model.attention_layers()):
            attention.k_cache, attention.v_cache = self.kv_pool[0, i], self.kv_pool[1, i]

    @torch.inference_mode()
    def _free_gpu_memory(self, spec: ModelSpec) -> int:
        """Bytes left for the KV pool: the utilization share of the GPU minus weights, the peak
        activations of a full-budget prefill, and whatever other processes hold."""
        tokens = min(self.config.max_num_batched_tokens, self.max_model_len)
        num_blocks = -(-tokens // self.block_size)
        scratch = torch.zeros(
            (2, num_blocks, self.block_size, spec.num_kv_heads, spec.head_dim), dtype=self.dtype, device=self.device
        )
        for attention in self.model.attention_layers():
            attention.k_cache, attention.v_cache = scratch[0], scratch[1]
        torch.cuda.reset_peak_memory_stats(self.device)
        positions = torch.arange(tokens, device=self.device)
        meta = AttentionMetadata(
            positions=positions,
            slot_mapping=positions,
            block_tables=torch.arange(num_blocks, dtype=torch.int32, device=self.device)[None],
            seq_lens=torch.tensor([tokens], dtype=torch.int32, device=self.device),
            query_start_loc=torch.tensor([0, tokens], dtype=torch.int32, device=self.device),
            max_query_len=tokens,
            max_seq_len=tokens,
            sample_indices=torch.tensor([tokens - 1], device=self.device),
        )
        self.model.compute_logits(self.model(torch.zeros_like(positions), meta)[-1:])
        torch.cuda.synchronize(self.device)
        peak = torch.cuda.max_memory_allocated(self.device) - scratch.numel() * scratch.element_size()
        del scratch
        torch.cuda.empty_cache()
        free, total = torch.cuda.mem_get_info(self.device)
        held_by_others = total - free - torch.cuda.memory_reserved(self.device)
        return max(0, int(total * self.config.gpu_memory_utilization) - held_by_others - peak)


def memory_report(memory: dict[str, int], kv_tokens: int) -> str:
    """One line from the runner's startup notes (bytes allocated after each stage, in order)."""
    gib = {stage: n / 2**30 for stage, n in memory.items()}
    # The decode graphs' shared logits buffer is allocated just before they are captured.
    graphs_from = gib.get("decode_logits", gib["kv_pool"])
    logits = f", decode logits {graphs_from - gib['kv_pool']:.2f} GiB" if "decode_logits" in gib else ""
    return (
        f"GPU memory allocated: weights {gib['weights']:.2f} GiB, KV pool {gib['kv_pool'] - gib['weights']:.2f} GiB "
        f"({kv_tokens} tokens){logits}, CUDA graphs {gib['piecewise_graphs'] - graphs_from:.2f} GiB"
    )


def _samples_one_token_each(batch: ScheduledBatch) -> bool:
    """A decode step: every chunk feeds one token and samples the next."""
    return batch.is_decode_only and all(chunk.samples for chunk in batch.chunks)


def _refuse_unimplemented(config: EngineConfig) -> None:
    # Better a clear refusal than a silently different engine than the one asked for.
    if config.kv_cache_dtype == "int8":
        raise ValueError("kv_cache_dtype 'int8' is not implemented yet (fp8 is, on CUDA)")
    if config.quantization is not None:
        raise ValueError(f"quantization {config.quantization!r} is not implemented yet")
    if config.tensor_parallel_size != 1:
        raise ValueError("tensor parallelism is not implemented yet")


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but CUDA is not available")
    return torch.device(name)


def _resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return DTYPES[name]


def _resolve_kv_dtype(name: str, dtype: torch.dtype, triton: bool) -> torch.dtype:
    if name == "auto":
        return dtype
    # fp8 (e4m3): half the bytes of bf16 per cached token, so twice the tokens in the pool and half
    # the reads of decode attention. Only the Triton kernels read it (widened to bf16 on load).
    if not triton:
        raise ValueError("kv_cache_dtype 'fp8' needs a CUDA GPU with Triton")
    return torch.float8_e4m3fn


def _system_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
