"""Our Llama-family model against transformers on the same weights: the real SmolLM2, and tiny
random checkpoints of the other supported shapes (Qwen2 qkv bias, untied head, llama3 rope)."""

import json

import pytest
import torch

from engine.attention_metadata import build_step_inputs
from engine.config import EngineConfig
from engine.errors import ModelLoadError
from engine.layers.rotary import rope_inverse_frequencies
from engine.loader import load_model
from engine.runner import ModelRunner
from engine.sequence import ScheduledBatch, ScheduledChunk, Sequence
from engine.types import SamplingParams

PROMPTS = [
    [1, 504, 3458, 282, 4649, 314],
    [1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308, 34519, 28, 7018, 411, 407, 19712, 8182, 2],
    [1, 4093, 42, 15, 30, 53, 216, 8, 2, 1, 14, 16, 18, 20, 22, 24, 26, 28, 30, 32, 34, 36, 38, 40, 42],
]
ATOL = 5e-4  # float32: observed differences are ~1e-4 on logits of magnitude ~30


@pytest.fixture(scope="module")
def runner(model_dir):
    return ModelRunner(EngineConfig(model=str(model_dir), kv_cache_tokens=1024, max_model_len=512))


@pytest.fixture(scope="module")
def hf_model(model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()


def hf_logits(hf_model, prompt):
    with torch.no_grad():
        return hf_model(torch.tensor([prompt])).logits[0]  # [L, V]


def step_logits(model, block_size, chunks):
    """Run one step over `chunks` [(seq, start, num_tokens)] and return every token's logits [T, V]."""
    batch = ScheduledBatch([ScheduledChunk(seq, start, n) for seq, start, n in chunks])
    with torch.inference_mode():
        input_ids, meta = build_step_inputs(batch, block_size, torch.device("cpu"))
        return model.compute_logits(model(input_ids, meta))


def sequences(prompts, first_block=0, blocks_each=8):
    """Sequences over consecutive runs of `blocks_each` KV blocks from `first_block` on."""
    seqs = []
    for i, prompt in enumerate(prompts):
        first = first_block + i * blocks_each
        seqs.append(Sequence(f"r{i}", prompt, SamplingParams(), i, block_table=list(range(first, first + blocks_each))))
    return seqs


def test_runner_reads_the_folder(runner):
    assert (runner.vocab_size, runner.block_size, runner.max_model_len) == (49152, 16, 512)
    assert runner.num_kv_blocks == 64 and 2 in runner.eos_token_ids
    assert runner.kv_cache_bytes == 2 * 30 * 1024 * 3 * 64 * 4
    assert runner.dtype == torch.float32 and runner.device.type == "cpu"


def test_batched_prefill_matches_transformers(runner, hf_model):
    seqs = sequences(PROMPTS)
    logits = step_logits(runner.model, runner.block_size, [(s, 0, s.num_tokens) for s in seqs])
    offset = 0
    for prompt in PROMPTS:
        expected = hf_logits(hf_model, prompt)
        torch.testing.assert_close(logits[offset : offset + len(prompt)], expected, atol=ATOL, rtol=0)
        offset += len(prompt)


def test_chunked_prefill_and_decodes_in_mixed_batches(runner, hf_model):
    # Sequence a prefills in chunks while b, whose prompt is already cached, decodes beside it;
    # a's chunks straddle the 16-token block boundary.
    a, b = sequences([PROMPTS[2], PROMPTS[1]], first_block=20)
    b_prefix = len(PROMPTS[1]) - 3
    got_a, got_b = [], []
    step_logits(runner.model, runner.block_size, [(b, 0, b_prefix)])
    plan = [(7, 1), (10, 1), (8, 1)]  # a's chunk sizes, and one decode token of b per step
    start = 0
    for step, (a_len, _) in enumerate(plan):
        logits = step_logits(runner.model, runner.block_size, [(b, b_prefix + step, 1), (a, start, a_len)])
        got_b.append(logits[0])
        got_a.append(logits[1:])
        start += a_len
    torch.testing.assert_close(torch.cat(got_a), hf_logits(hf_model, PROMPTS[2]), atol=ATOL, rtol=0)
    torch.testing.assert_close(torch.stack(got_b), hf_logits(hf_model, PROMPTS[1])[b_prefix:], atol=ATOL, rtol=0)


def test_greedy_execute_continues_like_transformers(runner, hf_model):
    seq = sequences([PROMPTS[0]], first_block=40)[0]
    seq.params = SamplingParams(temperature=0.0)
    for _ in range(6):
        start = 0 if seq.num_tokens == len(PROMPTS[0]) else seq.num_tokens - 1
        (sampled,) = runner.execute(ScheduledBatch([ScheduledChunk(seq, start, seq.num_tokens - start)]))
        seq.token_ids.append(sampled.token_id)
    expected = hf_model.generate(torch.tensor([PROMPTS[0]]), max_new_tokens=6, do_sample=False)[0]
    assert seq.token_ids == expected.tolist()


def test_llama3_rope_frequencies_match_transformers():
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    scaling = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 8192}
    config = LlamaConfig(hidden_size=4096, num_attention_heads=32, rope_theta=500000.0, rope_scaling=scaling)
    expected, _ = ROPE_INIT_FUNCTIONS["llama3"](config, "cpu")
    torch.testing.assert_close(rope_inverse_frequencies(128, 500000.0, scaling), expected)


TINY = dict(vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=128)


