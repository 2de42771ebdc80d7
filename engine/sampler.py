"""Next-token selection for the rows of a step that sample.

Order per row: penalties (repetition over prompt + output, presence and frequency over the
output, as OpenAI) -> temperature -> top-k -> top-p -> draw. Greedy rows (temperature 0) take
the argmax of the penalised logits.

The draw is reproducible: a row's uniform number is a counter-based hash of (request seed,
absolute position of the token being sampled), so a seeded request gives the same tokens
whatever else shares its batch, and a recomputed (preempted) step draws the same number again.
The token is the inverse CDF of the filtered distribution at that number: one number per row
(a per-vocabulary-entry race would cost V hashes per row on the CPU hot path), computed on the
host from plain integers, so the only wait on the device is the final read of the chosen ids.

Logprobs are OpenAI-like: the log-softmax of the penalised, temperature-scaled logits, before
top-k/top-p filtering (temperature 0 counts as 1).
"""

from __future__ import annotations

import hashlib

import torch

from engine import kernels
from engine.sequence import SampledToken, Sequence
from engine.transfers import HostCopy, to_device
from engine.types import SamplingParams, TokenLogprob

_MASK64 = (1 << 64) - 1


class Sampler:
    def __init__(self, device: torch.device, base_seed: int = 0) -> None:
        self.device = device
        self.base_seed = base_seed

    def __call__(self, logits: torch.Tensor, seqs: list[Sequence]) -> list[SampledToken]:
        """logits [S, V] float32, one row per sampling sequence (modified in place)."""
        return self.launch(logits, seqs).result()

    def launch(self, logits: torch.Tensor, seqs: list[Sequence], out: torch.Tensor | None = None) -> Sampled:
        """Queue the sampling of logits [S, V] (modified in place) on the device without waiting
        for it: the ids stay on the device for the next step, a copy of them comes to the host.
        out: [S] int64 on the device to sample into (the runner's buffer the next step reads)."""
        params = [seq.params for seq in seqs]
        if any(p.has_penalties for p in params):
            apply_penalties(logits, seqs)
        greedy = [p.temperature == 0.0 for p in params]
        want_logprobs = any(p.logprobs is not None for p in params)
        if all(greedy) and not want_logprobs:
            return Sampled(greedy_tokens(logits, out), None, params)

        device = logits.device
        temperatures = to_device([1.0 if g else p.temperature for g, p in zip(greedy, params)], torch.float32, device)
        scaled = logits.div_(temperatures[:, None])  # [S, V]
        logprobs = torch.log_softmax(scaled, dim=-1) if want_logprobs else None
        if all(greedy):
            token_ids = greedy_tokens(scaled, out)
        else:
            # The position of the token being sampled: the sequence's length so far, whose last
            # token may still be pending (its id is not needed, only how many there are).
            uniforms = [uniform_for(self.seed_of(seq), seq.num_tokens) for seq in seqs]
            token_ids = self._draw(scaled, params, uniforms)
            if any(greedy):
                token_ids = torch.where(to_device(greedy, torch.bool, device), greedy_tokens(scaled), token_ids)
            token_ids = token_ids if out is None else out.copy_(token_ids)
        return Sampled(token_ids, logprobs, params)

    def seed_of(self, seq: Sequence) -> int:
        """The request's seed, or one derived from its id (and the engine's seed) when it gave none."""
        if seq.params.seed is not None:
            return seq.params.seed
        digest = hashlib.blake2b(seq.request_id.encode(), digest_size=8).digest()
        return int.from_bytes(digest, "little") ^ self.base_seed

    def _draw(self, scaled: torch.Tensor, params: list[SamplingParams], uniforms: list[float]) -> torch.Tensor:
        vocab = scaled.shape[-1]
        top_k = [p.top_k if 0 < p.top_k < vocab else vocab for p in params]
        top_p = [p.top_p for p in params]
        scaled = apply_top_k_top_p(scaled, top_k, top_p)
        probs = torch.softmax(scaled, dim=-1, dtype=torch.float64)  # [S, V]; float64 keeps the CDF exact enough
        cdf = probs.cumsum_(dim=-1)
        targets = to_device(uniforms, torch.float64, scaled.device)[:, None] * cdf[:, -1:]
        # The first entry whose CDF exceeds the target: always a token of non-zero probability.
        return torch.searchsorted(cdf, targets, right=True).squeeze(1).clamp_(max=vocab - 1)


