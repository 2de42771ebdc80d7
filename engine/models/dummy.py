"""Random models of real architectures: config-only folders and the weights that fill them.

Speed does not depend on weight values, so a benchmark of Llama-3.1-8B's shapes needs only
its config.json; the tokenizer comes from the default model (its ids fit any larger vocab).

Correctness does depend on them: the engine is checked against transformers on the same random
weights, so the random model must be no more chaotic than a trained one. The init is therefore
width-independent: every weight matrix is normal with std = 1/sqrt(3 * fan_in) (the scale of
torch.nn.Linear's default init), embeddings normal(0, 0.02), norm scales ones. It replaced
transformers' own init, std 0.02 everywhere, because that one's gain std * sqrt(fan_in) grows with
width: 1.28 at Llama-3.1-8B's hidden 4096 (2.39 in down_proj), where 32 random layers amplify
1-ulp bf16 differences so much that transformers in bf16 is 6e-2 away from itself in float32 and
any two bf16 implementations disagree as much. With this init the bf16 error at 32 layers
(1.3e-2) is that of a trained model of that depth (SmolLM2-135M, 30 layers: 1.0e-2), whatever
the width, so a narrow CPU model stands for the 8B one. `python -m engine.bench_logits` measures it.
"""

from __future__ import annotations

import json
import math
import shutil
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from llmq.paths import resolve_model

if TYPE_CHECKING:
    from torch import nn

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
LINEAR_GAIN = 3**-0.5  # std * sqrt(fan_in) of every weight matrix
EMBEDDING_STD = 0.02  # embeddings and biases


def dummy_std(name: str, shape: tuple[int, ...]) -> float:
    """The std of dummy parameter `name` (a checkpoint-style name, ours or transformers')."""
    if len(shape) == 2 and "embed" not in name:
        return LINEAR_GAIN / math.sqrt(shape[1])  # [out, in]: fan_in = in
    return EMBEDDING_STD


def fill_dummy_weights(model: nn.Module, seed: int, std_of=dummy_std, folder: Path | None = None) -> None:
    """Norm scales ones, every other parameter normal(0, std_of(name, shape)); with `folder`, the
    LM head's rows of the folder tokenizer's text-less tokens then zeroed (silence_textless_tokens).

    Drawn in named_parameters order from one generator seeded with `seed` on the parameters'
    device, so a seed gives the same weights on every run. Transformers' module of the same config
    draws the same numbers on the CPU: its q/k/v and gate/up come in the order of our merged rows,
    with the same fan_in, and its LM head is `lm_head` like ours."""
    import torch  # here: the folder helpers above serve torch-free callers too

    generator = None
    for name, param in model.named_parameters():
        if generator is None:
            generator = torch.Generator(device=param.device).manual_seed(seed)
        if param.dim() == 1 and "norm" in name:
            param.fill_(1.0)
        else:
            param.normal_(0.0, std_of(name, tuple(param.shape)), generator=generator)
    if folder is not None:
        silence_textless_tokens(model.lm_head.weight, folder)


def textless_token_ids(folder: Path, vocab_size: int | None = None) -> list[int]:
    """Ids below vocab_size whose text alone is empty or not valid UTF-8: special tokens, byte
    pieces of a character split over several tokens, and ids past the end of `folder`'s tokenizer
    (a shipped architecture config may come with a smaller tokenizer than its vocabulary). [] when
    the folder has no tokenizer.json."""
    path = Path(folder) / "tokenizer.json"
    if not path.exists():
        return []
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(path))
    size = tokenizer.get_vocab_size(with_added_tokens=True)
    textless = [i for i in range(size) if _textless(tokenizer.decode([i], skip_special_tokens=True))]
    return [i for i in textless if vocab_size is None or i < vocab_size] + list(range(size, vocab_size or size))


def _textless(text: str) -> bool:
    return not text or "\ufffd" in text


def silence_textless_tokens(lm_head_weight, folder: Path) -> None:
    """Zero the LM-head rows of the text-less tokens, in place, so random weights never pick them.

    Greedy decoding of random weights settles into a loop, and when the loop holds a special
    token or a lone UTF-8 byte piece the stream shows no text for tens of tokens: a load test
    then times the detokenizer's hold-back, not the server. A zero row gives logit 0, which the
    largest of ~100k random logits always beats. Trained models rarely emit such tokens mid-text."""
    import torch

    ids = textless_token_ids(folder, lm_head_weight.shape[0])
    if ids:
        with torch.no_grad():
            lm_head_weight[torch.tensor(ids, device=lm_head_weight.device)] = 0


def shipped_configs() -> list[str]:
    """Names of the architecture configs shipped in engine/configs (e.g. "llama-3.1-8b")."""
    folder = resources.files("engine") / "configs"
    return sorted(p.name.removesuffix(".json") for p in folder.iterdir() if p.name.endswith(".json"))


def shipped_config(name: str) -> dict:
    path = resources.files("engine") / "configs" / f"{name}.json"
    if not path.is_file():
        raise KeyError(f"no shipped config {name!r}; choose one of {', '.join(shipped_configs())}")
    return json.loads(path.read_text())


def write_dummy_model(name: str, dest: Path, tokenizer_from: Path | None = None) -> Path:
    """Write config.json (+ generation_config.json, tokenizer) of shipped config `name` into `dest`.

    The folder has no weights: use it with EngineConfig(model=dest, dummy_weights=True).
    tokenizer_from: a model folder whose tokenizer to copy (default: the default model, if pulled).
    """
    config = shipped_config(name)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    generation = {key: config[key] for key in ("bos_token_id", "eos_token_id", "pad_token_id") if key in config}
    (dest / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    source = tokenizer_from or resolve_model(None)
    for file_name in TOKENIZER_FILES:
        if (source / file_name).is_file():
            shutil.copyfile(source / file_name, dest / file_name)
    return dest


def resolve_dummy_model(model: str, scratch: Path) -> Path:
    """A folder for `model`: itself when it is a folder with config.json, else a shipped config's dummy folder."""
    path = resolve_model(model)
    if (path / "config.json").is_file():
        return path
    return write_dummy_model(model, scratch / model)