def tiny_llama3():
    from transformers import LlamaConfig, LlamaForCausalLM

    scaling = {"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 32}
    return LlamaForCausalLM(LlamaConfig(**TINY, tie_word_embeddings=False, rope_scaling=scaling))


def tiny_qwen2():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    return Qwen2ForCausalLM(Qwen2Config(**TINY, tie_word_embeddings=True))


def tiny_mistral():
    from transformers import MistralConfig, MistralForCausalLM

    return MistralForCausalLM(MistralConfig(**TINY, head_dim=32, sliding_window=None))


@pytest.mark.parametrize("make", [tiny_llama3, tiny_qwen2, tiny_mistral])
def test_other_architectures_match_transformers(make, tmp_path):
    torch.manual_seed(0)
    hf = make().eval()
    hf.save_pretrained(tmp_path)
    model, spec = load_model(tmp_path, torch.device("cpu"), torch.float32)
    for attention in model.attention_layers():
        attention.k_cache = torch.zeros(8, 16, spec.num_kv_heads, spec.head_dim)
        attention.v_cache = torch.zeros_like(attention.k_cache)
    prompt = torch.randint(0, 256, (70,)).tolist()  # past the llama3 config's original 32 positions
    (seq,) = sequences([prompt], blocks_each=8)
    got = step_logits(model, 16, [(seq, 0, 40)]), step_logits(model, 16, [(seq, 40, 30)])
    torch.testing.assert_close(torch.cat(got), hf_logits(hf, prompt), atol=1e-4, rtol=1e-4)


def test_dummy_weights_are_deterministic(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({**TINY, "architectures": ["LlamaForCausalLM"]}))
    first, _ = load_model(tmp_path, torch.device("cpu"), torch.float32, dummy_weights=True, seed=3)
    second, _ = load_model(tmp_path, torch.device("cpu"), torch.float32, dummy_weights=True, seed=3)
    other, _ = load_model(tmp_path, torch.device("cpu"), torch.float32, dummy_weights=True, seed=4)
    weight = "model.layers.1.mlp.down_proj.weight"
    params = [dict(m.named_parameters())[weight] for m in (first, second, other)]
    assert torch.equal(params[0], params[1]) and not torch.equal(params[0], params[2])
    assert 0.05 < params[0].std().item() < 0.07  # 1 / sqrt(3 * fan_in), fan_in = intermediate_size 96
    assert torch.all(dict(first.named_parameters())["model.norm.weight"] == 1.0)


def test_load_errors_are_clear(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(tmp_path / "absent", torch.device("cpu"), torch.float32)
    with pytest.raises(ModelLoadError, match="config.json not found"):
        load_model(tmp_path, torch.device("cpu"), torch.float32)
    (tmp_path / "config.json").write_text(json.dumps({**TINY, "architectures": ["LlamaForCausalLM"]}))
    with pytest.raises(ModelLoadError, match="no \\*.safetensors"):
        load_model(tmp_path, torch.device("cpu"), torch.float32)
    (tmp_path / "config.json").write_text(json.dumps({**TINY, "architectures": ["GPT2LMHeadModel"]}))
    with pytest.raises(ModelLoadError, match="not supported"):
        load_model(tmp_path, torch.device("cpu"), torch.float32, dummy_weights=True)


def test_random_weights_never_pick_a_textless_token(model_dir, tmp_path):
    """Dummy weights zero the LM-head rows of tokens with no text of their own (special tokens,
    byte pieces), so greedy decoding of random weights streams visible text."""
    import shutil

    from engine.models.dummy import textless_token_ids

    textless = textless_token_ids(model_dir)
    assert 0 in textless and 1 in textless  # <|endoftext|>, <|im_start|>
    assert 19556 not in textless and len(textless) < 1000  # " Hello" and the like keep their rows
    folder = tmp_path / "random"
    folder.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(model_dir / name, folder / name)
    model, _ = load_model(folder, torch.device("cpu"), torch.float32, dummy_weights=True, seed=0)
    rows = model.lm_head.weight
    assert rows[textless].abs().sum() == 0 and (rows.abs().sum(dim=1) > 0).sum() == rows.shape[0] - len(textless)


def test_logits_into_a_shared_buffer_equal_fresh_ones(runner):
    # The decode graphs widen their logits into one buffer; the values must be the fresh ones.
    model = runner.model
    hidden = torch.randn(3, model.spec.hidden_size, generator=torch.Generator().manual_seed(0))
    buffer = torch.full((5, model.spec.vocab_size), float("nan"))
    out = model.compute_logits(hidden, out=buffer[:3])
    assert out.data_ptr() == buffer.data_ptr() and out.dtype == torch.float32
    assert torch.equal(out, model.compute_logits(hidden))
    assert buffer[3:].isnan().all()  # rows past the batch are left alone


def test_memory_report_reads_the_startup_notes():
    from engine.runner import memory_report

    gib = 2**30
    notes = {
        "weights": 15 * gib, "kv_pool": 70 * gib, "decode_graphs": 70 * gib + gib // 4,
        "piecewise_graphs": 70 * gib + gib // 2,
    }
    assert memory_report(notes, 453_248) == (
        "GPU memory allocated: weights 15.00 GiB, KV pool 55.00 GiB (453248 tokens), CUDA graphs 0.50 GiB"
    )
    # With graphs, the shared logits buffer is noted apart from them.
    notes["decode_logits"] = 70 * gib + gib // 8
    assert memory_report(notes, 453_248) == (
        "GPU memory allocated: weights 15.00 GiB, KV pool 55.00 GiB (453248 tokens), decode logits 0.12 GiB, "
        "CUDA graphs 0.38 GiB"
    )
