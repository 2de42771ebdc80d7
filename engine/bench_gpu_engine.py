"""The whole `torch` engine (scheduler + runner + model) on CUDA with random weights: batch-1
decode rate, time to first token of a long prompt, and throughput of many concurrent requests."""

from __future__ import annotations

import random
import time
from pathlib import Path

import torch

from engine.types import SamplingParams


def _prompt(rng: random.Random, length: int, vocab: int) -> list[int]:
    return [rng.randrange(vocab) for _ in range(length)]


def _drive(engine, prompts: list[list[int]], max_tokens: int) -> dict:
    """Submit all prompts at once, step until done; per-request first/last token times."""
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for i, prompt in enumerate(prompts):
        engine.add_request(f"r{i}", prompt, params)
    first: dict[str, float] = {}
    last: dict[str, float] = {}
    generated = 0
    steps = 0
    while engine.has_unfinished():
        outputs = engine.step()
        steps += 1
        now = time.perf_counter()  # step() returns host token ids, so the GPU work is done
        for out in outputs:
            if out.new_token_ids:
                generated += len(out.new_token_ids)
                first.setdefault(out.request_id, now)
                last[out.request_id] = now
    end = time.perf_counter()
    return {"start": start, "end": end, "first": first, "last": last, "generated": generated, "steps": steps}


def graphed_runner(config):
    """The engine's ModelRunner with decode-only steps replayed from CUDA graphs: what the runner
    itself gains once it wires in engine/cuda_graphs.GraphRunner (a few lines, see BENCHMARKS.md)."""
    from engine.attention_metadata import AttentionMetadata, build_step_inputs
    from engine.cuda_graphs import GraphRunner, decode_inputs
    from engine.runner import ModelRunner

    class GraphedModelRunner(ModelRunner):
        def __init__(self, config) -> None:
            super().__init__(config)
            max_blocks = -(-self.max_model_len // self.block_size)
            self.graphs = GraphRunner(self._decode_logits, config.max_num_seqs, decode_inputs(max_blocks), self.device)
            self.graphs.capture()

        def _decode_logits(self, input_ids, positions, slot_mapping, block_tables, seq_lens, query_start_loc):
            meta = AttentionMetadata(
                positions=positions, slot_mapping=slot_mapping, block_tables=block_tables, seq_lens=seq_lens,
                query_start_loc=query_start_loc, max_query_len=1, max_seq_len=self.max_model_len,
                sample_indices=positions,  # unused: every row of a decode step samples
            )
            return self.model.compute_logits(self.model(input_ids, meta))  # [B, V]

        @torch.inference_mode()
        def execute(self, batch):
            if not batch.chunks:
                return []
            input_ids, meta = build_step_inputs(batch, self.block_size, self.device)
            sampling = [chunk.seq for chunk in batch.chunks if chunk.samples]
            if meta.max_query_len == 1 and len(sampling) == len(batch.chunks) and self.graphs.can_run(len(sampling)):
                logits = self.graphs.run(
                    input_ids=input_ids, positions=meta.positions, slot_mapping=meta.slot_mapping,
                    block_tables=meta.block_tables, seq_lens=meta.seq_lens, query_start_loc=meta.query_start_loc,
                )
                return self.sampler(logits, sampling)
            return super().execute(batch)

    return GraphedModelRunner(config)


def engine_timings(
    folder: Path, prompt_len: int, new_tokens: int, concurrency: int, concurrent_out: int, cuda_graphs: bool = False
) -> dict:
    from engine import kernels
    from engine.config import EngineConfig
    from engine.engine import Engine

    installed = kernels.use_triton()
    rng = random.Random(0)
    max_len = max(prompt_len + new_tokens, 1000 + max(concurrent_out, 1)) + 16
    kv_tokens = max(concurrency * max_len, 4 * max_len)
    config = EngineConfig(
        model=str(folder), dummy_weights=True, device="cuda", dtype="bfloat16", max_model_len=max_len,
        kv_cache_tokens=kv_tokens, max_num_seqs=max(concurrency, 1),
    )
    engine = Engine(config, runner=graphed_runner(config)) if cuda_graphs else Engine(config)
    vocab = engine.vocab_size
    _drive(engine, [_prompt(rng, 64, vocab)], 8)  # warm-up: Triton compiles, cuBLAS handles

    single = _drive(engine, [_prompt(rng, prompt_len, vocab)], new_tokens)
    decode_s = single["last"]["r0"] - single["first"]["r0"]
    result = {
        "triton_kernels": installed,
        "cuda_graphs": cuda_graphs,
        "decode_tok_s": (new_tokens - 1) / decode_s,
        "ttft_prompt_s": single["first"]["r0"] - single["start"],
    }
    long = _drive(engine, [_prompt(rng, 1000, vocab)], 1)
    result["ttft_1000_s"] = long["first"]["r0"] - long["start"]
    if concurrency > 0:
        many = _drive(engine, [_prompt(rng, 1000, vocab) for _ in range(concurrency)], concurrent_out)
        elapsed = many["end"] - many["start"]
        ttfts = sorted(t - many["start"] for t in many["first"].values())
        result.update(
            {
                "concurrency": concurrency,
                "concurrent_out_tokens": concurrent_out,
                "throughput_tok_s": many["generated"] / elapsed,
                "concurrent_elapsed_s": elapsed,
                "concurrent_median_ttft_s": ttfts[len(ttfts) // 2],
            }
        )
    del engine
    torch.cuda.empty_cache()
    return result
