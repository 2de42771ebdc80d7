"""The whole `torch` engine (scheduler + runner + model) with random weights, as it serves: on CUDA
the runner installs the Triton kernels and replays decode steps from its CUDA graphs. Batch-1
decode rate, time to first token of a long prompt, and throughput of many concurrent requests."""

from __future__ import annotations

import random
import statistics
import time
from pathlib import Path

import torch

from engine.types import SamplingParams


LONG_PROMPT_SAMPLES = 5  # TTFT of the long prompt: a fresh random prompt each time


def _prompt(rng: random.Random, length: int, vocab: int) -> list[int]:
    return [rng.randrange(vocab) for _ in range(length)]


def _drive(engine, prompts: list[list[int]], max_tokens: int, deadline_s: float | None = None) -> dict:
    """Submit all prompts at once, step until done (or, past deadline_s, abort what is left);
    per-request first/last token times."""
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    for i, prompt in enumerate(prompts):
        engine.add_request(f"r{i}", prompt, params)
    first: dict[str, float] = {}
    last: dict[str, float] = {}
    generated = 0
    steps = 0
    stopped = False
    while engine.has_unfinished():
        if deadline_s is not None and not stopped and time.perf_counter() - start > deadline_s:
            stopped = True  # a bounded run: the rate so far is the saturated rate
            for i in range(len(prompts)):
                engine.abort(f"r{i}")
        outputs = engine.step()
        steps += 1
        now = time.perf_counter()  # step() returns host token ids, so the GPU work is done
        for out in outputs:
            if out.new_token_ids:
                generated += len(out.new_token_ids)
                first.setdefault(out.request_id, now)
                last[out.request_id] = now
    end = time.perf_counter()
    return {"start": start, "end": end, "first": first, "last": last, "generated": generated, "steps": steps,
            "stopped": stopped}


def kv_bytes_per_token(folder: Path, dtype_bytes: int = 2) -> int:
    from engine.models.spec import read_model_spec

    spec = read_model_spec(folder)
    return 2 * spec.num_layers * spec.num_kv_heads * spec.head_dim * dtype_bytes  # K and V of every layer


def weight_bytes(folder: Path, dtype_bytes: int = 2) -> int:
    """Bytes of the model's weights, counted on the meta device (nothing allocated)."""
    from engine.models.registry import model_class
    from engine.models.spec import read_model_spec

    spec = read_model_spec(folder)
    with torch.device("meta"):
        model = model_class(spec.architecture)(spec, 64)
    return sum(p.numel() for p in model.parameters()) * dtype_bytes


def fitting_output(folder: Path, concurrency: int, long_prompt: int, wanted: int, fallback: int,
                   margin_bytes: int = 6 << 30) -> int:
    """`wanted` output tokens when the KV of `concurrency` whole sequences fits beside the weights
    in the free GPU memory, else `fallback` (all requests must be in the batch at once)."""
    if not torch.cuda.is_available():
        return wanted
    free, _total = torch.cuda.mem_get_info()
    need = concurrency * (long_prompt + wanted + 16) * kv_bytes_per_token(folder) + weight_bytes(folder) + margin_bytes
    return wanted if need <= free else fallback


def engine_timings(
    folder: Path, prompt_len: int, new_tokens: int, concurrency: int, concurrent_out: int,
    long_prompt: int = 1000, device: str = "cuda", report=None, concurrent_deadline_s: float | None = None,
) -> dict:
    """report(numbers): called with the batch-1 numbers before the long concurrent run, which
    stops after concurrent_deadline_s if given."""
    from engine.config import EngineConfig
    from engine.engine import Engine

    rng = random.Random(0)
    max_len = max(prompt_len + new_tokens, long_prompt + max(concurrent_out, 1)) + 16
    kv_tokens = max(concurrency * max_len, 4 * max_len)
    config = EngineConfig(
        model=str(folder), dummy_weights=True, device=device, dtype="bfloat16", max_model_len=max_len,
        kv_cache_tokens=kv_tokens, max_num_seqs=max(concurrency, 1), cuda_graphs=True,
    )
    started = time.perf_counter()
    engine = Engine(config)  # on CUDA: Triton kernels installed, decode graphs captured here
    setup_s = time.perf_counter() - started
    vocab = engine.vocab_size
    _drive(engine, [_prompt(rng, 64, vocab)], 8)  # warm-up: Triton compiles, cuBLAS handles

    single = _drive(engine, [_prompt(rng, prompt_len, vocab)], new_tokens)
    decode_s = single["last"]["r0"] - single["first"]["r0"]
    graphs = getattr(getattr(engine, "runner", None), "graphs", None)
    result = {
        "setup_s": setup_s,  # model, KV pool, graph capture
        "cuda_graphs": graphs is not None,
        "decode_tok_s": (new_tokens - 1) / decode_s,
        "ttft_prompt_s": single["first"]["r0"] - single["start"],
    }
    # One sample can catch a stall of the host (a collection, a clock change): the median of a few.
    ttfts = []
    for _ in range(LONG_PROMPT_SAMPLES):
        long = _drive(engine, [_prompt(rng, long_prompt, vocab)], 1)
        ttfts.append(long["first"]["r0"] - long["start"])
    result["long_prompt"] = long_prompt
    result["ttft_long_s"] = statistics.median(ttfts)
    result["ttft_long_samples_s"] = ttfts
    if report is not None:
        report(result)
    if concurrency > 0:
        prompts = [_prompt(rng, long_prompt, vocab) for _ in range(concurrency)]
        many = _drive(engine, prompts, concurrent_out, concurrent_deadline_s)
        elapsed = many["end"] - many["start"]
        ttfts = sorted(t - many["start"] for t in many["first"].values())
        result.update(
            {
                "concurrency": concurrency,
                "concurrent_out_tokens": concurrent_out,
                "throughput_tok_s": many["generated"] / elapsed,
                "concurrent_elapsed_s": elapsed,
                "concurrent_median_ttft_s": ttfts[len(ttfts) // 2],
                "concurrent_stopped_at_s": concurrent_deadline_s if many["stopped"] else None,
                "concurrent_generated": many["generated"],
            }
        )
    del engine
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return result
