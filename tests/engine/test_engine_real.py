"""The torch engine with the real SmolLM2 weights: continuous batching, chunked prefill, prefix
caching and preemption must never change what a request would get alone (transformers' generate)."""

import dataclasses
import json

import pytest
import torch

from engine.config import EngineConfig
from engine.engine import Engine
from engine.runner import ModelRunner
from engine.types import SamplingParams
from tests.engine.sched_helpers import run_until_done, tokens_of

NEW_TOKENS = 32
QUESTIONS = [
    "Hi",
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "List three prime numbers and explain why each one is prime.",
    "Translate 'good morning' into Spanish, French and German, one per line please.",
    "Why is the sky blue? Answer in two sentences for a curious ten year old child who likes science.",
    "Describe the water cycle step by step, naming evaporation, condensation, precipitation and collection, "
    "and say which one happens in clouds.",
    "Name a color.",
]
SYSTEM = (
    "You are a meticulous assistant for a public library. Follow these house rules in every answer. "
    + " ".join(f"Rule {i}: be precise about topic number {i} and cite the shelf code A{i}." for i in range(1, 24))
)


@pytest.fixture(scope="module")
def tokenizer(model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


@pytest.fixture(scope="module")
def prompts(tokenizer):
    return [tokenizer(f"<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n").input_ids for q in QUESTIONS]


@pytest.fixture(scope="module")
def alone_outputs(model_dir, prompts):
    """Each prompt's greedy continuation from transformers, one prompt at a time."""
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    outputs = []
    with torch.inference_mode():
        for prompt in prompts:
            generated = hf.generate(torch.tensor([prompt]), max_new_tokens=NEW_TOKENS, do_sample=False)
            outputs.append(generated[0, len(prompt) :].tolist())
    return outputs


def make_engine(model_dir, **config) -> Engine:
    return Engine(EngineConfig(model=str(model_dir), **{"kv_cache_tokens": 4096, **config}))


def greedy(max_tokens=NEW_TOKENS):
    return SamplingParams(max_tokens=max_tokens, temperature=0.0)


def run_staggered(engine, requests, admit_every=3):
    """Admit (id, prompt, params) one by one, a few steps apart, and run until all finish."""
    outputs = {}
    pending = list(requests)
    step = 0
    while pending or engine.has_unfinished():
        if pending and step % admit_every == 0:
            engine.add_request(*pending.pop(0))
        for out in engine.step():
            outputs.setdefault(out.request_id, []).append(out)
        step += 1
    return {rid: tokens_of(outs) for rid, outs in outputs.items()}


def test_concurrent_greedy_requests_match_generate_alone(model_dir, prompts, alone_outputs):
    # A small step budget chunks the longer prompts and mixes their chunks with other requests' decodes.
    engine = make_engine(model_dir, max_num_batched_tokens=24)
    requests = [(f"r{i}", p, greedy()) for i, p in enumerate(prompts)]
    got = run_staggered(engine, requests, admit_every=2)
    for i, expected in enumerate(alone_outputs):
        assert got[f"r{i}"] == expected, f"request {i} differs"
    stats = engine.stats()
    assert stats.running == 0 and stats.kv_blocks_used == 0


def test_prefix_cache_reuses_a_shared_system_prompt(model_dir, tokenizer):
    def chat(question):
        return tokenizer(
            f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
        ).input_ids

    first, second = chat("Where are the atlases?"), chat("Can I renew a book online?")
    assert len(first) > 300
    engine = make_engine(model_dir)
    engine.add_request("first", first, greedy(max_tokens=8))
    run_until_done(engine)
    hits_before = engine.stats().prefix_cache_hits
    engine.add_request("second", second, greedy(max_tokens=8))
    outs = run_until_done(engine)["second"]
    stats = engine.stats()
    shared = sum(a == b for a, b in zip(first, second))  # the common prefix (the system prompt and more)
    assert stats.prefix_cache_hits - hits_before >= (shared // 16) * 16 - 16
    assert outs[0].num_cached_tokens >= 288
    uncached = make_engine(model_dir, enable_prefix_caching=False)
    uncached.add_request("second", second, greedy(max_tokens=8))
    assert tokens_of(outs) == tokens_of(run_until_done(uncached)["second"])
    assert uncached.stats().prefix_cache_hits == 0


def test_preemption_keeps_every_output(model_dir, prompts, alone_outputs):
    # 14 blocks of 16 tokens hold the longest request alone but far from all eight at once.
    longest = max(len(p) for p in prompts) + NEW_TOKENS
    num_blocks = max(14, -(-longest // 16))
    engine = make_engine(model_dir, kv_cache_tokens=num_blocks * 16, max_num_batched_tokens=64)
    for i, prompt in enumerate(prompts):
        engine.add_request(f"r{i}", prompt, greedy())
    got = {rid: tokens_of(outs) for rid, outs in run_until_done(engine).items()}
    assert engine.stats().preemptions > 0
    for i, expected in enumerate(alone_outputs):
        assert got[f"r{i}"] == expected, f"request {i} differs after preemption"


def test_seeded_sampling_does_not_depend_on_the_batch(model_dir, prompts):
    seeded = SamplingParams(max_tokens=NEW_TOKENS, temperature=0.9, top_p=0.95, top_k=50, seed=1234)
    runner = ModelRunner(EngineConfig(model=str(model_dir), kv_cache_tokens=4096))
    alone_engine = Engine(runner.config, runner)
    alone_engine.add_request("s", prompts[3], seeded)
    alone = tokens_of(run_until_done(alone_engine)["s"])

    busy_engine = Engine(runner.config, runner)
    others = [(f"o{i}", p, SamplingParams(max_tokens=12, temperature=1.0)) for i, p in enumerate(prompts[:4])]
    got = run_staggered(busy_engine, others[:2] + [("s", prompts[3], seeded)] + others[2:], admit_every=2)
    assert got["s"] == alone
    # The seed matters: another one draws another continuation (so equality above is no accident).
    alone_engine.add_request("t", prompts[3], dataclasses.replace(seeded, seed=99))
    assert tokens_of(run_until_done(alone_engine)["t"]) != alone


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graph_decode_steps_match_eager_steps(tmp_path):
    from engine.models.dummy import shipped_config

    (tmp_path / "config.json").write_text(json.dumps(shipped_config("smollm2-135m")))
    requests = [(f"r{i}", list(range(100 + 9 * i, 112 + 13 * i)), greedy()) for i in range(5)]
    results = []
    for cuda_graphs in (False, True):
        engine = Engine(
            EngineConfig(
                model=str(tmp_path), dummy_weights=True, device="cuda", kv_cache_tokens=4096,
                max_num_seqs=8, cuda_graphs=cuda_graphs,
            )
        )
        assert (engine.runner.graphs is not None) == cuda_graphs
        results.append(run_staggered(engine, requests, admit_every=2))
    assert results[0] == results[1]


def _mixed_requests(prompts):
    """Greedy, seeded sampling and logprobs, the sampler's three paths."""
    return [
        ("greedy", prompts[1], greedy(max_tokens=12)),
        ("seeded", prompts[3], SamplingParams(max_tokens=12, temperature=0.8, top_k=40, seed=7)),
        ("logprobs", prompts[5], SamplingParams(max_tokens=10, temperature=0.0, logprobs=2)),
        ("short", prompts[0], greedy(max_tokens=3)),
    ]


def _outputs_of(engine, requests):
    outputs, pending, step = {}, list(requests), 0
    while pending or engine.has_unfinished():
        if pending and step % 2 == 0:
            engine.add_request(*pending.pop(0))
        for out in engine.step():
            outputs.setdefault(out.request_id, []).append(out)
        step += 1
    return {
        rid: (tokens_of(outs), [round(lp.logprob, 3) for out in outs for lp in out.logprobs or []])
        for rid, outs in outputs.items()
    }


def test_running_ahead_changes_no_output(model_dir, prompts):
    runner = ModelRunner(EngineConfig(model=str(model_dir), kv_cache_tokens=4096, max_num_batched_tokens=64))
    in_step = _outputs_of(Engine(dataclasses.replace(runner.config, async_scheduling="off"), runner), _mixed_requests(prompts))
    ahead = _outputs_of(Engine(dataclasses.replace(runner.config, async_scheduling="on"), runner), _mixed_requests(prompts))
    assert ahead == in_step
    assert len(in_step["logprobs"][1]) == 10 and len(in_step["short"][0]) == 3


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_running_ahead_on_the_gpu_changes_no_output(tmp_path):
    from engine.models.dummy import shipped_config

    prompts = [list(range(100 + 7 * i, 130 + 29 * i)) for i in range(6)]
    (tmp_path / "config.json").write_text(json.dumps(shipped_config("smollm2-135m")))
    config = EngineConfig(model=str(tmp_path), dummy_weights=True, device="cuda", kv_cache_tokens=4096, max_num_seqs=8)
    runner = ModelRunner(config)
    assert runner.asynchronous and runner.graphs is not None
    ahead_engine = Engine(config, runner)  # auto: runs ahead on CUDA
    assert ahead_engine._runs_ahead
    ahead = _outputs_of(ahead_engine, _mixed_requests(prompts))
    in_step = _outputs_of(Engine(dataclasses.replace(config, async_scheduling="off"), runner), _mixed_requests(prompts))
    assert [rid for rid in ahead] and ahead.keys() == in_step.keys()
    for rid in ahead:
        assert ahead[rid][0] == in_step[rid][0], rid