class Sampled:
    """One step's sampling, queued on the device. `token_ids` [S] int64 stays there, in the
    runner's buffer, until the next launch samples over it (that launch's embedding reads pending
    ids from it first); its host copy, with the logprobs, is on its way. `result()` waits
    for that copy only, never for work queued on the device after it."""

    def __init__(self, token_ids: torch.Tensor, logprobs: torch.Tensor | None, params: list[SamplingParams]) -> None:
        self.token_ids = token_ids
        self._params = params
        parts = [token_ids]
        if logprobs is not None:
            k = max((p.logprobs or 0) for p in params)
            chosen = logprobs.gather(1, token_ids[:, None]).squeeze(1)  # [S]
            top_values, top_ids = logprobs.topk(k, dim=-1) if k else (logprobs[:, :0], logprobs[:, :0].long())
            parts += [chosen, top_values, top_ids]
        self._host = HostCopy(parts)

    def result(self) -> list[SampledToken]:
        parts = self._host.wait()
        ids = parts[0]
        if len(parts) == 1:
            return [SampledToken(t) for t in ids]
        chosen, top_values, top_ids = parts[1:]
        out = []
        for row, (token_id, p) in enumerate(zip(ids, self._params)):
            if p.logprobs is None:
                out.append(SampledToken(token_id))
                continue
            top = list(zip(top_ids[row][: p.logprobs], top_values[row][: p.logprobs]))
            out.append(SampledToken(token_id, TokenLogprob(token_id, chosen[row], top)))
        return out


def greedy_tokens(logits: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """The argmax of each row [S, V] -> [S] (into out if given): the first index of the maximum
    (kernels.argmax: torch on the CPU, one Triton launch on CUDA)."""
    return kernels.argmax(logits, out)


def apply_penalties(logits: torch.Tensor, seqs: list[Sequence]) -> None:
    """In place on logits [S, V]: repetition (prompt + output), then presence and frequency (output)."""
    rows, vocab, device = len(seqs), logits.shape[-1], logits.device
    counts = torch.zeros(rows, vocab, dtype=logits.dtype, device=device)  # output occurrences per token
    seen = torch.zeros(rows, vocab, dtype=torch.bool, device=device)  # in prompt or output
    for row, seq in enumerate(seqs):
        output = to_device(seq.output_token_ids, torch.int64, device)
        counts[row].index_add_(0, output, torch.ones_like(output, dtype=logits.dtype))
        seen[row, to_device(seq.token_ids, torch.int64, device)] = True
    repetition = to_device([s.params.repetition_penalty for s in seqs], torch.float32, device)[:, None]
    # HF semantics: a seen token's positive logit is divided by the penalty, a negative one multiplied.
    penalised = torch.where(logits > 0, logits / repetition, logits * repetition)
    logits.copy_(torch.where(seen, penalised, logits))
    frequency = to_device([s.params.frequency_penalty for s in seqs], torch.float32, device)[:, None]
    presence = to_device([s.params.presence_penalty for s in seqs], torch.float32, device)[:, None]
    logits.sub_(counts * frequency + (counts > 0).to(logits.dtype) * presence)


def apply_top_k_top_p(logits: torch.Tensor, top_k: list[int], top_p: list[float]) -> torch.Tensor:
    """logits [S, V] with the entries outside each row's top-k and top-p nucleus set to -inf.

    top_k[row] == V and top_p[row] == 1 switch a row's filter off. Top-p keeps the smallest set of
    most likely tokens whose probability reaches p (after top-k)."""
    vocab = logits.shape[-1]
    use_top_p = any(p < 1.0 for p in top_p)
    if not use_top_p and all(k == vocab for k in top_k):
        return logits
    device = logits.device
    k_tensor = to_device(top_k, torch.int64, device)[:, None]  # [S, 1]
    if not use_top_p:
        kth = logits.topk(max(top_k), dim=-1).values.gather(1, k_tensor - 1)  # [S, 1]
        return logits.masked_fill(logits < kth, float("-inf"))
    sorted_logits, order = logits.sort(dim=-1, descending=True)  # [S, V]
    ranks = torch.arange(vocab, device=device)[None, :]
    sorted_logits = sorted_logits.masked_fill(ranks >= k_tensor, float("-inf"))
    probs = sorted_logits.softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs
    # Rows without top-p get a threshold no mass reaches (float rounding could exceed exactly 1).
    p_tensor = to_device([p if p < 1.0 else 2.0 for p in top_p], torch.float32, device)[:, None]
    sorted_logits = sorted_logits.masked_fill(mass_before >= p_tensor, float("-inf"))
    return torch.full_like(logits, float("-inf")).scatter_(1, order, sorted_logits)


def uniform_for(seed: int, position: int) -> float:
    """A uniform number in [0, 1) from (seed, position) alone: splitmix64 over the pair."""
    state = _splitmix64((seed & _MASK64) ^ _splitmix64(position & _MASK64))
    return (state >> 11) / float(1 << 53)


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)

