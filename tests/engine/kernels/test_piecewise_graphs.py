"""Piecewise CUDA graphs for prefill and mixed steps: replays equal the eager forward."""

from __future__ import annotations

import pytest
import torch

from engine import kernels
from engine.attention_metadata import build_step_inputs
from engine.config import EngineConfig
from engine.piecewise_graphs import PiecewiseGraphs
from engine.runner import ModelRunner
from engine.sequence import ScheduledBatch, ScheduledChunk, Sequence
from engine.types import SamplingParams
from tests.engine.kernels.gpu import requires_cuda


@pytest.mark.gpu
@requires_cuda
def test_replayed_mixed_steps_equal_the_eager_forward(tmp_path):
    runner = _runner(tmp_path, max_num_batched_tokens=256, max_num_seqs=8)
    assert runner.piecewise is not None
    generator = torch.Generator().manual_seed(0)
    prompts = [torch.randint(1, 1000, (n,), generator=generator).tolist() for n in (40, 100, 7)]
    seqs = [
        Sequence(f"r{i}", prompt, SamplingParams(), i, block_table=list(range(16 * i, 16 * i + 16)))
        for i, prompt in enumerate(prompts)
    ]
    steps = [
        [ScheduledChunk(seqs[0], 0, 33)],  # 33 tokens: padded to 64
        [ScheduledChunk(seqs[0], 33, 1), ScheduledChunk(seqs[1], 0, 100), ScheduledChunk(seqs[2], 0, 7)],
    ]
    with torch.inference_mode():
        for chunks in steps:
            batch = ScheduledBatch(chunks)
            input_ids, meta = build_step_inputs(batch, runner.block_size, runner.device)
            # Eager first (writes this step's K/V), then the replay rewrites the same K/V.
            eager = runner.model(input_ids, meta).clone()
            replayed = runner.piecewise.run(input_ids, meta).clone()
            assert replayed.shape == eager.shape
            torch.testing.assert_close(replayed.float(), eager.float(), rtol=2e-2, atol=2e-2)
            assert torch.isfinite(replayed).all()


@pytest.mark.gpu
@requires_cuda
def test_every_bucket_is_captured_with_one_graph_a_piece(tmp_path):
    assert kernels.use_triton()
    runner = _runner(tmp_path, max_num_batched_tokens=300, max_num_seqs=4)
    graphs: PiecewiseGraphs = runner.piecewise
    assert graphs.buckets == [16, 32, 64, 96, 128, 160, 192, 256, 300]
    assert all(len(pieces) == runner.spec.num_layers + 1 for pieces in graphs.graphs.values())
    assert not graphs.can_run(301)


def _runner(folder, **limits) -> ModelRunner:
    config = EngineConfig(model=str(_dummy_smollm2(folder)), dummy_weights=True, device="cuda", dtype="bfloat16",
                          kv_cache_tokens=4096, max_model_len=512, **limits)
    return ModelRunner(config)


def _dummy_smollm2(folder):
    # SmolLM2-135M's shapes with random weights: the GPU host has no copy of the real model.
    from engine.models.dummy import write_dummy_model

    return write_dummy_model("smollm2-135m", folder / "smollm2-135m")
