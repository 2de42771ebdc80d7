"""The scheduler's tricks must not change what the real model says: greedy outputs with prefix
caching, chunked prefill and preemption equal those of a roomy, plain run."""

from engine.config import EngineConfig
from engine.engine import Engine
from engine.types import SamplingParams

SYSTEM = "You are a helpful assistant who answers questions about geography concisely and accurately. " * 4
QUESTIONS = ["What is the capital of France?", "Name a river in Egypt.", "What ocean borders Chile?"]


def prompts(model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    rendered = []
    for question in QUESTIONS:
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]
        ids = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
        rendered.append(list(ids["input_ids"] if hasattr(ids, "keys") else ids))
    return rendered


def generate(model_dir, prompt_ids, **config):
    engine = Engine(EngineConfig(model=str(model_dir), device="cpu", num_threads=1, block_size=16, **config))
    for i, prompt in enumerate(prompt_ids):
        engine.add_request(f"r{i}", prompt, SamplingParams(max_tokens=12, temperature=0.0))
    tokens = {f"r{i}": [] for i in range(len(prompt_ids))}
    while engine.has_unfinished():
        for out in engine.step():
            assert out.error is None
            tokens[out.request_id] += out.new_token_ids
    return tokens, engine.stats()


def test_prefix_caching_chunking_and_preemption_keep_greedy_outputs(model_dir):
    prompt_ids = prompts(model_dir)
    plain, _ = generate(model_dir, prompt_ids, kv_cache_tokens=2048, enable_prefix_caching=False)
    # ~90-token prompts sharing ~60 tokens, 10 blocks in all: they cannot all run at once.
    squeezed, stats = generate(model_dir, prompt_ids, kv_cache_tokens=160, max_num_batched_tokens=48)
    assert stats.preemptions > 0 and stats.prefix_cache_hits > 0
    assert squeezed == plain
    assert all(len(t) > 0 for t in plain.values())
