"""Teacher-forced bf16 logits of the engine against transformers on the same random weights, on
the CPU: a narrow model of Llama-3.1-8B's structure (llama3 rope, GQA 4:1) with the engine's dummy
init, prompts of mixed lengths in one batch. The GPU version runs the real 8B shape
(tests/engine/kernels/test_teacher_forced.py); `python -m engine.bench_logits` is the study."""

import json

import pytest
import torch

from engine.bench_gpu_decoders import hf_model_from_engine
from engine.bench_logits import engine_logits, engine_runner, hf_logits, model_config, random_prompts, relative_errors

PROMPT_LENS = [37, 128, 300]
MAX_RELATIVE_ERROR = 2e-2  # measured about 1.1e-2 here (1.3e-2 at 32 layers)


@pytest.fixture(scope="module")
def narrow_llama(tmp_path_factory):
    """(runner, folder): 16 layers of hidden 128, 4 query heads and 1 KV head of 32, bf16."""
    folder = tmp_path_factory.mktemp("narrow-llama")
    config = model_config(None, layers=16, vocab=2048)
    config.update(hidden_size=128, intermediate_size=448, num_attention_heads=4, num_key_value_heads=1, head_dim=32)
    (folder / "config.json").write_text(json.dumps(config))
    return engine_runner(folder, "cpu", PROMPT_LENS, dummy=True), folder


def test_one_batch_of_mixed_prompts_matches_transformers(narrow_llama):
    runner, folder = narrow_llama
    prompts = random_prompts(PROMPT_LENS, runner.vocab_size, seed=0)
    got = engine_logits(runner, prompts)
    hf = hf_model_from_engine(runner.model, runner.spec, folder)
    want = hf_logits(hf, prompts)
    truth = hf_logits(hf.float(), prompts)
    for prompt, ours, theirs, exact in zip(prompts, got, want, truth):
        assert ours.shape == (len(prompt), runner.vocab_size)
        every, last = relative_errors([ours], [theirs])
        assert every <= MAX_RELATIVE_ERROR and last <= MAX_RELATIVE_ERROR, (len(prompt), every, last)
        every, last = relative_errors([ours], [exact])
        assert every <= MAX_RELATIVE_ERROR and last <= MAX_RELATIVE_ERROR, (len(prompt), every, last)


def test_transformers_baseline_draws_the_same_dummy_weights(narrow_llama):
    from transformers import AutoConfig

    from engine.backends.hf_model import dummy_hf_model

    runner, folder = narrow_llama
    ours = hf_model_from_engine(runner.model, runner.spec, folder).state_dict()
    theirs = dummy_hf_model(AutoConfig.from_pretrained(folder), torch.device("cpu"), torch.bfloat16, seed=0,
                            folder=folder).state_dict()
    assert ours.keys() == theirs.keys()
    different = [name for name in ours if not torch.equal(ours[name], theirs[name])]
    assert not different
