"""Teacher-forced logits of the engine against transformers on the same random weights, and both
against transformers in float32 (the truth): `python -m engine.bench_logits`.

For each depth and weight init it builds the engine's model in bf16 (a ModelRunner with random
weights), copies the weights into transformers' LlamaForCausalLM, feeds prompts of mixed lengths
(the engine: all of them in one batch; transformers: one at a time) and prints the relative error
||a - b|| / ||b|| of the logits: over every token of every prompt ("all"), and the worst over the
prompts of the last token's (the logits of the first generated token, "last").

\b
Runs (rows):
  engine           the kernels installed (CPU: the torch references; CUDA: Triton)
  fused            RMSNorm, rotary and SiLU-and-mul in float32, each rounded to bf16 once
                   (where the Triton kernels round), in torch
  fused+hf-OP      the same, with OP (norm, rotary or silu) rounded where transformers rounds
  hf-rounding      all three rounded where transformers rounds
  hf-eager         transformers bf16 with eager attention (bf16 scores and probabilities)
  hf-bf16          transformers bf16 (sdpa attention): the reference of the first two columns

\b
Weight inits:
  fan-in           the engine's dummy init (engine/models/dummy.py)
  flat             std 0.02 everywhere (transformers' own init)
  flat-8b          the gains flat gives Llama-3.1-8B at this width: std 0.02 * sqrt(4096 / hidden)
  residual         flat-8b with o_proj and down_proj / sqrt(2 * layers), as GPT-2 and Megatron

The default model has Llama-3.1-8B's structure, narrow: hidden 512, GQA 8:2 of head_dim 64,
intermediate 1792, vocab 4096. `--model FOLDER` runs a trained checkpoint instead.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import sys
import tempfile
from pathlib import Path

import click
import torch
import torch.nn.functional as F

from engine import kernels
from engine.attention_metadata import build_step_inputs
from engine.bench_gpu_decoders import hf_model_from_engine
from engine.config import EngineConfig
from engine.kernels import reference
from engine.models.dummy import EMBEDDING_STD, dummy_std, fill_dummy_weights, shipped_config, shipped_configs
from engine.runner import ModelRunner
from engine.sequence import ScheduledBatch, ScheduledChunk, Sequence
from engine.types import SamplingParams

REFERENCE_HIDDEN = 4096  # Llama-3.1-8B's: flat-8b gives a narrow model the gains flat gives the 8B
NARROW = dict(hidden_size=512, intermediate_size=1792, num_attention_heads=8, num_key_value_heads=2, head_dim=64)
NARROW_VOCAB = 4096
FLAT_STD = 0.02


def init_std(init: str, num_layers: int, hidden: int):
    """std_of(name, shape) of weight init `init` (see the module docstring)."""
    if init == "fan-in":
        return dummy_std
    scale = 1.0 if init == "flat" else math.sqrt(REFERENCE_HIDDEN / hidden)

    def std_of(name: str, shape: tuple[int, ...]) -> float:
        if len(shape) != 2 or "embed" in name:
            return EMBEDDING_STD
        residual_out = init == "residual" and ("o_proj" in name or "down_proj" in name)
        return FLAT_STD * scale / (math.sqrt(2 * num_layers) if residual_out else 1.0)

    return std_of


INITS = ("fan-in", "flat", "flat-8b", "residual")


# -- where bf16 rounding happens: emulations of the Triton kernels and of transformers, in torch --


def _norm_fused(x, weight, eps, residual=None):
    # Triton _rms_norm_kernel: (x * rstd * weight) in float32, rounded once. x, residual [T, H]
    if residual is not None:
        x = residual = x + residual
    x32 = x.float()
    out = (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps) * weight.float()).to(x.dtype)
    return out if residual is None else (out, residual)


def _norm_hf(x, weight, eps, residual=None):
    # LlamaRMSNorm: the normalised x rounded, then weight * it rounded again.
    if residual is not None:
        x = residual = x + residual
    x32 = x.float()
    out = weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)
    return out if residual is None else (out, residual)


def _rotary_hf(q, k, positions, cos_sin_cache):
    # transformers: cos and sin rounded to bf16, then x * cos and rotate_half(x) * sin each
    # rounded, then their sum. q [T, Hq, D], k [T, Hkv, D]; cache [P, D] = cos | sin of D/2 freqs.
    cos, sin = cos_sin_cache.index_select(0, positions).chunk(2, dim=-1)  # [T, D/2]
    cos = torch.cat((cos, cos), dim=-1).to(q.dtype)[:, None]  # [T, 1, D]
    sin = torch.cat((sin, sin), dim=-1).to(q.dtype)[:, None]

    def rotate_half(x):
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat((-x2, x1), dim=-1)

    return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin


def _silu_fused(x):
    # Triton _silu_and_mul_kernel: silu(gate) * up in float32, rounded once. x [T, 2I]
    gate, up = x.float().chunk(2, dim=-1)
    return (F.silu(gate) * up).to(x.dtype)


def _silu_hf(x):
    # transformers: silu(gate) rounded, then * up rounded.
    gate, up = x.chunk(2, dim=-1)
    return F.silu(gate) * up


_FUSED = {"rms_norm": _norm_fused, "rotary": reference.rotary, "silu_and_mul": _silu_fused}
VARIANTS = {  # run name -> kernels replaced (by engine.kernels name)
    "engine": {},
    "fused": _FUSED,
    "fused+hf-norm": {**_FUSED, "rms_norm": _norm_hf},
    "fused+hf-rotary": {**_FUSED, "rotary": _rotary_hf},
    "fused+hf-silu": {**_FUSED, "silu_and_mul": _silu_hf},
    "hf-rounding": {"rms_norm": _norm_hf, "rotary": _rotary_hf, "silu_and_mul": _silu_hf},
}


def _rotary_then_write_kv(q, k, v, positions, cos_sin_cache, k_cache, v_cache, slot_mapping):
    # kernels.rotary_write_kv as two steps, so a replaced rotary is the one that runs.
    q, k = kernels.rotary(q, k, positions, cos_sin_cache)
    kernels.write_kv(k, v, k_cache, v_cache, slot_mapping)
    return q


@contextlib.contextmanager
def kernels_swapped(replacements: dict):
    """engine.kernels' entry points replaced while inside (the layers look them up per call)."""
    if "rotary" in replacements and hasattr(kernels, "rotary_write_kv"):
        # On CUDA one Triton kernel rotates and writes the cache, bypassing kernels.rotary.
        replacements = {**replacements, "rotary_write_kv": _rotary_then_write_kv}
    saved = {name: getattr(kernels, name) for name in replacements}
    for name, fn in replacements.items():
        setattr(kernels, name, fn)
    try:
        yield
    finally:
        for name, fn in saved.items():
            setattr(kernels, name, fn)


