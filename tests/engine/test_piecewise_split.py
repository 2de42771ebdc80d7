"""The piecewise split of a forward pass (engine/piecewise_graphs.py), run eagerly on the CPU:
pieces handing activations through static buffers, attention between them, give the same hidden
states as the plain forward. The CUDA replays are tested in tests/engine/kernels."""

import pytest
import torch

from engine.attention_metadata import build_step_inputs
from engine.config import EngineConfig
from engine.piecewise_graphs import PiecewiseGraphs, padded_tokens, token_buckets
from engine.runner import ModelRunner
from engine.sequence import ScheduledBatch, ScheduledChunk, Sequence
from engine.types import SamplingParams


def test_buckets_step_finely_to_512_then_by_256():
    assert token_buckets(2048) == [16, 32, 64, 96, 128, 160, 192, 256, 512, 768, 1024, 1280, 1536, 1792, 2048]
    assert token_buckets(100) == [16, 32, 64, 96, 100]
    assert token_buckets(16) == [16]


def test_padded_tokens_is_the_smallest_bucket_that_holds():
    sizes = token_buckets(2048)
    assert [padded_tokens(n, sizes) for n in (1, 16, 17, 513, 1000, 2048)] == [16, 16, 32, 768, 1024, 2048]
    assert padded_tokens(2049, sizes) is None


def test_buckets_refuse_an_empty_budget():
    with pytest.raises(ValueError):
        token_buckets(0)


def test_pieces_equal_the_plain_forward_on_a_mixed_step(model_dir):
    runner = ModelRunner(EngineConfig(model=str(model_dir), kv_cache_tokens=1024, max_model_len=256))
    prompts = [[1, 504, 3458, 282, 4649, 314, 27, 90], [1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365]]
    seqs = [
        Sequence(f"r{i}", prompt, SamplingParams(), i, block_table=list(range(8 * i, 8 * i + 8)))
        for i, prompt in enumerate(prompts)
    ]
    # A decode of the first sequence (its first 7 tokens cached by a first step) with the second's prefill.
    first = ScheduledBatch([ScheduledChunk(seqs[0], 0, 7)])
    mixed = ScheduledBatch([ScheduledChunk(seqs[0], 7, 1), ScheduledChunk(seqs[1], 0, 10)])
    with torch.inference_mode():
        runner.model(*build_step_inputs(first, runner.block_size, runner.device))
        input_ids, meta = build_step_inputs(mixed, runner.block_size, runner.device)
        plain = runner.model(input_ids, meta).clone()
        pieces = PiecewiseGraphs(runner.model, 11, runner.device, buckets=[11], replay=False)
        split = pieces.run(input_ids, meta)
    assert split.shape == plain.shape == (11, runner.spec.hidden_size)
    torch.testing.assert_close(split, plain, rtol=0, atol=0)


def test_an_fp8_kv_cache_is_refused_on_the_cpu(model_dir):
    with pytest.raises(ValueError, match="fp8"):
        ModelRunner(EngineConfig(model=str(model_dir), device="cpu", kv_cache_dtype="fp8"))
