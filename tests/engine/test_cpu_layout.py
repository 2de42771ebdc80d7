"""The CPU weight placement moves parameters, never changes them, and the model computes the same."""

import json

import pytest
import torch

from engine.attention_metadata import build_step_inputs
from engine.layers.cpu_layout import place_for_cpu_decode
from engine.layers.linear import Linear
from engine.loader import load_model
from engine.sequence import ScheduledBatch, ScheduledChunk, Sequence
from engine.types import SamplingParams

TINY = dict(vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=128, architectures=["LlamaForCausalLM"])


def tiny_model(tmp_path, tied: bool):
    (tmp_path / "config.json").write_text(json.dumps({**TINY, "tie_word_embeddings": tied}))
    model, spec = load_model(tmp_path, torch.device("cpu"), torch.float32, dummy_weights=True, seed=1)
    for attention in model.attention_layers():
        attention.k_cache = torch.zeros(4, 16, spec.num_kv_heads, spec.head_dim)
        attention.v_cache = torch.zeros_like(attention.k_cache)
    return model


def logits(model, prompt):
    """Prefill then one decode step (the lone-sequence path): logits [len(prompt) + 1, V]."""
    seq = Sequence("r", prompt, SamplingParams(), 0, block_table=[0, 1, 2, 3])
    seq.token_ids.append(7)
    out = []
    with torch.inference_mode():
        for start, num_tokens in ((0, len(prompt)), (len(prompt), 1)):
            batch = ScheduledBatch([ScheduledChunk(seq, start, num_tokens)])
            input_ids, meta = build_step_inputs(batch, 16, torch.device("cpu"))
            out.append(model.compute_logits(model(input_ids, meta)))
    return torch.cat(out)


@pytest.mark.parametrize("tied", [True, False], ids=["tied-head", "own-head"])
def test_placement_keeps_every_value_and_the_outputs(tmp_path, tied):
    model = tiny_model(tmp_path, tied)
    prompt = list(range(3, 40))
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    expected = logits(model, prompt)

    place_for_cpu_decode(model)

    for name, param in model.named_parameters():
        assert torch.equal(param, before[name]), name
    linears = [m for m in model.modules() if isinstance(m, Linear)] + [model.lm_head]
    for linear in linears:  # [out, in] views of [in, out] rows
        assert linear.weight.stride() == (1, linear.weight.shape[0])
    assert (model.lm_head.weight is model.model.embed_tokens.weight) == tied
    if not tied:
        assert model.model.embed_tokens.weight.is_contiguous()  # rows gathered by token id
    # One buffer: every parameter lies inside the span of their total size (plus alignment).
    starts = sorted(p.data_ptr() for p in model.parameters())
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    assert starts[-1] - starts[0] < total + 64 * len(starts)
    torch.testing.assert_close(logits(model, prompt), expected, atol=1e-5, rtol=1e-5)


def test_placement_refuses_a_model_off_the_cpu(tmp_path):
    model = tiny_model(tmp_path, tied=True).to("meta")
    with pytest.raises(ValueError, match="CPU"):
        place_for_cpu_decode(model)