def model_config(config: str | None, layers: int, vocab: int | None) -> dict:
    """config.json of a shipped config name, a config.json path, or None (narrow Llama-3.1-8B)."""
    if config is None:
        base = {**shipped_config("llama-3.1-8b"), **NARROW, "vocab_size": NARROW_VOCAB}
    elif config in shipped_configs():
        base = shipped_config(config)
    else:
        base = json.loads(Path(config).read_text())
    # Small ids for bos/eos: they must fit a shrunken vocab.
    base = {**base, "num_hidden_layers": layers, "bos_token_id": 1, "eos_token_id": 2}
    return {**base, "vocab_size": vocab} if vocab else base


def engine_runner(folder: Path, device: str, prompt_lens: list[int], dummy: bool) -> ModelRunner:
    """A bf16 ModelRunner with a KV pool just big enough for the prompts, no CUDA graphs."""
    block_size = 16
    blocks = sum(-(-n // block_size) for n in prompt_lens)
    config = EngineConfig(
        model=str(folder), dtype="bfloat16", device=device, dummy_weights=dummy, block_size=block_size,
        kv_cache_tokens=blocks * block_size, max_model_len=max(prompt_lens), cuda_graphs=False,
    )
    return ModelRunner(config)


@torch.inference_mode()
def engine_logits(runner: ModelRunner, prompts: list[list[int]]) -> list[torch.Tensor]:
    """Every token's logits [L, V] float32 (on the CPU) of each prompt, all prompts in one step."""
    seqs, first = [], 0
    for i, prompt in enumerate(prompts):
        blocks = -(-len(prompt) // runner.block_size)
        table = list(range(first, first + blocks))
        seqs.append(Sequence(f"p{i}", prompt, SamplingParams(max_tokens=1), i, block_table=table))
        first += blocks
    batch = ScheduledBatch([ScheduledChunk(seq, 0, seq.num_tokens) for seq in seqs])
    input_ids, meta = build_step_inputs(batch, runner.block_size, runner.device)
    logits = runner.model.compute_logits(runner.model(input_ids, meta))  # [T, V]
    return list(logits.cpu().split([len(p) for p in prompts]))


@torch.inference_mode()
def hf_logits(hf, prompts: list[list[int]]) -> list[torch.Tensor]:
    """Every token's logits [L, V] float32 (on the CPU) of each prompt, one prompt at a time."""
    device = hf.lm_head.weight.device
    return [hf(torch.tensor([p], device=device)).logits[0].float().cpu() for p in prompts]


def relative_errors(got: list[torch.Tensor], want: list[torch.Tensor]) -> tuple[float, float]:
    """(all, last): ||got - want|| / ||want|| over every token's logits, and the worst over the
    prompts of that of the last token's logits."""
    def error(a: torch.Tensor, b: torch.Tensor) -> float:
        return ((a.double() - b.double()).norm() / b.double().norm()).item()

    every = error(torch.cat(got), torch.cat(want))
    return every, max(error(a[-1], b[-1]) for a, b in zip(got, want))


def random_prompts(lens: list[int], vocab: int, seed: int) -> list[list[int]]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab, (n,), generator=generator).tolist() for n in lens]


def study(runner: ModelRunner, folder: Path, prompts: list[list[int]], variants: list[str], eager: bool):
    """Yields (run, errors vs transformers bf16, errors vs float32) for one model."""
    ours = {}
    for variant in variants:
        with kernels_swapped(VARIANTS[variant]):
            ours[variant] = engine_logits(runner, prompts)
    hf = hf_model_from_engine(runner.model, runner.spec, folder)
    hf_bf16 = hf_logits(hf, prompts)
    others = {}
    if eager:
        hf.set_attn_implementation("eager")
        others["hf-eager"] = hf_logits(hf, prompts)
        hf.set_attn_implementation("sdpa")
    truth = hf_logits(hf.float(), prompts)
    del hf
    for run, logits in {**ours, **others}.items():
        yield run, relative_errors(logits, hf_bf16), relative_errors(logits, truth)
    yield "hf-bf16", None, relative_errors(hf_bf16, truth)


HEADER = f"{'layers':>6} {'init':<9} {'run':<15} {'vs hf-bf16 all':>14} {'last':>7} {'vs fp32 all':>11} {'last':>7}"


def table_row(layers: int, init: str, run: str, vs_hf, vs_truth) -> str:
    hf_cols = f"{vs_hf[0]:>14.4f} {vs_hf[1]:>7.4f}" if vs_hf else f"{'-':>14} {'-':>7}"
    return f"{layers:>6} {init:<9} {run:<15} {hf_cols} {vs_truth[0]:>11.4f} {vs_truth[1]:>7.4f}"


def _log(message: str) -> None:
    print(f"# {message}", file=sys.stderr, flush=True)


def _csv(kind):
    return lambda ctx, param, value: [kind(v) for v in value.split(",") if v] if isinstance(value, str) else value


@click.command(help=__doc__)
@click.option("--config", default=None, help="Shipped config name or config.json path (default: narrow Llama-3.1-8B).")
@click.option("--model", "model_folder", type=click.Path(exists=True, file_okay=False), default=None,
              help="A trained checkpoint folder instead of random weights (--layers, --inits ignored).")
@click.option("--layers", default="4,8,16,32", callback=_csv(int), show_default=True)
@click.option("--inits", default=",".join(INITS), callback=_csv(str), show_default=True)
@click.option("--variants", default=",".join(VARIANTS), callback=_csv(str), show_default=True)
@click.option("--no-eager", is_flag=True, help="Skip transformers' eager attention row.")
@click.option("--prompt-lens", default="37,128,300", callback=_csv(int), show_default=True)
@click.option("--vocab", type=int, default=None, help="Override the config's vocab size (a cheaper LM head).")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda (the Triton kernels are installed).")
@click.option("--seed", default=0, show_default=True)
def main(config, model_folder, layers, inits, variants, no_eager, prompt_lens, vocab, device, seed):
    unknown = [v for v in variants if v not in VARIANTS] + [i for i in inits if i not in INITS]
    if unknown:
        raise click.BadParameter(f"unknown {', '.join(unknown)}; variants: {', '.join(VARIANTS)}; inits: {', '.join(INITS)}")
    torch.set_float32_matmul_precision("highest")  # the float32 truth: no TF32 on CUDA
    if device.startswith("cuda"):
        kernels.use_triton()  # the runner would too; done first so every variant restores to it
    print(HEADER, flush=True)
    if model_folder:
        runner = engine_runner(Path(model_folder), device, prompt_lens, dummy=False)
        prompts = random_prompts(prompt_lens, runner.vocab_size, seed)
        for run, vs_hf, vs_truth in study(runner, Path(model_folder), prompts, variants, not no_eager):
            print(table_row(runner.spec.num_layers, "trained", run, vs_hf, vs_truth), flush=True)
        return
    for num_layers in layers:
        with tempfile.TemporaryDirectory() as scratch:
            folder = Path(scratch)
            (folder / "config.json").write_text(json.dumps(model_config(config, num_layers, vocab)))
            runner = engine_runner(folder, device, prompt_lens, dummy=True)
            prompts = random_prompts(prompt_lens, runner.vocab_size, seed)
            for init in inits:
                if init == "flat-8b" and runner.spec.hidden_size == REFERENCE_HIDDEN:
                    continue  # the same weights as flat
                _log(f"{num_layers} layers, init {init}")
                with torch.no_grad():
                    fill_dummy_weights(runner.model, seed, init_std(init, num_layers, runner.spec.hidden_size))
                for run, vs_hf, vs_truth in study(runner, folder, prompts, variants, not no_eager):
                    print(table_row(num_layers, init, run, vs_hf, vs_truth), flush=True)
            del runner
        gc.collect()  # an 8B model on the GPU: free it before the next depth's
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
