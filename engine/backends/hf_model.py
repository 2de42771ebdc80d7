"""What the transformers baselines share: loading the model as a plain HF deployment would,
and refusing the requests they cannot serve."""

from __future__ import annotations

from engine.validation import validate_request
from engine.config import EngineConfig
from engine.errors import ModelLoadError
from engine.types import SamplingParams


def resolve_device_dtype(config: EngineConfig):
    import torch

    device = config.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = config.dtype
    if dtype == "auto":
        dtype = "float32" if device == "cpu" else "bfloat16"
    return torch.device(device), getattr(torch, dtype)


def load_hf_model(config: EngineConfig):
    """AutoModelForCausalLM on the configured device and dtype, in eval mode.

    dummy_weights: random weights of the folder's config.json (seeded by config.seed).
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    device, dtype = resolve_device_dtype(config)
    try:
        if config.dummy_weights:
            model = dummy_hf_model(AutoConfig.from_pretrained(config.model), device, dtype, config.seed,
                                   folder=config.model)
            return model.eval()
        model = AutoModelForCausalLM.from_pretrained(config.model, dtype=dtype)
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"cannot load {config.model}: {error}") from error
    return model.to(device).eval()


def dummy_hf_model(model_config, device, dtype, seed: int, folder=None):
    """Random weights of `model_config`, made where they will run: built on `device` in `dtype`
    with transformers' own initialisation skipped (it would fill every weight a first time, on
    the CPU for an 8B model minutes), then filled in place like our engine's dummy weights
    (engine/models/dummy.py's init, seeded). Buffers (rotary frequencies) are computed as usual."""
    import torch
    from transformers import AutoModelForCausalLM
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # transformers 4.x keeps it here
        from transformers.modeling_utils import no_init_weights

    from engine.models.dummy import fill_dummy_weights

    with torch.device(device), no_init_weights():
        model = AutoModelForCausalLM.from_config(model_config, dtype=dtype)
    model.tie_weights()  # skipped with the initialisation; ties the LM head to the embeddings where the config says so
    if model.device.type != "meta":  # meta: shapes only, nothing to fill
        with torch.no_grad():
            fill_dummy_weights(model, seed, folder=folder)  # as the engine's (engine/loader.py)
    return model


def eos_token_ids(model) -> tuple[int, ...]:
    """The model's end-of-sequence ids: generation_config first, else config."""
    eos = getattr(model.generation_config, "eos_token_id", None)
    if eos is None:
        eos = model.config.eos_token_id
    if eos is None:
        return ()
    return tuple(eos) if isinstance(eos, (list, tuple)) else (eos,)


def stop_ids(params: SamplingParams, eos_ids: tuple[int, ...]) -> tuple[int, ...]:
    """Token ids that end this request (the stop token itself is returned, like any token)."""
    stops = set(params.stop_token_ids)
    if not params.ignore_eos:
        stops.update(eos_ids)
    return tuple(sorted(stops))


class HFBaseline:
    """What both transformers baselines hold: the model, its limits, and the request checks."""

    backend = "hf"

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.model = load_hf_model(config)
        self.vocab_size = self.model.config.vocab_size
        self.max_model_len = config.max_model_len or self.model.config.max_position_embeddings
        self.eos_ids = eos_token_ids(self.model)

    def _validate(self, request_id: str, prompt: list[int], params: SamplingParams, in_use: bool, **unsupported: bool) -> None:
        unsupported = {
            "logprobs": params.logprobs is not None,
            "presence_penalty": params.presence_penalty != 0.0,
            "frequency_penalty": params.frequency_penalty != 0.0,
            **unsupported,
        }
        validate_request(
            prompt, params, vocab_size=self.vocab_size, max_model_len=self.max_model_len,
            id_in_use=request_id if in_use else None, unsupported=unsupported, backend=self.backend,
        )
