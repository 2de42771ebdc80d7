"""Prefill and mixed steps replayed from CUDA graphs captured piece by piece around attention.

A decode-only step replays one whole graph (engine/cuda_graphs.py). A step with prefill chunks
has a per-sequence shape no single graph fits, and run eagerly it launches about ten kernels a
layer from Python: on an H100 a step of 32 decodes and a 128-token prefill of an 8B model took
20 ms of host time for 13 ms of GPU work. Everything but attention depends only on the number of
tokens, so the work between two attention calls is captured once per padded token count:

    piece 0      embedding, layer 0 up to its attention (norm, qkv, rotary, K/V write)
    piece i      layer i-1 after its attention (o_proj, norm, MLP), layer i up to its attention
    piece L      layer L-1 after its attention, the final norm

and attention runs eagerly between the pieces with the step's real metadata (one launch a
layer). Pieces hand activations to each other through static buffers; padded rows write K/V to
slot -1, which the Triton write_kv skips, so they touch no sequence.
"""

from __future__ import annotations

import bisect

import torch

from engine.attention_metadata import AttentionMetadata


# A serving step is often a few decodes plus one short prompt (32 decodes + a 128-token prompt =
# 160 tokens). Padded to 256 its linear layers took 7.3 ms on an H100 (cuBLAS, Llama-3.1-8B's
# layers, `python -m engine.bench_gpu_micro 160,256`) against 6.4 ms at 160: a few buckets between
# the powers of two, each costing one more capture of every piece at startup.
_SMALL_BUCKETS = (16, 32, 64, 96, 128, 160, 192, 256, 512)


def token_buckets(max_tokens: int) -> list[int]:
    """Padded token counts: the small buckets up to 512, then every 256 up to max_tokens (included)."""
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    sizes = [s for s in _SMALL_BUCKETS if s < max_tokens]
    sizes += list(range(768, max_tokens, 256))
    return sizes + [max_tokens]


def padded_tokens(num_tokens: int, sizes: list[int]) -> int | None:
    """The smallest bucket that holds num_tokens, or None when none does."""
    index = bisect.bisect_left(sizes, num_tokens)
    return sizes[index] if index < len(sizes) else None


class PiecewiseGraphs:
    """`run(input_ids, meta)` -> final hidden states [T, H] of a step of T <= max_tokens tokens.

    The model must be a Llama-family CausalLM of engine/models (layers with pre_attention /
    post_attention, attention layers with attend)."""

    def __init__(
        self, model, max_tokens: int, device: torch.device, buckets: list[int] | None = None, replay: bool = True
    ) -> None:
        self.model = model
        self.layers = list(model.model.layers)
        self.buckets = sorted(buckets) if buckets is not None else token_buckets(max_tokens)
        spec = model.spec
        largest = self.buckets[-1]
        dtype = model.model.embed_tokens.weight.dtype
        self.input_ids = torch.zeros(largest, dtype=torch.int64, device=device)
        self.positions = torch.zeros(largest, dtype=torch.int64, device=device)
        self.slot_mapping = torch.full((largest,), -1, dtype=torch.int64, device=device)
        self.residual = torch.zeros(largest, spec.hidden_size, dtype=dtype, device=device)
        self.hidden = torch.zeros(largest, spec.hidden_size, dtype=dtype, device=device)
        self.q = torch.zeros(largest, spec.num_heads, spec.head_dim, dtype=dtype, device=device)
        self.attention_out = torch.zeros(largest, spec.num_heads * spec.head_dim, dtype=dtype, device=device)
        self.device = device
        # replay=False runs the same pieces eagerly (a CPU test of the split; padded rows need the
        # Triton write_kv, so there buckets must be exact token counts).
        self.replay = replay
        self.graphs: dict[int, list[torch.cuda.CUDAGraph]] = {}
        self.pool = None

    def can_run(self, num_tokens: int) -> bool:
        return padded_tokens(num_tokens, self.buckets) is not None

    def _replay(self, size: int, index: int) -> None:
        if self.replay:
            self.graphs[size][index].replay()
        else:
            self._piece(index, size, self._capture_meta(size))

    @torch.inference_mode()
    def capture(self, warmup_steps: int = 1) -> None:
        """Every bucket, largest first so the smaller ones reuse its memory pool."""
        # One warm-up stream for every piece: each stream gets its own cuBLAS workspace and its own
        # cache of freed blocks, which a stream per piece would multiply (33 pieces x every bucket).
        stream = torch.cuda.Stream(self.device)
        for size in reversed(self.buckets):
            meta = self._capture_meta(size)
            pieces = []
            for index in range(len(self.layers) + 1):
                stream.wait_stream(torch.cuda.current_stream(self.device))
                with torch.cuda.stream(stream):  # Triton compiles, cuBLAS picks, outside the capture
                    for _ in range(warmup_steps):
                        self._piece(index, size, meta)
                torch.cuda.current_stream(self.device).wait_stream(stream)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, pool=self.pool):
                    self._piece(index, size, meta)
                self.pool = graph.pool()
                pieces.append(graph)
            self.graphs[size] = pieces
        torch.cuda.synchronize(self.device)

    @torch.inference_mode()
    def run(self, input_ids: torch.Tensor, meta: AttentionMetadata) -> torch.Tensor:
        num_tokens = input_ids.shape[0]
        size = padded_tokens(num_tokens, self.buckets)
        if size is None or (self.replay and size not in self.graphs):
            raise ValueError(f"no captured graphs for a step of {num_tokens} tokens")
        self.input_ids[:num_tokens].copy_(input_ids, non_blocking=True)
        self.positions[:num_tokens].copy_(meta.positions, non_blocking=True)
        self.slot_mapping[:num_tokens].copy_(meta.slot_mapping, non_blocking=True)
        self.slot_mapping[num_tokens:size].fill_(-1)
        q, attention_out = self.q[:num_tokens], self.attention_out[:num_tokens]
        for index, layer in enumerate(self.layers):
            self._replay(size, index)
            layer.self_attn.attend(q, meta, out=attention_out)
        self._replay(size, len(self.layers))
        return self.hidden[:num_tokens]

    def _capture_meta(self, size: int) -> AttentionMetadata:
        # The pieces read positions and slot_mapping only; the rest is never touched in a piece.
        unused = torch.zeros(1, dtype=torch.int32, device=self.device)
        return AttentionMetadata(
            positions=self.positions[:size],
            slot_mapping=self.slot_mapping[:size],
            block_tables=unused[None],
            seq_lens=unused,
            query_start_loc=unused,
            max_query_len=size,
            max_seq_len=size,
            sample_indices=self.positions[:1],
        )

    def _piece(self, index: int, size: int, meta: AttentionMetadata) -> None:
        if index == 0:
            hidden, residual = self.model.model.embed_tokens(self.input_ids[:size]), None
        else:
            hidden, residual = self.layers[index - 1].post_attention(self.attention_out[:size], self.residual[:size])
        if index < len(self.layers):
            q, residual = self.layers[index].pre_attention(hidden, residual, meta)
            self.q[:size].copy_(q)
            self.residual[:size].copy_(residual)
        else:
            hidden, _ = self.model.model.norm(hidden, residual)
            self.hidden[:size].copy_(hidden)
