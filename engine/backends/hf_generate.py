"""One streaming `model.generate` call with our SamplingParams, as a transformers user writes it."""

from __future__ import annotations

from collections.abc import Callable

from engine.types import SamplingParams


def generation_config(params: SamplingParams, stops: tuple[int, ...], vocab_size: int, pad_token_id: int | None):
    from transformers import GenerationConfig

    sampling = {}
    if not params.greedy:
        sampling = {
            "temperature": params.temperature,
            "top_p": params.top_p if params.top_p < 1.0 else None,
            "top_k": params.top_k if params.top_k > 0 else None,
        }
    return GenerationConfig(
        max_new_tokens=params.max_tokens,
        do_sample=not params.greedy,
        repetition_penalty=params.repetition_penalty if params.repetition_penalty != 1.0 else None,
        # generate falls back to the model's eos when given none, so "no stop token" (ignore_eos)
        # is spelled as an id past the vocabulary, which the model can never produce.
        eos_token_id=list(stops) or [vocab_size],
        pad_token_id=pad_token_id if pad_token_id is not None else (stops[0] if stops else 0),
        **sampling,
    )


def generate_streaming(
    model,
    prompt: list[int],
    params: SamplingParams,
    stops: tuple[int, ...],
    on_token: Callable[[int], None],
    should_stop: Callable[[], bool] = lambda: False,
) -> None:
    """Run generate for one prompt, calling on_token(id) for each new token as it is sampled.
    should_stop() is polled after every token (abort)."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList
    from transformers.generation.streamers import BaseStreamer

    class TokenStreamer(BaseStreamer):
        def __init__(self) -> None:
            self.prompt_seen = False

        def put(self, value) -> None:  # first the prompt [1, S], then each new token [1]
            if not self.prompt_seen:
                self.prompt_seen = True
                return
            on_token(int(value.reshape(-1)[0]))

        def end(self) -> None:
            pass

    class StopWhenAsked(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs) -> torch.BoolTensor:
            return torch.full((input_ids.shape[0],), should_stop(), dtype=torch.bool, device=input_ids.device)

    config = generation_config(params, stops, model.config.vocab_size, model.generation_config.pad_token_id)
    if params.seed is not None:
        torch.manual_seed(params.seed)  # the global RNG: only one generate runs at a time
    input_ids = torch.tensor([prompt], device=model.device)  # [1, S]
    with torch.inference_mode():
        model.generate(
            input_ids,
            attention_mask=torch.ones_like(input_ids),
            generation_config=config,
            streamer=TokenStreamer(),
            stopping_criteria=StoppingCriteriaList([StopWhenAsked()]),
        )
