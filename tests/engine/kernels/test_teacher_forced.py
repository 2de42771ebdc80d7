"""The engine's teacher-forced logits on Llama-3.1-8B's shape against transformers' on the same
random weights (the engine's dummy init), on CUDA: prompts of mixed lengths in one batch through
the Triton kernels, transformers (sdpa, bf16) one prompt at a time. The CPU version of this test
(tests/engine/test_teacher_forced_cpu.py) runs a narrow model; `python -m engine.bench_logits
--device cuda --config llama-3.1-8b` prints the whole study on this shape."""

from __future__ import annotations

import pytest

from tests.engine.kernels.gpu import requires_cuda

pytestmark = [pytest.mark.gpu, requires_cuda]

PROMPT_LENS = [37, 128, 300, 512]
MAX_RELATIVE_ERROR = 2e-2


def test_llama_8b_one_mixed_batch_matches_transformers(tmp_path):
    from engine.bench_gpu_decoders import hf_model_from_engine
    from engine.bench_logits import engine_logits, engine_runner, hf_logits, random_prompts, relative_errors
    from engine.models.dummy import write_dummy_model

    folder = write_dummy_model("llama-3.1-8b", tmp_path / "llama-3.1-8b")
    runner = engine_runner(folder, "cuda", PROMPT_LENS, dummy=True)  # installs the Triton kernels
    prompts = random_prompts(PROMPT_LENS, runner.vocab_size, seed=0)
    got = engine_logits(runner, prompts)
    want = hf_logits(hf_model_from_engine(runner.model, runner.spec, folder), prompts)
    errors = {len(p): relative_errors([ours], [theirs]) for p, ours, theirs in zip(prompts, got, want)}
    # Per prompt: (over all its tokens' logits, over its last token's).
    assert all(every <= MAX_RELATIVE_ERROR and last <= MAX_RELATIVE_ERROR for every, last in errors.values()), errors
