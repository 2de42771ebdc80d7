"""What the decode probes share: the 8B-shape engine at batch 1 (random bf16 weights), and a
comparison of variants in one process. Each variant sets its knobs, the decode graph is captured
again, and the variants alternate order from round to round."""

import random
import statistics
import tempfile
from pathlib import Path
from typing import Callable

from engine.bench_gpu_engine import _drive, _prompt
from engine.config import EngineConfig
from engine.engine import Engine
from engine.models.dummy import write_dummy_model
from engine.types import SamplingParams


def batch1_engine() -> Engine:
    folder = write_dummy_model("llama-3.1-8b", Path(tempfile.mkdtemp()) / "llama-3.1-8b")
    return Engine(EngineConfig(model=str(folder), dummy_weights=True, device="cuda", dtype="bfloat16",
                               max_model_len=2048, kv_cache_tokens=16384, max_num_seqs=1, cuda_graphs=True))


def compare_decode(engine: Engine, variants: dict[str, Callable[[], None]], rounds: int,
                   after: Callable[[str, list[int]], None] | None = None) -> dict[str, list[float]]:
    """tok/s of 128 tokens after a 512-token prompt, per variant and round, then a table against
    the first variant. after(name, prompt) runs after each timing, with the variant in place."""
    vocab = engine.vocab_size
    prompt = _prompt(random.Random(1), 512, vocab)
    rates: dict[str, list[float]] = {name: [] for name in variants}
    for round_ in range(rounds):
        names = list(variants) if round_ % 2 == 0 else list(variants)[::-1]
        for name in names:
            variants[name]()
            engine.runner.graphs = engine.runner._capture_decode_graphs()
            _drive(engine, [_prompt(random.Random(2), 64, vocab)], 8)  # warm: compiles, first replays
            run = _drive(engine, [prompt], 128)
            rates[name].append(127 / (run["last"]["r0"] - run["first"]["r0"]))
            if after is not None:
                after(name, prompt)
            print(f"round {round_} {name}: {rates[name][-1]:.1f} tok/s", flush=True)
    return rates


def print_rates(rates: dict[str, list[float]]) -> None:
    base_name = next(iter(rates))
    base = statistics.median(rates[base_name])
    print(f"\n{'variant':<22} {'median tok/s':>12} {'vs ' + base_name:>14}  samples")
    for name, samples in rates.items():
        med = statistics.median(samples)
        print(f"{name:<22} {med:12.1f} {med / base:14.3f}  {[round(r, 1) for r in samples]}")


class GreedyTokens:
    """An `after` for compare_decode: each variant's first 64 greedy tokens of the prompt, kept in
    .tokens by variant name (its first round only)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.tokens: dict[str, list[int]] = {}

    def __call__(self, name: str, prompt: list[int]) -> None:
        if name in self.tokens:
            return
        self.engine.add_request("greedy", prompt, SamplingParams(max_tokens=64, temperature=0.0, ignore_eos=True))
        out: list[int] = []
        while self.engine.has_unfinished():
            for step in self.engine.step():
                out.extend(step.new_token_ids)
        self.tokens[name] = out

    def equal_to(self, name: str) -> dict[str, bool]:
        return {other: tokens == self.tokens[name] for other, tokens in self.tokens.items()}
